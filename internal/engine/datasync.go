package engine

import (
	"context"

	"github.com/writeboost/writeboost/internal/vocab"
)

// dataSynchronizer is the daemon that makes everything written durable
// every sync_data_interval seconds, as if a FLUSH had come (cf.
// data_synchronizer_proc); 0 disables it.
//
// Owns: nothing; Flush does the work. Woken by: a one-second ticker.
// Promises on exit: no flush of its own in flight.
func (v *Volume) dataSynchronizer(ctx context.Context) {
	tickEvery(ctx, v.tun.reader(vocab.SyncDataInterval), func() {
		// NB: not beginOp, which would block while Close holds opsMu and
		// waits for this goroutine. Closing: Close flushes anyway.
		if !v.opsMu.TryRLock() {
			return
		}
		defer v.opsMu.RUnlock()
		if v.closed.Load() {
			return
		}
		if err := v.flush(); err != nil {
			v.log.Warn("periodic data sync failed", "err", err)
		}
	})
}
