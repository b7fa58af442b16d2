package main

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// A trimmed fio 3.33 document as written by the nbd engine to stdout.
const fioSample = `fio: connected to NBD server
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "t",
      "error" : 0,
      "read" : {"io_bytes" : 0, "bw_bytes" : 0, "iops" : 0.0, "runtime" : 0, "total_ios" : 0, "lat_ns" : {"mean" : 0.0}},
      "write" : {"io_bytes" : 430571520, "bw_bytes" : 215285760, "iops" : 52559.0, "runtime" : 2000, "total_ios" : 105120, "lat_ns" : {"mean" : 18000.5}},
      "sync" : {"total_ios" : 3285, "lat_ns" : {"mean" : 10386.2}}
    }
  ]
}
`

func TestParseFioJSON(t *testing.T) {
	r, err := parseFioJSON([]byte(fioSample))
	if err != nil {
		t.Fatal(err)
	}
	if r.Write.IOPS != 52559 || r.Write.BWBytes != 215285760 || r.Write.TotalIOs != 105120 || r.Syncs != 3285 {
		t.Errorf("got %+v", r)
	}
	if r.IOPS() != 52559 || r.BW() != 215285760 {
		t.Errorf("IOPS %v BW %v", r.IOPS(), r.BW())
	}
	if r.Write.Lat.Mean != 18000.5 {
		t.Errorf("lat mean %v", r.Write.Lat.Mean)
	}
}

func TestParseFioJSONErrors(t *testing.T) {
	for name, in := range map[string]string{
		"empty":     "",
		"no object": "fio: connected",
		"truncated": `{"jobs" : [ {"jobname": "t"`,
		"no jobs":   `{"jobs": []}`,
		"two jobs":  `{"jobs": [{}, {}]}`,
		"negative":  `{"jobs": [{"write": {"iops": -1}}]}`,
	} {
		if _, err := parseFioJSON([]byte(in)); !errors.Is(err, errFioOutput) {
			t.Errorf("%s: err = %v, want errFioOutput", name, err)
		}
	}
	if _, err := parseFioJSON([]byte(`{"jobs": [{"jobname": "t", "error": 5}]}`)); err == nil {
		t.Error("job error not reported")
	}
}

func TestFioJobArgs(t *testing.T) {
	j := fioJob{Name: "w", RW: "randwrite", BS: 4096, Depth: 32, Fsync: 32, Size: 1 << 20,
		Runtime: 2 * time.Second, Ramp: 500 * time.Millisecond, Seed: 7, URI: "nbd+unix:///x?socket=/s"}
	a := j.args("/o.json")
	for _, want := range []string{"--ioengine=nbd", "--uri=nbd+unix:///x?socket=/s", "--runtime=2000ms",
		"--ramp_time=500ms", "--time_based", "--fsync=32", "--randseed=7", "--randrepeat=0", "--norandommap",
		"--output=/o.json", "--bs=4096", "--iodepth=32", "--size=1048576"} {
		if !slices.Contains(a, want) {
			t.Errorf("args %v lack %s", a, want)
		}
	}
	f := fioJob{Name: "p", RW: "write", BS: 512 << 10, Depth: 8, Size: 1 << 30, Filename: "/c", Direct: true, Engine: "libaio", RandMap: true}
	a = f.args("/o")
	for _, want := range []string{"--filename=/c", "--ioengine=libaio", "--direct=1"} {
		if !slices.Contains(a, want) {
			t.Errorf("args %v lack %s", a, want)
		}
	}
	for _, bad := range []string{"--time_based", "--norandommap", "--ioengine=nbd"} {
		if slices.Contains(a, bad) {
			t.Errorf("args %v hold %s", a, bad)
		}
	}
}

func FuzzParseFioJSON(f *testing.F) {
	f.Add([]byte(fioSample))
	f.Add([]byte(`{"jobs": [{"read": {"iops": 1e308}, "write": {"iops": 2}}]}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseFioJSON(data)
		if err != nil {
			return
		}
		if r.Read.IOPS < 0 || r.Write.IOPS < 0 || r.Read.BWBytes < 0 || r.Write.BWBytes < 0 {
			t.Fatalf("negative figure accepted: %+v", r)
		}
	})
}
