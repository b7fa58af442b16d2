package superblock

import (
	"errors"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

func formatted(t *testing.T) *blockdev.Mem {
	t.Helper()
	dev := blockdev.NewMem(layout.MinDeviceSize + 3*layout.SegmentSize)
	if _, err := dev.WriteAt([]byte{1, 2, 3}, layout.BindingOffset); err != nil { // garbage a format clears
		t.Fatal(err)
	}
	if _, err := Format(dev, nil); err != nil {
		t.Fatal(err)
	}
	return dev
}

func TestFormatThenRead(t *testing.T) {
	dev := formatted(t)
	a, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Formatted || a.Record.LastWritebackSegmentID != 0 || a.CleanStop != nil || a.Binding != nil || a.CleanStopErr != nil || a.BindingErr != nil {
		t.Fatalf("fresh format: %+v", a)
	}
	if _, err := Format(blockdev.NewMem(layout.MinDeviceSize-1), nil); !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("too small: %v", err)
	}
}

func TestRecordAndCleanStop(t *testing.T) {
	dev := formatted(t)
	if err := WriteRecord(dev, layout.SuperRecord{LastWritebackSegmentID: 7}, &layout.CleanStop{LastID: 9}); err != nil {
		t.Fatal(err)
	}
	a, err := Read(dev)
	if err != nil {
		t.Fatal(err)
	}
	if a.Record.LastWritebackSegmentID != 7 || a.CleanStop == nil || a.CleanStop.LastID != 9 {
		t.Fatalf("after a clean stop: %+v", a)
	}
	// A record update without it clears the clean stop, as the kernel's does.
	if err := WriteRecord(dev, layout.SuperRecord{LastWritebackSegmentID: 8}, nil); err != nil {
		t.Fatal(err)
	}
	if a, _ := Read(dev); a.Record.LastWritebackSegmentID != 8 || a.CleanStop != nil {
		t.Fatalf("after a record update: %+v", a)
	}
	// Damaged bytes are reported, not fatal.
	if err := WriteRecord(dev, layout.SuperRecord{}, &layout.CleanStop{LastID: 9}); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.WriteAt([]byte{0xEE}, layout.CleanStopOffset+9); err != nil {
		t.Fatal(err)
	}
	if a, err := Read(dev); err != nil || a.CleanStop != nil || !errors.Is(a.CleanStopErr, layout.ErrCorrupt) {
		t.Fatalf("damaged clean-stop record: %+v %v", a, err)
	}
}

func TestBindingRoundTrip(t *testing.T) {
	dev := formatted(t)
	b := Binding{Kind: "file", Size: 1 << 30, Path: "/srv/backing.img", Dev: 2049, Ino: 12}
	if err := WriteBinding(dev, b); err != nil {
		t.Fatal(err)
	}
	a, err := Read(dev)
	if err != nil || a.Binding == nil || *a.Binding != b {
		t.Fatalf("binding: %+v %v", a.Binding, err)
	}
	// The record block does not touch it.
	if err := WriteRecord(dev, layout.SuperRecord{LastWritebackSegmentID: 3}, nil); err != nil {
		t.Fatal(err)
	}
	if a, _ := Read(dev); a.Binding == nil {
		t.Fatal("a record update cleared the binding")
	}
	if _, err := dev.WriteAt([]byte("x"), layout.BindingOffset+30); err != nil {
		t.Fatal(err)
	}
	if a, _ := Read(dev); a.Binding != nil || !errors.Is(a.BindingErr, layout.ErrCorrupt) {
		t.Fatalf("damaged binding: %+v", a)
	}
	long := b
	long.Path = string(make([]byte, layout.MaxBindingPayload))
	if err := WriteBinding(dev, long); err == nil {
		t.Fatal("an oversized binding was written")
	}
}

func TestBindingMatches(t *testing.T) {
	f := Binding{Kind: "file", Size: 100, Path: "/a", Dev: 1, Ino: 2}
	blk := Binding{Kind: "block", Size: 100, Path: "/dev/sdb", Rdev: "8:16", StableID: "wwn-0x1"}
	cases := []struct {
		a, b Binding
		want bool
	}{
		{f, f, true},
		{f, Binding{Kind: "file", Size: 100, Path: "/moved", Dev: 1, Ino: 2}, true},  // renamed
		{f, Binding{Kind: "file", Size: 100, Path: "/a", Dev: 9, Ino: 9}, true},      // restored copy
		{f, Binding{Kind: "file", Size: 100, Path: "/other", Dev: 1, Ino: 3}, false}, // another file
		{f, Binding{Kind: "file", Size: 200, Path: "/a", Dev: 1, Ino: 2}, false},     // resized
		{f, blk, false}, // kind
		{blk, Binding{Kind: "block", Size: 100, Path: "/dev/sdc", Rdev: "8:32", StableID: "wwn-0x1"}, true}, // renumbered disk
		{blk, Binding{Kind: "block", Size: 100, Path: "/dev/sdb", Rdev: "8:16", StableID: "wwn-0x2"}, false},
		{Binding{Kind: "block", Size: 100, Path: "/dev/loop0", Rdev: "7:0"}, Binding{Kind: "block", Size: 100, Path: "/dev/loop0", Rdev: "7:0"}, true},
		{Binding{Kind: "uri", Size: 1, URI: "nbd://a"}, Binding{Kind: "uri", Size: 1, URI: "nbd://b"}, false},
	}
	for i, c := range cases {
		if got, why := c.a.Matches(c.b); got != c.want || (!got && why == "") {
			t.Errorf("case %d: %v matches %v = %v (%q), want %v", i, c.a, c.b, got, why, c.want)
		}
	}
}
