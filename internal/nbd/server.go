package nbd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Backend is what an export serves: a byte-addressed volume. *engine.Volume
// implements it; the server never interprets the data.
//
// Calls arrive concurrently from many requests and connections. A write
// whose reply was sent before a Flush was received must be durable when
// Flush returns, on every connection (the server advertises
// NBD_FLAG_CAN_MULTI_CONN unless told not to). fua asks the same for one
// write before it returns. Errors wrapping a syscall.Errno keep their
// meaning on the wire (ENOSPC, EPERM, ...); others become EIO. ReadAt and
// WriteAt must not keep p once they return: the server reuses it (a
// pooled buffer, or for an inline write its receive buffer).
type Backend interface {
	Size() int64
	ReadAt(p []byte, off int64) error
	WriteAt(p []byte, off int64, fua bool) error
	Flush() error
	Trim(off, length int64) error
	WriteZeroes(off, length int64, fua bool) error
}

// InlineWriter is an optional Backend interface for backends whose writes
// complete in memory (a write-back cache copying them into a RAM buffer).
// When WritesInline reports true, a WRITE without FUA of at most
// maxInlineWrite bytes is served on the connection's reader goroutine, its
// payload passed to WriteAt straight from the receive buffer, and its reply
// held back until the reader is about to wait for the client, so that the
// replies of a burst of writes leave in one system call. That saves a
// goroutine, a payload copy and a reply write per request; it also means the
// connection reads nothing else while WriteAt runs, hence the question is
// asked per request (a write-back cache in write-around mode, whose writes
// wait for the backing device, says no).
type InlineWriter interface {
	WritesInline() bool
}

// StreamWriter is an optional Backend interface for an InlineWriter that
// reads a write's payload from the connection itself, straight to where it
// keeps the data (a write-back cache: into its RAM buffer), instead of
// getting it in a buffer of the server's. When WritesInline reports true, a
// WRITE without FUA of more than maxInlineWrite bytes is served on the
// connection's reader goroutine by WriteFrom, and its reply is batched as
// an inline write's. WriteFrom writes n bytes at off read from r; it reads
// at most n bytes and may read fewer when it fails (the server skips the
// rest); it must not keep r. An error of r itself ends the connection.
type StreamWriter interface {
	InlineWriter
	WriteFrom(r io.Reader, n int, off int64) error
}

// Export is one named volume of a server.
type Export struct {
	Name        string // export name as clients ask for it; "" is the default export
	Description string // optional, shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION
	Backend     Backend
	ReadOnly    bool // writes, trims and write-zeroes fail with EPERM
}

// Options tune a Server. The zero value is the defaults.
type Options struct {
	Logger *slog.Logger // nil: discard
	// MaxInFlight bounds the requests one connection has in flight (each
	// one a goroutine); the reader stops reading while the bound is
	// reached, so TCP flow control pushes back on the client. 0: 64.
	MaxInFlight int
	// MaxInFlightBytes bounds the payload bytes (write data and read
	// buffers) one connection holds. 0, or more than half of BudgetBytes:
	// half of BudgetBytes.
	MaxInFlightBytes int64
	// BudgetBytes bounds the payload bytes held by the requests in flight
	// on all connections together (see budget.go for how it is shared).
	// 0: 64 MiB; at least 1 MiB.
	BudgetBytes int64
	// MaxConns bounds the connections served at once, on all listeners
	// (those in the handshake included); one more is closed at accept,
	// with a log line. 0: 64.
	MaxConns int
	// StallTimeout closes a connection whose reply has made no progress
	// for this long: a client that stops reading its replies (the socket
	// buffers full) no longer pins its requests' memory. Over TLS it
	// bounds the whole write of a reply. 0: 30 s.
	StallTimeout time.Duration
	// NoMultiConn clears NBD_FLAG_CAN_MULTI_CONN. Leave it false when the
	// backend's Flush covers writes from all connections.
	NoMultiConn bool
	// HandshakeTimeout bounds the option haggling of one connection.
	// 0: 30 s.
	HandshakeTimeout time.Duration
	// Observer, if set, sees every request answered: command, length,
	// time taken, error (observe.go). nil costs one test per request.
	Observer Observer
}

