package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/probe"
)

// formatAsCache formats the image at path as a cache device.
func formatAsCache(t *testing.T, path string) {
	t.Helper()
	d, err := blockdev.OpenFile(path, blockdev.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := check.Format(d, check.FormatOptions{}); err != nil {
		t.Fatal(err)
	}
}

// mkfsExt4 puts an ext4 file system on the image at path.
func mkfsExt4(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s (e2fsprogs, installed by scripts/deps.sh): %v %s", path, err, out)
	}
}

// refusedStart runs wb-create with args and wants exit 1 with a last line
// "wb-create: " + want (want's beginning, if it ends with "..."), and
// every image in imgs as it was.
func refusedStart(t *testing.T, imgs []string, want string, args ...string) {
	t.Helper()
	var before [][]byte
	for _, p := range imgs {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, b)
	}
	code, _, stderr := runOnce(t, args...)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	match := last == "wb-create: "+want
	if prefix, ok := strings.CutSuffix(want, "..."); ok {
		match = strings.HasPrefix(last, "wb-create: "+prefix)
	}
	if code != 1 || !match {
		t.Errorf("%q: exit %d, stderr %q;\nwant exit 1 and %q", args, code, stderr, "wb-create: "+want)
	}
	for i, p := range imgs {
		if after, _ := os.ReadFile(p); !bytes.Equal(before[i], after) {
			t.Errorf("%q: refused, but %s was written", args, p)
		}
	}
}

