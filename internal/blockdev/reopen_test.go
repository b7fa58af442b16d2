package blockdev

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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

// TestRetryUnlessHeld: a refusal while nobody is seen holding is tried
// again (an exited process's io_uring still closing its files), for up
// to busyWait; someone seen ends the wait at once; other errors are
// returned as they are.
func TestRetryUnlessHeld(t *testing.T) {
	nobody := func() *BusyError { return &BusyError{Path: "p"} }
	tries := 0
	err := retryUnlessHeld(func() error {
		tries++
		if tries < 3 {
			return unix.EAGAIN
		}
		return nil
	}, nobody, unix.EAGAIN)
	if err != nil || tries != 3 {
		t.Fatalf("unheld: tries %d, err %v; want it taken on the third try", tries, err)
	}
	for _, seen := range []*BusyError{
		{Holders: []Holder{{PID: 42, Command: "wb-create"}}},
		{Claimed: true, MountedOn: "/mnt"},
		{Claimed: true, UsedBy: []string{"dm-0"}},
	} {
		tries = 0
		err = retryUnlessHeld(func() error { tries++; return unix.EBUSY }, func() *BusyError { return seen }, unix.EBUSY)
		if err != seen || tries != 1 {
			t.Fatalf("held by %+v: tries %d, err %v; want one try and the holder", seen, tries, err)
		}
	}
	tries = 0
	if err := retryUnlessHeld(func() error { tries++; return unix.EIO }, nobody, unix.EAGAIN); err != unix.EIO || tries != 1 {
		t.Fatalf("not a refusal: tries %d, err %v; want one try and EIO", tries, err)
	}
	defer func(d time.Duration) { busyWait = d }(busyWait)
	busyWait = 120 * time.Millisecond
	start := time.Now()
	var be *BusyError
	if err := retryUnlessHeld(func() error { return unix.EAGAIN }, nobody, unix.EAGAIN); !errors.As(err, &be) || be.Path != "p" {
		t.Fatalf("never free: %v, want who's *BusyError", err)
	}
	if el := time.Since(start); el < busyWait || el > 2*time.Second {
		t.Fatalf("gave up after %v, want about %v", el, busyWait)
	}
}

// park keeps the open file fd, and the locks and claim it carries, alive
// where /proc shows no process holding it: in flight on a unix socket, as
// an exited process's io_uring keeps its files until the kernel has torn
// the ring down. release (also run when the test ends) closes it.
func park(t *testing.T, fd int) (release func()) {
	t.Helper()
	sv, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendmsg(sv[0], []byte{0}, unix.UnixRights(fd), nil, 0); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	release = sync.OnceFunc(func() {
		unix.Close(sv[0])
		unix.Close(sv[1])
	})
	t.Cleanup(release)
	return release
}

// TestBusyRule: every refusal an exclusive open meets (O_EXCL's EBUSY on
// a block device, a refused flock, a refused byte-range lock) follows one
// rule: while nobody is seen holding the device it waits, for busyWait,
// for the holder to go, as after a kill with I/O in flight; a holder seen
// (a process with a lock, a mount) fails it at once, named.
func TestBusyRule(t *testing.T) {
	lockedFile := func(lock func(fd int) error) func(t *testing.T) (string, int) {
		return func(t *testing.T) (string, int) {
			c := sparseFile(t, realDir(t), "c.img", 1<<20)
			fd, err := unix.Open(c, unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := lock(fd); err != nil {
				t.Fatal(err)
			}
			return c, fd
		}
	}
	for _, tc := range []struct {
		name string
		// hold opens the device it returns from another file
		// description and refuses it to an exclusive open, as another
		// one would; it returns that file's descriptor.
		hold func(t *testing.T) (path string, fd int)
		// detail is the refusal's Detail when nobody is seen.
		detail string
	}{
		{"flock", lockedFile(func(fd int) error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) }),
			"in use by another program, such as a running writeboost volume"},
		{"byte-range lock", lockedFile(func(fd int) error {
			lk := unix.Flock_t{Type: unix.F_WRLCK}
			return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		}), "in use by another program, such as a running writeboost volume"},
		{"O_EXCL", func(t *testing.T) (string, int) {
			loop := loopAttach(t, sparseFile(t, realDir(t), "c.img", 1<<20))
			fd, err := unix.Open(loop, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			// As writeboost does; while the file is parked, /proc does
			// not show it.
			if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
				t.Fatal(err)
			}
			return loop, fd
		}, "in use (claimed exclusively by the kernel or another program)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func(d time.Duration) { busyWait = d }(busyWait)
			t.Run("seen", func(t *testing.T) {
				path, fd := tc.hold(t)
				defer unix.Close(fd)
				busyWait = 5 * time.Second
				start := time.Now()
				be := busy(t, path)
				if el := time.Since(start); el > busyWait/2 {
					t.Errorf("gave up after %v; a holder seen must fail it at once", el)
				}
				if !slices.Equal(holderPIDs(be.Holders), []int{os.Getpid()}) {
					t.Errorf("holders %+v, want this process", be.Holders)
				}
			})
			t.Run("gone in time", func(t *testing.T) {
				path, fd := tc.hold(t)
				release := park(t, fd)
				// Longer than EBUSY was once retried (200 ms).
				const gone = 600 * time.Millisecond
				time.AfterFunc(gone, release)
				busyWait = 5 * time.Second
				start := time.Now()
				exclusive(t, path).Close()
				if el := time.Since(start); el < gone {
					t.Errorf("opened after %v, before the holder went (%v)", el, gone)
				}
			})
			t.Run("never gone", func(t *testing.T) {
				path, fd := tc.hold(t)
				park(t, fd)
				busyWait = 400 * time.Millisecond
				start := time.Now()
				be := busy(t, path)
				if el := time.Since(start); el < busyWait || el > busyWait+2*time.Second {
					t.Errorf("gave up after %v, want about busyWait (%v)", el, busyWait)
				}
				if be.held() || be.Detail() != tc.detail {
					t.Errorf("%+v: Detail() %q, want %q", be, be.Detail(), tc.detail)
				}
			})
		})
	}
	t.Run("mounted", func(t *testing.T) {
		dir := realDir(t)
		img := sparseFile(t, dir, "ext4.img", 8<<20)
		if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 %s (e2fsprogs, installed by scripts/deps.sh): %v %s", img, err, out)
		}
		loop := loopAttach(t, img)
		mnt := filepath.Join(dir, "mnt")
		if err := os.Mkdir(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mount", loop, mnt).CombinedOutput(); err != nil {
			t.Skipf("mount %s: %v: %s (mounting needs root and ext4)", loop, err, strings.TrimSpace(string(out)))
		}
		t.Cleanup(func() {
			if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v %s", mnt, err, out)
			}
		})
		start := time.Now()
		be := busy(t, loop)
		if el := time.Since(start); el > busyWait/2 {
			t.Errorf("gave up after %v; a mount must fail it at once", el)
		}
		if want := "in use: mounted on " + mnt; be.Detail() != want {
			t.Errorf("Detail() %q, want %q", be.Detail(), want)
		}
	})
}
