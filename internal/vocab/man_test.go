package vocab

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// manSection returns the lines of a man page's section (from ".SH title"
// or ".SS title" to the next heading of the same level).
func manSection(t *testing.T, page, heading string) []string {
	t.Helper()
	b, err := os.ReadFile("../../man/" + page)
	if err != nil {
		t.Fatal(err)
	}
	level := heading[:3]
	var out []string
	in := false
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case l == heading:
			in = true
			continue
		case in && (strings.HasPrefix(l, level+" ") || strings.HasPrefix(l, ".SH ")):
			return out
		}
		if in {
			out = append(out, l)
		}
	}
	if !in {
		t.Fatalf("%s has no %q", page, heading)
	}
	return out
}

// TestManCreateTunables: the OPTIONAL ARGUMENTS of wb-create(8) list every
// tunable of the table, in its order, with its range, default and static
// flag (".B name \fRmin..max (default[, static])").
func TestManCreateTunables(t *testing.T) {
	re := regexp.MustCompile(`^\.B (\w+) \\fR(\d+)\.\.(\d+) \((\d+)(, static)?\)$`)
	var got []string
	for _, l := range manSection(t, "wb-create.8", ".SH OPTIONAL ARGUMENTS") {
		if m := re.FindStringSubmatch(l); m != nil {
			got = append(got, fmt.Sprintf("%s %s..%s (%s%s)", m[1], m[2], m[3], m[4], m[5]))
		}
	}
	var want []string
	for _, tu := range Tunables() {
		s := tu.Spec()
		static := ""
		if s.Static {
			static = ", static"
		}
		want = append(want, fmt.Sprintf("%s %s (%d%s)", s.Name, tu.Range(), s.Default, static))
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("man/wb-create.8 OPTIONAL ARGUMENTS lists\n%s\nthe table says\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestManMessageTunables: the Tunables of wb-message(8) list every dynamic
// tunable, in the table's order, with its range (".BI name " N"" then
// "min..max"), and name every static one as refused.
func TestManMessageTunables(t *testing.T) {
	lines := manSection(t, "wb-message.8", ".SS Tunables")
	re := regexp.MustCompile(`^\.BI (\w+) " N"$`)
	var got []string
	static := map[string]bool{}
	for i, l := range lines {
		if m := re.FindStringSubmatch(l); m != nil && i+1 < len(lines) {
			r, _, _ := strings.Cut(lines[i+1], " ")
			got = append(got, m[1]+" "+strings.TrimSuffix(r, "."))
		}
		if name, ok := strings.CutPrefix(l, ".B "); ok {
			static[name] = true
		}
	}
	var want []string
	for _, tu := range Tunables() {
		if tu.Spec().Static {
			if !static[tu.String()] {
				t.Errorf("man/wb-message.8 does not name the static %s", tu)
			}
			continue
		}
		want = append(want, tu.String()+" "+tu.Range())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("man/wb-message.8 Tunables lists\n%s\nthe table says\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestManExitStatus: every page's EXIT STATUS is one table (".TP", ".B N",
// then what it means) listing exactly the statuses its command returns;
// the commands' tests check which cases give which.
func TestManExitStatus(t *testing.T) {
	for page, want := range map[string]string{
		"wb-create.8":       "0 1 2",
		"wb-status.8":       "0 1 2",
		"wb-message.8":      "0 1 2 130",
		"wb-format-cache.8": "0 1 2",
		"wb-check.8":        "0 1 4 8 16",
	} {
		lines := manSection(t, page, ".SH EXIT STATUS")
		var got []string
		for i, l := range lines {
			if l == ".TP" && i+1 < len(lines) {
				code, ok := strings.CutPrefix(lines[i+1], ".B ")
				if !ok {
					t.Errorf("%s EXIT STATUS: %q after .TP, want .B N", page, lines[i+1])
				}
				got = append(got, code)
			}
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s EXIT STATUS lists %q, want %q", page, strings.Join(got, " "), want)
		}
	}
}
