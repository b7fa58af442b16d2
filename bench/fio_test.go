package main

import (
	"errors"
	"slices"
	"strings"
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
	f.Add([]byte(fioFdatasyncSample))
	f.Add([]byte(fioFlushSample))
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
		if v, err := r.FlushP50(); err == nil && v < 0 {
			t.Fatalf("negative flush latency accepted: %v", v)
		}
	})
}

// fio 3.33, psync engine, O_DIRECT, 4 KiB randwrite --fdatasync=1 at iodepth
// 1 on a file (the physical write+fdatasync reference), trimmed: the psync
// engine counts its fdatasyncs in sync.lat_ns.N, not in sync.total_ios.
const fioFdatasyncSample = `{"fio version" : "fio-3.33", "jobs" : [
{"jobname": "fds", "error": 0,
 "read": {"io_bytes": 0, "bw_bytes": 0, "iops": 0.0, "runtime": 0, "total_ios": 0,
   "clat_ns": {"N": 0, "mean": 0.0}, "lat_ns": {"N": 0, "mean": 0.0}},
 "write": {"io_bytes": 10493952, "bw_bytes": 10483468, "iops": 2559.440559, "runtime": 1001, "total_ios": 2562,
   "clat_ns": {"N": 2562, "mean": 109870.505074, "percentile": {"50.000000": 84480, "99.000000": 493568}},
   "lat_ns": {"N": 2562, "mean": 110023.465262}},
 "sync": {"total_ios": 0, "lat_ns": {"N": 2561, "mean": 278787.642718, "percentile": {"50.000000": 228352, "99.000000": 1679360}}}}
]}`

// fio 3.33, nbd engine, 4 KiB randwrite --fsync=32 at iodepth 1 against
// nbdkit memory, trimmed: sync.lat_ns is the NBD_CMD_FLUSH latency.
const fioFlushSample = `fio: connected to NBD server
{"fio version" : "fio-3.33", "jobs" : [
{"jobname": "f32", "error": 0,
 "write": {"io_bytes": 102768640, "bw_bytes": 102665974, "iops": 25064.935065, "runtime": 1001, "total_ios": 25090,
   "clat_ns": {"N": 25090, "mean": 25019.443922, "percentile": {"50.000000": 3888, "99.000000": 181248}},
   "lat_ns": {"N": 25090, "mean": 38484.672858}},
 "sync": {"total_ios": 784, "lat_ns": {"N": 784, "mean": 24000.553571, "percentile": {"50.000000": 3824, "99.000000": 173056}}}}
]}`

func TestFioLatencies(t *testing.T) {
	r, err := parseFioJSON([]byte(fioFdatasyncSample))
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.WriteSyncP50()
	if err != nil {
		t.Fatal(err)
	}
	if want := (84480.0 + 228352.0) / 1e3; v != want {
		t.Errorf("write+fdatasync p50 = %v µs, want %v", v, want)
	}
	if r.SyncLat.N != 2561 || r.Syncs != 0 {
		t.Errorf("sync N %d total %d", r.SyncLat.N, r.Syncs)
	}

	r, err = parseFioJSON([]byte(fioFlushSample))
	if err != nil {
		t.Fatal(err)
	}
	v, err = r.FlushP50()
	if err != nil {
		t.Fatal(err)
	}
	if v != 3.824 || r.Syncs != 784 {
		t.Errorf("flush p50 = %v µs, syncs %d", v, r.Syncs)
	}
	if r.Write.Clat.Percentile["99.000000"] != 181248 {
		t.Errorf("write clat %+v", r.Write.Clat)
	}

	// No FLUSH in the run (or percentiles turned off): an error, not 0.
	for name, in := range map[string]string{
		"no syncs":       `{"jobs": [{"write": {"clat_ns": {"N": 3, "percentile": {"50.000000": 10}}}, "sync": {"total_ios": 0, "lat_ns": {"N": 0, "mean": 0}}}]}`,
		"no percentiles": `{"jobs": [{"write": {"clat_ns": {"N": 3}}, "sync": {"total_ios": 3, "lat_ns": {"N": 3, "mean": 5}}}]}`,
	} {
		r, err := parseFioJSON([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := r.WriteSyncP50(); !errors.Is(err, errNoPercentile) {
			t.Errorf("%s: WriteSyncP50 err = %v", name, err)
		}
		if _, err := r.FlushP50(); !errors.Is(err, errNoPercentile) {
			t.Errorf("%s: FlushP50 err = %v", name, err)
		}
	}
	if _, err := parseFioJSON([]byte(`{"jobs": [{"sync": {"lat_ns": {"N": 1, "percentile": {"50.000000": -4}}}}]}`)); !errors.Is(err, errFioOutput) {
		t.Errorf("negative percentile: err = %v", err)
	}
}

func TestFioJobFdatasync(t *testing.T) {
	a := fioJob{Name: "s", RW: "randwrite", BS: 4096, Depth: 1, Fdatasync: 1, Filename: "/c", Engine: "psync", Direct: true}.args("/o")
	for _, want := range []string{"--fdatasync=1", "--ioengine=psync", "--direct=1", "--iodepth=1"} {
		if !slices.Contains(a, want) {
			t.Errorf("args %v lack %s", a, want)
		}
	}
	if slices.ContainsFunc(a, func(s string) bool { return strings.HasPrefix(s, "--fsync") }) {
		t.Errorf("args %v hold --fsync", a)
	}
}
