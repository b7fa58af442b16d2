package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
	"github.com/writeboost/writeboost/internal/vocab"
	"golang.org/x/sync/errgroup"
)

// maxWritebackBackoff caps the delay between retries of a failed batch.
const maxWritebackBackoff = 5 * time.Second

// The writeback planner's bounds (writebackDaemon, "Looking ahead").
const (
	// wbLookahead is how many segments beyond its batch the planner looks
	// at when it may (writebackLookaheadLocked): 224, so that a plan
	// spans at most 256 segments (128 MiB of log) with a kernel-sized
	// batch. Not a tunable: it moves no id and widens no batch.
	wbLookahead = 224
	// wbChunkBlocks bounds the cache blocks whose data a writeback stages
	// in RAM at once: a kernel-sized batch (32 segments of 127 blocks), so
	// that such a batch is still staged and written in one piece. A
	// larger plan streams: its blocks, in backing order, are read from
	// the cache device, staged and written chunk by chunk, and the backing
	// sync follows the last chunk.
	wbChunkBlocks = 32 * layout.NrCachesPerSegment
	// wbReadGap is the largest run of unneeded blocks (clean slots,
	// segment headers) a cache read covers to join two needed ones: the
	// copies of a dense plan lie all over its segments, and a few long
	// reads take less time than many short ones.
	wbReadGap = 32
	// wbReadMax bounds one cache read, in blocks (1 MiB). Each of the
	// sectorio.InFlight reads in flight has a buffer this size.
	wbReadMax = 256
)

// wbEntry is one cache block copy a writeback may write.
type wbEntry struct {
	block uint64
	pos   uint32
	dirty uint8
	seg   int // segment id - the batch's first id
	i     int // data slot
	// superseded: a copy a newer one replaced in the index, written back
	// because it may be its block's newest durable copy; its block is read
	// from the segment header.
	superseded bool
	// ahead: in a segment beyond the batch, which the planner looked at
	// (a live copy to write with the batch, or a superseded one that
	// writing a newer copy clears).
	ahead bool
}

