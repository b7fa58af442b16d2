package nbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// These tests run real NBD clients (libnbd's nbdinfo and nbdcopy, qemu-io,
// fio's nbd engine) against the server started in-process. CI installs
// them; a missing one is a failure that names the Debian package.

var clientPackages = map[string]string{
	"nbdinfo": "libnbd-bin",
	"nbdcopy": "libnbd-bin",
	"qemu-io": "qemu-utils",
	"fio":     "fio",
	"nbdfuse": "nbdfuse",
	// for the ext4 test
	"losetup":     "mount",
	"mount":       "mount",
	"umount":      "mount",
	"mkfs.ext4":   "e2fsprogs",
	"e2fsck":      "e2fsprogs",
	"fusermount3": "fuse3",
	"sync":        "coreutils",
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: install the Debian package %s (apt-get install %s)", name, clientPackages[name], clientPackages[name])
	}
	return p
}

// runTool runs a client with a timeout and returns its combined output.
func runTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, needTool(t, name), args...)
	cmd.Dir = t.TempDir() // fio leaves *-verify.state files in its working directory
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func uri(ts *testServer, name string) string {
	return fmt.Sprintf("nbd+unix:///%s?socket=%s", name, ts.sock)
}

func TestClientNbdinfo(t *testing.T) {
	m := newMem(8 << 20)
	ts := startServer(t, []Export{
		{Name: "vol", Description: "writeboost volume", Backend: m},
		{Name: "other", Backend: newMem(1 << 20)},
	}, Options{})

	out := runTool(t, "nbdinfo", "--json", uri(ts, "vol"))
	var info struct {
		Protocol string `json:"protocol"`
		Exports  []struct {
			Name         string `json:"export-name"`
			Description  string `json:"description"`
			Size         int64  `json:"export-size"`
			ReadOnly     bool   `json:"is_read_only"`
			CanFlush     bool   `json:"can_flush"`
			CanFUA       bool   `json:"can_fua"`
			CanTrim      bool   `json:"can_trim"`
			CanZero      bool   `json:"can_zero"`
			CanMultiConn bool   `json:"can_multi_conn"`
			BlockMin     int64  `json:"block_size_minimum"`
			BlockPref    int64  `json:"block_size_preferred"`
			BlockMax     int64  `json:"block_size_maximum"`
		} `json:"exports"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("nbdinfo output: %v\n%s", err, out)
	}
	if info.Protocol != "newstyle-fixed" || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo: %s", out)
	}
	e := info.Exports[0]
	if e.Name != "vol" || e.Size != 8<<20 || e.ReadOnly || !e.CanFlush || !e.CanFUA || !e.CanTrim || !e.CanZero || !e.CanMultiConn {
		t.Errorf("nbdinfo export: %+v", e)
	}
	if e.BlockMin != 512 || e.BlockPref != 4096 || e.BlockMax != 32<<20 {
		t.Errorf("nbdinfo block sizes %d/%d/%d", e.BlockMin, e.BlockPref, e.BlockMax)
	}
	if e.Description != "writeboost volume" {
		t.Errorf("nbdinfo description %q", e.Description)
	}

	// NBD_OPT_LIST through --list.
	out = runTool(t, "nbdinfo", "--list", "--json", uri(ts, ""))
	if !strings.Contains(out, `"export-name": "vol"`) || !strings.Contains(out, `"export-name": "other"`) {
		t.Errorf("nbdinfo --list:\n%s", out)
	}
}

func TestClientQemuIO(t *testing.T) { bothWriteModes(t, testClientQemuIO) }

func testClientQemuIO(t *testing.T, inline bool) {
	const size = 4 << 20
	m := newMem(size)
	m.inline = inline
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{})

	want := make([]byte, size)
	fill := func(off, n int, b byte) {
		for i := off; i < off+n; i++ {
			want[i] = b
		}
	}
	cmds := []string{
		// aligned
		"write -P 0x11 0 64k", "read -P 0x11 0 64k",
		// unaligned both ends
		"write -P 0x22 70001 3333", "read -P 0x22 70001 3333", "read -P 0 65536 4465",
		// sub-block inside one cache block, and across a block boundary
		"write -P 0x33 131172 100", "read -P 0x33 131172 100", "read -P 0 131072 100",
		"write -P 0x34 139000 2000", "read -P 0x34 139000 2000",
		// FUA write
		"write -f -P 0x55 393216 4096", "read -P 0x55 393216 4096",
		// write zeroes over data, partial blocks included
		"write -P 0x44 262144 65536", "write -z 263000 10000", "read -P 0 263000 10000", "read -P 0x44 262144 856",
		// discard, then flush
		"discard 1048576 1048576", "flush",
	}
	fill(0, 65536, 0x11)
	fill(70001, 3333, 0x22)
	fill(131172, 100, 0x33)
	fill(139000, 2000, 0x34)
	fill(393216, 4096, 0x55)
	fill(262144, 65536, 0x44)
	fill(263000, 10000, 0)

	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := runTool(t, "qemu-io", append(args, uri(ts, "vol"))...)
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed") {
		t.Fatalf("qemu-io:\n%s", out)
	}
	wantReads := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, "read ") {
			wantReads++
		}
	}
	// qemu-io reports each verified read as "read N/N bytes".
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "read ") {
			n++
		}
	}
	if n != wantReads {
		t.Errorf("qemu-io ran %d reads, want %d:\n%s", n, wantReads, out)
	}
	got := m.snapshot()
	// The discarded range has unspecified contents: compare around it.
	if !bytes.Equal(got[:1<<20], want[:1<<20]) || !bytes.Equal(got[2<<20:], want[2<<20:]) {
		t.Errorf("backend contents differ from what qemu-io wrote")
	}
	if m.fuaWrites.Load() == 0 || m.flushes.Load() == 0 || m.trims.Load() == 0 || m.zeroes.Load() == 0 {
		t.Errorf("commands not seen by the backend: fua %d flush %d trim %d zero %d",
			m.fuaWrites.Load(), m.flushes.Load(), m.trims.Load(), m.zeroes.Load())
	}
}

func TestClientNbdcopy(t *testing.T) {
	const size = 16 << 20
	m := newMem(size)
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{})
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.img"), filepath.Join(dir, "out.img")
	src := make([]byte, size)
	rand.Read(src[:size/2]) // the second half stays zero: nbdcopy may zero or skip it
	if err := os.WriteFile(in, src, 0o600); err != nil {
		t.Fatal(err)
	}
	// nbdcopy uses several connections at once when CAN_MULTI_CONN is set.
	runTool(t, "nbdcopy", "--flush", in, uri(ts, "vol"))
	if !bytes.Equal(m.snapshot(), src) {
		t.Fatal("volume differs from the file copied in")
	}
	if m.flushes.Load() == 0 {
		t.Error("nbdcopy --flush sent no NBD_CMD_FLUSH")
	}
	runTool(t, "nbdcopy", uri(ts, "vol"), out)
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatal("file copied out differs")
	}
}

func TestClientFio(t *testing.T) { bothWriteModes(t, testClientFio) }

func testClientFio(t *testing.T, inline bool) {
	const jobs, per = 4, 2 << 20
	m := newMem(jobs * per)
	m.inline = inline
	ts := startServer(t, []Export{{Name: "", Backend: m}}, Options{})
	out := runTool(t, "fio",
		"--name=randwrite", "--ioengine=nbd", "--uri="+uri(ts, ""),
		"--rw=randwrite", "--bs=4k", fmt.Sprint("--size=", per), fmt.Sprint("--offset_increment=", per),
		fmt.Sprint("--numjobs=", jobs), "--iodepth=32",
		"--verify=crc32c", "--verify_fatal=1", "--do_verify=1", "--group_reporting")
	if !strings.Contains(out, "err= 0") || strings.Contains(out, "verify:") && strings.Contains(out, "bad") {
		t.Fatalf("fio:\n%s", out)
	}
	if w := m.writes.Load(); w < jobs*per/4096 {
		t.Errorf("backend saw %d writes, want >= %d", w, jobs*per/4096)
	}
	if r := m.reads.Load(); r < jobs*per/4096 {
		t.Errorf("backend saw %d reads (verify pass), want >= %d", r, jobs*per/4096)
	}
}

// TestClientExt4OverNbdfuse puts ext4 on the export through the kernel:
// nbdfuse exposes the export as a file, losetup makes it a block device,
// and mkfs.ext4, mount, file writes, sync, remount and e2fsck -fn run on
// it. Needs root, /dev/fuse and loop devices, as CI has.
func TestClientExt4OverNbdfuse(t *testing.T) {
	for _, tool := range []string{"nbdfuse", "losetup", "mount", "umount", "mkfs.ext4", "e2fsck", "fusermount3"} {
		needTool(t, tool)
	}
	const size = 64 << 20
	m := newMem(size)
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{})
	dir, err := os.MkdirTemp("", "nbdfuse")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	fuseDir, mnt, pidfile := filepath.Join(dir, "fuse"), filepath.Join(dir, "mnt"), filepath.Join(dir, "pid")
	for _, d := range []string{fuseDir, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	fuse := exec.Command(needTool(t, "nbdfuse"), "-P", pidfile, fuseDir+"/disk", uri(ts, "vol"))
	fuse.Stderr = os.Stderr
	if err := fuse.Start(); err != nil {
		t.Fatal(err)
	}
	fuseDone := make(chan error, 1)
	go func() { fuseDone <- fuse.Wait() }()
	t.Cleanup(func() {
		exec.Command("fusermount3", "-u", fuseDir).Run()
		select {
		case <-fuseDone:
		case <-time.After(10 * time.Second):
			fuse.Process.Kill()
			<-fuseDone
			t.Errorf("nbdfuse did not exit after fusermount3 -u")
		}
	})
	// nbdfuse writes its pid file once the file is served.
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(pidfile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nbdfuse did not become ready")
		}
	}

	loop := strings.TrimSpace(runTool(t, "losetup", "-f", "--show", fuseDir+"/disk"))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	runTool(t, "mkfs.ext4", "-q", "-F", loop)

	files := map[string][]byte{}
	for i := range 3 {
		b := make([]byte, (i+1)<<20)
		rand.Read(b)
		files[fmt.Sprintf("f%d", i)] = b
	}
	runTool(t, "mount", loop, mnt)
	mounted := true
	t.Cleanup(func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	})
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(mnt, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	runTool(t, "sync", "-f", mnt)
	runTool(t, "umount", mnt)
	runTool(t, "mount", loop, mnt)
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s after remount: %v, equal %v", name, err, bytes.Equal(got, b))
		}
	}
	runTool(t, "umount", mnt)
	mounted = false
	runTool(t, "e2fsck", "-fn", loop)
	if m.flushes.Load() == 0 {
		t.Errorf("ext4 through nbdfuse sent no flush")
	}
}
