package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestProcsRunAndStop(t *testing.T) {
	ps := &procs{logDir: t.TempDir()}
	defer ps.stopAll()
	ctx := context.Background()

	out, err := ps.run(ctx, "echo", startOpts{}, "sh", "-c", "echo hello; echo oops >&2")
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, "hello") || !strings.Contains(s, "oops") {
		t.Errorf("output %q", s)
	}
	if _, err := ps.run(ctx, "fail", startOpts{}, "sh", "-c", "echo why; exit 3"); err == nil || !strings.Contains(err.Error(), "why") {
		t.Errorf("failure not reported with output: %v", err)
	}

	// A server that prints ready, then runs until stopped by SIGTERM.
	p, err := ps.start("srv", startOpts{readyWord: "ready"}, "sh", "-c", "echo starting; echo already formatted; sleep 0.3; echo msg=ready; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(ctx, p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if out := string(p.out.Bytes()); !strings.Contains(out, "msg=ready") {
		t.Errorf("ready before the ready line: %q", out)
	}
	hooked := false
	p.onStop = func() { hooked = true }
	start := time.Now()
	if err := ps.stop(p, 5*time.Second); err != nil {
		t.Errorf("SIGTERM stop reported %v", err)
	}
	if time.Since(start) > 4*time.Second || !hooked || !p.exited() {
		t.Errorf("stop took %v, hook %v, exited %v", time.Since(start), hooked, p.exited())
	}

	// One that ignores SIGTERM is killed after the grace period.
	p, err = ps.start("stubborn", startOpts{readyWord: "armed"}, "sh", "-c", "trap '' TERM; echo armed; while :; do sleep 0.1; done")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(ctx, p, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ps.stop(p, 300*time.Millisecond); err == nil {
		t.Error("SIGKILL stop reported as clean")
	}

	// A process that exits early fails waitReady with its output.
	p, err = ps.start("early", startOpts{readyWord: "ready"}, "sh", "-c", "echo cannot open; exit 1")
	if err != nil {
		t.Fatal(err)
	}
	if err := waitReady(ctx, p, 5*time.Second); err == nil || !strings.Contains(err.Error(), "cannot open") {
		t.Errorf("early exit: %v", err)
	}

	// stopAll leaves nothing running.
	for i := 0; i < 3; i++ {
		if _, err := ps.start("bg", startOpts{}, "sleep", "60"); err != nil {
			t.Fatal(err)
		}
	}
	ps.stopAll()
	if len(ps.live) != 0 {
		t.Errorf("%d processes left", len(ps.live))
	}
}

func TestRunCancelled(t *testing.T) {
	ps := &procs{logDir: t.TempDir()}
	defer ps.stopAll()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := ps.run(ctx, "long", startOpts{}, "sleep", "60"); err == nil {
		t.Error("cancelled run reported success")
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("cancel took %v", time.Since(start))
	}
}
