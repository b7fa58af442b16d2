package engine

import (
	"context"
	"time"

	"github.com/writeboost/writeboost/internal/vocab"
)

// sbRecordUpdater is the daemon that writes last_writeback_id into the
// superblock record every update_sb_record_interval seconds (cf.
// sb_record_updater_proc); 0 disables it. The interval is re-read every
// second, so a message takes effect at once.
//
// Owns: nothing but its timer; writeRecord serialises with Close through
// v.mu. Woken by: a one-second ticker. Promises on exit: no record write
// in flight.
func (v *Volume) sbRecordUpdater(ctx context.Context) {
	tickEvery(ctx, v.tun.reader(vocab.UpdateSBRecordInterval), func() {
		if err := v.writeRecord(); err != nil {
			v.log.Warn("superblock record update failed", "err", err)
		}
	})
}

// tickEvery calls fn every interval() seconds (0: never), checking once a
// second, until ctx is done.
func tickEvery(ctx context.Context, interval func() int64, fn func()) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			iv := interval()
			if iv <= 0 {
				last = now
				continue
			}
			if now.Sub(last) >= time.Duration(iv)*time.Second {
				fn()
				last = time.Now()
			}
		}
	}
}
