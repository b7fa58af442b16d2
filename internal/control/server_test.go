package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/vocab"
)

// fakeVolume answers from fixed values and records messages. drop_caches
// blocks until its context ends or release is closed.
type fakeVolume struct {
	mu       sync.Mutex
	status   vocab.Status
	messages [][]string

	started chan struct{} // receives when drop_caches starts waiting
	release chan struct{} // closing it ends drop_caches successfully
	stopped chan error    // receives drop_caches's context error
}

func newFakeVolume() *fakeVolume {
	return &fakeVolume{
		status:  sampleStatus(),
		started: make(chan struct{}, 4),
		release: make(chan struct{}),
		stopped: make(chan error, 4),
	}
}

func (v *fakeVolume) Status() vocab.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.status
}

func (v *fakeVolume) Table() string {
	return FormatTableLine(TableLine{SizeBytes: v.Status().SizeBytes, Backing: "/b", Cache: "/c"})
}

func (v *fakeVolume) Message(ctx context.Context, m vocab.Message) (string, error) {
	args := m.Args()
	v.mu.Lock()
	v.messages = append(v.messages, args)
	v.mu.Unlock()
	switch args[0] {
	case "drop_caches":
		v.started <- struct{}{}
		select {
		case <-ctx.Done():
			v.stopped <- ctx.Err()
			return "", ctx.Err()
		case <-v.release:
			v.stopped <- nil
			return "", nil
		}
	case "writeback_threshold":
		return "", errors.New("engine says no")
	}
	return "done " + strings.Join(args, " "), nil
}

func (v *fakeVolume) recorded() [][]string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([][]string(nil), v.messages...)
}

// startServer serves v on dir/NAME.ctl until the test ends.
func startServer(t *testing.T, dir, name string, v Volume) string {
	t.Helper()
	l, err := Listen(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, l, v) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after cancel")
		}
	})
	return ControlPath(dir, name)
}

func dialT(t *testing.T, path string) *Client {
	t.Helper()
	c, err := DialPath(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestServeRequests(t *testing.T) {
	dir := t.TempDir()
	v := newFakeVolume()
	path := startServer(t, dir, "vol", v)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Errorf("control socket mode %v, want socket 0600", fi.Mode())
	}

	c := dialT(t, path)
	s, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if FormatStatusLine(s) != sampleLine {
		t.Errorf("status over the socket = %q, want %q", FormatStatusLine(s), sampleLine)
	}
	tab, err := c.Table()
	if err != nil || tab != "0 204800 writeboost /b /c" {
		t.Errorf("Table = %q, %v", tab, err)
	}
	res, err := send(context.Background(), c, "FLUSH")
	if err != nil || res != "done flush" {
		t.Errorf("Message(FLUSH) = %q, %v; want the canonical words passed on", res, err)
	}
	// Refused by validation before the volume sees it.
	_, err = send(context.Background(), c, "write_around_mode", "1")
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "can only be set when the volume is created") {
		t.Errorf("static option: %v", err)
	}
	// Refused by the volume.
	if _, err = send(context.Background(), c, "writeback_threshold", "5"); err == nil || err.Error() != "engine says no" {
		t.Errorf("volume error: %v", err)
	}
	// The connection survives errors.
	if _, err := c.Status(); err != nil {
		t.Errorf("status after errors: %v", err)
	}
	got := v.recorded()
	want := [][]string{{"flush"}, {"writeback_threshold", "5"}}
	if len(got) != len(want) || strings.Join(got[0], " ") != "flush" || strings.Join(got[1], " ") != "writeback_threshold 5" {
		t.Errorf("volume saw %q, want %q", got, want)
	}
}

