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

// TestBar draws a bar on a fake terminal: nothing during the first
// second, then one line redrawn in place with the share, the count, the
// rate and the time left, ended when the work is done.
func TestBar(t *testing.T) {
	var b strings.Builder
	clock := time.Unix(0, 0)
	bar := NewBar(&b, "wb-check", "reading segments", "segments", 0)
	bar.now = func() time.Time { return clock }
	bar.start = clock
	bar.Update(10, 200) // within the first second: quiet
	if b.Len() != 0 {
		t.Fatalf("a bar in the first second: %q", b.String())
	}
	clock = clock.Add(2 * time.Second)
	bar.Update(100, 200)
	clock = clock.Add(50 * time.Millisecond)
	bar.Update(110, 200) // under 100 ms after the last frame: not drawn
	clock = clock.Add(2 * time.Second)
	bar.Update(200, 200) // the end
	bar.Done()           // nothing more
	want := "\rwb-check: reading segments [==========>         ]  50% 100 of 200 segments, 50 segments/s, 2s left" +
		"\rwb-check: reading segments [====================] 100% 200 of 200 segments, 49 segments/s, in 4s  \n" // blanks the longer frame
	if got := b.String(); got != want {
		t.Errorf("frames\n%q\nwant\n%q", got, want)
	}

	// In bytes: 512-byte sectors counted as bytes; a bar cut short by
	// Done ends its line too; a shorter frame blanks the longer one's tail.
	b.Reset()
	clock = time.Unix(0, 0)
	bar = NewBar(&b, "wb-check", "writing back", "sectors", 512)
	bar.now = func() time.Time { return clock }
	bar.start = clock
	bar.Update(0, 4096)
	clock = clock.Add(2 * time.Second)
	bar.Update(1024, 4096)
	clock = clock.Add(time.Second)
	bar.Update(1024, 4096)
	bar.Done()
	want = "\rwb-check: writing back [=====>              ]  25% 512.0 KiB of 2.0 MiB, 256.0 KiB/s, 6s left" +
		"\rwb-check: writing back [=====>              ]  25% 512.0 KiB of 2.0 MiB, 170.7 KiB/s, 9s left" +
		"\rwb-check: writing back [=====>              ]  25% 512.0 KiB of 2.0 MiB, 170.7 KiB/s, stopped after 3s\n"
	if got := b.String(); got != want {
		t.Errorf("frames\n%q\nwant\n%q", got, want)
	}

	// A wait shorter than a second leaves nothing, even on Done.
	b.Reset()
	q := NewBar(&b, "p", "w", "u", 0)
	q.Update(1, 2)
	q.Done()
	if b.Len() != 0 {
		t.Errorf("a short wait drew %q", b.String())
	}
}

// TestNewProgress: lines for anything but a terminal.
func TestNewProgress(t *testing.T) {
	if _, ok := NewProgress(&strings.Builder{}, "p", "w", "u", 0).(*Lines); !ok {
		t.Error("a pipe gets a bar")
	}
}
