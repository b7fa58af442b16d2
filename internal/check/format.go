package check

import (
	"errors"
	"fmt"
	"io"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/probe"
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
// (layout.ErrTooSmall); a device that is not a cache device and on which
// opts.Foreign finds a signature (ErrForeign) or cannot look; and, unless
// opts.Force, a cache device whose log holds dirty blocks or damage
// (ErrDirty): formatting would lose them.
//
// NB: the engine's engine.Format is meant to call this, so there is one
// formatter.
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

// IsCache reports whether dev is a writeboost cache device: the magic in
// sector 0 (FORMAT.md: formatted if and only if).
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
