// Command wbtorture is the client side of the kill test and the soak test
// (testing/07-kill.sh, testing/12-soak.sh). It speaks NBD itself (package
// nbdclient) and writes tagged sectors, so every sector read back names
// the write that put it there.
//
//	wbtorture init   --state F --sectors N
//	wbtorture write  --state F --uri U [--kill-pid P --kill-min D --kill-max D | --duration D]
//	wbtorture verify --state F --uri U [--strict]
//	wbtorture totals --state F
//	wbtorture soak   --uri U --sectors N --conns C --depth Q --duration D
//
// A kill cycle is: write (the tool SIGKILLs the engine at a random moment,
// requests in flight), restart the engine, verify. The state file carries
// what each sector must hold across the restart.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "wbtorture: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: wbtorture init|write|verify|totals|soak [flags]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	fs := flag.NewFlagSet("wbtorture "+args[0], flag.ContinueOnError)
	state := fs.String("state", "", "state file")
	uri := fs.String("uri", "", "NBD URI, e.g. nbd+unix:///NAME?socket=PATH")
	sectors := fs.Uint64("sectors", 0, "region size in 512-byte sectors, from sector 0")
	conns := fs.Int("conns", 4, "NBD connections")
	depth := fs.Int("depth", 8, "requests in flight per connection")
	duration := fs.Duration("duration", 2*time.Second, "run time (write without --kill-pid, soak)")
	killPID := fs.Int("kill-pid", 0, "signal this pid at a random moment of the write run")
	killSig := fs.String("kill-signal", "KILL", "the signal for --kill-pid: KILL (a crash) or TERM (a clean stop under load)")
	strict := fs.Bool("strict", false, "verify: every acknowledged write must be there (after a clean stop)")
	killMin := fs.Duration("kill-min", 200*time.Millisecond, "earliest kill")
	killMax := fs.Duration("kill-max", 1500*time.Millisecond, "latest kill")
	seed := fs.Uint64("seed", uint64(time.Now().UnixNano()), "random seed (printed, for replaying a failure)")
	flushPct := fs.Int("flush-pct", 3, "percent of operations that are FLUSH")
	readPct := fs.Int("read-pct", 10, "percent of operations that are verified reads")
	fuaPct := fs.Int("fua-pct", 5, "percent of writes sent with FUA")
	maxBlocks := fs.Int("max-blocks", 16, "largest write in 4 KiB blocks")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	need := func(names ...string) error {
		for _, n := range names {
			if f := fs.Lookup(n); f.Value.String() == f.DefValue {
				return fmt.Errorf("%s: --%s is required", args[0], n)
			}
		}
		return nil
	}

	switch args[0] {
	case "init":
		if err := need("state", "sectors"); err != nil {
			return err
		}
		if *sectors%8 != 0 {
			return fmt.Errorf("init: --sectors must be a multiple of 8 (whole 4 KiB blocks)")
		}
		return newState(*sectors).save(*state)

	case "write":
		if err := need("state", "uri"); err != nil {
			return err
		}
		if *conns < 1 || *depth < 1 || *maxBlocks < 2 || *flushPct+*readPct > 100 {
			return fmt.Errorf("write: bad --conns/--depth/--max-blocks/--flush-pct/--read-pct")
		}
		sig := map[string]syscall.Signal{"KILL": syscall.SIGKILL, "TERM": syscall.SIGTERM}[*killSig]
		if sig == 0 {
			return fmt.Errorf("write: --kill-signal %q: want KILL or TERM", *killSig)
		}
		st, err := loadState(*state)
		if err != nil {
			return err
		}
		first := st.NextSeq
		t0 := time.Now()
		stats, err := runWrite(ctx, st, writeOpts{
			uri: *uri, conns: *conns, depth: *depth, duration: *duration,
			killPID: *killPID, killSig: sig, killMin: *killMin, killMax: *killMax, seed: *seed,
			flushPct: *flushPct, readPct: *readPct, fuaPct: *fuaPct, maxBlocks: *maxBlocks,
		})
		// The state is saved even after a failure: it records what was issued.
		if serr := st.save(*state); serr != nil && err == nil {
			err = serr
		}
		if stats != nil {
			fmt.Printf("write: seed %d, %.2fs, seqs %d..%d, writes %d (fua %d), flushes %d, verified reads %d (%d sectors), longest write or flush %.3fs\n",
				*seed, time.Since(t0).Seconds(), first, st.NextSeq-1, stats.writes.Load(), stats.fua.Load(),
				stats.flushes.Load(), stats.reads.Load(), stats.sectorsRead.Load(), time.Duration(stats.maxWait.Load()).Seconds())
		}
		if err != nil {
			return fmt.Errorf("write (seed %d): %w", *seed, err)
		}
		return nil

	case "verify":
		if err := need("state", "uri"); err != nil {
			return err
		}
		st, err := loadState(*state)
		if err != nil {
			return err
		}
		res, err := runVerify(ctx, st, *uri, *strict, os.Stdout)
		if serr := st.save(*state); serr != nil && err == nil {
			err = serr
		}
		fmt.Printf("verify: cycle %d, sectors %d, bad %d, exact prefix %v, newest seq %d of %d issued\n",
			st.Cycles, res.sectors, res.bad, res.exactPrefix, res.maxSeq, st.NextSeq-1)
		if err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		return nil

	case "totals":
		if err := need("state"); err != nil {
			return err
		}
		st, err := loadState(*state)
		if err != nil {
			return err
		}
		fmt.Printf("cycles %d sectors %d bad %d exact-prefix %d\n", st.Cycles, st.SectorsChecked, st.Bad, st.ExactPrefix)
		return nil

	case "soak":
		if err := need("uri", "sectors"); err != nil {
			return err
		}
		t0 := time.Now()
		n, err := runSoak(ctx, soakOpts{uri: *uri, conns: *conns, depth: *depth, duration: *duration, sectors: *sectors, seed: *seed})
		if err != nil {
			return fmt.Errorf("soak (seed %d): %w", *seed, err)
		}
		fmt.Printf("soak: seed %d, %.1fs, bytes verified %d\n", *seed, time.Since(t0).Seconds(), n)
		return nil
	}
	return fmt.Errorf("unknown command %q", args[0])
}
