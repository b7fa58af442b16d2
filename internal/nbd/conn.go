package nbd

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// conn is one client connection. Its goroutine (conn.serve) owns the read
// side: it runs the handshake, then reads requests and starts one goroutine
// per request, bounded by MaxInFlight and MaxInFlightBytes, or serves a
// small write itself (see InlineWriter). Request goroutines write their
// replies, in completion order, under wmu; the replies of inline writes are
// batched and sent before the reader next waits for the client. The
// connection goroutine waits for all of them before it closes the socket.
type conn struct {
	s  *Server
	nc net.Conn // the socket: deadlines and Close act on it
	// w is where the connection writes: nc, or after NBD_OPT_STARTTLS the
	// TLS connection over it. Set by the connection goroutine before the
	// first request goroutine starts.
	w  io.Writer
	br *bufio.Reader // reads nc, or the TLS connection

	mu   sync.Mutex // protects stopped, nInflight, bytesInflight; cond's lock
	cond *sync.Cond // signalled when a request leaves the in-flight set
	// stopped is set by Shutdown: the read side has been interrupted and
	// no deadline may be extended again.
	stopped       bool
	nInflight     int
	bytesInflight int64

	wmu  sync.Mutex // serialises replies on nc: one reply is one write
	wErr error      // first reply write error, under wmu; later replies are dropped

	wg sync.WaitGroup // requests in flight: request goroutines, asynchronous reads

	// rp sends the replies of asynchronous reads; started by the
	// connection goroutine at the first one (async.go).
	rp *replier
	// plugged is the backend whose reads this connection queued and
	// has not yet unplugged (async.go); the connection goroutine's.
	plugged AsyncReader

	// batch holds the replies of inline writes not yet sent; only the
	// connection goroutine touches it.
	batch []byte

	fixed    bool // client set NBD_FLAG_C_FIXED_NEWSTYLE
	noZeroes bool // client set NBD_FLAG_C_NO_ZEROES

	// tlsConf, when set, makes TLS required (ServeTLS); tlsOn is set once
	// NBD_OPT_STARTTLS has completed, and w and br then go through TLS.
	// Both are the connection goroutine's.
	tlsConf *tls.Config
	tlsOn   bool
}

// serve runs a connection from the handshake to its close.
func (c *conn) serve() {
	defer c.s.budget.trim()
	defer c.s.removeConn(c)
	defer c.nc.Close()
	c.br = bufio.NewReaderSize(c.nc, readBufferSize)
	e, err := c.handshake()
	if err != nil {
		if c.isStopped() {
			c.s.log.Debug("nbd: handshake interrupted by shutdown", "remote", c.remote())
		} else {
			c.s.log.Info("nbd: handshake failed", "remote", c.remote(), "err", err)
		}
		return
	}
	if e == nil { // NBD_OPT_ABORT
		return
	}
	c.s.log.Debug("nbd: transmission", "remote", c.remote(), "export", e.Name)
	c.transmit(e)
}

// serveExport runs a connection that skips the handshake, as the kernel's
// nbd driver expects: it was negotiated out of band (Attach).
func (c *conn) serveExport(e *Export) {
	defer c.s.budget.trim()
	defer c.s.removeConn(c)
	defer c.nc.Close()
	c.br = bufio.NewReaderSize(c.nc, readBufferSize)
	c.transmit(e)
}

func (c *conn) remote() string { return remoteAddr(c.nc) }

func remoteAddr(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "local"
}

// stopReading interrupts the connection's reads for Shutdown: a handshake
// ends, a transmission stops reading requests and drains.
func (c *conn) stopReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopped = true
	c.nc.SetReadDeadline(time.Unix(1, 0))
	c.cond.Broadcast()
}

func (c *conn) isStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopped
}

// setDeadline sets the socket deadline unless Shutdown already expired it.
func (c *conn) setDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopped {
		c.nc.SetDeadline(t)
	}
}

// --- handshake ---