const (
	defaultMaxInFlight      = 64
	defaultMaxInFlightBytes = 128 << 20
	defaultHandshakeTimeout = 30 * time.Second
	defaultBudgetBytes      = 64 << 20
	minBudgetBytes          = 1 << 20
	defaultMaxConns         = 64
	defaultStallTimeout     = 30 * time.Second
)

// Server serves exports over the NBD protocol (fixed newstyle handshake,
// simple replies). Create it with NewServer, run Serve on one or more
// listeners, stop it with Shutdown.
type Server struct {
	exports []Export // immutable after NewServer
	opts    Options
	log     *slog.Logger
	budget  *budget // payload bytes in flight on all connections

	mu        sync.Mutex // protects the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	shutdown  bool
	// drained is closed by the last connection to leave once shutdown is
	// set; Shutdown waits on it.
	drained chan struct{}

	// clients counts the connections registered in conns: from accept,
	// through the handshake and transmission, to the close. It moves with
	// conns under mu; an atomic so that Clients never waits for mu.
	clients atomic.Int64
}

// NewServer checks the exports and returns a server for them. Names must be
// unique and at most 4096 bytes; every export needs a Backend.
func NewServer(exports []Export, opts Options) (*Server, error) {
	if len(exports) == 0 {
		return nil, fmt.Errorf("%w: no exports", ErrConfig)
	}
	seen := make(map[string]bool, len(exports))
	for i, e := range exports {
		if e.Backend == nil {
			return nil, fmt.Errorf("%w: export %d (%q) has no backend", ErrConfig, i, e.Name)
		}
		if len(e.Name) > maxNameLength || len(e.Description) > maxNameLength {
			return nil, fmt.Errorf("%w: export %d: name or description over %d bytes", ErrConfig, i, maxNameLength)
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("%w: duplicate export name %q", ErrConfig, e.Name)
		}
		if e.Backend.Size() < 0 {
			return nil, fmt.Errorf("%w: export %q has negative size %d", ErrConfig, e.Name, e.Backend.Size())
		}
		seen[e.Name] = true
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = defaultMaxInFlight
	}
	if opts.BudgetBytes <= 0 {
		opts.BudgetBytes = defaultBudgetBytes
	}
	if opts.BudgetBytes < minBudgetBytes {
		return nil, fmt.Errorf("%w: memory budget of %d bytes, want at least %d", ErrConfig, opts.BudgetBytes, minBudgetBytes)
	}
	if opts.MaxInFlightBytes <= 0 {
		opts.MaxInFlightBytes = defaultMaxInFlightBytes
	}
	opts.MaxInFlightBytes = min(opts.MaxInFlightBytes, opts.BudgetBytes/2)
	if opts.MaxConns <= 0 {
		opts.MaxConns = defaultMaxConns
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = defaultStallTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = defaultHandshakeTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		exports:   append([]Export(nil), exports...),
		opts:      opts,
		log:       log,
		budget:    newBudget(opts.BudgetBytes),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
		drained:   make(chan struct{}),
	}, nil
}

// lookup finds an export by name. The empty name is the default export: the
// export named "" if there is one, else the first export.
func (s *Server) lookup(name string) (*Export, bool) {
	for i := range s.exports {
		if s.exports[i].Name == name {
			return &s.exports[i], true
		}
	}
	if name == "" {
		return &s.exports[0], true
	}
	return nil, false
}

// transmissionFlags are the flags sent with an export's size.
func (s *Server) transmissionFlags(e *Export) uint16 {
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
	if e.ReadOnly {
		f |= FlagReadOnly
	}
	if !s.opts.NoMultiConn {
		f |= FlagCanMultiConn
	}
	return f
}

// Serve accepts connections on l and serves each in its own goroutine. It
// returns nil when ctx is done or after Shutdown, and an error when
// accepting fails otherwise. Serve owns the connections it accepted and
// waits for their goroutines before it returns: after Shutdown they drain
// gracefully; when ctx is done or the listener fails they are closed at
// once. Serve closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	return s.serve(ctx, l, nil)
}

// ServeTLS is Serve with TLS required on every connection from l (the
// protocol's FORCEDTLS mode): until the client has sent NBD_OPT_STARTTLS
// and completed the TLS handshake with cfg, options that could reveal or
// select an export get NBD_REP_ERR_TLS_REQD, and NBD_OPT_EXPORT_NAME, which
// cannot be refused gracefully, closes the connection. cfg decides on
// client certificates (tls.RequireAndVerifyClientCert to demand them).
func (s *Server) ServeTLS(ctx context.Context, l net.Listener, cfg *tls.Config) error {
	if cfg == nil {
		l.Close()
		return fmt.Errorf("%w: ServeTLS without a TLS configuration", ErrConfig)
	}
	return s.serve(ctx, l, cfg)
}

