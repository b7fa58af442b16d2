package layout

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// TestExtensionRecordPlaces pins where the extension records sit: the
// clean-stop record inside the kernel's record block (any kernel record
// update clears it), the binding outside both kernel writes.
func TestExtensionRecordPlaces(t *testing.T) {
	if CleanStopOffset != 1044480 || RecordBlockOffset != 1044480 || SuperRecordOffset-RecordBlockOffset != 7*SectorSize {
		t.Errorf("clean-stop record at %d, record block at %d", CleanStopOffset, RecordBlockOffset)
	}
	if BindingOffset != 4096 || BindingOffset < BlockSize || BindingOffset+SectorSize > RecordBlockOffset {
		t.Errorf("binding record at %d: must lie in sectors 8..2039", BindingOffset)
	}
}

func TestCleanStopRecord(t *testing.T) {
	s := make([]byte, SectorSize)
	if _, ok, err := DecodeCleanStop(s); ok || err != nil {
		t.Fatalf("zero sector: ok %v err %v", ok, err)
	}
	CleanStop{LastID: 0x0102030405060708}.Encode(s)
	if binary.LittleEndian.Uint32(s) != 0x57426373 || binary.LittleEndian.Uint16(s[4:]) != 1 || binary.LittleEndian.Uint64(s[8:]) != 0x0102030405060708 {
		t.Fatalf("layout % x", s[:20])
	}
	if !bytes.Equal(s[20:], make([]byte, SectorSize-20)) {
		t.Fatal("bytes past the checksum are not zero")
	}
	c, ok, err := DecodeCleanStop(s)
	if !ok || err != nil || c.LastID != 0x0102030405060708 {
		t.Fatalf("decode: %+v %v %v", c, ok, err)
	}
	s[9] ^= 1
	if _, _, err := DecodeCleanStop(s); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped id: %v", err)
	}
}

func TestBindingRecord(t *testing.T) {
	s := make([]byte, SectorSize)
	if _, ok, err := DecodeBinding(s); ok || err != nil {
		t.Fatalf("zero sector: ok %v err %v", ok, err)
	}
	p := []byte(`{"kind":"file","size":1}`)
	if err := EncodeBinding(s, p); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint32(s) != 0x57426264 || binary.LittleEndian.Uint16(s[6:]) != uint16(len(p)) || !bytes.Equal(s[24:24+len(p)], p) {
		t.Fatalf("layout % x", s[:40])
	}
	got, ok, err := DecodeBinding(s)
	if !ok || err != nil || !bytes.Equal(got, p) {
		t.Fatalf("decode: %q %v %v", got, ok, err)
	}
	s[30] ^= 1
	if _, _, err := DecodeBinding(s); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped payload: %v", err)
	}
	if err := EncodeBinding(s, make([]byte, MaxBindingPayload+1)); err == nil {
		t.Fatal("an oversized payload was encoded")
	}
}

func TestDurableRecord(t *testing.T) {
	seg := make([]byte, HeaderSize+BlockSize)
	h := SegmentHeader{ID: 40, Length: 1, HasDurable: true, Durable: 31}
	h.Encode(seg)
	got, err := DecodeSegmentHeader(seg)
	if err != nil || !got.HasDurable || got.Durable != 31 {
		t.Fatalf("decoded %v %v %v", got.HasDurable, got.Durable, err)
	}
	if binary.LittleEndian.Uint32(seg[4064:]) != 0x57426472 || seg[4068] != 1 || binary.LittleEndian.Uint64(seg[4072:]) != 31 {
		t.Fatalf("record bytes % x", seg[4064:4096])
	}
	// The segment checksum covers the record: only a whole segment vouches
	// for it.
	before, _ := SegmentChecksum(seg, 1)
	PutDurableRecord(seg, 32)
	if after, _ := SegmentChecksum(seg, 1); after == before {
		t.Fatal("the checksum does not cover the durable record")
	}
	// A record naming the segment's own id vouches for nothing.
	PutDurableRecord(seg, 40)
	if got, _ := DecodeSegmentHeader(seg); got.HasDurable {
		t.Fatal("a self-naming record was read as one")
	}
	// A kernel header (zeros there) and an unknown version have none.
	h = SegmentHeader{ID: 40, Length: 1}
	h.Encode(seg)
	if _, ok := DurableRecordAt(seg); ok {
		t.Fatal("a header without the record has one")
	}
	PutDurableRecord(seg, 5)
	seg[4068] = 2
	if _, ok := DurableRecordAt(seg); ok {
		t.Fatal("version 2 read as version 1")
	}
}

func FuzzDecodeExtensionRecords(f *testing.F) {
	s := make([]byte, SectorSize)
	CleanStop{LastID: 7}.Encode(s)
	f.Add(append([]byte(nil), s...))
	_ = EncodeBinding(s, []byte(`{"kind":"block"}`))
	f.Add(append([]byte(nil), s...))
	f.Fuzz(func(t *testing.T, b []byte) {
		sector := make([]byte, SectorSize)
		copy(sector, b)
		if c, ok, err := DecodeCleanStop(sector); ok {
			if err != nil {
				t.Fatal("ok with an error")
			}
			re := make([]byte, SectorSize)
			c.Encode(re)
			if !bytes.Equal(re[:20], sector[:20]) {
				t.Fatal("clean-stop record does not round-trip")
			}
		}
		if p, ok, err := DecodeBinding(sector); ok {
			if err != nil || len(p) == 0 || len(p) > MaxBindingPayload {
				t.Fatalf("binding payload of %d bytes, err %v", len(p), err)
			}
		}
	})
}