// TestServeRawProtocol speaks the wire format directly: bad lines get an
// error response and the connection goes on; an overlong line ends it.
func TestServeRawProtocol(t *testing.T) {
	dir := t.TempDir()
	path := startServer(t, dir, "raw", newFakeVolume())
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	ask := func(line string) Response {
		t.Helper()
		if _, err := conn.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("after %q: %v", line, err)
		}
		var resp Response
		if err := json.Unmarshal(b, &resp); err != nil {
			t.Fatalf("response %q: %v", b, err)
		}
		return resp
	}
	for _, tc := range []struct{ line, wantErr string }{
		{`{"op":"status"`, "request"},
		{`{"op":"reboot"}`, `unknown op "reboot"`},
		{`{"op":"status","args":["x"]}`, "takes no args"},
		{`{"op":"message"}`, "needs args"},
		{`{"op":"message","args":["bogus"]}`, `unknown message "bogus"`},
		{`{"op":"status","extra":1}`, "unknown field"},
		{`{"op":"status"} {"op":"table"}`, "data after the JSON object"},
	} {
		resp := ask(tc.line)
		if resp.OK || !strings.Contains(resp.Error, tc.wantErr) {
			t.Errorf("%s -> %+v, want error containing %q", tc.line, resp, tc.wantErr)
		}
	}
	if resp := ask(`{"op":"status"}`); !resp.OK || resp.Status == nil || resp.Status.NrDirtyCacheBlocks != 391 {
		t.Errorf("status after bad lines: %+v", resp)
	}
	if resp := ask(strings.Repeat("x", MaxLineLen+10)); resp.OK || !strings.Contains(resp.Error, "longer than") {
		t.Errorf("overlong line: %+v", resp)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); err == nil {
		t.Error("connection still open after an overlong line")
	}
}

// TestMessageCancelledByDisconnect checks that a client going away cancels
// its running message, and that the volume and server go on serving.
func TestMessageCancelledByDisconnect(t *testing.T) {
	dir := t.TempDir()
	v := newFakeVolume()
	path := startServer(t, dir, "drop", v)

	c := dialT(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := send(ctx, c, "drop_caches")
		errc <- err
	}()
	select {
	case <-v.started:
	case <-time.After(5 * time.Second):
		t.Fatal("drop_caches did not start")
	}
	// Progress: a second connection polls status while the message runs.
	poll := dialT(t, path)
	if _, err := poll.Status(); err != nil {
		t.Fatalf("status during drop_caches: %v", err)
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client Message after cancel = %v, want context.Canceled", err)
	}
	select {
	case err := <-v.stopped:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("server-side drop_caches ended with %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server-side drop_caches was not cancelled by the disconnect")
	}
	if _, err := c.Status(); !errors.Is(err, ErrClosed) {
		t.Errorf("cancelled client: %v, want ErrClosed", err)
	}

	// A message that completes.
	c2 := dialT(t, path)
	go func() {
		<-v.started
		close(v.release)
	}()
	if _, err := send(context.Background(), c2, "drop_caches"); err != nil {
		t.Errorf("drop_caches: %v", err)
	}
}

// TestServeShutdown checks that cancelling Serve ends connections that
// are idle or running a message, and that Serve waits for them.
func TestServeShutdown(t *testing.T) {
	dir := t.TempDir()
	v := newFakeVolume()
	l, err := Listen(dir, "down")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, l, v) }()
	idle := dialT(t, ControlPath(dir, "down"))
	if _, err := idle.Status(); err != nil {
		t.Fatal(err)
	}
	busy := dialT(t, ControlPath(dir, "down"))
	msgErr := make(chan error, 1)
	go func() {
		_, err := send(context.Background(), busy, "drop_caches")
		msgErr <- err
	}()
	<-v.started
	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("Serve = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	if err := <-v.stopped; !errors.Is(err, context.Canceled) {
		t.Errorf("drop_caches at shutdown ended with %v", err)
	}
	if err := <-msgErr; err == nil {
		t.Error("message survived shutdown")
	}
	if _, err := os.Stat(ControlPath(dir, "down")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
	if _, err := DialPath(context.Background(), ControlPath(dir, "down")); !errors.Is(err, ErrNoVolume) {
		t.Errorf("dial after shutdown = %v, want ErrNoVolume", err)
	}
}

// stoppingVolume stops the server from inside Message, as a remove
// message does in wb-create.
type stoppingVolume struct {
	*fakeVolume
	stop context.CancelFunc
}

func (v stoppingVolume) Message(context.Context, vocab.Message) (string, error) {
	v.stop()
	time.Sleep(20 * time.Millisecond) // let the shutdown reach the connection first
	return "removing", nil
}

// TestReplyToRemoveSurvivesShutdown checks that the response of a message
// that stops the server still reaches the client.
func TestReplyToRemoveSurvivesShutdown(t *testing.T) {
	dir := t.TempDir()
	l, err := Listen(dir, "rm")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Serve(ctx, l, stoppingVolume{newFakeVolume(), cancel}) }()
	c := dialT(t, ControlPath(dir, "rm"))
	res, err := send(context.Background(), c, "remove")
	if err != nil || res != "removing" {
		t.Errorf("remove = %q, %v; want the reply despite the shutdown", res, err)
	}
	if err := <-errc; err != nil {
		t.Errorf("Serve = %v", err)
	}
	if _, err := c.Status(); err == nil {
		t.Error("status answered after shutdown")
	}
}

