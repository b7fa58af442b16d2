package replay

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/layout"
)

// image is a cache device in memory, built segment by segment for tests.
type image struct {
	buf []byte
	g   layout.Geometry
}

func newImage(t testing.TB, nrSegments int) *image {
	t.Helper()
	size := int64(layout.SuperblockSize + nrSegments*layout.SegmentSize + 4096) // a tail too
	g, err := layout.NewGeometry(size)
	if err != nil {
		t.Fatal(err)
	}
	im := &image{buf: make([]byte, size), g: g}
	layout.EncodeMagic(im.buf)
	return im
}

type mbWrite struct {
	sector uint64
	dirty  uint8
	fill   byte
}

// put writes segment id with the given blocks, each slot filled with fill.
func (im *image) put(id uint64, blocks ...mbWrite) {
	im.putHeader(layout.SegmentHeader{ID: id}, blocks...)
}

// putDurable is put with a durable record naming durable.
func (im *image) putDurable(id, durable uint64, blocks ...mbWrite) {
	im.putHeader(layout.SegmentHeader{ID: id, HasDurable: true, Durable: durable}, blocks...)
}

func (im *image) putHeader(h layout.SegmentHeader, blocks ...mbWrite) {
	id := h.ID
	slot := im.g.SlotOf(id)
	seg := im.buf[im.g.SegmentOffset(slot):][:layout.SegmentSize]
	clear(seg)
	h.Length = uint8(len(blocks))
	for i, b := range blocks {
		h.Metablocks[i] = layout.Metablock{Sector: b.sector, DirtyBits: b.dirty}
		copy(seg[(i+1)*layout.BlockSize:], bytes.Repeat([]byte{b.fill}, layout.BlockSize))
	}
	h.Encode(seg)
	sum, _ := layout.SegmentChecksum(seg, h.Length)
	layout.PutFirstSector(seg, id, sum, h.Length)
}

func (im *image) corrupt(id uint64) {
	off := im.g.SegmentOffset(im.g.SlotOf(id)) + layout.BlockSize + 7
	im.buf[off] ^= 0xFF
}

func (im *image) record(id uint64) {
	layout.SuperRecord{LastWritebackSegmentID: id}.Encode(im.buf[layout.SuperRecordOffset:])
}

