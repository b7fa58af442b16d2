package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/engine"
	"github.com/writeboost/writeboost/internal/vocab"
	"github.com/writeboost/writeboost/testing/tools/nbdclient"
)

// syncBuffer is a bytes.Buffer safe for the logger and the test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// images makes a sparse backing file and a cache file in a fresh run dir.
func images(t *testing.T, backing, cache int64) (dir, b, c string) {
	t.Helper()
	dir = t.TempDir()
	t.Setenv(control.RunDirEnv, filepath.Join(dir, "run"))
	b, c = filepath.Join(dir, "backing.img"), filepath.Join(dir, "cache.img")
	for p, n := range map[string]int64{b: backing, c: cache} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, n); err != nil {
			t.Fatal(err)
		}
	}
	return dir, b, c
}

// runOnce runs wb-create to completion with args (for refusals).
func runOnce(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb syncBuffer
	sig := make(chan os.Signal)
	code := run(args, &out, &errb, sig)
	return code, out.String(), errb.String()
}

func TestHelp(t *testing.T) {
	code, out, _ := runOnce(t, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"NAME", "BACKING", "CACHE", "--reformat", "--force", "--listen", "--attach", "--no-direct", "writeback_threshold", "nr_read_cache_cells", "ready", "--socket-group", "--socket-mode"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	// The man page documents every flag --help shows.
	page, err := os.ReadFile("../../man/wb-create.8")
	if err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{`\-\-reformat`, `\-\-force`, `\-\-listen`, `\-\-attach`, `\-\-no\-direct`, `\-\-verbose`, `\-\-tab`, `\-\-pidfile`, `\-\-metrics`, `\-\-version`, `\-\-socket\-group`, `\-\-socket\-mode`} {
		if !bytes.Contains(page, []byte(flag)) {
			t.Errorf("man page lacks %s", flag)
		}
	}
	// Both say which signals stop it and which are ignored; the man page
	// states the second-signal grace this binary uses.
	for _, want := range []string{"SIGTERM", "SIGINT", "SIGHUP", "SIGPIPE", "second signal"} {
		if !strings.Contains(out, want) {
			t.Errorf("--help lacks %q", want)
		}
		if !bytes.Contains(page, []byte(want)) {
			t.Errorf("man page lacks %q", want)
		}
	}
	grace := fmt.Sprintf(".B %d second or more after", int(secondSignalGrace/time.Second))
	if !bytes.Contains(page, []byte(".SH SIGNALS")) || !bytes.Contains(page, []byte(grace)) {
		t.Errorf("man page lacks a SIGNALS section stating the grace (%q)", grace)
	}
}

func TestRefusals(t *testing.T) {
	dir, b, c := images(t, 64<<20, 8<<20)
	cacheBefore, _ := os.ReadFile(c)
	for _, tc := range []struct {
		name string
		args []string
		code int // 2: usage error; 1: refusal
		want string
	}{
		{"bad name", []string{"a/b", b, c}, 2, "only letters"},
		{"long name", []string{strings.Repeat("x", 65), b, c}, 2, "1 to 64"},
		{"odd optional args", []string{"v", b, c, "writeback_threshold"}, 2, "wb-create: optional args come in KEY VALUE pairs: writeback_threshold has no value"},
		{"out of range", []string{"v", b, c, "writeback_threshold", "101"}, 2, "wb-create: writeback_threshold: 101 is out of range 0..100"},
		{"backing timeout 0", []string{"--backing-timeout", "0", "v", b, c}, 2, "wb-create: --backing-timeout 0s: want a positive duration"},
		{"unknown key", []string{"v", b, c, "bogus", "1"}, 2, "wb-create: unknown tunable \"bogus\""},
		{"bad listen", []string{"--listen", "udp://x:1", "v", b, c}, 2, "want tcp://HOST:PORT"},
		{"missing backing", []string{"v", filepath.Join(dir, "nope"), c}, 1, "wb-create: backing device " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"missing cache", []string{"v", b, filepath.Join(dir, "nope")}, 1, "wb-create: cache device " + filepath.Join(dir, "nope") + ": no such file or directory"},
		{"cache a directory", []string{"v", b, dir}, 1, "wb-create: cache device " + dir + ": not a regular file or block device"},
		{"unformatted", []string{"v", b, c}, 1, "wb-format-cache " + c + ", or start with --reformat"},
		{"cache too small", []string{"--reformat", "v", b, b + ".small"}, 1, "cache device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runOnce(t, tc.args...)
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			if code != tc.code || !strings.HasPrefix(last, "wb-create: ") || !strings.Contains(last, tc.want) {
				t.Fatalf("exit %d, stderr %q; want exit %d and a line naming %q", code, stderr, tc.code, tc.want)
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Fatal(stderr)
			}
			// One prefix: no package's words after the command's.
			for _, noise := range []string{"control:", "blockdev:", "vocab:", "engine:", "bad message", "identify"} {
				if strings.Contains(last, noise) {
					t.Errorf("%q repeats %q", last, noise)
				}
			}
		})
	}
	if after, _ := os.ReadFile(c); !bytes.Equal(cacheBefore, after) {
		t.Fatal("a refused start changed the cache device")
	}
	if code, _, stderr := runOnce(t, "only-name"); code == 0 || !strings.Contains(stderr, "expected") {
		t.Fatalf("missing args: exit %d %q", code, stderr)
	}
}

