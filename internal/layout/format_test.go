package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// The on-disk format is frozen: these numbers come from docs/format.md and the
// kernel's structs, not from this package.
func TestFrozenSizesAndOffsets(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"SectorSize", SectorSize, 512},
		{"BlockSize", BlockSize, 4096},
		{"SuperblockSize", SuperblockSize, 1 << 20},
		{"SegmentSize", SegmentSize, 512 << 10},
		{"NrCachesPerSegment", NrCachesPerSegment, 127},
		{"MinDeviceSize", MinDeviceSize, 1<<20 + 512<<10},
		{"SuperRecordOffset", SuperRecordOffset, 1048064},
		{"MetablocksOffset", MetablocksOffset, 512},
		{"MetablockSize", MetablockSize, 16},
		{"HeaderSize", HeaderSize, 4096},
		{"Magic", int64(Magic), 0x57427374},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestChecksumVector(t *testing.T) {
	// docs/format.md and dm-writeboost-tools: 3584 zero bytes.
	if got := Checksum(make([]byte, 3584)); got != 143703573 {
		t.Fatalf("crc32c(3584 zeros) = %d, want 143703573", got)
	}
	seg := make([]byte, SegmentSize)
	if got, _ := SegmentChecksum(seg, 0); got != 143703573 {
		t.Fatalf("empty segment checksum = %d", got)
	}
	part := UpdateChecksum(Checksum(seg[512:2000]), seg[2000:4096])
	if part != 143703573 {
		t.Fatalf("running checksum = %d", part)
	}
	if _, err := SegmentChecksum(seg, 128); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("length 128: %v", err)
	}
	if _, err := SegmentChecksum(seg[:8191], 1); !errors.Is(err, ErrShortInput) {
		t.Fatalf("short image: %v", err)
	}
}

func TestSegmentHeaderByteLayout(t *testing.T) {
	h := SegmentHeader{ID: 0x0102030405060708, Checksum: 0xA1B2C3D4, Length: 127}
	for i := range h.Metablocks {
		h.Metablocks[i] = Metablock{Sector: uint64(8 * (i + 1000)), DirtyBits: uint8(i)}
	}
	buf := bytes.Repeat([]byte{0xEE}, HeaderSize)
	h.Encode(buf)
	le := binary.LittleEndian
	if le.Uint64(buf[0:]) != h.ID || le.Uint32(buf[8:]) != h.Checksum || buf[12] != 127 {
		t.Fatalf("first sector fields: % x", buf[:16])
	}
	for i := 13; i < 512; i++ {
		if buf[i] != 0 {
			t.Fatalf("byte %d = %#x, want 0", i, buf[i])
		}
	}
	for i := range 127 {
		mb := buf[512+16*i:]
		if le.Uint64(mb) != uint64(8*(i+1000)) || mb[8] != uint8(i) || !bytes.Equal(mb[9:16], make([]byte, 7)) {
			t.Fatalf("metablock %d: % x", i, mb[:16])
		}
	}
	if !bytes.Equal(buf[2544:], make([]byte, 4096-2544)) {
		t.Fatal("bytes 2544.. not zero")
	}
	got, err := DecodeSegmentHeader(buf)
	if err != nil || got != h {
		t.Fatalf("round trip: %v", err)
	}
	PutFirstSector(buf, 9, 10, 11)
	PutMetablock(buf, 126, Metablock{Sector: 80, DirtyBits: 3})
	got, _ = DecodeSegmentHeader(buf)
	if got.ID != 9 || got.Checksum != 10 || got.Length != 11 || got.Metablocks[126] != (Metablock{80, 3}) || HeaderID(buf) != 9 {
		t.Fatalf("in-place puts: %+v", got.Metablocks[126])
	}
	buf[12] = 128
	if _, err := DecodeSegmentHeader(buf); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("length 128: %v", err)
	}
	if _, err := DecodeSegmentHeader(buf[:4095]); !errors.Is(err, ErrShortInput) {
		t.Fatalf("short: %v", err)
	}
}

func TestSuperblock(t *testing.T) {
	s := bytes.Repeat([]byte{1}, SectorSize)
	EncodeMagic(s)
	if !bytes.Equal(s[:4], []byte{0x74, 0x73, 0x42, 0x57}) || !bytes.Equal(s[4:], make([]byte, 508)) || !IsFormatted(s) {
		t.Fatalf("magic sector % x", s[:8])
	}
	if IsFormatted(make([]byte, 512)) || IsFormatted(nil) {
		t.Fatal("zero sector formatted")
	}
	SuperRecord{LastWritebackSegmentID: 0x1122334455667788}.Encode(s)
	if binary.LittleEndian.Uint64(s) != 0x1122334455667788 || !bytes.Equal(s[8:], make([]byte, 504)) {
		t.Fatal("record encoding")
	}
	r, err := DecodeSuperRecord(s)
	if err != nil || r.LastWritebackSegmentID != 0x1122334455667788 {
		t.Fatal("record decoding")
	}
	if _, err := DecodeSuperRecord(s[:7]); !errors.Is(err, ErrShortInput) {
		t.Fatal("short record")
	}
}

func TestGeometry(t *testing.T) {
	for _, c := range []struct {
		size    int64
		nr      uint64
		slot2nd int64
	}{
		{MinDeviceSize, 1, 0},
		{MinDeviceSize + SegmentSize - 512, 1, 0},
		{MinDeviceSize + SegmentSize, 2, 1<<20 + 512<<10},
		{1 << 30, (1<<21 - 2048) / 1024, 1<<20 + 512<<10},
	} {
		g, err := NewGeometry(c.size)
		if err != nil || g.NrSegments != c.nr {
			t.Fatalf("size %d: %d segments, %v", c.size, g.NrSegments, err)
		}
		if g.NrCacheBlocks() != 127*c.nr || g.UsableBytes() != int64(127*c.nr*4096) {
			t.Fatalf("size %d: blocks %d", c.size, g.NrCacheBlocks())
		}
		if c.nr > 1 && g.SegmentOffset(1) != c.slot2nd {
			t.Fatalf("segment 1 at %d", g.SegmentOffset(1))
		}
	}
	if _, err := NewGeometry(MinDeviceSize - 1); !errors.Is(err, ErrTooSmall) {
		t.Fatal("too small accepted")
	}
	g, _ := NewGeometry(SuperblockSize + 4*SegmentSize)
	for id, slot := range map[uint64]uint64{1: 0, 4: 3, 5: 0, 11: 2} {
		if g.SlotOf(id) != slot {
			t.Errorf("slot of %d = %d", id, g.SlotOf(id))
		}
	}
	if g.DataOffset(1, 0) != (1<<20+512<<10)+4096 || g.DataOffset(0, 126) != 1<<20+127*4096 {
		t.Fatal("data offsets")
	}
}

func FuzzDecodeSegmentHeader(f *testing.F) {
	h := SegmentHeader{ID: 7, Length: 2, Metablocks: [127]Metablock{{8, 255}, {16, 1}}}
	buf := make([]byte, HeaderSize)
	h.Encode(buf)
	f.Add(buf)
	h.HasDurable, h.Durable = true, 6
	h.Encode(buf)
	f.Add(append([]byte(nil), buf...))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := DecodeSegmentHeader(b)
		if err != nil {
			return
		}
		out := make([]byte, HeaderSize)
		h.Encode(out)
		h2, err := DecodeSegmentHeader(out)
		if err != nil || h2 != h {
			t.Fatalf("re-decode differs: %v", err)
		}
		DecodeSuperRecord(b)
	})
}
