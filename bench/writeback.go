package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"
)

// pattern is one shape of dirty data for the writeback phase.
type pattern struct {
	key  string
	desc string
	job  func(c config) fioJob
}

// patterns: every one writes each chosen 4 KiB block once (fio's random map),
// so the dirty block count is known from the job alone and cross-checked
// against wb-status.
func patterns() []pattern {
	return []pattern{
		{"dense", "random 4 KiB writes covering every block of a region", func(c config) fioJob {
			return fioJob{RW: "randwrite", BS: 4 * kib, Depth: 32, Size: c.dense, RandMap: true}
		}},
		{"clustered", "64 KiB clusters of 4 KiB writes at random offsets", func(c config) fioJob {
			return fioJob{RW: "randwrite:16", BS: 4 * kib, Depth: 32, Size: c.wbVolume, IOSize: c.clustered, RandMap: true}
		}},
		{"scattered", "single random 4 KiB blocks over the volume", func(c config) fioJob {
			return fioJob{RW: "randwrite", BS: 4 * kib, Depth: 32, Size: c.wbVolume, IOSize: c.scattered, RandMap: true}
		}},
	}
}

// wbStatus is the part of wb-status --json the harness reads.
type wbStatus struct {
	NrDirty         int64 `json:"nr_dirty_cache_blocks"`
	LastWritebackID int64 `json:"last_writeback_id"`
	LastFlushedID   int64 `json:"last_flushed_id"`
}

func (e *env) status(ctx context.Context, name string) (wbStatus, error) {
	out, err := e.wbTool(ctx, "wb-status", "--json", name)
	if err != nil {
		return wbStatus{}, err
	}
	var s wbStatus
	if err := json.Unmarshal(out, &s); err != nil {
		return wbStatus{}, fmt.Errorf("wb-status --json %s: %w: %.200q", name, err, out)
	}
	return s, nil
}

// wbSample is one writeback measurement.
type wbSample struct {
	dirty     int64         // 4 KiB blocks dirty before drop_caches
	drain     time.Duration // wb-message drop_caches, start to return
	writes    int64         // write requests the emulated disk received
	flushes   int64
	reads     int64
	bytesBack float64 // bytes the emulated disk received
}

// transport is how writeboost reaches the emulated disk in the writeback
// phase: through nbdfuse (a file), or directly as an NBD URI with its own
// client (issue 15). Both are measured in the same run, round robin.
type transport struct {
	key     string // "" for nbdfuse: its row ids predate issue 15
	subject string
}

var (
	viaFuse = transport{"", "writeboost (HDD)"}
	viaNBD  = transport{"nbd", "writeboost (HDD over NBD)"}
)

// wbTransports are the writeback phase's transports, in run order.
func wbTransports() []transport { return []transport{viaFuse, viaNBD} }

// wbRowID is the id of a writeback row: writeback/PATTERN/METRIC, with
// /nbd after it for the direct NBD transport.
func wbRowID(pat, metric string, tr transport) string {
	id := "writeback/" + pat + "/" + metric
	if tr.key != "" {
		id += "/" + tr.key
	}
	return id
}

