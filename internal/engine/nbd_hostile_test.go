package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// A hostile backing server (issue 15): the backing device is blockdev.NBD
// talking to an in-process server whose behaviour the test switches
// between correct and one way of breaking the protocol. While it misbehaves
// the engine treats the backing device as failed: writeback fails and is
// retried without moving last_writeback_id, reads of uncached data return
// an error, cached data stays readable; nothing panics. Switched back to
// correct, writeback resumes by itself and the export equals the volume,
// also after a restart from the cache.

// hostileMode is how the server answers.
type hostileMode int32

const (
	modeGood         hostileMode = iota
	modeWrongHandle              // a handle no request has
	modeBadMagic                 // a reply magic that is not the simple reply's
	modeStructured               // a structured reply, never negotiated
	modeShort                    // half a reply (half the read payload), then close
	modeOversized                // more bytes than the reply has: a payload after a write's reply, too long a read payload
	modeHugeOptReply             // at the handshake: an option reply of 4 GiB
	modeBadInfo                  // at the handshake: the export's size changed
)

var hostileModes = []struct {
	name string
	mode hostileMode
	// readFails: a read of uncached data fails in this mode (an
	// oversized read reply carries the right data first: the client
	// cannot tell, and the next reply fails).
	readFails bool
}{
	{"wrong handle", modeWrongHandle, true},
	{"bad magic", modeBadMagic, true},
	{"structured reply", modeStructured, true},
	{"short reply", modeShort, true},
	{"oversized reply", modeOversized, false},
	{"huge option reply", modeHugeOptReply, true},
	{"changed export", modeBadInfo, true},
}

// hostileNBD serves mem on a unix socket: NBD fixed newstyle, NBD_OPT_GO,
// simple replies; flags: flush and FUA.
type hostileNBD struct {
	mem  *blockdev.Mem
	mode atomic.Int32
	l    net.Listener
	mu   sync.Mutex
	conn map[net.Conn]bool
	wg   sync.WaitGroup
}

func startHostileNBD(t *testing.T, mem *blockdev.Mem) (*hostileNBD, string) {
	dir, err := os.MkdirTemp("", "wbh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	h := &hostileNBD{mem: mem, l: l, conn: map[net.Conn]bool{}}
	h.wg.Add(1)
	go h.accept()
	t.Cleanup(h.stop)
	return h, "nbd+unix:///x?socket=" + sock
}

// set switches the behaviour and drops every connection, as a server that
// restarts: the handshake modes need a new one.
func (h *hostileNBD) set(m hostileMode) {
	h.mode.Store(int32(m))
	h.mu.Lock()
	for c := range h.conn {
		c.Close()
	}
	h.mu.Unlock()
}

func (h *hostileNBD) get() hostileMode { return hostileMode(h.mode.Load()) }

func (h *hostileNBD) stop() {
	h.l.Close()
	h.mu.Lock()
	for c := range h.conn {
		c.Close()
	}
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *hostileNBD) accept() {
	defer h.wg.Done()
	for {
		nc, err := h.l.Accept()
		if err != nil {
			return
		}
		h.mu.Lock()
		h.conn[nc] = true
		h.mu.Unlock()
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.serve(nc)
			nc.Close()
			h.mu.Lock()
			delete(h.conn, nc)
			h.mu.Unlock()
		}()
	}
}

const (
	tMagicInit     = 0x4e42444d41474943
	tMagicOpt      = 0x49484156454F5054
	tMagicOptReply = 0x0003e889045565a9
	tMagicRequest  = 0x25609513
	tMagicReply    = 0x67446698
	tMagicStruct   = 0x668e33ef
)

