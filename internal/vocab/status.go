package vocab

// StatLen is the number of I/O counters, cf. STATLEN.
const StatLen = 16

// Stat bits: a counter's index is write<<3 | hit<<2 | on_buffer<<1 | fullsize,
// cf. inc_stat and the STAT_* bits of dm-writeboost.h.
const (
	StatWrite    = 1 << 3 // the I/O was a write (else a read)
	StatHit      = 1 << 2 // the block was found in the cache
	StatOnBuffer = 1 << 1 // the hit was in the RAM buffer (else on the cache device)
	StatFullsize = 1 << 0 // the I/O covered the whole 4 KiB cache block
)

// StatIndex returns the index of the counter for an I/O of that kind.
func StatIndex(write, hit, onBuffer, fullsize bool) int {
	i := 0
	if write {
		i |= StatWrite
	}
	if hit {
		i |= StatHit
	}
	if onBuffer {
		i |= StatOnBuffer
	}
	if fullsize {
		i |= StatFullsize
	}
	return i
}

// StatName describes counter i, e.g. "write hit buffer full".
func StatName(i int) string {
	op, hit, where, size := "read", "miss", "cache", "partial"
	if i&StatWrite != 0 {
		op = "write"
	}
	if i&StatHit != 0 {
		hit = "hit"
	}
	if i&StatOnBuffer != 0 {
		where = "buffer"
	}
	if i&StatFullsize != 0 {
		size = "full"
	}
	return op + " " + hit + " " + where + " " + size
}

// StatusTunables are the five tunables the kernel's status line prints, in
// its order. NB: the kernel prints nr_cur_batched_writeback (the writeback
// daemon's current batch, which adapts) where the message tunable is
// nr_max_batched_writeback (its ceiling).
type StatusTunables struct {
	WritebackThreshold     uint64 `json:"writeback_threshold"`
	NrCurBatchedWriteback  uint64 `json:"nr_cur_batched_writeback"`
	SyncDataInterval       uint64 `json:"sync_data_interval"`
	UpdateSBRecordInterval uint64 `json:"update_sb_record_interval"`
	ReadCacheThreshold     uint64 `json:"read_cache_threshold"`
}

// StatusTunableNames is the kernel's order of the status line's tunables,
// cf. emit_tunables; StatusTunables.Field(i) is the value of the i-th.
var StatusTunableNames = [...]string{
	"writeback_threshold",
	"nr_cur_batched_writeback",
	"sync_data_interval",
	"update_sb_record_interval",
	"read_cache_threshold",
}

// Field returns the i-th value of the status line's tunables
// (StatusTunableNames[i]).
func (t *StatusTunables) Field(i int) *uint64 {
	switch i {
	case 0:
		return &t.WritebackThreshold
	case 1:
		return &t.NrCurBatchedWriteback
	case 2:
		return &t.SyncDataInterval
	case 3:
		return &t.UpdateSBRecordInterval
	default:
		return &t.ReadCacheThreshold
	}
}

// IOErrors counts failed I/Os by device and direction.
type IOErrors struct {
	CacheRead    uint64 `json:"cache_read"`
	CacheWrite   uint64 `json:"cache_write"`
	BackingRead  uint64 `json:"backing_read"`
	BackingWrite uint64 `json:"backing_write"`
	Writeback    uint64 `json:"writeback"` // failed writeback batches (each retried)
}

