package engine

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// TestOnFiles runs the engine on O_DIRECT files: partial-sector writeback,
// unaligned requests and replay through the real backend.
func TestOnFiles(t *testing.T) {
	dir := t.TempDir()
	open := func(name string, size int64) *blockdev.File { return openTestFile(t, filepath.Join(dir, name), size) }
	cache, backing := open("cache", cacheSize(3)), open("backing", 4<<20)
	v := openOn(t, backing, cache)
	model := make([]byte, 4<<20)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := range 3000 {
		off := rng.Int64N(4<<20 - 10000)
		n := 1 + rng.IntN(9000)
		if i%3 == 0 {
			off &^= 511
			n = (n + 511) &^ 511
		}
		p := fill(n, byte(i))
		if err := v.WriteAt(p, off, i%97 == 0); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := v.DropCaches(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(model))
	if _, err := backing.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
		t.Fatal("backing file differs from the model after drop_caches")
	}
	for i := range 500 {
		p := fill(512*(1+i%8), byte(i+50))
		off := int64(rng.IntN(8000)) * 512
		if err := v.WriteAt(p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	// A second engine on the same files is refused while the first holds
	// them; after closing them, a reopen replays the log.
	if _, err := blockdev.OpenFile(filepath.Join(dir, "cache"), blockdev.FileOptions{Direct: true, Exclusive: true}); err == nil {
		t.Fatal("second exclusive open of the cache file succeeded")
	}
	cache.Close()
	backing.Close()
	cache, backing = open("cache", 0), open("backing", 0)
	defer cache.Close()
	defer backing.Close()
	v, err := Open(Config{Backing: backing, Cache: cache, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
		t.Fatalf("volume differs from the model after replay (err %v)", err)
	}
}

// openTestFile opens path as an O_DIRECT, exclusive device, made first as
// a sparse file of size bytes if it does not exist. The caller closes it.
func openTestFile(t *testing.T, path string, size int64) *blockdev.File {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if err := os.WriteFile(path, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(path, size); err != nil {
			t.Fatal(err)
		}
	}
	d, err := blockdev.OpenFile(path, blockdev.FileOptions{Direct: true, Exclusive: true, AsyncReads: true})
	if err != nil {
		t.Fatal(err)
	}
	return d
}
