package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

func TestTunables(t *testing.T) {
	r := newRig(t, 2, 1<<20, vocab.Values{vocab.WritebackThreshold: 30})
	got := r.v.Tunables()
	// The one given, and every other at the table's default (the man-page
	// tests in vocab pin the defaults themselves).
	for _, tu := range vocab.Tunables() {
		want := tu.Spec().Default
		if tu == vocab.WritebackThreshold {
			want = 30
		}
		if got[tu] != want {
			t.Errorf("%s = %d, want %d", tu, got[tu], want)
		}
	}
	if len(got) != vocab.NumTunables {
		t.Errorf("tunables %v", got)
	}
	cases := []struct {
		name vocab.Tunable
		val  int64
		err  error
	}{
		{vocab.WritebackThreshold, 100, nil},
		{vocab.WritebackThreshold, 101, ErrOutOfRange},
		{vocab.WritebackThreshold, -1, ErrOutOfRange},
		{vocab.NrMaxBatchedWriteback, 0, ErrOutOfRange},
		{vocab.NrMaxBatchedWriteback, 1, nil},
		{vocab.UpdateSBRecordInterval, 3600, nil},
		{vocab.UpdateSBRecordInterval, 3601, ErrOutOfRange},
		{vocab.SyncDataInterval, 3601, ErrOutOfRange},
		{vocab.ReadCacheThreshold, 127, nil},
		{vocab.ReadCacheThreshold, 128, ErrOutOfRange},
		{vocab.WriteAroundMode, 1, ErrStatic},
		{vocab.NrReadCacheCells, 16, ErrStatic},
		{vocab.Tunable(vocab.NumTunables), 1, ErrUnknownTunable},
	}
	for _, c := range cases {
		err := r.v.SetTunable(c.name, c.val)
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("SetTunable(%s, %d) = %v, want %v", c.name, c.val, err, c.err)
		}
	}
	if r.v.Tunables()[vocab.WritebackThreshold] != 100 {
		t.Error("writeback_threshold did not change")
	}
	if s := r.v.Status(); s.NrMaxBatchedWriteback != 1 {
		t.Error("status does not show the tunables")
	}
}

func TestClosed(t *testing.T) {
	r := newRig(t, 2, 1<<20, nil)
	v := r.v
	r.close()
	p := make([]byte, 512)
	for name, err := range map[string]error{
		"read":        v.ReadAt(p, 0),
		"write":       v.WriteAt(p, 0, false),
		"flush":       v.Flush(),
		"trim":        v.Trim(0, 512),
		"zeroes":      v.WriteZeroes(0, 512, false),
		"drop_caches": v.DropCaches(context.Background()),
		"close":       v.Close(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after close: %v", name, err)
		}
	}
}

// slowSync makes Sync take a while, so that concurrent flushes overlap.
type slowSync struct{ *blockdev.Mem }

func (d slowSync) Sync() error {
	time.Sleep(20 * time.Millisecond)
	return d.Mem.Sync()
}

// TestGroupCommit: concurrent flushes share seals and syncs.
func TestGroupCommit(t *testing.T) {
	v := openOn(t, blockdev.NewMem(1<<20), noFUADevice{slowSync{blockdev.NewMem(cacheSize(8))}})
	r := &rig{t: t, v: v}
	defer v.Close()
	const n = 32
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := r.v.WriteAt(fill(4096, byte(i)), int64(i)*4096, true); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	s := r.v.Status()
	if s.CacheSyncs >= n || s.SegmentWrites >= n || s.NrPartialFlushed != n {
		t.Errorf("%d FUA writes took %d syncs and %d segment writes (nr_partial_flushed %d, want %d): no group commit", n, s.CacheSyncs, s.SegmentWrites, s.NrPartialFlushed, n)
	}
	t.Logf("%d concurrent FUA writes: %d cache syncs, %d segment writes", n, s.CacheSyncs, s.SegmentWrites)
	// An idle flush needs no new segment.
	before := r.v.Status()
	r.flush()
	if after := r.v.Status(); after.CurrentID != before.CurrentID || after.CacheSyncs != before.CacheSyncs {
		t.Errorf("idle flush: current_id %d -> %d, syncs %d -> %d", before.CurrentID, after.CurrentID, before.CacheSyncs, after.CacheSyncs)
	}
}

