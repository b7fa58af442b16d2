package blockdev

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReopenAfterClose: a device closed after io_uring I/O can be opened
// exclusively again at once (the ring must not keep the file, hence its
// lock, alive past Close).
func TestReopenAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.Truncate(path, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := AlignedBuffer(4096)
	for i := range 50 {
		d, err := OpenFile(path, FileOptions{Direct: true, Exclusive: true})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := d.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLockUnlessHeld: a lock refused while no process is seen holding it
// is tried again (an exited process's io_uring still closing its files);
// a visible holder ends the wait at once.
func TestLockUnlessHeld(t *testing.T) {
	tries := 0
	hs, err := lockUnlessHeld(func() error {
		tries++
		if tries < 3 {
			return unix.EAGAIN
		}
		return nil
	}, func() []Holder { return nil })
	if err != nil || hs != nil || tries != 3 {
		t.Fatalf("unheld lock: tries %d, holders %v, err %v; want it taken on the third try", tries, hs, err)
	}
	tries = 0
	held := []Holder{{PID: 42, Command: "wb-create"}}
	hs, err = lockUnlessHeld(func() error { tries++; return unix.EAGAIN }, func() []Holder { return held })
	if !errors.Is(err, unix.EAGAIN) || len(hs) != 1 || tries != 1 {
		t.Fatalf("held lock: tries %d, holders %v, err %v; want one try and the holder", tries, hs, err)
	}
	defer func(d time.Duration) { unheldWait = d }(unheldWait)
	unheldWait = 120 * time.Millisecond
	start := time.Now()
	if _, err := lockUnlessHeld(func() error { return unix.EAGAIN }, func() []Holder { return nil }); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("never free: %v", err)
	}
	if el := time.Since(start); el < unheldWait || el > 2*time.Second {
		t.Fatalf("gave up after %v, want about %v", el, unheldWait)
	}
}
