package blockdev

import (
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
)

// memPageSize is the granularity of Mem's sparse storage and of its
// copy-on-write undo log. A page never written reads as zeros.
const memPageSize = 4096

// Mem is an in-memory Device that remembers which writes are durable, so a
// test can cut the power at any moment (cf. pebble vfs.MemFS CrashClone).
//
// The current contents live in sparse 4 KiB pages. Since the last Sync, Mem
// keeps two journals:
//   - undo: the content each page had at the last Sync, saved the first
//     time the page is touched afterwards (copy-on-write, so memory grows
//     with the pages dirtied, not with the number of writes);
//   - redo: every write and discard since the last Sync, in order, with its
//     data, so CrashCloneTorn can replay any subset of them.
//
// Sync forgets both in O(1). CrashClone costs a copy of the device's
// allocated pages.
type Mem struct {
	size int64

	mu sync.RWMutex // protects everything below; readers share it
	// pages is the current contents; a missing page is all zeros.
	pages map[int64][]byte
	// undo maps a page index to the page's content at the last Sync (nil:
	// the page was absent, i.e. zero). Present only for pages touched since.
	undo map[int64][]byte
	// redo lists writes and discards completed since the last Sync.
	redo   []memOp
	closed bool
}

// memOp is one unsynced write (data != nil) or discard (data == nil). A
// FUA write is durable already; it stays in the log only so that a torn
// crash replays it after the earlier writes that may land under it.
type memOp struct {
	off    int64
	length int64
	data   []byte
	fua    bool
}

var (
	_ Device    = (*Mem)(nil)
	_ FUAWriter = (*Mem)(nil)
)

// NewMem returns an empty (all zero) in-memory device of size bytes, with
// nothing unsynced.
func NewMem(size int64) *Mem {
	if size < 0 {
		size = 0
	}
	return &Mem{
		size:  size,
		pages: make(map[int64][]byte),
		undo:  make(map[int64][]byte),
	}
}

// Size returns the device size in bytes.
func (m *Mem) Size() int64 { return m.size }

// ReadAt reads len(p) bytes at off. Like os.File, a read that reaches the
// end of the device returns the bytes before it and io.EOF.
func (m *Mem) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("mem read at %d: %w", off, ErrOutOfRange)
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, fmt.Errorf("mem read at %d: %w", off, ErrClosed)
	}
	if off >= m.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	if rest := m.size - off; int64(n) > rest {
		n = int(rest)
	}
	m.readLocked(p[:n], off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *Mem) readLocked(p []byte, off int64) {
	for len(p) > 0 {
		idx, in := off/memPageSize, int(off%memPageSize)
		chunk := min(len(p), memPageSize-in)
		if pg := m.pages[idx]; pg != nil {
			copy(p[:chunk], pg[in:])
		} else {
			clear(p[:chunk])
		}
		p, off = p[chunk:], off+int64(chunk)
	}
}

// WriteAt writes p at off. The write is complete, but not durable, when it
// returns: a CrashClone taken before the next Sync drops it.
func (m *Mem) WriteAt(p []byte, off int64) (int, error) { return m.write(p, off, false) }

// WriteAtFUA is WriteAt, durable on return: a crash keeps it, whatever
// happens to the other unsynced writes (which stay unsynced).
func (m *Mem) WriteAtFUA(p []byte, off int64) (int, error) { return m.write(p, off, true) }

func (m *Mem) write(p []byte, off int64, fua bool) (int, error) {
	what := "write"
	if fua {
		what = "FUA write"
	}
	if off < 0 || off > m.size || int64(len(p)) > m.size-off {
		return 0, fmt.Errorf("mem %s of %d bytes at %d (size %d): %w", what, len(p), off, m.size, ErrOutOfRange)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, fmt.Errorf("mem %s at %d: %w", what, off, ErrClosed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	m.redo = append(m.redo, memOp{off: off, length: int64(len(p)), data: append([]byte(nil), p...), fua: fua})
	m.applyLocked(m.pages, p, off, true)
	if fua {
		// Every page touched now has an undo entry (its synced content);
		// a FUA write goes into the synced content too.
		m.applyLocked(m.undo, p, off, false)
	}
	return len(p), nil
}

// applyLocked copies p into pages at off. With track set it first saves
// each page's synced content in the undo log.
func (m *Mem) applyLocked(pages map[int64][]byte, p []byte, off int64, track bool) {
	for len(p) > 0 {
		idx, in := off/memPageSize, int(off%memPageSize)
		chunk := min(len(p), memPageSize-in)
		pg := pages[idx]
		if track {
			m.saveUndoLocked(idx, pg)
		}
		if pg == nil {
			pg = make([]byte, memPageSize)
			pages[idx] = pg
		}
		copy(pg[in:], p[:chunk])
		p, off = p[chunk:], off+int64(chunk)
	}
}

// saveUndoLocked records the synced content of page idx the first time it
// changes after a Sync. cur is the page as it is now (nil when absent).
func (m *Mem) saveUndoLocked(idx int64, cur []byte) {
	if _, ok := m.undo[idx]; ok {
		return
	}
	if cur == nil {
		m.undo[idx] = nil
		return
	}
	m.undo[idx] = append([]byte(nil), cur...)
}

// Sync makes every completed write and discard durable.
func (m *Mem) Sync() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("mem sync: %w", ErrClosed)
	}
	m.syncLocked()
	return nil
}

