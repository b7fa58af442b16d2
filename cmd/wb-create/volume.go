package main

import (
	"context"
	"fmt"
	"time"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/engine"
	"github.com/writeboost/writeboost/internal/vocab"
)

// volume adapts the engine to the control socket.
type volume struct {
	*engine.Volume
	name, backing, cache string
	args                 []string // the optional KEY VALUE args as given
	start                time.Time
	removed              chan bool  // a remove message: true = without writeback
	clients              func() int // NBD connections open now (services.clients)
}

// Table is the table line, as `dmsetup table` prints it.
func (v *volume) Table() string {
	return control.FormatTableLine(control.TableLine{Name: v.name, SizeBytes: uint64(v.Size()), Backing: v.backing, Cache: v.cache, Args: v.args})
}

// Message carries out a message validated by vocab.ParseMessage.
func (v *volume) Message(ctx context.Context, m vocab.Message) (string, error) {
	switch m.Kind {
	case vocab.MsgSetTunable:
		// Like dmsetup message, a tunable set says nothing.
		return "", v.SetTunable(m.Tunable, m.Value)
	case vocab.MsgClearStat:
		v.ClearStat()
		return "", nil
	case vocab.MsgFlush:
		return "", v.FlushBuffer()
	case vocab.MsgDropCaches:
		return "", v.DropCaches(ctx)
	case vocab.MsgRemove:
		if !m.NoWriteback {
			if err := v.DropCaches(ctx); err != nil {
				return "", fmt.Errorf("remove: write back: %w", err)
			}
		} else if err := v.FlushBuffer(); err != nil {
			return "", fmt.Errorf("remove: flush: %w", err)
		}
		// The control server refused it if clients were connected when it
		// arrived; one may have connected during the writeback. NB: one
		// that connects between here and the stop is disconnected by it,
		// as by SIGTERM.
		if err := control.RefuseRemove(m, v.name, uint64(v.clients())); err != nil {
			return "", err
		}
		select {
		case v.removed <- m.NoWriteback:
		default: // a remove is already under way
		}
		return "removing " + v.name, nil
	}
	return "", fmt.Errorf("unhandled message %q", m.Args())
}

// Status is the engine's snapshot and what only wb-create knows: the
// name, the devices as given, the uptime and the NBD clients.
func (v *volume) Status() vocab.Status {
	s := v.Volume.Status()
	s.Name, s.Backing, s.Cache = v.name, v.backing, v.cache
	s.BackingUnreachable = backingUnreachable() // backing_uri.go
	s.UptimeSeconds = time.Since(v.start).Seconds()
	n := uint64(v.clients())
	s.NrClients = &n
	return s
}
