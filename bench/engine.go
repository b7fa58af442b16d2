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
// found by name, and the metric taken from its output.
type engineBench struct {
	key       string
	want      string         // the name asked of the engine's author
	match     *regexp.Regexp // accepted names, when want is absent
	benchtime func(config) string
	rowUnit   string
	better    string
	ref       string
	// value picks the figure from one result; ok false if it lacks it.
	value func(b goBench) (float64, string, bool)
}

func engineBenches() []engineBench {
	return []engineBench{
		{key: "randwrite-4k", want: "BenchmarkRandomWrite4K", match: regexp.MustCompile(`(?i)^Benchmark.*(Rand(om)?Write4K|Write4KRand)`),
			benchtime: func(c config) string { return c.benchtime4K }, rowUnit: "MB/s", ref: "physical/seqwrite-512k",
			value: func(b goBench) (float64, string, bool) {
				v, ok := b.Metrics["MB/s"]
				return v, "", ok
			}},
		// Replay of a full 1 GiB cache, in seconds. With b.SetBytes the
		// time is scaled to 1 GiB from MB/s, so any cache size compares with
		// the reading of 1 GiB; without it, one op is taken as 1 GiB.
		{key: "replay-1GiB", want: "BenchmarkReplay1GiB", match: regexp.MustCompile(`(?i)^Benchmark.*Replay`),
			benchtime: func(config) string { return "1x" }, rowUnit: "s", better: "lower", ref: "physical/read-1GiB",
			value: func(b goBench) (float64, string, bool) {
				if v, ok := b.Metrics["MB/s"]; ok && v > 0 {
					return float64(gib) / 1e6 / v, "scaled from MB/s", true
				}
				v, ok := b.Metrics["ns/op"]
				return v / 1e9, "one op taken as 1 GiB", ok
			}},
		{key: "index-bytes-per-block", want: "BenchmarkIndexBytesPerBlock", match: regexp.MustCompile(`(?i)^Benchmark.*Index`),
			benchtime: func(config) string { return "1x" }, rowUnit: "B/block", better: "lower",
			value: func(b goBench) (float64, string, bool) {
				for unit, v := range b.Metrics {
					if strings.HasSuffix(unit, "/block") {
						return v, unit, true
					}
				}
				return 0, "", false
			}},
	}
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
		for _, br := range results {
			if br.Name != name && !strings.HasPrefix(br.Name, name+"/") {
				continue
			}
			if v, note, ok := b.value(br); ok {
				vals = append(vals, v)
				if note != "" {
					r.Note = note
				}
			}
		}
		if len(vals) == 0 {
			res.missing(r, name+" ran but reported no "+b.rowUnit)
			continue
		}
		res.add(r, vals)
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
