package blockdev

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/writeboost/writeboost/internal/blockdev/kaio"
	"github.com/writeboost/writeboost/internal/blockdev/uring"
)

// FileOptions says how OpenFile opens a file or block device.
type FileOptions struct {
	// ReadOnly opens without write access; WriteAt and Discard fail with
	// ErrReadOnly.
	ReadOnly bool
	// Direct asks for O_DIRECT, bypassing the page cache so that a
	// completed write sits in the device (or its volatile cache, hence
	// Sync) and the cache device is not cached twice. When the filesystem
	// refuses O_DIRECT the file is opened without it and one line is
	// logged; File.Direct tells which happened.
	Direct bool
	// Exclusive takes flock(LOCK_EX|LOCK_NB) on the file and, for a block
	// device, opens it O_EXCL (which the kernel refuses while it is mounted
	// or held by device-mapper), and locks the bytes of the storage below
	// it, through loop devices and partitions (exclusive.go). A second
	// exclusive open of the same storage, under whatever name, fails with a
	// *BusyError, which wraps ErrBusy: at once where the holder is seen
	// (a process with a lock, a mount, a kernel device stacked on it),
	// after up to 5 s of trying again where nobody is, as while the kernel
	// tears down the io_uring of a process just killed (retryUnlessHeld).
	Exclusive bool
	// IO says how reads, writes and syncs are submitted; the zero value
	// is IOAuto.
	IO IOEngine
	// AsyncReads gives a file with io_uring that is opened O_DIRECT a
	// native AIO context for ReadAtAsync (package kaio), where those reads
	// complete in the device's interrupt: for the cache device, whose read
	// hits take that path. Without it ReadAtAsync goes through the ring.
	AsyncReads bool
	// Logger receives the O_DIRECT fallback line; nil means slog.Default().
	Logger *slog.Logger
}

// IOEngine is how a File submits its I/O.
type IOEngine int

const (
	// IOAuto uses io_uring where the kernel allows it and blocking
	// system calls otherwise (one line is logged).
	IOAuto IOEngine = iota
	// IOBlocking uses pread(2), pwrite(2) and fdatasync(2).
	IOBlocking
	// IOUring uses io_uring, and OpenFile fails where it cannot.
	IOUring
)

// ParseIOEngine parses "auto", "blocking" or "io_uring".
func ParseIOEngine(s string) (IOEngine, error) {
	switch s {
	case "auto", "":
		return IOAuto, nil
	case "blocking":
		return IOBlocking, nil
	case "io_uring":
		return IOUring, nil
	}
	return 0, fmt.Errorf("I/O engine %q: want auto, io_uring or blocking", s)
}

// ringEntries is the depth of a File's io_uring: operations beyond it
// wait for a slot. The engine keeps far fewer in flight per device.
const ringEntries = 256

// File is a Device backed by a regular file or a block device.
//
// With O_DIRECT, requests whose buffer, offset or length is not aligned
// to the device's direct I/O alignment are bounced through an aligned
// buffer (read-modify-write for writes), which is correct but slower. The
// engine passes aligned buffers (AlignedBuffer) and never pays for it.
type File struct {
	path     string
	f        *os.File
	size     int64 // fixed at open; writes past it fail with ErrOutOfRange
	block    bool  // a block device, not a regular file
	direct   bool  // opened O_DIRECT
	readOnly bool
	// memAlign and offAlign are the O_DIRECT alignments of buffer address
	// and of file offset and length (statx STATX_DIOALIGN, else the
	// logical block size, else 4096). Powers of two, at most Alignment.
	memAlign, offAlign int64
	// lockFile, when not nil, holds the byte-range lock on the storage
	// below the device (a loop device's backing file, a partition's
	// disk; exclusive.go); closed with the device.
	lockFile *os.File

	// ring, when not nil, carries ReadAt, WriteAt and Sync (io_uring) on
	// descriptor fd; aio, when not nil (an O_DIRECT file with a ring),
	// carries ReadAtAsync. Close closes both before the file, so the
	// descriptor outlives every operation in the kernel.
	ring      *uring.Ring
	aio       *kaio.Context
	fd        int
	exclusive bool // flock taken (FileOptions.Exclusive)

	// rmwMu serialises unaligned O_DIRECT writes: two of them touching
	// different bytes of one aligned block would otherwise each write back
	// the other's stale copy.
	rmwMu  sync.Mutex
	closed atomic.Bool
}

