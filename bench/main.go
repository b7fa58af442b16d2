package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// phases that --only may name.
var allPhases = []string{"physical", "nbd", "writeback", "engine"}

func run() error {
	quick := flag.Bool("quick", false, "about 2 minutes: shorter runs, smaller files, the target rows only")
	out := flag.String("out", "", "JSON file of every figure (default bench/bench-full.json or bench/bench-quick.json)")
	keep := flag.Bool("keep", false, "keep the temporary directory (images, logs, fio output)")
	only := flag.String("only", strings.Join(allPhases, ","), "comma-separated phases to run: "+strings.Join(allPhases, ","))
	reps := flag.Int("runs", 0, "runs per figure (default 3; at least 3)")
	tmp := flag.String("tmpdir", os.TempDir(), "where the temporary directory (sparse files) goes")
	installDeps := flag.Bool("install-deps", false, "install missing Debian packages with scripts/deps.sh bench")
	verbose := flag.Bool("v", false, "debug logging (every process started)")
	flag.Parse()
	if flag.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	c := fullConfig()
	if *quick {
		c = quickConfig()
	}
	if *reps != 0 {
		if *reps < 3 {
			return fmt.Errorf("--runs %d: a median needs at least 3", *reps)
		}
		c.reps = *reps
	}
	phases := map[string]bool{}
	for _, p := range strings.Split(*only, ",") {
		p = strings.TrimSpace(p)
		if !contains(allPhases, p) {
			return fmt.Errorf("--only: unknown phase %q (have %s)", p, strings.Join(allPhases, ","))
		}
		phases[p] = true
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(root, "bench", "bench-"+c.describe()["mode"]+".json")
	}

	if pkgs := missingPackages(exec.LookPath); len(pkgs) > 0 {
		if !*installDeps {
			return errors.New(depsMessage(pkgs))
		}
		cmd := exec.Command(filepath.Join(root, "scripts", "deps.sh"), "bench")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("scripts/deps.sh: %w", err)
		}
		if pkgs := missingPackages(exec.LookPath); len(pkgs) > 0 {
			return errors.New(depsMessage(pkgs))
		}
	}

	// SIGINT/SIGTERM cancel ctx: the running step stops its processes and
	// the deferred stopAll takes down the servers, newest first.
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	dir, err := os.MkdirTemp(*tmp, "wb-bench-")
	if err != nil {
		return err
	}
	e := &env{dir: dir, bin: filepath.Join(dir, "bin"), runDir: filepath.Join(dir, "run")}
	e.ps = &procs{logDir: filepath.Join(dir, "logs")}
	for _, d := range []string{e.bin, e.runDir, e.ps.logDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	defer func() {
		e.ps.stopAll()
		if *keep {
			slog.Info("kept", "dir", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			slog.Warn("remove temp dir", "dir", dir, "err", err)
		}
	}()

	res := newResults()
	begin := time.Now()
	res.Started = begin.UTC().Format(time.RFC3339)
	res.Mode = c.describe()["mode"]
	res.Config = c.describe()
	res.Host["cpus"] = fmt.Sprint(runtime.NumCPU())
	res.Host["go"] = runtime.Version()
	if u, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		res.Host["kernel"] = strings.TrimSpace(string(u))
	}
	for _, t := range []string{"fio", "nbdkit", "qemu-nbd", "nbdfuse"} {
		res.Host[t] = toolVersion(t)
	}
	res.Targets = targets()
	fail := func(phase string, err error) {
		msg := phase + ": " + err.Error()
		res.Errors = append(res.Errors, msg)
		slog.Error("phase failed", "phase", phase, "err", err)
	}

	// Fresh binaries from this tree, so the figures are of this commit.
	haveWB := false
	if _, err := os.Stat(filepath.Join(root, "cmd", "wb-create")); err != nil {
		fail("build", errors.New("cmd/wb-create does not exist yet"))
	} else if _, err := e.ps.run(ctx, "go-build", startOpts{dir: root}, "go", "build", "-o", e.bin+"/",
		"./cmd/wb-create", "./cmd/wb-status", "./cmd/wb-message"); err != nil {
		fail("build", err)
	} else {
		haveWB = true
	}

	step := func(name string, f func() error) {
		if ctx.Err() != nil || !phases[name] {
			return
		}
		t := time.Now()
		slog.Info("phase", "name", name)
		if err := f(); err != nil {
			fail(name, err)
		}
		slog.Info("phase done", "name", name, "took", time.Since(t).Round(time.Second))
	}
	step("physical", func() error {
		if err := physical(ctx, e, c, res); err != nil {
			return err
		}
		return checkFsync(ctx, e, c, res)
	})
	step("nbd", func() error {
		if !phases["physical"] {
			// qemu-nbd serves the physical-limit file; make one.
			if err := sparse(e.path("phys.img"), c.physSize); err != nil {
				return err
			}
		}
		return nbdPhase(ctx, e, c, res, haveWB)
	})
	step("writeback", func() error { writebackPhase(ctx, e, c, res, haveWB); return nil })
	step("engine", func() error { enginePhase(ctx, e, c, res, root, "internal/engine"); return nil })
	if ctx.Err() != nil {
		res.Errors = append(res.Errors, "interrupted")
	}

	res.Seconds = time.Since(begin).Round(time.Second).Seconds()
	res.judge()
	res.printTables(os.Stdout)
	if err := res.writeJSON(*out); err != nil {
		return err
	}
	fmt.Printf("\n%s run took %v; figures in %s\n", res.Mode, time.Since(begin).Round(time.Second), *out)
	for _, m := range res.Errors {
		fmt.Println("error:", m)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// moduleRoot finds the directory holding go.mod, from the working directory up.
func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("run bench from inside the writeboost module (no go.mod found)")
		}
		d = parent
	}
}

