package blockdev

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// pattern returns n bytes derived from seed, different for every sector and
// every seed, so a test can tell which write a sector came from.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i/512*31) ^ byte(i)
	}
	return b
}

func mustRead(t *testing.T, d Device, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return b
}

func mustWrite(t *testing.T, d Device, off int64, p []byte) {
	t.Helper()
	if n, err := d.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("write %d bytes at %d: n=%d err=%v", len(p), off, n, err)
	}
}

func TestMemReadWrite(t *testing.T) {
	m := NewMem(64 << 10)
	if got := m.Size(); got != 64<<10 {
		t.Fatalf("Size = %d", got)
	}
	if b := mustRead(t, m, 0, 8192); !bytes.Equal(b, make([]byte, 8192)) {
		t.Fatal("fresh device is not zero")
	}
	// A write straddling page boundaries, at an odd offset.
	p := pattern(7, 10000)
	mustWrite(t, m, 1000, p)
	if b := mustRead(t, m, 1000, len(p)); !bytes.Equal(b, p) {
		t.Fatal("read back differs")
	}
	if b := mustRead(t, m, 0, 1000); !bytes.Equal(b, make([]byte, 1000)) {
		t.Fatal("bytes before the write changed")
	}
}

func TestMemBounds(t *testing.T) {
	m := NewMem(8192)
	buf := make([]byte, 4096)
	// os.File semantics at the end of the device.
	if n, err := m.ReadAt(buf, 6144); n != 2048 || err != io.EOF {
		t.Fatalf("read across the end: n=%d err=%v, want 2048, EOF", n, err)
	}
	if n, err := m.ReadAt(buf, 8192); n != 0 || err != io.EOF {
		t.Fatalf("read at the end: n=%d err=%v, want 0, EOF", n, err)
	}
	if _, err := m.ReadAt(buf, -1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("read at -1: %v", err)
	}
	if _, err := m.WriteAt(buf, 6144); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write across the end: %v", err)
	}
	if _, err := m.WriteAt(buf, -512); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write at -512: %v", err)
	}
	if err := m.Discard(4096, 8192); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("discard across the end: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ReadAt(buf, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := m.WriteAt(buf, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := m.Sync(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
	if err := m.Discard(0, 512); !errors.Is(err, ErrClosed) {
		t.Fatalf("discard after close: %v", err)
	}
}

func TestMemCrashClone(t *testing.T) {
	m := NewMem(1 << 20)
	a, b, c := pattern(1, 8192), pattern(2, 4096), pattern(3, 512)
	mustWrite(t, m, 0, a)
	mustWrite(t, m, 65536, b)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	// Unsynced: overwrite part of a, discard b, write c into a fresh page.
	mustWrite(t, m, 4096, pattern(9, 4096))
	if err := m.Discard(65536, 4096); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 200*512, c)
	if got := m.Unsynced(); got != 3 {
		t.Fatalf("Unsynced = %d, want 3", got)
	}
	// The live device sees everything.
	if got := mustRead(t, m, 65536, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatal("discarded range does not read as zeros")
	}

	cc := m.CrashClone()
	if got := mustRead(t, cc, 0, 8192); !bytes.Equal(got, a) {
		t.Fatal("crash clone lost the synced write a or kept the unsynced overwrite")
	}
	if got := mustRead(t, cc, 65536, 4096); !bytes.Equal(got, b) {
		t.Fatal("crash clone kept the unsynced discard")
	}
	if got := mustRead(t, cc, 200*512, 512); !bytes.Equal(got, make([]byte, 512)) {
		t.Fatal("crash clone kept the unsynced write c")
	}
	if cc.Unsynced() != 0 {
		t.Fatal("crash clone has unsynced writes")
	}
	// The clone is independent of the original.
	mustWrite(t, cc, 0, pattern(5, 512))
	if got := mustRead(t, m, 0, 512); !bytes.Equal(got, a[:512]) {
		t.Fatal("writing the clone changed the original")
	}

	// After Sync everything is durable, and undo memory is released.
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	if len(m.undo) != 0 || len(m.redo) != 0 {
		t.Fatalf("after Sync: %d undo pages, %d redo ops", len(m.undo), len(m.redo))
	}
	cc = m.CrashClone()
	if got := mustRead(t, cc, 200*512, 512); !bytes.Equal(got, c) {
		t.Fatal("crash clone after Sync lost write c")
	}
	if got := mustRead(t, cc, 4096, 4096); !bytes.Equal(got, pattern(9, 4096)) {
		t.Fatal("crash clone after Sync lost the overwrite")
	}
	// Closed devices can still be crash-cloned; the clone is open.
	_ = m.Close()
	if _, err := m.CrashClone().ReadAt(make([]byte, 512), 0); err != nil {
		t.Fatalf("clone of a closed device: %v", err)
	}
}

