package nbd

import (
	"errors"
	"syscall"
)

// Sentinel errors of the package.
var (
	// ErrProtocol marks a client that broke the protocol in a way that
	// cannot be answered with an error reply (bad magic, an impossible
	// length): the connection is closed, other connections go on.
	ErrProtocol = errors.New("nbd: protocol violation")
	// ErrTLSRequired marks a client that asked for an export without TLS
	// where TLS is required (ServeTLS), or whose TLS handshake failed.
	ErrTLSRequired = errors.New("nbd: TLS required")
	// ErrUnknownExport is returned for an export name the server lacks.
	ErrUnknownExport = errors.New("nbd: unknown export")
	// ErrConfig marks an invalid server configuration (NewServer).
	ErrConfig = errors.New("nbd: invalid configuration")
	// ErrNoKernelModule means /dev/nbdN is missing or is not an nbd device.
	ErrNoKernelModule = errors.New("nbd kernel module not loaded: modprobe nbd")
)

// errnoOf translates a backend error to an NBD error value. This is the only
// place where errors become protocol codes (cf. go-fuse's fs.ToErrno): the
// backend speaks Go errors, usually wrapping a syscall.Errno from the device.
// Anything unrecognised is an I/O error.
func errnoOf(err error) uint32 {
	if err == nil {
		return 0
	}
	var errno syscall.Errno
	if !errors.As(err, &errno) {
		return errIO
	}
	switch errno {
	case syscall.EPERM, syscall.EACCES, syscall.EROFS:
		return errPerm
	case syscall.ENOMEM:
		return errNoMem
	case syscall.EINVAL:
		return errInval
	// The spec asks to map EDQUOT and EFBIG to ENOSPC.
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return errNoSpc
	case syscall.EOVERFLOW:
		return errOverflow
	case syscall.ENOTSUP:
		return errNotSup
	case syscall.ESHUTDOWN:
		return errShutdown
	default:
		return errIO
	}
}
