package engine

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/superblock"
	"github.com/writeboost/writeboost/internal/vocab"
)

// Format makes cache an empty cache device, durably (docs/format.md
// "Formatting"): until its last step the device reads as unformatted, so
// an interrupted Format is harmless. It formats whatever the device holds:
// the callers decide whether a dirty log may be lost.
func Format(cache blockdev.Device) error {
	if _, err := superblock.Format(cache, nil); err != nil {
		return fmt.Errorf("engine: format: %w", err)
	}
	return nil
}

// writeRecord writes last_writeback_id into the superblock record and
// syncs the cache device (cf. update_superblock_record). The value written
// never exceeds the newest durable segment: after a power cut the record
// must not claim segments the log lost, or replay would take newer
// segments with those ids for written back.
func (v *Volume) writeRecord() error {
	if v.tun.on(vocab.WriteAroundMode) {
		// Nothing is ever dirty, and the read-cache segments carry no
		// header: a record would point above every id on the device.
		return nil
	}
	v.mu.Lock()
	if v.mu.failErr != nil {
		v.mu.Unlock()
		return nil
	}
	if min(v.mu.lastWB, v.mu.lastWritten) <= v.mu.recorded {
		v.mu.Unlock()
		return nil
	}
	if err := v.syncCacheLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	r := min(v.mu.lastWB, v.mu.durable)
	if r <= v.mu.recorded {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	return v.recordBlock(r, nil)
}

// recordBlock writes the record block (record r, and clean when not nil),
// syncs the cache device and notes r as recorded. Caller does not hold mu.
func (v *Volume) recordBlock(r uint64, clean *layout.CleanStop) error {
	if err := superblock.WriteRecord(v.cache, layout.SuperRecord{LastWritebackSegmentID: r}, clean); err != nil {
		v.stats.cacheWriteErrors.Add(1)
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.syncCacheLocked(); err != nil {
		return err
	}
	v.mu.recorded = max(v.mu.recorded, r)
	v.checkInvariantsLocked()
	return nil
}

// writeCleanStop records a clean stop (docs/format.md "Clean stop"): the
// superblock record, as writeRecord would write it, and the clean-stop
// record naming the newest segment on the device, in one write of the
// record block, then a sync. Close calls it once everything is durable and
// the daemons are stopped; the next Open clears it before anything else
// is written. Not in write-around mode: its segments carry no header.
func (v *Volume) writeCleanStop() error {
	if v.tun.on(vocab.WriteAroundMode) {
		return nil
	}
	v.mu.Lock()
	if err := v.syncCacheLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	r := max(v.mu.recorded, min(v.mu.lastWB, v.mu.durable))
	last := v.mu.replayedLast // no segment written since Open
	if v.mu.lastWritten > v.mu.replayedLast {
		last = v.mu.lastWritten
	}
	v.mu.Unlock()
	return v.recordBlock(r, &layout.CleanStop{LastID: last})
}
