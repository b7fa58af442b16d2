package check

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/superblock"
)

// FormatOptions tune Format.
type FormatOptions struct {
	// Force formats a device whose log still holds dirty blocks or damage.
	Force bool
	// Progress, when set, is called now and then with the segment headers
	// zeroed so far and their number.
	Progress func(done, total int64)
}

// Format formats dev as a cache device (superblock.Format: zero the first
// MiB and every segment header, sync, then write the magic and sync). A
// cut before the last sync leaves a device without the magic, which
// nothing takes for a cache.
//
// It refuses, with dev untouched, a device too small to be a cache
// (layout.ErrTooSmall) and, unless opts.Force, a formatted device whose log
// holds dirty blocks or damage (ErrDirty): formatting would lose them.
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
	return superblock.Format(dev, opts.Progress)
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
