package vocab

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestStatIndex(t *testing.T) {
	// The kernel's order: index = write<<3 | hit<<2 | on_buffer<<1 | fullsize.
	if got := StatIndex(true, true, false, true); got != 13 {
		t.Errorf("StatIndex(write hit cache full) = %d, want 13", got)
	}
	if got := StatIndex(false, false, false, false); got != 0 {
		t.Errorf("StatIndex(read miss cache partial) = %d, want 0", got)
	}
	seen := map[string]bool{}
	for i := range StatLen {
		n := StatName(i)
		if seen[n] {
			t.Errorf("StatName(%d) = %q twice", i, n)
		}
		seen[n] = true
		f := strings.Fields(n)
		if got := StatIndex(f[0] == "write", f[1] == "hit", f[2] == "buffer", f[3] == "full"); got != i {
			t.Errorf("StatIndex(%s) = %d, want %d", n, got, i)
		}
	}
}

func TestHitRatio(t *testing.T) {
	s := Status{Stat: [StatLen]uint64{12, 224, 0, 0, 15, 9, 1, 0, 15, 6567, 0, 0, 1, 0, 15, 0}}
	// reads: indices 0..7 = 12 224 0 0 15 9 1 0; hits are 4..7 = 25 of 261.
	r, n := s.HitRatio(false)
	if n != 261 || r != 25.0/261 {
		t.Errorf("read HitRatio = %v, %d; want %v, 261", r, n, 25.0/261)
	}
	// writes: 15 6567 0 0 1 0 15 0; hits 16 of 6598.
	r, n = s.HitRatio(true)
	if n != 6598 || r != 16.0/6598 {
		t.Errorf("write HitRatio = %v, %d; want %v, 6598", r, n, 16.0/6598)
	}
	if r, n := (Status{}).HitRatio(true); r != 0 || n != 0 {
		t.Errorf("empty HitRatio = %v, %d", r, n)
	}
}

// TestStatusReportKeys: wb-status --json prints every key, zero values
// included, with the schema version and the sizes in bytes.
func TestStatusReportKeys(t *testing.T) {
	b, err := json.Marshal(Status{NrDirtyCacheBlocks: 3}.Report())
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["schema"] != float64(StatusSchema) || m["dirty_bytes"] != float64(3*4096) {
		t.Errorf("schema %v, dirty_bytes %v", m["schema"], m["dirty_bytes"])
	}
	for _, k := range []string{"name", "backing", "cache", "size_bytes", "nr_max_batched_writeback", "write_around_mode", "ram_buffer_bytes",
		"writeback_bytes_per_sec", "writeback_allowed", "backing_util_percent", "errors", "failed", "uptime_seconds", "nr_clients"} {
		if _, ok := m[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
	for _, st := range []reflect.Type{reflect.TypeFor[Status](), reflect.TypeFor[IOErrors](), reflect.TypeFor[StatusTunables]()} {
		for f := range st.Fields() {
			if tag := f.Tag.Get("json"); strings.Contains(tag, "omit") {
				t.Errorf("%s.%s: json tag %q: a key scripts read must not vanish when zero", st.Name(), f.Name, tag)
			}
		}
	}
}
