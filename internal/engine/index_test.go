package engine

import (
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/writeboost/writeboost/internal/layout"
)

// checkIndex compares the index with a reference map of block -> pos.
func checkIndex(t testing.TB, x *index, ref map[uint64]uint32) {
	t.Helper()
	if x.used != uint64(len(ref)) {
		t.Fatalf("used %d, reference has %d", x.used, len(ref))
	}
	for b, p := range ref {
		got, ok := x.lookup(b)
		if !ok || got != p {
			t.Fatalf("lookup(%d) = %d, %v; want %d", b, got, ok, p)
		}
	}
	var dirty uint64
	for pos, b := range x.keys {
		if b == noBlock {
			continue
		}
		if ref[b] != uint32(pos) {
			t.Fatalf("keys[%d] = %d, but the reference maps it to %d", pos, b, ref[b])
		}
		if x.dirty[pos] != 0 {
			dirty++
		}
	}
	if dirty != x.nrDirty {
		t.Fatalf("nrDirty %d, counted %d", x.nrDirty, dirty)
	}
}

// runIndexOps drives the index with a byte program: each 3 bytes are an
// op (insert, remove, or set dirty), a block number and a position.
func runIndexOps(t testing.TB, prog []byte) {
	const nPos = 64
	x := newIndex(nPos)
	ref := map[uint64]uint32{}
	posUsed := map[uint32]uint64{}
	for len(prog) >= 3 {
		op, b, p := prog[0]%3, uint64(prog[1]%40)*0x10000, uint32(prog[2])%nPos
		prog = prog[3:]
		switch op {
		case 0:
			if _, ok := ref[b]; ok {
				x.remove(b)
				delete(posUsed, ref[b])
				delete(ref, b)
			}
			if old, ok := posUsed[p]; ok {
				x.removePos(p)
				delete(ref, old)
			}
			x.insert(b, p, prog0(prog))
			ref[b], posUsed[p] = p, b
		case 1:
			_, had := ref[b]
			if x.remove(b) != had {
				t.Fatalf("remove(%d) disagrees with the reference", b)
			}
			if had {
				delete(posUsed, ref[b])
				delete(ref, b)
			}
		case 2:
			if pos, ok := ref[b]; ok {
				x.setDirty(pos, uint8(p))
			}
		}
		checkIndex(t, x, ref)
	}
}

func prog0(p []byte) uint8 {
	if len(p) == 0 {
		return 0
	}
	return p[0]
}

func TestIndexOps(t *testing.T) {
	prog := make([]byte, 0, 3*5000)
	var s uint32 = 1
	for range 5000 {
		s = s*1664525 + 1013904223
		prog = binary.LittleEndian.AppendUint32(prog, s)[:len(prog)+3]
	}
	runIndexOps(t, prog)
}

// FuzzIndex checks the open-addressing table (insert, backward-shift
// delete, dirty counting) against a Go map.
func FuzzIndex(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 1, 0, 0, 1, 5})
	f.Add([]byte{0, 0, 0, 0, 40, 1, 0, 80, 2, 1, 0, 0, 0, 120, 0})
	f.Add([]byte{0, 3, 63, 2, 3, 255, 1, 3, 0})
	f.Fuzz(func(t *testing.T, prog []byte) { runIndexOps(t, prog) })
}

// TestIndexBytesPerBlock measures the index of a 16 GiB cache device (4 Mi
// cache blocks) with every position in use: the issue allows 24 bytes per
// cache block.
func TestIndexBytesPerBlock(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~75 MB")
	}
	geo, err := layout.NewGeometry(16 << 30)
	if err != nil {
		t.Fatal(err)
	}
	n := geo.NrCacheBlocks()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	x := newIndex(n)
	for pos := range n {
		x.insert(pos*977, uint32(pos), 0xFF)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	t.Logf("16 GiB cache: %d cache blocks, index %d bytes (%.2f bytes per block, heap delta %.2f)", n, x.bytes(), float64(x.bytes())/float64(n), per)
	if per > 24 {
		t.Fatalf("index costs %.2f bytes per cache block, more than 24", per)
	}
	if p, ok := x.lookup(977 * 12345); !ok || p != 12345 {
		t.Fatal("lookup in the full table failed")
	}
	runtime.KeepAlive(x)
}
