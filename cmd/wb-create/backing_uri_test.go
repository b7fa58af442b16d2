package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/superblock"
)

// nbdkit serves args (a plugin and its parameters) on a unix socket in
// dir until the test ends, and returns the socket's path.
func nbdkit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("nbdkit")
	if err != nil {
		t.Skip("nbdkit not installed (Debian package nbdkit)")
	}
	sock := filepath.Join(dir, "nbdkit.sock")
	cmd := exec.Command(bin, append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for i := 0; ; i++ {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
		if i == 200 {
			t.Fatal("nbdkit did not create its socket")
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// BACKING as an NBD URI: the volume serves, stops cleanly, binds its cache
// to the URI (without TLS parameters), and restarts on it.
func TestBackingURI(t *testing.T) {
	dir, b, c := images(t, 64<<20, 8<<20)
	sock := nbdkit(t, dir, "file", b)
	uri := "nbd+unix:///?socket=" + sock
	r := start(t, "--reformat", "vol", uri, c)
	nc := dial(t, "vol")
	if nc.Size() != 64<<20 {
		t.Fatalf("size %d", nc.Size())
	}
	data := bytes.Repeat([]byte("network!"), 4096)
	if err := nc.WriteAt(data, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	r.stop(t)

	cache, err := blockdev.OpenFile(c, blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	area, err := superblock.Read(cache)
	cache.Close()
	if err != nil || area.Binding == nil || area.Binding.Kind != "uri" || area.Binding.URI != uri || area.Binding.Size != 64<<20 {
		t.Fatalf("binding %+v: %v", area.Binding, err)
	}

	// Another export is refused, as another file would be.
	other := nbdkit(t, t.TempDir(), "memory", "64M")
	if code, _, stderr := runOnce(t, "vol", "nbd+unix:///?socket="+other, c); code != 1 || !strings.Contains(stderr, "another URI") {
		t.Fatalf("start on another export: exit %d %q", code, stderr)
	}
	r = start(t, "vol", uri, c)
	nc = dial(t, "vol")
	got := make([]byte, len(data))
	if err := nc.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %v", err)
	}
	nc.Close()
	r.stop(t)
}

// A server without flush is refused unless --backing-no-flush-ok.
func TestBackingURINoFlush(t *testing.T) {
	dir, _, c := images(t, 0, 8<<20)
	sock := nbdkit(t, dir, "eval", "get_size=echo 67108864",
		"pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
		"pwrite=cat >/dev/null", "can_write=exit 0", "can_flush=exit 3")
	uri := "nbd+unix:///?socket=" + sock
	if code, _, stderr := runOnce(t, "--reformat", "vol", uri, c); code != 1 || !strings.Contains(stderr, "--backing-no-flush-ok") {
		t.Fatalf("no flush: exit %d %q", code, stderr)
	}
	r := start(t, "--reformat", "--backing-no-flush-ok", "vol", uri, c)
	r.stop(t)
}
