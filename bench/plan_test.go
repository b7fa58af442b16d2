package main

import (
	"slices"
	"strings"
	"testing"
)

// Every target's row and reference must be a row the run records, in both
// modes: a typo or a subject left out of a --quick list would otherwise
// only show as "not measured" at the end of a run.
func TestTargetsWired(t *testing.T) {
	for _, c := range []config{quickConfig(), fullConfig()} {
		mode := c.describe()["mode"]
		ids := plannedRows(c)
		for _, g := range targets() {
			if g.FullOnly && c.quick {
				continue
			}
			if !ids[g.Row] {
				t.Errorf("%s: target %s %q: row %q is not produced", mode, g.Name, g.Desc, g.Row)
			}
			if g.Ref != "" && !ids[g.Ref] {
				t.Errorf("%s: target %s %q: reference %q is not produced", mode, g.Name, g.Desc, g.Ref)
			}
		}
	}
}

// A full-mode-only target says so in a quick run instead of "not measured".
func TestFullOnlyTarget(t *testing.T) {
	res := newResults()
	res.Mode = "quick"
	res.Targets = []*target{{Name: "F", Row: "nbd/x/y", Op: ">=", Value: 1, FullOnly: true}, {Name: "G", Row: "nbd/x/y", Op: ">=", Value: 1}}
	res.judge()
	if g := res.Targets[0]; g.Verdict != "missing" || g.Why != "measured in full mode only" {
		t.Errorf("full-only target: %s %q", g.Verdict, g.Why)
	}
	if g := res.Targets[1]; g.Why != "nbd/x/y not measured" {
		t.Errorf("target: %q", g.Why)
	}
}

// The table holds each goal once: no two targets of a group judge the same
// pair of rows.
func TestTargetsUnique(t *testing.T) {
	seen := map[string]string{}
	for _, g := range targets() {
		k := g.Name + "|" + g.Row + "|" + g.Ref
		if d, ok := seen[k]; ok {
			t.Errorf("target %s judged twice: %q and %q", g.Name, d, g.Desc)
		}
		seen[k] = g.Desc
		switch g.Op {
		case ">=", "<=", "~":
		default:
			t.Errorf("target %s %q: op %q", g.Name, g.Desc, g.Op)
		}
	}
}

// Issue 16's figures are all judged in one run, quick or full.
func TestR16Targets(t *testing.T) {
	var r16 []*target
	for _, g := range targets() {
		if g.Name == "R16" {
			r16 = append(r16, g)
		}
	}
	want := []struct{ row, ref, op string }{
		{nbdRowID("randread-cached-qd32", sWBFiles), "physical/randread-4k@randread-cached-qd32", ">="},
		{nbdRowID("randread-cached-qd32", sWBFiles), nbdRowID("randread-cached-qd32", sMemory), ">="},
		{nbdRowID("seqwrite-1m-qd4", sWBFiles), "physical/seqwrite-512k@seqwrite-1m-qd4", ">="},
		{nbdRowID("randwrite-flush32-qd1", sWBFiles), nbdRowID("randwrite-qd1", sWBFiles), ">="},
		{"nbd/randwrite-flush32-qd1-flush-p50/" + sWBFiles, "physical/write-fdatasync-4k@randwrite-flush32-qd1", "<="},
		{"writeback/dense/rate", "writeback/unsorted-4k", ">="},
	}
	if len(r16) != len(want) {
		t.Fatalf("%d R16 targets, want %d", len(r16), len(want))
	}
	for i, w := range want {
		if g := r16[i]; g.Row != w.row || g.Ref != w.ref || g.Op != w.op {
			t.Errorf("R16 #%d: %s %s %s, want %s %s %s", i, g.Row, g.Op, g.Ref, w.row, w.op, w.ref)
		}
	}
	// The seq write's device ceiling moved from "dev" to R16: once.
	n := 0
	for _, g := range targets() {
		if g.Row == nbdRowID("seqwrite-1m-qd4", sWBFiles) && strings.HasPrefix(g.Ref, "physical/seqwrite-512k") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("seq write vs physical judged %d times", n)
	}
}

// Every device figure a workload takes beside its runs is a physical job,
// taken in both modes wherever the workload runs, and the R16 targets
// against the device use those figures: the device measured minutes
// earlier drifts on a shared host.
func TestBesideJobsExist(t *testing.T) {
	for _, wl := range workloads() {
		for _, key := range wl.beside {
			if _, ok := physJobByKey(key); !ok {
				t.Errorf("%s: beside %q is no physical job", wl.key, key)
			}
		}
	}
	for _, c := range []config{quickConfig(), fullConfig()} {
		rows := plannedRows(c)
		for _, g := range targets() {
			if g.Name == "R16" && strings.HasPrefix(g.Ref, "physical/") && !rows[g.Ref] {
				t.Errorf("%s: R16 %q: reference %s is not recorded", c.describe()["mode"], g.Desc, g.Ref)
			}
			if g.Name == "R16" && strings.HasPrefix(g.Ref, "physical/") && !strings.Contains(g.Ref, "@") {
				t.Errorf("R16 %q judged against the physical phase's %s, not the figure beside its runs", g.Desc, g.Ref)
			}
		}
	}
}

