// Command wb-check checks a writeboost cache device offline, with the
// engine stopped, like fsck(8): it validates the superblock, every segment
// header, checksum and metablock, runs the replay walk, and says what a
// start would recover. It is read-only unless --writeback is given, which
// writes every dirty sector back to the backing device and marks the log
// written back (offline recovery).
//
//	wb-check [--segments] [--segment ID] [--json] [--backing PATH|SIZE]
//	         [--writeback BACKING [--dry-run] [--force]] CACHE
//
// Exit status: 0 consistent; 1 only a torn tail, as a power cut leaves,
// which replay discards safely; 4 damage that loses or risks data; 8 an
// operational error (cannot open, read or write); 16 a usage error.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/olekukonko/tablewriter/tw"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/superblock"
)

const progName = "wb-check"

type cli struct {
	Segments  bool   `help:"Add a table of every segment: slot, id, length, dirty blocks, state."`
	Segment   uint64 `help:"Show the header and metablocks of the segment with this id." placeholder:"ID"`
	JSON      bool   `name:"json" help:"Print one JSON object instead of the human summary."`
	Backing   string `help:"The backing device, by PATH, NBD URI or by SIZE in bytes (suffixes K, M, G, T, P; S for 512-byte sectors): every metablock must lie inside it." placeholder:"PATH|URI|SIZE"`
	Writeback string `help:"Offline recovery: write every dirty sector of the log to the backing device BACKING (a path, or an NBD URI: nbd://HOST[:PORT]/EXPORT, nbds://..., nbd+unix:///EXPORT?socket=PATH), sync it, then record the newest valid segment id in the superblock record, so that the cache holds no dirty block. Refused on damage unless --force." placeholder:"BACKING"`
	NoFlushOK bool   `name:"backing-no-flush-ok" help:"With an NBD URI as BACKING: accept a server that offers no flush, because its export has no volatile write cache."`
	DryRun    bool   `name:"dry-run" help:"With --writeback: say what would be written (cache blocks, sectors, merged writes, bytes) and write nothing."`
	Force     bool   `help:"With --writeback: write back what the valid prefix of a damaged log holds, and say what is lost; and write back to a backing device the cache is not bound to."`
	Cache     string `arg:"" help:"The cache device: a block device or an image file." placeholder:"CACHE"`

	wbcli.Common `embed:""`
}

// env carries the process's streams into Run.
type env struct {
	stdout, stderr io.Writer
}

// exitError ends Run with an exit status, and a message when msg is set.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it parses args, runs, and returns the
// exit status.
func run(args []string, stdout, stderr io.Writer) int {
	var c cli
	kctx, code, done := wbcli.Parse(progName, "Check a writeboost cache device offline, and write its dirty blocks back (--writeback).",
		&c, args, stdout, stderr, check.ExitUsage)
	if done {
		return code
	}
	err := kctx.Run(&env{stdout: stdout, stderr: stderr})
	var ee *exitError
	switch {
	case err == nil:
		return check.ExitOK
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "%s: %s\n", progName, wbcli.ErrorText(ee.msg))
		}
		return ee.code
	default:
		fmt.Fprintf(stderr, "%s: %s\n", progName, wbcli.ErrorText(err.Error()))
		return check.ExitOperational
	}
}

// fail returns an exitError naming the device.
func fail(code int, dev string, format string, args ...any) error {
	return &exitError{code: code, msg: dev + ": " + fmt.Sprintf(format, args...)}
}

// fault names what went wrong with a device in a few words: the errno of
// a failed open or read ("no such file or directory"), else the error.
func fault(err error) string {
	var busy *blockdev.BusyError
	if errors.As(err, &busy) {
		control.NameHolders(context.Background(), control.RunDir(), busy)
		return busy.Detail()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		var pe *fs.PathError
		if errors.As(err, &pe) || errors.Is(err, blockdev.ErrBusy) {
			return errno.Error()
		}
	}
	switch {
	case errors.Is(err, blockdev.ErrBusy):
		return "in use (held exclusively by another program, such as a running writeboost volume)"
	case errors.Is(err, blockdev.ErrNotSupported):
		return "not a regular file or block device"
	}
	return err.Error()
}

// quiet discards blockdev's one-line notes (O_DIRECT fallback).
var quiet = slog.New(slog.DiscardHandler)

