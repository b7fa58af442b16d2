package engine

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
	"github.com/writeboost/writeboost/internal/vocab"
)

// slowBacking is a backing device whose writes take a while, and which
// records how many were in flight at once, the order they were submitted
// in, and whether a Sync ever overlapped a write.
type slowBacking struct {
	blockdev.Device
	delay time.Duration

	mu           sync.Mutex
	inFlight     int
	maxInFlight  int
	order        []int64 // write offsets, in submission order
	syncOverlaps int     // Syncs called while a write was in flight
	batches      [][]int64
}

func (s *slowBacking) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.order = append(s.order, off)
	s.mu.Unlock()
	time.Sleep(s.delay)
	n, err := s.Device.WriteAt(p, off)
	s.mu.Lock()
	s.inFlight--
	s.mu.Unlock()
	return n, err
}

func (s *slowBacking) Sync() error {
	s.mu.Lock()
	if s.inFlight > 0 {
		s.syncOverlaps++
	}
	if len(s.order) > 0 {
		s.batches = append(s.batches, s.order)
		s.order = nil
	}
	s.mu.Unlock()
	return s.Device.Sync()
}

// TestWritebackWritesInFlight: the merged writes of a batch overlap (up to
// sectorio.InFlight), each batch submits them in ascending backing order,
// and the backing sync comes only after all of them completed.
func TestWritebackWritesInFlight(t *testing.T) {
	const nBlocks = 200 // every other block: 200 runs that cannot merge
	backMem := blockdev.NewMem(2 * nBlocks * layout.BlockSize)
	back := &slowBacking{Device: backMem, delay: 2 * time.Millisecond}
	v := openOn(t, back, blockdev.NewMem(cacheSize(16)))
	defer v.Close()
	// Written in descending order, so that sorting is what makes the
	// submission order ascending.
	for k := nBlocks - 1; k >= 0; k-- {
		if err := v.WriteAt(fill(layout.BlockSize, byte(k+1)), int64(2*k)*layout.BlockSize, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	back.mu.Lock()
	defer back.mu.Unlock()
	if back.maxInFlight < 2 || back.maxInFlight > sectorio.InFlight {
		t.Fatalf("writeback had at most %d writes in flight, want 2..%d", back.maxInFlight, sectorio.InFlight)
	}
	if back.syncOverlaps != 0 {
		t.Fatalf("%d backing syncs overlapped a writeback write", back.syncOverlaps)
	}
	if len(back.order) != 0 {
		t.Fatalf("%d writes after the last sync", len(back.order))
	}
	total := 0
	for i, b := range back.batches {
		total += len(b)
		// Goroutines may reach the device out of order by a little; the
		// submission order is ascending, so no write can come more than
		// sectorio.InFlight places after a write of a higher offset.
		sorted := slices.Clone(b)
		slices.Sort(sorted)
		for j, off := range b {
			k, _ := slices.BinarySearch(sorted, off)
			if d := j - k; d > sectorio.InFlight || d < -sectorio.InFlight {
				t.Fatalf("batch %d: write %d at offset %d is %d places from its sorted position", i, j, off, d)
			}
		}
	}
	if total != nBlocks {
		t.Fatalf("%d backing writes, want %d (one per separate block)", total, nBlocks)
	}
	for k := range nBlocks {
		got := make([]byte, layout.BlockSize)
		if _, err := backMem.ReadAt(got, int64(2*k)*layout.BlockSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fill(layout.BlockSize, byte(k+1))) {
			t.Fatalf("backing block %d does not hold the written-back data", 2*k)
		}
	}
}

// TestWritebackFailedRunAmongMany: one failing write among many in flight
// fails the batch; nothing is synced as if complete, last_writeback_id
// stays, and the retry writes everything.
func TestWritebackFailedRunAmongMany(t *testing.T) {
	f := newFaultRig(t, 8, nil)
	const nBlocks = 100
	for k := range nBlocks {
		if err := f.v.WriteAt(fill(layout.BlockSize, byte(k+1)), int64(2*k)*layout.BlockSize, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.v.Flush(); err != nil {
		t.Fatal(err)
	}
	before := f.v.Status().LastWritebackID
	// Fail the write of block 2*57 only.
	id := f.back.Inject(blockdev.Rule{Ops: blockdev.OpWrite, Off: 2 * 57 * layout.BlockSize, Len: layout.BlockSize})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- f.v.DropCaches(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.v.Status().Errors.Writeback < 2 {
		if time.Now().After(deadline) {
			t.Fatal("writeback was not retried")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := f.v.Status(); s.LastWritebackID != before {
		t.Fatalf("failed writeback moved last_writeback_id %d -> %d", before, s.LastWritebackID)
	}
	f.back.Remove(id)
	if err := <-done; err != nil {
		t.Fatalf("drop_caches after the fault cleared: %v", err)
	}
	if s := f.v.Status(); s.NrDirtyCacheBlocks != 0 || s.LastWritebackID <= before {
		t.Fatalf("after recovery: dirty %d, last_writeback_id %d (was %d)", s.NrDirtyCacheBlocks, s.LastWritebackID, before)
	}
	for k := range nBlocks {
		got := make([]byte, layout.BlockSize)
		if _, err := f.backMem.ReadAt(got, int64(2*k)*layout.BlockSize); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, fill(layout.BlockSize, byte(k+1))) {
			t.Fatalf("backing block %d does not hold the written-back data", 2*k)
		}
	}
}

// TestWritebackAcrossRingWrap: batches whose segments wrap around the end
// of the ring (read in two runs) write back the right data. A small ring
// filled several times over forces writeback of batches at every offset.
func TestWritebackAcrossRingWrap(t *testing.T) {
	for _, batch := range []int64{1, 2, 3, 5} {
		t.Run(fmt.Sprint("batch", batch), func(t *testing.T) {
			r := newRig(t, 4, 8<<20, vocab.Values{vocab.NrMaxBatchedWriteback: batch})
			want := make([]byte, 8<<20)
			// 3 KiB writes: partial blocks too, so dirty bits other than
			// full reach the staging.
			for k := range 1200 {
				off := int64((k*7919)%2700) * 3072
				p := fill(3072, byte(k%251+1))
				r.write(off, p)
				copy(want[off:], p)
			}
			if err := r.v.DropCaches(context.Background()); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(want))
			if _, err := r.backing.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("backing device differs from what was written")
			}
		})
	}
}

// TestWritebackBatchSizedByTime: on a slow backing device a writeback
// batch is cut to what the disk takes in about writebackBatchTime, so
// last_writeback_id advances in many small steps rather than one batch
// that could outlast the time between two crashes; on a fast one the
// batches stay at nr_max_batched_writeback.
func TestWritebackBatchSizedByTime(t *testing.T) {
	const nSeg = 12
	run := func(t *testing.T, perOp time.Duration, batchTime time.Duration) (batches uint64, maxStep uint64) {
		back := blockdev.NewSlow(blockdev.NewMem(16<<20), perOp, 0)
		old := writebackBatchTime
		writebackBatchTime = batchTime
		defer func() { writebackBatchTime = old }()
		v := openOn(t, back, blockdev.NewMem(cacheSize(nSeg+4)))
		defer v.Close()
		// Every other block: 127 separate writes per segment.
		for k := range nSeg * layout.NrCachesPerSegment {
			if err := v.WriteAt(fill(layout.BlockSize, byte(k)), int64(2*k)*layout.BlockSize, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.Flush(); err != nil {
			t.Fatal(err)
		}
		// Sample last_writeback_id while drop_caches runs.
		done := make(chan struct{})
		var steps []uint64
		go func() {
			defer close(done)
			last := uint64(0)
			for {
				v.mu.Lock()
				wb, target := v.mu.lastWB, v.mu.lastSealed
				v.mu.Unlock()
				if wb != last {
					steps = append(steps, wb-last)
					last = wb
				}
				if wb >= target {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}()
		if err := v.DropCaches(context.Background()); err != nil {
			t.Fatal(err)
		}
		<-done
		for _, s := range steps {
			maxStep = max(maxStep, s)
		}
		return v.stats.writebackBatches.Load(), maxStep
	}
	// 127 writes of 1 ms per segment: about 130 ms a segment; batches of
	// about 300 ms hold 2 or 3 segments.
	slowBatches, slowStep := run(t, time.Millisecond, 300*time.Millisecond)
	if slowBatches < nSeg/4 || slowStep > 4 {
		t.Fatalf("slow disk: %d batches, largest step %d segments: want batches of about 300 ms (2-3 segments)", slowBatches, slowStep)
	}
	fastBatches, fastStep := run(t, 0, 300*time.Millisecond)
	if fastStep < nSeg/2 {
		t.Fatalf("fast disk: %d batches, largest step %d segments: the time bound should not cut them", fastBatches, fastStep)
	}
	t.Logf("slow disk: %d batches (largest %d segments); fast disk: %d batches (largest %d segments)", slowBatches, slowStep, fastBatches, fastStep)
}