// volumeRun is one wb-create running in the test's process.
type volumeRun struct {
	sig    chan os.Signal
	done   chan int // run's exit code, once
	exited bool     // done was received
	stderr *syncBuffer
}

func start(t *testing.T, args ...string) *volumeRun {
	t.Helper()
	r := &volumeRun{sig: make(chan os.Signal, 2), done: make(chan int, 1), stderr: &syncBuffer{}}
	go func() { r.done <- run(args, &syncBuffer{}, r.stderr, r.sig) }()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.stderr.String(), "msg=ready") {
		select {
		case code := <-r.done:
			r.exited = true
			t.Fatalf("wb-create exited %d before ready: %s", code, r.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s: %s", r.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !r.exited {
			r.sig <- syscall.SIGTERM
			<-r.done
		}
	})
	return r
}

func (r *volumeRun) stop(t *testing.T) {
	t.Helper()
	r.sig <- syscall.SIGTERM
	r.waitExit(t, "stop")
}

// waitExit waits up to 20 s for wb-create to exit 0 after what (a signal,
// a remove message) stopped it.
func (r *volumeRun) waitExit(t *testing.T, what string) {
	t.Helper()
	select {
	case code := <-r.done:
		r.exited = true
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", what, code, r.stderr)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: no clean exit within 20s: %s", what, r.stderr)
	}
}

func dial(t *testing.T, name string) *nbdclient.Client {
	t.Helper()
	uri := "nbd+unix:///" + name + "?socket=" + control.SocketPath(control.RunDir(), name)
	c, err := nbdclient.Dial(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestServeStopRestart is the life of a volume: start with --reformat,
// write over NBD, status and a message over the control socket, a second
// start of the same name refused, SIGTERM, restart without --reformat and
// the data is still there.
func TestServeStopRestart(t *testing.T) {
	_, b, c := images(t, 64<<20, 8<<20)
	r := start(t, "--reformat", "--listen", "tcp://127.0.0.1:0", "vol", b, c, "read_cache_threshold", "8")
	st, err := control.ReadState(control.RunDir(), "vol")
	if err != nil || st.PID != os.Getpid() || st.SizeBytes != 64<<20 || len(st.Listen) != 1 {
		t.Fatalf("state %+v: %v", st, err)
	}
	fi, err := os.Stat(control.SocketPath(control.RunDir(), "vol"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("NBD socket: %v %v", fi, err)
	}

	nc := dial(t, "vol")
	if nc.Size() != 64<<20 {
		t.Fatalf("size %d", nc.Size())
	}
	data := bytes.Repeat([]byte("writeboost"), 1000) // 10000 bytes: partial blocks at both ends
	if err := nc.WriteAt(data, 12345, false); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := nc.ReadAt(got, 12345); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	nc.Close()

	cl, err := control.Dial("vol")
	if err != nil {
		t.Fatal(err)
	}
	s, err := cl.Status()
	if err != nil || s.Name != "vol" || s.NrDirtyCacheBlocks == 0 || s.Tunables.ReadCacheThreshold != 8 {
		t.Fatalf("status %+v: %v", s, err)
	}
	if tab, err := cl.Table(); err != nil || tab != "0 131072 writeboost "+b+" "+c+" 2 read_cache_threshold 8" {
		t.Fatalf("table %q: %v", tab, err)
	}
	if out, err := cl.Message(context.Background(), message(t, "writeback_threshold", "50")); err != nil || out != "" {
		t.Fatalf("message: %q %v", out, err)
	}
	if _, err := cl.Message(context.Background(), vocab.Message{Kind: vocab.MsgSetTunable, Tunable: vocab.NrReadCacheCells, Value: 5}); err == nil {
		t.Fatal("a static option was accepted at run time")
	}
	cl.Close()

	if code, _, stderr := runOnce(t, "vol", b, c); code != 1 || !strings.Contains(stderr, "vol") {
		t.Fatalf("second start of a live name: exit %d %q", code, stderr)
	}

	r.stop(t)
	for _, p := range []string{control.SocketPath(control.RunDir(), "vol"), control.ControlPath(control.RunDir(), "vol"), control.StatePath(control.RunDir(), "vol")} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left after a clean stop: %v", p, err)
		}
	}

	// Restart without --reformat: the log replays and serves the same bytes.
	r = start(t, "vol", b, c)
	nc = dial(t, "vol")
	clear(got)
	if err := nc.ReadAt(got, 12345); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %v", err)
	}
	nc.Close()
	r.stop(t)
}