// TestModulator: with writeback_threshold > 0 and an idle backing device,
// writeback runs by itself; with 0 it never does unless forced.
func TestModulator(t *testing.T) {
	old := modulatorInterval
	modulatorInterval = 20 * time.Millisecond
	defer func() { modulatorInterval = old }()
	r := newRig(t, 8, 1<<20, nil)
	r.write(0, fill(64<<10, 1))
	r.flush()
	time.Sleep(100 * time.Millisecond)
	if s := r.v.Status(); s.NrDirtyCacheBlocks != 16 || *s.WritebackAllowed {
		t.Fatalf("threshold 0: dirty %d, writeback allowed %v", s.NrDirtyCacheBlocks, *s.WritebackAllowed)
	}
	if err := r.v.SetTunable(vocab.WritebackThreshold, 50); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.v.Status().NrDirtyCacheBlocks != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("threshold 50 on an idle device: still %d dirty", r.v.Status().NrDirtyCacheBlocks)
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := make([]byte, 64<<10)
	if _, err := r.backing.ReadAt(got, 0); err != nil || !bytes.Equal(got, fill(64<<10, 1)) {
		t.Fatal("written-back data not on the backing device")
	}
}

// TestForcedWriteback: a full ring forces writeback even with the
// modulator off, and the data survives the wrap.
func TestForcedWriteback(t *testing.T) {
	r := newRig(t, 2, 4<<20, nil)
	for i := 0; i < 1000; i++ {
		r.write(int64(i)*4096, fill(4096, byte(i)))
	}
	s := r.v.Status()
	if s.LastWritebackID == 0 || s.CurrentID <= s.NrSegments {
		t.Fatalf("ring did not wrap: %+v", s)
	}
	for i := 0; i < 1000; i++ {
		if got := r.read(int64(i)*4096, 4096); !bytes.Equal(got, fill(4096, byte(i))) {
			t.Fatalf("block %d lost after the ring wrapped", i)
		}
	}
}

func readRecord(t *testing.T, r *rig) uint64 {
	t.Helper()
	b := make([]byte, 512)
	if _, err := r.cache.ReadAt(b, layout.SuperRecordOffset); err != nil {
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b)
}

