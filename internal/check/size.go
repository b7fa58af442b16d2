package check

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadSize marks a size argument ParseSize cannot read.
var ErrBadSize = errors.New("check: bad size")

// ParseSize reads a size in bytes: digits with an optional binary suffix
// K, M, G, T or P (also KiB, MiB, ...; case-insensitive; powers of 1024),
// or S for 512-byte sectors: "1073741824", "1G", "512MiB", "2097152s".
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, fmt.Errorf("%w: %q does not start with a number", ErrBadSize, s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q: %w", ErrBadSize, s, err)
	}
	var shift uint
	switch suffix := strings.TrimSuffix(strings.TrimSuffix(t[i:], "ib"), "b"); suffix {
	case "":
		if t[i:] == "ib" {
			return 0, fmt.Errorf("%w: %q: unknown unit", ErrBadSize, s)
		}
	case "s":
		shift = 9
	case "k":
		shift = 10
	case "m":
		shift = 20
	case "g":
		shift = 30
	case "t":
		shift = 40
	case "p":
		shift = 50
	default:
		return 0, fmt.Errorf("%w: %q: unknown unit %q", ErrBadSize, s, t[i:])
	}
	if n > (1<<63-1)>>shift {
		return 0, fmt.Errorf("%w: %q overflows", ErrBadSize, s)
	}
	return n << shift, nil
}
