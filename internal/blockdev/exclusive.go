package blockdev

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// An exclusive open (FileOptions.Exclusive) takes three locks:
//
//   - O_EXCL on a block device: the kernel refuses it while the device is
//     mounted, claimed by device-mapper, md or another O_EXCL opener, and
//     sees partitions and their whole disk as one.
//   - flock(LOCK_EX) on the path opened, as every writeboost tool always
//     did.
//   - an open file description lock (F_OFD_SETLK) on the bytes of the
//     storage below: a loop device's backing file, a partition's whole
//     disk, followed down to the file or disk that holds the bytes (for a
//     plain file or disk, itself, whole). This one sees through aliases:
//     `wb-create va b1.img c.img` locks c.img; `wb-create vb b2.img
//     /dev/loop0`, loop0 over c.img, then finds the same bytes of c.img
//     locked. A byte range, not the whole file or disk: two loop devices
//     over different parts of one file, or two partitions of one disk,
//     are two devices.
//
// The kernel drops all three when the process dies, however it dies.

// Holder is a process found holding a lock on the storage an exclusive
// open wanted.
type Holder struct {
	PID     int
	Command string // its /proc/PID/comm, "" if unknown
	// Label is what a caller knows the process as ("writeboost volume
	// va"); blockdev leaves it empty.
	Label string
}

// String is "pid 1234 (wb-create)", or "LABEL (pid 1234)".
func (h Holder) String() string {
	switch {
	case h.Label != "":
		return fmt.Sprintf("%s (pid %d)", h.Label, h.PID)
	case h.Command != "":
		return fmt.Sprintf("pid %d (%s)", h.PID, h.Command)
	}
	return fmt.Sprintf("pid %d", h.PID)
}

// BusyError is the error of an exclusive open that found the device, or
// the storage below it, held by someone else. It wraps ErrBusy.
type BusyError struct {
	Path string // as opened
	// Via is the way from Path down to the storage found locked,
	// "/dev/loop0 → /abs/c.img"; "" when Path itself was locked.
	Via string
	// Holders are the processes /proc shows holding a lock there (none
	// when they are invisible to us).
	Holders []Holder
	// Claimed: the kernel refused O_EXCL on the block device. MountedOn
	// and UsedBy say by what, where it knows: a mount point, the holders
	// in sysfs (dm-0, md0, bcache0).
	Claimed   bool
	MountedOn string
	UsedBy    []string
}

// Detail is the error without the path: "in use by writeboost volume va
// (pid 1234) (through /dev/loop0 → /abs/c.img)".
func (e *BusyError) Detail() string {
	var msg string
	switch {
	case len(e.Holders) > 0:
		hs := make([]string, len(e.Holders))
		for i, h := range e.Holders {
			hs[i] = h.String()
		}
		msg = "in use by " + strings.Join(hs, ", ")
	case e.MountedOn != "":
		msg = "in use: mounted on " + e.MountedOn
	case len(e.UsedBy) > 0:
		msg = "in use by " + strings.Join(e.UsedBy, ", ") + " (the kernel holds it)"
	case e.Claimed:
		msg = "in use (claimed exclusively by the kernel or another program)"
	default:
		msg = "in use by another program, such as a running writeboost volume"
	}
	if e.Via != "" {
		msg += " (through " + e.Via + ")"
	}
	return msg
}

func (e *BusyError) Error() string { return "blockdev: open " + e.Path + ": " + e.Detail() }

// Unwrap makes errors.Is(err, ErrBusy) hold.
func (e *BusyError) Unwrap() error { return ErrBusy }

// held reports whether e names someone: a process holding a lock, a
// mount point, or a kernel device stacked on the device.
func (e *BusyError) held() bool {
	return len(e.Holders) > 0 || e.MountedOn != "" || len(e.UsedBy) > 0
}

// busyWait bounds how long retryUnlessHeld tries again while nobody is
// seen holding what it wants; busyRetryDelay is its pause between tries.
var busyWait = 5 * time.Second

const busyRetryDelay = 50 * time.Millisecond

