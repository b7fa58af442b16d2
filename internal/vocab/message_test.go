package vocab

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Message
	}{
		{[]string{"writeback_threshold", "0"}, Message{Kind: MsgSetTunable, Tunable: WritebackThreshold, Value: 0}},
		{[]string{"writeback_threshold", "100"}, Message{Kind: MsgSetTunable, Tunable: WritebackThreshold, Value: 100}},
		{[]string{"nr_max_batched_writeback", "1"}, Message{Kind: MsgSetTunable, Tunable: NrMaxBatchedWriteback, Value: 1}},
		{[]string{"nr_max_batched_writeback", "32"}, Message{Kind: MsgSetTunable, Tunable: NrMaxBatchedWriteback, Value: 32}},
		{[]string{"update_sb_record_interval", "3600"}, Message{Kind: MsgSetTunable, Tunable: UpdateSBRecordInterval, Value: 3600}},
		{[]string{"sync_data_interval", "0"}, Message{Kind: MsgSetTunable, Tunable: SyncDataInterval, Value: 0}},
		{[]string{"read_cache_threshold", "127"}, Message{Kind: MsgSetTunable, Tunable: ReadCacheThreshold, Value: 127}},
		{[]string{"Read_Cache_Threshold", "007"}, Message{Kind: MsgSetTunable, Tunable: ReadCacheThreshold, Value: 7}},
		{[]string{"clear_stat"}, Message{Kind: MsgClearStat}},
		{[]string{"DROP_CACHES"}, Message{Kind: MsgDropCaches}},
		{[]string{"flush"}, Message{Kind: MsgFlush}},
		{[]string{"remove"}, Message{Kind: MsgRemove}},
		{[]string{"remove", "--no-writeback"}, Message{Kind: MsgRemove, NoWriteback: true}},
		{[]string{"remove", "--force"}, Message{Kind: MsgRemove, Force: true}},
		{[]string{"Remove", "--no-writeback", "--force"}, Message{Kind: MsgRemove, NoWriteback: true, Force: true}},
		{[]string{"remove", "--force", "--no-writeback"}, Message{Kind: MsgRemove, NoWriteback: true, Force: true}},
	} {
		got, err := ParseMessage(tc.args)
		if err != nil {
			t.Errorf("ParseMessage(%q): %v", tc.args, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseMessage(%q) = %+v, want %+v", tc.args, got, tc.want)
		}
		// Args is canonical: it parses back to the same message.
		again, err := ParseMessage(got.Args())
		if err != nil || again != got {
			t.Errorf("ParseMessage(%q.Args()=%q) = %+v, %v", tc.args, got.Args(), again, err)
		}
	}
}

func TestParseMessageRefused(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		wantErr error
		wantMsg string
	}{
		{nil, ErrBadMessage, "empty message"},
		{[]string{"writeback_threshold", "101"}, ErrBadMessage, "101 is out of range 0..100"},
		{[]string{"nr_max_batched_writeback", "0"}, ErrBadMessage, "0 is out of range 1..32"},
		{[]string{"nr_max_batched_writeback", "33"}, ErrBadMessage, "33 is out of range 1..32"},
		{[]string{"update_sb_record_interval", "3601"}, ErrBadMessage, "out of range 0..3600"},
		{[]string{"sync_data_interval", "-1"}, ErrBadMessage, `"-1" is not a number`},
		{[]string{"read_cache_threshold", "128"}, ErrBadMessage, "out of range 0..127"},
		{[]string{"read_cache_threshold", "0x10"}, ErrBadMessage, "not a number"},
		{[]string{"read_cache_threshold"}, ErrBadMessage, "takes one value"},
		{[]string{"read_cache_threshold", "1", "2"}, ErrBadMessage, "takes one value"},
		{[]string{"write_around_mode", "1"}, ErrStaticOption, "can only be set when the volume is created"},
		{[]string{"nr_read_cache_cells", "16"}, ErrStaticOption, "can only be set when the volume is created"},
		{[]string{"nr_cur_batched_writeback", "4"}, ErrBadMessage, "read-only"},
		{[]string{"clear_stat", "now"}, ErrBadMessage, "takes no arguments"},
		{[]string{"remove", "--now"}, ErrBadMessage, "only --no-writeback and --force"},
		{[]string{"remove", "--force", "--force"}, ErrBadMessage, "each at most once"},
		{[]string{"remove", "--no-writeback", "--no-writeback"}, ErrBadMessage, "each at most once"},
		{[]string{"remove", "force"}, ErrBadMessage, "only --no-writeback and --force"},
		{[]string{"suspend"}, ErrBadMessage, `unknown message "suspend"`},
		{[]string{"allow_writeback", "1"}, ErrBadMessage, "unknown message"},
	} {
		_, err := ParseMessage(tc.args)
		if !errors.Is(err, tc.wantErr) || !strings.Contains(err.Error(), tc.wantMsg) {
			t.Errorf("ParseMessage(%q) = %v, want %v containing %q", tc.args, err, tc.wantErr, tc.wantMsg)
		}
	}
}

