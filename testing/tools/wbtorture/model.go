package main

import (
	"bytes"
	"encoding/gob"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// State is what the torture client remembers between its runs (the engine
// is killed between a write run and the next verify run): for every
// sector of the region, the write it must at least hold (Durable) and the
// writes issued to it since (Pending), which it may hold instead.
//
// Sequence numbers are global and increase in issue order. The write order
// an exact-prefix recovery is measured against is the acknowledgement order
// (AckRank): with 32 requests in flight, issue order and the order the
// engine logged the writes in differ all the time, and the client cannot
// see the latter; a reply, though, comes after the write is in the log.
type State struct {
	Version uint32
	Sectors uint64 // region size in sectors, from sector 0
	NextSeq uint64 // the next write's seq; seq 0 is "never written" (zeroes)

	// Durable[s] is the seq that sector s must hold at least: the last
	// write to s acknowledged before a FLUSH that completed, or acknowledged
	// with FUA, or the value the last verify found.
	Durable []uint64
	// Pending[s] are the seqs issued to s after Durable[s], ascending. A
	// sector may hold any of them after a crash (acknowledged or not).
	Pending map[uint64][]uint64

	// Acked[s] is the last acknowledged write to s, as of the end of the
	// last write run: after a clean stop (SIGTERM) nothing older may be
	// recovered (verify --strict).
	Acked []uint64

	// AckRank gives the writes acknowledged since the last verify their
	// place in acknowledgement order (from 1). Writes of earlier cycles
	// rank 0; writes never acknowledged have no rank.
	AckRank map[uint64]uint64
	// CycleStart is NextSeq as of the last verify (or init): older seqs
	// are earlier cycles' writes.
	CycleStart uint64

	// Totals over all cycles.
	Cycles, SectorsChecked, Bad, ExactPrefix uint64
}

const stateVersion = 1

func newState(sectors uint64) *State {
	return &State{Version: stateVersion, Sectors: sectors, NextSeq: 1, CycleStart: 1, Durable: make([]uint64, sectors), Acked: make([]uint64, sectors), Pending: map[uint64][]uint64{}, AckRank: map[uint64]uint64{}}
}

func loadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load state: %w", err)
	}
	st, err := decodeState(b)
	if err != nil {
		return nil, fmt.Errorf("load state %s: %w", path, err)
	}
	return st, nil
}

func decodeState(b []byte) (*State, error) {
	var st State
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(&st); err != nil {
		return nil, err
	}
	if st.Version != stateVersion || uint64(len(st.Durable)) != st.Sectors || uint64(len(st.Acked)) != st.Sectors {
		return nil, fmt.Errorf("version %d with %d of %d sectors: not written by this tool", st.Version, len(st.Durable), st.Sectors)
	}
	for s, p := range st.Pending {
		if s >= st.Sectors || !slices.IsSorted(p) {
			return nil, fmt.Errorf("pending writes of sector %d: out of range or unsorted", s)
		}
	}
	if st.Pending == nil {
		st.Pending = map[uint64][]uint64{}
	}
	if st.AckRank == nil {
		st.AckRank = map[uint64]uint64{}
	}
	return &st, nil
}

// save writes the state atomically: a crash of the tool itself leaves the
// previous state, never a torn one.
func (st *State) save(path string) error {
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(st); err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".wbtorture-state-*")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// extent is one write: n sectors from sector, all tagged with seq.
type extent struct {
	seq, sector uint64
	n           uint32
}

// model is the live view of a write run, shared by all workers.
type model struct {
	mu sync.Mutex // guards everything below and st
	st *State
	// busy marks sectors with a request in flight. Requests never overlap,
	// so the writes to one sector are totally ordered and a read of an idle
	// sector has exactly one right answer.
	busy []bool
	// acked[s] is the last acknowledged write to s (what a read must see).
	acked []uint64
	// unflushed lists acknowledged writes no FLUSH has covered yet, in
	// acknowledgement order; unflushedBase counts the entries already
	// dropped from its front.
	unflushed     []extent
	unflushedBase int
	acks          uint64 // acknowledgements so far, for AckRank
}

func newModel(st *State) *model {
	return &model{st: st, busy: make([]bool, st.Sectors), acked: slices.Clone(st.Durable)}
}

// claim marks [s, s+n) busy if none of it is.
func (m *model) claim(s uint64, n uint32) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := s; i < s+uint64(n); i++ {
		if m.busy[i] {
			return false
		}
	}
	for i := s; i < s+uint64(n); i++ {
		m.busy[i] = true
	}
	return true
}

func (m *model) release(s uint64, n uint32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := s; i < s+uint64(n); i++ {
		m.busy[i] = false
	}
}

