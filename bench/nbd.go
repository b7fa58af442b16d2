package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Subjects of the NBD phase (row subjects and ids).
const (
	sMemory  = "nbdkit memory"
	sQemu    = "qemu-nbd O_DIRECT cache file"
	sWBFiles = "writeboost (files)"
	sWBHDD   = "writeboost (HDD)"
	sWBNBD   = "writeboost (HDD over NBD)" // the disk as an NBD URI, no nbdfuse (issue 15)
	sCache   = "nbdkit cache filter (HDD)"
	sHDD     = "nbdkit file (HDD)"
)

// workload is one fio nbd job run against several subjects.
type workload struct {
	key      string
	epoch    string // stateful subjects restart fresh when the epoch changes
	job      fioJob
	unit     string // IOPS or MB/s
	subjects []string
	quick    []string // the subjects measured in --quick mode
	ref      map[string]string
	// flushLat: a second row per subject, the median latency of the job's
	// NBD_CMD_FLUSH requests (fio's sync lat_ns), against the cache file's
	// own 4 KiB write + fdatasync.
	flushLat bool
	// beside: physical jobs (phys.go) run again on the cache file at the
	// start of each repetition, before its subjects, rows
	// besideRowID(key, wl.key): the device's own figure taken minutes
	// after the physical phase drifts on a shared host (a 512 KiB
	// sequential write measured 2105, 2348 and 2450 MB/s in three runs of
	// one day), so the workload's targets against the device compare with
	// figures of the same moments. flushLat's rows reference
	// write-fdatasync-4k's.
	beside []string
}

// subjectsFor returns the subjects wl measures in c's mode.
func (wl workload) subjectsFor(c config) []string {
	if c.quick {
		return wl.quick
	}
	return wl.subjects
}

// flushLatKey is the workload of a flushLat row: its id is
// nbdRowID(flushLatKey(wl.key), subject).
func flushLatKey(wl string) string { return wl + "-flush-p50" }

// workloads are run in this order, grouped in epochs. At the start of each
// epoch the stateful subjects (both writeboost volumes and the cache filter)
// are restarted on fresh caches, so that no workload inherits another's
// dirty data: a writeboost ring full of live dirty blocks forces writeback to
// the HDD, and the cache filter writes back every dirty block on the first
// FLUSH. Within the last epoch the 1 MiB sequential write covers the whole
// region before the cached reads, so every block read there is cached.
func workloads() []workload {
	all := []string{sMemory, sQemu, sWBFiles, sWBHDD, sWBNBD, sCache, sHDD}
	r4 := func(rw string, depth int) fioJob { return fioJob{RW: rw, BS: 4 * kib, Depth: depth} }
	return []workload{
		{key: "randread-cold-qd32", epoch: "cold", job: r4("randread", 32), unit: "IOPS",
			subjects: []string{sWBHDD, sWBNBD, sCache, sHDD},
			ref:      map[string]string{sWBHDD: sHDD, sWBNBD: sWBHDD, sCache: sHDD}},
		{key: "randwrite-flush32-qd1", epoch: "flush", job: fioJob{RW: "randwrite", BS: 4 * kib, Depth: 1, Fsync: 32}, unit: "IOPS",
			subjects: []string{sMemory, sQemu, sWBFiles, sWBHDD, sCache},
			quick:    []string{sWBFiles, sWBHDD, sCache},
			ref:      map[string]string{sWBHDD: sCache}, flushLat: true, beside: []string{"write-fdatasync-4k"}},
		{key: "randwrite-qd1", epoch: "qd1", job: r4("randwrite", 1), unit: "IOPS",
			subjects: all, quick: []string{sWBFiles, sWBHDD, sWBNBD, sHDD},
			ref: map[string]string{sWBHDD: sHDD, sWBNBD: sWBHDD}},
		{key: "randwrite-qd32", epoch: "qd32", job: r4("randwrite", 32), unit: "IOPS",
			subjects: all, quick: []string{sMemory, sQemu, sWBFiles, sWBHDD, sWBNBD, sCache, sHDD},
			ref: map[string]string{sWBHDD: sHDD, sWBNBD: sWBHDD}},
		{key: "randrw70-qd32", epoch: "qd32", job: fioJob{RW: "randrw", MixRead: 70, BS: 4 * kib, Depth: 32}, unit: "IOPS",
			subjects: []string{sMemory, sWBHDD, sCache}},
		{key: "seqwrite-1m-qd4", epoch: "seq", job: fioJob{RW: "write", BS: mib, Depth: 4}, unit: "MB/s",
			subjects: []string{sMemory, sQemu, sWBFiles, sWBHDD, sCache, sHDD}, quick: []string{sMemory, sQemu, sWBHDD, sWBFiles},
			// The same device through an independent durable server: what
			// NBD on this machine leaves of the device's rate (issue 16).
			ref: map[string]string{sWBFiles: sQemu}, beside: []string{"seqwrite-512k"}},
		{key: "randread-cached-qd32", epoch: "seq", job: r4("randread", 32), unit: "IOPS",
			subjects: []string{sMemory, sQemu, sWBFiles, sWBHDD, sCache},
			quick:    []string{sMemory, sQemu, sWBFiles, sWBHDD},
			ref:      map[string]string{sWBFiles: sQemu}, beside: []string{"randread-4k"}}, // as seqwrite-1m-qd4
		{key: "seqread-1m-qd4", epoch: "seq", job: fioJob{RW: "read", BS: mib, Depth: 4}, unit: "MB/s",
			subjects: []string{sMemory, sWBFiles, sWBHDD, sCache}, quick: []string{sMemory, sWBFiles}},
	}
}

