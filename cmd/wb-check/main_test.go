package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/blockdev"
	"github.com/writeboost/writeboost/internal/testimg"
)

// jsonReport is the JSON object wb-check prints, decoded loosely so that a
// missing or renamed field fails the test.
type jsonReport map[string]any

func (j jsonReport) num(t *testing.T, key string) uint64 {
	t.Helper()
	v, ok := j[key].(float64)
	if !ok {
		t.Fatalf("field %q = %#v, want a number", key, j[key])
	}
	return uint64(v)
}

func (j jsonReport) ids(t *testing.T, key string) []uint64 {
	t.Helper()
	a, ok := j[key].([]any)
	if !ok {
		t.Fatalf("field %q = %#v, want a list", key, j[key])
	}
	var ids []uint64
	for _, v := range a {
		ids = append(ids, uint64(v.(float64)))
	}
	return ids
}

func runCheck(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), progressLine.ReplaceAllString(errb.String(), "")
}

// progressLine is a progress report (cli.Lines): wb-check prints them
// when a scan or a writeback takes more than a second, which a loaded
// machine may make of any fixture; the tests look at the other lines.
var progressLine = regexp.MustCompile(`(?m)^wb-check: (reading segments|writing back): \d+ of \d+ .*\n`)

func decode(t *testing.T, s string) jsonReport {
	t.Helper()
	var j jsonReport
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, s)
	}
	if strings.Count(strings.TrimSpace(s), "\n") != 0 {
		t.Fatalf("JSON on more than one line:\n%s", s)
	}
	return j
}

type fixture struct {
	im   *testimg.Image
	path string
	back string // the backing device at the power cut, as a file
}

