package main

import (
	"fmt"

	wbcli "github.com/writeboost/writeboost/internal/cli"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/superblock"
)

// binding checks that CACHE belongs to BACKING, before the engine replays
// anything onto BACKING: a cache's dirty blocks written to another device
// corrupt it, and the right one can then never be rescued. It returns the
// binding to record once the volume is open (nil: CACHE is bound to
// BACKING already). A cache without a binding (formatted, or run by the
// kernel target) is accepted; one bound elsewhere, or whose binding record
// is damaged, is refused unless --force, which rebinds it.
func (cli *CLI) binding(cache, backing blockdev.Device) (*superblock.Binding, error) {
	want, err := superblock.BindingOfDevice(cli.Backing, backing)
	if err != nil {
		return nil, wbcli.PathError("backing device", cli.Backing, err)
	}
	area, err := superblock.Read(cache)
	if err != nil {
		return nil, fmt.Errorf("cache device %s: %w", cli.Cache, err)
	}
	switch {
	case !area.Formatted:
		return &want, nil // the engine refuses it with its own words
	case area.BindingErr != nil && !cli.Force:
		return nil, fmt.Errorf("cache device %s: its binding record is damaged (%v), so which backing device it belongs to is unknown: wb-check %s shows the log; --force binds it to %s",
			cli.Cache, area.BindingErr, cli.Cache, want)
	case area.Binding == nil || area.BindingErr != nil:
		return &want, nil
	}
	if ok, why := area.Binding.Matches(want); !ok {
		if !cli.Force {
			return nil, fmt.Errorf("cache device %s belongs to %s, not to BACKING %s: %s. Start it with its own backing device; --force replays its dirty blocks onto %s and binds it there",
				cli.Cache, area.Binding, want, why, cli.Backing)
		}
		return &want, nil
	}
	if *area.Binding != want {
		return &want, nil // the same device, renamed or renumbered: record what it is now
	}
	return nil, nil
}
