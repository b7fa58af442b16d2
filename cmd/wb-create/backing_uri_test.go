package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/nbd/nbdtest"
	"github.com/writeboost/writeboost/internal/superblock"
)

// BACKING as an NBD URI: the volume serves, stops cleanly, binds its cache
// to the URI (without TLS parameters), and restarts on it.
func TestBackingURI(t *testing.T) {
	_, b, c := images(t, 64<<20, 8<<20)
	sock := nbdtest.Nbdkit(t, "file", b)
	uri := "nbd+unix:///?socket=" + sock
	r := start(t, "--reformat", "vol", uri, c)
	nc := dial(t, "vol")
	if nc.Size() != 64<<20 {
		t.Fatalf("size %d", nc.Size())
	}
	data := bytes.Repeat([]byte("network!"), 4096)
	if err := nc.WriteAt(data, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	r.stop(t)

	cache, err := blockdev.OpenFile(c, blockdev.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	area, err := superblock.Read(cache)
	cache.Close()
	if err != nil || area.Binding == nil || area.Binding.Kind != "uri" || area.Binding.URI != uri || area.Binding.Size != 64<<20 {
		t.Fatalf("binding %+v: %v", area.Binding, err)
	}

	// Another export is refused, as another file would be.
	other := nbdtest.Nbdkit(t, "memory", "64M")
	if code, _, stderr := runOnce(t, "vol", "nbd+unix:///?socket="+other, c); code != 1 || !strings.Contains(stderr, "another URI") {
		t.Fatalf("start on another export: exit %d %q", code, stderr)
	}
	r = start(t, "vol", uri, c)
	nc = dial(t, "vol")
	got := make([]byte, len(data))
	if err := nc.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after restart: %v", err)
	}
	nc.Close()
	r.stop(t)
}

// A server without flush is refused unless --backing-no-flush-ok.
func TestBackingURINoFlush(t *testing.T) {
	_, _, c := images(t, 0, 8<<20)
	sock := nbdtest.Nbdkit(t, nbdtest.NoFlush...)
	uri := "nbd+unix:///?socket=" + sock
	if code, _, stderr := runOnce(t, "--reformat", "vol", uri, c); code != 1 || !strings.Contains(stderr, "--backing-no-flush-ok") {
		t.Fatalf("no flush: exit %d %q", code, stderr)
	}
	r := start(t, "--reformat", "--backing-no-flush-ok", "vol", uri, c)
	r.stop(t)
}
