package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// engineBench is an engine-only figure: a Go benchmark in internal/engine,
// found by name, and the metrics taken from its output. The first unit of
// primary that a result carries makes the row judged by the targets; extras
// are further rows (such as the benchmark's own in-process ratio).
type engineBench struct {
	key       string
	want      string         // the name asked of the engine's author
	match     *regexp.Regexp // accepted names, when want is absent
	benchtime func(config) string
	rowUnit   string
	better    string
	ref       string
	primary   []metricPick
	extras    []extraMetric
}

// metricPick converts one reported unit into the row's unit.
type metricPick struct {
	unit  string
	scale func(float64) float64
	note  string
}

type extraMetric struct {
	unit, key, rowUnit, better, desc string
}

func same(v float64) float64 { return v }

func engineBenches() []engineBench {
	return []engineBench{
		// b.N is capped by the benchmark to the cache's capacity, and every
		// round of b.N redoes a 1 GiB setup: a fixed count keeps it to one.
		{key: "randwrite-4k", want: "BenchmarkRandomWrite4K", match: regexp.MustCompile(`(?i)^Benchmark.*(Rand(om)?Write4K|Write4KRand)`),
			benchtime: func(c config) string { return c.benchtime4K }, rowUnit: "MB/s", ref: "physical/seqwrite-512k",
			primary: []metricPick{{"MB/s", same, ""}, {"engine_MB/s", same, ""}},
			extras: []extraMetric{
				{"seq_MB/s", "inbench-seq", "MB/s", "higher", "its own 512 KiB seq O_DIRECT write of the cache file"},
				{"ratio", "inbench-ratio", "x", "higher", "its own ratio: engine / seq write, same process"},
			}},
		// Replay of a full 1 GiB cache in seconds: the benchmark's replay_ms
		// (ns/op also counts its sequential read of the file); with only
		// b.SetBytes the time is scaled to 1 GiB from MB/s; else one op is
		// taken as one replay of 1 GiB.
		{key: "replay-1GiB", want: "BenchmarkReplay1GiB", match: regexp.MustCompile(`(?i)^Benchmark.*Replay`),
			benchtime: func(config) string { return "1x" }, rowUnit: "s", better: "lower", ref: "physical/read-1GiB",
			primary: []metricPick{
				{"replay_ms", func(v float64) float64 { return v / 1e3 }, ""},
				{"MB/s", func(v float64) float64 { return float64(gib) / 1e6 / v }, "scaled to 1 GiB from MB/s"},
				{"ns/op", func(v float64) float64 { return v / 1e9 }, "one op taken as one replay of 1 GiB"},
			},
			extras: []extraMetric{
				{"seqread_ms", "inbench-seqread", "ms", "lower", "its own 8 MiB O_DIRECT sequential read of the file"},
				{"ratio", "inbench-ratio", "x", "lower", "its own ratio: replay / sequential read, same process"},
			}},
		// Index RAM: the heap the open volume holds per cache block (all of
		// it, the conservative figure), else the index's own count.
		{key: "index-bytes-per-block", want: "BenchmarkOpenIndexMemory16GiB", match: regexp.MustCompile(`(?i)^Benchmark.*Index`),
			benchtime: func(config) string { return "1x" }, rowUnit: "B/block", better: "lower",
			primary: []metricPick{{"heap_bytes/block", same, "heap of the open volume"}, {"index_bytes/block", same, "index only"},
				{"B/block", same, ""}, {"bytes/block", same, ""}},
			extras: []extraMetric{
				{"index_bytes/block", "index-only", "B/block", "lower", "the index's own byte count"},
				{"cache_blocks", "cache-blocks", "blocks", "higher", "cache blocks of the measured cache"},
			}},
	}
}

// value returns the row figure of one result.
func (b engineBench) value(r goBench) (float64, string, bool) {
	for _, p := range b.primary {
		if v, ok := r.Metrics[p.unit]; ok && v > 0 {
			return p.scale(v), p.note, true
		}
	}
	return 0, "", false
}

