package control

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestParseAccess(t *testing.T) {
	for _, tc := range []struct {
		group, mode string
		want        Access
		err         string
	}{
		{"", "", Access{Mode: 0o600}, ""},
		{"", "0600", Access{Mode: 0o600}, ""},
		{"daemon", "", Access{Group: "daemon", GID: 1, Mode: 0o660}, ""},
		{"1", "", Access{Group: "daemon", GID: 1, Mode: 0o660}, ""},
		{"daemon", "600", Access{Group: "daemon", GID: 1, Mode: 0o600}, ""},
		{"", "0660", Access{}, "name it with --socket-group"},
		{"daemon", "0666", Access{}, "others never get access"},
		{"daemon", "0640", Access{}, "both read and write"},
		{"daemon", "0460", Access{}, "the owner (root) needs"},
		{"daemon", "rw", Access{}, "want an octal mode"},
		{"no-such-group-here", "", Access{}, `--socket-group "no-such-group-here": no such group`},
	} {
		got, err := ParseAccess(tc.group, tc.mode)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAccess(%q, %q): err %v, want %q", tc.group, tc.mode, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseAccess(%q, %q) = %+v, %v; want %+v", tc.group, tc.mode, got, err, tc.want)
		}
	}
}

func TestPrepareRunDirAndSockets(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root")
	}
	dir := filepath.Join(t.TempDir(), "run")
	if err := EnsureRunDir(dir); err != nil {
		t.Fatal(err)
	}
	// No group: the directory stays 0700.
	if err := (Access{}).PrepareRunDir(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("run directory mode %v without a group", fi.Mode().Perm())
	}
	a, err := ParseAccess("daemon", "")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PrepareRunDir(context.Background(), dir); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(dir)
	if fi.Mode().Perm() != 0o710 || fi.Sys().(*syscall.Stat_t).Gid != 1 {
		t.Fatalf("run directory mode %v gid %d, want 0710 gid 1", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	l, err := ListenAccess(dir, "vol", a)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	fi, _ = os.Stat(ControlPath(dir, "vol"))
	if fi.Mode().Perm() != 0o660 || fi.Sys().(*syscall.Stat_t).Gid != 1 {
		t.Fatalf("control socket mode %v gid %d, want 0660 gid 1", fi.Mode().Perm(), fi.Sys().(*syscall.Stat_t).Gid)
	}
	if h := PermissionHint(ControlPath(dir, "vol")); !strings.Contains(h, "join group daemon") || !strings.Contains(h, RunDirEnv) {
		t.Errorf("hint for a group socket: %s", h)
	}
	l2, err := Listen(dir, "solo")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if h := PermissionHint(ControlPath(dir, "solo")); !strings.Contains(h, "only root may connect") || !strings.Contains(h, RunDirEnv) {
		t.Errorf("hint for a root-only socket: %s", h)
	}
	if h := listHint(dir); !strings.Contains(h, "group daemon may name a volume") {
		t.Errorf("list hint: %s", h)
	}
}

func TestPermissionHintRootOnlyDir(t *testing.T) {
	dir := t.TempDir()
	h := PermissionHint(filepath.Join(dir, "nosuch", "vol.ctl"))
	if !strings.Contains(h, "only root may connect") || !strings.Contains(h, "$"+RunDirEnv) {
		t.Errorf("hint: %s", h)
	}
}
