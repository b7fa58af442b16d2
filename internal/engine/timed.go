package engine

import (
	"sync"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// timedDevice wraps the backing device and accounts the time during which
// at least one request is in flight: the engine's own io_ticks, since a
// regular file has none (cf. part_stat_read(io_ticks) in modulator_proc).
type timedDevice struct {
	blockdev.Device

	mu        sync.Mutex // protects the fields below
	inflight  int
	busySince time.Time
	busy      time.Duration // completed busy periods
}

func (d *timedDevice) begin() {
	d.mu.Lock()
	if d.inflight == 0 {
		d.busySince = time.Now()
	}
	d.inflight++
	d.mu.Unlock()
}

func (d *timedDevice) end() {
	d.mu.Lock()
	d.inflight--
	if d.inflight == 0 {
		d.busy += time.Since(d.busySince)
	}
	d.mu.Unlock()
}

// busyTime is the total time the device has been busy, up to now.
func (d *timedDevice) busyTime() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	b := d.busy
	if d.inflight > 0 {
		b += time.Since(d.busySince)
	}
	return b
}

func (d *timedDevice) ReadAt(p []byte, off int64) (int, error) {
	d.begin()
	defer d.end()
	return d.Device.ReadAt(p, off)
}

func (d *timedDevice) WriteAt(p []byte, off int64) (int, error) {
	d.begin()
	defer d.end()
	return d.Device.WriteAt(p, off)
}

func (d *timedDevice) Sync() error {
	d.begin()
	defer d.end()
	return d.Device.Sync()
}

func (d *timedDevice) Discard(off, length int64) error {
	d.begin()
	defer d.end()
	return d.Device.Discard(off, length)
}
