package runroot

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

func FuzzParseConfig(f *testing.F) {
	if data, err := os.ReadFile("testdata/runroot.conf"); err == nil {
		f.Add(data)
	}
	for _, s := range []string{
		"",
		"[paths]\npath_subs = /a,/b,/c\n",
		"[paths]\ndefault_mounts = /a, ,b\nsafe_roots = /a/tmp\npath_subs =\n  /a/tmp/x,/a//y\n\n[path1]\nmountpoint=/a\npath=server:/a\nfstype=nfs\noptions=ro,bg\n",
		"[path10]\nmountpoint=/m\npath=/p\nfstype=nfs\noptions=ro\n[path2]\nx=1\n",
		"[path1x]\n[runroot]\ninternal_dev_setup = maybe\n",
		"[DEFAULT]\nmountpoint=\npath=/\nfstype=none\noptions=bind\n[path0]\n[paths]\nsafe_roots=/\n",
	} {
		f.Add([]byte(s))
	}
	requests := []string{"/a/tmp/x", "/mnt/workdir/tmp/../x", "/", "", "rel"}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseConfig("runroot.conf", data)
		if err != nil {
			var fault *bus.Fault
			var pe *config.ParseError
			if !errors.As(err, &fault) && !errors.As(err, &pe) {
				t.Fatalf("error is neither a Fault nor a ParseError: %#v", err)
			}
			if c != nil {
				t.Fatal("config returned with an error")
			}
			return
		}
		for _, p := range c.DefaultMounts {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("relative default mount %q accepted", p)
			}
		}
		// Plan only stats host paths; it must not panic and only fail with faults.
		mounts, err := c.Plan(requests)
		if err != nil {
			var fault *bus.Fault
			if !errors.As(err, &fault) || mounts != nil {
				t.Fatalf("Plan: %#v, %v", err, mounts)
			}
			return
		}
		for _, m := range mounts {
			opts := "," + m.Options + ","
			if strings.Contains(opts, ",bg,") || !strings.HasPrefix(m.Target, "/") {
				t.Fatalf("bad mount planned: %+v", m)
			}
			if strings.Contains(opts, ",bind,") && m.Fstype != "none" {
				t.Fatalf("bind mount with fstype %q", m.Fstype)
			}
			if m.ReadWrite && strings.Contains(opts, ",ro,") {
				t.Fatalf("read-write mount keeps ro: %+v", m)
			}
		}
	})
}
