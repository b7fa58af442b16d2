package nbd

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/nbd/nbdtest"
)

func unixURI(sock, export string) string {
	return "nbd+unix:///" + export + "?socket=" + sock
}

func dialTest(t *testing.T, uri string, opts ClientOptions) *Client {
	t.Helper()
	c, _, err := DialURI(context.Background(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// exercise writes random blocks from many goroutines at once, reads them
// back, trims and zeroes, and returns what the export must hold.
func exercise(t *testing.T, c *Client, size int) []byte {
	t.Helper()
	want := make([]byte, size)
	const block = 4096
	var wg sync.WaitGroup
	errs := make(chan error, size/block)
	for i := range size / block {
		p := bytes.Repeat([]byte{byte(i + 1)}, block)
		copy(want[i*block:], p)
		wg.Go(func() {
			if err := c.WriteAt(p, int64(i*block), i%3 == 0 && c.Info().Has(FlagSendFUA)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if c.Info().Has(FlagSendTrim) {
		if err := c.Trim(0, block); err != nil {
			t.Fatal(err)
		}
		if err := c.WriteAt(want[:block], 0, false); err != nil {
			t.Fatal(err)
		}
	}
	if c.Info().Has(FlagSendWriteZeroes) {
		if err := c.WriteZeroes(block, 2*block, false); err != nil {
			t.Fatal(err)
		}
		clear(want[block : 3*block])
	}
	got := make([]byte, size)
	if err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs from what was written")
	}
	return want
}

func TestClientRoundTrip(t *testing.T) {
	m := newMem(1 << 20)
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{})
	c := dialTest(t, unixURI(ts.sock, "vol"), ClientOptions{})
	if got := c.Info(); got.Size != 1<<20 || got.MinBlock != MinBlockSize || got.MaxBlock != MaxPayload || !got.Has(FlagSendFlush|FlagSendFUA|FlagSendTrim|FlagSendWriteZeroes) {
		t.Fatalf("info %+v", got)
	}
	want := exercise(t, c, 1<<20)
	if !bytes.Equal(m.snapshot(), want) {
		t.Fatal("the server's data differs")
	}
	if m.fuaWrites.Load() == 0 || m.flushes.Load() == 0 || m.trims.Load() == 0 || m.zeroes.Load() == 0 {
		t.Fatalf("fua %d, flushes %d, trims %d, zeroes %d", m.fuaWrites.Load(), m.flushes.Load(), m.trims.Load(), m.zeroes.Load())
	}
	// The minimum block size is honoured: refused, never widened.
	if err := c.WriteAt(make([]byte, 100), 0, false); !errors.Is(err, ErrUnaligned) {
		t.Fatalf("unaligned write: %v", err)
	}
	if err := c.ReadAt(make([]byte, 512), 1<<20); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read past the end: %v", err)
	}
	if _, _, err := DialURI(context.Background(), unixURI(ts.sock, "nope"), ClientOptions{}); !errors.Is(err, ErrUnknownExport) {
		t.Fatalf("unknown export: %v", err)
	}
}

// The server's maximum block size splits requests.
func TestClientSplitsAtMaxBlock(t *testing.T) {
	m := newMem(1 << 20)
	ts := startServer(t, []Export{{Name: "", Backend: m}}, Options{})
	c := dialTest(t, unixURI(ts.sock, ""), ClientOptions{})
	c.info.MaxBlock = 8192
	p := make([]byte, 64<<10)
	for i := range p {
		p[i] = byte(i / 512)
	}
	if err := c.WriteAt(p, 4096, false); err != nil {
		t.Fatal(err)
	}
	if n := m.writes.Load(); n != 8 {
		t.Fatalf("%d writes, want 8 of 8 KiB", n)
	}
	got := make([]byte, len(p))
	if err := c.ReadAt(got, 4096); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("read back: %v", err)
	}
}

func TestClientTLS(t *testing.T) {
	m := newMem(256 << 10)
	_, addr := startTLSServer(t, m, serverTLS(t, true))
	p := pki(t)
	dir := t.TempDir()
	writePEM := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePEM("ca-cert.pem", "CERTIFICATE", p.caDER)
	writePEM("client-cert.pem", "CERTIFICATE", p.client.Certificate[0])
	key, err := x509.MarshalPKCS8PrivateKey(p.client.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM("client-key.pem", "PRIVATE KEY", key)

	host, port, _ := net.SplitHostPort(addr)
	uri := fmt.Sprintf("nbds://%s/vol?tls-certificates=%s&tls-hostname=localhost", net.JoinHostPort(host, port), dir)
	c, tgt, err := DialURI(context.Background(), uri, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if strings.Contains(tgt.URI, "tls") {
		t.Fatalf("recorded URI %q keeps TLS parameters", tgt.URI)
	}
	exercise(t, c, 256<<10)

	// Without TLS, the server's refusal is said as such.
	if _, _, err := DialURI(context.Background(), "nbd://"+addr+"/vol", ClientOptions{}); !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("plain text to a TLS server: %v", err)
	}
	// Without a client certificate, the handshake fails.
	if err := os.Remove(filepath.Join(dir, "client-key.pem")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := DialURI(context.Background(), uri, ClientOptions{DialTimeout: 5 * time.Second}); err == nil {
		t.Fatal("no client certificate: connected")
	}
}

// gated is a memBackend whose writes and flushes can be held: hold returns
// a channel that receives once per operation held, and release lets them
// go. (memBackend's gate cannot be set once the server runs.)
type gated struct {
	*memBackend
	gate atomic.Pointer[gateState]
}

type gateState struct {
	entered chan struct{}
	release chan struct{}
}

func (g *gated) hold() chan struct{} {
	st := &gateState{entered: make(chan struct{}, 64), release: make(chan struct{})}
	g.gate.Store(st)
	return st.entered
}

func (g *gated) release() {
	if st := g.gate.Swap(nil); st != nil {
		close(st.release)
	}
}

func (g *gated) wait() {
	if st := g.gate.Load(); st != nil {
		st.entered <- struct{}{}
		<-st.release
	}
}

func (g *gated) Flush() error { g.wait(); return g.memBackend.Flush() }

func (g *gated) WriteAt(p []byte, off int64, fua bool) error {
	g.wait()
	return g.memBackend.WriteAt(p, off, fua)
}

// proxy forwards unix connections from its socket to the server's, and can
// cut them all or refuse new ones: the network failing under a client.
type proxy struct {
	t      *testing.T
	sock   string
	target string
	l      net.Listener
	mu     sync.Mutex // protects conns and down
	conns  []net.Conn
	down   bool
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	p := &proxy{t: t, sock: filepath.Join(filepath.Dir(target), "proxy.sock"), target: target}
	l, err := net.Listen("unix", p.sock)
	if err != nil {
		t.Fatal(err)
	}
	p.l = l
	p.wg.Go(func() {
		for {
			a, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.down {
				p.mu.Unlock()
				a.Close()
				continue
			}
			b, err := net.Dial("unix", target)
			if err != nil {
				p.mu.Unlock()
				a.Close()
				continue
			}
			p.conns = append(p.conns, a, b)
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(a, b); a.Close(); b.Close() })
			p.wg.Go(func() { io.Copy(b, a); a.Close(); b.Close() })
		}
	})
	t.Cleanup(func() { l.Close(); p.cut(); p.wg.Wait() })
	return p
}

// cut closes every proxied connection; down also refuses new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
	if down {
		p.cut()
	}
}

// Requests in flight when the connection drops are sent again and
// succeed; a FLUSH in flight fails; writes acknowledged but not flushed
// make the next FLUSH fail once.
func TestClientReconnect(t *testing.T) {
	g := &gated{memBackend: newMem(1 << 20)}
	ts := startServer(t, []Export{{Name: "vol", Backend: g}}, Options{})
	px := startProxy(t, ts.sock)
	c := dialTest(t, unixURI(px.sock, "vol"), ClientOptions{Timeout: 10 * time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})

	// An acknowledged, unflushed write, then the connection drops.
	if err := c.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	px.setDown(true)
	// Writes issued while the server is unreachable wait for it.
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Go(func() { errs[i] = c.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 4096), int64(i+1)*4096, false) })
	}
	time.Sleep(100 * time.Millisecond)
	if ok, why := c.Connected(); ok || why == nil {
		t.Fatalf("connected %v, %v while the server is unreachable", ok, why)
	}
	px.setDown(false)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if err := c.Flush(); !errors.Is(err, ErrUnflushedLost) {
		t.Fatalf("flush after losing an unflushed write: %v", err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("second flush: %v", err)
	}

	// A FLUSH in flight when the connection drops fails.
	if err := c.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	entered := g.hold()
	done := make(chan error, 1)
	go func() { done <- c.Flush() }()
	<-entered
	px.cut()
	if err := <-done; !errors.Is(err, ErrConnLost) {
		t.Fatalf("flush in flight across a drop: %v", err)
	}
	g.release()
	if err := c.Flush(); !errors.Is(err, ErrUnflushedLost) {
		t.Fatalf("flush after the write its failed flush covered was lost: %v", err)
	}
	if err := c.WriteAt(bytes.Repeat([]byte{7}, 4096), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatalf("flush after reconnecting: %v", err)
	}
	// Nothing written since: a FLUSH is not sent.
	before := g.flushes.Load()
	if err := c.Flush(); err != nil || g.flushes.Load() != before {
		t.Fatalf("an empty flush: %v, %d sent", err, g.flushes.Load()-before)
	}
	got := make([]byte, 17*4096)
	if err := c.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 17 {
		want := byte(i)
		if i == 0 {
			want = 7
		}
		if got[i*4096] != want {
			t.Fatalf("block %d holds %d, want %d", i, got[i*4096], want)
		}
	}
}