// open opens a device, with the faults wb-check reports for a path.
func open(path string, opts blockdev.FileOptions) (*blockdev.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, errors.New(fault(err))
	}
	if st.IsDir() {
		return nil, errors.New("is a directory")
	}
	opts.Logger = quiet
	d, err := blockdev.OpenFile(path, opts)
	if err != nil {
		return nil, errors.New(fault(err))
	}
	return d, nil
}

// schema is the version of the JSON object (output): adding a key keeps
// it; renaming or removing one, or changing a value's meaning, bumps it.
const schema = 1

// output is the JSON object: the report, and what the options added.
type output struct {
	Schema int    `json:"schema"`
	Device string `json:"device"`
	check.Report
	Segment   *check.SegmentDetail `json:"segment,omitempty"`
	Writeback *writebackOut        `json:"writeback,omitempty"`
}

type writebackOut struct {
	Backing    string `json:"backing"`
	DryRun     bool   `json:"dry_run"`
	Blocks     int64  `json:"blocks"`
	Sectors    int64  `json:"sectors"`
	Bytes      int64  `json:"bytes"`
	Writes     int    `json:"writes"`
	Skipped    int64  `json:"skipped_sectors"`
	RecordedID uint64 `json:"recorded_id"`
	Forced     bool   `json:"forced"`
}

// Run carries out the check.
func (c *cli) Run(e *env) error {
	if c.Force && c.Writeback == "" {
		return &exitError{code: check.ExitUsage, msg: "--force needs --writeback"}
	}
	if c.DryRun && c.Writeback == "" {
		return &exitError{code: check.ExitUsage, msg: "--dry-run needs --writeback"}
	}
	var opts check.Options
	if c.Backing != "" {
		size, err := c.backingSize(c.Backing)
		if err != nil {
			return err
		}
		opts.BackingSize = size
	}
	writing := c.Writeback != "" && !c.DryRun
	cache, err := open(c.Cache, blockdev.FileOptions{ReadOnly: !writing, Direct: true, Exclusive: writing})
	if err != nil {
		return fail(check.ExitOperational, c.Cache, "%v", err)
	}
	defer cache.Close()

	var backing blockdev.Device
	if c.Writeback != "" {
		backing, err = c.openBacking(c.Writeback, !writing)
		if err != nil {
			return fail(check.ExitOperational, c.Writeback, "%v", err)
		}
		defer backing.Close()
		if opts.BackingSize == 0 {
			opts.BackingSize = backing.Size()
		}
	}

	scan := wbcli.NewProgress(e.stderr, progName, "reading segments", "segments", 0)
	opts.Progress = scan.Update
	r, err := check.Check(cache, cache.Size(), opts)
	scan.Done()
	if err != nil {
		return fail(check.ExitOperational, c.Cache, "%s", fault(err))
	}
	out := output{Schema: schema, Device: c.Cache, Report: r.Report}
	if c.Segments {
		r.FillSegments()
		out.Report.Segments = r.Report.Segments
	}
	if c.Segment != 0 {
		d, err := r.Segment(c.Segment)
		if err != nil {
			return fail(check.ExitUsage, c.Cache, "no segment with id %d in the log", c.Segment)
		}
		out.Segment = d
	}

	var wbErr error
	if c.Writeback != "" {
		out.Writeback, wbErr = c.writeback(cache, backing, r, e.stderr)
	}
	if c.JSON {
		enc := json.NewEncoder(e.stdout)
		if err := enc.Encode(out); err != nil {
			return err
		}
	} else if err := printHuman(e.stdout, &out); err != nil {
		return err
	}
	if wbErr != nil {
		return wbErr
	}
	if code := r.Report.ExitStatus; code != check.ExitOK {
		return &exitError{code: code}
	}
	return nil
}

