package blockdev

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Identity names the storage a path refers to, through symlinks, loop
// devices and partitions.
type Identity struct {
	Path     string    // the path as given, made absolute (symlinks resolved)
	Kind     string    // "file" or "block"
	Size     int64     // bytes
	Dev, Ino uint64    // file: st_dev and st_ino of the file
	Rdev     uint64    // block device: its device number (major<<8|minor style as unix.Mkdev)
	StableID string    // block device: its /dev/disk/by-id name (wwn-* preferred, else another by-id link), "" if none
	Loop     *Identity // loop device: the identity of its backing file (nil otherwise)
	Parent   *Identity // partition: the identity of its whole disk (nil otherwise)

	// Name is a block device's kernel name ("sdb1", "loop0"); "" for a
	// file, or where sysfs is missing.
	Name string
	// Offset is where this device's bytes start in the storage below it:
	// a loop device's lo_offset in Loop, a partition's start in Parent.
	Offset int64
}

// Kinds of Identity.
const (
	KindFile  = "file"
	KindBlock = "block"
)

// sysfs is where Identify reads what the kernel says about block devices:
// the real one on the host, a fake tree in tests (partitions, by-id links).
type sysfs struct {
	sys  string // sysfs mount: /sys
	dev  string // device nodes: /dev
	byID string // udev's stable names: /dev/disk/by-id
}

var host = sysfs{sys: "/sys", dev: "/dev", byID: "/dev/disk/by-id"}

// maxDepth bounds the loop devices and partitions Identify follows down.
const maxDepth = 8

// Identify returns the identity of path, a regular file or a block
// device. A loop device's backing file and a partition's whole disk are
// identified too, so that Overlap sees through them. What sysfs or the
// loop driver do not tell (no permission, a backing file deleted or in
// another mount namespace) is left out rather than guessed; Identify
// fails only when path itself cannot be identified.
func Identify(path string) (Identity, error) {
	return host.identify(path, 0)
}

func (s sysfs) identify(path string, depth int) (Identity, error) {
	fail := func(err error) (Identity, error) {
		return Identity{}, fmt.Errorf("blockdev: identify %s: %w", path, err)
	}
	if depth > maxDepth {
		return fail(errors.New("loop devices and partitions nest too deep"))
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fail(err)
	}
	real, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return fail(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return fail(&fs.PathError{Op: "stat", Path: real, Err: err})
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return Identity{Path: real, Kind: KindFile, Size: st.Size, Dev: st.Dev, Ino: st.Ino}, nil
	case unix.S_IFBLK:
		id, err := s.block(real, st.Rdev, depth)
		if err != nil {
			return fail(err)
		}
		return id, nil
	}
	return fail(fmt.Errorf("not a regular file or block device: %w", ErrNotSupported))
}

// block identifies the block device rdev, whose node is path.
func (s sysfs) block(path string, rdev uint64, depth int) (Identity, error) {
	id := Identity{Path: path, Kind: KindBlock, Rdev: rdev}
	dir, err := filepath.EvalSymlinks(filepath.Join(s.sys, "dev", "block", devString(rdev)))
	if err != nil {
		// No sysfs (a container without /sys): the size from the device,
		// and no aliases known.
		size, err := ioctlSize(path)
		if err != nil {
			return id, err
		}
		id.Size = size
		return id, nil
	}
	id.Name = filepath.Base(dir)
	sectors, err := readInt(filepath.Join(dir, "size"))
	if err != nil {
		return id, err
	}
	id.Size = sectors * 512
	id.StableID = s.stableID(rdev)
	if backing, err := readLine(filepath.Join(dir, "loop", "backing_file")); err == nil {
		id.Loop, id.Offset = s.loop(path, dir, backing, depth)
	}
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		parent, start, err := s.partition(dir, depth)
		if err != nil {
			return id, err
		}
		id.Parent, id.Offset = &parent, start
	}
	return id, nil
}

// loop identifies the backing file of the loop device at path (sysfs
// directory dir) and returns it with the loop's offset in it.
// NB: the path in sysfs is what the file was called when it was attached:
// it may since have been deleted (" (deleted)" is appended), renamed, or
// replaced by another file, or live in another mount namespace. The loop
// driver's own record (LOOP_GET_STATUS64: st_dev and st_ino of the file it
// holds) decides; the path is only trusted when it still names that file.
func (s sysfs) loop(path, dir, backing string, depth int) (*Identity, int64) {
	offset, _ := readInt(filepath.Join(dir, "loop", "offset"))
	byPath, pathErr := s.identify(backing, depth+1)
	info, infoErr := loopStatus(path)
	if infoErr == nil {
		offset = int64(info.Offset)
	}
	switch {
	case pathErr == nil && infoErr != nil:
		return &byPath, offset // cannot cross-check (not root): trust the path
	case pathErr == nil && byPath.Kind == KindBlock:
		return &byPath, offset // a loop over a block device: the node's inode says little
	case pathErr == nil && byPath.Dev == info.Device && byPath.Ino == info.Inode:
		return &byPath, offset
	case infoErr == nil:
		// The file the loop holds is not at that path any more.
		return &Identity{Path: backing, Kind: KindFile, Dev: info.Device, Ino: info.Inode}, offset
	}
	return &Identity{Path: backing, Kind: KindFile}, offset // known by name only
}

