package engine

import (
	"sync/atomic"

	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// Bits of the stat index, cf. STAT_WRITE, STAT_HIT, STAT_ON_BUFFER,
// STAT_FULLSIZE: stat[write<<3 | hit<<2 | on_buffer<<1 | fullsize].
const (
	StatWrite    = 3
	StatHit      = 2
	StatOnBuffer = 1
	StatFullSize = 0
)

// stats are counters updated without the lock.
type stats struct {
	// stat counts each 4 KiB-block piece of a read or write request, as
	// the kernel counts each bio after splitting at 4 KiB boundaries (cf.
	// inc_stat in cache_lookup): write, hit = a copy was in the cache,
	// on_buffer = that copy sat in the open rambuf, fullsize = the piece
	// covered the whole block.
	stat [16]atomic.Uint64

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
	// supersededWritebacks counts superseded copies written back under the
	// durable-copy rule (writeback.go).
	supersededWritebacks atomic.Uint64
}

func (s *stats) inc(write, hit, onBuffer, fullsize bool) {
	i := 0
	if write {
		i |= 1 << StatWrite
	}
	if hit {
		i |= 1 << StatHit
	}
	if onBuffer {
		i |= 1 << StatOnBuffer
	}
	if fullsize {
		i |= 1 << StatFullSize
	}
	s.stat[i].Add(1)
}

// Status is the kernel target's status line plus what helps an operator.
type Status struct {
	// The kernel's fields, in its order.
	CursorPos          uint64       `json:"cursor_pos"`
	NrCacheBlocks      uint64       `json:"nr_cache_blocks"`
	NrSegments         uint64       `json:"nr_segments"`
	CurrentID          uint64       `json:"current_id"`
	LastFlushedID      uint64       `json:"last_flushed_id"`
	LastWritebackID    uint64       `json:"last_writeback_id"`
	NrDirtyCacheBlocks uint64       `json:"nr_dirty_cache_blocks"`
	Stat               [16]uint64   `json:"stat"`
	NrPartialFlushed   uint64       `json:"nr_partial_flushed"`
	Tunables           vocab.Values `json:"tunables"`

	// Extras.
	VolumeBytes        int64  `json:"volume_bytes"`
	LastDurableID      uint64 `json:"last_durable_id"`      // segments synced on the cache device
	SuperblockRecordID uint64 `json:"superblock_record_id"` // last_writeback_segment_id last written
	NrRAMBuffers       int    `json:"nr_ram_buffers"`
	RAMBufferBytes     int64  `json:"ram_buffer_bytes"` // data held in rambufs not yet on the cache device
	CacheReadErrors    uint64 `json:"cache_read_errors"`
	CacheWriteErrors   uint64 `json:"cache_write_errors"`
	BackingReadErrors  uint64 `json:"backing_read_errors"`
	BackingWriteErrors uint64 `json:"backing_write_errors"`
	WritebackErrors    uint64 `json:"writeback_errors"` // failed writeback batches (each retried)
	WritebackBytes     int64  `json:"writeback_bytes"`  // total written back since open
	WritebackRate      int64  `json:"writeback_bytes_per_sec"`
	WritebackAllowed   bool   `json:"writeback_allowed"` // the modulator's verdict
	BackingUtilPercent int64  `json:"backing_util_percent"`
	ReadCacheStaged    uint64 `json:"read_cache_staged"` // blocks staged by read caching
	IndexBytes         int64  `json:"index_bytes"`
	SegmentWrites      uint64 `json:"segment_writes"`
	SegmentWriteMicros int64  `json:"segment_write_us"` // total time in segment writes
	CacheSyncs         uint64 `json:"cache_syncs"`
	CacheSyncMicros    int64  `json:"cache_sync_us"`    // total time in cache device syncs
	Failed             string `json:"failed,omitempty"` // why the volume refuses writes
}

// Status returns a snapshot of the volume's state.
func (v *Volume) Status() Status {
	var s Status
	for i := range s.Stat {
		s.Stat[i] = v.stats.stat[i].Load()
	}
	s.Tunables = v.tun.snapshot()
	s.NrCacheBlocks = v.geo.NrCacheBlocks()
	s.NrSegments = v.nrSeg
	s.VolumeBytes = v.size
	s.CacheReadErrors = v.stats.cacheReadErrors.Load()
	s.CacheWriteErrors = v.stats.cacheWriteErrors.Load()
	s.BackingReadErrors = v.stats.backingReadErrors.Load()
	s.BackingWriteErrors = v.stats.backingWriteErrors.Load()
	s.WritebackErrors = v.stats.writebackErrors.Load()
	s.WritebackBytes = v.stats.writebackBytes.Load()
	s.WritebackRate = v.stats.writebackRate.Load()
	s.BackingUtilPercent = v.stats.utilPercent.Load()
	s.ReadCacheStaged = v.stats.readCacheStaged.Load()
	s.SegmentWrites = v.stats.segmentWrites.Load()
	s.SegmentWriteMicros = v.stats.segmentWriteNanos.Load() / 1000
	s.CacheSyncs = v.stats.cacheSyncs.Load()
	s.CacheSyncMicros = v.stats.cacheSyncNanos.Load() / 1000

	v.mu.Lock()
	defer v.mu.Unlock()
	s.CurrentID = v.mu.nextID - 1
	if v.mu.open != nil && v.mu.open.length > 0 {
		s.CursorPos = uint64(posOf(v.geo.SlotOf(v.mu.open.id), v.mu.open.length-1))
	} else if s.CurrentID > 0 {
		s.CursorPos = uint64(posOf(v.geo.SlotOf(s.CurrentID), layout.NrCachesPerSegment-1))
	}
	s.LastFlushedID = v.mu.lastWritten
	s.LastWritebackID = v.mu.lastWB
	s.NrDirtyCacheBlocks = v.mu.idx.nrDirty
	s.NrPartialFlushed = v.mu.partialFlushed
	s.LastDurableID = v.mu.durable
	s.SuperblockRecordID = v.mu.recorded
	s.NrRAMBuffers = len(v.mu.rambufs)
	s.RAMBufferBytes = v.ramBytesLocked()
	s.WritebackAllowed = v.mu.allowWB
	s.IndexBytes = v.mu.idx.bytes()
	if v.mu.failErr != nil {
		s.Failed = v.mu.failErr.Error()
	}
	return s
}

// ClearStat zeroes the 16 counters and nr_partial_flushed (the kernel's
// clear_stat message).
func (v *Volume) ClearStat() {
	for i := range v.stats.stat {
		v.stats.stat[i].Store(0)
	}
	v.mu.Lock()
	v.mu.partialFlushed = 0
	v.mu.Unlock()
}
