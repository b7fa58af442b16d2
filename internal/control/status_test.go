package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/writeboost/writeboost/internal/vocab"
)

// sampleLine is a status line of the kernel target (issue 5).
const sampleLine = "0 204800 writeboost 2 762 6 73 73 67 391 12 224 0 0 15 9 1 0 15 6567 0 0 1 0 15 0 11 10 writeback_threshold 0 nr_cur_batched_writeback 1 sync_data_interval 0 update_sb_record_interval 0 read_cache_threshold 0"

func sampleStatus() vocab.Status {
	return vocab.Status{
		SizeBytes:          204800 * 512,
		CursorPos:          2,
		NrCacheBlocks:      762,
		NrSegments:         6,
		CurrentID:          73,
		LastFlushedID:      73,
		LastWritebackID:    67,
		NrDirtyCacheBlocks: 391,
		Stat:               [vocab.StatLen]uint64{12, 224, 0, 0, 15, 9, 1, 0, 15, 6567, 0, 0, 1, 0, 15, 0},
		NrPartialFlushed:   11,
		Tunables:           vocab.StatusTunables{NrCurBatchedWriteback: 1},
	}
}

func TestParseStatusLineSample(t *testing.T) {
	got, err := ParseStatusLine(sampleLine)
	if err != nil {
		t.Fatal(err)
	}
	if want := sampleStatus(); !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseStatusLine(sample)\n got %+v\nwant %+v", got, want)
	}
	if back := FormatStatusLine(got); back != sampleLine {
		t.Fatalf("FormatStatusLine round trip\n got %q\nwant %q", back, sampleLine)
	}
}

func TestParseStatusLineVariants(t *testing.T) {
	bare := strings.TrimPrefix(sampleLine, "0 204800 writeboost ")
	want := sampleStatus()
	for _, tc := range []struct {
		name, line string
		wantName   string
		wantSize   uint64
	}{
		{"prefixed", sampleLine, "", want.SizeBytes},
		{"bare", bare, "", 0},
		{"dmsetup all devices", "wbdev: " + sampleLine, "wbdev", want.SizeBytes},
		{"trailing newline and spaces", "  " + sampleLine + " \n", "", want.SizeBytes},
		{"tabs", strings.ReplaceAll(sampleLine, " ", "\t"), "", want.SizeBytes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseStatusLine(tc.line)
			if err != nil {
				t.Fatal(err)
			}
			w := want
			w.Name, w.SizeBytes = tc.wantName, tc.wantSize
			if !reflect.DeepEqual(got, w) {
				t.Fatalf("got %+v\nwant %+v", got, w)
			}
		})
	}
}

