package blockdev

import (
	"os"
	"path/filepath"
	"testing"
)

// TestReopenAfterClose: a device closed after io_uring I/O can be opened
// exclusively again at once (the ring must not keep the file, hence its
// lock, alive past Close).
func TestReopenAfterClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.Truncate(path, 0); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	buf := AlignedBuffer(4096)
	for i := range 50 {
		d, err := OpenFile(path, FileOptions{Direct: true, Exclusive: true})
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if _, err := d.WriteAt(buf, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
