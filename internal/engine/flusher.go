package engine

import (
	"fmt"
	"sync"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// syncAhead is how many written but unsynced segments start a background
// sync of the cache device.
const syncAhead = 2

// zeroHeadersAhead is how many ring slots the flusher clears in one go
// before they are reused, so that one cache sync covers many segments.
const zeroHeadersAhead = 32

// flusher is the daemon that writes sealed segments to the cache device
// (cf. flush_proc).
//
// Owns: the flush queue's head, and the ordering of segment writes with
// the syncs and header clears they depend on. Each segment write runs in
// its own goroutine (tracked by v.segWrites) so that several are in flight
// at once; at most one per rambuf.
//
// Woken by: v.cond (a segment sealed or written, a sync done, a pin
// dropped, stopping).
//
// Promises before a segment with id N goes to the device:
//   - every segment up to N - flightWindow is synced, and N's header
//     records what was durable then (its durable record), so a power cut
//     can tear only segments that replay treats as a torn tail;
//   - if the ring slot held a segment with a good checksum (written back,
//     as ensureOpenLocked ensured), its header was zeroed and synced: a torn
//     write into that slot must not leave the old header in front of a
//     now-mismatching body, which replay would take for mid-log damage. A
//     header is zeroed only while a newer segment is durable, so the device
//     never shows a newest id below the superblock record;
//   - no reader still reads the slot's old data.
//
// On exit (stopping, queue empty or the cache device failed) it has
// started no write it does not track; Close waits for v.segWrites.
//
// NB: it takes no context: stopping comes through v.mu.stopping and a cond
// broadcast, since it waits on v.cond, not on channels.
func (v *Volume) flusher() {
	zero := blockdev.AlignedBuffer(layout.HeaderSize)
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		if v.mu.stopping && (len(v.mu.flushQ) == 0 || v.mu.failErr != nil) {
			return
		}
		if len(v.mu.flushQ) == 0 || v.mu.failErr != nil {
			v.cond.Wait()
			continue
		}
		rb := v.mu.flushQ[0]
		if !v.mu.syncing && !v.mu.bgSync && v.mu.lastWritten >= v.mu.durable+syncAhead {
			// Keep a sync running in the background whenever a few written
			// segments are not yet durable: the window then rarely stops
			// dispatch, and a flush finds most of its work done. (Measured:
			// syncing every 2 segments this way beats waiting for 5.)
			v.mu.bgSync = true
			v.segWrites.Add(1)
			go v.backgroundSync()
		}
		if rb.id > v.mu.durable+flightWindow {
			if v.mu.syncing {
				v.cond.Wait()
				continue
			}
			// Let most earlier writes complete first, so that this sync
			// frees most of the window, not a single segment.
			if v.mu.lastWritten+1 < rb.id && v.mu.lastWritten < v.mu.durable+flightWindow*5/8 {
				v.cond.Wait()
				continue
			}
			if err := v.syncCacheLocked(); err != nil {
				v.failLocked(err)
			}
			continue
		}
		slot := v.geo.SlotOf(rb.id)
		if v.mu.hdrLive[slot] {
			old := rb.id - v.nrSeg // written back, as ensureOpenLocked made sure
			switch {
			case v.nrSeg == 1:
				// No other slot: a torn write here is the only segment of
				// the walk, a torn tail, and the old one is written back.
				v.mu.hdrLive[slot] = false
			case old >= v.mu.durable:
				// Zero a header only while a newer segment is durable, so
				// the device always shows an id at least as high as the
				// superblock record (replay refuses a record above every
				// id): wait for the next write, then sync.
				if v.mu.lastWritten <= old {
					v.cond.Wait()
					continue
				}
				if err := v.syncCacheLocked(); err != nil {
					v.failLocked(err)
				}
			default:
				v.zeroHeadersLocked(rb.id, zero)
			}
			continue
		}
		if v.mu.pins[slot] > 0 {
			v.cond.Wait()
			continue
		}
		v.mu.flushQ = v.mu.flushQ[1:]
		zeroHeader := v.tun.on(vocab.WriteAroundMode)
		// Set before the write starts: from now on the slot may hold a good
		// header.
		v.mu.hdrLive[slot] = !zeroHeader
		// A Flush waits for this very segment and everything before it is
		// durable: a FUA write makes it durable in one round trip, where a
		// write and a sync take two.
		fua := v.fuaDev != nil && rb.id <= v.mu.fuaTarget && v.mu.durable+1 == rb.id
		v.segWrites.Add(1)
		go v.writeSegment(rb, slot, zeroHeader, fua, v.mu.durable)
	}
}

