package engine

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
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
// of that block, which start at sector first; at is dst's offset in the
// request).
type cacheRead struct {
	slot  uint64
	i     int
	mask  uint8
	first int
	at    int
	dst   []byte
}

// readPiece is one device read of a request: a run of consecutive data
// slots of one ring slot (creads[k:k+n]) or a run of backing sectors.
type readPiece struct {
	cache bool
	off   int64  // backing: device byte offset
	dst   []byte // where the device read lands
	k, n  int    // cache: the blocks of creads it covers
	// bounce: the run is not whole blocks laid out contiguously in the
	// request, so it is read into a scratch buffer and scattered.
	bounce bool
}

// readPlan is the per-request state of readSectors, pooled so that a read
// hit allocates nothing.
type readPlan struct {
	creads []cacheRead
	runs   [][2]int64 // backing sector ranges [start, end)
	cells  []*rcCell
	pieces []readPiece
	errs   []error
	wg     sync.WaitGroup
	// An asynchronous read (ReadAtAsync): the pieces not yet complete,
	// plus one while they are being started, and whom to tell.
	left atomic.Int32
	done func(error)
}

var readPlans = sync.Pool{New: func() any { return new(readPlan) }}

func (pl *readPlan) addBacking(sector int64, n int) {
	if k := len(pl.runs) - 1; k >= 0 && pl.runs[k][1] == sector {
		pl.runs[k][1] += int64(n)
		return
	}
	pl.runs = append(pl.runs, [2]int64{sector, sector + int64(n)})
}

func (pl *readPlan) release() {
	clear(pl.creads) // drop references to request buffers
	clear(pl.cells)
	clear(pl.pieces)
	clear(pl.errs)
	pl.creads, pl.runs, pl.cells, pl.pieces, pl.errs = pl.creads[:0], pl.runs[:0], pl.cells[:0], pl.pieces[:0], pl.errs[:0]
	pl.done = nil
	readPlans.Put(pl)
}

// maxReadPieces bounds the device reads of one request in flight at once.
const maxReadPieces = 8

// readSectors reads a sector-aligned range. Under mu it plans, per sector,
// the newest source (cf. process_read): a rambuf (copied right away), the
// cache device (the slot is pinned so it cannot be reused meanwhile) or
// the backing device (adjacent sectors merged into one read). The device
// reads run without the lock: one read per run of consecutive data slots
// of a segment and per run of backing sectors, the independent ones
// concurrently.
func (v *Volume) readSectors(p []byte, off int64) error {
	pl := v.planRead(p, off)
	return v.finishRead(pl, v.readPieces(pl))
}

// planRead plans a sector-aligned read: under mu, per sector, the newest
// source; the RAM buffer's sectors are copied right away, the slots of
// cache blocks pinned, then the device reads are laid out (planPieces).
func (v *Volume) planRead(p []byte, off int64) *readPlan {
	pl := readPlans.Get().(*readPlan)
	v.mu.Lock()
	threshold := v.tun.get(vocab.ReadCacheThreshold)
	for q, o := p, off; len(q) > 0; {
		block := uint64(o) >> layout.BlockShift
		first := int(o>>layout.SectorShift) & (layout.SectorsPerBlock - 1)
		n := min(layout.SectorsPerBlock-first, len(q)>>layout.SectorShift)
		mask := sectorMask(first, n)
		chunk := q[:n<<layout.SectorShift]
		base := int64(block) * layout.SectorsPerBlock
		pos, found := v.mu.idx.lookup(block)
		if !found {
			v.stats.inc(false, false, false, mask == layout.DirtyFull)
			pl.addBacking(base+int64(first), n)
			if mask == layout.DirtyFull && threshold > 0 {
				if c := v.mu.rc.reserveLocked(block, threshold); c != nil {
					c.dst = chunk
					pl.cells = append(pl.cells, c)
				}
			}
		} else {
			slot := slotOfPos(pos)
			rb := v.mu.slotRB[slot]
			v.stats.inc(false, true, rb != nil && rb == v.mu.open, mask == layout.DirtyFull)
			valid := v.mu.idx.dirty[pos]
			if valid == 0 {
				valid = layout.DirtyFull // a clean copy is a full block
			}
			fromCache := mask & valid
			if rb != nil {
				src := rb.data(idxOfPos(pos))
				copyBlockSectors(chunk, first, src, fromCache)
			} else if fromCache != 0 {
				v.mu.pins[slot]++
				pl.creads = append(pl.creads, cacheRead{slot: slot, i: idxOfPos(pos), mask: fromCache, first: first, at: int(o - off), dst: chunk})
			}
			// The other sectors are not in the cache: the backing device
			// has them.
			if fromCache != mask {
				for j := first; j < first+n; j++ {
					if fromCache&(1<<j) == 0 {
						pl.addBacking(base+int64(j), 1)
					}
				}
			}
		}
		q = q[n<<layout.SectorShift:]
		o += int64(n) << layout.SectorShift
	}
	v.mu.Unlock()
	pl.planPieces(p, off)
	return pl
}

