package main

import (
	"bytes"
	"errors"
	"testing"
)

func TestTagRoundTrip(t *testing.T) {
	b := make([]byte, sectorSize)
	for _, tc := range []struct{ sector, seq uint64 }{{0, 1}, {7, 12345}, {1 << 40, 1<<63 + 5}} {
		putTag(b, tc.sector, tc.seq)
		got, err := readTag(b, tc.sector)
		if err != nil || got != tc.seq {
			t.Fatalf("readTag(putTag(%d, %d)) = %d, %v", tc.sector, tc.seq, got, err)
		}
	}
}

func TestTagZeroIsSeqZero(t *testing.T) {
	seq, err := readTag(make([]byte, sectorSize), 3)
	if err != nil || seq != 0 {
		t.Fatalf("zero sector: %d, %v", seq, err)
	}
}

func TestTagGarbage(t *testing.T) {
	b := make([]byte, sectorSize)
	putTag(b, 9, 77)
	cases := map[string]func([]byte) uint64{
		"torn":        func(b []byte) uint64 { b[300] ^= 1; return 9 },
		"misdirected": func(b []byte) uint64 { return 10 },
		"stray byte":  func(b []byte) uint64 { clear(b); b[511] = 1; return 9 },
		"short":       func(b []byte) uint64 { return 9 },
	}
	for name, corrupt := range cases {
		c := bytes.Clone(b)
		sector := corrupt(c)
		if name == "short" {
			c = c[:100]
		}
		if _, err := readTag(c, sector); !errors.Is(err, errGarbage) {
			t.Errorf("%s: err = %v, want errGarbage", name, err)
		}
	}
}

func TestTagsDiffer(t *testing.T) {
	a, b := make([]byte, sectorSize), make([]byte, sectorSize)
	putTag(a, 1, 2)
	putTag(b, 1, 3)
	if bytes.Equal(a[24:crcOffset], b[24:crcOffset]) {
		t.Fatal("two writes to one sector have the same fill")
	}
}

func FuzzReadTag(f *testing.F) {
	b := make([]byte, sectorSize)
	putTag(b, 5, 6)
	f.Add(b, uint64(5))
	f.Add(make([]byte, sectorSize), uint64(0))
	f.Add([]byte("WBTORTUR"), uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, sector uint64) {
		seq, err := readTag(b, sector)
		if err != nil {
			if !errors.Is(err, errGarbage) {
				t.Fatalf("error not marked errGarbage: %v", err)
			}
			return
		}
		if seq != 0 {
			// A valid tag must be exactly what putTag writes.
			want := make([]byte, sectorSize)
			putTag(want, sector, seq)
			if !bytes.Equal(want, b[:sectorSize]) {
				t.Fatalf("accepted a tag putTag would not write")
			}
		}
	})
}
