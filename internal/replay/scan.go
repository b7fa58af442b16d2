// Package replay rebuilds what a cache device holds from its log: the walk of
// docs/format.md "Replay", shared by wb-check and the engine. Scan reads the
// device and classifies every segment; Apply hands the newest copy of each
// cache block to the caller's index. Nothing here writes to a device.
//
// cf. dm-writeboost src/dm-writeboost-metadata.c: find_max_id,
// apply_valid_segments, apply_segment_header_device.
package replay

import (
	"fmt"
	"io"
	"sync"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
	"github.com/writeboost/writeboost/internal/superblock"
)

// TornWindow judges a bad segment by the whole segments after it that
// carry no durable record (layout.DurableRecordAt): the kernel target's,
// which writes one segment at a time, and writeboost's before the record,
// which had at most 8 in flight. A power cut can leave any segment in
// flight torn while a later one is whole; a bad segment followed by such
// segments only within this window is a torn tail, not damage. A segment
// with the record says itself which earlier segments were durable when it
// was written, whatever the writer's window (classifyTail).
const TornWindow = 8

// MaxSaneID bounds segment ids: at a million segments a second a writer
// needs 146,000 years to reach it; above it, a header is garbage (and id
// arithmetic could overflow).
const MaxSaneID = 1 << 62

// chunkSegments is how many segments one sequential read covers (8 MiB).
const chunkSegments = 16

// Segment is one segment header found on the device.
type Segment struct {
	Slot       uint64
	Header     layout.SegmentHeader
	ChecksumOK bool
}

// Severity tells a fault that loses or risks data from one replay handles.
type Severity int

const (
	// Warning: replay handles it safely (a torn tail).
	Warning Severity = iota
	// Damage: data is lost or at risk; the engine must not open the device.
	Damage
)

func (s Severity) String() string {
	if s == Damage {
		return "damage"
	}
	return "warning"
}

// Problem is one fault found by Scan or CheckBacking.
type Problem struct {
	Severity  Severity
	SegmentID uint64 // 0 when not about a segment
	Slot      uint64
	Msg       string
}

func (p Problem) String() string { return p.Msg }

// Log is the result of Scan.
type Log struct {
	Geometry    layout.Geometry
	Formatted   bool
	SuperRecord layout.SuperRecord
	// Super is the whole superblock area: the extension records too.
	Super           superblock.Area
	MaxID           uint64    // largest id in any header (0: empty log)
	Valid           []Segment // the valid prefix of the walk, in id order
	LastFlushedID   uint64    // id of the last valid segment (0 if none)
	LastWritebackID uint64    // every segment up to this id is written back
	Bad             *Segment  // first segment of the walk whose checksum fails
	Discarded       []Segment // segments after Bad in the walk, in walk order
	Problems        []Problem
}

// TornTail reports whether the log's only fault is a torn tail, as a power
// cut leaves: Bad is set, no problem is damage, and every discarded segment
// with a good checksum lies within TornWindow of Bad.
func (l *Log) TornTail() bool { return l.Bad != nil && !l.Damaged() }

// Damaged reports faults that lose or risk data.
func (l *Log) Damaged() bool {
	for _, p := range l.Problems {
		if p.Severity == Damage {
			return true
		}
	}
	return false
}

// FirstDamage returns the first damage problem, for an error message.
func (l *Log) FirstDamage() (Problem, bool) {
	for _, p := range l.Problems {
		if p.Severity == Damage {
			return p, true
		}
	}
	return Problem{}, false
}

func (l *Log) addProblem(sev Severity, s *Segment, format string, args ...any) {
	p := Problem{Severity: sev, Msg: fmt.Sprintf(format, args...)}
	if s != nil {
		p.SegmentID, p.Slot = s.Header.ID, s.Slot
	}
	l.Problems = append(l.Problems, p)
}

// Scan reads the superblock and the whole segment area of a cache device of
// size bytes with large sequential reads, decodes every segment header,
// verifies every checksum, and runs the ring walk of docs/format.md "Replay"
// steps 1-3. It returns an error only when the device cannot be read or is
// too small to be a cache; an unformatted device gives Formatted=false.
func Scan(dev io.ReaderAt, size int64) (*Log, error) {
	return ScanProgress(dev, size, nil)
}

