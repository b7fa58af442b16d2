package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestTagRoundTrip(t *testing.T) {
	b := make([]byte, sectorSize)
	if got := readTag(b, 7); got != tagZero {
		t.Fatalf("zero sector: %d", got)
	}
	putTag(b, 7, 42)
	if got := readTag(b, 7); got != 42 {
		t.Fatalf("tag: %d, want 42", got)
	}
	if got := readTag(b, 8); got != tagForeign {
		t.Fatalf("another sector's tag: %d, want foreign", got)
	}
	b[100] ^= 1
	if got := readTag(b, 7); got != tagForeign {
		t.Fatalf("flipped byte: %d, want foreign", got)
	}
}

func TestExpectedPhases(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s")
	script := "# c\nphase one\nw 0 4k\nf\nphase two\nw 512 512\nwf 1m 1k\nf\nphase three\nw 0 512\n"
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	ops, err := parseScript(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 6 || ops[0].line != 3 || ops[2].off != 512 || ops[3].off != 1<<20 || ops[3].kind != "wf" {
		t.Fatalf("ops: %+v", ops)
	}
	w, err := expected(ops, "two")
	if err != nil {
		t.Fatal(err)
	}
	if w[0] != 3 || w[1] != 6 || w[2] != 3 || w[2048] != 7 || w[2049] != 7 || len(w) != 10 {
		t.Fatalf("through two: %v", w)
	}
	w, _ = expected(ops, "")
	if w[0] != 10 {
		t.Fatalf("all: sector 0 = %d, want 10", w[0])
	}
	if _, err := expected(ops, "four"); err == nil {
		t.Fatal("unknown phase accepted")
	}
	for _, bad := range []string{"w 1 512\n", "w 0 0\n", "x\n", "f 1\n"} {
		if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := parseScript(p); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
