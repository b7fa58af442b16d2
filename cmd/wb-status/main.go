// Command wb-status shows the status of running writeboost volumes: what
// `dmsetup status` and `dmsetup table` show for the kernel target, the
// exact lines for scripts (--raw, --table), JSON (--json), or a labelled
// table for people.
//
//	wb-status [--raw|--table|--json] [--watch SECONDS] [NAME|-]
//
// With NAME it asks the volume's control socket RUNDIR/NAME.ctl; without,
// it prints one line per running volume; with "-" it parses status lines
// (or, with --table, table lines) from standard input, so that
// `dmsetup status wbdev | wb-status -` reads the kernel target's line.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/olekukonko/tablewriter/tw"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/vocab"
)

const progName = "wb-status"

type cli struct {
	Raw   bool    `help:"Print the kernel target's status line, exactly as dmsetup status prints it." xor:"format"`
	Table bool    `help:"Print the table line, as dmsetup table prints it." xor:"format"`
	JSON  bool    `name:"json" help:"Print JSON on one line: an object for NAME, an array when listing (empty when no volume runs)." xor:"format"`
	Watch float64 `help:"Refresh every SECONDS: in place on a terminal, repeated output otherwise." placeholder:"SECONDS"`
	Name  string  `arg:"" optional:"" predictor:"volume" help:"Volume name. '-' reads status lines (table lines with --table) from standard input. Without NAME, one line per running volume."`

	wbcli.Common `embed:""`
}

// env carries the process's context and streams into Run.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process: it parses args, runs, and returns the
// exit status.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var c cli
	kctx, code, done := wbcli.Parse(progName, "Show the status of writeboost volumes (dmsetup status and dmsetup table for the kernel target).",
		&c, args, stdout, stderr, 2, wbcli.Predictors{"volume": control.VolumeNames})
	if done {
		return code
	}
	if err := kctx.Run(&env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr}); err != nil {
		fmt.Fprintf(stderr, "%s: %s\n", progName, wbcli.ErrorText(err.Error()))
		if wbcli.IsUsage(err) {
			return 2
		}
		return 1
	}
	return 0
}

// Run carries out the command.
func (c *cli) Run(e *env) error {
	if c.Watch < 0 || math.IsNaN(c.Watch) || math.IsInf(c.Watch, 0) {
		return wbcli.Usagef("--watch %v: want a positive number of seconds", c.Watch)
	}
	if c.Name == "-" {
		if c.Watch > 0 {
			return wbcli.Usage(errors.New("--watch cannot re-read standard input"))
		}
		return c.fromStdin(e)
	}
	if c.Name != "" {
		if err := control.ValidName(c.Name); err != nil {
			return wbcli.Usage(err)
		}
	}
	if c.Watch == 0 {
		return c.once(e, e.stdout)
	}
	return c.watch(e)
}

