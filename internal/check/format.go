package check

import (
	"errors"
	"fmt"
	"io"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/probe"
	"github.com/writeboost/writeboost/internal/superblock"
)

// ErrForeign is what Format returns, as a *ForeignError, for a device that
// holds the signature of other software: a file system, a partition table,
// swap, a RAID or LVM member, LUKS...
var ErrForeign = errors.New("check: the device holds a foreign signature")

// ForeignError lists the signatures that made Format refuse a device.
type ForeignError struct {
	Signatures []probe.Signature
}

func (e *ForeignError) Error() string {
	return "check: the device holds " + probe.Describe(e.Signatures)
}

// Is makes errors.Is(err, ErrForeign) hold.
func (e *ForeignError) Is(target error) bool { return target == ErrForeign }

// FormatOptions tune Format.
type FormatOptions struct {
	// Force formats a device whose log still holds dirty blocks or damage.
	Force bool
	// Foreign, when not nil, probes a device that is not a cache device
	// (no magic in sector 0) for the signatures of other software, before
	// anything is written (probe.Device does it). Format refuses a device
	// with any (a *ForeignError) and returns the error of a probe that
	// could not run. A cache device is judged by the rules of its log
	// alone: the probe does not know our format, and its data area may
	// hold what an older file system left there. Nil skips the probe, as
	// --force asks.
	Foreign func() ([]probe.Signature, error)
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
// (layout.ErrTooSmall); a device that is not a cache device and on which
// opts.Foreign finds a signature (ErrForeign) or cannot look; and, unless
// opts.Force, a cache device whose log holds dirty blocks or damage
// (ErrDirty): formatting would lose them.
func Format(dev blockdev.Device, opts FormatOptions) (layout.Geometry, error) {
	size := dev.Size()
	g, err := layout.NewGeometry(size)
	if err != nil {
		return g, err
	}
	cache, err := IsCache(dev)
	if err != nil {
		return g, err
	}
	switch {
	case !cache && opts.Foreign != nil:
		sigs, err := opts.Foreign()
		if err != nil {
			return g, err
		}
		if len(sigs) > 0 {
			return g, &ForeignError{Signatures: sigs}
		}
	case cache && !opts.Force:
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

// IsCache reports whether dev is a writeboost cache device: the magic in
// sector 0 (docs/format.md: formatted if and only if).
func IsCache(dev blockdev.Device) (bool, error) {
	// A whole block, for O_DIRECT; a device shorter than one is read as
	// far as it goes.
	buf := blockdev.AlignedBuffer(layout.BlockSize)
	n, err := dev.ReadAt(buf, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read sector 0: %w", err)
	}
	return layout.IsFormatted(buf[:n]), nil
}
