package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/writeboost/writeboost/internal/vocab"
)

// statIdx is the kernel's stat index write<<3 | hit<<2 | on_buffer<<1 | fullsize.
func statIdx(write, hit, onBuf, full bool) int {
	i := 0
	for _, b := range []bool{write, hit, onBuf, full} {
		i <<= 1
		if b {
			i |= 1
		}
	}
	return i
}

// expectStats runs op and checks that exactly the given counters moved,
// each by the number of times it is listed.
func expectStats(t *testing.T, v *Volume, what string, op func(), want ...int) {
	t.Helper()
	before := v.Status().Stat
	op()
	after := v.Status().Stat
	var wantDelta [16]uint64
	for _, i := range want {
		wantDelta[i]++
	}
	for i := range after {
		if d := after[i] - before[i]; d != wantDelta[i] {
			t.Errorf("%s: stat[%d] (write=%d hit=%d on_buffer=%d fullsize=%d) moved by %d, want %d",
				what, i, i>>3&1, i>>2&1, i>>1&1, i&1, d, wantDelta[i])
		}
	}
}

// sectorsOf builds a 4 KiB block whose sector j is filled with pat[j].
func sectorsOf(pat [8]byte) []byte {
	b := make([]byte, 4096)
	for j, c := range pat {
		copy(b[j*512:(j+1)*512], fill(512, c))
	}
	return b
}

