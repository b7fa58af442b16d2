package nbd

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// Client is an NBD client of one export: the backing device of a volume
// when BACKING is an NBD URI. Requests from many goroutines are in flight
// at once on one connection, their replies matched by handle.
//
// Faults of a network disk. Every request has a timeout (ClientOptions.
// Timeout): one not answered in time fails with ErrTimeout (an EIO) and
// the connection is dropped, since a server that does not answer is hung
// or unreachable. When the connection drops, a reconnect goroutine dials
// again with backoff, redoes the handshake and re-sends the reads, writes,
// trims and write-zeroes that were in flight (they are idempotent); a
// caller waits for that only until its request's timeout.
//
// Durability across a reconnect. A write acknowledged on a connection that
// dropped before a FLUSH covered it may have been lost (the server may have
// crashed with it in its volatile cache), so:
//   - a FLUSH in flight when the connection drops fails (it is never
//     re-sent: on the new connection it would not cover the lost writes);
//   - after a drop that left acknowledged writes unflushed, the next Flush
//     fails with ErrUnflushedLost, once: the caller must write again what it
//     wrote since its last successful Flush, then flush (the engine's
//     writeback retries its whole batch, which is exactly that).
//
// NB: a request the client gave up on (timed out, or in flight on a dropped
// connection) may still be carried out by the server later, after newer
// requests on the new connection: the kernel's nbd client has the same
// hazard. The engine never has two writes to one sector in flight, and
// writes a sector back again only after its earlier write failed, so only
// a server that holds a request for longer than the timeout and then runs
// it can reorder a write; a timeout well above the server's worst latency
// keeps that away.
//
// Only simple replies are used (structured replies are never negotiated).
// One Client is one connection; blockdev.NBD opens several where the
// server offers multi-conn.
type Client struct {
	dial   func(ctx context.Context) (net.Conn, error)
	export string
	tls    *tls.Config
	opts   ClientOptions
	log    *slog.Logger
	info   ExportInfo // from the first handshake; later ones must agree

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{}  // a connection died: the reconnect loop wakes
	loop   sync.WaitGroup // the reconnect loop and every reader goroutine

	mu struct {
		sync.Mutex             // protects the fields below
		cur        *clientConn // nil while disconnected
		pending    map[uint64]*call
		next       uint64 // next handle
		closed     bool
		// lost is set when a connection dropped with acknowledged writes
		// no FLUSH covered; the next Flush fails and clears it.
		lost bool
		// lastErr is why the last connection or reconnect attempt failed.
		lastErr error
		// acked counts the non-FUA writes, trims and write-zeroes
		// acknowledged, on every connection; flushed is the count a
		// successful FLUSH covered. Equal (and not lost): a FLUSH has
		// nothing to do and is not sent, so a stop with the server
		// unreachable and nothing to flush does not wait for it.
		acked, flushed uint64
	}
}

// ClientOptions tune a Client. The zero value is the defaults.
type ClientOptions struct {
	// Timeout bounds each request, from its call to its reply, waiting
	// for a reconnect included. 0: 30 s.
	Timeout time.Duration
	// DialTimeout bounds one dial and handshake. 0: 10 s.
	DialTimeout time.Duration
	// BackoffMin and BackoffMax bound the wait between reconnect attempts
	// (doubling from min to max). 0: 100 ms and 5 s.
	BackoffMin, BackoffMax time.Duration
	// StartWait is how long Dial keeps dialling, with the same backoff,
	// while the server cannot be reached at all (the dial itself fails:
	// nothing listens, no route, a timeout), as at boot before the
	// network or the server is up; a warning is logged at the first
	// failure. 0: Dial fails at once. A server that answers and refuses
	// (no such export, a broken handshake) fails Dial at once anyway.
	StartWait time.Duration
	Logger    *slog.Logger // nil: discard
}