func optReply(opt, typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, tMagicOptReply)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func (h *hostileNBD) serve(nc net.Conn) {
	var g []byte
	g = binary.BigEndian.AppendUint64(g, tMagicInit)
	g = binary.BigEndian.AppendUint64(g, tMagicOpt)
	g = binary.BigEndian.AppendUint16(g, 1|2) // fixed newstyle, no zeroes
	if _, err := nc.Write(g); err != nil {
		return
	}
	var cf [4]byte
	if _, err := io.ReadFull(nc, cf[:]); err != nil {
		return
	}
	for {
		var oh [16]byte
		if _, err := io.ReadFull(nc, oh[:]); err != nil {
			return
		}
		opt := binary.BigEndian.Uint32(oh[8:12])
		if _, err := io.CopyN(io.Discard, nc, int64(binary.BigEndian.Uint32(oh[12:16]))); err != nil {
			return
		}
		if opt != 7 { // only NBD_OPT_GO
			nc.Write(optReply(opt, 1<<31|1, nil))
			continue
		}
		size := h.mem.Size()
		switch h.get() {
		case modeHugeOptReply:
			b := optReply(opt, 3, nil)
			binary.BigEndian.PutUint32(b[16:20], 0xffffffff)
			nc.Write(b)
			return
		case modeBadInfo:
			size += 4096
		}
		info := binary.BigEndian.AppendUint16(nil, 0)
		info = binary.BigEndian.AppendUint64(info, uint64(size))
		info = binary.BigEndian.AppendUint16(info, 1|4|8) // has flags, flush, FUA
		nc.Write(optReply(opt, 3, info))
		if _, err := nc.Write(optReply(opt, 1, nil)); err != nil {
			return
		}
		break
	}
	for {
		var rq [28]byte
		if _, err := io.ReadFull(nc, rq[:]); err != nil {
			return
		}
		if binary.BigEndian.Uint32(rq[0:4]) != tMagicRequest {
			return
		}
		flags, typ := binary.BigEndian.Uint16(rq[4:6]), binary.BigEndian.Uint16(rq[6:8])
		handle := binary.BigEndian.Uint64(rq[8:16])
		off, n := int64(binary.BigEndian.Uint64(rq[16:24])), int64(binary.BigEndian.Uint32(rq[24:28]))
		var payload []byte
		var code uint32
		switch typ {
		case 0: // read
			payload = make([]byte, n)
			if _, err := h.mem.ReadAt(payload, off); err != nil {
				code, payload = 5, nil
			}
		case 1: // write: applied, whatever the reply then says
			p := make([]byte, n)
			if _, err := io.ReadFull(nc, p); err != nil {
				return
			}
			var err error
			if flags&1 != 0 {
				_, err = h.mem.WriteAtFUA(p, off)
			} else {
				_, err = h.mem.WriteAt(p, off)
			}
			if err != nil {
				code = 5
			}
		case 2: // disconnect
			return
		case 3: // flush
			if h.mem.Sync() != nil {
				code = 5
			}
		default:
			code = 22 // EINVAL
		}
		rep := binary.BigEndian.AppendUint32(nil, tMagicReply)
		rep = binary.BigEndian.AppendUint32(rep, code)
		rep = binary.BigEndian.AppendUint64(rep, handle)
		switch h.get() {
		case modeWrongHandle:
			binary.BigEndian.PutUint64(rep[8:16], handle^0xdead0000)
		case modeBadMagic:
			rep[0] ^= 0x10
		case modeStructured:
			binary.BigEndian.PutUint32(rep[0:4], tMagicStruct)
		case modeShort:
			if payload != nil {
				nc.Write(append(rep, payload[:len(payload)/2]...))
			} else {
				nc.Write(rep[:len(rep)/2])
			}
			return
		case modeOversized:
			payload = append(payload, bytes.Repeat([]byte{0x5a}, 4096)...)
		}
		if _, err := nc.Write(append(rep, payload...)); err != nil {
			return
		}
	}
}

func TestHostileNBDBacking(t *testing.T) {
	for _, hm := range hostileModes {
		t.Run(hm.name, func(t *testing.T) { testHostileNBDBacking(t, hm.mode, hm.readFails) })
	}
}

