package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/vocab"
)

// Config is what Open needs.
type Config struct {
	Backing, Cache blockdev.Device
	Logger         *slog.Logger // nil: discard
	// Tunables are the kernel's optional arguments by id, validated with
	// the kernel's ranges; missing ones take the defaults.
	Tunables vocab.Values
	// NrRAMBuffers is the number of rambufs (0: defaultRAMBuffers, 16;
	// at most 256). Whatever the number, at most flightWindow (32)
	// segments are ever written but not synced.
	NrRAMBuffers int
	// WriteWaitLimit bounds how long a write waits for a free segment
	// while writeback is failing: then it fails with writeback's error
	// (ENOSPC of a full backing device reaches the client as ENOSPC).
	// 0: wait as long as it takes, as the kernel does. Either way a
	// waiting writer logs every spaceLogEvery.
	WriteWaitLimit time.Duration
	// ReplayProgress, if set, is called as replay reads the log: done of
	// total segments read (from Open's goroutine; a progress bar). It
	// replaces the progress lines replay logs once a second otherwise.
	ReplayProgress func(done, total uint64)
}

// Daemon timings; variables so that tests can shorten them.
var (
	modulatorInterval = time.Second
	writebackBackoff  = 100 * time.Millisecond // first retry delay after a failed writeback
	// writebackBatchTime bounds a writeback batch by time as well as by
	// nr_max_batched_writeback, from the rate measured on earlier batches.
	writebackBatchTime = time.Second
	// spaceLogEvery is how often a writer waiting for a free segment, and
	// a failing writeback, say so in the log.
	spaceLogEvery = 10 * time.Second
)

// defaultRAMBuffers is 16 (8 MiB), twice the kernel's nr_rambuf_pool
// default: with 32 segments allowed in flight (flightWindow), 16 let
// writers go on while segments are written and synced. Measured (issue 16,
// 1 MiB sequential writes QD4 through NBD, 3 GiB ring, 3 runs of 3 rounds):
// 2061-2340 MB/s with 16 against 1834-2165 with 8, the device's own 512 KiB
// writes at QD8 doing 2100-2251; 4 KiB random writes at QD32 147-156k
// against 142-149k; at QD1 alike.
const defaultRAMBuffers = 16

// maxRAMBuffers bounds Config.NrRAMBuffers (512 KiB each).
const maxRAMBuffers = 256

