//go:build linux

package uring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func openRing(t *testing.T, entries int) *Ring {
	t.Helper()
	r, err := Open(entries)
	if err != nil {
		// Only where the kernel refuses io_uring; CI's kernel has it,
		// and TestAvailableHere says so when it does not.
		t.Skipf("io_uring unavailable: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestAvailableHere fails on a machine where io_uring should work (the
// project's CI, a kernel that allows it) but Open refuses: the fallback
// must not hide a broken ring.
func TestAvailableHere(t *testing.T) {
	if ok, why := KernelAllows(); !ok {
		t.Skipf("the kernel does not allow io_uring here: %s", why)
	}
	r, err := Open(8)
	if err != nil {
		t.Fatalf("io_uring is enabled in the kernel but Open fails: %v", err)
	}
	if err := r.nop(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpenRejectsBadSizes(t *testing.T) {
	for _, n := range []int{0, -1, 3, 8192} {
		if r, err := Open(n); err == nil {
			r.Close()
			t.Errorf("Open(%d) succeeded", n)
		}
	}
}

func tempFile(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	return f, data
}

func TestReadWriteSync(t *testing.T) {
	r := openRing(t, 8)
	f, data := tempFile(t, 1<<20)
	fd := int(f.Fd())
	got := make([]byte, 8192)
	n, err := r.ReadAt(fd, got, 4096)
	if err != nil || n != len(got) || !bytes.Equal(got, data[4096:4096+8192]) {
		t.Fatalf("ReadAt: n=%d err=%v equal=%v", n, err, bytes.Equal(got, data[4096:4096+8192]))
	}
	w := bytes.Repeat([]byte("writeboost"), 1000)
	if n, err := r.WriteAt(fd, w, 12345); err != nil || n != len(w) {
		t.Fatalf("WriteAt: n=%d err=%v", n, err)
	}
	if err := r.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(w))
	if _, err := f.ReadAt(back, 12345); err != nil || !bytes.Equal(back, w) {
		t.Fatalf("pread after ring write: err=%v equal=%v", err, bytes.Equal(back, w))
	}
	// A read across the end returns what is there, like pread.
	tail := make([]byte, 8192)
	n, err = r.ReadAt(fd, tail, int64(len(data))-100)
	if err != nil || n != 100 {
		t.Fatalf("read across the end: n=%d err=%v, want 100, nil", n, err)
	}
}

func TestErrorsComeBackAsErrno(t *testing.T) {
	r := openRing(t, 4)
	f, _ := tempFile(t, 4096)
	ro, err := os.Open(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := r.WriteAt(int(ro.Fd()), []byte("x"), 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("write to a read-only descriptor: %v, want EBADF", err)
	}
	if _, err := r.ReadAt(-1, make([]byte, 10), 0); !errors.Is(err, unix.EBADF) {
		t.Fatalf("read of fd -1: %v, want EBADF", err)
	}
}

// TestConcurrent runs many more goroutines than ring entries: submitters
// wait for slots, and every read gets its own data.
func TestConcurrent(t *testing.T) {
	r := openRing(t, 4)
	f, data := tempFile(t, 1<<20)
	fd := int(f.Fd())
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 512)
			for k := 0; k < 200; k++ {
				off := rand.IntN(len(data)-len(buf)) &^ 511
				if _, err := r.ReadAt(fd, buf, int64(off)); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf, data[off:off+len(buf)]) {
					errs <- errors.New("read returned another request's data")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	r := openRing(t, 4)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.ReadAt(0, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// TestO_DIRECT reads and writes a file opened O_DIRECT with aligned
// buffers, the way blockdev uses the ring.
func TestO_DIRECT(t *testing.T) {
	r := openRing(t, 8)
	f, data := tempFile(t, 1<<20)
	d, err := os.OpenFile(f.Name(), os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		t.Skipf("no O_DIRECT here: %v", err)
	}
	defer d.Close()
	buf := alignedBuf(64 << 10)
	if _, err := r.ReadAt(int(d.Fd()), buf, 128<<10); err != nil || !bytes.Equal(buf, data[128<<10:192<<10]) {
		t.Fatalf("O_DIRECT read: %v", err)
	}
	for i := range buf {
		buf[i] = 0xa5
	}
	if _, err := r.WriteAt(int(d.Fd()), buf, 0); err != nil {
		t.Fatalf("O_DIRECT write: %v", err)
	}
	back := make([]byte, len(buf))
	if _, err := f.ReadAt(back, 0); err != nil || !bytes.Equal(back, buf) {
		t.Fatalf("read back: %v", err)
	}
}

func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	for i := range 4096 {
		if uintptrOf(b[i:])%4096 == 0 {
			return b[i : i+n]
		}
	}
	panic("unreachable")
}

func uintptrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// TestAsync starts more reads and writes than the ring has entries without
// waiting for them; every callback runs once with its own data.
func TestAsync(t *testing.T) {
	r := openRing(t, 8)
	f, data := tempFile(t, 1<<20)
	fd := int(f.Fd())
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	wg.Add(n)
	for k := 0; k < n; k++ {
		off := rand.IntN(len(data)-8192) &^ 511
		buf := make([]byte, 8192)
		err := r.ReadAtAsync(fd, buf, int64(off), func(got int, err error) {
			defer wg.Done()
			switch {
			case err != nil:
				errs <- err
			case got != len(buf) || !bytes.Equal(buf, data[off:off+len(buf)]):
				errs <- errors.New("async read returned other data")
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	// A read across the end is short, like pread.
	done := make(chan int, 1)
	if err := r.ReadAtAsync(fd, make([]byte, 4096), int64(len(data))-10, func(got int, err error) {
		if err != nil {
			errs <- err
		}
		done <- got
	}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != 10 {
		t.Errorf("async read across the end: %d bytes, want 10", got)
	}
	w := bytes.Repeat([]byte{0x5a}, 4096)
	if err := r.WriteAtAsync(fd, w, 0, func(got int, err error) {
		if err != nil {
			errs <- err
		}
		done <- got
	}); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != len(w) {
		t.Errorf("async write: %d bytes", got)
	}
	back := make([]byte, len(w))
	if _, err := f.ReadAt(back, 0); err != nil || !bytes.Equal(back, w) {
		t.Errorf("async write not in the file: %v", err)
	}
	// An error comes back through the callback.
	if err := r.ReadAtAsync(-1, make([]byte, 10), 0, func(_ int, err error) { errs <- err }); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; !errors.Is(err, unix.EBADF) {
		t.Errorf("async read of fd -1: %v, want EBADF", err)
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
