package engine

import "errors"

// Sentinel errors of the engine. Callers test them with errors.Is; the
// wrapping error names the segment, sector or tunable concerned.
var (
	// ErrNotFormatted: the cache device has no magic in sector 0 (Format it).
	ErrNotFormatted = errors.New("engine: cache device is not formatted")
	// ErrDamaged: the log holds valid segments after a bad one, or other
	// faults that would lose data if replayed; the engine refuses to open.
	ErrDamaged = errors.New("engine: cache log is damaged")
	// ErrNotFresh: write_around_mode=1 asked on a cache whose log holds a
	// valid segment; a write bypassing the log would be undone at the next
	// replay by an older cached copy.
	ErrNotFresh = errors.New("engine: write_around_mode needs a freshly formatted cache device")
	// ErrClosed: the volume is closed or closing.
	ErrClosed = errors.New("engine: volume closed")
	// ErrOutOfRange: a request or a tunable value outside its bounds.
	ErrOutOfRange = errors.New("engine: out of range")
	// ErrUnknownTunable: no tunable of that name.
	ErrUnknownTunable = errors.New("engine: unknown tunable")
	// ErrStatic: the tunable can only be given at Open.
	ErrStatic = errors.New("engine: static tunable, can only be set at open")
	// ErrTooLarge: the cache device has more cache blocks than a uint32
	// position can address.
	ErrTooLarge = errors.New("engine: cache device too large")
	// ErrEmptyBacking: the backing device is smaller than one sector.
	ErrEmptyBacking = errors.New("engine: backing device is empty (smaller than 512 bytes)")
	// ErrFailed: an earlier write to the cache device failed for good; the
	// volume accepts no more writes (reads still work).
	ErrFailed = errors.New("engine: cache device failed")
	// ErrNoSpace: a write waited longer than Config.WriteWaitLimit for a
	// free segment while writeback was failing; the error also wraps
	// writeback's own (ENOSPC of a full backing device, EIO...).
	ErrNoSpace = errors.New("engine: no free segment")
)
