package engine

import (
	"bytes"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/replay"
)

// heldSyncs is a cache device whose syncs wait while the test holds mu (it
// hides Mem's FUA writes: every flush writes, then syncs).
type heldSyncs struct {
	blockdev.Device
	mu sync.Mutex
}

func (h *heldSyncs) Sync() error {
	h.mu.Lock()
	h.mu.Unlock() //nolint:staticcheck // waits for the test to let syncs through
	return h.Device.Sync()
}

// TestFlightWindowTornTail holds the cache device's syncs until the whole
// flight window (32 segments) is written but not durable, then cuts the
// power in many ways (each unsynced write landed or not, one torn). Every
// crash must replay as a torn tail: a whole segment far beyond a torn one
// was in flight with it, as its durable record says, and the flushed data
// must read back. Without the record, replay's window rule would call many
// of these crashes mid-log corruption and refuse the cache.
func TestFlightWindowTornTail(t *testing.T) {
	const nSeg, segs = 96, flightWindow + 12
	mem := blockdev.NewMem(cacheSize(nSeg))
	cache := &heldSyncs{Device: mem}
	backing := blockdev.NewMem(int64(segs+2) * layout.NrCachesPerSegment * layout.BlockSize)
	v := openOn(t, backing, cache)
	r := &rig{t: t, v: v}
	base := layout.NrCachesPerSegment
	for b := range base {
		r.write(int64(b)*4096, fill(4096, 0xA0))
	}
	r.flush()

	cache.mu.Lock()
	newVal := func(b int) byte { return byte(b%250) + 1 }
	wrote := make(chan error, 1)
	go func() { // blocks once the window and the rambufs are full
		for b := 100; b < 100+segs*layout.NrCachesPerSegment; b++ {
			if err := v.WriteAt(fill(4096, newVal(b)), int64(b)*4096, false); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := v.Status()
		if st.LastFlushedID >= st.LastDurableID+flightWindow {
			break
		}
		if time.Now().After(deadline) {
			cache.mu.Unlock()
			t.Fatalf("the window never filled: written %d, durable %d", st.LastFlushedID, st.LastDurableID)
		}
		time.Sleep(time.Millisecond)
	}
	var crashes []*blockdev.Mem
	for seed := range uint64(40) {
		crashes = append(crashes, mem.CrashCloneTorn(rand.New(rand.NewPCG(seed, 7))))
	}
	backingAfter := backing.CrashClone()
	cache.mu.Unlock()
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}

	beyond := 0 // crashes the window rule alone would call damage
	for k, c := range crashes {
		l, err := replay.Scan(c, c.Size())
		if err != nil {
			t.Fatal(err)
		}
		if l.Bad != nil {
			for _, s := range l.Discarded {
				if s.ChecksumOK && s.Header.ID >= l.Bad.Header.ID+replay.TornWindow {
					beyond++
					break
				}
			}
		}
		v2, err := Open(Config{Backing: backingAfter.CrashClone(), Cache: c, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("crash %d: reopen: %v", k, err)
		}
		got := make([]byte, (100+segs*layout.NrCachesPerSegment)*4096)
		if err := v2.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		for b := range len(got) / 4096 {
			p := got[b*4096 : (b+1)*4096]
			old := byte(0)
			if b < base {
				old = 0xA0
			}
			if b >= 100 && !bytes.Equal(p, fill(4096, old)) && !bytes.Equal(p, fill(4096, newVal(b))) {
				t.Fatalf("crash %d: unflushed block %d reads %d..., want %d or %d", k, b, p[0], old, newVal(b))
			}
			if b < 100 && !bytes.Equal(p, fill(4096, old)) {
				t.Fatalf("crash %d: flushed block %d reads %d..., want %d", k, b, p[0], old)
			}
		}
		if err := v2.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if beyond == 0 {
		t.Fatal("no crash left a whole segment TornWindow or more beyond a torn one: the test does not exercise the durable record")
	}
	t.Logf("%d of %d crashes left whole segments %d or more ids beyond a torn one", beyond, len(crashes), replay.TornWindow)
}
