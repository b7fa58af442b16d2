package engine

import (
	"bytes"
	"testing"
)

func TestSmokeWriteReadReopen(t *testing.T) {
	r := newRig(t, 4, 1<<20, nil)
	r.write(0, fill(4096, 1))
	r.write(8192+512, fill(1024, 2))
	if got := r.read(0, 4096); !bytes.Equal(got, fill(4096, 1)) {
		t.Fatal("read back block 0")
	}
	r.close()
	r.open()
	got := r.read(8192, 4096)
	want := make([]byte, 4096)
	copy(want[512:], fill(1024, 2))
	if !bytes.Equal(got, want) {
		t.Fatalf("after reopen: got %v", got[:1600])
	}
}
