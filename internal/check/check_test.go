package check

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/testimg"
)

// fixture writes a testimg image into a temporary file and opens it.
func fixture(t *testing.T, cfg testimg.Config) (*testimg.Image, *blockdev.File, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cache-"+cfg.Damage.String())
	im, err := testimg.Write(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.OpenFile(path, blockdev.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	return im, dev, path
}

func baseConfig(seed uint64, d testimg.Damage) testimg.Config {
	return testimg.Config{Seed: seed, NrSegments: 20 + seed%5, TailBytes: int64(seed%3) * 4096,
		BackingBlocks: 400 + 2600*(1-seed%2), Segments: 30 + seed*7, Damage: d}
}

func wantExit(d testimg.Damage) int {
	switch d {
	case testimg.Clean:
		return ExitOK
	case testimg.TornNewest, testimg.TornTail, testimg.TornInFlight:
		return ExitTorn
	}
	return ExitDamaged
}

func TestCheckFixtures(t *testing.T) {
	for _, d := range testimg.Damages() {
		for seed := uint64(1); seed <= 3; seed++ {
			im, dev, _ := fixture(t, baseConfig(seed, d))
			r, err := Check(dev, dev.Size(), Options{})
			if err != nil {
				t.Fatalf("%v seed %d: %v", d, seed, err)
			}
			rep := r.Report
			if rep.ExitStatus != wantExit(d) {
				t.Errorf("%v seed %d: exit %d, want %d; problems %q", d, seed, rep.ExitStatus, wantExit(d), rep.Problems)
			}
			if rep.Formatted != im.Formatted {
				t.Errorf("%v seed %d: formatted %v, want %v", d, seed, rep.Formatted, im.Formatted)
			}
			if (rep.ExitStatus == ExitOK) != (len(rep.Problems) == 0) {
				t.Errorf("%v seed %d: exit %d with problems %q", d, seed, rep.ExitStatus, rep.Problems)
			}
			switch d {
			case testimg.Clean, testimg.TornNewest, testimg.TornTail, testimg.MidLogCorruption, testimg.TornInFlight, testimg.DurableCorruption:
				got := [...]uint64{rep.MaxID, rep.LastFlushedID, rep.LastWritebackID, rep.SuperblockRecord,
					uint64(rep.ValidSegments), uint64(rep.NrDirtyBlocks)}
				want := [...]uint64{im.MaxID, im.LastFlushedID, im.LastWritebackID, im.SuperRecord,
					uint64(im.ValidSegments), uint64(im.NrDirtyBlocks)}
				if got != want {
					t.Errorf("%v seed %d: (max, flushed, lwb, record, valid, dirty) = %v, want %v", d, seed, got, want)
				}
			}
			switch d {
			case testimg.Clean:
				if rep.TornSegmentID != nil || len(rep.CorruptSegmentIDs) != 0 {
					t.Errorf("seed %d: clean image: torn %v corrupt %v", seed, rep.TornSegmentID, rep.CorruptSegmentIDs)
				}
			case testimg.TornNewest, testimg.TornTail, testimg.TornInFlight:
				if rep.TornSegmentID == nil || *rep.TornSegmentID != im.BadID || len(rep.CorruptSegmentIDs) != 0 {
					t.Errorf("%v seed %d: torn %v corrupt %v, want torn %d", d, seed, rep.TornSegmentID, rep.CorruptSegmentIDs, im.BadID)
				}
			case testimg.MidLogCorruption, testimg.DurableCorruption:
				if rep.TornSegmentID != nil || !slices.Equal(rep.CorruptSegmentIDs, []uint64{im.BadID}) {
					t.Errorf("%v seed %d: torn %v corrupt %v, want corrupt [%d]", d, seed, rep.TornSegmentID, rep.CorruptSegmentIDs, im.BadID)
				}
				if rep.NrLostDirtyBlocks == 0 {
					t.Errorf("%v seed %d: mid-log corruption loses no dirty block?", d, seed)
				}
				if d == testimg.DurableCorruption && !anyContains(rep.Problems, "records that every segment up to") {
					t.Errorf("seed %d: problems %q do not name the durable record", seed, rep.Problems)
				}
			case testimg.WrongSlot:
				if !anyContains(rep.Problems, "belongs in slot") {
					t.Errorf("seed %d: problems %q do not name the wrong slot", seed, rep.Problems)
				}
			case testimg.Unformatted, testimg.TruncatedSmall:
				if rep.Formatted || len(rep.Problems) != 1 {
					t.Errorf("%v seed %d: formatted %v problems %q", d, seed, rep.Formatted, rep.Problems)
				}
			}
		}
	}
}

func anyContains(ss []string, sub string) bool {
	return slices.ContainsFunc(ss, func(s string) bool { return strings.Contains(s, sub) })
}

// memBacking returns an in-memory backing device holding b.
func memBacking(t *testing.T, b []byte) *blockdev.Mem {
	t.Helper()
	m := blockdev.NewMem(int64(len(b)))
	if _, err := m.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Sync(); err != nil {
		t.Fatal(err)
	}
	return m
}

func readAll(t *testing.T, d blockdev.Device) []byte {
	t.Helper()
	b := make([]byte, d.Size())
	if _, err := d.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWritebackEqualsExpectedVolume(t *testing.T) {
	for _, d := range []testimg.Damage{testimg.Clean, testimg.TornNewest, testimg.TornTail} {
		for seed := uint64(1); seed <= 4; seed++ {
			im, dev, _ := fixture(t, baseConfig(seed, d))
			r, err := Check(dev, dev.Size(), Options{BackingSize: int64(len(im.Backing))})
			if err != nil {
				t.Fatal(err)
			}
			back := memBacking(t, im.Backing)
			// A dry run says what the writeback will do and writes nothing.
			cacheBefore, backBefore := readAll(t, dev), readAll(t, back)
			dry, err := Writeback(dev, back, r, WritebackOptions{DryRun: true})
			if err != nil {
				t.Fatalf("%v seed %d: dry run: %v", d, seed, err)
			}
			if !bytes.Equal(readAll(t, dev), cacheBefore) || !bytes.Equal(readAll(t, back), backBefore) {
				t.Fatalf("%v seed %d: the dry run wrote", d, seed)
			}
			res, err := Writeback(dev, back, r, WritebackOptions{})
			if err != nil {
				t.Fatalf("%v seed %d: %v", d, seed, err)
			}
			if dry.Sectors != res.Sectors || dry.Writes != res.Writes || dry.Blocks != res.Blocks || dry.Blocks == 0 || dry.RecordedID != 0 {
				t.Errorf("%v seed %d: dry run %+v, writeback %+v", d, seed, dry, res)
			}
			if !bytes.Equal(readAll(t, back.CrashClone()), im.Expected) {
				t.Fatalf("%v seed %d: durable backing differs from the expected volume", d, seed)
			}
			if res.Sectors != r.Report.NrDirtySectors || res.Writes == 0 || res.Writes > int(res.Sectors) || res.RecordedID != im.LastFlushedID {
				t.Errorf("%v seed %d: result %+v, dirty sectors %d", d, seed, res, r.Report.NrDirtySectors)
			}
			// The record is durable and the log is clean now.
			r2, err := Check(dev, dev.Size(), Options{})
			if err != nil {
				t.Fatal(err)
			}
			if r2.Report.NrDirtyBlocks != 0 || r2.Report.SuperblockRecord != im.LastFlushedID || r2.Report.ExitStatus != wantExit(d) {
				t.Errorf("%v seed %d: after writeback: %+v", d, seed, r2.Report)
			}
			res2, err := Writeback(dev, back, r2, WritebackOptions{})
			if err != nil || res2.Sectors != 0 {
				t.Errorf("%v seed %d: second writeback %+v, %v", d, seed, res2, err)
			}
		}
	}
}

func TestWritebackDamage(t *testing.T) {
	im, dev, _ := fixture(t, baseConfig(2, testimg.MidLogCorruption))
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	back := memBacking(t, im.Backing)
	if _, err := Writeback(dev, back, r, WritebackOptions{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("writeback of a damaged log: %v", err)
	}
	if !bytes.Equal(readAll(t, back), im.Backing) {
		t.Fatal("a refused writeback wrote the backing device")
	}
	if _, err := Writeback(dev, back, r, WritebackOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// The valid prefix is what the generator says a forced writeback yields.
	if !bytes.Equal(readAll(t, back), im.Expected) {
		t.Fatal("forced writeback differs from the valid prefix's volume")
	}

	_, udev, _ := fixture(t, baseConfig(2, testimg.Unformatted))
	ur, err := Check(udev, udev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Writeback(udev, back, ur, WritebackOptions{Force: true}); !errors.Is(err, ErrNotFormatted) {
		t.Fatalf("writeback of an unformatted device: %v", err)
	}
}

func TestWritebackBackingTooSmall(t *testing.T) {
	im, dev, _ := fixture(t, baseConfig(1, testimg.Clean))
	small := int64(len(im.Backing) / 2)
	r, err := Check(dev, dev.Size(), Options{BackingSize: small})
	if err != nil {
		t.Fatal(err)
	}
	if r.Report.ExitStatus != ExitDamaged || !anyContains(r.Report.Problems, "past the backing device's end") {
		t.Fatalf("metablocks past the backing end: exit %d problems %q", r.Report.ExitStatus, r.Report.Problems)
	}
	back := memBacking(t, im.Backing[:small])
	if _, err := Writeback(dev, back, r, WritebackOptions{}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("writeback past the end: %v", err)
	}
	res, err := Writeback(dev, back, r, WritebackOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped == 0 || !bytes.Equal(readAll(t, back), im.Expected[:small]) {
		t.Fatalf("forced writeback into a short backing device: %+v", res)
	}
}

// TestGapInRingWalk cuts a wrapped ring to half its size, a divisor: every
// id stays in its slot, only the jump in ids tells the lost segments.
func TestGapInRingWalk(t *testing.T) {
	cfg := baseConfig(1, testimg.Clean)
	cfg.NrSegments = 20
	cfg.Segments = 25 // slots 0-4: ids 21-25, 5-9: ids 6-10, 10-19: ids 11-20, cut away
	_, dev, path := fixture(t, cfg)
	dev.Close()
	if err := os.Truncate(path, layout.SuperblockSize+10*layout.SegmentSize); err != nil {
		t.Fatal(err)
	}
	dev, err := blockdev.OpenFile(path, blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Report.ExitStatus != ExitDamaged || !anyContains(r.Report.Problems, "missing from the ring walk") {
		t.Fatalf("exit %d problems %q", r.Report.ExitStatus, r.Report.Problems)
	}
}

// TestGapOfEmptySlots: the engine zeroes the headers of a discarded torn
// tail and continues after the largest id it saw, so the walk skips empty
// slots and its ids jump by less than the ring's length. That is sound.
func TestGapOfEmptySlots(t *testing.T) {
	cfg := baseConfig(1, testimg.Clean)
	cfg.NrSegments = 20
	cfg.Segments = 15 // ids 1..15 in slots 0..14
	_, dev, _ := fixture(t, cfg)
	zero := make([]byte, layout.HeaderSize)
	g, _ := layout.NewGeometry(dev.Size())
	for _, slot := range []uint64{10, 11, 12} { // ids 11..13
		if _, err := dev.WriteAt(zero, g.SegmentOffset(slot)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Report.ExitStatus != ExitOK || len(r.Report.Problems) != 0 || r.Report.LastFlushedID != 15 {
		t.Fatalf("exit %d last_flushed_id %d problems %q", r.Report.ExitStatus, r.Report.LastFlushedID, r.Report.Problems)
	}
}

func TestSuperRecordAboveNewest(t *testing.T) {
	im, dev, _ := fixture(t, baseConfig(3, testimg.Clean))
	var rec [8]byte
	binary.LittleEndian.PutUint64(rec[:], im.MaxID+5)
	if _, err := dev.WriteAt(rec[:], layout.SuperRecordOffset); err != nil {
		t.Fatal(err)
	}
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Report.ExitStatus != ExitDamaged || !anyContains(r.Report.Problems, "but the newest segment is") || len(r.Report.Problems) != 1 {
		t.Fatalf("exit %d problems %q", r.Report.ExitStatus, r.Report.Problems)
	}
	// The record is ignored for what is dirty: a forced writeback still
	// writes every block newer than the ring's own bound.
	if r.Report.NrDirtyBlocks < im.NrDirtyBlocks {
		t.Fatalf("record above the newest id hid dirty blocks: %d < %d", r.Report.NrDirtyBlocks, im.NrDirtyBlocks)
	}
	back := memBacking(t, im.Backing)
	if _, err := Writeback(dev, back, r, WritebackOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(t, back), im.Expected) {
		t.Fatal("forced writeback differs from the expected volume")
	}
}

func TestSegmentsAndDetail(t *testing.T) {
	im, dev, _ := fixture(t, baseConfig(4, testimg.TornTail))
	r, err := Check(dev, dev.Size(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.FillSegments()
	rows := r.Report.Segments
	if len(rows) != int(im.Config.NrSegments) {
		t.Fatalf("%d rows, want one per slot (%d)", len(rows), im.Config.NrSegments)
	}
	states := map[string]int{}
	dirty := 0
	for i, row := range rows {
		if row.Slot != uint64(i) || (row.ID-1)%im.Config.NrSegments != row.Slot {
			t.Errorf("row %d: %+v", i, row)
		}
		states[row.State]++
		if row.State == StateValid {
			dirty += row.DirtyBlocks
		}
	}
	if states[StateTorn] != 1 || states[StateDiscarded] != 2 || states[StateValid]+states[StateWrittenBack] != im.ValidSegments {
		t.Errorf("states %v", states)
	}
	if dirty < im.NrDirtyBlocks {
		t.Errorf("valid rows hold %d dirty metablocks, fewer than %d dirty blocks", dirty, im.NrDirtyBlocks)
	}
	d, err := r.Segment(im.LastFlushedID)
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != im.LastFlushedID || !d.ChecksumOK || len(d.Metablocks) != d.Length || d.State == StateTorn {
		t.Errorf("detail %+v", d)
	}
	for _, mb := range d.Metablocks {
		if !mb.Newest || mb.Sector%8 != 0 { // the newest valid segment's copies are all newest
			t.Errorf("metablock %+v", mb)
		}
	}
	if d, err := r.Segment(im.BadID); err != nil || d.ChecksumOK || d.State != StateTorn {
		t.Errorf("torn segment detail %+v, %v", d, err)
	}
	if _, err := r.Segment(im.MaxID + 1); !errors.Is(err, ErrNoSegment) {
		t.Errorf("missing segment: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{"0": 0, "4096": 4096, "1k": 1024, "1K": 1024, "2KiB": 2048, "3m": 3 << 20,
		"1G": 1 << 30, "1gb": 1 << 30, "2T": 2 << 40, "1p": 1 << 50, "8s": 4096, " 10M ": 10 << 20, "5b": 5}
	for in, want := range good {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "-1", "1x", "1ib", "1.5G", "99999999999999999999", "9000000P", "/dev/sdb"} {
		if _, err := ParseSize(in); !errors.Is(err, ErrBadSize) {
			t.Errorf("ParseSize(%q): %v", in, err)
		}
	}
}

// TestWritebackSmallWindows makes every round and read boundary of the
// writeback happen: windows of a few sectors and blocks, short sweeps.
func TestWritebackSmallWindows(t *testing.T) {
	defer func(s, b int, g, r int64) {
		wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead = s, b, g, r
	}(wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead)
	for i, w := range []struct {
		sectors, blocks int
		gap, read       int64
	}{{7, 3, 8 << 10, 16 << 10}, {64, 64, 0, 4096}, {1000, 5, 1 << 20, 1 << 20}} {
		wbWindowSectors, wbWindowBlocks, wbMaxGap, wbMaxRead = w.sectors, w.blocks, w.gap, w.read
		im, dev, _ := fixture(t, baseConfig(uint64(10+i), testimg.TornTail))
		r, err := Check(dev, dev.Size(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		back := memBacking(t, im.Backing)
		if _, err := Writeback(dev, back, r, WritebackOptions{}); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(readAll(t, back), im.Expected) {
			t.Fatalf("windows %+v: backing differs from the expected volume", w)
		}
	}
}
