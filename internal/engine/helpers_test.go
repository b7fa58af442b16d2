package engine

import (
	"bytes"
	"log/slog"
	"os"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// cacheSize is the byte size of a cache device with n segments.
func cacheSize(n int) int64 { return layout.SuperblockSize + int64(n)*layout.SegmentSize }

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// openOn formats cache and opens a volume on backing and cache with the
// test's logger; the caller closes it. with, at most one, sets the rest
// of the Config.
func openOn(t testing.TB, backing, cache blockdev.Device, with ...Config) *Volume {
	t.Helper()
	if len(with) > 1 {
		t.Fatalf("openOn: %d Configs, want at most one", len(with))
	}
	if err := Format(cache); err != nil {
		t.Fatal(err)
	}
	var cfg Config
	if len(with) == 1 {
		cfg = with[0]
	}
	cfg.Backing, cfg.Cache = backing, cache
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	v, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

type rig struct {
	t       testing.TB
	cache   *blockdev.Mem
	backing *blockdev.Mem
	tun     vocab.Values
	noFUA   bool // hide the Mem's FUA writes: the engine writes, then syncs
	v       *Volume
}

// noFUADevice hides a device's WriteAtFUA from the engine.
type noFUADevice struct{ blockdev.Device }

// newRig formats an in-memory cache of nSeg segments in front of an
// in-memory backing device of backingBytes, and opens a volume.
func newRig(t testing.TB, nSeg int, backingBytes int64, tun vocab.Values) *rig {
	t.Helper()
	return newRigFUA(t, nSeg, backingBytes, tun, true)
}

// newRigFUA is newRig; with fua false the engine does not see that the
// cache device takes FUA writes.
func newRigFUA(t testing.TB, nSeg int, backingBytes int64, tun vocab.Values, fua bool) *rig {
	t.Helper()
	r := &rig{t: t, cache: blockdev.NewMem(cacheSize(nSeg)), backing: blockdev.NewMem(backingBytes), tun: tun, noFUA: !fua}
	if err := Format(r.cache); err != nil {
		t.Fatal(err)
	}
	r.open()
	t.Cleanup(func() {
		if r.v != nil {
			_ = r.v.Close()
		}
	})
	return r
}

func (r *rig) open() {
	r.t.Helper()
	var cache blockdev.Device = r.cache
	if r.noFUA {
		cache = noFUADevice{r.cache}
	}
	v, err := Open(Config{Backing: r.backing, Cache: cache, Tunables: r.tun, Logger: testLogger(r.t)})
	if err != nil {
		r.t.Fatal(err)
	}
	r.v = v
}

func (r *rig) close() {
	r.t.Helper()
	if err := r.v.Close(); err != nil {
		r.t.Fatal(err)
	}
	r.v = nil
}

// crash drops the volume without closing it (its goroutines are stopped by
// closing it against throw-away devices) and replaces both devices by what
// was durable.
func (r *rig) crash(torn func(*blockdev.Mem) *blockdev.Mem) {
	r.t.Helper()
	var c, b *blockdev.Mem
	if torn != nil {
		c, b = torn(r.cache), torn(r.backing)
	} else {
		c, b = r.cache.CrashClone(), r.backing.CrashClone()
	}
	// Stop the old volume: its later writes land on the old devices, which
	// nobody looks at any more.
	_ = r.v.Close()
	r.cache, r.backing = c, b
	r.v = nil
}

func (r *rig) write(off int64, p []byte) {
	r.t.Helper()
	if err := r.v.WriteAt(p, off, false); err != nil {
		r.t.Fatalf("write %d bytes at %d: %v", len(p), off, err)
	}
}

func (r *rig) read(off int64, n int) []byte {
	r.t.Helper()
	p := make([]byte, n)
	if err := r.v.ReadAt(p, off); err != nil {
		r.t.Fatalf("read %d bytes at %d: %v", n, off, err)
	}
	return p
}

func (r *rig) flush() {
	r.t.Helper()
	if err := r.v.Flush(); err != nil {
		r.t.Fatal(err)
	}
}

func fill(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
