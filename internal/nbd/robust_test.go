package nbd

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

// TestRobustness throws malformed and abandoned conversations at a server
// over a real socket. After each one the server must still serve a fresh
// connection, and no connection may be left behind.
func TestRobustness(t *testing.T) { bothWriteModes(t, testRobustness) }

func testRobustness(t *testing.T, inline bool) {
	m := newMem(testSize)
	m.inline = inline
	ts := startServer(t, []Export{{Name: "vol", Backend: m}}, Options{HandshakeTimeout: 5 * time.Second})

	optHdr := func(magic uint64, opt, length uint32) []byte {
		b := binary.BigEndian.AppendUint64(nil, magic)
		b = binary.BigEndian.AppendUint32(b, opt)
		return binary.BigEndian.AppendUint32(b, length)
	}
	reqHdr := func(magic uint32, typ uint16, off uint64, length uint32) []byte {
		var b [requestSize]byte
		request{typ: typ, handle: 7, offset: off, length: length}.encode(&b)
		binary.BigEndian.PutUint32(b[0:4], magic)
		return b[:]
	}

	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"disconnect before client flags", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.read(18)
			c.nc.Close()
		}},
		{"half the client flags", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.read(18)
			c.write([]byte{0, 0})
			c.nc.Close()
		}},
		{"bad option magic", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			c.write(optHdr(0x1122334455667788, optGo, 0))
			c.expectClosed()
		}},
		{"oversized option length", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			c.write(optHdr(magicOpt, optGo, 0xffffffff))
			if r := c.readOptReply(); r.typ != repErrTooBig {
				t.Errorf("reply %#x, want NBD_REP_ERR_TOO_BIG", r.typ)
			}
			c.expectClosed()
		}},
		{"option data cut short", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			c.write(optHdr(magicOpt, optGo, 100))
			c.write([]byte("vo"))
			c.nc.Close()
		}},
		{"option header cut short", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			c.write(optHdr(magicOpt, optGo, 100)[:9])
			c.nc.Close()
		}},
		{"malformed GO then a good one", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			for _, data := range [][]byte{
				nil,                            // too short
				{0xff, 0xff, 0xff, 0xff, 0, 0}, // name length past the end
				{0, 0, 0, 0, 0, 2, 0},          // 2 info requests, 1 byte
				append(infoData("vol"), 0),     // trailing byte
			} {
				c.sendOpt(optGo, data)
				if r := c.readOptReply(); r.typ != repErrInvalid {
					t.Errorf("GO %x: reply %#x, want NBD_REP_ERR_INVALID", data, r.typ)
				}
			}
			if _, typ := c.infoGo(optGo, "vol"); typ != repAck {
				t.Fatalf("GO after errors: %#x", typ)
			}
			c.roundTrip(0)
		}},
		{"unknown export then a good one", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle | clientFlagNoZeroes)
			if _, typ := c.infoGo(optGo, "missing"); typ != repErrUnknown {
				t.Errorf("GO missing: %#x", typ)
			}
			if _, typ := c.infoGo(optGo, "vol"); typ != repAck {
				t.Fatalf("GO vol: %#x", typ)
			}
			c.roundTrip(512)
		}},
		{"bad request magic", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			c.write(reqHdr(0xdeadbeef, cmdRead, 0, 512))
			c.expectClosed()
		}},
		{"oversized write", func(t *testing.T) {
			// The payload cannot be skipped: EINVAL, then the server hangs up.
			c, _ := open(t, ts.sock, "vol")
			c.write(reqHdr(magicRequest, cmdWrite, 0, 0xffffffff))
			if _, code := c.readReply(); code != errInval {
				t.Errorf("oversized write: %d", code)
			}
			c.expectClosed()
		}},
		{"oversized reads are refused before allocation", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range 20 {
				c.write(reqHdr(magicRequest, cmdRead, 0, 0xffffffff))
				if _, code := c.readReply(); code != errInval {
					t.Fatalf("oversized read: %d", code)
				}
			}
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
				t.Errorf("20 refused 4 GiB reads allocated %d bytes", d)
			}
			c.roundTrip(0)
		}},
		{"out-of-range offsets and unknown commands", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			for _, r := range []struct {
				typ    uint16
				off    uint64
				length uint32
				want   uint32
			}{
				{cmdRead, 1 << 63, 512, errInval},
				{cmdRead, testSize, 1, errInval},
				{cmdWriteZeroes, 1<<64 - 512, 1024, errNoSpc},
				{cmdTrim, testSize - 1, 2, errInval},
				{42, 0, 0, errInval},
				{0xffff, 0, 0, errInval},
			} {
				c.write(reqHdr(magicRequest, r.typ, r.off, r.length))
				if _, code := c.readReply(); code != r.want {
					t.Errorf("cmd %d off %d len %d: %d, want %d", r.typ, r.off, r.length, code, r.want)
				}
			}
			// A write past the end: the payload is consumed, ENOSPC, go on.
			c.write(append(reqHdr(magicRequest, cmdWrite, testSize-100, 4096), make([]byte, 4096)...))
			if _, code := c.readReply(); code != errNoSpc {
				t.Errorf("write past end: %d", code)
			}
			c.roundTrip(1024)
		}},
		{"disconnect mid request header", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			c.write(reqHdr(magicRequest, cmdRead, 0, 512)[:13])
			c.nc.Close()
		}},
		{"disconnect mid write payload", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			c.write(append(reqHdr(magicRequest, cmdWrite, 0, 65536), make([]byte, 1000)...))
			c.nc.Close()
		}},
		{"disconnect with replies pending", func(t *testing.T) {
			c, _ := open(t, ts.sock, "vol")
			for i := range 64 {
				c.write(reqHdr(magicRequest, cmdRead, uint64(i)*16384, 16384))
			}
			c.nc.Close()
		}},
		{"disconnect mid handshake after GO request", func(t *testing.T) {
			c := dial(t, ts.sock)
			c.greet(clientFlagFixedNewstyle)
			c.sendOpt(optGo, infoData("vol"))
			c.nc.Close()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t)
			fresh, _ := open(t, ts.sock, "vol")
			fresh.roundTrip(4096)
			fresh.send(cmdDisc, 0, 0, 0, 0, nil)
			fresh.expectClosed()
		})
	}
	// Every abandoned connection was cleaned up.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ts.srv.mu.Lock()
		n := len(ts.srv.conns)
		ts.srv.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections left behind", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestHandshakeTimeout: a client that says nothing is dropped.
func TestHandshakeTimeout(t *testing.T) {
	ts := startServer(t, []Export{{Backend: newMem(4096)}}, Options{HandshakeTimeout: 100 * time.Millisecond})
	c := dial(t, ts.sock)
	c.read(18)
	c.expectClosed()
	fresh, _ := open(t, ts.sock, "")
	fresh.roundTrip(0)
}
