//go:build linux

// Package uring is a small io_uring ring for the device I/O of blockdev:
// reads, writes and fdatasync submitted from any goroutine, completed by
// one poller goroutine that sleeps in Go's network poller (an eventfd the
// kernel signals on every completion), so that no OS thread blocks in a
// system call per request.
//
// Why: a blocking pread(2) of O_DIRECT data holds an OS thread and, past a
// few microseconds, its P; with 32 reads in flight on two cores the Go
// scheduler hands Ps back and forth and a read hit reaches half the
// device's rate (issue 16). Submitting to a ring costs one short
// io_uring_enter(2) that does not wait, and the completion wakes exactly
// the goroutine that waits for it.
//
// The ring is sized at Open; at most that many operations are in flight
// (further submitters wait for a slot), and the completion queue is twice
// as large, so it never overflows. Buffers must stay valid until the call
// returns, which the blocking API guarantees (runtime.KeepAlive), and must
// not move: the kernel holds only their address. A buffer on a goroutine's
// stack would move when the stack grows while its owner waits, and the
// kernel would write into the old stack; so every buffer is stored in its
// slot (slot.buf), which makes the compiler put it on the heap.
//
// Open fails where the kernel has no io_uring or refuses it (seccomp,
// kernel.io_uring_disabled, an old kernel without IORING_OP_READ/WRITE):
// callers keep the blocking path then.
package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel ABI (include/uapi/linux/io_uring.h).
const (
	opNop   = 0
	opFsync = 3
	opRead  = 22
	opWrite = 23

	fsyncDatasync = 1 << 0

	setupCQSize = 1 << 3

	featSingleMmap = 1 << 0
	featNoDrop     = 1 << 1

	enterGetEvents = 1 << 0

	registerEventfd = 4
	registerProbe   = 8

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	probeOpSupported = 1 << 0
)

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

// sqe is struct io_uring_sqe (64 bytes).
type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	pad         uint64
}

// cqe is struct io_uring_cqe (16 bytes).
type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// probe is struct io_uring_probe with room for every opcode up to 255.
type probe struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
	ops    [256]probeOp
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

func init() {
	// The ABI sizes; a mismatch is a build for a platform we never
	// tested, and must not reach the kernel.
	if unsafe.Sizeof(sqe{}) != 64 || unsafe.Sizeof(cqe{}) != 16 || unsafe.Sizeof(params{}) != 120 {
		panic("uring: struct sizes do not match the kernel ABI")
	}
}

// slot is one operation in flight: the poller sends its result on done
// (through the channel, not a field: the race detector cannot see that
// the kernel orders the poller after the submitter).
type slot struct {
	done chan int32
	// buf is the synchronous operation's buffer, stored here only so
	// that the compiler allocates every buffer passed in on the heap.
	buf []byte
	// async, when not nil, is the operation of ReadAtAsync or
	// WriteAtAsync in this slot: the poller completes it, with no one
	// waiting on done.
	async *asyncOp
}

// asyncOp is a read or write whose caller does not wait: the poller
// resubmits what a short transfer left and calls cb once.
type asyncOp struct {
	e    sqe    // as first submitted
	buf  []byte // the whole transfer, kept reachable until cb
	done int    // bytes transferred so far
	cb   func(n int, err error)
}

// Ring is an io_uring instance. Its methods are safe for concurrent use.
type Ring struct {
	fd      int
	ringMem []byte // SQ and CQ rings (one mapping: IORING_FEAT_SINGLE_MMAP)
	sqeMem  []byte

	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []cqe

	efd *os.File // signalled by the kernel on every completion

	// mu serialises submission: filling SQEs, the SQ tail and
	// io_uring_enter. pending counts SQEs in the ring the kernel has
	// not consumed yet (an io_uring_enter that failed transiently).
	mu      sync.Mutex
	pending uint32
	closed  bool
	broken  error // io_uring_enter failed for good: the ring takes no more

	free   chan uint32 // indexes of idle slots; a submitter takes one
	slots  []slot
	active sync.WaitGroup // operations submitted and not completed
	poller sync.WaitGroup // the poller goroutine
}

// ErrClosed is returned by operations on a closed ring.
var ErrClosed = errors.New("uring: ring closed")

// Open sets up a ring with room for entries operations in flight (a power
// of two, at most 4096) and starts its poller, after checking that the
// kernel supports the operations used here.
func Open(entries int) (*Ring, error) {
	if entries <= 0 || entries > 4096 || entries&(entries-1) != 0 {
		return nil, fmt.Errorf("uring: %d entries: want a power of two in 1..4096", entries)
	}
	p := params{flags: setupCQSize, cqEntries: uint32(2 * entries)}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("uring: io_uring_setup: %w", errno)
	}
	r := &Ring{fd: int(fd)}
	if err := r.setup(&p); err != nil {
		r.unmap()
		unix.Close(r.fd)
		return nil, err
	}
	r.poller.Add(1)
	go r.poll()
	return r, nil
}

