package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFlushCoversOnlyEarlierAcks: a FLUSH makes durable what was
// acknowledged before it was sent, not what was acknowledged while it ran.
func TestFlushCoversOnlyEarlierAcks(t *testing.T) {
	m := newModel(newState(16))
	a := extent{seq: m.issue(0, 8), sector: 0, n: 8}
	m.acknowledge(a, false)
	mark := m.flushIssued()
	b := extent{seq: m.issue(8, 8), sector: 8, n: 8}
	m.acknowledge(b, false)
	m.flushDone(mark)
	st := m.st
	if st.Durable[0] != a.seq || st.Durable[8] != 0 {
		t.Fatalf("durable = %d, %d; want %d, 0", st.Durable[0], st.Durable[8], a.seq)
	}
	if len(st.Pending[0]) != 0 || len(st.Pending[8]) != 1 {
		t.Fatalf("pending = %v, %v", st.Pending[0], st.Pending[8])
	}
	// An older flush completing late changes nothing.
	m.flushDone(mark - 1)
	mark2 := m.flushIssued()
	m.flushDone(mark2)
	if st.Durable[8] != b.seq {
		t.Fatalf("second flush: durable[8] = %d, want %d", st.Durable[8], b.seq)
	}
}

func TestFUAIsDurable(t *testing.T) {
	m := newModel(newState(8))
	e := extent{seq: m.issue(2, 3), sector: 2, n: 3}
	m.acknowledge(e, true)
	if m.st.Durable[2] != e.seq || m.st.Durable[4] != e.seq || m.st.Durable[5] != 0 {
		t.Fatalf("durable after FUA: %v", m.st.Durable)
	}
	if m.expect(3) != e.seq {
		t.Fatalf("expect(3) = %d", m.expect(3))
	}
}

func TestJudge(t *testing.T) {
	st := newState(8)
	st.Durable[0] = 5
	st.Pending[0] = []uint64{7, 9}
	for _, tc := range []struct {
		got  uint64
		want verdict
	}{{5, verdictOK}, {7, verdictOK}, {9, verdictOK}, {4, verdictOlder}, {0, verdictOlder}, {8, verdictUnknown}, {10, verdictUnknown}} {
		if v := st.judge(0, tc.got, false); v != tc.want {
			t.Errorf("judge(%d) = %v, want %v", tc.got, v, tc.want)
		}
	}
	if v := st.judge(1, 0, false); v != verdictOK {
		t.Errorf("never written sector reading zero: %v", v)
	}
}

func TestExactPrefix(t *testing.T) {
	st := newState(4)
	st.NextSeq, st.CycleStart = 10, 1
	// Issued: seq 1 -> s0, 2 -> s1, 3 -> s0, 4 -> s2, 5 -> s3 and 6 -> s1
	// (both in flight at the kill). Acknowledged in the order 2, 1, 3, 4.
	st.Pending[0] = []uint64{1, 3}
	st.Pending[1] = []uint64{2, 6}
	st.Pending[2] = []uint64{4}
	st.Pending[3] = []uint64{5}
	st.AckRank = map[uint64]uint64{2: 1, 1: 2, 3: 3, 4: 4}
	for _, tc := range []struct {
		rec  []uint64
		want bool
	}{
		{[]uint64{0, 0, 0, 0}, true},
		{[]uint64{0, 2, 0, 0}, true},  // 2 was acknowledged first
		{[]uint64{1, 0, 0, 0}, false}, // 1 without 2
		{[]uint64{1, 2, 0, 0}, true},
		{[]uint64{3, 2, 4, 0}, true},
		{[]uint64{3, 2, 4, 5}, true},  // an in-flight write after all acknowledged ones
		{[]uint64{3, 6, 4, 5}, true},  // both in-flight writes
		{[]uint64{3, 2, 0, 5}, false}, // in-flight 5 without acknowledged 4
		{[]uint64{1, 2, 4, 0}, false}, // 4 without 3
	} {
		if got := st.exactPrefix(tc.rec); got != tc.want {
			t.Errorf("exactPrefix(%v) = %v, want %v", tc.rec, got, tc.want)
		}
	}
}

func TestExactPrefixTornWrite(t *testing.T) {
	st := newState(2)
	st.NextSeq, st.CycleStart = 3, 1
	st.Pending[0] = []uint64{1}
	st.Pending[1] = []uint64{1} // seq 1 wrote both sectors, never acknowledged
	if st.exactPrefix([]uint64{1, 0}) {
		t.Fatal("half of an in-flight write counted as a prefix")
	}
	if !st.exactPrefix([]uint64{1, 1}) || !st.exactPrefix([]uint64{0, 0}) {
		t.Fatal("a whole in-flight write or none of it is a prefix")
	}
}

func TestEarlierCyclesRankZero(t *testing.T) {
	st := newState(2)
	st.Durable[0] = 7 // from an earlier cycle
	st.NextSeq, st.CycleStart = 12, 10
	st.Pending[1] = []uint64{10}
	st.AckRank = map[uint64]uint64{10: 1}
	if !st.exactPrefix([]uint64{7, 10}) || !st.exactPrefix([]uint64{7, 0}) {
		t.Fatal("a durable write of an earlier cycle must not block a prefix")
	}
}

func TestStateRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "st")
	st := newState(16)
	st.NextSeq = 42
	st.Durable[3] = 7
	st.Pending[3] = []uint64{9, 11}
	st.Cycles = 2
	if err := st.save(p); err != nil {
		t.Fatal(err)
	}
	got, err := loadState(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.NextSeq != 42 || got.Durable[3] != 7 || len(got.Pending[3]) != 2 || got.Cycles != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := loadState(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("loading a missing state succeeded")
	}
}

func FuzzDecodeState(f *testing.F) {
	p := filepath.Join(f.TempDir(), "st")
	st := newState(8)
	st.Pending[1] = []uint64{3, 4}
	if err := st.save(p); err != nil {
		f.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte{})
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := decodeState(b)
		if err != nil {
			return
		}
		// What decodes must be usable: judging any sector must not panic.
		for s := uint64(0); s < st.Sectors && s < 64; s++ {
			st.judge(s, 1, true)
		}
		st.exactPrefix(make([]uint64, min(st.Sectors, 64)))
	})
}

func TestJudgeStrict(t *testing.T) {
	st := newState(8)
	st.Durable[0] = 5
	st.Pending[0] = []uint64{7, 9}
	st.Acked[0] = 7 // 7 was acknowledged, 9 was in flight
	for _, tc := range []struct {
		got  uint64
		want verdict
	}{{5, verdictUnacked}, {7, verdictOK}, {9, verdictOK}, {4, verdictUnacked}} {
		if v := st.judge(0, tc.got, true); v != tc.want {
			t.Errorf("strict judge(%d) = %v, want %v", tc.got, v, tc.want)
		}
	}
	if v := st.judge(0, 5, false); v != verdictOK {
		t.Errorf("lenient judge of the durable write: %v", v)
	}
}
