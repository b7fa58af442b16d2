package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// The client's side of the fixed newstyle handshake: greeting, client flags,
// NBD_OPT_STARTTLS when TLS is configured, then NBD_OPT_GO asking for
// NBD_INFO_BLOCK_SIZE (NBD_OPT_EXPORT_NAME where the server does not know
// NBD_OPT_GO). Structured replies are never negotiated: every reply of the
// transmission is a simple reply.

// maxClientOptReply bounds an option reply's data read from a server: the
// longest legitimate one is an NBD_INFO_DESCRIPTION or error text.
const maxClientOptReply = 64 << 10

// ExportInfo is what the handshake learnt about an export.
type ExportInfo struct {
	Size  int64
	Flags uint16 // transmission flags (FlagSendFlush, ...)
	// MinBlock, PreferredBlock and MaxBlock are NBD_INFO_BLOCK_SIZE's
	// constraints, or the spec's defaults (1, 4096, 32 MiB) when the server
	// sent none.
	MinBlock, PreferredBlock, MaxBlock uint32
}

// Has reports whether the server offers every flag in f.
func (e ExportInfo) Has(f uint16) bool { return e.Flags&f == f }

// clientHandshake negotiates export on nc and returns the connection to
// use for the transmission (nc, or a TLS connection over it).
func clientHandshake(nc net.Conn, export string, tlsConf *tls.Config) (net.Conn, ExportInfo, error) {
	var greet [18]byte
	if _, err := io.ReadFull(nc, greet[:]); err != nil {
		return nil, ExportInfo{}, fmt.Errorf("read greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(greet[0:8]); m != magicInit {
		return nil, ExportInfo{}, fmt.Errorf("%w: server greeting magic %#x", ErrProtocol, m)
	}
	if m := binary.BigEndian.Uint64(greet[8:16]); m != magicOpt {
		return nil, ExportInfo{}, fmt.Errorf("%w: not a newstyle server (magic %#x)", ErrProtocol, m)
	}
	hflags := binary.BigEndian.Uint16(greet[16:18])
	if hflags&flagFixedNewstyle == 0 {
		return nil, ExportInfo{}, fmt.Errorf("%w: server does not speak the fixed newstyle handshake", ErrProtocol)
	}
	cflags := clientFlagFixedNewstyle
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= clientFlagNoZeroes
	}
	if err := binary.Write(nc, binary.BigEndian, cflags); err != nil {
		return nil, ExportInfo{}, fmt.Errorf("send client flags: %w", err)
	}
	c := nc
	if tlsConf != nil {
		if err := sendOpt(c, optStartTLS, nil); err != nil {
			return nil, ExportInfo{}, err
		}
		typ, data, err := readOptReply(c, optStartTLS)
		if err != nil {
			return nil, ExportInfo{}, err
		}
		if typ != repAck {
			return nil, ExportInfo{}, fmt.Errorf("%w: server refused NBD_OPT_STARTTLS: %s", ErrTLSRequired, repText(typ, data))
		}
		tc := tls.Client(nc, tlsConf)
		if err := tc.Handshake(); err != nil {
			return nil, ExportInfo{}, fmt.Errorf("%w: TLS handshake: %w", ErrTLSRequired, err)
		}
		c = tc
	}
	info, err := optGoClient(c, export)
	if err == errGoUnsupported {
		info, err = optExportNameClient(c, export, noZeroes)
	}
	if err != nil {
		return nil, ExportInfo{}, err
	}
	return c, info, nil
}

// errGoUnsupported: the server answered NBD_OPT_GO with NBD_REP_ERR_UNSUP.
var errGoUnsupported = fmt.Errorf("%w: NBD_OPT_GO unsupported", ErrProtocol)

