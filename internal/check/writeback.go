package check

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
	"github.com/writeboost/writeboost/internal/superblock"
)

// Errors of Writeback and Format; the wrapping error names the device.
var (
	ErrNotFormatted = errors.New("check: not a formatted cache device")
	ErrDamaged      = errors.New("check: the cache device holds damage (use --force to write back the valid prefix)")
	ErrDirty        = errors.New("check: the cache device holds dirty blocks (use --force to format anyway)")
)

// Windows of the writeback: how much it stages in memory between reading
// the cache device and writing the backing device. Variables so that tests
// can make every round boundary happen on a small image.
var (
	wbWindowSectors = 262144 // 128 MiB of backing sectors per round
	wbWindowBlocks  = 32768  // 128 MiB of cache blocks read per round
	// Cache reads: blocks closer than wbMaxGap are read in one request
	// with the gap (a sweep beats a seek, on a disk and on a virtual
	// one), up to wbMaxRead bytes.
	wbMaxGap  int64 = 256 << 10
	wbMaxRead int64 = 8 << 20
)

// WritebackOptions tune Writeback.
type WritebackOptions struct {
	// Force writes back the valid prefix of a damaged log, and skips the
	// metablocks past the backing device's end.
	Force bool
	// Progress, when set, is called after every round with the sectors
	// written so far and the total.
	Progress func(done, total int64)
	// DryRun computes what would be written (blocks, sectors, merged
	// writes) and writes nothing, to either device.
	DryRun bool
}

// WritebackResult says what Writeback did.
type WritebackResult struct {
	Blocks     int64  // cache blocks the sectors belong to
	Sectors    int64  // dirty sectors written to the backing device
	Writes     int    // write requests (runs of consecutive sectors, merged)
	Skipped    int64  // sectors past the backing device's end, not written (--force)
	RecordedID uint64 // last_writeback_segment_id now in the superblock record
}

// source is where one dirty backing sector's data sits on the cache device.
type source struct {
	sector uint64 // backing sector
	off    int64  // byte offset on the cache device
	prio   int32  // the higher wins when two sources name one sector
}

// Writeback writes every dirty sector the valid log holds (the newest dirty
// copies and the Pieces under partial copies) to backing, a window at a
// time, as the engine's writeback does (sectorio.Stage: ascending sector
// order, runs of consecutive sectors merged into one write, up to
// sectorio.InFlight in flight), syncs backing, and then records the
// newest valid id in the superblock record, durably: afterwards the cache
// holds no dirty block and the backing device alone holds the volume. r
// must come from Check on cache. A dry run counts what the same rounds
// would write and writes nothing.
//
// NB: the order matters for a power cut. The record is written only after
// the backing device is synced: a cut before it leaves the log dirty, and
// running Writeback again rewrites the same data.
func Writeback(cache, backing blockdev.Device, r *Result, opts WritebackOptions) (*WritebackResult, error) {
	if r.Log == nil || !r.Log.Formatted {
		return nil, ErrNotFormatted
	}
	if r.Damaged() && !opts.Force {
		return nil, ErrDamaged
	}
	res := &WritebackResult{}
	srcs, err := r.sources()
	if err != nil {
		return nil, err
	}
	limit := uint64(backing.Size()) >> layout.SectorShift
	if i, _ := slices.BinarySearchFunc(srcs, limit, func(s source, t uint64) int { return cmp.Compare(s.sector, t) }); i < len(srcs) {
		if !opts.Force {
			return nil, fmt.Errorf("%w: sector %d lies past the backing device's end (%d sectors)", ErrDamaged, srcs[i].sector, limit)
		}
		res.Skipped = int64(len(srcs) - i)
		srcs = srcs[:i]
	}
	total := int64(len(srcs))
	for i := range srcs {
		if i == 0 || srcs[i].sector/layout.SectorsPerBlock != srcs[i-1].sector/layout.SectorsPerBlock {
			res.Blocks++
		}
	}
	for len(srcs) > 0 {
		n, err := writebackRound(cache, backing, srcs, res, opts.DryRun)
		if err != nil {
			return res, err
		}
		srcs = srcs[n:]
		if opts.Progress != nil && !opts.DryRun {
			opts.Progress(res.Sectors, total)
		}
	}
	if opts.DryRun {
		return res, nil
	}
	if err := backing.Sync(); err != nil {
		return res, fmt.Errorf("sync backing device: %w", err)
	}
	// Record the newest valid id: every valid segment is now written back.
	// A clean-stop record stays true (no segment was written) and is kept.
	id := r.Log.LastFlushedID
	if err := superblock.WriteRecord(cache, layout.SuperRecord{LastWritebackSegmentID: id}, r.Log.Super.CleanStop); err != nil {
		return res, err
	}
	if err := cache.Sync(); err != nil {
		return res, fmt.Errorf("sync cache device: %w", err)
	}
	res.RecordedID = id
	return res, nil
}

