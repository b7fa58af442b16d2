package control

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseMessage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Message
	}{
		{[]string{"writeback_threshold", "0"}, Message{Kind: MsgSetTunable, Key: "writeback_threshold", Value: 0}},
		{[]string{"writeback_threshold", "100"}, Message{Kind: MsgSetTunable, Key: "writeback_threshold", Value: 100}},
		{[]string{"nr_max_batched_writeback", "1"}, Message{Kind: MsgSetTunable, Key: "nr_max_batched_writeback", Value: 1}},
		{[]string{"nr_max_batched_writeback", "32"}, Message{Kind: MsgSetTunable, Key: "nr_max_batched_writeback", Value: 32}},
		{[]string{"update_sb_record_interval", "3600"}, Message{Kind: MsgSetTunable, Key: "update_sb_record_interval", Value: 3600}},
		{[]string{"sync_data_interval", "0"}, Message{Kind: MsgSetTunable, Key: "sync_data_interval", Value: 0}},
		{[]string{"read_cache_threshold", "127"}, Message{Kind: MsgSetTunable, Key: "read_cache_threshold", Value: 127}},
		{[]string{"Read_Cache_Threshold", "007"}, Message{Kind: MsgSetTunable, Key: "read_cache_threshold", Value: 7}},
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
	v, err := ParseOptionalArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := OptionValues{NrMaxBatchedWriteback: 32, NrReadCacheCells: 2048}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("defaults = %+v, want %+v", v, want)
	}
	v, err = ParseOptionalArgs([]string{"WRITE_AROUND_MODE", "1", "nr_read_cache_cells", "1", "writeback_threshold", "70",
		"nr_max_batched_writeback", "8", "update_sb_record_interval", "60", "sync_data_interval", "3600", "read_cache_threshold", "127"})
	if err != nil {
		t.Fatal(err)
	}
	want = OptionValues{WritebackThreshold: 70, NrMaxBatchedWriteback: 8, UpdateSBRecordInterval: 60, SyncDataInterval: 3600,
		ReadCacheThreshold: 127, WriteAroundMode: true, NrReadCacheCells: 1,
		Args: []string{"write_around_mode", "1", "nr_read_cache_cells", "1", "writeback_threshold", "70",
			"nr_max_batched_writeback", "8", "update_sb_record_interval", "60", "sync_data_interval", "3600", "read_cache_threshold", "127"}}
	if !reflect.DeepEqual(v, want) {
		t.Errorf("all seven = %+v\nwant %+v", v, want)
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
		if _, err := ParseOptionalArgs(bad); !errors.Is(err, ErrBadMessage) {
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
		v, err := ParseOptionalArgs(strings.Fields(s))
		if err != nil {
			return
		}
		again, err := ParseOptionalArgs(v.Args)
		if err != nil || !reflect.DeepEqual(again, v) {
			t.Fatalf("ParseOptionalArgs(%q) = %+v, %v; want %+v", v.Args, again, err, v)
		}
	})
}

func TestRefuseRemove(t *testing.T) {
	remove, force := Message{Kind: MsgRemove}, Message{Kind: MsgRemove, Force: true}
	for _, tc := range []struct {
		m       Message
		name    string
		clients uint64
		want    string // "" = allowed
	}{
		{remove, "vol", 0, ""},
		{remove, "vol", 1, "remove refused: 1 NBD client is connected to vol; disconnect it first, or remove --force"},
		{remove, "vol", 2, "remove refused: 2 NBD clients are connected to vol; disconnect them first, or remove --force"},
		{Message{Kind: MsgRemove, NoWriteback: true}, "", 3, "remove refused: 3 NBD clients are connected to the volume; disconnect them first, or remove --force"},
		{force, "vol", 2, ""},
		{Message{Kind: MsgRemove, NoWriteback: true, Force: true}, "vol", 5, ""},
		{Message{Kind: MsgFlush}, "vol", 5, ""},
		{Message{Kind: MsgDropCaches}, "vol", 5, ""},
	} {
		err := RefuseRemove(tc.m, tc.name, tc.clients)
		if tc.want == "" {
			if err != nil {
				t.Errorf("RefuseRemove(%q, %q, %d) = %v, want nil", tc.m.Args(), tc.name, tc.clients, err)
			}
			continue
		}
		var iu *InUseError
		if !errors.Is(err, ErrInUse) || !errors.As(err, &iu) || iu.Clients != tc.clients || err.Error() != tc.want {
			t.Errorf("RefuseRemove(%q, %q, %d) = %v, want %q wrapping ErrInUse", tc.m.Args(), tc.name, tc.clients, err, tc.want)
		}
	}
}
