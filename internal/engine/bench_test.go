package engine

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// benchDir is where the benchmarks put their big sparse files.
func benchDir(b *testing.B) string {
	dir, err := os.MkdirTemp("/tmp", "engine-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// sparseFile creates a sparse file of size bytes and opens it O_DIRECT.
func sparseFile(b *testing.B, dir, name string, size int64) *blockdev.File {
	b.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	f.Close()
	d, err := blockdev.OpenFile(path, blockdev.FileOptions{Direct: true, Exclusive: true})
	if err != nil {
		b.Fatal(err)
	}
	if !d.Direct() {
		b.Logf("%s: no O_DIRECT on this filesystem", path)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

// preWrite writes the whole device once, as a cache partition or a
// dd-created cache file is: no hole, no unwritten extent, so that the
// engine and the sequential baseline meet the same file state.
func preWrite(b *testing.B, d blockdev.Device) {
	buf := blockdev.AlignedBuffer(8 << 20)
	for off := int64(0); off < d.Size(); off += int64(len(buf)) {
		n := min(int64(len(buf)), d.Size()-off)
		if _, err := d.WriteAt(buf[:n], off); err != nil {
			b.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
}

// seqWriteBandwidth writes size bytes of d sequentially from offset 0 in
// 512 KiB O_DIRECT writes, depth of them in flight, and syncs it: the
// cache device's own bandwidth, in bytes per second.
func seqWriteBandwidth(b *testing.B, d blockdev.Device, size int64, depth int) float64 {
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range depth {
		wg.Go(func() {
			buf := blockdev.AlignedBuffer(layout.SegmentSize)
			for {
				off := next.Add(layout.SegmentSize) - layout.SegmentSize
				if off+layout.SegmentSize > size {
					return
				}
				if _, err := d.WriteAt(buf, off); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(size) / time.Since(start).Seconds()
}

// BenchmarkRandomWrite4K measures engine-level 4 KiB random writes (no NBD,
// 4 writers) with cache and backing as O_DIRECT files in /tmp, against the
// cache file's own sequential 512 KiB O_DIRECT write bandwidth measured in
// the same run on the same file: one write at a time as dd does (seq_MB/s,
// ratio = engine / seq) and four at a time (seq_qd4_MB/s, ratio_qd4). The cache is large enough that no writeback is forced
// within a run (b.N is capped to its capacity).
//
// ENGINE_BENCH_RAMBUFS sets Config.NrRAMBuffers (default defaultRAMBuffers).
func BenchmarkRandomWrite4K(b *testing.B) {
	nrRAMBuffers := defaultRAMBuffers
	if s := os.Getenv("ENGINE_BENCH_RAMBUFS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			b.Fatalf("ENGINE_BENCH_RAMBUFS=%q: %v", s, err)
		}
		nrRAMBuffers = n
	}
	dir := benchDir(b)
	const cacheBytes = 1 << 30
	const backingBytes = 8 << 30
	cache := sparseFile(b, dir, "cache", cacheBytes)
	backing := sparseFile(b, dir, "backing", backingBytes)
	preWrite(b, cache)
	if err := Format(cache); err != nil {
		b.Fatal(err)
	}
	v, err := Open(Config{Backing: backing, Cache: cache, NrRAMBuffers: nrRAMBuffers})
	if err != nil {
		b.Fatal(err)
	}
	maxOps := int(v.geo.NrCacheBlocks()) - 8*layout.NrCachesPerSegment
	writers := 2
	b.SetBytes(layout.BlockSize)
	b.ResetTimer()
	n := min(b.N, maxOps)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			p := blockdev.AlignedBuffer(layout.BlockSize)
			for next.Add(1) <= int64(n) {
				off := rng.Int64N(backingBytes/layout.BlockSize) * layout.BlockSize
				if err := v.WriteAt(p, off, false); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := v.Flush(); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := v.Status()
	if st.SegmentWrites > 0 && st.CacheSyncs > 0 {
		b.Logf("%d segment writes, %.0f us each; %d cache syncs, %.0f us each; run %v",
			st.SegmentWrites, float64(st.SegmentWriteMicros)/float64(st.SegmentWrites), st.CacheSyncs, float64(st.CacheSyncMicros)/float64(st.CacheSyncs), elapsed)
	}
	engine := float64(n) * layout.BlockSize / elapsed.Seconds()
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	if n < 20000 {
		return // too short to compare
	}
	size := min(int64(n)*layout.BlockSize+layout.SegmentSize, cacheBytes)
	seq1 := seqWriteBandwidth(b, cache, size, 1) // as dd oflag=direct bs=512K
	seq4 := seqWriteBandwidth(b, cache, size, 4)
	b.ReportMetric(engine/1e6, "engine_MB/s")
	b.ReportMetric(seq1/1e6, "seq_MB/s")
	b.ReportMetric(seq4/1e6, "seq_qd4_MB/s")
	b.ReportMetric(engine/seq1, "ratio")
	b.ReportMetric(engine/seq4, "ratio_qd4")
}

// BenchmarkReplay1GiB fills a 1 GiB cache file with full segments, then
// compares Open (the replay) with reading the file sequentially (8 MiB
// O_DIRECT reads): metric ratio = replay time / read time.
func BenchmarkReplay1GiB(b *testing.B) {
	dir := benchDir(b)
	const cacheBytes = 1 << 30
	cache := sparseFile(b, dir, "cache", cacheBytes)
	backing := sparseFile(b, dir, "backing", 4<<30)
	if err := Format(cache); err != nil {
		b.Fatal(err)
	}
	v, err := Open(Config{Backing: backing, Cache: cache})
	if err != nil {
		b.Fatal(err)
	}
	n := int(v.geo.NrCacheBlocks()) - 1
	rng := rand.New(rand.NewPCG(1, 2))
	p := blockdev.AlignedBuffer(layout.BlockSize)
	for range n {
		if err := v.WriteAt(p, rng.Int64N(1<<20)*layout.BlockSize, false); err != nil {
			b.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		b.Fatal(err)
	}
	buf := blockdev.AlignedBuffer(8 << 20)
	b.ResetTimer()
	var replay, read time.Duration
	for range b.N {
		start := time.Now()
		v, err := Open(Config{Backing: backing, Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		replay += time.Since(start)
		st := v.Status()
		if st.NrDirtyCacheBlocks == 0 {
			b.Fatal("nothing replayed")
		}
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		for off := int64(0); off < cacheBytes; off += int64(len(buf)) {
			if _, err := cache.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		read += time.Since(start)
	}
	b.ReportMetric(float64(replay.Milliseconds())/float64(b.N), "replay_ms")
	b.ReportMetric(float64(read.Milliseconds())/float64(b.N), "seqread_ms")
	b.ReportMetric(replay.Seconds()/read.Seconds(), "ratio")
}

// nullDev is a device that stores nothing and reads as a freshly
// formatted cache: it isolates the engine's CPU cost from any device.
type nullDev struct{ size int64 }

func (d nullDev) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off == 0 && len(p) >= layout.SectorSize {
		layout.EncodeMagic(p)
	}
	return len(p), nil
}
func (d nullDev) WriteAt(p []byte, off int64) (int, error) { return len(p), nil }
func (d nullDev) Sync() error                              { return nil }
func (d nullDev) Size() int64                              { return d.size }
func (d nullDev) Discard(off, length int64) error          { return nil }
func (d nullDev) Close() error                             { return nil }

// BenchmarkWritePathCPU measures the write path alone (4 writers, 4 KiB
// random writes) over devices that do nothing.
func BenchmarkWritePathCPU(b *testing.B) {
	// 16 GiB of cache: no forced writeback within the run.
	v, err := Open(Config{Backing: nullDev{8 << 30}, Cache: nullDev{16 << 30}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(layout.BlockSize)
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			p := blockdev.AlignedBuffer(layout.BlockSize)
			for next.Add(1) <= int64(b.N) {
				if err := v.WriteAt(p, rng.Int64N(2<<20)*layout.BlockSize, false); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	v.Close()
}

// BenchmarkOpenIndexMemory16GiB opens a volume on a formatted 16 GiB
// sparse cache file (4 Mi cache blocks) and reports the heap the open
// volume holds per cache block (the issue allows 24 bytes; the index is
// most of it, the 8 rambufs are 4 MiB on top).
func BenchmarkOpenIndexMemory16GiB(b *testing.B) {
	dir := benchDir(b)
	cache := sparseFile(b, dir, "cache", 16<<30)
	backing := sparseFile(b, dir, "backing", 1<<30)
	if err := Format(cache); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		v, err := Open(Config{Backing: backing, Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		n := v.Status().NrCacheBlocks
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(n), "heap_bytes/block")
		b.ReportMetric(float64(v.mu.idx.bytes())/float64(n), "index_bytes/block")
		b.ReportMetric(float64(n), "cache_blocks")
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