// writebackDaemon writes dirty blocks back to the backing device, oldest
// segments first (cf. writeback_proc, writeback_segs).
//
// Owns: last_writeback_id (v.mu.lastWB) and all writes of cache data to the
// backing device, so they happen in segment order.
//
// Woken by: v.cond, when a segment is written to the cache device, when a
// writer needs a ring slot or DropCaches waits (v.mu.urgentWB), when the
// modulator allows writeback, or when stopping.
//
// A batch is up to nr_max_batched_writeback segments (fewer when sized by
// time): their dirty blocks are sorted by backing sector, read from the
// cache device (one read per run of nearby data slots), staged in a
// sectorio.Stage (adjacent sectors merged into large writes, issued in
// ascending order with up to sectorio.InFlight in flight), and the backing
// device synced; only then does last_writeback_id advance.
// A failed batch is retried with backoff, logged once per burst of
// failures, and never advances last_writeback_id.
//
// # Looking ahead
//
// A batch sorts only its own blocks: a region written densely in random
// order over more segments than a batch holds goes back as short runs
// with gaps that later batches fill, one request each. So when nothing is
// in a hurry for a free ring slot (DropCaches waits, or the modulator
// finds the backing device idle: writebackLookaheadLocked), the planner
// also looks at the live dirty copies of up to wbLookahead segments after
// the batch, and writes those that join, by adjacent backing sectors, a
// run holding a block the batch owes (planWriteback). The batch's writes
// grow longer, never more numerous; when only the modulator allows
// writeback (foreground load may go on), the bytes added are bounded too,
// by what the measured rate writes in writebackBatchTime, so a batch
// sized by time stays about that long. last_writeback_id still advances
// by the batch alone (the kernel's cap of 32 segments holds). A copy written ahead is
// marked clean at the batch's end like the batch's own, and the
// superseded copies of its block in the segments looked at lose their
// dirty bits: a newer copy is on the backing device and synced, and a
// later batch must not write an older one over it. After a crash the log
// still calls those segments dirty, and replay writes the same data again.
//
// Memory is bounded whatever a plan's size: the entries (a few words per
// block of at most 32 + wbLookahead segments, about 1.6 MiB) and
// wbBuffers (about 32 MiB): a plan is written in chunks of wbChunkBlocks
// blocks in backing order, each read (reads of up to 1 MiB in cache
// order, their buffers reused), staged and written before the next, with
// the backing sync after the last.
//
// # The durable-copy rule
//
// A block's newest durable copy stays dirty, for writeback and for what
// replay concludes, until a newer copy is durable: last_writeback_id
// passes a segment only once every block whose newest durable copy lies
// in it is on the backing device and synced there. Passing it lets the
// superblock record call the segment clean and lets its slot be reused;
// a crash before the newer copy is durable would then leave the flushed
// data nowhere (the kernel target loses it so, docs/design.md).
//
// So an overwrite does not simply forget the copy it replaces: when that
// copy was dirty and not in the open rambuf (it is, or may become,
// durable), idx.superseded keeps its dirty bits and supersededBy its
// slot's newest replacing segment (supersedeLocked). A batch writes such
// copies back too while that segment is not yet durable; once it is, the
// newer copy carries the data and the old one is skipped. Within a batch
// only the newest copy of a block is written (it holds every dirty sector
// of the older ones: an overwrite carries the dirty sectors it does not
// cover), so writes in flight never race for one sector, and later
// batches write newer copies over older ones. TRIM makes no copy and
// owes nothing: a trimmed block may read anything until rewritten.
//
// On exit (stopping or ctx cancelled) no backing write of it is in flight.
func (v *Volume) writebackDaemon(ctx context.Context) {
	var bufs wbBuffers
	failing := false
	backoff := v.writebackBackoff
	var rate float64      // bytes per second the last batches took, 0: not measured yet
	var lastLog time.Time // last "writeback still failing" line
	for {
		v.mu.Lock()
		for !v.mu.stopping && !(v.mu.lastWB < v.mu.lastWritten && (v.mu.urgentWB > 0 || v.mu.allowWB)) {
			v.cond.Wait()
		}
		if v.mu.stopping {
			v.mu.Unlock()
			return
		}
		from := v.mu.lastWB + 1
		if v.mu.segIDs[v.geo.SlotOf(from)] != from {
			// An id gap (ids the replay of a torn tail left unused): jump
			// to the oldest segment still in the ring.
			next := v.mu.lastWritten + 1
			for _, id := range v.mu.segIDs {
				if id >= from && id < next {
					next = id
				}
			}
			from = next
			if from > v.mu.lastWritten {
				v.mu.lastWB = v.mu.lastWritten
				v.checkInvariantsLocked()
				v.wakeWritersLocked()
				v.mu.Unlock()
				continue
			}
		}
		limit := min(from-1+uint64(v.tun.get(vocab.NrMaxBatchedWriteback)), v.mu.lastWritten)
		to := from
		var ents []wbEntry
		var bytes int64
		for id := from; id <= limit; id++ {
			// A batch is sized by time too: last_writeback_id moves only
			// after a whole batch, so on a slow disk a batch of 32
			// segments could outlast the time between two crashes and
			// never land. Until the rate is measured, one segment.
			if id > from && (rate == 0 || float64(bytes)/rate > v.writebackBatchTime.Seconds()) {
				break
			}
			to = id
			slot := v.geo.SlotOf(id)
			if v.mu.segIDs[slot] != id {
				continue // an id never written (skipped at replay)
			}
			// The durable-copy rule: superseded copies are owed while
			// their replacement is not durable.
			owed := v.mu.supersededBy[slot] > v.mu.durable
			for i := range layout.NrCachesPerSegment {
				pos := posOf(slot, i)
				switch {
				case v.mu.idx.keys[pos] != noBlock && v.mu.idx.dirty[pos] != 0:
					ents = append(ents, wbEntry{block: v.mu.idx.keys[pos], pos: pos, dirty: v.mu.idx.dirty[pos], seg: int(id - from), i: i})
				case owed && v.mu.idx.superseded[pos] != 0:
					ents = append(ents, wbEntry{pos: pos, dirty: v.mu.idx.superseded[pos], seg: int(id - from), i: i, superseded: true})
				default:
					continue
				}
				bytes += int64(bits.OnesCount8(ents[len(ents)-1].dirty)) * layout.SectorSize
			}
		}
		la := v.writebackLookaheadLocked()
		aheadBytes := int64(-1) // DropCaches waits: the plan may take all it finds
		if v.mu.drainWB == 0 {
			// The backing device is idle, but the batch stays about as
			// long as its time bound: what it writes ahead is bounded too.
			aheadBytes = int64(rate * v.writebackBatchTime.Seconds())
		}
		if la > 0 && len(ents) > 0 && aheadBytes != 0 {
			// Looking ahead: the copies of the segments after the batch,
			// for planWriteback to choose from.
			for id := to + 1; id <= min(to+uint64(la), v.mu.lastWritten); id++ {
				slot := v.geo.SlotOf(id)
				if v.mu.segIDs[slot] != id {
					continue
				}
				for i := range layout.NrCachesPerSegment {
					pos := posOf(slot, i)
					switch {
					case v.mu.idx.keys[pos] != noBlock && v.mu.idx.dirty[pos] != 0:
						ents = append(ents, wbEntry{block: v.mu.idx.keys[pos], pos: pos, dirty: v.mu.idx.dirty[pos], seg: int(id - from), i: i, ahead: true})
					case v.mu.idx.superseded[pos] != 0:
						ents = append(ents, wbEntry{pos: pos, dirty: v.mu.idx.superseded[pos], seg: int(id - from), i: i, superseded: true, ahead: true})
					}
				}
			}
		}
		v.mu.Unlock()
		v.stats.curBatch.Store(to - from + 1)

		start := time.Now()
		ents, clear, n, err := v.writebackBatch(ents, from, aheadBytes, &bufs)
		if err != nil {
			v.stats.writebackErrors.Add(1)
			v.mu.Lock()
			v.mu.wbErr = err
			if !failing {
				v.log.Warn("writeback failed, will retry", "segments", fmt.Sprintf("%d..%d", from, to), "err", err)
				failing = true
				v.mu.wbFailing = true
				v.mu.wbFailSince = time.Now()
				lastLog = time.Now()
				v.wakeWritersLocked()
			} else if time.Since(lastLog) >= spaceLogEvery {
				lastLog = time.Now()
				v.log.Warn("writeback still failing", "for", time.Since(v.mu.wbFailSince).Round(time.Second),
					"dirty_bytes", v.mu.idx.nrDirty*layout.BlockSize, "segments", fmt.Sprintf("%d..%d", from, to), "err", err)
			}
			v.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxWritebackBackoff)
			continue
		}
		if failing {
			v.log.Info("writeback recovered", "segments", fmt.Sprintf("%d..%d", from, to))
			failing = false
			v.mu.Lock()
			v.mu.wbFailing, v.mu.wbErr = false, nil
			v.mu.Unlock()
		}
		backoff = v.writebackBackoff
		elapsed := time.Since(start)
		v.stats.writebackBytes.Add(n)
		v.stats.writebackNanos.Add(int64(elapsed))
		v.stats.writebackBatches.Add(1)
		if n > 0 && elapsed > 0 {
			r := float64(n) / elapsed.Seconds()
			if rate == 0 {
				rate = r
			} else {
				rate = rate/2 + r/2
			}
		}

		v.mu.Lock()
		for _, pos := range clear {
			v.mu.idx.superseded[pos] = 0 // a newer copy is on the backing device
		}
		for _, e := range ents {
			if e.superseded {
				v.stats.supersededWritebacks.Add(1)
				continue
			}
			if v.mu.idx.keys[e.pos] != e.block {
				continue // trimmed or superseded meanwhile
			}
			if v.mu.idx.dirty[e.pos] == layout.DirtyFull {
				v.mu.idx.setDirty(e.pos, 0) // a clean full block: still a read hit
			} else {
				// A clean partial copy is useless: its other sectors are
				// not in the slot. The backing device has it all now.
				v.mu.idx.remove(e.block)
			}
		}
		v.mu.lastWB = to
		v.checkInvariantsLocked()
		v.wakeWritersLocked()
		v.mu.Unlock()
		if v.afterWriteback != nil {
			v.afterWriteback()
		}
	}
}

