package sectorio_test

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/layout"
	"github.com/writeboost/writeboost/internal/sectorio"
)

// write is one WriteAt a device saw.
type write struct {
	off  int64
	data []byte
}

// recorder records every write, in the order they reached it.
type recorder struct {
	mu     sync.Mutex
	writes []write
}

func (r *recorder) WriteAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, write{off, bytes.Clone(p)})
	return len(p), nil
}

// sorted returns the writes by offset, as [sector, sectors] pairs.
func (r *recorder) sorted() [][2]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var runs [][2]int64
	for _, w := range r.writes {
		runs = append(runs, [2]int64{w.off >> layout.SectorShift, int64(len(w.data)) >> layout.SectorShift})
	}
	slices.SortFunc(runs, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
	return runs
}

// add is one Stage.Add: n sectors at sector.
type add struct {
	sector int64
	n      int
}

// sectorByte is the content a test gives sector s: every byte of it.
func sectorByte(s int64) byte { return byte(s%251 + 1) }

// stage adds adds to a real Stage (filling each sector with sectorByte)
// and to a counting one.
func stage(t *testing.T, adds []add) (real, count *sectorio.Stage) {
	t.Helper()
	total := 0
	for _, a := range adds {
		total += a.n
	}
	real, count = sectorio.NewStage(total), sectorio.NewCount()
	for _, a := range adds {
		p := real.Add(a.sector, a.n)
		if len(p) != a.n*layout.SectorSize {
			t.Fatalf("Add(%d, %d) gave %d bytes", a.sector, a.n, len(p))
		}
		for j := range a.n {
			copy(p[j*layout.SectorSize:(j+1)*layout.SectorSize], bytes.Repeat([]byte{sectorByte(a.sector + int64(j))}, layout.SectorSize))
		}
		if p := count.Add(a.sector, a.n); p != nil {
			t.Fatalf("a counting Stage's Add gave %d bytes", len(p))
		}
	}
	return real, count
}

// TestMergeRules: adjacent sectors merge into one write, a gap splits
// them, whole blocks merge like sectors, and each write carries the data
// staged for its sectors; a counting Stage counts the same runs.
func TestMergeRules(t *testing.T) {
	spb := int64(layout.SectorsPerBlock)
	for _, tc := range []struct {
		name string
		adds []add
		want [][2]int64 // [sector, sectors] per write
	}{
		{"nothing", nil, nil},
		{"one sector", []add{{7, 1}}, [][2]int64{{7, 1}}},
		{"adjacent sectors", []add{{3, 1}, {4, 1}, {5, 1}}, [][2]int64{{3, 3}}},
		{"a gap of one sector", []add{{3, 1}, {5, 1}}, [][2]int64{{3, 1}, {5, 1}}},
		{"gaps", []add{{0, 1}, {1, 1}, {9, 1}, {100, 1}, {101, 1}}, [][2]int64{{0, 2}, {9, 1}, {100, 2}}},
		{"full blocks", []add{{0, 8}, {8, 8}, {24, 8}}, [][2]int64{{0, 16}, {24, 8}}},
		{"sectors across a block boundary", []add{{6, 1}, {7, 1}, {8, 1}, {9, 1}}, [][2]int64{{6, 4}}},
		{"a block after sectors", []add{{6, 1}, {7, 1}, {8, 8}, {16, 1}}, [][2]int64{{6, 11}}},
		{"the tail and head of neighbouring blocks", []add{{4, 4}, {8, 4}, {20, 4}, {24, 4}}, [][2]int64{{4, 8}, {20, 8}}},
		{"far apart", []add{{0, 1}, {1 << 40, 8}}, [][2]int64{{0, 1}, {1 << 40, 8}}},
		{"many blocks", func() (a []add) {
			for k := range int64(1000) {
				a = append(a, add{k * spb, int(spb)})
			}
			return a
		}(), [][2]int64{{0, 1000 * spb}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			real, count := stage(t, tc.adds)
			var sectors int64
			for _, w := range tc.want {
				sectors += w[1]
			}
			dev := &recorder{}
			if err := real.Write(dev); err != nil {
				t.Fatal(err)
			}
			if got := dev.sorted(); !slices.Equal(got, tc.want) {
				t.Fatalf("writes %v, want %v", got, tc.want)
			}
			for _, w := range dev.writes {
				for j := range len(w.data) / layout.SectorSize {
					s := w.off>>layout.SectorShift + int64(j)
					if got := w.data[j*layout.SectorSize : (j+1)*layout.SectorSize]; !bytes.Equal(got, bytes.Repeat([]byte{sectorByte(s)}, layout.SectorSize)) {
						t.Fatalf("sector %d written with the data of another", s)
					}
				}
			}
			for _, s := range []*sectorio.Stage{real, count} {
				if s.Runs() != len(tc.want) || s.Sectors() != sectors {
					t.Fatalf("Runs %d, Sectors %d; want %d, %d", s.Runs(), s.Sectors(), len(tc.want), sectors)
				}
			}
			if err := count.Write(nil); err != nil {
				t.Fatalf("a counting Stage's Write: %v", err)
			}
		})
	}
}

