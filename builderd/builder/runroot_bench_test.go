package builder

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"golang.org/x/sys/unix"

	"github.com/kojibus/kojibus/builderd/internal/buildroot"
	"github.com/kojibus/kojibus/bus"
)

// BenchmarkRunrootTrue: submit -> result of `runroot rr-build x86_64 true`
// (the runroot call until task.closed reaches the client) with a warm
// buildroot cache, beside the bare floor measured in the same run: an
// overlay mount over the same root, `unshare --mount --pid --fork --ipc
// --uts --propagation private chroot ROOT /bin/true`, unmount and remove.
func BenchmarkRunrootTrue(b *testing.B) {
	h, _ := runrootSetup(b)
	ctx := context.Background()
	// A tarball source, so the cache path is the one measured.
	var bc struct {
		Extra map[string]any `json:"extra"`
	}
	if err := h.Admin.Call(ctx, "getBuildConfig", []any{"rr-build"}, nil, &bc); err != nil {
		b.Fatal(err)
	}
	rootfs := bc.Extra[buildroot.ExtraRootfs].(string)
	tarball := filepath.Join(b.TempDir(), "root.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		b.Fatalf("tar: %v %s", err, out)
	}
	if err := h.Admin.Call(ctx, "editTag2", []any{"rr-build"}, map[string]any{"extra": map[string]any{buildroot.ExtraRootfs: tarball}}, nil); err != nil {
		b.Fatal(err)
	}
	finished := make(chan int64, 1024)
	sub, err := h.Admin.Conn().Subscribe(bus.EventPrefix+"task.*", func(m *nats.Msg) {
		ev, err := bus.EventFromMsg(m)
		if err != nil || (ev.Address != "task.closed" && ev.Address != "task.failed") {
			return
		}
		if id, ok := propInt(ev.Props["id"]); ok {
			finished <- id
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	runOne := func() {
		var id int64
		if err := h.Admin.Call(ctx, "runroot", []any{"rr-build", "x86_64", "true"}, nil, &id); err != nil {
			b.Fatal(err)
		}
		for got := range finished {
			if got == id {
				break
			}
		}
		var res string
		if err := h.Admin.Call(ctx, "getTaskResult", []any{id}, nil, &res); err != nil || res != "true completed successfully" {
			b.Fatalf("task %d: %q %v", id, res, err)
		}
	}
	runOne() // the repo (waitrepo) and the cache extraction
	lower := filepath.Join(b.TempDir(), "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("tar", "-C", lower, "-xf", tarball).CombinedOutput(); err != nil {
		b.Fatalf("tar: %v %s", err, out)
	}
	bare := func() {
		dir, err := os.MkdirTemp(b.TempDir(), "bare-")
		if err != nil {
			b.Fatal(err)
		}
		u, w, m := filepath.Join(dir, "u"), filepath.Join(dir, "w"), filepath.Join(dir, "m")
		for _, d := range []string{u, w, m} {
			if err := os.Mkdir(d, 0o755); err != nil {
				b.Fatal(err)
			}
		}
		if err := unix.Mount("overlay", m, "overlay", 0, "lowerdir="+lower+",upperdir="+u+",workdir="+w); err != nil {
			b.Fatal(err)
		}
		out, err := exec.Command("unshare", "--mount", "--pid", "--fork", "--ipc", "--uts", "--propagation", "private", "chroot", m, "/bin/true").CombinedOutput()
		if err != nil {
			b.Fatalf("unshare: %v %s", err, out)
		}
		if err := unix.Unmount(m, 0); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
	}
	bare()
	b.ResetTimer()
	var kojibus, floor time.Duration
	for i := 0; i < b.N; i++ {
		start := time.Now()
		runOne()
		kojibus += time.Since(start)
		start = time.Now()
		bare()
		floor += time.Since(start)
	}
	b.StopTimer()
	perRun := float64(kojibus.Microseconds()) / 1000 / float64(b.N)
	perBare := float64(floor.Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(perRun, "ms/runroot")
	b.ReportMetric(perBare, "ms/bare")
	b.ReportMetric(perRun/perBare, "x-bare")
}
