package check

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// FormatOptions tune Format.
type FormatOptions struct {
	// Force formats a device whose log still holds dirty blocks or damage.
	Force bool
	// Progress, when set, is called now and then with the segment headers
	// zeroed so far and their number.
	Progress func(done, total int64)
}

// formatProgressEvery is how many segment headers Format zeroes between
// two Progress calls.
const formatProgressEvery = 256

// Format formats dev as a cache device, as FORMAT.md "Formatting" says
// (cf. the kernel's format_cache_device): zero the first MiB and every
// segment header, sync, then write the magic into sector 0 and sync. A cut
// before the last sync leaves a device without the magic, which nothing
// takes for a cache.
//
// It refuses, with dev untouched, a device too small to be a cache
// (layout.ErrTooSmall) and, unless opts.Force, a formatted device whose log
// holds dirty blocks or damage (ErrDirty): formatting would lose them.
//
// NB: the engine's engine.Format is meant to call this, so there is one
// formatter.
func Format(dev blockdev.Device, opts FormatOptions) (layout.Geometry, error) {
	size := dev.Size()
	g, err := layout.NewGeometry(size)
	if err != nil {
		return g, err
	}
	if !opts.Force {
		if err := refuseDirty(dev, size); err != nil {
			return g, err
		}
	}
	zero := blockdev.AlignedBuffer(layout.SuperblockSize)
	if _, err := dev.WriteAt(zero, 0); err != nil {
		return g, fmt.Errorf("zero the superblock: %w", err)
	}
	header := zero[:layout.HeaderSize]
	total := int64(g.NrSegments)
	for slot := range g.NrSegments {
		if _, err := dev.WriteAt(header, g.SegmentOffset(slot)); err != nil {
			return g, fmt.Errorf("zero the header of segment %d: %w", slot, err)
		}
		if opts.Progress != nil && (slot+1)%formatProgressEvery == 0 {
			opts.Progress(int64(slot+1), total)
		}
	}
	if err := dev.Sync(); err != nil {
		return g, fmt.Errorf("sync: %w", err)
	}
	// The magic goes in last and alone: the device is formatted once it
	// is durable, not before.
	first := blockdev.AlignedBuffer(layout.BlockSize)
	layout.EncodeMagic(first)
	if _, err := dev.WriteAt(first, 0); err != nil {
		return g, fmt.Errorf("write the magic: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return g, fmt.Errorf("sync the magic: %w", err)
	}
	if opts.Progress != nil {
		opts.Progress(total, total)
	}
	return g, nil
}

// refuseDirty returns ErrDirty when dev holds a log whose loss loses data.
func refuseDirty(dev blockdev.Device, size int64) error {
	r, err := Check(dev, size, Options{})
	if err != nil {
		return fmt.Errorf("read the old log: %w", err)
	}
	rep := r.Report
	switch {
	case !rep.Formatted:
		return nil
	case r.Damaged():
		return fmt.Errorf("%w: its log is damaged: %s", ErrDirty, rep.Problems[0])
	case rep.NrDirtyBlocks > 0:
		return fmt.Errorf("%w: %d dirty blocks in segments up to %d (last_writeback_id %d); wb-check --writeback BACKING writes them back",
			ErrDirty, rep.NrDirtyBlocks, rep.LastFlushedID, rep.LastWritebackID)
	}
	return nil
}
