package main

import (
	"strings"
	"sync/atomic"
	"testing"
)

func TestSoakRegionCheck(t *testing.T) {
	var seq atomic.Uint64
	r := &soakRegion{start: 100, busy: make([]bool, 4), want: make([]uint64, 4), seq: &seq}
	b := make([]byte, 4*sectorSize)
	putTag(b[0:], 100, 5)
	putTag(b[sectorSize:], 101, 6)
	// sector 102 stays zero; sector 103 was trimmed (unknown).
	b[3*sectorSize] = 0xff
	r.set(0, 1, 5)
	r.set(1, 1, 6)
	r.set(3, 1, soakUnknown)
	if err := r.check(b, 0, 4); err != nil {
		t.Fatalf("check of the expected content: %v", err)
	}
	if got := r.verify.Load(); got != 3*sectorSize {
		t.Fatalf("bytes verified %d, want %d (trimmed sectors are not counted)", got, 3*sectorSize)
	}
	r.set(1, 1, 7) // a newer write the device does not show
	if err := r.check(b, 0, 4); err == nil || !strings.Contains(err.Error(), "holds seq 6, want 7") {
		t.Fatalf("stale sector: %v", err)
	}
	r.set(1, 1, 6)
	b[2*sectorSize+7] = 1 // garbage where zeroes belong
	if err := r.check(b, 0, 4); err == nil {
		t.Fatal("garbage sector passed")
	}
}