// partition identifies the whole disk of the partition whose sysfs
// directory is dir (its parent directory is the disk's) and returns it
// with the partition's start in bytes.
func (s sysfs) partition(dir string, depth int) (Identity, int64, error) {
	start, err := readInt(filepath.Join(dir, "start"))
	if err != nil {
		return Identity{}, 0, err
	}
	diskDir := filepath.Dir(dir)
	nums, err := readLine(filepath.Join(diskDir, "dev"))
	if err != nil {
		return Identity{}, 0, err
	}
	rdev, err := parseDev(nums)
	if err != nil {
		return Identity{}, 0, fmt.Errorf("%s: %w", filepath.Join(diskDir, "dev"), err)
	}
	if depth+1 > maxDepth {
		return Identity{}, 0, errors.New("loop devices and partitions nest too deep")
	}
	disk, err := s.block(filepath.Join(s.dev, filepath.Base(diskDir)), rdev, depth+1)
	if err != nil {
		return Identity{}, 0, err
	}
	return disk, start * 512, nil
}

// stableID returns the /dev/disk/by-id name of rdev: wwn-* first, else the
// first in name order; "" if none.
func (s sysfs) stableID(rdev uint64) string {
	ents, err := os.ReadDir(s.byID)
	if err != nil {
		return ""
	}
	var names []string
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(filepath.Join(s.byID, e.Name()), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK && st.Rdev == rdev {
			names = append(names, e.Name())
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.SortFunc(names, func(a, b string) int {
		wa, wb := strings.HasPrefix(a, "wwn-"), strings.HasPrefix(b, "wwn-")
		switch {
		case wa && !wb:
			return -1
		case wb && !wa:
			return 1
		}
		return strings.Compare(a, b)
	})
	return names[0]
}

// loopStatus asks the loop driver what the loop device at path holds.
func loopStatus(path string) (*unix.LoopInfo64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return unix.IoctlLoopGetStatus64(int(f.Fd()))
}

// ioctlSize is a block device's size from the device itself.
func ioctlSize(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var sz uint64
	if err := ioctlPtr(int(f.Fd()), unix.BLKGETSIZE64, unsafe.Pointer(&sz)); err != nil {
		return 0, fmt.Errorf("BLKGETSIZE64 %s: %w", path, err)
	}
	return int64(sz), nil
}

func readLine(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(string(b), "\n"), nil
}

func readInt(path string) (int64, error) {
	s, err := readLine(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: not a size: %q", path, s)
	}
	return n, nil
}

// parseDev parses "8:16".
func parseDev(s string) (uint64, error) {
	maj, min, ok := strings.Cut(strings.TrimSpace(s), ":")
	a, err1 := strconv.ParseUint(maj, 10, 32)
	b, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("not a device number: %q", s)
	}
	return unix.Mkdev(uint32(a), uint32(b)), nil
}

// devString is "8:16".
func devString(dev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
}

// String is a short human form: "/abs/b.img (file, dev 8:1 ino 1234, 32
// MiB)", "/dev/sdb (block 8:16, wwn-0x5000..., 100 GiB)", with "loop over
// FILE" or "partition of DISK" where it applies.
func (id Identity) String() string {
	var b strings.Builder
	b.WriteString(id.Path)
	switch id.Kind {
	case KindFile:
		fmt.Fprintf(&b, " (file, dev %s ino %d, %s)", devString(id.Dev), id.Ino, sizeString(id.Size))
	case KindBlock:
		fmt.Fprintf(&b, " (block %s", devString(id.Rdev))
		if id.StableID != "" {
			b.WriteString(", " + id.StableID)
		}
		b.WriteString(", " + sizeString(id.Size))
		if id.Loop != nil {
			b.WriteString(", loop over " + id.Loop.Path)
			if id.Offset != 0 {
				fmt.Fprintf(&b, " at offset %d", id.Offset)
			}
		}
		if id.Parent != nil {
			b.WriteString(", partition of " + id.Parent.Path)
		}
		b.WriteString(")")
	default:
		b.WriteString(" (unknown)")
	}
	return b.String()
}

// sizeString is n bytes with a binary unit: "32 MiB", "1.5 GiB", "512 B".
func sizeString(n int64) string {
	v, unit := ScaleBytes(uint64(n))
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), unit)
	}
	return fmt.Sprintf("%.1f %s", v, unit)
}

// ScaleBytes expresses n bytes in the largest binary unit it reaches:
// (512, "B"), (1.5, "MiB"). The one scaling the messages and tables share.
func ScaleBytes(n uint64) (float64, string) {
	units := [...]string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	v, i := float64(n), 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return v, units[i]
}

