package nbd

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// waitClients waits up to 10 s for srv to count want connections: a client
// that hangs up is seen by the server's connection goroutine a moment later.
func waitClients(t *testing.T, srv *Server, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.Clients() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Clients() = %d after 10s, want %d", srv.Clients(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestClientsCount: a connection counts from accept, through the
// handshake and transmission, until it closes, on unix and TCP listeners
// alike; Shutdown brings the count to 0.
func TestClientsCount(t *testing.T) {
	ts := startServer(t, []Export{{Name: "vol", Backend: newMem(testSize)}}, Options{})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpDone := make(chan error, 1)
	go func() { tcpDone <- ts.srv.Serve(context.Background(), tl) }()
	if n := ts.srv.Clients(); n != 0 {
		t.Fatalf("Clients() = %d before any connection", n)
	}

	// In the handshake: the greeting was read, so the server holds it.
	hs := dial(t, ts.sock)
	hs.greet(clientFlagFixedNewstyle)
	if n := ts.srv.Clients(); n != 1 {
		t.Fatalf("Clients() = %d with one connection in the handshake, want 1", n)
	}
	// In transmission, over unix and over TCP.
	u, _ := open(t, ts.sock, "vol")
	u.roundTrip(0)
	nc, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	tc := &client{t: t, nc: nc}
	tc.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if _, typ := tc.infoGo(optGo, "vol"); typ != repAck {
		t.Fatalf("NBD_OPT_GO over TCP: %#x", typ)
	}
	if n := ts.srv.Clients(); n != 3 {
		t.Fatalf("Clients() = %d, want 3 (handshake, unix, TCP)", n)
	}

	// NBD_OPT_ABORT ends a handshake; a client that vanishes ends its
	// transmission.
	hs.sendOpt(optAbort, nil)
	hs.expectClosed()
	waitClients(t, ts.srv, 2)
	u.nc.Close()
	waitClients(t, ts.srv, 1)
	// A refused export name closes that connection, and the count follows.
	bad := dial(t, ts.sock)
	bad.greet(0)
	bad.sendOpt(optExportName, []byte("nope"))
	bad.expectClosed()
	waitClients(t, ts.srv, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	tc.expectClosed()
	if n := ts.srv.Clients(); n != 0 {
		t.Fatalf("Clients() = %d after Shutdown returned, want 0", n)
	}
	if err := <-tcpDone; err != nil {
		t.Fatalf("Serve tcp: %v", err)
	}
}

// TestClientsConcurrent: connections come and go from many goroutines
// while the count is read; it never leaves [0, conns], is exact while all
// are open, and returns to 0. Run with -race.
func TestClientsConcurrent(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(testSize)}}, Options{})
	const conns, rounds = 8, 5
	stop := make(chan struct{})
	var reader sync.WaitGroup
	reader.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if n := ts.srv.Clients(); n < 0 || n > conns {
				t.Errorf("Clients() = %d, outside [0, %d]", n, conns)
				return
			}
		}
	})
	for r := range rounds {
		var opened, closed sync.WaitGroup
		opened.Add(conns)
		release := make(chan struct{})
		for i := range conns {
			closed.Go(func() {
				c, _ := open(t, ts.sock, "")
				c.roundTrip(uint64(i) * 8192)
				opened.Done()
				<-release
				if r%2 == 0 {
					c.send(cmdDisc, 0, 1, 0, 0, nil) // a polite client
					c.expectClosed()
				}
				c.nc.Close()
			})
		}
		opened.Wait()
		if n := ts.srv.Clients(); n != conns {
			t.Errorf("round %d: Clients() = %d with %d connections open", r, n, conns)
		}
		close(release)
		closed.Wait()
		waitClients(t, ts.srv, 0)
	}
	close(stop)
	reader.Wait()
}
