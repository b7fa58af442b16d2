// Command wb-message sends a message to a running writeboost volume, as
// `dmsetup message NAME 0 MESSAGE...` does for the kernel target.
//
//	wb-message NAME [SECTOR] MESSAGE [ARGS...]
//
// The messages: the dynamic tunables (vocab's table; --help lists them)
// with a value in the kernel's range; clear_stat;
// drop_caches, which waits until no cache block is dirty and shows
// progress; flush, which seals and writes the RAM buffer; remove
// [--no-writeback] [--force], which stops the volume cleanly. A remove
// without --force is refused while NBD clients are connected, as dmsetup
// remove refuses an open device; the volume decides, and says how many.
// SECTOR, if given, must be 0, as dmsetup requires it and the kernel target
// ignores it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

const progName = "wb-message"

// exitInterrupted is the shell's status for a command stopped by SIGINT.
const exitInterrupted = 130

// Polling cadence of drop_caches progress; tests shorten them.
var (
	pollInterval = 250 * time.Millisecond
	lineInterval = time.Second // plain progress lines, at most this often
)

type cli struct {
	Quiet   bool     `short:"q" help:"Print no progress while drop_caches waits."`
	Name    string   `arg:"" predictor:"volume" help:"Volume name."`
	Message []string `arg:"" passthrough:"" predictor:"message" help:"[SECTOR] MESSAGE [ARGS...]: one of ${tunables}, clear_stat, drop_caches, flush, remove [--no-writeback] [--force] (refused while NBD clients are connected, unless --force). SECTOR must be 0 if given."`

	wbcli.Common `embed:""`
}

type env struct {
	ctx    context.Context
	stdout io.Writer
	stderr io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// errInterrupted reports that the context ended (Ctrl-C) while waiting.
var errInterrupted = errors.New("interrupted")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c cli
	kctx, code, done := wbcli.Parse(progName, "Send a message to a writeboost volume (dmsetup message for the kernel target).",
		&c, args, stdout, stderr, 2, kong.Vars{"tunables": dynamicTunables()},
		wbcli.Predictors{"volume": control.VolumeNames, "message": vocab.MessageWords})
	if done {
		return code
	}
	err := kctx.Run(&env{ctx: ctx, stdout: stdout, stderr: stderr})
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errInterrupted):
		fmt.Fprintf(stderr, "%s: %s\n", progName, wbcli.ErrorText(err.Error()))
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "%s: %s\n", progName, wbcli.ErrorText(err.Error()))
	if wbcli.IsUsage(err) {
		return 2
	}
	return 1
}

// dynamicTunables lists the tunables a message may set, from the one
// table: "writeback_threshold N (0..100), ...".
func dynamicTunables() string {
	var list []string
	for _, t := range vocab.Tunables() {
		if !t.Spec().Static {
			list = append(list, t.String()+" N ("+t.Range()+")")
		}
	}
	return strings.Join(list, ", ")
}

// Run validates the message, then sends it.
func (c *cli) Run(e *env) error {
	if err := control.ValidName(c.Name); err != nil {
		return wbcli.Usage(err)
	}
	words, err := messageWords(c.Message)
	if err != nil {
		return err
	}
	m, err := vocab.ParseMessage(words)
	if err != nil {
		return wbcli.Usage(err)
	}
	cl, err := control.Dial(c.Name)
	if err != nil {
		return err
	}
	defer cl.Close()
	if m.Kind == vocab.MsgDropCaches {
		return c.dropCaches(e, cl)
	}
	res, err := cl.Message(e.ctx, m)
	if err != nil {
		if e.ctx.Err() != nil {
			return fmt.Errorf("%w: stopped waiting for %s", errInterrupted, m.Verb())
		}
		return withVerb(m.Verb(), err)
	}
	if res != "" {
		_, err = fmt.Fprintln(e.stdout, res)
	}
	return err
}

// withVerb prefixes err with the message's verb, unless the volume's
// answer already starts with it ("remove refused: ...").
func withVerb(verb string, err error) error {
	if msg := err.Error(); strings.HasPrefix(msg, verb+" ") || strings.HasPrefix(msg, verb+":") {
		return err
	}
	return fmt.Errorf("%s: %w", verb, err)
}

