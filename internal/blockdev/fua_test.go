package blockdev

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestFileWriteAtFUA(t *testing.T) {
	for _, direct := range []bool{true, false} {
		path := makeFile(t, directDir(t), 64<<10)
		d := openT(t, path, FileOptions{Direct: direct})
		p := AlignedBuffer(8192)
		for i := range p {
			p[i] = byte(i*7 + 1)
		}
		if n, err := d.WriteAtFUA(p, 16384); err != nil || n != len(p) {
			t.Fatalf("direct=%v: WriteAtFUA = %d, %v", direct, n, err)
		}
		// Unaligned: the bounce path (write and sync) must give the same bytes.
		if n, err := d.WriteAtFUA(p[1:513], 40000); err != nil || n != 512 {
			t.Fatalf("direct=%v: unaligned WriteAtFUA = %d, %v", direct, n, err)
		}
		got := AlignedBuffer(8192)
		if _, err := d.ReadAt(got, 16384); err != nil || !bytes.Equal(got, p) {
			t.Fatalf("direct=%v: read back %v, equal %v", direct, err, bytes.Equal(got, p))
		}
		if _, err := d.ReadAt(got[:1024], 39936); err != nil || !bytes.Equal(got[64:576], p[1:513]) {
			t.Fatalf("direct=%v: unaligned read back %v", direct, err)
		}
		if _, err := d.WriteAtFUA(p, 64<<10-4096); !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("direct=%v: write past the end: %v, want ErrOutOfRange", direct, err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := d.WriteAtFUA(p, 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("direct=%v: write after close: %v, want ErrClosed", direct, err)
		}
	}
	ro := openT(t, makeFile(t, t.TempDir(), 8192), FileOptions{ReadOnly: true})
	if _, err := ro.WriteAtFUA(AlignedBuffer(4096), 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("read-only: %v, want ErrReadOnly", err)
	}
}

// A FUA write survives every crash, the writes before it stay unsynced, and
// an earlier write landing in a torn crash never covers it.
func TestMemWriteAtFUA(t *testing.T) {
	m := NewMem(4 * memPageSize)
	old := bytes.Repeat([]byte{1}, 2*memPageSize)
	if _, err := m.WriteAt(old, 0); err != nil { // unsynced, pages 0 and 1
		t.Fatal(err)
	}
	fua := bytes.Repeat([]byte{2}, memPageSize)
	if _, err := m.WriteAtFUA(fua, 512); err != nil { // sectors 1.. of page 0, sector 0 of page 1
		t.Fatal(err)
	}
	want := make([]byte, 2*memPageSize) // what a crash must show: the FUA bytes, zeros elsewhere
	copy(want[512:], fua)
	got := make([]byte, 2*memPageSize)
	if _, err := m.CrashClone().ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("crash clone: err %v, FUA write kept and the rest dropped: %v", err, bytes.Equal(got, want))
	}
	for seed := range uint64(64) {
		c := m.CrashCloneTorn(rand.New(rand.NewPCG(seed, 1)))
		if _, err := c.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[512:512+memPageSize], fua) {
			t.Fatalf("seed %d: torn crash lost or covered the FUA write", seed)
		}
		if b := got[0]; b != 0 && b != 1 {
			t.Fatalf("seed %d: sector 0 holds %d", seed, b)
		}
	}
	cur := make([]byte, 2*memPageSize)
	if _, err := m.ReadAt(cur, 0); err != nil {
		t.Fatal(err)
	}
	copy(want, old)
	copy(want[512:], fua)
	if !bytes.Equal(cur, want) {
		t.Fatal("current contents are not the writes in order")
	}
	if _, err := m.WriteAtFUA(fua, 4*memPageSize-512); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("write past the end: %v", err)
	}
}
