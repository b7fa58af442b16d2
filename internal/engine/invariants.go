package engine

import (
	"fmt"

	"github.com/writeboost/writeboost/internal/layout"
)

// The id counters under v.mu, and how they are ordered (the one statement
// of it; checkInvariantsLocked enforces it in tests):
//
//	nextID > lastSealed >= lastWritten >= durable
//	lastWritten <= durable + flightWindow  the flight window
//	lastWB <= lastWritten                  written back only once written
//	recorded <= min(lastWB, durable)      the record never claims more
//
// and, per ring slot: an open rambuf holds id nextID-1; a copy kept in
// idx.superseded belongs to a slot whose supersededBy is newer than the
// slot's own segment (the durable-copy rule, writeback.go).

// checkInvariants makes checkInvariantsLocked check (tests turn it on);
// a violation panics with the state.
var checkInvariants bool

// checkInvariantsLocked panics when the id ordering is broken. Caller
// holds mu. Called after the state changes that move the counters.
func (v *Volume) checkInvariantsLocked() {
	if !checkInvariants {
		return
	}
	if err := v.invariantsLocked(); err != nil {
		panic(fmt.Sprintf("engine invariant broken: %v", err))
	}
}

func (v *Volume) invariantsLocked() error {
	ids := fmt.Sprintf("next %d sealed %d written %d durable %d written back %d recorded %d",
		v.mu.nextID, v.mu.lastSealed, v.mu.lastWritten, v.mu.durable, v.mu.lastWB, v.mu.recorded)
	switch {
	case !(v.mu.nextID > v.mu.lastSealed && v.mu.lastSealed >= v.mu.lastWritten && v.mu.lastWritten >= v.mu.durable):
		return fmt.Errorf("want next > sealed >= written >= durable: %s", ids)
	case v.mu.lastWritten > v.mu.durable+flightWindow:
		return fmt.Errorf("want written <= durable + %d: %s", flightWindow, ids)
	case v.mu.lastWB > v.mu.lastWritten:
		return fmt.Errorf("want written back <= written: %s", ids)
	case v.mu.recorded > min(v.mu.lastWB, v.mu.durable):
		return fmt.Errorf("want recorded <= min(written back, durable): %s", ids)
	case v.mu.open != nil && (v.mu.open.id != v.mu.nextID-1 || v.mu.open.sealed):
		return fmt.Errorf("open rambuf id %d (sealed %v): %s", v.mu.open.id, v.mu.open.sealed, ids)
	}
	if v.nrSeg > 64 {
		return nil // the per-slot walk is for the small caches of tests
	}
	for slot := range v.nrSeg {
		for i := range layout.NrCachesPerSegment {
			if v.mu.idx.superseded[posOf(slot, i)] != 0 && v.mu.supersededBy[slot] <= v.mu.segIDs[slot] {
				return fmt.Errorf("slot %d (segment %d) keeps a superseded copy at data slot %d, but supersededBy is %d", slot, v.mu.segIDs[slot], i, v.mu.supersededBy[slot])
			}
		}
	}
	return nil
}
