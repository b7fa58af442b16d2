package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

const testSize = 1 << 20

func TestNewServerValidates(t *testing.T) {
	m := newMem(4096)
	for _, tc := range []struct {
		name    string
		exports []Export
	}{
		{"none", nil},
		{"nil backend", []Export{{Name: "a"}}},
		{"duplicate", []Export{{Name: "a", Backend: m}, {Name: "a", Backend: m}}},
		{"long name", []Export{{Name: string(make([]byte, 4097)), Backend: m}}},
	} {
		if _, err := NewServer(tc.exports, Options{}); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err %v, want ErrConfig", tc.name, err)
		}
	}
	if _, err := NewServer([]Export{{Name: "a", Backend: m}}, Options{}); err != nil {
		t.Fatal(err)
	}
}

func TestHandshakeGoInfo(t *testing.T) {
	a, b := newMem(testSize), newMem(2*testSize)
	ts := startServer(t, []Export{
		{Name: "a", Description: "first", Backend: a},
		{Name: "b", Backend: b, ReadOnly: true},
	}, Options{})

	c := dial(t, ts.sock)
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)

	ei, typ := c.infoGo(optInfo, "a", infoName, infoDescription, infoBlockSize, 0x7777)
	if typ != repAck {
		t.Fatalf("INFO a: %#x", typ)
	}
	want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes | FlagCanMultiConn
	if ei.size != testSize || ei.flags != want {
		t.Errorf("INFO a: size %d flags %#x, want %d %#x", ei.size, ei.flags, testSize, want)
	}
	if ei.minBS != 512 || ei.prefBS != 4096 || ei.maxBS != 32<<20 {
		t.Errorf("block sizes %d/%d/%d", ei.minBS, ei.prefBS, ei.maxBS)
	}
	if !ei.hasName || ei.name != "a" || !ei.hasDesc || ei.desc != "first" {
		t.Errorf("name %q/%v desc %q/%v", ei.name, ei.hasName, ei.desc, ei.hasDesc)
	}

	// The default export is the first one.
	if ei, typ = c.infoGo(optInfo, ""); typ != repAck || ei.size != testSize {
		t.Errorf("INFO default: %#x size %d", typ, ei.size)
	}
	if _, typ = c.infoGo(optInfo, "nope"); typ != repErrUnknown {
		t.Errorf("INFO unknown export: %#x, want NBD_REP_ERR_UNKNOWN", typ)
	}
	// Malformed INFO data: the name length runs past the option.
	c.sendOpt(optInfo, []byte{0, 0, 0, 9, 'a', 0, 0})
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Errorf("malformed INFO: %#x, want NBD_REP_ERR_INVALID", r.typ)
	}
	for _, opt := range []uint32{optStructuredReply, optStartTLS, optListMetaContext, optSetMetaContext, optExtendedHeaders, 4242} {
		c.sendOpt(opt, nil)
		if r := c.readOptReply(); r.typ != repErrUnsup || r.opt != opt {
			t.Errorf("option %d: reply %#x for %d, want NBD_REP_ERR_UNSUP", opt, r.typ, r.opt)
		}
	}

	// LIST: one NBD_REP_SERVER per export, then ACK.
	c.sendOpt(optList, nil)
	var names []string
	for {
		r := c.readOptReply()
		if r.typ == repAck {
			break
		}
		if r.typ != repServer {
			t.Fatalf("LIST reply %#x", r.typ)
		}
		n := binary.BigEndian.Uint32(r.data)
		names = append(names, string(r.data[4:4+n])+"|"+string(r.data[4+n:]))
	}
	if fmt.Sprint(names) != "[a|first b|]" {
		t.Errorf("LIST: %v", names)
	}
	c.sendOpt(optList, []byte("x"))
	if r := c.readOptReply(); r.typ != repErrInvalid {
		t.Errorf("LIST with data: %#x", r.typ)
	}

	ei, typ = c.infoGo(optGo, "b")
	if typ != repAck || ei.size != 2*testSize || ei.flags&FlagReadOnly == 0 {
		t.Fatalf("GO b: %#x size %d flags %#x", typ, ei.size, ei.flags)
	}
	// Read-only: writes, trims and write-zeroes are EPERM; reads work.
	if code, _ := c.do(cmdWrite, 0, 0, 512, make([]byte, 512)); code != errPerm {
		t.Errorf("write on read-only: %d", code)
	}
	if code, _ := c.do(cmdTrim, 0, 0, 512, nil); code != errPerm {
		t.Errorf("trim on read-only: %d", code)
	}
	if code, _ := c.do(cmdRead, 0, 0, 512, nil); code != 0 {
		t.Errorf("read on read-only: %d", code)
	}
	if b.writes.Load() != 0 || b.trims.Load() != 0 {
		t.Errorf("read-only backend was written")
	}
}

