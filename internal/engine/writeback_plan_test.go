package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// TestWritebackLooksAhead: dirty blocks covering a region densely, in
// random order over more segments than one batch may hold (40 > 32), go
// back to the backing device as a handful of long writes when drop_caches
// lets the planner look beyond the batch; each batch on its own, sorted
// only within itself, leaves hundreds of gaps and as many writes.
func TestWritebackLooksAhead(t *testing.T) {
	const nSeg = 40
	const nBlocks = nSeg * layout.NrCachesPerSegment
	run := func(t *testing.T, lookahead int) (writes, syncs int) {
		back := &slowBacking{Device: blockdev.NewMem(2 * nBlocks * layout.BlockSize)}
		v := openOn(t, back, blockdev.NewMem(cacheSize(nSeg+8)))
		defer v.Close()
		v.mu.Lock()
		v.writebackLookahead = lookahead
		v.mu.Unlock()
		rng := rand.New(rand.NewPCG(1, 2))
		want := make([]byte, nBlocks*layout.BlockSize)
		for _, k := range rng.Perm(nBlocks) {
			p := fill(layout.BlockSize, byte(k*7+1))
			copy(want[k*layout.BlockSize:], p)
			if err := v.WriteAt(p, int64(k)*layout.BlockSize, false); err != nil {
				t.Fatal(err)
			}
		}
		if err := v.DropCaches(context.Background()); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(want))
		if _, err := back.Device.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("the backing device does not hold what was written")
		}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.mu.idx.nrDirty != 0 || v.mu.lastWB != v.mu.lastSealed {
			t.Fatalf("after drop_caches: %d dirty blocks, last_writeback_id %d, last sealed %d", v.mu.idx.nrDirty, v.mu.lastWB, v.mu.lastSealed)
		}
		back.mu.Lock()
		defer back.mu.Unlock()
		for _, b := range back.batches {
			writes += len(b)
		}
		return writes, len(back.batches)
	}
	aheadWrites, aheadSyncs := run(t, wbLookahead)
	aloneWrites, aloneSyncs := run(t, 0)
	t.Logf("%d blocks in %d segments: %d writes and %d syncs looking ahead, %d writes and %d syncs batch by batch",
		nBlocks, nSeg, aheadWrites, aheadSyncs, aloneWrites, aloneSyncs)
	if aheadWrites > 3 {
		t.Errorf("looking ahead: %d backing writes for a dense region, want at most 3", aheadWrites)
	}
	if aloneWrites < 100 {
		t.Errorf("batch by batch: only %d backing writes: the pattern no longer shows what looking ahead saves", aloneWrites)
	}
}

