// Package blockdev is the engine's view of a disk: a Device reads and writes
// at byte offsets, makes writes durable with Sync, and knows its size. It
// has a file and block-device backend (O_DIRECT where possible, exclusive
// open), an in-memory backend that can simulate a crash (drop every write not
// yet synced, tear the last one), and a fault injector that wraps any Device.
package blockdev

import "io"

// Device is a disk. Offsets and lengths given by the engine are multiples
// of 512; buffers it passes are 4096-aligned (see AlignedBuffer), as
// O_DIRECT needs. All methods are safe for concurrent use.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every write that completed before the call durable.
	Sync() error
	// Size is the device size in bytes.
	Size() int64
	// Discard tells the device the range no longer holds data (punch a hole,
	// BLKDISCARD). Reading it back may return zeros or old data.
	Discard(off, length int64) error
	Close() error
}

// FUAWriter is a Device that can make one write durable by itself (a
// Force Unit Access write) without a Sync of the whole device. Devices
// implement it optionally; the engine detects it and falls back to
// WriteAt followed by Sync.
type FUAWriter interface {
	// WriteAtFUA is WriteAt, returning only once p is durable at off. It
	// makes no promise about other writes.
	WriteAtFUA(p []byte, off int64) (int, error)
}
