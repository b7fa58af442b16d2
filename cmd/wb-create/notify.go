package main

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	wbcli "github.com/writeboost/writeboost/internal/cli"
	"github.com/writeboost/writeboost/internal/vocab"
)

// statusInterval is how often the STATUS= line follows the dirty data
// while the volume serves.
const statusInterval = 10 * time.Second

// notifier speaks sd_notify(3) to the service manager (Type=notify in
// dist/systemd/writeboost@.service) when NOTIFY_SOCKET is set, and is
// silent otherwise. The sequence: STATUS= lines while the devices open and
// the log replays; READY=1 once every socket accepts connections; STATUS=
// with the dirty data every statusInterval, and WATCHDOG=1 every half
// WATCHDOG_USEC when the watchdog is on; STOPPING=1 at a clean stop.
//
// One goroutine, started by ready, owns the periodic lines; close stops it
// and waits.
type notifier struct {
	log      *slog.Logger
	enabled  bool
	watchdog time.Duration // 0: no watchdog
	interval time.Duration // STATUS= period (statusInterval; shorter in tests)

	stopOnce sync.Once
	quit     chan struct{}
	wg       sync.WaitGroup
}

func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log, enabled: os.Getenv("NOTIFY_SOCKET") != "", interval: statusInterval, quit: make(chan struct{})}
	if !n.enabled {
		return n
	}
	wd, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog: ignoring WATCHDOG_USEC", "err", err)
	}
	n.watchdog = wd
	return n
}

// send sends one notification; a failure is logged, never fatal: the
// volume serves whether or not systemd hears of it.
func (n *notifier) send(state string) {
	if !n.enabled {
		return
	}
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("sd_notify failed", "state", state, "err", err)
	}
}

// status sets the STATUS= line systemctl status shows.
func (n *notifier) status(format string, args ...any) {
	n.send("STATUS=" + wbcli.OneLine(fmt.Sprintf(format, args...)))
}

// replayProgress returns a replay progress callback that keeps STATUS=
// at "replaying the log of CACHE: N of M segments", at most once per
// interval (and at the end).
func (n *notifier) replayProgress(cache string) func(done, total uint64) {
	var last time.Time
	return func(done, total uint64) {
		if now := time.Now(); done == total || now.Sub(last) >= n.interval {
			last = now
			n.status("replaying the log of %s: %d of %d segments", cache, done, total)
		}
	}
}

// ready says the volume serves, then keeps STATUS= current with status()
// and pings the watchdog until close.
func (n *notifier) ready(name string, status func() vocab.Status) {
	if !n.enabled {
		return
	}
	n.send("READY=1\nSTATUS=" + serving(name, status()))
	tick := n.interval
	if n.watchdog > 0 && n.watchdog/2 < tick {
		tick = n.watchdog / 2
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		t := time.NewTicker(tick)
		defer t.Stop()
		lastStatus := time.Now()
		for {
			select {
			case <-n.quit:
				return
			case <-t.C:
			}
			if n.watchdog > 0 {
				n.send(daemon.SdNotifyWatchdog)
			}
			if time.Since(lastStatus) >= n.interval {
				n.send("STATUS=" + serving(name, status()))
				lastStatus = time.Now()
			}
		}
	}()
}

// stopping says the clean stop began: from here systemd waits for the exit
// (TimeoutStopSec bounds sealing the RAM buffer and syncing).
func (n *notifier) stopping() {
	n.close()
	n.send("STOPPING=1\nSTATUS=stopping cleanly: sealing the RAM buffer, recording the superblock, syncing both devices")
}

// close stops the periodic lines and waits for their goroutine.
func (n *notifier) close() {
	n.stopOnce.Do(func() { close(n.quit) })
	n.wg.Wait()
}

// serving is the STATUS= line of a serving volume.
func serving(name string, s vocab.Status) string {
	clients := "?"
	if s.NrClients != nil {
		clients = fmt.Sprint(*s.NrClients)
	}
	return fmt.Sprintf("serving %s: %d dirty blocks (%s), %s NBD clients", name, s.NrDirtyCacheBlocks, wbcli.HumanBytes(s.Report().DirtyBytes), clients)
}