// TestComposition checks, for each place a block's sectors can live (open
// rambuf, cache device, backing device; full or partial; dirty or clean),
// the bytes a full-block read returns and which of the 16 counters moved.
func TestComposition(t *testing.T) {
	const B = 0xBB // backing pattern
	type tc struct {
		name  string
		tun   vocab.Values
		setup func(t *testing.T, r *rig)
		want  [8]byte
		stat  int // the counter the read must move
	}
	full := func(b byte) [8]byte { return [8]byte{b, b, b, b, b, b, b, b} }
	W, F, H, OB, MISS := true, true, true, true, false
	_ = W
	cases := []tc{
		{
			name:  "backing only",
			setup: func(t *testing.T, r *rig) {},
			want:  full(B),
			stat:  statIdx(false, MISS, false, F),
		},
		{
			name: "full dirty in the open rambuf",
			setup: func(t *testing.T, r *rig) {
				expectStats(t, r.v, "first full write", func() { r.write(0, fill(4096, 1)) }, statIdx(true, false, false, true))
				expectStats(t, r.v, "overwrite on buffer", func() { r.write(0, fill(4096, 2)) }, statIdx(true, H, OB, F))
			},
			want: full(2),
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "partial dirty in the open rambuf over the backing device",
			setup: func(t *testing.T, r *rig) {
				expectStats(t, r.v, "partial write", func() { r.write(2*512, fill(1024, 1)) }, statIdx(true, false, false, false))
				expectStats(t, r.v, "partial write on buffer", func() { r.write(6*512, fill(512, 3)) }, statIdx(true, H, OB, false))
			},
			want: [8]byte{B, B, 1, 1, B, B, 3, B},
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "full dirty on the cache device",
			setup: func(t *testing.T, r *rig) {
				r.write(0, fill(4096, 4))
				r.flush()
			},
			want: full(4),
			stat: statIdx(false, H, false, F),
		},
		{
			name: "partial dirty on the cache device over the backing device",
			setup: func(t *testing.T, r *rig) {
				r.write(512, fill(512, 5))
				r.flush()
			},
			want: [8]byte{B, 5, B, B, B, B, B, B},
			stat: statIdx(false, H, false, F),
		},
		{
			name: "partial in RAM merged with partial on the cache device",
			setup: func(t *testing.T, r *rig) {
				r.write(0, fill(1024, 6))
				r.flush()
				// Not on buffer: the older copy is on the cache device;
				// its sectors 0-1 are merged into the new copy.
				expectStats(t, r.v, "merge write", func() { r.write(4*512, fill(1024, 7)) }, statIdx(true, H, false, false))
				if d := r.v.Status().NrDirtyCacheBlocks; d != 1 {
					t.Errorf("nr_dirty_cache_blocks %d, want 1 (one copy per block)", d)
				}
			},
			want: [8]byte{6, 6, B, B, 7, 7, B, B},
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "partial overwrite merged on the cache device",
			setup: func(t *testing.T, r *rig) {
				r.write(0, fill(4096, 8))
				r.flush()
				r.write(3*512, fill(512, 9))
				r.flush()
			},
			want: [8]byte{8, 8, 8, 9, 8, 8, 8, 8},
			stat: statIdx(false, H, false, F),
		},
		{
			name: "clean full copy after writeback",
			setup: func(t *testing.T, r *rig) {
				r.write(0, fill(4096, 10))
				if err := r.v.DropCaches(context.Background()); err != nil {
					t.Fatal(err)
				}
				if d := r.v.Status().NrDirtyCacheBlocks; d != 0 {
					t.Errorf("dirty after drop_caches: %d", d)
				}
			},
			want: full(10),
			stat: statIdx(false, H, false, F),
		},
		{
			name: "partial copy after writeback is forgotten",
			setup: func(t *testing.T, r *rig) {
				r.write(512, fill(512, 11))
				if err := r.v.DropCaches(context.Background()); err != nil {
					t.Fatal(err)
				}
			},
			want: [8]byte{B, 11, B, B, B, B, B, B},
			stat: statIdx(false, MISS, false, F),
		},
		{
			name: "partial dirty over a clean copy",
			setup: func(t *testing.T, r *rig) {
				r.write(0, fill(4096, 12))
				if err := r.v.DropCaches(context.Background()); err != nil {
					t.Fatal(err)
				}
				expectStats(t, r.v, "write over clean", func() { r.write(7*512, fill(512, 13)) }, statIdx(true, H, false, false))
			},
			want: [8]byte{12, 12, 12, 12, 12, 12, 12, 13},
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "read-cached clean block in the open rambuf",
			tun:  vocab.Values{vocab.ReadCacheThreshold: 4, vocab.NrReadCacheCells: 1},
			setup: func(t *testing.T, r *rig) {
				expectStats(t, r.v, "first read", func() { r.read(0, 4096) }, statIdx(false, MISS, false, F))
				if s := r.v.Status().ReadCacheStaged; s != 1 {
					t.Errorf("read_cache_staged %d, want 1", s)
				}
			},
			want: full(B),
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "read-cached clean block on the cache device",
			tun:  vocab.Values{vocab.ReadCacheThreshold: 4, vocab.NrReadCacheCells: 1},
			setup: func(t *testing.T, r *rig) {
				r.read(0, 4096)
				r.flush()
			},
			want: full(B),
			stat: statIdx(false, H, false, F),
		},
		{
			name: "write cancels a read-cached copy",
			tun:  vocab.Values{vocab.ReadCacheThreshold: 4, vocab.NrReadCacheCells: 1},
			setup: func(t *testing.T, r *rig) {
				r.read(0, 4096)
				r.flush()
				r.write(0, fill(512, 14))
			},
			want: [8]byte{14, B, B, B, B, B, B, B},
			stat: statIdx(false, H, OB, F),
		},
		{
			name: "write-around invalidates the cached copy",
			tun:  vocab.Values{vocab.ReadCacheThreshold: 4, vocab.NrReadCacheCells: 1, vocab.WriteAroundMode: 1},
			setup: func(t *testing.T, r *rig) {
				r.read(0, 4096)
				expectStats(t, r.v, "write-around hit", func() { r.write(512, fill(512, 15)) }, statIdx(true, H, OB, false))
				if d := r.v.Status().NrDirtyCacheBlocks; d != 0 {
					t.Errorf("write-around left %d dirty blocks", d)
				}
			},
			want: [8]byte{B, 15, B, B, B, B, B, B},
			stat: statIdx(false, MISS, false, F),
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := newRig(t, 4, 1<<20, c.tun)
			if _, err := r.backing.WriteAt(fill(1<<20, B), 0); err != nil {
				t.Fatal(err)
			}
			c.setup(t, r)
			var got []byte
			expectStats(t, r.v, "read", func() { got = r.read(0, 4096) }, c.stat)
			if want := sectorsOf(c.want); !bytes.Equal(got, want) {
				t.Errorf("read %v, want %v", sectorSummary(got), c.want)
			}
			// The same bytes after a clean close and replay.
			r.close()
			r.open()
			if got := r.read(0, 4096); !bytes.Equal(got, sectorsOf(c.want)) {
				t.Errorf("after reopen: read %v, want %v", sectorSummary(got), c.want)
			}
		})
	}
}

