package cli

import (
	"fmt"
	"io"
	"time"
)

// Lines reports the progress of a long wait as plain lines on w (a log
// or a terminal alike): nothing during the first second, then at most one
// line a second, and a last line when done if any was printed.
type Lines struct {
	w           io.Writer
	prog, what  string
	unit        string
	start, last time.Time
	printed     bool
	now         func() time.Time // tests replace it
}

// NewLines reports on w, each line starting with "prog: what:"; unit
// names what done and total count ("segments", "sectors").
func NewLines(w io.Writer, prog, what, unit string) *Lines {
	l := &Lines{w: w, prog: prog, what: what, unit: unit, now: time.Now}
	l.start = l.now()
	l.last = l.start
	return l
}

// Update notes done of total; it prints a line when one is due.
func (l *Lines) Update(done, total int64) {
	now := l.now()
	if now.Sub(l.start) < time.Second || now.Sub(l.last) < time.Second || done >= total {
		if done >= total && l.printed {
			l.line(done, total, now)
		}
		return
	}
	l.line(done, total, now)
}

func (l *Lines) line(done, total int64, now time.Time) {
	l.last, l.printed = now, true
	elapsed := now.Sub(l.start).Seconds()
	pct := 100.0
	if total > 0 {
		pct = 100 * float64(done) / float64(total)
	}
	eta := ""
	if done > 0 && done < total {
		left := time.Duration(float64(total-done) / float64(done) * elapsed * float64(time.Second))
		eta = fmt.Sprintf(", about %s left", left.Round(time.Second))
	}
	fmt.Fprintf(l.w, "%s: %s: %d of %d %s (%.0f%%) in %.0fs%s\n", l.prog, l.what, done, total, l.unit, pct, elapsed, eta)
}
