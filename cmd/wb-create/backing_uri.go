package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// NetBacking are the flags for a BACKING given as an NBD URI. Embedded in
// CLI.
type NetBacking struct {
	BackingTimeout   time.Duration `name:"backing-timeout" default:"30s" help:"With an NBD URI as BACKING: how long one request to its server may take, reconnecting included, before it fails with EIO (a read of uncached data; writeback retries); also how long the start waits for a server it cannot reach at all (nothing listening yet, no route)."`
	BackingNoFlushOK bool          `name:"backing-no-flush-ok" help:"With an NBD URI as BACKING: accept a server that offers no flush (NBD_CMD_FLUSH), because its export has no volatile write cache. Without it such a server is refused: data written back could still be lost there."`
}

// netBacking is the process's backing device when it is on the network
// (one volume per process), for the status to say whether it is reachable.
var netBacking atomic.Pointer[blockdev.NBD]

// backingUnreachable is why the network backing device cannot be reached
// now; "" when it can, or is not on the network.
func backingUnreachable() string {
	d := netBacking.Load()
	if d == nil {
		return ""
	}
	if ok, why := d.Reachable(); !ok {
		if why == nil {
			return "reconnecting"
		}
		return why.Error()
	}
	return ""
}

// openNetDevices opens a BACKING that is an NBD URI, and CACHE, then runs
// the refusals that read them. Of openDevices' rules, sharing storage
// cannot happen (a URI never names a local cache device) and the
// exclusive open applies to CACHE only: NBD has no lock on an export.
func (cli *CLI) openNetDevices(ctx context.Context, log *slog.Logger) (blockdev.Device, *blockdev.File, error) {
	cache, err := blockdev.OpenFile(cli.Cache, cli.cacheOptions(log))
	if err != nil {
		return nil, nil, openError(ctx, "cache device", cli.Cache, err)
	}
	backing, err := blockdev.OpenNBD(ctx, cli.Backing, blockdev.NBDOptions{
		Timeout: cli.BackingTimeout, NoFlushOK: cli.BackingNoFlushOK, StartWait: cli.BackingTimeout, Logger: log})
	if errors.Is(err, blockdev.ErrNoFlush) {
		err = fmt.Errorf("%w (--backing-no-flush-ok)", err)
	}
	if err != nil {
		cache.Close()
		return nil, nil, fmt.Errorf("backing device %s: %w", cli.Backing, err)
	}
	log.Info("backing device on the network", "uri", backing.URI(), "size", backing.Size(), "conns", backing.Conns())
	netBacking.Store(backing)
	if err := cli.refuse(ctx, backing, cache, log); err != nil {
		cache.Close()
		backing.Close()
		return nil, nil, err
	}
	return backing, cache, nil
}
