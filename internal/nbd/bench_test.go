package nbd

import (
	"encoding/binary"
	"io"
	"testing"
)

// BenchmarkPipelined measures the server's per-request cost: 4 KiB writes
// or reads, 32 in flight on one connection, against the in-memory backend.
// The client side allocates nothing, so allocs/op are the server's.
func BenchmarkPipelined(b *testing.B) {
	for _, tc := range []struct {
		name string
		typ  uint16
	}{{"write4k", cmdWrite}, {"read4k", cmdRead}} {
		b.Run(tc.name, func(b *testing.B) {
			ts := startServer(b, []Export{{Backend: newMem(64 << 20)}}, Options{})
			c, _ := open(b, ts.sock, "")
			pipelined(b, c, tc.typ)
		})
	}
}

// pipelined sends b.N 4 KiB requests of type typ (cmdWrite or cmdRead)
// over the first 64 MiB of c's export, 32 in flight, and reads their
// replies; an error reply fails b. It allocates nothing per request once
// the timer runs.
func pipelined(b *testing.B, c *client, typ uint16) {
	const depth = 32
	slots := make(chan struct{}, depth)
	done := make(chan struct{})
	go func() { // reads replies, frees one slot each
		defer close(done)
		buf := make([]byte, simpleReplySize+4096)
		for i := range b.N {
			n := simpleReplySize
			if typ == cmdRead {
				n += 4096
			}
			if _, err := io.ReadFull(c.nc, buf[:n]); err != nil {
				b.Errorf("reply %d: %v", i, err)
				return
			}
			if code := binary.BigEndian.Uint32(buf[4:8]); code != 0 {
				b.Errorf("reply %d: error %d", i, code)
				return
			}
			<-slots
		}
	}()
	msg := make([]byte, requestSize+4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		slots <- struct{}{}
		var hdr [requestSize]byte
		request{typ: typ, handle: uint64(i), offset: uint64(i%16384) * 4096, length: 4096}.encode(&hdr)
		copy(msg, hdr[:])
		n := requestSize
		if typ == cmdWrite {
			n += 4096
		}
		if _, err := c.nc.Write(msg[:n]); err != nil {
			b.Fatal(err)
		}
	}
	<-done
}