// writeback runs --writeback; the error carries the exit status.
func (c *cli) writeback(cache *blockdev.File, backing blockdev.Device, r *check.Result, stderr io.Writer) (*writebackOut, error) {
	rep := r.Report
	if !rep.Formatted {
		return nil, fail(check.ExitDamaged, c.Cache, "not a formatted cache device: nothing to write back")
	}
	if r.Damaged() && !c.Force {
		return nil, fail(check.ExitDamaged, c.Cache, "refusing to write back a damaged log: %s; --force writes back what its valid prefix holds", rep.Problems[0])
	}
	// The dirty blocks belong to the backing device the cache is bound to:
	// written to another, they corrupt it and the right one can never be
	// rescued.
	if b := r.Log.Super.Binding; b != nil && !c.Force {
		want, err := superblock.BindingOfDevice(c.Writeback, backing)
		if err != nil {
			return nil, fail(check.ExitOperational, c.Writeback, "%v", err)
		}
		if ok, why := b.Matches(want); !ok {
			return nil, fail(check.ExitUsage, c.Cache, "belongs to %s, not to %s: %s; write it back to its own backing device, or add --force", b, c.Writeback, why)
		}
	}
	p := wbcli.NewProgress(stderr, progName, "writing back", "sectors", layout.SectorSize)
	res, err := check.Writeback(cache, backing, r, check.WritebackOptions{Force: c.Force, DryRun: c.DryRun, Progress: p.Update})
	p.Done()
	if err != nil {
		return nil, fail(check.ExitOperational, c.Cache, "writeback to %s: %s", c.Writeback, fault(err))
	}
	return &writebackOut{Backing: c.Writeback, DryRun: c.DryRun, Blocks: res.Blocks, Sectors: res.Sectors,
		Bytes: res.Sectors * layout.SectorSize, Writes: res.Writes, Skipped: res.Skipped,
		RecordedID: res.RecordedID, Forced: c.Force && r.Damaged()}, nil
}

// backingSize reads --backing: a size when it parses as one, else a path.
func (c *cli) backingSize(arg string) (int64, error) {
	if arg[0] >= '0' && arg[0] <= '9' {
		if n, err := check.ParseSize(arg); err == nil {
			if n <= 0 {
				return 0, &exitError{code: check.ExitUsage, msg: fmt.Sprintf("--backing %s: the size must be positive", arg)}
			}
			return n, nil
		}
	}
	if _, err := os.Stat(arg); err != nil && arg[0] >= '0' && arg[0] <= '9' {
		return 0, &exitError{code: check.ExitUsage, msg: fmt.Sprintf("--backing %s: neither a size (bytes, or a number with K, M, G, T, P or S) nor a device", arg)}
	}
	d, err := c.openBacking(arg, true)
	if err != nil {
		return 0, fail(check.ExitOperational, arg, "%v", err)
	}
	defer d.Close()
	return d.Size(), nil
}

// openBacking opens a backing device by path (exclusively when writing) or
// NBD URI.
func (c *cli) openBacking(name string, readOnly bool) (blockdev.Device, error) {
	if blockdev.IsURI(name) {
		return blockdev.OpenNBD(context.Background(), name, blockdev.NBDOptions{ReadOnly: readOnly, NoFlushOK: c.NoFlushOK, Logger: quiet})
	}
	return open(name, blockdev.FileOptions{ReadOnly: readOnly, Exclusive: !readOnly})
}

// maxListed caps the ids and problems the human summary lists.
const maxListed = 20

