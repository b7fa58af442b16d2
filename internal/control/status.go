package control

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/writeboost/writeboost/internal/vocab"
)

// TargetName is the device-mapper target type printed in status and table
// lines.
const TargetName = "writeboost"

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

// statusTunableNames is the kernel's order, cf. emit_tunables.
var statusTunableNames = [...]string{
	"writeback_threshold",
	"nr_cur_batched_writeback",
	"sync_data_interval",
	"update_sb_record_interval",
	"read_cache_threshold",
}

func (t *StatusTunables) field(i int) *uint64 {
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
	CacheRead    uint64 `json:"cache_read,omitempty"`
	CacheWrite   uint64 `json:"cache_write,omitempty"`
	BackingRead  uint64 `json:"backing_read,omitempty"`
	BackingWrite uint64 `json:"backing_write,omitempty"`
	Writeback    uint64 `json:"writeback,omitempty"` // failed writeback batches (each retried)
}

// Status is a snapshot of a volume: the fields of the kernel's status line
// under the names its documentation uses, the devices, and extras the
// kernel does not print (omitted from JSON when zero or unknown).
type Status struct {
	Name      string `json:"name,omitempty"`
	Backing   string `json:"backing,omitempty"`
	Cache     string `json:"cache,omitempty"`
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
	NrMaxBatchedWriteback uint64   `json:"nr_max_batched_writeback,omitempty"`
	WriteAroundMode       bool     `json:"write_around_mode,omitempty"`
	NrReadCacheCells      uint64   `json:"nr_read_cache_cells,omitempty"`
	LastDurableID         uint64   `json:"last_durable_id,omitempty"`      // segments synced on the cache device
	SuperblockRecordID    uint64   `json:"superblock_record_id,omitempty"` // last_writeback_segment_id last recorded
	NrRAMBuffers          uint64   `json:"nr_ram_buffers,omitempty"`
	RAMBufferBytes        uint64   `json:"ram_buffer_bytes,omitempty"` // data in rambufs not yet on the cache device
	WritebackBytes        uint64   `json:"writeback_bytes,omitempty"`  // written back since start
	WritebackBytesPerSec  uint64   `json:"writeback_bytes_per_sec,omitempty"`
	WritebackAllowed      *bool    `json:"writeback_allowed,omitempty"` // the modulator's verdict; nil: unknown
	BackingUtilPercent    uint64   `json:"backing_util_percent,omitempty"`
	ReadCacheStaged       uint64   `json:"read_cache_staged,omitempty"` // blocks staged by read caching
	IndexBytes            uint64   `json:"index_bytes,omitempty"`       // memory of the in-memory index
	Errors                IOErrors `json:"errors,omitzero"`
	Failed                string   `json:"failed,omitempty"` // why the volume refuses writes
	UptimeSeconds         float64  `json:"uptime_seconds,omitempty"`
	// NrClients counts the NBD connections open now: every listener, the
	// handshake and transmission, and the kernel's (--attach). A running
	// volume always reports it, 0 included; nil (no key) is unknown, as for
	// a status line read from standard input. A remove without --force is
	// refused while it is not 0 (RefuseRemove).
	NrClients *uint64 `json:"nr_clients,omitempty"`
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

// statusFieldNames names the leading numeric fields of the status line, in
// order, for error messages and the documentation.
var statusFieldNames = [...]string{
	"cursor_pos",
	"nr_cache_blocks",
	"nr_segments",
	"current_id",
	"last_flushed_id",
	"last_writeback_id",
	"nr_dirty_cache_blocks",
}

// nrStatusTokens is the number of whitespace-separated tokens of a status
// line without the "START SECTORS writeboost" prefix: 7 fields, 16 counters,
// nr_partial_flushed, the tunable count and five key-value pairs.
const nrStatusTokens = len(statusFieldNames) + StatLen + 1 + 1 + 2*len(statusTunableNames)

// FormatStatusLine returns the line `dmsetup status` prints for the kernel
// target (STATUSTYPE_INFO), prefixed like dmsetup: "0 SECTORS writeboost".
func FormatStatusLine(s Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "0 %d %s %d %d %d %d %d %d %d", s.Sectors(), TargetName,
		s.CursorPos, s.NrCacheBlocks, s.NrSegments, s.CurrentID,
		s.LastFlushedID, s.LastWritebackID, s.NrDirtyCacheBlocks)
	for _, v := range s.Stat {
		fmt.Fprintf(&b, " %d", v)
	}
	fmt.Fprintf(&b, " %d %d", s.NrPartialFlushed, 2*len(statusTunableNames))
	for i, name := range statusTunableNames {
		fmt.Fprintf(&b, " %s %d", name, *s.Tunables.field(i))
	}
	return b.String()
}

