package main

// Signals. SIGTERM, SIGINT and SIGHUP stop the volume cleanly (services.stop).
// A second signal during the stop exits at once, without it: the log
// replays at the next start, as after a crash. That is a person's way out
// of a stop that hangs, so a second signal counts only if a person could
// have sent it:
//
//   - it is a separate delivery, received from the channel after the one
//     that started the stop (or after a remove message or a serving
//     failure started it), and
//   - it is received secondSignalGrace or more after the stop was
//     acknowledged in the log ("stopping cleanly").
//
// Anything earlier is a duplicate and is logged and ignored. NB: duplicates
// are common: coreutils timeout signals the process and then its process
// group, a terminal's Ctrl-C signals the whole foreground group (a wrapper
// such as sudo relays it again), and an ssh logout sends SIGHUP to the
// session and the shell passes it on; each of them arrives within
// microseconds of the first, or queued behind it in the channel.
//
// SIGPIPE is ignored: a write to a pipe whose reader is gone then fails
// with EPIPE instead of killing the engine. Go already survives a control
// or NBD client that hangs up (EPIPE on a socket); the case left is
// standard error, when the log goes to a pipe (a log collector, an ssh
// session) that dies first.

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// secondSignalGrace is how long after the stop was logged a signal is
// still a duplicate of the first. One second: far longer than any relayed
// duplicate takes, shorter than a person notices a stop is slow.
const secondSignalGrace = time.Second

// stopHint ends the log line that acknowledges a stop.
var stopHint = fmt.Sprintf("; another signal from %v on exits at once instead", secondSignalGrace)

// notifySignals routes the stop signals to the returned channel and
// ignores SIGPIPE; stop undoes the routing. SIGHUP stays ignored when the
// process started with it ignored: that is nohup(1)'s request to outlive
// the terminal, which signal.Notify would otherwise cancel.
func notifySignals() (sig <-chan os.Signal, stop func()) {
	// Room for a duplicate or two besides the first; the rest are
	// dropped by os/signal, which is what duplicates deserve.
	c := make(chan os.Signal, 4)
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGINT}
	if !signal.Ignored(syscall.SIGHUP) {
		sigs = append(sigs, syscall.SIGHUP)
	}
	signal.Notify(c, sigs...)
	signal.Ignore(syscall.SIGPIPE)
	return c, func() { signal.Stop(c) }
}

// stopWatch tells a second signal from a duplicate of the first.
type stopWatch struct {
	acked time.Time     // when the stop was acknowledged in the log
	grace time.Duration // secondSignalGrace
}

// second reports whether a signal received at now asks to exit at once.
func (w stopWatch) second(now time.Time) bool {
	return !now.Before(w.acked.Add(w.grace))
}

// onStopSignal is watchStop's on for run: it logs a duplicate, and for a
// second signal logs and exits with status 1 without the clean stop.
func onStopSignal(log *slog.Logger) func(s os.Signal, second bool) {
	return func(s os.Signal, second bool) {
		if !second {
			log.Info(fmt.Sprintf("signal ignored: a duplicate, less than %v after the stop began; the clean stop goes on", secondSignalGrace), "signal", s.String())
			return
		}
		log.Warn("second signal: exiting without a clean stop; the log replays at the next start", "signal", s.String())
		os.Exit(1)
	}
}

// watchStop watches sig while the clean stop runs: it receives each
// signal, stamps it with now() and calls on(s, second) with w's verdict;
// on(s, true) is expected to exit the process. The returned done ends the
// watch and waits for its goroutine; after it returns, sig is not read
// and on is not called.
func watchStop(sig <-chan os.Signal, w stopWatch, now func() time.Time, on func(s os.Signal, second bool)) (done func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case s := <-sig:
				select {
				case <-quit: // the stop is over: nothing left to cut short
					return
				default:
				}
				on(s, w.second(now()))
			case <-quit:
				return
			}
		}
	})
	return func() {
		close(quit)
		wg.Wait()
	}
}
