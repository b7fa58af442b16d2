package engine

import (
	"math/bits"

	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/replay"
)

// The index maps a cache block (backing sector / 8) to the position of its
// newest copy in the ring, cf. the kernel's ht_head/metablock hash table.
//
// A position is slot*127 + i: data slot i of the segment in ring slot
// "slot", whether that segment still sits in a rambuf or on the cache
// device. Per position the index keeps the metablock as it is now (which
// block, which sectors are still dirty); the hash table is open addressing
// with linear probing over uint32 positions, keyed through that array, so
// a cache block costs 8 (block) + 1 (dirty bits) + 4 / load factor bytes:
// at most 21 bytes per block, no Go map and no pointer for the GC to scan.
//
// Invariant: keys[pos] != noBlock if and only if pos is in the table.
//
// superseded is outside the table: per position, the dirty bits of a copy
// that a newer copy replaced in the table while this one may still be its
// block's newest durable copy (the durable-copy rule, writeback.go). Its
// block is not kept in memory: writeback reads it from the segment header.
type index struct {
	keys       []uint64 // per position: the cache block held there, noBlock if none
	dirty      []uint8  // per position: dirty bits; 0 = clean full block
	superseded []uint8  // per position: dirty bits of a superseded copy still owed to the backing device
	table      []uint32 // positions; emptySlot if unused
	mask       uint64
	shift      uint
	used       uint64 // positions in the table
	nrDirty    uint64 // positions with dirty bits != 0
}

const (
	noBlock   = ^uint64(0)
	emptySlot = ^uint32(0)
)

// newIndex sizes the table to the next power of two at or above 1.5 times
// the number of positions: the load factor stays at most 2/3 even with
// every position valid.
func newIndex(nrPositions uint64) *index {
	want := max(nrPositions+nrPositions/2, 16)
	b := uint(bits.Len64(want - 1))
	n := uint64(1) << b
	x := &index{
		keys:       make([]uint64, nrPositions),
		dirty:      make([]uint8, nrPositions),
		superseded: make([]uint8, nrPositions),
		table:      make([]uint32, n),
		mask:       n - 1,
		shift:      64 - b,
	}
	for i := range x.keys {
		x.keys[i] = noBlock
	}
	for i := range x.table {
		x.table[i] = emptySlot
	}
	return x
}

// home is the table bucket where block's probe starts (Fibonacci hashing).
func (x *index) home(block uint64) uint64 {
	return (block * 0x9E3779B97F4A7C15) >> x.shift
}

// lookup returns the position of block's newest copy.
func (x *index) lookup(block uint64) (uint32, bool) {
	for i := x.home(block); ; i = (i + 1) & x.mask {
		p := x.table[i]
		if p == emptySlot {
			return 0, false
		}
		if x.keys[p] == block {
			return p, true
		}
	}
}

// insert records block's newest copy at pos; block must not be in the
// table and pos must be free.
func (x *index) insert(block uint64, pos uint32, dirty uint8) {
	i := x.home(block)
	for x.table[i] != emptySlot {
		i = (i + 1) & x.mask
	}
	x.table[i] = pos
	x.keys[pos] = block
	x.dirty[pos] = dirty
	x.used++
	if dirty != 0 {
		x.nrDirty++
	}
}

// remove drops block from the table and frees its position; it reports
// whether block was there. Deletion shifts later members of the probe run
// back (Knuth's algorithm R), so there are no tombstones to clean up.
func (x *index) remove(block uint64) bool {
	i := x.home(block)
	for {
		p := x.table[i]
		if p == emptySlot {
			return false
		}
		if x.keys[p] == block {
			break
		}
		i = (i + 1) & x.mask
	}
	pos := x.table[i]
	if x.dirty[pos] != 0 {
		x.nrDirty--
	}
	x.keys[pos] = noBlock
	x.dirty[pos] = 0
	x.used--
	j := i
	for {
		j = (j + 1) & x.mask
		q := x.table[j]
		if q == emptySlot {
			break
		}
		k := x.home(x.keys[q])
		// Leave q where it is if its home lies cyclically in (i, j]:
		// moving it to i would put it before its home.
		if (i <= j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		x.table[i] = q
		i = j
	}
	x.table[i] = emptySlot
	return true
}

// removePos drops whatever block holds pos.
func (x *index) removePos(pos uint32) {
	if b := x.keys[pos]; b != noBlock {
		x.remove(b)
	}
}

// setDirty changes the dirty bits of a position in the table.
func (x *index) setDirty(pos uint32, d uint8) {
	if x.dirty[pos] != 0 {
		x.nrDirty--
	}
	if d != 0 {
		x.nrDirty++
	}
	x.dirty[pos] = d
}

// bytes is the memory the index holds.
func (x *index) bytes() int64 {
	return int64(len(x.keys))*8 + int64(len(x.dirty)) + int64(len(x.superseded)) + int64(len(x.table))*4
}

func posOf(slot uint64, i int) uint32 { return uint32(slot*layout.NrCachesPerSegment + uint64(i)) }
func slotOfPos(pos uint32) uint64     { return uint64(pos) / layout.NrCachesPerSegment }
func idxOfPos(pos uint32) int         { return int(uint64(pos) % layout.NrCachesPerSegment) }

// replayIndex adapts the index to replay.Index while Apply runs; segIDs
// (slot -> segment id) must already hold every valid segment.
type replayIndex struct {
	x      *index
	geo    layout.Geometry
	segIDs []uint64
}

var _ replay.Index = replayIndex{}

func (r replayIndex) Get(block uint64) (replay.Copy, bool) {
	pos, ok := r.x.lookup(block)
	if !ok {
		return replay.Copy{}, false
	}
	slot := slotOfPos(pos)
	return replay.Copy{SegmentID: r.segIDs[slot], Index: uint8(idxOfPos(pos)), DirtyBits: r.x.dirty[pos]}, true
}

func (r replayIndex) Put(block uint64, c replay.Copy) {
	r.x.remove(block)
	pos := posOf(r.geo.SlotOf(c.SegmentID), int(c.Index))
	// A segment may carry two metablocks for one block (a trim dropped the
	// first from the index at run time); the later one wins.
	r.x.removePos(pos)
	r.x.insert(block, pos, c.DirtyBits)
}

func (r replayIndex) Delete(block uint64) { r.x.remove(block) }