func nbdRowID(wl, subject string) string { return "nbd/" + wl + "/" + subject }

// stateful subjects restart at each epoch; the others serve the whole phase.
var stateful = map[string]bool{sWBFiles: true, sWBHDD: true, sWBNBD: true, sCache: true}

// nbdPhase runs each workload's repetitions round robin over its subjects
// (so that a noisy moment hits all of them alike) and records one row per
// workload and subject. Servers start on first use; stateful ones restart
// fresh at each epoch.
func nbdPhase(ctx context.Context, e *env, c config, res *results, haveWB bool) error {
	servers := map[string]*server{}
	failed := map[string]string{}
	stop := func(name string) error {
		s, ok := servers[name]
		if !ok {
			return nil
		}
		delete(servers, name)
		err := s.stop(e)
		for _, f := range s.files {
			os.Remove(f)
		}
		return err
	}
	defer func() {
		for name := range servers {
			if err := stop(name); err != nil {
				slog.Warn("stop", "server", name, "err", err)
			}
		}
	}()
	starters := map[string]func() (*server, error){
		sMemory:  func() (*server, error) { return startMemory(ctx, e, c) },
		sQemu:    func() (*server, error) { return startQemu(ctx, e) },
		sHDD:     func() (*server, error) { return startHDDRef(ctx, e, c) },
		sCache:   func() (*server, error) { return startCacheFilter(ctx, e, c) },
		sWBFiles: func() (*server, error) { return startWBFiles(ctx, e, c, haveWB) },
		sWBHDD:   func() (*server, error) { return startWBHDD(ctx, e, c, haveWB, false) },
		sWBNBD:   func() (*server, error) { return startWBHDD(ctx, e, c, haveWB, true) },
	}
	ensure := func(name string) {
		if _, ok := servers[name]; ok || failed[name] != "" {
			return
		}
		s, err := starters[name]()
		if err != nil {
			failed[name] = err.Error()
			slog.Error("server not started; its rows are missing", "server", name, "err", err)
			return
		}
		servers[name] = s
	}

	epoch := ""
	for _, wl := range workloads() {
		subjects := wl.subjectsFor(c)
		if len(subjects) == 0 {
			continue
		}
		if wl.epoch != epoch {
			epoch = wl.epoch
			for name := range stateful {
				if err := stop(name); err != nil {
					slog.Warn("stop", "server", name, "err", err)
				}
			}
		}
		for _, subj := range subjects {
			ensure(subj)
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		runs := map[string][]float64{}
		errs := map[string]error{}
		lat := map[string][]float64{} // flushLat: median FLUSH latency per run, µs
		latWhy := map[string]string{} // flushLat: why a run gave none
		besideRuns := map[string][]float64{}
		besideWhy := map[string]string{}
		for rep := 0; rep < c.reps; rep++ {
			for _, key := range wl.beside {
				j, _ := physJobByKey(key) // TestBesideJobsExist
				slog.Info("fio", "workload", wl.key, "beside", key, "run", rep+1)
				v, err := e.runPhys(ctx, c, j, rep, e.path("phys.img"), "beside-"+key+"-"+wl.key)
				switch {
				case ctx.Err() != nil:
					return ctx.Err()
				case err != nil:
					besideWhy[key] = err.Error()
				default:
					besideRuns[key] = append(besideRuns[key], v)
				}
			}
			for _, subj := range subjects {
				s, ok := servers[subj]
				if !ok || errs[subj] != nil {
					continue
				}
				job := wl.job
				job.Name, job.URI, job.Size = wl.key, s.uri, c.region
				job.Runtime, job.Ramp = c.runtime, c.ramp
				// A new seed per repetition: cold reads must not find the
				// blocks the previous repetition read.
				job.Seed = int64(100*rep + 1)
				slog.Info("fio", "workload", wl.key, "subject", subj, "run", rep+1)
				r, err := e.runFio(ctx, wl.key+"-"+s.key, job)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					errs[subj] = fmt.Errorf("run %d: %w", rep+1, err)
					slog.Error("fio failed", "workload", wl.key, "subject", subj, "err", err)
					continue
				}
				v := r.IOPS()
				if wl.unit == "MB/s" {
					v = r.BW() / 1e6
				}
				runs[subj] = append(runs[subj], v)
				if wl.flushLat {
					if l, err := r.FlushP50(); err != nil {
						latWhy[subj] = fmt.Sprintf("run %d: %v", rep+1, err)
					} else {
						lat[subj] = append(lat[subj], l)
					}
				}
			}
		}
		for _, key := range wl.beside {
			j, _ := physJobByKey(key)
			r := &row{Group: "physical", Workload: key + "@" + wl.key, Subject: "cache file (fio " + j.label + "), between the runs of " + wl.key,
				Unit: j.unit, Better: j.better, ID: besideRowID(key, wl.key), Ref: physRowID(key)}
			if besideWhy[key] != "" {
				res.missing(r, besideWhy[key])
			} else {
				res.add(r, besideRuns[key])
			}
		}
		for _, subj := range subjects {
			r := &row{Group: "nbd", Workload: wl.key, Subject: subj, Unit: wl.unit, ID: nbdRowID(wl.key, subj)}
			if ref, ok := wl.ref[subj]; ok {
				r.Ref = nbdRowID(wl.key, ref)
			} else if subj != sMemory {
				r.Ref = nbdRowID(wl.key, sMemory)
			}
			switch {
			case failed[subj] != "":
				res.missing(r, "server failed: "+failed[subj])
			case errs[subj] != nil:
				res.missing(r, errs[subj].Error())
			default:
				res.add(r, runs[subj])
			}
			if !wl.flushLat {
				continue
			}
			lr := &row{Group: "nbd", Workload: flushLatKey(wl.key), Subject: subj, Unit: "µs", Better: "lower",
				ID: nbdRowID(flushLatKey(wl.key), subj), Ref: besideRowID("write-fdatasync-4k", wl.key),
				Note: "median NBD_CMD_FLUSH latency of each run (fio sync lat_ns p50)"}
			switch {
			case failed[subj] != "":
				res.missing(lr, "server failed: "+failed[subj])
			case errs[subj] != nil:
				res.missing(lr, errs[subj].Error())
			case latWhy[subj] != "":
				res.missing(lr, latWhy[subj])
			default:
				res.add(lr, lat[subj])
			}
		}
	}
	var first error
	for name := range servers {
		if err := stop(name); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func startMemory(ctx context.Context, e *env, c config) (*server, error) {
	sock := e.path("memory.sock")
	p, err := e.startNbdkit(ctx, "nbdkit-memory", sock, "memory", sizeArg(c.region))
	if err != nil {
		return nil, err
	}
	return &server{key: "memory", label: sMemory, uri: nbdUnixURI("memory", sock), procs: []*proc{p}}, nil
}

// startQemu serves the physical-limit file with O_DIRECT and native AIO:
// the durable direct server a user could run on the cache device instead.
func startQemu(ctx context.Context, e *env) (*server, error) {
	sock := e.path("qemu.sock")
	os.Remove(sock)
	p, err := e.ps.start("qemu-nbd", startOpts{}, "qemu-nbd", "--cache=none", "--aio=native", "--format=raw",
		"--persistent", "--shared=8", "--export-name=qemu", "--socket="+sock, e.path("phys.img"))
	if err != nil {
		return nil, err
	}
	if err := waitSocket(ctx, p, sock, 15*time.Second); err != nil {
		e.ps.stop(p, time.Second)
		return nil, err
	}
	return &server{key: "qemu", label: sQemu, uri: nbdUnixURI("qemu", sock), procs: []*proc{p}}, nil
}

// startHDDRef is the emulated disk served directly: what a user gets
// without a cache.
func startHDDRef(ctx context.Context, e *env, c config) (*server, error) {
	img := e.path("hdd-ref.img")
	if err := sparse(img, c.region); err != nil {
		return nil, err
	}
	p, sock, err := e.startHDD(ctx, "hdd-ref", img, "")
	if err != nil {
		return nil, err
	}
	return &server{key: "hdd", label: sHDD, uri: nbdUnixURI("hdd", sock), procs: []*proc{p}}, nil
}

// startCacheFilter is the user-space peer: nbdkit's cache filter in
// writeback mode in front of its own emulated disk. Its cache is a temporary
// file in $TMPDIR (the run's temp dir).
func startCacheFilter(ctx context.Context, e *env, c config) (*server, error) {
	img := e.path("hdd-cf.img")
	if err := sparse(img, c.region); err != nil {
		return nil, err
	}
	hdd, hsock, err := e.startHDD(ctx, "hdd-cf", img, "")
	if err != nil {
		return nil, err
	}
	sock := e.path("cachefilter.sock")
	p, err := e.startNbdkit(ctx, "nbdkit-cachefilter", sock, "--filter=cache", "nbd", "socket="+hsock,
		"cache=writeback", "cache-min-block-size=4096")
	if err != nil {
		e.ps.stop(hdd, time.Second)
		return nil, err
	}
	return &server{key: "cachefilter", label: sCache, uri: nbdUnixURI("cf", sock), procs: []*proc{hdd, p}, files: []string{img}}, nil
}

var errNoWB = errors.New("cmd/wb-create not built (see the build step's error)")

// startWBFiles is writeboost on a sparse backing file and a laid-out cache
// file (laidOut: as an SSD, and as the physical references' file): no slow
// device, so it meets the transport ceiling.
func startWBFiles(ctx context.Context, e *env, c config, haveWB bool) (*server, error) {
	if !haveWB {
		return nil, errNoWB
	}
	back, cache := e.path("wbfiles-backing.img"), e.path("wbfiles-cache.img")
	if err := sparse(back, c.region); err != nil {
		return nil, err
	}
	if err := laidOut(cache, c.wbCache); err != nil {
		return nil, err
	}
	p, uri, err := e.startWB(ctx, "wbfiles", back, cache)
	if err != nil {
		return nil, err
	}
	return &server{key: "wbfiles", label: sWBFiles, uri: uri, procs: []*proc{p}, files: []string{back, cache}}, nil
}

// startWBHDD is writeboost in front of the emulated disk, through nbdfuse
// or (direct) as an NBD URI, with a laid-out cache file 12-16x the region: an
// epoch's writes then fit in the ring, or reclaim segments whose blocks
// were overwritten since, which costs no backing I/O.
func startWBHDD(ctx context.Context, e *env, c config, haveWB, direct bool) (*server, error) {
	if !haveWB {
		return nil, errNoWB
	}
	key, label := "wbhdd", sWBHDD
	if direct {
		key, label = "wbnbd", sWBNBD
	}
	img := e.path(key + "-hdd.img")
	if err := sparse(img, c.region); err != nil {
		return nil, err
	}
	hdd, hsock, err := e.startHDD(ctx, "hdd-"+key, img, "")
	if err != nil {
		return nil, err
	}
	procs, backing := []*proc{hdd}, nbdUnixURI("hdd", hsock)
	if !direct {
		fuse, file, err := e.mountHDD(ctx, "nbdfuse-"+key, hsock)
		if err != nil {
			e.ps.stop(hdd, time.Second)
			return nil, err
		}
		procs, backing = append(procs, fuse), file
	}
	cache := e.path(key + "-cache.img")
	if err := laidOut(cache, c.wbCache); err != nil {
		return nil, err
	}
	p, uri, err := e.startWB(ctx, key, backing, cache)
	if err != nil {
		for i := len(procs) - 1; i >= 0; i-- {
			e.ps.stop(procs[i], time.Second)
		}
		return nil, err
	}
	return &server{key: key, label: label, uri: uri, procs: append(procs, p), files: []string{img, cache}}, nil
}
