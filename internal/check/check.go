// Package check is wb-check's logic: it validates a cache device offline,
// runs the replay walk, says what a start would recover (Check and Report),
// writes every dirty sector back to the backing device (Writeback), and
// formats a cache device (Format) for wb-format-cache.
//
// The walk, the newest-copy rules and every torn-or-damaged verdict are
// internal/replay's, shared with the engine: a log the engine refuses is
// damaged here, and the other way round. This package only reports, adds
// the exit status of fsck(8)'s kind, and writes back offline.
package check

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"

	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/replay"
)

// Exit statuses of wb-check, like fsck(8)'s: bits, so a caller can test them.
const (
	ExitOK          = 0  // consistent
	ExitTorn        = 1  // only a torn tail, as a power cut leaves: replay discards it safely
	ExitDamaged     = 4  // damage that loses or risks data
	ExitOperational = 8  // cannot open, read or write
	ExitUsage       = 16 // bad arguments
)

// States of a segment in Report.Segments.
const (
	StateWrittenBack = "written-back" // valid, id <= last_writeback_id: clean
	StateValid       = "valid"        // valid, may hold dirty blocks
	StateTorn        = "torn"         // part of a torn tail: discarded safely
	StateCorrupt     = "corrupt"      // checksum fails, newer valid segments follow
	StateDiscarded   = "discarded"    // whole, but after a bad segment in the walk
)

// Statuses of a Report.
const (
	StatusConsistent = "consistent"
	StatusTorn       = "torn-tail"
	StatusDamaged    = "damaged"
)

// Options tune Check.
type Options struct {
	// BackingSize is the backing device's size in bytes, 0 when unknown:
	// every metablock must then lie inside it.
	BackingSize int64
	// Progress, when set, is called as the segments are read, with the
	// segments read so far and their number.
	Progress func(done, total int64)
}

// Report is what Check found; wb-check --json prints it as one object.
type Report struct {
	DeviceSize          int64    `json:"device_size"`
	Formatted           bool     `json:"formatted"`
	NrSegments          uint64   `json:"nr_segments"`
	NrCacheBlocks       uint64   `json:"nr_cache_blocks"`
	SuperblockRecord    uint64   `json:"superblock_record"`
	MaxID               uint64   `json:"max_id"`
	LastFlushedID       uint64   `json:"last_flushed_id"`
	LastWritebackID     uint64   `json:"last_writeback_id"`
	ValidSegments       int      `json:"valid_segments"`
	TornSegmentID       *uint64  `json:"torn_segment_id"`
	CorruptSegmentIDs   []uint64 `json:"corrupt_segment_ids"`
	DiscardedSegmentIDs []uint64 `json:"discarded_segment_ids"`
	NrDirtyBlocks       int      `json:"nr_dirty_blocks"`
	// NrDirtySectors counts the dirty sectors replay would write back,
	// the Pieces under partial copies included.
	NrDirtySectors int64 `json:"nr_dirty_sectors"`
	// NrLostDirtyBlocks counts the cache blocks with a dirty copy in the
	// corrupt and discarded segments, torn tails excepted: what damage
	// loses (some may still be served, older, from the valid prefix).
	NrLostDirtyBlocks int `json:"nr_lost_dirty_blocks"`
	// CleanStopLastID: the engine stopped cleanly after this segment and
	// nothing wrote one since (a checksum failure up to it is damage);
	// null after a crash or a kernel run.
	CleanStopLastID *uint64 `json:"clean_stop_last_id"`
	// Binding names the backing device the cache belongs to ("": not
	// bound, e.g. formatted or run by the kernel target).
	Binding     string   `json:"binding"`
	BackingSize int64    `json:"backing_size"`
	Status      string   `json:"status"`
	ExitStatus  int      `json:"exit_status"`
	Problems    []string `json:"problems"`
	// Segments is filled by Result.FillSegments (wb-check --segments).
	Segments []SegmentRow `json:"segments,omitempty"`
}

// SegmentRow is one line of wb-check --segments.
type SegmentRow struct {
	Slot        uint64 `json:"slot"`
	ID          uint64 `json:"id"`
	Length      int    `json:"length"`
	DirtyBlocks int    `json:"dirty_blocks"`
	State       string `json:"state"`
}

// Result is a Report with what it was computed from, for Writeback and
// the per-segment views.
type Result struct {
	Report Report
	// Log is nil when the device is too small to be a cache.
	Log *replay.Log
	// Index holds the newest copy of every cache block of the valid
	// prefix; Pieces the older dirty sectors under dirty partial copies.
	Index  replay.MapIndex
	Pieces []replay.Piece
	// damaged is true when a problem of this package (not replay's) is
	// damage.
	damaged bool
}