// issue assigns the next seq to a write of [s, s+n) about to be sent.
// From now on the sectors may hold it after a crash.
func (m *model) issue(s uint64, n uint32) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	seq := m.st.NextSeq
	m.st.NextSeq++
	for i := s; i < s+uint64(n); i++ {
		m.st.Pending[i] = append(m.st.Pending[i], seq)
	}
	return seq
}

// acknowledge records a write's successful reply.
func (m *model) acknowledge(e extent, fua bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := e.sector; i < e.sector+uint64(e.n); i++ {
		m.acked[i] = e.seq
	}
	m.acks++
	m.st.AckRank[e.seq] = m.acks
	if fua {
		m.makeDurable(e)
	} else {
		m.unflushed = append(m.unflushed, e)
	}
}

// makeDurable raises Durable for the sectors of e. Caller holds mu.
func (m *model) makeDurable(e extent) {
	for i := e.sector; i < e.sector+uint64(e.n); i++ {
		if e.seq <= m.st.Durable[i] {
			continue
		}
		m.st.Durable[i] = e.seq
		p := m.st.Pending[i]
		k := 0
		for k < len(p) && p[k] <= e.seq {
			k++
		}
		if k == len(p) {
			delete(m.st.Pending, i)
		} else {
			m.st.Pending[i] = p[k:]
		}
	}
}

// flushIssued is called just before a FLUSH is sent; it returns a mark
// for flushDone. The FLUSH covers the writes acknowledged before it was
// sent, and only those.
func (m *model) flushIssued() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unflushedBase + len(m.unflushed)
}

// flushDone applies a completed FLUSH sent at mark.
func (m *model) flushDone(mark int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := mark - m.unflushedBase
	if k <= 0 {
		return // a later FLUSH already covered these
	}
	for _, e := range m.unflushed[:k] {
		m.makeDurable(e)
	}
	m.unflushed = slices.Clone(m.unflushed[k:])
	m.unflushedBase = mark
}

// expect returns what an idle sector must read as now.
func (m *model) expect(s uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.acked[s]
}

// verdict classifies the seq recovered at sector s against st.
type verdict int

const (
	verdictOK      verdict = iota
	verdictOlder           // older than the durable write: a lost write
	verdictUnknown         // a seq never written to s (or the tag was garbage)
	verdictUnacked         // older than the last acknowledged write (verify --strict)
)

func (st *State) judge(s, got uint64, strict bool) verdict {
	// Writes to one sector never overlap in flight, so their seqs grow in
	// acknowledgement order: "older" is "smaller".
	if strict && got < st.Acked[s] {
		return verdictUnacked
	}
	d := st.Durable[s]
	if got == d {
		return verdictOK
	}
	if got < d {
		return verdictOlder
	}
	if _, found := slices.BinarySearch(st.Pending[s], got); found {
		return verdictOK
	}
	return verdictUnknown
}

// exactPrefix reports whether the recovered seqs (all judged OK) are the
// state after a prefix of the write order: the acknowledged writes in
// acknowledgement order, then the unacknowledged ones (in flight at the
// kill, in no known order among themselves), each write whole.
//
// For sector s holding r, with next the following write issued to s, a cut
// after rank P must satisfy rank(r) <= P < rank(next). Unacknowledged
// writes come after every rank: recovering one needs every acknowledged
// write recovered, and recovering part of one (some of its sectors but
// not others) is a torn write, never a prefix.
func (st *State) exactPrefix(rec []uint64) bool {
	const after = ^uint64(0) // the rank of an unacknowledged write
	rank := func(seq uint64) uint64 {
		if r, ok := st.AckRank[seq]; ok {
			return r
		}
		if seq < st.CycleStart {
			return 0
		}
		return after
	}
	var maxR uint64
	minNext := after
	recoveredUnacked := map[uint64]bool{}
	missingUnacked := map[uint64]bool{}
	for s, r := range rec {
		rr := rank(r)
		if rr == after {
			recoveredUnacked[r] = true
		} else {
			maxR = max(maxR, rr)
		}
		p := st.Pending[uint64(s)]
		i, found := slices.BinarySearch(p, r)
		if found {
			i++
		}
		if i < len(p) {
			if nr := rank(p[i]); nr == after {
				missingUnacked[p[i]] = true
			} else {
				minNext = min(minNext, nr)
			}
		}
	}
	if maxR >= minNext {
		return false
	}
	if len(recoveredUnacked) > 0 && minNext != after {
		return false // an in-flight write survived, an acknowledged one did not
	}
	for w := range recoveredUnacked {
		if missingUnacked[w] {
			return false // torn: part of a write
		}
	}
	return true
}

// rebase makes the recovered values the new durable baseline.
func (st *State) rebase(rec []uint64) {
	copy(st.Durable, rec)
	copy(st.Acked, rec)
	st.Pending = map[uint64][]uint64{}
	st.AckRank = map[uint64]uint64{}
	st.CycleStart = st.NextSeq
}