// wbBuffers are the writeback daemon's buffers, kept from one batch to
// the next: one header block, sectorio.InFlight read buffers of wbReadMax
// blocks (16 MiB) and a stage grown to at most wbChunkBlocks blocks (16
// MiB), whatever the size of a plan.
type wbBuffers struct {
	hdr   []byte
	reads [][]byte
	stage *sectorio.Stage
}

// writebackBatch writes a plan to the backing device and syncs it. ents
// are the batch's copies (segments from on) and those the planner looked
// at beyond it, in segment order. It returns the copies written (in block
// order, one per block), the positions of superseded copies that a newer
// copy written now makes no longer owed, and the bytes written. Copies
// from beyond the batch add at most aheadBytes (-1: no limit).
func (v *Volume) writebackBatch(ents []wbEntry, from uint64, aheadBytes int64, bufs *wbBuffers) ([]wbEntry, []uint32, int64, error) {
	if len(ents) == 0 {
		return ents, nil, 0, nil
	}
	if err := v.readSupersededBlocks(ents, from, bufs); err != nil {
		return nil, nil, 0, err
	}
	// Block order; the newest copy of a block last.
	slices.SortFunc(ents, func(a, b wbEntry) int {
		return cmp.Or(cmp.Compare(a.block, b.block), cmp.Compare(a.seg, b.seg))
	})
	write, clear := planWriteback(ents, aheadBytes)
	var n int64
	for k := 0; k < len(write); k += wbChunkBlocks {
		m, err := v.writeChunk(write[k:min(k+wbChunkBlocks, len(write))], bufs)
		if err != nil {
			return nil, nil, 0, err
		}
		n += m
	}
	if len(write) == 0 {
		return write, nil, 0, nil
	}
	if err := v.backing.Sync(); err != nil {
		v.stats.backingWriteErrors.Add(1)
		return nil, nil, 0, fmt.Errorf("sync backing device after writeback: %w", err)
	}
	return write, clear, n, nil
}