func (s *Server) serve(ctx context.Context, l net.Listener, tlsConf *tls.Config) error {
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		l.Close()
		return nil
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()

	var wg sync.WaitGroup // this Serve's connection goroutines
	var mine sync.Map     // *conn -> struct{}: the connections this Serve owns
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()

	err := s.acceptLoop(l, func(nc net.Conn) {
		c, full := s.admit(nc)
		if full {
			s.log.Warn("nbd: connection refused: too many connections", "remote", remoteAddr(nc),
				"listener", l.Addr().String(), "max_connections", s.opts.MaxConns)
		}
		if c == nil { // shutting down or full
			nc.Close()
			return
		}
		c.tlsConf = tlsConf
		mine.Store(c, struct{}{})
		wg.Go(func() {
			defer mine.Delete(c)
			c.serve()
		})
	})

	s.mu.Lock()
	delete(s.listeners, l)
	graceful := s.shutdown && ctx.Err() == nil
	s.mu.Unlock()
	l.Close()
	if !graceful {
		// No Shutdown to drain them: close this Serve's connections now,
		// so that the wait below is bounded by the backend calls in flight.
		mine.Range(func(k, _ any) bool {
			k.(*conn).nc.Close()
			return true
		})
	}
	wg.Wait()
	if ctx.Err() != nil || graceful {
		return nil
	}
	return err
}

// acceptLoop accepts until the listener fails for good, retrying the
// transient errors of a server out of file descriptors.
func (s *Server) acceptLoop(l net.Listener, handle func(net.Conn)) error {
	var backoff time.Duration
	for {
		nc, err := l.Accept()
		if err == nil {
			backoff = 0
			handle(nc)
			continue
		}
		if errors.Is(err, net.ErrClosed) {
			return nil
		}
		if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED) {
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("nbd: accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		return fmt.Errorf("nbd: accept on %s: %w", l.Addr(), err)
	}
}

// newConn registers a connection, or returns nil when the server is
// shutting down.
func (s *Server) newConn(nc net.Conn) *conn {
	c, _ := s.register(nc, 0)
	return c
}

// admit registers an accepted connection unless the server is shutting
// down (nil) or serves Options.MaxConns already (nil, full).
func (s *Server) admit(nc net.Conn) (c *conn, full bool) {
	return s.register(nc, s.opts.MaxConns)
}

// register adds a connection to conns, unless shutting down or limit > 0
// connections are registered already.
func (s *Server) register(nc net.Conn, limit int) (*conn, bool) {
	c := &conn{s: s, nc: nc, w: nc}
	c.cond = sync.NewCond(&c.mu)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.shutdown {
		return nil, false
	}
	if limit > 0 && len(s.conns) >= limit {
		return nil, true
	}
	s.conns[c] = struct{}{}
	s.clients.Add(1)
	return c, false
}

// Clients returns the number of client connections open now, on every
// listener: those in the handshake and those in transmission (an Attach
// connection counts as one). It never blocks; a connection counts from the
// moment it is accepted until its socket is closed.
func (s *Server) Clients() int { return int(s.clients.Load()) }

// removeConn unregisters a finished connection and wakes Shutdown when it
// was the last one.
func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	s.clients.Add(-1)
	if s.shutdown && len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
}

// Shutdown stops the server gracefully: it closes the listeners, ends option
// haggling on connections still in the handshake, and makes connections in
// transmission stop reading requests, send the replies of the requests in
// flight, and close. NBD has no message for a server that goes away;
// closing the socket after the last reply is how a server says so.
//
// When ctx ends first, Shutdown closes every connection at once and returns
// ctx.Err(); backend calls already running still finish in their
// goroutines, which Serve waits for.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutdown = true
	for l := range s.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	if len(s.conns) == 0 {
		select {
		case <-s.drained:
		default:
			close(s.drained)
		}
	}
	s.mu.Unlock()

	for _, c := range conns {
		c.stopReading()
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		return fmt.Errorf("nbd: shutdown: %w", ctx.Err())
	}
}

// shuttingDown reports whether Shutdown was called.
func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shutdown
}
