package blockdev

import "errors"

// Sentinel errors. Callers test them with errors.Is; the wrapping error
// names the device (path) and offset.
var (
	// ErrClosed is returned by every operation on a closed Device.
	ErrClosed = errors.New("blockdev: device closed")
	// ErrOutOfRange is returned for a negative offset, or a write or discard
	// that does not fit in the device.
	ErrOutOfRange = errors.New("blockdev: offset out of range")
	// ErrBusy is returned when an exclusive open finds the device already
	// held by someone else.
	ErrBusy = errors.New("blockdev: device busy")
	// ErrNotSupported is returned when the device cannot do what was asked
	// (Discard on a filesystem without hole punching, for example).
	ErrNotSupported = errors.New("blockdev: operation not supported")
	// ErrReadOnly is returned by WriteAt and Discard on a device
	// opened read-only (Sync is allowed and does nothing harmful).
	ErrReadOnly = errors.New("blockdev: device is read-only")
)

// ErrInjected marks a failure made up by Faulty. The same error also wraps
// syscall.EIO, which is what the engine sees from a real disk.
var ErrInjected = errors.New("blockdev: injected fault")
