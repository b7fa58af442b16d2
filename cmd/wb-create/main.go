// Command wb-create starts a writeboost volume: the engine over a backing
// device and a cache device, served over NBD. It is the user-space
// `dmsetup create NAME --table "0 SECTORS writeboost BACKING CACHE [N k v ...]"`.
//
// It runs in the foreground until SIGTERM, SIGINT or SIGHUP (or a `remove`
// message), then stops cleanly: stop accepting, finish in-flight requests,
// seal and write the RAM buffer, record the superblock, sync both devices,
// remove the sockets and the state file. A second signal a second or more
// after the stop was logged exits at once (earlier ones are duplicates);
// the log replays at the next start. SIGPIPE is ignored. See signals.go.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/prometheus/client_golang/prometheus"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/engine"
	"github.com/writeboost/writeboost/internal/nbd"
	"github.com/writeboost/writeboost/internal/superblock"
	"github.com/writeboost/writeboost/internal/vocab"
)

// CLI is wb-create's command line.
type CLI struct {
	Name    string   `arg:"" predictor:"tabname" help:"Volume name, [A-Za-z0-9._-]{1,64}; also the NBD export name."`
	Backing string   `arg:"" help:"Backing device: the slow disk (a block device, a regular file, or an NBD export by URI: nbd://HOST[:PORT]/EXPORT, nbds://..., nbd+unix:///EXPORT?socket=PATH). The volume has its size."`
	Cache   string   `arg:"" help:"Cache device: the fast disk (a block device or a regular file) holding the log."`
	Args    []string `arg:"" optional:"" predictor:"tunable" help:"Optional KEY VALUE pairs, as the kernel target's optional args: ${tunables}."`

	Reformat    bool     `help:"Format the cache device first: every cached block is forgotten, dirty or not. A CACHE holding a file system or other signature is refused (see --force)."`
	Force       bool     `help:"Start even when CACHE is larger than BACKING or BACKING is a writeboost cache device (both hint at swapped arguments), and let --reformat format a CACHE holding a file system, partition table or other signature, or one it cannot probe (wipefs missing): that data is lost; and start a CACHE bound to another backing device (or whose binding record is damaged), replaying its dirty blocks onto BACKING and binding it there. BACKING and CACHE sharing storage is never allowed."`
	Listen      []string `placeholder:"tcp://HOST:PORT" help:"Also serve NBD on this TCP address (repeatable). The unix socket RUNDIR/NAME.sock is always served."`
	Attach      string   `placeholder:"/dev/nbdN" help:"Also connect the volume to the kernel nbd driver at this device (needs the nbd module)."`
	NoDirect    bool     `help:"Do not open the devices with O_DIRECT (use the page cache; for file systems without O_DIRECT support this is automatic)."`
	IOEngine    string   `name:"io-engine" enum:"auto,io_uring,blocking" default:"auto" help:"How device reads, writes and syncs are submitted: io_uring (no thread waits per request; read hits complete without a goroutine each, through native AIO when the cache device is O_DIRECT, shown as io_uring+aio), blocking (pread, pwrite, fdatasync), or auto: io_uring where the kernel allows it, else blocking, logged. wb-status shows which runs."`
	Verbose     bool     `short:"v" help:"Log debug messages."`
	Metrics     string   `placeholder:"tcp://HOST:PORT" help:"Serve Prometheus metrics at http://HOST:PORT/metrics (HOST empty: 127.0.0.1; any other than loopback is warned about)."`
	Pidfile     string   `placeholder:"PATH" help:"Write the process id to PATH (atomically) once the volume serves; removed at a clean stop."`
	SocketGroup string   `placeholder:"GROUP" help:"Let GROUP (a name or id) use the NBD and control sockets: they become root:GROUP, mode 0660 (see --socket-mode), and the run directory gets the group's search bit. Without it only root may connect."`
	SocketMode  string   `placeholder:"MODE" help:"The sockets' mode, octal: 0600 (the default without --socket-group) or 0660 (the default with it). Others never get access."`
	Tab         string   `placeholder:"FILE" help:"--tab [FILE] NAME: start NAME as its line of the volume table says (NAME BACKING CACHE [KEY VALUE]...; FILE is $WB_TAB, else /etc/writeboosttab), checked as the command line is."`

	WriteWaitLimit time.Duration `placeholder:"DURATION" help:"How long a write may wait for a free segment while writeback is failing (a full or failing backing device, the ring full): then it fails with writeback's error (ENOSPC, EIO) instead of hanging. 0 (the default) waits as long as it takes, as the kernel target does. Either way a waiting writer and a failing writeback are logged every 10 s."`
	Bounds         `embed:""`
	TLSFlags       `embed:""`

	wbcli.Common `embed:""`

	NetBacking `embed:""` // backing_uri.go: BACKING as an NBD URI

	// tty is stderr when it is a terminal: replay draws its progress
	// there as a bar, instead of logging a line a second.
	tty io.Writer
}

