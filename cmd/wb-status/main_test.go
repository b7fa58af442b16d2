package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/vocab"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const sampleLine = "0 204800 writeboost 2 762 6 73 73 67 391 12 224 0 0 15 9 1 0 15 6567 0 0 1 0 15 0 11 10 writeback_threshold 0 nr_cur_batched_writeback 1 sync_data_interval 0 update_sb_record_interval 0 read_cache_threshold 0"

// fakeVolume serves a fixed status.
type fakeVolume struct{ s vocab.Status }

func (v fakeVolume) Status() vocab.Status { return v.s }
func (v fakeVolume) Table() string {
	return control.FormatTableLine(control.TableLine{SizeBytes: v.s.SizeBytes, Backing: v.s.Backing, Cache: v.s.Cache,
		Args: []string{"writeback_threshold", "70", "nr_read_cache_cells", "1024"}})
}
func (v fakeVolume) Message(context.Context, vocab.Message) (string, error) { return "", nil }

// serveVolume runs a control server for a volume named name with the sample
// status in a fresh run directory ($WB_RUN_DIR), and writes its state file.
func serveVolume(t *testing.T, dir, name string) vocab.Status {
	t.Helper()
	s, err := control.ParseStatusLine(sampleLine)
	if err != nil {
		t.Fatal(err)
	}
	s.Name, s.Backing, s.Cache = name, "/tmp/backing.img", "/tmp/cache.img"
	s.NrMaxBatchedWriteback, s.NrReadCacheCells, s.RAMBufferBytes, s.NrRAMBuffers = 32, 1024, 4<<20, 2
	s.LastDurableID, s.SuperblockRecordID = 73, 60
	allowed := true
	s.WritebackAllowed, s.BackingUtilPercent = &allowed, 12
	s.WritebackBytes, s.WritebackBytesPerSec = 3<<30, 5<<20
	s.ReadCacheStaged, s.IndexBytes = 127, 96<<10
	s.CacheIO, s.BackingIO = "io_uring", "blocking"
	s.Errors.BackingWrite, s.Errors.Writeback = 2, 1
	s.UptimeSeconds = 3725
	clients := uint64(2)
	s.NrClients = &clients
	serveStatus(t, dir, name, s)
	return s
}

// serveStatus runs a control server for the volume name answering s, and
// writes its state file.
func serveStatus(t *testing.T, dir, name string, s vocab.Status) {
	t.Helper()
	l, err := control.Listen(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- control.Serve(ctx, l, fakeVolume{s}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	st := control.State{Name: name, PID: os.Getpid(), Backing: s.Backing, Cache: s.Cache, SizeBytes: s.SizeBytes,
		TableArgs: []string{"writeback_threshold", "70", "nr_read_cache_cells", "1024"},
		Socket:    control.SocketPath(dir, name), Control: control.ControlPath(dir, name)}
	if err := control.WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
}

func runCmd(t *testing.T, ctx context.Context, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(ctx, args, strings.NewReader(stdin), &o, &e)
	return o.String(), e.String(), code
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it)\n got:\n%s\nwant:\n%s", path, got, want)
	}
}

func TestGolden(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	serveVolume(t, dir, "wbvol")
	ctx := context.Background()
	for _, tc := range []struct {
		file  string
		stdin string
		args  []string
	}{
		{"human.golden", "", []string{"wbvol"}},
		{"json.golden", "", []string{"--json", "wbvol"}},
		{"raw.golden", "", []string{"--raw", "wbvol"}},
		{"table.golden", "", []string{"--table", "wbvol"}},
		{"list.golden", "", nil},
		{"list-raw.golden", "", []string{"--raw"}},
		{"list-table.golden", "", []string{"--table"}},
		{"list-json.golden", "", []string{"--json"}},
		{"stdin.golden", sampleLine + "\n", []string{"-"}},
		{"stdin-json.golden", sampleLine + "\n", []string{"--json", "-"}},
		{"stdin-multi-json.golden", "a: " + sampleLine + "\nb: " + sampleLine + "\n", []string{"--json", "-"}},
		{"stdin-multi.golden", "a: " + sampleLine + "\n\nvg-root: 0 409600 linear 8:2 2048\nb: " + sampleLine + "\n", []string{"--raw", "-"}},
		{"stdin-table.golden", "wbdev: 0 2048 writeboost 8:16 8:32 2 read_cache_threshold 31\n", []string{"--table", "-"}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, errOut, code := runCmd(t, ctx, tc.stdin, tc.args...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			golden(t, tc.file, out)
		})
	}
}

