package engine

import (
	"bytes"
	"math/rand/v2"
	"sync/atomic"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// countingFUA counts the FUA writes and syncs the engine asks of a Mem.
type countingFUA struct {
	*blockdev.Mem
	fuas, syncs atomic.Int64
}

func (d *countingFUA) WriteAtFUA(p []byte, off int64) (int, error) {
	d.fuas.Add(1)
	return d.Mem.WriteAtFUA(p, off)
}

func (d *countingFUA) Sync() error {
	d.syncs.Add(1)
	return d.Mem.Sync()
}

// TestFlushFUA: a flush whose segment is the only one not yet durable
// writes it with FUA and needs no sync, and what it acknowledged survives
// any crash, torn or not.
func TestFlushFUA(t *testing.T) {
	mem := blockdev.NewMem(cacheSize(8))
	cache := &countingFUA{Mem: mem}
	backing := blockdev.NewMem(1 << 20)
	v := openOn(t, backing, cache)
	r := &rig{t: t, v: v}
	syncsAtOpen := cache.syncs.Load() // replay syncs once
	for i := range 3 {
		r.write(int64(i)*4096, fill(4096, byte(i+1)))
		r.flush()
	}
	// The fourth write is acknowledged but never flushed: a crash may drop it.
	r.write(3*4096, fill(4096, 4))
	if f, s := cache.fuas.Load(), cache.syncs.Load()-syncsAtOpen; f != 3 || s != 0 {
		t.Errorf("3 flushes of one segment each: %d FUA writes and %d syncs, want 3 and 0", f, s)
	}
	if st := v.Status(); st.LastDurableID != 3 {
		t.Errorf("last durable id %d after 3 FUA flushes, want 3", st.LastDurableID)
	}
	crashes := []*blockdev.Mem{mem.CrashClone()}
	for seed := range uint64(8) {
		crashes = append(crashes, mem.CrashCloneTorn(rand.New(rand.NewPCG(seed, 2))))
	}
	backingAfter := backing.CrashClone()
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	for k, c := range crashes {
		v2, err := Open(Config{Backing: backingAfter, Cache: c, Logger: testLogger(t)})
		if err != nil {
			t.Fatalf("crash %d: reopen: %v", k, err)
		}
		r2 := &rig{t: t, v: v2}
		for i := range 3 {
			if got := r2.read(int64(i)*4096, 4096); !bytes.Equal(got, fill(4096, byte(i+1))) {
				t.Errorf("crash %d: flushed block %d reads %d..., want %d", k, i, got[0], i+1)
			}
		}
		if got := r2.read(3*4096, 4096)[0]; got != 0 && got != 4 {
			t.Errorf("crash %d: unflushed block reads %d", k, got)
		}
		// Throw-away devices: do not let Close write to the shared backing copy.
		_ = v2.Close()
		backingAfter = backing.CrashClone()
	}
}