// TestMemUndoIsPerPage checks that repeated writes to one page since the
// last Sync keep one undo copy, so memory grows with the pages dirtied.
func TestMemUndoIsPerPage(t *testing.T) {
	m := NewMem(1 << 20)
	mustWrite(t, m, 0, pattern(1, 1<<20))
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		mustWrite(t, m, int64(i%8)*512, pattern(byte(i), 512))
	}
	if len(m.undo) != 1 {
		t.Fatalf("undo holds %d pages, want 1", len(m.undo))
	}
	if err := m.Discard(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if len(m.pages) != 0 {
		t.Fatalf("discard of the whole device left %d pages", len(m.pages))
	}
	if got := mustRead(t, m.CrashClone(), 0, 1<<20); !bytes.Equal(got, pattern(1, 1<<20)) {
		t.Fatal("crash clone after whole-device discard lost synced data")
	}
}

// TestMemCrashCloneTorn writes non-overlapping extents with distinct
// patterns after a Sync, then checks across many seeds that each extent
// comes back old, new, or (for at most one extent per clone) torn at a
// sector boundary, and that every outcome occurs.
func TestMemCrashCloneTorn(t *testing.T) {
	const old = 0xEE
	type extent struct {
		off int64
		n   int
	}
	extents := []extent{{0, 4096}, {8192, 512}, {16384, 12288}, {40960, 2048}, {65536, 1536}}
	m := NewMem(128 << 10)
	oldData := bytes.Repeat([]byte{old}, 128<<10)
	mustWrite(t, m, 0, oldData)
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	for i, e := range extents {
		mustWrite(t, m, e.off, pattern(byte(i+1), e.n))
	}
	var landed, dropped, torn int
	for seed := range uint64(300) {
		c := m.CrashCloneTorn(rand.New(rand.NewPCG(seed, 42)))
		tornHere := 0
		for i, e := range extents {
			got := mustRead(t, c, e.off, e.n)
			want := pattern(byte(i+1), e.n)
			switch {
			case bytes.Equal(got, want):
				landed++
			case bytes.Equal(got, oldData[:e.n]):
				dropped++
			default:
				k := 0
				for k < e.n && bytes.Equal(got[k:k+512], want[k:k+512]) {
					k += 512
				}
				if k == 0 || k%512 != 0 || !bytes.Equal(got[k:], oldData[k:e.n]) {
					t.Fatalf("seed %d extent %d: neither old, new nor torn at a sector", seed, i)
				}
				tornHere++
			}
		}
		if tornHere > 1 {
			t.Fatalf("seed %d: %d torn writes, want at most 1", seed, tornHere)
		}
		torn += tornHere
		// Outside the extents, nothing changed.
		if got := mustRead(t, c, 4096, 4096); !bytes.Equal(got, oldData[:4096]) {
			t.Fatalf("seed %d: a gap changed", seed)
		}
	}
	if landed == 0 || dropped == 0 || torn == 0 {
		t.Fatalf("outcomes landed=%d dropped=%d torn=%d: every kind must occur", landed, dropped, torn)
	}
	// Same seed, same outcome.
	a := mustRead(t, m.CrashCloneTorn(rand.New(rand.NewPCG(7, 7))), 0, 128<<10)
	b := mustRead(t, m.CrashCloneTorn(rand.New(rand.NewPCG(7, 7))), 0, 128<<10)
	if !bytes.Equal(a, b) {
		t.Fatal("CrashCloneTorn is not reproducible for one seed")
	}
}

// TestMemCrashCloneTornOrder writes a synced sector, then unsynced writes
// and discards it: a clone holds the old data, the write, or zeros, never a
// mix, and every outcome occurs.
func TestMemCrashCloneTornOrder(t *testing.T) {
	m := NewMem(8192)
	mustWrite(t, m, 0, bytes.Repeat([]byte{1}, 512))
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, m, 0, bytes.Repeat([]byte{2}, 512))
	if err := m.Discard(0, 512); err != nil {
		t.Fatal(err)
	}
	seen := map[byte]bool{}
	for seed := range uint64(64) {
		got := mustRead(t, m.CrashCloneTorn(rand.New(rand.NewPCG(seed, 1))), 0, 512)
		if !bytes.Equal(got, bytes.Repeat(got[:1], 512)) {
			t.Fatalf("seed %d: mixed sector", seed)
		}
		seen[got[0]] = true
	}
	for _, v := range []byte{0, 1, 2} {
		if !seen[v] {
			t.Errorf("never saw sector value %d; saw %v", v, seen)
		}
	}
}

func TestMemConcurrent(t *testing.T) {
	m := NewMem(1 << 20)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			base := int64(g) * (256 << 10)
			for i := range 200 {
				p := pattern(byte(g*16+i), 4096)
				off := base + int64(i%64)*4096
				if _, err := m.WriteAt(p, off); err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, 4096)
				if _, err := m.ReadAt(got, off); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, p) {
					t.Error(fmt.Sprintf("goroutine %d: read back differs", g))
					return
				}
				if i%50 == 0 {
					if err := m.Sync(); err != nil {
						t.Error(err)
					}
					_ = m.CrashClone()
				}
			}
		})
	}
	wg.Wait()
}