func makeFixture(t *testing.T, d testimg.Damage, seed uint64) fixture {
	t.Helper()
	dir := t.TempDir()
	cfg := testimg.Config{Seed: seed, NrSegments: 24, TailBytes: 8192, BackingBlocks: 300 + 700*(seed%2),
		Segments: 60, Damage: d}
	f := fixture{path: filepath.Join(dir, "cache"), back: filepath.Join(dir, "backing")}
	im, err := testimg.Write(f.path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.WriteBacking(f.back); err != nil {
		t.Fatal(err)
	}
	f.im = im
	return f
}

var wantExit = map[testimg.Damage]int{
	testimg.Clean: 0, testimg.TornNewest: 1, testimg.TornTail: 1, testimg.MidLogCorruption: 4,
	testimg.WrongSlot: 4, testimg.Unformatted: 4, testimg.GarbageMagic: 4, testimg.Truncated: 4,
	testimg.TruncatedSmall: 4, testimg.TornInFlight: 1, testimg.DurableCorruption: 4,
}

func TestFixturesJSON(t *testing.T) {
	for _, d := range testimg.Damages() {
		for seed := uint64(1); seed <= 2; seed++ {
			f := makeFixture(t, d, seed)
			code, out, errs := runCheck(t, "--json", f.path)
			if code != wantExit[d] {
				t.Errorf("%v seed %d: exit %d, want %d\n%s%s", d, seed, code, wantExit[d], out, errs)
			}
			if errs != "" {
				t.Errorf("%v: stderr %q", d, errs)
			}
			j := decode(t, out)
			if j.num(t, "schema") != schema {
				t.Errorf("%v: schema %v, want %d", d, j["schema"], schema)
			}
			for _, k := range []string{"device", "backing_size", "formatted", "nr_segments", "max_id", "last_flushed_id", "last_writeback_id",
				"valid_segments", "torn_segment_id", "corrupt_segment_ids", "nr_dirty_blocks", "problems"} {
				if _, ok := j[k]; !ok {
					t.Errorf("%v: no field %q", d, k)
				}
			}
			if j["formatted"] != f.im.Formatted {
				t.Errorf("%v: formatted %v, want %v", d, j["formatted"], f.im.Formatted)
			}
			problems, _ := j["problems"].([]any)
			if (len(problems) == 0) != (d == testimg.Clean) {
				t.Errorf("%v: problems %v", d, problems)
			}
			if j.num(t, "exit_status") != uint64(code) {
				t.Errorf("%v: exit_status %v, exit %d", d, j["exit_status"], code)
			}
			switch d {
			case testimg.Clean, testimg.TornNewest, testimg.TornTail, testimg.MidLogCorruption, testimg.TornInFlight, testimg.DurableCorruption:
				if j.num(t, "nr_segments") != 24 || j.num(t, "max_id") != f.im.MaxID ||
					j.num(t, "last_flushed_id") != f.im.LastFlushedID || j.num(t, "last_writeback_id") != f.im.LastWritebackID ||
					j.num(t, "valid_segments") != uint64(f.im.ValidSegments) || j.num(t, "nr_dirty_blocks") != uint64(f.im.NrDirtyBlocks) {
					t.Errorf("%v seed %d: %v; generator: %+v", d, seed, out, *f.im)
				}
			}
			torn, _ := j["torn_segment_id"].(float64)
			corrupt := j.ids(t, "corrupt_segment_ids")
			switch d {
			case testimg.Clean:
				if j["torn_segment_id"] != nil || len(corrupt) != 0 {
					t.Errorf("clean: torn %v corrupt %v", j["torn_segment_id"], corrupt)
				}
			case testimg.TornNewest, testimg.TornTail, testimg.TornInFlight:
				if uint64(torn) != f.im.BadID || len(corrupt) != 0 {
					t.Errorf("%v: torn %v corrupt %v, want torn %d", d, j["torn_segment_id"], corrupt, f.im.BadID)
				}
			case testimg.MidLogCorruption, testimg.DurableCorruption:
				if j["torn_segment_id"] != nil || !slices.Equal(corrupt, []uint64{f.im.BadID}) {
					t.Errorf("%v: torn %v corrupt %v, want corrupt [%d]", d, j["torn_segment_id"], corrupt, f.im.BadID)
				}
			}
		}
	}
}

func TestFixturesHuman(t *testing.T) {
	status := map[int]string{0: "consistent", 1: "torn-tail", 4: "damaged"}
	for _, d := range testimg.Damages() {
		f := makeFixture(t, d, 3)
		code, out, errs := runCheck(t, f.path)
		if code != wantExit[d] || errs != "" {
			t.Errorf("%v: exit %d, stderr %q", d, code, errs)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if !regexp.MustCompile(`^[a-z_]+: .+$`).MatchString(l) {
				t.Errorf("%v: not a key: value line: %q", d, l)
			}
		}
		if !strings.Contains(out, "\nstatus: "+status[code]+"\n") {
			t.Errorf("%v: no status line %q:\n%s", d, status[code], out)
		}
		if d == testimg.Clean && !strings.Contains(out, "\nnr_dirty_blocks: "+strconv.Itoa(f.im.NrDirtyBlocks)+"\n") {
			t.Errorf("clean: dirty blocks not %d:\n%s", f.im.NrDirtyBlocks, out)
		}
	}
}

func TestOperationalErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		path, fault string
	}{
		{missing, "no such file or directory"},
		{dir, "is a directory"},
	} {
		for _, args := range [][]string{{tc.path}, {"--json", tc.path}, {"--writeback", filepath.Join(dir, "b"), tc.path}} {
			code, out, errs := runCheck(t, args...)
			if code != 8 || out != "" || errs != "wb-check: "+tc.path+": "+tc.fault+"\n" {
				t.Errorf("%v: exit %d stdout %q stderr %q", args, code, out, errs)
			}
		}
	}
	f := makeFixture(t, testimg.Clean, 1)
	code, _, errs := runCheck(t, "--writeback", missing, f.path)
	if code != 8 || errs != "wb-check: "+missing+": no such file or directory\n" {
		t.Errorf("missing backing: exit %d stderr %q", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	f := makeFixture(t, testimg.Clean, 1)
	for _, args := range [][]string{
		{},
		{"--bogus", f.path},
		{"--force", f.path},
		{"--segment", "x", f.path},
		{"--segment", "99999", f.path},
		{"--backing", "0", f.path},
		{"--backing", "12X", f.path},
		{f.path, f.path},
	} {
		code, out, errs := runCheck(t, args...)
		if code != 16 || out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "wb-check: ") {
			t.Errorf("%q: exit %d stdout %q stderr %q", args, code, out, errs)
		}
	}
	code, out, _ := runCheck(t, "--help")
	if code != 0 || !strings.Contains(out, "--writeback=BACKING") {
		t.Errorf("--help: exit %d\n%s", code, out)
	}
}

