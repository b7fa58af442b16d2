package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/writeboost/writeboost/testing/tools/nbdclient"
)

// writeOpts configure one write run.
type writeOpts struct {
	uri       string
	conns     int
	depth     int
	duration  time.Duration  // run time when nothing is killed
	killPID   int            // signal this process after a random time in [killMin, killMax]
	killSig   syscall.Signal // SIGKILL (a crash) or SIGTERM (a clean stop under load)
	killMin   time.Duration
	killMax   time.Duration
	seed      uint64
	flushPct  int // share of operations that are FLUSH, in percent
	readPct   int // share that are verified reads of idle sectors
	fuaPct    int // share of writes sent with FUA
	maxBlocks int // largest write, in 4 KiB blocks
}

// writeStats are counted by the workers.
type writeStats struct {
	writes, fua, flushes, reads, sectorsRead atomic.Uint64
	// maxWait is the longest a write or flush took, in nanoseconds: how
	// long a writer was blocked. Requests still waiting when the engine is
	// killed count with their age at the kill.
	maxWait  atomic.Int64
	inflight sync.Map // *time.Time (start of a write or flush) -> struct{}
}

// begin registers a write or flush in flight; the returned func ends it
// and notes how long it took.
func (s *writeStats) begin() func() {
	t0 := time.Now()
	s.inflight.Store(&t0, struct{}{})
	return func() {
		s.inflight.Delete(&t0)
		s.waited(time.Since(t0))
	}
}

// oldestInflight notes the age of the oldest request in flight, as a wait.
func (s *writeStats) oldestInflight() {
	s.inflight.Range(func(k, _ any) bool {
		s.waited(time.Since(*k.(*time.Time)))
		return true
	})
}

// waited notes how long one acknowledged request took.
func (s *writeStats) waited(d time.Duration) {
	for {
		old := s.maxWait.Load()
		if int64(d) <= old || s.maxWait.CompareAndSwap(old, int64(d)) {
			return
		}
	}
}

// runWrite writes tagged sectors with opts.conns connections of opts.depth
// workers each until the engine is killed (or the duration ends, then it
// flushes and disconnects cleanly). A wrong read or an error reply other
// than a dead connection fails the run.
func runWrite(ctx context.Context, st *State, o writeOpts) (*writeStats, error) {
	m := newModel(st)
	var stats writeStats
	var killed atomic.Bool
	clients := make([]*nbdclient.Client, o.conns)
	for i := range clients {
		c, err := nbdclient.Dial(ctx, o.uri)
		if err != nil {
			for _, c := range clients[:i] {
				c.Close()
			}
			return nil, err
		}
		if c.Size() < st.Sectors*sectorSize {
			c.Close()
			return nil, fmt.Errorf("export is %d bytes, the state covers %d", c.Size(), st.Sectors*sectorSize)
		}
		clients[i] = c
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}

	// The killer: SIGKILL at a random point while requests are in flight.
	stop := make(chan struct{})
	var killerWG sync.WaitGroup
	killerWG.Add(1)
	go func() {
		defer killerWG.Done()
		rng := rand.New(rand.NewPCG(o.seed, 0x6b696c6c))
		d := o.duration
		if o.killPID > 0 {
			d = o.killMin
			if o.killMax > o.killMin {
				d += time.Duration(rng.Int64N(int64(o.killMax - o.killMin)))
			}
		}
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return
		}
		if o.killPID > 0 {
			stats.oldestInflight() // a writer blocked at the kill counts too
			killed.Store(true)
			if err := syscall.Kill(o.killPID, o.killSig); err != nil {
				fail(fmt.Errorf("kill engine pid %d: %w", o.killPID, err))
			}
		}
		close(stop)
	}()

	var wg sync.WaitGroup
	for ci, c := range clients {
		for w := 0; w < o.depth; w++ {
			wg.Add(1)
			go func(c *nbdclient.Client, id uint64) {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(o.seed, id))
				buf := make([]byte, (o.maxBlocks+5)*blockSize) // + room for unaligned runs of up to 40 sectors
				for {
					select {
					case <-stop:
						return
					case <-ctx.Done():
						return
					default:
					}
					err := step(c, m, rng, buf, o, &stats)
					if err == nil {
						continue
					}
					if killed.Load() {
						// The engine died under us, as planned. Any reply
						// after the kill is a dying server's (NB: nbdkit
						// answers ESHUTDOWN); the request stays pending
						// in the model, which is what it is.
						return
					}
					fail(err)
					return
				}
			}(c, uint64(ci*o.depth+w+1))
		}
	}
	wg.Wait()
	cancel()
	killerWG.Wait()
	if firstErr == nil && !killed.Load() {
		// A clean end: make everything durable so the model says so too.
		mark := m.flushIssued()
		if err := clients[0].Flush(); err != nil {
			firstErr = fmt.Errorf("final flush: %w", err)
		} else {
			m.flushDone(mark)
		}
	}
	copy(st.Acked, m.acked)
	for _, c := range clients {
		if killed.Load() {
			c.Abandon()
		} else {
			c.Close()
		}
	}
	return &stats, firstErr
}

