package engine

import (
	"cmp"
	"slices"

	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// Read caching (cf. read_cache_cells in dm-writeboost-target.c): a full
// 4 KiB read that misses the cache reserves a cell; when the read
// completes the cell keeps a copy of the data. Once every cell is used the
// batch is staged into the log as clean blocks (dirty bits 0), skipping
// cells that a write cancelled meanwhile and runs of consecutive blocks
// longer than read_cache_threshold (a sequential scan would only flush the
// cache). All fields are protected by Volume.mu.
type readCache struct {
	size          int
	cells         map[uint64]*rcCell // by cache block
	order         []*rcCell          // in reservation order
	filled        int
	lastBlock     uint64
	seqcount      int64
	overThreshold bool
}

type rcCell struct {
	block     uint64
	data      []byte // the block as read, once filled
	dst       []byte // the request's bytes, until filled
	cancelled bool
	filled    bool
}

func (rc *readCache) init(n int) {
	rc.size = n
	rc.cells = make(map[uint64]*rcCell)
	rc.lastBlock = noBlock
}

// reserveLocked returns a cell for a missed full-block read of block, or
// nil when every cell is taken or block already has one (cf.
// reserve_read_cache_cell and read_cache_cancel_foreground).
func (rc *readCache) reserveLocked(block uint64, threshold int64) *rcCell {
	if len(rc.cells) >= rc.size {
		return nil
	}
	if _, ok := rc.cells[block]; ok {
		return nil
	}
	c := &rcCell{block: block}
	rc.cells[block] = c
	rc.order = append(rc.order, c)
	if block == rc.lastBlock+1 {
		rc.seqcount++
	} else {
		rc.seqcount = 1
		rc.overThreshold = false
	}
	if rc.seqcount > threshold {
		if rc.overThreshold {
			c.cancelled = true
		} else {
			rc.overThreshold = true
			for k := len(rc.order) - 1; k >= 0 && int64(len(rc.order)-k) <= rc.seqcount; k-- {
				rc.order[k].cancelled = true
			}
		}
	}
	rc.lastBlock = block
	return c
}

// cancelLocked drops the cell of block, if any: a write makes its data
// stale (cf. might_cancel_read_cache_cell).
func (rc *readCache) cancelLocked(block uint64) {
	if len(rc.cells) == 0 {
		return
	}
	if c, ok := rc.cells[block]; ok {
		c.cancelled = true
	}
}

// fill records the data of the cells of one read (ok false: the read
// failed, nothing is cached) and stages the batch once every cell is used.
func (rc *readCache) fill(v *Volume, cells []*rcCell, ok bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, c := range cells {
		if !ok {
			c.cancelled = true
		}
		if !c.cancelled {
			c.data = append([]byte(nil), c.dst[:layout.BlockSize]...)
		}
		c.dst = nil
		c.filled = true
		rc.filled++
	}
	if rc.filled == rc.size {
		v.injectReadCacheLocked()
	}
}

// injectReadCacheLocked stages the filled cells into the open segment as
// clean blocks (cf. read_cache_proc, inject_read_cache). It never waits:
// when no segment is free the rest of the batch is dropped.
func (v *Volume) injectReadCacheLocked() {
	rc := &v.mu.rc
	threshold := v.tun.get(vocab.ReadCacheThreshold)
	sorted := slices.Clone(rc.order)
	slices.SortFunc(sorted, func(a, b *rcCell) int { return cmp.Compare(a.block, b.block) })
	// cf. read_cache_cancel_background: long sequential runs are not cached.
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j].block == sorted[j-1].block+1 {
			j++
		}
		if int64(j-i) > threshold {
			for k := i; k < j; k++ {
				sorted[k].cancelled = true
			}
		}
		i = j
	}
	for _, c := range sorted {
		if c.cancelled || c.data == nil {
			continue
		}
		if _, found := v.mu.idx.lookup(c.block); found {
			continue
		}
		if _, ok, _ := v.ensureOpenLocked(false); !ok {
			break
		}
		rb := v.mu.open
		i := rb.length
		copy(rb.data(i), c.data)
		rb.mbs[i] = layout.Metablock{Sector: c.block * layout.SectorsPerBlock, DirtyBits: 0}
		rb.length++
		v.mu.idx.insert(c.block, posOf(v.geo.SlotOf(rb.id), i), 0)
		v.stats.readCacheStaged.Add(1)
		if rb.length == layout.NrCachesPerSegment {
			v.sealLocked()
		}
	}
	rc.cells = make(map[uint64]*rcCell)
	rc.order = nil
	rc.filled = 0
}
