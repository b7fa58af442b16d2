// Package nbdclient is a small NBD client for the test tools: fixed newstyle
// handshake with NBD_OPT_GO, simple replies, many requests in flight on one
// connection (a reader goroutine matches replies to requests by cookie).
//
// It deliberately shares no code with internal/nbd: a test client that
// reused the server's encoders would agree with the server's bugs. The
// reference is NetworkBlockDevice/nbd doc/proto.md.
package nbdclient

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Wire constants, named after doc/proto.md.
const (
	magicInit      uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	magicOpt       uint64 = 0x49484156454F5054 // IHAVEOPT
	magicOptReply  uint64 = 0x0003e889045565a9 // NBD_REP_MAGIC
	magicRequest   uint32 = 0x25609513         // NBD_REQUEST_MAGIC
	magicReply     uint32 = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC
	optGo          uint32 = 7                  // NBD_OPT_GO
	optAbort       uint32 = 2                  // NBD_OPT_ABORT
	repAck         uint32 = 1                  // NBD_REP_ACK
	repInfo        uint32 = 3                  // NBD_REP_INFO
	infoExport     uint16 = 0                  // NBD_INFO_EXPORT
	flagFixedNS    uint16 = 1 << 0             // NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes   uint16 = 1 << 1             // NBD_FLAG_NO_ZEROES
	cmdRead        uint16 = 0                  // NBD_CMD_READ
	cmdWrite       uint16 = 1                  // NBD_CMD_WRITE
	cmdDisc        uint16 = 2                  // NBD_CMD_DISC
	cmdFlush       uint16 = 3                  // NBD_CMD_FLUSH
	cmdTrim        uint16 = 4                  // NBD_CMD_TRIM
	cmdWriteZeroes uint16 = 6                  // NBD_CMD_WRITE_ZEROES
	cmdFlagFUA     uint16 = 1 << 0             // NBD_CMD_FLAG_FUA

	// Transmission flags (NBD_FLAG_*), as Flags returns them.
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagCanMultiConn    uint16 = 1 << 8

	requestHeaderLen = 28
	replyHeaderLen   = 16
	// MaxLength bounds one request; servers advertise at most 32 MiB.
	MaxLength = 32 << 20
)

var (
	// ErrClosed is returned for requests on a connection that went away
	// (closed by us, or the server died). Test it with errors.Is.
	ErrClosed = errors.New("nbdclient: connection closed")
	// ErrProtocol marks a malformed message from the server.
	ErrProtocol = errors.New("nbdclient: protocol error")
)

// Error is an error reply from the server; Errno is the NBD error value
// (the same numbers as Linux errno: EIO 5, EINVAL 22, ENOSPC 28...).
type Error struct {
	Op    string
	Off   uint64
	Len   uint32
	Errno uint32
}

func (e *Error) Error() string {
	return fmt.Sprintf("nbdclient: %s off=%d len=%d: server error %d (%v)", e.Op, e.Off, e.Len, e.Errno, syscall.Errno(e.Errno))
}

// Target is where to connect: a network ("unix" or "tcp"), an address
// and an export name.
type Target struct {
	Network, Addr, Export string
}

// ParseURI parses the NBD URI forms the scenarios use:
// nbd+unix:///EXPORT?socket=PATH and nbd://HOST[:PORT][/EXPORT].
func ParseURI(s string) (Target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Target{}, fmt.Errorf("parse nbd uri %q: %w", s, err)
	}
	export := strings.TrimPrefix(u.Path, "/")
	switch u.Scheme {
	case "nbd+unix":
		sock := u.Query().Get("socket")
		if sock == "" {
			return Target{}, fmt.Errorf("parse nbd uri %q: nbd+unix needs ?socket=PATH", s)
		}
		if u.Host != "" {
			return Target{}, fmt.Errorf("parse nbd uri %q: nbd+unix takes no host", s)
		}
		return Target{Network: "unix", Addr: sock, Export: export}, nil
	case "nbd":
		if u.Host == "" {
			return Target{}, fmt.Errorf("parse nbd uri %q: no host", s)
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "10809")
		}
		return Target{Network: "tcp", Addr: host, Export: export}, nil
	default:
		return Target{}, fmt.Errorf("parse nbd uri %q: unsupported scheme %q", s, u.Scheme)
	}
}