// readSupersededBlocks fills in the block of every superseded copy in
// ents (segment order) from its segment's header: one 4 KiB read per
// segment holding any.
func (v *Volume) readSupersededBlocks(ents []wbEntry, from uint64, bufs *wbBuffers) error {
	if bufs.hdr == nil {
		bufs.hdr = blockdev.AlignedBuffer(layout.BlockSize)
	}
	hdrSeg := -1
	for k := range ents {
		e := &ents[k]
		if !e.superseded {
			continue
		}
		id := from + uint64(e.seg)
		if e.seg != hdrSeg {
			off := v.geo.SegmentOffset(v.geo.SlotOf(id))
			if _, err := v.cache.ReadAt(bufs.hdr, off); err != nil {
				v.stats.cacheReadErrors.Add(1)
				return fmt.Errorf("read the header of segment %d for writeback at cache offset %d: %w", id, off, err)
			}
			hdrSeg = e.seg
		}
		mb := layout.MetablockAt(bufs.hdr, e.i)
		if got := layout.HeaderID(bufs.hdr); got != id || mb.Sector%layout.SectorsPerBlock != 0 || int64(mb.Sector) >= v.size>>layout.SectorShift {
			return fmt.Errorf("segment %d (header id %d), data slot %d: metablock names sector %d: the cache device changed under the engine", id, got, e.i, mb.Sector)
		}
		e.block = mb.Sector / layout.SectorsPerBlock
	}
	return nil
}

