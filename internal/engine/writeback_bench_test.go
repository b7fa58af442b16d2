package engine

import (
	"context"
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