// finishRead ends a planned read whose device reads are over (err is
// their first error): it unpins the slots, fills the read cache cells and
// releases the plan.
func (v *Volume) finishRead(pl *readPlan, err error) error {
	if len(pl.creads) > 0 {
		v.mu.Lock()
		for _, r := range pl.creads {
			v.unpinLocked(r.slot)
		}
		v.mu.Unlock()
	}
	if len(pl.cells) > 0 {
		v.mu.rc.fill(v, pl.cells, err == nil)
	}
	pl.release()
	return err
}

// ReadAtAsync is ReadAt for a caller that does not wait: done gets its
// result exactly once and must not block. It runs on the calling
// goroutine, before ReadAtAsync returns, when the RAM buffers held every
// sector; from the cache device's completions (the reads may wait, queued,
// for Unplug) when only whole cache
// blocks are read and the device reads asynchronously (io_uring: no
// goroutine waits at all); otherwise from a goroutine of its own, which
// the volume's operation count ties to Close like any request.
func (v *Volume) ReadAtAsync(p []byte, off int64, done func(error)) {
	if err := v.checkRange(off, int64(len(p))); err != nil {
		done(err)
		return
	}
	if off%layout.SectorSize != 0 || len(p)%layout.SectorSize != 0 || len(p) == 0 {
		go func() { done(v.ReadAt(p, off)) }()
		return
	}
	if err := v.beginOp(); err != nil {
		done(err)
		return
	}
	pl := v.planRead(p, off)
	if len(pl.pieces) == 0 {
		err := v.finishRead(pl, nil)
		v.endOp()
		done(err)
		return
	}
	if ar, ok := v.cache.(blockdev.AsyncReader); ok && pl.cacheOnly() {
		v.readAsync(pl, ar, done)
		return
	}
	go func() {
		err := v.finishRead(pl, v.readPieces(pl))
		v.endOp()
		done(err)
	}()
}

// Unplug submits the cache device reads ReadAtAsync queued: the caller of
// ReadAtAsync must call it before it waits for anything, the volume
// included (a queued read pins its segment's ring slot).
func (v *Volume) Unplug() {
	if ar, ok := v.cache.(blockdev.AsyncReader); ok {
		ar.Unplug()
	}
}

// sizeErrs makes pl.errs one error per piece.
func (pl *readPlan) sizeErrs() {
	if cap(pl.errs) < len(pl.pieces) {
		pl.errs = make([]error, len(pl.pieces))
	}
	pl.errs = pl.errs[:len(pl.pieces)]
}

// cacheOnly reports whether every device read of the plan is cache blocks
// read straight into the request.
func (pl *readPlan) cacheOnly() bool {
	if len(pl.cells) > 0 {
		return false
	}
	for _, pc := range pl.pieces {
		if !pc.cache || pc.bounce {
			return false
		}
	}
	return true
}

// readAsync starts the cache reads of a cacheOnly plan; the last to
// complete finishes the read and calls done. A read the device declines
// to start is done synchronously here.
func (v *Volume) readAsync(pl *readPlan, ar blockdev.AsyncReader, done func(error)) {
	n := len(pl.pieces)
	pl.sizeErrs()
	pl.left.Store(int32(n) + 1) // +1: ours, until every read is started
	pl.done = done
	for j := range pl.pieces {
		pc := &pl.pieces[j]
		r := pl.creads[pc.k]
		if ar.ReadAtAsync(pc.dst, v.geo.DataOffset(r.slot, r.i), pl.pieceDone(v, j)) {
			continue
		}
		ar.Unplug() // we are about to wait
		pl.errs[j] = v.readPiece(pl, pc)
		pl.settle(v)
	}
	pl.settle(v)
}

