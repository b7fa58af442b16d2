package blockdev

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// busy opens path exclusively and wants a *BusyError.
func busy(t *testing.T, path string) *BusyError {
	t.Helper()
	d, err := OpenFile(path, FileOptions{Exclusive: true, Logger: slog.New(slog.DiscardHandler)})
	if err == nil {
		d.Close()
		t.Fatalf("exclusive open of %s succeeded", path)
	}
	var be *BusyError
	if !errors.As(err, &be) || !errors.Is(err, ErrBusy) {
		t.Fatalf("exclusive open of %s: %v, want a *BusyError", path, err)
	}
	return be
}

func exclusive(t *testing.T, path string) *File {
	t.Helper()
	return openT(t, path, FileOptions{Exclusive: true, Logger: slog.New(slog.DiscardHandler)})
}

func holderPIDs(hs []Holder) []int {
	var pids []int
	for _, h := range hs {
		pids = append(pids, h.PID)
	}
	return pids
}

func TestExclusiveHolders(t *testing.T) {
	path := sparseFile(t, realDir(t), "c.img", 1<<20)
	d := exclusive(t, path)
	be := busy(t, path)
	if be.Via != "" || !slices.Equal(holderPIDs(be.Holders), []int{os.Getpid()}) {
		t.Fatalf("held by this process: %+v", be)
	}
	if !strings.HasPrefix(be.Error(), "blockdev: open "+path+": in use by pid ") {
		t.Errorf("Error() = %q", be.Error())
	}
	d.Close()

	// Another process: flock(1) holds the file while its command runs.
	if _, err := exec.LookPath("flock"); err != nil {
		t.Fatal("flock(1) is not installed: scripts/deps.sh installs it (Debian package util-linux)")
	}
	cmd := exec.Command("flock", "--exclusive", path, "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		d, err := OpenFile(path, FileOptions{Exclusive: true})
		if err != nil {
			break
		}
		d.Close()
		if time.Now().After(deadline) {
			t.Fatal("flock(1) did not take the lock within 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	be = busy(t, path)
	if !slices.Contains(holderPIDs(be.Holders), cmd.Process.Pid) {
		t.Fatalf("holders %+v lack flock(1), pid %d", be.Holders, cmd.Process.Pid)
	}
	if !strings.Contains(be.Detail(), "pid "+itoa(cmd.Process.Pid)+" (flock)") {
		t.Errorf("Detail() = %q", be.Detail())
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestExclusiveThroughLoop: a loop device and its backing file are one
// storage to an exclusive open, whichever comes first; loops over
// different bytes of one file are not.
func TestExclusiveThroughLoop(t *testing.T) {
	dir := realDir(t)
	c := sparseFile(t, dir, "c.img", 8<<20)
	loop := loopAttach(t, c)

	d := exclusive(t, c)
	be := busy(t, loop)
	if be.Via != loop+" → "+c || !slices.Equal(holderPIDs(be.Holders), []int{os.Getpid()}) {
		t.Fatalf("loop over a held file: %+v", be)
	}
	if want := "in use by pid " + itoa(os.Getpid()); !strings.HasPrefix(be.Detail(), want) || !strings.HasSuffix(be.Detail(), "(through "+loop+" → "+c+")") {
		t.Errorf("Detail() = %q", be.Detail())
	}
	d.Close()

	l := exclusive(t, loop)
	if l.lockFile == nil {
		t.Fatal("no lock on the backing file")
	}
	if be := busy(t, c); be.Via != "" || len(be.Holders) != 1 {
		t.Fatalf("file under a held loop: %+v", be)
	}
	// A hard link is the same file.
	hard := filepath.Join(dir, "hard.img")
	if err := os.Link(c, hard); err != nil {
		t.Fatal(err)
	}
	busy(t, hard)
	l.Close()
	exclusive(t, c).Close()

	t.Run("ranges", func(t *testing.T) {
		l1 := loopAttach(t, c, "--offset", "0", "--sizelimit", "2097152")
		l2 := loopAttach(t, c, "--offset", "2097152", "--sizelimit", "2097152")
		l3 := loopAttach(t, c, "--offset", "1048576", "--sizelimit", "2097152")
		a := exclusive(t, l1)
		b := exclusive(t, l2)
		be := busy(t, l3)
		if be.Via != l3+" → "+c {
			t.Errorf("Via %q", be.Via)
		}
		a.Close()
		b.Close()
		exclusive(t, l3).Close()
	})

	t.Run("deleted backing file", func(t *testing.T) {
		gone := sparseFile(t, dir, "gone.img", 4<<20)
		lg := loopAttach(t, gone)
		if err := os.Remove(gone); err != nil {
			t.Fatal(err)
		}
		var log bytes.Buffer
		d, err := OpenFile(lg, FileOptions{Exclusive: true, Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatalf("a loop over a deleted file: %v", err)
		}
		d.Close()
		if !strings.Contains(log.String(), "cannot lock the storage below the device") {
			t.Errorf("no warning logged: %q", log.String())
		}
	})
}

// TestClaimedAcrossPartitions: the kernel's claim spans a disk and its
// partitions, so a refused O_EXCL is seen held through any of them: a
// process locking a partition's node or the disk's, a kernel device
// stacked on a partition. A sibling partition is no holder.
func TestClaimedAcrossPartitions(t *testing.T) {
	s, _ := fakeSys(t)
	node := func(name string) string { return filepath.Join(s.dev, name) }
	// Regular files for nodes: a holder locks them as it would the
	// device (the fake 8:x nodes open no device).
	for _, name := range []string{"sdb", "sdb1", "sdb2"} {
		if err := os.Remove(node(name)); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(node(name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sdb := Identity{Path: node("sdb"), Kind: KindBlock, Rdev: unix.Mkdev(8, 16)}
	part := func(n uint32) Identity {
		return Identity{Path: node("sdb" + itoa(int(n))), Kind: KindBlock, Rdev: unix.Mkdev(8, 16+n), Parent: &sdb}
	}
	sdb1, sdb2 := part(1), part(2)
	lock := func(name string) (unlock func()) {
		f, err := os.Open(node(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		return func() { f.Close() }
	}
	self := []int{os.Getpid()}
	for _, id := range []Identity{sdb, sdb1, sdb2} {
		if be := s.claimed(id.Path, id); be.held() || !be.Claimed {
			t.Errorf("%s, nobody holding: %+v", id.Path, be)
		}
	}

	unlock := lock("sdb1")
	if be := s.claimed(sdb.Path, sdb); !slices.Equal(holderPIDs(be.Holders), self) {
		t.Errorf("disk of a locked partition: holders %+v, want this process", be.Holders)
	}
	if be := s.claimed(sdb2.Path, sdb2); be.held() {
		t.Errorf("sibling of a locked partition: %+v", be)
	}
	unlock()

	unlock = lock("sdb")
	if be := s.claimed(sdb2.Path, sdb2); !slices.Equal(holderPIDs(be.Holders), self) {
		t.Errorf("partition of a locked disk: holders %+v, want this process", be.Holders)
	}
	unlock()

	if err := os.MkdirAll(filepath.Join(s.sys, "dev", "block", "8:17", "holders", "dm-0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if be := s.claimed(sdb.Path, sdb); !slices.Equal(be.UsedBy, []string{"dm-0"}) || be.Detail() != "in use by dm-0 (the kernel holds it)" {
		t.Errorf("disk of a partition under dm-0: %+v, Detail %q", be, be.Detail())
	}
	if be := s.claimed(sdb2.Path, sdb2); be.held() {
		t.Errorf("sibling of a partition under dm-0: %+v", be)
	}
}

func TestBusyDetail(t *testing.T) {
	for _, tc := range []struct {
		e    BusyError
		want string
	}{
		{BusyError{}, "in use by another program, such as a running writeboost volume"},
		{BusyError{Via: "/dev/loop0 → /c.img"}, "in use by another program, such as a running writeboost volume (through /dev/loop0 → /c.img)"},
		{BusyError{Holders: []Holder{{PID: 7, Command: "wb-create"}, {PID: 9, Label: "writeboost volume va"}}}, "in use by pid 7 (wb-create), writeboost volume va (pid 9)"},
		{BusyError{Claimed: true}, "in use (claimed exclusively by the kernel or another program)"},
		{BusyError{Claimed: true, MountedOn: "/mnt"}, "in use: mounted on /mnt"},
		{BusyError{Claimed: true, UsedBy: []string{"dm-0", "md0"}}, "in use by dm-0, md0 (the kernel holds it)"},
		{BusyError{Holders: []Holder{{PID: 3}}}, "in use by pid 3"},
	} {
		if got := tc.e.Detail(); got != tc.want {
			t.Errorf("%+v: Detail() = %q, want %q", tc.e, got, tc.want)
		}
	}
}