func idList(ids []uint64) string {
	if len(ids) == 0 {
		return "none"
	}
	var b strings.Builder
	for i, id := range ids {
		if i == maxListed {
			fmt.Fprintf(&b, " ... (%d more)", len(ids)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(strconv.FormatUint(id, 10))
	}
	return b.String()
}

func cleanStop(last *uint64) string {
	if last == nil {
		return "no (after a crash, a kernel run, or never started since the format)"
	}
	return fmt.Sprintf("yes, after segment %d: a checksum failure up to it is damage", *last)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printHuman prints the summary as `key: value` lines (the keys are the
// JSON names), then the tables the options asked for.
func printHuman(w io.Writer, o *output) error {
	r := &o.Report
	torn := "none"
	if r.TornSegmentID != nil {
		torn = strconv.FormatUint(*r.TornSegmentID, 10)
	}
	lines := [][2]string{
		{"device", o.Device},
		{"device_size", fmt.Sprintf("%d (%s)", r.DeviceSize, wbcli.HumanBytes(uint64(r.DeviceSize)))},
		{"formatted", yesNo(r.Formatted)},
	}
	if r.BackingSize > 0 {
		lines = append(lines, [2]string{"backing_size", fmt.Sprintf("%d (%s)", r.BackingSize, wbcli.HumanBytes(uint64(r.BackingSize)))})
	}
	if r.Formatted {
		u := func(n uint64) string { return strconv.FormatUint(n, 10) }
		lines = append(lines, [][2]string{
			{"nr_segments", u(r.NrSegments)},
			{"nr_cache_blocks", u(r.NrCacheBlocks)},
			{"superblock_record", u(r.SuperblockRecord)},
			{"max_id", u(r.MaxID)},
			{"last_flushed_id", u(r.LastFlushedID)},
			{"last_writeback_id", u(r.LastWritebackID)},
			{"valid_segments", strconv.Itoa(r.ValidSegments)},
			{"torn_segment_id", torn},
			{"corrupt_segment_ids", idList(r.CorruptSegmentIDs)},
			{"discarded_segment_ids", idList(r.DiscardedSegmentIDs)},
			{"nr_dirty_blocks", strconv.Itoa(r.NrDirtyBlocks)},
			{"nr_dirty_sectors", strconv.FormatInt(r.NrDirtySectors, 10)},
			{"clean_stop", cleanStop(r.CleanStopLastID)},
			{"binding", cmp.Or(r.Binding, "none (not bound: formatted, or run by the kernel target)")},
		}...)
		if r.NrLostDirtyBlocks > 0 {
			lines = append(lines, [2]string{"nr_lost_dirty_blocks", strconv.Itoa(r.NrLostDirtyBlocks)})
		}
	}
	lines = append(lines, [2]string{"status", r.Status})
	for i, p := range r.Problems {
		if i == maxListed {
			lines = append(lines, [2]string{"problem", fmt.Sprintf("... and %d more (--json lists all)", len(r.Problems)-maxListed)})
			break
		}
		lines = append(lines, [2]string{"problem", p})
	}
	if wb := o.Writeback; wb != nil && wb.DryRun {
		lines = append(lines, [2]string{"writeback_dry_run", fmt.Sprintf("would write %d sectors (%d cache blocks, %s) in %d merged writes to %s; nothing written",
			wb.Sectors, wb.Blocks, wbcli.HumanBytes(uint64(wb.Bytes)), wb.Writes, wb.Backing)})
	} else if wb != nil {
		lines = append(lines,
			[2]string{"writeback", fmt.Sprintf("%d sectors (%d cache blocks, %s) in %d writes to %s", wb.Sectors, wb.Blocks, wbcli.HumanBytes(uint64(wb.Bytes)), wb.Writes, wb.Backing)},
			[2]string{"writeback_recorded_id", strconv.FormatUint(wb.RecordedID, 10)})
		if wb.Skipped > 0 {
			lines = append(lines, [2]string{"writeback_skipped_sectors", fmt.Sprintf("%d (past the backing device's end)", wb.Skipped)})
		}
		if wb.Forced {
			lines = append(lines, [2]string{"writeback_lost", fmt.Sprintf("%d blocks with dirty data in the segments after %d (corrupt_segment_ids, discarded_segment_ids)",
				r.NrLostDirtyBlocks, r.LastFlushedID)})
		}
	}
	for _, l := range lines {
		if _, err := fmt.Fprintf(w, "%s: %s\n", l[0], l[1]); err != nil {
			return err
		}
	}
	if len(r.Segments) > 0 {
		fmt.Fprintln(w)
		t := wbcli.NewTable(w, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft)
		t.Header("Slot", "ID", "Length", "Dirty blocks", "State")
		for _, s := range r.Segments {
			t.Append(strconv.FormatUint(s.Slot, 10), strconv.FormatUint(s.ID, 10), strconv.Itoa(s.Length),
				strconv.Itoa(s.DirtyBlocks), s.State)
		}
		if err := t.Render(); err != nil {
			return err
		}
	}
	if d := o.Segment; d != nil {
		fmt.Fprintf(w, "\nsegment: %d\nslot: %d\nchecksum: %#08x (%s)\nlength: %d\nstate: %s\n",
			d.ID, d.Slot, d.Checksum, map[bool]string{true: "ok", false: "mismatch"}[d.ChecksumOK], d.Length, d.State)
		if len(d.Metablocks) > 0 {
			fmt.Fprintln(w)
			t := wbcli.NewTable(w, tw.AlignRight, tw.AlignRight, tw.AlignRight, tw.AlignLeft, tw.AlignLeft)
			t.Header("Index", "Sector", "Block", "Dirty bits", "Newest")
			for _, m := range d.Metablocks {
				t.Append(strconv.Itoa(m.Index), strconv.FormatUint(m.Sector, 10),
					strconv.FormatUint(m.Sector/layout.SectorsPerBlock, 10), fmt.Sprintf("%08b", m.DirtyBits), yesNo(m.Newest))
			}
			if err := t.Render(); err != nil {
				return err
			}
		}
	}
	return nil
}