const (
	defaultClientTimeout = 30 * time.Second
	defaultDialTimeout   = 10 * time.Second
	defaultBackoffMin    = 100 * time.Millisecond
	defaultBackoffMax    = 5 * time.Second
	// maxZeroLength bounds one TRIM or WRITE_ZEROES request (they carry no
	// payload, so NBD_INFO_BLOCK_SIZE's maximum does not apply).
	maxZeroLength = 1 << 30
)

// Client errors.
var (
	// ErrTimeout: a request was not answered within the timeout. It wraps
	// syscall.EIO.
	ErrTimeout = fmt.Errorf("nbd: request timed out: %w", syscall.EIO)
	// ErrUnflushedLost: the connection dropped with acknowledged writes no
	// FLUSH had covered; write them again, then flush. It wraps
	// syscall.EIO.
	ErrUnflushedLost = fmt.Errorf("nbd: connection lost before a flush covered acknowledged writes: %w", syscall.EIO)
	// ErrConnLost: a FLUSH was in flight when the connection dropped. It
	// wraps syscall.EIO.
	ErrConnLost = fmt.Errorf("nbd: connection lost: %w", syscall.EIO)
	// ErrClientClosed is returned by every request after Close.
	ErrClientClosed = errors.New("nbd: client closed")
	// ErrUnaligned: a request not aligned to the server's minimum block size.
	ErrUnaligned = fmt.Errorf("nbd: request not aligned to the server's minimum block size: %w", syscall.EINVAL)
	// ErrUnsupported: the server does not offer the command.
	ErrUnsupported = fmt.Errorf("nbd: not supported by the server: %w", syscall.ENOTSUP)
)

// call is one request, from its submission to its reply.
type call struct {
	typ, flags uint16
	off        uint64
	length     uint32
	p          []byte // write payload, or read destination
	sentOn     *clientConn
	// seq is, for a FLUSH, the sentOn connection's write count when it was
	// sent: what it covers; cover is Client.mu.acked then.
	seq, cover uint64
	// timedOut: the caller gave up; a reply cut short is not sent again.
	// Under Client.mu.
	timedOut bool
	// dropped is why the last connection this call was sent on failed
	// (under Client.mu): what its timeout error names.
	dropped error
	err     error
	done    chan struct{}
}

// clientConn is one connection: its reader goroutine owns the receiving
// side and exits when the connection fails or is closed.
type clientConn struct {
	nc      net.Conn
	wmu     sync.Mutex // serialises request writes
	dead    chan struct{}
	deadErr error // set before dead is closed
	once    sync.Once
	// acked and flushed count non-FUA writes acknowledged on this
	// connection, and those a successful FLUSH covered; under Client.mu.
	acked, flushed uint64
}

// Dial connects to export through dial and returns a Client once the
// handshake succeeded; tlsConf, if not nil, is used after NBD_OPT_STARTTLS.
func Dial(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), export string, tlsConf *tls.Config, opts ClientOptions) (*Client, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = defaultClientTimeout
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = defaultBackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(defaultBackoffMax, opts.BackoffMin)
	}
	c := &Client{dial: dial, export: export, tls: tlsConf, opts: opts, log: opts.Logger, wake: make(chan struct{}, 1)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.mu.pending = make(map[uint64]*call)
	cc, info, err := c.firstConnect(ctx)
	if err != nil {
		return nil, err
	}
	if info.MinBlock == 0 || info.MaxBlock < info.MinBlock || info.MinBlock&(info.MinBlock-1) != 0 {
		cc.nc.Close()
		return nil, fmt.Errorf("%w: block sizes min %d, preferred %d, max %d", ErrProtocol, info.MinBlock, info.PreferredBlock, info.MaxBlock)
	}
	c.info = info
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.mu.cur = cc
	c.loop.Add(2)
	go c.reader(cc)
	go c.reconnectLoop()
	return c, nil
}

// Info is what the server said about the export.
func (c *Client) Info() ExportInfo { return c.info }

// Connected reports whether a connection is up, and if not, why the last
// one failed.
func (c *Client) Connected() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.cur != nil, c.mu.lastErr
}

