package engine

import (
	"bytes"
	"errors"
	"fmt"
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
	if s.NrDirtyCacheBlocks != 1 || s.CurrentID != 3 || s.LastFlushedID != 2 {
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
	if s := r.v.Status(); s.CurrentID != 1 || s.NrDirtyCacheBlocks != 0 {
		t.Fatalf("after format: %+v", s)
	}
	if got := r.read(0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("old cached data survived a format")
	}
}

// TestReplayPiecesMerged: replay writes the pieces of a kernel log back as
// merged writes (sectorio's tests check their order), one per run of adjacent sectors even
// across blocks, and window by window when the pieces exceed one.
func TestReplayPiecesMerged(t *testing.T) {
	defer func(w int) { piecesWindow = w }(piecesWindow)
	const n = layout.NrCachesPerSegment
	full := make([]layout.Metablock, n)
	half := make([]layout.Metablock, n)
	older, newer := make([][]byte, n), make([][]byte, n)
	for k := range n {
		full[k] = layout.Metablock{Sector: uint64(k) * layout.SectorsPerBlock, DirtyBits: layout.DirtyFull}
		// Sectors 0-3 of even blocks, 4-7 of odd ones: the pieces left
		// (4-7 of an even block, 0-3 of the next) are adjacent in pairs.
		half[k] = layout.Metablock{Sector: uint64(k) * layout.SectorsPerBlock, DirtyBits: 0x0F << (4 * (k % 2))}
		older[k], newer[k] = fill(layout.BlockSize, byte(k+1)), fill(layout.BlockSize, 0xEE)
	}
	for _, tc := range []struct {
		window, writes int
	}{
		{65536, n/2 + 1}, // one stage: 63 pairs and block 126 alone
		{4, n},           // a stage per block: nothing merges across blocks
		{8, n/2 + 1},     // a stage per pair of blocks
	} {
		t.Run(fmt.Sprint("window", tc.window), func(t *testing.T) {
			piecesWindow = tc.window
			cache := blockdev.NewMem(cacheSize(4))
			if err := Format(cache); err != nil {
				t.Fatal(err)
			}
			geo, _ := layout.NewGeometry(cache.Size())
			putSegment(t, cache, geo, 1, full, older)
			putSegment(t, cache, geo, 2, half, newer)
			backMem := blockdev.NewMem(n * layout.BlockSize)
			back := &slowBacking{Device: backMem}
			v, err := Open(Config{Backing: back, Cache: cache, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			back.mu.Lock()
			batches := back.batches
			back.mu.Unlock()
			if len(batches) != 1 || len(batches[0]) != tc.writes {
				t.Fatalf("replay wrote %v (per sync), want one sync after %d writes", batches, tc.writes)
			}
			got := make([]byte, n*layout.BlockSize)
			if _, err := backMem.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			for k := range n {
				blk := got[k*layout.BlockSize : (k+1)*layout.BlockSize]
				lo, hi := fill(layout.BlockSize/2, 0), fill(layout.BlockSize/2, byte(k+1))
				if k%2 == 1 {
					lo, hi = hi, lo
				}
				if !bytes.Equal(blk, append(lo, hi...)) {
					t.Fatalf("backing block %d: %s", k, sectorSummary(blk))
				}
			}
		})
	}
}

// TestReplayProgressAndTime: Config.ReplayProgress sees replay read every
// segment of the log, and ReplayTime says how long replay took.
func TestReplayProgressAndTime(t *testing.T) {
	var calls, last, total uint64
	v := openOn(t, blockdev.NewMem(1<<20), blockdev.NewMem(cacheSize(4)), Config{ReplayProgress: func(done, n uint64) {
		calls, last, total = calls+1, done, n
	}})
	defer v.Close()
	if calls == 0 || last != total || total != 4 {
		t.Errorf("progress: %d calls, last %d of %d, want the 4 segments read", calls, last, total)
	}
	if v.ReplayTime() <= 0 {
		t.Errorf("ReplayTime %v", v.ReplayTime())
	}
}
