package blockdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/writeboost/writeboost/internal/nbd"
)

var (
	_ Device    = (*NBD)(nil)
	_ FUAWriter = (*NBD)(nil)
)

// NBD is a Device on an NBD server's export: a backing device on the
// network (nbd://, nbds://, nbd+unix://; see nbd.ParseURI). Its requests
// are many at once on each connection; a dropped connection is redialled
// and its requests sent again (nbd.Client). Where the server offers
// multi-conn (NBD_FLAG_CAN_MULTI_CONN) it opens several connections and
// spreads the requests over them: a server that serves each connection in
// one thread (nbd-server) then works on several at once. Sync is
// NBD_CMD_FLUSH on every connection with writes to cover (each client
// skips one with none), Discard is NBD_CMD_TRIM where the server offers
// it, and WriteAtFUA a write with NBD_CMD_FLAG_FUA (or a write and a
// flush).
//
// NB: nothing here is exclusive: another client of the same export is not
// seen, unlike File's locks.
type NBD struct {
	cs     []*nbd.Client // the connections, all to one export
	next   atomic.Uint64 // round robin over cs
	uri    string        // without TLS parameters
	closed atomic.Bool
}

// NBDOptions tune OpenNBD.
type NBDOptions struct {
	// Timeout bounds each request, waiting for a reconnect included; one
	// that runs out fails with an EIO. 0: 30 s.
	Timeout time.Duration
	// NoFlushOK accepts a server that does not offer NBD_CMD_FLUSH: the
	// caller says its export has no volatile write cache, so Sync does
	// nothing. Without it such a server is refused: a write-back cache
	// would mark data written back that a power loss can still take.
	NoFlushOK bool
	ReadOnly  bool
	// Conns is how many connections to open where the server offers
	// multi-conn. 0: 4.
	Conns int
	// BackoffMin and BackoffMax bound the wait between reconnect attempts
	// (nbd.ClientOptions). 0: 100 ms and 5 s.
	BackoffMin, BackoffMax time.Duration
	// StartWait is how long OpenNBD waits for a server it cannot reach
	// at all (nbd.ClientOptions.StartWait). 0: it fails at once.
	StartWait time.Duration
	Logger    *slog.Logger
}

func (o NBDOptions) client() nbd.ClientOptions {
	return nbd.ClientOptions{Timeout: o.Timeout, BackoffMin: o.BackoffMin, BackoffMax: o.BackoffMax, StartWait: o.StartWait, Logger: o.Logger}
}

const defaultNBDConns = 4

// ErrNoFlush marks an NBD server refused for not offering NBD_CMD_FLUSH.
var ErrNoFlush = errors.New("blockdev: the NBD server offers no flush")

// IsURI reports whether name is an NBD URI rather than a path.
func IsURI(name string) bool { return nbd.IsURI(name) }

// OpenNBD connects to the export uri names. Its errors do not repeat the
// URI: the caller names the device.
func OpenNBD(ctx context.Context, uri string, opts NBDOptions) (*NBD, error) {
	c, t, err := nbd.DialURI(ctx, uri, opts.client())
	if err != nil {
		return nil, err
	}
	info := c.Info()
	var refuse error
	switch {
	case info.MinBlock > 512:
		refuse = fmt.Errorf("the server's minimum block size is %d bytes; writeboost writes 512-byte sectors", info.MinBlock)
	case !opts.ReadOnly && info.Has(nbd.FlagReadOnly):
		refuse = fmt.Errorf("the export is read-only: %w", ErrReadOnly)
	case !opts.ReadOnly && !info.Has(nbd.FlagSendFlush) && !opts.NoFlushOK:
		refuse = fmt.Errorf("%w, so data written back could still be lost in its volatile cache; if the export has none (every write is durable once acknowledged), say so to accept it", ErrNoFlush)
	}
	if refuse != nil {
		c.Close()
		return nil, refuse
	}
	d := &NBD{cs: []*nbd.Client{c}, uri: t.URI}
	n := opts.Conns
	if n <= 0 {
		n = defaultNBDConns
	}
	if !info.Has(nbd.FlagCanMultiConn) {
		n = 1
	}
	for len(d.cs) < n {
		more, _, err := nbd.DialURI(ctx, uri, opts.client())
		if err == nil && more.Info() != info {
			more.Close()
			err = fmt.Errorf("the export changed between connections: %+v, then %+v", info, more.Info())
		}
		if err != nil {
			if opts.Logger != nil {
				opts.Logger.Warn("NBD backing device: fewer connections than asked", "uri", t.URI, "conns", len(d.cs), "err", err)
			}
			break
		}
		d.cs = append(d.cs, more)
	}
	return d, nil
}

// pick is the connection for the next request.
func (d *NBD) pick() *nbd.Client {
	return d.cs[d.next.Add(1)%uint64(len(d.cs))]
}

// Conns is how many connections are open.
func (d *NBD) Conns() int { return len(d.cs) }

// URI names the export, without TLS parameters.
func (d *NBD) URI() string { return d.uri }

// IOEngine names the path the device's I/O takes, as File's does: "nbd",
// requests to the server over its connections.
func (d *NBD) IOEngine() string { return "nbd" }

// Size is the export's size.
func (d *NBD) Size() int64 { return d.cs[0].Info().Size }

// has reports whether the server offers every flag in f.
func (d *NBD) has(f uint16) bool { return d.cs[0].Info().Has(f) }

// Reachable reports whether every connection is up; if not, why one failed.
func (d *NBD) Reachable() (bool, error) {
	for _, c := range d.cs {
		if ok, why := c.Connected(); !ok {
			return false, why
		}
	}
	return true, nil
}

func (d *NBD) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.pick().ReadAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *NBD) WriteAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.pick().WriteAt(p, off, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAtFUA is a FUA write where the server offers it, else a write and
// a flush.
func (d *NBD) WriteAtFUA(p []byte, off int64) (int, error) {
	if !d.has(nbd.FlagSendFUA) {
		n, err := d.WriteAt(p, off)
		if err != nil {
			return n, err
		}
		return n, d.Sync()
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.pick().WriteAt(p, off, true); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync is NBD_CMD_FLUSH; nothing on a server without it (accepted with
// NoFlushOK).
func (d *NBD) Sync() error {
	if d.closed.Load() {
		return ErrClosed
	}
	if !d.has(nbd.FlagSendFlush) {
		return nil
	}
	errs := make([]error, len(d.cs))
	var wg sync.WaitGroup
	for i, c := range d.cs {
		wg.Go(func() { errs[i] = c.Flush() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("nbd flush %s: %w", d.uri, err)
	}
	return nil
}

// Discard is NBD_CMD_TRIM; ErrNotSupported where the server lacks it.
func (d *NBD) Discard(off, length int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if !d.has(nbd.FlagSendTrim) {
		return fmt.Errorf("%s: trim: %w", d.uri, ErrNotSupported)
	}
	return d.pick().Trim(off, length)
}

// Close disconnects; requests still waiting fail.
func (d *NBD) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	for _, c := range d.cs {
		c.Close()
	}
	return nil
}
