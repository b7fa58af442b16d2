package nbd

import (
	"net"
	"sync"
)

// AsyncReader is an optional Backend interface for backends that can
// serve a read with no goroutine waiting for it (a write-back cache whose
// cache device completes reads through io_uring, or whose RAM buffer holds
// the data). ReadAtAsync fills p from off and calls done exactly once:
// possibly before it returns, on the caller's goroutine, possibly later
// from another; done must not block. A connection then serves READ
// without a request goroutine, and a replier goroutine sends the replies
// of completed reads in batches, one writev each.
//
// The device reads may wait, queued, until Unplug, so that a burst of
// requests reaches the device in one submission: the connection calls
// Unplug before it waits for anything (the client, its budget) and before
// any other request, which may wait for the queued reads inside the
// backend.
type AsyncReader interface {
	ReadAtAsync(p []byte, off int64, done func(error))
	Unplug()
}

// replier is a connection's queue of completed asynchronous reads and the
// goroutine that sends their replies. The connection goroutine starts it
// at the first asynchronous read and stops it after the last reply
// (transmit); it never runs on a completing device's goroutine, so a
// client that stops reading stalls only its own connection.
type replier struct {
	mu      sync.Mutex
	ops     []*op         // completed, reply not sent
	wake    chan struct{} // a token: ops has work
	stop    chan struct{} // closed by the connection goroutine
	stopped chan struct{} // closed when the replier goroutine returns
}

// readAsync hands a validated READ, its buffer and budget taken, to the
// backend.
func (c *conn) readAsync(ar AsyncReader, o *op) {
	if c.rp == nil {
		c.rp = &replier{wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
		go c.replyLoop(c.rp)
	}
	c.wg.Add(1) // Done by the replier, after the reply
	c.plugged = ar
	ar.ReadAtAsync(*o.buf, int64(o.req.offset), o.readDone)
}

// unplug submits the reads the backend queued for this connection; the
// connection goroutine calls it before it waits or serves anything else.
func (c *conn) unplug() {
	if c.plugged != nil {
		c.plugged.Unplug()
		c.plugged = nil
	}
}

// readDoneFunc is an asynchronous read's completion: it queues the op for the
// replier. It is bound once per op (newOp), so passing it allocates
// nothing.
func (o *op) readDoneFunc(err error) {
	o.err = err
	rp := o.c.rp
	rp.mu.Lock()
	rp.ops = append(rp.ops, o)
	rp.mu.Unlock()
	select {
	case rp.wake <- struct{}{}:
	default: // a token is there: the replier will look again
	}
}

// replyLoop sends the queued replies until stop, then the last ones.
func (c *conn) replyLoop(rp *replier) {
	defer close(rp.stopped)
	var batch []*op
	var iov [][]byte
	for {
		select {
		case <-rp.wake:
		case <-rp.stop:
			// Every read has completed (the connection goroutine
			// waited for them): send what is left.
			c.sendReplies(rp, &batch, &iov)
			return
		}
		c.sendReplies(rp, &batch, &iov)
	}
}

// sendReplies sends every queued reply in one writev and finishes the ops.
func (c *conn) sendReplies(rp *replier, batch *[]*op, iov *[][]byte) {
	rp.mu.Lock()
	*batch = append((*batch)[:0], rp.ops...)
	clear(rp.ops)
	rp.ops = rp.ops[:0]
	rp.mu.Unlock()
	if len(*batch) == 0 {
		return
	}
	v := (*iov)[:0]
	for _, o := range *batch {
		code := errnoOf(o.err)
		putSimpleReply(&o.hdr, code, o.req.handle)
		v = append(v, o.hdr[:])
		if code == 0 {
			v = append(v, *o.buf)
		}
		// No payload after an error reply: the client could not know
		// how much to skip.
	}
	*iov = v
	bufs := net.Buffers(v)
	c.send(&bufs)
	for _, o := range *batch {
		c.logFailed(o.req, o.err)
		c.observed(&o.req, o.err)
		o.done()
		c.wg.Done()
	}
	clear(*batch)
	clear(*iov)
}

// stopReplier stops the replier goroutine, if any, once every request is
// done (the caller waited for c.wg).
func (c *conn) stopReplier() {
	if c.rp == nil {
		return
	}
	close(c.rp.stop)
	<-c.rp.stopped
}
