package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Target
		ok   bool
	}{
		{"nbd+unix:///vol?socket=/run/wb/vol.sock", Target{"unix", "/run/wb/vol.sock", "vol"}, true},
		{"nbd+unix:///?socket=/s", Target{"unix", "/s", ""}, true},
		{"nbd://127.0.0.1:10810/x", Target{"tcp", "127.0.0.1:10810", "x"}, true},
		{"nbd://localhost", Target{"tcp", "localhost:10809", ""}, true},
		{"nbd+unix:///vol", Target{}, false},
		{"nbd+unix://host/vol?socket=/s", Target{}, false},
		{"http://x/", Target{}, false},
		{"nbd:///x", Target{}, false},
	} {
		got, err := ParseURI(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func greeting(flags uint16) []byte {
	b := make([]byte, 18)
	binary.BigEndian.PutUint64(b, magicInit)
	binary.BigEndian.PutUint64(b[8:], magicOpt)
	binary.BigEndian.PutUint16(b[16:], flags)
	return b
}

func TestParseGreeting(t *testing.T) {
	if f, err := ParseGreeting(greeting(3)); err != nil || f != 3 {
		t.Fatalf("good greeting: %d, %v", f, err)
	}
	bad := [][]byte{greeting(0), greeting(3)[:10], append([]byte("XBDMAGIC"), greeting(3)[8:]...)}
	for _, b := range bad {
		if _, err := ParseGreeting(b); !errors.Is(err, ErrProtocol) {
			t.Errorf("ParseGreeting(%x): %v, want ErrProtocol", b, err)
		}
	}
}

func TestParseInfoExport(t *testing.T) {
	b := make([]byte, 12)
	binary.BigEndian.PutUint64(b[2:], 1<<30)
	binary.BigEndian.PutUint16(b[10:], 0x16d)
	if size, flags, err := ParseInfoExport(b); err != nil || size != 1<<30 || flags != 0x16d {
		t.Fatalf("ParseInfoExport = %d, %#x, %v", size, flags, err)
	}
	if _, _, err := ParseInfoExport(b[:11]); !errors.Is(err, ErrProtocol) {
		t.Fatalf("short info: %v", err)
	}
}

func TestParseReplyHeader(t *testing.T) {
	b := make([]byte, 16)
	binary.BigEndian.PutUint32(b, magicReply)
	binary.BigEndian.PutUint32(b[4:], 5)
	binary.BigEndian.PutUint64(b[8:], 99)
	if e, c, err := ParseReplyHeader(b); err != nil || e != 5 || c != 99 {
		t.Fatalf("ParseReplyHeader = %d, %d, %v", e, c, err)
	}
	b[0] ^= 1
	if _, _, err := ParseReplyHeader(b); !errors.Is(err, ErrProtocol) {
		t.Fatalf("bad magic: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(greeting(3))
	rh := make([]byte, 20)
	binary.BigEndian.PutUint64(rh, magicOptReply)
	f.Add(rh)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// None may panic; errors must be ErrProtocol.
		for _, err := range []error{
			func() error { _, err := ParseGreeting(b); return err }(),
			func() error { _, err := ParseOptReplyHeader(b); return err }(),
			func() error { _, _, err := ParseInfoExport(b); return err }(),
			func() error { _, _, err := ParseReplyHeader(b); return err }(),
		} {
			if err != nil && !errors.Is(err, ErrProtocol) {
				t.Fatalf("error not marked ErrProtocol: %v", err)
			}
		}
	})
}

func FuzzParseURI(f *testing.F) {
	f.Add("nbd+unix:///vol?socket=/s")
	f.Add("nbd://h:1/e")
	f.Add("%")
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := ParseURI(s)
		if err == nil && (tg.Addr == "" || (tg.Network != "unix" && tg.Network != "tcp")) {
			t.Fatalf("ParseURI(%q) accepted %+v", s, tg)
		}
	})
}

// TestAgainstNbdkit runs the client against nbdkit's memory plugin (a
// reference server): many requests in flight, every command, error replies.
func TestAgainstNbdkit(t *testing.T) {
	nbdkit, err := exec.LookPath("nbdkit")
	if err != nil {
		t.Fatalf("nbdkit is needed (scripts/deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(nbdkit, "-f", "-U", sock, "memory", "8M")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var c *Client
	for {
		c, err = Dial(ctx, "nbd+unix:///?socket="+sock)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("dial nbdkit: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	defer c.Close()
	if c.Size() != 8<<20 {
		t.Fatalf("size %d", c.Size())
	}
	for _, f := range []uint16{FlagHasFlags, FlagSendFlush, FlagSendFUA, FlagSendTrim, FlagSendWriteZeroes} {
		if c.Flags()&f == 0 {
			t.Errorf("flag %#x missing from %#x", f, c.Flags())
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(i + 1)}, 4096+i)
			off := uint64(i) * 65536
			if err := c.WriteAt(p, off, i%2 == 0); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(p))
			if err := c.ReadAt(got, off); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(got, p) {
				errs <- errors.New("read back differs")
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteZeroes(0, 4096, true); err != nil {
		t.Fatal(err)
	}
	if err := c.Trim(65536, 4096); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4096)
	if err := c.ReadAt(got, 0); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("after write zeroes: %v", err)
	}
	// Past the end: an error reply, and the connection goes on.
	var nerr *Error
	if err := c.ReadAt(got, 8<<20); !errors.As(err, &nerr) || nerr.Errno != uint32(syscall.EINVAL) {
		t.Fatalf("read past the end: %v, want EINVAL", err)
	}
	if err := c.ReadAt(got, 4096); err != nil {
		t.Fatalf("read after an error reply: %v", err)
	}
	// A dead server fails pending and later requests with ErrClosed.
	cmd.Process.Kill()
	cmd.Wait()
	if err := c.ReadAt(got, 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("read from a killed server: %v, want ErrClosed", err)
	}
}