func TestBacking(t *testing.T) {
	f := makeFixture(t, testimg.Clean, 2)
	size := int64(len(f.im.Backing))
	for _, arg := range []string{f.back, strconv.FormatInt(size, 10), strconv.FormatInt(size/512, 10) + "s"} {
		code, out, errs := runCheck(t, "--json", "--backing", arg, f.path)
		if code != 0 || errs != "" || decode(t, out).num(t, "backing_size") != uint64(size) {
			t.Errorf("--backing %s: exit %d stderr %q\n%s", arg, code, errs, out)
		}
	}
	code, out, _ := runCheck(t, "--backing", "64K", f.path)
	if code != 4 || !strings.Contains(out, "past the backing device's end") {
		t.Errorf("--backing 64K: exit %d\n%s", code, out)
	}
}

func TestWriteback(t *testing.T) {
	for _, d := range []testimg.Damage{testimg.Clean, testimg.TornNewest, testimg.TornTail} {
		for seed := uint64(1); seed <= 2; seed++ {
			f := makeFixture(t, d, seed)
			code, out, errs := runCheck(t, "--json", "--writeback", f.back, f.path)
			if code != wantExit[d] || errs != "" {
				t.Fatalf("%v: exit %d stderr %q", d, code, errs)
			}
			wb, ok := decode(t, out)["writeback"].(map[string]any)
			if !ok || uint64(wb["recorded_id"].(float64)) != f.im.LastFlushedID || wb["sectors"].(float64) == 0 {
				t.Errorf("%v: writeback %v", d, wb)
			}
			got, err := os.ReadFile(f.back)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, f.im.Expected) {
				t.Fatalf("%v seed %d: backing after --writeback differs from the expected volume", d, seed)
			}
			code, out, _ = runCheck(t, "--json", f.path)
			j := decode(t, out)
			if code != wantExit[d] || j.num(t, "nr_dirty_blocks") != 0 || j.num(t, "superblock_record") != f.im.LastFlushedID {
				t.Errorf("%v: after writeback: exit %d %s", d, code, out)
			}
		}
	}
}

func TestWritebackDamaged(t *testing.T) {
	f := makeFixture(t, testimg.MidLogCorruption, 1)
	code, out, errs := runCheck(t, "--writeback", f.back, f.path)
	if code != 4 || !strings.HasPrefix(errs, "wb-check: "+f.path+": refusing to write back a damaged log: ") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("exit %d stderr %q", code, errs)
	}
	if got, _ := os.ReadFile(f.back); !bytes.Equal(got, f.im.Backing) {
		t.Fatal("a refused writeback wrote the backing device")
	}
	code, out, errs = runCheck(t, "--writeback", f.back, "--force", f.path)
	if code != 4 || errs != "" || !strings.Contains(out, "\nwriteback_lost: ") {
		t.Fatalf("--force: exit %d stderr %q\n%s", code, errs, out)
	}
	if got, _ := os.ReadFile(f.back); !bytes.Equal(got, f.im.Expected) {
		t.Fatal("--force: backing differs from what the valid prefix holds")
	}
	for _, d := range []testimg.Damage{testimg.Unformatted, testimg.GarbageMagic, testimg.WrongSlot} {
		f := makeFixture(t, d, 1)
		code, _, errs := runCheck(t, "--writeback", f.back, f.path)
		if code != 4 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d stderr %q", d, code, errs)
		}
		if got, _ := os.ReadFile(f.back); !bytes.Equal(got, f.im.Backing) {
			t.Errorf("%v: a refused writeback wrote the backing device", d)
		}
	}
}