// Check reads a cache device of size bytes and validates it. It returns an
// error only when the device cannot be read; every fault of the bytes is
// a problem in the report.
func Check(dev io.ReaderAt, size int64, opts Options) (*Result, error) {
	r := &Result{Report: Report{DeviceSize: size, BackingSize: opts.BackingSize, Problems: []string{},
		CorruptSegmentIDs: []uint64{}, DiscardedSegmentIDs: []uint64{}}}
	rep := &r.Report
	var progress func(done, total uint64)
	if opts.Progress != nil {
		progress = func(done, total uint64) { opts.Progress(int64(done), int64(total)) }
	}
	log, err := replay.ScanProgress(dev, size, progress)
	if errors.Is(err, layout.ErrTooSmall) {
		r.damage("device of %d bytes is too small to be a cache device (at least %d bytes)", size, layout.MinDeviceSize)
		r.finish()
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	r.Log = log
	rep.Formatted = log.Formatted
	rep.NrSegments = log.Geometry.NrSegments
	rep.NrCacheBlocks = log.Geometry.NrCacheBlocks()
	if !log.Formatted {
		r.damage("not formatted: sector 0 does not start with the magic %#08x", layout.Magic)
		r.finish()
		return r, nil
	}
	if opts.BackingSize > 0 {
		log.CheckBacking(opts.BackingSize)
	}
	rep.SuperblockRecord = log.SuperRecord.LastWritebackSegmentID
	rep.MaxID = log.MaxID
	rep.LastFlushedID = log.LastFlushedID
	rep.LastWritebackID = log.LastWritebackID
	rep.ValidSegments = len(log.Valid)
	for _, p := range log.Problems {
		rep.Problems = append(rep.Problems, p.Msg)
	}
	if c := log.Super.CleanStop; c != nil {
		id := c.LastID
		rep.CleanStopLastID = &id
	}
	if b := log.Super.Binding; b != nil {
		rep.Binding = b.String()
	}
	if err := log.Super.BindingErr; err != nil {
		rep.Problems = append(rep.Problems, fmt.Sprintf("binding record unreadable: %v", err))
	}

	torn := log.TornTail() && !r.damaged
	if log.Bad != nil {
		if torn {
			id := log.Bad.Header.ID
			rep.TornSegmentID = &id
		}
		lost := map[uint64]bool{}
		for _, s := range r.afterBad() {
			if !s.ChecksumOK && !torn {
				rep.CorruptSegmentIDs = append(rep.CorruptSegmentIDs, s.Header.ID)
			}
			if s.Header.ID != log.Bad.Header.ID || s.Slot != log.Bad.Slot {
				rep.DiscardedSegmentIDs = append(rep.DiscardedSegmentIDs, s.Header.ID)
			}
			if !torn && s.Header.ID > log.LastWritebackID {
				for i := range min(int(s.Header.Length), layout.NrCachesPerSegment) {
					if mb := s.Header.Metablocks[i]; mb.DirtyBits != 0 {
						lost[mb.Sector/layout.SectorsPerBlock] = true
					}
				}
			}
		}
		rep.NrLostDirtyBlocks = len(lost)
	}
	if err := r.apply(); err != nil {
		return nil, err
	}
	r.finish()
	return r, nil
}

// damage records a problem of this package that loses or risks data.
func (r *Result) damage(format string, args ...any) {
	r.damaged = true
	r.Report.Problems = append(r.Report.Problems, fmt.Sprintf(format, args...))
}

// afterBad returns Bad and Discarded, in walk order.
func (r *Result) afterBad() []replay.Segment {
	if r.Log.Bad == nil {
		return nil
	}
	return append([]replay.Segment{*r.Log.Bad}, r.Log.Discarded...)
}

func dirtyMetablocks(h layout.SegmentHeader) int {
	n := 0
	for i := range min(int(h.Length), layout.NrCachesPerSegment) {
		if h.Metablocks[i].DirtyBits != 0 {
			n++
		}
	}
	return n
}

func (r *Result) apply() error {
	r.Index = replay.MapIndex{}
	r.Pieces = r.Log.ApplyValidPrefix(r.Index)
	for _, c := range r.Index {
		if c.DirtyBits != 0 {
			r.Report.NrDirtyBlocks++
			r.Report.NrDirtySectors += int64(bits.OnesCount8(c.DirtyBits))
		}
	}
	for _, p := range r.Pieces {
		r.Report.NrDirtySectors += int64(bits.OnesCount8(p.Mask))
	}
	return nil
}

// finish sets the status and the exit status.
func (r *Result) finish() {
	rep := &r.Report
	switch {
	case r.damaged || r.Log == nil || !r.Log.Formatted || r.Log.Damaged():
		rep.Status, rep.ExitStatus = StatusDamaged, ExitDamaged
	case r.Log.Bad != nil:
		rep.Status, rep.ExitStatus = StatusTorn, ExitTorn
	default:
		rep.Status, rep.ExitStatus = StatusConsistent, ExitOK
	}
}

// Damaged reports whether the device holds damage (exit status 4).
func (r *Result) Damaged() bool { return r.Report.ExitStatus == ExitDamaged }

// state names a segment's state for the tables.
func (r *Result) state(s replay.Segment, valid bool) string {
	switch {
	case valid && s.Header.ID <= r.Log.LastWritebackID:
		return StateWrittenBack
	case valid:
		return StateValid
	case r.Report.TornSegmentID != nil && !s.ChecksumOK:
		return StateTorn
	case !s.ChecksumOK:
		return StateCorrupt
	}
	return StateDiscarded
}

// rows returns every segment header with an id, in slot order.
func (r *Result) rows() []SegmentRow {
	if r.Log == nil || !r.Log.Formatted {
		return nil
	}
	var rows []SegmentRow
	add := func(s replay.Segment, valid bool) {
		dirty := 0
		if !valid || s.Header.ID > r.Log.LastWritebackID {
			dirty = dirtyMetablocks(s.Header)
		}
		rows = append(rows, SegmentRow{Slot: s.Slot, ID: s.Header.ID, Length: int(s.Header.Length),
			DirtyBlocks: dirty, State: r.state(s, valid)})
	}
	for _, s := range r.Log.Valid {
		add(s, true)
	}
	for _, s := range r.afterBad() {
		add(s, false)
	}
	slices.SortFunc(rows, func(a, b SegmentRow) int { return cmp.Compare(a.Slot, b.Slot) })
	return rows
}

// FillSegments adds the segment table to the report.
func (r *Result) FillSegments() { r.Report.Segments = r.rows() }

// SegmentDetail is one segment's header and metablocks (wb-check --segment).
type SegmentDetail struct {
	Slot       uint64            `json:"slot"`
	ID         uint64            `json:"id"`
	Checksum   uint32            `json:"checksum"`
	ChecksumOK bool              `json:"checksum_ok"`
	Length     int               `json:"length"`
	State      string            `json:"state"`
	Metablocks []MetablockDetail `json:"metablocks"`
}

// MetablockDetail is one metablock of a SegmentDetail.
type MetablockDetail struct {
	Index     int    `json:"index"`
	Sector    uint64 `json:"sector"`
	DirtyBits uint8  `json:"dirty_bits"`
	// Newest tells whether this copy is the block's newest in the valid
	// prefix (what a start serves).
	Newest bool `json:"newest"`
}

// ErrNoSegment is returned by Segment for an id not on the device.
var ErrNoSegment = errors.New("check: no segment with this id")

// Segment returns the header and metablocks of the segment with id.
func (r *Result) Segment(id uint64) (*SegmentDetail, error) {
	if r.Log == nil || !r.Log.Formatted || id == 0 {
		return nil, fmt.Errorf("segment %d: %w", id, ErrNoSegment)
	}
	find := func(segs []replay.Segment, valid bool) *SegmentDetail {
		for _, s := range segs {
			if s.Header.ID != id {
				continue
			}
			d := &SegmentDetail{Slot: s.Slot, ID: id, Checksum: s.Header.Checksum, ChecksumOK: s.ChecksumOK,
				Length: int(s.Header.Length), State: r.state(s, valid), Metablocks: []MetablockDetail{}}
			for i := range min(int(s.Header.Length), layout.NrCachesPerSegment) {
				mb := s.Header.Metablocks[i]
				c, ok := r.Index[mb.Sector/layout.SectorsPerBlock]
				d.Metablocks = append(d.Metablocks, MetablockDetail{Index: i, Sector: mb.Sector, DirtyBits: mb.DirtyBits,
					Newest: valid && ok && c.SegmentID == id && int(c.Index) == i})
			}
			return d
		}
		return nil
	}
	if d := find(r.Log.Valid, true); d != nil {
		return d, nil
	}
	if d := find(r.afterBad(), false); d != nil {
		return d, nil
	}
	return nil, fmt.Errorf("segment %d: %w", id, ErrNoSegment)
}
