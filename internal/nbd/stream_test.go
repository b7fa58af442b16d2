package nbd

import (
	"bytes"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// streamBackend is a memBackend that reads large payloads itself
// (StreamWriter). With failAfter >= 0 its WriteFrom reads that many bytes,
// then fails with ENOSPC.
type streamBackend struct {
	*memBackend
	streamed  atomic.Int64
	failAfter atomic.Int64
}

func (s *streamBackend) WriteFrom(r io.Reader, n int, off int64) error {
	s.streamed.Add(1)
	if after := s.failAfter.Load(); after >= 0 {
		if _, err := io.ReadFull(r, make([]byte, after)); err != nil {
			return err
		}
		return syscall.ENOSPC
	}
	p := make([]byte, n)
	// Read in small pieces: the reader must stop at the payload's end.
	for got := 0; got < n; {
		k, err := r.Read(p[got:min(n, got+1000)])
		got += k
		if err != nil {
			return err
		}
	}
	if k, err := r.Read(make([]byte, 10)); k != 0 || err != io.EOF {
		return io.ErrShortBuffer // read past the payload
	}
	return s.WriteAt(p, off, false)
}

// startStreamServer serves an 8 MiB inline-writing memory backend with
// WriteFrom, failing after failAfter bytes of a payload (-1: never).
func startStreamServer(t *testing.T, failAfter int64) (*memBackend, *streamBackend, *testServer) {
	m := newMem(8 << 20)
	m.inline = true
	sb := &streamBackend{memBackend: m}
	sb.failAfter.Store(failAfter)
	return m, sb, startServer(t, []Export{{Backend: sb}}, Options{})
}

// TestStreamWrites: writes above maxInlineWrite without FUA reach the
// backend's WriteFrom, which reads the payload from the connection; their
// replies are batched as inline writes' are; FUA writes and small writes
// keep their paths; requests after them are read in step.
func TestStreamWrites(t *testing.T) {
	m, sb, ts := startStreamServer(t, -1)
	c, _ := open(t, ts.sock, "")
	c.nc.SetDeadline(time.Now().Add(10 * time.Second))

	want := make([]byte, 8<<20)
	var burst []byte
	for i := range 5 {
		n := maxInlineWrite + 1 + i*300000
		off := uint64(i) << 20
		p := bytes.Repeat([]byte{byte(i + 1)}, n)
		copy(want[off:], p)
		flags := uint16(0)
		if i == 3 {
			flags = cmdFlagFUA
		}
		burst = append(burst, reqBytesHandle(cmdWrite, flags, uint64(100+i), off, uint32(n), p)...)
	}
	small := bytes.Repeat([]byte{9}, 4096)
	copy(want[6<<20:], small)
	burst = append(burst, reqBytesHandle(cmdWrite, 0, 105, 6<<20, 4096, small)...)
	c.write(burst)
	seen := map[uint64]bool{}
	for range 6 {
		h, code := c.readReply()
		if code != 0 {
			t.Fatalf("reply for %d: error %d", h, code)
		}
		seen[h] = true
	}
	if len(seen) != 6 {
		t.Fatalf("replies for %v, want 100..105", seen)
	}
	if got := m.snapshot(); !bytes.Equal(got, want) {
		t.Fatal("backend does not hold the written data")
	}
	if s := sb.streamed.Load(); s != 4 {
		t.Errorf("%d writes streamed, want 4 (not the FUA one, not the small one)", s)
	}
	c.roundTrip(7 << 20)
}

// TestStreamWriteFailsEarly: a backend that fails after reading part of
// the payload gets its error to the client, and the server skips the rest
// of the payload: the next request is read in step.
func TestStreamWriteFailsEarly(t *testing.T) {
	for _, after := range []int{0, 1000, maxInlineWrite + 5} {
		_, sb, ts := startStreamServer(t, int64(after))
		c, _ := open(t, ts.sock, "")
		c.nc.SetDeadline(time.Now().Add(10 * time.Second))
		p := bytes.Repeat([]byte{1}, 1<<20)
		if code, _ := c.do(cmdWrite, 0, 0, uint32(len(p)), p); code != errNoSpc {
			t.Fatalf("failAfter %d: error %d, want ENOSPC (%d)", after, code, errNoSpc)
		}
		sb.failAfter.Store(-1)
		c.roundTrip(2 << 20)
	}
}

// TestStreamWriteClientGone: a client that goes away mid-payload ends the
// connection; the server does not hang on it.
func TestStreamWriteClientGone(t *testing.T) {
	_, _, ts := startStreamServer(t, -1)
	c, _ := open(t, ts.sock, "")
	req := reqBytesHandle(cmdWrite, 0, 1, 0, 1<<20, bytes.Repeat([]byte{1}, 1<<20))
	c.write(req[:len(req)/2])
	c.nc.Close()
	c2, _ := open(t, ts.sock, "")
	c2.nc.SetDeadline(time.Now().Add(10 * time.Second))
	c2.roundTrip(0)
}
