package blockdev

import (
	"bytes"
	"sync"
	"testing"
	"time"
)

func TestSlowLatencyAndBandwidth(t *testing.T) {
	s := NewSlow(NewMem(4<<20), 2*time.Millisecond, 0)
	start := time.Now()
	for i := range 10 {
		mustWrite(t, s, int64(i)*4096, pattern(byte(i), 4096))
	}
	if el := time.Since(start); el < 20*time.Millisecond || el > 2*time.Second {
		t.Fatalf("10 writes at 2ms each took %v", el)
	}

	b := NewSlow(NewMem(4<<20), 0, 16<<20) // 16 MiB/s
	start = time.Now()
	mustWrite(t, b, 0, make([]byte, 2<<20))
	if el := time.Since(start); el < 125*time.Millisecond || el > 3*time.Second {
		t.Fatalf("2 MiB at 16 MiB/s took %v, want about 125ms", el)
	}
	if got := mustRead(t, s, 4096, 4096); !bytes.Equal(got, pattern(1, 4096)) {
		t.Fatal("data did not pass through")
	}
	if r, w, sy := s.Stats(); r != 1 || w != 10 || sy != 0 {
		t.Fatalf("Stats = %d, %d, %d", r, w, sy)
	}
}

// TestSlowSerialises checks that concurrent requests queue like on one
// spindle: 4 goroutines x 5 syncs x 5ms take at least 100ms, not 25ms.
func TestSlowSerialises(t *testing.T) {
	s := NewSlow(NewMem(1<<20), 5*time.Millisecond, 0)
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if err := s.Sync(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if el := time.Since(start); el < 100*time.Millisecond || el > 3*time.Second {
		t.Fatalf("20 concurrent 5ms syncs took %v, want >= 100ms", el)
	}
	if _, _, sy := s.Stats(); sy != 20 {
		t.Fatalf("syncs = %d", sy)
	}
	if err := s.Discard(0, 4096); err != nil {
		t.Fatal(err)
	}
	if s.Discards() != 1 || s.Size() != 1<<20 {
		t.Fatal("Discards or Size wrong")
	}
}