func (m *Mem) syncLocked() {
	clear(m.undo)
	m.redo = nil
}

// Discard zeroes the range (a thin-provisioned disk that reads holes as
// zeros). Like a write, it is not durable before the next Sync.
func (m *Mem) Discard(off, length int64) error {
	if off < 0 || length < 0 || off > m.size || length > m.size-off {
		return fmt.Errorf("mem discard of %d bytes at %d (size %d): %w", length, off, m.size, ErrOutOfRange)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("mem discard at %d: %w", off, ErrClosed)
	}
	if length == 0 {
		return nil
	}
	m.redo = append(m.redo, memOp{off: off, length: length})
	m.discardLocked(m.pages, off, length, true)
	return nil
}

// discardLocked zeroes [off, off+length) in pages, dropping whole pages so
// a discarded device gives its memory back.
func (m *Mem) discardLocked(pages map[int64][]byte, off, length int64, track bool) {
	end := off + length
	for off < end {
		idx, in := off/memPageSize, off%memPageSize
		chunk := min(end-off, memPageSize-in)
		pg := pages[idx]
		switch {
		case pg == nil:
			// Already zero.
		case chunk == memPageSize:
			if track {
				// NB: the dropped page is never written again, so
				// the undo log may keep it without a copy.
				if _, ok := m.undo[idx]; !ok {
					m.undo[idx] = pg
				}
			}
			delete(pages, idx)
		default:
			if track {
				m.saveUndoLocked(idx, pg)
			}
			clear(pg[in : in+chunk])
		}
		off += chunk
	}
}

// Close marks the device closed; later reads and writes fail with
// ErrClosed. The contents stay, so a test can still CrashClone it. Close
// does not sync.
func (m *Mem) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// CrashClone returns a new, open device holding only what was durable: the
// state at the last Sync, every later write and discard dropped. The new
// device has nothing unsynced.
func (m *Mem) CrashClone() *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.durableCloneLocked()
}

func (m *Mem) durableCloneLocked() *Mem {
	c := NewMem(m.size)
	for idx, pg := range m.pages {
		if _, dirty := m.undo[idx]; dirty {
			continue
		}
		c.pages[idx] = append([]byte(nil), pg...)
	}
	for idx, pg := range m.undo {
		if pg != nil {
			c.pages[idx] = append([]byte(nil), pg...)
		}
	}
	return c
}

// CrashCloneTorn is CrashClone for a disk with a volatile write cache: each
// write or discard since the last Sync independently landed or not (a coin
// flip), and one of the landed writes longer than a sector is torn at a
// random 512-byte boundary (only its first k sectors, 0 < k < its length in
// sectors, reached the media). Landed operations are applied in their
// original order. rng makes the outcome reproducible.
func (m *Mem) CrashCloneTorn(rng *rand.Rand) *Mem {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.durableCloneLocked()
	landed := make([]memOp, 0, len(m.redo))
	var tearable []int
	for _, op := range m.redo {
		if !op.fua && rng.IntN(2) == 0 {
			continue
		}
		if op.data != nil && op.length > 512 && !op.fua {
			tearable = append(tearable, len(landed))
		}
		landed = append(landed, op)
	}
	if len(tearable) > 0 {
		i := tearable[rng.IntN(len(tearable))]
		op := landed[i]
		sectors := (op.length + 511) / 512
		keep := 512 * (1 + rng.Int64N(sectors-1))
		landed[i].data = op.data[:keep]
		landed[i].length = keep
	}
	for _, op := range landed {
		if op.data != nil {
			c.applyLocked(c.pages, op.data, op.off, false)
		} else {
			c.discardLocked(c.pages, op.off, op.length, false)
		}
	}
	return c
}

// Unsynced returns how many writes and discards happened since the last
// Sync: what a crash now may lose.
func (m *Mem) Unsynced() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.redo)
}
