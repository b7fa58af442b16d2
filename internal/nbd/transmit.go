package nbd

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// transmit reads requests until the client disconnects, sends NBD_CMD_DISC,
// breaks the protocol, or Shutdown stops the read side; then it sends the
// batched replies and waits for the requests in flight, whose replies still
// go out.
func (c *conn) transmit(e *Export) {
	defer c.stopReplier() // after the wait below: every reply is queued then
	defer c.wg.Wait()
	defer c.beforeWait()
	size := uint64(e.Backend.Size())
	flags := c.s.transmissionFlags(e)
	iw, _ := e.Backend.(InlineWriter)
	sw, _ := e.Backend.(StreamWriter)
	var hdr [requestSize]byte
	for {
		c.fill(requestSize)
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			c.readEnded(err, "request header")
			return
		}
		req, err := parseRequest(&hdr)
		if err != nil {
			c.s.log.Warn("nbd: closing connection", "remote", c.remote(), "err", err)
			return
		}
		c.observing(&req)
		if req.typ != cmdRead {
			// Any other request may wait inside the backend, for a
			// slot a queued read pins.
			c.unplug()
		}
		if req.typ == cmdDisc {
			// Soft disconnect: the deferred wait sends what is in flight.
			return
		}
		if iw != nil && req.typ == cmdWrite && req.flags == 0 && (req.length <= maxInlineWrite || sw != nil) &&
			check(e, size, flags, req) == 0 && iw.WritesInline() {
			var err error
			if req.length <= maxInlineWrite {
				err = c.writeInline(e, req)
			} else {
				err = c.writeStream(sw, req)
			}
			if err != nil {
				c.readEnded(err, "request")
				return
			}
			continue
		}
		if err := c.dispatch(e, size, flags, req); err != nil {
			c.readEnded(err, "request")
			return
		}
	}
}

// readEnded logs why the read side of a transmission ended, quietly when it
// is an ordinary end (client gone, Shutdown).
func (c *conn) readEnded(err error, what string) {
	switch {
	case c.isStopped():
		c.s.log.Debug("nbd: stopped reading for shutdown", "remote", c.remote())
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.s.log.Debug("nbd: client disconnected", "remote", c.remote())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, os.ErrDeadlineExceeded):
		c.s.log.Info("nbd: client disconnected mid-"+what, "remote", c.remote())
	default:
		c.s.log.Warn("nbd: closing connection", "remote", c.remote(), "err", err)
	}
}

// check validates a request against the export and returns the NBD error
// to answer it with, or 0. Per the spec: unknown commands and flags are
// EINVAL; writes on a read-only export EPERM; ranges past the end EINVAL,
// but ENOSPC for writes.
func check(e *Export, size uint64, flags uint16, req request) uint32 {
	// NBD_CMD_FLAG_FUA is valid on every command once NBD_FLAG_SEND_FUA is
	// advertised (clients are known to set it on reads); NO_HOLE only
	// qualifies WRITE_ZEROES.
	allowed := cmdFlagFUA
	write := false
	switch req.typ {
	case cmdRead:
	case cmdWrite, cmdTrim:
		write = true
	case cmdWriteZeroes:
		write = true
		allowed |= cmdFlagNoHole
	case cmdFlush:
		if req.offset != 0 || req.length != 0 {
			return errInval
		}
	default:
		return errInval
	}
	if req.flags&^allowed != 0 {
		return errInval
	}
	if write && flags&FlagReadOnly != 0 {
		return errPerm
	}
	if req.typ == cmdFlush {
		return 0
	}
	if (req.typ == cmdRead || req.typ == cmdWrite) && req.length > MaxPayload {
		return errInval
	}
	if req.length == 0 {
		return errInval
	}
	if req.offset > size || uint64(req.length) > size-req.offset {
		if req.typ == cmdWrite || req.typ == cmdWriteZeroes {
			return errNoSpc
		}
		return errInval
	}
	return 0
}

