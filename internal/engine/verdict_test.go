package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/testimg"
)

// verdict is what the engine and wb-check say of one cache image.
type verdict struct {
	opens    bool  // engine.Open succeeded
	openErr  error // why not
	exit     int   // wb-check's exit status
	problems []string
}

// agree: the engine opens exactly the logs wb-check calls consistent (0)
// or torn-tail only (1); everything wb-check calls damaged (4) it refuses.
func (v verdict) agree() bool {
	return v.opens == (v.exit == check.ExitOK || v.exit == check.ExitTorn)
}

func (v verdict) String() string {
	return fmt.Sprintf("engine opens %v (%v), wb-check exit %d %q", v.opens, v.openErr, v.exit, v.problems)
}

// judge runs wb-check's Check and engine.Open on two copies of img, with a
// backing device of backingBytes.
func judge(t testing.TB, img []byte, backingBytes int64) verdict {
	t.Helper()
	var v verdict
	dev := blockdev.NewMem(int64(len(img)))
	if _, err := dev.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	r, err := check.Check(dev, dev.Size(), check.Options{BackingSize: backingBytes})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	v.exit, v.problems = r.Report.ExitStatus, r.Report.Problems
	cache := blockdev.NewMem(int64(len(img)))
	if _, err := cache.WriteAt(img, 0); err != nil {
		t.Fatal(err)
	}
	vol, err := Open(Config{Backing: blockdev.NewMem(backingBytes), Cache: cache})
	if err == nil {
		v.opens = true
		if err := vol.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		return v
	}
	v.openErr = err
	if !errors.Is(err, ErrDamaged) && !errors.Is(err, ErrNotFormatted) && !errors.Is(err, layout.ErrTooSmall) {
		t.Fatalf("engine refused with an error that is no verdict: %v", err)
	}
	return v
}

