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
)

// maxWritebackBackoff caps the delay between retries of a failed batch.
const maxWritebackBackoff = 5 * time.Second

// wbEntry is one dirty cache block of a writeback batch.
type wbEntry struct {
	block uint64
	pos   uint32
	dirty uint8
	seg   int // index of its segment in the batch
	i     int // data slot
	// superseded: a copy a newer one replaced in the index, written back
	// because it may be its block's newest durable copy; its block is read
	// from the segment header.
	superseded bool
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
// A batch is up to nr_max_batched_writeback segments: their dirty blocks
// are read from the cache device (one sequential read per run of adjacent
// ring slots), sorted by backing sector and staged in a sectorio.Stage
// (adjacent sectors merged into large writes, issued in ascending order
// with up to sectorio.InFlight in flight), and the backing device synced;
// only then does last_writeback_id advance.
// A failed batch is retried with backoff, logged once per burst of
// failures, and never advances last_writeback_id.
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
	var segBuf []byte
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
		v.mu.Unlock()
		v.stats.curBatch.Store(to - from + 1)

		if need := int(to-from+1) * layout.SegmentSize; len(segBuf) < need {
			segBuf = blockdev.AlignedBuffer(need)
		}
		start := time.Now()
		ents, n, err := v.writebackBatch(ents, from, segBuf)
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
	}
}

// writebackBatch copies the dirty sectors of ents to the backing device
// and syncs it; it returns the entries written (in block order, one per
// block) and the bytes written. segBuf holds the batch's segments,
// segment k (id from+k) at k*SegmentSize, header included.
func (v *Volume) writebackBatch(ents []wbEntry, from uint64, segBuf []byte) ([]wbEntry, int64, error) {
	if len(ents) == 0 {
		return ents, 0, nil
	}
	if err := v.readBatchSegments(ents, from, segBuf); err != nil {
		return nil, 0, err
	}
	for k := range ents {
		if e := &ents[k]; e.superseded {
			hdr := segBuf[e.seg*layout.SegmentSize:]
			id := from + uint64(e.seg)
			mb := layout.MetablockAt(hdr, e.i)
			if got := layout.HeaderID(hdr); got != id || mb.Sector%layout.SectorsPerBlock != 0 || int64(mb.Sector) >= v.size>>layout.SectorShift {
				return nil, 0, fmt.Errorf("segment %d (header id %d), data slot %d: metablock names sector %d: the cache device changed under the engine", id, got, e.i, mb.Sector)
			}
			e.block = mb.Sector / layout.SectorsPerBlock
		}
	}
	// Block order; the newest copy of a block last, and only it is kept.
	slices.SortFunc(ents, func(a, b wbEntry) int {
		return cmp.Or(cmp.Compare(a.block, b.block), cmp.Compare(a.seg, b.seg))
	})
	kept := ents[:0]
	for k, e := range ents {
		if k+1 < len(ents) && ents[k+1].block == e.block {
			continue // a newer copy of the block follows
		}
		kept = append(kept, e)
	}
	ents = kept
	// Stage the dirty sectors in backing-sector order so that adjacent
	// sectors become one write.
	var total int
	for _, e := range ents {
		total += bits.OnesCount8(e.dirty)
	}
	stage := sectorio.NewStage(total)
	for _, e := range ents {
		src := segBuf[e.seg*layout.SegmentSize+(e.i+1)*layout.BlockSize:]
		if e.dirty == layout.DirtyFull {
			copy(stage.Add(int64(e.block)*layout.SectorsPerBlock, layout.SectorsPerBlock), src[:layout.BlockSize])
			continue
		}
		for j := range layout.SectorsPerBlock {
			if e.dirty&(1<<j) != 0 {
				copy(stage.Add(int64(e.block)*layout.SectorsPerBlock+int64(j), 1), src[j*layout.SectorSize:])
			}
		}
	}
	if err := v.writeStage(stage); err != nil {
		return nil, 0, err
	}
	if err := v.backing.Sync(); err != nil {
		v.stats.backingWriteErrors.Add(1)
		return nil, 0, fmt.Errorf("sync backing device after writeback: %w", err)
	}
	return ents, stage.Sectors() << layout.SectorShift, nil
}

// readBatchSegments reads the segments of a batch that hold entries into
// segBuf: one large sequential read per run of ring slots that are
// adjacent on the cache device (a batch only breaks where the ring wraps),
// from the first segment's header to the last data slot needed.
func (v *Volume) readBatchSegments(ents []wbEntry, from uint64, segBuf []byte) error {
	first, last := ents[0].seg, ents[0].seg
	need := map[int]int{} // segment -> data slots needed
	for _, e := range ents {
		first, last = min(first, e.seg), max(last, e.seg)
		need[e.seg] = max(need[e.seg], e.i+1)
	}
	for k := first; k <= last; {
		// Extend the run while the next segment is in the next ring slot.
		j := k
		for j < last && v.geo.SlotOf(from+uint64(j+1)) == v.geo.SlotOf(from+uint64(j))+1 {
			j++
		}
		for need[j] == 0 { // trailing segments without entries
			j--
		}
		slot := v.geo.SlotOf(from + uint64(k))
		n := (j-k)*layout.SegmentSize + (need[j]+1)*layout.BlockSize
		off := v.geo.SegmentOffset(slot)
		if _, err := v.cache.ReadAt(segBuf[k*layout.SegmentSize:k*layout.SegmentSize+n], off); err != nil {
			v.stats.cacheReadErrors.Add(1)
			return fmt.Errorf("read segments %d..%d for writeback at cache offset %d: %w", from+uint64(k), from+uint64(j), off, err)
		}
		k = j + 1
		for k <= last && need[k] == 0 {
			k++
		}
	}
	return nil
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