// readBufferSize is the connection's receive buffer. It holds a whole
// inline write (header and payload), and a burst of small requests arrives
// in one read.
const readBufferSize = 128 << 10

// maxInlineWrite is the largest write served on the connection goroutine
// (see InlineWriter). Larger writes gain nothing from it: their cost is the
// copy, and on a request goroutine the next payload is read meanwhile.
const maxInlineWrite = 64 << 10

// maxBatch is how many inline replies wait at most before they are sent
// even though more requests are buffered: a client that keeps the pipe
// full still gets its replies, hence its credit, in bounded batches.
const maxBatch = 64

// fill is called before the connection goroutine reads n bytes: if they
// are not all buffered the read may wait for the client, so the batched
// replies go out first (the client may be waiting for them to send more).
func (c *conn) fill(n int) {
	if c.br.Buffered() < n {
		c.beforeWait()
	}
}

// beforeWait is called by the connection goroutine before it may wait (for
// the client, for its budget): the batched replies and the queued reads
// must not wait with it.
func (c *conn) beforeWait() {
	c.unplug()
	c.sendBatch()
}

// sendBatch sends the batched replies of inline writes in one write.
func (c *conn) sendBatch() {
	if len(c.batch) == 0 {
		return
	}
	bufs := net.Buffers{c.batch}
	c.send(&bufs)
	c.batch = c.batch[:0]
}

// writeInline serves a validated WRITE without flags on the connection
// goroutine: WriteAt gets the payload in the receive buffer, and the reply
// joins the batch. An error means the stream cannot go on.
func (c *conn) writeInline(e *Export, req request) error {
	n := int(req.length)
	c.fill(n)
	p, err := c.br.Peek(n)
	if err != nil {
		return fmt.Errorf("read write payload: %w", err)
	}
	werr := e.Backend.WriteAt(p, int64(req.offset), false)
	if _, err := c.br.Discard(n); err != nil {
		return fmt.Errorf("read write payload: %w", err) // cannot happen: Peek had them
	}
	c.inlineDone(req, werr)
	return nil
}

// writeStream serves a validated WRITE without flags of more than
// maxInlineWrite bytes on the connection goroutine, for a StreamWriter:
// the backend reads the payload from the receive buffer and the socket
// itself, and the reply joins the batch. An error means the stream cannot
// go on.
func (c *conn) writeStream(sw StreamWriter, req request) error {
	n := int(req.length)
	c.fill(n) // the batched replies go out before the wait for the payload
	pr := payloadReader{r: c.br, left: n}
	werr := sw.WriteFrom(&pr, n, int64(req.offset))
	if pr.err != nil {
		return fmt.Errorf("read write payload: %w", pr.err)
	}
	if pr.left > 0 { // the backend failed before it read everything
		if _, err := c.br.Discard(pr.left); err != nil {
			return fmt.Errorf("read write payload: %w", err)
		}
	}
	c.inlineDone(req, werr)
	return nil
}

// payloadReader reads the left bytes of a write's payload and no more, and
// keeps the first error of the stream: the connection ends on it, whatever
// the backend made of it.
type payloadReader struct {
	r    io.Reader
	left int
	err  error
}

func (p *payloadReader) Read(b []byte) (int, error) {
	if p.err != nil {
		return 0, p.err
	}
	if p.left == 0 {
		return 0, io.EOF
	}
	if len(b) > p.left {
		b = b[:p.left]
	}
	n, err := p.r.Read(b)
	p.left -= n
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF // the client went away mid-payload
		}
		p.err = err
	}
	return n, err
}

// inlineDone ends a write served on the connection goroutine: its reply
// joins the batch.
func (c *conn) inlineDone(req request, werr error) {
	c.logFailed(req, werr)
	c.observed(&req, werr)
	var hdr [simpleReplySize]byte
	putSimpleReply(&hdr, errnoOf(werr), req.handle)
	c.batch = append(c.batch, hdr[:]...)
	if len(c.batch) >= maxBatch*simpleReplySize {
		c.sendBatch()
	}
}

