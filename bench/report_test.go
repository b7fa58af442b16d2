package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestJudge(t *testing.T) {
	res := newResults()
	res.add(&row{Group: "nbd", Workload: "randwrite-qd32", Subject: "memory", Unit: "IOPS"}, []float64{100, 90, 110})
	res.add(&row{Group: "nbd", Workload: "randwrite-qd32", Subject: "qemu", Unit: "IOPS"}, []float64{50, 40, 45})
	wb := res.add(&row{Group: "nbd", Workload: "randwrite-qd32", Subject: "wb", Unit: "IOPS", Ref: "nbd/randwrite-qd32/memory"}, []float64{70, 85, 80})
	res.missing(&row{Group: "engine", Workload: "index", Subject: "engine", Unit: "B/block", Better: "lower"}, "benchmark missing")
	res.add(&row{Group: "wb", Workload: "req", Subject: "wb", Unit: "req/block", Better: "lower"}, []float64{0.2, 0.3, 0.1})
	res.Targets = []*target{
		{Name: "A", Row: "nbd/randwrite-qd32/wb", Ref: "nbd/randwrite-qd32/memory", Op: ">=", Value: 0.8},
		{Name: "B", Row: "nbd/randwrite-qd32/wb", Ref: "nbd/randwrite-qd32/qemu", Op: ">=", Value: 2},
		{Name: "C", Row: "engine/index/engine", Op: "<=", Value: 24},
		{Name: "D", Row: "wb/req/wb", Op: "<=", Value: 0.25},
		{Name: "E", Row: "nbd/randwrite-qd32/nobody", Ref: "nbd/randwrite-qd32/memory", Op: ">=", Value: 1},
		{Name: "F", Row: "wb/req/wb", Op: "~", Value: 0.25, Tol: 0.01},
		// memory (100) is not above qemu (45): n/a; the other way: judged.
		{Name: "G", Row: "nbd/randwrite-qd32/wb", Ref: "nbd/randwrite-qd32/qemu", Op: ">=", Value: 0.8,
			When: &cond{Row: "nbd/randwrite-qd32/qemu", Above: "nbd/randwrite-qd32/memory", Desc: "qemu > memory"}},
		{Name: "H", Row: "nbd/randwrite-qd32/wb", Ref: "nbd/randwrite-qd32/qemu", Op: ">=", Value: 0.8,
			When: &cond{Row: "nbd/randwrite-qd32/memory", Above: "nbd/randwrite-qd32/qemu", Desc: "memory > qemu"}},
		{Name: "I", Row: "nbd/randwrite-qd32/wb", Ref: "nbd/randwrite-qd32/qemu", Op: ">=", Value: 0.8,
			When: &cond{Row: "nbd/randwrite-qd32/nobody", Above: "nbd/randwrite-qd32/qemu", Desc: "x"}},
	}
	res.judge()
	if wb.Median != 80 || wb.Min != 70 || wb.Max != 85 {
		t.Errorf("wb row %+v", wb)
	}
	if wb.Ratio == nil || *wb.Ratio != 0.8 || wb.RefLabel != "memory" {
		t.Errorf("wb ratio %v label %q", wb.Ratio, wb.RefLabel)
	}
	want := map[string]string{"A": "PASS", "B": "MISS", "C": "missing", "D": "PASS", "E": "missing", "F": "MISS", "G": "n/a", "H": "PASS", "I": "missing"}
	for _, g := range res.Targets {
		if g.Verdict != want[g.Name] {
			t.Errorf("target %s: %s (got %v, why %q), want %s", g.Name, g.Verdict, g.Got, g.Why, want[g.Name])
		}
	}
	if wb.Target != "A >= 0.800x" || wb.Verdict != "PASS" {
		t.Errorf("row target %q %q", wb.Target, wb.Verdict)
	}
	if g := res.Targets[1]; g.Got == nil || *g.Got != 80.0/45 {
		t.Errorf("B got %v", g.Got)
	}
	if g := res.Targets[6]; g.Got != nil || g.Why != "only where qemu > memory: 45.00 <= 100.0" {
		t.Errorf("G got %v why %q", g.Got, g.Why)
	}

	var buf bytes.Buffer
	res.printTables(&buf)
	for _, s := range []string{"randwrite-qd32", "benchmark missing", "0.800x", "MISS", "PASS"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, buf.String())
		}
	}

	path := filepath.Join(t.TempDir(), "r.json")
	if err := res.writeJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var back results
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Rows) != 5 || len(back.Targets) != 9 || back.Rows[2].Ratio == nil || back.Targets[6].When == nil {
		t.Errorf("json round trip: %d rows %d targets", len(back.Rows), len(back.Targets))
	}
}
