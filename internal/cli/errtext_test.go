package cli

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
)

func TestErrorText(t *testing.T) {
	for in, want := range map[string]string{
		"control: bad message: writeback_threshold: 500 is out of range 0..100":  "writeback_threshold: 500 is out of range 0..100",
		"control: bad volume name: \"b a\": only letters":                        "bad volume name: \"b a\": only letters",
		"flush: engine: cache device failed":                                     "flush: cache device failed",
		"control: static option: write_around_mode can only be set when created": "write_around_mode can only be set when created",
		"backing device x: blockdev: identify x: loop devices nest too deep":     "backing device x: identify x: loop devices nest too deep",
		"control: bad message":                  "control: bad message", // never nothing
		"nbd://host/export: connection refused": "nbd://host/export: connection refused",
		"engineering: two\n  lines":             "engineering: two lines",
	} {
		if got := ErrorText(in); got != want {
			t.Errorf("ErrorText(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPathError(t *testing.T) {
	_, err := os.Lstat("/nonexistent/x")
	err = PathError("backing device", "x", errors.Join(err))
	if err.Error() != "backing device x: no such file or directory" || !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, syscall.ENOENT) {
		t.Errorf("PathError: %v", err)
	}
	if err := PathError("cache device", "c", errors.New("odd")); err.Error() != "cache device c: odd" {
		t.Errorf("PathError: %v", err)
	}
	_, err = blockdev.Identify("/")
	if err = PathError("cache device", "/", err); err.Error() != "cache device /: not a regular file or block device" || !errors.Is(err, blockdev.ErrNotSupported) {
		t.Errorf("PathError: %v", err)
	}
}
