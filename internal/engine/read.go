package engine

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// ReadAt fills p from byte offset off (any alignment).
func (v *Volume) ReadAt(p []byte, off int64) error {
	if err := v.checkRange(off, int64(len(p))); err != nil {
		return err
	}
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	if len(p) == 0 {
		return nil
	}
	if off%layout.SectorSize == 0 && len(p)%layout.SectorSize == 0 {
		return v.readSectors(p, off)
	}
	start := off &^ (layout.SectorSize - 1)
	end := (off + int64(len(p)) + layout.SectorSize - 1) &^ (layout.SectorSize - 1)
	buf := blockdev.AlignedBuffer(int(end - start))
	if err := v.readSectors(buf, start); err != nil {
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// cacheRead is one block to fetch from the cache device: the sectors of
// mask, from data slot i of ring slot slot, into dst (the request's bytes
// of that block, which start at sector first).
type cacheRead struct {
	slot  uint64
	i     int
	mask  uint8
	first int
	dst   []byte
}

// readSectors reads a sector-aligned range. Under mu it plans, per sector,
// the newest source (cf. process_read): a rambuf (copied right away), the
// cache device (the slot is pinned so it cannot be reused meanwhile) or
// the backing device (adjacent sectors merged into one read). The device
// reads run without the lock.
func (v *Volume) readSectors(p []byte, off int64) error {
	var creads []cacheRead
	var runs [][2]int64 // backing sector ranges [start, end)
	var cells []*rcCell
	addBacking := func(sector int64, n int) {
		if k := len(runs) - 1; k >= 0 && runs[k][1] == sector {
			runs[k][1] += int64(n)
			return
		}
		runs = append(runs, [2]int64{sector, sector + int64(n)})
	}
	v.mu.Lock()
	threshold := v.tun.readCacheThreshold()
	for q, o := p, off; len(q) > 0; {
		block := uint64(o) >> layout.BlockShift
		first := int(o>>layout.SectorShift) & (layout.SectorsPerBlock - 1)
		n := min(layout.SectorsPerBlock-first, len(q)>>layout.SectorShift)
		mask := sectorMask(first, n)
		chunk := q[:n<<layout.SectorShift]
		base := int64(block) * layout.SectorsPerBlock
		pos, found := v.idx.lookup(block)
		if !found {
			v.stats.inc(false, false, false, mask == layout.DirtyFull)
			addBacking(base+int64(first), n)
			if mask == layout.DirtyFull && threshold > 0 {
				if c := v.rc.reserveLocked(block, threshold); c != nil {
					c.dst = chunk
					cells = append(cells, c)
				}
			}
		} else {
			slot := slotOfPos(pos)
			rb := v.slotRB[slot]
			v.stats.inc(false, true, rb != nil && rb == v.open, mask == layout.DirtyFull)
			valid := v.idx.dirty[pos]
			if valid == 0 {
				valid = layout.DirtyFull // a clean copy is a full block
			}
			fromCache := mask & valid
			if rb != nil {
				src := rb.data(idxOfPos(pos))
				copyBlockSectors(chunk, first, src, fromCache)
			} else if fromCache != 0 {
				v.pins[slot]++
				creads = append(creads, cacheRead{slot: slot, i: idxOfPos(pos), mask: fromCache, first: first, dst: chunk})
			}
			// The other sectors are not in the cache: the backing device
			// has them.
			for j := first; j < first+n; j++ {
				if fromCache&(1<<j) == 0 {
					addBacking(base+int64(j), 1)
				}
			}
		}
		q = q[n<<layout.SectorShift:]
		o += int64(n) << layout.SectorShift
	}
	v.mu.Unlock()

	var err error
	if len(creads) > 0 {
		err = v.readCacheRuns(creads)
		v.mu.Lock()
		for _, r := range creads {
			v.unpinLocked(r.slot)
		}
		v.mu.Unlock()
	}
	if err == nil {
		for _, r := range runs {
			at := r[0] << layout.SectorShift
			dst := p[at-off : (r[1]<<layout.SectorShift)-off]
			if _, e := v.backing.ReadAt(dst, at); e != nil {
				v.stats.backingReadErrors.Add(1)
				err = fmt.Errorf("engine: read backing device at %d: %w", at, e)
				break
			}
		}
	}
	if len(cells) > 0 {
		v.rc.fill(v, cells, err == nil)
	}
	return err
}

// readCacheRuns fetches the planned cache blocks, one device read per run
// of consecutive data slots of one ring slot: a sequential read of data
// written sequentially costs a few large reads, not one per 4 KiB block.
func (v *Volume) readCacheRuns(creads []cacheRead) error {
	var buf []byte
	for k := 0; k < len(creads); {
		r := creads[k]
		n := 1
		for k+n < len(creads) && creads[k+n].slot == r.slot && creads[k+n].i == r.i+n {
			n++
		}
		if len(buf) < n*layout.BlockSize {
			buf = blockdev.AlignedBuffer(n * layout.BlockSize)
		}
		off := v.geo.DataOffset(r.slot, r.i)
		if _, err := v.cache.ReadAt(buf[:n*layout.BlockSize], off); err != nil {
			v.stats.cacheReadErrors.Add(1)
			return fmt.Errorf("read cache device at %d (ring slot %d, data slots %d..%d): %w", off, r.slot, r.i, r.i+n-1, err)
		}
		for j, c := range creads[k : k+n] {
			copyBlockSectors(c.dst, c.first, buf[j*layout.BlockSize:(j+1)*layout.BlockSize], c.mask)
		}
		k += n
	}
	return nil
}

// copyBlockSectors copies the sectors of mask from src (a whole block) to
// dst (the request's bytes of that block, starting at sector first).
func copyBlockSectors(dst []byte, first int, src []byte, mask uint8) {
	if mask == layout.DirtyFull {
		copy(dst[:layout.BlockSize], src)
		return
	}
	for j := 0; j < layout.SectorsPerBlock; j++ {
		if mask&(1<<j) == 0 {
			continue
		}
		d := (j - first) << layout.SectorShift
		s := j << layout.SectorShift
		copy(dst[d:d+layout.SectorSize], src[s:s+layout.SectorSize])
	}
}
