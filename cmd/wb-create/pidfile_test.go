package main

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestPidfile: --pidfile holds our pid while the volume serves and is gone
// after a clean stop.
func TestPidfile(t *testing.T) {
	dir, b, c := images(t, 16<<20, 8<<20)
	pf := filepath.Join(dir, "wb.pid")
	r := start(t, "--reformat", "--pidfile", pf, "pv", b, c)
	got, err := os.ReadFile(pf)
	if err != nil || string(got) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("pidfile %q, %v; want %d", got, err, os.Getpid())
	}
	r.stop(t)
	if _, err := os.Stat(pf); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pidfile left after a clean stop: %v", err)
	}
	code, _, stderr := runOnce(t, "--pidfile", filepath.Join(dir, "no", "such", "dir", "wb.pid"), "pv", b, c)
	if code != 1 {
		t.Errorf("unwritable pidfile: exit %d, %s", code, stderr)
	}
}
