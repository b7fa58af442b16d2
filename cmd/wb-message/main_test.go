package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/vocab"
)

func init() {
	pollInterval = 5 * time.Millisecond
	lineInterval = 0
}

// fakeVolume records messages and simulates writeback for drop_caches:
// every status poll while drop_caches runs writes back some blocks.
type fakeVolume struct {
	mu        sync.Mutex
	dirty     uint64
	step      uint64 // blocks written back per status poll during drop_caches
	dropping  bool
	stuck     bool // drop_caches never finishes by itself
	messages  []string
	clients   *uint64    // NBD clients the status reports; nil: none reported
	cancelled chan error // drop_caches's context error when cancelled
}

func (v *fakeVolume) Status() vocab.Status {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.dropping && !v.stuck {
		v.dirty -= min(v.step, v.dirty)
	}
	return vocab.Status{Name: "vol", NrDirtyCacheBlocks: v.dirty, NrCacheBlocks: 1270, NrClients: v.clients}
}

func (v *fakeVolume) Table() string { return "0 8 writeboost /b /c" }

func (v *fakeVolume) Message(ctx context.Context, m vocab.Message) (string, error) {
	args := m.Args()
	v.mu.Lock()
	v.messages = append(v.messages, strings.Join(args, " "))
	v.mu.Unlock()
	switch args[0] {
	case "drop_caches":
		v.mu.Lock()
		v.dropping = true
		v.mu.Unlock()
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				v.cancelled <- ctx.Err()
				return "", ctx.Err()
			case <-t.C:
				v.mu.Lock()
				left := v.dirty
				v.mu.Unlock()
				if left == 0 {
					return "", nil
				}
			}
		}
	case "remove":
		return "vol removed: flushed, written back, stopped", nil
	case "flush":
		return "", errors.New("flush: engine: cache device failed")
	case "sync_data_interval":
		return "", errors.New("engine: cannot start the data syncer")
	}
	return "", nil
}

func (v *fakeVolume) recorded() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.messages...)
}

func serve(t *testing.T, v *fakeVolume) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	v.cancelled = make(chan error, 1)
	l, err := control.Listen(dir, "vol")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, l, v) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
}

func runCmd(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	var o, e bytes.Buffer
	code = run(ctx, args, &o, &e)
	return o.String(), e.String(), code
}

func TestMessages(t *testing.T) {
	v := &fakeVolume{}
	serve(t, v)
	ctx := context.Background()
	for _, tc := range []struct {
		args    []string
		code    int
		out     string
		wantErr string
	}{
		{[]string{"vol", "writeback_threshold", "70"}, 0, "", ""},
		{[]string{"vol", "0", "nr_max_batched_writeback", "8"}, 0, "", ""},
		{[]string{"vol", "0", "Read_Cache_Threshold", "127"}, 0, "", ""},
		{[]string{"vol", "update_sb_record_interval", "3600"}, 0, "", ""},
		{[]string{"vol", "clear_stat"}, 0, "", ""},

		{[]string{"vol", "remove", "--no-writeback"}, 0, "vol removed: flushed, written back, stopped\n", ""},
		{[]string{"vol", "0", "remove"}, 0, "vol removed: flushed, written back, stopped\n", ""},
		// Refused before reaching the volume: usage errors.
		{[]string{"vol", "writeback_threshold", "101"}, 2, "", "writeback_threshold: 101 is out of range 0..100"},
		{[]string{"vol", "nr_max_batched_writeback", "0"}, 2, "", "0 is out of range 1..32"},
		{[]string{"vol", "read_cache_threshold", "x"}, 2, "", `"x" is not a number`},
		{[]string{"vol", "write_around_mode", "1"}, 2, "", "write_around_mode can only be set when the volume is created"},
		{[]string{"vol", "nr_read_cache_cells", "16"}, 2, "", "nr_read_cache_cells can only be set when the volume is created"},
		{[]string{"vol", "suspend"}, 2, "", `unknown message "suspend"`},
		{[]string{"vol", "8", "flush"}, 2, "", "sector 8: a writeboost volume is one target starting at sector 0; give 0 or no sector (as a dm table's count of the words that follow it would be 1)"},
		{[]string{"vol", "writeback_treshold", "5"}, 2, "", `unknown message "writeback_treshold" (did you mean writeback_threshold?)`},
		// A dm table's count of the words that follow is accepted.
		{[]string{"vol", "2", "update_sb_record_interval", "60"}, 0, "", ""},
		{[]string{"vol", "0", "1", "clear_stat"}, 0, "", ""},
		{[]string{"vol", "0"}, 2, "", "empty message"},
		{[]string{"other", "flush"}, 1, "", "no such volume: other"},
		{[]string{"a/b", "flush"}, 2, "", "bad volume name"},
		// Refused by the volume; the verb is not repeated when the
		// volume's answer starts with it, nor the engine's prefix.
		{[]string{"vol", "sync_data_interval", "5"}, 1, "", "wb-message: sync_data_interval: cannot start the data syncer\n"},
		{[]string{"vol", "flush"}, 1, "", "wb-message: flush: cache device failed\n"},
		// Usage errors.
		{[]string{"vol"}, 2, "", "expected"},
		{[]string{}, 2, "", "expected"},
	} {
		out, errOut, code := runCmd(ctx, tc.args...)
		if code != tc.code || out != tc.out {
			t.Errorf("%q: exit %d, stdout %q; want %d, %q (stderr %q)", tc.args, code, out, tc.code, tc.out, errOut)
		}
		if tc.wantErr == "" {
			if errOut != "" {
				t.Errorf("%q: stderr %q", tc.args, errOut)
			}
			continue
		}
		if !strings.HasPrefix(errOut, "wb-message: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.wantErr) {
			t.Errorf("%q: stderr %q, want one line 'wb-message: ...%s...'", tc.args, errOut, tc.wantErr)
		}
		if strings.Contains(errOut, "control:") || strings.Contains(errOut, "bad message") {
			t.Errorf("%q: stderr %q: one prefix, not a chain of them", tc.args, errOut)
		}
	}
	want := []string{"writeback_threshold 70", "nr_max_batched_writeback 8", "read_cache_threshold 127",
		"update_sb_record_interval 3600", "clear_stat", "remove --no-writeback", "remove", "update_sb_record_interval 60", "clear_stat", "sync_data_interval 5", "flush"}
	if got := v.recorded(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("the volume received %q\nwant %q", got, want)
	}
}