var _ Device = (*File)(nil)

// openFile is os.OpenFile; tests replace it to simulate a filesystem
// without O_DIRECT.
var openFile = os.OpenFile

// OpenFile opens path, a regular file or a block device, as a Device. The
// file must exist; its size at open is the device size.
func OpenFile(path string, opts FileOptions) (*File, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	mode := st.Mode()
	block := mode&fs.ModeDevice != 0 && mode&fs.ModeCharDevice == 0
	if !block && !mode.IsRegular() {
		return nil, fmt.Errorf("blockdev: open %s: not a regular file or block device (%s): %w", path, mode.Type(), ErrNotSupported)
	}

	// An exclusive open identifies the storage first, to lock it too
	// (exclusive.go); init checks that the file opened is the one
	// identified.
	var id Identity
	if opts.Exclusive {
		if id, err = Identify(path); err != nil {
			return nil, err
		}
	}

	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	if opts.Exclusive && block {
		// NB: O_EXCL without O_CREAT on a block device means "claim it
		// exclusively" (EBUSY if mounted or claimed), not "create".
		flag |= unix.O_EXCL
	}
	flag |= unix.O_CLOEXEC

	direct := opts.Direct
	var f *os.File
	open := func() error {
		if direct {
			f, err = openFile(path, flag|unix.O_DIRECT, 0)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				log.Info("blockdev: O_DIRECT not supported, using the page cache", "path", path, "err", err)
				direct = false
			}
		}
		if !direct {
			f, err = openFile(path, flag, 0)
		}
		return err
	}
	if flag&unix.O_EXCL != 0 {
		// NB: a block device closed a moment ago after io_uring I/O
		// (ours, or another program's) stays claimed until the kernel
		// has torn that ring down.
		err = retryUnlessHeld(open, func() *BusyError { return host.claimed(path, id) }, unix.EBUSY)
	} else {
		err = open()
	}
	var be *BusyError
	if errors.As(err, &be) {
		return nil, be
	}
	if err != nil {
		return nil, fmt.Errorf("blockdev: open %s: %w", path, err)
	}
	d := &File{path: path, f: f, block: block, direct: direct, readOnly: opts.ReadOnly}
	if err := d.init(opts, id, st, log); err != nil {
		if d.aio != nil {
			d.aio.Close()
		}
		if d.ring != nil {
			d.ring.Close()
		}
		f.Close()
		if d.lockFile != nil {
			d.lockFile.Close()
		}
		return nil, err
	}
	return d, nil
}

// init takes the locks, learns the size and the direct I/O alignment.
func (d *File) init(opts FileOptions, id Identity, st fs.FileInfo, log *slog.Logger) error {
	if opts.Exclusive {
		if err := matches(d.f, id); err != nil {
			return fmt.Errorf("blockdev: open %s: %w", d.path, err)
		}
		d.exclusive = true
		err := retryUnlessHeld(func() error {
			return d.control(func(fd int) error { return unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) })
		}, func() *BusyError {
			return &BusyError{Path: d.path, Holders: lockHolders(d.f)}
		}, unix.EWOULDBLOCK)
		var be *BusyError
		if errors.As(err, &be) {
			return be
		}
		if err != nil {
			return fmt.Errorf("blockdev: lock %s: %w", d.path, err)
		}
		if err := d.lockStorage(id, opts.ReadOnly, log); err != nil {
			return err
		}
	}
	d.size = st.Size()
	var lbs int64
	if d.block {
		err := d.control(func(fd int) error {
			var sz uint64
			if err := ioctlPtr(fd, unix.BLKGETSIZE64, unsafe.Pointer(&sz)); err != nil {
				return fmt.Errorf("BLKGETSIZE64: %w", err)
			}
			d.size = int64(sz)
			n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
			if err != nil {
				return fmt.Errorf("BLKSSZGET: %w", err)
			}
			lbs = int64(n)
			return nil
		})
		if err != nil {
			return fmt.Errorf("blockdev: size of %s: %w", d.path, err)
		}
	}
	if err := d.initIO(opts.IO, log); err != nil {
		return err
	}
	if err := d.initDirect(lbs, log); err != nil {
		return err
	}
	if opts.AsyncReads {
		d.initAIO(log)
	}
	return nil
}

