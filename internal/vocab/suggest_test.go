package vocab

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"abc", "", 3}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"writeback_treshold", "writeback_threshold", 1}, {"FLUSH", "flush", 0}, {"flsuh", "flush", 2},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func TestNearest(t *testing.T) {
	for _, tc := range []struct{ word, want string }{
		{"writeback_treshold", "writeback_threshold"},
		{"Writeback_Threshhold", "writeback_threshold"},
		{"nr_max_batch_writeback", "nr_max_batched_writeback"},
		{"read_cache_treshold", "read_cache_threshold"},
		{"sync_data_intervall", "sync_data_interval"},
		{"write_arround_mod", "write_around_mode"},
		{"bogus", ""},
		{"suspend", ""},
	} {
		if got := Nearest(tc.word, TunableNames()); got != tc.want {
			t.Errorf("Nearest(%q) = %q, want %q", tc.word, got, tc.want)
		}
	}
	if got := Nearest("drop_cache", MessageWords()); got != "drop_caches" {
		t.Errorf("Nearest(drop_cache) = %q", got)
	}
}

func TestSuggestions(t *testing.T) {
	_, err := ParseMessage([]string{"writeback_treshold", "50"})
	if err == nil || !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), `unknown message "writeback_treshold" (did you mean writeback_threshold?)`) {
		t.Errorf("message typo: %v", err)
	}
	_, err = ParseMessage([]string{"clear_stats"})
	if err == nil || !strings.Contains(err.Error(), "(did you mean clear_stat?)") {
		t.Errorf("verb typo: %v", err)
	}
	_, err = ParseMessage([]string{"nr_read_cache_cell", "4"})
	if err == nil || !strings.Contains(err.Error(), "(did you mean nr_read_cache_cells?)") {
		t.Errorf("static typo: %v", err)
	}
	_, err = ParseMessage([]string{"suspend"})
	if err == nil || strings.Contains(err.Error(), "did you mean") {
		t.Errorf("far word suggests: %v", err)
	}
	_, _, err = ParseOptionalArgs([]string{"writeback_treshold", "50"})
	if err == nil || !strings.Contains(err.Error(), `unknown tunable "writeback_treshold" (did you mean writeback_threshold?)`) {
		t.Errorf("optional arg typo: %v", err)
	}
}

func TestStripCount(t *testing.T) {
	vs, words, err := ParseOptionalArgs([]string{"4", "writeback_threshold", "50", "read_cache_threshold", "9"})
	if err != nil || vs.Get(WritebackThreshold) != 50 || vs.Get(ReadCacheThreshold) != 9 ||
		!slices.Equal(words, []string{"writeback_threshold", "50", "read_cache_threshold", "9"}) {
		t.Errorf("counted args: %v %v %v", vs, words, err)
	}
	if _, words, err := ParseOptionalArgs([]string{"0"}); err != nil || len(words) != 0 {
		t.Errorf("count 0: %v %v", words, err)
	}
	for _, args := range [][]string{{"2", "writeback_threshold", "50", "sync_data_interval", "1"}, {"3", "writeback_threshold", "50"}} {
		_, _, err := ParseOptionalArgs(args)
		if err == nil || !errors.Is(err, ErrBadMessage) || !strings.Contains(err.Error(), "count of optional words must count the words after it") {
			t.Errorf("%q: %v", args, err)
		}
	}
	if got, err := StripCount([]string{"flush"}); err != nil || !slices.Equal(got, []string{"flush"}) {
		t.Errorf("no count: %v %v", got, err)
	}
}