// The FLUSH latency rows: one per subject of the flush workload, lower is
// better, referenced to the physical write+fdatasync row.
func TestFlushLatencyRows(t *testing.T) {
	var fl *workload
	for _, wl := range workloads() {
		if wl.flushLat {
			if fl != nil {
				t.Fatalf("two flushLat workloads: %s and %s", fl.key, wl.key)
			}
			wl := wl
			fl = &wl
		}
	}
	if fl == nil || fl.key != "randwrite-flush32-qd1" || fl.job.Fsync != 32 || fl.job.Depth != 1 {
		t.Fatalf("flushLat workload %+v", fl)
	}
	for _, c := range []config{quickConfig(), fullConfig()} {
		subj := fl.subjectsFor(c)
		if !slices.Contains(subj, sWBFiles) {
			t.Errorf("%s: flush32 does not run on %s", c.describe()["mode"], sWBFiles)
		}
	}
	pj, ok := physJobByKey("write-fdatasync-4k")
	if !ok {
		t.Fatal("no physical write-fdatasync-4k job")
	}
	// The FLUSH latency rows reference that job's figure beside the runs.
	if !slices.Contains(fl.beside, pj.key) {
		t.Errorf("flushLat workload %s does not take %s beside its runs", fl.key, pj.key)
	}
	if pj.better != "lower" || pj.unit != "µs" || pj.job.Engine != "psync" || pj.job.Fdatasync != 1 || pj.job.Depth != 1 {
		t.Errorf("write-fdatasync job %+v", pj)
	}
	a := pj.job.args("/o")
	if !slices.Contains(a, "--fdatasync=1") || !slices.Contains(a, "--ioengine=psync") {
		t.Errorf("args %s", strings.Join(a, " "))
	}
	v, err := mustParse(t, fioFdatasyncSample).WriteSyncP50()
	if err != nil {
		t.Fatal(err)
	}
	if m, err := pj.metric(mustParse(t, fioFdatasyncSample)); err != nil || m != v {
		t.Errorf("metric %v %v, want %v", m, err, v)
	}
	// The quick lists must hold the subjects the R16 ratios need.
	for _, wl := range workloads() {
		switch wl.key {
		case "randwrite-qd1", "randwrite-flush32-qd1", "randread-cached-qd32", "seqwrite-1m-qd4":
			if !slices.Contains(wl.quick, sWBFiles) {
				t.Errorf("%s: --quick lacks %s", wl.key, sWBFiles)
			}
		}
	}
}

// A "<=" target on a lower-is-better row passes when the row is at most
// Value times its reference.
func TestJudgeLowerRatio(t *testing.T) {
	res := newResults()
	res.add(&row{ID: physRowID("write-fdatasync-4k"), Group: "physical", Workload: "write-fdatasync-4k", Unit: "µs", Better: "lower"}, []float64{300, 310, 290})
	lat := res.add(&row{ID: nbdRowID(flushLatKey("randwrite-flush32-qd1"), sWBFiles), Group: "nbd", Unit: "µs", Better: "lower",
		Ref: physRowID("write-fdatasync-4k")}, []float64{330, 350, 340})
	res.Targets = []*target{
		{Name: "ok", Row: lat.ID, Ref: physRowID("write-fdatasync-4k"), Op: "<=", Value: 1.2},
		{Name: "tight", Row: lat.ID, Ref: physRowID("write-fdatasync-4k"), Op: "<=", Value: 1.1},
	}
	res.judge()
	if g := res.Targets[0]; g.Verdict != "PASS" || g.Got == nil || *g.Got != 340.0/300 {
		t.Errorf("ok: %s %v", g.Verdict, g.Got)
	}
	if g := res.Targets[1]; g.Verdict != "MISS" {
		t.Errorf("tight: %s", g.Verdict)
	}
	if lat.Target != "ok <= 1.200x" || lat.Ratio == nil {
		t.Errorf("row target %q ratio %v", lat.Target, lat.Ratio)
	}
}

func mustParse(t *testing.T, s string) fioResult {
	t.Helper()
	r, err := parseFioJSON([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// N1 dense: judged on backing requests per block (what the transport
// decides), the drain rate kept at "no slower"; no 2x rate target left.
func TestN1Dense(t *testing.T) {
	var req, rate int
	for _, g := range targets() {
		if g.Name != "N1" {
			continue
		}
		switch {
		case g.Row == wbRowID("dense", "requests", viaNBD) && g.Ref == wbRowID("dense", "requests", viaFuse):
			req++
			if g.Op != "<=" || g.Value != 0.5 {
				t.Errorf("N1 dense requests: %s %v", g.Op, g.Value)
			}
		case g.Row == wbRowID("dense", "rate", viaNBD) && g.Ref == wbRowID("dense", "rate", viaFuse):
			rate++
			if g.Op != ">=" || g.Value != 1 {
				t.Errorf("N1 dense rate: %s %v", g.Op, g.Value)
			}
		}
	}
	if req != 1 || rate != 1 {
		t.Errorf("N1 dense: %d requests targets, %d rate targets", req, rate)
	}
}