// TestRemoveRefusedWhileClientsConnected: the server refuses a remove
// without --force while the volume's status counts NBD clients, without
// asking the volume; --force, or no clients, passes it on; a volume that
// does not report the count (nil) is not refused.
func TestRemoveRefusedWhileClientsConnected(t *testing.T) {
	old := removeSettle
	removeSettle = 50 * time.Millisecond
	defer func() { removeSettle = old }()
	dir := t.TempDir()
	v := newFakeVolume()
	two := uint64(2)
	v.status.Name, v.status.NrClients = "vol", &two
	c := dialT(t, startServer(t, dir, "vol", v))
	setClients := func(n *uint64) {
		v.mu.Lock()
		v.status.NrClients = n
		v.mu.Unlock()
	}

	for _, args := range [][]string{{"remove"}, {"remove", "--no-writeback"}, {"REMOVE"}} {
		_, err := send(context.Background(), c, args...)
		var re *RemoteError
		want := "remove refused: 2 NBD clients are connected to vol; disconnect them first, or remove --force"
		if !errors.As(err, &re) || re.Msg != want {
			t.Errorf("%q with 2 clients: %v, want %q", args, err, want)
		}
	}
	if got := v.recorded(); len(got) != 0 {
		t.Fatalf("the volume received %q: a refused remove must not reach it", got)
	}
	// Other messages go on while clients are connected.
	if res, err := send(context.Background(), c, "flush"); err != nil || res != "done flush" {
		t.Errorf("flush with clients: %q %v", res, err)
	}
	if res, err := send(context.Background(), c, "remove", "--force", "--no-writeback"); err != nil || res != "done remove --no-writeback --force" {
		t.Errorf("remove --force with clients: %q %v", res, err)
	}
	zero := uint64(0)
	setClients(&zero)
	if res, err := send(context.Background(), c, "remove"); err != nil || res != "done remove" {
		t.Errorf("remove with no clients: %q %v", res, err)
	}
	setClients(nil)
	if res, err := send(context.Background(), c, "remove"); err != nil || res != "done remove" {
		t.Errorf("remove, clients unknown: %q %v", res, err)
	}
	want := []string{"flush", "remove --no-writeback --force", "remove", "remove"}
	var got []string
	for _, m := range v.recorded() {
		got = append(got, strings.Join(m, " "))
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the volume received %q, want %q", got, want)
	}
}

// leavingVolume counts clients that leave one per status request, as
// clients that hung up just before a remove are seen a moment later.
type leavingVolume struct {
	*fakeVolume
	mu      sync.Mutex
	clients uint64
	asked   int
}

func (v *leavingVolume) Status() vocab.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.fakeVolume.Status()
	n := v.clients
	s.NrClients = &n
	v.asked++
	v.clients -= min(v.clients, 1)
	return s
}

// TestRemoveWaitsForLeavingClients: clients that leave within
// removeSettle do not refuse the remove; the server asked until none
// were left.
func TestRemoveWaitsForLeavingClients(t *testing.T) {
	old := removeSettle
	removeSettle = 10 * time.Second
	defer func() { removeSettle = old }()
	v := &leavingVolume{fakeVolume: newFakeVolume(), clients: 3}
	c := dialT(t, startServer(t, t.TempDir(), "vol", v))
	if res, err := send(context.Background(), c, "remove"); err != nil || res != "done remove" {
		t.Fatalf("remove while 3 clients leave: %q %v", res, err)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.asked != 4 {
		t.Errorf("status asked %d times, want 4 (3, 2, 1, 0 clients)", v.asked)
	}
}

// hugeTable answers table requests with more than a socket buffer holds,
// and says on called when it did.
type hugeTable struct {
	*fakeVolume
	called chan struct{}
}

func (h hugeTable) Table() string {
	defer close(h.called)
	return strings.Repeat("x", 8<<20)
}

// TestClientThatStopsReading checks that a client which sends a request
// but never reads the response loses its connection once the response
// cannot be written within writeTimeout, instead of pinning the
// connection's goroutines until shutdown.
func TestClientThatStopsReading(t *testing.T) {
	old := writeTimeout
	writeTimeout = 100 * time.Millisecond
	defer func() { writeTimeout = old }()
	dir := t.TempDir()
	h := hugeTable{newFakeVolume(), make(chan struct{})}
	path := startServer(t, dir, "slow", h)
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(`{"op":"table"}` + "\n")); err != nil {
		t.Fatal(err)
	}
	<-h.called
	// The server's write starts now and times out meanwhile; the margin is
	// wide so that a loaded machine cannot delay the write past it.
	time.Sleep(20 * writeTimeout)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if err != nil {
		t.Fatalf("after %d bytes: %v; want the server to close the connection", n, err)
	}
	if n >= 8<<20 {
		t.Errorf("read %d bytes: the whole response was written", n)
	}
}

