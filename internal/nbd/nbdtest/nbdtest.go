// Package nbdtest runs real NBD servers for tests.
package nbdtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Nbdkit runs nbdkit with args (a plugin and its parameters, filters
// before) on a unix socket in a fresh short directory until the test ends,
// and returns the socket's path. It skips the test where nbdkit is missing.
func Nbdkit(t testing.TB, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("nbdkit")
	if err != nil {
		t.Skip("nbdkit not installed (Debian package nbdkit)")
	}
	// Socket paths are limited to 108 bytes, which t.TempDir can exceed.
	dir, err := os.MkdirTemp("", "nbdkit")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(bin, append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if i == 400 {
			t.Fatal("nbdkit did not create its socket in 10s")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// NoFlush are nbdkit arguments for a writable 64 MiB export whose server
// offers no flush (reads return zeros, writes are dropped).
var NoFlush = []string{"eval", "get_size=echo 67108864",
	"pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
	"pwrite=cat >/dev/null", "can_write=exit 0", "can_flush=exit 3"}