// initDirect sets the O_DIRECT alignments of an O_DIRECT file, or takes
// O_DIRECT off where the engine could not meet them.
func (d *File) initDirect(lbs int64, log *slog.Logger) error {
	if !d.direct {
		return nil
	}
	d.memAlign, d.offAlign = Alignment, Alignment
	if lbs > 0 {
		d.memAlign, d.offAlign = lbs, lbs
	}
	var stx unix.Statx_t
	err := d.control(func(fd int) error {
		return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
	})
	if err == nil && stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align != 0 {
		d.memAlign, d.offAlign = int64(stx.Dio_mem_align), int64(stx.Dio_offset_align)
	}
	ok := func(a int64) bool { return a > 0 && a <= Alignment && a&(a-1) == 0 }
	switch {
	case !ok(d.memAlign) || !ok(d.offAlign):
		// AlignedBuffer cannot satisfy it.
		log.Info("blockdev: direct I/O alignment too large, using the page cache", "path", d.path, "mem_align", d.memAlign, "offset_align", d.offAlign)
	case d.size%d.offAlign != 0:
		// The tail block could only be written by extending the file.
		log.Info("blockdev: size not a multiple of the direct I/O alignment, using the page cache", "path", d.path, "size", d.size, "offset_align", d.offAlign)
	default:
		return nil
	}
	return d.reopenBuffered()
}

// initIO sets up the io_uring of an IOAuto or IOUring file.
func (d *File) initIO(e IOEngine, log *slog.Logger) error {
	if e == IOBlocking {
		return nil
	}
	if err := d.control(func(fd int) error { d.fd = fd; return nil }); err != nil {
		return fmt.Errorf("blockdev: open %s: %w", d.path, err)
	}
	r, err := uring.Open(ringEntries)
	if err != nil {
		if e == IOUring {
			return fmt.Errorf("blockdev: open %s: %w", d.path, err)
		}
		log.Info("blockdev: io_uring unavailable, using blocking system calls", "path", d.path, "err", err)
		return nil
	}
	d.ring = r
	return nil
}

// initAIO gives an O_DIRECT file with a ring a native AIO context for
// ReadAtAsync (FileOptions.AsyncReads): its reads complete in the
// device's interrupt, where through the ring they wait for the thread
// that submitted them (package kaio). Without O_DIRECT they would
// complete inside io_submit, so such a file keeps the ring's reads, as
// does one whose kernel refuses a context (logged).
func (d *File) initAIO(log *slog.Logger) {
	if d.ring == nil || !d.direct {
		return
	}
	c, err := kaio.Open(ringEntries)
	if err != nil {
		log.Info("blockdev: native AIO unavailable, asynchronous reads through io_uring", "path", d.path, "err", err)
		return
	}
	d.aio = c
}

// IOEngine names the path the device's I/O takes: "io_uring",
// "io_uring+aio" (asynchronous reads through native AIO, the rest through
// io_uring) or "blocking".
func (d *File) IOEngine() string {
	switch {
	case d.aio != nil:
		return "io_uring+aio"
	case d.ring != nil:
		return "io_uring"
	}
	return "blocking"
}

