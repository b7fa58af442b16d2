package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/probe"
	"github.com/writeboost/writeboost/internal/testimg"
)

func runFormat(t *testing.T, tty bool, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, &out, &errb, tty)
	return code, out.String(), errb.String()
}

func sparse(t *testing.T, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Garbage where the headers go: format must zero it.
	f.WriteAt(bytes.Repeat([]byte{0xee}, 4096), layout.SuperblockSize)
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

func formatted(t *testing.T, path string) bool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(b) != layout.Magic {
		return false
	}
	g, _ := layout.NewGeometry(int64(len(b)))
	for slot := range g.NrSegments {
		off := g.SegmentOffset(slot)
		if !bytes.Equal(b[off:off+layout.HeaderSize], make([]byte, layout.HeaderSize)) {
			t.Fatalf("segment %d header not zeroed", slot)
		}
	}
	return bytes.Equal(b[4:layout.SuperblockSize], make([]byte, layout.SuperblockSize-4))
}

func TestFormat(t *testing.T) {
	path := sparse(t, 64<<20+12345)
	code, out, errs := runFormat(t, false, path)
	want := "formatted: " + path + "\nsegments: 126\ncache_blocks: 16002\nusable_bytes: 65544192 (62.5 MiB)\n"
	if code != 0 || out != want || errs != "" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
	}
	if !formatted(t, path) {
		t.Fatal("not formatted per docs/format.md")
	}
	// A fresh cache has no dirty block: formatting again needs no --force.
	code, out, errs = runFormat(t, false, "--quiet", path)
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("--quiet again: exit %d stdout %q stderr %q", code, out, errs)
	}
}

func TestProgressBar(t *testing.T) {
	path := sparse(t, 1<<30)
	code, out, errs := runFormat(t, true, path) // under a second: no bar
	if code != 0 || !strings.Contains(out, "segments: 2046\n") || errs != "" {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
	}
	defer func(d time.Duration) { barAfter = d }(barAfter)
	barAfter = 0 // as if the format took long
	code, out, errs = runFormat(t, true, path)
	if code != 0 || !strings.Contains(out, "segments: 2046\n") ||
		!strings.HasPrefix(errs, "\rwb-format-cache: zeroing segment headers [") ||
		!strings.Contains(errs, "] 100% 2046 of 2046 segments, ") || !strings.HasSuffix(errs, "\n") {
		t.Fatalf("exit %d stdout %q stderr %q", code, out, errs)
	}
	code, _, errs = runFormat(t, false, path)
	if code != 0 || errs != "" {
		t.Fatalf("no terminal: exit %d stderr %q", code, errs)
	}
	code, out, errs = runFormat(t, true, "-q", path)
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("--quiet on a terminal: exit %d stdout %q stderr %q", code, out, errs)
	}
}

// TestRefusals: each refusal is one line naming the device, and the
// device is untouched.
func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	small := sparse(t, layout.MinDeviceSize-512)
	dirty := filepath.Join(dir, "dirty")
	if _, err := testimg.Write(dirty, testimg.Config{Seed: 1, NrSegments: 20, BackingBlocks: 500, Segments: 30}); err != nil {
		t.Fatal(err)
	}
	readonly := sparse(t, 8<<20)
	makeReadOnly(t, readonly)
	for _, tc := range []struct{ path, reason string }{
		{small, "too small: 1572352 bytes, a cache device needs at least 1572864 (1 MiB + 512 KiB)"},
		{dirty, "refusing to format: "},
		{readonly, "not writable: "},
		{filepath.Join(dir, "missing"), "no such file or directory"},
		{dir, "is a directory"},
	} {
		before, _ := os.ReadFile(tc.path)
		code, out, errs := runFormat(t, false, tc.path)
		if code != 1 || out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, progName+": "+tc.path+": "+tc.reason) {
			t.Errorf("%s: exit %d stdout %q stderr %q", tc.path, code, out, errs)
		}
		if after, _ := os.ReadFile(tc.path); !bytes.Equal(before, after) {
			t.Errorf("%s: refused, but written", tc.path)
		}
	}
	if code, _, errs := runFormat(t, false, "--force", dirty); code != 0 || !formatted(t, dirty) {
		t.Fatalf("--force over dirty blocks: exit %d %q", code, errs)
	}
	for _, args := range [][]string{{}, {"--bogus", dirty}, {dirty, dirty}} {
		if code, _, errs := runFormat(t, false, args...); code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%q: exit %d stderr %q", args, code, errs)
		}
	}
}

// makeReadOnly makes path unwritable even for root: the immutable
// attribute (chattr(1), e2fsprogs) where we are root, mode 0444 otherwise.
func makeReadOnly(t *testing.T, path string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(path, 0o444); err != nil {
			t.Fatal(err)
		}
		return
	}
	if out, err := exec.Command("chattr", "+i", path).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i %s (the file system must support it): %v %s", path, err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", path).Run() })
}

func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), progName)
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := sparse(t, 4<<20)
	out, err := exec.Command(bin, path).Output()
	if err != nil || !strings.Contains(string(out), "segments: 6\n") || !formatted(t, path) {
		t.Fatalf("%v %q", err, out)
	}
	out, err = exec.Command(bin, filepath.Join(t.TempDir(), "x")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.HasSuffix(string(out), ": no such file or directory\n") {
		t.Fatalf("missing: %v %q", err, out)
	}
}

