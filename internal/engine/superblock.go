package engine

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/layout"
)

// Format makes cache an empty cache device, durably (FORMAT.md
// "Formatting"): zero the first MiB, zero every segment header, sync, then
// write the magic into sector 0 and sync again. Until the last step the
// device reads as unformatted, so an interrupted Format is harmless. It
// formats whatever the device holds (the callers decide whether a dirty
// log may be lost); the one formatter is check.Format.
func Format(cache blockdev.Device) error {
	if _, err := check.Format(cache, check.FormatOptions{Force: true}); err != nil {
		return fmt.Errorf("engine: format: %w", err)
	}
	return nil
}

// recordBlockOffset is the 4 KiB block of the superblock holding the
// record in its last sector; the rest of that block is zero by format, so
// the record is written as one aligned block.
const recordBlockOffset = layout.SuperblockSize - layout.BlockSize

// writeRecord writes last_writeback_id into the superblock record and
// syncs the cache device (cf. update_superblock_record). The value written
// never exceeds the newest durable segment: after a power cut the record
// must not claim segments the log lost, or replay would take newer
// segments with those ids for written back.
func (v *Volume) writeRecord() error {
	if v.tun.writeAroundMode() {
		// Nothing is ever dirty, and the read-cache segments carry no
		// header: a record would point above every id on the device.
		return nil
	}
	v.mu.Lock()
	if v.failErr != nil {
		v.mu.Unlock()
		return nil
	}
	if min(v.lastWB, v.lastWritten) <= v.recorded {
		v.mu.Unlock()
		return nil
	}
	if err := v.syncCacheLocked(); err != nil {
		v.mu.Unlock()
		return err
	}
	r := min(v.lastWB, v.durable)
	if r <= v.recorded {
		v.mu.Unlock()
		return nil
	}
	v.mu.Unlock()
	buf := blockdev.AlignedBuffer(layout.BlockSize)
	layout.SuperRecord{LastWritebackSegmentID: r}.Encode(buf[layout.BlockSize-layout.SectorSize:])
	if _, err := v.cache.WriteAt(buf, recordBlockOffset); err != nil {
		v.stats.cacheWriteErrors.Add(1)
		return fmt.Errorf("write superblock record %d: %w", r, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.syncCacheLocked(); err != nil {
		return err
	}
	v.recorded = max(v.recorded, r)
	return nil
}