func TestHandshakeExportName(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{NoMultiConn: true})
	for _, noZeroes := range []bool{false, true} {
		c := dial(t, ts.sock)
		f := clientFlagFixedNewstyle
		if noZeroes {
			f |= clientFlagNoZeroes
		}
		c.greet(f)
		c.sendOpt(optExportName, []byte("vol"))
		b := c.read(10)
		if size := binary.BigEndian.Uint64(b); size != testSize {
			t.Errorf("size %d", size)
		}
		want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendTrim | FlagSendWriteZeroes
		if fl := binary.BigEndian.Uint16(b[8:]); fl != want {
			t.Errorf("flags %#x, want %#x (no multi-conn)", fl, want)
		}
		if !noZeroes {
			if z := c.read(124); !bytes.Equal(z, make([]byte, 124)) {
				t.Errorf("reserved bytes not zero")
			}
		}
		c.roundTrip(4096)
	}
	// Plain (non-fixed) newstyle client: EXPORT_NAME works...
	c := dial(t, ts.sock)
	c.greet(0)
	c.sendOpt(optExportName, []byte("vol"))
	c.read(10 + 124)
	c.roundTrip(0)
	// ...any other option ends the session, as such a client cannot parse
	// option replies.
	c = dial(t, ts.sock)
	c.greet(0)
	c.sendOpt(optList, nil)
	c.expectClosed()
	// Unknown export with EXPORT_NAME: no way to answer but closing.
	c = dial(t, ts.sock)
	c.greet(clientFlagFixedNewstyle)
	c.sendOpt(optExportName, []byte("nope"))
	c.expectClosed()
	// Unknown client flags: the server MUST drop the connection.
	c = dial(t, ts.sock)
	c.greet(1 << 7)
	c.expectClosed()
	// ABORT is acknowledged, then the connection ends.
	c = dial(t, ts.sock)
	c.greet(clientFlagFixedNewstyle)
	c.sendOpt(optAbort, nil)
	if r := c.readOptReply(); r.typ != repAck || r.opt != optAbort {
		t.Errorf("ABORT reply %#x", r.typ)
	}
	c.expectClosed()
}

// bothWriteModes runs f with writes served on request goroutines and on
// the connection goroutine (InlineWriter).
func bothWriteModes(t *testing.T, f func(t *testing.T, inline bool)) {
	t.Run("goroutines", func(t *testing.T) { f(t, false) })
	t.Run("inline", func(t *testing.T) { f(t, true) })
}

func TestCommands(t *testing.T) { bothWriteModes(t, testCommands) }