// enginePhase compiles internal/engine's test binary once, lists its
// benchmarks, runs each wanted one -count=reps times and parses the output.
// A benchmark that does not exist is reported missing, never estimated.
func enginePhase(ctx context.Context, e *env, c config, res *results, root, pkg string) {
	mk := func(b engineBench) *row {
		return &row{Group: "engine", Workload: b.key, Subject: "engine only (" + b.want + ")", Unit: b.rowUnit,
			Better: b.better, Ref: b.ref, ID: "engine/" + b.key}
	}
	missingAll := func(why string) {
		for _, b := range engineBenches() {
			res.missing(mk(b), why)
		}
	}
	pkgDir := filepath.Join(root, filepath.FromSlash(pkg))
	if _, err := os.Stat(pkgDir); err != nil {
		missingAll(pkg + " does not exist")
		return
	}
	testBin := e.path("engine.test")
	if out, err := e.ps.run(ctx, "go-test-c", startOpts{dir: root}, "go", "test", "-c", "-o", testBin, "./"+pkg); err != nil {
		missingAll("go test -c ./" + pkg + " failed: " + lastLine(string(out)))
		return
	}
	if _, err := os.Stat(testBin); err != nil {
		missingAll(pkg + " has no test files")
		return
	}
	out, err := e.ps.run(ctx, "engine-list", startOpts{dir: pkgDir}, testBin, "-test.list", "^Benchmark")
	if err != nil {
		missingAll("listing benchmarks: " + err.Error())
		return
	}
	names := strings.Fields(string(out))
	for _, b := range engineBenches() {
		name := pick(names, b.want, b.match)
		r := mk(b)
		if name == "" {
			res.missing(r, b.want+" not in "+pkg)
			continue
		}
		r.Subject = "engine only (" + name + ")"
		slog.Info("engine benchmark", "name", name, "benchtime", b.benchtime(c), "count", c.reps)
		bctx, cancel := context.WithTimeout(ctx, c.benchLimit)
		out, err := e.ps.run(bctx, "engine-"+b.key, startOpts{dir: pkgDir, env: []string{"TMPDIR=" + e.dir}},
			testBin, "-test.run", "^$", "-test.bench", "^"+regexp.QuoteMeta(name)+"$",
			"-test.benchtime", b.benchtime(c), "-test.count", strconv.Itoa(c.reps), "-test.timeout", "20m")
		timedOut := bctx.Err() != nil && ctx.Err() == nil
		cancel()
		if err != nil {
			why := err.Error()
			if timedOut {
				why = fmt.Sprintf("timed out after %v", c.benchLimit)
			}
			res.missing(r, name+": "+lastLine(why))
			continue
		}
		results, err := parseGoBench(out)
		if err != nil {
			res.missing(r, name+": "+err.Error())
			continue
		}
		var vals []float64
		extra := make([][]float64, len(b.extras))
		for _, br := range results {
			if br.Name != name && !strings.HasPrefix(br.Name, name+"/") {
				continue
			}
			if v, note, ok := b.value(br); ok {
				vals = append(vals, v)
				r.Note = note
			}
			for i, x := range b.extras {
				if v, ok := br.Metrics[x.unit]; ok {
					extra[i] = append(extra[i], v)
				}
			}
		}
		if len(vals) == 0 {
			res.missing(r, name+" ran but reported none of its expected metrics")
			continue
		}
		res.add(r, vals)
		for i, x := range b.extras {
			if len(extra[i]) > 0 {
				res.add(&row{Group: "engine", Workload: b.key + " " + x.key, Subject: name + ": " + x.desc, Unit: x.rowUnit,
					Better: x.better, ID: "engine/" + b.key + "/" + x.key}, extra[i])
			}
		}
	}
}

// pick returns want if listed, else the first name matching re.
func pick(names []string, want string, re *regexp.Regexp) string {
	for _, n := range names {
		if n == want {
			return n
		}
	}
	for _, n := range names {
		if re.MatchString(n) {
			return n
		}
	}
	return ""
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}
