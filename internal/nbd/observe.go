package nbd

import (
	"errors"
	"time"
)

// Command is the type of a request, as an Observer sees it.
type Command uint16

// The commands a server answers; any other is refused (EINVAL) and
// observed under its number.
const (
	CmdRead        = Command(cmdRead)        // NBD_CMD_READ
	CmdWrite       = Command(cmdWrite)       // NBD_CMD_WRITE
	CmdFlush       = Command(cmdFlush)       // NBD_CMD_FLUSH
	CmdTrim        = Command(cmdTrim)        // NBD_CMD_TRIM
	CmdWriteZeroes = Command(cmdWriteZeroes) // NBD_CMD_WRITE_ZEROES
)

// String is the command's name as metrics label it: "read", "write",
// "flush", "trim", "write_zeroes"; "other" for the rest.
func (c Command) String() string {
	switch c {
	case CmdRead:
		return "read"
	case CmdWrite:
		return "write"
	case CmdFlush:
		return "flush"
	case CmdTrim:
		return "trim"
	case CmdWriteZeroes:
		return "write_zeroes"
	}
	return "other"
}

// ErrRefused is what an Observer gets for a request answered with an
// error before it reached the backend: an unknown command or flag, a
// range past the end, a write to a read-only export.
var ErrRefused = errors.New("nbd: request refused")

// Observer sees every request a server answers, once, after its reply
// was sent (for an inline write, queued: see InlineWriter). length is
// the request's length field (payload bytes for READ and WRITE, the range
// for TRIM and WRITE_ZEROES, 0 for FLUSH); took runs from the request
// header's arrival to then; err is the backend's error, ErrRefused, or
// nil. NB: Observe runs on the serving goroutines, once per request: it
// must be cheap (atomic counters), must not block and must not keep err.
type Observer interface {
	Observe(cmd Command, length uint32, took time.Duration, err error)
}

// observeEpoch is the origin of request.received.
var observeEpoch = time.Now()

// observing stamps a request's arrival when an Observer is set: the one
// cost of Options.Observer on the hot path when it is nil is this test.
func (c *conn) observing(req *request) {
	if c.s.opts.Observer != nil {
		req.received = time.Since(observeEpoch)
	}
}

// observed reports an answered request to the Observer, if any; the test
// inlines, the call does not.
func (c *conn) observed(req *request, err error) {
	if c.s.opts.Observer != nil {
		c.observe(req, err)
	}
}

func (c *conn) observe(req *request, err error) {
	c.s.opts.Observer.Observe(Command(req.typ), req.length, time.Since(observeEpoch)-req.received, err)
}