func sectorSummary(b []byte) string {
	s := ""
	for j := 0; j+512 <= len(b); j += 512 {
		v := b[j]
		if !bytes.Equal(b[j:j+512], fill(512, v)) {
			s += "[mixed]"
			continue
		}
		s += fmt.Sprintf("%d ", v)
	}
	return s
}

// TestCompositionAllThree reads one request whose blocks live in the open
// rambuf, on the cache device and on the backing device.
func TestCompositionAllThree(t *testing.T) {
	r := newRig(t, 4, 1<<20, nil)
	if _, err := r.backing.WriteAt(fill(1<<20, 0xBB), 0); err != nil {
		t.Fatal(err)
	}
	r.write(4096, fill(4096, 1)) // block 1: cache device
	r.flush()
	r.write(0, fill(2048, 2)) // block 0: first half in RAM
	var got []byte
	expectStats(t, r.v, "read 3 blocks", func() { got = r.read(0, 3*4096) },
		statIdx(false, true, true, true), statIdx(false, true, false, true), statIdx(false, false, false, true))
	want := append(append(append(fill(2048, 2), fill(2048, 0xBB)...), fill(4096, 1)...), fill(4096, 0xBB)...)
	if !bytes.Equal(got, want) {
		t.Fatal("three-source read returned wrong bytes")
	}
}

// TestUnaligned checks byte-granular reads and writes (qemu-io does them).
func TestUnaligned(t *testing.T) {
	r := newRig(t, 4, 1<<20, nil)
	model := make([]byte, 1<<20)
	put := func(off int64, p []byte) {
		r.write(off, p)
		copy(model[off:], p)
	}
	put(100, fill(700, 1))
	put(4090, fill(13, 2))
	put(8191, []byte{3})
	put(5000, fill(9000, 4))
	for _, c := range [][2]int64{{0, 1 << 20}, {99, 3}, {4089, 20}, {8190, 3}, {4999, 9002}} {
		if got := r.read(c[0], int(c[1])); !bytes.Equal(got, model[c[0]:c[0]+c[1]]) {
			t.Fatalf("read %d bytes at %d differs", c[1], c[0])
		}
	}
	r.close()
	r.open()
	if got := r.read(0, 1<<20); !bytes.Equal(got, model) {
		t.Fatal("after reopen the volume differs")
	}
}

func TestBounds(t *testing.T) {
	r := newRig(t, 4, 1<<20+100, nil)
	if r.v.Size() != 1<<20 {
		t.Fatalf("size %d, want rounded down to 512", r.v.Size())
	}
	p := make([]byte, 4096)
	for _, off := range []int64{-1, 1<<20 - 4095, 1 << 20, 1 << 62} {
		if err := r.v.ReadAt(p, off); err == nil {
			t.Errorf("read at %d: no error", off)
		}
		if err := r.v.WriteAt(p, off, false); err == nil {
			t.Errorf("write at %d: no error", off)
		}
	}
	if err := r.v.Trim(1<<20-512, 1024); err == nil {
		t.Error("trim past the end: no error")
	}
	if err := r.v.WriteZeroes(-512, 512, false); err == nil {
		t.Error("write zeroes at -512: no error")
	}
}
