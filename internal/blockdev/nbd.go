package blockdev

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
// are many at once on one connection; a dropped connection is redialled and
// its requests sent again (nbd.Client). Sync is NBD_CMD_FLUSH, Discard is
// NBD_CMD_TRIM where the server offers it, and WriteAtFUA a write with
// NBD_CMD_FLAG_FUA (or a write and a flush).
//
// NB: nothing here is exclusive: another client of the same export is not
// seen, unlike File's locks.
type NBD struct {
	c      *nbd.Client
	uri    string // without TLS parameters
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
	Logger    *slog.Logger
}

// ErrNoFlush marks an NBD server refused for not offering NBD_CMD_FLUSH.
var ErrNoFlush = errors.New("blockdev: the NBD server offers no flush")

// IsURI reports whether name is an NBD URI rather than a path.
func IsURI(name string) bool { return nbd.IsURI(name) }

// OpenNBD connects to the export uri names.
func OpenNBD(ctx context.Context, uri string, opts NBDOptions) (*NBD, error) {
	c, t, err := nbd.DialURI(ctx, uri, nbd.ClientOptions{Timeout: opts.Timeout, Logger: opts.Logger})
	if err != nil {
		return nil, err
	}
	info := c.Info()
	var refuse error
	switch {
	case info.MinBlock > 512:
		refuse = fmt.Errorf("%s: the server's minimum block size is %d bytes; writeboost writes 512-byte sectors", t.URI, info.MinBlock)
	case !opts.ReadOnly && info.Has(nbd.FlagReadOnly):
		refuse = fmt.Errorf("%s: the export is read-only: %w", t.URI, ErrReadOnly)
	case !opts.ReadOnly && !info.Has(nbd.FlagSendFlush) && !opts.NoFlushOK:
		refuse = fmt.Errorf("%s: %w, so data written back could still be lost in its volatile cache; if the export has none (every write is durable once acknowledged), say so to accept it", t.URI, ErrNoFlush)
	}
	if refuse != nil {
		c.Close()
		return nil, refuse
	}
	return &NBD{c: c, uri: t.URI}, nil
}

// URI names the export, without TLS parameters.
func (d *NBD) URI() string { return d.uri }

// Size is the export's size.
func (d *NBD) Size() int64 { return d.c.Info().Size }

// Reachable reports whether the connection is up; if not, why it failed.
func (d *NBD) Reachable() (bool, error) { return d.c.Connected() }

func (d *NBD) ReadAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.c.ReadAt(p, off); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (d *NBD) WriteAt(p []byte, off int64) (int, error) {
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.c.WriteAt(p, off, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAtFUA is a FUA write where the server offers it, else a write and
// a flush.
func (d *NBD) WriteAtFUA(p []byte, off int64) (int, error) {
	if !d.c.Info().Has(nbd.FlagSendFUA) {
		n, err := d.WriteAt(p, off)
		if err != nil {
			return n, err
		}
		return n, d.Sync()
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if err := d.c.WriteAt(p, off, true); err != nil {
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
	if !d.c.Info().Has(nbd.FlagSendFlush) {
		return nil
	}
	if err := d.c.Flush(); err != nil {
		return fmt.Errorf("nbd flush %s: %w", d.uri, err)
	}
	return nil
}

// Discard is NBD_CMD_TRIM; ErrNotSupported where the server lacks it.
func (d *NBD) Discard(off, length int64) error {
	if d.closed.Load() {
		return ErrClosed
	}
	if !d.c.Info().Has(nbd.FlagSendTrim) {
		return fmt.Errorf("%s: trim: %w", d.uri, ErrNotSupported)
	}
	return d.c.Trim(off, length)
}

// Close disconnects; requests still waiting fail.
func (d *NBD) Close() error {
	if d.closed.Swap(true) {
		return nil
	}
	return d.c.Close()
}