// writebackOnce builds a fresh stack (emulated disk with the stats filter,
// nbdfuse or not, wb-create on an empty cache), writes the pattern, then times
// drop_caches. The stats filter counts every request that reached the disk
// in the stack's whole life; nbdkit writes it at exit, after wb-create's clean
// stop. Writeback is the only backing traffic: the cache holds all of the
// pattern, writeback_threshold is 0 (no background writeback) and the writes
// are whole 4 KiB blocks (no backing reads).
func writebackOnce(ctx context.Context, e *env, c config, pat pattern, tr transport, rep int) (wbSample, error) {
	var s wbSample
	tag := fmt.Sprintf("wb-%s-%d", pat.key, rep)
	if tr.key != "" {
		tag = fmt.Sprintf("wb-%s-%s-%d", pat.key, tr.key, rep)
	}
	img, cache, stats := e.path(tag+"-hdd.img"), e.path(tag+"-cache.img"), e.path(tag+".stats")
	defer os.Remove(img)
	defer os.Remove(cache)
	if err := sparse(img, c.wbVolume); err != nil {
		return s, err
	}
	job := pat.job(c)
	data := job.Size
	if job.IOSize > 0 {
		data = job.IOSize
	}
	// Room for the pattern twice over and a few segments for the superblock.
	if err := sparse(cache, 2*data+64*mib); err != nil {
		return s, err
	}
	hdd, hsock, err := e.startHDD(ctx, "hdd-"+tag, img, stats)
	if err != nil {
		return s, err
	}
	stack := []*proc{hdd}
	backing := nbdUnixURI("hdd", hsock)
	if tr.key == "" {
		fuse, file, err := e.mountHDD(ctx, "nbdfuse-"+tag, hsock)
		if err != nil {
			e.ps.stop(hdd, 5*time.Second)
			return s, err
		}
		stack, backing = append(stack, fuse), file
	}
	name := "wb" + pat.key + tr.key
	wb, uri, err := e.startWB(ctx, name, backing, cache)
	if err != nil {
		for i := len(stack) - 1; i >= 0; i-- {
			e.ps.stop(stack[i], 5*time.Second)
		}
		return s, err
	}
	stack = append(stack, wb)
	stopAll := func() error {
		var first error
		for i := len(stack) - 1; i >= 0; i-- {
			p := stack[i]
			if err := e.ps.stop(p, 60*time.Second); err != nil && first == nil {
				first = fmt.Errorf("stop %s: %w", p.name, err)
			}
		}
		return first
	}
	err = func() error {
		job.Name, job.URI, job.Seed = tag, uri, int64(7+rep)
		if _, err := e.runFio(ctx, tag, job); err != nil {
			return err
		}
		st, err := e.status(ctx, name)
		if err != nil {
			return err
		}
		s.dirty = st.NrDirty
		// fio's random map gives distinct blocks; clusters may overlap a
		// little, so fewer dirty blocks than writes is fine, more is not.
		if want := data / (4 * kib); s.dirty < want*8/10 || s.dirty > want {
			return fmt.Errorf("%d dirty blocks after writing %d blocks", s.dirty, want)
		}
		start := time.Now()
		if _, err := e.wbTool(ctx, "wb-message", name, "drop_caches"); err != nil {
			return err
		}
		s.drain = time.Since(start)
		st, err = e.status(ctx, name)
		if err != nil {
			return err
		}
		if st.NrDirty != 0 {
			return fmt.Errorf("drop_caches returned with %d dirty blocks", st.NrDirty)
		}
		return nil
	}()
	if serr := stopAll(); serr != nil && err == nil {
		err = serr
	}
	if err != nil {
		return s, err
	}
	raw, err := os.ReadFile(stats)
	if err != nil {
		return s, fmt.Errorf("writeback %s: %w", tag, err)
	}
	ops, err := parseNBDStats(raw)
	if err != nil {
		return s, fmt.Errorf("writeback %s: %w", tag, err)
	}
	s.writes, s.flushes, s.reads = ops["write"].Ops, ops["flush"].Ops, ops["read"].Ops
	s.bytesBack = ops["write"].Bytes
	return s, nil
}