// Volume is one cached volume: a backing device fronted by a cache device
// holding a dm-writeboost log. All methods are safe for concurrent use.
type Volume struct {
	cache   blockdev.Device
	fuaDev  blockdev.FUAWriter // cache, when it takes FUA writes (nil: write, then Sync)
	backing *timedDevice       // the backing device, with busy-time accounting for the modulator
	log     *slog.Logger
	geo     layout.Geometry
	size    int64 // volume size: backing size rounded down to 512
	nrSeg   uint64
	tun     tunables
	stats   stats

	// mu guards the metadata, grouped by concern below; every use reads
	// v.mu.X, so the lock shows where it is needed. It is never held
	// across device I/O. The ordering of the id counters is written in
	// invariants.go and checked there in tests.
	mu struct {
		sync.Mutex

		// The index, and per ring slot: the id of the segment that owns
		// it (0: none), its rambuf while the segment is in RAM, readers
		// pinning its data on the cache device, whether a header with a
		// good checksum may sit there on the device (so it must be
		// zeroed before the slot is rewritten), and the newest segment
		// holding a copy that replaced one kept in idx.superseded (once
		// that segment is durable, none of them is owed any more: the
		// durable-copy rule, writeback.go; 0: none).
		idx          *index
		segIDs       []uint64
		slotRB       []*rambuf
		pins         []int32
		hdrLive      []bool
		supersededBy []uint64

		// The RAM buffers.
		rambufs []*rambuf // all of them, for status
		free    []*rambuf // rambufs not holding a segment
		open    *rambuf   // the segment accepting writes (nil: none yet)
		flushQ  []*rambuf // sealed segments, id order, not yet handed to a write

		// The ids (invariants.go).
		nextID       uint64 // id the next opened segment gets
		lastSealed   uint64 // newest sealed segment
		lastWritten  uint64 // every segment up to this id is written to the cache device
		durable      uint64 // every segment up to this id is synced on the cache device
		lastWB       uint64 // every segment up to this id is written back (last_writeback_id)
		recorded     uint64 // superblock record last written
		replayedLast uint64 // newest segment of the log replay found (its last_flushed_id)

		// Flushes and cache syncs (group commit, syncCacheLocked).
		// fuaTarget is the newest segment a Flush waits to be durable:
		// when it goes to the device with every earlier segment durable,
		// one FUA write replaces the write and the sync.
		fuaTarget       uint64
		syncing         bool
		flushLeader     bool // a Flush is sealing and syncing for everyone
		bgSync          bool // the flusher started a backgroundSync that has not finished
		syncsStarted    uint64
		syncsDone       uint64
		backingUnsynced bool // write-around writes since the last backing sync

		// The daemons' conditions and the volume's state.
		urgentWB  int  // writers waiting for a free slot, DropCaches callers
		drainWB   int  // the DropCaches callers among urgentWB (writebackLookaheadLocked)
		allowWB   bool // the modulator's verdict
		wbFailing bool // the last writeback batch failed
		// wbErr is why (its error) and wbFailSince since when, while
		// wbFailing.
		wbErr       error
		wbFailSince time.Time
		failErr     error
		closing     bool
		stopping    bool // daemons must exit

		// The read cache cells (readcache.go).
		rc readCache
	}
	// cond (on mu) is broadcast whenever a daemon's or a flush's
	// condition may have changed: a segment sealed, written or written
	// back, a sync done, a pin dropped, a failure, a tunable changed,
	// closing. spaceCond (on mu) is where writers wait for a free rambuf
	// or ring slot (ensureOpenLocked), broadcast only when one may have
	// been freed (wakeWritersLocked). NB: with 32 requests in flight,
	// waking every blocked writer for every seal and sync, as one shared
	// cond did, made the scheduler and the lock the bottleneck.
	cond      *sync.Cond
	spaceCond *sync.Cond

	// opsMu is read-held by every request in flight (cheap atomics); Close
	// write-locks it to wait for them, after setting closed so that no new
	// one starts.
	opsMu  sync.RWMutex
	closed atomic.Bool

	rmwMu sync.Mutex // serialises unaligned read-modify-write requests

	// stageBufs holds spare segment-sized buffers for WriteFrom's stages
	// (writefrom.go); stageSwaps and stageCopies count the stages it
	// committed by a buffer swap and by copying (tests).
	stageBufs               chan []byte
	stageSwaps, stageCopies atomic.Uint64

	// daemons
	cancel    context.CancelFunc
	group     *errgroup.Group
	segWrites sync.WaitGroup // segment writes started by the flusher

	writeWaitLimit     time.Duration // Config.WriteWaitLimit
	modulatorInterval  time.Duration // 1s; tests shorten it
	writebackBatchTime time.Duration // what one writeback batch should take at most (writebackDaemon)
	writebackBackoff   time.Duration // first retry delay after a failed writeback
	writebackLookahead int           // segments the planner may look at beyond a batch (wbLookahead; tests change it)
	afterWriteback     func()        // tests: called by the writeback daemon after each batch lands, mu not held

	replayProgress func(done, total uint64) // Config.ReplayProgress
	replayTook     time.Duration            // how long replay took; set once, before Open returns
}