func (r *Ring) setup(p *params) error {
	if p.features&featSingleMmap == 0 || p.features&featNoDrop == 0 {
		return fmt.Errorf("uring: kernel too old (features %#x lack SINGLE_MMAP or NODROP)", p.features)
	}
	if err := r.probeOps(); err != nil {
		return err
	}
	size := max(p.sqOff.array+p.sqEntries*4, p.cqOff.cqes+p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	m, err := unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: map rings: %w", err)
	}
	r.ringMem = m
	s, err := unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fmt.Errorf("uring: map submission entries: %w", err)
	}
	r.sqeMem = s
	u32 := func(off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }
	r.sqTail = u32(p.sqOff.tail)
	r.sqMask = *u32(p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(u32(p.sqOff.array), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&s[0])), p.sqEntries)
	r.cqHead = u32(p.cqOff.head)
	r.cqTail = u32(p.cqOff.tail)
	r.cqMask = *u32(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Pointer(&m[p.cqOff.cqes])), p.cqEntries)

	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("uring: eventfd: %w", err)
	}
	efd32 := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&efd32)), 1, 0, 0); errno != 0 {
		unix.Close(efd)
		return fmt.Errorf("uring: register eventfd: %w", errno)
	}
	// A non-blocking descriptor: os.NewFile puts it in the netpoller.
	r.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")

	r.slots = make([]slot, p.sqEntries)
	r.free = make(chan uint32, p.sqEntries)
	for i := range r.slots {
		r.slots[i].done = make(chan int32, 1)
		r.free <- uint32(i)
	}
	return nil
}

// probeOps checks that the kernel knows READ, WRITE and FSYNC.
func (r *Ring) probeOps() error {
	var pr probe
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerProbe, uintptr(unsafe.Pointer(&pr)), uintptr(len(pr.ops)), 0, 0); errno != 0 {
		return fmt.Errorf("uring: probe opcodes: %w", errno)
	}
	for _, op := range []uint8{opRead, opWrite, opFsync} {
		if op > pr.lastOp || pr.ops[op].flags&probeOpSupported == 0 {
			return fmt.Errorf("uring: kernel lacks opcode %d", op)
		}
	}
	return nil
}

func (r *Ring) unmap() {
	if r.sqeMem != nil {
		unix.Munmap(r.sqeMem)
		r.sqeMem = nil
	}
	if r.ringMem != nil {
		unix.Munmap(r.ringMem)
		r.ringMem = nil
	}
}

// Close waits for the operations in flight, stops the poller and releases
// the ring. Later operations fail with ErrClosed.
func (r *Ring) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return ErrClosed
	}
	r.closed = true
	r.mu.Unlock()
	r.Unplug() // plugged operations are in flight too
	r.active.Wait()
	r.efd.Close() // the poller's read fails: it returns
	r.poller.Wait()
	r.unmap()
	return unix.Close(r.fd)
}

// poll is the poller goroutine, owned by the ring (Close stops it): it
// sleeps on the eventfd in the netpoller and completes what the kernel
// posted.
func (r *Ring) poll() {
	defer r.poller.Done()
	var b [8]byte
	for {
		r.reap()
		if _, err := r.efd.Read(b[:]); err != nil {
			return // closed by Close, after every operation completed
		}
	}
}

// reap completes every posted CQE. Only the poller reaps.
func (r *Ring) reap() {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	if head == tail {
		return
	}
	// Every submitter of these CQEs filled its slot under mu before
	// entering the ring: taking mu once orders those writes before our
	// reads for the memory model (the kernel orders them in fact).
	r.mu.Lock()
	r.mu.Unlock() //nolint:staticcheck // an empty critical section, on purpose
	for ; head != tail; head++ {
		c := r.cqes[head&r.cqMask]
		// Free the CQE before completing: the slot's next operation
		// may post one.
		atomic.StoreUint32(r.cqHead, head+1)
		s := &r.slots[c.userData]
		if s.async != nil {
			r.complete(uint32(c.userData), c.res)
			continue
		}
		s.done <- c.res
	}
}

// complete handles the CQE of the asynchronous operation in slot id: a
// retry or the rest of a short transfer goes back into the ring in the
// same slot; otherwise the slot is freed and the callback called.
func (r *Ring) complete(id uint32, res int32) {
	a := r.slots[id].async
	n, again, err := step(a.e.opcode, res)
	a.done += n
	if again || (err == nil && n > 0 && a.done < len(a.buf)) {
		err = r.resubmit(id, a)
	}
	if err == errResubmitted {
		return
	}
	r.slots[id].async = nil
	r.free <- id
	r.active.Done()
	a.cb(a.done, err)
	runtime.KeepAlive(a.buf)
}

