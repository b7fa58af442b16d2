package blockdev

import (
	"log/slog"
	"testing"
)

// BenchmarkMemWrite4K is the engine's cost floor for tests on Mem.
func BenchmarkMemWrite4K(b *testing.B) {
	m := NewMem(64 << 20)
	p := AlignedBuffer(4096)
	b.SetBytes(4096)
	for i := 0; b.Loop(); i++ {
		if _, err := m.WriteAt(p, int64(i%16384)*4096); err != nil {
			b.Fatal(err)
		}
		if i%1024 == 1023 {
			_ = m.Sync()
		}
	}
}

// BenchmarkFileSegmentWrite writes 512 KiB segments with O_DIRECT, the
// flusher's pattern on the cache device.
func BenchmarkFileSegmentWrite(b *testing.B) {
	for _, direct := range []bool{true, false} {
		name := "buffered"
		if direct {
			name = "direct"
		}
		b.Run(name, func(b *testing.B) {
			path := makeFile(b, directDir(b), 64<<20)
			d, err := OpenFile(path, FileOptions{Direct: direct, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			defer d.Close()
			p := AlignedBuffer(512 << 10)
			b.SetBytes(int64(len(p)))
			for i := 0; b.Loop(); i++ {
				if _, err := d.WriteAt(p, int64(i%128)*int64(len(p))); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
