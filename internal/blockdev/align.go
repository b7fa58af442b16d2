package blockdev

import "unsafe"

// Alignment is the buffer, offset and length alignment O_DIRECT needs on
// every device this project runs on (the logical block size is at most 4096).
const Alignment = 4096

// AlignedBuffer returns a zeroed n-byte slice whose first byte sits on a
// 4096-byte boundary, as O_DIRECT requires of the memory it DMAs into.
// The engine allocates its rambufs and segment buffers with it.
func AlignedBuffer(n int) []byte {
	if n <= 0 {
		return []byte{}
	}
	// NB: Go gives no alignment guarantee beyond the size class, so
	// over-allocate by one alignment unit and slice at the boundary. The
	// garbage collector keeps the whole backing array alive through the
	// interior pointer.
	raw := make([]byte, n+Alignment)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&raw[0])) & (Alignment - 1)); r != 0 {
		skip = Alignment - r
	}
	return raw[skip : skip+n : skip+n]
}

// IsAligned reports whether b starts on a 4096-byte boundary and its length
// is a multiple of 4096 (an empty slice is aligned).
func IsAligned(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	return uintptr(unsafe.Pointer(&b[0]))&(Alignment-1) == 0 && len(b)%Alignment == 0
}
