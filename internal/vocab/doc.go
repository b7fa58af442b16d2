// Package vocab is the words the engine, the control socket and the
// commands share: the tunables (one table: name, range, default, static
// flag, help), the status snapshot and the layout of its stat counters,
// and the messages a volume takes. Each is defined here once; help text,
// man-page tables and JSON follow from it, or a test fails when they drift.
//
// It imports nothing else of the project, so that every package may import
// it.
package vocab

import "errors"

// Errors of this package; test them with errors.Is. NB: their texts keep
// the "control:" prefix they had before they moved here: wb-message and
// wb-create print them, and scripts may match them.
var (
	// ErrBadMessage marks a message or optional argument that is unknown,
	// malformed or out of the kernel's range.
	ErrBadMessage = errors.New("control: bad message")
	// ErrStaticOption marks a message that tries to change an option that
	// can only be set when the volume is created.
	ErrStaticOption = errors.New("control: static option")
)
