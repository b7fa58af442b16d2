package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// goBench is one result line of `go test -bench`, e.g.
//
//	BenchmarkRandomWrite4K-2   	  123456	      9876 ns/op	 414.72 MB/s	  21.5 B/block
//
// Metrics maps each unit (ns/op, MB/s, B/op, allocs/op and the custom units
// of b.ReportMetric) to its value.
type goBench struct {
	Name    string // without the -GOMAXPROCS suffix
	Procs   int
	N       int64
	Metrics map[string]float64
}

var errBenchLine = errors.New("go bench: bad result line")

// parseGoBench returns every result line of a `go test -bench` transcript in
// order; other lines (goos:, PASS, logs) are ignored. A line that starts like a
// result ("Benchmark" name, then an iteration count) but does not finish like
// one is an error rather than a silently dropped figure.
func parseGoBench(data []byte) ([]goBench, error) {
	var out []goBench
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue // a log line that happens to start with the name
		}
		if n <= 0 || len(f) < 4 || len(f)%2 != 0 {
			return nil, fmt.Errorf("%w: %q", errBenchLine, sc.Text())
		}
		b := goBench{Name: f[0], Procs: 1, N: n, Metrics: make(map[string]float64)}
		if i := strings.LastIndexByte(b.Name, '-'); i > 0 {
			if p, err := strconv.Atoi(b.Name[i+1:]); err == nil && p > 0 {
				b.Name, b.Procs = b.Name[:i], p
			}
		}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%w: value %q in %q", errBenchLine, f[i], sc.Text())
			}
			b.Metrics[f[i+1]] = v
		}
		out = append(out, b)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("go bench output: %w", err)
	}
	return out, nil
}

// benchMetric collects metric unit of every run of the benchmark called name.
func benchMetric(runs []goBench, name, unit string) []float64 {
	var v []float64
	for _, r := range runs {
		if r.Name != name {
			continue
		}
		if x, ok := r.Metrics[unit]; ok {
			v = append(v, x)
		}
	}
	return v
}
