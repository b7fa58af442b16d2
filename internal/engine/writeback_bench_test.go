package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// queuedDisk models a disk with a command queue: each request takes lat,
// and up to depth of them are served at once (the emulated HDD of the
// bench is 2 deep at 7 ms). Sync takes lat too.
type queuedDisk struct {
	blockdev.Device
	lat   time.Duration
	slots chan struct{}
}

func newQueuedDisk(d blockdev.Device, depth int, lat time.Duration) *queuedDisk {
	return &queuedDisk{Device: d, lat: lat, slots: make(chan struct{}, depth)}
}

func (q *queuedDisk) WriteAt(p []byte, off int64) (int, error) {
	q.slots <- struct{}{}
	defer func() { <-q.slots }()
	time.Sleep(q.lat)
	return q.Device.WriteAt(p, off)
}

func (q *queuedDisk) Sync() error {
	q.slots <- struct{}{}
	defer func() { <-q.slots }()
	time.Sleep(q.lat)
	return q.Device.Sync()
}

// BenchmarkWritebackScatteredQueuedDisk drains 256 scattered dirty 4 KiB
// blocks (none adjacent) into a 4-deep disk of 1 ms per request: with one
// write at a time writeback gets a quarter of what the disk can do.
func BenchmarkWritebackScatteredQueuedDisk(b *testing.B) {
	const nBlocks = 256
	for b.Loop() {
		b.StopTimer()
		cache := blockdev.NewMem(cacheSize(8))
		if err := Format(cache); err != nil {
			b.Fatal(err)
		}
		back := newQueuedDisk(blockdev.NewMem(2*nBlocks*layout.BlockSize), 4, time.Millisecond)
		v, err := Open(Config{Backing: back, Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		for k := range nBlocks {
			if err := v.WriteAt(fill(layout.BlockSize, byte(k)), int64(2*k)*layout.BlockSize, false); err != nil {
				b.Fatal(err)
			}
		}
		if err := v.Flush(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := v.DropCaches(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.SetBytes(nBlocks * layout.BlockSize)
}

// BenchmarkOverwriteUnderWriteback is the durable-copy rule's cost: one
// writer overwrites 4 KiB blocks of a hot set at random, with a FLUSH
// every flushEvery writes, on a ring of 8 segments (1016 blocks) smaller
// than the hot set, so writeback runs all the time (forced by the full
// ring) into a 4-deep disk of 1 ms per request. wb_bytes/written_byte is
// what reached the backing device per byte written: superseded copies
// written back because their overwrite was not yet durable raise it.
func BenchmarkOverwriteUnderWriteback(b *testing.B) {
	for _, flushEvery := range []int{16, 256, 0} {
		b.Run(fmt.Sprintf("flush_every=%d", flushEvery), func(b *testing.B) {
			const hot = 4096
			cache := blockdev.NewMem(cacheSize(8))
			if err := Format(cache); err != nil {
				b.Fatal(err)
			}
			back := newQueuedDisk(blockdev.NewMem(hot*layout.BlockSize), 4, time.Millisecond)
			v, err := Open(Config{Backing: back, Cache: cache})
			if err != nil {
				b.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			p := fill(layout.BlockSize, 7)
			b.SetBytes(layout.BlockSize)
			start := time.Now()
			n := 0
			for b.Loop() {
				if err := v.WriteAt(p, rng.Int64N(hot)*layout.BlockSize, false); err != nil {
					b.Fatal(err)
				}
				n++
				if flushEvery > 0 && n%flushEvery == 0 {
					if err := v.Flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			elapsed := time.Since(start)
			wb := v.stats.writebackBytes.Load()
			if err := v.Close(); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(wb)/float64(n*layout.BlockSize), "wb_bytes/written_byte")
			b.ReportMetric(float64(n*layout.BlockSize)/elapsed.Seconds()/1e6, "write_MB/s")
		})
	}
}

// BenchmarkWritebackReplayPieces opens a log as the kernel target leaves
// it, where 127 partial copies cover half of older full copies: replay
// writes the other halves (the pieces, 4 sectors each, those of two
// neighbouring blocks adjacent) back to a 4-deep disk of 1 ms per request
// before serving.
func BenchmarkWritebackReplayPieces(b *testing.B) {
	const n = layout.NrCachesPerSegment
	full := make([]layout.Metablock, n)
	half := make([]layout.Metablock, n)
	data := make([][]byte, n)
	for k := range n {
		full[k] = layout.Metablock{Sector: uint64(k) * layout.SectorsPerBlock, DirtyBits: layout.DirtyFull}
		half[k] = layout.Metablock{Sector: uint64(k) * layout.SectorsPerBlock, DirtyBits: 0x0F << (4 * (k % 2))}
		data[k] = fill(layout.BlockSize, byte(k+1))
	}
	for b.Loop() {
		b.StopTimer()
		cache := blockdev.NewMem(cacheSize(8))
		if err := Format(cache); err != nil {
			b.Fatal(err)
		}
		geo, err := layout.NewGeometry(cache.Size())
		if err != nil {
			b.Fatal(err)
		}
		putSegment(b, cache, geo, 1, full, data)
		putSegment(b, cache, geo, 2, half, data)
		back := newQueuedDisk(blockdev.NewMem(n*layout.BlockSize), 4, time.Millisecond)
		b.StartTimer()
		v, err := Open(Config{Backing: back, Cache: cache})
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := v.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.SetBytes(n * layout.BlockSize / 2)
}
