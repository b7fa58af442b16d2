package control

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/writeboost/writeboost/internal/vocab"
)

// TargetName is the device-mapper target type printed in status and table
// lines.
const TargetName = "writeboost"

// statusFieldNames names the leading numeric fields of the status line, in
// order, for error messages and the documentation.
var statusFieldNames = [...]string{
	"cursor_pos",
	"nr_cache_blocks",
	"nr_segments",
	"current_id",
	"last_flushed_id",
	"last_writeback_id",
	"nr_dirty_cache_blocks",
}

// nrStatusTokens is the number of whitespace-separated tokens of a status
// line without the "START SECTORS writeboost" prefix: 7 fields, 16 counters,
// nr_partial_flushed, the tunable count and five key-value pairs.
const nrStatusTokens = len(statusFieldNames) + vocab.StatLen + 1 + 1 + 2*len(vocab.StatusTunableNames)

// FormatStatusLine returns the line `dmsetup status` prints for the kernel
// target (STATUSTYPE_INFO), prefixed like dmsetup: "0 SECTORS writeboost".
func FormatStatusLine(s vocab.Status) string {
	var b strings.Builder
	fmt.Fprintf(&b, "0 %d %s %d %d %d %d %d %d %d", s.Sectors(), TargetName,
		s.CursorPos, s.NrCacheBlocks, s.NrSegments, s.CurrentID,
		s.LastFlushedID, s.LastWritebackID, s.NrDirtyCacheBlocks)
	for _, v := range s.Stat {
		fmt.Fprintf(&b, " %d", v)
	}
	fmt.Fprintf(&b, " %d %d", s.NrPartialFlushed, 2*len(vocab.StatusTunableNames))
	for i, name := range vocab.StatusTunableNames {
		fmt.Fprintf(&b, " %s %d", name, *s.Tunables.Field(i))
	}
	return b.String()
}

// stripPrefix removes an optional "NAME:" (dmsetup status without a device
// prints it) and an optional "START SECTORS writeboost" from fields. It
// returns the name, the size in sectors (0 if absent), and the rest.
func stripPrefix(fields []string) (name string, sectors uint64, hasPrefix bool, rest []string, err error) {
	if len(fields) > 0 && strings.HasSuffix(fields[0], ":") {
		name = strings.TrimSuffix(fields[0], ":")
		fields = fields[1:]
	}
	if len(fields) >= 3 && fields[2] == TargetName {
		start, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			return "", 0, false, nil, fmt.Errorf("%w: start sector %q is not a number", ErrSyntax, fields[0])
		}
		if start != 0 {
			return "", 0, false, nil, fmt.Errorf("%w: start sector %d: only a single target starting at 0 is supported", ErrSyntax, start)
		}
		sectors, err = strconv.ParseUint(fields[1], 10, 64)
		if err != nil {
			return "", 0, false, nil, fmt.Errorf("%w: length %q is not a number of sectors", ErrSyntax, fields[1])
		}
		if sectors > 1<<54 {
			return "", 0, false, nil, fmt.Errorf("%w: length %d sectors is too large", ErrSyntax, sectors)
		}
		return name, sectors, true, fields[3:], nil
	}
	if len(fields) >= 3 && isNumber(fields[0]) && isNumber(fields[1]) && !isNumber(fields[2]) {
		return "", 0, false, nil, fmt.Errorf("%w: target type %q, want %q", ErrSyntax, fields[2], TargetName)
	}
	return name, 0, false, fields, nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}