// TestAddMisuse: sectors out of order, twice, none, or more than the
// Stage holds are a caller's bug: Add panics rather than write them.
func TestAddMisuse(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		adds []add
	}{
		{"descending", 4, []add{{5, 1}, {4, 1}}},
		{"a sector twice", 4, []add{{5, 1}, {5, 1}}},
		{"overlapping blocks", 16, []add{{0, 8}, {7, 8}}},
		{"no sectors", 4, []add{{5, 0}}},
		{"full", 2, []add{{0, 1}, {1, 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			s := sectorio.NewStage(tc.size)
			for _, a := range tc.adds {
				s.Add(a.sector, a.n)
			}
		})
	}
}

// gate holds every write until the test releases it, one token a write,
// and records the writes in the order they reached it.
type gate struct {
	mu       sync.Mutex
	cond     *sync.Cond
	arrived  []int64 // offsets
	inFlight int
	max      int
	release  chan struct{}
}

func newGate() *gate {
	g := &gate{release: make(chan struct{})}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gate) WriteAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	g.arrived = append(g.arrived, off)
	g.inFlight++
	g.max = max(g.max, g.inFlight)
	g.cond.Broadcast()
	g.mu.Unlock()
	<-g.release
	g.mu.Lock()
	g.inFlight--
	g.mu.Unlock()
	return len(p), nil
}

// waitArrived waits until n writes have reached the gate and returns
// their offsets.
func (g *gate) waitArrived(t *testing.T, n int) []int64 {
	t.Helper()
	timer := time.AfterFunc(10*time.Second, func() {
		g.mu.Lock()
		g.cond.Broadcast()
		g.mu.Unlock()
	})
	defer timer.Stop()
	deadline := time.Now().Add(10 * time.Second)
	g.mu.Lock()
	defer g.mu.Unlock()
	for len(g.arrived) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d writes reached the device, want %d", len(g.arrived), n)
		}
		g.cond.Wait()
	}
	return slices.Clone(g.arrived)
}

