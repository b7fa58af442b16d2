package vocab

import (
	"fmt"
	"strconv"
	"strings"
)

// editDistance is the Levenshtein distance between a and b, by bytes,
// case-insensitively (names match case-insensitively, as the kernel's do).
func editDistance(a, b string) int {
	a, b = strings.ToLower(a), strings.ToLower(b)
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Nearest returns the name in names nearest to word by edit distance, if
// it is near enough to be a likely typo (at most 2 edits, or a quarter of
// the name's length for long names), else "". Ties go to the earlier name.
func Nearest(word string, names []string) string {
	best, bestD := "", -1
	for _, n := range names {
		d := editDistance(word, n)
		if d <= max(2, len(n)/4) && (bestD < 0 || d < bestD) {
			best, bestD = n, d
		}
	}
	return best
}

// didYouMean returns " (did you mean NAME?)" for the name in names
// nearest to word, or "".
func didYouMean(word string, names []string) string {
	if n := Nearest(word, names); n != "" {
		return fmt.Sprintf(" (did you mean %s?)", n)
	}
	return ""
}

// StripCount drops a dm table's count of optional words: in a table
// ("writeboost BACKING CACHE 2 writeback_threshold 50") the KEY VALUE
// pairs follow the number of words they take. A leading number that
// counts the words after it is dropped; any other leading number is an
// error saying what it would have to be. Words without a leading number
// are returned as they are.
func StripCount(words []string) ([]string, error) {
	if len(words) == 0 {
		return words, nil
	}
	n, err := strconv.ParseUint(words[0], 10, 32)
	if err != nil {
		return words, nil
	}
	if int(n) != len(words)-1 {
		return nil, fmt.Errorf("%w: leading %s: a dm table's count of optional words must count the words after it (%d here), or be left out",
			ErrBadMessage, words[0], len(words)-1)
	}
	return words[1:], nil
}