// backgroundSync syncs the cache device on behalf of the flusher, which
// tracks it in v.segWrites.
func (v *Volume) backgroundSync() {
	defer v.segWrites.Done()
	v.mu.Lock()
	defer v.mu.Unlock()
	defer func() { v.mu.bgSync = false }()
	if err := v.syncCacheLocked(); err != nil {
		v.failLocked(err)
	}
}

// zeroHeadersLocked clears the header of the slot that segment id is about
// to reuse, and of the next written-back slots, then syncs the cache
// device. Caller holds mu; it is released during the I/O.
//
// The clears are written all at once, then synced: they are independent,
// and only the sync orders them before any reuse. (Written one after the
// other they took ~4 ms per 32 slots on a virtual disk, while the flusher
// dispatched nothing: a sixth of the time of 1 MiB sequential writes once
// the ring had wrapped.)
func (v *Volume) zeroHeadersLocked(id uint64, zero []byte) {
	// The slot segment id reuses is live (that is why we are here); the
	// next ones are cleared too while their old segment is written back.
	slots := []uint64{v.geo.SlotOf(id)}
	for n := id + 1; n < id+zeroHeadersAhead; n++ {
		if n <= v.nrSeg || n-v.nrSeg > v.mu.lastWB || n-v.nrSeg >= v.mu.durable {
			break
		}
		if s := v.geo.SlotOf(n); v.mu.hdrLive[s] {
			slots = append(slots, s)
		}
	}
	v.mu.Unlock()
	errs := make([]error, len(slots))
	var wg sync.WaitGroup
	for i, s := range slots {
		wg.Go(func() {
			if _, err := v.cache.WriteAt(zero, v.geo.SegmentOffset(s)); err != nil {
				v.stats.cacheWriteErrors.Add(1)
				errs[i] = fmt.Errorf("clear header of ring slot %d: %w", s, err)
			}
		})
	}
	wg.Wait()
	var err error
	for _, e := range errs {
		if e != nil {
			err = e // the first slot's: one error fails the device
			break
		}
	}
	v.mu.Lock()
	if err == nil {
		err = v.syncCacheLocked()
	}
	if err != nil {
		v.failLocked(err)
		return
	}
	for _, s := range slots {
		v.mu.hdrLive[s] = false
	}
}

// writeSegment writes one sealed segment as one sequential write of its
// header and length data slots. A failed write is retried twice; after
// that the cache device is declared failed. durable, the header's durable
// record, is what was durable when the flusher dispatched it. With fua
// (every earlier segment was durable when the flusher dispatched it) the
// write is a FUA write, and the segment is durable once it completes.
func (v *Volume) writeSegment(rb *rambuf, slot uint64, zeroHeader, fua bool, durable uint64) {
	defer v.segWrites.Done()
	img := rb.image(zeroHeader, durable)
	off := v.geo.SegmentOffset(slot)
	for attempt := 0; ; attempt++ {
		start := time.Now()
		var err error
		if fua {
			_, err = v.fuaDev.WriteAtFUA(img, off)
		} else {
			_, err = v.cache.WriteAt(img, off)
		}
		v.stats.segmentWrites.Add(1)
		v.stats.segmentWriteNanos.Add(int64(time.Since(start)))
		if err == nil {
			break
		}
		v.stats.cacheWriteErrors.Add(1)
		if attempt == 2 {
			v.mu.Lock()
			v.failLocked(fmt.Errorf("write segment %d to ring slot %d: %w", rb.id, slot, err))
			v.mu.Unlock()
			return
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	v.mu.Lock()
	if fua {
		// durable was rb.id-1 at dispatch and never decreases.
		v.mu.durable = max(v.mu.durable, rb.id)
	}
	v.segmentWrittenLocked(rb)
	v.mu.Unlock()
}