// TestRemoveMessage: `remove` writes everything back and stops the
// volume; the backing file alone then holds the data.
func TestRemoveMessage(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	r := start(t, "--reformat", "rm", b, c)
	nc := dial(t, "rm")
	data := bytes.Repeat([]byte{0x5a}, 8192)
	if err := nc.WriteAt(data, 1<<20, true); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	cl, err := control.Dial("rm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Message(context.Background(), message(t, "remove")); err != nil {
		t.Fatal(err)
	}
	cl.Close()
	r.waitExit(t, "remove")
	raw, err := os.ReadFile(b)
	if err != nil || !bytes.Equal(raw[1<<20:1<<20+8192], data) {
		t.Fatalf("backing file does not hold the data after remove: %v", err)
	}
	cache, err := blockdev.OpenFile(c, blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	backing, err := blockdev.OpenFile(b, blockdev.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer backing.Close()
	v, err := engine.Open(engine.Config{Backing: backing, Cache: cache})
	if err == nil {
		if n := v.Status().NrDirtyCacheBlocks; n != 0 {
			t.Errorf("%d dirty blocks after remove", n)
		}
		v.Close()
	}
}

// clientsOf reads nr_clients from the volume's status.
func clientsOf(t *testing.T, cl *control.Client) uint64 {
	t.Helper()
	s, err := cl.Status()
	if err != nil {
		t.Fatal(err)
	}
	if s.NrClients == nil {
		t.Fatal("status without nr_clients")
	}
	return *s.NrClients
}

// waitClients waits up to 10 s for the status to count want NBD clients:
// the server sees a client that hung up a moment later.
func waitClients(t *testing.T, cl *control.Client, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for clientsOf(t, cl) != want {
		if time.Now().After(deadline) {
			t.Fatalf("nr_clients = %d after 10s, want %d", clientsOf(t, cl), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestRemoveRefusedWhileConnected: with NBD clients connected (unix and
// TCP) the status counts them and remove is refused with the count, the
// volume serving on untouched; once they leave, remove stops it. remove
// --force stops a volume with a client connected.
func TestRemoveRefusedWhileConnected(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	// A free port: the state file records the address as given.
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pl.Addr().String()
	pl.Close()
	r := start(t, "--reformat", "--listen", "tcp://"+addr, "busy", b, c)
	cl, err := control.Dial("busy")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if n := clientsOf(t, cl); n != 0 {
		t.Fatalf("nr_clients = %d before any client", n)
	}
	nc := dial(t, "busy")
	tc, err := nbdclient.Dial(context.Background(), "nbd://"+addr+"/busy")
	if err != nil {
		t.Fatal(err)
	}
	if n := clientsOf(t, cl); n != 2 {
		t.Fatalf("nr_clients = %d with a unix and a TCP client", n)
	}
	data := bytes.Repeat([]byte{0xa5}, 4096)
	if err := nc.WriteAt(data, 8192, true); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"remove"}, {"remove", "--no-writeback"}} {
		_, err := cl.Message(context.Background(), message(t, args...))
		want := "remove refused: 2 NBD clients are connected to busy; disconnect them first, or remove --force"
		if err == nil || err.Error() != want {
			t.Fatalf("%q with 2 clients: %v, want %q", args, err, want)
		}
	}
	select {
	case code := <-r.done:
		r.exited = true
		t.Fatalf("wb-create exited %d after a refused remove", code)
	default:
	}
	got := make([]byte, len(data))
	if err := tc.ReadAt(got, 8192); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the volume does not serve its data after a refused remove: %v", err)
	}
	tc.Close()
	waitClients(t, cl, 1)
	if _, err := cl.Message(context.Background(), message(t, "remove")); err == nil || !strings.Contains(err.Error(), "1 NBD client is connected") {
		t.Fatalf("remove with 1 client: %v", err)
	}
	nc.Close()
	waitClients(t, cl, 0)
	if _, err := cl.Message(context.Background(), message(t, "remove")); err != nil {
		t.Fatalf("remove with no clients: %v", err)
	}
	r.waitExit(t, "remove")

	// --force: stops with a client connected, which is disconnected.
	r = start(t, "busy", b, c)
	nc = dial(t, "busy")
	defer nc.Close()
	cl2, err := control.Dial("busy")
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if _, err := cl2.Message(context.Background(), message(t, "remove", "--force")); err != nil {
		t.Fatalf("remove --force with a client: %v", err)
	}
	r.waitExit(t, "remove --force")
	if err := nc.ReadAt(got, 8192); err == nil {
		t.Error("the client still reads after remove --force stopped the volume")
	}
	raw, err := os.ReadFile(b)
	if err != nil || !bytes.Equal(raw[8192:8192+4096], data) {
		t.Fatalf("backing file lacks the data after remove --force: %v", err)
	}
}

// message parses the words of a message.
func message(t *testing.T, words ...string) vocab.Message {
	t.Helper()
	m, err := vocab.ParseMessage(words)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
