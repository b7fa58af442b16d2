package engine

import (
	"fmt"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// flightWindow bounds the segments that may be written but not yet synced
// at once (segment N goes to the device only once N - flightWindow is
// durable). A power cut may tear any of them while later ones are whole;
// replay tells that torn tail from damage by the durable record every
// segment carries (image), so the window is not replay's TornWindow, which
// judges segments without the record.
//
// Measured (issue 16, 1 MiB sequential writes QD4 through NBD on a file
// whose syncs take about 1 ms): with 8, the window ran full while a sync
// was pending and writers waited for rambufs a third of the time;
// 32 gave +17-25% (1862-1945 against 1474-1601 MB/s).
const flightWindow = 32

// rambuf is one RAM buffer: the image of one segment (header block + 127
// data slots) while it is open for writes, sealed, and being written to
// the cache device (cf. struct rambuffer, struct segment_header).
type rambuf struct {
	buf     []byte // 512 KiB, 4096-aligned
	id      uint64
	length  int
	mbs     [layout.NrCachesPerSegment]layout.Metablock
	sealed  bool
	written bool
}

func newRambuf() *rambuf { return &rambuf{buf: blockdev.AlignedBuffer(layout.SegmentSize)} }

func (rb *rambuf) data(i int) []byte {
	off := layout.BlockSize * (i + 1)
	return rb.buf[off : off+layout.BlockSize]
}

// image encodes the header into the buffer and returns the bytes of the
// one sequential write: header and length data slots. durable is the
// durable record: every segment up to it is durable before this one is
// written.
func (rb *rambuf) image(zeroHeader bool, durable uint64) []byte {
	n := layout.HeaderSize + layout.BlockSize*rb.length
	hdr := rb.buf[:layout.HeaderSize]
	clear(hdr)
	if zeroHeader {
		return rb.buf[:n]
	}
	for i := range rb.length {
		layout.PutMetablock(hdr, i, rb.mbs[i])
	}
	layout.PutDurableRecord(hdr, durable)
	sum, _ := layout.SegmentChecksum(rb.buf[:n], uint8(rb.length)) // length <= 127 by construction
	layout.PutFirstSector(hdr, rb.id, sum, uint8(rb.length))
	return rb.buf[:n]
}

// ensureOpenLocked makes v.mu.open a segment with a free data slot. It may
// wait (releasing mu) for a free rambuf or for the writeback that frees the
// ring slot; it reports whether it waited, since the caller's lookups are
// then stale. With wait false it gives up instead (read caching is best
// effort). Caller holds mu.
func (v *Volume) ensureOpenLocked(wait bool) (waited bool, ok bool, err error) {
	var waitStart, nextLog time.Time // waiting for writeback to free a slot
	for {
		if v.mu.failErr != nil {
			return waited, false, v.mu.failErr
		}
		if v.mu.open != nil && v.mu.open.length < layout.NrCachesPerSegment {
			return waited, true, nil
		}
		if v.mu.open != nil {
			v.sealLocked()
		}
		id := v.mu.nextID
		if id > v.nrSeg && v.mu.lastWB < id-v.nrSeg {
			// The ring is full: the segment in this slot is still dirty.
			// Force writeback (cf. wait_for_writeback in
			// prepare_new_seg) and wait.
			if !wait {
				return waited, false, nil
			}
			if v.mu.closing && v.mu.wbFailing {
				// Close must not hang on a dead backing device; this
				// write was not acknowledged.
				return waited, false, fmt.Errorf("%w: writeback is failing, no free segment", ErrClosed)
			}
			if waitStart.IsZero() {
				waitStart, nextLog = time.Now(), time.Now().Add(spaceLogEvery)
			}
			if v.writeWaitLimit > 0 && v.mu.wbFailing && time.Since(waitStart) >= v.writeWaitLimit {
				// Fail with writeback's own error (a full backing device's
				// ENOSPC reaches the client as ENOSPC) rather than hang.
				return waited, false, fmt.Errorf("%w: no free segment after %v: writeback is failing: %w",
					ErrNoSpace, time.Since(waitStart).Round(time.Millisecond), v.mu.wbErr)
			}
			if now := time.Now(); !now.Before(nextLog) {
				nextLog = now.Add(spaceLogEvery)
				v.log.Warn("a write waits for a free segment: the ring is full and writeback has not freed one",
					"for", now.Sub(waitStart).Round(time.Second), "writeback_failing", v.mu.wbFailing, "err", v.mu.wbErr)
			}
			v.mu.urgentWB++
			v.cond.Broadcast() // the writeback daemon
			// Wake up to log, or to give up at the limit.
			wake := time.Until(nextLog)
			if v.writeWaitLimit > 0 {
				wake = min(wake, time.Until(waitStart.Add(v.writeWaitLimit)))
			}
			t := time.AfterFunc(max(wake, time.Millisecond), func() {
				v.mu.Lock()
				v.spaceCond.Broadcast()
				v.mu.Unlock()
			})
			v.spaceCond.Wait()
			t.Stop()
			v.mu.urgentWB--
			waited = true
			continue
		}
		if len(v.mu.free) == 0 {
			if !wait {
				return waited, false, nil
			}
			v.spaceCond.Wait()
			waited = true
			continue
		}
		slot := v.geo.SlotOf(id)
		// The old segment here is written back: its blocks are clean, and
		// the index forgets them (cf. discard_caches_inseg). Readers that
		// pinned the slot finish before the flusher overwrites it.
		for i := range layout.NrCachesPerSegment {
			v.mu.idx.removePos(posOf(slot, i))
			v.mu.idx.superseded[posOf(slot, i)] = 0
		}
		v.mu.supersededBy[slot] = 0
		rb := v.mu.free[len(v.mu.free)-1]
		v.mu.free = v.mu.free[:len(v.mu.free)-1]
		rb.id, rb.length, rb.sealed, rb.written = id, 0, false, false
		clear(rb.mbs[:])
		v.mu.segIDs[slot] = id
		v.mu.slotRB[slot] = rb
		v.mu.open = rb
		v.mu.nextID++
		v.checkInvariantsLocked()
		return waited, true, nil
	}
}

// sealLocked queues the open segment for the flusher (cf.
// queue_current_buffer). Caller holds mu; v.mu.open must hold at least one
// block.
func (v *Volume) sealLocked() {
	rb := v.mu.open
	v.mu.open = nil
	rb.sealed = true
	v.mu.lastSealed = rb.id
	v.mu.flushQ = append(v.mu.flushQ, rb)
	v.checkInvariantsLocked()
	v.cond.Broadcast()
}

// segmentWrittenLocked records that rb reached the cache device, advances
// lastWritten over every contiguous written segment and frees their
// rambufs: their blocks are read from the cache device from now on.
func (v *Volume) segmentWrittenLocked(rb *rambuf) {
	rb.written = true
	for {
		id := v.mu.lastWritten + 1
		if id >= v.mu.nextID {
			break
		}
		slot := v.geo.SlotOf(id)
		r := v.mu.slotRB[slot]
		if r == nil || r.id != id || !r.written {
			break
		}
		v.mu.slotRB[slot] = nil
		v.mu.free = append(v.mu.free, r)
		v.mu.lastWritten = id
	}
	v.checkInvariantsLocked()
	v.wakeWritersLocked()
}

// ramBytesLocked is the data held in rambufs (status).
func (v *Volume) ramBytesLocked() int64 {
	var n int64
	for _, rb := range v.mu.rambufs {
		if v.mu.slotRB[v.geo.SlotOf(max(rb.id, 1))] == rb {
			n += int64(rb.length) * layout.BlockSize
		}
	}
	return n
}