// planWriteback chooses, from ents sorted by block and then segment, the
// copies a writeback writes (block order) and the superseded copies that
// writing them clears (the rules are writebackDaemon's "Looking ahead"):
//
//   - Per block, the copies in the plan are the batch's (live, or
//     superseded and owed) and those beyond it (live, or superseded, owed
//     or not). The newest copy among them is written when it is live: it
//     is the block's newest and holds every dirty sector of the older
//     ones, which writing it clears. Else the block's live copy lies
//     beyond the plan (or the block was trimmed) and the batch's newest
//     copy is written, if the batch holds one, as without looking ahead.
//   - A copy the batch owes is always written. A live copy from beyond
//     the batch (owing nothing to it) is written only when it joins, by
//     adjacent backing sectors, a run that holds a copy the batch owes:
//     looking ahead makes the batch's writes longer, never more numerous.
//     A run's copies from beyond the batch are left out (its owed ones
//     still written) when they would take the plan past aheadBytes
//     (-1: no limit).
func planWriteback(ents []wbEntry, aheadBytes int64) (write []wbEntry, clear []uint32) {
	type cand struct {
		k    int  // the copy to write: ents[k]
		g0   int  // ents[g0:k] are the older copies it clears
		must bool // the batch owes the block
	}
	var cands []cand
	for g0 := 0; g0 < len(ents); {
		g1 := g0 + 1
		for g1 < len(ents) && ents[g1].block == ents[g0].block {
			g1++
		}
		owed := slices.ContainsFunc(ents[g0:g1], func(e wbEntry) bool { return !e.ahead })
		switch k := g1 - 1; {
		case !ents[k].superseded:
			cands = append(cands, cand{k: k, g0: g0, must: owed})
		case owed:
			for ents[k].ahead {
				k--
			}
			cands = append(cands, cand{k: k, g0: k, must: true})
		}
		g0 = g1
	}
	// Runs of candidates whose sectors are adjacent on the backing device.
	adjacent := func(a, b wbEntry) bool {
		return b.block == a.block+1 && a.dirty&0x80 != 0 && b.dirty&0x01 != 0
	}
	for a := 0; a < len(cands); {
		b := a + 1
		for b < len(cands) && adjacent(ents[cands[b-1].k], ents[cands[b].k]) {
			b++
		}
		run := cands[a:b]
		a = b
		if !slices.ContainsFunc(run, func(c cand) bool { return c.must }) {
			continue
		}
		var extra int64
		for _, c := range run {
			if !c.must {
				extra += int64(bits.OnesCount8(ents[c.k].dirty)) * layout.SectorSize
			}
		}
		ahead := aheadBytes < 0 || extra <= aheadBytes
		if ahead && aheadBytes > 0 {
			aheadBytes -= extra
		}
		for _, c := range run {
			if c.must || ahead {
				write = append(write, ents[c.k])
				for _, e := range ents[c.g0:c.k] {
					if e.ahead && e.superseded {
						clear = append(clear, e.pos)
					}
				}
			}
		}
	}
	return write, clear
}