func TestSegmentsViews(t *testing.T) {
	f := makeFixture(t, testimg.TornNewest, 2)
	code, out, _ := runCheck(t, "--segments", f.path)
	if code != 1 || !strings.Contains(out, "| Slot | ID | Length | Dirty blocks | State") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	rows := regexp.MustCompile(`(?m)^\|\s+\d+ \|`).FindAllString(out, -1)
	if len(rows) != 24 || !regexp.MustCompile(`\| torn\s+\|`).MatchString(out) {
		t.Errorf("%d rows, want 24 with one torn:\n%s", len(rows), out)
	}
	id := strconv.FormatUint(f.im.LastFlushedID, 10)
	code, out, _ = runCheck(t, "--segment", id, f.path)
	if code != 1 || !strings.Contains(out, "\nsegment: "+id+"\n") || !strings.Contains(out, "| Index | Sector | Block | Dirty bits | Newest") {
		t.Fatalf("--segment %s: exit %d\n%s", id, code, out)
	}
	code, out, _ = runCheck(t, "--json", "--segments", "--segment", id, f.path)
	j := decode(t, out)
	seg, _ := j["segment"].(map[string]any)
	segs, _ := j["segments"].([]any)
	if code != 1 || seg == nil || seg["checksum_ok"] != true || len(segs) != 24 {
		t.Errorf("--json --segments --segment: exit %d segment %v, %d segments", code, seg, len(segs))
	}
}

// TestBinary runs the built command, as an admin would.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "wb-check")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, d := range []testimg.Damage{testimg.Clean, testimg.TornNewest, testimg.GarbageMagic} {
		f := makeFixture(t, d, 1)
		cmd := exec.Command(bin, "--json", f.path)
		out, err := cmd.Output()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != wantExit[d] || decode(t, string(out))["formatted"] != f.im.Formatted {
			t.Errorf("%v: exit %d\n%s", d, code, out)
		}
	}
	out, err := exec.Command(bin, filepath.Join(t.TempDir(), "none")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 8 || !strings.HasSuffix(string(out), ": no such file or directory\n") {
		t.Errorf("missing: %v %q", err, out)
	}
}

// TestManPage keeps man/wb-check.8 in step with --help: every flag is
// documented, and every exit status.
func TestManPage(t *testing.T) {
	man, err := os.ReadFile("../../man/wb-check.8")
	if err != nil {
		t.Fatal(err)
	}
	_, help, _ := runCheck(t, "--help")
	flags := regexp.MustCompile(`--[a-z-]+`).FindAllString(help, -1)
	if len(flags) < 7 {
		t.Fatalf("help lists %d flags:\n%s", len(flags), help)
	}
	for _, fl := range flags {
		if !bytes.Contains(man, []byte(strings.ReplaceAll(fl, "-", `\-`))) {
			t.Errorf("man page does not document %s", fl)
		}
	}
	for _, code := range []string{"0", "1", "4", "8", "16"} {
		if !regexp.MustCompile(`(?m)^\.TP\n\.B ` + code + `\n`).Match(man) {
			t.Errorf("man page does not document exit status %s", code)
		}
	}
}

func TestBusy(t *testing.T) {
	f := makeFixture(t, testimg.Clean, 1)
	held, err := blockdev.OpenFile(f.path, blockdev.FileOptions{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	// Reading is allowed next to a running volume; writing back is not.
	if code, _, errs := runCheck(t, f.path); code != 0 || errs != "" {
		t.Errorf("read-only check of a held cache: exit %d %q", code, errs)
	}
	code, _, errs := runCheck(t, "--writeback", f.back, f.path)
	if code != 8 || !strings.HasPrefix(errs, "wb-check: "+f.path+": in use") || strings.Count(errs, "\n") != 1 {
		t.Errorf("writeback to a held cache: exit %d %q", code, errs)
	}
	if got, _ := os.ReadFile(f.back); !bytes.Equal(got, f.im.Backing) {
		t.Error("backing written")
	}
}