// TestSubmissionOrderAndInFlight: the first InFlight runs go out at once,
// no more until one completes, and each completion lets in the next run in
// ascending order, so the device sees them ascending but for the first
// InFlight, which overlap.
func TestSubmissionOrderAndInFlight(t *testing.T) {
	const n = 3*sectorio.InFlight + 5
	var adds []add
	for k := range int64(n) {
		adds = append(adds, add{2 * k, 1}) // every other sector: no merging
	}
	s, _ := stage(t, adds)
	g := newGate()
	done := make(chan error, 1)
	go func() { done <- s.Write(g) }()

	first := g.waitArrived(t, sectorio.InFlight)
	time.Sleep(20 * time.Millisecond) // a run past the bound would arrive now
	g.mu.Lock()
	if len(g.arrived) != sectorio.InFlight {
		t.Errorf("%d writes in flight at once, want %d", len(g.arrived), sectorio.InFlight)
	}
	g.mu.Unlock()
	slices.Sort(first)
	for k, off := range first {
		if off != int64(2*k)<<layout.SectorShift {
			t.Fatalf("first writes in flight %v: not the lowest %d runs", first, sectorio.InFlight)
		}
	}
	for k := sectorio.InFlight; k < n; k++ {
		g.release <- struct{}{}
		arrived := g.waitArrived(t, k+1)
		if off := arrived[k]; off != int64(2*k)<<layout.SectorShift {
			t.Fatalf("write %d submitted at sector %d, want %d", k, off>>layout.SectorShift, 2*k)
		}
	}
	for range sectorio.InFlight {
		g.release <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if g.max != sectorio.InFlight {
		t.Fatalf("at most %d writes in flight, want %d", g.max, sectorio.InFlight)
	}
}

// gatedFaulty passes writes to a Faulty: those it fails at once, one
// (hold) only once the Faulty has failed another, and the rest only when
// the test closes release, so that nothing but a failure frees a slot.
type gatedFaulty struct {
	f       *blockdev.Faulty
	failing map[int64]bool // offsets a rule fails
	hold    int64          // a failing offset that waits for another failure; -1: none
	release chan struct{}
	arrived atomic.Int64
}

func (g *gatedFaulty) WriteAt(p []byte, off int64) (int, error) {
	g.arrived.Add(1)
	switch {
	case off == g.hold:
		for deadline := time.Now().Add(10 * time.Second); g.f.Stats().Faults == 0 && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	case !g.failing[off]:
		<-g.release
	}
	return g.f.WriteAt(p, off)
}

// TestFirstError: a failed run stops new submissions, Write waits for the
// writes in flight and reports the lowest failed run, wrapping the
// device's error, even when a higher run failed first.
func TestFirstError(t *testing.T) {
	const n = 200
	var many []add
	for k := range int64(n) {
		many = append(many, add{2 * k, 1}) // every other sector: no merging
	}
	for _, tc := range []struct {
		name   string
		adds   []add
		bad    []int64 // sectors of the failing runs
		hold   int64   // the one failing after another; -1: none
		lowest int64
	}{
		{"one run", []add{{8, 8}}, []int64{8}, -1, 8},
		{"among many", many, []int64{2 * 5}, -1, 2 * 5},
		{"a higher run first", many, []int64{2 * 10, 2 * 12}, 2 * 10, 2 * 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := stage(t, tc.adds)
			g := &gatedFaulty{f: blockdev.NewFaulty(blockdev.NewMem(2 * n * layout.SectorSize)),
				failing: map[int64]bool{}, hold: tc.hold << layout.SectorShift, release: make(chan struct{})}
			for _, b := range tc.bad {
				g.f.Inject(blockdev.Rule{Ops: blockdev.OpWrite, Off: b << layout.SectorShift, Len: layout.SectorSize})
				g.failing[b<<layout.SectorShift] = true
			}
			done := make(chan error, 1)
			go func() { done <- s.Write(g) }()
			for deadline := time.Now().Add(10 * time.Second); g.f.Stats().Faults < int64(len(tc.bad)); {
				if time.Now().After(deadline) {
					t.Fatalf("%d faults, want %d", g.f.Stats().Faults, len(tc.bad))
				}
				time.Sleep(time.Millisecond)
			}
			close(g.release)
			err := <-done
			we, ok := errors.AsType[*sectorio.WriteError](err)
			if !ok || !errors.Is(err, blockdev.ErrInjected) {
				t.Fatalf("Write: %v, want a *WriteError wrapping the injected fault", err)
			}
			if we.Sector != tc.lowest || we.Failed != len(tc.bad) {
				t.Fatalf("WriteError %+v, want sector %d, %d failed", we, tc.lowest, len(tc.bad))
			}
			want := fmt.Sprintf("write %d bytes at offset %d: ", we.Bytes, tc.lowest<<layout.SectorShift)
			if !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("error %q, want it to start %q", err, want)
			}
			// Only the failures freed slots: no run past the first
			// InFlight was submitted.
			if a := g.arrived.Load(); a > sectorio.InFlight {
				t.Fatalf("%d writes submitted, want at most %d", a, sectorio.InFlight)
			}
		})
	}
}

