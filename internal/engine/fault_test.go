package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

func init() { writebackBackoff = 5 * time.Millisecond }

// faultRig is a volume over Faulty wrappers of in-memory devices.
type faultRig struct {
	cacheMem, backMem *blockdev.Mem
	cache, back       *blockdev.Faulty
	v                 *Volume
}

// newFaultRig: the Faulty cache forwards FUA writes, so flushes take the
// FUA path production takes (pwritev2 RWF_DSYNC).
func newFaultRig(t *testing.T, nSeg int, tun vocab.Values) *faultRig {
	return newFaultRigFUA(t, nSeg, tun, true)
}

// newFaultRigFUA is newFaultRig; with fua false the engine does not see
// that the cache takes FUA writes, and every flush writes, then syncs.
func newFaultRigFUA(t *testing.T, nSeg int, tun vocab.Values, fua bool) *faultRig {
	t.Helper()
	f := &faultRig{cacheMem: blockdev.NewMem(cacheSize(nSeg)), backMem: blockdev.NewMem(1 << 20)}
	f.cache, f.back = blockdev.NewFaulty(f.cacheMem), blockdev.NewFaulty(f.backMem)
	var cache blockdev.Device = f.cache
	if !fua {
		cache = noFUADevice{f.cache}
	}
	f.v = openOn(t, f.back, cache, Config{Tunables: tun})
	t.Cleanup(func() {
		f.cache.Clear()
		f.back.Clear()
		_ = f.v.Close()
	})
	return f
}

var segArea = blockdev.Rule{Off: layout.SuperblockSize, Len: 1 << 40}

func TestReadErrorsAreReturned(t *testing.T) {
	f := newFaultRig(t, 4, nil)
	if err := f.v.WriteAt(fill(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.v.Flush(); err != nil {
		t.Fatal(err)
	}
	// Block 0 is on the cache device: a failing cache read is an error.
	r := segArea
	r.Ops = blockdev.OpRead
	id := f.cache.Inject(r)
	p := make([]byte, 4096)
	if err := f.v.ReadAt(p, 0); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("read with a failing cache device: %v", err)
	}
	// A partial write that must merge with the copy on the cache device
	// fails too, and changes nothing.
	if err := f.v.WriteAt(fill(512, 2), 512, false); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("merge write with a failing cache device: %v", err)
	}
	f.cache.Remove(id)
	if err := f.v.ReadAt(p, 0); err != nil || !bytes.Equal(p, fill(4096, 1)) {
		t.Fatalf("after the fault: err %v, data changed %v", err, !bytes.Equal(p, fill(4096, 1)))
	}
	// Block 1 is only on the backing device.
	id = f.back.Inject(blockdev.Rule{Ops: blockdev.OpRead})
	if err := f.v.ReadAt(p, 4096); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("read with a failing backing device: %v", err)
	}
	f.back.Remove(id)
	s := f.v.Status()
	if s.Errors.CacheRead < 2 || s.Errors.BackingRead != 1 {
		t.Errorf("error counters: cache reads %d, backing reads %d", s.Errors.CacheRead, s.Errors.BackingRead)
	}
}

