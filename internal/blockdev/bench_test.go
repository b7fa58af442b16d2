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

// BenchmarkFileFlush is what a FLUSH costs the cache device, one at a
// time: a 4 KiB write followed by Sync (the reference of the bench's
// physical/write-fdatasync-4k) and a FUA write of a 32-block segment (what
// a FLUSH after 32 writes sends), with and without the ring. Sync and
// WriteAtFUA bypass the ring (file.go, fua.go); ringsync measures the
// ring's own fdatasync for comparison. The file is laid out first: writes
// into holes add the file system's allocation to every figure.
func BenchmarkFileFlush(b *testing.B) {
	for _, eng := range []IOEngine{IOUring, IOBlocking} {
		path := makeFile(b, directDir(b), 16<<20)
		d, err := OpenFile(path, FileOptions{Direct: true, IO: eng, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Skip(err)
		}
		p := AlignedBuffer(33 * 4096)
		for off := int64(0); off < d.Size(); off += int64(len(p)) {
			if _, err := d.WriteAt(p[:min(int64(len(p)), d.Size()-off)], off); err != nil {
				b.Fatal(err)
			}
		}
		if err := d.Sync(); err != nil {
			b.Fatal(err)
		}
		off := func(i int) int64 { return int64(i%100) * int64(len(p)) }
		b.Run(d.IOEngine()+"/write4k+sync", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := d.WriteAt(p[:4096], off(i)); err != nil {
					b.Fatal(err)
				}
				if err := d.Sync(); err != nil {
					b.Fatal(err)
				}
			}
		})
		if d.ring != nil {
			b.Run(d.IOEngine()+"/write4k+ringsync", func(b *testing.B) {
				for i := 0; b.Loop(); i++ {
					if _, err := d.WriteAt(p[:4096], off(i)); err != nil {
						b.Fatal(err)
					}
					if err := ringErr(d.ring.Fdatasync(d.fd)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
		b.Run(d.IOEngine()+"/fua132k", func(b *testing.B) {
			for i := 0; b.Loop(); i++ {
				if _, err := d.WriteAtFUA(p, off(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
		if err := d.Close(); err != nil {
			b.Fatal(err)
		}
	}
}
