package blockdev

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

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
	if d.Size() != 1<<20 || d.URI() != uri || d.Conns() != defaultNBDConns {
		t.Fatalf("size %d, uri %q, %d connections", d.Size(), d.URI(), d.Conns())
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