var errResubmitted = errors.New("uring: resubmitted")

// resubmit puts the rest of a's transfer back into the ring in slot id.
func (r *Ring) resubmit(id uint32, a *asyncOp) error {
	e := a.e
	q := a.buf[a.done:]
	e.off += uint64(a.done)
	e.addr = uint64(uintptr(unsafe.Pointer(&q[0])))
	e.len = uint32(len(q))
	e.userData = uint64(id)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken != nil {
		return r.broken
	}
	// NB: Close waits for this operation (active), so the ring is not
	// closed under it.
	r.pushLocked(e)
	if err := r.enterLocked(); err != nil {
		return err
	}
	return errResubmitted
}

// pushLocked appends e to the submission queue.
func (r *Ring) pushLocked(e sqe) {
	tail := *r.sqTail
	i := tail & r.sqMask
	r.sqes[i] = e
	r.sqArray[i] = i
	atomic.StoreUint32(r.sqTail, tail+1)
	r.pending++
}

// submit puts e (userData set to the slot id) into the ring; async, when
// not nil, makes it an asynchronous operation of that slot. After an
// error the slot is the caller's again, except when pushed: the SQE is in
// a ring that failed for good, and the slot stays taken.
func (r *Ring) submit(id uint32, e sqe, async *asyncOp, plug bool) (pushed bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closed:
		return false, ErrClosed
	case r.broken != nil:
		return false, r.broken
	}
	r.slots[id].async = async
	r.pushLocked(e)
	if plug {
		// Left in the ring for Unplug or the next submission to enter.
		r.active.Add(1)
		return true, nil
	}
	if err := r.enterLocked(); err != nil {
		return true, err
	}
	r.active.Add(1)
	return true, nil
}

// startAsync submits an asynchronous read or write of buf; cb is called
// once, from the poller goroutine, when all of it is transferred, at the
// end of the file, or on an error. It waits only for a free slot. An
// error means cb will not be called.
func (r *Ring) startAsync(op uint8, fd int, buf []byte, off int64, cb func(n int, err error), plug bool) error {
	if len(buf) == 0 {
		cb(0, nil)
		return nil
	}
	id := r.takeSlot()
	e := sqe{opcode: op, fd: int32(fd), off: uint64(off), addr: uint64(uintptr(unsafe.Pointer(&buf[0]))),
		len: uint32(len(buf)), userData: uint64(id)}
	if pushed, err := r.submit(id, e, &asyncOp{e: e, buf: buf, cb: cb}, plug); err != nil {
		if !pushed {
			r.free <- id
		}
		return err
	}
	return nil
}

// ReadAtAsync starts a read of len(p) bytes at off from fd. cb gets the
// bytes read (fewer only at the end of the file) or an error; it runs on
// the ring's poller goroutine and must not block (it holds up every
// completion of the ring). p must not be touched until cb. An error
// means the read did not start and cb will not be called.
func (r *Ring) ReadAtAsync(fd int, p []byte, off int64, cb func(n int, err error)) error {
	return r.startAsync(opRead, fd, p, off, cb, false)
}

// ReadAtAsyncPlugged is ReadAtAsync that leaves the read in the
// submission queue: Unplug, or any later submission, hands it to the
// kernel with the others queued meanwhile in one io_uring_enter (and the
// block layer gets them as one plugged batch). The caller must Unplug
// before it waits for anything these reads may hold up.
func (r *Ring) ReadAtAsyncPlugged(fd int, p []byte, off int64, cb func(n int, err error)) error {
	return r.startAsync(opRead, fd, p, off, cb, true)
}

// Unplug hands the queued submissions to the kernel.
func (r *Ring) Unplug() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending == 0 || r.broken != nil {
		return
	}
	r.enterLocked() // a failure breaks the ring: later operations get it
}

// WriteAtAsync is ReadAtAsync for a write of p.
func (r *Ring) WriteAtAsync(fd int, p []byte, off int64, cb func(n int, err error)) error {
	return r.startAsync(opWrite, fd, p, off, cb, false)
}

// do submits one operation and waits for its result (>= 0, or a negated
// errno). buf is kept alive until the kernel is done with it.
func (r *Ring) do(e sqe, buf []byte) (int32, error) {
	id := r.takeSlot()
	e.userData = uint64(id)
	r.slots[id].buf = buf // buf escapes: see the package comment
	if pushed, err := r.submit(id, e, nil, false); err != nil {
		if !pushed {
			r.free <- id
		}
		return 0, err
	}
	res := <-r.slots[id].done
	r.slots[id].buf = nil
	r.free <- id
	r.active.Done()
	return res, nil
}

