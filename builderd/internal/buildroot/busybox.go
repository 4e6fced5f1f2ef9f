package buildroot

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BusyboxPath is where Debian's busybox-static installs its static binary.
const BusyboxPath = "/bin/busybox"

// MakeBusyboxRoot makes a small root filesystem in dir from a static
// busybox (Debian's busybox-static): /bin/busybox with its applet links,
// root and mockbuild users, the usual directories. Enough for runroot
// commands of the shell kind; the demo tag and the tests use it.
func MakeBusyboxRoot(dir, busybox string) error {
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "dev", "proc", "sys", "builddir", "root"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777); err != nil {
		return err
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("busybox (install busybox-static): %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		return err
	}
	// Applet links, made the way busybox itself does (absolute symlinks).
	if out, err := exec.Command("chroot", dir, "/bin/busybox", "--install", "-s").CombinedOutput(); err != nil {
		return fmt.Errorf("busybox --install: %v: %s", err, out)
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nmockbuild:x:1000:1000::/builddir:/bin/sh\n",
		"etc/group":  "root:x:0:\nmock:x:135:\nmockbuild:x:1000:\n",
		"etc/hosts":  "127.0.0.1 localhost\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}
