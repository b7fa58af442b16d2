package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"
)

// runFio runs job and parses its JSON result.
func (e *env) runFio(ctx context.Context, name string, job fioJob) (fioResult, error) {
	out := e.path("fio-" + name + ".json")
	os.Remove(out)
	if _, err := e.ps.run(ctx, "fio-"+name, startOpts{dir: e.dir}, append([]string{"fio"}, job.args(out)...)...); err != nil {
		return fioResult{}, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return fioResult{}, fmt.Errorf("fio %s: %w", name, err)
	}
	r, err := parseFioJSON(data)
	if err != nil {
		return fioResult{}, fmt.Errorf("fio %s: %w", name, err)
	}
	return r, nil
}

// physJob is one reference figure of the cache file.
type physJob struct {
	key, label string
	job        fioJob // Engine defaults to libaio
	metric     func(fioResult) (float64, error)
	unit       string
	better     string
}

func physRowID(key string) string { return "physical/" + key }

// besideRowID is the row of physical job key run again between the
// repetitions of NBD workload wl (workload.beside).
func besideRowID(key, wl string) string { return physRowID(key) + "@" + wl }

// physJobByKey returns the physical job named key.
func physJobByKey(key string) (physJob, bool) {
	for _, j := range physJobs() {
		if j.key == key {
			return j, true
		}
	}
	return physJob{}, false
}

// runPhys runs physical job j once, repetition rep, on the cache file img,
// and returns its figure; tag names the run's files.
func (e *env) runPhys(ctx context.Context, c config, j physJob, rep int, img, tag string) (float64, error) {
	job := j.job
	job.Name, job.Filename, job.Direct = j.key, img, true
	if job.Engine == "" {
		job.Engine = "libaio"
	}
	job.Size, job.Runtime, job.Ramp = c.physSize, c.runtime, c.ramp
	job.Seed = int64(1000 + rep)
	r, err := e.runFio(ctx, tag, job)
	if err != nil {
		return 0, fmt.Errorf("physical limit %s run %d: %w", j.key, rep+1, err)
	}
	v, err := j.metric(r)
	if err != nil {
		return 0, fmt.Errorf("%w: run %d: %w", errNoFigure, rep+1, err)
	}
	return v, nil
}

// errNoFigure: the job ran but gave no figure (a latency fio did not
// report): the row is missing, the run goes on.
var errNoFigure = errors.New("no figure")

// physJobs are the physical phase's fio jobs, one row each.
func physJobs() []physJob {
	iops := func(r fioResult) (float64, error) { return r.IOPS(), nil }
	mbs := func(r fioResult) (float64, error) { return r.BW() / 1e6, nil }
	return []physJob{
		{"seqwrite-512k", "512 KiB seq write O_DIRECT QD8", fioJob{RW: "write", BS: 512 * kib, Depth: 8}, mbs, "MB/s", ""},
		{"randwrite-4k", "4 KiB rand write O_DIRECT QD32", fioJob{RW: "randwrite", BS: 4 * kib, Depth: 32}, iops, "IOPS", ""},
		{"seqread-1m", "1 MiB seq read O_DIRECT QD8", fioJob{RW: "read", BS: mib, Depth: 8}, mbs, "MB/s", ""},
		{"randread-4k", "4 KiB rand read O_DIRECT QD32", fioJob{RW: "randread", BS: 4 * kib, Depth: 32}, iops, "IOPS", ""},
		// What a FLUSH through writeboost cannot beat: one 4 KiB write to
		// the cache file and its fdatasync, blocking, one at a time. The
		// figure is the median write completion plus the median fdatasync.
		{"write-fdatasync-4k", "4 KiB rand write + fdatasync O_DIRECT psync QD1, p50", fioJob{RW: "randwrite", BS: 4 * kib, Depth: 1, Fdatasync: 1, Engine: "psync"},
			fioResult.WriteSyncP50, "µs", "lower"},
		// What a FLUSH of the bench's flush32 job costs the device at
		// least: the 32 blocks written since the last FLUSH and their
		// segment header, 132 KiB written in one piece, then fdatasync.
		{"write-fdatasync-132k", "132 KiB seq write + fdatasync O_DIRECT psync QD1, p50 (a FLUSH after 32 new 4K writes)", fioJob{RW: "write", BS: 132 * kib, Depth: 1, Fdatasync: 1, Engine: "psync"},
			fioResult.WriteSyncP50, "µs", "lower"},
	}
}

