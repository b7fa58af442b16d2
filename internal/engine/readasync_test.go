package engine

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/blockdev/uring"
	"github.com/writeboost/writeboost/internal/vocab"
)

// TestReadAtAsyncOnFiles reads through ReadAtAsync on O_DIRECT files with
// io_uring and native AIO, the NBD server's read path: hits in the RAM buffer, in sealed
// segments on the cache device (the asynchronous path), partial blocks
// and misses (a goroutine), many at once with one Unplug per burst, all
// compared with a model.
func TestReadAtAsyncOnFiles(t *testing.T) {
	dir := t.TempDir()
	open := func(name string, size int64) *blockdev.File {
		d := openTestFile(t, filepath.Join(dir, name), size)
		t.Cleanup(func() { d.Close() })
		return d
	}
	const size = 8 << 20
	cache, backing := open("cache", cacheSize(8)), open("backing", size)
	if allowed, _ := uring.KernelAllows(); allowed {
		want := "io_uring"
		if cache.Direct() {
			want = "io_uring+aio" // asynchronous O_DIRECT reads through native AIO
		}
		if cache.IOEngine() != want {
			t.Fatalf("io_uring is enabled in this kernel but the cache file uses %s, want %s", cache.IOEngine(), want)
		}
	}
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(3, 9))
	for i := range model {
		model[i] = byte(rng.IntN(256))
	}
	if _, err := backing.WriteAt(model, 0); err != nil {
		t.Fatal(err)
	}
	v := openOn(t, backing, cache)
	defer v.Close()
	// Sealed segments (about 3 MiB of 4 KiB blocks) and a partial open
	// RAM buffer, with partial-block writes in both.
	for i := range 900 {
		off := rng.Int64N(size/4096) * 4096
		n := 4096
		if i%7 == 0 {
			off += int64(rng.IntN(8)) * 512
			n = 512 * (1 + rng.IntN(7))
		}
		p := fill(n, byte(i))
		if err := v.WriteAt(p, off, false); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	for burst := range 40 {
		var wg sync.WaitGroup
		errs := make(chan error, 32)
		for range 32 {
			off := rng.Int64N(size/512-64) * 512
			n := 512 * (1 + rng.IntN(64))
			if burst%2 == 0 {
				off &^= 4095
				n = 4096 * (1 + rng.IntN(4))
			}
			got := make([]byte, n)
			wg.Add(1)
			v.ReadAtAsync(got, off, func(err error) {
				defer wg.Done()
				if err == nil && !bytes.Equal(got, model[off:off+int64(n)]) {
					err = fmt.Errorf("%d bytes at %d differ from the model", n, off)
				}
				if err != nil {
					errs <- err
				}
			})
		}
		v.Unplug()
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	// The bursts must have exercised each source.
	st := v.Status()
	for _, c := range []struct {
		name           string
		hit, buf, full bool
	}{{"full hits on the cache device", true, false, true}, {"full hits in the RAM buffer", true, true, true}, {"misses", false, false, true}} {
		if st.Stat[vocab.StatIndex(false, c.hit, c.buf, c.full)] == 0 {
			t.Errorf("no reads counted as %s", c.name)
		}
	}
}
