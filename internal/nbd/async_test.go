package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"sync"
	"syscall"
	"testing"
)

// asyncMem is memBackend with ReadAtAsync the way the engine does it: a
// read of the first page completes at once on the caller's goroutine (a
// RAM buffer hit); the others wait, queued, until Unplug, then complete
// on goroutines of their own (the device's completions). A server that
// forgot to Unplug before waiting would hang these tests.
type asyncMem struct {
	*memBackend
	mu      sync.Mutex
	queued  []func()
	asyncs  int
	unplugs int
}

func (a *asyncMem) ReadAtAsync(p []byte, off int64, done func(error)) {
	if off < 4096 {
		done(a.ReadAt(p, off))
		return
	}
	a.mu.Lock()
	a.asyncs++
	a.queued = append(a.queued, func() { done(a.ReadAt(p, off)) })
	a.mu.Unlock()
}

func (a *asyncMem) Unplug() {
	a.mu.Lock()
	q := a.queued
	a.queued = nil
	if len(q) > 0 {
		a.unplugs++
	}
	a.mu.Unlock()
	for _, f := range q {
		go f()
	}
}

// TestAsyncReads pipelines many reads, writes and flushes on one
// connection against an AsyncReader: every reply carries its own
// request's data, and the reads went the asynchronous way.
func TestAsyncReads(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1 << 20)}
	for i := range m.data {
		m.data[i] = byte(i * 7 / 4096)
	}
	ts := startServer(t, []Export{{Name: "a", Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "a")
	const n = 200
	type want struct {
		read bool
		off  uint64
		size uint32
	}
	wants := map[uint64]want{}
	var burst []byte
	for h := uint64(1); h <= n; h++ {
		var b [requestSize]byte
		w := want{read: h%5 != 0, off: (h * 4096 * 3) % (1 << 20), size: 512 * uint32(1+h%16)}
		if h%9 == 0 {
			w.off = 512 // the first page: completes on the connection goroutine
		}
		typ := uint16(cmdRead)
		var payload []byte
		switch {
		case !w.read && h%10 == 0:
			typ, w.off, w.size = cmdFlush, 0, 0
		case !w.read:
			// Writes go to the last page, which no read touches.
			typ, w.off = cmdWrite, 1<<20-4096
			w.size = 4096
			payload = bytes.Repeat([]byte{byte(h)}, 4096)
		}
		wants[h] = w
		request{typ: typ, handle: h, offset: w.off, length: w.size}.encode(&b)
		burst = append(append(burst, b[:]...), payload...)
	}
	c.write(burst)
	for range n {
		handle, code := c.readReply()
		w, ok := wants[handle]
		if !ok {
			t.Fatalf("reply for unknown or repeated handle %d", handle)
		}
		delete(wants, handle)
		if code != 0 {
			t.Fatalf("handle %d: error %d", handle, code)
		}
		if w.read {
			got := c.read(int(w.size))
			m.memBackend.mu.Lock()
			exp := m.data[w.off : w.off+uint64(w.size)]
			equal := bytes.Equal(got, exp)
			m.memBackend.mu.Unlock()
			if !equal {
				t.Fatalf("handle %d: read %d bytes at %d returned other data", handle, w.size, w.off)
			}
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.asyncs == 0 || m.unplugs == 0 {
		t.Fatalf("%d asynchronous reads, %d unplugs: the asynchronous path was not taken", m.asyncs, m.unplugs)
	}
}

// TestAsyncReadError: a failed asynchronous read gets an error reply with
// no payload, and the connection goes on.
func TestAsyncReadError(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1 << 20)}
	ts := startServer(t, []Export{{Name: "a", Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "a")
	eio := error(syscall.EIO)
	m.failWith.Store(&eio)
	if code, _ := c.do(cmdRead, 0, 8192, 4096, nil); code != errIO {
		t.Fatalf("failed read: error %d, want EIO (%d)", code, errIO)
	}
	m.failWith.Store(nil)
	c.roundTrip(65536)
}

// TestAsyncReadsInFlightAtDisconnect: a client that sends reads and
// disconnects at once; the server finishes them and the connection and
// its replier goroutine end (the server's Close would hang otherwise).
func TestAsyncReadsInFlightAtDisconnect(t *testing.T) {
	m := &asyncMem{memBackend: newMem(1 << 20)}
	ts := startServer(t, []Export{{Name: "a", Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "a")
	var burst []byte
	for h := uint64(1); h <= 50; h++ {
		var b [requestSize]byte
		request{typ: cmdRead, handle: h, offset: h * 8192, length: 4096}.encode(&b)
		burst = append(burst, b[:]...)
	}
	var disc [requestSize]byte
	request{typ: cmdDisc}.encode(&disc)
	c.write(append(burst, disc[:]...))
	// The replies of the reads in flight still come (soft disconnect).
	for got := range 50 {
		h := make([]byte, simpleReplySize)
		if _, err := io.ReadFull(c.nc, h); err != nil {
			t.Fatalf("after %d replies: %v", got, err)
		}
		if code := binary.BigEndian.Uint32(h[4:8]); code != 0 {
			t.Fatalf("reply %d: error %d", got, code)
		}
		c.read(4096)
	}
	c.expectClosed()
}