// firstConnect is Dial's connect: while the dial itself fails, it tries
// again with backoff for up to StartWait.
func (c *Client) firstConnect(ctx context.Context) (*clientConn, ExportInfo, error) {
	deadline := time.Now().Add(c.opts.StartWait)
	backoff := c.opts.BackoffMin
	for warned := false; ; warned = true {
		cc, info, err := c.connect(ctx)
		var op *net.OpError
		if err == nil || !errors.As(err, &op) || op.Op != "dial" || !time.Now().Add(backoff).Before(deadline) {
			return cc, info, err
		}
		if !warned {
			c.log.Warn("nbd server unreachable; trying again", "export", c.export, "err", err, "for", time.Until(deadline).Round(time.Second))
		}
		if !pause(ctx, &backoff, c.opts.BackoffMax) {
			return nil, ExportInfo{}, fmt.Errorf("%w (gave up waiting: %w)", err, ctx.Err())
		}
	}
}

// pause waits *backoff, then doubles it, up to most; false when ctx ends
// first.
func pause(ctx context.Context, backoff *time.Duration, most time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(*backoff):
	}
	*backoff = min(2**backoff, most)
	return true
}

// connect dials and shakes hands, within DialTimeout.
func (c *Client) connect(ctx context.Context) (*clientConn, ExportInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.DialTimeout)
	defer cancel()
	nc, err := c.dial(ctx)
	if err != nil {
		return nil, ExportInfo{}, err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	tc, info, err := clientHandshake(nc, c.export, c.tls)
	if !stop() || err != nil {
		nc.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, ExportInfo{}, fmt.Errorf("nbd handshake, export %q: %w", c.export, err)
	}
	tc.SetDeadline(time.Time{})
	return &clientConn{nc: tc, dead: make(chan struct{})}, info, nil
}

// kill closes cc once, recording why.
func (cc *clientConn) kill(err error) {
	cc.once.Do(func() {
		cc.deadErr = err
		cc.nc.Close()
		close(cc.dead)
	})
}