// sources lists the dirty sectors of the valid log, sorted by backing
// sector, one source per sector.
func (r *Result) sources() ([]source, error) {
	g := r.Log.Geometry
	slots := make(map[uint64]uint64, len(r.Log.Valid))
	for _, s := range r.Log.Valid {
		slots[s.Header.ID] = s.Slot
	}
	var srcs []source
	add := func(block, segID uint64, index uint8, mask uint8, prio int32) error {
		slot, ok := slots[segID]
		if !ok || int(index) >= layout.NrCachesPerSegment {
			return fmt.Errorf("check: copy of block %d names segment %d slot %d, not in the valid log", block, segID, index)
		}
		for j := range layout.SectorsPerBlock {
			if mask&(1<<j) != 0 {
				srcs = append(srcs, source{sector: block*layout.SectorsPerBlock + uint64(j),
					off: g.DataOffset(slot, int(index)) + int64(j)*layout.SectorSize, prio: prio})
			}
		}
		return nil
	}
	for i, p := range r.Pieces {
		if err := add(p.Block, p.Copy.SegmentID, p.Copy.Index, p.Mask, int32(min(i, math.MaxInt32-1))); err != nil {
			return nil, err
		}
	}
	for block, c := range r.Index {
		if err := add(block, c.SegmentID, c.Index, c.DirtyBits, math.MaxInt32); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(srcs, func(a, b source) int {
		if c := cmp.Compare(a.sector, b.sector); c != 0 {
			return c
		}
		return cmp.Compare(b.prio, a.prio)
	})
	// The newest source of a sector comes first; drop the others.
	return slices.CompactFunc(srcs, func(a, b source) bool { return a.sector == b.sector }), nil
}

// writebackRound stages the sectors of the first sources (up to a window)
// in a sectorio.Stage, which merges consecutive backing sectors into one
// write, and writes them. The cache blocks they come from are read first,
// in ascending order with neighbours merged (readBlocks). A dry run reads
// and writes nothing, and counts the writes of the same merge in a
// counting Stage. It returns how many sources it consumed.
func writebackRound(cache, backing blockdev.Device, srcs []source, res *WritebackResult, dryRun bool) (int, error) {
	win := srcs[:window(srcs)]
	stage := sectorio.NewCount()
	var blocks *cacheBlocks
	if !dryRun {
		var err error
		if blocks, err = readBlocks(cache, win); err != nil {
			return 0, fmt.Errorf("read cache device: %w", err)
		}
		stage = sectorio.NewStage(len(win))
	}
	for _, s := range win {
		if p := stage.Add(int64(s.sector), 1); p != nil {
			copy(p, blocks.sector(s.off))
		}
	}
	if err := stage.Write(backing); err != nil {
		return 0, fmt.Errorf("write backing device: %w", err)
	}
	res.Writes += stage.Runs()
	res.Sectors += stage.Sectors()
	return len(win), nil
}

// cacheBlocks holds cache blocks read from the cache device: the one at
// byte offset offs[k] in buf[k*BlockSize:], offs ascending.
type cacheBlocks struct {
	offs []int64
	buf  []byte
}

// sector returns the cached sector at cache offset off.
func (c *cacheBlocks) sector(off int64) []byte {
	b := off &^ (layout.BlockSize - 1)
	k, _ := slices.BinarySearch(c.offs, b)
	from := k*layout.BlockSize + int(off-b)
	return c.buf[from : from+layout.SectorSize]
}

// readBlocks reads the cache blocks that srcs need, in ascending order:
// adjacent blocks in one request, and blocks closer than wbMaxGap in one
// request with the gap, up to wbMaxRead bytes.
func readBlocks(cache blockdev.Device, srcs []source) (*cacheBlocks, error) {
	blocks := make(map[int64]struct{})
	for _, s := range srcs {
		blocks[s.off&^(layout.BlockSize-1)] = struct{}{}
	}
	sorted := make([]int64, 0, len(blocks))
	for b := range blocks {
		sorted = append(sorted, b)
	}
	slices.Sort(sorted)
	buf := blockdev.AlignedBuffer(len(sorted) * layout.BlockSize)
	var sweep []byte
	for i := 0; i < len(sorted); {
		j := i + 1
		for j < len(sorted) && sorted[j]-sorted[j-1] <= wbMaxGap && sorted[j]+layout.BlockSize-sorted[i] <= wbMaxRead {
			j++
		}
		if j == i+1 || sorted[j-1]-sorted[i] == int64(j-i-1)*layout.BlockSize {
			// Adjacent blocks: straight into place.
			if err := sectorio.ReadFull(cache, buf[i*layout.BlockSize:j*layout.BlockSize], sorted[i]); err != nil {
				return nil, err
			}
		} else {
			n := sorted[j-1] + layout.BlockSize - sorted[i]
			if sweep == nil {
				sweep = blockdev.AlignedBuffer(int(wbMaxRead))
			}
			if err := sectorio.ReadFull(cache, sweep[:n], sorted[i]); err != nil {
				return nil, err
			}
			for k := i; k < j; k++ {
				from := sorted[k] - sorted[i]
				copy(buf[k*layout.BlockSize:(k+1)*layout.BlockSize], sweep[from:from+layout.BlockSize])
			}
		}
		i = j
	}
	return &cacheBlocks{offs: sorted, buf: buf}, nil
}

// window returns how many of the first sources one round stages: up to
// wbWindowSectors sectors from up to wbWindowBlocks cache blocks.
func window(srcs []source) int {
	blocks := make(map[int64]struct{})
	n := 0
	for ; n < len(srcs) && n < wbWindowSectors; n++ {
		b := srcs[n].off &^ (layout.BlockSize - 1)
		if _, ok := blocks[b]; !ok {
			if len(blocks) == wbWindowBlocks {
				break
			}
			blocks[b] = struct{}{}
		}
	}
	return n
}
