package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A stand-in engine package: the 4 KiB write benchmark under the asked
// name, a replay benchmark under another name reporting MB/s, and no index
// benchmark, which must come out missing.
const fakeEngine = `package engine

import "testing"

func BenchmarkRandomWrite4K(b *testing.B) {
	b.SetBytes(4096)
	buf := make([]byte, 4096)
	for i := 0; i < b.N; i++ {
		buf[i%4096]++
	}
}

func BenchmarkReplayFullCache(b *testing.B) {
	b.SetBytes(1 << 20)
	for i := 0; i < b.N; i++ {
	}
	b.ReportMetric(3, "segments/op")
	b.ReportMetric(0.9, "ratio")
}
`

func TestEnginePhase(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a test binary")
	}
	root := t.TempDir()
	pkg := filepath.Join(root, "internal", "engine")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/fake\n\ngo 1.26\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(pkg, "engine_test.go"), []byte(fakeEngine), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	e := &env{dir: dir, ps: &procs{logDir: dir}}
	defer e.ps.stopAll()
	c := quickConfig()
	c.benchtime4K = "100x"
	res := newResults()
	enginePhase(context.Background(), e, c, res, root, "internal/engine")

	w := res.byID["engine/randwrite-4k"]
	if w == nil || !w.ok() || len(w.Runs) != c.reps || w.Median <= 0 {
		t.Fatalf("randwrite row %+v", w)
	}
	r := res.byID["engine/replay-1GiB"]
	if r == nil || !r.ok() || !strings.Contains(r.Subject, "BenchmarkReplayFullCache") || r.Note != "scaled to 1 GiB from MB/s" {
		t.Fatalf("replay row %+v", r)
	}
	if x := res.byID["engine/replay-1GiB/inbench-ratio"]; x == nil || !x.ok() || x.Median != 0.9 {
		t.Fatalf("replay ratio row %+v", x)
	}
	i := res.byID["engine/index-bytes-per-block"]
	if i == nil || i.ok() || !strings.Contains(i.Missing, "BenchmarkOpenIndexMemory16GiB not in internal/engine") {
		t.Fatalf("index row %+v", i)
	}

	// No package at all: every row missing, with the reason.
	res = newResults()
	enginePhase(context.Background(), e, c, res, root, "internal/nothing")
	for _, id := range []string{"engine/randwrite-4k", "engine/replay-1GiB", "engine/index-bytes-per-block"} {
		if r := res.byID[id]; r == nil || r.ok() || !strings.Contains(r.Missing, "does not exist") {
			t.Errorf("%s: %+v", id, r)
		}
	}
}