func TestManPage(t *testing.T) {
	man, err := os.ReadFile("../../man/" + progName + ".8")
	if err != nil {
		t.Fatal(err)
	}
	_, help, _ := runFormat(t, false, "--help")
	flags := regexp.MustCompile(`--[a-z-]+`).FindAllString(help, -1)
	if len(flags) < 3 {
		t.Fatalf("help lists %d flags:\n%s", len(flags), help)
	}
	for _, fl := range flags {
		if !bytes.Contains(man, []byte(strings.ReplaceAll(fl, "-", `\-`))) {
			t.Errorf("man page does not document %s", fl)
		}
	}
	for _, code := range []string{"0", "1", "2"} {
		if !regexp.MustCompile(`(?m)^\.TP\n\.B ` + code + `\n`).Match(man) {
			t.Errorf("man page does not document exit status %s", code)
		}
	}
}

func TestBusy(t *testing.T) {
	path := sparse(t, 4<<20)
	held, err := blockdev.OpenFile(path, blockdev.FileOptions{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, _, errs := runFormat(t, false, path)
	if code != 1 || !strings.HasPrefix(errs, progName+": "+path+": in use") || formattedMagic(t, path) {
		t.Fatalf("format of a held device: exit %d %q", code, errs)
	}
}

func formattedMagic(t *testing.T, path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint32(b) == layout.Magic
}

// mkfs makes an ext4 file system on a fresh image of size bytes.
func mkfs(t *testing.T, size int64) string {
	t.Helper()
	path := sparse(t, size)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s (e2fsprogs, installed by scripts/deps.sh): %v %s", path, err, out)
	}
	return path
}

// refused runs wb-format-cache with args and wants exit 1, one line
// starting with want, and the image as it was.
func refused(t *testing.T, path, want string, args ...string) {
	t.Helper()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := runFormat(t, false, append(args, path)...)
	if code != 1 || out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, progName+": "+path+": "+want) {
		t.Errorf("exit %d stdout %q stderr %q, want exit 1 and %q", code, out, errs, want)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Errorf("%s: refused, but written", path)
	}
}

// TestForeignSignature: an ext4 image is refused, named with the offset of
// its magic and both ways on; --force formats it, and so does wipefs -a
// first.
func TestForeignSignature(t *testing.T) {
	fs := mkfs(t, 16<<20)
	refused(t, fs, "refusing to format: it holds an ext4 signature at offset 0x438; if that data is not needed, erase it first with wipefs -a "+fs+", or pass --force\n")
	refused(t, fs, "refusing to format: it holds an ext4 signature", "--quiet")
	if code, _, errs := runFormat(t, false, "--force", fs); code != 0 || !formatted(t, fs) {
		t.Fatalf("--force: exit %d %q", code, errs)
	}
	// Now a cache device: formatting it again needs nothing.
	if code, _, errs := runFormat(t, false, fs); code != 0 {
		t.Fatalf("a cache device formatted over an ext4: exit %d %q", code, errs)
	}

	fs = mkfs(t, 16<<20)
	if out, err := exec.Command("wipefs", "-a", fs).CombinedOutput(); err != nil {
		t.Fatalf("wipefs -a: %v %s", err, out)
	}
	if code, _, errs := runFormat(t, false, fs); code != 0 || !formatted(t, fs) {
		t.Fatalf("after wipefs -a: exit %d %q", code, errs)
	}
}

// TestProbeMissing: without wipefs nothing is formatted that is not a cache
// device already, unless --force.
func TestProbeMissing(t *testing.T) {
	dir := t.TempDir()
	failing := filepath.Join(dir, "wipefs")
	if err := os.WriteFile(failing, []byte("#!/bin/sh\necho 'wipefs: cannot read' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ tool, want string }{
		{"wipefs-not-installed", "refusing to format: cannot look for file systems and other signatures on it: wipefs not found (Debian package util-linux); install it, or pass --force\n"},
		{failing, "refusing to format: cannot look for file systems and other signatures on it (probe: wipefs " + filepath.Join(dir, "x") + ": wipefs: cannot read); pass --force to format without looking\n"},
	} {
		old := probe.Tool
		probe.Tool = tc.tool
		path := filepath.Join(dir, "x")
		os.Remove(path)
		if err := os.WriteFile(path, make([]byte, 4<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		refused(t, path, tc.want)
		if code, _, errs := runFormat(t, false, "--force", path); code != 0 || !formatted(t, path) {
			t.Errorf("--force without the probe: exit %d %q", code, errs)
		}
		if code, _, errs := runFormat(t, false, path); code != 0 {
			t.Errorf("a cache device without the probe: exit %d %q", code, errs)
		}
		probe.Tool = old
	}
}

// TestBusyThroughLoop: a loop device over a cache held by a volume is the
// same cache.
func TestBusyThroughLoop(t *testing.T) {
	path := sparse(t, 4<<20)
	out, err := exec.Command("losetup", "-f", "--show", path).CombinedOutput()
	if err != nil {
		// Only a non-root user may lack loop devices; CI runs as root.
		if os.Geteuid() != 0 {
			t.Skipf("losetup as uid %d: %v %s (loop devices need root)", os.Geteuid(), err, out)
		}
		t.Fatalf("losetup as root: %v %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	held, err := blockdev.OpenFile(path, blockdev.FileOptions{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	real, _ := filepath.EvalSymlinks(path)
	code, _, errs := runFormat(t, false, loop)
	want := progName + ": " + loop + ": in use by pid " + strconv.Itoa(os.Getpid())
	if code != 1 || !strings.HasPrefix(errs, want) || !strings.HasSuffix(errs, " (through "+loop+" → "+real+")\n") || formattedMagic(t, path) {
		t.Fatalf("format of a loop over a held file: exit %d %q, want %q...", code, errs, want)
	}
}
