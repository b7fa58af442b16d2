package control

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/writeboost/writeboost/internal/vocab"
)

// DefaultTimeout bounds Status and Table requests made without a context
// deadline, and dialling.
const DefaultTimeout = 10 * time.Second

// Client is a connection to one volume's control socket. Its methods may be
// called from several goroutines; requests are sent one at a time. A
// request interrupted by its context closes the connection (that is how
// the server learns to stop a message), after which every call fails with
// ErrClosed.
type Client struct {
	path string

	mu     sync.Mutex // serialises requests; guards r and broken
	conn   net.Conn
	r      *bufio.Reader
	broken bool
}

// Dial connects to the control socket of volume name in RunDir(). A volume
// that is not running gives an error wrapping ErrNoVolume.
func Dial(name string) (*Client, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	c, err := DialPath(ctx, ControlPath(RunDir(), name))
	if err != nil {
		if errors.Is(err, ErrNoVolume) {
			return nil, fmt.Errorf("%w: %s (in %s)", ErrNoVolume, name, RunDir())
		}
		return nil, err
	}
	return c, nil
}

// DialPath connects to the control socket at path.
func DialPath(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("%w: %s: %v", ErrNoVolume, path, errors.Unwrap(err))
		}
		if isPermission(err) {
			return nil, fmt.Errorf("%w: %s", ErrPermission, PermissionHint(path))
		}
		return nil, fmt.Errorf("dial control socket: %w", err)
	}
	return &Client{path: path, conn: conn, r: bufio.NewReaderSize(conn, 4096)}, nil
}

// Close closes the connection; a message in progress is cancelled.
func (c *Client) Close() error { return c.conn.Close() }

// Status returns the volume's status.
func (c *Client) Status() (vocab.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return c.StatusContext(ctx)
}

// StatusContext is Status with a context.
func (c *Client) StatusContext(ctx context.Context) (vocab.Status, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpStatus})
	if err != nil {
		return vocab.Status{}, err
	}
	if r.Status == nil {
		return vocab.Status{}, fmt.Errorf("%w: status response without a status", ErrSyntax)
	}
	return *r.Status, nil
}

// Table returns the volume's table line.
func (c *Client) Table() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	r, err := c.roundTrip(ctx, Request{Op: OpTable})
	if err != nil {
		return "", err
	}
	return r.Table, nil
}

// Message sends a message and waits for it to finish or for ctx to end.
// When ctx ends first, the connection is closed, which cancels the message
// on the server, and ctx's error is returned.
func (c *Client) Message(ctx context.Context, m vocab.Message) (string, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpMessage, Args: m.Args()})
	if err != nil {
		return "", err
	}
	return r.Result, nil
}

func (c *Client) roundTrip(ctx context.Context, req Request) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.broken {
		return Response{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return Response{}, err
	}
	// Ending the context closes the connection: it unblocks our read and
	// tells the server the client is gone.
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	resp, err := c.exchange(req)
	if !stop() && ctx.Err() != nil {
		c.broken = true
		return Response{}, ctx.Err()
	}
	if err != nil {
		c.broken = true
		return Response{}, err
	}
	if !resp.OK {
		return resp, &RemoteError{Op: req.Op, Msg: resp.Error}
	}
	return resp, nil
}

func (c *Client) exchange(req Request) (Response, error) {
	b, err := encodeLine(req)
	if err != nil {
		return Response{}, fmt.Errorf("encode %s request: %w", req.Op, err)
	}
	if _, err := c.conn.Write(b); err != nil {
		return Response{}, fmt.Errorf("%w: send %s request: %v", ErrClosed, req.Op, err)
	}
	line, err := readLine(c.r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return Response{}, fmt.Errorf("%w: %s: server closed the connection", ErrClosed, req.Op)
		}
		return Response{}, fmt.Errorf("%w: %s: %v", ErrClosed, req.Op, err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		return Response{}, fmt.Errorf("%w: %s response: %v", ErrSyntax, req.Op, err)
	}
	if !resp.OK && resp.Error == "" {
		resp.Error = "request failed without a reason"
	}
	return resp, nil
}

// readLine reads one line of at most MaxLineLen bytes, without its newline.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > MaxLineLen+1 {
			return nil, fmt.Errorf("%w: response longer than %d bytes", ErrSyntax, MaxLineLen)
		}
		if err == nil {
			return line[:len(line)-1], nil
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}