func TestSuperblockRecord(t *testing.T) {
	r := newRig(t, 4, 1<<20, vocab.Values{vocab.UpdateSBRecordInterval: 1})
	r.write(0, fill(4096, 1))
	if err := r.v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	wb := r.v.Status().LastWritebackID
	deadline := time.Now().Add(5 * time.Second)
	for readRecord(t, r) != wb {
		if time.Now().After(deadline) {
			t.Fatalf("record %d, last_writeback_id %d", readRecord(t, r), wb)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Close records too.
	r.write(4096, fill(4096, 2))
	if err := r.v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	wb = r.v.Status().LastWritebackID
	r.close()
	if got := readRecord(t, r); got != wb {
		t.Fatalf("after close: record %d, want %d", got, wb)
	}
}

func TestDataSynchronizer(t *testing.T) {
	r := newRig(t, 4, 1<<20, vocab.Values{vocab.SyncDataInterval: 1})
	r.write(0, fill(4096, 1))
	deadline := time.Now().Add(5 * time.Second)
	for r.v.Status().LastDurableID == 0 {
		if time.Now().After(deadline) {
			t.Fatal("sync_data_interval=1 did not make the write durable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.crash(nil)
	r.open()
	if got := r.read(0, 4096); !bytes.Equal(got, fill(4096, 1)) {
		t.Fatal("synced data lost in a crash")
	}
}

// TestReadCacheSequential: a run of consecutive block reads longer than
// read_cache_threshold is not cached; short runs are.
func TestReadCacheSequential(t *testing.T) {
	r := newRig(t, 4, 1<<20, vocab.Values{vocab.ReadCacheThreshold: 2, vocab.NrReadCacheCells: 8})
	// 4 consecutive blocks (too long), then 2 separate pairs, then 2
	// isolated blocks: 8 cells used, 6 of them cacheable.
	r.read(0, 4*4096)
	r.read(10*4096, 2*4096)
	r.read(20*4096, 2*4096)
	if s := r.v.Status(); s.ReadCacheStaged != 4 {
		t.Fatalf("staged %d blocks, want the 2 pairs (4)", s.ReadCacheStaged)
	}
	for _, c := range []struct {
		block int64
		hit   bool
	}{{0, false}, {3, false}, {10, true}, {11, true}, {20, true}} {
		want := statIdx(false, c.hit, c.hit, true)
		expectStats(t, r.v, "read", func() { r.read(c.block*4096, 4096) }, want)
	}
}

// TestWriteAround: writes reach the backing device, the log never holds a
// valid segment, and a flush syncs the backing device.
func TestWriteAround(t *testing.T) {
	r := newRig(t, 4, 1<<20, vocab.Values{vocab.WriteAroundMode: 1, vocab.ReadCacheThreshold: 4, vocab.NrReadCacheCells: 1})
	r.write(8192, fill(4096, 5))
	got := make([]byte, 4096)
	if _, err := r.backing.ReadAt(got, 8192); err != nil || !bytes.Equal(got, fill(4096, 5)) {
		t.Fatal("write-around did not reach the backing device")
	}
	r.read(8192, 4096) // staged as a clean block
	r.flush()
	if s := r.v.Status(); s.NrDirtyCacheBlocks != 0 || s.ReadCacheStaged != 1 {
		t.Fatalf("status %+v", s)
	}
	r.crash(nil)
	if got := r.backing; got == nil {
		t.Fatal("no backing")
	}
	if _, err := r.backing.ReadAt(got, 8192); err != nil || !bytes.Equal(got, fill(4096, 5)) {
		t.Fatal("flushed write-around data lost in a crash")
	}
	// The crash left a log with no valid segment: write-around reopens.
	r.open()
	if got := r.read(8192, 4096); !bytes.Equal(got, fill(4096, 5)) {
		t.Fatal("read after reopen")
	}
}

func TestWriteZeroesAndTrim(t *testing.T) {
	r := newRig(t, 4, 1<<20, nil)
	r.write(0, fill(64<<10, 9))
	r.flush()
	if err := r.v.WriteZeroes(1000, 20000, true); err != nil {
		t.Fatal(err)
	}
	want := fill(64<<10, 9)
	clear(want[1000:21000])
	if got := r.read(0, 64<<10); !bytes.Equal(got, want) {
		t.Fatal("write zeroes")
	}
	r.crash(nil)
	r.open()
	if got := r.read(0, 64<<10); !bytes.Equal(got, want) {
		t.Fatal("write zeroes did not survive a crash")
	}
	// Trim drops cached copies of whole blocks and discards the backing
	// range (Mem reads discarded ranges as zeros).
	if _, err := r.backing.WriteAt(fill(1<<20, 0xBB), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	before := r.v.Status().NrDirtyCacheBlocks
	r.write(40960, fill(8192, 3))
	if err := r.v.Trim(40960, 8192); err != nil {
		t.Fatal(err)
	}
	if s := r.v.Status(); s.NrDirtyCacheBlocks != before {
		t.Fatalf("trim left %d dirty blocks, want %d", s.NrDirtyCacheBlocks, before)
	}
	if got := r.read(40960, 8192); !bytes.Equal(got, make([]byte, 8192)) {
		t.Fatal("trimmed range does not read the discarded backing device")
	}
}

// TestConcurrent hammers the volume from several goroutines on disjoint
// regions (writes, reads, flushes) while drop_caches and status run, on a
// small cache so the ring wraps; for the race detector and the final check.
func TestConcurrent(t *testing.T) {
	r := newRig(t, 3, 1<<20, vocab.Values{vocab.WritebackThreshold: 100, vocab.NrMaxBatchedWriteback: 2})
	const workers = 4
	const region = (1 << 20) / workers
	images := make([][]byte, workers)
	var wg sync.WaitGroup
	for w := range workers {
		images[w] = make([]byte, region)
		wg.Go(func() {
			base := int64(w) * region
			for i := range 400 {
				off := int64((i*37+w*11)%(region/512-16)) * 512
				n := 512 * (1 + (i % 16))
				p := fill(n, byte(i+w))
				if err := r.v.WriteAt(p, base+off, i%50 == 0); err != nil {
					t.Error(err)
					return
				}
				copy(images[w][off:], p)
				got := make([]byte, n)
				if err := r.v.ReadAt(got, base+off); err != nil || !bytes.Equal(got, p) {
					t.Errorf("worker %d: read back after write %d: %v", w, i, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 5 {
			if err := r.v.DropCaches(context.Background()); err != nil {
				t.Error(err)
			}
			_ = r.v.Status()
		}
	})
	wg.Wait()
	r.close()
	r.open()
	for w := range workers {
		if got := r.read(int64(w)*region, region); !bytes.Equal(got, images[w]) {
			t.Fatalf("worker %d's region differs after reopen", w)
		}
	}
}

// TestStatusKernelConventions: the status line reads as the kernel's
// (docs/kernel-differences.md): current_id is the segment that takes the
// next write, opened eagerly; cursor_pos the next cache block to write;
// nr_partial_flushed counts every FLUSH request, empty buffer or not;
// nr_cur_batched_writeback is the size of the current batch, 0 before one.
func TestStatusKernelConventions(t *testing.T) {
	r := newRig(t, 4, 1<<20, nil)
	s := r.v.Status()
	if s.CurrentID != 1 || s.CursorPos != 0 || s.NrPartialFlushed != 0 || s.Tunables.NrCurBatchedWriteback != 0 {
		t.Fatalf("fresh cache: current_id %d cursor_pos %d nr_partial_flushed %d batch %d, want 1 0 0 0", s.CurrentID, s.CursorPos, s.NrPartialFlushed, s.Tunables.NrCurBatchedWriteback)
	}
	r.write(0, fill(8192, 1))
	if s := r.v.Status(); s.CurrentID != 1 || s.CursorPos != 2 {
		t.Fatalf("two blocks written: current_id %d cursor_pos %d, want 1 2", s.CurrentID, s.CursorPos)
	}
	r.flush()
	if s := r.v.Status(); s.CurrentID != 2 || s.CursorPos != 127 || s.LastFlushedID != 1 || s.NrPartialFlushed != 1 {
		t.Fatalf("after a FLUSH: current_id %d cursor_pos %d last_flushed_id %d nr_partial_flushed %d, want 2 127 1 1", s.CurrentID, s.CursorPos, s.LastFlushedID, s.NrPartialFlushed)
	}
	r.flush() // nothing buffered: no segment, but a FLUSH handled
	if s := r.v.Status(); s.CurrentID != 2 || s.NrPartialFlushed != 2 {
		t.Fatalf("after an empty FLUSH: current_id %d nr_partial_flushed %d, want 2 2", s.CurrentID, s.NrPartialFlushed)
	}
	if err := r.v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s := r.v.Status(); s.Tunables.NrCurBatchedWriteback == 0 {
		t.Fatal("nr_cur_batched_writeback is 0 after a writeback batch")
	}
	r.v.ClearStat()
	if s := r.v.Status(); s.NrPartialFlushed != 0 {
		t.Fatalf("clear_stat left nr_partial_flushed %d", s.NrPartialFlushed)
	}
}