// ParseStatusLine parses a status line as FormatStatusLine writes it and
// `dmsetup status` prints it for the kernel target, with or without the
// "0 SECTORS writeboost" prefix (and an optional "NAME:" before it). A
// malformed line gives an error that wraps ErrSyntax and names the field;
// fields count from 1 after the prefix.
func ParseStatusLine(line string) (vocab.Status, error) {
	var s vocab.Status
	name, sectors, _, f, err := stripPrefix(strings.Fields(line))
	if err != nil {
		return s, err
	}
	s.Name = name
	s.SizeBytes = sectors << 9
	num := func(i int, what string) (uint64, error) {
		if i >= len(f) {
			return 0, fmt.Errorf("%w: field %d (%s) missing: the line has %d fields, want %d", ErrSyntax, i+1, what, len(f), nrStatusTokens)
		}
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: field %d (%s): %q is not a number", ErrSyntax, i+1, what, f[i])
		}
		return v, nil
	}
	heads := [...]*uint64{&s.CursorPos, &s.NrCacheBlocks, &s.NrSegments, &s.CurrentID,
		&s.LastFlushedID, &s.LastWritebackID, &s.NrDirtyCacheBlocks}
	i := 0
	for k, p := range heads {
		if *p, err = num(i, statusFieldNames[k]); err != nil {
			return s, err
		}
		i++
	}
	for k := range s.Stat {
		if s.Stat[k], err = num(i, fmt.Sprintf("stat[%d] %s", k, vocab.StatName(k))); err != nil {
			return s, err
		}
		i++
	}
	if s.NrPartialFlushed, err = num(i, "nr_partial_flushed"); err != nil {
		return s, err
	}
	i++
	n, err := num(i, "number of tunable args")
	if err != nil {
		return s, err
	}
	i++
	if n != 2*uint64(len(vocab.StatusTunableNames)) {
		return s, fmt.Errorf("%w: field %d (number of tunable args): %d, want %d", ErrSyntax, i, n, 2*len(vocab.StatusTunableNames))
	}
	for k, want := range vocab.StatusTunableNames {
		if i >= len(f) {
			return s, fmt.Errorf("%w: field %d (tunable name %s) missing", ErrSyntax, i+1, want)
		}
		if f[i] != want {
			return s, fmt.Errorf("%w: field %d (tunable name): %q, want %q", ErrSyntax, i+1, f[i], want)
		}
		i++
		if *s.Tunables.Field(k), err = num(i, want); err != nil {
			return s, err
		}
		i++
	}
	if i != len(f) {
		return s, fmt.Errorf("%w: field %d: unexpected %q after the last tunable", ErrSyntax, i+1, f[i])
	}
	return s, nil
}

// TableLine is what `dmsetup table` prints for the kernel target
// (STATUSTYPE_TABLE): the devices and the optional arguments as given at
// creation.
type TableLine struct {
	Name      string   // from an optional "NAME:" prefix; not printed
	SizeBytes uint64   // the volume size
	Backing   string   // backing device
	Cache     string   // cache device
	Args      []string // optional KEY VALUE pairs, without their count
}

// FormatTableLine returns "0 SECTORS writeboost BACKING CACHE [N k v ...]".
func FormatTableLine(t TableLine) string {
	var b strings.Builder
	fmt.Fprintf(&b, "0 %d %s %s %s", t.SizeBytes>>9, TargetName, t.Backing, t.Cache)
	if len(t.Args) > 0 {
		fmt.Fprintf(&b, " %d", len(t.Args))
		for _, a := range t.Args {
			b.WriteString(" ")
			b.WriteString(a)
		}
	}
	return b.String()
}

// ParseTableLine parses a table line, with or without the
// "0 SECTORS writeboost" prefix, and validates the optional arguments with
// the kernel's ranges (vocab.ParseOptionalArgs).
func ParseTableLine(line string) (TableLine, error) {
	var t TableLine
	name, sectors, _, f, err := stripPrefix(strings.Fields(line))
	if err != nil {
		return t, err
	}
	t.Name, t.SizeBytes = name, sectors<<9
	if len(f) < 2 {
		return t, fmt.Errorf("%w: table line needs BACKING and CACHE, got %d fields", ErrSyntax, len(f))
	}
	t.Backing, t.Cache = f[0], f[1]
	f = f[2:]
	if len(f) == 0 {
		return t, nil
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil {
		return t, fmt.Errorf("%w: field 3 (number of optional args): %q is not a number", ErrSyntax, f[0])
	}
	if n != uint64(len(f)-1) {
		return t, fmt.Errorf("%w: field 3 (number of optional args): %d, but %d args follow", ErrSyntax, n, len(f)-1)
	}
	if _, _, err := vocab.ParseOptionalArgs(f[1:]); err != nil {
		return t, err
	}
	if n > 0 {
		t.Args = append([]string(nil), f[1:]...)
	}
	return t, nil
}