// Client is one NBD connection. Its methods may be called from many
// goroutines at once; each call is one request in flight.
type Client struct {
	conn  net.Conn
	size  uint64
	flags uint16

	wmu sync.Mutex // serialises request writes on conn
	bw  *bufio.Writer

	mu      sync.Mutex // guards pending, cookie, err
	pending map[uint64]*call
	cookie  uint64
	err     error // set once the connection is dead; every later call fails with it

	done chan struct{} // closed when the reader goroutine has exited
}

type call struct {
	op   string
	off  uint64
	len  uint32
	buf  []byte // destination of a read, nil otherwise
	done chan error
}

// Dial connects to the target described by uri and negotiates the export.
func Dial(ctx context.Context, uri string) (*Client, error) {
	t, err := ParseURI(uri)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, t.Network, t.Addr)
	if err != nil {
		return nil, fmt.Errorf("nbdclient: dial %s: %w", uri, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c := &Client{conn: conn, pending: map[uint64]*call{}, done: make(chan struct{})}
	br := bufio.NewReaderSize(conn, 256<<10)
	c.bw = bufio.NewWriterSize(conn, 256<<10)
	if err := c.handshake(br, t.Export); err != nil {
		conn.Close()
		return nil, fmt.Errorf("nbdclient: handshake with %s: %w", uri, err)
	}
	_ = conn.SetDeadline(time.Time{})
	go c.readLoop(br)
	return c, nil
}

func (c *Client) handshake(br *bufio.Reader, export string) error {
	var hdr [18]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("read greeting: %w", err)
	}
	hflags, err := ParseGreeting(hdr[:])
	if err != nil {
		return err
	}
	cflags := uint32(flagFixedNS)
	if hflags&flagNoZeroes != 0 {
		cflags |= uint32(flagNoZeroes)
	}
	// NBD_OPT_GO: export name length, name, number of info requests (0).
	opt := make([]byte, 4+16+4+len(export)+2)
	binary.BigEndian.PutUint32(opt[0:], cflags)
	binary.BigEndian.PutUint64(opt[4:], magicOpt)
	binary.BigEndian.PutUint32(opt[12:], optGo)
	binary.BigEndian.PutUint32(opt[16:], uint32(4+len(export)+2))
	binary.BigEndian.PutUint32(opt[20:], uint32(len(export)))
	copy(opt[24:], export)
	if _, err := c.conn.Write(opt); err != nil {
		return fmt.Errorf("send NBD_OPT_GO: %w", err)
	}
	gotExport := false
	for {
		var rh [20]byte
		if _, err := io.ReadFull(br, rh[:]); err != nil {
			return fmt.Errorf("read option reply: %w", err)
		}
		rep, err := ParseOptReplyHeader(rh[:])
		if err != nil {
			return err
		}
		if rep.Len > 64<<10 {
			return fmt.Errorf("%w: option reply of %d bytes", ErrProtocol, rep.Len)
		}
		data := make([]byte, rep.Len)
		if _, err := io.ReadFull(br, data); err != nil {
			return fmt.Errorf("read option reply data: %w", err)
		}
		if rep.Option != optGo {
			return fmt.Errorf("%w: reply to option %d, sent %d", ErrProtocol, rep.Option, optGo)
		}
		switch {
		case rep.Type == repAck:
			if !gotExport {
				return fmt.Errorf("%w: NBD_REP_ACK without NBD_INFO_EXPORT", ErrProtocol)
			}
			return nil
		case rep.Type == repInfo:
			if len(data) >= 2 && binary.BigEndian.Uint16(data) == infoExport {
				size, flags, err := ParseInfoExport(data)
				if err != nil {
					return err
				}
				c.size, c.flags, gotExport = size, flags, true
			}
		case rep.Type&(1<<31) != 0:
			return fmt.Errorf("server refused export %q: reply type %#x %q", export, rep.Type, data)
		default:
			// Other replies (e.g. NBD_REP_SERVER) are ignored, as the spec allows.
		}
	}
}

