package cli

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"testing"
)

type grammar struct {
	Name   string `arg:"" help:"A name."`
	Count  int    `help:"How many."`
	Common `embed:""`
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		done       bool
		code       int
		out, errln string
	}{
		{args: []string{"x", "--count", "3"}},
		{args: []string{"--help"}, done: true, code: 0, out: "A name."},
		{args: []string{"--version"}, done: true, code: 0, out: "prog " + Version() + "\n"},
		{args: []string{}, done: true, code: 16, errln: "prog: expected \"<name>\"\n"},
		{args: []string{"x", "--count", "many"}, done: true, code: 16, errln: "prog: --count: expected a valid 64 bit int but got \"many\"\n"},
	} {
		var g grammar
		var out, errb bytes.Buffer
		kctx, code, done := Parse("prog", "Test program.", &g, tc.args, &out, &errb, 16)
		if done != tc.done || code != tc.code || (kctx == nil) != done {
			t.Fatalf("%q: done %v code %d", tc.args, done, code)
		}
		if !strings.Contains(out.String(), tc.out) || errb.String() != tc.errln && tc.errln != "" {
			t.Fatalf("%q: stdout %q stderr %q", tc.args, out.String(), errb.String())
		}
		if !done && (g.Name != "x" || g.Count != 3) {
			t.Fatalf("parsed %+v", g)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536 << 10: "1.5 MiB", 1 << 62: "4.0 EiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	if OneLine("a\n  b\tc ") != "a b c" {
		t.Error("OneLine")
	}
}

func TestUsage(t *testing.T) {
	if Usage(nil) != nil {
		t.Error("Usage(nil) is not nil")
	}
	err := fmt.Errorf("wrapped: %w", Usagef("bad %s", "name"))
	if !IsUsage(err) || err.Error() != "wrapped: bad name" {
		t.Errorf("IsUsage(%v) false", err)
	}
	if IsUsage(errors.New("plain")) {
		t.Error("a plain error is a usage error")
	}
}

type completed struct {
	Vol   string `arg:"" predictor:"volume" help:"A volume."`
	Quiet bool   `help:"Say less."`
}

// TestComplete: with COMP_LINE set (the shell asking), Parse prints the
// candidates for the word being typed and ends the run with status 0.
func TestComplete(t *testing.T) {
	for line, want := range map[string]string{
		"prog --q":  "--quiet\n",
		"prog v":    "vol0\nvol1\n",
		"prog vol1": "vol1\n",
	} {
		t.Setenv("COMP_LINE", line)
		var g completed
		var out, errb bytes.Buffer
		_, code, done := Parse("prog", "Test.", &g, nil, &out, &errb, 2, Predictors{"volume": func() []string { return []string{"vol0", "vol1", "other"} }})
		if !done || code != 0 || out.String() != want {
			t.Errorf("COMP_LINE=%q: done %v code %d stdout %q stderr %q, want %q", line, done, code, out.String(), errb.String(), want)
		}
	}
}

// TestVersion: the revision comes from Go's VCS stamping, else from the
// one make build passes (-ldflags -X), else "unknown".
func TestVersion(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.3.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "1a2b3c4d5e6f7a8b"}, {Key: "vcs.modified", Value: "true"}}}
	bare := &debug.BuildInfo{GoVersion: "go1.26.0"}
	for _, tc := range []struct {
		bi       *debug.BuildInfo
		rev      string
		modified bool
		want     string
	}{
		{stamped, "", false, "v0.3.0 (rev 1a2b3c4d5e6f, modified, go1.26.0)"},
		{stamped, "ffffffffffff", false, "v0.3.0 (rev 1a2b3c4d5e6f, modified, go1.26.0)"}, // Go's own wins
		{bare, "0123456789ab", false, "(devel) (rev 0123456789ab, go1.26.0)"},
		{bare, "0123456789ab", true, "(devel) (rev 0123456789ab, modified, go1.26.0)"},
		{bare, "", true, "(devel) (rev unknown, go1.26.0)"},
	} {
		if got := version(tc.bi, tc.rev, tc.modified); got != tc.want {
			t.Errorf("version(%q, %v) = %q, want %q", tc.rev, tc.modified, got, tc.want)
		}
	}
}