// writeChunk writes the dirty sectors of chunk (block order, at most
// wbChunkBlocks copies) to the backing device through a Stage, and
// returns the bytes written. Their data is read from the cache device in
// reads of up to wbReadMax blocks over the copies in cache order (gaps of
// up to wbReadGap unneeded blocks read through), up to sectorio.InFlight
// in flight, each copied from its read buffer to its place in the stage.
func (v *Volume) writeChunk(chunk []wbEntry, bufs *wbBuffers) (int64, error) {
	// Lay out the stage first: Add hands out the space of each sector
	// (full blocks in one piece), which the reads then fill in any order.
	var total int
	for _, e := range chunk {
		total += bits.OnesCount8(e.dirty)
	}
	if bufs.stage == nil || bufs.stage.Cap() < total {
		bufs.stage = sectorio.NewStage(total)
	} else {
		bufs.stage.Reset()
	}
	stage := bufs.stage
	dst := make([][]byte, 0, len(chunk)) // per copy, its pieces: one block, or its dirty sectors
	first := make([]int, len(chunk)+1)   // copy k's pieces are dst[first[k]:first[k+1]]
	for k, e := range chunk {
		first[k] = len(dst)
		if e.dirty == layout.DirtyFull {
			dst = append(dst, stage.Add(int64(e.block)*layout.SectorsPerBlock, layout.SectorsPerBlock))
			continue
		}
		for j := range layout.SectorsPerBlock {
			if e.dirty&(1<<j) != 0 {
				dst = append(dst, stage.Add(int64(e.block)*layout.SectorsPerBlock+int64(j), 1))
			}
		}
	}
	first[len(chunk)] = len(dst)

	// Where a data slot lies on the cache device, in blocks from the end
	// of the superblock: a segment is its header block and 127 data slots.
	devBlock := func(pos uint32) int64 {
		return int64(slotOfPos(pos))*layout.BlocksPerSegment + 1 + int64(idxOfPos(pos))
	}
	order := make([]int, len(chunk))
	for k := range order {
		order[k] = k
	}
	slices.SortFunc(order, func(a, b int) int { return cmp.Compare(chunk[a].pos, chunk[b].pos) })
	type read struct {
		dev    int64 // first block on the cache device
		n      int   // blocks
		lo, hi int   // the copies it holds: order[lo:hi]
	}
	var reads []read
	for x, k := range order {
		d := devBlock(chunk[k].pos)
		if len(reads) > 0 {
			r := &reads[len(reads)-1]
			if gap := d - r.dev - int64(r.n); gap >= 0 && gap <= wbReadGap && d-r.dev < wbReadMax {
				r.n, r.hi = int(d-r.dev)+1, x+1
				continue
			}
		}
		reads = append(reads, read{dev: d, n: 1, lo: x, hi: x + 1})
	}
	if bufs.reads == nil {
		bufs.reads = make([][]byte, sectorio.InFlight)
		for i := range bufs.reads {
			bufs.reads[i] = blockdev.AlignedBuffer(wbReadMax * layout.BlockSize)
		}
	}
	free := make(chan []byte, len(bufs.reads))
	for _, b := range bufs.reads {
		free <- b
	}
	var g errgroup.Group
	for _, r := range reads {
		buf := <-free // at most len(bufs.reads) reads in flight
		g.Go(func() error {
			defer func() { free <- buf }()
			off := layout.SuperblockSize + r.dev*layout.BlockSize
			p := buf[:r.n*layout.BlockSize]
			if _, err := v.cache.ReadAt(p, off); err != nil {
				v.stats.cacheReadErrors.Add(1)
				return fmt.Errorf("read %d blocks for writeback at cache offset %d: %w", r.n, off, err)
			}
			for _, k := range order[r.lo:r.hi] {
				src := p[(devBlock(chunk[k].pos)-r.dev)*layout.BlockSize:]
				pieces := dst[first[k]:first[k+1]]
				if chunk[k].dirty == layout.DirtyFull {
					copy(pieces[0], src[:layout.BlockSize])
					continue
				}
				n := 0
				for j := range layout.SectorsPerBlock {
					if chunk[k].dirty&(1<<j) != 0 {
						copy(pieces[n], src[j*layout.SectorSize:(j+1)*layout.SectorSize])
						n++
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	if err := v.writeStage(stage); err != nil {
		return 0, err
	}
	return stage.Sectors() << layout.SectorShift, nil
}

// writeStage writes a stage's runs to the backing device (sectorio.Stage.Write:
// ascending, up to sectorio.InFlight in flight, no new submission after the
// first error) and counts each failed write. On error the caller neither
// syncs nor advances last_writeback_id; a batch is retried whole.
func (v *Volume) writeStage(stage *sectorio.Stage) error {
	err := stage.Write(v.backing)
	if we, ok := errors.AsType[*sectorio.WriteError](err); ok {
		v.stats.backingWriteErrors.Add(uint64(we.Failed))
	}
	if err != nil {
		return fmt.Errorf("write back to the backing device: %w", err)
	}
	return nil
}

// writebackLookaheadLocked returns how many segments beyond its batch the
// planner may look at: v.writebackLookahead while DropCaches waits or the
// modulator finds the backing device idle (allowWB), unless a writer waits
// for a free ring slot: then the batch alone, sized by time, frees one
// soonest. Caller holds mu.
func (v *Volume) writebackLookaheadLocked() int {
	if v.mu.urgentWB > v.mu.drainWB || (v.mu.drainWB == 0 && !v.mu.allowWB) {
		return 0
	}
	return v.writebackLookahead
}

// DropCaches seals the open rambuf, writes it, and writes back every dirty
// block (the kernel's drop_caches message). It returns when everything
// sealed before the call is written back, or when ctx is done.
func (v *Volume) DropCaches(ctx context.Context) error {
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	if err := v.flush(); err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mu.drainWB++
	defer func() { v.mu.drainWB-- }()
	if err := v.forceWritebackLocked(ctx, v.mu.lastSealed); err != nil {
		return fmt.Errorf("engine: drop_caches: %w", err)
	}
	return nil
}

// forceWritebackLocked makes the writeback daemon run, allowed or not,
// until every segment up to target is written back, the volume fails, or
// ctx is done. Caller holds mu.
func (v *Volume) forceWritebackLocked(ctx context.Context, target uint64) error {
	v.mu.urgentWB++
	defer func() { v.mu.urgentWB-- }()
	v.cond.Broadcast()
	for v.mu.lastWB < target {
		if v.mu.failErr != nil {
			return v.mu.failErr
		}
		if err := v.waitCtx(ctx); err != nil {
			return err
		}
	}
	return nil
}
