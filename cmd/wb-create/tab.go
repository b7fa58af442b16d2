package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	wbcli "github.com/writeboost/writeboost/internal/cli"
	"github.com/writeboost/writeboost/internal/control"
	"github.com/writeboost/writeboost/internal/vocab"
)

// The volume table: one volume a line, as fstab and crypttab hold file
// systems and LUKS devices,
//
//	# NAME  BACKING   CACHE      [KEY VALUE]...
//	vol0    /dev/sda  /dev/sdb1  writeback_threshold 70
//
// fields separated by blanks, '#' starting a comment. `wb-create --tab
// [FILE] NAME` starts NAME's line as if its fields were the command line;
// systemd's writeboost@NAME.service does that, so the tunables of the
// line hold at every start.
const (
	defaultTab = "/etc/writeboosttab"
	tabEnv     = "WB_TAB" // the table instead of defaultTab
)

// tabEntry is one line of the table.
type tabEntry struct {
	line                 int
	name, backing, cache string
	args                 []string // KEY VALUE pairs as written
}

// tabPath is the table --tab reads when no FILE is given.
func tabPath() string {
	if p := os.Getenv(tabEnv); p != "" {
		return p
	}
	return defaultTab
}

// readTab reads and checks the whole table: each line as wb-create checks
// its command line (name, KEY VALUE ranges), names unique. An error names
// the file, the line and the field.
func readTab(path string) ([]tabEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("volume table: %w", err)
	}
	defer f.Close()
	var out []tabEntry
	seen := map[string]int{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		bad := func(field int, what string, err error) error {
			return fmt.Errorf("%s:%d: field %d (%s): %w", path, n, field, what, err)
		}
		if err := control.ValidName(fields[0]); err != nil {
			return nil, bad(1, "NAME", err)
		}
		if len(fields) < 3 {
			return nil, bad(len(fields)+1, [...]string{"", "", "BACKING", "CACHE"}[len(fields)+1], errors.New("missing: want NAME BACKING CACHE [KEY VALUE]..."))
		}
		if first, ok := seen[fields[0]]; ok {
			return nil, bad(1, "NAME", fmt.Errorf("%s is also on line %d", fields[0], first))
		}
		args := fields[3:]
		if len(args)%2 != 0 {
			return nil, bad(len(fields), "KEY", fmt.Errorf("%s has no VALUE: optional args come in KEY VALUE pairs", args[len(args)-1]))
		}
		for i := 0; i < len(args); i += 2 {
			if _, _, err := vocab.ParseOptionalArgs(args[i : i+2]); err != nil {
				return nil, bad(4+i, args[i], err)
			}
		}
		if _, _, err := vocab.ParseOptionalArgs(args); err != nil { // a key given twice
			return nil, bad(4, "KEY VALUE", err)
		}
		seen[fields[0]] = n
		out = append(out, tabEntry{line: n, name: fields[0], backing: fields[1], cache: fields[2], args: args})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("volume table %s: %w", path, err)
	}
	return out, nil
}

// expandTab turns `--tab [FILE] NAME` (or `--tab=FILE NAME`) in args into
// NAME's line of the table, `NAME BACKING CACHE [KEY VALUE]...`, so that
// the command line parser and wb-create's checks see what a person would
// have typed. Args without --tab come back as they are. Errors are usage
// errors: the table is part of the command line.
func expandTab(args []string) ([]string, error) {
	if os.Getenv("COMP_LINE") != "" {
		return args, nil // the shell asks for completions: Parse answers, args are the shell's
	}
	i := -1
	var file string
	for j, a := range args {
		if a == "--" {
			break
		}
		if a == "--tab" || strings.HasPrefix(a, "--tab=") {
			i, file = j, strings.TrimPrefix(strings.TrimPrefix(a, "--tab"), "=")
			break
		}
	}
	if i < 0 {
		return args, nil
	}
	rest := args[i+1:]
	if args[i] == "--tab" && len(rest) >= 2 && !strings.HasPrefix(rest[0], "-") && !strings.HasPrefix(rest[1], "-") {
		file, rest = rest[0], rest[1:] // --tab FILE NAME
	}
	if len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
		return nil, wbcli.Usage(errors.New("--tab [FILE] NAME: NAME, the volume to start, must follow"))
	}
	if file == "" {
		file = tabPath()
	}
	name := rest[0]
	entries, err := readTab(file)
	if err != nil {
		return nil, wbcli.Usage(err)
	}
	for _, e := range entries {
		if e.name == name {
			out := append(append([]string(nil), args[:i]...), e.name, e.backing, e.cache)
			out = append(out, e.args...)
			return append(out, rest[1:]...), nil
		}
	}
	return nil, wbcli.Usagef("no volume %q in %s", name, file)
}

// predictors complete wb-create's command line: NAME from the volume
// table, KEYs from the tunables.
var predictors = wbcli.Predictors{
	"tabname": func() []string {
		entries, _ := readTab(tabPath())
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.name)
		}
		return names
	},
	"tunable": vocab.TunableNames,
}
