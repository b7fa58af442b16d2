package engine

import (
	"encoding/binary"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
)

// FuzzOpen corrupts a small cache device's log (headers, metablocks, data,
// superblock record) and opens it: Open must refuse or succeed, never
// panic, and an opened volume must read and close cleanly.
func FuzzOpen(f *testing.F) {
	// The base image: 3 segments holding full and partial copies.
	base := blockdev.NewMem(cacheSize(3))
	v := openOn(f, blockdev.NewMem(256<<10), base)
	for i := range 200 {
		p := fill(512*(1+i%8), byte(i))
		if err := v.WriteAt(p, int64(i*3%500)*512, i%40 == 0); err != nil {
			f.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		f.Fatal(err)
	}
	img := make([]byte, base.Size())
	if _, err := base.ReadAt(img, 0); err != nil {
		f.Fatal(err)
	}
	seg := func(slot, off int) uint32 { return uint32(layout.SuperblockSize + slot*layout.SegmentSize + off) }
	f.Add(seg(0, 0), []byte{0xFF})                        // id
	f.Add(seg(1, 12), []byte{200})                        // length > 127
	f.Add(seg(0, 512), []byte{3, 0, 0, 0, 0, 0, 0, 1})    // metablock sector
	f.Add(seg(2, 5000), []byte{1, 2, 3})                  // data
	f.Add(uint32(layout.SuperRecordOffset), []byte{0xFF}) // record
	f.Add(seg(1, 0), binary.LittleEndian.AppendUint64(nil, 7))
	f.Fuzz(func(t *testing.T, off uint32, patch []byte) {
		cache := blockdev.NewMem(int64(len(img)))
		if _, err := cache.WriteAt(img, 0); err != nil {
			t.Fatal(err)
		}
		if o := int64(off) % int64(len(img)); len(patch) > 0 {
			n := min(int64(len(patch)), int64(len(img))-o)
			if _, err := cache.WriteAt(patch[:n], o); err != nil {
				t.Fatal(err)
			}
		}
		backing := blockdev.NewMem(256 << 10)
		v, err := Open(Config{Backing: backing, Cache: cache})
		if err != nil {
			return
		}
		p := make([]byte, 256<<10)
		_ = v.ReadAt(p, 0)
		_ = v.WriteAt(p[:4096], 0, true)
		if err := v.Close(); err != nil {
			t.Fatalf("close after a successful open: %v", err)
		}
	})
}
