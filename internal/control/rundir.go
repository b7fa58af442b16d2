package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/google/renameio/v2"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// DefaultRunDir is the run directory when $WB_RUN_DIR is not set.
const DefaultRunDir = "/run/writeboost"

// RunDirEnv names the environment variable that overrides DefaultRunDir.
const RunDirEnv = "WB_RUN_DIR"

// MaxNameLen is the longest volume name.
const MaxNameLen = 64

// RunDir returns $WB_RUN_DIR, else /run/writeboost. It does not create it.
func RunDir() string {
	if d := os.Getenv(RunDirEnv); d != "" {
		return d
	}
	return DefaultRunDir
}

// EnsureRunDir creates dir with mode 0700 if it does not exist. An
// existing dir is used as it is, but one that others may write to is
// refused: its sockets would be open to anyone.
func EnsureRunDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("run directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("run directory %s is writable by others (mode %v)", dir, fi.Mode().Perm())
	}
	return nil
}

// ValidName checks a volume name: [A-Za-z0-9._-]{1,64}, and not "." or
// "..". It is also the NBD export name and part of file names.
func ValidName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("%w: %q: must be 1 to %d characters", ErrBadName, name, MaxNameLen)
	}
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: %q: only letters, digits, '.', '_' and '-' are allowed", ErrBadName, name)
		}
	}
	if name == "." || name == ".." {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}

// SocketPath is the NBD unix socket of volume name.
func SocketPath(dir, name string) string { return filepath.Join(dir, name+".sock") }

// ControlPath is the control socket of volume name.
func ControlPath(dir, name string) string { return filepath.Join(dir, name+".ctl") }

// StatePath is the state file of volume name.
func StatePath(dir, name string) string { return filepath.Join(dir, name+".json") }

// State is the state file RUNDIR/NAME.json that wb-create writes once the
// volume serves, and removes on a clean stop.
type State struct {
	Name       string    `json:"name"`
	PID        int       `json:"pid"`
	Backing    string    `json:"backing"`
	Cache      string    `json:"cache"`
	SizeBytes  uint64    `json:"size_bytes"`       // the volume (= backing) size
	CacheBytes uint64    `json:"cache_size_bytes"` // the cache device size
	TableArgs  []string  `json:"table_args"`       // optional KEY VALUE pairs as given
	StartTime  time.Time `json:"start_time"`
	Socket     string    `json:"socket"`            // NBD unix socket
	Control    string    `json:"control"`           // control socket
	Listen     []string  `json:"listen,omitempty"`  // extra NBD listeners, e.g. tcp://127.0.0.1:10809
	Version    string    `json:"version,omitempty"` // the binary's version
}

// Table returns the table line of the volume the state describes.
func (st State) Table() TableLine {
	return TableLine{Name: st.Name, SizeBytes: st.SizeBytes, Backing: st.Backing, Cache: st.Cache, Args: st.TableArgs}
}

// WriteState writes RUNDIR/NAME.json atomically (renameio: a reader sees
// the old file or the new one, never a part), mode 0600.
func WriteState(dir string, st State) error {
	if err := ValidName(st.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode state of %s: %w", st.Name, err)
	}
	b = append(b, '\n')
	if err := renameio.WriteFile(StatePath(dir, st.Name), b, 0o600); err != nil {
		return fmt.Errorf("write state of %s: %w", st.Name, err)
	}
	return nil
}