// Size is the export size in bytes.
func (c *Client) Size() uint64 { return c.size }

// Flags are the transmission flags the server sent.
func (c *Client) Flags() uint16 { return c.flags }

func (c *Client) readLoop(br *bufio.Reader) {
	defer close(c.done)
	var h [replyHeaderLen]byte
	for {
		if _, err := io.ReadFull(br, h[:]); err != nil {
			c.fail(fmt.Errorf("%w: read reply: %v", ErrClosed, err))
			return
		}
		errno, cookie, err := ParseReplyHeader(h[:])
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		cl := c.pending[cookie]
		delete(c.pending, cookie)
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("%w: reply for unknown cookie %d", ErrProtocol, cookie))
			return
		}
		if errno != 0 {
			cl.done <- &Error{Op: cl.op, Off: cl.off, Len: cl.len, Errno: errno}
			continue
		}
		if cl.buf != nil {
			if _, err := io.ReadFull(br, cl.buf); err != nil {
				err = fmt.Errorf("%w: read data: %v", ErrClosed, err)
				cl.done <- err
				c.fail(err)
				return
			}
		}
		cl.done <- nil
	}
}

// fail marks the connection dead and fails every pending request.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	p := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, cl := range p {
		cl.done <- err
	}
	c.conn.Close()
}

func (c *Client) do(op string, typ, flags uint16, off uint64, length uint32, wdata, rbuf []byte) error {
	if length > MaxLength {
		return fmt.Errorf("nbdclient: %s of %d bytes exceeds %d", op, length, MaxLength)
	}
	cl := &call{op: op, off: off, len: length, buf: rbuf, done: make(chan error, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.cookie++
	cookie := c.cookie
	c.pending[cookie] = cl
	c.mu.Unlock()

	var h [requestHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], flags)
	binary.BigEndian.PutUint16(h[6:], typ)
	binary.BigEndian.PutUint64(h[8:], cookie)
	binary.BigEndian.PutUint64(h[16:], off)
	binary.BigEndian.PutUint32(h[24:], length)
	c.wmu.Lock()
	_, err := c.bw.Write(h[:])
	if err == nil && wdata != nil {
		_, err = c.bw.Write(wdata)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		c.fail(fmt.Errorf("%w: send %s: %v", ErrClosed, op, err))
	}
	return <-cl.done
}

// ReadAt reads len(p) bytes at off.
func (c *Client) ReadAt(p []byte, off uint64) error {
	return c.do("read", cmdRead, 0, off, uint32(len(p)), nil, p)
}

// WriteAt writes p at off; with fua the reply means the data is durable.
func (c *Client) WriteAt(p []byte, off uint64, fua bool) error {
	var f uint16
	if fua {
		f = cmdFlagFUA
	}
	return c.do("write", cmdWrite, f, off, uint32(len(p)), p, nil)
}

// Flush makes every write completed before it durable.
func (c *Client) Flush() error { return c.do("flush", cmdFlush, 0, 0, 0, nil, nil) }

// Trim discards length bytes at off.
func (c *Client) Trim(off uint64, length uint32) error {
	return c.do("trim", cmdTrim, 0, off, length, nil, nil)
}

// WriteZeroes zeroes length bytes at off.
func (c *Client) WriteZeroes(off uint64, length uint32, fua bool) error {
	var f uint16
	if fua {
		f = cmdFlagFUA
	}
	return c.do("write_zeroes", cmdWriteZeroes, f, off, length, nil, nil)
}

// Close sends NBD_CMD_DISC (best effort), closes the connection and waits
// for the reader goroutine. Requests still pending fail with ErrClosed.
func (c *Client) Close() error {
	var h [requestHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[6:], cmdDisc)
	c.wmu.Lock()
	if _, err := c.bw.Write(h[:]); err == nil {
		_ = c.bw.Flush()
	}
	c.wmu.Unlock()
	c.fail(ErrClosed)
	<-c.done
	return nil
}

// Abandon closes the socket without NBD_CMD_DISC, as a crashing client would.
func (c *Client) Abandon() {
	c.fail(ErrClosed)
	<-c.done
}
