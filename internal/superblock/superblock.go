// Package superblock reads and writes the cache device's superblock area
// (the first MiB, docs/format.md): the magic, the superblock record, and
// the extension records writeboost adds in bytes the kernel target ignores
// (clean stop, binding). It is the one place that writes these bytes and
// formats a device; the engine, wb-check and wb-create call it. Encodings
// are internal/layout's.
package superblock

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
)

// Area is what the superblock area holds.
type Area struct {
	Formatted bool
	Record    layout.SuperRecord
	// CleanStop is set when the engine stopped cleanly and nothing wrote a
	// segment since; CleanStopErr when its bytes are damaged.
	CleanStop    *layout.CleanStop
	CleanStopErr error
	// Binding is the backing device the cache belongs to (nil: not bound);
	// BindingErr when its bytes are damaged.
	Binding    *Binding
	BindingErr error
}

// Read reads the superblock area of dev. It fails only when dev cannot be
// read; damaged extension records are reported in the Area.
func Read(dev io.ReaderAt) (Area, error) {
	var a Area
	sb := blockdev.AlignedBuffer(layout.SectorSize)
	if err := sectorio.ReadFull(dev, sb, 0); err != nil {
		return a, fmt.Errorf("superblock: read sector 0: %w", err)
	}
	if a.Formatted = layout.IsFormatted(sb); !a.Formatted {
		return a, nil
	}
	blk := blockdev.AlignedBuffer(layout.BlockSize)
	if err := sectorio.ReadFull(dev, blk, layout.RecordBlockOffset); err != nil {
		return a, fmt.Errorf("superblock: read the record block: %w", err)
	}
	var err error
	if a.Record, err = layout.DecodeSuperRecord(blk[layout.SuperRecordOffset-layout.RecordBlockOffset:]); err != nil {
		return a, fmt.Errorf("superblock: %w", err)
	}
	if c, ok, err := layout.DecodeCleanStop(blk[layout.CleanStopOffset-layout.RecordBlockOffset:]); err != nil {
		a.CleanStopErr = err
	} else if ok {
		a.CleanStop = &c
	}
	if err := sectorio.ReadFull(dev, sb, layout.BindingOffset); err != nil {
		return a, fmt.Errorf("superblock: read the binding record: %w", err)
	}
	if p, ok, err := layout.DecodeBinding(sb); err != nil {
		a.BindingErr = err
	} else if ok {
		var b Binding
		if err := json.Unmarshal(p, &b); err != nil {
			a.BindingErr = fmt.Errorf("%w: binding record payload: %v", layout.ErrCorrupt, err)
		} else {
			a.Binding = &b
		}
	}
	return a, nil
}

// WriteRecord writes the kernel's record block (sectors 2040-2047): the
// superblock record and, when clean is not nil, the clean-stop record;
// without it, a clean-stop record there is cleared, as any kernel record
// update clears it. The caller syncs.
func WriteRecord(dev blockdev.Device, rec layout.SuperRecord, clean *layout.CleanStop) error {
	blk := blockdev.AlignedBuffer(layout.BlockSize)
	rec.Encode(blk[layout.SuperRecordOffset-layout.RecordBlockOffset:])
	if clean != nil {
		clean.Encode(blk[layout.CleanStopOffset-layout.RecordBlockOffset:])
	}
	if _, err := dev.WriteAt(blk, layout.RecordBlockOffset); err != nil {
		return fmt.Errorf("superblock: write the record block (record %d): %w", rec.LastWritebackSegmentID, err)
	}
	return nil
}

// WriteBinding writes the binding record (sector 8) and syncs dev.
func WriteBinding(dev blockdev.Device, b Binding) error {
	p, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("superblock: encode binding: %w", err)
	}
	sector := blockdev.AlignedBuffer(layout.BlockSize)
	if err := layout.EncodeBinding(sector, p); err != nil {
		return fmt.Errorf("superblock: binding of %s: %w", b, err)
	}
	// The whole 4 KiB block of sectors 8-15: the rest is zero by format.
	if _, err := dev.WriteAt(sector, layout.BindingOffset); err != nil {
		return fmt.Errorf("superblock: write the binding record: %w", err)
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("superblock: sync after the binding record: %w", err)
	}
	return nil
}

// Format formats dev as an empty cache device, durably (docs/format.md
// "Formatting"): zero the first MiB and every segment header, sync, then
// write the magic and sync again. Until the last step the device reads as
// unformatted, so an interrupted Format is harmless. It formats whatever
// dev holds: callers decide what may be lost. progress, when not nil, is
// called now and then with the headers zeroed so far and their number.
func Format(dev blockdev.Device, progress func(done, total int64)) (layout.Geometry, error) {
	g, err := layout.NewGeometry(dev.Size())
	if err != nil {
		return g, err
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
		if progress != nil && (slot+1)%progressEvery == 0 {
			progress(int64(slot+1), total)
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
	if progress != nil {
		progress(total, total)
	}
	return g, nil
}

// progressEvery is how many segment headers Format zeroes between two
// progress calls.
const progressEvery = 256