// A request to an unreachable server fails within its timeout with an
// EIO; Close does not wait for the server.
func TestClientTimeout(t *testing.T) {
	g := &gated{memBackend: newMem(1 << 20)}
	ts := startServer(t, []Export{{Name: "vol", Backend: g}}, Options{})
	px := startProxy(t, ts.sock)
	c := dialTest(t, unixURI(px.sock, "vol"), ClientOptions{Timeout: 300 * time.Millisecond, BackoffMin: 10 * time.Millisecond})
	px.setDown(true)
	start := time.Now()
	err := c.ReadAt(make([]byte, 4096), 0)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("read from an unreachable server: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("timed out after %v", d)
	}
	// A hung server (requests never answered) times out too.
	px.setDown(false)
	g.hold()
	defer g.release()
	if err := c.WriteAt(make([]byte, 4096), 0, false); !errors.Is(err, ErrTimeout) {
		t.Fatalf("write to a hung server: %v", err)
	}
	start = time.Now()
	c.Close()
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Close took %v", d)
	}
}

// A server that breaks the protocol after the handshake never makes the
// client panic or return wrong data: its requests fail.
func TestClientHostileServer(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply func(req []byte) []byte
	}{
		{"wrong handle", func(req []byte) []byte { return simpleReply(0, 0xdead) }},
		{"bad magic", func(req []byte) []byte { b := simpleReply(0, handleOf(req)); b[0] ^= 1; return b }},
		{"short read reply", func(req []byte) []byte { return append(simpleReply(0, handleOf(req)), 1, 2, 3) }},
		{"structured reply", func(req []byte) []byte {
			b := simpleReply(0, handleOf(req))
			copy(b, []byte{0x66, 0x8e, 0x33, 0xef})
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(shortTempDir(t), "h.sock")
			l, err := net.Listen("unix", sock)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go hostileServer(l, tc.reply)
			c := dialTest(t, unixURI(sock, "x"), ClientOptions{Timeout: 300 * time.Millisecond, BackoffMin: 10 * time.Millisecond})
			p := bytes.Repeat([]byte{0xaa}, 4096)
			if err := c.ReadAt(p, 0); err == nil {
				t.Fatal("read succeeded")
			}
			if !bytes.Equal(p, bytes.Repeat([]byte{0xaa}, 4096)) && tc.name != "short read reply" {
				t.Fatal("a failed read changed the buffer")
			}
		})
	}
}