// reader receives the replies of cc, matching them to calls by handle. It
// owns cc's receiving side; on a read or protocol error it kills cc, and
// on exit hands the connection's calls to the reconnect loop (dropped
// ones stay pending to be re-sent; FLUSHes fail).
func (c *Client) reader(cc *clientConn) {
	defer c.loop.Done()
	err := c.receive(cc)
	cc.kill(err)
	c.mu.Lock()
	if c.mu.cur == cc {
		c.mu.cur = nil
	}
	c.mu.lastErr = err
	if cc.acked > cc.flushed {
		c.mu.lost = true
	}
	for h, cl := range c.mu.pending {
		if cl.sentOn == cc {
			cl.sentOn = nil
			cl.dropped = err
			if cl.typ == cmdFlush {
				delete(c.mu.pending, h)
				cl.finish(fmt.Errorf("%w: %v", ErrConnLost, err))
			}
		}
	}
	closed := c.mu.closed
	c.mu.Unlock()
	if !closed {
		c.log.Warn("nbd connection lost; reconnecting", "export", c.export, "err", err)
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// receive reads replies until an error.
func (c *Client) receive(cc *clientConn) error {
	var h [simpleReplySize]byte
	for {
		if _, err := io.ReadFull(cc.nc, h[:]); err != nil {
			return err
		}
		if m := binary.BigEndian.Uint32(h[0:4]); m != magicReply {
			return fmt.Errorf("%w: reply magic %#08x (structured replies were not negotiated)", ErrProtocol, m)
		}
		errCode := binary.BigEndian.Uint32(h[4:8])
		handle := binary.BigEndian.Uint64(h[8:16])
		c.mu.Lock()
		cl, ok := c.mu.pending[handle]
		if ok && cl.sentOn != cc {
			ok = false // a handle of another connection's request
		}
		if ok {
			delete(c.mu.pending, handle)
		}
		c.mu.Unlock()
		if !ok {
			return fmt.Errorf("%w: reply with unknown handle %#x", ErrProtocol, handle)
		}
		if errCode == 0 && cl.typ == cmdRead {
			if _, err := io.ReadFull(cc.nc, cl.p[:cl.length]); err != nil {
				// The reply was cut short: send the read again, unless
				// its caller gave up.
				c.mu.Lock()
				switch {
				case c.mu.closed:
					cl.finish(ErrClientClosed)
				case cl.timedOut:
					cl.finish(ErrTimeout)
				default:
					c.mu.pending[handle] = cl
				}
				c.mu.Unlock()
				return err
			}
		}
		c.mu.Lock()
		if errCode == 0 {
			switch {
			case cl.typ == cmdFlush:
				cc.flushed = max(cc.flushed, cl.seq)
				c.mu.flushed = max(c.mu.flushed, cl.cover)
			case cl.flags&cmdFlagFUA == 0 && cl.typ != cmdRead:
				cc.acked++
				c.mu.acked++
			}
		}
		c.mu.Unlock()
		if errCode != 0 {
			cl.finish(replyError(errCode))
		} else {
			cl.finish(nil)
		}
	}
}

func (cl *call) finish(err error) {
	cl.err = err
	close(cl.done)
}

// replyError is the Go error of a reply's error field: a syscall.Errno.
func replyError(code uint32) error {
	switch code {
	case errPerm:
		return syscall.EPERM
	case errNoMem:
		return syscall.ENOMEM
	case errInval:
		return syscall.EINVAL
	case errNoSpc:
		return syscall.ENOSPC
	case errOverflow:
		return syscall.EOVERFLOW
	case errNotSup:
		return syscall.ENOTSUP
	case errShutdown:
		return syscall.ESHUTDOWN
	}
	return syscall.EIO
}

// send writes cl's request on cc; a failed write kills cc (its reader then
// hands cl to the reconnect loop).
func (cc *clientConn) send(cl *call, handle uint64) {
	var b [requestSize]byte
	request{flags: cl.flags, typ: cl.typ, handle: handle, offset: cl.off, length: cl.length}.encode(&b)
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	var err error
	if cl.typ == cmdWrite {
		bufs := net.Buffers{b[:], cl.p[:cl.length]}
		_, err = bufs.WriteTo(cc.nc)
	} else {
		_, err = cc.nc.Write(b[:])
	}
	if err != nil {
		cc.kill(err)
	}
}

// reconnectLoop dials again, with backoff, whenever the connection died,
// then re-sends the requests that were in flight. It exits on Close.
//
// A connection that dies soon after it came up (a server that completes
// the handshake, then breaks the protocol or drops every connection) does
// not reset the backoff: the next dial waits as after a failed one, so
// such a server is not redialled in a tight loop, each lost connection
// logged.
func (c *Client) reconnectLoop() {
	defer c.loop.Done()
	backoff := c.opts.BackoffMin
	var up time.Time // when the current connection came up (zero: the first, made by Dial)
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		}
		if !up.IsZero() && time.Since(up) < c.opts.BackoffMax {
			if !pause(c.ctx, &backoff, c.opts.BackoffMax) {
				return
			}
		} else {
			backoff = c.opts.BackoffMin
		}
		for {
			cc, info, err := c.connect(c.ctx)
			if err == nil && (info.Size != c.info.Size || info.Flags&^FlagCanMultiConn != c.info.Flags&^FlagCanMultiConn) {
				cc.nc.Close()
				err = fmt.Errorf("export %q changed: %d bytes, flags %#x (was %d bytes, flags %#x)", c.export, info.Size, info.Flags, c.info.Size, c.info.Flags)
			}
			if err == nil {
				c.resume(cc)
				up = time.Now()
				break
			}
			c.mu.Lock()
			c.mu.lastErr = err
			c.mu.Unlock()
			c.log.Debug("nbd reconnect failed", "export", c.export, "err", err, "retry_in", backoff)
			if !pause(c.ctx, &backoff, c.opts.BackoffMax) {
				return
			}
		}
	}
}

