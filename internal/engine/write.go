package engine

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// checkRange refuses a request outside the volume.
func (v *Volume) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off > v.size || length > v.size-off {
		return fmt.Errorf("%w: %d bytes at %d, volume is %d bytes", ErrOutOfRange, length, off, v.size)
	}
	return nil
}

// WriteAt writes p at byte offset off (any alignment); with fua it returns
// only once the write, and every write acknowledged before it, is durable.
func (v *Volume) WriteAt(p []byte, off int64, fua bool) error {
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	var err error
	switch {
	case len(p) == 0:
	case off%layout.SectorSize != 0 || len(p)%layout.SectorSize != 0:
		err = v.writeUnaligned(p, off)
	default:
		err = v.writeSectors(p, off)
	}
	if err == nil && fua {
		v.stats.flushRequests.Add(1)
		err = v.flush()
	}
	return err
}

// WritesInline tells the NBD server (nbd.InlineWriter) that a write
// without FUA usually completes in memory, a copy into the open rambuf, so
// it may be served on the connection's reader goroutine. Not in
// write-around mode, where every write waits for the backing device.
func (v *Volume) WritesInline() bool { return !v.tun.on(vocab.WriteAroundMode) }

// writeUnaligned is a read-modify-write at sector granularity: the first
// and last sectors are read through the normal read path, merged, and the
// whole sector range written. rmwMu keeps two unaligned writes sharing a
// sector from writing back each other's stale bytes.
func (v *Volume) writeUnaligned(p []byte, off int64) error {
	v.rmwMu.Lock()
	defer v.rmwMu.Unlock()
	start := off &^ (layout.SectorSize - 1)
	end := (off + int64(len(p)) + layout.SectorSize - 1) &^ (layout.SectorSize - 1)
	buf := blockdev.AlignedBuffer(int(end - start))
	if err := v.readSectors(buf[:layout.SectorSize], start); err != nil {
		return err
	}
	if end-start > layout.SectorSize {
		if err := v.readSectors(buf[len(buf)-layout.SectorSize:], end-layout.SectorSize); err != nil {
			return err
		}
	}
	copy(buf[off-start:], p)
	return v.writeSectors(buf, start)
}

