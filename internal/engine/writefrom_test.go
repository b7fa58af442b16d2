package engine

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/vocab"
)

// pattern is n bytes that differ per block and per call (seed).
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed ^ byte(i*131+i>>12)
	}
	return p
}

// hookReader reads from r and calls hook once, after the first read.
type hookReader struct {
	r    io.Reader
	hook func()
}

func (h *hookReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.hook != nil {
		f := h.hook
		h.hook = nil
		f()
	}
	return n, err
}

func (r *rig) writeFrom(rd io.Reader, n int, off int64) {
	r.t.Helper()
	if err := r.v.WriteFrom(rd, n, off); err != nil {
		r.t.Fatalf("WriteFrom %d bytes at %d: %v", n, off, err)
	}
}

// readsBackAfterCrash checks that the volume reads want at off now, and
// again after a flush, a crash and a replay.
func (r *rig) readsBackAfterCrash(off int64, want []byte) {
	r.t.Helper()
	if got := r.read(off, len(want)); !bytes.Equal(got, want) {
		r.t.Fatal("volume differs from what was written")
	}
	r.flush()
	r.crash(nil)
	r.open()
	if got := r.read(off, len(want)); !bytes.Equal(got, want) {
		r.t.Fatal("after flush and crash: volume differs from what was written")
	}
}

// TestWriteFromSwaps: sequential 1 MiB writes behind a few blocks already in
// the open rambuf are read in place and committed by swapping buffers; the
// volume reads them back, and so does a replay after a flush and a crash.
func TestWriteFromSwaps(t *testing.T) {
	r := newRig(t, 32, 16<<20, nil)
	want := make([]byte, 16<<20)
	head := pattern(3*4096, 1)
	r.write(0, head) // three blocks in the open rambuf
	copy(want, head)
	for i := range 5 {
		off := int64(3*4096 + i<<20)
		p := pattern(1<<20, byte(10+i))
		r.writeFrom(bytes.NewReader(p), len(p), off)
		copy(want[off:], p)
	}
	if s, c := r.v.stageSwaps.Load(), r.v.stageCopies.Load(); s == 0 || c != 0 {
		t.Fatalf("stages: %d swapped, %d copied; want all swapped", s, c)
	}
	r.readsBackAfterCrash(0, want)
}

// TestWriteFromOverwritesOpenRambuf: a block the open rambuf already holds
// is overwritten in place, as WriteAt does, so the stage is copied.
func TestWriteFromOverwritesOpenRambuf(t *testing.T) {
	r := newRig(t, 8, 4<<20, nil)
	r.write(5*4096, pattern(4096, 1))
	p := pattern(64*4096, 2)
	r.writeFrom(bytes.NewReader(p), len(p), 0)
	if c := r.v.stageCopies.Load(); c == 0 {
		t.Fatal("stage swapped over a block the rambuf holds")
	}
	r.readsBackAfterCrash(0, p)
}

// TestWriteFromTakesEffectAtCommit: a write that lands while the payload is
// being read (into the same blocks, or elsewhere, moving the open rambuf on)
// is older than the WriteFrom, which commits after it.
func TestWriteFromTakesEffectAtCommit(t *testing.T) {
	for _, same := range []bool{true, false} {
		r := newRig(t, 8, 4<<20, nil)
		p := pattern(300*4096, 3) // three stages
		other := pattern(8*4096, 4)
		otherOff := int64(100 * 4096)
		if !same {
			otherOff = 2 << 20
		}
		hr := &hookReader{r: bytes.NewReader(p), hook: func() { r.write(otherOff, other) }}
		r.writeFrom(hr, len(p), 0)
		if c := r.v.stageCopies.Load(); c == 0 {
			t.Fatalf("same=%v: stages swapped although the open rambuf moved on", same)
		}
		check := func(when string) {
			if got := r.read(0, len(p)); !bytes.Equal(got, p) {
				t.Fatalf("same=%v, %s: WriteFrom's blocks differ", same, when)
			}
			if !same {
				if got := r.read(otherOff, len(other)); !bytes.Equal(got, other) {
					t.Fatalf("same=%v, %s: the other write's blocks differ", same, when)
				}
			}
		}
		check("before crash")
		r.flush()
		r.crash(nil)
		r.open()
		check("after flush and crash")
	}
}

