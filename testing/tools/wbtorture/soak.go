package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/writeboost/writeboost/testing/tools/nbdclient"
)

// soakOpts configure a soak run.
type soakOpts struct {
	uri      string
	conns    int
	depth    int
	duration time.Duration
	sectors  uint64 // the region, split evenly between the connections
	seed     uint64
}

// Expected content of a soak sector: a seq (0 = zeroes) or unknown after
// a TRIM (the NBD spec leaves trimmed data unspecified).
const soakUnknown = ^uint64(0)

// soakRegion is one connection's share of the volume and its model. Only
// this connection touches it, so the expected content is exact.
type soakRegion struct {
	mu     sync.Mutex // guards busy, want
	start  uint64     // first sector
	busy   []bool
	want   []uint64
	seq    *atomic.Uint64
	verify atomic.Uint64 // bytes compared
}

func (r *soakRegion) claim(s uint64, n uint32) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := s; i < s+uint64(n); i++ {
		if r.busy[i] {
			return false
		}
	}
	for i := s; i < s+uint64(n); i++ {
		r.busy[i] = true
	}
	return true
}

func (r *soakRegion) set(s uint64, n uint32, v uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := s; i < s+uint64(n); i++ {
		r.want[i] = v
		r.busy[i] = false
	}
}

func (r *soakRegion) check(b []byte, s uint64, n uint32) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var compared uint64
	for i := uint64(0); i < uint64(n); i++ {
		want := r.want[s+i]
		if want == soakUnknown {
			continue
		}
		abs := r.start + s + i
		got, err := readTag(b[i*sectorSize:], abs)
		if err != nil {
			return fmt.Errorf("sector %d: %w (want seq %d)", abs, err, want)
		}
		if got != want {
			return fmt.Errorf("sector %d holds seq %d, want %d", abs, got, want)
		}
		compared += sectorSize
	}
	r.verify.Add(compared)
	return nil
}

// runSoak does mixed verified I/O (writes of every shape, reads checked
// against the model, WRITE_ZEROES, TRIM, FLUSH, FUA) on several
// connections for the duration, then reads every region back. It returns
// the bytes verified.
func runSoak(ctx context.Context, o soakOpts) (uint64, error) {
	per := o.sectors / uint64(o.conns) / 8 * 8
	if per < 64 {
		return 0, fmt.Errorf("region of %d sectors is too small for %d connections", o.sectors, o.conns)
	}
	var seq atomic.Uint64
	regions := make([]*soakRegion, o.conns)
	clients := make([]*nbdclient.Client, o.conns)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range regions {
		c, err := nbdclient.Dial(ctx, o.uri)
		if err != nil {
			return 0, err
		}
		clients[i] = c
		if c.Size() < o.sectors*sectorSize {
			return 0, fmt.Errorf("export is %d bytes, soak region is %d", c.Size(), o.sectors*sectorSize)
		}
		regions[i] = &soakRegion{start: uint64(i) * per, busy: make([]bool, per), want: make([]uint64, per), seq: &seq}
		// Start from a known state: zero the region.
		if err := c.WriteZeroes(regions[i].start*sectorSize, uint32(per*sectorSize), false); err != nil {
			return 0, fmt.Errorf("zero region %d: %w", i, err)
		}
	}
	deadline := time.Now().Add(o.duration)
	g, gctx := errgroup.WithContext(ctx)
	for ci := range clients {
		for w := 0; w < o.depth; w++ {
			g.Go(func() error {
				rng := rand.New(rand.NewPCG(o.seed, uint64(ci*o.depth+w+1)))
				buf := make([]byte, 64*sectorSize)
				for time.Now().Before(deadline) && gctx.Err() == nil {
					if err := soakStep(clients[ci], regions[ci], rng, buf); err != nil {
						return fmt.Errorf("connection %d: %w", ci, err)
					}
				}
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return 0, err
	}
	// Final pass: every sector of every region, as the model says.
	var total uint64
	for ci, r := range regions {
		b := make([]byte, 1<<20)
		for s := uint64(0); s < per; s += uint64(len(b) / sectorSize) {
			n := min(uint64(len(b)/sectorSize), per-s)
			if err := clients[ci].ReadAt(b[:n*sectorSize], (r.start+s)*sectorSize); err != nil {
				return 0, fmt.Errorf("final read: %w", err)
			}
			if err := r.check(b, s, uint32(n)); err != nil {
				return 0, fmt.Errorf("final read: %w", err)
			}
		}
		total += r.verify.Load()
	}
	return total, nil
}

func soakStep(c *nbdclient.Client, r *soakRegion, rng *rand.Rand, buf []byte) error {
	per := uint64(len(r.want))
	var s uint64
	var n uint32
	if rng.IntN(2) == 0 {
		s, n = rng.Uint64N(per/8)*8, uint32(8*(1+rng.IntN(8)))
	} else {
		s, n = rng.Uint64N(per), uint32(1+rng.IntN(24))
	}
	if s+uint64(n) > per || !r.claim(s, n) {
		return nil
	}
	off := (r.start + s) * sectorSize
	b := buf[:n*sectorSize]
	switch k := rng.IntN(100); {
	case k < 45:
		seq := r.seq.Add(1)
		for i := uint64(0); i < uint64(n); i++ {
			putTag(b[i*sectorSize:], r.start+s+i, seq)
		}
		if err := c.WriteAt(b, off, rng.IntN(10) == 0); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		r.set(s, n, seq)
	case k < 85:
		err := c.ReadAt(b, off)
		if err == nil {
			err = r.check(b, s, n)
		}
		r.mu.Lock()
		for i := s; i < s+uint64(n); i++ {
			r.busy[i] = false
		}
		r.mu.Unlock()
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
	case k < 92:
		if err := c.WriteZeroes(off, n*sectorSize, rng.IntN(2) == 0); err != nil {
			return fmt.Errorf("write zeroes: %w", err)
		}
		r.set(s, n, 0)
	case k < 95:
		if err := c.Trim(off, n*sectorSize); err != nil {
			return fmt.Errorf("trim: %w", err)
		}
		r.set(s, n, soakUnknown)
	default:
		r.mu.Lock()
		for i := s; i < s+uint64(n); i++ {
			r.busy[i] = false
		}
		r.mu.Unlock()
		if err := c.Flush(); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
	}
	return nil
}
