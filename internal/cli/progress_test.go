package cli

import (
	"strings"
	"testing"
	"time"
)

func TestLines(t *testing.T) {
	var b strings.Builder
	clock := time.Unix(0, 0)
	l := NewLines(&b, "wb-check", "reading segments", "segments")
	l.now = func() time.Time { return clock }
	l.start, l.last = clock, clock
	l.Update(10, 100) // within the first second: quiet
	clock = clock.Add(1500 * time.Millisecond)
	l.Update(30, 100)
	clock = clock.Add(200 * time.Millisecond)
	l.Update(40, 100) // less than a second after the last line: quiet
	clock = clock.Add(time.Second)
	l.Update(100, 100) // done: a last line, since one was printed
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "wb-check: reading segments: 30 of 100 segments (30%) in 2s, about 4s left") ||
		!strings.HasPrefix(lines[1], "wb-check: reading segments: 100 of 100 segments (100%)") {
		t.Fatalf("lines %q", lines)
	}
	// A short wait prints nothing at all.
	b.Reset()
	q := NewLines(&b, "p", "w", "u")
	q.Update(5, 5)
	if b.Len() != 0 {
		t.Fatalf("a wait under a second printed %q", b.String())
	}
}
