// Package sectorio is the last step of every writeback: sectors staged in
// ascending backing-sector order, adjacent sectors merged into runs, and
// the runs written with up to InFlight in flight, submitted in ascending
// order. The engine's writeback batches, the engine's replay (the pieces
// under partial copies) and wb-check's offline writeback all write through
// a Stage, so they merge alike; a counting Stage buffers no data and
// reports the very runs a real one would write (wb-check --dry-run).
//
// What to write and when to sync stay with the callers: a Stage neither
// reads the cache device nor syncs the backing device.
package sectorio

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// InFlight bounds the writes of one Stage in flight at once. A disk with
// a queue (NCQ, a RAID, a network disk) overlaps them; one at a time left
// the backing device idle between requests.
const InFlight = 16

// Stage holds sectors on their way to a device, added in ascending sector
// order and merged into runs of consecutive sectors: one write each. A
// Stage is not safe for concurrent use.
type Stage struct {
	buf     []byte // staged data, the runs back to back; nil when counting
	count   bool   // counting only: Add returns nil, Write writes nothing
	runs    []run
	sectors int64 // sectors staged
}

// run is one merged write: buf[start:end] to sector.
type run struct {
	sector     int64
	start, end int
}

// NewStage returns a Stage with room for the given number of sectors,
// aligned for O_DIRECT.
func NewStage(sectors int) *Stage {
	return &Stage{buf: blockdev.AlignedBuffer(sectors * layout.SectorSize)}
}

// NewCount returns a counting Stage: it buffers no data and writes
// nothing, and its Runs and Sectors are those of a real Stage given the
// same Adds.
func NewCount() *Stage {
	return &Stage{count: true}
}

// Add stages n sectors for the device starting at sector and returns the
// space to copy their data into (nil for a counting Stage, so that
// copy(s.Add(sector, n), data) serves both). The sectors extend the last
// run when it ends right at sector. Add panics when sector lies below the
// end of the last run (sectors go in ascending order, each once) or the
// Stage is full.
func (s *Stage) Add(sector int64, n int) []byte {
	if n <= 0 {
		panic(fmt.Sprintf("sectorio: Add of %d sectors", n))
	}
	at := int(s.sectors) * layout.SectorSize
	end := at + n*layout.SectorSize
	k := len(s.runs) - 1
	if k >= 0 {
		last := &s.runs[k]
		next := last.sector + int64((last.end-last.start)>>layout.SectorShift)
		switch {
		case sector < next:
			panic(fmt.Sprintf("sectorio: sector %d added after sector %d", sector, next-1))
		case sector == next:
			last.end = end
		default:
			k = -1
		}
	}
	if k < 0 {
		s.runs = append(s.runs, run{sector: sector, start: at, end: end})
	}
	s.sectors += int64(n)
	if s.count {
		return nil
	}
	if end > len(s.buf) {
		panic(fmt.Sprintf("sectorio: stage of %d sectors is full", len(s.buf)/layout.SectorSize))
	}
	return s.buf[at:end:end]
}

// Reset empties the Stage for reuse, keeping its buffer.
func (s *Stage) Reset() {
	s.runs = s.runs[:0]
	s.sectors = 0
}

// Cap is the number of sectors the Stage has room for (0 when counting:
// a counting Stage has no limit).
func (s *Stage) Cap() int { return len(s.buf) / layout.SectorSize }

// Runs is the number of writes: runs of consecutive sectors.
func (s *Stage) Runs() int { return len(s.runs) }

// Sectors is the number of sectors staged.
func (s *Stage) Sectors() int64 { return s.sectors }

// Write writes the runs to dev, up to InFlight at once, submitted in
// ascending sector order, and returns when none is in flight. On the
// first failure it submits no more and returns a *WriteError for the
// lowest failed run; the caller decides what a partial write means (it
// neither syncs nor records). A counting Stage writes nothing and
// returns nil.
func (s *Stage) Write(dev io.WriterAt) error {
	switch {
	case s.count || len(s.runs) == 0:
		return nil
	case len(s.runs) == 1:
		if err := s.write(dev, s.runs[0]); err != nil {
			return &WriteError{Sector: s.runs[0].sector, Bytes: s.runs[0].end - s.runs[0].start, Failed: 1, Err: err}
		}
		return nil
	}
	errs := make([]error, len(s.runs))
	var wg sync.WaitGroup
	var failed atomic.Int32
	sem := make(chan struct{}, InFlight)
	for k, r := range s.runs {
		sem <- struct{}{}
		if failed.Load() > 0 {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := s.write(dev, r); err != nil {
				errs[k] = err
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			r := s.runs[k]
			return &WriteError{Sector: r.sector, Bytes: r.end - r.start, Failed: int(failed.Load()), Err: err}
		}
	}
	return nil
}

func (s *Stage) write(dev io.WriterAt, r run) error {
	_, err := dev.WriteAt(s.buf[r.start:r.end], r.sector<<layout.SectorShift)
	return err
}

// WriteError is the error of a failed Write: its lowest failed run, and
// how many runs failed (the writes in flight when the first failed may
// fail too).
type WriteError struct {
	Sector int64 // the run's first sector
	Bytes  int   // the run's length
	Failed int
	Err    error
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("write %d bytes at offset %d: %v", e.Bytes, e.Sector<<layout.SectorShift, e.Err)
}

func (e *WriteError) Unwrap() error { return e.Err }

// ReadFull reads len(p) bytes at off, or fails saying where the data
// ended: a short read without an error is io.ErrUnexpectedEOF.
func ReadFull(dev io.ReaderAt, p []byte, off int64) error {
	n, err := dev.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("at byte %d: %w", off+int64(n), err)
}
