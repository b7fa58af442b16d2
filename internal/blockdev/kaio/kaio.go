//go:build linux

// Package kaio is a small Linux native AIO context (io_setup(2),
// io_submit(2)) for blockdev's asynchronous reads of O_DIRECT files:
// reads queued from any goroutine and handed to the kernel in one
// io_submit, completed by one poller goroutine that sleeps in Go's network
// poller on an eventfd the kernel signals.
//
// Why, beside blockdev's io_uring ring: an O_DIRECT read through io_uring
// completes as task work of the thread that submitted it, which the kernel
// must interrupt or wake before the completion is even posted; on two
// cores a read hit then waits for that thread about as long as for the
// device. A native AIO read of an O_DIRECT file completes in the device's
// interrupt: the event is posted and the eventfd signalled there, and the
// poller's thread is the only one woken (issue 16; measured in
// docs/design.md). The poller reads the kernel's completion ring in user
// space (struct aio_ring, mapped at the context's address), as
// io_getevents(2) would, and never reads the eventfd: the netpoller's
// edge-triggered epoll reports every signal.
//
// At most entries reads are in flight (further ones wait for a slot), so
// io_submit never finds the kernel's ring full. Buffers must not move
// until the callback, as the kernel holds only their address: every
// buffer is stored in its slot, which puts it on the heap. A read of a file
// without O_DIRECT completes inside io_submit, which then blocks: blockdev
// uses a Context only for O_DIRECT files.
package kaio

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel ABI (include/uapi/linux/aio_abi.h and fs/aio.c), little endian.
const (
	cmdPread  = 0
	flagResfd = 1 << 0

	ringMagic = 0xa10a10a1
)

// iocb is struct iocb (64 bytes).
type iocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fd        uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// event is struct io_event (32 bytes).
type event struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

// ringHeader is the head of the kernel's completion ring (struct
// aio_ring); nr io_events follow it.
type ringHeader struct {
	id, nr, head, tail, magic, compatFeatures, incompatFeatures, headerLength uint32
}

// ErrClosed is returned by reads on a closed context.
var ErrClosed = errors.New("kaio: context closed")

// Context is one AIO context and its poller.
type Context struct {
	ctx uintptr // aio_context_t: the address of the kernel's ring
	efd *os.File
	// resfd is efd's descriptor, for the iocbs. NB: not efd.Fd(), which
	// would put the descriptor back in blocking mode.
	resfd uint32

	mu      sync.Mutex
	closed  bool
	pending []uint32  // slots of the queued reads, in order (guarded by mu)
	iocbs   []uintptr // scratch: their iocbs' addresses, for io_submit

	slots  []slot
	free   chan uint32
	active sync.WaitGroup // reads queued or in flight
	poller sync.WaitGroup

	reapMu sync.Mutex // one reaper at a time: the ring has one consumer
	events []event    // io_getevents' buffer, when the ring cannot be read
}

// slot is one read: the iocb handed to the kernel and what completes it.
// The submitter fills it before taking mu; the reaper reads it after
// taking mu once, which orders the two.
type slot struct {
	cb   iocb
	buf  []byte
	done int
	fn   func(n int, err error)
}

// Open sets up a context with room for entries reads in flight and starts
// its poller. It fails where the kernel has no native AIO or refuses a
// context (fs.aio-max-nr reached).
func Open(entries int) (*Context, error) {
	if entries <= 0 || entries > 4096 {
		return nil, fmt.Errorf("kaio: %d entries: want 1..4096", entries)
	}
	c := &Context{}
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&c.ctx)), 0); errno != 0 {
		return nil, fmt.Errorf("kaio: io_setup: %w", errno)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Syscall(unix.SYS_IO_DESTROY, c.ctx, 0, 0)
		return nil, fmt.Errorf("kaio: eventfd: %w", err)
	}
	// A non-blocking descriptor: os.NewFile puts it in the netpoller.
	c.efd, c.resfd = os.NewFile(uintptr(efd), "aio-eventfd"), uint32(efd)
	rc, err := c.efd.SyscallConn()
	if err != nil {
		c.efd.Close()
		unix.Syscall(unix.SYS_IO_DESTROY, c.ctx, 0, 0)
		return nil, fmt.Errorf("kaio: eventfd: %w", err)
	}
	c.slots = make([]slot, entries)
	c.free = make(chan uint32, entries)
	for i := range c.slots {
		c.free <- uint32(i)
	}
	c.events = make([]event, entries)
	c.pending = make([]uint32, 0, entries)
	c.iocbs = make([]uintptr, 0, entries)
	c.poller.Add(1)
	go c.poll(rc)
	return c, nil
}

