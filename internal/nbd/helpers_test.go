package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memBackend is a test-only in-memory Backend. It counts calls, can fail
// chosen operations, and can hold requests at a gate to keep them in flight.
type memBackend struct {
	mu   sync.Mutex // protects data
	data []byte

	reads, writes, fuaWrites, flushes, trims, zeroes atomic.Int64

	failWith atomic.Pointer[error] // when set, every operation fails with it

	gate    chan struct{} // when non-nil, operations wait until it is closed
	entered chan struct{} // when non-nil, each operation sends here before the gate

	// inline is what WritesInline answers: whether small writes without
	// FUA are served on the connection goroutine (see InlineWriter).
	inline bool
}

func (m *memBackend) WritesInline() bool { return m.inline }

func newMem(size int) *memBackend { return &memBackend{data: make([]byte, size)} }

func (m *memBackend) Size() int64 { return int64(len(m.data)) }

func (m *memBackend) enter() error {
	if m.entered != nil {
		m.entered <- struct{}{}
	}
	if m.gate != nil {
		<-m.gate
	}
	if p := m.failWith.Load(); p != nil {
		return *p
	}
	return nil
}

func (m *memBackend) check(off, n int64) error {
	if off < 0 || n < 0 || off+n > int64(len(m.data)) {
		return fmt.Errorf("mem: range %d+%d outside %d bytes: %w", off, n, len(m.data), errOutOfRange)
	}
	return nil
}

var errOutOfRange = errors.New("out of range")

func (m *memBackend) ReadAt(p []byte, off int64) error {
	m.reads.Add(1)
	if err := m.enter(); err != nil {
		return err
	}
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(p, m.data[off:])
	return nil
}

func (m *memBackend) WriteAt(p []byte, off int64, fua bool) error {
	m.writes.Add(1)
	if fua {
		m.fuaWrites.Add(1)
	}
	if err := m.enter(); err != nil {
		return err
	}
	if err := m.check(off, int64(len(p))); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	return nil
}

func (m *memBackend) Flush() error {
	m.flushes.Add(1)
	return m.enter()
}

func (m *memBackend) Trim(off, n int64) error {
	m.trims.Add(1)
	if err := m.enter(); err != nil {
		return err
	}
	if err := m.check(off, n); err != nil {
		return err
	}
	// Trimmed data reads back as zeroes here; the protocol allows anything.
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

func (m *memBackend) WriteZeroes(off, n int64, fua bool) error {
	m.zeroes.Add(1)
	if err := m.enter(); err != nil {
		return err
	}
	if err := m.check(off, n); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	clear(m.data[off : off+n])
	return nil
}

func (m *memBackend) snapshot() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return bytes.Clone(m.data)
}

// testServer is a server on a unix socket in a short temp dir (socket paths
// are limited to 108 bytes, which t.TempDir can exceed).
type testServer struct {
	srv    *Server
	sock   string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t testing.TB, exports []Export, opts Options) *testServer {
	t.Helper()
	return startServerWrapped(t, exports, opts, nil)
}

// startServerWrapped is startServer with the listener wrapped by wrap (nil:
// as is), e.g. to watch the server's side of each connection.
func startServerWrapped(t testing.TB, exports []Export, opts Options, wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbdtest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if opts.Logger == nil && testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := NewServer(exports, opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		l = wrap(l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, sock: sock, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ts.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
	})
	return ts
}

// client is a raw protocol client for tests: it sends exactly the bytes a
// test asks for and parses replies strictly.
type client struct {
	t  testing.TB
	nc net.Conn
}

func dial(t testing.TB, sock string) *client {
	t.Helper()
	return dialNet(t, "unix", sock)
}

// dialNet is dial on any network ("tcp" for TLS tests).
func dialNet(t testing.TB, network, addr string) *client {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { nc.Close() })
	return &client{t: t, nc: nc}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("client write: %v", err)
	}
}

func (c *client) read(n int) []byte {
	c.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(c.nc, b); err != nil {
		c.t.Fatalf("client read %d bytes: %v", n, err)
	}
	return b
}

// expectClosed asserts the server closed the connection (after any bytes
// still in flight).
func (c *client) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := io.Copy(io.Discard, c.nc)
	if err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		c.t.Fatalf("expected the server to close the connection, got %v", err)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne) && !ne.Timeout()
}

// greet reads the server's greeting and sends the client flags.
func (c *client) greet(clientFlags uint32) {
	c.t.Helper()
	b := c.read(18)
	if binary.BigEndian.Uint64(b[0:8]) != magicInit || binary.BigEndian.Uint64(b[8:16]) != magicOpt {
		c.t.Fatalf("bad greeting % x", b)
	}
	if hf := binary.BigEndian.Uint16(b[16:18]); hf != flagFixedNewstyle|flagNoZeroes {
		c.t.Fatalf("handshake flags %#x", hf)
	}
	c.write(binary.BigEndian.AppendUint32(nil, clientFlags))
}

func (c *client) sendOpt(opt uint32, data []byte) {
	c.t.Helper()
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.write(append(b, data...))
}