func TestParseStatusLineMalformed(t *testing.T) {
	fields := strings.Fields(sampleLine)
	with := func(i int, v string) string { // replace token i (0-based, prefix included)
		f := append([]string(nil), fields...)
		f[i] = v
		return strings.Join(f, " ")
	}
	for _, tc := range []struct {
		name, line, wantErr string
	}{
		{"empty", "", "field 1 (cursor_pos) missing"},
		{"letter", with(7, "x"), `field 5 (last_flushed_id): "x" is not a number`},
		{"negative", with(3, "-2"), `field 1 (cursor_pos): "-2" is not a number`},
		{"counter", with(12, "1.5"), `field 10 (stat[2] read miss buffer partial): "1.5" is not a number`},
		{"overflow", with(4, "18446744073709551616"), `field 2 (nr_cache_blocks)`},
		{"partial flushed", with(26, "?"), `field 24 (nr_partial_flushed)`},
		{"tunable count", with(27, "14"), `field 25 (number of tunable args): 14, want 10`},
		{"tunable name", with(28, "allow_writeback"), `field 26 (tunable name): "allow_writeback", want "writeback_threshold"`},
		{"tunable value", with(35, "on"), `field 33 (update_sb_record_interval): "on" is not a number`},
		{"truncated", strings.Join(fields[:20], " "), `field 18 (stat[10] write miss buffer partial) missing`},
		{"extra", sampleLine + " 7", `field 36: unexpected "7"`},
		{"wrong target", strings.Replace(sampleLine, "writeboost", "cache", 1), `target type "cache"`},
		{"start sector", with(0, "8"), `start sector 8`},
		{"bad length", with(1, "x"), `length "x" is not a number of sectors`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseStatusLine(tc.line)
			if err == nil {
				t.Fatalf("ParseStatusLine(%q) succeeded", tc.line)
			}
			if !errors.Is(err, ErrSyntax) {
				t.Errorf("error %v does not wrap ErrSyntax", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestTableLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		want TableLine
	}{
		{"0 204800 writeboost /dev/sdb /dev/sdc", TableLine{SizeBytes: 204800 * 512, Backing: "/dev/sdb", Cache: "/dev/sdc"}},
		{"0 2048 writeboost 8:16 8:32 4 writeback_threshold 70 read_cache_threshold 31",
			TableLine{SizeBytes: 2048 * 512, Backing: "8:16", Cache: "8:32", Args: []string{"writeback_threshold", "70", "read_cache_threshold", "31"}}},
		{"/b /c 2 write_around_mode 1", TableLine{Backing: "/b", Cache: "/c", Args: []string{"write_around_mode", "1"}}},
		{"wbdev: 0 8 writeboost /b /c", TableLine{Name: "wbdev", SizeBytes: 8 * 512, Backing: "/b", Cache: "/c"}},
	} {
		got, err := ParseTableLine(tc.line)
		if err != nil {
			t.Fatalf("ParseTableLine(%q): %v", tc.line, err)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseTableLine(%q)\n got %+v\nwant %+v", tc.line, got, tc.want)
		}
		if tc.want.SizeBytes != 0 && tc.want.Name == "" {
			if back := FormatTableLine(got); back != tc.line {
				t.Errorf("FormatTableLine = %q, want %q", back, tc.line)
			}
		}
	}
	for _, bad := range []string{
		"", "0 8 writeboost /b", "/b /c 3 writeback_threshold 1", "/b /c x",
		"/b /c 2 writeback_threshold 101", "/b /c 2 bogus 1", "0 8 linear /b 0",
	} {
		if _, err := ParseTableLine(bad); err == nil {
			t.Errorf("ParseTableLine(%q) succeeded", bad)
		}
	}
}

func FuzzParseStatusLine(f *testing.F) {
	f.Add(sampleLine)
	f.Add(strings.TrimPrefix(sampleLine, "0 204800 writeboost "))
	f.Add("wbdev: " + sampleLine)
	f.Add("0 1 writeboost 1 2 3")
	f.Fuzz(func(t *testing.T, line string) {
		s, err := ParseStatusLine(line)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		// What parses formats to a line that parses to the same status.
		s2, err := ParseStatusLine(FormatStatusLine(s))
		if err != nil {
			t.Fatalf("reparse %q: %v", FormatStatusLine(s), err)
		}
		s.Name = ""
		if !reflect.DeepEqual(s, s2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", s2, s)
		}
	})
}

func FuzzParseTableLine(f *testing.F) {
	f.Add("0 204800 writeboost /dev/sdb /dev/sdc")
	f.Add("0 2048 writeboost 8:16 8:32 4 writeback_threshold 70 nr_read_cache_cells 31")
	f.Add("/b /c 2 write_around_mode 1")
	f.Fuzz(func(t *testing.T, line string) {
		tl, err := ParseTableLine(line)
		if err != nil {
			return
		}
		tl.Name = ""
		tl2, err := ParseTableLine(FormatTableLine(tl))
		if err != nil {
			t.Fatalf("reparse %q: %v", FormatTableLine(tl), err)
		}
		if !reflect.DeepEqual(tl, tl2) {
			t.Fatalf("round trip\n got %+v\nwant %+v", tl2, tl)
		}
	})
}

// TestStatusClients: nr_clients is in the JSON whenever the volume reports
// it, 0 included, and null when unknown; the kernel's status line never
// carries it.
func TestStatusClients(t *testing.T) {
	s := sampleStatus()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"nr_clients":null`) {
		t.Errorf("unknown client count in JSON: %s", b)
	}
	for _, n := range []uint64{0, 3} {
		s.NrClients = &n
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf(`"nr_clients":%d`, n); !strings.Contains(string(b), want) {
			t.Errorf("JSON %s lacks %s", b, want)
		}
		var back vocab.Status
		if err := json.Unmarshal(b, &back); err != nil || back.NrClients == nil || *back.NrClients != n {
			t.Errorf("nr_clients %d did not round-trip: %v", n, err)
		}
		if got := FormatStatusLine(s); got != sampleLine {
			t.Errorf("status line with nr_clients %d = %q, want the kernel's %q", n, got, sampleLine)
		}
	}
}