// stripPrefix removes an optional "NAME:" (dmsetup status without a device
// prints it) and an optional "START SECTORS writeboost" from fields. It
// returns the name, the size in sectors (0 if absent), and the rest.
func stripPrefix(fields []string) (name string, sectors uint64, hasPrefix bool, rest []string, err error) {
	if len(fields) > 0 && strings.HasSuffix(fields[0], ":") {
		name = strings.TrimSuffix(fields[0], ":")
		fields = fields[1:]
	}
	if len(fields) >= 3 && fields[2] == TargetName {
		start, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return "", 0, false, nil, fmt.Errorf("%w: start sector %q is not a number", ErrSyntax, fields[0])
		}
		if start != 0 {
			return "", 0, false, nil, fmt.Errorf("%w: start sector %d: only a single target starting at 0 is supported", ErrSyntax, start)
		}
		sectors, err = strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return "", 0, false, nil, fmt.Errorf("%w: length %q is not a number of sectors", ErrSyntax, fields[1])
		}
		if sectors > 1<<54 {
			return "", 0, false, nil, fmt.Errorf("%w: length %d sectors is too large", ErrSyntax, sectors)
		}
		return name, sectors, true, fields[3:], nil
	}
	if len(fields) >= 3 && isNumber(fields[0]) && isNumber(fields[1]) && !isNumber(fields[2]) {
		return "", 0, false, nil, fmt.Errorf("%w: target type %q, want %q", ErrSyntax, fields[2], TargetName)
	}
	return name, 0, false, fields, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// ParseStatusLine parses a status line as FormatStatusLine writes it and
// `dmsetup status` prints it for the kernel target, with or without the
// "0 SECTORS writeboost" prefix (and an optional "NAME:" before it). A
// malformed line gives an error that wraps ErrSyntax and names the field;
// fields count from 1 after the prefix.
func ParseStatusLine(line string) (Status, error) {
	var s Status
	name, sectors, _, f, err := stripPrefix(strings.Fields(line))
	if err != nil {
		return s, err
	}
	s.Name = name
	s.SizeBytes = sectors << 9
	num := func(i int, what string) (uint64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("%w: field %d (%s) missing: the line has %d fields, want %d", ErrSyntax, i+1, what, len(f), nrStatusTokens)
		}
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: field %d (%s): %q is not a number", ErrSyntax, i+1, what, f[i])
		}
		return v, nil
	}
	heads := [...]*uint64{&s.CursorPos, &s.NrCacheBlocks, &s.NrSegments, &s.CurrentID,
		&s.LastFlushedID, &s.LastWritebackID, &s.NrDirtyCacheBlocks}
	i := 0
	for k, p := range heads {
		if *p, err = num(i, statusFieldNames[k]); err != nil {
			return s, err
		}
		i++
	}
	for k := range s.Stat {
		if s.Stat[k], err = num(i, fmt.Sprintf("stat[%d] %s", k, StatName(k))); err != nil {
			return s, err
		}
		i++
	}
	if s.NrPartialFlushed, err = num(i, "nr_partial_flushed"); err != nil {
		return s, err
	}
	i++
	n, err := num(i, "number of tunable args")
	if err != nil {
		return s, err
	}
	i++
	if n != 2*uint64(len(statusTunableNames)) {
		return s, fmt.Errorf("%w: field %d (number of tunable args): %d, want %d", ErrSyntax, i, n, 2*len(statusTunableNames))
	}
	for k, want := range statusTunableNames {
		if i >= len(f) {
			return s, fmt.Errorf("%w: field %d (tunable name %s) missing", ErrSyntax, i+1, want)
		}
		if f[i] != want {
			return s, fmt.Errorf("%w: field %d (tunable name): %q, want %q", ErrSyntax, i+1, f[i], want)
		}
		i++
		if *s.Tunables.field(k), err = num(i, want); err != nil {
			return s, err
		}
		i++
	}
	if i != len(f) {
		return s, fmt.Errorf("%w: field %d: unexpected %q after the last tunable", ErrSyntax, i+1, f[i])
	}
	return s, nil
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

// TableLine is what `dmsetup table` prints for the kernel target
// (STATUSTYPE_TABLE): the devices and the optional arguments as given at
// creation.
type TableLine struct {
	Name      string   // from an optional "NAME:" prefix; not printed
	SizeBytes uint64   // the volume size
	Backing   string   // backing device
	Cache     string   // cache device
	Args      []string // optional KEY VALUE pairs, without their count
}

// FormatTableLine returns "0 SECTORS writeboost BACKING CACHE [N k v ...]".
func FormatTableLine(t TableLine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "0 %d %s %s %s", t.SizeBytes>>9, TargetName, t.Backing, t.Cache)
	if len(t.Args) > 0 {
		fmt.Fprintf(&b, " %d", len(t.Args))
		for _, a := range t.Args {
			b.WriteString(" ")
			b.WriteString(a)
		}
	}
	return b.String()
}

// ParseTableLine parses a table line, with or without the
// "0 SECTORS writeboost" prefix, and validates the optional arguments with
// the kernel's ranges (vocab.ParseOptionalArgs).
func ParseTableLine(line string) (TableLine, error) {
	var t TableLine
	name, sectors, _, f, err := stripPrefix(strings.Fields(line))
	if err != nil {
		return t, err
	}
	t.Name, t.SizeBytes = name, sectors<<9
	if len(f) < 2 {
		return t, fmt.Errorf("%w: table line needs BACKING and CACHE, got %d fields", ErrSyntax, len(f))
	}
	t.Backing, t.Cache = f[0], f[1]
	f = f[2:]
	if len(f) == 0 {
		return t, nil
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return t, fmt.Errorf("%w: field 3 (number of optional args): %q is not a number", ErrSyntax, f[0])
	}
	if n != uint64(len(f)-1) {
		return t, fmt.Errorf("%w: field 3 (number of optional args): %d, but %d args follow", ErrSyntax, n, len(f)-1)
	}
	if _, _, err := vocab.ParseOptionalArgs(f[1:]); err != nil {
		return t, err
	}
	if n > 0 {
		t.Args = append([]string(nil), f[1:]...)
	}
	return t, nil
}
