package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/writeboost/writeboost/testing/tools/nbdclient"
)

// target is what kio reads and writes: a block device or a regular file
// (a path), or an NBD export (a URI).
type target interface {
	ReadAt(p []byte, off uint64) error
	WriteAt(p []byte, off uint64, fua bool) error
	Flush() error
	Size() uint64
	Close() error
}

func openTarget(spec string, write bool) (target, error) {
	if strings.HasPrefix(spec, "nbd:") || strings.HasPrefix(spec, "nbd+unix:") {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := nbdclient.Dial(ctx, spec)
		if err != nil {
			return nil, err
		}
		return nbdTarget{c}, nil
	}
	return openFile(spec, write)
}

type nbdTarget struct{ *nbdclient.Client }

// fileTarget is a path. A block device is opened with O_DIRECT, so every
// write reaches the device as one request of its own size (the sizes are
// the point of a workload) and a read sees the device, not a page cache; a
// FLUSH is fsync, which the block layer sends as REQ_PREFLUSH. A FUA write
// is pwritev2 with RWF_DSYNC, which a block device opened with O_DIRECT
// turns into REQ_FUA.
type fileTarget struct {
	f      *os.File
	size   uint64
	direct bool
}

func openFile(path string, write bool) (*fileTarget, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	flags := os.O_RDONLY
	if write {
		flags = os.O_RDWR
	}
	block := st.Mode()&os.ModeDevice != 0
	if block {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, err
	}
	t := &fileTarget{f: f, direct: block}
	if block {
		end, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: size: %w", path, err)
		}
		t.size = uint64(end)
	} else {
		t.size = uint64(st.Size())
	}
	return t, nil
}

func (t *fileTarget) Size() uint64 { return t.size }
func (t *fileTarget) Close() error { return t.f.Close() }
func (t *fileTarget) Flush() error { return t.f.Sync() }

func (t *fileTarget) ReadAt(p []byte, off uint64) error {
	for len(p) > 0 {
		n, err := unix.Pread(int(t.f.Fd()), p, int64(off))
		if err != nil {
			return fmt.Errorf("read %s at %d: %w", t.f.Name(), off, err)
		}
		if n == 0 {
			return fmt.Errorf("read %s at %d: end of device", t.f.Name(), off)
		}
		p, off = p[n:], off+uint64(n)
	}
	return nil
}

func (t *fileTarget) WriteAt(p []byte, off uint64, fua bool) error {
	flags := 0
	if fua {
		flags = unix.RWF_DSYNC
	}
	n, err := unix.Pwritev2(int(t.f.Fd()), [][]byte{p}, int64(off), flags)
	if err != nil {
		return fmt.Errorf("write %s at %d: %w", t.f.Name(), off, err)
	}
	if n != len(p) {
		// One request per write: a short write would split it.
		return fmt.Errorf("write %s at %d: %d of %d bytes", t.f.Name(), off, n, len(p))
	}
	return nil
}

// alignedBuf returns n bytes aligned to 4096, as O_DIRECT needs.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	a := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if a != 0 {
		a = 4096 - a
	}
	return b[a : a+n : a+n]
}