// pread and pwrite are os.File's ReadAt and WriteAt (a short read only at
// the end, with io.EOF), through the ring when the file has one.
func (d *File) pread(p []byte, off int64) (int, error) {
	if d.ring == nil {
		return d.f.ReadAt(p, off)
	}
	n, err := d.ring.ReadAt(d.fd, p, off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, ringErr(err)
}

func (d *File) pwrite(p []byte, off int64) (int, error) {
	if d.ring == nil {
		return d.f.WriteAt(p, off)
	}
	n, err := d.ring.WriteAt(d.fd, p, off)
	return n, ringErr(err)
}

// ringErr reports a closed ring or AIO context as a closed file.
func ringErr(err error) error {
	if errors.Is(err, uring.ErrClosed) || errors.Is(err, kaio.ErrClosed) {
		return os.ErrClosed
	}
	return err
}

// reopenBuffered drops O_DIRECT on the open file (fcntl F_SETFL keeps the
// lock, which belongs to the open file description).
func (d *File) reopenBuffered() error {
	err := d.control(func(fd int) error {
		fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			return err
		}
		_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl&^unix.O_DIRECT)
		return err
	})
	if err != nil {
		return fmt.Errorf("blockdev: %s: clear O_DIRECT: %w", d.path, err)
	}
	d.direct = false
	return nil
}

// control runs fn on the file descriptor, safe against a concurrent Close.
func (d *File) control(fn func(fd int) error) error { return fdControl(d.f, fn) }

func ioctlPtr(fd int, req uint, arg unsafe.Pointer) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(arg))
	if e != 0 {
		return e
	}
	return nil
}

// Path is the path the device was opened with.
func (d *File) Path() string { return d.path }

// Direct reports whether the device is open with O_DIRECT.
func (d *File) Direct() bool { return d.direct }

// BlockDevice reports whether the path is a block device.
func (d *File) BlockDevice() bool { return d.block }

// Size is the device size at open.
func (d *File) Size() int64 { return d.size }

// aligned reports whether an O_DIRECT request of p at off needs no bounce.
func (d *File) aligned(p []byte, off int64) bool {
	if len(p) == 0 {
		return true
	}
	return int64(uintptr(unsafe.Pointer(&p[0])))&(d.memAlign-1) == 0 &&
		off&(d.offAlign-1) == 0 && int64(len(p))&(d.offAlign-1) == 0
}

// opErr wraps an I/O error with the path, operation and offset; a closed
// file gives ErrClosed.
func (d *File) opErr(op string, n int, off int64, err error) error {
	if errors.Is(err, os.ErrClosed) || d.closed.Load() {
		err = ErrClosed
	} else if pe, ok := err.(*fs.PathError); ok {
		err = pe.Err
	}
	return fmt.Errorf("blockdev: %s %d bytes at %d on %s: %w", op, n, off, d.path, err)
}

