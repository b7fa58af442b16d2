// Command wb-format-cache formats a block device or a regular file as a
// writeboost cache device, with the on-disk layout of dm-writeboost 2.x:
// it zeroes the superblock and every segment header, syncs, then writes
// the magic into sector 0 and syncs again. It prints the geometry.
//
//	wb-format-cache [--force] [--quiet] [--backing BACKING] CACHE
//
// It refuses, with a one-line reason and the device untouched, a device
// smaller than 1 MiB + 512 KiB, one it cannot open for writing, one in use
// (under any name: a loop device over it, a partition of it), and, unless
// --force, a device that is not a cache device and holds a file system,
// partition table or other signature that util-linux's wipefs finds (or
// when wipefs is missing), and a cache device whose log holds dirty blocks
// or damage.
//
// Exit status: 0 formatted; 1 refused or failed; 2 a usage error.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"time"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"golang.org/x/term"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/probe"
	"github.com/writeboost/writeboost/internal/superblock"
)

const progName = "wb-format-cache"

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// barAfter is how long a format runs before its progress bar shows; tests
// shorten it.
var barAfter = time.Second

type cli struct {
	Force   bool   `help:"Format even a device that holds a file system, partition table or other signature (as wipefs lists them), or without looking when wipefs (util-linux) is missing, or a cache device whose log holds dirty blocks or damage: that data is lost (wb-check --writeback BACKING saves a log's dirty blocks first)."`
	Quiet   bool   `short:"q" help:"Print nothing but errors: no geometry, no progress bar."`
	Backing string `help:"Bind the cache to this backing device (recorded in the superblock area; without it, the first wb-create binds it): a start or an offline writeback with another backing device is then refused. It must exist and must not share storage with CACHE; an NBD URI (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH, nbds://...) is asked for its size." placeholder:"BACKING"`
	Cache   string `arg:"" help:"The device to format: a block device or a regular file (at least 1 MiB + 512 KiB)." placeholder:"CACHE"`

	wbcli.Common `embed:""`
}

// env carries the process's streams into Run; stderrTTY says whether
// stderr is a terminal (the progress bar's condition).
type env struct {
	stdout, stderr io.Writer
	stderrTTY      bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, term.IsTerminal(int(os.Stderr.Fd()))))
}

// run is main without the process: it parses args, runs, and returns the
// exit status.
func run(args []string, stdout, stderr io.Writer, stderrTTY bool) int {
	var c cli
	kctx, code, done := wbcli.Parse(progName, "Format a block device or a file as a writeboost cache device (dm-writeboost 2.x layout).",
		&c, args, stdout, stderr, exitUsage)
	if done {
		return code
	}
	if err := kctx.Run(&env{stdout: stdout, stderr: stderr, stderrTTY: stderrTTY}); err != nil {
		fmt.Fprintf(stderr, "%s: %s: %s\n", progName, c.Cache, wbcli.ErrorText(err.Error()))
		return exitFailed
	}
	return exitOK
}

