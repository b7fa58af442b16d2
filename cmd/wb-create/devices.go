package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/check"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/probe"
)

// openDevices opens BACKING and CACHE for the volume and formats CACHE if
// --reformat asks. First it refuses the pairs an admin gets wrong, each
// with a line saying what is wrong, and nothing written to either device:
//
//   - BACKING and CACHE share storage: the same file or device under two
//     names, one a partition or a loop device of the other (never
//     overridden);
//   - CACHE without the magic and no --reformat: said as "not formatted",
//     but a CACHE holding a file system or other signature is named as
//     such, and no command that would destroy it is suggested;
//   - BACKING a writeboost cache device (swapped arguments, most likely);
//   - CACHE larger than BACKING (swapped arguments again);
//   - --reformat of a CACHE that holds a foreign signature, or that cannot
//     be probed (wipefs missing).
//
// In that order: what CACHE holds says more than its size. --force
// overrides all but the first and the second. Exclusive opens refuse a device in
// use by another volume, under whatever name (blockdev's locks). A BACKING
// given as an NBD URI is opened by openNetDevices (backing_uri.go).
func (cli *CLI) openDevices(ctx context.Context, log *slog.Logger) (backing blockdev.Device, cache *blockdev.File, err error) {
	if blockdev.IsURI(cli.Backing) {
		return cli.openNetDevices(ctx, log)
	}
	bid, err := blockdev.Identify(cli.Backing)
	if err != nil {
		return nil, nil, wbcli.PathError("backing device", cli.Backing, err)
	}
	cid, err := blockdev.Identify(cli.Cache)
	if err != nil {
		return nil, nil, wbcli.PathError("cache device", cli.Cache, err)
	}
	if ok, why := blockdev.Overlap(bid, cid); ok {
		return nil, nil, fmt.Errorf("BACKING %s and CACHE %s share storage (%s): the cache must be another device", cli.Backing, cli.Cache, why)
	}

	devOpts := cli.fileOptions(log)
	backing, err = blockdev.OpenFile(cli.Backing, devOpts)
	if err != nil {
		return nil, nil, openError(ctx, "backing device", cli.Backing, err)
	}
	cache, err = blockdev.OpenFile(cli.Cache, cli.cacheOptions(log))
	if err != nil {
		backing.Close()
		return nil, nil, openError(ctx, "cache device", cli.Cache, err)
	}
	if err := cli.refuse(ctx, backing, cache, log); err != nil {
		cache.Close()
		backing.Close()
		return nil, nil, err
	}
	return backing, cache, nil
}

// fileOptions is how BACKING and CACHE files are opened.
func (cli *CLI) fileOptions(log *slog.Logger) blockdev.FileOptions {
	io, _ := blockdev.ParseIOEngine(cli.IOEngine) // kong checked the enum
	return blockdev.FileOptions{Direct: !cli.NoDirect, Exclusive: true, IO: io, Logger: log}
}

// cacheOptions is fileOptions for CACHE, whose read hits are asynchronous
// reads.
func (cli *CLI) cacheOptions(log *slog.Logger) blockdev.FileOptions {
	o := cli.fileOptions(log)
	o.AsyncReads = true
	return o
}

