//go:build linux

package kaio

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func openCtx(t *testing.T, entries int) *Context {
	t.Helper()
	c, err := Open(entries)
	if err != nil {
		// Native AIO is in every Linux kernel this project supports
		// (CONFIG_AIO is on in Debian's); only a seccomp filter refuses.
		t.Fatalf("Open(%d): %v", entries, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// dataFile makes a file of size random bytes and opens it, with O_DIRECT
// when direct. It lives under /var/tmp, whose file system takes O_DIRECT
// on the build machines (as blockdev's tests assume; tmpfs only since
// Linux 6.6), so a refusal fails the test.
func dataFile(t *testing.T, size int, direct bool) (*os.File, []byte) {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "kaio-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "f")
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(rand.IntN(256))
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	flag := os.O_RDONLY
	if direct {
		flag |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int((4096 - uintptr(unsafe.Pointer(&b[0]))%4096) % 4096)
	return b[off : off+n]
}

// result is what a read's callback reported.
type result struct {
	n   int
	err error
}

// read queues one read and returns the channel its callback reports on.
func read(t *testing.T, c *Context, f *os.File, p []byte, off int64) chan result {
	t.Helper()
	ch := make(chan result, 1)
	if err := c.ReadAtPlugged(int(f.Fd()), p, off, func(n int, err error) { ch <- result{n, err} }); err != nil {
		t.Fatal(err)
	}
	return ch
}

func TestOpenRejectsBadSizes(t *testing.T) {
	for _, n := range []int{0, -1, 4097} {
		if c, err := Open(n); err == nil {
			c.Close()
			t.Errorf("Open(%d) succeeded", n)
		}
	}
}

// TestReads compares bursts of random reads, each burst one Unplug, with
// the file's bytes: O_DIRECT (completed in the device's interrupt) and
// buffered (completed inside io_submit).
func TestReads(t *testing.T) {
	for _, v := range []struct{ direct, userReap bool }{{true, true}, {false, true}, {true, false}} {
		t.Run(fmt.Sprintf("direct=%v,userReap=%v", v.direct, v.userReap), func(t *testing.T) {
			old := userReap
			t.Cleanup(func() { userReap = old }) // after openCtx's Close
			userReap = v.userReap
			direct := v.direct
			c := openCtx(t, 16)
			f, data := dataFile(t, 1<<20, direct)
			for burst := range 30 {
				type want struct {
					p   []byte
					off int64
					ch  chan result
				}
				var ws []want
				for range 1 + burst%24 { // beyond the 16 slots: queueing unplugs
					n := 4096 * (1 + rand.IntN(16))
					off := int64(rand.IntN((len(data)-n)/4096)) * 4096
					p := aligned(n)
					ws = append(ws, want{p, off, read(t, c, f, p, off)})
				}
				c.Unplug()
				for _, w := range ws {
					r := <-w.ch
					if r.err != nil || r.n != len(w.p) {
						t.Fatalf("read %d at %d: %d, %v", len(w.p), w.off, r.n, r.err)
					}
					if !bytes.Equal(w.p, data[w.off:w.off+int64(len(w.p))]) {
						t.Fatalf("read %d at %d: other bytes than the file's", len(w.p), w.off)
					}
				}
			}
		})
	}
}

// TestEndOfFile: a read past the end returns the bytes there are; one at
// the end returns none, without an error.
func TestEndOfFile(t *testing.T) {
	c := openCtx(t, 4)
	f, data := dataFile(t, 64<<10, true)
	p, q := aligned(16384), aligned(4096)
	ch1 := read(t, c, f, p, int64(len(data)-4096))
	ch2 := read(t, c, f, q, int64(len(data)))
	c.Unplug()
	if r := <-ch1; r.err != nil || r.n != 4096 || !bytes.Equal(p[:4096], data[len(data)-4096:]) {
		t.Errorf("read across the end: %d, %v", r.n, r.err)
	}
	if r := <-ch2; r.err != nil || r.n != 0 {
		t.Errorf("read at the end: %d, %v", r.n, r.err)
	}
}

// TestErrors: a read the kernel refuses, at submission or at completion,
// reaches its callback as an errno, and the reads queued with it still
// complete.
func TestErrors(t *testing.T) {
	c := openCtx(t, 8)
	f, data := dataFile(t, 64<<10, true)
	bad := aligned(4096 + 1)[1:] // misaligned for O_DIRECT
	good := aligned(4096)
	chBad := read(t, c, f, bad, 0)
	chGood := read(t, c, f, good, 4096)
	closed, err := os.CreateTemp(t.TempDir(), "closed")
	if err != nil {
		t.Fatal(err)
	}
	badFd := int(closed.Fd())
	closed.Close()
	chFd := make(chan result, 1)
	if err := c.ReadAtPlugged(badFd, aligned(4096), 0, func(n int, err error) { chFd <- result{n, err} }); err != nil {
		t.Fatal(err)
	}
	c.Unplug()
	if r := <-chBad; !errors.Is(r.err, unix.EINVAL) {
		t.Errorf("misaligned O_DIRECT read: %d, %v; want EINVAL", r.n, r.err)
	}
	if r := <-chFd; !errors.Is(r.err, unix.EBADF) {
		t.Errorf("read of a closed descriptor: %d, %v; want EBADF", r.n, r.err)
	}
	if r := <-chGood; r.err != nil || !bytes.Equal(good, data[4096:8192]) {
		t.Errorf("read queued with failing ones: %d, %v", r.n, r.err)
	}
}

// TestConcurrent: goroutines queue and unplug at once, sharing 8 slots.
func TestConcurrent(t *testing.T) {
	c := openCtx(t, 8)
	f, data := dataFile(t, 1<<20, true)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				off := int64(rand.IntN(len(data)/4096)) * 4096
				p := aligned(4096)
				ch := make(chan result, 1)
				if err := c.ReadAtPlugged(int(f.Fd()), p, off, func(n int, err error) { ch <- result{n, err} }); err != nil {
					errs <- err
					return
				}
				if i%3 != g%3 {
					c.Unplug()
				} // else: another goroutine's Unplug, or a full queue, submits it
				var r result
				select {
				case r = <-ch:
				default:
					c.Unplug()
					r = <-ch
				}
				if r.err != nil || !bytes.Equal(p, data[off:off+4096]) {
					errs <- fmt.Errorf("goroutine %d read %d at %d: %v", g, i, off, r.err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestClose: Close submits the queued reads and waits for them; later
// reads are refused.
func TestClose(t *testing.T) {
	c, err := Open(8)
	if err != nil {
		t.Fatal(err)
	}
	f, data := dataFile(t, 64<<10, true)
	var chs []chan result
	var ps [][]byte
	for i := range 5 {
		p := aligned(4096)
		ps = append(ps, p)
		chs = append(chs, read(t, c, f, p, int64(i)*4096))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for i, ch := range chs {
		select {
		case r := <-ch:
			if r.err != nil || !bytes.Equal(ps[i], data[i*4096:(i+1)*4096]) {
				t.Errorf("read %d queued before Close: %v", i, r.err)
			}
		default:
			t.Errorf("read %d queued before Close had not completed when Close returned", i)
		}
	}
	if err := c.ReadAtPlugged(int(f.Fd()), aligned(4096), 0, func(int, error) { t.Error("callback of a refused read") }); !errors.Is(err, ErrClosed) {
		t.Errorf("read after Close: %v, want ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
}
