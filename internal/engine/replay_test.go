package engine

import (
	"bytes"
	"errors"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// putSegment writes a segment as the kernel would: header with checksum,
// then the data slots.
func putSegment(t testing.TB, dev blockdev.Device, geo layout.Geometry, id uint64, mbs []layout.Metablock, data [][]byte) {
	t.Helper()
	seg := make([]byte, layout.SegmentSize)
	h := layout.SegmentHeader{ID: id, Length: uint8(len(mbs))}
	copy(h.Metablocks[:], mbs)
	for i, d := range data {
		copy(seg[layout.BlockSize*(i+1):], d)
	}
	h.Encode(seg)
	sum, err := layout.SegmentChecksum(seg, h.Length)
	if err != nil {
		t.Fatal(err)
	}
	layout.PutFirstSector(seg, id, sum, h.Length)
	if _, err := dev.WriteAt(seg, geo.SegmentOffset(geo.SlotOf(id))); err != nil {
		t.Fatal(err)
	}
}

// TestReplayKernelLog replays a log as the kernel target writes it, where
// a partial overwrite does not carry the older dirty sectors: replay must
// write those sectors (the pieces) back before serving, and read clean
// copies from the cache without writing them back.
func TestReplayKernelLog(t *testing.T) {
	cache, backing := blockdev.NewMem(cacheSize(4)), blockdev.NewMem(1<<20)
	if err := Format(cache); err != nil {
		t.Fatal(err)
	}
	if _, err := backing.WriteAt(fill(1<<20, 0xBB), 0); err != nil {
		t.Fatal(err)
	}
	geo, _ := layout.NewGeometry(cache.Size())
	A, B, C := fill(4096, 0xA), fill(4096, 0xB), fill(4096, 0xC)
	// Segment 1: block 0 fully dirty (A), block 1 clean read-cache copy (C).
	putSegment(t, cache, geo, 1, []layout.Metablock{{Sector: 0, DirtyBits: 0xFF}, {Sector: 8, DirtyBits: 0}}, [][]byte{A, C})
	// Segment 2: block 0 sectors 0-1 only (B).
	putSegment(t, cache, geo, 2, []layout.Metablock{{Sector: 0, DirtyBits: 0x03}}, [][]byte{B})
	v, err := Open(Config{Backing: backing, Cache: cache, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	// Sectors 2-7 of block 0 were written back from segment 1.
	got := make([]byte, 4096)
	if _, err := backing.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	want := append(fill(1024, 0xBB), fill(3072, 0xA)...)
	if !bytes.Equal(got, want) {
		t.Fatal("pieces of the older copy were not written back")
	}
	if _, err := backing.ReadAt(got, 4096); err != nil || !bytes.Equal(got, fill(4096, 0xBB)) {
		t.Fatal("a clean copy was written back")
	}
	p := make([]byte, 8192)
	if err := v.ReadAt(p, 0); err != nil {
		t.Fatal(err)
	}
	want = append(append(fill(1024, 0xB), fill(3072, 0xA)...), C...)
	if !bytes.Equal(p, want) {
		t.Fatalf("read %s / %s", sectorSummary(p[:4096]), sectorSummary(p[4096:]))
	}
	s := v.Status()
	if s.NrDirtyCacheBlocks != 1 || s.CurrentID != 2 || s.LastFlushedID != 2 {
		t.Fatalf("status after replay: %+v", s)
	}
}

func TestFormat(t *testing.T) {
	if err := Format(blockdev.NewMem(layout.MinDeviceSize - 512)); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("format of a too small device: %v", err)
	}
	// A device full of old segments (even a dirty log) becomes empty.
	r := newRig(t, 3, 1<<20, nil)
	r.write(0, fill(64<<10, 1))
	r.close()
	if err := Format(r.cache); err != nil {
		t.Fatal(err)
	}
	if r.cache.Unsynced() != 0 {
		t.Fatal("format left unsynced writes")
	}
	r.open()
	if s := r.v.Status(); s.CurrentID != 0 || s.NrDirtyCacheBlocks != 0 {
		t.Fatalf("after format: %+v", s)
	}
	if got := r.read(0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("old cached data survived a format")
	}
}