// dropCaches sends drop_caches on cl and, until it returns, polls status
// on a second connection to show the dirty blocks left. Ctrl-C cancels the
// context: cl's connection closes, which stops the server-side wait and
// leaves the volume as it was (writeback goes on at its normal pace).
func (c *cli) dropCaches(e *env, cl *control.Client) error {
	poll, err := control.Dial(c.Name)
	if err != nil {
		return err
	}
	defer poll.Close()
	s, err := poll.StatusContext(e.ctx)
	if err != nil {
		return fmt.Errorf("drop_caches: status: %w", err)
	}
	var p progress = nopProgress{}
	if !c.Quiet {
		if wbcli.IsTerminal(e.stderr) {
			p = newBarProgress(e.stderr, s.NrDirtyCacheBlocks)
		} else {
			p = &lineProgress{w: e.stderr, start: time.Now(), total: s.NrDirtyCacheBlocks, last: s.NrDirtyCacheBlocks}
			p.update(s.NrDirtyCacheBlocks, true)
		}
	}

	// The message goroutine ends when drop_caches returns or, on Ctrl-C,
	// as soon as cl's connection is closed; we always wait for it.
	done := make(chan error, 1)
	go func() {
		_, err := cl.Message(e.ctx, vocab.Message{Kind: vocab.MsgDropCaches})
		done <- err
	}()
	finished := false
	defer func() {
		if !finished {
			cl.Close() // cancels the server-side wait and ends the goroutine
			<-done
		}
	}()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			finished = true
			if e.ctx.Err() != nil {
				p.abort()
				next := "writeback continues at its normal pace (writeback_threshold " + strconv.FormatUint(s.Tunables.WritebackThreshold, 10) + ")"
				if s.Tunables.WritebackThreshold == 0 {
					next = "writeback stops: with writeback_threshold 0 it runs only when the ring needs a free segment"
				}
				return fmt.Errorf("%w: stopped waiting for drop_caches; the volume goes on, %s", errInterrupted, next)
			}
			if err != nil {
				p.abort()
				return fmt.Errorf("drop_caches: %w", err)
			}
			p.finish()
			return nil
		case <-t.C:
			s, err := poll.StatusContext(e.ctx)
			if err != nil {
				if e.ctx.Err() != nil {
					continue // the message goroutine reports the interrupt
				}
				return fmt.Errorf("drop_caches: status: %w", err)
			}
			p.update(s.NrDirtyCacheBlocks, false)
		}
	}
}

// progress shows how many dirty blocks are left.
type progress interface {
	update(dirty uint64, force bool)
	finish()
	abort()
}

type nopProgress struct{}

func (nopProgress) update(uint64, bool) {}
func (nopProgress) finish()             {}
func (nopProgress) abort()              {}

// barProgress is a progress bar for a terminal: the dirty data written
// back of what there was, in bytes, with the rate and the time left.
type barProgress struct {
	bar *wbcli.Bar
	max uint64 // dirty blocks at the start, or the most seen since
}

func newBarProgress(w io.Writer, dirty uint64) *barProgress {
	p := &barProgress{bar: wbcli.NewBar(w, progName, "drop_caches: writing back", "blocks", layout.BlockSize), max: max(dirty, 1)}
	p.update(dirty, true)
	return p
}

func (p *barProgress) update(dirty uint64, _ bool) {
	// New writes can dirty more blocks than there were at the start.
	p.max = max(p.max, dirty)
	p.bar.Update(int64(p.max-dirty), int64(p.max))
}

func (p *barProgress) finish() { p.bar.Update(int64(p.max), int64(p.max)) }

func (p *barProgress) abort() { p.bar.Done() }

// lineProgress prints plain lines, for logs and pipes: on change, at most
// once per lineInterval, and always the first and the last.
type lineProgress struct {
	w       io.Writer
	start   time.Time
	total   uint64 // dirty blocks at the start
	last    uint64
	printed time.Time
}

func (p *lineProgress) update(dirty uint64, force bool) {
	now := time.Now()
	if !force && (dirty == p.last || now.Sub(p.printed) < lineInterval) {
		return
	}
	p.last, p.printed = dirty, now
	line := fmt.Sprintf("drop_caches: %d dirty blocks left (%s)", dirty, wbcli.HumanBytes(dirty*layout.BlockSize))
	if el := now.Sub(p.start).Seconds(); el > 0 && p.total > dirty {
		rate := float64(p.total-dirty) / el
		eta := time.Duration(float64(dirty) / rate * float64(time.Second)).Round(time.Second)
		line += fmt.Sprintf(", %.0f blocks/s (%s/s), ETA %v", rate, wbcli.HumanBytes(uint64(rate*layout.BlockSize)), eta)
	}
	fmt.Fprintln(p.w, line)
}

func (p *lineProgress) finish() {
	fmt.Fprintf(p.w, "drop_caches: done, no dirty blocks left (%v)\n", time.Since(p.start).Round(time.Millisecond))
}

func (p *lineProgress) abort() {}

// messageWords drops what may precede the message: dmsetup message's
// sector (0: a writeboost volume is one target starting at sector 0),
// and a dm table's count of the words that follow ("2
// writeback_threshold 50"), in that order, each at most once. Another
// leading number is a usage error saying what it could have been.
func messageWords(words []string) ([]string, error) {
	if len(words) > 0 && words[0] == "0" {
		words = words[1:]
	}
	if len(words) == 0 {
		return words, nil
	}
	if _, err := strconv.ParseUint(words[0], 10, 64); err != nil {
		return words, nil
	}
	if n, _ := strconv.ParseUint(words[0], 10, 64); n == uint64(len(words)-1) {
		return words[1:], nil
	}
	return nil, wbcli.Usagef("sector %s: a writeboost volume is one target starting at sector 0; give 0 or no sector (as a dm table's count of the words that follow it would be %d)",
		words[0], len(words)-1)
}