// physical measures the cache file's own limits with O_DIRECT (the same file
// system as every cache file of the run): 512 KiB sequential write bandwidth
// (P2's reference), 4 KiB random write IOPS, 1 MiB sequential read
// bandwidth (P5's reference: the time to read 1 GiB), 4 KiB random read
// IOPS (what a read hit served from the cache file can reach) and the
// median latency of a 4 KiB write, and of a 132 KiB one, followed by
// fdatasync (what a FLUSH costs at least, and what one after 32 new 4 KiB
// writes costs at least). The file is laid out by fio before the first
// timed run and later served by qemu-nbd.
func physical(ctx context.Context, e *env, c config, res *results) error {
	img := e.path("phys.img")
	jobs := physJobs()
	runs := make([][]float64, len(jobs))
	why := make([]string, len(jobs))
	for rep := 0; rep < c.reps; rep++ {
		for i, j := range jobs {
			v, err := e.runPhys(ctx, c, j, rep, img, "phys-"+j.key)
			if errors.Is(err, errNoFigure) {
				why[i] = err.Error()
				continue
			}
			if err != nil {
				return err
			}
			runs[i] = append(runs[i], v)
		}
	}
	var seqread []float64
	for i, j := range jobs {
		rw := &row{Group: "physical", Workload: j.key, Subject: "cache file (fio " + j.label + ")", Unit: j.unit,
			Better: j.better, ID: physRowID(j.key)}
		if why[i] != "" {
			res.missing(rw, why[i])
			continue
		}
		res.add(rw, runs[i])
		if j.key == "seqread-1m" {
			seqread = runs[i]
		}
	}
	// The reference for P5: seconds to read 1 GiB at that bandwidth.
	var secs []float64
	for _, bw := range seqread {
		secs = append(secs, float64(gib)/1e6/bw)
	}
	res.add(&row{Group: "physical", Workload: "read-1GiB", Subject: "cache file (from 1 MiB seq read)", Unit: "s",
		Better: "lower", ID: physRowID("read-1GiB")}, secs)
	return nil
}

// checkFsync verifies that fio --fsync=32 with the nbd engine at iodepth 1
// sends one NBD_CMD_FLUSH per 32 writes, counted by nbdkit's stats filter on
// nbdkit memory, so that the FLUSH-every-32 rows mean what they say.
func checkFsync(ctx context.Context, e *env, c config, res *results) error {
	stats := e.path("fsync-check.stats")
	sock := e.path("fsync-check.sock")
	p, err := e.startNbdkit(ctx, "nbdkit-fsync-check", sock, "--filter=stats", "memory", sizeArg(c.region), "statsfile="+stats)
	if err != nil {
		return fmt.Errorf("fsync check: %w", err)
	}
	job := fioJob{Name: "fsync-check", RW: "randwrite", BS: 4 * kib, Depth: 1, Fsync: 32, Size: c.region,
		Runtime: time.Second, URI: nbdUnixURI("check", sock)}
	r, ferr := e.runFio(ctx, "fsync-check", job)
	if err := e.ps.stop(p, 10*time.Second); err != nil && ferr == nil {
		ferr = fmt.Errorf("stop nbdkit: %w", err)
	}
	if ferr != nil {
		return fmt.Errorf("fsync check: %w", ferr)
	}
	data, err := os.ReadFile(stats)
	if err != nil {
		return fmt.Errorf("fsync check: %w", err)
	}
	ops, err := parseNBDStats(data)
	if err != nil {
		return fmt.Errorf("fsync check: %w", err)
	}
	w, f := ops["write"].Ops, ops["flush"].Ops
	rw := &row{Group: "check", Workload: "fio --fsync=32 QD1", Subject: "nbdkit memory + stats filter", Unit: "writes/FLUSH",
		ID: "check/fsync32", Note: fmt.Sprintf("server saw %d writes, %d flushes; fio reported %d writes, %d syncs", w, f, r.Write.TotalIOs, r.Syncs)}
	if f == 0 {
		res.missing(rw, "no NBD_CMD_FLUSH reached the server")
		return nil
	}
	res.add(rw, []float64{float64(w) / float64(f)})
	return nil
}