const description = `Start a writeboost volume: log-structured write-back caching of BACKING on CACHE,
served over NBD at RUNDIR/NAME.sock (RUNDIR is $WB_RUN_DIR, else /run/writeboost).

It stays in the foreground and logs to stderr; "ready" is logged once NBD
clients can connect, e.g. nbdinfo 'nbd+unix:///NAME?socket=RUNDIR/NAME.sock'.
SIGTERM, SIGINT or SIGHUP stops it cleanly; a second signal 1s or more after
"stopping cleanly" is logged exits at once (the log replays at the next
start); SIGPIPE is ignored. Manage it with wb-status and wb-message.`

func main() {
	setMaxProcs()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// minProcs is the fewest Ps wb-create runs with. NB: with --io-engine
// blocking every cache-device read is a blocking pread; with one P per core
// few of them are in flight at once and the device idles (4 KiB read hits
// at QD32: 17.8k IOPS with 2 Ps, 38-42k with 8, on 2 cores). With io_uring,
// 4 KiB writes at QD1 still gain (31.9-35.6k IOPS with 8 Ps, 27.6-31.4k
// with 2; docs/design.md). GOMAXPROCS in the environment still wins.
const minProcs = 8

func setMaxProcs() {
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < minProcs {
		runtime.GOMAXPROCS(minProcs)
	}
}

// run parses args and runs the volume until a signal; sig, if not nil,
// replaces the process's SIGTERM/SIGINT/SIGHUP (for tests).
func run(args []string, stdout, stderr io.Writer, sig <-chan os.Signal) int {
	args, err := expandTab(args) // tab.go: --tab [FILE] NAME
	if err != nil {
		fmt.Fprintf(stderr, "wb-create: %s\n", wbcli.ErrorText(err.Error()))
		return 2
	}
	var cli CLI
	if _, code, done := wbcli.Parse("wb-create", description, &cli, args, stdout, stderr, 2, kong.Vars{"tunables": tunableRanges()}, predictors); done {
		return code
	}
	level := slog.LevelInfo
	if cli.Verbose {
		level = slog.LevelDebug
	}
	if wbcli.IsTerminal(stderr) {
		cli.tty = stderr
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if sig == nil {
		c, stop := notifySignals()
		defer stop()
		sig = c
	}
	if err := cli.run(log, sig); err != nil {
		fmt.Fprintf(stderr, "wb-create: %s\n", wbcli.ErrorText(err.Error()))
		if wbcli.IsUsage(err) {
			return 2
		}
		return 1
	}
	return 0
}

func (cli *CLI) run(log *slog.Logger, sig <-chan os.Signal) error {
	n := newNotifier(log) // notify.go: systemd's Type=notify
	defer n.close()
	if err := control.ValidName(cli.Name); err != nil {
		return wbcli.Usage(err)
	}
	tun, tableArgs, err := vocab.ParseOptionalArgs(cli.Args)
	if err != nil {
		return wbcli.Usage(err)
	}
	tcp, err := parseListen(cli.Listen)
	if err != nil {
		return wbcli.Usage(err)
	}
	metricsAddr, err := parseMetrics(cli.Metrics) // metrics.go
	if err != nil {
		return err
	}
	access, err := control.ParseAccess(cli.SocketGroup, cli.SocketMode)
	if err != nil {
		return wbcli.Usage(err)
	}
	if cli.BackingTimeout <= 0 {
		// 0 would read as "no limit" but the client takes it as its
		// default: refuse it rather than guess.
		return wbcli.Usage(fmt.Errorf("--backing-timeout %v: want a positive duration", cli.BackingTimeout))
	}
	tlsConf, err := cli.listenSecurity(context.Background(), tcp) // tls.go
	if err != nil {
		return err
	}
	dir := control.RunDir()
	if err := control.EnsureRunDir(dir); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := access.PrepareRunDir(ctx, dir); err != nil {
		return err
	}
	lock, err := control.LockName(dir, cli.Name)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := control.ClaimName(ctx, dir, cli.Name); err != nil {
		return err
	}

	n.status("opening %s and %s, replaying the log", cli.Backing, cli.Cache)
	backing, cache, err := cli.openDevices(ctx, log) // devices.go: the refusals, --reformat
	if err != nil {
		return err
	}
	defer backing.Close() // after the volume closed: every path below stops it first
	defer cache.Close()
	vol, err := cli.openVolume(ctx, log, n, backing, cache, tun)
	if err != nil {
		return err
	}
	v := &volume{Volume: vol, name: cli.Name, backing: cli.Backing, cache: cli.Cache, args: tableArgs, start: time.Now(), removed: make(chan bool, 1)}

	opts := cli.nbdOptions(log)
	var nm *nbdMetrics // metrics.go: the NBD requests, with --metrics
	if metricsAddr != "" {
		nm = newNBDMetrics(cli.Name)
		nm.replay.Set(vol.ReplayTime().Seconds())
		opts.Observer = nm
	}
	srv, err := nbd.NewServer([]nbd.Export{{Name: cli.Name, Description: "writeboost volume " + cli.Name, Backend: vol}}, opts)
	if err != nil {
		vol.Close()
		return err
	}
	s := newServices(log)
	v.clients = func() int { return s.clients(srv) }
	// From here on, every exit path goes through stop.
	stopErr := func(cause error) error {
		return errors.Join(cause, s.stop(srv, vol, dir, cli.Name))
	}
	sock := control.SocketPath(dir, cli.Name)
	nl, err := net.Listen("unix", sock)
	if err != nil {
		return stopErr(fmt.Errorf("listen on %s: %w", sock, err))
	}
	if err := control.SetSocketAccess(sock, access); err != nil {
		nl.Close()
		return stopErr(fmt.Errorf("NBD socket: %w", err))
	}
	s.serveNBD(ctx, srv, nl, nil)
	for _, addr := range tcp {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return stopErr(fmt.Errorf("listen on tcp://%s: %w", addr, err))
		}
		if tlsConf == nil && !isLoopback(l.Addr()) { // --insecure
			log.Warn("serving NBD on a non-loopback address: anyone who reaches it can read and write the volume", "addr", l.Addr().String())
		}
		s.serveNBD(ctx, srv, l, tlsConf)
	}
	cl, err := control.ListenAccess(dir, cli.Name, access)
	if err != nil {
		return stopErr(err)
	}
	s.serveControl(ctx, cl, v, access)
	if cli.Attach != "" {
		att, err := nbd.Attach(ctx, cli.Attach, nbd.Export{Name: cli.Name, Backend: vol}, nbd.Options{Logger: log, Observer: opts.Observer})
		if err != nil {
			return stopErr(fmt.Errorf("attach %s: %w", cli.Attach, err))
		}
		s.attachment.Store(att)
	}
	st := control.State{
		Name: cli.Name, PID: os.Getpid(), Backing: cli.Backing, Cache: cli.Cache,
		SizeBytes: uint64(vol.Size()), CacheBytes: uint64(cache.Size()), TableArgs: tableArgs,
		StartTime: v.start, Socket: sock, Control: control.ControlPath(dir, cli.Name),
	}
	for _, a := range tcp {
		st.Listen = append(st.Listen, "tcp://"+a)
	}
	if err := control.WriteState(dir, st); err != nil {
		return stopErr(err)
	}
	var more []prometheus.Collector
	if nm != nil {
		more = append(more, nm)
	}
	stopMetrics, err := serveMetrics(log, metricsAddr, cli.Name, v.Status, more...) // metrics.go
	if err != nil {
		return stopErr(err)
	}
	defer stopMetrics()
	if err := cli.writePidfile(); err != nil { // pidfile.go
		return stopErr(err)
	}
	defer cli.removePidfile(log)
	log.Info("ready", "name", cli.Name, "socket", sock, "uri", "nbd+unix:///"+cli.Name+"?socket="+sock)
	n.ready(cli.Name, v.Status)

	var noWriteback bool
	select {
	case s := <-sig:
		log.Info("stopping cleanly"+stopHint, "signal", s.String())
	case noWriteback = <-v.removed:
		log.Info("stopping cleanly: remove message"+stopHint, "writeback", !noWriteback)
	case err := <-s.errc:
		log.Error("serving failed; stopping cleanly"+stopHint, "err", err)
	}
	n.stopping()
	// A second signal during the stop exits at once, a duplicate of the
	// first is ignored (signals.go). The watch ends with run.
	defer watchStop(sig, stopWatch{acked: time.Now(), grace: secondSignalGrace}, time.Now, onStopSignal(log))()
	return s.stop(srv, vol, dir, cli.Name)
}

// tunableRanges lists every tunable with its range, from the one table:
// "writeback_threshold 0..100, ...".
func tunableRanges() string {
	var list []string
	for _, t := range vocab.Tunables() {
		list = append(list, t.String()+" "+t.Range())
	}
	return strings.Join(list, ", ")
}

// openVolume checks that cache belongs to backing (binding.go), replays
// the log and opens the engine, then records the binding if it is new.
// On error the volume is closed; the devices are the caller's.
func (cli *CLI) openVolume(ctx context.Context, log *slog.Logger, n *notifier, backing blockdev.Device, cache *blockdev.File, tun vocab.Values) (*engine.Volume, error) {
	start := time.Now()
	bind, err := cli.binding(cache, backing) // binding.go: CACHE must belong to BACKING
	if err != nil {
		return nil, err
	}
	cfg := engine.Config{Backing: backing, Cache: cache, Logger: log, Tunables: tun, WriteWaitLimit: cli.WriteWaitLimit}
	var progress []func(done, total uint64)
	if cli.tty != nil {
		bar := wbcli.NewBar(cli.tty, "wb-create", "replaying the cache log", "segments", 0)
		progress = append(progress, func(done, total uint64) { bar.Update(int64(done), int64(total)) })
		defer bar.Done() // before any error is printed
	}
	if n.enabled {
		progress = append(progress, n.replayProgress(cli.Cache))
	}
	if len(progress) > 0 {
		cfg.ReplayProgress = func(done, total uint64) {
			for _, f := range progress {
				f(done, total)
			}
		}
	}
	vol, err := engine.Open(cfg)
	switch {
	case errors.Is(err, engine.ErrNotFormatted):
		return nil, cli.notFormatted(ctx, backing)
	case errors.Is(err, engine.ErrDamaged):
		return nil, fmt.Errorf("%w; nothing was written. wb-check %s shows the log; wb-check --writeback %s --force %s writes back what its valid prefix holds",
			err, cli.Cache, cli.Backing, cli.Cache)
	case err != nil:
		return nil, err
	}
	if bind != nil {
		if err := superblock.WriteBinding(cache, *bind); err != nil {
			vol.Close()
			return nil, fmt.Errorf("cache device %s: record its backing device: %w", cli.Cache, err)
		}
		log.Info("cache bound to its backing device", "binding", bind.String())
	}
	log.Info("volume opened", "name", cli.Name, "size", vol.Size(), "replay", time.Since(start).Round(time.Millisecond))
	return vol, nil
}

// parseListen turns tcp://HOST:PORT into HOST:PORT.
func parseListen(list []string) ([]string, error) {
	var out []string
	for _, s := range list {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "tcp" || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
			return nil, fmt.Errorf("--listen %q: want tcp://HOST:PORT", s)
		}
		out = append(out, u.Host)
	}
	return out, nil
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