// ReadAtPlugged queues a read of len(p) bytes at off from fd, for Unplug
// (or a later submission) to hand to the kernel with the others queued
// meanwhile. cb gets the bytes read (fewer only at the end of the file) or
// an error, on the poller goroutine (or a goroutine calling ReadAtPlugged
// or Unplug, for a read the kernel refused at submission), and must not
// block. p must not be touched until cb. It waits only for a free slot;
// an error means the read was not queued and cb will not be called. The
// caller must Unplug before it waits for anything these reads may hold
// up.
func (c *Context) ReadAtPlugged(fd int, p []byte, off int64, cb func(n int, err error)) error {
	if len(p) == 0 {
		cb(0, nil)
		return nil
	}
	id := c.takeSlot()
	s := &c.slots[id]
	s.buf, s.done, s.fn = p, 0, cb
	s.cb = iocb{data: uint64(id), opcode: cmdPread, fd: uint32(fd), buf: uint64(uintptr(unsafe.Pointer(&p[0]))),
		nbytes: uint64(len(p)), offset: off, flags: flagResfd, resfd: c.resfd}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.buf, s.fn = nil, nil
		c.free <- id
		return ErrClosed
	}
	c.active.Add(1)
	c.pending = append(c.pending, id)
	c.mu.Unlock()
	return nil
}

// takeSlot waits for an idle slot. When none is idle, some may hold
// queued reads, which only a submission starts: it unplugs first.
func (c *Context) takeSlot() uint32 {
	select {
	case id := <-c.free:
		return id
	default:
		c.Unplug()
		return <-c.free
	}
}

// Unplug hands the queued reads to the kernel.
func (c *Context) Unplug() {
	c.mu.Lock()
	refused := c.submitLocked()
	c.mu.Unlock()
	c.finishRefused(refused)
}

// refusal is a read the kernel refused at submission.
type refusal struct {
	id  uint32
	err error
}

// submitLocked hands c.pending to the kernel in one io_submit (more if it
// takes them in parts). A read refused at submission (EBADF, EINVAL for a
// misaligned O_DIRECT read) is returned, to be finished outside mu; EINTR
// and EAGAIN (the kernel short of memory) are tried again.
func (c *Context) submitLocked() []refusal {
	var refused []refusal
	for tries := 0; len(c.pending) > 0; {
		c.iocbs = c.iocbs[:0]
		for _, id := range c.pending {
			c.iocbs = append(c.iocbs, uintptr(unsafe.Pointer(&c.slots[id].cb)))
		}
		n, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, c.ctx, uintptr(len(c.iocbs)), uintptr(unsafe.Pointer(&c.iocbs[0])))
		switch {
		case errno == 0 && n > 0:
			c.dropLocked(int(n))
			tries = 0
		case errno == unix.EINTR:
		case (errno == unix.EAGAIN || errno == 0) && tries < 2000: // about 2 s
			tries++
			time.Sleep(time.Duration(min(tries, 100)) * 10 * time.Microsecond)
		default:
			// The first read was refused (io_submit reports the error
			// only when it submitted nothing).
			err := error(errno)
			if errno == 0 {
				err = errors.New("io_submit takes nothing")
			}
			refused = append(refused, refusal{c.pending[0], fmt.Errorf("kaio: io_submit: %w", err)})
			c.dropLocked(1)
		}
	}
	return refused
}

// dropLocked removes the first n queued reads.
func (c *Context) dropLocked(n int) {
	c.pending = c.pending[:copy(c.pending, c.pending[n:])]
}

func (c *Context) finishRefused(refused []refusal) {
	for _, r := range refused {
		c.finish(r.id, r.err)
	}
}

// poll is the poller goroutine, owned by the context (Close stops it). It
// reaps at every signal of the eventfd, which it never reads: the
// netpoller's edge-triggered epoll reports every signal, so reaping is all
// a wake-up needs.
func (c *Context) poll(rc syscall.RawConn) {
	defer c.poller.Done()
	rc.Read(func(uintptr) bool {
		c.reapMu.Lock()
		c.reap()
		c.reapMu.Unlock()
		return false // wait for the next signal, until Close closes the eventfd
	})
}

