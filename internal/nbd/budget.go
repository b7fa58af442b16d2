package nbd

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// budget is the server's one memory budget: the payload bytes (write data
// and read buffers) held by the requests in flight on all its connections.
// Each connection also has its own bound (Options.MaxInFlight and
// MaxInFlightBytes, at most half the budget); the budget is taken after
// it, by the connection goroutine only, and given back by whoever ends the
// request.
//
// Fairness: the last quarter of the budget, the reserve, is only for
// connections holding at most reserve/8 bytes. A client that stalls with
// big READs whose replies it never reads (each one pinning up to
// MaxPayload) fills at most the shared three quarters, and light clients
// still get served from the reserve until the stall timeout closes it
// (Options.StallTimeout). A request larger than the shared part runs when
// the server holds nothing else, as on a connection.
type budget struct {
	mu   sync.Mutex // protects used and peak; cond's lock
	cond *sync.Cond // broadcast when bytes are given back
	used int64
	peak int64 // the most used since the last trim

	total   int64 // Options.MaxBytes
	shared  int64 // total - reserve: what any request may use
	perConn int64 // the most a connection may hold and still use the reserve
}

func newBudget(total int64) *budget {
	reserve := total / 4
	b := &budget{total: total, shared: total - reserve, perConn: reserve / 8}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// fits reports whether n more bytes may be taken by a connection holding
// held bytes now. Under b.mu.
func (b *budget) fits(n, held int64) bool {
	switch {
	case b.used+n <= b.shared:
		return true
	case held+n <= b.perConn && b.used+n <= b.total:
		return true
	default:
		return n > b.shared && b.used == 0
	}
}

// acquire waits until n bytes fit, then takes them; held points at the
// bytes the connection holds now, which may shrink meanwhile (its requests
// end), and grows by n.
func (b *budget) acquire(n int64, held *int64, heldMu *sync.Mutex) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for !b.fits(n, loadHeld(held, heldMu)) {
		b.cond.Wait()
	}
	b.take(n)
}

// take adds n to used. Under b.mu.
func (b *budget) take(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

func loadHeld(held *int64, mu *sync.Mutex) int64 {
	mu.Lock()
	defer mu.Unlock()
	return *held
}

// release gives back n bytes and wakes the connections waiting for room.
func (b *budget) release(n int64) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
	b.cond.Broadcast()
}

// inUse returns the bytes held now, for tests and logs.
func (b *budget) inUse() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

// tryAcquire takes n bytes if they fit now.
func (b *budget) tryAcquire(n int64, held *int64, heldMu *sync.Mutex) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n != 0 && !b.fits(n, loadHeld(held, heldMu)) {
		return false
	}
	b.take(n)
	return true
}

// trim returns the payload buffers of a load that has gone to the OS: when
// a connection ends, the budget was used to a quarter or more since the
// last trim and is now used to an eighth or less, it runs two collections
// (pooled buffers survive the first in sync.Pool's victim cache) and
// debug.FreeOSMemory. NB: without it the runtime would keep the pages of a
// burst of 32 MiB READs until its scavenger got to them, minutes later.
// It needs no rate limit: the budget must fill to a quarter again before
// the next trim, and connections that end together (a client's several
// connections) must not skip the one trim that comes after the last.
func (b *budget) trim() {
	b.mu.Lock()
	due := b.peak >= b.total/4 && b.used <= b.total/8
	if due {
		b.peak = b.used
	}
	b.mu.Unlock()
	if due {
		runtime.GC()
		debug.FreeOSMemory()
	}
}
