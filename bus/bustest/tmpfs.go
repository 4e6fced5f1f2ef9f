package bustest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// MountTmpfs mounts a tmpfs of size bytes on a new directory, a small disk
// for tests that fill it; it is unmounted when the test ends, after
// everything started later has stopped. It skips the test when not root.
func MountTmpfs(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("kojibus-test", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
		}
	})
	return dir
}

// FillUntilFree writes the file name in dir, taking space until about
// free bytes are left available on the filesystem of dir, and returns its
// path (removing it gives the space back). Where no more than free bytes
// are left already (others filled it meanwhile), the file stays empty.
func FillUntilFree(t testing.TB, dir, name string, free int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Others write to the disk meanwhile: what was free a moment ago may not
	// be any more.
	for attempt := 0; ; attempt++ {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		want := int64(st.Bavail)*st.Bsize - free
		if want <= 0 {
			return path
		}
		err := unix.Fallocate(int(f.Fd()), 0, 0, want)
		switch {
		case err == nil:
			return path
		case !errors.Is(err, unix.ENOSPC) || attempt == 10:
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}
