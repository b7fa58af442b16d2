package nbd

import (
	"testing"
	"time"
)

// stall opens a connection that sends n READs of size bytes and never reads
// a reply: its replies fill the socket buffers and the server's reply
// writes block, holding the requests' buffers.
func stall(t *testing.T, sock string, n int, size uint32) *client {
	t.Helper()
	c, _ := open(t, sock, "")
	for i := range n {
		c.send(cmdRead, 0, uint64(i), 0, size, nil)
	}
	return c
}

// waitInUse waits up to 10 s for the server's budget to hold want bytes,
// and for it to stay there a little.
func waitInUse(t *testing.T, srv *Server, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for stable := 0; stable < 20; time.Sleep(5 * time.Millisecond) {
		got := srv.budget.inUse()
		if got > srv.opts.BudgetBytes {
			t.Fatalf("budget holds %d bytes, over its %d", got, srv.opts.BudgetBytes)
		}
		if got == want {
			stable++
			continue
		}
		stable = 0
		if time.Now().After(deadline) {
			t.Fatalf("budget holds %d bytes after 10s, want %d", got, want)
		}
	}
}

// TestBudgetSharedFairly: with a 4 MiB budget, a connection that stalls on
// 1 MiB READs holds at most half of it (its own bound), a second one the
// rest of the shared three quarters, a third nothing more: their requests
// beyond the budget wait. A light client is still served from the reserve
// meanwhile, promptly. When the stalled connections close, everything is
// given back.
func TestBudgetSharedFairly(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(4 << 20)}}, Options{BudgetBytes: 4 << 20, StallTimeout: time.Minute})
	a := stall(t, ts.sock, 8, 1<<20)
	waitInUse(t, ts.srv, 2<<20)
	b := stall(t, ts.sock, 8, 1<<20)
	waitInUse(t, ts.srv, 3<<20)
	c := stall(t, ts.sock, 8, 1<<20)
	waitInUse(t, ts.srv, 3<<20)

	light, _ := open(t, ts.sock, "")
	for i := range 50 {
		start := time.Now()
		light.roundTrip(uint64(i) * 4096)
		if d := time.Since(start); d > time.Second {
			t.Fatalf("round trip %d took %v while other connections stalled", i, d)
		}
	}
	a.nc.Close()
	b.nc.Close()
	c.nc.Close()
	waitClients(t, ts.srv, 1)
	waitInUse(t, ts.srv, 0)
	light.roundTrip(0)
}

// TestStallTimeout: a client that never reads its replies is closed after
// StallTimeout, and the memory its requests held is given back.
func TestStallTimeout(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(4 << 20)}}, Options{BudgetBytes: 4 << 20, StallTimeout: 200 * time.Millisecond})
	c := stall(t, ts.sock, 8, 1<<20)
	start := time.Now()
	waitClients(t, ts.srv, 0) // without reading a byte
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("stalled connection closed after %v, StallTimeout 200ms", d)
	}
	waitInUse(t, ts.srv, 0)
	c.expectClosed()
}

// TestSlowReaderNotStalled: a client that reads its replies slowly, but
// keeps reading, is not closed: the timeout is on progress.
func TestSlowReaderNotStalled(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(4 << 20)}}, Options{StallTimeout: 100 * time.Millisecond})
	c, _ := open(t, ts.sock, "")
	const size = 4 << 20
	c.send(cmdRead, 0, 1, 0, size, nil)
	if _, code := c.readReply(); code != 0 {
		t.Fatal(code)
	}
	for got := 0; got < size; got += 64 << 10 {
		c.read(64 << 10)
		time.Sleep(10 * time.Millisecond) // 640 ms in all
	}
	c.roundTrip(0)
}

// TestMaxConns: connections beyond MaxConns are closed at accept; once one
// leaves, a new one is served.
func TestMaxConns(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(testSize)}}, Options{MaxConns: 2})
	a, _ := open(t, ts.sock, "")
	b, _ := open(t, ts.sock, "")
	extra := dial(t, ts.sock)
	extra.expectClosed()
	waitClients(t, ts.srv, 2)
	a.nc.Close()
	waitClients(t, ts.srv, 1)
	c, _ := open(t, ts.sock, "")
	c.roundTrip(0)
	b.roundTrip(4096)
}

// TestNewServerBudget: the per-connection bound is at most half the budget;
// a budget under 1 MiB is refused.
func TestNewServerBudget(t *testing.T) {
	e := []Export{{Backend: newMem(4096)}}
	srv, err := NewServer(e, Options{BudgetBytes: 8 << 20, MaxInFlightBytes: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.opts.MaxInFlightBytes; got != 4<<20 {
		t.Fatalf("MaxInFlightBytes %d, want %d", got, 4<<20)
	}
	if _, err := NewServer(e, Options{BudgetBytes: 4096}); err == nil {
		t.Fatal("a 4 KiB budget was accepted")
	}
}