// takeSlot waits for an idle slot. When every slot is taken, some may
// hold plugged SQEs, which only an enter completes: it unplugs first.
func (r *Ring) takeSlot() uint32 {
	select {
	case id := <-r.free:
		return id
	default:
		r.Unplug()
		return <-r.free
	}
}

// enterLocked hands the pending SQEs to the kernel; it never waits for
// completions. Transient refusals (EINTR; EAGAIN and EBUSY when the
// kernel is short of memory or completions) are retried. Any other
// failure is the ring's itself (errors of an operation come in its CQE):
// it sets r.broken, which every later operation gets. Nothing enters the
// ring again then, so the kernel never sees the SQEs left in it nor
// their buffers; their slots stay taken.
func (r *Ring) enterLocked() error {
	for tries := 0; r.pending > 0; tries++ {
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(r.pending), 0, 0, 0, 0)
		switch errno {
		case 0:
			r.pending -= uint32(n)
			continue
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.EBUSY:
			if tries < 2000 { // about 2 s
				time.Sleep(time.Duration(min(tries+1, 100)) * 10 * time.Microsecond)
				continue
			}
		}
		r.broken = fmt.Errorf("uring: io_uring_enter: %w", errno)
		return r.broken
	}
	return nil
}

// result turns a CQE result into a byte count or an error.
func result(res int32) (int, error) {
	if res < 0 {
		return 0, syscall.Errno(-res)
	}
	return int(res), nil
}

// ReadAt reads len(p) bytes at off from fd like pread(2) in a loop: it
// returns fewer only at the end of the file (n < len(p), no error).
func (r *Ring) ReadAt(fd int, p []byte, off int64) (int, error) {
	return r.transfer(opRead, fd, p, off)
}

// WriteAt writes p at off to fd like pwrite(2) in a loop.
func (r *Ring) WriteAt(fd int, p []byte, off int64) (int, error) {
	return r.transfer(opWrite, fd, p, off)
}

// transfer reads or writes all of p at off, one operation after another
// until done: a retry after EAGAIN or EINTR, the rest after a short
// transfer. A read stops at the end of the file; a write that makes no
// progress fails with EIO.
func (r *Ring) transfer(op uint8, fd int, p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		q := p[done:]
		res, err := r.do(sqe{opcode: op, fd: int32(fd), off: uint64(off) + uint64(done),
			addr: uint64(uintptr(unsafe.Pointer(&q[0]))), len: uint32(len(q))}, q)
		if err != nil {
			return done, err
		}
		n, again, err := step(op, res)
		switch {
		case again:
			continue
		case err != nil:
			return done, err
		case n == 0:
			return done, nil // end of file
		}
		done += n
	}
	return done, nil
}

// step reads the CQE result of one piece of a read or write: the bytes it
// moved, whether to issue it again as it was (EAGAIN, EINTR), or its
// error. A read that moves nothing is at the end of the file (n == 0, no
// error); a write that moves nothing fails with EIO.
func step(op uint8, res int32) (n int, again bool, err error) {
	switch {
	case res == -int32(unix.EAGAIN) || res == -int32(unix.EINTR):
		return 0, true, nil
	case res == 0 && op == opWrite:
		return 0, false, unix.EIO
	}
	n, err = result(res)
	return n, false, err
}

// Fdatasync is fdatasync(2) on fd.
func (r *Ring) Fdatasync(fd int) error {
	for {
		res, err := r.do(sqe{opcode: opFsync, fd: int32(fd), opFlags: fsyncDatasync}, nil)
		if err != nil {
			return err
		}
		if res == -int32(unix.EINTR) || res == -int32(unix.EAGAIN) {
			continue
		}
		_, err = result(res)
		return err
	}
}

// Nop completes an operation that does nothing (tests).
func (r *Ring) nop() error {
	res, err := r.do(sqe{opcode: opNop}, nil)
	if err != nil {
		return err
	}
	_, err = result(res)
	return err
}

// KernelAllows reports whether this kernel lets this process set up an
// io_uring instance, and why not otherwise: the kernel's own answer to a
// bare io_uring_setup (ENOSYS: built without it; EPERM: refused by
// kernel.io_uring_disabled, Linux 6.6 on, or by a seccomp filter such as
// a container runtime's), with the sysctl's value where there is one.
// Tests use it to tell a ring refused on purpose, where the blocking path
// is right, from a broken one: Open does much more than the bare setup.
// (A kernel before 6.6 has no such sysctl and allows io_uring unless
// built without it; reading the sysctl alone took it for one that
// refuses.)
func KernelAllows() (ok bool, why string) {
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 1, uintptr(unsafe.Pointer(&p)), 0)
	if errno == 0 {
		unix.Close(int(fd))
		return true, ""
	}
	why = "io_uring_setup: " + errno.Error()
	if b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); err == nil {
		why += " (kernel.io_uring_disabled is " + strings.TrimSpace(string(b)) + ")"
	}
	return false, why
}