// optGoClient sends NBD_OPT_GO for export with one info request,
// NBD_INFO_BLOCK_SIZE, and reads the replies up to the ACK.
func optGoClient(c net.Conn, export string) (ExportInfo, error) {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(export)))
	data = append(data, export...)
	data = binary.BigEndian.AppendUint16(data, 1)
	data = binary.BigEndian.AppendUint16(data, infoBlockSize)
	if err := sendOpt(c, optGo, data); err != nil {
		return ExportInfo{}, err
	}
	info := ExportInfo{MinBlock: 1, PreferredBlock: 4096, MaxBlock: MaxPayload}
	var gotExport bool
	for {
		typ, data, err := readOptReply(c, optGo)
		if err != nil {
			return ExportInfo{}, err
		}
		switch {
		case typ == repAck:
			if !gotExport {
				return ExportInfo{}, fmt.Errorf("%w: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT", ErrProtocol)
			}
			return info, nil
		case typ == repErrUnsup:
			return ExportInfo{}, errGoUnsupported
		case typ == repErrTLSReqd:
			return ExportInfo{}, fmt.Errorf("%w: the server requires TLS (use an nbds:// URI): %s", ErrTLSRequired, repText(typ, data))
		case typ == repErrUnknown:
			return ExportInfo{}, fmt.Errorf("%w %q: %s", ErrUnknownExport, export, repText(typ, data))
		case typ&(1<<31) != 0:
			return ExportInfo{}, fmt.Errorf("server refused export %q: %s", export, repText(typ, data))
		case typ != repInfo:
			return ExportInfo{}, fmt.Errorf("%w: option reply type %#x to NBD_OPT_GO", ErrProtocol, typ)
		case len(data) < 2:
			return ExportInfo{}, fmt.Errorf("%w: NBD_REP_INFO of %d bytes", ErrProtocol, len(data))
		}
		switch binary.BigEndian.Uint16(data[0:2]) {
		case infoExport:
			if len(data) != 12 {
				return ExportInfo{}, fmt.Errorf("%w: NBD_INFO_EXPORT of %d bytes", ErrProtocol, len(data))
			}
			info.Size, info.Flags, gotExport = int64(binary.BigEndian.Uint64(data[2:10])), binary.BigEndian.Uint16(data[10:12]), true
		case infoBlockSize:
			if len(data) != 14 {
				return ExportInfo{}, fmt.Errorf("%w: NBD_INFO_BLOCK_SIZE of %d bytes", ErrProtocol, len(data))
			}
			info.MinBlock = binary.BigEndian.Uint32(data[2:6])
			info.PreferredBlock = binary.BigEndian.Uint32(data[6:10])
			info.MaxBlock = binary.BigEndian.Uint32(data[10:14])
		}
	}
}

// optExportNameClient is the old way into the transmission: no error
// reply, the server closes the connection for an unknown export.
func optExportNameClient(c net.Conn, export string, noZeroes bool) (ExportInfo, error) {
	if err := sendOpt(c, optExportName, []byte(export)); err != nil {
		return ExportInfo{}, err
	}
	n := 10
	if !noZeroes {
		n += exportNameZeros
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		return ExportInfo{}, fmt.Errorf("NBD_OPT_EXPORT_NAME %q: %w (unknown export?)", export, err)
	}
	return ExportInfo{Size: int64(binary.BigEndian.Uint64(b[0:8])), Flags: binary.BigEndian.Uint16(b[8:10]),
		MinBlock: 1, PreferredBlock: 4096, MaxBlock: MaxPayload}, nil
}

func sendOpt(c net.Conn, opt uint32, data []byte) error {
	b := make([]byte, optHeaderSize, optHeaderSize+len(data))
	binary.BigEndian.PutUint64(b[0:8], magicOpt)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], uint32(len(data)))
	if _, err := c.Write(append(b, data...)); err != nil {
		return fmt.Errorf("send option %d: %w", opt, err)
	}
	return nil
}

// readOptReply reads one option reply to opt.
func readOptReply(c net.Conn, opt uint32) (typ uint32, data []byte, err error) {
	var h [optReplyHdrSize]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		return 0, nil, fmt.Errorf("read reply to option %d: %w", opt, err)
	}
	if m := binary.BigEndian.Uint64(h[0:8]); m != magicOptReply {
		return 0, nil, fmt.Errorf("%w: option reply magic %#x", ErrProtocol, m)
	}
	if o := binary.BigEndian.Uint32(h[8:12]); o != opt {
		return 0, nil, fmt.Errorf("%w: reply to option %d, asked %d", ErrProtocol, o, opt)
	}
	typ = binary.BigEndian.Uint32(h[12:16])
	n := binary.BigEndian.Uint32(h[16:20])
	if n > maxClientOptReply {
		return 0, nil, fmt.Errorf("%w: option reply of %d bytes", ErrProtocol, n)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(c, data); err != nil {
		return 0, nil, fmt.Errorf("read reply to option %d: %w", opt, err)
	}
	return typ, data, nil
}

// repText describes an option error reply: its type and the server's text.
func repText(typ uint32, data []byte) string {
	s := fmt.Sprintf("reply %#x", typ)
	if len(data) > 0 {
		s += ": " + string(data)
	}
	return s
}