// TestWriteFromReadFails: a payload that ends early fails the write, with
// the reader's error, and writes nothing of it (one round); the volume goes
// on.
func TestWriteFromReadFails(t *testing.T) {
	r := newRig(t, 8, 4<<20, nil)
	old := pattern(1<<20, 5)
	r.write(0, old)
	err := r.v.WriteFrom(io.LimitReader(bytes.NewReader(pattern(1<<20, 6)), 700<<10), 1<<20, 0)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("WriteFrom of a short payload: %v, want io.ErrUnexpectedEOF", err)
	}
	if got := r.read(0, len(old)); !bytes.Equal(got, old) {
		t.Fatal("a failed WriteFrom changed the volume")
	}
	p := pattern(1<<20, 7)
	r.writeFrom(bytes.NewReader(p), len(p), 0)
	if got := r.read(0, len(p)); !bytes.Equal(got, p) {
		t.Fatal("volume differs from what was written")
	}
}

// TestWriteFromNotWholeBlocks: sector-aligned and unaligned payloads, and
// write-around mode, take WriteAt's path.
func TestWriteFromNotWholeBlocks(t *testing.T) {
	for _, around := range []bool{false, true} {
		var tun vocab.Values
		if around {
			tun = vocab.Values{vocab.WriteAroundMode: 1}
		}
		r := newRig(t, 8, 4<<20, tun)
		want := make([]byte, 4<<20)
		for _, w := range []struct {
			off int64
			n   int
		}{{512, 64 << 10}, {4096, 100<<10 + 512}, {7, 300 << 10}, {8192, 256 << 10}} {
			p := pattern(w.n, byte(w.off))
			r.writeFrom(bytes.NewReader(p), w.n, w.off)
			copy(want[w.off:], p)
		}
		if got := r.read(0, len(want)); !bytes.Equal(got, want) {
			t.Fatalf("write-around %v: volume differs from what was written", around)
		}
	}
	r := newRig(t, 8, 4<<20, nil)
	if err := r.v.WriteFrom(bytes.NewReader(nil), 8192, 4<<20-4096); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("WriteFrom past the end: %v, want ErrOutOfRange", err)
	}
}

// TestWriteFromConcurrent: WriteFrom and WriteAt from many goroutines on
// overlapping ranges, with reads; each block ends as one whole write left
// it (no torn block), and a replay agrees with the volume.
func TestWriteFromConcurrent(t *testing.T) {
	r := newRig(t, 16, 2<<20, nil)
	const writers = 6
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range 20 {
				seed := byte(w*20 + i + 1)
				off := int64((w*37+i*11)%256) * 4096
				n := min(int64(4096*(1+(w*7+i*3)%300)), 2<<20-off)
				p := bytes.Repeat([]byte{seed}, int(n))
				var err error
				if (w+i)%3 == 0 {
					err = r.v.WriteAt(p, off, i%7 == 0)
				} else {
					err = r.v.WriteFrom(bytes.NewReader(p), len(p), off)
				}
				if err != nil {
					t.Error(err)
					return
				}
				q := make([]byte, 4096)
				if err := r.v.ReadAt(q, off); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	img := r.read(0, 2<<20)
	for b := 0; b < len(img); b += 4096 {
		if !bytes.Equal(img[b:b+4096], bytes.Repeat(img[b:b+1], 4096)) {
			t.Fatalf("block %d is torn", b/4096)
		}
	}
	r.readsBackAfterCrash(0, img)
	r.v.mu.Lock()
	r.v.checkInvariantsLocked()
	r.v.mu.Unlock()
}

// blockingReader blocks its first read until release is closed.
type blockingReader struct {
	r       io.Reader
	entered chan struct{}
	release chan struct{}
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.entered != nil {
		close(b.entered)
		b.entered = nil
		<-b.release
	}
	return b.r.Read(p)
}

// TestWriteFromStalledPayloadDoesNotHoldClose: while WriteFrom waits for
// its payload it is not a request in flight: Close does not wait for it,
// and it fails once the payload comes.
func TestWriteFromStalledPayloadDoesNotHoldClose(t *testing.T) {
	r := newRig(t, 8, 4<<20, nil)
	entered := make(chan struct{})
	br := &blockingReader{r: bytes.NewReader(pattern(1<<20, 1)), entered: entered, release: make(chan struct{})}
	errc := make(chan error, 1)
	v := r.v
	go func() { errc <- v.WriteFrom(br, 1<<20, 0) }()
	<-entered
	closed := make(chan error, 1)
	go func() { closed <- r.v.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a WriteFrom whose payload has not come")
	}
	r.v = nil
	close(br.release)
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteFrom after Close: %v, want ErrClosed", err)
	}
}
