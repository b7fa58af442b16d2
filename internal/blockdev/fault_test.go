package blockdev

import (
	"bytes"
	"errors"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// outcomes runs op n times and returns which attempts failed (1-based).
func outcomes(t *testing.T, n int, op func() error) []int {
	t.Helper()
	var failed []int
	for i := 1; i <= n; i++ {
		if err := op(); err != nil {
			if !errors.Is(err, syscall.EIO) || !errors.Is(err, ErrInjected) {
				t.Fatalf("attempt %d: %v does not wrap EIO and ErrInjected", i, err)
			}
			failed = append(failed, i)
		}
	}
	return failed
}

func TestFaultyRules(t *testing.T) {
	buf := make([]byte, 512)
	cases := []struct {
		name string
		rule Rule
		op   func(f *Faulty) error
		want []int
	}{
		{"next 3 writes", Rule{Ops: OpWrite, Times: 3},
			func(f *Faulty) error { _, err := f.WriteAt(buf, 0); return err }, []int{1, 2, 3}},
		{"every 4th read", Rule{Ops: OpRead, Every: 4},
			func(f *Faulty) error { _, err := f.ReadAt(buf, 0); return err }, []int{4, 8}},
		{"skip 2 then 1 sync", Rule{Ops: OpSync, Skip: 2, Times: 1},
			func(f *Faulty) error { return f.Sync() }, []int{3}},
		{"permanent discard", Rule{Ops: OpDiscard},
			func(f *Faulty) error { return f.Discard(0, 512) }, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"every 3rd, twice", Rule{Ops: OpWrite, Every: 3, Times: 2},
			func(f *Faulty) error { _, err := f.WriteAt(buf, 0); return err }, []int{3, 6}},
		{"reads only, writes pass", Rule{Ops: OpRead},
			func(f *Faulty) error { _, err := f.WriteAt(buf, 0); return err }, nil},
		{"range elsewhere", Rule{Ops: OpAll, Off: 4096, Len: 4096},
			func(f *Faulty) error { _, err := f.WriteAt(buf, 3584); return err }, nil},
		{"range overlap", Rule{Ops: OpAll, Off: 4096, Len: 4096},
			func(f *Faulty) error { _, err := f.WriteAt(buf, 3585); return err }, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"ranged rule ignores sync", Rule{Ops: OpAll, Off: 0, Len: 1 << 20},
			func(f *Faulty) error { return f.Sync() }, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := NewFaulty(NewMem(1 << 20))
			f.Inject(c.rule)
			if got := outcomes(t, 10, func() error { return c.op(f) }); !slices.Equal(got, c.want) {
				t.Fatalf("failed attempts %v, want %v", got, c.want)
			}
			if got := f.Stats().Faults; got != int64(len(c.want)) {
				t.Fatalf("Stats().Faults = %d, want %d", got, len(c.want))
			}
		})
	}
}

func TestFaultyFailedOpsDoNothing(t *testing.T) {
	m := NewMem(8192)
	f := NewFaulty(m)
	id := f.Inject(Rule{Ops: OpWrite | OpDiscard})
	mustWrite(t, m, 0, pattern(1, 4096))
	if n, err := f.WriteAt(pattern(2, 4096), 0); n != 0 || err == nil {
		t.Fatalf("write: n=%d err=%v, want a failure", n, err)
	}
	if err := f.Discard(0, 4096); err == nil {
		t.Fatal("discard passed")
	}
	if got := mustRead(t, m, 0, 4096); !bytes.Equal(got, pattern(1, 4096)) {
		t.Fatal("a failed write or discard reached the device")
	}
	f.Remove(id)
	mustWrite(t, f, 0, pattern(3, 4096))
	if got := mustRead(t, m, 0, 4096); !bytes.Equal(got, pattern(3, 4096)) {
		t.Fatal("write after Remove did not reach the device")
	}
	f.Inject(Rule{Ops: OpAll})
	if _, err := f.ReadAt(make([]byte, 512), 0); err == nil {
		t.Fatal("read passed a permanent rule")
	}
	f.Clear()
	if got := mustRead(t, f, 0, 4096); !bytes.Equal(got, pattern(3, 4096)) {
		t.Fatal("read after Clear differs")
	}
	want := FaultStats{Reads: 2, Writes: 2, Discards: 1, Faults: 3}
	if got := f.Stats(); got != want {
		t.Fatalf("Stats = %+v, want %+v", got, want)
	}
	if f.Size() != 8192 || f.Inner() != Device(m) {
		t.Fatal("Size or Inner do not pass through")
	}
}

func TestFaultyTear(t *testing.T) {
	for _, tc := range []struct {
		at, wantN int64
	}{{1536, 1536}, {0, 0}, {9000, 4096}} {
		m := NewMem(8192)
		f := NewFaulty(m)
		f.Inject(Rule{Ops: OpWrite, Times: 1, Tear: true, TearAt: tc.at})
		p := pattern(4, 4096)
		n, err := f.WriteAt(p, 4096)
		if int64(n) != tc.wantN || !errors.Is(err, syscall.EIO) {
			t.Fatalf("tear at %d: n=%d err=%v, want %d and EIO", tc.at, n, err, tc.wantN)
		}
		got := mustRead(t, m, 4096, 4096)
		want := append(append([]byte(nil), p[:tc.wantN]...), make([]byte, 4096-tc.wantN)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("tear at %d: device holds the wrong bytes", tc.at)
		}
		// Times: 1 retired the rule.
		mustWrite(t, f, 4096, p)
	}
}

