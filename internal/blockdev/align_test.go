package blockdev

import (
	"testing"
	"unsafe"
)

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 4096, 4097, 1 << 20} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n {
			t.Fatalf("AlignedBuffer(%d): len %d cap %d", n, len(b), cap(b))
		}
		if n == 0 {
			continue
		}
		if a := uintptr(unsafe.Pointer(&b[0])) % Alignment; a != 0 {
			t.Fatalf("AlignedBuffer(%d) starts %d bytes past a 4096 boundary", n, a)
		}
		for i, c := range b {
			if c != 0 {
				t.Fatalf("AlignedBuffer(%d)[%d] = %d, want 0", n, i, c)
			}
		}
	}
}

func TestIsAligned(t *testing.T) {
	b := AlignedBuffer(3 * Alignment)
	cases := []struct {
		name string
		b    []byte
		want bool
	}{
		{"empty", nil, true},
		{"whole", b, true},
		{"one block", b[:Alignment], true},
		{"second block", b[Alignment:], true},
		{"short", b[:512], false},
		{"offset start", b[512 : 512+Alignment], false},
	}
	for _, c := range cases {
		if got := IsAligned(c.b); got != c.want {
			t.Errorf("%s: IsAligned = %v, want %v", c.name, got, c.want)
		}
	}
}
