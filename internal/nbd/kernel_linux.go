//go:build linux

package nbd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ioctl request numbers of the kernel nbd driver, cf. <linux/nbd.h>: each is
// _IO(0xab, n), which has no size or direction bits, so the number is
// 0xab<<8 | n on every architecture.
const (
	ioctlSetSock       = 0xab00 // NBD_SET_SOCK
	ioctlSetBlksize    = 0xab01 // NBD_SET_BLKSIZE
	ioctlSetSize       = 0xab02 // NBD_SET_SIZE
	ioctlDoIt          = 0xab03 // NBD_DO_IT
	ioctlClearSock     = 0xab04 // NBD_CLEAR_SOCK
	ioctlClearQue      = 0xab05 // NBD_CLEAR_QUE
	ioctlPrintDebug    = 0xab06 // NBD_PRINT_DEBUG
	ioctlSetSizeBlocks = 0xab07 // NBD_SET_SIZE_BLOCKS
	ioctlDisconnect    = 0xab08 // NBD_DISCONNECT
	ioctlSetTimeout    = 0xab09 // NBD_SET_TIMEOUT
	ioctlSetFlags      = 0xab0a // NBD_SET_FLAGS
)

// detachTimeout bounds the drain of requests in flight at Close.
const detachTimeout = 10 * time.Second

// Attachment is an export connected to the kernel nbd driver: /dev/nbdN
// reads and writes become requests served by this process. The handshake is
// skipped: the driver is told the size and the transmission flags by ioctl
// (NBD_SET_FLAGS makes it send FLUSH, FUA and TRIM) and then talks the
// transmission phase over one end of a socketpair.
type Attachment struct {
	dev    string
	f      *os.File // the /dev/nbdN device
	client *os.File // the socketpair end the kernel uses
	srv    *Server

	doItDone chan struct{} // closed when NBD_DO_IT returns
	doItErr  error         // NBD_DO_IT's result, valid after doItDone
	served   chan struct{} // closed when the serving goroutine ends

	closeOnce sync.Once
	closeErr  error
	stop      func() bool // unregisters the ctx watcher
}