// TestPlanWriteback: which copies a plan writes and which superseded
// copies writing them clears (planWriteback's rules).
func TestPlanWriteback(t *testing.T) {
	const full = layout.DirtyFull
	live := func(block uint64, seg int, ahead bool) wbEntry {
		return wbEntry{block: block, pos: uint32(seg*1000 + int(block)), dirty: full, seg: seg, ahead: ahead}
	}
	sup := func(block uint64, seg int, ahead bool) wbEntry {
		e := live(block, seg, ahead)
		e.superseded = true
		return e
	}
	partial := func(e wbEntry, dirty uint8) wbEntry { e.dirty = dirty; return e }
	type bs = []uint64
	for _, tc := range []struct {
		name       string
		ents       []wbEntry
		aheadBytes int64 // 0: -1, no limit
		write      bs    // blocks written
		writeSegs  []int
		clearedPos []uint32
	}{
		{name: "the batch alone", ents: []wbEntry{live(4, 0, false), live(2, 0, false)},
			write: bs{2, 4}, writeSegs: []int{0, 0}},
		{name: "live copies ahead fill the gaps of the batch's runs",
			ents:  []wbEntry{live(0, 0, false), live(2, 0, false), live(4, 0, false), live(1, 1, true), live(3, 2, true), live(5, 2, true)},
			write: bs{0, 1, 2, 3, 4, 5}, writeSegs: []int{0, 1, 0, 2, 0, 2}},
		{name: "a run of copies ahead alone waits for its batch",
			ents:  []wbEntry{live(0, 0, false), live(10, 1, true), live(11, 1, true)},
			write: bs{0}, writeSegs: []int{0}},
		{name: "writing the live copy clears the older superseded ones ahead",
			ents:  []wbEntry{live(0, 0, false), sup(1, 1, true), sup(1, 2, true), live(1, 3, true)},
			write: bs{0, 1}, writeSegs: []int{0, 3}, clearedPos: []uint32{1001, 2001}},
		{name: "the batch's owed copy when the live one lies beyond the plan",
			ents:  []wbEntry{sup(5, 0, false), sup(5, 1, true)},
			write: bs{5}, writeSegs: []int{0}},
		{name: "the batch's owed copy is written as its newer live copy ahead",
			ents:  []wbEntry{sup(5, 0, false), sup(5, 1, true), live(5, 2, true)},
			write: bs{5}, writeSegs: []int{2}, clearedPos: []uint32{1005}},
		{name: "a clean first sector does not join a run",
			ents:  []wbEntry{live(0, 0, false), partial(live(1, 1, true), 0xfe)},
			write: bs{0}, writeSegs: []int{0}},
		{name: "copies ahead within the byte bound, run by run",
			ents:       []wbEntry{live(0, 0, false), live(1, 1, true), live(10, 0, false), live(11, 1, true), live(12, 1, true)},
			aheadBytes: layout.BlockSize,
			write:      bs{0, 1, 10}, writeSegs: []int{0, 1, 0}},
		{name: "a superseded copy ahead with no copy in the batch",
			ents:  []wbEntry{live(0, 0, false), sup(1, 1, true)},
			write: bs{0}, writeSegs: []int{0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ents := slices.Clone(tc.ents)
			slices.SortFunc(ents, func(a, b wbEntry) int {
				if a.block != b.block {
					return int(a.block) - int(b.block)
				}
				return a.seg - b.seg
			})
			budget := tc.aheadBytes
			if budget == 0 {
				budget = -1
			}
			write, clear := planWriteback(ents, budget)
			var blocks bs
			var segs []int
			for _, e := range write {
				blocks, segs = append(blocks, e.block), append(segs, e.seg)
			}
			if !slices.Equal(blocks, tc.write) || !slices.Equal(segs, tc.writeSegs) {
				t.Errorf("writes blocks %v from segments %v, want %v from %v", blocks, segs, tc.write, tc.writeSegs)
			}
			slices.Sort(clear)
			if !slices.Equal(clear, tc.clearedPos) {
				t.Errorf("clears positions %v, want %v", clear, tc.clearedPos)
			}
		})
	}
}

// TestWritebackAheadClearsSuperseded: a batch that writes a block's live
// copy from beyond itself clears the older superseded copies of the block
// in the segments it looked at. Else a later batch, finding them owed (an
// overwrite in their segment is not durable yet), would write the older
// data over the newer on the backing device, and nothing would write the
// newer again: its copy is clean.
func TestWritebackAheadClearsSuperseded(t *testing.T) {
	r := newRig(t, 16, 8<<20, vocab.Values{vocab.NrMaxBatchedWriteback: 1})
	v := r.v
	blk := func(b int) int64 { return int64(b) * layout.BlockSize }
	// segment writes block b with data p, and fills the segment up with
	// blocks from filler on, so that it is sealed.
	segment := func(filler int, blocks map[int][]byte) {
		for b, p := range blocks {
			r.write(blk(b), p)
		}
		for k := range layout.NrCachesPerSegment - len(blocks) {
			r.write(blk(filler+k), fill(layout.BlockSize, 0xf0))
		}
	}
	a, b := fill(layout.BlockSize, 0xaa), fill(layout.BlockSize, 0xbb)
	segment(1000, map[int][]byte{4: fill(layout.BlockSize, 4)}) // 1: the first batch
	segment(1200, map[int][]byte{5: a, 50: fill(layout.BlockSize, 50)})
	segment(1400, map[int][]byte{5: b}) // 3: block 5's live copy, joins block 4's run
	r.flush()
	var hookErr error
	batches := 0
	v.mu.Lock()
	v.afterWriteback = func() {
		if batches++; batches == 1 {
			// Overwrite block 50 without a flush: segment 2's superseded
			// copies become owed again.
			hookErr = v.WriteAt(fill(layout.BlockSize, 51), blk(50), false)
		}
	}
	v.mu.Unlock()
	if err := v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	got := make([]byte, layout.BlockSize)
	if _, err := r.backing.ReadAt(got, blk(5)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, b) {
		t.Fatalf("backing block 5 reads %x..., want the newest copy %x...", got[:4], b[:4])
	}
	if p := r.read(blk(5), layout.BlockSize); !bytes.Equal(p, b) {
		t.Fatalf("block 5 reads %x..., want %x...", p[:4], b[:4])
	}
}
