package main

import (
	"fmt"
	"time"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
)

// config sizes one run. Full mode is bounded to about ten minutes, quick mode
// to about two, on two shared cores.
type config struct {
	quick   bool
	reps    int           // runs per figure (median of these)
	runtime time.Duration // timed part of each fio run
	ramp    time.Duration // untimed warm-up before it

	physSize int64 // the physical-limit file (also read for the replay reference)
	region   int64 // fio region on every NBD export and the size of their backing
	wbCache  int64 // cache file of the NBD-phase writeboost volumes

	wbVolume  int64 // writeback phase: backing size
	dense     int64 // random 4 KiB writes covering every block of this region
	clustered int64 // this much data in 64 KiB clusters of 4 KiB writes, scattered
	scattered int64 // this much data in single 4 KiB blocks, scattered

	benchtime4K string        // -test.benchtime of the engine's 4 KiB write benchmark
	benchLimit  time.Duration // per engine benchmark, all its runs
}

func fullConfig() config {
	return config{
		reps: 3, runtime: 2500 * time.Millisecond, ramp: 500 * time.Millisecond,
		physSize: gib, region: 256 * mib, wbCache: 3 * gib,
		wbVolume: gib, dense: 24 * mib, clustered: 64 * mib, scattered: 4 * mib,
		benchtime4K: "250000x", benchLimit: 4 * time.Minute,
	}
}

func quickConfig() config {
	return config{
		quick: true, reps: 3, runtime: time.Second, ramp: 250 * time.Millisecond,
		physSize: 256 * mib, region: 64 * mib, wbCache: gib,
		wbVolume: 256 * mib, dense: 8 * mib, clustered: 8 * mib, scattered: 512 * kib,
		benchtime4K: "100000x", benchLimit: 2 * time.Minute,
	}
}

func (c config) describe() map[string]string {
	mode := "full"
	if c.quick {
		mode = "quick"
	}
	return map[string]string{
		"mode":                 mode,
		"runs_per_figure":      fmt.Sprint(c.reps),
		"fio_runtime":          c.runtime.String(),
		"fio_ramp":             c.ramp.String(),
		"physical_file_bytes":  fmt.Sprint(c.physSize),
		"nbd_region_bytes":     fmt.Sprint(c.region),
		"nbd_wb_cache_bytes":   fmt.Sprint(c.wbCache),
		"writeback_volume":     fmt.Sprint(c.wbVolume),
		"writeback_dense":      fmt.Sprint(c.dense),
		"writeback_clustered":  fmt.Sprint(c.clustered),
		"writeback_scattered":  fmt.Sprint(c.scattered),
		"engine_benchtime_4k":  c.benchtime4K,
		"hdd":                  "nbdkit -t 2 limit=1 multi-conn-mode=disable wdelay=7ms rdelay=7ms rate=1200M burstiness=0.1",
		"nbd_wb_tunables":      "kernel defaults",
		"flush_workload_depth": "1 (fio --fsync=N re-issues flushes at iodepth > 1)",
	}
}
