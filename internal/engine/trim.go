package engine

import (
	"errors"
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// Trim drops the cached copies of the whole 4 KiB blocks inside
// [off, off+length) and discards the sector-aligned part of the range on
// the backing device. See the package comment for what a trimmed range
// reads after a crash.
func (v *Volume) Trim(off, length int64) error {
	if err := v.checkRange(off, length); err != nil {
		return err
	}
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	firstBlock := (off + layout.BlockSize - 1) >> layout.BlockShift
	endBlock := (off + length) >> layout.BlockShift
	v.mu.Lock()
	for b := firstBlock; b < endBlock; b++ {
		v.mu.rc.cancelLocked(uint64(b))
		v.mu.idx.remove(uint64(b))
	}
	v.mu.Unlock()
	start := (off + layout.SectorSize - 1) &^ (layout.SectorSize - 1)
	end := (off + length) &^ (layout.SectorSize - 1)
	if end <= start {
		return nil
	}
	if err := v.backing.Discard(start, end-start); err != nil {
		if errors.Is(err, blockdev.ErrNotSupported) {
			return nil // discard is advisory
		}
		v.stats.backingWriteErrors.Add(1)
		return fmt.Errorf("engine: trim: discard backing device %d bytes at %d: %w", end-start, start, err)
	}
	return nil
}

// zeroChunk bounds the zero buffer of WriteZeroes.
const zeroChunk = 1 << 20

// WriteZeroes writes zeros over [off, off+length) through the log, like
// any write: no replay can bring back what was there before, and with fua
// the zeros are durable on return.
func (v *Volume) WriteZeroes(off, length int64, fua bool) error {
	if err := v.checkRange(off, length); err != nil {
		return err
	}
	zero := blockdev.AlignedBuffer(int(min(length, zeroChunk)))
	for done := int64(0); done < length; {
		n := min(length-done, zeroChunk)
		if err := v.WriteAt(zero[:n], off+done, false); err != nil {
			return err
		}
		done += n
	}
	if fua {
		return v.Flush()
	}
	return nil
}