// Open replays the log of cfg.Cache and returns the volume, with its
// daemons running. It refuses an unformatted cache (ErrNotFormatted), a
// damaged log (ErrDamaged, naming the first problem), and write-around mode
// on a log holding any valid segment (ErrNotFresh).
func Open(cfg Config) (*Volume, error) {
	if cfg.Backing == nil || cfg.Cache == nil {
		return nil, fmt.Errorf("engine: open: backing and cache devices are required")
	}
	v := &Volume{
		cache:              cfg.Cache,
		backing:            &timedDevice{Device: cfg.Backing},
		log:                cfg.Logger,
		writeWaitLimit:     cfg.WriteWaitLimit,
		replayProgress:     cfg.ReplayProgress,
		modulatorInterval:  modulatorInterval,
		writebackBatchTime: writebackBatchTime,
		writebackBackoff:   writebackBackoff,
		writebackLookahead: wbLookahead,
		stageBufs:          make(chan []byte, stageSpares),
	}
	v.fuaDev, _ = cfg.Cache.(blockdev.FUAWriter)
	if v.log == nil {
		v.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	v.cond = sync.NewCond(&v.mu.Mutex)
	v.spaceCond = sync.NewCond(&v.mu.Mutex)
	if err := v.tun.init(cfg.Tunables); err != nil {
		return nil, fmt.Errorf("engine: open: %w", err)
	}
	v.size = cfg.Backing.Size() &^ (layout.SectorSize - 1)
	if v.size == 0 {
		return nil, fmt.Errorf("%w: %d bytes", ErrEmptyBacking, cfg.Backing.Size())
	}
	geo, err := layout.NewGeometry(cfg.Cache.Size())
	if err != nil {
		return nil, fmt.Errorf("engine: open cache: %w", err)
	}
	if geo.NrCacheBlocks() >= uint64(emptySlot) {
		return nil, fmt.Errorf("%w: %d cache blocks", ErrTooLarge, geo.NrCacheBlocks())
	}
	v.geo, v.nrSeg = geo, geo.NrSegments
	v.mu.idx = newIndex(geo.NrCacheBlocks())
	v.mu.segIDs = make([]uint64, v.nrSeg)
	v.mu.slotRB = make([]*rambuf, v.nrSeg)
	v.mu.pins = make([]int32, v.nrSeg)
	v.mu.hdrLive = make([]bool, v.nrSeg)
	v.mu.supersededBy = make([]uint64, v.nrSeg)
	replayStart := time.Now()
	if err := v.replay(); err != nil {
		return nil, err
	}
	v.replayTook = time.Since(replayStart)
	n := cfg.NrRAMBuffers
	if n <= 0 {
		n = defaultRAMBuffers
	}
	// More rambufs than the torn window is fine: the flusher limits what
	// is unsynced on the device; extra rambufs only let writers go on
	// while a window sync runs.
	n = min(n, maxRAMBuffers)
	for range n {
		rb := newRambuf()
		v.mu.rambufs = append(v.mu.rambufs, rb)
		v.mu.free = append(v.mu.free, rb)
	}
	v.mu.rc.init(int(v.tun.get(vocab.NrReadCacheCells)))
	v.start()
	return v, nil
}

// ReplayTime is how long Open took to replay the log (reading it, and
// writing back the pieces only older copies held).
func (v *Volume) ReplayTime() time.Duration { return v.replayTook }

// Size is the volume size in bytes: the backing size rounded down to 512.
func (v *Volume) Size() int64 { return v.size }

// start launches the daemons under one errgroup; Close cancels and waits.
func (v *Volume) start() {
	ctx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	g, ctx := errgroup.WithContext(ctx)
	v.group = g
	g.Go(func() error { v.flusher(); return nil })
	g.Go(func() error { v.writebackDaemon(ctx); return nil })
	g.Go(func() error { v.modulator(ctx); return nil })
	g.Go(func() error { v.sbRecordUpdater(ctx); return nil })
	g.Go(func() error { v.dataSynchronizer(ctx); return nil })
}

// beginOp registers an I/O request; Close waits for every registered one.
func (v *Volume) beginOp() error {
	v.opsMu.RLock()
	if v.closed.Load() {
		v.opsMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (v *Volume) endOp() { v.opsMu.RUnlock() }

// Close finishes in-flight I/O, seals and writes the open rambuf, stops the
// daemons, records the superblock and syncs both devices. It does not close
// the devices: they belong to the caller.
func (v *Volume) Close() error {
	v.mu.Lock()
	if v.mu.closing {
		v.mu.Unlock()
		return ErrClosed
	}
	v.mu.closing = true
	v.closed.Store(true)
	v.wakeWritersLocked()
	v.mu.Unlock()
	v.opsMu.Lock() // every request in flight is done; none starts any more
	defer v.opsMu.Unlock()

	ferr := v.flush()

	v.mu.Lock()
	v.mu.stopping = true
	v.wakeWritersLocked()
	v.mu.Unlock()
	v.cancel()
	_ = v.group.Wait()
	v.segWrites.Wait()

	v.mu.Lock()
	failed := v.mu.failErr
	v.mu.Unlock()
	if ferr != nil || failed != nil {
		// Record nothing: the log is what it is; replay will sort it out.
		return fmt.Errorf("engine: close: %w", firstErr(ferr, failed))
	}
	if err := v.writeCleanStop(); err != nil {
		return fmt.Errorf("engine: close: %w", err)
	}
	// Nothing relies on this last sync: every writeback batch, the replay
	// pieces and write-around writes (through flush above) were synced
	// before last_writeback_id moved or the write was acknowledged. A
	// backing device that is unreachable now (a network disk) must not
	// turn a clean stop into a failed one: the cache holds everything.
	if err := v.backing.Sync(); err != nil {
		v.stats.backingWriteErrors.Add(1)
		v.log.Warn("close: sync backing device failed; nothing depends on it (every writeback batch was synced), the cache holds all data", "err", err)
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// fail makes err sticky: the cache device lost a segment write, so no
// later FLUSH can be honoured. Caller holds mu.
func (v *Volume) failLocked(err error) {
	if v.mu.failErr == nil {
		v.mu.failErr = fmt.Errorf("%w: %w", ErrFailed, err)
		v.log.Error("cache device failed; the volume refuses further writes", "err", err)
	}
	v.wakeWritersLocked()
}

// wakeWritersLocked wakes the writers waiting for a free rambuf or ring
// slot, and everyone on cond. Caller holds mu.
func (v *Volume) wakeWritersLocked() {
	v.cond.Broadcast()
	v.spaceCond.Broadcast()
}

// waitCtx waits on cond until ctx is done; caller holds mu and re-checks
// its condition. It reports ctx.Err().
func (v *Volume) waitCtx(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		v.mu.Lock()
		v.cond.Broadcast()
		v.mu.Unlock()
	})
	v.cond.Wait()
	stop()
	return ctx.Err()
}
