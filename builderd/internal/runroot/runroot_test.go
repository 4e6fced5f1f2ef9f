package runroot

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

func ptr[T any](v T) *T { return &v }

// sampleConfig is testdata/runroot.conf as parsed.
var sampleConfig = &Config{
	DefaultMounts: []string{"/mnt/archive", "/mnt/workdir"},
	SafeRoots:     []string{"/mnt/workdir/tmp"},
	PathSubs:      [][2]string{{"/mnt/archive/prehistory/", "/mnt/prehistoric_disk/archive/prehistory"}},
	Paths: []PathSection{
		{Name: "path0", Mountpoint: "/mnt/archive", Path: "/net/archive", Fstype: "nfs", Options: "ro,hard,intr,nosuid,nodev,noatime,tcp"},
		{Name: "path1", Mountpoint: "/mnt/workdir", Path: "/some/mount/point/workdir", Fstype: "none", Options: "bind"},
	},
}

func TestLoadConfigSample(t *testing.T) {
	c, err := LoadConfig("testdata/runroot.conf")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, sampleConfig) {
		t.Fatalf("got %#v\nwant %#v", c, sampleConfig)
	}
}

func TestLoadConfigMissing(t *testing.T) {
	c, err := LoadConfig(filepath.Join(t.TempDir(), "runroot.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, &Config{}) {
		t.Fatalf("got %#v, want defaults", c)
	}
	mounts, err := c.Plan(nil)
	if err != nil || len(mounts) != 0 {
		t.Fatalf("Plan(nil) on defaults = %v, %v", mounts, err)
	}
	if _, err := c.Plan([]string{"/mnt/workdir/tmp"}); err == nil || err.Error() != "GenericError: read-write mount point is not safe: /mnt/workdir/tmp" {
		t.Fatalf("Plan with no safe roots: %v", err)
	}
}

func TestLoadConfigErrorNamesFile(t *testing.T) {
	fn := filepath.Join(t.TempDir(), "runroot.conf")
	if err := os.WriteFile(fn, []byte("[paths]\nsafe_roots = tmp\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(fn)
	var f *bus.Fault
	if !errors.As(err, &f) || f.Code != bus.CodeGenericError {
		t.Fatalf("want a wrapped GenericError, got %#v", err)
	}
	if !strings.HasPrefix(err.Error(), fn+": GenericError: bad config: all paths") {
		t.Fatalf("error does not name the file: %v", err)
	}

	if err := os.WriteFile(fn, []byte("[paths\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadConfig(fn)
	var pe *config.ParseError
	if !errors.As(err, &pe) || pe.File != fn || pe.Line != 1 {
		t.Fatalf("want a ParseError naming %s line 1, got %#v", fn, err)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		text string
		want *Config
	}{
		{"empty", "", &Config{}},
		{"empty values", "[paths]\ndefault_mounts =\nsafe_roots =\npath_subs =\n", &Config{}},
		{"trim and drop empty items", "[paths]\ndefault_mounts = /a , ,/b,\nsafe_roots = ,/c\n",
			&Config{DefaultMounts: []string{"/a", "/b"}, SafeRoots: []string{"/c"}}},
		{"multi-line list", "[paths]\ndefault_mounts = /a,\n  /b\n",
			&Config{DefaultMounts: []string{"/a", "/b"}}},
		{"path_subs in order, blank lines ignored, sides trimmed",
			"[paths]\npath_subs = /a,/b\n  /c , /d\n",
			&Config{PathSubs: [][2]string{{"/a", "/b"}, {"/c", "/d"}}}},
		{"internal_dev_setup true", "[runroot]\ninternal_dev_setup = yes\n", &Config{InternalDevSetup: ptr(true)}},
		{"internal_dev_setup false", "[runroot]\ninternal_dev_setup = 0\n", &Config{InternalDevSetup: ptr(false)}},
		{"internal_dev_setup from DEFAULT", "[DEFAULT]\ninternal_dev_setup = on\n[runroot]\n", &Config{InternalDevSetup: ptr(true)}},
		{"DEFAULT alone is not [runroot]", "[DEFAULT]\ninternal_dev_setup = on\n", &Config{}},
		{"numeric section order",
			"[path10]\nmountpoint=/m10\npath=/p10\nfstype=nfs\noptions=ro\n" +
				"[path2]\nmountpoint=/m2\npath=/p2\nfstype=nfs\noptions=ro\n" +
				"[pathology]\nx=1\n[path]\nx=1\n[Path3]\nx=1\n" +
				"[path1]\nmountpoint=/m1\npath=/p1\nfstype=nfs\noptions=ro\n" +
				"[path01]\nmountpoint=/m01\npath=/p01\nfstype=nfs\noptions=ro\n",
			&Config{Paths: []PathSection{
				{"path1", "/m1", "/p1", "nfs", "ro"},
				{"path01", "/m01", "/p01", "nfs", "ro"},
				{"path2", "/m2", "/p2", "nfs", "ro"},
				{"path10", "/m10", "/p10", "nfs", "ro"},
			}}},
		{"huge section number", "[path99999999999999999999999]\nmountpoint=/b\npath=/b\nfstype=nfs\noptions=ro\n" +
			"[path3]\nmountpoint=/a\npath=/a\nfstype=nfs\noptions=ro\n",
			&Config{Paths: []PathSection{
				{"path3", "/a", "/a", "nfs", "ro"},
				{"path99999999999999999999999", "/b", "/b", "nfs", "ro"},
			}}},
		{"section options from DEFAULT", "[DEFAULT]\nfstype = nfs\n[path0]\nmountpoint=/m\npath=/p\noptions=ro\n",
			&Config{Paths: []PathSection{{"path0", "/m", "/p", "nfs", "ro"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig("runroot.conf", []byte(tt.text))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Fatalf("got %#v\nwant %#v", c, tt.want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	const abs = "GenericError: bad config: all paths (default_mounts, safe_roots, path_subs) needs to be absolute: "
	tests := []struct {
		name, text, want string
		parseErr         bool
	}{
		{name: "bad substitution", text: "[paths]\npath_subs = /a,/b,/c\n",
			want: "GenericError: bad runroot substitution: ['/a', '/b', '/c']"},
		{name: "substitution without comma", text: "[paths]\npath_subs =\n  /a,/b\n  /it's\n",
			want: `GenericError: bad runroot substitution: ["/it's"]`},
		{name: "relative default mount", text: "[paths]\ndefault_mounts = /a,mnt/b\n", want: abs + "mnt/b"},
		{name: "relative safe root", text: "[paths]\nsafe_roots = ~/tmp\n", want: abs + "~/tmp"},
		{name: "relative substitution source", text: "[paths]\npath_subs = a,/b\n", want: abs + "a"},
		{name: "relative substitution target", text: "[paths]\npath_subs = /a,b\n", want: abs + "b"},
		{name: "empty substitution target", text: "[paths]\npath_subs = /a,\n", want: abs},
		{name: "missing mountpoint", text: "[path0]\npath=/p\nfstype=nfs\noptions=ro\n",
			want: "GenericError: bad config: missing options in path0 section"},
		{name: "missing options", text: "[path3]\nmountpoint=/m\npath=/p\nfstype=nfs\n",
			want: "GenericError: bad config: missing options in path3 section"},
		{name: "first missing in numeric order",
			text: "[path10]\nx=1\n[path2]\nx=1\n",
			want: "GenericError: bad config: missing options in path2 section"},
		{name: "bad section number", text: "[path1x]\nmountpoint=/m\npath=/p\nfstype=nfs\noptions=ro\n",
			want: "GenericError: bad config: invalid path section name: path1x"},
		// Koji reads path_subs before the [pathN] sections and checks
		// absoluteness last.
		{name: "error order", text: "[paths]\nsafe_roots = rel\npath_subs = /a\n[path0]\nx=1\n",
			want: "GenericError: bad runroot substitution: ['/a']"},
		{name: "not a boolean", text: "[runroot]\ninternal_dev_setup = maybe\n", parseErr: true},
		{name: "syntax", text: "default_mounts = /a\n", parseErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseConfig("", []byte(tt.text))
			if err == nil {
				t.Fatal("no error")
			}
			if tt.parseErr {
				var pe *config.ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("want a ParseError, got %#v", err)
				}
				return
			}
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != bus.CodeGenericError {
				t.Fatalf("want a GenericError, got %#v", err)
			}
			if err.Error() != tt.want {
				t.Fatalf("got  %q\nwant %q", err.Error(), tt.want)
			}
			// with a file name the fault is wrapped, not replaced
			_, err = ParseConfig("runroot.conf", []byte(tt.text))
			if !errors.As(err, &f) || err.Error() != "runroot.conf: "+tt.want {
				t.Fatalf("named: %v", err)
			}
		})
	}
}

// hostTree builds a builder filesystem under a temp dir and returns the
// sample configuration pointing at it.
func hostTree(t *testing.T) (root string, c *Config) {
	t.Helper()
	root = t.TempDir()
	for _, d := range []string{"workdir/tmp/a", "workdir/tmp/b", "workdir/other", "outside/x"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "workdir/tmp/file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, dest := range map[string]string{
		"workdir/tmp/escape":  "../../outside",                       // relative, out of the section
		"workdir/tmp/abs":     filepath.Join(root, "outside"),        // absolute, out of the section
		"workdir/tmp/inside":  "../other",                            // stays in the section
		"workdir/tmp/a/deep":  "../escape",                           // chain ending outside
		"workdir/tmp/dangles": filepath.Join(root, "does-not-exist"), // broken
	} {
		if err := os.Symlink(dest, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile("testdata/runroot.conf")
	if err != nil {
		t.Fatal(err)
	}
	c, err = ParseConfig("runroot.conf", []byte(strings.ReplaceAll(string(data), "/some/mount/point", root)))
	if err != nil {
		t.Fatal(err)
	}
	return root, c
}

func TestPlanSample(t *testing.T) {
	root, c := hostTree(t)
	archive := Mount{Source: "/net/archive/", Target: "/mnt/archive", Fstype: "nfs", Options: "ro,hard,intr,nosuid,nodev,noatime,tcp"}
	workdir := Mount{Source: root + "/workdir/", Target: "/mnt/workdir", Fstype: "none", Options: "bind"}
	rw := func(sub string) Mount {
		return Mount{Source: root + "/workdir/" + sub, Target: "/mnt/workdir/" + sub, Fstype: "none", Options: "bind", ReadWrite: true}
	}
	tests := []struct {
		name      string
		requested []string
		want      []Mount
	}{
		{"defaults only", nil, []Mount{archive, workdir}},
		{"one read-write mount", []string{"/mnt/workdir/tmp/a"}, []Mount{archive, workdir, rw("tmp/a")}},
		{"normalised", []string{"/mnt/workdir/tmp/./a/../b/"}, []Mount{archive, workdir, rw("tmp/b")}},
		{"safe root itself", []string{"/mnt/workdir/tmp"}, []Mount{archive, workdir, rw("tmp")}},
		{"duplicates mounted once", []string{"/mnt/workdir/tmp/a", "/mnt/workdir/tmp/b", "/mnt/workdir/tmp//a/", "/mnt/workdir/tmp/a"},
			[]Mount{archive, workdir, rw("tmp/a"), rw("tmp/b")}},
		{"symlink staying in the section", []string{"/mnt/workdir/tmp/inside"}, []Mount{archive, workdir, rw("tmp/inside")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := c.Plan(tt.requested)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	root, c := hostTree(t)
	const notSafe = "read-write mount point is not safe: "
	tests := []struct {
		name      string
		config    func(c *Config)
		requested []string
		want      string
	}{
		{name: "outside safe roots", requested: []string{"/mnt/workdir/tmp/a", "/etc"}, want: notSafe + "/etc"},
		{name: "dot-dot out of the safe root", requested: []string{"/mnt/workdir/tmp/../../../etc"}, want: notSafe + "/etc"},
		{name: "dot-dot to a sibling", requested: []string{"/mnt/workdir/tmp/../other"}, want: notSafe + "/mnt/workdir/other"},
		{name: "relative", requested: []string{"mnt/workdir/tmp/a"}, want: notSafe + "mnt/workdir/tmp/a"},
		{name: "relative dot-dot", config: func(c *Config) { c.SafeRoots = append(c.SafeRoots, "../") },
			requested: []string{"../../mnt"}, want: notSafe + "../../mnt"},
		{name: "empty", requested: []string{""}, want: notSafe + "."},
		{name: "bind source missing", requested: []string{"/mnt/workdir/tmp/nope"},
			want: "No such directory or mount: " + root + "/workdir/tmp/nope"},
		{name: "bind source is a file", requested: []string{"/mnt/workdir/tmp/file"},
			want: "No such directory or mount: " + root + "/workdir/tmp/file"},
		{name: "bind source dangling symlink", requested: []string{"/mnt/workdir/tmp/dangles"},
			want: "No such directory or mount: " + root + "/workdir/tmp/dangles"},
		{name: "symlink escape (relative)", requested: []string{"/mnt/workdir/tmp/escape"}, want: notSafe + "/mnt/workdir/tmp/escape"},
		{name: "symlink escape (absolute)", requested: []string{"/mnt/workdir/tmp/abs"}, want: notSafe + "/mnt/workdir/tmp/abs"},
		{name: "symlink escape (chain)", requested: []string{"/mnt/workdir/tmp/a/deep"}, want: notSafe + "/mnt/workdir/tmp/a/deep"},
		{name: "symlink escape below the link", requested: []string{"/mnt/workdir/tmp/escape/x"}, want: notSafe + "/mnt/workdir/tmp/escape/x"},
		// os.path.join drops the section path when the remainder is still
		// absolute ("//"): the symlink check refuses the result too.
		{name: "double slash from a substitution", config: func(c *Config) {
			c.PathSubs = [][2]string{{"/mnt/workdir/tmp/etc", "/mnt/workdir//etc"}}
		}, requested: []string{"/mnt/workdir/tmp/etc"}, want: notSafe + "/mnt/workdir/tmp/etc"},
		{name: "missing corresponding mountpoint (requested)", config: func(c *Config) { c.SafeRoots = append(c.SafeRoots, "/srv") },
			requested: []string{"/srv/x"}, want: "bad config: missing corresponding mountpoint"},
		{name: "missing corresponding mountpoint (default)", config: func(c *Config) { c.DefaultMounts = append(c.DefaultMounts, "/srv") },
			requested: []string{"/etc"}, want: "bad config: missing corresponding mountpoint"},
		{name: "background mount", config: func(c *Config) { c.Paths[0].Options = "ro,bg" },
			want: "bad config: background mount not allowed"},
		{name: "invalid mount point", config: func(c *Config) {
			c.DefaultMounts = []string{"mnt/workdir"}
			c.Paths[1].Mountpoint = "mnt/workdir"
		}, want: "invalid mount point: mnt/workdir"},
		{name: "default bind source missing", config: func(c *Config) { c.Paths[1].Path = root + "/nope" },
			want: "No such directory or mount: " + root + "/nope/"},
		{name: "unchecked requests still validated", config: func(c *Config) { c.DefaultMounts = nil },
			requested: []string{"/mnt/workdir/tmp/a", "/mnt/workdir/tmp/escape"}, want: notSafe + "/mnt/workdir/tmp/escape"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := clone(c)
			if tt.config != nil {
				tt.config(c)
			}
			got, err := c.Plan(tt.requested)
			if err == nil {
				t.Fatalf("no error; planned %+v", got)
			}
			if got != nil {
				t.Fatalf("mounts returned with an error: %+v", got)
			}
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != bus.CodeGenericError {
				t.Fatalf("want a GenericError, got %#v", err)
			}
			if f.Message != tt.want {
				t.Fatalf("got  %q\nwant %q", f.Message, tt.want)
			}
		})
	}
}

func TestPlanSampleWithoutHostDirs(t *testing.T) {
	// the sample's bind source does not exist on this host
	_, err := sampleConfig.Plan(nil)
	if err == nil || err.Error() != "GenericError: No such directory or mount: /some/mount/point/workdir/" {
		t.Fatalf("got %v", err)
	}
}

func TestPlanNonBind(t *testing.T) {
	c := &Config{
		DefaultMounts: []string{"/mnt/koji"},
		SafeRoots:     []string{"/mnt/koji/compose", "/mnt/a"},
		PathSubs:      [][2]string{{"/mnt/a/", "/mnt/b/"}, {"/mnt/b/", "/mnt/koji/compose/c/"}},
		Paths: []PathSection{
			{Name: "path0", Mountpoint: "/mnt/koji/compose", Path: "nfs:/compose", Fstype: "nfs", Options: "ro,hard,ro"},
			{Name: "path1", Mountpoint: "/mnt/koji", Path: "nfs:/koji", Fstype: "nfs4", Options: "ro"},
		},
	}
	got, err := c.Plan([]string{"/mnt/koji/compose/x", "/mnt/a/y", "/mnt/koji/composed"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{
		{Source: "nfs:/koji/", Target: "/mnt/koji", Fstype: "nfs4", Options: "ro"},
		// ro rewritten to rw for read-write mounts, every occurrence
		{Source: "nfs:/compose/x", Target: "/mnt/koji/compose/x", Fstype: "nfs", Options: "rw,hard,rw", ReadWrite: true},
		// path_subs in order: /mnt/a/ → /mnt/b/ → /mnt/koji/compose/c/
		{Source: "nfs:/compose/c/y", Target: "/mnt/koji/compose/c/y", Fstype: "nfs", Options: "rw,hard,rw", ReadWrite: true},
		// mountpoints are string prefixes, as in Koji
		{Source: "nfs:/compose/d", Target: "/mnt/koji/composed", Fstype: "nfs", Options: "rw,hard,rw", ReadWrite: true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}

	// reversed substitutions do not chain
	c.PathSubs[0], c.PathSubs[1] = c.PathSubs[1], c.PathSubs[0]
	if _, err := c.Plan([]string{"/mnt/a/y"}); err == nil || err.Error() != "GenericError: bad config: missing corresponding mountpoint" {
		t.Fatalf("reversed path_subs: %v", err)
	}

	// the first matching section wins, so a broader one listed first hides the narrower
	c.Paths[0], c.Paths[1] = c.Paths[1], c.Paths[0]
	got, err = c.Plan([]string{"/mnt/koji/compose/x"})
	if err != nil {
		t.Fatal(err)
	}
	if got[1].Source != "nfs:/koji/compose/x" || got[1].Fstype != "nfs4" || got[1].Options != "rw" {
		t.Fatalf("got %+v", got[1])
	}
}

func TestPlanBindFstype(t *testing.T) {
	// "bind" makes the fstype "none" whatever the section says
	dir := t.TempDir()
	c := &Config{
		Paths: []PathSection{{Name: "path0", Mountpoint: "/mnt/x", Path: filepath.Dir(dir), Fstype: "nfs", Options: "ro,bind"}},
	}
	c.DefaultMounts = []string{"/mnt/x/" + filepath.Base(dir)}
	got, err := c.Plan(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []Mount{{Source: dir, Target: c.DefaultMounts[0], Fstype: "none", Options: "ro,bind"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func clone(c *Config) *Config {
	n := *c
	n.DefaultMounts = append([]string(nil), c.DefaultMounts...)
	n.SafeRoots = append([]string(nil), c.SafeRoots...)
	n.PathSubs = append([][2]string(nil), c.PathSubs...)
	n.Paths = append([]PathSection(nil), c.Paths...)
	return &n
}

func TestQuoteCommand(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, ""},
		{[]string{"ls"}, "'ls'"},
		{[]string{"echo", "a b", ""}, "'echo' 'a b' ''"},
		{[]string{"sh", "-c", "echo 'hi' > /tmp/x; $HOME"}, `'sh' '-c' 'echo '\''hi'\'' > /tmp/x; $HOME'`},
		{[]string{"it's"}, `'it'\''s'`},
		{[]string{"''"}, `''\'''\'''`},
	}
	for _, tt := range tests {
		if got := QuoteCommand(tt.args); got != tt.want {
			t.Errorf("QuoteCommand(%q) = %s, want %s", tt.args, got, tt.want)
		}
	}
}

func TestResultText(t *testing.T) {
	tests := []struct{ cmd, want string }{
		{"FOO=1 /usr/bin/make -j2", "make completed successfully"},
		{"ls", "ls completed successfully"},
		{"  A=1\tB=2\n./build.sh --x=y", "build.sh completed successfully"},
		{"pungi-koji --config=x.conf", "pungi-koji completed successfully"},
		{"A=1 B=2", "(none) completed successfully"},
		{"", "(none) completed successfully"},
		{"/usr/bin/ ", " completed successfully"}, // os.path.basename of a directory path is ""
		{"a\x1fb", "a completed successfully"},    // Python's split() separators
	}
	for _, tt := range tests {
		if got := ResultText(tt.cmd); got != tt.want {
			t.Errorf("ResultText(%q) = %q, want %q", tt.cmd, got, tt.want)
		}
	}
}

func TestPySplitLines(t *testing.T) {
	got := pySplitLines("a\r\nb\rc\fd\n\ne\u2028")
	want := []string{"a", "b", "c", "d", "", "e"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