// pieceDone returns the completion of piece j of an asynchronous read.
func (pl *readPlan) pieceDone(v *Volume, j int) func(error) {
	return func(err error) {
		if err != nil {
			r := pl.creads[pl.pieces[j].k]
			pl.errs[j] = v.cacheReadFailed(err, r.slot, r.i, pl.pieces[j].n)
		}
		pl.settle(v)
	}
}

// settle counts one piece (or the starter) of an asynchronous read off;
// the last one finishes the read.
func (pl *readPlan) settle(v *Volume) {
	if pl.left.Add(-1) != 0 {
		return
	}
	done := pl.done
	err := v.finishRead(pl, firstErr(pl.errs...))
	v.endOp()
	done(err)
}

// planPieces turns the planned cache blocks and backing runs into device
// reads. A run of cache blocks that are whole and adjacent in the request
// (a sequential read of data written sequentially) is read straight into
// the request; others go through a scratch buffer.
func (pl *readPlan) planPieces(p []byte, off int64) {
	cr := pl.creads
	for k := 0; k < len(cr); {
		r := cr[k]
		n := 1
		direct := r.mask == layout.DirtyFull
		for k+n < len(cr) && cr[k+n].slot == r.slot && cr[k+n].i == r.i+n {
			c := cr[k+n]
			direct = direct && c.mask == layout.DirtyFull && c.at == r.at+n*layout.BlockSize
			n++
		}
		pc := readPiece{cache: true, k: k, n: n}
		if direct {
			pc.dst = p[r.at : r.at+n*layout.BlockSize]
		} else {
			pc.bounce = true
		}
		pl.pieces = append(pl.pieces, pc)
		k += n
	}
	for _, r := range pl.runs {
		at := r[0] << layout.SectorShift
		pl.pieces = append(pl.pieces, readPiece{off: at, dst: p[at-off : (r[1]<<layout.SectorShift)-off]})
	}
}

// readPieces runs the device reads of a plan: the first on the calling
// goroutine, the others on goroutines of their own, at most maxReadPieces
// at once. It returns the error of the first failed piece in plan order,
// after every read has finished (the pins may be dropped then).
func (v *Volume) readPieces(pl *readPlan) error {
	switch len(pl.pieces) {
	case 0:
		return nil
	case 1:
		return v.readPiece(pl, &pl.pieces[0])
	}
	pl.sizeErrs()
	// Pieces beyond the bound are taken in turn by the goroutines: each
	// reads piece g, g+w, g+2w...
	w := min(len(pl.pieces), maxReadPieces)
	pl.wg.Add(w - 1)
	for g := 1; g < w; g++ {
		go func() {
			defer pl.wg.Done()
			for j := g; j < len(pl.pieces); j += w {
				pl.errs[j] = v.readPiece(pl, &pl.pieces[j])
			}
		}()
	}
	for j := 0; j < len(pl.pieces); j += w {
		pl.errs[j] = v.readPiece(pl, &pl.pieces[j])
	}
	pl.wg.Wait()
	return firstErr(pl.errs...)
}

// scratch holds aligned buffers for cache runs that cannot be read
// straight into the request: one block, or a whole segment's data slots.
var scratch = [2]sync.Pool{
	{New: func() any { b := blockdev.AlignedBuffer(layout.BlockSize); return &b }},
	{New: func() any { b := blockdev.AlignedBuffer(layout.NrCachesPerSegment * layout.BlockSize); return &b }},
}

// readPiece does one device read of a plan.
func (v *Volume) readPiece(pl *readPlan, pc *readPiece) error {
	if !pc.cache {
		if _, err := v.backing.ReadAt(pc.dst, pc.off); err != nil {
			v.stats.backingReadErrors.Add(1)
			return fmt.Errorf("engine: read backing device at %d: %w", pc.off, err)
		}
		return nil
	}
	dst := pc.dst
	var pool *sync.Pool
	var buf *[]byte
	if pc.bounce {
		pool = &scratch[0]
		if pc.n > 1 {
			pool = &scratch[1]
		}
		buf = pool.Get().(*[]byte)
		defer pool.Put(buf)
		dst = (*buf)[:pc.n*layout.BlockSize]
	}
	r := pl.creads[pc.k]
	if err := v.readCacheBlocks(dst, r.slot, r.i); err != nil {
		return err
	}
	if pc.bounce {
		for j, c := range pl.creads[pc.k : pc.k+pc.n] {
			copyBlockSectors(c.dst, c.first, dst[j*layout.BlockSize:(j+1)*layout.BlockSize], c.mask)
		}
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