// step does one random operation.
func step(c *nbdclient.Client, m *model, rng *rand.Rand, buf []byte, o writeOpts, stats *writeStats) error {
	r := rng.IntN(100)
	switch {
	case r < o.flushPct:
		mark := m.flushIssued()
		done := stats.begin()
		if err := c.Flush(); err != nil {
			return fmt.Errorf("flush: %w", err)
		}
		done()
		m.flushDone(mark)
		stats.flushes.Add(1)
		return nil
	case r < o.flushPct+o.readPct:
		s, n, ok := pickExtent(m, rng, o.maxBlocks)
		if !ok {
			return nil
		}
		defer m.release(s, n)
		b := buf[:n*sectorSize]
		if err := c.ReadAt(b, s*sectorSize); err != nil {
			return fmt.Errorf("read sectors %d+%d: %w", s, n, err)
		}
		for i := uint64(0); i < uint64(n); i++ {
			want := m.expect(s + i)
			got, err := readTag(b[i*sectorSize:], s+i)
			if err != nil {
				return fmt.Errorf("read back: %w (want seq %d)", err, want)
			}
			if got != want {
				return fmt.Errorf("read back: sector %d holds seq %d, the last acknowledged write is seq %d", s+i, got, want)
			}
		}
		stats.reads.Add(1)
		stats.sectorsRead.Add(uint64(n))
		return nil
	default:
		s, n, ok := pickExtent(m, rng, o.maxBlocks)
		if !ok {
			return nil
		}
		defer m.release(s, n)
		fua := rng.IntN(100) < o.fuaPct
		seq := m.issue(s, n)
		b := buf[:n*sectorSize]
		for i := uint64(0); i < uint64(n); i++ {
			putTag(b[i*sectorSize:], s+i, seq)
		}
		done := stats.begin()
		if err := c.WriteAt(b, s*sectorSize, fua); err != nil {
			return fmt.Errorf("write seq %d sectors %d+%d: %w", seq, s, n, err)
		}
		done()
		m.acknowledge(extent{seq: seq, sector: s, n: n}, fua)
		stats.writes.Add(1)
		if fua {
			stats.fua.Add(1)
		}
		return nil
	}
}

// pickExtent chooses and claims an idle extent: whole aligned blocks,
// runs of blocks, partial blocks (1-7 sectors inside one block) and
// unaligned runs that straddle blocks. It gives up after a few tries.
func pickExtent(m *model, rng *rand.Rand, maxBlocks int) (uint64, uint32, bool) {
	total := m.st.Sectors
	blocks := total / 8
	for try := 0; try < 8; try++ {
		var s uint64
		var n uint32
		switch k := rng.IntN(100); {
		case k < 40: // one whole block
			s, n = rng.Uint64N(blocks)*8, 8
		case k < 60: // a run of whole blocks
			nb := 2 + rng.IntN(max(1, maxBlocks-1))
			s, n = rng.Uint64N(blocks)*8, uint32(nb*8)
		case k < 85: // a partial block
			off := rng.Uint64N(8)
			s, n = rng.Uint64N(blocks)*8+off, uint32(1+rng.Uint64N(8-off))
			if n == 8 {
				n = 7
			}
		default: // unaligned, straddling blocks
			s, n = rng.Uint64N(total), uint32(2+rng.IntN(39))
		}
		if s+uint64(n) > total {
			continue
		}
		if m.claim(s, n) {
			return s, n, true
		}
	}
	return 0, 0, false
}
