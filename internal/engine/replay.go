package engine

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/replay"
	"github.com/writeboost/writeboost/internal/sectorio"
	"github.com/writeboost/writeboost/internal/superblock"
	"github.com/writeboost/writeboost/internal/vocab"
)

// replay rebuilds the index from the cache device's log with the shared
// replay library (docs/format.md "Replay"), then makes the device safe to append
// to (cf. resume_cache):
//
//   - a damaged log is refused, naming its first problem;
//   - a torn tail is discarded with a log line, and the headers of the bad
//     segment and of every segment after it are zeroed and synced before
//     anything new is written: new segments will not overwrite all of
//     those slots at once, and an old header with a good checksum left in
//     one of them would come back at the next replay in front of newer data;
//   - the dirty sectors that only older copies hold (replay.Piece) are
//     written back and the backing device synced before serving, so the
//     index keeps one copy per block.
//
// New segments continue after the last valid segment and the superblock
// record; ids of the discarded segments, whose headers are now zero, may
// be used again.
func (v *Volume) replay() error {
	// A big cache takes a while to read: say how far it is, once a second.
	start := time.Now()
	lastLine := start
	l, err := replay.ScanProgress(v.cache, v.cache.Size(), func(done, total uint64) {
		if v.replayProgress != nil {
			v.replayProgress(done, total) // in place of the lines below
			return
		}
		if now := time.Now(); now.Sub(lastLine) >= time.Second {
			lastLine = now
			v.log.Info("replaying the cache log", "segments_read", done, "segments", total, "elapsed", now.Sub(start).Round(time.Second))
		}
	})
	if err != nil {
		return fmt.Errorf("engine: replay: %w", err)
	}
	if !l.Formatted {
		return ErrNotFormatted
	}
	l.CheckBacking(v.backing.Size())
	if p, bad := l.FirstDamage(); bad {
		return fmt.Errorf("%w: %s", ErrDamaged, p.Msg)
	}
	if v.tun.on(vocab.WriteAroundMode) && len(l.Valid) > 0 {
		return fmt.Errorf("%w: the log holds %d valid segments (%d..%d)", ErrNotFresh,
			len(l.Valid), l.Valid[0].Header.ID, l.LastFlushedID)
	}
	for _, p := range l.Problems {
		v.log.Warn("replay", "problem", p.Msg)
	}
	if l.Bad != nil {
		v.log.Warn("replay: discarding a torn tail", "segment", l.Bad.Header.ID, "slot", l.Bad.Slot, "discarded_after", len(l.Discarded))
		zero := blockdev.AlignedBuffer(layout.HeaderSize)
		for _, s := range append([]replay.Segment{*l.Bad}, l.Discarded...) {
			if _, err := v.cache.WriteAt(zero, v.geo.SegmentOffset(s.Slot)); err != nil {
				return fmt.Errorf("engine: replay: clear header of discarded segment %d (slot %d): %w", s.Header.ID, s.Slot, err)
			}
		}
		// Synced below, with the rest of replay's cache writes, before
		// anything new is written.
	}
	for _, s := range l.Valid {
		v.mu.segIDs[s.Slot] = s.Header.ID
		v.mu.hdrLive[s.Slot] = true
	}
	pieces, err := l.Apply(replayIndex{x: v.mu.idx, geo: v.geo, segIDs: v.mu.segIDs})
	if err != nil {
		return fmt.Errorf("engine: replay: %w", err)
	}
	if err := v.writebackPieces(pieces); err != nil {
		return fmt.Errorf("engine: replay: %w", err)
	}
	// The discarded segments' headers are zeroed: their ids may come again.
	// The record may be ahead of the last valid segment (replay refuses one
	// above every id on the device), and ids must pass it.
	last := max(l.SuperRecord.LastWritebackSegmentID, l.LastFlushedID) // below replay.MaxSaneID: replay judged it
	// A clean-stop record vouches for the log as it is now; the first new
	// segment would make it a lie (docs/format.md "Clean stop").
	if l.Super.CleanStop != nil || l.Super.CleanStopErr != nil {
		if err := superblock.WriteRecord(v.cache, l.SuperRecord, nil); err != nil {
			return fmt.Errorf("engine: replay: clear the clean-stop record: %w", err)
		}
	}
	// One sync for replay's cache writes (the cleared torn tail, the
	// cleared clean-stop record), and so that every replayed segment is
	// durable from now on (no copy of theirs is owed under the
	// durable-copy rule, writeback.go): after a process crash, what replay
	// read may still sit in a volatile cache.
	if err := v.cache.Sync(); err != nil {
		return fmt.Errorf("engine: replay: sync cache device: %w", err)
	}
	v.mu.nextID = last + 1
	v.mu.lastSealed, v.mu.lastWritten, v.mu.durable = last, last, last
	v.mu.lastWB = max(l.LastWritebackID, l.SuperRecord.LastWritebackSegmentID)
	v.mu.recorded = l.SuperRecord.LastWritebackSegmentID
	v.mu.replayedLast = l.LastFlushedID
	v.mu.Lock()
	v.checkInvariantsLocked()
	v.mu.Unlock()
	v.log.Info("replayed cache log", "segments", len(l.Valid), "last_flushed_id", l.LastFlushedID,
		"last_writeback_id", v.mu.lastWB, "dirty_blocks", v.mu.idx.nrDirty, "pieces_written_back", len(pieces))
	return nil
}