// resume makes cc the connection and re-sends every pending request on it.
func (c *Client) resume(cc *clientConn) {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		cc.nc.Close()
		return
	}
	c.mu.cur, c.mu.lastErr = cc, nil
	type resend struct {
		cl *call
		h  uint64
	}
	var todo []resend
	for h, cl := range c.mu.pending {
		cl.sentOn = cc
		if cl.typ == cmdFlush {
			cl.seq = cc.acked
		}
		todo = append(todo, resend{cl, h})
	}
	c.loop.Add(1)
	go c.reader(cc)
	c.mu.Unlock()
	c.log.Info("nbd connection restored", "export", c.export, "resent", len(todo))
	for _, r := range todo {
		cc.send(r.cl, r.h)
	}
}

// do runs one request and waits for its reply or its timeout.
func (c *Client) do(typ, flags uint16, off uint64, length uint32, p []byte) error {
	cl := &call{typ: typ, flags: flags, off: off, length: length, p: p, done: make(chan struct{})}
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return ErrClientClosed
	}
	if typ == cmdFlush && c.mu.lost {
		c.mu.lost = false
		c.mu.Unlock()
		return ErrUnflushedLost
	}
	if typ == cmdFlush && c.mu.acked == c.mu.flushed {
		c.mu.Unlock()
		return nil // every acknowledged write is covered already
	}
	h := c.mu.next
	c.mu.next++
	c.mu.pending[h] = cl
	cc := c.mu.cur
	cl.sentOn = cc
	if cc != nil && typ == cmdFlush {
		cl.seq = cc.acked
	}
	cl.cover = c.mu.acked
	c.mu.Unlock()
	if cc != nil {
		cc.send(cl, h)
	}

	t := time.NewTimer(c.opts.Timeout)
	defer t.Stop()
	select {
	case <-cl.done:
		return cl.err
	case <-t.C:
	}
	c.mu.Lock()
	_, waiting := c.mu.pending[h]
	if waiting {
		delete(c.mu.pending, h)
	}
	cl.timedOut = true
	cc = cl.sentOn
	why := cl.dropped
	if c.mu.lastErr != nil {
		why = c.mu.lastErr // no connection now: the last attempt's failure
	}
	c.mu.Unlock()
	// A server that does not answer is hung or unreachable: drop the
	// connection (the other requests are re-sent on the next one).
	if cc != nil {
		cc.kill(fmt.Errorf("request timed out after %v", c.opts.Timeout))
	}
	if !waiting {
		// The reader had taken the reply: it finishes the call (or hands
		// it back, which a closed connection answers at once).
		<-cl.done
		return cl.err
	}
	if cc != nil {
		<-cc.dead
	}
	if why != nil {
		// A server that breaks the protocol keeps the connection
		// failing: name why, not only the timeout.
		return fmt.Errorf("%w (%v; connection failed: %v)", ErrTimeout, c.opts.Timeout, why)
	}
	return fmt.Errorf("%w (%v)", ErrTimeout, c.opts.Timeout)
}

// Close fails the requests in flight, closes the connection and stops the
// reconnect loop; it waits for the goroutines it owns.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil
	}
	c.mu.closed = true
	cc := c.mu.cur
	for h, cl := range c.mu.pending {
		if cl.sentOn == nil {
			delete(c.mu.pending, h)
			cl.finish(ErrClientClosed)
		}
	}
	c.mu.Unlock()
	c.cancel()
	if cc != nil {
		c.disconnect(cc)
	}
	c.loop.Wait()
	// Requests sent on the last connection: failed now that its reader
	// cannot answer them.
	c.mu.Lock()
	for h, cl := range c.mu.pending {
		delete(c.mu.pending, h)
		cl.finish(ErrClientClosed)
	}
	c.mu.Unlock()
	return nil
}

// disconnect sends NBD_CMD_DISC (best effort, shortly bounded) and closes cc.
func (c *Client) disconnect(cc *clientConn) {
	var b [requestSize]byte
	request{typ: cmdDisc}.encode(&b)
	cc.wmu.Lock()
	cc.nc.SetWriteDeadline(time.Now().Add(time.Second))
	cc.nc.Write(b[:])
	cc.wmu.Unlock()
	cc.kill(ErrClientClosed)
}
