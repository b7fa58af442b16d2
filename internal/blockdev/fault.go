package blockdev

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
)

// Op is a set of Device operations a fault Rule applies to.
type Op uint8

const (
	OpRead Op = 1 << iota
	OpWrite
	OpSync
	OpDiscard

	OpAll = OpRead | OpWrite | OpSync | OpDiscard
)

func (o Op) String() string {
	var names []string
	for _, n := range []struct {
		op   Op
		name string
	}{{OpRead, "read"}, {OpWrite, "write"}, {OpSync, "sync"}, {OpDiscard, "discard"}} {
		if o&n.op != 0 {
			names = append(names, n.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// Rule says which operations a Faulty fails. An operation matches when its
// kind is in Ops, its byte range overlaps [Off, Off+Len) (Len 0: the whole
// device; a Sync, having no range, matches only such rules) and it is at
// least MinLen bytes long (0: any length). Of the
// matching operations, the rule lets the first Skip pass, then fails every
// Every-th one (0 or 1: each one), and retires after failing Times of them
// (0: never; it fails until removed).
//
// Examples: fail the next 3 writes: {Ops: OpWrite, Times: 3}; fail every
// 10th read: {Ops: OpRead, Every: 10}; the disk dies: {Ops: OpAll}.
type Rule struct {
	Ops      Op
	Off, Len int64
	MinLen   int64
	Skip     int
	Every    int
	Times    int
	// Tear makes a failing write store its first TearAt bytes (the whole
	// write if shorter) and then fail: a write cut short by a dying disk,
	// or, with TearAt >= the length, one that landed but was not
	// acknowledged.
	Tear   bool
	TearAt int64
	// TearTail makes a torn write store its bytes from TearAt to its end
	// instead: a write whose first sectors were the last to reach the
	// media (a disk may write a request's sectors in any order).
	TearTail bool
	// Die makes the device fail every operation, matching or not, from the
	// moment this rule fires until Clear: a power cut in the middle of
	// the I/O stream (cf. dmflakey's "drop writes"). Pair it with Mem's
	// CrashClone to see what survived.
	Die bool
	// Errno is the error a failing operation reports (0: EIO), e.g.
	// ENOSPC for a full disk.
	Errno syscall.Errno
}

// RuleID names a rule for Remove.
type RuleID int

// FaultStats counts operations seen by a Faulty, failed or not, and the
// faults it injected.
type FaultStats struct {
	Reads, Writes, Syncs, Discards int64
	FUAWrites                      int64 // of Writes, the FUA writes
	Faults                         int64
}

var _ FUAWriter = (*Faulty)(nil)

// Faulty wraps a Device and fails chosen operations with an error wrapping
// ErrInjected and syscall.EIO (cf. pebble vfs/errorfs). Safe for
// concurrent use; rules can change while I/O runs.
type Faulty struct {
	dev Device

	mu     sync.Mutex // protects rules, nextID and stats
	rules  []*faultRule
	nextID RuleID
	stats  FaultStats
	dead   bool // a Die rule fired; everything fails until Clear
}

type faultRule struct {
	Rule
	id      RuleID
	matched int // matching operations seen
	failed  int // operations failed
}

var _ Device = (*Faulty)(nil)

// NewFaulty wraps dev with no rules: every operation passes through.
func NewFaulty(dev Device) *Faulty {
	return &Faulty{dev: dev}
}

// Inject adds a rule; rules are consulted in the order added.
func (f *Faulty) Inject(r Rule) RuleID {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextID++
	f.rules = append(f.rules, &faultRule{Rule: r, id: f.nextID})
	return f.nextID
}

// Remove drops one rule; removing an unknown or retired rule does nothing.
func (f *Faulty) Remove(id RuleID) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, r := range f.rules {
		if r.id == id {
			f.rules = append(f.rules[:i], f.rules[i+1:]...)
			return
		}
	}
}

// Clear drops every rule and revives a dead device: the device heals.
func (f *Faulty) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
	f.dead = false
}

// Dead reports whether a Die rule has fired since the last Clear.
func (f *Faulty) Dead() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dead
}

// dying is the rule a dead device fails everything with.
var dying = &Rule{Ops: OpAll}

// Stats returns the counters.
func (f *Faulty) Stats() FaultStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stats
}

// Inner returns the wrapped device.
func (f *Faulty) Inner() Device { return f.dev }

