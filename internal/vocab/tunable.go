package vocab

import (
	"fmt"
	"strconv"
	"strings"
)

// Tunable names one of the kernel target's optional arguments (cf. the
// _args table of do_consume_optional_argv). Values are indexed by it.
type Tunable int

// The tunables, in the kernel's order: the five dynamic ones first, then
// the two static ones. NumTunables is their number; adding one is one
// constant here and one row in tunables.
const (
	WritebackThreshold Tunable = iota
	NrMaxBatchedWriteback
	UpdateSBRecordInterval
	SyncDataInterval
	ReadCacheThreshold
	WriteAroundMode
	NrReadCacheCells

	NumTunables int = iota
)

// Spec describes one tunable.
type Spec struct {
	Name     string
	Min, Max int64
	Default  int64
	// Static tunables can only be given when the volume is created; the
	// kernel refuses them as messages ("%s is a static option"), cf. the
	// is_static flag of consume_kv.
	Static bool
	Unit   string // for help text; "" when the value has none
	Help   string // one sentence, for help text
}

// tunables is the one table of the tunables, indexed by Tunable.
var tunables = [NumTunables]Spec{
	WritebackThreshold: {Name: "writeback_threshold", Min: 0, Max: 100, Default: 0, Unit: "%",
		Help: "background writeback runs while the backing device is busy less than this; 0: only when forced (a full ring, drop_caches)"},
	NrMaxBatchedWriteback: {Name: "nr_max_batched_writeback", Min: 1, Max: 32, Default: 32, Unit: "segments",
		Help: "the most segments written back in one batch, sorted by backing sector"},
	UpdateSBRecordInterval: {Name: "update_sb_record_interval", Min: 0, Max: 3600, Default: 0, Unit: "s",
		Help: "record last_writeback_segment_id in the superblock this often; 0 disables"},
	SyncDataInterval: {Name: "sync_data_interval", Min: 0, Max: 3600, Default: 0, Unit: "s",
		Help: "flush the RAM buffer and sync the cache device this often; 0 disables"},
	ReadCacheThreshold: {Name: "read_cache_threshold", Min: 0, Max: 127, Default: 0, Unit: "blocks",
		Help: "stage reads into the cache unless more than this many consecutive blocks are read; 0 disables read caching"},
	WriteAroundMode: {Name: "write_around_mode", Min: 0, Max: 1, Default: 0, Static: true,
		Help: "1: writes bypass the cache (needs a freshly formatted cache device)"},
	NrReadCacheCells: {Name: "nr_read_cache_cells", Min: 1, Max: 2048, Default: 2048, Static: true, Unit: "cells",
		Help: "read cache staging cells (4 KiB each)"},
}

// Tunables returns every tunable, in the kernel's order.
func Tunables() []Tunable {
	all := make([]Tunable, NumTunables)
	for i := range all {
		all[i] = Tunable(i)
	}
	return all
}

// Spec returns t's row of the table.
func (t Tunable) Spec() Spec { return tunables[t] }

// String returns t's name.
func (t Tunable) String() string {
	if t < 0 || int(t) >= NumTunables {
		return fmt.Sprintf("Tunable(%d)", int(t))
	}
	return tunables[t].Name
}

// Valid reports whether t is one of the tunables.
func (t Tunable) Valid() bool { return t >= 0 && int(t) < NumTunables }

// LookupTunable returns the tunable called name (matched
// case-insensitively, as the kernel's strcasecmp does).
func LookupTunable(name string) (Tunable, bool) {
	for i, s := range tunables {
		if strings.EqualFold(s.Name, name) {
			return Tunable(i), true
		}
	}
	return 0, false
}

// InRange reports whether v is within t's range.
func (t Tunable) InRange(v int64) bool {
	s := t.Spec()
	return v >= s.Min && v <= s.Max
}

// Range returns "MIN..MAX".
func (t Tunable) Range() string {
	s := t.Spec()
	return fmt.Sprintf("%d..%d", s.Min, s.Max)
}

// ParseValue reads a value the way dm_read_arg does: a decimal unsigned
// number within t's range.
func (t Tunable) ParseValue(v string) (int64, error) {
	s := t.Spec()
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %q is not a number (%d..%d)", ErrBadMessage, s.Name, v, s.Min, s.Max)
	}
	if !t.InRange(int64(n)) {
		return 0, fmt.Errorf("%w: %s: %d is out of range %d..%d", ErrBadMessage, s.Name, n, s.Min, s.Max)
	}
	return int64(n), nil
}

// Names lists the tunables' names, in the kernel's order, separated by
// ", "; the static ones only if static is true.
func Names(static bool) string {
	var names []string
	for _, s := range tunables {
		if static || !s.Static {
			names = append(names, s.Name)
		}
	}
	return strings.Join(names, ", ")
}

// Values are tunable values by id; a tunable absent from the map has its
// default.
type Values map[Tunable]int64

// Get returns t's value in vs, or its default.
func (vs Values) Get(t Tunable) int64 {
	if v, ok := vs[t]; ok {
		return v
	}
	return t.Spec().Default
}

// ParseOptionalArgs validates the optional KEY VALUE arguments of a table
// (wb-create NAME BACKING CACHE [KEY VALUE]...), every tunable allowed,
// with the kernel's ranges. It returns the values given and their
// canonical words (keys lower-cased, values as parsed), for the table line
// and the state file. Unlike the kernel, a key given twice is an error
// rather than last-wins: it is almost always a typo.
//
// A leading count of the words that follow, as a dm table has it
// ("2 writeback_threshold 50"), is accepted and dropped (StripCount).
func ParseOptionalArgs(args []string) (Values, []string, error) {
	args, err := StripCount(args)
	if err != nil {
		return nil, nil, err
	}
	if len(args)%2 != 0 {
		return nil, nil, fmt.Errorf("%w: optional args come in KEY VALUE pairs: %s has no value", ErrBadMessage, args[len(args)-1])
	}
	vs := Values{}
	var words []string
	for i := 0; i < len(args); i += 2 {
		t, ok := LookupTunable(args[i])
		if !ok {
			return nil, nil, fmt.Errorf("%w: unknown tunable %q%s (want one of %s)", ErrBadMessage, args[i], didYouMean(args[i], TunableNames()), Names(true))
		}
		if _, seen := vs[t]; seen {
			return nil, nil, fmt.Errorf("%w: optional arg %s given twice", ErrBadMessage, t)
		}
		n, err := t.ParseValue(args[i+1])
		if err != nil {
			return nil, nil, err
		}
		vs[t] = n
		words = append(words, t.String(), strconv.FormatInt(n, 10))
	}
	return vs, words, nil
}