// TestCountEqualsWrite: for random sets of sectors and blocks, a counting
// Stage reports exactly the writes and sectors a real Write makes.
func TestCountEqualsWrite(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 17))
	for range 200 {
		var adds []add
		next := int64(rng.IntN(16))
		for range rng.IntN(300) {
			n := 1
			if rng.IntN(3) == 0 {
				n = layout.SectorsPerBlock
			}
			adds = append(adds, add{next, n})
			next += int64(n) + int64(max(0, rng.IntN(6)-3)) // often adjacent
		}
		real, count := stage(t, adds)
		dev := &recorder{}
		if err := real.Write(dev); err != nil {
			t.Fatal(err)
		}
		var bytes int64
		for _, w := range dev.writes {
			bytes += int64(len(w.data))
		}
		if count.Runs() != len(dev.writes) || count.Sectors() != bytes>>layout.SectorShift ||
			real.Runs() != count.Runs() || real.Sectors() != count.Sectors() {
			t.Fatalf("counted %d writes of %d sectors; wrote %d of %d sectors", count.Runs(), count.Sectors(), len(dev.writes), bytes>>layout.SectorShift)
		}
	}
}

// TestReset: a Stage reset and refilled writes only what was added after
// the reset, from the start of its buffer, and keeps its capacity.
func TestReset(t *testing.T) {
	s := sectorio.NewStage(16)
	if s.Cap() != 16 {
		t.Fatalf("Cap %d, want 16", s.Cap())
	}
	copy(s.Add(100, 8), bytes.Repeat([]byte{1}, 8*layout.SectorSize))
	s.Reset()
	if s.Runs() != 0 || s.Sectors() != 0 || s.Cap() != 16 {
		t.Fatalf("after Reset: %d runs, %d sectors, cap %d", s.Runs(), s.Sectors(), s.Cap())
	}
	copy(s.Add(40, 16), bytes.Repeat([]byte{2}, 16*layout.SectorSize)) // below the old run, the whole buffer
	dev := &recorder{}
	if err := s.Write(dev); err != nil {
		t.Fatal(err)
	}
	if len(dev.writes) != 1 || dev.writes[0].off != 40*layout.SectorSize || !bytes.Equal(dev.writes[0].data, bytes.Repeat([]byte{2}, 16*layout.SectorSize)) {
		t.Fatalf("after Reset and one Add: writes %d, want one of 16 sectors at sector 40", len(dev.writes))
	}
	if c := sectorio.NewCount(); c.Cap() != 0 {
		t.Fatalf("a counting Stage's Cap is %d, want 0", c.Cap())
	}
}

// shortReader returns at most max bytes a read, with no error.
type shortReader struct{ max int }

func (r shortReader) ReadAt(p []byte, off int64) (int, error) { return min(len(p), r.max), nil }

func TestReadFull(t *testing.T) {
	dev := blockdev.NewMem(8192)
	p := make([]byte, 4096)
	if err := sectorio.ReadFull(dev, p, 4096); err != nil {
		t.Fatal(err)
	}
	if err := sectorio.ReadFull(shortReader{512}, p, 4096); !errors.Is(err, io.ErrUnexpectedEOF) || err.Error() != "at byte 4608: unexpected EOF" {
		t.Fatalf("short read: %v", err)
	}
	if err := sectorio.ReadFull(dev, p, 8192); err == nil {
		t.Fatal("a read past the end succeeded")
	}
}
