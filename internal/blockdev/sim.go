package blockdev

import (
	"sync"
	"sync/atomic"
	"time"
)

// Slow wraps a Device and makes it behave like one spindle: each request
// costs a fixed latency (seek plus rotation) and its length over the
// bandwidth, and requests are served one at a time. Benchmarks of the
// writeback path use it as the backing device, where dm-writeboost's
// sorting and batching are supposed to pay off.
//
// Requests queue on a virtual clock: each one reserves the disk from when
// the previous one ends, then sleeps until its own end. Sleep overshoot
// therefore does not accumulate, and concurrent callers still see the
// serial throughput.
type Slow struct {
	dev         Device
	perOp       time.Duration
	bytesPerSec int64

	mu        sync.Mutex // protects busyUntil
	busyUntil time.Time  // when the disk finishes the last request queued

	reads, writes, syncs, discards atomic.Int64
}

var (
	_ Device    = (*Slow)(nil)
	_ FUAWriter = (*Slow)(nil)
)

// NewSlow wraps dev. perOp is paid by every read, write, sync and discard;
// bytesPerSec (0: unlimited) bounds reads and writes.
func NewSlow(dev Device, perOp time.Duration, bytesPerSec int64) *Slow {
	return &Slow{dev: dev, perOp: max(perOp, 0), bytesPerSec: max(bytesPerSec, 0)}
}

// wait occupies the disk for one request of n bytes and returns when the
// request would complete.
func (s *Slow) wait(n int) {
	cost := s.perOp
	if s.bytesPerSec > 0 && n > 0 {
		cost += time.Duration(float64(n) / float64(s.bytesPerSec) * float64(time.Second))
	}
	if cost <= 0 {
		return
	}
	s.mu.Lock()
	now := time.Now()
	start := s.busyUntil
	if start.Before(now) {
		start = now
	}
	done := start.Add(cost)
	s.busyUntil = done
	s.mu.Unlock()
	time.Sleep(time.Until(done))
}

// ReadAt reads from the wrapped device, then waits for the simulated disk.
func (s *Slow) ReadAt(p []byte, off int64) (int, error) {
	s.reads.Add(1)
	n, err := s.dev.ReadAt(p, off)
	s.wait(len(p))
	return n, err
}

// WriteAt writes to the wrapped device, then waits for the simulated disk.
func (s *Slow) WriteAt(p []byte, off int64) (int, error) {
	s.writes.Add(1)
	n, err := s.dev.WriteAt(p, off)
	s.wait(len(p))
	return n, err
}

// WriteAtFUA is WriteAt, durable on return: the wrapped device's FUA write
// (else a write and a sync), paid as the write plus one request's latency
// for getting it to the media.
func (s *Slow) WriteAtFUA(p []byte, off int64) (int, error) {
	s.writes.Add(1)
	var n int
	var err error
	if fw, ok := s.dev.(FUAWriter); ok {
		n, err = fw.WriteAtFUA(p, off)
	} else if n, err = s.dev.WriteAt(p, off); err == nil {
		err = s.dev.Sync()
	}
	s.wait(len(p))
	s.wait(0)
	return n, err
}

// Sync pays one request's latency (a cache flush).
func (s *Slow) Sync() error {
	s.syncs.Add(1)
	err := s.dev.Sync()
	s.wait(0)
	return err
}

// Discard pays one request's latency.
func (s *Slow) Discard(off, length int64) error {
	s.discards.Add(1)
	err := s.dev.Discard(off, length)
	s.wait(0)
	return err
}

// Size is the wrapped device's size.
func (s *Slow) Size() int64 { return s.dev.Size() }

// Close closes the wrapped device at once.
func (s *Slow) Close() error { return s.dev.Close() }

// Stats returns how many reads, writes and syncs were requested.
func (s *Slow) Stats() (reads, writes, syncs int64) {
	return s.reads.Load(), s.writes.Load(), s.syncs.Load()
}

// Discards returns how many discards were requested.
func (s *Slow) Discards() int64 { return s.discards.Load() }