// logFailed logs a request the backend failed (at debug level: the client
// gets the error, and a failing device is logged by the backend).
func (c *conn) logFailed(req request, err error) {
	if err != nil {
		c.s.log.Debug("nbd: request failed", "remote", c.remote(), "type", req.typ,
			"offset", req.offset, "length", req.length, "err", err)
	}
}

// op is one request in flight: its header, its payload buffer and the
// storage of its reply, pooled so that the hot path allocates nothing.
type op struct {
	c    *conn
	e    *Export
	req  request
	buf  *[]byte // payload: WRITE data in, READ data out; nil otherwise
	cost int64   // bytes charged to the connection's in-flight budget

	hdr  [simpleReplySize]byte
	iov  [2][]byte
	bufs net.Buffers

	err      error       // an asynchronous read's result
	readDone func(error) // readDoneFunc bound to this op, made once
}

var opPool = sync.Pool{New: func() any {
	o := new(op)
	o.readDone = o.readDoneFunc
	return o
}}

// dispatch validates a request, reads its payload, and hands it to a request
// goroutine. An error means the stream cannot go on.
func (c *conn) dispatch(e *Export, size uint64, flags uint16, req request) error {
	code := check(e, size, flags, req)
	var cost int64
	switch {
	case req.typ == cmdWrite && req.length > MaxPayload:
		// The payload follows the header and we will not read 4 GiB to
		// skip it: the stream cannot be resynchronised.
		c.reply(req.handle, errInval, nil)
		c.observed(&req, ErrRefused)
		return fmt.Errorf("%w: write of %d bytes, limit %d", ErrProtocol, req.length, MaxPayload)
	case req.typ == cmdWrite:
		// Read the payload even for a refused write, to stay in step.
		cost = int64(req.length)
	case code != 0:
		c.reply(req.handle, code, nil)
		c.observed(&req, ErrRefused)
		return nil
	case req.typ == cmdRead:
		cost = int64(req.length)
	}

	// Wait for room before allocating: the budget bounds the memory a
	// connection holds.
	c.acquire(cost)
	o := opPool.Get().(*op)
	o.c, o.e, o.req, o.cost = c, e, req, cost
	if req.typ == cmdWrite || req.typ == cmdRead {
		o.buf = getBuf(int(req.length))
	}
	if req.typ == cmdWrite {
		c.fill(len(*o.buf))
		if _, err := io.ReadFull(c.br, *o.buf); err != nil {
			o.done()
			return fmt.Errorf("read write payload: %w", err)
		}
		if code != 0 {
			o.done()
			c.reply(req.handle, code, nil)
			c.observed(&req, ErrRefused)
			return nil
		}
	}
	if ar, ok := e.Backend.(AsyncReader); ok && req.typ == cmdRead {
		c.readAsync(ar, o)
		return nil
	}
	c.wg.Add(1)
	go o.run()
	return nil
}

// run executes a validated request against the backend and replies. It is
// the body of a request goroutine, owned by the connection goroutine, which
// waits for it (conn.wg) before closing.
func (o *op) run() {
	c, e, req := o.c, o.e, o.req
	defer c.wg.Done()
	defer o.done()
	off, length, fua := int64(req.offset), int64(req.length), req.flags&cmdFlagFUA != 0
	var err error
	switch req.typ {
	case cmdRead:
		if err = e.Backend.ReadAt(*o.buf, off); err == nil {
			o.reply(0, *o.buf)
			c.observed(&req, nil)
			return
		}
		// No payload after an error reply: the client could not know
		// how much to skip.
	case cmdWrite:
		err = e.Backend.WriteAt(*o.buf, off, fua)
	case cmdFlush:
		err = e.Backend.Flush()
	case cmdTrim:
		err = e.Backend.Trim(off, length)
		if err == nil && fua {
			// Backend.Trim has no FUA: a flush persists it.
			err = e.Backend.Flush()
		}
	case cmdWriteZeroes:
		err = e.Backend.WriteZeroes(off, length, fua)
	}
	c.logFailed(req, err)
	o.reply(errnoOf(err), nil)
	c.observed(&req, err)
}

