package control

import (
	"errors"
	"fmt"
)

// Errors of this package; test them with errors.Is.
var (
	// ErrSyntax marks a malformed status line, table line or request.
	ErrSyntax = errors.New("control: syntax error")
	// ErrBadName marks a volume name outside [A-Za-z0-9._-]{1,64}.
	ErrBadName = errors.New("control: bad volume name")
	// ErrNoVolume marks a name with no running volume.
	ErrNoVolume = errors.New("control: no such volume")
	// ErrVolumeLive marks a name whose volume is running.
	ErrVolumeLive = errors.New("control: volume is running")
	// ErrPermission marks a peer that may not use the control socket.
	ErrPermission = errors.New("control: permission denied")
	// ErrInUse marks a remove refused because NBD clients are connected
	// (InUseError).
	ErrInUse = errors.New("control: volume in use")
	// ErrClosed marks a client whose connection is gone.
	ErrClosed = errors.New("control: connection closed")
)

// RemoteError is an error the server reported for one request.
type RemoteError struct {
	Op  string // the request's op
	Msg string // the server's error text
}

func (e *RemoteError) Error() string { return e.Msg }

// InUseError refuses a remove without --force while NBD clients are
// connected to the volume, as dmsetup remove refuses an open device. It
// wraps ErrInUse.
type InUseError struct {
	Name    string // the volume; "" reads "the volume"
	Clients uint64 // NBD connections open when the remove was refused
}

func (e *InUseError) Error() string {
	name := e.Name
	if name == "" {
		name = "the volume"
	}
	if e.Clients == 1 {
		return fmt.Sprintf("remove refused: 1 NBD client is connected to %s; disconnect it first, or remove --force", name)
	}
	return fmt.Sprintf("remove refused: %d NBD clients are connected to %s; disconnect them first, or remove --force", e.Clients, name)
}

func (e *InUseError) Unwrap() error { return ErrInUse }