// TestRemoveRefused: while the volume counts NBD clients, remove is
// refused by the volume with one line naming the count and --force, exit
// 1; remove --force goes through.
func TestRemoveRefused(t *testing.T) {
	two := uint64(2)
	v := &fakeVolume{clients: &two}
	serve(t, v)
	ctx := context.Background()
	for _, args := range [][]string{{"vol", "remove"}, {"vol", "0", "remove", "--no-writeback"}} {
		out, errOut, code := runCmd(ctx, args...)
		want := "wb-message: remove refused: 2 NBD clients are connected to vol; disconnect them first, or remove --force\n"
		if code != 1 || out != "" || errOut != want {
			t.Errorf("%q with 2 clients: exit %d, stdout %q, stderr %q; want exit 1 and %q", args, code, out, errOut, want)
		}
	}
	if got := v.recorded(); len(got) != 0 {
		t.Fatalf("the volume received %q", got)
	}
	out, errOut, code := runCmd(ctx, "vol", "remove", "--force")
	if code != 0 || out != "vol removed: flushed, written back, stopped\n" || errOut != "" {
		t.Errorf("remove --force: exit %d, %q, %q", code, out, errOut)
	}
	if got := v.recorded(); len(got) != 1 || got[0] != "remove --force" {
		t.Errorf("the volume received %q, want [remove --force]", got)
	}
}

func TestDropCachesProgress(t *testing.T) {
	v := &fakeVolume{dirty: 1000, step: 100}
	serve(t, v)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, errOut, code := runCmd(ctx, "vol", "0", "drop_caches")
	if code != 0 || out != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	if len(lines) < 3 {
		t.Fatalf("progress %q: want a first line, some steps and a last line", errOut)
	}
	if lines[0] != "drop_caches: 1000 dirty blocks left (3.9 MiB)" {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[len(lines)-1], "drop_caches: done, no dirty blocks left") {
		t.Errorf("last line %q", lines[len(lines)-1])
	}
	prev := uint64(1000)
	for _, l := range lines[1 : len(lines)-1] {
		var left uint64
		if _, err := fmt.Sscanf(l, "drop_caches: %d dirty blocks left", &left); err != nil {
			t.Fatalf("progress line %q: %v", l, err)
		}
		if left >= prev {
			t.Errorf("dirty blocks left went from %d to %d", prev, left)
		}
		if !strings.Contains(l, "blocks/s (") || !strings.Contains(l, "/s), ETA") || !strings.Contains(l, "left (") {
			t.Errorf("progress line %q lacks the bytes left, the rate in blocks and bytes, or the ETA", l)
		}
		prev = left
	}
	if got := v.recorded(); len(got) != 1 || got[0] != "drop_caches" {
		t.Errorf("the volume received %q", got)
	}
}

func TestDropCachesQuietAndClean(t *testing.T) {
	v := &fakeVolume{dirty: 0}
	serve(t, v)
	out, errOut, code := runCmd(context.Background(), "-q", "vol", "drop_caches")
	if code != 0 || out != "" || errOut != "" {
		t.Errorf("-q drop_caches on a clean volume: exit %d, %q, %q", code, out, errOut)
	}
}

// TestDropCachesInterrupt is Ctrl-C: the command exits 130, the server-side
// wait is cancelled, and the volume goes on answering.
func TestDropCachesInterrupt(t *testing.T) {
	v := &fakeVolume{dirty: 500, stuck: true}
	serve(t, v)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	_, errOut, code := runCmd(ctx, "vol", "drop_caches")
	if code != exitInterrupted {
		t.Errorf("exit %d, want %d (stderr %q)", code, exitInterrupted, errOut)
	}
	if !strings.Contains(errOut, "wb-message: interrupted: stopped waiting for drop_caches") {
		t.Errorf("stderr %q", errOut)
	}
	// The fake volume's writeback_threshold is 0: writeback does not go on.
	if !strings.Contains(errOut, "writeback stops: with writeback_threshold 0") {
		t.Errorf("the interrupt message does not say writeback stops at threshold 0: %q", errOut)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("interrupt took %v", el)
	}
	select {
	case err := <-v.cancelled:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("server-side drop_caches ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server-side drop_caches was not cancelled")
	}
	// The volume is healthy: it answers and takes messages.
	if _, errOut, code := runCmd(context.Background(), "vol", "clear_stat"); code != 0 {
		t.Errorf("clear_stat after interrupt: exit %d, %q", code, errOut)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := runCmd(context.Background(), "--version")
	if code != 0 || !strings.HasPrefix(out, "wb-message ") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runCmd(context.Background(), "--help")
	if code != 0 || !strings.Contains(out, "Usage: wb-message <name> <message> ...") || !strings.Contains(out, "drop_caches") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}
