package main

import (
	"errors"
	"slices"
	"testing"
)

const benchSample = `goos: linux
goarch: amd64
pkg: github.com/writeboost/writeboost/internal/engine
cpu: AMD EPYC
BenchmarkRandomWrite4K-2   	  123456	      9876 ns/op	 414.72 MB/s	      12 B/op	       0 allocs/op
BenchmarkRandomWrite4K-2   	  120000	     10000 ns/op	 409.60 MB/s
BenchmarkReplay1GiB   	       1	1234567890 ns/op
BenchmarkIndexBytesPerBlock/blocks=4Mi-2 	       1	  5 ns/op	        21.50 B/block
BenchmarkRandomWrite4K logs something
PASS
ok  	github.com/writeboost/writeboost/internal/engine	12.3s
`

func TestParseGoBench(t *testing.T) {
	got, err := parseGoBench([]byte(benchSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d results: %+v", len(got), got)
	}
	if got[0].Name != "BenchmarkRandomWrite4K" || got[0].Procs != 2 || got[0].N != 123456 ||
		got[0].Metrics["MB/s"] != 414.72 || got[0].Metrics["ns/op"] != 9876 || got[0].Metrics["allocs/op"] != 0 {
		t.Errorf("first = %+v", got[0])
	}
	if got[2].Name != "BenchmarkReplay1GiB" || got[2].Procs != 1 {
		t.Errorf("replay = %+v", got[2])
	}
	if got[3].Name != "BenchmarkIndexBytesPerBlock/blocks=4Mi" || got[3].Metrics["B/block"] != 21.5 {
		t.Errorf("index = %+v", got[3])
	}
	if v := benchMetric(got, "BenchmarkRandomWrite4K", "MB/s"); !slices.Equal(v, []float64{414.72, 409.6}) {
		t.Errorf("benchMetric = %v", v)
	}
	if v := benchMetric(got, "BenchmarkReplay1GiB", "MB/s"); v != nil {
		t.Errorf("absent metric = %v", v)
	}
}

func TestParseGoBenchErrors(t *testing.T) {
	for name, in := range map[string]string{
		"odd fields":  "BenchmarkX-2 10 5 ns/op 7\n",
		"no metrics":  "BenchmarkX-2 10\n",
		"zero n":      "BenchmarkX 0 5 ns/op\n",
		"bad value":   "BenchmarkX 1 five ns/op\n",
		"nan value":   "BenchmarkX 1 NaN ns/op\n",
		"only ns/op?": "BenchmarkX 1 5\n",
	} {
		if _, err := parseGoBench([]byte(in)); !errors.Is(err, errBenchLine) {
			t.Errorf("%s: err = %v, want errBenchLine", name, err)
		}
	}
}

func FuzzParseGoBench(f *testing.F) {
	f.Add([]byte(benchSample))
	f.Add([]byte("BenchmarkX-8 1 2 ns/op 3 MB/s\n"))
	f.Add([]byte("Benchmark-x 1 2 ns/op\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseGoBench(data)
		if err != nil {
			return
		}
		for _, b := range got {
			if b.N <= 0 || b.Procs <= 0 || len(b.Metrics) == 0 {
				t.Fatalf("bad result accepted: %+v", b)
			}
		}
	})
}
