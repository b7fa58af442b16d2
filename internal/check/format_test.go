package check

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/probe"
	"github.com/writeboost/writeboost/internal/testimg"
)

// checkFormatted asserts the bytes docs/format.md "Formatting" leaves.
func checkFormatted(t *testing.T, d blockdev.Device) {
	t.Helper()
	b := readAll(t, d)
	if binary.LittleEndian.Uint32(b) != layout.Magic {
		t.Fatal("no magic")
	}
	if !bytes.Equal(b[4:layout.SuperblockSize], make([]byte, layout.SuperblockSize-4)) {
		t.Fatal("superblock not zero after the magic")
	}
	g, _ := layout.NewGeometry(d.Size())
	zero := make([]byte, layout.HeaderSize)
	for slot := range g.NrSegments {
		off := g.SegmentOffset(slot)
		if !bytes.Equal(b[off:off+layout.HeaderSize], zero) {
			t.Fatalf("header of segment %d not zero", slot)
		}
	}
}

func TestFormatFresh(t *testing.T) {
	size := int64(layout.MinDeviceSize + 7*layout.SegmentSize + 1000)
	dev := blockdev.NewMem(size)
	garbage := bytes.Repeat([]byte{0xa5}, int(size))
	dev.WriteAt(garbage, 0)
	var calls int
	g, err := Format(dev, FormatOptions{Progress: func(done, total int64) {
		calls++
		if done > total || total != 8 {
			t.Errorf("progress %d/%d", done, total)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if g.NrSegments != 8 || g.NrCacheBlocks() != 8*127 || calls == 0 {
		t.Fatalf("geometry %+v, %d progress calls", g, calls)
	}
	// Durable: what a power cut right after Format leaves is formatted.
	crashed := dev.CrashClone()
	checkFormatted(t, crashed)
	r, err := Check(crashed, size, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Report.ExitStatus != ExitOK || r.Report.MaxID != 0 || r.Report.ValidSegments != 0 {
		t.Fatalf("after format: %+v", r.Report)
	}
	// Data slots are left alone: only headers are zeroed.
	b := readAll(t, crashed)
	if b[g.DataOffset(0, 0)] != 0xa5 {
		t.Fatal("format zeroed data slots")
	}
}

func TestFormatRefuses(t *testing.T) {
	small := blockdev.NewMem(layout.MinDeviceSize - 512)
	small.WriteAt([]byte{1, 2, 3}, 0)
	if _, err := Format(small, FormatOptions{Force: true}); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("too small: %v", err)
	}
	if b := readAll(t, small); b[0] != 1 {
		t.Fatal("a refused format wrote")
	}

	for _, d := range []testimg.Damage{testimg.Clean, testimg.MidLogCorruption} {
		im, dev, _ := fixture(t, baseConfig(1, d))
		before := readAll(t, dev)
		_, err := Format(dev, FormatOptions{})
		if !errors.Is(err, ErrDirty) {
			t.Fatalf("%v: format over %d dirty blocks: %v", d, im.NrDirtyBlocks, err)
		}
		if !bytes.Equal(before, readAll(t, dev)) {
			t.Fatalf("%v: a refused format wrote", d)
		}
		if _, err := Format(dev, FormatOptions{Force: true}); err != nil {
			t.Fatalf("%v: forced: %v", d, err)
		}
		checkFormatted(t, dev)
	}

	// A cache without dirty blocks (written back) is formatted without --force.
	im, dev, _ := fixture(t, baseConfig(2, testimg.Clean))
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Writeback(dev, memBacking(t, im.Backing), r, WritebackOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Format(dev, FormatOptions{}); err != nil {
		t.Fatalf("format after writeback: %v", err)
	}
	checkFormatted(t, dev)
}

func TestFormatWriteError(t *testing.T) {
	mem := blockdev.NewMem(layout.MinDeviceSize + 3*layout.SegmentSize)
	f := blockdev.NewFaulty(mem)
	f.Inject(blockdev.Rule{Ops: blockdev.OpSync})
	if _, err := Format(f, FormatOptions{}); err == nil {
		t.Fatal("format ignored a failed sync")
	}
	if b := readAll(t, mem); binary.LittleEndian.Uint32(b) == layout.Magic {
		t.Fatal("magic written after a failed sync")
	}
}

func TestWritebackBackingFails(t *testing.T) {
	im, dev, _ := fixture(t, baseConfig(5, testimg.Clean))
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []blockdev.Op{blockdev.OpWrite, blockdev.OpSync} {
		f := blockdev.NewFaulty(memBacking(t, im.Backing))
		skip := 0
		if op == blockdev.OpWrite {
			skip = 1 // fail a write in the middle, not the first
		}
		f.Inject(blockdev.Rule{Ops: op, Skip: skip})
		if _, err := Writeback(dev, f, r, WritebackOptions{}); err == nil {
			t.Fatalf("%v fails: writeback succeeded", op)
		}
		r2, err := Check(dev, dev.Size(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if r2.Report.SuperblockRecord != im.SuperRecord {
			t.Fatalf("%v fails: superblock record moved to %d", op, r2.Report.SuperblockRecord)
		}
	}
}

func TestCheckReadError(t *testing.T) {
	_, dev, _ := fixture(t, baseConfig(1, testimg.Clean))
	f := blockdev.NewFaulty(dev)
	f.Inject(blockdev.Rule{Ops: blockdev.OpRead, Off: layout.SuperblockSize + 3*layout.SegmentSize, Len: 4096})
	if _, err := Check(f, f.Size(), Options{}); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("read error: %v", err)
	}
}

// TestFormatForeign: the probe is asked about a device without the magic
// only, before anything is written; what it finds, or its failure, refuses
// the format with the device untouched.
func TestFormatForeign(t *testing.T) {
	size := int64(layout.MinDeviceSize + 4*layout.SegmentSize)
	ext4 := []probe.Signature{{Type: "ext4", Offset: 0x438}}
	probeFails := errors.New("probe: wipefs not found")
	for _, tc := range []struct {
		name   string
		found  []probe.Signature
		err    error
		refuse error // nil: formats
	}{
		{"nothing found", nil, nil, nil},
		{"ext4", ext4, nil, ErrForeign},
		{"probe fails", nil, probeFails, probeFails},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := blockdev.NewMem(size)
			dev.WriteAt(bytes.Repeat([]byte{0x5a}, int(size)), 0)
			before := readAll(t, dev)
			calls := 0
			_, err := Format(dev, FormatOptions{Force: true, Foreign: func() ([]probe.Signature, error) {
				calls++
				if !bytes.Equal(readAll(t, dev), before) {
					t.Error("written before the probe")
				}
				return tc.found, tc.err
			}})
			if calls != 1 {
				t.Fatalf("probe called %d times", calls)
			}
			if tc.refuse == nil {
				if err != nil {
					t.Fatal(err)
				}
				checkFormatted(t, dev)
				return
			}
			if !errors.Is(err, tc.refuse) {
				t.Fatalf("Format: %v, want %v", err, tc.refuse)
			}
			if !bytes.Equal(readAll(t, dev), before) {
				t.Fatal("a refused format wrote")
			}
		})
	}
	var fe *ForeignError
	_, err := Format(blockdev.NewMem(size), FormatOptions{Foreign: func() ([]probe.Signature, error) { return ext4, nil }})
	if !errors.As(err, &fe) || len(fe.Signatures) != 1 || err.Error() != "check: the device holds an ext4 signature at offset 0x438" {
		t.Fatalf("error %v", err)
	}

	// A cache device is judged by its log, never probed: clean, it is
	// formatted; dirty, ErrDirty (unless Force).
	im, dev, _ := fixture(t, baseConfig(1, testimg.Clean))
	foreign := func() ([]probe.Signature, error) {
		t.Error("a cache device was probed")
		return ext4, nil
	}
	if _, err := Format(dev, FormatOptions{Foreign: foreign}); !errors.Is(err, ErrDirty) {
		t.Fatalf("%d dirty blocks: %v", im.NrDirtyBlocks, err)
	}
	if _, err := Format(dev, FormatOptions{Force: true, Foreign: foreign}); err != nil {
		t.Fatal(err)
	}
	if _, err := Format(dev, FormatOptions{Foreign: foreign}); err != nil {
		t.Fatalf("format a fresh cache again: %v", err)
	}
	checkFormatted(t, dev)
}

func TestIsCache(t *testing.T) {
	dev := blockdev.NewMem(layout.MinDeviceSize)
	if ok, err := IsCache(dev); ok || err != nil {
		t.Fatalf("zeroed device: %v %v", ok, err)
	}
	if _, err := Format(dev, FormatOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := IsCache(dev); !ok || err != nil {
		t.Fatalf("formatted device: %v %v", ok, err)
	}
	short := blockdev.NewMem(100)
	short.WriteAt([]byte{0x74, 0x73, 0x42, 0x57}, 0)
	if ok, err := IsCache(short); !ok || err != nil {
		t.Fatalf("100 bytes with the magic: %v %v", ok, err)
	}
	f := blockdev.NewFaulty(dev)
	f.Inject(blockdev.Rule{Ops: blockdev.OpRead})
	if _, err := IsCache(f); !errors.Is(err, blockdev.ErrInjected) {
		t.Fatalf("read error: %v", err)
	}
}