// Run formats the device.
func (c *cli) Run(e *env) error {
	st, err := os.Stat(c.Cache)
	if err != nil {
		return errors.New(fault(err))
	}
	if st.IsDir() {
		return errors.New("is a directory")
	}
	var bind *superblock.Binding
	if c.Backing != "" && blockdev.IsURI(c.Backing) {
		b, err := bindURI(c.Backing) // a URI never shares storage with CACHE
		if err != nil {
			return fmt.Errorf("--backing %s: %w", c.Backing, err)
		}
		bind = &b
	} else if c.Backing != "" {
		bid, err := blockdev.Identify(c.Backing)
		if err != nil {
			return wbcli.PathError("--backing", c.Backing, err)
		}
		cid, err := blockdev.Identify(c.Cache)
		if err != nil {
			return err
		}
		if ok, why := blockdev.Overlap(bid, cid); ok {
			return fmt.Errorf("--backing %s shares storage with the cache (%s): the cache must be another device", c.Backing, why)
		}
		b := superblock.BindingOf(bid)
		bind = &b
	}
	dev, err := blockdev.OpenFile(c.Cache, blockdev.FileOptions{Direct: true, Exclusive: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return errors.New(fault(err))
	}
	defer dev.Close()

	opts := check.FormatOptions{Force: c.Force}
	if !c.Force {
		opts.Foreign = func() ([]probe.Signature, error) {
			sigs, err := probe.Device(context.Background(), c.Cache)
			if err != nil {
				return nil, probeError{err}
			}
			return sigs, nil
		}
	}
	if !c.Quiet && e.stderrTTY {
		bar := wbcli.NewBar(e.stderr, progName, "zeroing segment headers", "segments", 0)
		bar.After = barAfter
		opts.Progress = bar.Update
		defer bar.Done() // a failed format: before its error is printed
	}
	g, err := check.Format(dev, opts)
	var foreign *check.ForeignError
	var pe probeError
	switch {
	case errors.Is(err, layout.ErrTooSmall):
		return fmt.Errorf("too small: %d bytes, a cache device needs at least %d (1 MiB + 512 KiB)", dev.Size(), layout.MinDeviceSize)
	case errors.Is(err, check.ErrDirty):
		return fmt.Errorf("refusing to format: %s", strings.TrimPrefix(err.Error(), "check: "))
	case errors.As(err, &foreign):
		return fmt.Errorf("refusing to format: it holds %s; if that data is not needed, erase it first with wipefs -a %s, or pass --force",
			probe.Describe(foreign.Signatures), c.Cache)
	case errors.Is(err, probe.ErrNoTool):
		return fmt.Errorf("refusing to format: cannot look for file systems and other signatures on it: wipefs not found (Debian package %s); install it, or pass --force", probe.Package)
	case errors.As(err, &pe):
		return fmt.Errorf("refusing to format: cannot look for file systems and other signatures on it (%v); pass --force to format without looking", pe.err)
	case err != nil:
		return errors.New(fault(err))
	}
	if bind != nil {
		if err := superblock.WriteBinding(dev, *bind); err != nil {
			return errors.New(fault(err))
		}
	}
	if err := dev.Close(); err != nil {
		return errors.New(fault(err))
	}
	if c.Quiet {
		return nil
	}
	_, err = fmt.Fprintf(e.stdout, "formatted: %s\nsegments: %d\ncache_blocks: %d\nusable_bytes: %d (%s)\n",
		c.Cache, g.NrSegments, g.NrCacheBlocks(), g.UsableBytes(), wbcli.HumanBytes(uint64(g.UsableBytes())))
	if err == nil && bind != nil {
		_, err = fmt.Fprintf(e.stdout, "bound_to: %s\n", bind)
	}
	return err
}

// probeError is an error of the signature probe: nothing was looked at.
type probeError struct{ err error }

func (e probeError) Error() string { return e.err.Error() }
func (e probeError) Unwrap() error { return e.err }

// fault names what went wrong in a few words: the errno of a failed open
// ("permission denied" says the device is not writable), else the error.
func fault(err error) string {
	var errno syscall.Errno
	var pe *fs.PathError
	var busy *blockdev.BusyError
	switch {
	case errors.As(err, &pe) && errors.As(err, &errno):
		switch errno {
		case syscall.EACCES, syscall.EPERM, syscall.EROFS:
			return "not writable: " + errno.Error()
		}
		return errno.Error()
	case errors.As(err, &busy):
		control.NameHolders(context.Background(), control.RunDir(), busy)
		return busy.Detail()
	case errors.Is(err, blockdev.ErrBusy):
		return "in use (held exclusively by another program, such as a running writeboost volume)"
	case errors.Is(err, blockdev.ErrNotSupported):
		return "not a regular file or block device"
	}
	return err.Error()
}

// bindURI connects to the NBD export uri names for its size, and returns
// the binding naming it.
func bindURI(uri string) (superblock.Binding, error) {
	d, err := blockdev.OpenNBD(context.Background(), uri, blockdev.NBDOptions{ReadOnly: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return superblock.Binding{}, err
	}
	defer d.Close()
	return superblock.BindingOfDevice(uri, d)
}