// TestFaultyTearTail: a tail tear stores the write from TearAt on and
// leaves the bytes before it as they were; MinLen lets shorter writes
// pass.
func TestFaultyTearTail(t *testing.T) {
	m := NewMem(16384)
	f := NewFaulty(m)
	old := pattern(1, 8192)
	mustWrite(t, f, 4096, old)
	f.Inject(Rule{Ops: OpWrite, MinLen: 4097, Times: 1, Tear: true, TearTail: true, TearAt: 512})
	mustWrite(t, f, 0, pattern(2, 4096)) // 4096 bytes: shorter than MinLen, passes
	p := pattern(3, 8192)
	if n, err := f.WriteAt(p, 4096); n != 0 || !errors.Is(err, syscall.EIO) {
		t.Fatalf("tail tear: n=%d err=%v, want 0 and EIO", n, err)
	}
	want := append(append([]byte(nil), old[:512]...), p[512:]...)
	if got := mustRead(t, m, 4096, 8192); !bytes.Equal(got, want) {
		t.Fatal("tail tear: the device does not hold the old first sector and the new rest")
	}
	if got := mustRead(t, m, 0, 4096); !bytes.Equal(got, pattern(2, 4096)) {
		t.Fatal("the short write did not pass")
	}
}

func TestFaultyConcurrent(t *testing.T) {
	f := NewFaulty(NewMem(1 << 20))
	f.Inject(Rule{Ops: OpWrite, Every: 5})
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 512)
			for i := range 100 {
				if _, err := f.WriteAt(buf, int64(g*100+i)*512); err != nil {
					mu.Lock()
					failed++
					mu.Unlock()
				}
				if i == 50 && g == 0 {
					f.Inject(Rule{Ops: OpRead, Times: 1})
				}
			}
		})
	}
	wg.Wait()
	if failed != 80 {
		t.Fatalf("%d of 400 writes failed, want every 5th = 80", failed)
	}
	if s := f.Stats(); s.Writes != 400 || s.Faults != 80 {
		t.Fatalf("Stats = %+v", s)
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{OpRead: "read", OpWrite | OpSync: "write|sync", OpAll: "read|write|sync|discard", 0: "none"} {
		if got := op.String(); got != want {
			t.Errorf("%d: %q, want %q", op, got, want)
		}
	}
}

// TestFaultyDie cuts the power at the third write: it is torn, everything
// after it fails, and a crash clone of the Mem below holds exactly the
// synced writes.
func TestFaultyDie(t *testing.T) {
	m := NewMem(64 << 10)
	f := NewFaulty(m)
	f.Inject(Rule{Ops: OpWrite, Skip: 2, Times: 1, Tear: true, TearAt: 512, Die: true})
	mustWrite(t, f, 0, pattern(1, 4096))
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, 4096, pattern(2, 4096))
	if n, err := f.WriteAt(pattern(3, 4096), 8192); n != 512 || !errors.Is(err, ErrInjected) {
		t.Fatalf("third write: n=%d err=%v, want torn at 512", n, err)
	}
	if !f.Dead() {
		t.Fatal("device alive after a Die rule fired")
	}
	if _, err := f.ReadAt(make([]byte, 512), 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read on a dead device: %v", err)
	}
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("sync on a dead device: %v", err)
	}
	if m.Unsynced() != 2 {
		t.Fatalf("Mem saw %d unsynced writes, want 2 (the second and the torn third)", m.Unsynced())
	}
	c := m.CrashClone()
	if got := mustRead(t, c, 0, 12288); !bytes.Equal(got[:4096], pattern(1, 4096)) || !bytes.Equal(got[4096:], make([]byte, 8192)) {
		t.Fatal("crash clone does not hold exactly the synced write")
	}
	f.Clear()
	if f.Dead() {
		t.Fatal("Clear did not revive the device")
	}
	mustWrite(t, f, 0, pattern(4, 512))
}

// plainDevice hides a device's WriteAtFUA.
type plainDevice struct{ Device }

func TestFaultyFUA(t *testing.T) {
	m := NewMem(1 << 20)
	f := NewFaulty(m)
	p := bytes.Repeat([]byte{7}, 4096)
	if _, err := f.WriteAtFUA(p, 8192); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if _, err := m.CrashClone().ReadAt(got, 8192); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("a FUA write through Faulty is not durable: %v", err)
	}
	if st := f.Stats(); st.FUAWrites != 1 || st.Writes != 1 || st.Syncs != 0 {
		t.Fatalf("stats %+v", st)
	}
	f.Inject(Rule{Ops: OpWrite, Times: 1})
	if _, err := f.WriteAtFUA(p, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("a write rule does not fail a FUA write: %v", err)
	}
	// Over a device without FUA: a write and a sync, which a sync rule fails.
	g := NewFaulty(plainDevice{NewMem(1 << 20)})
	g.Inject(Rule{Ops: OpSync, Times: 1})
	if _, err := g.WriteAtFUA(p, 0); !errors.Is(err, ErrInjected) {
		t.Fatalf("a sync rule does not fail an emulated FUA write: %v", err)
	}
	if _, err := g.WriteAtFUA(p, 0); err != nil {
		t.Fatal(err)
	}
	if st := g.Stats(); st.FUAWrites != 2 || st.Syncs != 2 {
		t.Fatalf("emulated FUA stats %+v", st)
	}
}

func TestSlowFUA(t *testing.T) {
	m := NewMem(1 << 20)
	s := NewSlow(m, time.Millisecond, 0)
	p := bytes.Repeat([]byte{9}, 4096)
	start := time.Now()
	if _, err := s.WriteAtFUA(p, 0); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 2*time.Millisecond {
		t.Fatalf("a FUA write on the slow disk took %v, want a write and a flush (2 ms)", d)
	}
	got := make([]byte, 4096)
	if _, err := m.CrashClone().ReadAt(got, 0); err != nil || !bytes.Equal(got, p) {
		t.Fatalf("a FUA write through Slow is not durable: %v", err)
	}
}