// ScanProgress is Scan; progress, when not nil, is called after every
// segment read with the segments read so far and their number.
func ScanProgress(dev io.ReaderAt, size int64, progress func(done, total uint64)) (*Log, error) {
	g, err := layout.NewGeometry(size)
	if err != nil {
		return nil, err
	}
	l := &Log{Geometry: g}
	if l.Super, err = superblock.Read(dev); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if l.Formatted = l.Super.Formatted; !l.Formatted {
		return l, nil
	}
	l.SuperRecord = l.Super.Record
	bySlot := make([]*Segment, g.NrSegments)
	err = readSegments(dev, g, func(slot uint64, seg []byte) {
		if progress != nil {
			progress(slot+1, g.NrSegments)
		}
		id := layout.HeaderID(seg)
		if id == 0 {
			return
		}
		s := &Segment{Slot: slot}
		h, err := layout.DecodeSegmentHeader(seg)
		s.Header = h
		if err != nil {
			l.addProblem(Damage, s, "segment %d in slot %d: %v", id, slot, err)
		} else if sum, err := layout.SegmentChecksum(seg, h.Length); err == nil && sum == h.Checksum {
			s.ChecksumOK = true
		}
		if want := g.SlotOf(id); want != slot {
			l.addProblem(Damage, s, "segment %d in slot %d, but its id belongs in slot %d", id, slot, want)
		}
		if id >= MaxSaneID {
			l.addProblem(Damage, s, "segment id %d in slot %d is beyond any id a writer reaches", id, slot)
		}
		l.MaxID = max(l.MaxID, id)
		bySlot[slot] = s
	})
	if err != nil {
		return nil, err
	}
	l.walk(bySlot)
	return l, nil
}

// walk is docs/format.md "Replay" steps 2 and 3.
func (l *Log) walk(bySlot []*Segment) {
	g := l.Geometry
	if l.MaxID != 0 {
		start := g.SlotOf(l.MaxID + 1)
		var prev uint64
		for i := range g.NrSegments {
			s := bySlot[(start+i)%g.NrSegments]
			switch {
			case s == nil:
				continue
			case l.Bad != nil:
				l.Discarded = append(l.Discarded, *s)
				continue
			case !s.ChecksumOK:
				l.Bad = s
			case s.Header.ID <= prev:
				l.addProblem(Damage, s, "segment %d in slot %d follows segment %d in the ring walk: ids must grow", s.Header.ID, s.Slot, prev)
				l.Bad = s
			case g.SlotOf(s.Header.ID) != s.Slot:
				l.Bad = s // already reported by Scan
			default:
				l.Valid = append(l.Valid, *s)
				prev = s.Header.ID
			}
		}
	}
	if n := len(l.Valid); n > 0 {
		l.LastFlushedID = l.Valid[n-1].Header.ID
	}
	// Between two neighbours of the walk, the slots of the ids in between
	// were skipped as empty: the engine leaves such gaps when it zeroes the
	// headers of a discarded torn tail and continues after the largest id
	// it saw. A jump of a ring's length or more is lost segments (e.g. a
	// device cut to a size whose ring divides the old one, where every id
	// still sits in its slot).
	for i := 1; i < len(l.Valid); i++ {
		prev, cur := &l.Valid[i-1], &l.Valid[i]
		if cur.Header.ID-prev.Header.ID >= g.NrSegments {
			l.addProblem(Damage, cur, "segments %d..%d are missing from the ring walk (between slots %d and %d): lost, or the device was cut or overwritten",
				prev.Header.ID+1, cur.Header.ID-1, prev.Slot, cur.Slot)
		}
	}
	l.judgeCleanStop()
	if l.Bad != nil {
		l.classifyTail()
	}
	for i := range l.Valid {
		l.checkMetablocks(&l.Valid[i], 0)
	}
	l.LastWritebackID = l.LastFlushedID - min(l.LastFlushedID, g.NrSegments)
	// NB: a record above every id on the device would make replay take
	// dirty blocks for written back, and the ring would later overwrite
	// them: no writer leaves one (the engine records only synced segments).
	// Such a record is ignored (for an offline rescue of the valid prefix).
	if rec := l.SuperRecord.LastWritebackSegmentID; rec > l.MaxID {
		l.addProblem(Damage, nil, "superblock record says segment %d was written back, but the newest segment is %d: dirty blocks would be taken for clean", rec, l.MaxID)
	} else {
		l.LastWritebackID = min(max(l.LastWritebackID, rec), l.LastFlushedID)
	}
}

// judgeCleanStop checks the log against a clean-stop record: when the
// engine stopped cleanly every segment up to its last id was whole, so no
// power cut can have torn one of them since (docs/format.md "Clean stop").
func (l *Log) judgeCleanStop() {
	if err := l.Super.CleanStopErr; err != nil {
		l.addProblem(Warning, nil, "clean-stop record unreadable (%v): the log is judged as after a crash", err)
		return
	}
	c := l.Super.CleanStop
	if c == nil {
		return
	}
	if c.LastID > l.MaxID {
		l.addProblem(Damage, nil, "the engine stopped cleanly after segment %d, but the newest segment on the device is %d: segments are missing", c.LastID, l.MaxID)
	}
}