func testHostileNBDBacking(t *testing.T, mode hostileMode, readFails bool) {
	const backSize = 4 << 20
	backMem, cacheMem := blockdev.NewMem(backSize), blockdev.NewMem(cacheSize(8))
	if err := Format(cacheMem); err != nil {
		t.Fatal(err)
	}
	srv, uri := startHostileNBD(t, backMem)
	open := func() (*Volume, *blockdev.NBD) {
		t.Helper()
		back, err := blockdev.OpenNBD(context.Background(), uri, blockdev.NBDOptions{
			Timeout: 200 * time.Millisecond, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		v, err := Open(Config{Backing: back, Cache: cacheMem, Logger: testLogger(t)})
		if err != nil {
			back.Close()
			t.Fatal(err)
		}
		return v, back
	}
	v, back := open()
	closed := false
	defer func() {
		if !closed {
			srv.set(modeGood)
			v.Close()
			back.Close()
		}
	}()

	// The model: what the volume must read. The first half MiB is written
	// back while the server behaves; the rest of the writes stay dirty.
	model := make([]byte, backSize)
	rng := rand.New(rand.NewPCG(1, uint64(mode)))
	write := func(off, n int64, fua bool) {
		t.Helper()
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if err := v.WriteAt(p, off, fua); err != nil {
			t.Fatalf("write %d+%d: %v", off, n, err)
		}
		copy(model[off:], p)
	}
	write(0, 512<<10, false)
	if err := v.DropCaches(context.Background()); err != nil {
		t.Fatalf("writeback with a correct server: %v", err)
	}
	for i := range 64 {
		write(int64(rng.IntN(backSize/4096))*4096, 4096, i%8 == 0)
	}
	write(1<<20+512, 3*512, false) // a partial block: merged with the backing device's copy
	write(3<<20, 4096, false)      // a whole block: read from the cache alone
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}

	srv.set(mode)
	before := v.Status()
	// Writeback fails and is retried; last_writeback_id stays.
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err := v.DropCaches(ctx)
	cancel()
	if err == nil {
		t.Fatal("drop_caches succeeded against a hostile server")
	}
	s := v.Status()
	if s.Errors.Writeback == 0 || s.WritebackError == "" {
		t.Fatalf("no writeback error recorded: %d failed batches, error %q", s.Errors.Writeback, s.WritebackError)
	}
	t.Logf("writeback error: %s", s.WritebackError)
	if s.LastWritebackID != before.LastWritebackID || s.NrDirtyCacheBlocks != before.NrDirtyCacheBlocks {
		t.Fatalf("failed writeback moved last_writeback_id %d -> %d, dirty %d -> %d",
			before.LastWritebackID, s.LastWritebackID, before.NrDirtyCacheBlocks, s.NrDirtyCacheBlocks)
	}
	if ok, why := back.Reachable(); !ok {
		t.Logf("unreachable: %v", why)
	}
	// Cached data reads back; uncached data fails (never garbage).
	p := make([]byte, 4096)
	if err := v.ReadAt(p, 3<<20); err != nil || !bytes.Equal(p, model[3<<20:3<<20+4096]) {
		t.Fatalf("read of a dirty cached block: %v, data right: %v", err, bytes.Equal(p, model[3<<20:3<<20+4096]))
	}
	// A block partly in the cache needs the backing device's other sectors.
	if err := v.ReadAt(p, 1<<20); readFails && err == nil {
		t.Fatal("read of a partly cached block succeeded against a hostile server")
	}
	uncached := int64(backSize - 4096)
	for off := uncached; off > 0 && !bytes.Equal(model[off:off+4096], make([]byte, 4096)); off -= 4096 {
		uncached = off - 4096
	}
	err = v.ReadAt(p, uncached)
	switch {
	case readFails && err == nil:
		t.Fatal("read of uncached data succeeded against a hostile server")
	case err != nil:
		t.Logf("read of uncached data: %v", err)
	case err == nil && !bytes.Equal(p, model[uncached:uncached+4096]):
		t.Fatal("read of uncached data returned wrong data")
	}
	// Writes keep landing in the cache.
	write(2<<20, 8192, false)
	if err := v.Flush(); err != nil {
		t.Fatalf("flush with a hostile backing server: %v", err)
	}

	// The server behaves again: writeback resumes by itself and finishes.
	srv.set(modeGood)
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := v.DropCaches(ctx); err != nil {
		t.Fatalf("writeback after the server recovered: %v", err)
	}
	s = v.Status()
	if s.NrDirtyCacheBlocks != 0 || s.WritebackError != "" {
		t.Fatalf("after recovery: %d dirty, error %q", s.NrDirtyCacheBlocks, s.WritebackError)
	}
	check := func(what string, read func(p []byte, off int64) error) {
		t.Helper()
		got := make([]byte, backSize)
		for off := 0; off < backSize; off += 64 << 10 {
			if err := read(got[off:off+64<<10], int64(off)); err != nil {
				t.Fatalf("%s: read %d: %v", what, off, err)
			}
		}
		if !bytes.Equal(got, model) {
			for i := range got {
				if got[i] != model[i] {
					t.Fatalf("%s differs from the model at byte %d", what, i)
				}
			}
		}
	}
	check("volume", v.ReadAt)
	check("backing export", func(p []byte, off int64) error { _, err := backMem.ReadAt(p, off); return err })
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	back.Close()
	closed = true
	// The cache is intact: a restart reads the same volume.
	v, back = open()
	closed = false
	check("volume after restart", v.ReadAt)
}