// cleanStopImage is a log the engine wrote and closed cleanly: a few
// segments, the newest a partial flush, and a clean-stop record.
func cleanStopImage(t testing.TB, nSeg int) []byte {
	t.Helper()
	cache := blockdev.NewMem(cacheSize(nSeg))
	v := openOn(t, blockdev.NewMem(1<<20), cache)
	for i := range 300 {
		if err := v.WriteAt(fill(4096, byte(i)), int64(i%200)*4096, i%100 == 99); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	img := make([]byte, cache.Size())
	if _, err := cache.ReadAt(img, 0); err != nil {
		t.Fatal(err)
	}
	return img
}

// newestSlot returns the ring slot and id of the newest segment of img.
func newestSlot(img []byte, g layout.Geometry) (slot, id uint64) {
	for s := range g.NrSegments {
		if h := layout.HeaderID(img[g.SegmentOffset(s):]); h > id {
			slot, id = s, h
		}
	}
	return slot, id
}

// TestVerdictsAgree: every kind of damage the test image generator makes,
// and the ones only the engine's own records make possible, gets the same
// verdict from engine.Open and from wb-check.
func TestVerdictsAgree(t *testing.T) {
	type tc struct {
		name    string
		img     []byte
		backing int64
		refuse  bool // the expected verdict: refused (damage)
	}
	var cases []tc
	dir := t.TempDir()
	for _, d := range testimg.Damages() {
		cfg := testimg.Config{Seed: 3, NrSegments: 20, BackingBlocks: 600, Segments: 45, Damage: d}
		path := filepath.Join(dir, d.String())
		im, err := testimg.Write(path, cfg)
		if err != nil {
			t.Fatal(err)
		}
		img, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		refuse := d != testimg.Clean && d != testimg.TornNewest && d != testimg.TornTail && d != testimg.TornInFlight
		cases = append(cases, tc{"testimg/" + d.String(), img, int64(len(im.Backing)), refuse})
	}
	// A ring cut to half its size: ids jump by a ring's length.
	{
		im, err := testimg.Write(filepath.Join(dir, "gap"), testimg.Config{Seed: 1, NrSegments: 20, BackingBlocks: 600, Segments: 25})
		if err != nil {
			t.Fatal(err)
		}
		img, err := os.ReadFile(filepath.Join(dir, "gap"))
		if err != nil {
			t.Fatal(err)
		}
		cases = append(cases, tc{"id jump of a ring's length", img[:layout.SuperblockSize+10*layout.SegmentSize], int64(len(im.Backing)), true})
	}
	base := cleanStopImage(t, 8)
	g, err := layout.NewGeometry(int64(len(base)))
	if err != nil {
		t.Fatal(err)
	}
	slot, newest := newestSlot(base, g)
	mod := func(name string, refuse bool, f func(img []byte)) {
		img := append([]byte(nil), base...)
		f(img)
		cases = append(cases, tc{name, img, 1 << 20, refuse})
	}
	mod("clean stop", false, func([]byte) {})
	mod("clean stop, one byte flipped in the newest segment's data", true, func(img []byte) {
		img[g.DataOffset(slot, 0)+100] ^= 1
	})
	mod("clean stop, the newest segment's header zeroed", true, func(img []byte) {
		clear(img[g.SegmentOffset(slot) : g.SegmentOffset(slot)+layout.HeaderSize])
	})
	mod("no clean stop, one byte flipped in the newest segment's data", false, func(img []byte) {
		clear(img[layout.CleanStopOffset : layout.CleanStopOffset+layout.SectorSize])
		img[g.DataOffset(slot, 0)+100] ^= 1
	})
	mod("clean-stop record unreadable, newest segment torn", false, func(img []byte) {
		img[layout.CleanStopOffset+9] ^= 1
		img[g.DataOffset(slot, 0)+100] ^= 1
	})
	mod("superblock record above the newest id", true, func(img []byte) {
		binary.LittleEndian.PutUint64(img[layout.SuperRecordOffset:], newest+3)
	})
	mod("segment id beyond any writer", true, func(img []byte) {
		binary.LittleEndian.PutUint64(img[g.SegmentOffset(slot):], 1<<62+uint64(slot)+1)
	})
	mod("metablock past the backing device", true, func(img []byte) {
		// Recompute the checksum so only the sector is wrong.
		off := g.SegmentOffset(slot)
		binary.LittleEndian.PutUint64(img[off+layout.MetablocksOffset:], 1<<40)
		seg := img[off : off+layout.SegmentSize]
		sum, _ := layout.SegmentChecksum(seg, seg[12])
		binary.LittleEndian.PutUint32(seg[8:], sum)
	})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := judge(t, c.img, c.backing)
			if !v.agree() {
				t.Fatalf("verdicts differ: %v", v)
			}
			if v.opens == c.refuse {
				t.Fatalf("want refused=%v: %v", c.refuse, v)
			}
			// Each problem once.
			seen := map[string]bool{}
			for _, p := range v.problems {
				if seen[p] {
					t.Fatalf("problem reported twice: %q", p)
				}
				seen[p] = true
			}
		})
	}
}

// FuzzVerdict flips bytes of a cleanly stopped log and of the same log
// after a crash (no clean-stop record): engine.Open and wb-check must
// agree on every result.
func FuzzVerdict(f *testing.F) {
	base := cleanStopImage(f, 4)
	g, err := layout.NewGeometry(int64(len(base)))
	if err != nil {
		f.Fatal(err)
	}
	slot, _ := newestSlot(base, g)
	f.Add(uint32(g.DataOffset(slot, 3)), byte(1), false)
	f.Add(uint32(g.SegmentOffset(slot)+8), byte(0x80), true)
	f.Add(uint32(layout.SuperRecordOffset), byte(9), false)
	f.Add(uint32(layout.CleanStopOffset+8), byte(1), false)
	f.Add(uint32(g.SegmentOffset(0)), byte(2), true)
	f.Fuzz(func(t *testing.T, off uint32, x byte, crashed bool) {
		img := append([]byte(nil), base...)
		if crashed {
			clear(img[layout.CleanStopOffset : layout.CleanStopOffset+layout.SectorSize])
		}
		o := int(off) % len(img)
		img[o] ^= x
		if v := judge(t, img, 1<<20); !v.agree() {
			t.Fatalf("byte %d ^= %#x (crashed %v): verdicts differ: %v", o, x, crashed, v)
		}
	})
}