// userReap reads the kernel's ring in user space where its layout is the
// known one; tests turn it off to run the io_getevents path.
var userReap = true

// reap completes every posted event. Caller holds reapMu.
func (c *Context) reap() {
	// NB: the context id is the address of the kernel's mapping, not Go
	// memory; read as a pointer it is never followed by the collector.
	base := *(*unsafe.Pointer)(unsafe.Pointer(&c.ctx))
	ring := (*ringHeader)(base)
	if !userReap || ring.magic != ringMagic || ring.incompatFeatures != 0 || ring.headerLength != uint32(unsafe.Sizeof(*ring)) {
		c.getEvents()
		return
	}
	evs := unsafe.Slice((*event)(unsafe.Add(base, unsafe.Sizeof(*ring))), ring.nr)
	for {
		head := atomic.LoadUint32(&ring.head)
		tail := atomic.LoadUint32(&ring.tail) // the kernel writes the event, then tail
		if head == tail {
			return
		}
		c.mu.Lock()
		c.mu.Unlock() //nolint:staticcheck // an empty critical section, on purpose: see slot
		for ; head != tail; head = (head + 1) % ring.nr {
			ev := evs[head%ring.nr]
			// Free the event before completing: the read may be
			// submitted again.
			atomic.StoreUint32(&ring.head, (head+1)%ring.nr)
			c.complete(uint32(ev.data), ev.res)
		}
	}
}

// getEvents reaps through io_getevents, for a ring this package does not
// know how to read.
func (c *Context) getEvents() {
	var zero unix.Timespec
	for {
		n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, c.ctx, 0, uintptr(len(c.events)),
			uintptr(unsafe.Pointer(&c.events[0])), uintptr(unsafe.Pointer(&zero)), 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 || n == 0 {
			return
		}
		c.mu.Lock()
		c.mu.Unlock() //nolint:staticcheck // see reap
		for _, ev := range c.events[:n] {
			c.complete(uint32(ev.data), ev.res)
		}
	}
}

// complete handles the event of the read in slot id: the rest of a short
// read is submitted again; otherwise the read is finished.
func (c *Context) complete(id uint32, res int64) {
	if id >= uint32(len(c.slots)) || c.slots[id].fn == nil {
		return // not ours: the kernel echoes aio_data
	}
	s := &c.slots[id]
	switch {
	case res == -int64(unix.EINTR) || res == -int64(unix.EAGAIN):
	case res < 0:
		c.finish(id, syscall.Errno(-res))
		return
	case res == 0:
		c.finish(id, nil) // the end of the file
		return
	default:
		s.done += int(res)
		if s.done >= len(s.buf) {
			c.finish(id, nil)
			return
		}
		s.cb.offset += res
	}
	q := s.buf[s.done:]
	s.cb.buf = uint64(uintptr(unsafe.Pointer(&q[0])))
	s.cb.nbytes = uint64(len(q))
	c.mu.Lock()
	c.pending = append(c.pending, id) // NB: Close waits for this read (active)
	refused := c.submitLocked()
	c.mu.Unlock()
	c.finishRefused(refused)
}

// finish frees slot id and calls its callback with the bytes read so far.
func (c *Context) finish(id uint32, err error) {
	s := &c.slots[id]
	fn, buf, n := s.fn, s.buf, s.done
	s.fn, s.buf = nil, nil
	c.free <- id
	c.active.Done()
	fn(n, err)
	runtime.KeepAlive(buf)
}

// Close submits what is queued, waits for every read, stops the poller
// and destroys the context. Later reads fail with ErrClosed.
func (c *Context) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	c.closed = true
	refused := c.submitLocked()
	c.mu.Unlock()
	c.finishRefused(refused)
	c.active.Wait()
	c.efd.Close() // the poller's wait fails: it returns
	c.poller.Wait()
	if _, _, errno := unix.Syscall(unix.SYS_IO_DESTROY, c.ctx, 0, 0); errno != 0 {
		return fmt.Errorf("kaio: io_destroy: %w", errno)
	}
	return nil
}
