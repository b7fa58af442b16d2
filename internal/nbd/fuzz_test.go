package nbd

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

func FuzzParseRequest(f *testing.F) {
	var b [requestSize]byte
	request{typ: cmdWrite, flags: cmdFlagFUA, handle: 1, offset: 4096, length: 512}.encode(&b)
	f.Add(b[:])
	f.Add(make([]byte, requestSize))
	f.Add([]byte{0x25, 0x60, 0x95, 0x13, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var hdr [requestSize]byte
		copy(hdr[:], data)
		req, err := parseRequest(&hdr)
		if err != nil {
			if binary.BigEndian.Uint32(hdr[:4]) == magicRequest {
				t.Fatalf("good magic refused: %v", err)
			}
			return
		}
		var again [requestSize]byte
		req.encode(&again)
		if again != hdr {
			t.Fatalf("round trip: % x != % x", again, hdr)
		}
		// check never panics and never accepts a range past the end.
		e := &Export{Backend: newMem(0)}
		for _, size := range []uint64{0, 4096, 1<<63 + 1} {
			if check(e, size, FlagHasFlags, req) == 0 && req.typ != cmdFlush &&
				(req.offset > size || uint64(req.length) > size-req.offset || req.length == 0) {
				t.Fatalf("accepted %+v on a %d-byte export", req, size)
			}
		}
	})
}

func FuzzParseInfoRequest(f *testing.F) {
	f.Add(infoData("vol", infoBlockSize, infoName))
	f.Add(infoData(""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0})
	f.Add([]byte{0, 0, 0, 0, 0, 2, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		ir, err := parseInfoRequest(data)
		if err != nil {
			return
		}
		if again := infoData(ir.name, ir.infos...); !bytes.Equal(again, data) {
			t.Fatalf("round trip: % x != % x", again, data)
		}
	})
}

// pipeSession feeds input to one server connection over net.Pipe while
// draining whatever the server sends, then hangs up, and requires the
// connection goroutine to finish promptly.
func pipeSession(t *testing.T, input []byte, run func(c *conn)) {
	for _, inline := range []bool{false, true} {
		m := newMem(64 << 10)
		m.inline = inline
		pipeSessionWith(t, m, input, run)
	}
}

func pipeSessionWith(t *testing.T, m *memBackend, input []byte, run func(c *conn)) {
	srv, err := NewServer([]Export{{Name: "vol", Backend: m}}, Options{HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	clientEnd, serverEnd := net.Pipe()
	c := srv.newConn(serverEnd)
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(c)
	}()
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		io.Copy(io.Discard, clientEnd)
	}()
	clientEnd.SetWriteDeadline(time.Now().Add(5 * time.Second))
	clientEnd.Write(input) // fails once the server hangs up: that is allowed
	// Let the server answer what it has read before hanging up.
	time.Sleep(time.Millisecond)
	clientEnd.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("connection goroutine still running 10 s after the client hung up")
	}
	<-drained
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if len(srv.conns) != 0 {
		t.Fatalf("connection not unregistered")
	}
}

// handshakeSeed builds a client's side of a handshake that reaches
// transmission, followed by requests.
func handshakeSeed(flags uint32, opts [][]byte, reqs ...[]byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, flags)
	for _, o := range opts {
		b = append(b, o...)
	}
	for _, r := range reqs {
		b = append(b, r...)
	}
	return b
}

func optBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

func reqBytes(typ, flags uint16, off uint64, length uint32, payload []byte) []byte {
	return reqBytesHandle(typ, flags, 9, off, length, payload)
}

func FuzzHandshake(f *testing.F) {
	fixed := clientFlagFixedNewstyle | clientFlagNoZeroes
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optGo, infoData("vol", infoBlockSize))},
		reqBytes(cmdWrite, 0, 0, 4, []byte("abcd")), reqBytes(cmdRead, 0, 0, 4, nil), reqBytes(cmdDisc, 0, 0, 0, nil)))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optList, nil), optBytes(optInfo, infoData("x")),
		optBytes(optStructuredReply, nil), optBytes(optExportName, []byte("vol"))}, reqBytes(cmdFlush, 0, 0, 0, nil)))
	f.Add(handshakeSeed(0, [][]byte{optBytes(optExportName, nil)}, reqBytes(cmdTrim, 0, 0, 512, nil)))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optAbort, nil)}))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optGo, []byte{0xff, 0xff})}))
	f.Add([]byte{0, 0, 0, 1, 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff})
	// NBD_OPT_STARTTLS: then a TLS ClientHello that is not one, option
	// data where none is allowed, options before and instead of it.
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optStartTLS, nil)}, []byte{0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5}))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optStartTLS, []byte{0}), optBytes(optList, nil), optBytes(optGo, infoData("vol"))}))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optInfo, infoData("vol")), optBytes(optExportName, []byte("vol"))}))
	f.Add(handshakeSeed(fixed, [][]byte{optBytes(optStartTLS, nil), optBytes(optAbort, nil)}))
	tlsConf := serverTLS(f, true)
	f.Fuzz(func(t *testing.T, input []byte) {
		pipeSession(t, input, func(c *conn) { c.serve() })
		// The same bytes where TLS is required (ServeTLS).
		pipeSession(t, input, func(c *conn) {
			c.tlsConf = tlsConf
			c.serve()
		})
	})
}

func FuzzTransmission(f *testing.F) {
	f.Add(bytes.Join([][]byte{
		reqBytes(cmdWrite, cmdFlagFUA, 100, 5, []byte("hello")),
		reqBytes(cmdRead, 0, 100, 5, nil),
		reqBytes(cmdWriteZeroes, cmdFlagNoHole, 0, 4096, nil),
		reqBytes(cmdTrim, 0, 0, 64<<10, nil),
		reqBytes(cmdFlush, 0, 0, 0, nil),
		reqBytes(cmdDisc, 0, 0, 0, nil),
	}, nil))
	f.Add(reqBytes(cmdWrite, 0, 1<<20, 8, make([]byte, 8)))
	f.Add(reqBytes(cmdWrite, 0, 0, 0xffffffff, nil))
	f.Add(reqBytes(cmdRead, 0, 0, 0xffffffff, nil))
	f.Add(reqBytes(77, 0xffff, 1<<63, 1, nil))
	f.Add(append(reqBytes(cmdWrite, 0, 0, 100, nil), 1, 2, 3))
	f.Fuzz(func(t *testing.T, input []byte) {
		pipeSession(t, input, func(c *conn) { c.serveExport(&c.s.exports[0]) })
	})
}
