package engine

import (
	"fmt"
	"sort"
	"sync/atomic"
)

// Tunable names, as the kernel target's optional arguments and messages.
const (
	TunWritebackThreshold     = "writeback_threshold"
	TunNrMaxBatchedWriteback  = "nr_max_batched_writeback"
	TunUpdateSBRecordInterval = "update_sb_record_interval"
	TunSyncDataInterval       = "sync_data_interval"
	TunReadCacheThreshold     = "read_cache_threshold"
	TunWriteAroundMode        = "write_around_mode"
	TunNrReadCacheCells       = "nr_read_cache_cells"
)

// tunableSpec is one kernel argument: range, default, and whether it can
// change at run time (cf. do_consume_optional_argv: the _args table and the
// consume_kv is_static flag).
type tunableSpec struct {
	name     string
	min, max int64
	def      int64
	static   bool
}

var tunableSpecs = []tunableSpec{
	{TunWritebackThreshold, 0, 100, 0, false},
	{TunNrMaxBatchedWriteback, 1, 32, 32, false},
	{TunUpdateSBRecordInterval, 0, 3600, 0, false},
	{TunSyncDataInterval, 0, 3600, 0, false},
	{TunReadCacheThreshold, 0, 127, 0, false},
	{TunWriteAroundMode, 0, 1, 0, true},
	{TunNrReadCacheCells, 1, 2048, 2048, true},
}

func findSpec(name string) (tunableSpec, bool) {
	for _, s := range tunableSpecs {
		if s.name == name {
			return s, true
		}
	}
	return tunableSpec{}, false
}

// TunableNames lists every tunable, sorted.
func TunableNames() []string {
	names := make([]string, 0, len(tunableSpecs))
	for _, s := range tunableSpecs {
		names = append(names, s.name)
	}
	sort.Strings(names)
	return names
}

// ValidateTunable checks name and value against the kernel's ranges.
func ValidateTunable(name string, value int64) error {
	s, ok := findSpec(name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTunable, name)
	}
	if value < s.min || value > s.max {
		return fmt.Errorf("%w: %s=%d, must be %d..%d", ErrOutOfRange, name, value, s.min, s.max)
	}
	return nil
}

// tunables holds the current values. The daemons read the atomics at each
// loop iteration, so a message takes effect without waking anyone (the
// ones that matter to a sleeping daemon broadcast v.cond as well).
type tunables struct {
	vals [7]atomic.Int64 // indexed like tunableSpecs
}

func (t *tunables) init(given map[string]int64) error {
	for i, s := range tunableSpecs {
		t.vals[i].Store(s.def)
	}
	for name, v := range given {
		if err := ValidateTunable(name, v); err != nil {
			return err
		}
		t.set(name, v)
	}
	return nil
}

func (t *tunables) index(name string) int {
	for i, s := range tunableSpecs {
		if s.name == name {
			return i
		}
	}
	return -1
}

func (t *tunables) set(name string, v int64) { t.vals[t.index(name)].Store(v) }
func (t *tunables) get(name string) int64    { return t.vals[t.index(name)].Load() }

func (t *tunables) writebackThreshold() int64     { return t.vals[0].Load() }
func (t *tunables) nrMaxBatchedWriteback() int64  { return t.vals[1].Load() }
func (t *tunables) updateSBRecordInterval() int64 { return t.vals[2].Load() }
func (t *tunables) syncDataInterval() int64       { return t.vals[3].Load() }
func (t *tunables) readCacheThreshold() int64     { return t.vals[4].Load() }
func (t *tunables) writeAroundMode() bool         { return t.vals[5].Load() != 0 }
func (t *tunables) nrReadCacheCells() int64       { return t.vals[6].Load() }

func (t *tunables) snapshot() map[string]int64 {
	m := make(map[string]int64, len(tunableSpecs))
	for i, s := range tunableSpecs {
		m[s.name] = t.vals[i].Load()
	}
	return m
}

// SetTunable changes a run-time tunable (the kernel's message
// "<name> <value>"). Static ones (write_around_mode, nr_read_cache_cells)
// are refused with ErrStatic.
func (v *Volume) SetTunable(name string, value int64) error {
	s, ok := findSpec(name)
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownTunable, name)
	}
	if s.static {
		return fmt.Errorf("%w: %s", ErrStatic, name)
	}
	if err := ValidateTunable(name, value); err != nil {
		return err
	}
	v.tun.set(name, value)
	// Wake the daemons: a new interval or threshold applies now, not after
	// the old sleep.
	v.mu.Lock()
	v.cond.Broadcast()
	v.mu.Unlock()
	return nil
}

// Tunables returns every tunable's current value.
func (v *Volume) Tunables() map[string]int64 { return v.tun.snapshot() }
