package check

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// FuzzCheck feeds arbitrary segment headers and superblock records to
// Check, Segment, FillSegments and a forced Writeback: none may panic, and
// the exit status must be one of the documented ones.
func FuzzCheck(f *testing.F) {
	hdr := make([]byte, 3*layout.HeaderSize+8)
	f.Add(hdr, uint8(3), true)
	binary.LittleEndian.PutUint64(hdr[8:], 1)
	binary.LittleEndian.PutUint64(hdr[8+layout.HeaderSize:], 2)
	hdr[8+12] = 127
	f.Add(hdr, uint8(3), true)
	f.Add(bytes.Repeat([]byte{0xff}, 200), uint8(1), true)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0}, uint8(0), false)
	f.Fuzz(func(t *testing.T, data []byte, nr uint8, magic bool) {
		nrSeg := int64(nr%4) + 1
		size := layout.SuperblockSize + nrSeg*layout.SegmentSize + int64(len(data)%7)*layout.SectorSize
		img := make([]byte, size)
		if magic {
			layout.EncodeMagic(img)
		}
		if len(data) >= 8 {
			copy(img[layout.SuperRecordOffset:layout.SuperRecordOffset+8], data[:8])
			data = data[8:]
		}
		// The rest of data is spread over the segments: headers first.
		for slot := int64(0); slot < nrSeg && len(data) > 0; slot++ {
			n := copy(img[layout.SuperblockSize+slot*layout.SegmentSize:][:layout.SegmentSize], data)
			data = data[n:]
		}
		dev := blockdev.NewMem(size)
		dev.WriteAt(img, 0)
		r, err := Check(dev, size, Options{BackingSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		switch r.Report.ExitStatus {
		case ExitOK, ExitTorn, ExitDamaged:
		default:
			t.Fatalf("exit status %d", r.Report.ExitStatus)
		}
		r.FillSegments()
		for _, row := range r.Report.Segments {
			r.Segment(row.ID)
		}
		back := blockdev.NewMem(1 << 20)
		Writeback(dev, back, r, WritebackOptions{Force: true})
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1G", "4096", "512MiB", "8s", "", "x", "99999999999999999999P"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
	})
}
