package replay

import "unsafe"

// alignedBuffer returns n bytes aligned to 4096, as O_DIRECT reads need.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := (align - int(uintptr(unsafe.Pointer(&b[0]))&(align-1))) & (align - 1)
	return b[off : off+n : off+n]
}
