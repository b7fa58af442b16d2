package cli

import (
	"errors"
	"io/fs"
	"strings"

	"github.com/writeboost/writeboost/internal/blockdev"
)

// internalPrefixes are the words errors collect on their way up through
// our packages ("control: bad message: ...", "blockdev: identify ..."):
// right for a log or a test, noise after the command's own prefix, which
// already says where the message comes from.
var internalPrefixes = map[string]bool{
	"blockdev": true, "check": true, "control": true, "engine": true, "layout": true,
	"nbd": true, "probe": true, "replay": true, "sectorio": true, "superblock": true, "vocab": true,
	// vocab.ErrBadMessage and ErrStaticOption: what follows says what is
	// wrong, and "message" is the wrong word for a tunable on wb-create's
	// command line.
	"bad message": true, "static option": true,
}

// ErrorText is an error message as a command prints it after its name:
// one line, without the package prefixes an error collects on its way
// up, so that "wb-create: control: bad message: writeback_threshold: 500
// is out of range 0..100" reads "wb-create: writeback_threshold: 500 is
// out of range 0..100". Only whole ": "-separated words are dropped, and
// never all of them.
func ErrorText(msg string) string {
	parts := strings.Split(OneLine(msg), ": ")
	kept := parts[:0:0]
	for _, p := range parts {
		if !internalPrefixes[p] {
			kept = append(kept, p)
		}
	}
	if len(kept) == 0 {
		return OneLine(msg)
	}
	return strings.Join(kept, ": ")
}

// PathError says that role ("backing device", "--backing") at path
// failed, with the cause a person can act on: a failed system call on a
// path (fs.PathError, "lstat /x: no such file or directory") is reduced
// to its errno, and a path that is neither a regular file nor a block
// device says so; the path given on the command line precedes it:
// "backing device x: no such file or directory". The whole of err stays
// wrapped for errors.Is and errors.As.
func PathError(role, path string, err error) error {
	cause := err.Error()
	var pe *fs.PathError
	switch {
	case errors.Is(err, blockdev.ErrNotSupported):
		cause = "not a regular file or block device"
	case errors.As(err, &pe):
		cause = pe.Err.Error()
	}
	return &pathError{msg: role + " " + path + ": " + cause, err: err}
}

type pathError struct {
	msg string
	err error
}

func (e *pathError) Error() string { return e.msg }
func (e *pathError) Unwrap() error { return e.err }
