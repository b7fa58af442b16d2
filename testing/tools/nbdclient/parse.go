package nbdclient

import (
	"encoding/binary"
	"fmt"
)

// ParseGreeting checks the server's first 18 bytes ("NBDMAGIC", IHAVEOPT,
// handshake flags) and returns the handshake flags. Only fixed newstyle
// servers are accepted.
func ParseGreeting(b []byte) (uint16, error) {
	if len(b) < 18 {
		return 0, fmt.Errorf("%w: greeting of %d bytes", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint64(b); m != magicInit {
		return 0, fmt.Errorf("%w: bad init magic %#x", ErrProtocol, m)
	}
	if m := binary.BigEndian.Uint64(b[8:]); m != magicOpt {
		return 0, fmt.Errorf("%w: not a newstyle server (magic %#x)", ErrProtocol, m)
	}
	f := binary.BigEndian.Uint16(b[16:])
	if f&flagFixedNS == 0 {
		return 0, fmt.Errorf("%w: server is not fixed newstyle (flags %#x)", ErrProtocol, f)
	}
	return f, nil
}

// OptReply is the header of an option reply.
type OptReply struct {
	Option, Type, Len uint32
}

// ParseOptReplyHeader decodes the 20-byte option reply header.
func ParseOptReplyHeader(b []byte) (OptReply, error) {
	if len(b) < 20 {
		return OptReply{}, fmt.Errorf("%w: option reply header of %d bytes", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint64(b); m != magicOptReply {
		return OptReply{}, fmt.Errorf("%w: bad option reply magic %#x", ErrProtocol, m)
	}
	return OptReply{
		Option: binary.BigEndian.Uint32(b[8:]),
		Type:   binary.BigEndian.Uint32(b[12:]),
		Len:    binary.BigEndian.Uint32(b[16:]),
	}, nil
}

// ParseInfoExport decodes an NBD_INFO_EXPORT payload: type (0), size,
// transmission flags.
func ParseInfoExport(b []byte) (size uint64, flags uint16, err error) {
	if len(b) != 12 {
		return 0, 0, fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes, want 12", ErrProtocol, len(b))
	}
	if t := binary.BigEndian.Uint16(b); t != infoExport {
		return 0, 0, fmt.Errorf("%w: info type %d is not NBD_INFO_EXPORT", ErrProtocol, t)
	}
	return binary.BigEndian.Uint64(b[2:]), binary.BigEndian.Uint16(b[10:]), nil
}

// ParseReplyHeader decodes a 16-byte simple reply header.
func ParseReplyHeader(b []byte) (errno uint32, cookie uint64, err error) {
	if len(b) < replyHeaderLen {
		return 0, 0, fmt.Errorf("%w: reply header of %d bytes", ErrProtocol, len(b))
	}
	if m := binary.BigEndian.Uint32(b); m != magicReply {
		return 0, 0, fmt.Errorf("%w: bad reply magic %#x (structured replies were not negotiated)", ErrProtocol, m)
	}
	return binary.BigEndian.Uint32(b[4:]), binary.BigEndian.Uint64(b[8:]), nil
}
