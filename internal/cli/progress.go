package cli

import (
	"fmt"
	"io"
	"strings"
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

// Done ends the report; Lines has nothing left to say (its last line
// came with the last Update).
func (l *Lines) Done() {}

// Progress reports a long wait: Update as the work goes, Done once at the
// end, whether the work finished or failed.
type Progress interface {
	Update(done, total int64)
	Done()
}

// NewProgress reports on w as a Bar when w is a terminal, else as Lines
// (see both). unitBytes, when not 0, is how many bytes one unit is: the
// bar then counts bytes, with a byte rate; the lines keep the unit.
func NewProgress(w io.Writer, prog, what, unit string, unitBytes int64) Progress {
	if IsTerminal(w) {
		return NewBar(w, prog, what, unit, unitBytes)
	}
	return NewLines(w, prog, what, unit)
}

// Bar reports the progress of a long wait on a terminal: one line
// redrawn in place ("\r") with a bar, the share done, the count, the rate
// and the time left. Like Lines it shows nothing during the first second,
// so that a short wait leaves no trace; once shown, it ends its line when
// the work is done or at Done.
type Bar struct {
	// After is how long the bar stays hidden: NewBar makes it a second.
	After time.Duration

	w               io.Writer
	desc, unit      string
	unitBytes       int64
	start, last     time.Time
	now             func() time.Time // tests replace it
	width           int              // of the last frame, to blank what a shorter one leaves
	done, total     int64            // of the last Update
	shown, finished bool
}

// barWidth is the bar's own width in characters: with the description
// and the figures the line fits 100 columns.
const barWidth = 20

// barEvery is the least time between two frames (the last one is always
// drawn).
const barEvery = 100 * time.Millisecond

// NewBar draws on w, the line starting with "prog: what"; unit names what
// done and total count, unitBytes as for NewProgress.
func NewBar(w io.Writer, prog, what, unit string, unitBytes int64) *Bar {
	b := &Bar{After: time.Second, w: w, desc: prog + ": " + what, unit: unit, unitBytes: unitBytes, now: time.Now}
	b.start = b.now()
	return b
}

// Update notes done of total and redraws the bar when a frame is due.
func (b *Bar) Update(done, total int64) {
	if b.finished {
		return
	}
	b.done, b.total = done, total
	now := b.now()
	if now.Sub(b.start) < b.After || (b.shown && now.Sub(b.last) < barEvery && done < total) {
		return
	}
	b.draw(now, done >= total)
}

// Done ends a bar that was shown but did not reach its end (an error),
// with its last figures, on its own line.
func (b *Bar) Done() {
	if b.shown && !b.finished {
		b.draw(b.now(), true)
	}
}

func (b *Bar) draw(now time.Time, last bool) {
	b.shown, b.last, b.finished = true, now, last
	done, total := min(max(b.done, 0), max(b.total, 0)), max(b.total, 0)
	frac := 1.0
	if total > 0 {
		frac = float64(done) / float64(total)
	}
	filled := int(frac * barWidth)
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	elapsed := now.Sub(b.start)
	line := fmt.Sprintf("%s [%s] %3.0f%% %s", b.desc, bar, 100*frac, b.count(done, total))
	if secs := elapsed.Seconds(); secs > 0 && done > 0 {
		line += ", " + b.rate(float64(done)/secs)
	}
	switch {
	case done >= total:
		line += fmt.Sprintf(", in %s", elapsed.Round(time.Second))
	case last:
		line += fmt.Sprintf(", stopped after %s", elapsed.Round(time.Second))
	case done > 0:
		left := time.Duration(float64(total-done) / float64(done) * float64(elapsed))
		line += fmt.Sprintf(", %s left", left.Round(time.Second))
	}
	pad := ""
	if n := len(line); n < b.width {
		pad = strings.Repeat(" ", b.width-n)
	}
	b.width = len(line)
	end := ""
	if last {
		end = "\n"
	}
	fmt.Fprintf(b.w, "\r%s%s%s", line, pad, end)
}

// count is "done of total unit", in bytes when the units are.
func (b *Bar) count(done, total int64) string {
	if b.unitBytes > 0 {
		return HumanBytes(uint64(done*b.unitBytes)) + " of " + HumanBytes(uint64(total*b.unitBytes))
	}
	return fmt.Sprintf("%d of %d %s", done, total, b.unit)
}

// rate is a rate in units per second.
func (b *Bar) rate(perSec float64) string {
	if b.unitBytes > 0 {
		return HumanBytes(uint64(perSec*float64(b.unitBytes))) + "/s"
	}
	return fmt.Sprintf("%.0f %s/s", perSec, b.unit)
}