// ReadAt reads len(p) bytes at off. Like os.File, a read reaching the end
// of the device returns the bytes before it and io.EOF (unwrapped).
func (d *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, d.opErr("read", len(p), off, ErrOutOfRange)
	}
	if d.closed.Load() {
		return 0, d.opErr("read", len(p), off, ErrClosed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off >= d.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := d.size - off; int64(want) > rest {
		want = int(rest)
	}
	var n int
	var err error
	if d.direct && !d.aligned(p[:want], off) {
		n, err = d.bounceRead(p[:want], off)
	} else {
		n, err = d.pread(p[:want], off)
	}
	if err == io.EOF && n < want {
		// NB: the file shrank under us; say so rather than hand back a
		// silently short read of a device whose size we promised.
		return n, d.opErr("read", want, off, io.ErrUnexpectedEOF)
	}
	if err != nil && err != io.EOF {
		return n, d.opErr("read", want, off, err)
	}
	if want < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// span returns the aligned range covering [off, off+n).
func (d *File) span(off int64, n int) (start, end int64) {
	start = off &^ (d.offAlign - 1)
	end = (off + int64(n) + d.offAlign - 1) &^ (d.offAlign - 1)
	return start, end
}

// bounceRead reads the aligned span around p into an aligned buffer and
// copies p's part out. The span ends within the device: init made the size
// a multiple of offAlign.
func (d *File) bounceRead(p []byte, off int64) (int, error) {
	start, end := d.span(off, len(p))
	buf := AlignedBuffer(int(end - start))
	n, err := d.pread(buf, start)
	got := max(0, min(int64(n)-(off-start), int64(len(p))))
	copy(p, buf[off-start:off-start+got])
	if err == io.EOF && got == int64(len(p)) {
		err = nil
	}
	return int(got), err
}

// checkWrite refuses a write of p at off that the device cannot take:
// read-only, outside the device, or closed.
func (d *File) checkWrite(p []byte, off int64) error {
	if d.readOnly {
		return d.opErr("write", len(p), off, ErrReadOnly)
	}
	if off < 0 || off > d.size || int64(len(p)) > d.size-off {
		return d.opErr("write", len(p), off, fmt.Errorf("device size %d: %w", d.size, ErrOutOfRange))
	}
	if d.closed.Load() {
		return d.opErr("write", len(p), off, ErrClosed)
	}
	return nil
}

// WriteAt writes p at off. The write must lie within the device.
func (d *File) WriteAt(p []byte, off int64) (int, error) {
	if err := d.checkWrite(p, off); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if d.direct && !d.aligned(p, off) {
		n, err = d.bounceWrite(p, off)
	} else {
		n, err = d.pwrite(p, off)
	}
	if err != nil {
		return n, d.opErr("write", len(p), off, err)
	}
	return n, nil
}

// bounceWrite writes p through an aligned buffer. If only the memory is
// misaligned that is a copy; otherwise the partial blocks at either end are
// read first (read-modify-write) under rmwMu.
func (d *File) bounceWrite(p []byte, off int64) (int, error) {
	start, end := d.span(off, len(p))
	buf := AlignedBuffer(int(end - start))
	if start != off || end != off+int64(len(p)) {
		d.rmwMu.Lock()
		defer d.rmwMu.Unlock()
		// Only the first and last aligned blocks hold bytes we keep.
		head := buf[:d.offAlign]
		if _, err := d.pread(head, start); err != nil {
			return 0, fmt.Errorf("read-modify-write, read at %d: %w", start, err)
		}
		if end-start > d.offAlign {
			tail := buf[end-start-d.offAlign:]
			if _, err := d.pread(tail, end-d.offAlign); err != nil {
				return 0, fmt.Errorf("read-modify-write, read at %d: %w", end-d.offAlign, err)
			}
		}
	}
	copy(buf[off-start:], p)
	n, err := d.pwrite(buf, start)
	written := max(0, min(int64(n)-(off-start), int64(len(p))))
	return int(written), err
}

// Sync makes completed writes durable: fdatasync(2), which also flushes the
// device's volatile write cache.
//
// NB: a blocking system call even when the file has a ring. The ring
// cannot complete an fdatasync inline: the kernel hands it to an io-wq
// worker, and its completion then wakes the poller goroutine through the
// eventfd, about 40-50 µs more than the call itself on an idle 2-core
// machine (a 4 KiB write + sync: ~85-105 µs blocking, ~240-260 µs through
// the ring; the sync alone ~70 µs against ~115 µs). A FLUSH waits for
// exactly this, one at a time; a sync holding a thread costs nothing
// comparable.
func (d *File) Sync() error {
	if d.closed.Load() {
		return fmt.Errorf("blockdev: sync %s: %w", d.path, ErrClosed)
	}
	err := d.control(unix.Fdatasync)
	if err != nil {
		return fmt.Errorf("blockdev: sync %s: %w", d.path, d.closedOr(err))
	}
	return nil
}

func (d *File) closedOr(err error) error {
	if errors.Is(err, os.ErrClosed) || d.closed.Load() {
		return ErrClosed
	}
	return err
}

// Discard punches a hole (regular file) or issues BLKDISCARD (block
// device). Where neither is supported it returns an error wrapping
// ErrNotSupported; the data is then unchanged, which Discard allows.
func (d *File) Discard(off, length int64) error {
	where := func(err error) error {
		return fmt.Errorf("blockdev: discard %d bytes at %d on %s: %w", length, off, d.path, err)
	}
	if d.readOnly {
		return where(ErrReadOnly)
	}
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return where(fmt.Errorf("device size %d: %w", d.size, ErrOutOfRange))
	}
	if d.closed.Load() {
		return where(ErrClosed)
	}
	if length == 0 {
		return nil
	}
	err := d.control(func(fd int) error {
		if d.block {
			r := [2]uint64{uint64(off), uint64(length)}
			return ioctlPtr(fd, unix.BLKDISCARD, unsafe.Pointer(&r))
		}
		return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY), errors.Is(err, unix.ENOSYS):
		return where(fmt.Errorf("%w: %w", ErrNotSupported, err))
	default:
		return where(d.closedOr(err))
	}
}

// Close releases the file and its lock. It does not sync.
func (d *File) Close() error {
	if d.closed.Swap(true) {
		return fmt.Errorf("blockdev: close %s: %w", d.path, ErrClosed)
	}
	var err error
	if d.aio != nil {
		// First, with the ring: it waits for the reads in flight on the
		// descriptor.
		err = d.aio.Close()
	}
	if d.ring != nil {
		err = errors.Join(err, d.ring.Close())
		if d.exclusive {
			// NB: the kernel tears a ring down in the background and
			// may hold the open file (hence its locks) a moment after
			// we close it: unlock now, so that a reopen right after
			// Close is not refused as busy.
			err = errors.Join(err, d.control(func(fd int) error {
				un := unix.Flock_t{Type: unix.F_UNLCK, Whence: io.SeekStart} // the whole file
				return errors.Join(unix.Flock(fd, unix.LOCK_UN), unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &un))
			}))
		}
	}
	err = errors.Join(err, d.f.Close())
	if d.lockFile != nil {
		// After the device: its lock covers the storage until then.
		err = errors.Join(err, d.lockFile.Close())
	}
	if err != nil {
		return fmt.Errorf("blockdev: close %s: %w", d.path, err)
	}
	return nil
}

