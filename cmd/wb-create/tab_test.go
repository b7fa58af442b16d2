package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	wbcli "github.com/writeboost/writeboost/internal/cli"
	"github.com/writeboost/writeboost/internal/control"
)

func writeTab(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "writeboosttab")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadTabErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"a/b /b /c\n", ":1: field 1 (NAME): "},
		{"# comment\n\nv /b\n", ":3: field 3 (CACHE): missing"},
		{"v\n", ":1: field 2 (BACKING): missing"},
		{"v /b /c writeback_threshold\n", ":1: field 4 (KEY): writeback_threshold has no VALUE"},
		{"v /b /c writeback_threshold 101\n", ":1: field 4 (writeback_threshold): "},
		{"v /b /c writeback_threshold 1 bogus 2\n", ":1: field 6 (bogus): "},
		{"v /b /c writeback_threshold 1 writeback_threshold 2\n", ":1: field 4 (KEY VALUE): "},
		{"v /b /c\nw /b2 /c2\nv /b3 /c3\n", ":3: field 1 (NAME): v is also on line 1"},
	} {
		p := writeTab(t, tc.text)
		_, err := readTab(p)
		if err == nil || !strings.Contains(err.Error(), p+tc.want) {
			t.Errorf("%q: %v, want %q", tc.text, err, p+tc.want)
		}
	}
}

func TestExpandTab(t *testing.T) {
	p := writeTab(t, "# NAME BACKING CACHE [KEY VALUE]...\nvol0 /dev/sda /dev/sdb1 writeback_threshold 70 # slow disk\nvol1 /b /c\n")
	t.Setenv(tabEnv, p)
	for _, tc := range []struct{ args, want []string }{
		{[]string{"v", "/b", "/c"}, []string{"v", "/b", "/c"}},
		{[]string{"--tab", "vol0"}, []string{"vol0", "/dev/sda", "/dev/sdb1", "writeback_threshold", "70"}},
		{[]string{"-v", "--tab", p, "vol1", "--listen", "tcp://127.0.0.1:0"}, []string{"-v", "vol1", "/b", "/c", "--listen", "tcp://127.0.0.1:0"}},
		{[]string{"--tab=" + p, "vol1"}, []string{"vol1", "/b", "/c"}},
		{[]string{"--tab", "vol1", "-v"}, []string{"vol1", "/b", "/c", "-v"}},
	} {
		got, err := expandTab(tc.args)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("expandTab(%q) = %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
	for _, args := range [][]string{{"--tab"}, {"--tab", "-v"}, {"--tab", "nope"}, {"--tab", "/no/such/tab", "vol0"}} {
		if _, err := expandTab(args); !wbcli.IsUsage(err) {
			t.Errorf("expandTab(%q): %v, want a usage error", args, err)
		}
	}
}

// TestTabStart: a volume started from its table line runs with the
// line's tunables, again after a restart; a malformed table is a usage
// error naming the file, the line and the field.
func TestTabStart(t *testing.T) {
	_, b, c := images(t, 16<<20, 8<<20)
	p := writeTab(t, "tv "+b+" "+c+" writeback_threshold 37 read_cache_threshold 9\n")
	for i, args := range [][]string{{"--reformat", "--tab", p, "tv"}, {"--tab=" + p, "tv"}} {
		r := start(t, args...)
		cl, err := control.Dial("tv")
		if err != nil {
			t.Fatal(err)
		}
		s, err := cl.Status()
		cl.Close()
		if err != nil || s.Tunables.WritebackThreshold != 37 || s.Tunables.ReadCacheThreshold != 9 {
			t.Fatalf("start %d: tunables %+v, %v", i, s.Tunables, err)
		}
		r.stop(t)
	}
	bad := writeTab(t, "tv "+b+" "+c+" writeback_threshold x\n")
	code, _, stderr := runOnce(t, "--tab", bad, "tv")
	if code != 2 || !strings.Contains(stderr, bad+":1: field 4 (writeback_threshold)") {
		t.Errorf("malformed table: exit %d, %q", code, stderr)
	}
}