// CleanStopCovers reports whether a clean-stop record vouches for segment
// id: it was whole when the engine stopped cleanly.
func (l *Log) CleanStopCovers(id uint64) bool {
	return l.Super.CleanStop != nil && id <= l.Super.CleanStop.LastID
}

// classifyTail tells a torn tail from mid-log corruption.
func (l *Log) classifyTail() {
	bad := l.Bad
	if l.CleanStopCovers(bad.Header.ID) {
		l.addProblem(Damage, bad, "segment %d in slot %d fails its checksum, but the engine stopped cleanly after segment %d: no power cut can have torn it; its data and the %d segments after it would be lost",
			bad.Header.ID, bad.Slot, l.Super.CleanStop.LastID, len(l.Discarded))
		return
	}
	var later []uint64
	for _, s := range l.Discarded {
		if !s.ChecksumOK {
			continue
		}
		h := s.Header
		if h.HasDurable {
			if h.Durable >= bad.Header.ID {
				l.addProblem(Damage, bad, "segment %d in slot %d fails its checksum, but segment %d, written after it, records that every segment up to %d was durable by then: it was damaged, not torn by a power cut; its data and the %d segments after it would be lost",
					bad.Header.ID, bad.Slot, h.ID, h.Durable, len(l.Discarded))
				return
			}
			continue // written while the bad one was still in flight
		}
		if h.ID >= bad.Header.ID+TornWindow {
			later = append(later, h.ID)
		}
	}
	if len(later) > 0 {
		l.addProblem(Damage, bad, "segment %d in slot %d fails its checksum but %d newer valid segments follow it (%d..%d): mid-log corruption, their data would be lost",
			bad.Header.ID, bad.Slot, len(later), later[0], later[len(later)-1])
		return
	}
	l.addProblem(Warning, bad, "segment %d in slot %d fails its checksum: a torn write, discarded with the %d segments after it", bad.Header.ID, bad.Slot, len(l.Discarded))
}

// checkMetablocks validates the metablocks of a valid segment; sectors is
// the backing device's size in sectors, 0 when unknown.
func (l *Log) checkMetablocks(s *Segment, sectors uint64) {
	for i := range int(s.Header.Length) {
		mb := s.Header.Metablocks[i]
		switch {
		case sectors == 0 && mb.Sector%layout.SectorsPerBlock != 0:
			l.addProblem(Damage, s, "segment %d metablock %d: sector %d is not a multiple of %d", s.Header.ID, i, mb.Sector, layout.SectorsPerBlock)
		case sectors != 0 && mb.Sector >= sectors:
			l.addProblem(Damage, s, "segment %d metablock %d: sector %d lies past the backing device's end (%d sectors)", s.Header.ID, i, mb.Sector, sectors)
		}
	}
}

// CheckBacking adds a Damage problem for every metablock of a valid segment
// that lies past the end of a backing device of the given size.
func (l *Log) CheckBacking(backingBytes int64) {
	sectors := uint64(backingBytes) >> layout.SectorShift
	if sectors == 0 {
		sectors = 1 // never 0: 0 means unknown to checkMetablocks
	}
	for i := range l.Valid {
		l.checkMetablocks(&l.Valid[i], sectors)
	}
}

// readSegments reads the segment area in chunks of chunkSegments segments,
// one read ahead of the caller, and calls fn for every segment in slot order.
func readSegments(dev io.ReaderAt, g layout.Geometry, fn func(slot uint64, seg []byte)) error {
	type chunk struct {
		first, n uint64
		buf      []byte
		err      error
	}
	const depth = 2
	free := make(chan []byte, depth)
	for range depth {
		free <- blockdev.AlignedBuffer(int(min(chunkSegments, g.NrSegments)) * layout.SegmentSize)
	}
	full := make(chan chunk, depth)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	// The reader goroutine owns the device reads; it stops at the end of the
	// area, on a read error, or when done is closed, and closes full.
	go func() {
		defer wg.Done()
		defer close(full)
		for first := uint64(0); first < g.NrSegments; first += chunkSegments {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			n := min(chunkSegments, g.NrSegments-first)
			c := chunk{first: first, n: n, buf: buf}
			if err := sectorio.ReadFull(dev, buf[:n*layout.SegmentSize], g.SegmentOffset(first)); err != nil {
				c.err = fmt.Errorf("replay: read segments %d..%d: %w", first, first+n-1, err)
			}
			select {
			case full <- c:
			case <-done:
				return
			}
			if c.err != nil {
				return
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()
	for c := range full {
		if c.err != nil {
			return c.err
		}
		for i := range c.n {
			fn(c.first+i, c.buf[i*layout.SegmentSize:(i+1)*layout.SegmentSize])
		}
		free <- c.buf
	}
	return nil
}
