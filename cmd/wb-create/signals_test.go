package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/control"
)

func TestStopWatchSecond(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	w := stopWatch{acked: t0, grace: time.Second}
	for _, tc := range []struct {
		after time.Duration
		want  bool
	}{
		{-time.Millisecond, false}, // received before the stop was logged: queued behind the first
		{0, false},
		{time.Microsecond, false}, // timeout(1): the process, then its group
		{999 * time.Millisecond, false},
		{time.Second, true},
		{5 * time.Second, true},
	} {
		if got := w.second(t0.Add(tc.after)); got != tc.want {
			t.Errorf("signal %v after the stop was logged: second = %v, want %v", tc.after, got, tc.want)
		}
	}
}

// fakeClock is a clock the test sets; watchStop reads it.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

type verdict struct {
	sig    os.Signal
	second bool
}

// TestWatchStop drives the watch with an injected clock: each signal is
// sent on an unbuffered channel and its verdict awaited before the clock
// moves, so every verdict is exact without sleeping.
func TestWatchStop(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	clock := &fakeClock{now: t0}
	sig := make(chan os.Signal)
	verdicts := make(chan verdict)
	done := watchStop(sig, stopWatch{acked: t0, grace: secondSignalGrace}, clock.Now, func(s os.Signal, second bool) {
		verdicts <- verdict{s, second}
	})
	for _, step := range []struct {
		at     time.Duration
		sig    os.Signal
		second bool
	}{
		{0, syscall.SIGTERM, false},                     // the group copy of timeout's SIGTERM
		{0, syscall.SIGTERM, false},                     // and a third, relayed
		{300 * time.Millisecond, syscall.SIGINT, false}, // Ctrl-C to the whole group, relayed late
		{999 * time.Millisecond, syscall.SIGHUP, false},
		{time.Second, syscall.SIGINT, true}, // a person, after the grace
		{4 * time.Second, syscall.SIGTERM, true},
	} {
		clock.set(t0.Add(step.at))
		sig <- step.sig
		select {
		case v := <-verdicts:
			if v.sig != step.sig || v.second != step.second {
				t.Errorf("%v at +%v: verdict second=%v, want %v", step.sig, step.at, v.second, step.second)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v at +%v: no verdict", step.sig, step.at)
		}
	}
	done()
	// The watch has ended: nobody reads the channel any more.
	select {
	case sig <- syscall.SIGTERM:
		t.Fatal("a signal was read after the watch ended")
	default:
	}
}

// TestNotifySignals: SIGTERM, SIGINT and SIGHUP reach the channel, and
// SIGPIPE is ignored. Real signals to the test process.
func TestNotifySignals(t *testing.T) {
	defer signal.Reset(syscall.SIGPIPE)
	sig, stop := notifySignals()
	defer stop()
	for _, s := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-sig:
			if got != s {
				t.Errorf("sent %v, received %v", s, got)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%v did not reach the channel", s)
		}
	}
	if !signal.Ignored(syscall.SIGPIPE) {
		t.Error("SIGPIPE is not ignored")
	}
	// An ignored SIGPIPE does nothing; had it killed us, the test would not go on.
	if err := syscall.Kill(os.Getpid(), syscall.SIGPIPE); err != nil {
		t.Fatal(err)
	}
}

// TestNotifySignalsNohup: a process started with SIGHUP ignored, as
// nohup(1) starts it, keeps it ignored. The check runs in a child started
// through env --ignore-signal=HUP, since a disposition inherited at exec
// cannot be set up inside this process.
func TestNotifySignalsNohup(t *testing.T) {
	if os.Getenv("WB_TEST_NOHUP_CHILD") == "1" {
		if !signal.Ignored(syscall.SIGHUP) {
			fmt.Println("precondition: SIGHUP not ignored at start")
			os.Exit(3)
		}
		_, stop := notifySignals()
		defer stop()
		if !signal.Ignored(syscall.SIGHUP) {
			fmt.Println("notifySignals took SIGHUP over")
			os.Exit(4)
		}
		// Ignored: delivering it does nothing.
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		fmt.Println("nohup kept")
		return
	}
	cmd := exec.Command("env", "--ignore-signal=HUP", os.Args[0], "-test.run=^TestNotifySignalsNohup$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WB_TEST_NOHUP_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "nohup kept") {
		t.Fatalf("child under env --ignore-signal=HUP: %v\n%s", err, out)
	}
}

// TestDuplicateSignalsStopCleanly is `timeout 5 wb-create`: SIGTERM to the
// process and again to its group, both queued at once. The duplicate is
// ignored and the stop is clean: exit 0, the data flushed before it
// replays, no socket or state file left.
func TestDuplicateSignalsStopCleanly(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	for i, sigs := range [][]os.Signal{
		{syscall.SIGTERM, syscall.SIGTERM}, // timeout(1)
		{syscall.SIGINT, syscall.SIGINT},   // Ctrl-C, relayed by a wrapper
		{syscall.SIGHUP, syscall.SIGHUP},   // ssh logout
	} {
		args := []string{"dup", b, c}
		if i == 0 {
			args = append([]string{"--reformat"}, args...)
		}
		r := start(t, args...)
		nc := dial(t, "dup")
		data := bytes.Repeat([]byte{byte(0x30 + i)}, 4096)
		if err := nc.WriteAt(data, uint64(i)<<20, false); err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		nc.Close()
		for _, s := range sigs {
			r.sig <- s // buffered: both queued before run reads the first
		}
		r.waitExit(t, sigs[0].String()+" twice at once")
		log := r.stderr.String()
		if strings.Contains(log, "second signal:") || !strings.Contains(log, "volume closed cleanly") {
			t.Fatalf("%v twice at once: not a clean stop:\n%s", sigs[0], log)
		}
		if !strings.Contains(log, "signal ignored: a duplicate") {
			t.Errorf("%v twice at once: the duplicate was not logged as ignored:\n%s", sigs[0], log)
		}
		for _, p := range []string{control.SocketPath(control.RunDir(), "dup"), control.ControlPath(control.RunDir(), "dup"), control.StatePath(control.RunDir(), "dup")} {
			if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s left after the stop: %v", p, err)
			}
		}
	}
	// Every flushed write replays.
	r := start(t, "dup", b, c)
	nc := dial(t, "dup")
	defer nc.Close()
	for i := range 3 {
		got := make([]byte, 4096)
		if err := nc.ReadAt(got, uint64(i)<<20); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{byte(0x30 + i)}, 4096)) {
			t.Errorf("write %d lost across the stop: %v", i, err)
		}
	}
	nc.Close()
	r.stop(t)
}
