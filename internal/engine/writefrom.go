package engine

import (
	"fmt"
	"io"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// WriteFrom: a large write read from the client straight into place.
//
// WriteAt copies its payload into the open rambuf under mu; over NBD the
// payload was first read from the socket into a buffer of its own, so a
// 1 MiB sequential write touched every byte three times (socket read,
// copy, CRC-32C) and kept two copies of the data in the cache. WriteFrom
// reads the payload of whole-block writes into a stage: a spare
// segment-sized buffer, at the data slots the blocks will take in the
// open rambuf as it stands when the read starts (and in the fresh rambufs
// after it). Committing a stage, under mu, swaps its buffer with the open
// rambuf's when the guess held: the rambuf is still the one guessed, at
// the length guessed, and holds none of the stage's blocks (those would
// be overwritten in place, as WriteAt does). Then only the few blocks
// already in the rambuf are copied (into the stage, before the swap) and
// the index is updated. When the guess failed (another writer came in
// between) the stage is copied block by block as WriteAt would.
//
// Nothing is reserved in the log while the payload is read: a client that
// stalls mid-payload holds up no seal, no flush and no other writer. A
// write takes effect at its commit, as WriteAt does under mu; a payload
// larger than stageRound segments is read and committed in rounds, so an
// interrupted one may leave its first rounds written (it was never
// acknowledged, as after a crash).

// stageRound bounds the stages one round reads before it commits them
// (the memory one WriteFrom holds): 2 MiB.
const stageRound = 4

// stageSpares bounds the spare stage buffers a volume keeps between
// writes; more are allocated as needed and dropped when not kept.
const stageSpares = 16

// stage is the part of a WriteFrom round that lands in one rambuf: nblocks
// blocks from block, at data slots first... of buf.
type stage struct {
	buf     []byte // segment-sized, aligned; the payload at data slots first..first+nblocks-1
	block   uint64 // first cache block
	first   int    // data slot of the first block
	nblocks int
}

func (s *stage) data(i int) []byte {
	off := layout.BlockSize * (i + 1)
	return s.buf[off : off+layout.BlockSize]
}

// payload is where the stage's blocks are read to: one contiguous range.
func (s *stage) payload() []byte {
	return s.buf[layout.BlockSize*(s.first+1) : layout.BlockSize*(s.first+1+s.nblocks)]
}

func (v *Volume) getStageBuf() []byte {
	select {
	case b := <-v.stageBufs:
		return b
	default:
		return blockdev.AlignedBuffer(layout.SegmentSize)
	}
}

func (v *Volume) putStageBuf(b []byte) {
	select {
	case v.stageBufs <- b:
	default:
	}
}

// WriteFrom writes n bytes at byte offset off, read from r, without FUA:
// WriteAt for a payload the caller has not read yet (nbd.StreamWriter). It
// reads at most n bytes from r and fewer only when it fails; an error from
// r is returned wrapped.
func (v *Volume) WriteFrom(r io.Reader, n int, off int64) error {
	if err := v.checkRange(off, int64(n)); err != nil {
		return err
	}
	if off%layout.BlockSize != 0 || n%layout.BlockSize != 0 || v.tun.on(vocab.WriteAroundMode) {
		// Not whole blocks: read the payload, then write it as usual.
		p := blockdev.AlignedBuffer(n)
		if _, err := io.ReadFull(r, p); err != nil {
			return fmt.Errorf("engine: read write payload: %w", err)
		}
		return v.WriteAt(p, off, false)
	}
	block := uint64(off) >> layout.BlockShift
	left := n >> layout.BlockShift
	var stages [stageRound]stage
	for left > 0 {
		// Guess where the blocks land: after what the open rambuf holds
		// now, then from the first slot of each next one.
		v.mu.Lock()
		first := 0
		if rb := v.mu.open; rb != nil {
			first = rb.length
		}
		v.mu.Unlock()
		round := stages[:0]
		for left > 0 && len(round) < stageRound {
			k := min(layout.NrCachesPerSegment-first, left)
			s := stage{buf: v.getStageBuf(), block: block, first: first, nblocks: k}
			round = append(round, s)
			block += uint64(k)
			left -= k
			first = 0
		}
		for i := range round {
			if _, err := io.ReadFull(r, round[i].payload()); err != nil {
				v.putStages(round)
				return fmt.Errorf("engine: read write payload: %w", err)
			}
		}
		err := v.commitStages(round)
		v.putStages(round)
		if err != nil {
			return err
		}
	}
	return nil
}

// commitStages writes the stages of a round in order. It counts as a
// request in flight (beginOp) only now: Close must not wait for a client
// that stalls mid-payload.
func (v *Volume) commitStages(round []stage) error {
	if err := v.beginOp(); err != nil {
		return err
	}
	defer v.endOp()
	v.mu.Lock()
	defer v.mu.Unlock()
	for i := range round {
		if err := v.commitStageLocked(&round[i]); err != nil {
			return err
		}
	}
	return nil
}

func (v *Volume) putStages(round []stage) {
	for i := range round {
		v.putStageBuf(round[i].buf)
		round[i] = stage{}
	}
}

// commitStageLocked writes the blocks of s: by swapping buffers with the
// open rambuf when s was read where they belong (then s.buf is the
// rambuf's old buffer), else by copying them one by one. Caller holds mu;
// it may be released to wait for a rambuf.
func (v *Volume) commitStageLocked(s *stage) error {
	if _, _, err := v.ensureOpenLocked(true); err != nil {
		return fmt.Errorf("engine: write block %d (sector %d): %w", s.block, s.block*layout.SectorsPerBlock, err)
	}
	rb := v.mu.open
	for j := range s.nblocks {
		v.mu.rc.cancelLocked(s.block + uint64(j))
	}
	// Where each block's current copy is: looked up once, for the check
	// here and for appendLocked below (the stage's blocks are distinct, so
	// appending one moves no other).
	var pos [layout.NrCachesPerSegment]uint32
	var found [layout.NrCachesPerSegment]bool
	inPlace := rb.length == s.first
	for j := 0; inPlace && j < s.nblocks; j++ {
		pos[j], found[j] = v.mu.idx.lookup(s.block + uint64(j))
		if found[j] && v.mu.slotRB[slotOfPos(pos[j])] == rb {
			inPlace = false // WriteAt overwrites it in place
		}
	}
	if !inPlace {
		v.stageCopies.Add(1)
		for j := range s.nblocks {
			b := s.block + uint64(j)
			if err := v.writeBlockLocked(b, 0, layout.DirtyFull, s.data(s.first+j)); err != nil {
				return fmt.Errorf("engine: write block %d (sector %d): %w", b, b*layout.SectorsPerBlock, err)
			}
		}
		return nil
	}
	// The blocks the rambuf already holds move to the stage, whose buffer
	// becomes the rambuf's: every reader of rambuf data holds mu, and the
	// flusher takes only sealed rambufs.
	copy(s.buf[layout.BlockSize:layout.BlockSize*(s.first+1)], rb.buf[layout.BlockSize:layout.BlockSize*(s.first+1)])
	rb.buf, s.buf = s.buf, rb.buf
	v.stageSwaps.Add(1)
	for j := range s.nblocks {
		// The stage ends at the rambuf's end at the latest: only its
		// last block may seal rb.
		v.stats.inc(true, found[j], false, true)
		var oldDirty uint8
		if found[j] {
			oldDirty = v.mu.idx.dirty[pos[j]]
		}
		v.appendLocked(rb, s.block+uint64(j), layout.DirtyFull, pos[j], found[j], oldDirty)
	}
	return nil
}