func TestParseOptionalArgs(t *testing.T) {
	v, words, err := ParseOptionalArgs(nil)
	if err != nil || len(v) != 0 || words != nil {
		t.Fatalf("no args = %v, %q, %v", v, words, err)
	}
	if v.Get(NrMaxBatchedWriteback) != 32 || v.Get(NrReadCacheCells) != 2048 || v.Get(WritebackThreshold) != 0 {
		t.Errorf("defaults: %d %d %d", v.Get(NrMaxBatchedWriteback), v.Get(NrReadCacheCells), v.Get(WritebackThreshold))
	}
	v, words, err = ParseOptionalArgs([]string{"WRITE_AROUND_MODE", "1", "nr_read_cache_cells", "1", "writeback_threshold", "70",
		"nr_max_batched_writeback", "8", "update_sb_record_interval", "60", "sync_data_interval", "3600", "read_cache_threshold", "127"})
	if err != nil {
		t.Fatal(err)
	}
	want := Values{WritebackThreshold: 70, NrMaxBatchedWriteback: 8, UpdateSBRecordInterval: 60, SyncDataInterval: 3600,
		ReadCacheThreshold: 127, WriteAroundMode: 1, NrReadCacheCells: 1}
	wantWords := []string{"write_around_mode", "1", "nr_read_cache_cells", "1", "writeback_threshold", "70",
		"nr_max_batched_writeback", "8", "update_sb_record_interval", "60", "sync_data_interval", "3600", "read_cache_threshold", "127"}
	if !reflect.DeepEqual(v, want) || !reflect.DeepEqual(words, wantWords) {
		t.Errorf("all seven = %v %q\nwant %v %q", v, words, want, wantWords)
	}
	for _, bad := range [][]string{
		{"writeback_threshold"},
		{"write_around_mode", "2"},
		{"nr_read_cache_cells", "0"},
		{"nr_read_cache_cells", "2049"},
		{"segment_size_order", "10"},
		{"writeback_threshold", "1", "writeback_threshold", "2"},
		{"sync_data_interval", "4294967296"},
	} {
		if _, _, err := ParseOptionalArgs(bad); !errors.Is(err, ErrBadMessage) {
			t.Errorf("ParseOptionalArgs(%q) = %v, want ErrBadMessage", bad, err)
		}
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add("writeback_threshold 50")
	f.Add("remove --no-writeback")
	f.Add("write_around_mode 1")
	f.Add("drop_caches")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMessage(strings.Fields(s))
		if err != nil {
			if !errors.Is(err, ErrBadMessage) && !errors.Is(err, ErrStaticOption) {
				t.Fatalf("error %v wraps neither ErrBadMessage nor ErrStaticOption", err)
			}
			return
		}
		again, err := ParseMessage(m.Args())
		if err != nil || again != m {
			t.Fatalf("ParseMessage(%q) = %+v, %v; want %+v", m.Args(), again, err, m)
		}
	})
}

func FuzzParseOptionalArgs(f *testing.F) {
	f.Add("writeback_threshold 50 write_around_mode 1")
	f.Add("nr_read_cache_cells 2048")
	f.Fuzz(func(t *testing.T, s string) {
		v, words, err := ParseOptionalArgs(strings.Fields(s))
		if err != nil {
			return
		}
		again, _, err := ParseOptionalArgs(words)
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("ParseOptionalArgs(%q) = %+v, %v; want %+v", words, again, err, v)
		}
	})
}

// TestMessageWords: every word completion offers starts a valid message.
func TestMessageWords(t *testing.T) {
	for _, w := range MessageWords() {
		args := []string{w}
		if tu, ok := LookupTunable(w); ok {
			args = append(args, strconv.FormatInt(tu.Spec().Min, 10))
		}
		if _, err := ParseMessage(args); err != nil {
			t.Errorf("completion offers %q: %v", w, err)
		}
	}
	for _, n := range TunableNames() {
		if _, ok := LookupTunable(n); !ok {
			t.Errorf("completion offers unknown tunable %q", n)
		}
	}
}