func TestRawIsTheKernelLine(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	serveVolume(t, dir, "v")
	out, _, code := runCmd(t, context.Background(), "", "--raw", "v")
	if code != 0 || out != sampleLine+"\n" {
		t.Errorf("--raw = %q (exit %d), want the sample line", out, code)
	}
	// The raw line, fed back through '-', gives the same JSON as the volume
	// minus what the line does not carry.
	viaStdin, _, code := runCmd(t, context.Background(), out, "--json", "-")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var s vocab.Status
	if err := json.Unmarshal([]byte(viaStdin), &s); err != nil {
		t.Fatal(err)
	}
	if control.FormatStatusLine(s) != sampleLine {
		t.Errorf("round trip through --json - = %q", control.FormatStatusLine(s))
	}
	// JSON keys are the documented names.
	var m map[string]any
	if err := json.Unmarshal([]byte(viaStdin), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"cursor_pos", "nr_cache_blocks", "nr_segments", "current_id", "last_flushed_id",
		"last_writeback_id", "nr_dirty_cache_blocks", "stat", "nr_partial_flushed", "tunables", "size_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON has no key %q", k)
		}
	}
	if n := len(m["stat"].([]any)); n != 16 {
		t.Errorf("stat has %d counters", n)
	}
	tun := m["tunables"].(map[string]any)
	for _, k := range []string{"writeback_threshold", "nr_cur_batched_writeback", "sync_data_interval", "update_sb_record_interval", "read_cache_threshold"} {
		if _, ok := tun[k]; !ok {
			t.Errorf("tunables has no key %q", k)
		}
	}
}

