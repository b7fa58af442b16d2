package nbd

import (
	"math/bits"
	"sync"
)

// Payload buffers are pooled by power-of-two size class, from 4 KiB up to
// MaxPayload, so that a busy connection reuses the same few buffers instead
// of allocating one per request.
const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 25 // 32 MiB == MaxPayload
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// bufClass returns the pool index for n bytes (0 < n <= MaxPayload).
func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}

// getBuf returns a buffer of length n, 0 <= n <= MaxPayload.
func getBuf(n int) *[]byte {
	c := bufClass(n)
	if p, _ := bufPools[c].Get().(*[]byte); p != nil {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(c+minBufShift))
	return &b
}

// putBuf returns a buffer from getBuf to its pool.
func putBuf(p *[]byte) {
	c := bufClass(cap(*p))
	if cap(*p) != 1<<(c+minBufShift) {
		return // not one of ours; let the GC have it
	}
	bufPools[c].Put(p)
}