// AsyncReader is implemented by devices that can start a read with no
// goroutine waiting for it (a File with io_uring; its O_DIRECT reads go
// through native AIO).
type AsyncReader interface {
	// ReadAtAsync starts reading len(p) bytes at off, all within the
	// device, and reports true; done then runs exactly once, on another
	// goroutine, and must not block. It reports false, starting
	// nothing, when it cannot (the caller reads with ReadAt instead).
	// The read may wait, queued, for Unplug or the device's next
	// submission, so that a burst of reads reaches the kernel in one
	// system call: the caller must Unplug before it waits for anything.
	ReadAtAsync(p []byte, off int64, done func(error)) bool
	// Unplug submits the queued reads.
	Unplug()
}

var _ AsyncReader = (*File)(nil)

// ReadAtAsync implements AsyncReader for a File with io_uring, for reads
// that need no bounce buffer: through native AIO on an O_DIRECT file,
// else through the ring.
func (d *File) ReadAtAsync(p []byte, off int64, done func(error)) bool {
	if d.ring == nil || len(p) == 0 || off < 0 || off > d.size || int64(len(p)) > d.size-off ||
		d.closed.Load() || (d.direct && !d.aligned(p, off)) {
		return false
	}
	start := d.ring.ReadAtAsyncPlugged
	if d.aio != nil {
		start = d.aio.ReadAtPlugged
	}
	err := start(d.fd, p, off, func(n int, err error) {
		if err == nil && n < len(p) {
			// NB: the file shrank under us (see ReadAt).
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			err = d.opErr("read", len(p), off, ringErr(err))
		}
		done(err)
	})
	return err == nil
}

// Unplug implements AsyncReader. Only the path ReadAtAsync queues reads on
// (the AIO context, else the ring) has any to submit.
func (d *File) Unplug() {
	switch {
	case d.aio != nil:
		d.aio.Unplug()
	case d.ring != nil:
		d.ring.Unplug()
	}
}
