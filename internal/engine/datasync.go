package engine

import "context"

// dataSynchronizer is the daemon that makes everything written durable
// every sync_data_interval seconds, as if a FLUSH had come (cf.
// data_synchronizer_proc); 0 disables it.
//
// Owns: nothing; Flush does the work. Woken by: a one-second ticker.
// Promises on exit: no flush of its own in flight.
func (v *Volume) dataSynchronizer(ctx context.Context) {
	tickEvery(ctx, v.tun.syncDataInterval, func() {
		if err := v.beginOp(); err != nil {
			return // closing: Close flushes anyway
		}
		defer v.endOp()
		if err := v.flush(false); err != nil {
			v.log.Warn("periodic data sync failed", "err", err)
		}
	})
}