// level is one step down from an identity to its storage: the device or
// file at that step and the byte range of it the top one covers.
type level struct {
	id       Identity
	off, end int64
}

// levels walks from id down through loop devices and partitions to the
// file or whole disk that holds its bytes; the first level is id itself.
func (id Identity) levels() []level {
	ls := []level{{id: id, off: 0, end: id.Size}}
	cur, off := id, int64(0)
	for range maxDepth {
		var next *Identity
		switch {
		case cur.Loop != nil:
			next = cur.Loop
		case cur.Parent != nil:
			next = cur.Parent
		default:
			return ls
		}
		off += cur.Offset
		ls = append(ls, level{id: *next, off: off, end: off + id.Size})
		cur = *next
	}
	return ls
}

// same reports whether x and y are one file or one block device.
func same(x, y Identity) bool {
	switch {
	case x.Kind == KindFile && y.Kind == KindFile:
		return x.Ino != 0 && x.Dev == y.Dev && x.Ino == y.Ino
	case x.Kind == KindBlock && y.Kind == KindBlock:
		return x.Rdev != 0 && x.Rdev == y.Rdev
	}
	return false
}

// fileOn reports whether the file x lives on a file system on the block
// device y.
func fileOn(x, y Identity) bool {
	return x.Kind == KindFile && y.Kind == KindBlock && x.Dev != 0 && x.Dev == y.Rdev
}

// intersect reports whether two byte ranges share a byte; an empty range
// counts as its first byte (the same empty file twice is one file).
func intersect(a, b level) bool {
	ae, be := max(a.end, a.off+1), max(b.end, b.off+1)
	return a.off < be && b.off < ae
}

// Overlap reports whether a and b may share storage, and why (for the message).
func Overlap(a, b Identity) (bool, string) {
	la, lb := a.levels(), b.levels()
	for i, x := range la {
		for j, y := range lb {
			if same(x.id, y.id) && intersect(x, y) {
				return true, sharedReason(la, i, lb, j)
			}
		}
	}
	for i, x := range la {
		for j, y := range lb {
			switch {
			case fileOn(x.id, y.id):
				return true, fmt.Sprintf("%s is a file on a file system on %s", down(la, i), down(lb, j))
			case fileOn(y.id, x.id):
				return true, fmt.Sprintf("%s is a file on a file system on %s", down(lb, j), down(la, i))
			}
		}
	}
	return false, ""
}

// sharedReason says why la[i] and lb[j], the same storage, overlap.
func sharedReason(la []level, i int, lb []level, j int) string {
	x, y := la[i].id, lb[j].id
	if i == 0 && j == 0 {
		switch {
		case x.Path == y.Path:
			return "both are " + x.Path
		case x.Kind == KindFile:
			return fmt.Sprintf("%s and %s are the same file (dev %s ino %d: a hard link, or a bind mount)", x.Path, y.Path, devString(x.Dev), x.Ino)
		}
		return fmt.Sprintf("%s and %s are the same block device (%s)", x.Path, y.Path, devString(x.Rdev))
	}
	var parts []string
	if i > 0 {
		parts = append(parts, down(la, i))
	}
	if j > 0 {
		parts = append(parts, down(lb, j))
	}
	msg := strings.Join(parts, "; ")
	if j == 0 && x.Path != y.Path {
		msg += ", the same " + x.Kind + " as " + y.Path
	} else if i == 0 && x.Path != y.Path {
		msg += ", the same " + x.Kind + " as " + x.Path
	} else if i > 0 && j > 0 && x.Path != y.Path {
		msg += fmt.Sprintf(" (%s and %s are the same %s)", x.Path, y.Path, x.Kind)
	}
	if i > 0 && j > 0 {
		msg += fmt.Sprintf("; bytes %d-%d and %d-%d of %s overlap", la[i].off, la[i].end, lb[j].off, lb[j].end, x.Path)
	}
	return msg
}

// down describes the way from ls[0] to ls[k]: "/dev/loop0p1 is a
// partition of /dev/loop0, a loop device over /abs/c.img".
func down(ls []level, k int) string {
	if k == 0 {
		return ls[0].id.Path
	}
	var b strings.Builder
	b.WriteString(ls[0].id.Path + " is ")
	for m := range k {
		if m > 0 {
			b.WriteString(", ")
		}
		cur, next := ls[m].id, ls[m+1].id
		if cur.Loop != nil {
			b.WriteString("a loop device over " + next.Path)
			if cur.Offset != 0 {
				fmt.Fprintf(&b, " (offset %d)", cur.Offset)
			}
		} else {
			b.WriteString("a partition of " + next.Path)
		}
	}
	return b.String()
}

// Via is the way from id down to the file or whole disk holding its bytes,
// "/dev/loop0 → /abs/c.img"; "" when id is that file or disk itself.
func (id Identity) Via() string {
	ls := id.levels()
	if len(ls) == 1 {
		return ""
	}
	paths := make([]string, len(ls))
	for i, l := range ls {
		paths[i] = l.id.Path
	}
	return strings.Join(paths, " → ")
}