// TestClientsShown: a running volume's client count is in the JSON and
// the tables, 0 included, and never in the kernel's line.
func TestClientsShown(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	s, err := control.ParseStatusLine(sampleLine)
	if err != nil {
		t.Fatal(err)
	}
	s.Name = "idle"
	var zero uint64
	s.NrClients = &zero
	serveStatus(t, dir, "idle", s)
	ctx := context.Background()
	check := func(args []string, want string) {
		t.Helper()
		out, errOut, code := runCmd(t, ctx, "", args...)
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("%q: exit %d, stderr %q, output lacks %q:\n%s", args, code, errOut, want, out)
		}
	}
	check([]string{"--json", "idle"}, `"nr_clients":0`)
	check([]string{"idle"}, "| NBD clients          | 0 ")
	check([]string{}, "| idle | 100.0 MiB |       0 |")
	out, _, code := runCmd(t, ctx, "", "--raw", "idle")
	if code != 0 || out != sampleLine+"\n" {
		t.Errorf("--raw = %q, want the kernel's line", out)
	}
	// A kernel line read from stdin does not say: null, no row.
	out, _, _ = runCmd(t, ctx, sampleLine, "--json", "-")
	if !strings.Contains(out, `"nr_clients":null`) {
		t.Errorf("--json - invents a client count: %s", out)
	}
	out, _, _ = runCmd(t, ctx, sampleLine, "-")
	if strings.Contains(out, "NBD clients") {
		t.Errorf("table of a stdin line invents a client count:\n%s", out)
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	for _, tc := range []struct {
		name    string
		stdin   string
		args    []string
		code    int
		wantErr string
	}{
		{"unknown volume", "", []string{"nope"}, 1, "no such volume: nope"},
		{"bad name", "", []string{"a/b"}, 2, "bad volume name"},
		{"malformed stdin", "0 204800 writeboost 2 762 6 73 x\n", []string{"-"}, 1, `field 5 (last_flushed_id): "x" is not a number`},
		{"empty stdin", "\n", []string{"-"}, 1, "no writeboost status line"},
		{"only other tables", "vg-root: 0 409600 linear 8:2 2048\n", []string{"--table", "-"}, 1, "no writeboost table line"},
		{"only other targets", "vg-root: 0 409600 linear 8:2 2048\n", []string{"-"}, 1, "no writeboost status line"},
		{"other target without name", "0 409600 linear 8:2 2048\n", []string{"-"}, 1, `target type "linear"`},
		{"bad table stdin", "0 8 writeboost /b /c 2 write_around_mode 5\n", []string{"--table", "-"}, 1, "write_around_mode: 5 is out of range 0..1"},
		{"two formats", "", []string{"--raw", "--json", "x"}, 2, "can't be used together"},
		{"unknown flag", "", []string{"--bogus"}, 2, "unknown flag --bogus"},
		{"watch stdin", "", []string{"--watch", "1", "-"}, 2, "--watch cannot re-read standard input"},
		{"negative watch", "", []string{"--watch=-1", "x"}, 2, "want a positive number"},
		{"watch not a number", "", []string{"--watch=x", "x"}, 2, "--watch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runCmd(t, context.Background(), tc.stdin, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d", code, tc.code)
			}
			if !strings.HasPrefix(errOut, "wb-status: ") || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.wantErr) {
				t.Errorf("stderr %q, want one line 'wb-status: ...%s...'", errOut, tc.wantErr)
			}
			if out != "" {
				t.Errorf("stdout %q on error", out)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	out, _, code := runCmd(t, context.Background(), "", "--help")
	if code != 0 || !strings.Contains(out, "Usage: wb-status") || !strings.Contains(out, "--watch=SECONDS") {
		t.Errorf("--help: exit %d, output %q", code, out)
	}
}

func TestListSkipsStale(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	out, errOut, code := runCmd(t, context.Background(), "")
	if code != 0 || out != "" || errOut != "No volumes found\n" {
		t.Errorf("empty run dir: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	// Scripts parse stdout: with no volume it is still JSON.
	out, errOut, code = runCmd(t, context.Background(), "", "--json")
	if code != 0 || out != "[]\n" || errOut != "" {
		t.Errorf("empty run dir --json: stdout %q, stderr %q, exit %d", out, errOut, code)
	}
	serveVolume(t, dir, "live")
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := control.WriteState(dir, control.State{Name: "gone", PID: cmd.Process.Pid, Control: control.ControlPath(dir, "gone")}); err != nil {
		t.Fatal(err)
	}
	out, _, code = runCmd(t, context.Background(), "", "--raw")
	if code != 0 || out != "live: "+sampleLine+"\n" {
		t.Errorf("list with a stale state file: %q, exit %d", out, code)
	}
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(control.RunDirEnv, dir)
	serveVolume(t, dir, "w")
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	out, errOut, code := runCmd(t, ctx, "", "--raw", "--watch", "0.1", "w")
	if code != 0 || errOut != "" {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("--watch printed %d frames in 0.5s at 0.1s, want several", len(lines))
	}
	for _, l := range lines {
		if l != sampleLine {
			t.Errorf("frame %q", l)
		}
	}
	// A volume that goes away ends the watch with an error.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	_, errOut, code = runCmd(t, ctx2, "", "--watch", "0.1", "missing")
	if code != 1 || !strings.Contains(errOut, "no such volume") {
		t.Errorf("watch of a missing volume: exit %d, %q", code, errOut)
	}
}
