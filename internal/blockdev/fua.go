package blockdev

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

var _ FUAWriter = (*File)(nil)

// noDSync is set once pwritev2(RWF_DSYNC) was refused (a kernel before
// 4.7, or a filesystem without it); WriteAtFUA then writes and syncs.
var noDSync atomic.Bool

// WriteAtFUA writes p at off with pwritev2(RWF_DSYNC): on an O_DIRECT file
// the block layer sends it as a FUA write (or a write followed by a cache
// flush), and the filesystem commits the metadata needed to read it back,
// which is one device round trip instead of a write plus fdatasync (through
// the io_uring when the file has one). Where RWF_DSYNC is refused it falls
// back to WriteAt and Sync.
func (d *File) WriteAtFUA(p []byte, off int64) (int, error) {
	if noDSync.Load() || (d.direct && !d.aligned(p, off)) {
		return d.writeAndSync(p, off)
	}
	if err := d.checkWrite(p, off); err != nil {
		return 0, err
	}
	if d.ring != nil {
		n, err := d.ring.WriteAtFlags(d.fd, p, off, unix.RWF_DSYNC)
		if n == 0 && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)) {
			noDSync.Store(true)
			return d.writeAndSync(p, off)
		}
		if err != nil {
			return n, d.opErr("write", len(p), off, d.closedOr(ringErr(err)))
		}
		return n, nil
	}
	done := 0
	for done < len(p) {
		var n int
		err := d.control(func(fd int) error {
			var e error
			n, e = unix.Pwritev2(fd, [][]byte{p[done:]}, off+int64(done), unix.RWF_DSYNC)
			return e
		})
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if done == 0 && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)) {
			noDSync.Store(true)
			return d.writeAndSync(p, off)
		}
		if err != nil {
			return done, d.opErr("write", len(p), off, d.closedOr(err))
		}
		if n <= 0 {
			return done, d.opErr("write", len(p), off, errors.New("pwritev2 wrote nothing"))
		}
		done += n
	}
	return done, nil
}

// writeAndSync is the FUA write's fallback.
func (d *File) writeAndSync(p []byte, off int64) (int, error) {
	n, err := d.WriteAt(p, off)
	if err != nil {
		return n, err
	}
	if err := d.Sync(); err != nil {
		return 0, err
	}
	return n, nil
}