func TestFailedWritebackIsRetried(t *testing.T) {
	f := newFaultRig(t, 4, nil)
	want := fill(64<<10, 7)
	if err := f.v.WriteAt(want, 0, true); err != nil {
		t.Fatal(err)
	}
	before := f.v.Status().LastWritebackID
	id := f.back.Inject(blockdev.Rule{Ops: blockdev.OpWrite | blockdev.OpSync})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.v.DropCaches(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for f.v.Status().Errors.Writeback < 3 {
		if time.Now().After(deadline) {
			t.Fatal("writeback was not retried")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s := f.v.Status(); s.LastWritebackID != before || s.NrDirtyCacheBlocks != 16 {
		t.Fatalf("failed writeback moved last_writeback_id %d -> %d, dirty %d", before, s.LastWritebackID, s.NrDirtyCacheBlocks)
	}
	f.back.Remove(id)
	if err := <-done; err != nil {
		t.Fatalf("drop_caches after the fault cleared: %v", err)
	}
	cancel()
	s := f.v.Status()
	if s.LastWritebackID <= before || s.NrDirtyCacheBlocks != 0 {
		t.Fatalf("after recovery: last_writeback_id %d (was %d), dirty %d", s.LastWritebackID, before, s.NrDirtyCacheBlocks)
	}
	got := make([]byte, len(want))
	if _, err := f.backMem.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatal("backing device does not hold the written-back data")
	}
}

func TestDropCachesCancel(t *testing.T) {
	f := newFaultRig(t, 4, nil)
	if err := f.v.WriteAt(fill(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	f.back.Inject(blockdev.Rule{Ops: blockdev.OpWrite})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.v.DropCaches(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("drop_caches with a dead backing device: %v", err)
	}
}

func TestFlushSyncFailure(t *testing.T) {
	f := newFaultRigFUA(t, 4, nil, false)
	if err := f.v.WriteAt(fill(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	id := f.cache.Inject(blockdev.Rule{Ops: blockdev.OpSync, Times: 1})
	if err := f.v.Flush(); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("flush with a failing sync: %v", err)
	}
	f.cache.Remove(id)
	if err := f.v.Flush(); err != nil {
		t.Fatalf("flush after the fault: %v", err)
	}
}

// TestFlushFUAWriteFailure: a flush whose segment goes out as a FUA write
// retries a failed one, and a cache device that keeps failing them fails
// the flush and the volume, as failed plain writes do.
func TestFlushFUAWriteFailure(t *testing.T) {
	f := newFaultRig(t, 4, nil)
	if err := f.v.WriteAt(fill(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	r := segArea
	r.Ops, r.Times = blockdev.OpWrite, 1
	f.cache.Inject(r)
	before := f.cache.Stats()
	if err := f.v.Flush(); err != nil {
		t.Fatalf("flush with one failed FUA write (retried): %v", err)
	}
	st := f.cache.Stats()
	if st.FUAWrites-before.FUAWrites != 2 || st.Faults-before.Faults != 1 || st.Syncs != before.Syncs {
		t.Fatalf("want the FUA write failed once and retried, no sync: before %+v after %+v", before, st)
	}
	if err := f.v.WriteAt(fill(4096, 2), 4096, false); err != nil {
		t.Fatal(err)
	}
	r.Times = 0
	f.cache.Inject(r)
	if err := f.v.Flush(); !errors.Is(err, ErrFailed) {
		t.Fatalf("flush with failing FUA writes: %v", err)
	}
	if st := f.cache.Stats(); st.FUAWrites-before.FUAWrites != 5 {
		t.Fatalf("want 3 more FUA write attempts, stats %+v", st)
	}
}

func TestSegmentWriteFailureIsSticky(t *testing.T) {
	f := newFaultRig(t, 4, nil)
	if err := f.v.WriteAt(fill(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	r := segArea
	r.Ops = blockdev.OpWrite
	f.cache.Inject(r)
	if err := f.v.Flush(); !errors.Is(err, ErrFailed) {
		t.Fatalf("flush with failing segment writes: %v", err)
	}
	if err := f.v.WriteAt(fill(4096, 2), 4096, false); !errors.Is(err, ErrFailed) {
		t.Fatalf("write after the cache device failed: %v", err)
	}
	// What is in RAM still reads back.
	p := make([]byte, 4096)
	if err := f.v.ReadAt(p, 0); err != nil || !bytes.Equal(p, fill(4096, 1)) {
		t.Fatalf("read from the rambuf after the failure: %v", err)
	}
	if s := f.v.Status(); s.Failed == "" || s.Errors.CacheWrite < 3 {
		t.Fatalf("status after failure: failed %q, cache write errors %d", s.Failed, s.Errors.CacheWrite)
	}
}

// TestTornSegmentLosesOnlyUnflushed cuts the power in the middle of a
// segment write that reuses a ring slot, keeps the torn part, and checks
// that replay discards only that segment: every flushed write survives.
// The torn part is a prefix, or all but the first sector (header last):
// then the slot's old header must have been cleared (and synced) before
// the reuse, or it would front a body that no longer matches it, fail its
// checksum at the start of the walk, and the whole log would be refused.
func TestTornSegmentLosesOnlyUnflushed(t *testing.T) {
	for _, tc := range []struct {
		tearAt int64
		tail   bool
	}{{512, false}, {4096, false}, {100 * 4096, false}, {layout.SectorSize, true}} {
		what := fmt.Sprintf("tear at %d", tc.tearAt)
		if tc.tail {
			what = fmt.Sprintf("tear keeping from byte %d on (header last)", tc.tearAt)
		}
		f := newFaultRig(t, 3, nil)
		// Wrap the ring a few times, flushing everything.
		flushed := make([]byte, 1<<20)
		for i := 0; i < 600; i++ {
			off := int64(i*7%256) * 4096
			p := fill(4096, byte(i))
			if err := f.v.WriteAt(p, off, false); err != nil {
				t.Fatal(err)
			}
			copy(flushed[off:], p)
		}
		if err := f.v.Flush(); err != nil {
			t.Fatal(err)
		}
		// The next segment write (longer than a header clear) is torn at
		// tearAt, and the disk dies; the torn part is made durable.
		r := segArea
		r.Ops, r.MinLen, r.Tear, r.TearAt, r.TearTail, r.Die = blockdev.OpWrite, layout.HeaderSize+1, true, tc.tearAt, tc.tail, true
		f.cache.Inject(r)
		for i := 0; i < 127; i++ {
			_ = f.v.WriteAt(fill(4096, 0xEE), int64(i)*4096, false)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !f.cache.Dead() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !f.cache.Dead() {
			t.Fatal("the segment write never happened")
		}
		if err := f.cacheMem.Sync(); err != nil { // the torn part reached the media
			t.Fatal(err)
		}
		cache, back := f.cacheMem.CrashClone(), f.backMem.CrashClone()
		v, err := Open(Config{Backing: back, Cache: cache, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("%s: reopen: %v", what, err)
		}
		got := make([]byte, 1<<20)
		if err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, flushed) {
			t.Fatalf("%s: flushed data lost", what)
		}
		// Writing more and replaying again must not resurrect the torn
		// segment's data.
		if err := v.WriteAt(fill(4096, 0x11), 0, true); err != nil {
			t.Fatal(err)
		}
		copy(flushed, fill(4096, 0x11))
		if err := v.Close(); err != nil {
			t.Fatal(err)
		}
		v, err = Open(Config{Backing: back, Cache: cache, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("%s: second reopen: %v", what, err)
		}
		if err := v.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, flushed) {
			t.Fatalf("%s: data differs after the second replay", what)
		}
		_ = v.Close()
	}
}

func TestOpenRefusals(t *testing.T) {
	t.Run("unformatted", func(t *testing.T) {
		_, err := Open(Config{Backing: blockdev.NewMem(1 << 20), Cache: blockdev.NewMem(cacheSize(2))})
		if !errors.Is(err, ErrNotFormatted) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("too small", func(t *testing.T) {
		_, err := Open(Config{Backing: blockdev.NewMem(1 << 20), Cache: blockdev.NewMem(1 << 20)})
		if !errors.Is(err, layout.ErrTooSmall) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("empty backing", func(t *testing.T) {
		_, err := Open(Config{Backing: blockdev.NewMem(511), Cache: blockdev.NewMem(cacheSize(2))})
		if !errors.Is(err, ErrEmptyBacking) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad tunable", func(t *testing.T) {
		r := newRig(t, 2, 1<<20, nil)
		r.close()
		_, err := Open(Config{Backing: r.backing, Cache: r.cache, Tunables: vocab.Values{vocab.NrMaxBatchedWriteback: 0}})
		if !errors.Is(err, ErrOutOfRange) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("write-around on a used cache", func(t *testing.T) {
		r := newRig(t, 2, 1<<20, nil)
		r.write(0, fill(4096, 1))
		r.close()
		_, err := Open(Config{Backing: r.backing, Cache: r.cache, Tunables: vocab.Values{vocab.WriteAroundMode: 1}})
		if !errors.Is(err, ErrNotFresh) {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("mid-log damage", func(t *testing.T) {
		r := newRig(t, 16, 1<<20, nil)
		for i := 0; i < 14; i++ {
			r.write(int64(i)*4096, fill(4096, byte(i+1)))
			r.flush()
		}
		r.close()
		// Corrupt segment 3's data: 11 valid segments follow it.
		off := layout.SuperblockSize + 2*layout.SegmentSize + layout.BlockSize + 100
		if _, err := r.cache.WriteAt([]byte{0xFF}, int64(off)); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Config{Backing: r.backing, Cache: r.cache})
		if !errors.Is(err, ErrDamaged) || !bytes.Contains([]byte(err.Error()), []byte("segment 3")) {
			t.Fatalf("got %v, want ErrDamaged naming segment 3", err)
		}
	})
}

// TestCloseWithDeadBacking: a writer waiting for a ring slot that
// writeback cannot free must not make Close hang.
func TestCloseWithDeadBacking(t *testing.T) {
	f := newFaultRig(t, 2, nil)
	f.back.Inject(blockdev.Rule{Ops: blockdev.OpWrite})
	werr := make(chan error, 1)
	go func() {
		for i := 0; ; i++ {
			if err := f.v.WriteAt(fill(4096, 1), int64(i%200)*4096, false); err != nil {
				werr <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for f.v.Status().Errors.Writeback == 0 {
		if time.Now().After(deadline) {
			t.Fatal("writeback never failed")
		}
		time.Sleep(time.Millisecond)
	}
	cerr := make(chan error, 1)
	go func() { cerr <- f.v.Close() }()
	select {
	case err := <-werr:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("blocked writer got %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("writer still blocked")
	}
	select {
	case <-cerr:
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs")
	}
}

// TestFullBackingIsVisibleAndBounded: a backing device that answers
// ENOSPC makes writeback fail; the status says so (why, since when), and
// once the ring is full a write waits at most Config.WriteWaitLimit, then
// fails with ErrNoSpace wrapping the backing device's ENOSPC. When space
// comes back, writeback resumes by itself and every flushed write is
// there, also after a restart.
func TestFullBackingIsVisibleAndBounded(t *testing.T) {
	cacheMem, backMem := blockdev.NewMem(cacheSize(3)), blockdev.NewMem(4<<20)
	back := blockdev.NewFaulty(backMem)
	v := openOn(t, back, cacheMem, Config{WriteWaitLimit: 300 * time.Millisecond})
	defer func() { back.Clear(); _ = v.Close() }()
	full := back.Inject(blockdev.Rule{Ops: blockdev.OpWrite, Errno: syscall.ENOSPC})
	want := make([]byte, 4<<20)
	var werr error
	start := time.Now()
	for k := 0; k < 4*layout.NrCachesPerSegment; k++ {
		p := fill(layout.BlockSize, byte(k+1))
		if werr = v.WriteAt(p, int64(k)*layout.BlockSize, false); werr != nil {
			break
		}
		copy(want[k*layout.BlockSize:], p)
		if k%64 == 63 {
			if err := v.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !errors.Is(werr, ErrNoSpace) || !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("a write with the ring full and the backing device full: %v, want ErrNoSpace wrapping ENOSPC", werr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the refused write took %v", d)
	}
	s := v.Status()
	if !strings.Contains(s.WritebackError, "no space left") || s.WritebackFailingSeconds <= 0 {
		t.Fatalf("status while writeback fails: writeback_error %q, failing for %v s", s.WritebackError, s.WritebackFailingSeconds)
	}
	// Space comes back: writeback resumes without help, writes work again.
	back.Remove(full)
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for v.Status().WritebackError != "" && time.Now().Before(deadline) {
		_ = v.WriteAt(fill(layout.BlockSize, 0xAB), 3<<20, false) // needs a segment: forces writeback
		time.Sleep(10 * time.Millisecond)
	}
	if s := v.Status(); s.WritebackError != "" {
		t.Fatalf("writeback still failing after the space came back: %q", s.WritebackError)
	}
	copy(want[3<<20:], fill(layout.BlockSize, 0xAB))
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3<<20)
	if err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:3<<20]) {
		t.Fatalf("flushed data after the backing device recovered: %v", err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := Open(Config{Backing: back, Cache: cacheMem, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:3<<20]) {
		t.Fatalf("flushed data after a restart: %v", err)
	}
}
