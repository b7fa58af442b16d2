package control

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "wbdev", "vol-1.data_2", strings.Repeat("x", 64), "..a", "-"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "a/b", "a b", ".", "..", "vol\n", "é", "a:b"} {
		if err := ValidName(bad); !errors.Is(err, ErrBadName) {
			t.Errorf("ValidName(%q) = %v, want ErrBadName", bad, err)
		}
	}
}

func TestRunDir(t *testing.T) {
	t.Setenv(RunDirEnv, "")
	if RunDir() != DefaultRunDir {
		t.Errorf("RunDir() = %q without $%s", RunDir(), RunDirEnv)
	}
	d := filepath.Join(t.TempDir(), "a", "run")
	t.Setenv(RunDirEnv, d)
	if RunDir() != d {
		t.Errorf("RunDir() = %q, want %q", RunDir(), d)
	}
	if err := EnsureRunDir(d); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("run dir mode %v, %v; want 0700", fi.Mode(), err)
	}
	if err := EnsureRunDir(d); err != nil {
		t.Errorf("EnsureRunDir on an existing dir: %v", err)
	}
	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := EnsureRunDir(open); err == nil {
		t.Error("EnsureRunDir accepted a world-writable directory")
	}
	if got := ControlPath(d, "v"); got != filepath.Join(d, "v.ctl") {
		t.Errorf("ControlPath = %q", got)
	}
	if got := SocketPath(d, "v"); got != filepath.Join(d, "v.sock") {
		t.Errorf("SocketPath = %q", got)
	}
}

func testState(dir, name string, pid int) State {
	return State{
		Name: name, PID: pid, Backing: "/tmp/b.img", Cache: "/tmp/c.img",
		SizeBytes: 64 << 20, CacheBytes: 32 << 20,
		TableArgs: []string{"writeback_threshold", "70"},
		StartTime: time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC),
		Socket:    SocketPath(dir, name), Control: ControlPath(dir, name),
	}
}

func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	st := testState(dir, "vol", os.Getpid())
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(StatePath(dir, "vol"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, %v; want 0600", fi.Mode(), err)
	}
	got, err := ReadState(dir, "vol")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, st) {
		t.Errorf("ReadState = %+v\nwant %+v", got, st)
	}
	if tl := FormatTableLine(st.Table()); tl != "0 131072 writeboost /tmp/b.img /tmp/c.img 2 writeback_threshold 70" {
		t.Errorf("table line from state = %q", tl)
	}
	if _, err := ReadState(dir, "none"); !errors.Is(err, ErrNoVolume) {
		t.Errorf("ReadState(missing) = %v, want ErrNoVolume", err)
	}
	if err := os.WriteFile(StatePath(dir, "torn"), []byte(`{"name":"to`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir, "torn"); !errors.Is(err, ErrSyntax) {
		t.Errorf("ReadState(torn) = %v, want ErrSyntax", err)
	}
	if err := WriteState(dir, State{Name: "../x"}); !errors.Is(err, ErrBadName) {
		t.Errorf("WriteState(bad name) = %v", err)
	}
	if err := RemoveState(dir, "vol"); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadState(dir, "vol"); !errors.Is(err, ErrNoVolume) {
		t.Errorf("after RemoveState: %v", err)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

func TestListVolumesAndClaim(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	// live: our pid, a serving control socket.
	startServer(t, dir, "live", newFakeVolume())
	if err := WriteState(dir, testState(dir, "live", os.Getpid())); err != nil {
		t.Fatal(err)
	}
	// dead: the process is gone; its socket file was left behind.
	if err := WriteState(dir, testState(dir, "dead", deadPID(t))); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ControlPath(dir, "dead"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// mute: a live pid (reused) but nothing answers on the socket.
	if err := WriteState(dir, testState(dir, "mute", os.Getpid())); err != nil {
		t.Fatal(err)
	}
	// noise: files that are not state files.
	for _, n := range []string{"junk.json", "bad name.json", "x.txt"} {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("{"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	vols, err := ListVolumes(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Name != "live" {
		t.Fatalf("ListVolumes = %+v, want only live", vols)
	}
	if vols, err := ListVolumes(ctx, filepath.Join(dir, "missing")); err != nil || len(vols) != 0 {
		t.Errorf("ListVolumes(missing dir) = %v, %v", vols, err)
	}

	if err := ClaimName(ctx, dir, "live"); !errors.Is(err, ErrVolumeLive) {
		t.Errorf("ClaimName(live) = %v, want ErrVolumeLive", err)
	}
	for _, n := range []string{"dead", "mute", "fresh"} {
		if err := ClaimName(ctx, dir, n); err != nil {
			t.Errorf("ClaimName(%s) = %v", n, err)
		}
		for _, p := range []string{StatePath(dir, n), ControlPath(dir, n), SocketPath(dir, n)} {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("ClaimName(%s) left %s", n, p)
			}
		}
	}
	// A live control socket without a state file still holds the name.
	if err := os.Remove(StatePath(dir, "live")); err != nil {
		t.Fatal(err)
	}
	if err := ClaimName(ctx, dir, "live"); !errors.Is(err, ErrVolumeLive) {
		t.Errorf("ClaimName(live without state) = %v, want ErrVolumeLive", err)
	}
}

func TestLockName(t *testing.T) {
	dir := t.TempDir()
	f, err := LockName(dir, "vol")
	if err != nil {
		t.Fatal(err)
	}
	// flock locks belong to the open file description: a second open, even
	// in the same process, is refused like another process would be.
	if _, err := LockName(dir, "vol"); !errors.Is(err, ErrVolumeLive) {
		t.Errorf("second LockName = %v, want ErrVolumeLive", err)
	}
	other, err := LockName(dir, "other")
	if err != nil {
		t.Errorf("LockName of another name: %v", err)
	} else {
		other.Close()
	}
	f.Close()
	g, err := LockName(dir, "vol")
	if err != nil {
		t.Fatalf("LockName after release: %v", err)
	}
	g.Close()
	if _, err := LockName(dir, "../x"); !errors.Is(err, ErrBadName) {
		t.Errorf("LockName(bad name) = %v", err)
	}
}

func FuzzReadState(f *testing.F) {
	dir := f.TempDir()
	ok, err := json.Marshal(testState(dir, "vol", 1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ok)
	f.Add([]byte(`{"name":"vol","pid":-1,"table_args":null}`))
	f.Add([]byte(`{"name":"other"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := os.WriteFile(StatePath(dir, "vol"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := ReadState(dir, "vol")
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		if st.Name != "vol" {
			t.Fatalf("accepted a state file of volume %q", st.Name)
		}
	})
}