// Attach connects export to the nbd device dev (e.g. /dev/nbd0) and serves
// it until Detach, or until ctx is done, which detaches as Detach does. On a
// host without the nbd module it fails with ErrNoKernelModule. opts (at
// most one) tunes the serving side as for NewServer; the logger is the
// useful part.
func Attach(ctx context.Context, dev string, export Export, opts ...Options) (*Attachment, error) {
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		return nil, fmt.Errorf("attach %s: %w: more than one Options", dev, ErrConfig)
	}
	srv, err := NewServer([]Export{export}, o)
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", dev, err)
	}
	e := &srv.exports[0]
	size := e.Backend.Size()
	blksize := int64(PreferredBlockSize)
	if size%blksize != 0 {
		blksize = MinBlockSize
	}
	if size%blksize != 0 || size == 0 {
		return nil, fmt.Errorf("attach %s: export size %d is not a positive multiple of %d bytes", dev, size, MinBlockSize)
	}

	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("attach %s: %w (%v)", dev, ErrNoKernelModule, err)
		}
		return nil, fmt.Errorf("attach %s: %w", dev, err)
	}
	fd := int(f.Fd())
	// The first ioctl tells whether dev is an nbd device at all.
	if err := unix.IoctlSetInt(fd, ioctlSetBlksize, int(blksize)); err != nil {
		f.Close()
		if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("attach %s: not an nbd device (NBD_SET_BLKSIZE: %v): %w", dev, err, ErrNoKernelModule)
		}
		return nil, fmt.Errorf("attach %s: NBD_SET_BLKSIZE %d: %w", dev, blksize, err)
	}
	steps := []struct {
		name string
		req  uint
		arg  int
	}{
		{"NBD_SET_SIZE_BLOCKS", ioctlSetSizeBlocks, int(size / blksize)},
		{"NBD_SET_FLAGS", ioctlSetFlags, int(srv.transmissionFlags(e))},
	}
	for _, s := range steps {
		if err := unix.IoctlSetInt(fd, s.req, s.arg); err != nil {
			f.Close()
			return nil, fmt.Errorf("attach %s: %s %d: %w", dev, s.name, s.arg, err)
		}
	}

	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("attach %s: socketpair: %w", dev, err)
	}
	client := os.NewFile(uintptr(fds[0]), "nbd-kernel")
	serverFile := os.NewFile(uintptr(fds[1]), "nbd-server")
	nc, err := net.FileConn(serverFile) // dups the descriptor
	serverFile.Close()
	if err != nil {
		client.Close()
		f.Close()
		return nil, fmt.Errorf("attach %s: socket: %w", dev, err)
	}
	if err := unix.IoctlSetInt(fd, ioctlSetSock, int(client.Fd())); err != nil {
		nc.Close()
		client.Close()
		f.Close()
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("attach %s: device in use (NBD_SET_SOCK): %w", dev, err)
		}
		return nil, fmt.Errorf("attach %s: NBD_SET_SOCK: %w", dev, err)
	}

	a := &Attachment{
		dev:      dev,
		f:        f,
		client:   client,
		srv:      srv,
		doItDone: make(chan struct{}),
		served:   make(chan struct{}),
	}
	c := srv.newConn(nc)
	go func() { // owned by the Attachment; Close waits on served
		defer close(a.served)
		c.serveExport(e)
	}()
	go func() { // owned by the Attachment; Close waits on doItDone
		defer close(a.doItDone)
		// NBD_DO_IT runs the device until it is disconnected; it holds
		// this goroutine's thread in the kernel meanwhile. A signal
		// delivered to that thread (SIGTERM to the process lands on any
		// thread) would interrupt it: the driver then shuts the socket
		// down, and the restarted ioctl fails with EBUSY. So the thread
		// blocks every signal; it is locked and never unlocked, so it
		// ends with this goroutine and its mask with it.
		runtime.LockOSThread()
		var all unix.Sigset_t
		for i := range all.Val {
			all.Val[i] = ^uint64(0)
		}
		if err := unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil); err != nil {
			srv.log.Warn("nbd: cannot block signals on the NBD_DO_IT thread", "err", err)
		}
		if err := unix.IoctlSetInt(fd, ioctlDoIt, 0); err != nil {
			a.doItErr = fmt.Errorf("NBD_DO_IT on %s: %w", dev, err)
		}
	}()
	a.stop = context.AfterFunc(ctx, func() { a.Detach() })
	srv.log.Info("nbd: attached", "device", dev, "size", size, "block_size", blksize)
	return a, nil
}

// Clients returns 1 while the kernel's connection is open, 0 once it is
// closed (see Server.Clients).
func (a *Attachment) Clients() int { return a.srv.Clients() }

// Device is the nbd device the export is attached to.
func (a *Attachment) Device() string { return a.dev }

// Done is closed when the device is no longer connected: after Detach, or
// when someone else disconnected it (nbd-client -d).
func (a *Attachment) Done() <-chan struct{} { return a.doItDone }

// Close is Detach, for io.Closer.
func (a *Attachment) Close() error { return a.Detach() }

// Detach disconnects the device: NBD_DISCONNECT makes the driver send
// NBD_CMD_DISC after its queued requests, the server drains and closes,
// NBD_DO_IT returns and NBD_CLEAR_SOCK releases the device. It returns
// NBD_DO_IT's error, if any. Calling it again returns the same result.
func (a *Attachment) Detach() error {
	a.closeOnce.Do(func() {
		if a.stop != nil {
			a.stop()
		}
		fd := int(a.f.Fd())
		var errs []error
		if err := unix.IoctlSetInt(fd, ioctlDisconnect, 0); err != nil {
			errs = append(errs, fmt.Errorf("NBD_DISCONNECT on %s: %w", a.dev, err))
		}
		ctx, cancel := context.WithTimeout(context.Background(), detachTimeout)
		defer cancel()
		select {
		case <-a.doItDone:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("detach %s: NBD_DO_IT did not return in %v", a.dev, detachTimeout))
		}
		if err := a.srv.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("detach %s: %w", a.dev, err))
		}
		<-a.served
		if err := unix.IoctlSetInt(fd, ioctlClearSock, 0); err != nil {
			errs = append(errs, fmt.Errorf("NBD_CLEAR_SOCK on %s: %w", a.dev, err))
		}
		select {
		case <-a.doItDone:
			if a.doItErr != nil {
				errs = append(errs, a.doItErr)
			}
		default:
		}
		a.client.Close()
		a.f.Close()
		a.closeErr = errors.Join(errs...)
	})
	return a.closeErr
}