// writebackPhase measures, per pattern, the drain time of drop_caches, the
// drain rate, and the backing requests per 4 KiB block written back. The
// unsorted baseline is the emulated disk's own 4 KiB random write rate at
// QD32 from the NBD phase (each dirty block one request, as a writeback that
// neither sorts nor merges would send).
func writebackPhase(ctx context.Context, e *env, c config, res *results, haveWB bool) {
	unsorted := &row{Group: "writeback", Workload: "unsorted-4k", Subject: "fio 4 KiB randwrite QD32 on the HDD", Unit: "MB/s",
		ID: "writeback/unsorted-4k"}
	var iops []float64
	if base := res.byID[nbdRowID("randwrite-qd32", sHDD)]; base != nil && base.ok() {
		iops = base.Runs
	} else if runs, err := unsortedRef(ctx, e, c); err == nil {
		// The NBD phase did not run (--only writeback): the same fio job
		// on a fresh emulated disk, so that the P4 ratios have their
		// reference in this run too.
		iops = runs
	} else {
		res.missing(unsorted, "the HDD randwrite-qd32 row is missing, and measuring it here failed: "+err.Error())
	}
	if iops != nil {
		var mbs []float64
		for _, v := range iops {
			mbs = append(mbs, v*4096/1e6)
		}
		res.add(unsorted, mbs)
	}
	for _, pat := range patterns() {
		type series struct {
			drain, rate, reqs, flushes []float64
			why                        string
			last                       wbSample
		}
		trs := wbTransports()
		got := make([]series, len(trs))
		if !haveWB {
			for i := range got {
				got[i].why = errNoWB.Error()
			}
		}
		// Round robin over the transports, so that a noisy moment hits
		// both alike.
		for rep := 0; rep < c.reps; rep++ {
			for i, tr := range trs {
				g := &got[i]
				if g.why != "" || ctx.Err() != nil {
					continue
				}
				slog.Info("writeback", "pattern", pat.key, "subject", tr.subject, "run", rep+1)
				s, err := writebackOnce(ctx, e, c, pat, tr, rep)
				if err != nil {
					g.why = fmt.Sprintf("run %d: %v", rep+1, err)
					slog.Error("writeback failed", "pattern", pat.key, "subject", tr.subject, "err", err)
					continue
				}
				g.last = s
				g.drain = append(g.drain, s.drain.Seconds())
				g.rate = append(g.rate, float64(s.dirty*4096)/1e6/s.drain.Seconds())
				g.reqs = append(g.reqs, float64(s.writes)/float64(s.dirty))
				g.flushes = append(g.flushes, float64(s.flushes))
			}
		}
		for i, tr := range trs {
			g := got[i]
			why := g.why
			if why == "" && ctx.Err() != nil && len(g.drain) < c.reps {
				why = "interrupted"
			}
			note := ""
			if why == "" {
				note = fmt.Sprintf("last run: %d dirty blocks, %d writes (%.1f MiB), %d flushes, %d reads at the disk",
					g.last.dirty, g.last.writes, g.last.bytesBack/float64(mib), g.last.flushes, g.last.reads)
			}
			mk := func(metric, unit, better, ref string) *row {
				if tr.key != "" {
					// The direct NBD rows are judged against nbdfuse.
					ref = wbRowID(pat.key, metric, viaFuse)
				}
				return &row{Group: "writeback", Workload: pat.key + " " + metric, Subject: tr.subject + ": " + pat.desc,
					Unit: unit, Better: better, ID: wbRowID(pat.key, metric, tr), Ref: ref, Note: note, Missing: why}
			}
			res.add(mk("drain", "s", "lower", ""), g.drain)
			res.add(mk("rate", "MB/s", "higher", "writeback/unsorted-4k"), g.rate)
			res.add(mk("requests", "req/4KiB block", "lower", ""), g.reqs)
			res.add(mk("flushes", "FLUSH per drain", "lower", ""), g.flushes)
		}
	}
}

// unsortedRef measures the NBD phase's randwrite-qd32 job on the emulated
// disk itself (c.reps runs, IOPS): the unsorted writeback reference when
// that phase did not run.
func unsortedRef(ctx context.Context, e *env, c config) ([]float64, error) {
	srv, err := startHDDRef(ctx, e, c)
	if err != nil {
		return nil, err
	}
	defer srv.stop(e)
	var runs []float64
	for rep := 0; rep < c.reps; rep++ {
		job := fioJob{Name: "randwrite-qd32", RW: "randwrite", BS: 4 * kib, Depth: 32, URI: srv.uri, Size: c.region,
			Runtime: c.runtime, Ramp: c.ramp, Seed: int64(100*rep + 1)}
		slog.Info("fio", "workload", "randwrite-qd32", "subject", sHDD, "run", rep+1, "for", "writeback/unsorted-4k")
		r, err := e.runFio(ctx, "unsorted-4k-hdd", job)
		if err != nil {
			return nil, err
		}
		runs = append(runs, r.IOPS())
	}
	return runs, nil
}