// watch repeats once every c.Watch seconds until the context ends (Ctrl-C
// ends it quietly). On a terminal each frame replaces the last.
func (c *cli) watch(e *env) error {
	tty := wbcli.IsTerminal(e.stdout)
	interval := time.Duration(c.Watch * float64(time.Second))
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for frame := 0; ; frame++ {
		var b strings.Builder
		if tty {
			// Home the cursor, clear the screen, then a header like watch(1).
			fmt.Fprintf(&b, "\x1b[H\x1b[2JEvery %gs: %s %s\t%s\n\n", c.Watch, progName, c.Name, time.Now().Format(time.DateTime))
		} else if frame > 0 && !c.Raw && !c.Table && !c.JSON {
			b.WriteString("\n")
		}
		if err := c.once(e, &b); err != nil {
			return err
		}
		if _, err := io.WriteString(e.stdout, b.String()); err != nil {
			return err
		}
		select {
		case <-e.ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// once prints one report of the named volume, or of every volume.
func (c *cli) once(e *env, w io.Writer) error {
	if c.Name == "" {
		return c.list(e, w)
	}
	cl, err := control.Dial(c.Name)
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.Table {
		line, err := cl.Table()
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		_, err = fmt.Fprintln(w, line)
		return err
	}
	s, err := cl.Status()
	if err != nil {
		return fmt.Errorf("%s: %w", c.Name, err)
	}
	if s.Name == "" {
		s.Name = c.Name
	}
	return c.print(w, s, false)
}

// print writes one status in the chosen format; inList prefixes the raw
// line with "NAME: " as dmsetup does when it lists several devices.
func (c *cli) print(w io.Writer, s vocab.Status, inList bool) error {
	switch {
	case c.Raw:
		line := control.FormatStatusLine(s)
		if inList && s.Name != "" {
			line = s.Name + ": " + line
		}
		_, err := fmt.Fprintln(w, line)
		return err
	case c.JSON:
		return printJSON(w, s.Report())
	}
	return renderHuman(w, s)
}

// printJSON writes v as JSON on one line: an object for one volume, an
// array for a listing.
func printJSON(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

// list prints one line per running volume, like dmsetup status without a
// device. Stale state files are skipped by ListVolumes.
func (c *cli) list(e *env, w io.Writer) error {
	vols, err := control.ListVolumes(e.ctx, control.RunDir())
	if err != nil {
		return err
	}
	if len(vols) == 0 && !c.JSON {
		// A note for people, on stderr: stdout stays what scripts parse.
		_, err := fmt.Fprintln(e.stderr, "No volumes found")
		return err
	}
	var rows []vocab.Status
	reports := []vocab.StatusReport{} // --json: [] when none answers
	for _, st := range vols {
		if c.Table {
			if _, err := fmt.Fprintf(w, "%s: %s\n", st.Name, control.FormatTableLine(st.Table())); err != nil {
				return err
			}
			continue
		}
		s, err := statusOf(st)
		if err != nil {
			// It stopped between the listing and now: not running any more.
			continue
		}
		if c.JSON {
			reports = append(reports, s.Report())
			continue
		}
		if c.Raw {
			if err := c.print(w, s, true); err != nil {
				return err
			}
			continue
		}
		rows = append(rows, s)
	}
	if c.JSON {
		return printJSON(w, reports)
	}
	if len(rows) == 0 {
		return nil
	}
	return renderList(w, rows)
}

func statusOf(st control.State) (vocab.Status, error) {
	ctx, cancel := context.WithTimeout(context.Background(), control.DefaultTimeout)
	defer cancel()
	cl, err := control.DialPath(ctx, st.Control)
	if err != nil {
		return vocab.Status{}, err
	}
	defer cl.Close()
	s, err := cl.StatusContext(ctx)
	if err != nil {
		return s, err
	}
	if s.Name == "" {
		s.Name = st.Name
	}
	if s.Backing == "" {
		s.Backing, s.Cache = st.Backing, st.Cache
	}
	return s, nil
}

// fromStdin parses each non-empty line of standard input as a status line
// (a table line with --table) and prints it in the chosen format.
func (c *cli) fromStdin(e *env) error {
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 0, 4096), control.MaxLineLen)
	var parsed []vocab.Status
	n, tables := 0, 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || otherTarget(line) {
			continue
		}
		if c.Table {
			t, err := control.ParseTableLine(line)
			if err != nil {
				return fmt.Errorf("stdin line %d: %w", n, err)
			}
			out := control.FormatTableLine(t)
			if t.Name != "" {
				out = t.Name + ": " + out
			}
			if _, err := fmt.Fprintln(e.stdout, out); err != nil {
				return err
			}
			tables++
			continue
		}
		s, err := control.ParseStatusLine(line)
		if err != nil {
			return fmt.Errorf("stdin line %d: %w", n, err)
		}
		parsed = append(parsed, s)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	if c.Table {
		if tables == 0 {
			return errors.New("no writeboost table line on standard input")
		}
		return nil
	}
	if len(parsed) == 0 {
		return errors.New("no writeboost status line on standard input")
	}
	if c.JSON && len(parsed) > 1 {
		reports := make([]vocab.StatusReport, len(parsed))
		for i, s := range parsed {
			reports[i] = s.Report()
		}
		return printJSON(e.stdout, reports)
	}
	for i, s := range parsed {
		if i > 0 && !c.Raw && !c.JSON {
			fmt.Fprintln(e.stdout)
		}
		if err := c.print(e.stdout, s, len(parsed) > 1); err != nil {
			return err
		}
	}
	return nil
}

// otherTarget reports a "NAME: START LEN TYPE ..." line of another target
// type: `dmsetup status` without a device lists every device-mapper
// device, and only the writeboost ones are ours.
func otherTarget(line string) bool {
	f := strings.Fields(line)
	return len(f) >= 4 && strings.HasSuffix(f[0], ":") && f[3] != control.TargetName
}

func pct(num, den uint64) string {
	if den == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(num)/float64(den))
}

func u(v uint64) string { return strconv.FormatUint(v, 10) }

// renderHuman writes the labelled report of one volume: the ring and dirty
// blocks, the 16 counters as a grid, the tunables.
func renderHuman(w io.Writer, s vocab.Status) error {
	kv := wbcli.NewTable(w)
	kv.Header("Field", "Value")
	add := func(k, v string) { kv.Append(k, v) }
	if s.Name != "" {
		add("volume", s.Name)
	}
	if s.Backing != "" || s.Cache != "" {
		add("backing device", s.Backing)
		add("cache device", s.Cache)
	}
	if s.BackingUnreachable != "" {
		add("backing device unreachable", s.BackingUnreachable)
	}
	if s.SizeBytes != 0 {
		add("size", fmt.Sprintf("%s (%d sectors)", wbcli.HumanBytes(s.SizeBytes), s.Sectors()))
	}
	if s.NrClients != nil {
		add("NBD clients", u(*s.NrClients))
	}
	add("segments", fmt.Sprintf("%d (%d cache blocks, %s)", s.NrSegments, s.NrCacheBlocks, wbcli.HumanBytes(s.NrCacheBlocks*4096)))
	add("current id", fmt.Sprintf("%d (cursor %d)", s.CurrentID, s.CursorPos))
	add("last flushed id", u(s.LastFlushedID))
	behind := ""
	if s.LastFlushedID >= s.LastWritebackID {
		behind = fmt.Sprintf(" (%d segments behind)", s.LastFlushedID-s.LastWritebackID)
	}
	add("last written back id", u(s.LastWritebackID)+behind)
	add("dirty", fmt.Sprintf("%d blocks, %s, %s of the cache", s.NrDirtyCacheBlocks, wbcli.HumanBytes(s.NrDirtyCacheBlocks*4096), pct(s.NrDirtyCacheBlocks, s.NrCacheBlocks)))
	add("partial flushes", u(s.NrPartialFlushed))
	for _, write := range []bool{false, true} {
		r, n := s.HitRatio(write)
		op := "read"
		if write {
			op = "write"
		}
		hits := uint64(math.Round(r * float64(n)))
		add(op+" hit ratio", fmt.Sprintf("%s (%d of %d)", pct(hits, n), hits, n))
	}
	if s.Failed != "" {
		add("FAILED", s.Failed)
	}
	if s.WritebackError != "" {
		add("WRITEBACK FAILING", fmt.Sprintf("for %.0fs, %s dirty waits (retrying): %s", s.WritebackFailingSeconds,
			wbcli.HumanBytes(s.NrDirtyCacheBlocks*4096), s.WritebackError))
	}
	if s.LastDurableID != 0 {
		add("last durable id", u(s.LastDurableID))
	}
	if s.SuperblockRecordID != 0 {
		add("superblock record id", u(s.SuperblockRecordID))
	}
	if s.RAMBufferBytes != 0 || s.NrRAMBuffers != 0 {
		add("ram buffers", fmt.Sprintf("%d, %s not yet on the cache device", s.NrRAMBuffers, wbcli.HumanBytes(s.RAMBufferBytes)))
	}
	if s.WritebackAllowed != nil {
		state := "paused"
		if *s.WritebackAllowed {
			state = "allowed"
		}
		add("background writeback", fmt.Sprintf("%s (backing device %d%% busy)", state, s.BackingUtilPercent))
	}
	if s.WritebackBytes != 0 || s.WritebackBytesPerSec != 0 {
		add("written back", fmt.Sprintf("%s, now %s/s", wbcli.HumanBytes(s.WritebackBytes), wbcli.HumanBytes(s.WritebackBytesPerSec)))
	}
	if s.WriteAroundMode {
		add("write_around_mode", "1")
	}
	if s.NrReadCacheCells != 0 {
		add("nr_read_cache_cells", u(s.NrReadCacheCells))
	}
	if s.ReadCacheStaged != 0 {
		add("read cache staged", fmt.Sprintf("%d blocks", s.ReadCacheStaged))
	}
	if s.IndexBytes != 0 {
		add("index memory", wbcli.HumanBytes(s.IndexBytes))
	}
	if s.CacheIO != "" || s.BackingIO != "" {
		add("device I/O", fmt.Sprintf("cache %s, backing %s", orUnknown(s.CacheIO), orUnknown(s.BackingIO)))
	}
	if e := s.Errors; e != (vocab.IOErrors{}) {
		add("I/O errors", fmt.Sprintf("cache read %d, cache write %d, backing read %d, backing write %d, writeback batches %d",
			e.CacheRead, e.CacheWrite, e.BackingRead, e.BackingWrite, e.Writeback))
	}
	if s.UptimeSeconds != 0 {
		add("uptime", (time.Duration(s.UptimeSeconds) * time.Second).String())
	}
	if err := kv.Render(); err != nil {
		return err
	}

	// The counters: index = write<<3 | hit<<2 | on_buffer<<1 | fullsize.
	grid := wbcli.NewTable(w, tw.AlignLeft, tw.AlignLeft, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight)
	grid.Header("I/O", "Where", "Hit full", "Hit partial", "Miss full", "Miss partial")
	for _, write := range []bool{false, true} {
		for _, onBuffer := range []bool{true, false} {
			op, where := "read", "cache"
			if write {
				op = "write"
			}
			if onBuffer {
				where = "buffer"
			}
			grid.Append(op, where,
				u(s.Stat[vocab.StatIndex(write, true, onBuffer, true)]),
				u(s.Stat[vocab.StatIndex(write, true, onBuffer, false)]),
				u(s.Stat[vocab.StatIndex(write, false, onBuffer, true)]),
				u(s.Stat[vocab.StatIndex(write, false, onBuffer, false)]))
		}
	}
	if err := grid.Render(); err != nil {
		return err
	}

	tun := wbcli.NewTable(w, tw.AlignLeft, tw.AlignRight)
	tun.Header("Tunable", "Value")
	t := s.Tunables
	tun.Append("writeback_threshold", u(t.WritebackThreshold))
	tun.Append("nr_cur_batched_writeback", u(t.NrCurBatchedWriteback))
	if s.NrMaxBatchedWriteback != 0 {
		tun.Append("nr_max_batched_writeback", u(s.NrMaxBatchedWriteback))
	}
	tun.Append("sync_data_interval", u(t.SyncDataInterval))
	tun.Append("update_sb_record_interval", u(t.UpdateSBRecordInterval))
	tun.Append("read_cache_threshold", u(t.ReadCacheThreshold))
	return tun.Render()
}

// renderList writes one row per volume.
func renderList(w io.Writer, vols []vocab.Status) error {
	t := wbcli.NewTable(w, tw.AlignLeft, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft, tw.AlignLeft)
	t.Header("Name", "Size", "Clients", "Dirty", "Dirty %", "Current id", "Last flushed", "Last written back", "Backing", "Cache")
	for _, s := range vols {
		clients := "-"
		if s.NrClients != nil {
			clients = u(*s.NrClients)
		}
		t.Append(s.Name, wbcli.HumanBytes(s.SizeBytes), clients, u(s.NrDirtyCacheBlocks), pct(s.NrDirtyCacheBlocks, s.NrCacheBlocks),
			u(s.CurrentID), u(s.LastFlushedID), u(s.LastWritebackID), s.Backing, s.Cache)
	}
	return t.Render()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