type optReply struct {
	opt, typ uint32
	data     []byte
}

func (c *client) readOptReply() optReply {
	c.t.Helper()
	h := c.read(optReplyHdrSize)
	if m := binary.BigEndian.Uint64(h[0:8]); m != magicOptReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: binary.BigEndian.Uint32(h[8:12]), typ: binary.BigEndian.Uint32(h[12:16])}
	r.data = c.read(int(binary.BigEndian.Uint32(h[16:20])))
	return r
}

func infoData(name string, infos ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = binary.BigEndian.AppendUint16(b, i)
	}
	return b
}

// exportInfo is what NBD_OPT_INFO/GO told about an export.
type exportInfo struct {
	size                 int64
	flags                uint16
	minBS, prefBS, maxBS uint32
	name, desc           string
	hasName, hasDesc     bool
}

// infoGo sends NBD_OPT_INFO or NBD_OPT_GO and collects the replies up to
// the final one; a final error reply is returned as its type.
func (c *client) infoGo(opt uint32, name string, infos ...uint16) (exportInfo, uint32) {
	c.t.Helper()
	c.sendOpt(opt, infoData(name, infos...))
	var ei exportInfo
	for {
		r := c.readOptReply()
		if r.opt != opt {
			c.t.Fatalf("reply for option %d, want %d", r.opt, opt)
		}
		switch r.typ {
		case repAck:
			return ei, repAck
		case repInfo:
			if len(r.data) < 2 {
				c.t.Fatalf("short NBD_REP_INFO %x", r.data)
			}
			switch binary.BigEndian.Uint16(r.data) {
			case infoExport:
				if len(r.data) != 12 {
					c.t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(r.data))
				}
				ei.size = int64(binary.BigEndian.Uint64(r.data[2:10]))
				ei.flags = binary.BigEndian.Uint16(r.data[10:12])
			case infoBlockSize:
				if len(r.data) != 14 {
					c.t.Fatalf("NBD_INFO_BLOCK_SIZE of %d bytes", len(r.data))
				}
				ei.minBS = binary.BigEndian.Uint32(r.data[2:6])
				ei.prefBS = binary.BigEndian.Uint32(r.data[6:10])
				ei.maxBS = binary.BigEndian.Uint32(r.data[10:14])
			case infoName:
				ei.name, ei.hasName = string(r.data[2:]), true
			case infoDescription:
				ei.desc, ei.hasDesc = string(r.data[2:]), true
			default:
				c.t.Fatalf("unexpected info type %d", binary.BigEndian.Uint16(r.data))
			}
		default:
			if r.typ&(1<<31) == 0 {
				c.t.Fatalf("unexpected reply type %#x", r.typ)
			}
			return ei, r.typ
		}
	}
}

// open dials and negotiates export name with NBD_OPT_GO.
func open(t testing.TB, sock, name string) (*client, exportInfo) {
	t.Helper()
	c := dial(t, sock)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	ei, typ := c.infoGo(optGo, name)
	if typ != repAck {
		t.Fatalf("NBD_OPT_GO %q: reply %#x", name, typ)
	}
	return c, ei
}

func (c *client) send(typ, flags uint16, handle, off uint64, length uint32, payload []byte) {
	c.t.Helper()
	var b [requestSize]byte
	request{flags: flags, typ: typ, handle: handle, offset: off, length: length}.encode(&b)
	c.write(append(b[:], payload...))
}

// readReply reads a simple reply header.
func (c *client) readReply() (handle uint64, errCode uint32) {
	c.t.Helper()
	h := c.read(simpleReplySize)
	if m := binary.BigEndian.Uint32(h[0:4]); m != magicReply {
		c.t.Fatalf("reply magic %#x", m)
	}
	return binary.BigEndian.Uint64(h[8:16]), binary.BigEndian.Uint32(h[4:8])
}

// do sends one request and waits for its reply; for a successful READ it
// returns the data.
func (c *client) do(typ, flags uint16, off uint64, length uint32, payload []byte) (uint32, []byte) {
	c.t.Helper()
	const h = 0xfeedface
	c.send(typ, flags, h, off, length, payload)
	handle, code := c.readReply()
	if handle != h {
		c.t.Fatalf("reply handle %#x, want %#x", handle, h)
	}
	if typ == cmdRead && code == 0 {
		return 0, c.read(int(length))
	}
	return code, nil
}

// roundTrip checks a connection works: write a pattern, read it back.
func (c *client) roundTrip(off uint64) {
	c.t.Helper()
	p := bytes.Repeat([]byte{byte(off>>9) | 1, 0x5a}, 2048)
	if code, _ := c.do(cmdWrite, 0, off, uint32(len(p)), p); code != 0 {
		c.t.Fatalf("write at %d: error %d", off, code)
	}
	code, got := c.do(cmdRead, 0, off, uint32(len(p)), nil)
	if code != 0 || !bytes.Equal(got, p) {
		c.t.Fatalf("read at %d: error %d, data equal %v", off, code, bytes.Equal(got, p))
	}
}
