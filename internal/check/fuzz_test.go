package check

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// FuzzCheck feeds arbitrary segment headers and superblock records to
// Check, Segment, FillSegments and a forced Writeback: none may panic, and
// the exit status must be one of the documented ones.
func FuzzCheck(f *testing.F) {
	// Seeds: the record, then segment headers, 4096 bytes each; data slots
	// stay zero, so a header's checksum can be made to match.
	seg := func(id uint64, sectors ...uint64) []byte {
		h := layout.SegmentHeader{ID: id, Length: uint8(len(sectors))}
		for i, s := range sectors {
			h.Metablocks[i] = layout.Metablock{Sector: s, DirtyBits: uint8(0xff >> (i % 8))}
		}
		img := make([]byte, layout.HeaderSize+layout.BlockSize*len(sectors))
		h.Encode(img)
		h.Checksum, _ = layout.SegmentChecksum(img, h.Length)
		h.Encode(img)
		return img[:layout.HeaderSize]
	}
	rec := func(id uint64) []byte { return binary.LittleEndian.AppendUint64(nil, id) }
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add(cat(rec(0), seg(1, 0, 8, 16), seg(2, 8)), uint8(2), true)
	f.Add(cat(rec(1), seg(5, 0, 8), seg(2, 8, 9), seg(3)), uint8(3), true)        // wrong slot, bad metablock
	f.Add(cat(rec(9), seg(1), seg(2, 1<<40), seg(3, 64), seg(4)), uint8(3), true) // record above, past the backing
	f.Add(make([]byte, 3*layout.HeaderSize+8), uint8(3), true)
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
		for slot := int64(0); slot < nrSeg && len(data) > 0; slot++ {
			n := copy(img[layout.SuperblockSize+slot*layout.SegmentSize:][:layout.HeaderSize], data)
			data = data[n:]
		}
		dev := sliceDev(img)
		r, err := Check(dev, size, Options{BackingSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		switch r.Report.ExitStatus {
		case ExitOK, ExitTorn, ExitDamaged:
		default:
			t.Fatalf("exit status %d", r.Report.ExitStatus)
		}
		if (r.Report.ExitStatus == ExitOK) != (len(r.Report.Problems) == 0) {
			t.Fatalf("exit %d with problems %q", r.Report.ExitStatus, r.Report.Problems)
		}
		r.FillSegments()
		for _, row := range r.Report.Segments {
			if _, err := r.Segment(row.ID); err != nil {
				t.Fatalf("segment %d listed but not shown: %v", row.ID, err)
			}
		}
		back := make(sliceDev, 1<<20)
		res, err := Writeback(dev, back, r, WritebackOptions{Force: true})
		if err == nil && res.Sectors+res.Skipped != r.Report.NrDirtySectors {
			t.Fatalf("wrote %d + skipped %d sectors of %d dirty", res.Sectors, res.Skipped, r.Report.NrDirtySectors)
		}
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

// sliceDev is a Device over a byte slice: cheap enough to fuzz with.
type sliceDev []byte

func (d sliceDev) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(d)) {
		return 0, io.EOF
	}
	n := copy(p, d[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (d sliceDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(d)) {
		return 0, blockdev.ErrOutOfRange
	}
	return copy(d[off:], p), nil
}

func (d sliceDev) Sync() error                     { return nil }
func (d sliceDev) Size() int64                     { return int64(len(d)) }
func (d sliceDev) Discard(off, length int64) error { return nil }
func (d sliceDev) Close() error                    { return nil }