// check counts the operation, advances every matching rule, and returns
// the first rule that fails it (nil: let it through).
func (f *Faulty) check(op Op, off, n int64) *Rule {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch op {
	case OpRead:
		f.stats.Reads++
	case OpWrite:
		f.stats.Writes++
	case OpSync:
		f.stats.Syncs++
	case OpDiscard:
		f.stats.Discards++
	}
	if f.dead {
		f.stats.Faults++
		return dying
	}
	var fire *Rule
	kept := f.rules[:0]
	for _, r := range f.rules {
		if r.matches(op, off, n) {
			r.matched++
			if r.fires() {
				r.failed++
				if fire == nil {
					rule := r.Rule
					fire = &rule
				}
			}
		}
		if r.Times == 0 || r.failed < r.Times {
			kept = append(kept, r)
		}
	}
	clear(f.rules[len(kept):])
	f.rules = kept
	if fire != nil {
		f.stats.Faults++
		f.dead = fire.Die
	}
	return fire
}

func (r *faultRule) matches(op Op, off, n int64) bool {
	if r.Ops&op == 0 || n < r.MinLen {
		return false
	}
	if r.Len == 0 {
		return true
	}
	if op == OpSync {
		return false
	}
	// Overlap of [off, off+n) and [Off, Off+Len); an empty request at an
	// offset inside the range counts.
	return off < r.Off+r.Len && off+max(n, 1) > r.Off
}

// fires decides for a matching operation (already counted in matched).
func (r *faultRule) fires() bool {
	k := r.matched - r.Skip
	if k <= 0 {
		return false
	}
	if r.Every > 1 && k%r.Every != 0 {
		return false
	}
	return true
}

func injected(r *Rule, op Op, n int, off int64) error {
	errno := syscall.EIO
	if r.Errno != 0 {
		errno = r.Errno
	}
	if op == OpSync {
		return fmt.Errorf("blockdev: sync: %w: %w", ErrInjected, errno)
	}
	return fmt.Errorf("blockdev: %s %d bytes at %d: %w: %w", op, n, off, ErrInjected, errno)
}

// ReadAt fails (reading nothing) or passes through.
func (f *Faulty) ReadAt(p []byte, off int64) (int, error) {
	if r := f.check(OpRead, off, int64(len(p))); r != nil {
		return 0, injected(r, OpRead, len(p), off)
	}
	return f.dev.ReadAt(p, off)
}

// WriteAt fails (writing nothing, or the rule's torn prefix) or passes
// through.
func (f *Faulty) WriteAt(p []byte, off int64) (int, error) {
	return f.write(p, off, false)
}

// WriteAtFUA is WriteAt, durable on return, so that a volume over a
// Faulty takes the FUA path production takes: the rules see it as a write
// (FaultStats.FUAWrites counts it too). The wrapped device's FUA write
// carries it when it has one; else a write and a sync, and a rule that
// fails syncs fails it too.
func (f *Faulty) WriteAtFUA(p []byte, off int64) (int, error) {
	f.mu.Lock()
	f.stats.FUAWrites++
	f.mu.Unlock()
	return f.write(p, off, true)
}

func (f *Faulty) write(p []byte, off int64, fua bool) (int, error) {
	r := f.check(OpWrite, off, int64(len(p)))
	if r == nil {
		fw, ok := f.dev.(FUAWriter)
		switch {
		case !fua:
			return f.dev.WriteAt(p, off)
		case ok:
			return fw.WriteAtFUA(p, off)
		}
		n, err := f.dev.WriteAt(p, off)
		if err != nil {
			return n, err
		}
		return n, f.Sync()
	}
	if r.Tear && r.TearTail {
		from := min(r.TearAt, int64(len(p)))
		if _, err := f.dev.WriteAt(p[from:], off+from); err != nil {
			return 0, fmt.Errorf("blockdev: torn write of %d bytes at %d: %w", int64(len(p))-from, off+from, err)
		}
		return 0, fmt.Errorf("blockdev: write %d bytes at %d torn: only bytes from %d landed: %w: %w", len(p), off, from, ErrInjected, syscall.EIO)
	}
	if r.Tear && r.TearAt > 0 {
		keep := min(r.TearAt, int64(len(p)))
		n, err := f.dev.WriteAt(p[:keep], off)
		if err != nil {
			return n, fmt.Errorf("blockdev: torn write of %d bytes at %d: %w", keep, off, err)
		}
		return n, fmt.Errorf("blockdev: write %d bytes at %d torn after %d: %w: %w", len(p), off, n, ErrInjected, syscall.EIO)
	}
	return 0, injected(r, OpWrite, len(p), off)
}

// Sync fails or passes through.
func (f *Faulty) Sync() error {
	if r := f.check(OpSync, 0, 0); r != nil {
		return injected(r, OpSync, 0, 0)
	}
	return f.dev.Sync()
}

// Discard fails or passes through.
func (f *Faulty) Discard(off, length int64) error {
	if r := f.check(OpDiscard, off, length); r != nil {
		return injected(r, OpDiscard, int(length), off)
	}
	return f.dev.Discard(off, length)
}

// Size is the wrapped device's size.
func (f *Faulty) Size() int64 { return f.dev.Size() }

// Close closes the wrapped device; it never fails by rule.
func (f *Faulty) Close() error { return f.dev.Close() }