// writeSectors writes a sector-aligned range, split into cache blocks.
func (v *Volume) writeSectors(p []byte, off int64) error {
	if v.tun.on(vocab.WriteAroundMode) {
		return v.writeAround(p, off)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for len(p) > 0 {
		block := uint64(off) >> layout.BlockShift
		first := int(off>>layout.SectorShift) & (layout.SectorsPerBlock - 1)
		n := min(layout.SectorsPerBlock-first, len(p)>>layout.SectorShift)
		mask := sectorMask(first, n)
		if err := v.writeBlockLocked(block, first, mask, p[:n<<layout.SectorShift]); err != nil {
			return fmt.Errorf("engine: write block %d (sector %d): %w", block, block*layout.SectorsPerBlock, err)
		}
		p = p[n<<layout.SectorShift:]
		off += int64(n) << layout.SectorShift
	}
	return nil
}

// sectorMask has bits first..first+n-1 set (cf. to_mask).
func sectorMask(first, n int) uint8 { return uint8(((1 << n) - 1) << first) }

// copySectors copies the sectors of mask from src to dst, both whole blocks.
func copySectors(dst, src []byte, mask uint8) {
	if mask == layout.DirtyFull {
		copy(dst[:layout.BlockSize], src)
		return
	}
	for j := 0; j < layout.SectorsPerBlock; j++ {
		if mask&(1<<j) != 0 {
			o := j << layout.SectorShift
			copy(dst[o:o+layout.SectorSize], src[o:o+layout.SectorSize])
		}
	}
}

// writeBlockLocked puts the sectors of mask (data starts at sector first)
// of one cache block into the open rambuf (cf. do_process_write). A copy
// already in the open rambuf is updated in place; otherwise a new copy is
// appended, carrying over the dirty sectors of the previous copy that this
// write does not cover, so the index keeps one copy per block (cf.
// prepare_overwrite). Caller holds mu; it is released to wait for a
// segment or to read the previous copy from the cache device.
func (v *Volume) writeBlockLocked(block uint64, first int, mask uint8, data []byte) error {
	counted := false
	// old holds the previous copy read from the cache device, valid while
	// the index still maps block to oldPos in segment oldID.
	var old []byte
	var oldPos uint32
	var oldID uint64
	for {
		if _, _, err := v.ensureOpenLocked(true); err != nil {
			return err
		}
		v.mu.rc.cancelLocked(block)
		pos, found := v.mu.idx.lookup(block)
		var rb *rambuf
		if found {
			rb = v.mu.slotRB[slotOfPos(pos)]
		}
		if !counted {
			v.stats.inc(true, found, found && rb == v.mu.open, mask == layout.DirtyFull)
			counted = true
		}
		if found && rb == v.mu.open {
			i := idxOfPos(pos)
			copy(rb.data(i)[first<<layout.SectorShift:], data)
			d := v.mu.idx.dirty[pos] | mask
			v.mu.idx.setDirty(pos, d)
			rb.mbs[i].DirtyBits = d
			return nil
		}
		var carry uint8 // dirty sectors of the previous copy to keep
		var src []byte
		var oldDirty uint8
		if found {
			oldDirty = v.mu.idx.dirty[pos]
			carry = oldDirty &^ mask
		}
		if carry != 0 {
			slot := slotOfPos(pos)
			switch {
			case rb != nil: // sealed, still in RAM
				src = rb.data(idxOfPos(pos))
			case old != nil && oldPos == pos && oldID == v.mu.segIDs[slot]:
				src = old
			default:
				id := v.mu.segIDs[slot]
				v.mu.pins[slot]++
				v.mu.Unlock()
				buf := blockdev.AlignedBuffer(layout.BlockSize)
				err := v.readCacheBlocks(buf, slot, idxOfPos(pos))
				v.mu.Lock()
				v.unpinLocked(slot)
				if err != nil {
					return fmt.Errorf("merge with segment %d: %w", id, err)
				}
				old, oldPos, oldID = buf, pos, id
				continue // the world may have moved while unlocked
			}
		}
		rb = v.mu.open
		i := rb.length
		dst := rb.data(i)
		if carry != 0 {
			copySectors(dst, src, carry)
		}
		copy(dst[first<<layout.SectorShift:], data)
		v.appendLocked(rb, block, mask|carry, pos, found, oldDirty)
		return nil
	}
}

// appendLocked records block, whose data is already in the next data slot
// of the open rambuf rb, with dirty bits d: the previous copy at pos (when
// found, with dirty bits oldDirty) is superseded, the index points at the
// new one, and rb is sealed once full. Caller holds mu.
func (v *Volume) appendLocked(rb *rambuf, block uint64, d uint8, pos uint32, found bool, oldDirty uint8) {
	if found {
		v.supersedeLocked(pos, oldDirty, rb.id)
		v.mu.idx.remove(block)
	}
	i := rb.length
	rb.mbs[i] = layout.Metablock{Sector: block * layout.SectorsPerBlock, DirtyBits: d}
	rb.length++
	v.mu.idx.insert(block, posOf(v.geo.SlotOf(rb.id), i), d)
	if rb.length == layout.NrCachesPerSegment {
		v.sealLocked()
	}
}

// supersedeLocked notes that the copy at pos, with dirty bits dirty, is
// replaced by a newer copy in segment by (the open one). Until segment by
// is durable, the old copy may be its block's newest durable copy, so it
// stays owed to the backing device (the durable-copy rule, writeback.go).
// A clean copy is already there. Caller holds mu.
func (v *Volume) supersedeLocked(pos uint32, dirty uint8, by uint64) {
	if dirty == 0 {
		return
	}
	slot := slotOfPos(pos)
	v.mu.idx.superseded[pos] = dirty
	v.mu.supersededBy[slot] = max(v.mu.supersededBy[slot], by)
	v.checkInvariantsLocked()
}

// unpinLocked drops a reader's pin on a ring slot.
func (v *Volume) unpinLocked(slot uint64) {
	v.mu.pins[slot]--
	if v.mu.pins[slot] == 0 {
		v.cond.Broadcast()
	}
}

// readCacheBlocks fills buf (whole, aligned blocks) from the data slots of
// ring slot slot starting at i, in one read: sectors not valid in a copy
// are read too and ignored.
func (v *Volume) readCacheBlocks(buf []byte, slot uint64, i int) error {
	off := v.geo.DataOffset(slot, i)
	if _, err := v.cache.ReadAt(buf, off); err != nil {
		return v.cacheReadFailed(err, slot, i, len(buf)/layout.BlockSize)
	}
	return nil
}

// cacheReadFailed counts a failed read of the cache device and says which
// one it was: n blocks from data slot i of ring slot slot.
func (v *Volume) cacheReadFailed(err error, slot uint64, i, n int) error {
	v.stats.cacheReadErrors.Add(1)
	off := v.geo.DataOffset(slot, i)
	if n > 1 {
		return fmt.Errorf("read cache device at %d (ring slot %d, data slots %d..%d): %w", off, slot, i, i+n-1, err)
	}
	return fmt.Errorf("read cache device at %d (ring slot %d, data slot %d): %w", off, slot, i, err)
}

// writeAround sends a write straight to the backing device and invalidates
// cached copies (cf. process_write_wa). The invalidation is done before and
// after the backing write: a read that fetched the old data from the
// backing device meanwhile must not stage it in the read cache afterwards.
func (v *Volume) writeAround(p []byte, off int64) error {
	first := uint64(off) >> layout.BlockShift
	last := (uint64(off) + uint64(len(p)) - 1) >> layout.BlockShift
	v.mu.Lock()
	o := off
	for b := first; b <= last; b++ {
		end := min(int64(b+1)<<layout.BlockShift, off+int64(len(p)))
		pos, found := v.mu.idx.lookup(b)
		onBuf := found && v.mu.slotRB[slotOfPos(pos)] == v.mu.open && v.mu.open != nil
		v.stats.inc(true, found, onBuf, end-o == layout.BlockSize)
		o = end
		v.mu.rc.cancelLocked(b)
		v.mu.idx.remove(b)
	}
	v.mu.Unlock()
	_, err := v.backing.WriteAt(p, off)
	v.mu.Lock()
	defer v.mu.Unlock()
	for b := first; b <= last; b++ {
		v.mu.rc.cancelLocked(b)
		v.mu.idx.remove(b)
	}
	if err != nil {
		v.stats.backingWriteErrors.Add(1)
		return fmt.Errorf("engine: write-around to backing device at %d: %w", off, err)
	}
	v.mu.backingUnsynced = true
	return nil
}
