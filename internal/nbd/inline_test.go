package nbd

import (
	"bytes"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the writes the server makes on its side of every
// accepted connection.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{Conn: c, writes: l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestInlineWritesBatchReplies pipelines a burst of small writes in one
// client write: served inline, they are applied in order and their replies
// leave in a few batched writes, not one write each.
func TestInlineWritesBatchReplies(t *testing.T) {
	const n = 48
	m := newMem(testSize)
	m.inline = true
	var writes atomic.Int64
	ts := startServerWrapped(t, []Export{{Backend: m}}, Options{}, func(l net.Listener) net.Listener {
		return countingListener{Listener: l, writes: &writes}
	})
	c, _ := open(t, ts.sock, "")
	before := writes.Load() // the handshake's replies

	var burst []byte
	want := make([]byte, n*4096)
	for i := range n {
		p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		copy(want[i*4096:], p)
		burst = append(burst, reqBytesHandle(cmdWrite, 0, uint64(1000+i), uint64(i*4096), 4096, p)...)
	}
	c.write(burst)
	for i := range n {
		h, code := c.readReply()
		if code != 0 {
			t.Fatalf("reply %d: error %d", i, code)
		}
		// Inline writes are served one after the other, so they are
		// also answered in order.
		if h != uint64(1000+i) {
			t.Fatalf("reply %d has handle %d, want %d", i, h, 1000+i)
		}
	}
	if got := m.snapshot()[:len(want)]; !bytes.Equal(got, want) {
		t.Fatalf("backend does not hold the written data")
	}
	if w := m.writes.Load(); w != n {
		t.Errorf("backend saw %d writes, want %d", w, n)
	}
	// The burst is read in a few chunks; each chunk's replies go out in
	// one write (and at most maxBatch in one).
	if sent := writes.Load() - before; sent > n/4 {
		t.Errorf("%d replies took %d writes, want at most %d", n, sent, n/4)
	}
}

// TestInlineReplySentBeforeWaiting sends a whole write and only the header
// of the next one, then waits for the first reply: the server must send it
// before it waits for the rest of the second write (the client may be
// waiting for that reply before it sends more).
func TestInlineReplySentBeforeWaiting(t *testing.T) {
	m := newMem(testSize)
	m.inline = true
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")

	a := bytes.Repeat([]byte{0xaa}, 4096)
	b := bytes.Repeat([]byte{0xbb}, 4096)
	second := reqBytesHandle(cmdWrite, 0, 2, 4096, 4096, b)
	c.write(append(reqBytesHandle(cmdWrite, 0, 1, 0, 4096, a), second[:requestSize+100]...))
	c.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if h, code := c.readReply(); h != 1 || code != 0 {
		t.Fatalf("first reply: handle %d error %d", h, code)
	}
	// The rest of the payload, slowly: the server waits for all of it.
	c.write(second[requestSize+100 : requestSize+2000])
	time.Sleep(20 * time.Millisecond)
	c.write(second[requestSize+2000:])
	if h, code := c.readReply(); h != 2 || code != 0 {
		t.Fatalf("second reply: handle %d error %d", h, code)
	}
	if got := m.snapshot()[:8192]; !bytes.Equal(got, append(a, b...)) {
		t.Fatalf("backend does not hold both writes")
	}
}

// TestInlineOnlyWhenCheap: FUA writes and writes over maxInlineWrite keep
// the request goroutines, and a backend that says no (a cache in
// write-around mode) gets none inline. The test tells the two paths apart
// by holding the backend at its gate: an inline write would stop the
// reader, so the READ sent after it would not reach the backend.
func TestInlineOnlyWhenCheap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		inline bool
		flags  uint16
		length uint32
	}{
		{"FUA", true, cmdFlagFUA, 4096},
		{"large", true, 0, maxInlineWrite + 512},
		{"backend says no", false, 0, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem(testSize)
			m.inline = tc.inline
			m.gate = make(chan struct{})
			m.entered = make(chan struct{}, 2)
			ts := startServer(t, []Export{{Backend: m}}, Options{})
			c, _ := open(t, ts.sock, "")
			c.write(append(reqBytesHandle(cmdWrite, tc.flags, 1, 0, tc.length, make([]byte, tc.length)),
				reqBytesHandle(cmdRead, 0, 2, 0, 512, nil)...))
			for i := range 2 {
				select {
				case <-m.entered:
				case <-time.After(5 * time.Second):
					t.Fatalf("%d of 2 requests reached the backend: the write was served inline", i)
				}
			}
			close(m.gate)
			got := map[uint64]bool{}
			for range 2 {
				h, code := c.readReply()
				if code != 0 {
					t.Fatalf("request %d: error %d", h, code)
				}
				if h == 2 {
					c.read(512)
				}
				got[h] = true
			}
			if !got[1] || !got[2] {
				t.Fatalf("replies for %v, want 1 and 2", got)
			}
		})
	}
}

// TestInlineWriteThenDisconnect: a client that pipelines writes and hangs
// up without reading a reply harms nothing; the writes that were read are
// applied and the server serves the next client.
func TestInlineWriteThenDisconnect(t *testing.T) {
	m := newMem(testSize)
	m.inline = true
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")
	var burst []byte
	for i := range 16 {
		burst = append(burst, reqBytesHandle(cmdWrite, 0, uint64(i), uint64(i*4096), 4096, bytes.Repeat([]byte{7}, 4096))...)
	}
	c.write(append(burst, reqBytesHandle(cmdDisc, 0, 99, 0, 0, nil)...))
	c.nc.Close()

	c2, _ := open(t, ts.sock, "")
	c2.roundTrip(512 << 10)
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Equal(m.snapshot()[:16*4096], bytes.Repeat([]byte{7}, 16*4096)) {
		if time.Now().After(deadline) {
			t.Fatalf("writes sent before NBD_CMD_DISC were not all applied")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reqBytesHandle encodes a request with the given handle, then its payload.
func reqBytesHandle(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	var b [requestSize]byte
	request{typ: typ, flags: flags, handle: handle, offset: off, length: length}.encode(&b)
	return append(b[:], payload...)
}
