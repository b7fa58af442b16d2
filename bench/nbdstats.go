package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// nbdOp is one line of nbdkit's stats filter summary, e.g.
//
//	write: 36 ops, 0.125460 s, 132.38 MiB, 1.03 GiB/s op, 6.04 MiB/s total
type nbdOp struct {
	Ops     int64
	Seconds float64
	Bytes   float64 // as printed: rounded to the unit's two decimals
}

var errStatsFile = errors.New("nbdkit stats: bad statsfile")

var sizeUnits = map[string]float64{
	"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40, "PiB": 1 << 50, "EiB": 1 << 60,
}

// parseNBDStats reads the file nbdkit-stats-filter(1) writes when nbdkit
// exits: one "OP: N ops, T s, SIZE UNIT, ..." line per operation seen (total,
// read, write, trim, zero, flush, extents, cache), each possibly followed by an
// indented request size histogram, which is skipped. Operations never issued
// are absent from the file; the returned map then lacks them.
func parseNBDStats(data []byte) (map[string]nbdOp, error) {
	ops := make(map[string]nbdOp)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for lineNo := 1; sc.Scan(); lineNo++ {
		line := sc.Text()
		if line == "" || line[0] == ' ' || line[0] == '\t' {
			continue // histogram or blank
		}
		name, rest, ok := strings.Cut(line, ": ")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%w: line %d: %q", errStatsFile, lineNo, line)
		}
		f := strings.Split(rest, ", ")
		if len(f) < 3 {
			return nil, fmt.Errorf("%w: line %d: %q", errStatsFile, lineNo, line)
		}
		var op nbdOp
		n, ok := strings.CutSuffix(f[0], " ops")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: ops field %q", errStatsFile, lineNo, f[0])
		}
		var err error
		if op.Ops, err = strconv.ParseInt(n, 10, 64); err != nil || op.Ops < 0 {
			return nil, fmt.Errorf("%w: line %d: ops %q", errStatsFile, lineNo, n)
		}
		s, ok := strings.CutSuffix(f[1], " s")
		if !ok {
			return nil, fmt.Errorf("%w: line %d: time field %q", errStatsFile, lineNo, f[1])
		}
		if op.Seconds, err = strconv.ParseFloat(s, 64); err != nil || !(op.Seconds >= 0) || math.IsInf(op.Seconds, 0) {
			return nil, fmt.Errorf("%w: line %d: time %q", errStatsFile, lineNo, s)
		}
		v, unit, ok := strings.Cut(f[2], " ")
		mul, known := sizeUnits[unit]
		if !ok || !known {
			return nil, fmt.Errorf("%w: line %d: size field %q", errStatsFile, lineNo, f[2])
		}
		b, err := strconv.ParseFloat(v, 64)
		if err != nil || !(b >= 0) || math.IsInf(b, 0) {
			return nil, fmt.Errorf("%w: line %d: size %q", errStatsFile, lineNo, v)
		}
		op.Bytes = b * mul
		if _, dup := ops[name]; dup {
			return nil, fmt.Errorf("%w: line %d: %s twice", errStatsFile, lineNo, name)
		}
		ops[name] = op
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errStatsFile, err)
	}
	if _, ok := ops["total"]; !ok {
		return nil, fmt.Errorf("%w: no total line", errStatsFile)
	}
	return ops, nil
}