// ReadState reads RUNDIR/NAME.json. A missing file wraps ErrNoVolume.
func ReadState(dir, name string) (State, error) {
	var st State
	if err := ValidName(name); err != nil {
		return st, err
	}
	b, err := os.ReadFile(StatePath(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return st, fmt.Errorf("%w: %s (no %s)", ErrNoVolume, name, StatePath(dir, name))
	}
	if err != nil {
		return st, fmt.Errorf("read state of %s: %w", name, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("%w: state file %s: %v", ErrSyntax, StatePath(dir, name), err)
	}
	if st.Name != name {
		return st, fmt.Errorf("%w: state file %s names volume %q", ErrSyntax, StatePath(dir, name), st.Name)
	}
	return st, nil
}

// RemoveState removes the state file and both sockets of name; missing
// files are not an error. wb-create calls it on a clean stop.
func RemoveState(dir, name string) error {
	var errs []error
	for _, p := range []string{StatePath(dir, name), ControlPath(dir, name), SocketPath(dir, name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove state of %s: %w", name, err)
	}
	return nil
}

// pidAlive reports whether a process pid exists (signal 0; EPERM means it
// exists but belongs to someone else).
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// livenessTimeout bounds how long a liveness probe waits for a control
// socket to answer.
const livenessTimeout = 2 * time.Second

// Live reports whether the volume st describes is running: its process
// exists and its control socket answers a status request. A pid alone is
// not enough, since pids are reused after a crash.
func Live(ctx context.Context, st State) bool {
	if !pidAlive(st.PID) {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, livenessTimeout)
	defer cancel()
	c, err := DialPath(ctx, st.Control)
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.StatusContext(ctx)
	return err == nil
}

// ClaimName prepares dir for a new volume name: a live volume of that name
// makes it fail with ErrVolumeLive; files left by a stopped or killed one
// (state file, sockets) are removed. wb-create calls it before listening.
func ClaimName(ctx context.Context, dir, name string) error {
	if err := ValidName(name); err != nil {
		return err
	}
	st, err := ReadState(dir, name)
	switch {
	case err == nil:
		if Live(ctx, st) {
			return fmt.Errorf("%w: %s (pid %d)", ErrVolumeLive, name, st.PID)
		}
	case errors.Is(err, ErrNoVolume), errors.Is(err, ErrSyntax):
		// No state file, or a torn one from an older writer: a control
		// socket that still answers is a live volume all the same.
		if ctlAnswers(ctx, ControlPath(dir, name)) {
			return fmt.Errorf("%w: %s (control socket answers)", ErrVolumeLive, name)
		}
	default:
		return err
	}
	return RemoveState(dir, name)
}

func ctlAnswers(ctx context.Context, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, livenessTimeout)
	defer cancel()
	c, err := DialPath(ctx, path)
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.StatusContext(ctx)
	return err == nil
}

// LockPath is the lock file of volume name.
func LockPath(dir, name string) string { return filepath.Join(dir, name+".lock") }

// LockName takes an exclusive flock on RUNDIR/NAME.lock for the life of
// the process (the kernel drops it when the process dies, however it
// dies). It fails with ErrVolumeLive while another process holds it. It
// closes the window ClaimName leaves open: two wb-create of one name
// starting at once, neither with a control socket yet. Close the file
// to release the name; the file itself stays, empty.
func LockName(dir, name string) (*os.File, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(LockPath(dir, name), os.O_RDWR|os.O_CREATE|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock volume name: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (another process holds %s)", ErrVolumeLive, name, LockPath(dir, name))
		}
		return nil, fmt.Errorf("lock volume name %s: %w", name, err)
	}
	return f, nil
}

// ListVolumes returns the state of every live volume in dir, sorted by
// name. Stale state files (process gone, or control socket not answering)
// are skipped, not removed: the next wb-create of that name cleans up.
// A missing dir means no volumes.
func ListVolumes(ctx context.Context, dir string) ([]State, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if isPermission(err) {
		return nil, fmt.Errorf("%w: list volumes: %s", ErrPermission, listHint(dir))
	}
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	var out []State
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || ValidName(name) != nil {
			continue
		}
		st, err := ReadState(dir, name)
		if err != nil {
			continue // torn or foreign file: not a live volume
		}
		if Live(ctx, st) {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b State) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// NameHolders labels the holders of a busy device that are volumes
// running in dir with their names ("writeboost volume va (pid 1234)"),
// so that the refusal says which volume to stop. A run directory that
// cannot be listed leaves the pids as they are.
func NameHolders(ctx context.Context, dir string, be *blockdev.BusyError) {
	if len(be.Holders) == 0 {
		return
	}
	vols, err := ListVolumes(ctx, dir)
	if err != nil {
		return
	}
	for i, h := range be.Holders {
		for _, v := range vols {
			if v.PID == h.PID {
				be.Holders[i].Label = "writeboost volume " + v.Name
			}
		}
	}
}