func TestServeNeedsUnixListener(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := Serve(context.Background(), l, newFakeVolume()); err == nil {
		t.Fatal("Serve on TCP succeeded")
	}
}

// TestPeerCredentials connects as other uids (needs root to switch uid):
// the owner of the run directory is served, anyone else is refused.
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching the client's uid needs root")
	}
	// A system python3: a per-user install (pyenv) is not executable by
	// the other uids.
	const python = "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("/usr/bin/python3 is needed to connect as another uid")
	}
	const owner, stranger = 4321, 1234
	base, err := os.MkdirTemp("", "wbpeer")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, owner, owner); err != nil {
		t.Fatal(err)
	}
	path := startServer(t, dir, "peer", newFakeVolume())
	// Let the stranger reach the socket so that SO_PEERCRED decides.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	const script = `import socket,sys
s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"op":"status"}\n'); sys.stdout.write(s.makefile().readline())`
	ask := func(uid uint32) Response {
		cmd := exec.Command(python, "-c", script, path)
		cmd.Dir, cmd.Env = "/", []string{"PATH=/usr/bin:/bin"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("client as uid %d: %v", uid, err)
		}
		var r Response
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("uid %d response %q: %v", uid, out, err)
		}
		return r
	}
	if r := ask(owner); !r.OK {
		t.Errorf("owner refused: %+v", r)
	}
	if r := ask(stranger); r.OK || !strings.Contains(r.Error, "permission denied") {
		t.Errorf("stranger: %+v, want permission denied", r)
	}
	if r := ask(0); !r.OK {
		t.Errorf("root refused: %+v", r)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"op":"status"}`))
	f.Add([]byte(`{"op":"table"}`))
	f.Add([]byte(`{"op":"message","args":["writeback_threshold","50"]}`))
	f.Add([]byte(`{"op":"message","args":[]}`))
	f.Add([]byte(`{"op":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		r, err := DecodeRequest(line)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		switch r.Op {
		case OpStatus, OpTable:
			if len(r.Args) != 0 {
				t.Fatalf("%s with args %q", r.Op, r.Args)
			}
		case OpMessage:
			if len(r.Args) == 0 || len(r.Args) > MaxArgs {
				t.Fatalf("message with %d args", len(r.Args))
			}
		default:
			t.Fatalf("accepted op %q", r.Op)
		}
		// An accepted request survives re-encoding.
		b, err := encodeLine(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := DecodeRequest(b[:len(b)-1]); err != nil {
			t.Fatalf("re-encoded %q: %v", b, err)
		}
	})
}

// FuzzReadLine feeds the client's response reader arbitrary server output.
func FuzzReadLine(f *testing.F) {
	f.Add([]byte("{\"ok\":true}\n"))
	f.Add([]byte("no newline"))
	f.Add(bytes.Repeat([]byte("x"), MaxLineLen+2))
	f.Fuzz(func(t *testing.T, b []byte) {
		line, err := readLine(bufio.NewReaderSize(bytes.NewReader(b), 16))
		if err != nil {
			return
		}
		if len(line) > MaxLineLen {
			t.Fatalf("line of %d bytes accepted", len(line))
		}
		if !bytes.HasPrefix(b, append(line, '\n')) {
			t.Fatalf("line %q is not the first line of the input", line)
		}
	})
}

// send sends the words of a message as they are, unvalidated, as another
// client might: the server validates them.
func send(ctx context.Context, c *Client, args ...string) (string, error) {
	r, err := c.roundTrip(ctx, Request{Op: OpMessage, Args: args})
	if err != nil {
		return "", err
	}
	return r.Result, nil
}