// TestAdminMistakes: the pairs of issue 11 are refused before anything is
// written, each saying what is wrong; --force overrides what it says it
// overrides, and nothing else.
func TestAdminMistakes(t *testing.T) {
	dir, b, c := images(t, 16<<20, 8<<20)
	c, _ = filepath.EvalSymlinks(c)
	formatAsCache(t, c)

	t.Run("same file", func(t *testing.T) {
		refusedStart(t, []string{c}, "BACKING "+c+" and CACHE "+c+" share storage (both are "+c+"): the cache must be another device", "v", c, c)
		refusedStart(t, []string{c}, "BACKING "+c+" and CACHE "+c+" share storage (both are "+c+"): the cache must be another device", "--force", "v", c, c)
	})
	t.Run("symlink and hard link", func(t *testing.T) {
		sym, hard := filepath.Join(dir, "sym.img"), filepath.Join(dir, "hard.img")
		if err := os.Symlink(c, sym); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(c, hard); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, []string{c}, "BACKING "+sym+" and CACHE "+c+" share storage (both are "+c+"): the cache must be another device", "v", sym, c)
		refusedStart(t, []string{c}, "BACKING "+hard+" and CACHE "+c+" share storage ("+hard+" and "+c+" are the same file (dev ...", "v", hard, c)
	})
	t.Run("cache larger than backing", func(t *testing.T) {
		small := filepath.Join(dir, "small.img")
		if err := os.WriteFile(small, make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, []string{small, c}, "CACHE "+c+" (8.0 MiB) is larger than BACKING "+small+" (4.0 MiB): are BACKING and CACHE swapped? (--force starts anyway)", "v", small, c)
		r := start(t, "--force", "big", small, c)
		r.stop(t)
	})
	t.Run("swapped", func(t *testing.T) {
		fs := filepath.Join(dir, "fs.img")
		if err := os.WriteFile(fs, make([]byte, 32<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		mkfsExt4(t, fs)
		// BACKING the cache, CACHE the file system: what CACHE holds
		// is named, nothing destructive suggested.
		refusedStart(t, []string{c, fs}, "cache device "+fs+" is not a writeboost cache: it holds an ext4 signature at offset 0x438, and BACKING "+c+" is a writeboost cache device: BACKING and CACHE look swapped; nothing was written", "v", c, fs)
		refusedStart(t, []string{c, fs}, "BACKING "+c+" is a writeboost cache device (the magic in sector 0): are BACKING and CACHE swapped? (--force uses it as the backing device, over its log)", "--reformat", "v", c, fs)
		// A file system as CACHE beside a plain BACKING.
		big := filepath.Join(dir, "big.img")
		if err := os.WriteFile(big, make([]byte, 64<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, []string{big, fs}, "cache device "+fs+" is not a writeboost cache: it holds an ext4 signature at offset 0x438: are BACKING and CACHE swapped? Nothing was written", "v", big, fs)
		refusedStart(t, []string{big, fs}, "refusing to format CACHE "+fs+": it holds an ext4 signature at offset 0x438 (are BACKING and CACHE swapped?); if that data is not needed, erase it first with wipefs -a "+fs+", or add --force", "--reformat", "v", big, fs)
		// BACKING a cache, CACHE empty.
		empty := filepath.Join(dir, "empty.img")
		if err := os.WriteFile(empty, make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, []string{c, empty}, "cache device "+empty+" is not formatted, but BACKING "+c+" is a writeboost cache device: are BACKING and CACHE swapped? Nothing was written", "v", c, empty)
		// --force --reformat formats the file system.
		r := start(t, "--reformat", "--force", "fs", big, fs)
		r.stop(t)
		if code, _, stderr := runOnce(t, "v", c, fs); code != 1 || !strings.Contains(stderr, "BACKING "+c+" is a writeboost cache device") {
			t.Errorf("after --force --reformat: exit %d %q", code, stderr)
		}
	})
	t.Run("no probe", func(t *testing.T) {
		old := probe.Tool
		probe.Tool = "wipefs-not-installed"
		defer func() { probe.Tool = old }()
		fresh := filepath.Join(dir, "fresh.img")
		if err := os.WriteFile(fresh, make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		refusedStart(t, []string{fresh}, "refusing to format CACHE "+fresh+": cannot look for file systems and other signatures on it: wipefs not found (Debian package util-linux); install it, or add --force", "--reformat", "v", b, fresh)
		// Not formatted: the suggested commands probe before they write.
		refusedStart(t, []string{fresh}, "cache device "+fresh+" is not formatted: format it with wb-format-cache "+fresh+", or start with --reformat", "v", b, fresh)
		r := start(t, "--reformat", "--force", "np", b, fresh)
		r.stop(t)
	})
}

// TestInUseThroughLoop: a second volume on the cache of a running one,
// through a loop device, is refused and told which volume holds it.
func TestInUseThroughLoop(t *testing.T) {
	dir, b, c := images(t, 16<<20, 8<<20)
	c, _ = filepath.EvalSymlinks(c)
	b2 := filepath.Join(dir, "b2.img")
	if err := os.WriteFile(b2, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", c).CombinedOutput()
	if err != nil {
		// Only a non-root user may lack loop devices; CI runs as root.
		if os.Geteuid() != 0 {
			t.Skipf("losetup as uid %d: %v %s (loop devices need root)", os.Geteuid(), err, out)
		}
		t.Fatalf("losetup as root: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	r := start(t, "--reformat", "va", b, c)
	code, _, stderr := runOnce(t, "vb", b2, loop)
	want := "wb-create: cache device " + loop + ": in use by writeboost volume va (pid " + strconv.Itoa(os.Getpid()) + ") (through " + loop + " → " + c + ")"
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 1 || lines[len(lines)-1] != want {
		t.Fatalf("exit %d %q, want %q", code, stderr, want)
	}
	r.stop(t)
	// The cache belongs to b now: another backing device rebinds it only
	// with --force.
	if code, _, stderr := runOnce(t, "vb", b2, loop); code != 1 || !strings.Contains(stderr, "belongs to file "+b) {
		t.Fatalf("a cache bound to %s started over %s: exit %d %q", b, b2, code, stderr)
	}
	r = start(t, "--force", "vb", b2, loop)
	if code, _, stderr := runOnce(t, "va", b, c); code != 1 || !strings.Contains(stderr, "in use by writeboost volume vb") {
		t.Fatalf("the file under a running loop: exit %d %q", code, stderr)
	}
	r.stop(t)
}

// TestForceDocumented: --help and the man page say what --force
// overrides, and the man page lists the refusals.
func TestForceDocumented(t *testing.T) {
	_, out, _ := runOnce(t, "--help")
	help := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{"larger than BACKING", "BACKING is a writeboost cache device", "file system, partition table or other signature", "wipefs missing", "sharing storage is never allowed"} {
		if !strings.Contains(help, want) {
			t.Errorf("--help on --force lacks %q", want)
		}
	}
	page, err := os.ReadFile("../../man/wb-create.8")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".TP\n.B \\-\\-force\n", ".SH REFUSALS\n", "share storage", "in use by writeboost volume", "is larger than\n.I BACKING", "ext4 signature at offset 0x438"} {
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("man page lacks %q", want)
		}
	}
}
