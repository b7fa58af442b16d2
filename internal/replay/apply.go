package replay

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/writeboost/writeboost/internal/layout"
)

// Copy is where one cache block's newest copy sits in the log.
type Copy struct {
	SegmentID uint64
	Index     uint8 // data slot 0..126
	// DirtyBits as applied: 0 for a clean copy (read-cache copy, or its
	// segment is written back), which is always a full block.
	DirtyBits uint8
}

// Index receives the newest copy of each cache block (block = backing
// sector / 8) while Apply runs. The engine implements it with its own
// compact table; replay keeps no per-block map of its own.
type Index interface {
	Get(block uint64) (Copy, bool)
	Put(block uint64, c Copy)
	Delete(block uint64)
}

// MapIndex is an Index in a Go map, for offline tools.
type MapIndex map[uint64]Copy

func (m MapIndex) Get(block uint64) (Copy, bool) { c, ok := m[block]; return c, ok }
func (m MapIndex) Put(block uint64, c Copy)      { m[block] = c }
func (m MapIndex) Delete(block uint64)           { delete(m, block) }

// Piece is the sectors (Mask) of an older dirty copy that no newer copy of
// the same block covers.
type Piece struct {
	Block uint64
	Copy  Copy
	Mask  uint8
}

// Apply applies l.Valid in id order (docs/format.md "Replay" step 4): the newest
// copy of a block wins; a dirty partial copy leaves the older dirty sectors
// it does not cover to the older copies, returned as Pieces in block order;
// a clean partial copy is deleted, since its data is on the backing device.
//
// Before serving, the engine writes every Piece's sectors from the cache
// device to the backing device and syncs it, as the kernel's replay does
// (cf. invalidate_previous_cache); data of clean copies is never written
// back, since the backing device may hold newer sectors.
func (l *Log) Apply(idx Index) ([]Piece, error) {
	if p, bad := l.FirstDamage(); bad {
		return nil, fmt.Errorf("replay: refusing to apply a damaged log: %s", p.Msg)
	}
	return l.ApplyValidPrefix(idx), nil
}

// ApplyValidPrefix is Apply without the damage check: an offline tool
// reports, and with --force writes back, what the valid prefix of a
// damaged log holds.
func (l *Log) ApplyValidPrefix(idx Index) []Piece {
	under := map[uint64][]Piece{} // only blocks with partial overlaps
	for si := range l.Valid {
		s := &l.Valid[si]
		dirtySeg := s.Header.ID > l.LastWritebackID
		for i := range int(s.Header.Length) {
			mb := s.Header.Metablocks[i]
			block := mb.Sector / layout.SectorsPerBlock
			c := Copy{SegmentID: s.Header.ID, Index: uint8(i)}
			switch {
			case !dirtySeg || mb.DirtyBits == 0:
				delete(under, block)
				if mb.DirtyBits == 0 || mb.DirtyBits == layout.DirtyFull {
					idx.Put(block, c)
				} else {
					idx.Delete(block)
				}
			case mb.DirtyBits == layout.DirtyFull:
				delete(under, block)
				c.DirtyBits = layout.DirtyFull
				idx.Put(block, c)
			default:
				b := mb.DirtyBits
				var ps []Piece
				for _, p := range under[block] {
					if p.Mask &^= b; p.Mask != 0 {
						ps = append(ps, p)
					}
				}
				if old, ok := idx.Get(block); ok && old.DirtyBits&^b != 0 {
					ps = append(ps, Piece{Block: block, Copy: old, Mask: old.DirtyBits &^ b})
				}
				if len(ps) > 0 {
					under[block] = ps
				} else {
					delete(under, block)
				}
				c.DirtyBits = b
				idx.Put(block, c)
			}
		}
	}
	var pieces []Piece
	for _, ps := range under {
		pieces = append(pieces, ps...)
	}
	slices.SortFunc(pieces, func(a, b Piece) int {
		if a.Block != b.Block {
			return cmp.Compare(a.Block, b.Block)
		}
		return cmp.Compare(a.Copy.SegmentID, b.Copy.SegmentID)
	})
	return pieces
}
