package engine

import (
	"context"
	"time"

	"github.com/writeboost/writeboost/internal/vocab"
)

// modulator is the daemon that decides whether writeback may run (cf.
// modulator_proc): once per interval it measures the backing device's
// utilisation from the engine's own I/O timing and allows writeback only
// while it is below writeback_threshold percent; a threshold of 0 never
// allows it (writeback then runs only when forced: a full ring, or
// drop_caches). It also samples the writeback rate for Status.
//
// Owns: v.mu.allowWB, v.utilPercent, v.wbRate. Woken by: its ticker.
// Promises on exit (ctx cancelled): nothing pending.
func (v *Volume) modulator(ctx context.Context) {
	t := time.NewTicker(v.modulatorInterval)
	defer t.Stop()
	lastBusy := v.backing.busyTime()
	lastBytes := v.stats.writebackBytes.Load()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		busy := v.backing.busyTime()
		bytes := v.stats.writebackBytes.Load()
		elapsed := now.Sub(last)
		if elapsed <= 0 {
			continue
		}
		util := int64(100 * (busy - lastBusy) / elapsed)
		rate := int64(float64(bytes-lastBytes) / elapsed.Seconds())
		last, lastBusy, lastBytes = now, busy, bytes
		th := v.tun.get(vocab.WritebackThreshold)
		allow := th > 0 && util < th
		v.stats.utilPercent.Store(min(util, 100))
		v.stats.writebackRate.Store(rate)
		v.mu.Lock()
		if allow != v.mu.allowWB {
			v.mu.allowWB = allow
			v.cond.Broadcast()
		}
		v.mu.Unlock()
	}
}