func testCommands(t *testing.T, inline bool) {
	m := newMem(testSize)
	m.inline = inline
	ts := startServer(t, []Export{{Name: "", Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")

	// Unaligned, sub-sector write and read.
	p := []byte("hello, writeboost")
	if code, _ := c.do(cmdWrite, cmdFlagFUA, 1001, uint32(len(p)), p); code != 0 {
		t.Fatalf("write: %d", code)
	}
	if m.fuaWrites.Load() != 1 {
		t.Errorf("FUA not passed to the backend")
	}
	if code, got := c.do(cmdRead, 0, 1001, uint32(len(p)), nil); code != 0 || !bytes.Equal(got, p) {
		t.Fatalf("read: %d %q", code, got)
	}
	// FUA on a read is accepted (clients set it) and ignored.
	if code, _ := c.do(cmdRead, cmdFlagFUA, 0, 512, nil); code != 0 {
		t.Errorf("read with FUA: %d", code)
	}
	if code, _ := c.do(cmdFlush, 0, 0, 0, nil); code != 0 || m.flushes.Load() != 1 {
		t.Errorf("flush: %d, %d flushes", code, m.flushes.Load())
	}
	if code, _ := c.do(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 1000, 10, nil); code != 0 {
		t.Errorf("write zeroes: %d", code)
	}
	if code, got := c.do(cmdRead, 0, 1000, 20, nil); code != 0 || !bytes.Equal(got, append(append(make([]byte, 10), p[9:]...), 0, 0)) {
		t.Errorf("after write zeroes: %d %q", code, got)
	}
	flushes := m.flushes.Load()
	if code, _ := c.do(cmdTrim, cmdFlagFUA, 0, 4096, nil); code != 0 || m.trims.Load() != 1 || m.flushes.Load() != flushes+1 {
		t.Errorf("trim+FUA: %d trims %d flushes %d", code, m.trims.Load(), m.flushes.Load()-flushes)
	}
	// A trim longer than MaxPayload is fine: it carries no payload.
	if code, _ := c.do(cmdTrim, 0, 0, testSize, nil); code != 0 {
		t.Errorf("whole-device trim: %d", code)
	}

	for _, tc := range []struct {
		name        string
		typ, flags  uint16
		off         uint64
		length      uint32
		payload     []byte
		want        uint32
		backendCall bool
	}{
		{"read past end", cmdRead, 0, testSize - 511, 512, nil, errInval, false},
		{"read offset overflow", cmdRead, 0, 1<<64 - 1, 2, nil, errInval, false},
		{"read zero length", cmdRead, 0, 0, 0, nil, errInval, false},
		{"read over 32 MiB", cmdRead, 0, 0, 32<<20 + 1, nil, errInval, false},
		{"write past end", cmdWrite, 0, testSize, 512, make([]byte, 512), errNoSpc, false},
		{"write zeroes past end", cmdWriteZeroes, 0, testSize - 1, 2, nil, errNoSpc, false},
		{"trim past end", cmdTrim, 0, testSize, 1, nil, errInval, false},
		{"flush with length", cmdFlush, 0, 0, 1, nil, errInval, false},
		{"unknown command", 99, 0, 0, 0, nil, errInval, false},
		{"cache (not advertised)", cmdCache, 0, 0, 512, nil, errInval, false},
		{"block status (not negotiated)", cmdBlockStatus, 0, 0, 512, nil, errInval, false},
		{"unknown flag", cmdRead, 1 << 12, 0, 512, nil, errInval, false},
		{"NO_HOLE on write", cmdWrite, cmdFlagNoHole, 0, 1, []byte{1}, errInval, false},
		{"DF not advertised", cmdRead, cmdFlagDF, 0, 512, nil, errInval, false},
	} {
		before := m.reads.Load() + m.writes.Load() + m.trims.Load() + m.zeroes.Load()
		code, _ := c.do(tc.typ, tc.flags, tc.off, tc.length, tc.payload)
		if code != tc.want {
			t.Errorf("%s: error %d, want %d", tc.name, code, tc.want)
		}
		if after := m.reads.Load() + m.writes.Load() + m.trims.Load() + m.zeroes.Load(); after != before {
			t.Errorf("%s: reached the backend", tc.name)
		}
	}
	// The connection survived all of that.
	c.roundTrip(8192)

	// DISC: no reply, the server closes.
	c.send(cmdDisc, 0, 1, 0, 0, nil)
	c.expectClosed()
}

func TestBackendErrorsMapped(t *testing.T) { bothWriteModes(t, testBackendErrorsMapped) }

func testBackendErrorsMapped(t *testing.T, inline bool) {
	m := newMem(testSize)
	m.inline = inline
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")
	for _, tc := range []struct {
		err  error
		want uint32
	}{
		{fmt.Errorf("engine: write segment 7: %w", syscall.ENOSPC), errNoSpc},
		{syscall.EDQUOT, errNoSpc},
		{&net.OpError{Op: "read", Err: syscall.EIO}, errIO},
		{syscall.EROFS, errPerm},
		{syscall.EINVAL, errInval},
		{syscall.ENOMEM, errNoMem},
		{syscall.ESHUTDOWN, errShutdown},
		{syscall.EBADF, errIO},
		{errors.New("opaque"), errIO},
	} {
		m.failWith.Store(&tc.err)
		for _, typ := range []uint16{cmdRead, cmdWrite, cmdFlush, cmdTrim, cmdWriteZeroes} {
			var payload []byte
			length := uint32(512)
			switch typ {
			case cmdWrite:
				payload = make([]byte, 512)
			case cmdFlush:
				length = 0
			}
			// A failed READ carries no payload: do() reads only the header.
			if code, _ := c.do(typ, 0, 0, length, payload); code != tc.want {
				t.Errorf("%v on command %d: NBD error %d, want %d", tc.err, typ, code, tc.want)
			}
		}
	}
	m.failWith.Store(nil)
	c.roundTrip(0)
}

// TestConcurrentOutOfOrder holds the first request in the backend while
// later ones complete: their replies must overtake it.
func TestConcurrentOutOfOrder(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")

	m.gate = make(chan struct{})
	m.entered = make(chan struct{}, 100)
	const n = 40
	for i := range n {
		c.send(cmdWrite, 0, uint64(i), uint64(i)*4096, 4096, bytes.Repeat([]byte{byte(i)}, 4096))
	}
	// All n are in the backend at once: concurrency, not a queue.
	for range n {
		select {
		case <-m.entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("requests not handled concurrently")
		}
	}
	close(m.gate)
	seen := map[uint64]bool{}
	for range n {
		h, code := c.readReply()
		if code != 0 || h >= n || seen[h] {
			t.Fatalf("reply handle %d code %d", h, code)
		}
		seen[h] = true
	}
	data := m.snapshot()
	for i := range n {
		if data[i*4096] != byte(i) || data[i*4096+4095] != byte(i) {
			t.Fatalf("block %d wrong", i)
		}
	}
}

// checkInFlightBound sends n reads of size bytes to a backend that holds
// them, and checks that exactly want of them reach it before it lets go.
func checkInFlightBound(t *testing.T, opts Options, n, size, want int) {
	t.Helper()
	m := newMem(testSize)
	m.gate = make(chan struct{})
	m.entered = make(chan struct{}, 100)
	ts := startServer(t, []Export{{Backend: m}}, opts)
	c, _ := open(t, ts.sock, "")
	for i := range n {
		c.send(cmdRead, 0, uint64(i), 0, uint32(size), nil)
	}
	for range want {
		<-m.entered
	}
	select {
	case <-m.entered:
		t.Fatalf("more than %d requests in the backend", want)
	case <-time.After(200 * time.Millisecond):
	}
	close(m.gate)
	for range n {
		if _, code := c.readReply(); code != 0 {
			t.Fatal(code)
		}
		c.read(size)
	}
}

// TestInFlightBound: with MaxInFlight 4, a fifth request waits until one
// finishes.
func TestInFlightBound(t *testing.T) {
	checkInFlightBound(t, Options{MaxInFlight: 4}, 6, 512, 4)
}

// TestInFlightByteBound: with a 8 KiB budget, only two 4 KiB reads are in
// the backend at once.
func TestInFlightByteBound(t *testing.T) {
	checkInFlightBound(t, Options{MaxInFlightBytes: 8192}, 3, 4096, 2)
}

// TestManyConnections drives several connections at once, each with many
// requests in flight, and checks every byte.
func TestManyConnections(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	const conns, per = 8, 64
	var wg sync.WaitGroup
	for ci := range conns {
		wg.Go(func() {
			c, _ := open(t, ts.sock, "")
			region := uint64(ci) * (testSize / conns)
			go func() {
				for i := range per {
					c.send(cmdWrite, 0, uint64(i), region+uint64(i)*1024, 1024, bytes.Repeat([]byte{byte(ci*per + i)}, 1024))
				}
			}()
			for range per {
				if _, code := c.readReply(); code != 0 {
					t.Errorf("conn %d: write error %d", ci, code)
					return
				}
			}
			for i := range per {
				code, got := c.do(cmdRead, 0, region+uint64(i)*1024, 1024, nil)
				if code != 0 || !bytes.Equal(got, bytes.Repeat([]byte{byte(ci*per + i)}, 1024)) {
					t.Errorf("conn %d block %d: code %d", ci, i, code)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestShutdownDrains: requests in flight at Shutdown get their replies,
// then the connection closes; Serve returns.
func TestShutdownDrains(t *testing.T) {
	m := newMem(testSize)
	m.gate = make(chan struct{})
	m.entered = make(chan struct{}, 100)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")
	idle := dial(t, ts.sock) // a connection still in the handshake
	idle.greet(clientFlagFixedNewstyle)
	for i := range 3 {
		c.send(cmdWrite, cmdFlagFUA, uint64(i), uint64(i)*512, 512, make([]byte, 512))
	}
	for range 3 {
		<-m.entered
	}
	shutdownDone := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdownDone <- ts.srv.Shutdown(ctx)
	}()
	idle.expectClosed()
	select {
	case err := <-shutdownDone:
		t.Fatalf("Shutdown returned (%v) with requests in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(m.gate)
	for range 3 {
		if _, code := c.readReply(); code != 0 {
			t.Errorf("in-flight write failed: %d", code)
		}
	}
	c.expectClosed()
	if err := <-shutdownDone; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-ts.done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
		ts.done <- nil // for the cleanup
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after Shutdown")
	}
	// New connections are refused.
	if nc, err := net.Dial("unix", ts.sock); err == nil {
		nc.Close()
		t.Fatal("dial after Shutdown succeeded")
	}
}

// TestShutdownDeadline: a backend stuck past the deadline makes Shutdown
// close connections and report the deadline.
func TestShutdownDeadline(t *testing.T) {
	m := newMem(testSize)
	m.gate = make(chan struct{})
	m.entered = make(chan struct{}, 10)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")
	c.send(cmdFlush, 0, 1, 0, 0, nil)
	<-m.entered
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want deadline exceeded", err)
	}
	c.expectClosed()
	close(m.gate) // let the stuck flush finish so Serve can return
}

func TestServeCtxCancelClosesConnections(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	c, _ := open(t, ts.sock, "")
	c.roundTrip(0)
	ts.cancel()
	c.expectClosed()
	if err := <-ts.done; err != nil {
		t.Fatal(err)
	}
	ts.done <- nil
}

func TestErrnoOf(t *testing.T) {
	if errnoOf(nil) != 0 {
		t.Fatal("nil error must be success")
	}
	if got := errnoOf(fmt.Errorf("x: %w", io.ErrUnexpectedEOF)); got != errIO {
		t.Fatalf("opaque error: %d", got)
	}
	if got := errnoOf(fmt.Errorf("x: %w", syscall.EFBIG)); got != errNoSpc {
		t.Fatalf("EFBIG: %d", got)
	}
}

func TestBufPool(t *testing.T) {
	for _, n := range []int{0, 1, 4096, 4097, 65536, 1 << 20, MaxPayload} {
		b := getBuf(n)
		if len(*b) != n || cap(*b) < n || cap(*b) > max(2*n, 4096) {
			t.Errorf("getBuf(%d): len %d cap %d", n, len(*b), cap(*b))
		}
		putBuf(b)
	}
}

// TestServeTwoListeners: one server on a unix socket and on TCP loopback;
// Shutdown ends both Serve calls.
func TestServeTwoListeners(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, []Export{{Backend: m}}, Options{})
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcpDone := make(chan error, 1)
	go func() { tcpDone <- ts.srv.Serve(context.Background(), tl) }()

	nc, err := net.Dial("tcp", tl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc}
	c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
	if _, typ := c.infoGo(optGo, ""); typ != repAck {
		t.Fatal(typ)
	}
	c.roundTrip(0)
	u, _ := open(t, ts.sock, "")
	code, got := u.do(cmdRead, 0, 0, 4096, nil)
	if code != 0 || got[0] != 1 { // written over TCP, read over unix
		t.Fatalf("read over unix: %d %x", code, got[:2])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	c.expectClosed()
	u.expectClosed()
	if err := <-tcpDone; err != nil {
		t.Fatalf("Serve tcp: %v", err)
	}
	if err := ts.srv.Serve(context.Background(), tl); err != nil {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}