// TestClientBacksOffFromHostileServer: a server that completes every
// handshake and then breaks the protocol is not redialled in a tight loop:
// a connection that dies soon after it came up keeps the backoff growing.
func TestClientBacksOffFromHostileServer(t *testing.T) {
	sock := filepath.Join(shortTempDir(t), "h.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cl := &acceptCounter{Listener: l}
	go hostileServer(cl, func(req []byte) []byte { return simpleReply(0, 0xdead) })
	c := dialTest(t, unixURI(sock, "x"), ClientOptions{Timeout: time.Second, BackoffMin: 10 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	start := time.Now()
	if err := c.ReadAt(make([]byte, 4096), 0); err == nil {
		t.Fatal("read succeeded")
	}
	// Doubling from 10 ms to 200 ms: about 10 connections in a second;
	// without the backoff, hundreds.
	if n := cl.n.Load(); n > 20 {
		t.Fatalf("%d connections in %v", n, time.Since(start).Round(time.Millisecond))
	}
}

// acceptCounter counts the connections a listener accepts.
type acceptCounter struct {
	net.Listener
	n atomic.Int32
}

func (l *acceptCounter) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return nc, err
}

func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "nbdc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func handleOf(req []byte) uint64 {
	var b [requestSize]byte
	copy(b[:], req)
	r, _ := parseRequest(&b)
	return r.handle
}

func simpleReply(code uint32, handle uint64) []byte {
	var b [simpleReplySize]byte
	putSimpleReply(&b, code, handle)
	return b[:]
}

// hostileServer does a correct handshake (export of 1 MiB, flush offered),
// then answers each request with reply(request).
func hostileServer(l net.Listener, reply func([]byte) []byte) {
	for {
		nc, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer nc.Close()
			greet := []byte("NBDMAGICIHAVEOPT\x00\x03")
			nc.Write(greet)
			var cf [4]byte
			if _, err := io.ReadFull(nc, cf[:]); err != nil {
				return
			}
			var h [optHeaderSize]byte
			if _, err := io.ReadFull(nc, h[:]); err != nil {
				return
			}
			n := int(h[12])<<24 | int(h[13])<<16 | int(h[14])<<8 | int(h[15])
			io.CopyN(io.Discard, nc, int64(n))
			info := []byte{0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 1 | 4}
			c := &conn{w: nc}
			c.optReply(optGo, repInfo, info)
			c.optReply(optGo, repAck, nil)
			for {
				req := make([]byte, requestSize)
				if _, err := io.ReadFull(nc, req); err != nil {
					return
				}
				if _, err := nc.Write(reply(req)); err != nil {
					return
				}
			}
		}()
	}
}

