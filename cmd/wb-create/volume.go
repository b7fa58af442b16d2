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

// Status converts the engine's snapshot to the control socket's.
func (v *volume) Status() control.Status {
	e := v.Volume.Status()
	t := e.Tunables
	allowed := e.WritebackAllowed
	s := control.Status{
		Name: v.name, Backing: v.backing, Cache: v.cache, SizeBytes: uint64(e.VolumeBytes),
		CursorPos: e.CursorPos, NrCacheBlocks: e.NrCacheBlocks, NrSegments: e.NrSegments,
		CurrentID: e.CurrentID, LastFlushedID: e.LastFlushedID, LastWritebackID: e.LastWritebackID,
		NrDirtyCacheBlocks: e.NrDirtyCacheBlocks, Stat: e.Stat, NrPartialFlushed: e.NrPartialFlushed,
		Tunables: control.StatusTunables{
			WritebackThreshold: uint64(t[vocab.WritebackThreshold]),
			// NB: the kernel prints its current batch size here; this engine
			// always batches up to the maximum.
			NrCurBatchedWriteback:  uint64(t[vocab.NrMaxBatchedWriteback]),
			SyncDataInterval:       uint64(t[vocab.SyncDataInterval]),
			UpdateSBRecordInterval: uint64(t[vocab.UpdateSBRecordInterval]),
			ReadCacheThreshold:     uint64(t[vocab.ReadCacheThreshold]),
		},
		NrMaxBatchedWriteback: uint64(t[vocab.NrMaxBatchedWriteback]),
		WriteAroundMode:       t[vocab.WriteAroundMode] != 0,
		NrReadCacheCells:      uint64(t[vocab.NrReadCacheCells]),
		LastDurableID:         e.LastDurableID,
		SuperblockRecordID:    e.SuperblockRecordID,
		NrRAMBuffers:          uint64(e.NrRAMBuffers),
		RAMBufferBytes:        uint64(e.RAMBufferBytes),
		WritebackBytes:        uint64(e.WritebackBytes),
		WritebackBytesPerSec:  uint64(e.WritebackRate),
		WritebackAllowed:      &allowed,
		BackingUtilPercent:    uint64(e.BackingUtilPercent),
		ReadCacheStaged:       e.ReadCacheStaged,
		IndexBytes:            uint64(e.IndexBytes),
		Errors: control.IOErrors{
			CacheRead: e.CacheReadErrors, CacheWrite: e.CacheWriteErrors,
			BackingRead: e.BackingReadErrors, BackingWrite: e.BackingWriteErrors,
			Writeback: e.WritebackErrors,
		},
		Failed:        e.Failed,
		UptimeSeconds: time.Since(v.start).Seconds(),
	}
	n := uint64(v.clients())
	s.NrClients = &n
	return s
}