func (im *image) scan(t testing.TB) *Log {
	t.Helper()
	l, err := Scan(bytes.NewReader(im.buf), int64(len(im.buf)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func ids(segs []Segment) []uint64 {
	var out []uint64
	for _, s := range segs {
		out = append(out, s.Header.ID)
	}
	return out
}

func TestScanEmptyAndUnformatted(t *testing.T) {
	im := newImage(t, 4)
	l := im.scan(t)
	if !l.Formatted || l.MaxID != 0 || len(l.Valid) != 0 || l.LastFlushedID != 0 || l.Bad != nil || len(l.Problems) != 0 {
		t.Fatalf("empty log: %+v", l)
	}
	im.buf[0] = 0
	if l := im.scan(t); l.Formatted {
		t.Fatal("zeroed sector 0 still formatted")
	}
	if _, err := Scan(bytes.NewReader(make([]byte, layout.MinDeviceSize-512)), layout.MinDeviceSize-512); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("small device: %v", err)
	}
	layout.EncodeMagic(im.buf)
	short := im.buf[:layout.SuperblockSize+100]
	if _, err := Scan(bytes.NewReader(short), int64(len(im.buf))); err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated device: %v", err)
	}
}

func TestScanRingWrap(t *testing.T) {
	im := newImage(t, 4)
	for id := uint64(1); id <= 6; id++ {
		im.put(id, mbWrite{sector: 8 * id, dirty: 0xFF, fill: byte(id)})
	}
	l := im.scan(t)
	if !slices.Equal(ids(l.Valid), []uint64{3, 4, 5, 6}) || l.MaxID != 6 || l.LastFlushedID != 6 {
		t.Fatalf("valid %v max %d flushed %d", ids(l.Valid), l.MaxID, l.LastFlushedID)
	}
	if l.LastWritebackID != 2 {
		t.Fatalf("last_writeback_id = %d, want 6-4 = 2", l.LastWritebackID)
	}
	im.record(4)
	if l := im.scan(t); l.LastWritebackID != 4 {
		t.Fatalf("with record 4: last_writeback_id = %d", l.LastWritebackID)
	}
	im.record(9)
	l = im.scan(t)
	// Damage; the record is ignored, so no dirty block is taken for clean.
	if l.LastWritebackID != 2 || len(l.Problems) != 1 || !l.Damaged() {
		t.Fatalf("record above max id: lwid %d problems %v", l.LastWritebackID, l.Problems)
	}
}

func TestScanTornNewest(t *testing.T) {
	im := newImage(t, 4)
	for id := uint64(1); id <= 6; id++ {
		im.put(id, mbWrite{sector: 8 * id, dirty: 0xFF, fill: byte(id)})
	}
	im.corrupt(6)
	l := im.scan(t)
	if !slices.Equal(ids(l.Valid), []uint64{3, 4, 5}) || l.Bad == nil || l.Bad.Header.ID != 6 || l.LastFlushedID != 5 {
		t.Fatalf("valid %v bad %+v flushed %d", ids(l.Valid), l.Bad, l.LastFlushedID)
	}
	if !l.TornTail() || l.Damaged() {
		t.Fatalf("torn newest: torn %v damaged %v %v", l.TornTail(), l.Damaged(), l.Problems)
	}
}

func TestScanTornWindowAndMidLogCorruption(t *testing.T) {
	im := newImage(t, 32)
	for id := uint64(1); id <= 20; id++ {
		im.put(id, mbWrite{sector: 8 * id, dirty: 0xFF, fill: byte(id)})
	}
	im.corrupt(14) // 15..20 are within the window of 8
	l := im.scan(t)
	if !l.TornTail() || l.LastFlushedID != 13 || !slices.Equal(ids(l.Discarded), []uint64{15, 16, 17, 18, 19, 20}) {
		t.Fatalf("torn window: torn %v flushed %d discarded %v problems %v", l.TornTail(), l.LastFlushedID, ids(l.Discarded), l.Problems)
	}
	im.put(14, mbWrite{sector: 8, dirty: 0xFF, fill: 1})
	im.corrupt(5) // 13..20 lie beyond the window
	l = im.scan(t)
	if l.TornTail() || !l.Damaged() || l.LastFlushedID != 4 {
		t.Fatalf("mid-log: torn %v damaged %v flushed %d", l.TornTail(), l.Damaged(), l.LastFlushedID)
	}
	p, _ := l.FirstDamage()
	if p.SegmentID != 5 || !strings.Contains(p.Msg, "mid-log corruption") {
		t.Fatalf("problem %+v", p)
	}
	if _, err := l.Apply(MapIndex{}); err == nil {
		t.Fatal("Apply accepted a damaged log")
	}
}

// TestScanDurableRecord: a bad segment is judged by what the whole
// segments after it record, whatever their distance: torn while none
// records it durable, damage once one does. Segments without the record
// keep the window rule.
func TestScanDurableRecord(t *testing.T) {
	im := newImage(t, 64)
	// A writer with 32 segments in flight: segment k was written while
	// those up to k-33 were durable.
	for id := uint64(1); id <= 50; id++ {
		im.putDurable(id, max(id, 33)-33, mbWrite{sector: 8 * id, dirty: 0xFF, fill: byte(id)})
	}
	im.corrupt(20) // 21..50 are whole, up to 30 ids beyond it; none says 20 was durable
	l := im.scan(t)
	if !l.TornTail() || l.LastFlushedID != 19 || len(l.Discarded) != 30 {
		t.Fatalf("in flight: torn %v flushed %d discarded %v problems %v", l.TornTail(), l.LastFlushedID, ids(l.Discarded), l.Problems)
	}
	// Segment 53 was written once 20 was durable: 20 was damaged later.
	im.putDurable(53, 20, mbWrite{sector: 8, dirty: 0xFF})
	l = im.scan(t)
	p, ok := l.FirstDamage()
	if !ok || p.SegmentID != 20 || !strings.Contains(p.Msg, "segment 53, written after it, records that every segment up to 20 was durable") {
		t.Fatalf("attested: damaged %v %+v", ok, p)
	}
	// A record naming its own id or later vouches for nothing: the
	// window rule judges that segment (53 lies 33 ids beyond 20).
	im.putDurable(53, 53, mbWrite{sector: 8, dirty: 0xFF})
	l = im.scan(t)
	if p, ok := l.FirstDamage(); !ok || !strings.Contains(p.Msg, "mid-log corruption") {
		t.Fatalf("self-naming record: damaged %v %+v", ok, p)
	}
	// A segment without the record (the kernel's) 8 ids or more beyond
	// the bad one is damage, as before the record.
	im.putDurable(53, 19, mbWrite{sector: 8, dirty: 0xFF})
	if l = im.scan(t); !l.TornTail() {
		t.Fatalf("record below the bad id: %v", l.Problems)
	}
	im.put(54, mbWrite{sector: 8, dirty: 0xFF})
	l = im.scan(t)
	if p, ok := l.FirstDamage(); !ok || !strings.Contains(p.Msg, "mid-log corruption") || !strings.Contains(p.Msg, "(54..54)") {
		t.Fatalf("kernel segment beyond the window: damaged %v %+v", ok, p)
	}
}

func TestScanWrongSlotAndDisorder(t *testing.T) {
	im := newImage(t, 4)
	im.put(1, mbWrite{sector: 8, dirty: 0xFF})
	im.put(2, mbWrite{sector: 16, dirty: 0xFF})
	// Move segment 2's header into slot 2 (where id 3 belongs).
	src := im.buf[im.g.SegmentOffset(1):][:layout.SegmentSize]
	copy(im.buf[im.g.SegmentOffset(2):], src)
	l := im.scan(t)
	if !l.Damaged() || !strings.Contains(l.Problems[0].Msg, "belongs in slot 1") {
		t.Fatalf("wrong slot: %v", l.Problems)
	}

	im = newImage(t, 4)
	im.put(1, mbWrite{sector: 8, dirty: 0xFF})
	im.put(2, mbWrite{sector: 8, dirty: 0xFF})
	im.put(3, mbWrite{sector: 8, dirty: 0xFF})
	im.put(5, mbWrite{sector: 8, dirty: 0xFF}) // overwrites slot 0: walk 2,3,[slot 3 empty],5
	l = im.scan(t)
	if l.Damaged() || !slices.Equal(ids(l.Valid), []uint64{2, 3, 5}) {
		t.Fatalf("gap: valid %v problems %v", ids(l.Valid), l.Problems)
	}
	im.put(9, mbWrite{sector: 8, dirty: 0xFF}) // slot 0 again, id 9: walk 2,3,9 ... fine
	im.put(6, mbWrite{sector: 8, dirty: 0xFF}) // slot 1: walk starts at slot 2 -> 3, 9?? no: 3 (slot2), 9 (slot0), 6 (slot1)
	l = im.scan(t)
	if !l.Damaged() || !strings.Contains(l.Problems[0].Msg, "ids must grow") {
		t.Fatalf("disorder: valid %v problems %v", ids(l.Valid), l.Problems)
	}
}

func TestScanBadMetablocks(t *testing.T) {
	im := newImage(t, 4)
	im.put(1, mbWrite{sector: 8, dirty: 0xFF}, mbWrite{sector: 13, dirty: 0xFF})
	l := im.scan(t)
	if !l.Damaged() || !strings.Contains(l.Problems[0].Msg, "not a multiple of 8") {
		t.Fatalf("misaligned metablock: %v", l.Problems)
	}
	im.put(1, mbWrite{sector: 8, dirty: 0xFF}, mbWrite{sector: 1<<20 - 8, dirty: 0xFF})
	l = im.scan(t)
	if l.Damaged() {
		t.Fatalf("unexpected: %v", l.Problems)
	}
	l.CheckBacking(1 << 20 * 512)
	if l.Damaged() {
		t.Fatalf("last block inside: %v", l.Problems)
	}
	l.CheckBacking(1 << 19 * 512)
	if !l.Damaged() || !strings.Contains(l.Problems[0].Msg, "past the backing device's end") {
		t.Fatalf("out of range: %v", l.Problems)
	}
}

func TestApplyNewestWinsAndPieces(t *testing.T) {
	im := newImage(t, 8)
	im.put(1,
		mbWrite{sector: 0, dirty: 0xFF, fill: 1},  // block 0 full
		mbWrite{sector: 8, dirty: 0x0F, fill: 1},  // block 1 partial
		mbWrite{sector: 16, dirty: 0xFF, fill: 1}, // block 2, later read-cached over? no: overwritten clean below
		mbWrite{sector: 24, dirty: 0x00, fill: 1}, // block 3 read-cache copy
	)
	im.put(2,
		mbWrite{sector: 8, dirty: 0x03, fill: 2}, // block 1: covers 0,1 -> piece seg1 mask 0x0C
		mbWrite{sector: 0, dirty: 0xF0, fill: 2}, // block 0: piece seg1 mask 0x0F
	)
	im.put(3,
		mbWrite{sector: 8, dirty: 0x0C, fill: 3}, // block 1: covers 2,3 -> seg1 piece gone; seg2 piece 0x03
		mbWrite{sector: 0, dirty: 0xFF, fill: 3}, // block 0: full, pieces gone
	)
	l := im.scan(t)
	idx := MapIndex{}
	pieces, err := l.Apply(idx)
	if err != nil {
		t.Fatal(err)
	}
	want := MapIndex{
		0: {SegmentID: 3, Index: 1, DirtyBits: 0xFF},
		1: {SegmentID: 3, Index: 0, DirtyBits: 0x0C},
		2: {SegmentID: 1, Index: 2, DirtyBits: 0xFF},
		3: {SegmentID: 1, Index: 3, DirtyBits: 0},
	}
	if len(idx) != len(want) {
		t.Fatalf("index %v", idx)
	}
	for b, c := range want {
		if idx[b] != c {
			t.Errorf("block %d: %+v, want %+v", b, idx[b], c)
		}
	}
	if len(pieces) != 1 || pieces[0] != (Piece{Block: 1, Copy: Copy{SegmentID: 2, Index: 0, DirtyBits: 0x03}, Mask: 0x03}) {
		t.Fatalf("pieces %+v", pieces)
	}

	// Once segments 1 and 2 are written back, nothing older is dirty: no pieces,
	// and the clean partial copy of block 1 in segment 2 would be deleted.
	im.record(2)
	l = im.scan(t)
	idx = MapIndex{}
	if pieces, _ = l.Apply(idx); len(pieces) != 0 {
		t.Fatalf("pieces after writeback: %+v", pieces)
	}
	if idx[1] != (Copy{SegmentID: 3, Index: 0, DirtyBits: 0x0C}) || idx[2].DirtyBits != 0 {
		t.Fatalf("index after writeback: %v", idx)
	}
	im.record(3)
	l = im.scan(t)
	idx = MapIndex{}
	l.Apply(idx)
	if _, ok := idx[1]; ok {
		t.Fatalf("clean partial copy kept: %v", idx)
	}
	if idx[0] != (Copy{SegmentID: 3, Index: 1}) {
		t.Fatalf("clean full copy: %v", idx[0])
	}
}

// TestApplyRandomAgainstModel replays random logs and checks each sector's
// source against a direct per-sector model of docs/format.md step 4.
func TestApplyRandomAgainstModel(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 7))
		nseg := 3 + rng.IntN(6)
		im := newImage(t, nseg)
		nblocks := 1 + rng.IntN(12)
		last := uint64(rng.IntN(3*nseg) + 1)
		first := uint64(1)
		if last > uint64(nseg) {
			first = last - uint64(nseg) + 1
		}
		type src struct {
			id  uint64
			idx int
		}
		for id := first; id <= last; id++ {
			var ws []mbWrite
			seen := map[uint64]bool{}
			for range rng.IntN(6) {
				b := uint64(rng.IntN(nblocks))
				if seen[b] {
					continue
				}
				seen[b] = true
				bits := []uint8{0, 0xFF, uint8(rng.Uint32())}[rng.IntN(3)]
				ws = append(ws, mbWrite{sector: 8 * b, dirty: bits})
			}
			im.put(id, ws...)
		}
		rec := uint64(rng.IntN(int(last) + 1))
		im.record(rec)
		l := im.scan(t)
		if l.Damaged() || len(l.Valid) != int(last-first+1) {
			t.Fatalf("seed %d: %v", seed, l.Problems)
		}
		// Model: per sector, the newest dirty copy (segment > lwid, bit set)
		// unless a newer clean full copy or clean segment hides it.
		dirtySrc := map[uint64]src{} // sector -> newest dirty source
		for _, s := range l.Valid {
			for i := range int(s.Header.Length) {
				mb := s.Header.Metablocks[i]
				dirty := s.Header.ID > l.LastWritebackID && mb.DirtyBits != 0
				for j := range uint64(8) {
					sec := mb.Sector + j
					switch {
					case !dirty:
						delete(dirtySrc, sec)
					case mb.DirtyBits&(1<<j) != 0:
						dirtySrc[sec] = src{s.Header.ID, i}
					}
				}
			}
		}
		idx := MapIndex{}
		pieces, err := l.Apply(idx)
		if err != nil {
			t.Fatal(err)
		}
		got := map[uint64]src{}
		for b, c := range idx {
			for j := range uint64(8) {
				if c.DirtyBits&(1<<j) != 0 {
					got[8*b+j] = src{c.SegmentID, int(c.Index)}
				}
			}
		}
		for _, p := range pieces {
			for j := range uint64(8) {
				if p.Mask&(1<<j) != 0 {
					if _, dup := got[8*p.Block+j]; dup {
						t.Fatalf("seed %d: sector %d covered twice", seed, 8*p.Block+j)
					}
					got[8*p.Block+j] = src{p.Copy.SegmentID, int(p.Copy.Index)}
				}
			}
		}
		if len(got) != len(dirtySrc) {
			t.Fatalf("seed %d: %d dirty sectors, model %d", seed, len(got), len(dirtySrc))
		}
		for sec, want := range dirtySrc {
			if got[sec] != want {
				t.Fatalf("seed %d sector %d: from %+v, model %+v", seed, sec, got[sec], want)
			}
		}
	}
}

func FuzzScan(f *testing.F) {
	im := newImage(f, 3)
	im.put(1, mbWrite{sector: 8, dirty: 0x0F})
	im.put(2, mbWrite{sector: 8, dirty: 0xF1})
	f.Add(im.buf[layout.SuperblockSize:])
	im.putDurable(2, 1, mbWrite{sector: 8, dirty: 0xF1})
	im.putDurable(3, 1, mbWrite{sector: 16, dirty: 0xFF})
	im.corrupt(2)
	f.Add(append([]byte(nil), im.buf[layout.SuperblockSize:]...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, area []byte) {
		im := newImage(t, 3)
		copy(im.buf[layout.SuperblockSize:], area)
		copy(im.buf[layout.SuperRecordOffset:], area[min(len(area), 4096):])
		l, err := Scan(bytes.NewReader(im.buf), int64(len(im.buf)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Apply(MapIndex{}); (err != nil) != l.Damaged() {
			t.Fatalf("Apply error %v, damaged %v", err, l.Damaged())
		}
		if l.LastWritebackID > l.LastFlushedID || l.LastFlushedID > l.MaxID {
			t.Fatalf("ids out of order: %d %d %d", l.LastWritebackID, l.LastFlushedID, l.MaxID)
		}
	})
}