// nbdkit's memory plugin, a real server: the client's commands work, and
// the data round-trips.
func TestClientNbdkitMemory(t *testing.T) {
	sock := nbdtest.Nbdkit(t, "memory", "4M")
	c := dialTest(t, unixURI(sock, ""), ClientOptions{})
	if c.Info().Size != 4<<20 || !c.Info().Has(FlagSendFlush) {
		t.Fatalf("info %+v", c.Info())
	}
	exercise(t, c, 4<<20)
	// Reads larger than the server's maximum are split.
	big := make([]byte, 4<<20)
	if err := c.ReadAt(big, 0); err != nil {
		t.Fatal(err)
	}
}

func TestParseURI(t *testing.T) {
	for _, tc := range []struct{ in, network, addr, export, uri, err string }{
		{in: "nbd://example.com/vol", network: "tcp", addr: "example.com:10809", export: "vol", uri: "nbd://example.com/vol"},
		{in: "nbd://[::1]:1234/", network: "tcp", addr: "[::1]:1234", export: "", uri: "nbd://[::1]:1234/"},
		{in: "nbd+unix:///a%20b?socket=/run/x%20y.sock", network: "unix", addr: "/run/x y.sock", export: "a b", uri: "nbd+unix:///a%20b?socket=/run/x+y.sock"},
		{in: "nbds://h/e?tls-verify-peer=false&tls-hostname=srv", network: "tcp", addr: "h:10809", export: "e", uri: "nbds://h/e"},
		{in: "nbd://h/e?tls-ca=/x", err: "needs an nbds"},
		{in: "nbd://h/e?foo=1", err: "unknown parameter"},
		{in: "nbd+unix:///e", err: "no socket"},
		{in: "nbd://user@h/e", err: "user info"},
		{in: "http://h/e", err: "scheme"},
		{in: "nbds://h/e?tls-cert=/x", err: "go together"},
	} {
		tgt, err := ParseURI(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, ErrBadURI) {
				t.Errorf("%s: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if tgt.Network != tc.network || tgt.Address != tc.addr || tgt.Export != tc.export || tgt.URI != tc.uri {
			t.Errorf("%s: %+v", tc.in, tgt)
		}
		if IsURI(tc.in) != true {
			t.Errorf("%s: IsURI false", tc.in)
		}
	}
	if IsURI("/dev/sdb") || IsURI("nbd.img") {
		t.Error("a path is a URI")
	}
}
