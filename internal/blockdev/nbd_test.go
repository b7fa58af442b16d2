package blockdev

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/nbd"
	"github.com/writeboost/writeboost/internal/nbd/nbdtest"
)

// memExport serves a Mem over NBD: its crash simulation tells which
// writes the client made durable.
type memExport struct{ m *Mem }

func (e memExport) Size() int64 { return e.m.Size() }
func (e memExport) ReadAt(p []byte, off int64) error {
	_, err := e.m.ReadAt(p, off)
	return err
}
func (e memExport) WriteAt(p []byte, off int64, fua bool) error {
	var err error
	if fua {
		_, err = e.m.WriteAtFUA(p, off)
	} else {
		_, err = e.m.WriteAt(p, off)
	}
	return err
}
func (e memExport) Flush() error                             { return e.m.Sync() }
func (e memExport) Trim(off, n int64) error                  { return e.m.Discard(off, n) }
func (e memExport) WriteZeroes(off, n int64, fua bool) error { return nbdUnsupported }

var nbdUnsupported = errors.New("unsupported")

func serveMem(t *testing.T, m *Mem, opts nbd.Options) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "bdnbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	srv, err := nbd.NewServer([]nbd.Export{{Name: "b", Backend: memExport{m}}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return "nbd+unix:///b?socket=" + sock
}

func TestNBDDevice(t *testing.T) {
	m := NewMem(1 << 20)
	uri := serveMem(t, m, nbd.Options{})
	if !IsURI(uri) || IsURI("/dev/sda") {
		t.Fatal("IsURI")
	}
	d, err := OpenNBD(context.Background(), uri, NBDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != 1<<20 || d.URI() != uri || d.Conns() != defaultNBDConns || d.IOEngine() != "nbd" {
		t.Fatalf("size %d, uri %q, %d connections, engine %q", d.Size(), d.URI(), d.Conns(), d.IOEngine())
	}
	a, b := bytes.Repeat([]byte{1}, 4096), bytes.Repeat([]byte{2}, 4096)
	if _, err := d.WriteAt(a, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAtFUA(b, 4096); err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(b, 8192); err != nil { // never flushed
		t.Fatal(err)
	}
	got := make([]byte, 3*4096)
	if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, append(append(a, b...), b...)) {
		t.Fatalf("read back: %v", err)
	}
	// What a power loss keeps: the synced write and the FUA one.
	crashed := m.CrashClone()
	if _, err := crashed.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[:8192], append(a, b...)) || !bytes.Equal(got[8192:], make([]byte, 4096)) {
		t.Fatal("the durable writes are not what Sync and WriteAtFUA made durable")
	}
	if err := d.Discard(0, 4096); err != nil {
		t.Fatal(err)
	}
	d.Close()
	if _, err := d.ReadAt(got, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// Writes spread over several connections are all made durable by Sync;
// a server without multi-conn gets one connection.
func TestNBDMultiConn(t *testing.T) {
	m := NewMem(1 << 20)
	d, err := OpenNBD(context.Background(), serveMem(t, m, nbd.Options{}), NBDOptions{Conns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Conns() != 3 {
		t.Fatalf("%d connections, want 3", d.Conns())
	}
	want := make([]byte, 64*4096)
	for i := range 64 {
		p := bytes.Repeat([]byte{byte(i + 1)}, 4096)
		copy(want[i*4096:], p)
		if _, err := d.WriteAt(p, int64(i)*4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := m.CrashClone().ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after Sync and a crash: %v, equal %v", err, bytes.Equal(got, want))
	}

	one, err := OpenNBD(context.Background(), serveMem(t, NewMem(1<<20), nbd.Options{NoMultiConn: true}), NBDOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if one.Conns() != 1 {
		t.Fatalf("%d connections to a server without multi-conn", one.Conns())
	}
}

// A server without NBD_CMD_FLUSH is refused unless the caller says it has
// no volatile cache.
func TestNBDNoFlushRefused(t *testing.T) {
	sock := nbdtest.Nbdkit(t, nbdtest.NoFlush...)
	uri := "nbd+unix:///?socket=" + sock
	if _, err := OpenNBD(context.Background(), uri, NBDOptions{}); !errors.Is(err, ErrNoFlush) {
		t.Fatalf("server without flush: %v", err)
	}
	d, err := OpenNBD(context.Background(), uri, NBDOptions{NoFlushOK: true})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
}

// TestNBDStartWait: a server not yet listening is waited for, up to
// StartWait, and only then; without StartWait the open fails at once.
func TestNBDStartWait(t *testing.T) {
	dir, err := os.MkdirTemp("", "bdnbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	uri := "nbd+unix:///b?socket=" + sock
	opts := NBDOptions{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}

	start := time.Now()
	if _, err := OpenNBD(context.Background(), uri, opts); err == nil || time.Since(start) > time.Second {
		t.Fatalf("no server, no StartWait: %v after %v", err, time.Since(start))
	}
	opts.StartWait = 300 * time.Millisecond
	start = time.Now()
	_, err = OpenNBD(context.Background(), uri, opts)
	if took := time.Since(start); err == nil || took < 200*time.Millisecond || took > 2*time.Second {
		t.Fatalf("no server, StartWait 300ms: %v after %v", err, took)
	}

	opts.StartWait = 10 * time.Second
	srv, err := nbd.NewServer([]nbd.Export{{Name: "b", Backend: memExport{NewMem(1 << 20)}}}, nbd.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		l, err := net.Listen("unix", sock)
		if err != nil {
			done <- err
			return
		}
		done <- srv.Serve(ctx, l)
	}()
	t.Cleanup(func() { cancel(); <-done })
	start = time.Now()
	d, err := OpenNBD(context.Background(), uri, opts)
	if err != nil {
		t.Fatalf("server up after 300ms, StartWait 10s: %v after %v", err, time.Since(start))
	}
	d.Close()
	if took := time.Since(start); took < 250*time.Millisecond {
		t.Fatalf("opened after %v, before the server listened", took)
	}

	// A server that answers and refuses is not waited for.
	start = time.Now()
	if _, err := OpenNBD(context.Background(), "nbd+unix:///nosuch?socket="+sock, opts); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("no such export: %v after %v", err, time.Since(start))
	}
}