// Status is a snapshot of a volume: the fields of the kernel's status line
// under the names its documentation uses, the devices, and extras the
// kernel does not print. Every field is in the JSON, zero included; the
// two pointers are null when unknown (a status line read from standard
// input carries neither). The
// engine fills what it knows, wb-create the rest (name, devices, uptime,
// clients); the control socket carries it as JSON; wb-status prints it.
type Status struct {
	Name      string `json:"name"`
	Backing   string `json:"backing"`
	Cache     string `json:"cache"`
	SizeBytes uint64 `json:"size_bytes"` // the volume (= backing device) size

	CursorPos          uint64          `json:"cursor_pos"` // metablock index of the last write in the ring
	NrCacheBlocks      uint64          `json:"nr_cache_blocks"`
	NrSegments         uint64          `json:"nr_segments"`
	CurrentID          uint64          `json:"current_id"` // the segment the RAM buffer fills
	LastFlushedID      uint64          `json:"last_flushed_id"`
	LastWritebackID    uint64          `json:"last_writeback_id"`
	NrDirtyCacheBlocks uint64          `json:"nr_dirty_cache_blocks"`
	Stat               [StatLen]uint64 `json:"stat"` // index: see StatIndex
	NrPartialFlushed   uint64          `json:"nr_partial_flushed"`
	Tunables           StatusTunables  `json:"tunables"`

	// Extras, not part of the kernel's line.
	NrMaxBatchedWriteback uint64 `json:"nr_max_batched_writeback"`
	WriteAroundMode       bool   `json:"write_around_mode"`
	NrReadCacheCells      uint64 `json:"nr_read_cache_cells"`
	LastDurableID         uint64 `json:"last_durable_id"`      // segments synced on the cache device
	SuperblockRecordID    uint64 `json:"superblock_record_id"` // last_writeback_segment_id last recorded
	NrRAMBuffers          uint64 `json:"nr_ram_buffers"`
	RAMBufferBytes        uint64 `json:"ram_buffer_bytes"` // data in rambufs not yet on the cache device
	WritebackBytes        uint64 `json:"writeback_bytes"`  // written back since start
	WritebackBytesPerSec  uint64 `json:"writeback_bytes_per_sec"`
	WritebackAllowed      *bool  `json:"writeback_allowed"` // the modulator's verdict; nil: unknown
	BackingUtilPercent    uint64 `json:"backing_util_percent"`
	ReadCacheStaged       uint64 `json:"read_cache_staged"` // blocks staged by read caching
	IndexBytes            uint64 `json:"index_bytes"`       // memory of the in-memory index
	// CacheIO and BackingIO say how each device's I/O is submitted:
	// "io_uring", "io_uring+aio" (read hits of an O_DIRECT cache device
	// through native AIO), "blocking" (system calls that wait), or "nbd" (a
	// backing device reached over the network); empty when unknown.
	CacheIO   string   `json:"cache_io"`
	BackingIO string   `json:"backing_io"`
	Errors    IOErrors `json:"errors"`
	Failed    string   `json:"failed"` // why the volume refuses writes
	// WritebackError is why writeback fails (retried with backoff) and
	// WritebackFailingSeconds since when; empty and 0 while it works.
	WritebackError          string  `json:"writeback_error"`
	WritebackFailingSeconds float64 `json:"writeback_failing_seconds"`
	// BackingUnreachable says why a backing device on the network cannot
	// be reached now (its connection is down and being dialled again).
	BackingUnreachable string  `json:"backing_unreachable"`
	UptimeSeconds      float64 `json:"uptime_seconds"`
	// NrClients counts the NBD connections open now: every listener, the
	// handshake and transmission, and the kernel's (--attach). A running
	// volume always reports it, 0 included; nil (null) is unknown, as for
	// a status line read from standard input. A remove without --force is
	// refused while it is not 0 (control.RefuseRemove).
	NrClients *uint64 `json:"nr_clients"`

	// The engine's own timings, for its benchmarks and tests; not sent
	// over the control socket.
	SegmentWrites      uint64 `json:"-"`
	SegmentWriteMicros int64  `json:"-"` // total time in segment writes
	CacheSyncs         uint64 `json:"-"`
	CacheSyncMicros    int64  `json:"-"` // total time in cache device syncs
}

// Sectors is the volume size in 512-byte sectors, as dmsetup prints it.
func (s Status) Sectors() uint64 { return s.SizeBytes >> 9 }

// HitRatio returns hits/(hits+misses) over the reads (write false) or the
// writes (write true), and the number of I/Os counted; the ratio is 0 when
// nothing was counted.
func (s Status) HitRatio(write bool) (ratio float64, total uint64) {
	var hits uint64
	for i, v := range s.Stat {
		if (i&StatWrite != 0) != write {
			continue
		}
		total += v
		if i&StatHit != 0 {
			hits += v
		}
	}
	if total == 0 {
		return 0, 0
	}
	return float64(hits) / float64(total), total
}

// StatusSchema is the version of the JSON object wb-status prints
// (StatusReport). Adding a key keeps it; renaming or removing one, or
// changing a value's meaning, bumps it.
const StatusSchema = 1

// blockBytes is a cache block: 4 KiB (layout.BlockSize).
const blockBytes = 4096

// StatusReport is the JSON object wb-status --json prints: the schema
// version, every field of the status, and sizes in bytes derived from its
// block counts.
type StatusReport struct {
	Schema int `json:"schema"`
	Status
	DirtyBytes uint64 `json:"dirty_bytes"` // nr_dirty_cache_blocks * 4096, as bcache's dirty_data
}

// Report returns the status as wb-status --json prints it.
func (s Status) Report() StatusReport {
	return StatusReport{Schema: StatusSchema, Status: s, DirtyBytes: s.NrDirtyCacheBlocks * blockBytes}
}