// retryUnlessHeld is the one rule for every refusal an exclusive open
// meets: O_EXCL's EBUSY on a block device, a refused flock, a refused
// byte-range lock. It calls try until try fails with none of the errnos
// in busy. While try is refused and who, asked who holds it, names
// nobody (BusyError.held), it tries again, for up to busyWait: a process
// that exited (killed, say) with io_uring I/O in flight leaves its files
// open, and so locked and claimed, until the kernel has finished that I/O
// and torn its ring down, which on a slow disk takes a while; a restart
// right after the kill must not be refused as busy. Someone it can see
// makes it give up at once. It returns nil, try's other error, or who's
// last answer.
func retryUnlessHeld(try func() error, who func() *BusyError, busy ...unix.Errno) error {
	deadline := time.Now().Add(busyWait)
	for {
		err := try()
		if err == nil || !slices.ContainsFunc(busy, func(e unix.Errno) bool { return errors.Is(err, e) }) {
			return err
		}
		be := who()
		if be.held() || !time.Now().Before(deadline) {
			return be
		}
		time.Sleep(busyRetryDelay)
	}
}

// procRoot is /proc; tests do not change it, but one place names it.
const procRoot = "/proc"

// lockStorage takes the byte-range lock on the storage below the device
// d, identified as id, as the comment at the top of this file says. It
// leaves d.lockFile set when the storage is another file than d's.
func (d *File) lockStorage(id Identity, readOnly bool, log *slog.Logger) error {
	ls := id.levels()
	bottom := ls[len(ls)-1]
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if readOnly {
		lk.Type = unix.F_RDLCK
	}
	f := d.f
	if len(ls) > 1 {
		lk.Start, lk.Len = bottom.off, max(1, bottom.end-bottom.off)
		var err error
		f, err = openStorage(bottom.id, readOnly, &lk)
		if err != nil {
			// The loop's file deleted or out of reach: the device's own
			// locks still hold.
			log.Warn("blockdev: cannot lock the storage below the device; only the device itself is locked",
				"path", d.path, "storage", bottom.id.Path, "err", err)
			return nil
		}
	}
	err := retryUnlessHeld(func() error {
		return fdControl(f, func(fd int) error { return unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk) })
	}, func() *BusyError {
		return &BusyError{Path: d.path, Via: id.Via(), Holders: lockHolders(f, d.f, f)}
	}, unix.EAGAIN, unix.EACCES)
	var be *BusyError
	switch {
	case err == nil:
		if f != d.f {
			d.lockFile = f
		}
		return nil
	case errors.As(err, &be):
		if f != d.f {
			f.Close()
		}
		return be
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOLCK), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
		// A file system without byte-range locks.
		log.Info("blockdev: byte-range locks not supported; only the device itself is locked", "path", d.path, "storage", bottom.id.Path, "err", err)
		if f != d.f {
			f.Close()
		}
		return nil
	}
	if f != d.f {
		f.Close()
	}
	return fmt.Errorf("blockdev: lock %s: %w", bottom.id.Path, err)
}

// openStorage opens the file or disk id to lock it: for writing (a write
// lock needs it), or read-only where it cannot be written (lk becomes a
// read lock, which still conflicts with every writer's). It checks that
// the path still names id.
func openStorage(id Identity, readOnly bool, lk *unix.Flock_t) (*os.File, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(id.Path, flag|unix.O_CLOEXEC, 0)
	if !readOnly && (errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) || errors.Is(err, unix.EPERM)) {
		f, err = os.OpenFile(id.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
		lk.Type = unix.F_RDLCK
	}
	if err != nil {
		return nil, err
	}
	if err := matches(f, id); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// matches checks that the open f is the file or device id names.
func matches(f *os.File, id Identity) error {
	var st unix.Stat_t
	if err := fdControl(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return err
	}
	ok := false
	switch id.Kind {
	case KindFile:
		ok = st.Mode&unix.S_IFMT == unix.S_IFREG && st.Dev == id.Dev && st.Ino == id.Ino
	case KindBlock:
		ok = st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == id.Rdev
	}
	if !ok {
		return fmt.Errorf("%s changed while it was being opened (now dev %s ino %d)", id.Path, devString(st.Dev), st.Ino)
	}
	return nil
}

// fdControl runs fn on f's file descriptor.
func fdControl(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// lockHolders finds the processes holding a lock (flock, POSIX or OFD) on
// the file open as f, from the "lock:" lines of /proc/PID/fdinfo/FD,
// which name the locked inode as MAJOR:MINOR:INODE. Our own files in skip
// are left out. NB: it reads fdinfo only, never stats another process's
// files, which could hang on a dead FUSE server.
func lockHolders(f *os.File, skip ...*os.File) []Holder {
	var st unix.Stat_t
	if err := fdControl(f, func(fd int) error { return unix.Fstat(fd, &st) }); err != nil {
		return nil
	}
	skipFD := map[string]bool{}
	for _, s := range skip {
		fdControl(s, func(fd int) error {
			skipFD[strconv.Itoa(fd)] = true
			return nil
		})
	}
	return findHolders([]string{lockKey(st.Dev, st.Ino)}, skipFD)
}

// lockKey is how fdinfo's lock lines name inode ino of device dev:
// "fe:00:1234".
func lockKey(dev, ino uint64) string {
	return fmt.Sprintf("%02x:%02x:%d", unix.Major(dev), unix.Minor(dev), ino)
}

// findHolders scans /proc for locks on the inodes wants (lockKey), leaving
// out our own file descriptors in skipFD.
func findHolders(wants []string, skipFD map[string]bool) []Holder {
	if len(wants) == 0 {
		return nil
	}
	self := os.Getpid()
	procs, err := os.ReadDir(procRoot)
	if err != nil {
		return nil
	}
	var hs []Holder
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		dir := filepath.Join(procRoot, p.Name(), "fdinfo")
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or not ours to read
		}
		for _, fd := range fds {
			if pid == self && skipFD[fd.Name()] {
				continue
			}
			if holdsLock(filepath.Join(dir, fd.Name()), wants) {
				comm, _ := readLine(filepath.Join(procRoot, p.Name(), "comm"))
				hs = append(hs, Holder{PID: pid, Command: comm})
				break
			}
		}
	}
	slices.SortFunc(hs, func(a, b Holder) int { return a.PID - b.PID })
	return hs
}