// targets are issue 7's goals, judged on ratios of the same run.
func targets() []*target {
	n := func(wl, s string) string { return nbdRowID(wl, s) }
	return []*target{
		{Name: "P1", Desc: "4K randwrite QD32 via NBD vs nbdkit memory (transport ceiling)", Row: n("randwrite-qd32", sWBFiles), Ref: n("randwrite-qd32", sMemory), Op: ">=", Value: 0.8},
		{Name: "P1", Desc: "4K randwrite QD32 via NBD vs qemu-nbd O_DIRECT on the cache file", Row: n("randwrite-qd32", sWBFiles), Ref: n("randwrite-qd32", sQemu), Op: ">=", Value: 2},
		{Name: "P1", Desc: "1 MiB seq write QD4 via NBD vs nbdkit memory (transport ceiling)", Row: n("seqwrite-1m-qd4", sWBFiles), Ref: n("seqwrite-1m-qd4", sMemory), Op: ">=", Value: 0.8},
		{Name: "P1", Desc: "1 MiB seq read QD4 via NBD vs nbdkit memory (transport ceiling)", Row: n("seqread-1m-qd4", sWBFiles), Ref: n("seqread-1m-qd4", sMemory), Op: ">=", Value: 0.8},
		// The device ceiling under the sequential read: a read of cached
		// data comes from the cache file, so it cannot beat the file's own
		// O_DIRECT rate (the sequential write's ceiling is an R16 target).
		{Name: "dev", Desc: "1 MiB seq read via NBD vs the cache file's own O_DIRECT seq read", Row: n("seqread-1m-qd4", sWBFiles), Ref: "physical/seqread-1m", Op: ">=", Value: 0.8},
		{Name: "P2", Desc: "engine 4K random writes vs cache file 512K seq O_DIRECT write", Row: "engine/randwrite-4k", Ref: "physical/seqwrite-512k", Op: ">=", Value: 0.8},
		{Name: "P3", Desc: "HDD: 4K randwrite QD1 vs nbdkit file on the HDD", Row: n("randwrite-qd1", sWBHDD), Ref: n("randwrite-qd1", sHDD), Op: ">=", Value: 100},
		{Name: "P3", Desc: "HDD: 4K randwrite QD32 vs nbdkit file on the HDD", Row: n("randwrite-qd32", sWBHDD), Ref: n("randwrite-qd32", sHDD), Op: ">=", Value: 100},
		{Name: "P3", Desc: "HDD: 4K randwrite QD32, no flush, vs nbdkit cache filter", Row: n("randwrite-qd32", sWBHDD), Ref: n("randwrite-qd32", sCache), Op: ">=", Value: 0.8},
		{Name: "P3", Desc: "HDD: 4K randwrite + FLUSH every 32 vs nbdkit cache filter", Row: n("randwrite-flush32-qd1", sWBHDD), Ref: n("randwrite-flush32-qd1", sCache), Op: ">=", Value: 50},
		{Name: "P3", Desc: "HDD: FLUSH every 32 costs < 2x (flush32 / plain, QD1)", Row: n("randwrite-flush32-qd1", sWBHDD), Ref: n("randwrite-qd1", sWBHDD), Op: ">=", Value: 0.5},
		{Name: "P4", Desc: "writeback of clustered dirty data: backing requests per 4K block", Row: "writeback/clustered/requests", Op: "<=", Value: 0.25},
		{Name: "P4", Desc: "writeback drain rate, clustered, vs unsorted 4K writeback", Row: "writeback/clustered/rate", Ref: "writeback/unsorted-4k", Op: ">=", Value: 5},
		{Name: "P4", Desc: "writeback drain rate, dense random, vs unsorted 4K writeback", Row: "writeback/dense/rate", Ref: "writeback/unsorted-4k", Op: ">=", Value: 5},
		{Name: "P5", Desc: "replay of a full 1 GiB cache vs sequential read of 1 GiB", Row: "engine/replay-1GiB", Ref: "physical/read-1GiB", Op: "<=", Value: 1.5},
		{Name: "P6", Desc: "index RAM per cache block (bytes)", Row: "engine/index-bytes-per-block", Op: "<=", Value: 24},
		{Name: "P7", Desc: "read hits 4K QD32 vs nbdkit memory random reads", Row: n("randread-cached-qd32", sWBHDD), Ref: n("randread-cached-qd32", sMemory), Op: ">=", Value: 0.8},
		// Issue 15: the emulated HDD reached directly over NBD against the
		// same through nbdfuse. The cache-bound figures must be no slower
		// (0.9: the run's noise on two shared cores), and so must writeback,
		// which is bound by the path to the disk. Dense writeback was
		// judged on its drain rate (>= 2x) until the look-ahead planner
		// (issue 16) made both transports drain the region in a few long
		// writes at the emulated disk's bandwidth cap: no transport can
		// then be 2x the other. What the transport still decides is how
		// many requests (each paying the disk's per-request delay) carry
		// those bytes: nbdfuse cuts each write at FUSE's max_write. See
		// doc.go.
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: writeback backing requests per block, dense random", Row: wbRowID("dense", "requests", viaNBD), Ref: wbRowID("dense", "requests", viaFuse), Op: "<=", Value: 0.5},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: writeback drain rate, dense random (disk-bandwidth bound)", Row: wbRowID("dense", "rate", viaNBD), Ref: wbRowID("dense", "rate", viaFuse), Op: ">=", Value: 1},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: writeback drain rate, clustered", Row: wbRowID("clustered", "rate", viaNBD), Ref: wbRowID("clustered", "rate", viaFuse), Op: ">=", Value: 1},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: writeback drain rate, scattered", Row: wbRowID("scattered", "rate", viaNBD), Ref: wbRowID("scattered", "rate", viaFuse), Op: ">=", Value: 1},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: 4K randwrite QD1", Row: n("randwrite-qd1", sWBNBD), Ref: n("randwrite-qd1", sWBHDD), Op: ">=", Value: 0.9},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: 4K randwrite QD32", Row: n("randwrite-qd32", sWBNBD), Ref: n("randwrite-qd32", sWBHDD), Op: ">=", Value: 0.9},
		{Name: "N1", Desc: "HDD over NBD vs nbdfuse: 4K cold randread QD32 (every read from the disk)", Row: n("randread-cold-qd32", sWBNBD), Ref: n("randread-cold-qd32", sWBHDD), Op: ">=", Value: 1, FullOnly: true},
		// Issue 16, "Figures to reach": reads at the cache device's speed,
		// writes at the log's speed, all on the files subject (no slow
		// device under it) against the cache file's own fio figures.
		// The device's figures are taken between the runs of the same
		// workload (workload.beside), not minutes earlier.
		{Name: "R16", Desc: "read hits 4K QD32 via NBD vs the cache file's own libaio 4K rand read QD32", Row: n("randread-cached-qd32", sWBFiles), Ref: besideRowID("randread-4k", "randread-cached-qd32"), Op: ">=", Value: 0.8},
		// Issue 16: "where the device is faster than the transport";
		// elsewhere the device is the ceiling and the target above judges.
		{Name: "R16", Desc: "read hits 4K QD32 via NBD vs nbdkit memory random reads", Row: n("randread-cached-qd32", sWBFiles), Ref: n("randread-cached-qd32", sMemory), Op: ">=", Value: 0.8,
			When: &cond{Row: besideRowID("randread-4k", "randread-cached-qd32"), Above: n("randread-cached-qd32", sMemory), Desc: "device > transport"}},
		// Every byte of a sequential write goes to the cache file: it
		// cannot beat the file's own O_DIRECT rate.
		{Name: "R16", Desc: "1 MiB seq write QD4 via NBD vs the cache file's own 512K seq O_DIRECT write", Row: n("seqwrite-1m-qd4", sWBFiles), Ref: besideRowID("seqwrite-512k", "seqwrite-1m-qd4"), Op: ">=", Value: 0.8},
		{Name: "R16", Desc: "FLUSH every 32 writes vs plain, QD1 (flush32 / plain)", Row: n("randwrite-flush32-qd1", sWBFiles), Ref: n("randwrite-qd1", sWBFiles), Op: ">=", Value: 0.6},
		{Name: "R16", Desc: "FLUSH p50 latency via NBD vs the cache file's 4K write + fdatasync p50", Row: n(flushLatKey("randwrite-flush32-qd1"), sWBFiles), Ref: besideRowID("write-fdatasync-4k", "randwrite-flush32-qd1"), Op: "<=", Value: 1.2},
		{Name: "R16", Desc: "writeback drain rate, dense random, vs unsorted 4K writeback", Row: wbRowID("dense", "rate", viaFuse), Ref: "writeback/unsorted-4k", Op: ">=", Value: 3},
		{Name: "check", Desc: "fio --fsync=32 (QD1) sends one NBD FLUSH per 32 writes", Row: "check/fsync32", Op: "~", Value: 32, Tol: 1},
	}
}