// piecesWindow bounds the sectors of pieces staged at once (32 MiB): a
// log full of partial chains must not stage them all. A variable so that
// tests can make window boundaries happen on a small log.
var piecesWindow = 65536

// writebackPieces writes the sectors of older dirty copies that no newer
// copy covers to the backing device, then syncs it. The pieces come in
// block order (replay.Apply), so their sectors are staged in ascending
// order, a window at a time, and neighbouring sectors become one write
// (sectorio.Stage), as in a writeback batch.
func (v *Volume) writebackPieces(pieces []replay.Piece) error {
	if len(pieces) == 0 {
		return nil
	}
	var buf []byte // the cache blocks of one block's pieces
	for len(pieces) > 0 {
		// Whole blocks, up to the window (at least one block).
		n, sectors := 0, 0
		for n < len(pieces) {
			j, s := n, 0
			for ; j < len(pieces) && pieces[j].Block == pieces[n].Block; j++ {
				s += bits.OnesCount8(pieces[j].Mask)
			}
			if n > 0 && sectors+s > piecesWindow {
				break
			}
			n, sectors = j, sectors+s
		}
		stage := sectorio.NewStage(sectors)
		for i := 0; i < n; {
			j := i + 1
			for j < n && pieces[j].Block == pieces[i].Block {
				j++
			}
			if len(buf) < (j-i)*layout.BlockSize {
				buf = blockdev.AlignedBuffer((j - i) * layout.BlockSize)
			}
			if err := v.stagePieces(stage, pieces[i:j], buf); err != nil {
				return err
			}
			i = j
		}
		if err := v.writeStage(stage); err != nil {
			return err
		}
		pieces = pieces[n:]
	}
	if err := v.backing.Sync(); err != nil {
		v.stats.backingWriteErrors.Add(1)
		return fmt.Errorf("sync backing device after writing back pieces: %w", err)
	}
	return nil
}

// stagePieces reads the cache blocks of one block's pieces into buf and
// stages their sectors in ascending order. The masks of one block's
// pieces are disjoint (replay.Apply); were they not, the newest copy of a
// sector would win, as if the pieces were written one after another.
func (v *Volume) stagePieces(stage *sectorio.Stage, ps []replay.Piece, buf []byte) error {
	for k, p := range ps {
		if err := v.readCacheBlocks(buf[k*layout.BlockSize:(k+1)*layout.BlockSize], v.geo.SlotOf(p.Copy.SegmentID), int(p.Copy.Index)); err != nil {
			return fmt.Errorf("write back piece of block %d from segment %d: %w", p.Block, p.Copy.SegmentID, err)
		}
	}
	for j := range layout.SectorsPerBlock {
		for k := len(ps) - 1; k >= 0; k-- {
			if ps[k].Mask&(1<<j) != 0 {
				o := k*layout.BlockSize + j*layout.SectorSize
				copy(stage.Add(int64(ps[k].Block)*layout.SectorsPerBlock+int64(j), 1), buf[o:o+layout.SectorSize])
				break
			}
		}
	}
	return nil
}