// holdsLock reports whether the fdinfo file lists a lock on one of the
// inodes wants ("fe:00:1234").
func holdsLock(fdinfo string, wants []string) bool {
	f, err := os.Open(fdinfo)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "lock:") {
			continue
		}
		if slices.ContainsFunc(strings.Fields(line), func(f string) bool { return slices.Contains(wants, f) }) {
			return true
		}
	}
	return false
}

// claimed says who holds the block device id, opened as path, that
// refused O_EXCL. The kernel's claim spans a disk and its partitions, so
// it looks at the device, its whole disk and its partitions (claimSpan):
// a mount point or kernel devices stacked on one of them (sysfs holders:
// dm-0, md0), else the processes holding a lock on one's node, as
// another writeboost that opened it exclusively does.
func (s sysfs) claimed(path string, id Identity) *BusyError {
	be := &BusyError{Path: path, Claimed: true}
	span := s.claimSpan(id)
	if mi, err := os.Open(filepath.Join(procRoot, "self", "mountinfo")); err == nil {
		sc := bufio.NewScanner(mi)
		for sc.Scan() {
			// 27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
			fs := strings.Fields(sc.Text())
			if len(fs) > 4 && slices.ContainsFunc(span, func(n blockNode) bool { return n.nums == fs[2] }) {
				be.MountedOn = fs[4]
				break
			}
		}
		mi.Close()
	}
	for _, n := range span {
		if ents, err := os.ReadDir(filepath.Join(s.sys, "dev", "block", n.nums, "holders")); err == nil {
			for _, e := range ents {
				be.UsedBy = append(be.UsedBy, e.Name())
			}
		}
	}
	if be.held() {
		return be
	}
	var wants []string
	for _, n := range span {
		var st unix.Stat_t
		if unix.Stat(n.node, &st) == nil {
			wants = append(wants, lockKey(st.Dev, st.Ino))
		}
	}
	be.Holders = findHolders(wants, nil)
	return be
}

// blockNode is a block device as claimed looks at it: its numbers
// ("8:17") and its device node.
type blockNode struct{ nums, node string }

// claimSpan lists the block devices whose claim refuses an exclusive
// open of id: id itself, its whole disk if it is a partition, its
// partitions if it has any.
func (s sysfs) claimSpan(id Identity) []blockNode {
	span := []blockNode{{devString(id.Rdev), id.Path}}
	if id.Parent != nil {
		span = append(span, blockNode{devString(id.Parent.Rdev), id.Parent.Path})
	}
	dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "dev", "block", devString(id.Rdev)))
	if err != nil {
		return span
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if _, err := os.Stat(filepath.Join(dir, e.Name(), "partition")); err != nil {
			continue
		}
		if nums, err := readLine(filepath.Join(dir, e.Name(), "dev")); err == nil {
			span = append(span, blockNode{nums, filepath.Join(s.dev, e.Name())})
		}
	}
	return span
}
