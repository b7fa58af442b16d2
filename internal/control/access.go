package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Access says who, besides root, may use a volume's sockets (wb-create
// --socket-group, --socket-mode). The zero value is the default: root
// only, sockets 0600 in a 0700 run directory.
type Access struct {
	Group string      // the group's name; "" for none
	GID   uint32      // the group's id, when Group is set
	Mode  fs.FileMode // the sockets' mode: 0600, or 0660 with a group
}

// DefaultSocketMode is the sockets' mode without --socket-group.
const DefaultSocketMode fs.FileMode = 0o600

// ParseAccess reads --socket-group GROUP (a name or a numeric id; ""
// for none) and --socket-mode MODE (octal; "" for the default: 0600, or
// 0660 with a group). Others never get access, and the group's bits need
// a group: a mode outside 0660 or with group bits but no group is an
// error, as is a group that does not exist.
func ParseAccess(group, mode string) (Access, error) {
	var a Access
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			if _, numErr := strconv.ParseUint(group, 10, 32); numErr == nil {
				g, err = user.LookupGroupId(group)
			}
		}
		if err != nil {
			return a, fmt.Errorf("--socket-group %q: no such group", group)
		}
		gid, err := strconv.ParseUint(g.Gid, 10, 32)
		if err != nil {
			return a, fmt.Errorf("--socket-group %q: group id %q is not a number", group, g.Gid)
		}
		a.Group, a.GID = g.Name, uint32(gid)
		a.Mode = 0o660
	} else {
		a.Mode = DefaultSocketMode
	}
	if mode == "" {
		return a, nil
	}
	m, err := strconv.ParseUint(mode, 8, 32)
	if err != nil {
		return a, fmt.Errorf("--socket-mode %q: want an octal mode, 0600 or 0660", mode)
	}
	fm := fs.FileMode(m)
	switch {
	case fm&^0o660 != 0:
		return a, fmt.Errorf("--socket-mode %s: only the owner's and the group's read and write bits may be set (0600 or 0660); others never get access", mode)
	case fm&0o600 != 0o600:
		return a, fmt.Errorf("--socket-mode %s: the owner (root) needs read and write (0600 or 0660)", mode)
	case fm&0o060 != 0 && fm&0o060 != 0o060:
		return a, fmt.Errorf("--socket-mode %s: connecting needs both read and write: give the group 06 or nothing (0600 or 0660)", mode)
	case fm&0o060 != 0 && a.Group == "":
		return a, fmt.Errorf("--socket-mode %s gives a group access: name it with --socket-group GROUP", mode)
	}
	a.Mode = fm
	return a, nil
}

// grantsGroup reports whether a lets a group in.
func (a Access) grantsGroup() bool { return a.Group != "" && a.Mode&0o060 == 0o060 }

// mode is a.Mode, or the default for the zero Access.
func (a Access) mode() fs.FileMode {
	if a.Mode == 0 {
		return DefaultSocketMode
	}
	return a.Mode
}

// PrepareRunDir gives a's group the search bit on dir and makes it the
// directory's group (when a has a group; otherwise dir is left as it
// is). A directory already given to another group is taken over only if
// no volume runs in it: that volume's group would lose its access.
func (a Access) PrepareRunDir(ctx context.Context, dir string) error {
	if !a.grantsGroup() {
		return nil
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Gid != 0 && st.Gid != a.GID && fi.Mode().Perm()&0o010 != 0 {
		live, err := ListVolumes(ctx, dir)
		if err != nil {
			return err
		}
		if len(live) > 0 {
			return fmt.Errorf("run directory %s is open to group %s (volume %s runs with --socket-group %s); give the same --socket-group, or another run directory ($%s)",
				dir, groupName(st.Gid), live[0].Name, groupName(st.Gid), RunDirEnv)
		}
	}
	if err := os.Chown(dir, -1, int(a.GID)); err != nil {
		return fmt.Errorf("run directory %s: give it to group %s: %w", dir, a.Group, err)
	}
	if err := os.Chmod(dir, fi.Mode().Perm()|0o010); err != nil {
		return fmt.Errorf("run directory %s: %w", dir, err)
	}
	return nil
}

// applySocket sets a socket file's mode and, with a group, its group.
func (a Access) applySocket(path string) error {
	if a.Group != "" {
		if err := os.Chown(path, -1, int(a.GID)); err != nil {
			return err
		}
	}
	return os.Chmod(path, a.mode())
}

// SetSocketAccess gives the socket file at path a's mode and group;
// wb-create calls it on the NBD socket right after it listens.
func SetSocketAccess(path string, a Access) error {
	if err := a.applySocket(path); err != nil {
		return fmt.Errorf("socket %s: %w", path, err)
	}
	return nil
}

func groupName(gid uint32) string {
	if g, err := user.LookupGroupId(strconv.FormatUint(uint64(gid), 10)); err == nil {
		return g.Name
	}
	return strconv.FormatUint(uint64(gid), 10)
}

// peerInGroup reports whether the process at the other end of fd has gid
// as its primary group (primary) or a supplementary one (SO_PEERGROUPS).
func peerInGroup(fd uintptr, primary, gid uint32) (bool, error) {
	if primary == gid {
		return true, nil
	}
	buf := make([]uint32, 64)
	for {
		l := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if errno == unix.ERANGE && int(l/4) > len(buf) {
			buf = make([]uint32, l/4)
			continue
		}
		if errno != 0 {
			return false, errno
		}
		for _, g := range buf[:l/4] {
			if g == gid {
				return true, nil
			}
		}
		return false, nil
	}
}

// PermissionHint explains a connection to the socket at path refused for
// lack of permission: which group to join, or that root is needed, and
// that WB_RUN_DIR chooses the run directory.
func PermissionHint(path string) string {
	dir := filepath.Dir(path)
	where := fmt.Sprintf("(run directory %s; set $%s if the volume runs elsewhere)", dir, RunDirEnv)
	if fi, err := os.Stat(path); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Gid != 0 && fi.Mode().Perm()&0o060 == 0o060 {
			return fmt.Sprintf("only root and group %s may connect to %s: join group %s %s", groupName(st.Gid), path, groupName(st.Gid), where)
		}
		return fmt.Sprintf("only root may connect to %s (the volume was started without --socket-group): run as root %s", path, where)
	}
	if fi, err := os.Stat(dir); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Gid != 0 && fi.Mode().Perm()&0o010 != 0 {
			return fmt.Sprintf("only root and group %s may enter %s: join group %s %s", groupName(st.Gid), dir, groupName(st.Gid), where)
		}
	}
	return fmt.Sprintf("only root may connect to %s (no volume there was started with --socket-group): run as root %s", path, where)
}

// isPermission reports whether err is a refusal for lack of permission.
func isPermission(err error) bool {
	return errors.Is(err, fs.ErrPermission)
}

// listHint explains a run directory that may not be listed: only root
// lists it; a member of its group may still name a volume.
func listHint(dir string) string {
	where := fmt.Sprintf("(set $%s if the volumes run elsewhere)", RunDirEnv)
	if fi, err := os.Stat(dir); err == nil {
		st := fi.Sys().(*syscall.Stat_t)
		if st.Gid != 0 && fi.Mode().Perm()&0o010 != 0 {
			return fmt.Sprintf("only root may list %s; members of group %s may name a volume (wb-status NAME) %s", dir, groupName(st.Gid), where)
		}
	}
	return fmt.Sprintf("only root may list %s %s", dir, where)
}
