package nbd

import (
	"bytes"
	"errors"
	"sync"
	"syscall"
	"testing"
	"time"
)

// tally is an Observer that keeps what it was told, per command.
type tally struct {
	mu                     sync.Mutex
	count, bytes, failures map[Command]int
	refused                int
	minTook                time.Duration
}

func newTally() *tally {
	return &tally{count: map[Command]int{}, bytes: map[Command]int{}, failures: map[Command]int{}, minTook: time.Hour}
}

func (o *tally) Observe(cmd Command, length uint32, took time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.count[cmd]++
	o.bytes[cmd] += int(length)
	if err != nil {
		o.failures[cmd]++
	}
	if errors.Is(err, ErrRefused) {
		o.refused++
	}
	o.minTook = min(o.minTook, took)
}

// total waits until n requests were observed: a reply may reach the
// client just before its request is observed.
func (o *tally) total(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		o.mu.Lock()
		sum := 0
		for _, c := range o.count {
			sum += c
		}
		o.mu.Unlock()
		if sum == n {
			return
		}
		if sum > n || time.Now().After(deadline) {
			t.Fatalf("%d requests observed, want %d", sum, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestObserver: every answered request is observed once, with its
// command, length and outcome: inline writes, request goroutines, refused
// requests and backend failures alike.
func TestObserver(t *testing.T) {
	for _, inline := range []bool{false, true} {
		m := newMem(testSize)
		m.inline = inline
		o := newTally()
		ts := startServer(t, []Export{{Backend: m}}, Options{Observer: o})
		c, _ := open(t, ts.sock, "")
		p := bytes.Repeat([]byte{7}, 8192)
		for _, r := range []struct {
			typ, flags uint16
			off        uint64
			length     uint32
			payload    []byte
			code       uint32
		}{
			{cmdWrite, 0, 0, 8192, p, 0},
			{cmdWrite, cmdFlagFUA, 8192, 8192, p, 0},
			{cmdRead, 0, 0, 4096, nil, 0},
			{cmdFlush, 0, 0, 0, nil, 0},
			{cmdTrim, 0, 0, 4096, nil, 0},
			{cmdWriteZeroes, 0, 4096, 4096, nil, 0},
			{cmdRead, 0, testSize, 4096, nil, errInval}, // past the end: refused
			{cmdWrite, 0, testSize, 8192, p, errNoSpc},  // likewise, payload read
			{cmdBlockStatus, 0, 0, 4096, nil, errInval}, // not advertised
		} {
			if code, _ := c.do(r.typ, r.flags, r.off, r.length, r.payload); code != r.code {
				t.Fatalf("inline %v: command %d: error %d, want %d", inline, r.typ, code, r.code)
			}
		}
		fail := error(syscall.EIO)
		m.failWith.Store(&fail)
		if code, _ := c.do(cmdRead, 0, 0, 4096, nil); code != errIO {
			t.Fatalf("failing read: error %d", code)
		}
		o.total(t, 10)
		o.mu.Lock()
		want := map[Command]int{CmdWrite: 3, CmdRead: 3, CmdFlush: 1, CmdTrim: 1, CmdWriteZeroes: 1, Command(cmdBlockStatus): 1}
		for cmd, n := range want {
			if o.count[cmd] != n {
				t.Errorf("inline %v: %v observed %d times, want %d", inline, cmd, o.count[cmd], n)
			}
		}
		if o.bytes[CmdWrite] != 3*8192 || o.bytes[CmdRead] != 3*4096 || o.bytes[CmdFlush] != 0 || o.bytes[CmdTrim] != 4096 {
			t.Errorf("inline %v: bytes %v", inline, o.bytes)
		}
		if o.refused != 3 || o.failures[CmdRead] != 2 || o.failures[CmdWrite] != 1 || o.failures[CmdFlush] != 0 {
			t.Errorf("inline %v: %d refused, failures %v", inline, o.refused, o.failures)
		}
		if o.minTook <= 0 {
			t.Errorf("inline %v: a request took %v", inline, o.minTook)
		}
		o.mu.Unlock()
	}
	if CmdWriteZeroes.String() != "write_zeroes" || Command(cmdBlockStatus).String() != "other" {
		t.Errorf("names: %v %v", CmdWriteZeroes, Command(cmdBlockStatus))
	}
}

// nopObserver counts nothing: the benchmark measures the hook itself.
type nopObserver struct{}

func (nopObserver) Observe(Command, uint32, time.Duration, error) {}

// BenchmarkObserved is BenchmarkPipelined's 4 KiB writes, inline and
// not, without and with an Observer: the hook's cost per request, and
// that it allocates nothing.
func BenchmarkObserved(b *testing.B) {
	for _, inline := range []bool{false, true} {
		for _, obs := range []Observer{nil, nopObserver{}} {
			name := "goroutine"
			if inline {
				name = "inline"
			}
			if obs != nil {
				name += "/observed"
			}
			b.Run(name, func(b *testing.B) {
				m := newMem(64 << 20)
				m.inline = inline
				ts := startServer(b, []Export{{Backend: m}}, Options{Observer: obs})
				c, _ := open(b, ts.sock, "")
				pipelined(b, c, cmdWrite)
			})
		}
	}
}
