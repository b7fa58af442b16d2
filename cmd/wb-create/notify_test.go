package main

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/control"
)

// fakeSystemd listens on a unixgram socket as systemd does for Type=notify
// services, sets NOTIFY_SOCKET to it and hands each datagram to the test.
func fakeSystemd(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	c := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(c)
				return
			}
			c <- string(buf[:n])
		}
	}()
	return c
}

// next returns the next notification holding want, failing after 20 s;
// seen collects every one read on the way.
func next(t *testing.T, c <-chan string, want string, seen *[]string) string {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case m, ok := <-c:
			if !ok {
				t.Fatalf("notify socket closed before %q; saw %q", want, *seen)
			}
			*seen = append(*seen, m)
			if strings.Contains(m, want) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q within 20s; saw %q", want, *seen)
		}
	}
}

// TestNotify: under a fake systemd, wb-create says what it does while it
// opens, READY=1 only once the NBD socket accepts connections, pings the
// watchdog, and STOPPING=1 at a clean stop.
func TestNotify(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	notes := fakeSystemd(t)
	t.Setenv("WATCHDOG_USEC", "200000") // a ping every 100 ms
	var seen []string
	r := start(t, "--reformat", "vol", b, c)
	ready := next(t, notes, "READY=1", &seen)
	if len(seen) < 2 || !strings.Contains(seen[0], "STATUS=opening") {
		t.Errorf("no STATUS= line before READY=1: %q", seen)
	}
	replaying := false
	for _, m := range seen {
		replaying = replaying || strings.Contains(m, "STATUS=replaying the log of "+c+": ")
	}
	if !replaying {
		t.Errorf("no STATUS= line with the replay's progress before READY=1: %q", seen)
	}
	if !strings.Contains(ready, "STATUS=serving vol: 0 dirty blocks") {
		t.Errorf("READY=1 without the serving status: %q", ready)
	}
	// READY=1 means clients can connect now.
	nc, err := net.Dial("unix", control.SocketPath(control.RunDir(), "vol"))
	if err != nil {
		t.Fatalf("READY=1 sent but the NBD socket refuses: %v", err)
	}
	nc.Close()
	next(t, notes, "WATCHDOG=1", &seen)
	r.sig <- syscall.SIGTERM
	stopping := next(t, notes, "STOPPING=1", &seen)
	if !strings.Contains(stopping, "STATUS=stopping cleanly") {
		t.Errorf("STOPPING=1 without a status: %q", stopping)
	}
	r.waitExit(t, "SIGTERM")
}

// TestNotifyOff: without NOTIFY_SOCKET nothing is sent and nothing waits.
func TestNotifyOff(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := newNotifier(nil)
	if n.enabled {
		t.Fatal("enabled without NOTIFY_SOCKET")
	}
	n.status("x %d", 1)
	n.ready("v", nil)
	n.stopping()
	n.close()
}
