package engine

import (
	"fmt"
	"sync/atomic"

	"github.com/writeboost/writeboost/internal/vocab"
)

// tunables holds the current values, indexed by vocab.Tunable. The daemons
// read the atomics at each loop iteration, so a message takes effect
// without waking anyone (the ones that matter to a sleeping daemon
// broadcast v.cond as well).
type tunables struct {
	vals [vocab.NumTunables]atomic.Int64
}

// checkTunable validates a tunable id and value against the kernel's ranges.
func checkTunable(t vocab.Tunable, value int64) error {
	if !t.Valid() {
		return fmt.Errorf("%w: %v", ErrUnknownTunable, t)
	}
	if !t.InRange(value) {
		return fmt.Errorf("%w: %s=%d, must be %s", ErrOutOfRange, t, value, t.Range())
	}
	return nil
}

func (tu *tunables) init(given vocab.Values) error {
	for _, t := range vocab.Tunables() {
		v := given.Get(t)
		if err := checkTunable(t, v); err != nil {
			return err
		}
		tu.vals[t].Store(v)
	}
	for t := range given {
		if !t.Valid() {
			return fmt.Errorf("%w: %v", ErrUnknownTunable, t)
		}
	}
	return nil
}

// get returns t's current value.
func (tu *tunables) get(t vocab.Tunable) int64 { return tu.vals[t].Load() }

// on reports whether the 0/1 tunable t is set.
func (tu *tunables) on(t vocab.Tunable) bool { return tu.vals[t].Load() != 0 }

// reader returns a function reading t, for a daemon's interval.
func (tu *tunables) reader(t vocab.Tunable) func() int64 {
	return func() int64 { return tu.get(t) }
}

func (tu *tunables) snapshot() vocab.Values {
	m := make(vocab.Values, vocab.NumTunables)
	for _, t := range vocab.Tunables() {
		m[t] = tu.get(t)
	}
	return m
}

// SetTunable changes a run-time tunable (the kernel's message
// "<name> <value>"). Static ones (write_around_mode, nr_read_cache_cells)
// are refused with ErrStatic.
func (v *Volume) SetTunable(t vocab.Tunable, value int64) error {
	if err := checkTunable(t, value); err != nil {
		return err
	}
	if t.Spec().Static {
		return fmt.Errorf("%w: %s", ErrStatic, t)
	}
	v.tun.vals[t].Store(value)
	// Wake the daemons: a new interval or threshold applies now, not after
	// the old sleep.
	v.mu.Lock()
	v.cond.Broadcast()
	v.mu.Unlock()
	return nil
}

// Tunables returns every tunable's current value.
func (v *Volume) Tunables() vocab.Values { return v.tun.snapshot() }
