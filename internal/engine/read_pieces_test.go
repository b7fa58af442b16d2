package engine

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// TestReadMixedSources: requests that take sectors from the open rambuf,
// from whole and partial blocks of several segments on the cache device
// and from the backing device, at any sector alignment, read what was
// written. Reads run concurrently with writes that keep sealing segments
// and a ring small enough to be reused, so pins and plans are exercised
// against slot reuse.
func TestReadMixedSources(t *testing.T) {
	const size = 4 << 20
	r := newRig(t, 6, size, vocab.Values{vocab.NrMaxBatchedWriteback: 2})
	rng := rand.New(rand.NewPCG(1, 2))
	base := make([]byte, size)
	for i := range base {
		base[i] = byte(rng.Uint32())
	}
	if _, err := r.backing.WriteAt(base, 0); err != nil {
		t.Fatal(err)
	}
	// want is the model; every write is applied to it under mu before the
	// engine sees it, and reads check regions no writer touches while they
	// run (writers own the upper half, readers check a stable lower half
	// once its writes are done).
	want := bytes.Clone(base)
	half := int64(size / 2)
	write := func(off int64, n int, b byte) {
		p := fill(n, b)
		r.write(off, p)
		copy(want[off:], p)
	}
	// Sequential whole blocks (adjacent data slots), scattered partial
	// blocks, and a tail left in the open rambuf.
	write(0, 600*layout.BlockSize, 1)
	for k := range 300 {
		off := int64(rng.IntN(int(half/layout.SectorSize)-16)) * layout.SectorSize
		write(off, (1+rng.IntN(15))*layout.SectorSize, byte(k+2))
	}
	r.flush()
	write(7*layout.BlockSize+layout.SectorSize, 3*layout.SectorSize, 0xEE) // stays in the open rambuf

	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		// Churn the ring from the upper half: seals, flushes, writeback
		// and slot reuse while the reads below run.
		defer wg.Done()
		for k := 0; !stop.Load(); k++ {
			off := half + int64(k%500)*layout.BlockSize
			if err := r.v.WriteAt(fill(layout.BlockSize, byte(k)), off, false); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	deadline := time.Now().Add(time.Second)
	for n := 0; time.Now().Before(deadline) || n < 200; n++ {
		off := int64(rng.IntN(int(half/layout.SectorSize))) * layout.SectorSize
		ln := min(int64(1+rng.IntN(2048))*layout.SectorSize, half-off)
		if n%3 == 0 { // unaligned bytes too
			off += int64(rng.IntN(layout.SectorSize))
			ln = min(ln, half-off) - int64(rng.IntN(layout.SectorSize))
		}
		got := r.read(off, int(ln))
		if !bytes.Equal(got, want[off:off+ln]) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("read %d bytes at %d differs from the model", ln, off)
		}
	}
	stop.Store(true)
	wg.Wait()
}

// TestReadHitAllocs: a 4 KiB read hit on the cache device and one in a
// rambuf allocate nothing (the plan is pooled, the block is read straight
// into the caller's buffer).
func TestReadHitAllocs(t *testing.T) {
	r := newRig(t, 8, 1<<20, nil)
	r.write(0, fill(8*layout.BlockSize, 3))
	r.flush()
	r.write(16*layout.BlockSize, fill(layout.BlockSize, 4)) // open rambuf
	p := blockdev.AlignedBuffer(layout.BlockSize)
	for _, off := range []int64{2 * layout.BlockSize, 16 * layout.BlockSize} {
		allocs := testing.AllocsPerRun(200, func() {
			if err := r.v.ReadAt(p, off); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 0 {
			t.Errorf("4 KiB read hit at %d: %.1f allocations per read", off, allocs)
		}
	}
}

// countingDev counts reads and the largest one.
type countingDev struct {
	blockdev.Device
	reads, maxLen atomic.Int64
}

func (c *countingDev) ReadAt(p []byte, off int64) (int, error) {
	c.reads.Add(1)
	for {
		m := c.maxLen.Load()
		if int64(len(p)) <= m || c.maxLen.CompareAndSwap(m, int64(len(p))) {
			break
		}
	}
	return c.Device.ReadAt(p, off)
}

// TestSequentialReadCoalesces: 1 MiB read of data written sequentially
// costs one cache device read per segment it spans, and a read of
// uncached data one backing read.
func TestSequentialReadCoalesces(t *testing.T) {
	cache := &countingDev{Device: blockdev.NewMem(cacheSize(16))}
	back := &countingDev{Device: blockdev.NewMem(8 << 20)}
	v := openOn(t, back, cache)
	defer v.Close()
	want := make([]byte, 1<<20)
	for i := range want {
		want[i] = byte(i / 4096)
	}
	if err := v.WriteAt(want, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	cache.reads.Store(0)
	got := make([]byte, 1<<20)
	if err := v.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("1 MiB read differs from what was written")
	}
	// 256 blocks in segments of 127: 3 segments.
	if n := cache.reads.Load(); n != 3 {
		t.Fatalf("1 MiB cached read made %d cache device reads, want 3", n)
	}
	back.reads.Store(0)
	if err := v.ReadAt(got, 4<<20); err != nil {
		t.Fatal(err)
	}
	if n, m := back.reads.Load(), back.maxLen.Load(); n != 1 || m != 1<<20 {
		t.Fatalf("1 MiB uncached read made %d backing reads (largest %d bytes), want one of 1 MiB", n, m)
	}
}
