package engine

import (
	"sync/atomic"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/vocab"
)

// stats are counters updated without the lock.
type stats struct {
	// stat counts each 4 KiB-block piece of a read or write request, as
	// the kernel counts each bio after splitting at 4 KiB boundaries (cf.
	// inc_stat in cache_lookup): write, hit = a copy was in the cache,
	// on_buffer = that copy sat in the open rambuf, fullsize = the piece
	// covered the whole block. Indexed by vocab.StatIndex.
	stat [vocab.StatLen]atomic.Uint64

	cacheReadErrors    atomic.Uint64
	cacheWriteErrors   atomic.Uint64
	backingReadErrors  atomic.Uint64
	backingWriteErrors atomic.Uint64
	writebackErrors    atomic.Uint64
	writebackBytes     atomic.Int64
	writebackNanos     atomic.Int64
	writebackRate      atomic.Int64 // bytes/s over the modulator's last interval
	utilPercent        atomic.Int64
	readCacheStaged    atomic.Uint64
	segmentWrites      atomic.Uint64
	segmentWriteNanos  atomic.Int64
	cacheSyncs         atomic.Uint64
	cacheSyncNanos     atomic.Int64
	writebackBatches   atomic.Uint64 // successful writeback batches
	curBatch           atomic.Uint64 // segments of the current (or last) writeback batch
	// flushRequests counts FLUSH requests and FUA writes handled, empty
	// buffer or not: the kernel's nr_partial_flushed.
	flushRequests atomic.Uint64
	// supersededWritebacks counts superseded copies written back under the
	// durable-copy rule (writeback.go).
	supersededWritebacks atomic.Uint64
}

func (s *stats) inc(write, hit, onBuffer, fullsize bool) {
	s.stat[vocab.StatIndex(write, hit, onBuffer, fullsize)].Add(1)
}

// Status returns a snapshot of the volume's state: the fields the engine
// knows (wb-create adds the name, devices, uptime and clients).
func (v *Volume) Status() vocab.Status {
	var s vocab.Status
	for i := range s.Stat {
		s.Stat[i] = v.stats.stat[i].Load()
	}
	s.Tunables = vocab.StatusTunables{
		WritebackThreshold: uint64(v.tun.get(vocab.WritebackThreshold)),
		// The kernel's convention: the size of the current (or last)
		// writeback batch, 0 before the first.
		NrCurBatchedWriteback:  v.stats.curBatch.Load(),
		SyncDataInterval:       uint64(v.tun.get(vocab.SyncDataInterval)),
		UpdateSBRecordInterval: uint64(v.tun.get(vocab.UpdateSBRecordInterval)),
		ReadCacheThreshold:     uint64(v.tun.get(vocab.ReadCacheThreshold)),
	}
	s.NrMaxBatchedWriteback = uint64(v.tun.get(vocab.NrMaxBatchedWriteback))
	s.WriteAroundMode = v.tun.on(vocab.WriteAroundMode)
	s.NrReadCacheCells = uint64(v.tun.get(vocab.NrReadCacheCells))
	s.NrCacheBlocks = v.geo.NrCacheBlocks()
	s.NrSegments = v.nrSeg
	s.SizeBytes = uint64(v.size)
	s.Errors = vocab.IOErrors{
		CacheRead:    v.stats.cacheReadErrors.Load(),
		CacheWrite:   v.stats.cacheWriteErrors.Load(),
		BackingRead:  v.stats.backingReadErrors.Load(),
		BackingWrite: v.stats.backingWriteErrors.Load(),
		Writeback:    v.stats.writebackErrors.Load(),
	}
	s.WritebackBytes = uint64(v.stats.writebackBytes.Load())
	s.WritebackBytesPerSec = uint64(v.stats.writebackRate.Load())
	s.BackingUtilPercent = uint64(v.stats.utilPercent.Load())
	s.ReadCacheStaged = v.stats.readCacheStaged.Load()
	s.SegmentWrites = v.stats.segmentWrites.Load()
	s.SegmentWriteMicros = v.stats.segmentWriteNanos.Load() / 1000
	s.CacheSyncs = v.stats.cacheSyncs.Load()
	s.CacheSyncMicros = v.stats.cacheSyncNanos.Load() / 1000

	v.mu.Lock()
	defer v.mu.Unlock()
	// The kernel's conventions: current_id is the segment that takes the
	// next write (the kernel opens it eagerly: 1 on a fresh cache,
	// last_flushed_id + 1 after a FLUSH or a replay), cursor_pos the next
	// cache block to be written.
	if o := v.mu.open; o != nil {
		s.CurrentID = o.id
		s.CursorPos = uint64(posOf(v.geo.SlotOf(o.id), o.length))
	} else {
		s.CurrentID = v.mu.nextID
		s.CursorPos = uint64(posOf(v.geo.SlotOf(v.mu.nextID), 0))
	}
	s.LastFlushedID = v.mu.lastWritten
	s.LastWritebackID = v.mu.lastWB
	s.NrDirtyCacheBlocks = v.mu.idx.nrDirty
	s.NrPartialFlushed = v.stats.flushRequests.Load()
	s.LastDurableID = v.mu.durable
	s.SuperblockRecordID = v.mu.recorded
	s.NrRAMBuffers = uint64(len(v.mu.rambufs))
	s.RAMBufferBytes = uint64(v.ramBytesLocked())
	allowed := v.mu.allowWB
	s.WritebackAllowed = &allowed
	s.IndexBytes = uint64(v.mu.idx.bytes())
	s.CacheIO, s.BackingIO = ioEngine(v.cache), ioEngine(v.backing)
	if v.mu.failErr != nil {
		s.Failed = v.mu.failErr.Error()
	}
	if v.mu.wbFailing && v.mu.wbErr != nil {
		s.WritebackError = v.mu.wbErr.Error()
		s.WritebackFailingSeconds = time.Since(v.mu.wbFailSince).Seconds()
	}
	return s
}

// ClearStat zeroes the 16 counters and nr_partial_flushed (the kernel's
// clear_stat message).
func (v *Volume) ClearStat() {
	for i := range v.stats.stat {
		v.stats.stat[i].Store(0)
	}
	v.stats.flushRequests.Store(0)
}

// ioEngine names how a device submits its I/O (its IOEngine method:
// blockdev.File, blockdev.NBD), or "" for a device that does not say.
func ioEngine(d blockdev.Device) string {
	if t, ok := d.(*timedDevice); ok {
		d = t.Device
	}
	if e, ok := d.(interface{ IOEngine() string }); ok {
		return e.IOEngine()
	}
	return ""
}