// refuse runs the checks that read the devices, then formats CACHE if
// --reformat asks.
func (cli *CLI) refuse(ctx context.Context, backing blockdev.Device, cache *blockdev.File, log *slog.Logger) error {
	backingIsCache, err := check.IsCache(backing)
	if err != nil {
		return fmt.Errorf("backing device %s: %w", cli.Backing, err)
	}
	cacheIsCache, err := check.IsCache(cache)
	if err != nil {
		return fmt.Errorf("cache device %s: %w", cli.Cache, err)
	}
	if !cacheIsCache && !cli.Reformat {
		return cli.notFormatted(ctx, backing)
	}
	if backingIsCache && !cli.Force {
		return fmt.Errorf("BACKING %s is a writeboost cache device (the magic in sector 0): are BACKING and CACHE swapped? (--force uses it as the backing device, over its log)", cli.Backing)
	}
	// NB: an empty BACKING is the engine's to refuse, with its own words.
	if bs, cs := backing.Size(), cache.Size(); !cli.Force && bs > 0 && cs > bs {
		return fmt.Errorf("CACHE %s (%s) is larger than BACKING %s (%s): are BACKING and CACHE swapped? (--force starts anyway)",
			cli.Cache, wbcli.HumanBytes(uint64(cs)), cli.Backing, wbcli.HumanBytes(uint64(bs)))
	}
	if !cli.Reformat {
		return nil
	}
	opts := check.FormatOptions{Force: true} // --reformat forgets every cached block
	if !cli.Force {
		opts.Foreign = func() ([]probe.Signature, error) {
			sigs, err := probe.Device(ctx, cli.Cache)
			if err != nil {
				return nil, probeError{err}
			}
			return sigs, nil
		}
	}
	log.Info("formatting the cache device", "cache", cli.Cache)
	_, err = check.Format(cache, opts)
	var foreign *check.ForeignError
	var pe probeError
	switch {
	case errors.As(err, &foreign):
		return fmt.Errorf("refusing to format CACHE %s: it holds %s (are BACKING and CACHE swapped?); if that data is not needed, erase it first with wipefs -a %s, or add --force",
			cli.Cache, probe.Describe(foreign.Signatures), cli.Cache)
	case errors.Is(err, probe.ErrNoTool):
		return fmt.Errorf("refusing to format CACHE %s: cannot look for file systems and other signatures on it: wipefs not found (Debian package %s); install it, or add --force", cli.Cache, probe.Package)
	case errors.As(err, &pe):
		return fmt.Errorf("refusing to format CACHE %s: cannot look for file systems and other signatures on it (%v); add --force to format without looking", cli.Cache, pe.err)
	case err != nil:
		return fmt.Errorf("format %s: %w", cli.Cache, err)
	}
	return nil
}

// notFormatted says why a CACHE without the magic is refused. A command
// that formats it is suggested only when the probe found nothing on it and
// BACKING is not a cache device: otherwise the arguments are likely
// swapped, and formatting would destroy what CACHE holds. (Both suggested
// commands probe CACHE again before they write.)
func (cli *CLI) notFormatted(ctx context.Context, backing blockdev.Device) error {
	sigs, perr := probe.Device(ctx, cli.Cache)
	backingIsCache, _ := check.IsCache(backing)
	switch {
	case perr == nil && len(sigs) > 0 && backingIsCache:
		return fmt.Errorf("cache device %s is not a writeboost cache: it holds %s, and BACKING %s is a writeboost cache device: BACKING and CACHE look swapped; nothing was written",
			cli.Cache, probe.Describe(sigs), cli.Backing)
	case perr == nil && len(sigs) > 0:
		return fmt.Errorf("cache device %s is not a writeboost cache: it holds %s: are BACKING and CACHE swapped? Nothing was written", cli.Cache, probe.Describe(sigs))
	case backingIsCache:
		return fmt.Errorf("cache device %s is not formatted, but BACKING %s is a writeboost cache device: are BACKING and CACHE swapped? Nothing was written", cli.Cache, cli.Backing)
	}
	return fmt.Errorf("cache device %s is not formatted: format it with wb-format-cache %s, or start with --reformat", cli.Cache, cli.Cache)
}

// probeError is an error of the signature probe: nothing was looked at.
type probeError struct{ err error }

func (e probeError) Error() string { return e.err.Error() }
func (e probeError) Unwrap() error { return e.err }

// openError says why role (the backing or cache device) at path did not
// open; a device in use names the volume that holds it, where a live
// volume's pid is one of the holders.
func openError(ctx context.Context, role, path string, err error) error {
	var be *blockdev.BusyError
	if !errors.As(err, &be) {
		return wbcli.PathError(role, path, err)
	}
	control.NameHolders(ctx, control.RunDir(), be)
	return fmt.Errorf("%s %s: %s", role, path, be.Detail())
}
