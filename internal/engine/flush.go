package engine

import (
	"fmt"
	"time"
)

// Flush makes every write acknowledged before the call durable: it seals
// the open rambuf as a partial segment, waits until every sealed segment is
// written to the cache device and syncs it (cf. the kernel's barrier
// handling, flush_current_buffer + blkdev_issue_flush). Concurrent Flush
// calls share one seal and one sync (group commit).
func (v *Volume) Flush() error {
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	v.stats.flushRequests.Add(1)
	return v.flush()
}

// FlushBuffer seals the open rambuf and writes it (the kernel's "flush"
// message); like Flush it also syncs, since a written but unsynced segment
// is worth nothing after a power cut. It is no FLUSH request: it does not
// count in nr_partial_flushed.
func (v *Volume) FlushBuffer() error {
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	return v.flush()
}

// flush is Flush without the op registration (Close calls it after the last
// op).
func (v *Volume) flush() error {
	v.mu.Lock()
	// target is the newest segment holding a write acknowledged before
	// this call: the open one if it has data, else the last sealed one.
	target := v.mu.lastSealed
	if v.mu.open != nil && v.mu.open.length > 0 {
		target = v.mu.open.id
	}
	var err error
	for v.mu.durable < target && err == nil {
		if v.mu.failErr != nil {
			err = v.mu.failErr
			break
		}
		if v.mu.flushLeader {
			// Someone is sealing and syncing; wait, then see whether it
			// covered us or we lead the next round, which then seals
			// everything that arrived meanwhile in one segment.
			v.cond.Wait()
			continue
		}
		v.mu.flushLeader = true
		if v.mu.open != nil && v.mu.open.length > 0 {
			v.sealLocked()
		}
		sealed := v.mu.lastSealed
		v.mu.fuaTarget = max(v.mu.fuaTarget, sealed)
		for v.mu.lastWritten < sealed && v.mu.failErr == nil {
			v.cond.Wait()
		}
		if v.mu.failErr != nil {
			err = v.mu.failErr
		} else if v.mu.durable < sealed {
			err = v.syncCacheLocked()
		}
		v.mu.flushLeader = false
		v.cond.Broadcast()
	}
	needBacking := v.mu.backingUnsynced
	v.mu.backingUnsynced = false
	v.mu.Unlock()
	if err != nil {
		return err
	}
	if needBacking {
		if err := v.backing.Sync(); err != nil {
			v.stats.backingWriteErrors.Add(1)
			v.mu.Lock()
			v.mu.backingUnsynced = true
			v.mu.Unlock()
			return fmt.Errorf("engine: flush: sync backing device: %w", err)
		}
	}
	return nil
}

// syncCacheLocked returns after a cache device sync that started after the
// call: every segment written before then is durable. Callers arriving
// while a sync runs wait for it and share the next one (group commit).
// Caller holds mu; it is released during the sync.
func (v *Volume) syncCacheLocked() error {
	want := v.mu.syncsStarted + 1
	for v.mu.syncsDone < want {
		if v.mu.syncing {
			v.cond.Wait()
			continue
		}
		v.mu.syncing = true
		v.mu.syncsStarted++
		gen := v.mu.syncsStarted
		written := v.mu.lastWritten
		v.mu.Unlock()
		start := time.Now()
		err := v.cache.Sync()
		v.stats.cacheSyncs.Add(1)
		v.stats.cacheSyncNanos.Add(int64(time.Since(start)))
		v.mu.Lock()
		v.mu.syncing = false
		v.cond.Broadcast()
		if err != nil {
			v.stats.cacheWriteErrors.Add(1)
			return fmt.Errorf("engine: sync cache device: %w", err)
		}
		v.mu.syncsDone = max(v.mu.syncsDone, gen)
		v.mu.durable = max(v.mu.durable, written)
		v.checkInvariantsLocked()
	}
	return nil
}