// reply sends the op's simple reply, header and data in one writev.
func (o *op) reply(code uint32, data []byte) {
	putSimpleReply(&o.hdr, code, o.req.handle)
	o.iov[0], o.iov[1] = o.hdr[:], data
	o.bufs = o.iov[:]
	if len(data) == 0 {
		o.bufs = o.iov[:1]
	}
	o.c.send(&o.bufs)
	o.iov[1] = nil
}

// done returns the op's buffer and budget, and the op to its pool.
func (o *op) done() {
	if o.buf != nil {
		putBuf(o.buf)
	}
	o.c.release(o.cost)
	*o = op{readDone: o.readDone}
	opPool.Put(o)
}

// acquire waits until the connection may start one more request holding n
// payload bytes: first within its own bounds, then within the server's
// budget. Only the connection goroutine acquires, so a request larger than
// the connection's byte bound still runs once nothing else is in flight on
// it (and one larger than the budget's shared part once nothing is in
// flight on the server).
func (c *conn) acquire(n int64) {
	c.mu.Lock()
	full := func() bool {
		return c.nInflight >= c.s.opts.MaxInFlight || (c.nInflight > 0 && c.bytesInflight+n > c.s.opts.MaxInFlightBytes)
	}
	if full() {
		c.mu.Unlock()
		c.beforeWait()
		c.mu.Lock()
	}
	for full() {
		c.cond.Wait()
	}
	c.mu.Unlock()
	if !c.s.budget.tryAcquire(n, &c.bytesInflight, &c.mu) {
		c.beforeWait() // the budget makes us wait too
		c.s.budget.acquire(n, &c.bytesInflight, &c.mu)
	}
	// Our own bounds still hold: requests only left meanwhile.
	c.mu.Lock()
	c.nInflight++
	c.bytesInflight += n
	c.mu.Unlock()
}

func (c *conn) release(n int64) {
	c.mu.Lock()
	c.nInflight--
	c.bytesInflight -= n
	c.mu.Unlock()
	c.cond.Signal()
	c.s.budget.release(n)
}

// reply sends a simple reply without data; used by the connection
// goroutine for requests refused before they reach the backend.
func (c *conn) reply(handle uint64, code uint32, data []byte) {
	var hdr [simpleReplySize]byte
	putSimpleReply(&hdr, code, handle)
	bufs := net.Buffers{hdr[:], data}
	if len(data) == 0 {
		bufs = bufs[:1]
	}
	c.send(&bufs)
}

// send writes one reply in one writev under the write lock, so replies
// never interleave. A write that makes no progress for StallTimeout fails:
// the client does not read its replies. After a failed write the socket is
// closed (the reader then stops) and further replies are dropped: the
// client is gone or the stream is broken.
func (c *conn) send(bufs *net.Buffers) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wErr != nil {
		return
	}
	for {
		c.nc.SetWriteDeadline(time.Now().Add(c.s.opts.StallTimeout))
		n, err := bufs.WriteTo(c.w)
		if err == nil {
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && n > 0 && c.w == c.nc {
			continue // slow, not stalled (NB: a TLS write cannot resume)
		}
		c.wErr = err
		c.nc.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			c.s.log.Warn("nbd: closing connection: client stopped reading replies", "remote", c.remote(),
				"stall_timeout", c.s.opts.StallTimeout)
		} else {
			c.s.log.Debug("nbd: reply failed", "remote", c.remote(), "err", err)
		}
		return
	}
}
