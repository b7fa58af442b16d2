package nbd

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"time"
)

// handshake runs the fixed newstyle negotiation. It returns the export
// chosen by NBD_OPT_GO or NBD_OPT_EXPORT_NAME, nil and no error after
// NBD_OPT_ABORT, or an error that closes the connection.
func (c *conn) handshake() (*Export, error) {
	c.setDeadline(time.Now().Add(c.s.opts.HandshakeTimeout))
	defer c.setDeadline(time.Time{})

	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:8], magicInit)
	binary.BigEndian.PutUint64(hello[8:16], magicOpt)
	binary.BigEndian.PutUint16(hello[16:18], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.w.Write(hello[:]); err != nil {
		return nil, fmt.Errorf("send handshake: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return nil, fmt.Errorf("read client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	// The server MUST drop a client that sets a flag it does not know.
	if flags&^clientFlagsKnown != 0 {
		return nil, fmt.Errorf("%w: unknown client flags %#x", ErrProtocol, flags)
	}
	c.fixed = flags&clientFlagFixedNewstyle != 0
	c.noZeroes = flags&clientFlagNoZeroes != 0

	for i := 0; ; i++ {
		if i == maxOptions {
			return nil, fmt.Errorf("%w: more than %d options", ErrProtocol, maxOptions)
		}
		e, done, err := c.option()
		if err != nil || done {
			return e, err
		}
	}
}

// option reads and answers one option. done means option haggling is over:
// with an export (transmission follows) or without (NBD_OPT_ABORT).
func (c *conn) option() (e *Export, done bool, err error) {
	var hdr [optHeaderSize]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return nil, true, fmt.Errorf("read option header: %w", err)
	}
	if m := binary.BigEndian.Uint64(hdr[0:8]); m != magicOpt {
		return nil, true, fmt.Errorf("%w: option magic %#016x", ErrProtocol, m)
	}
	opt := binary.BigEndian.Uint32(hdr[8:12])
	length := binary.BigEndian.Uint32(hdr[12:16])
	if length > maxOptionLength {
		// Reading the data to stay in step would let a client make us
		// read 4 GiB: refuse, and drop the connection.
		if c.fixed {
			c.optReply(opt, repErrTooBig, []byte("option data too long"))
		}
		return nil, true, fmt.Errorf("%w: option %d with %d bytes of data, limit %d", ErrProtocol, opt, length, maxOptionLength)
	}
	data := make([]byte, length)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return nil, true, fmt.Errorf("read option %d data: %w", opt, err)
	}
	// A client without NBD_FLAG_C_FIXED_NEWSTYLE speaks plain newstyle,
	// which knows no option but NBD_OPT_EXPORT_NAME and cannot parse
	// option replies: anything else ends the session, as old servers did.
	if !c.fixed && opt != optExportName {
		return nil, true, fmt.Errorf("%w: option %d from a client without fixed newstyle", ErrProtocol, opt)
	}
	if c.tlsConf != nil && !c.tlsOn {
		switch opt {
		case optStartTLS, optAbort:
		case optExportName:
			// No error reply exists for it: the spec says disconnect.
			return nil, true, fmt.Errorf("%w: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS", ErrTLSRequired)
		default:
			return nil, false, c.optReply(opt, repErrTLSReqd, []byte("TLS required: send NBD_OPT_STARTTLS first"))
		}
	}

	switch opt {
	case optExportName:
		return c.optExportName(data)
	case optAbort:
		// The client may already have gone: the reply is best effort.
		c.optReply(opt, repAck, nil)
		return nil, true, nil
	case optList:
		return nil, false, c.optList(data)
	case optInfo, optGo:
		return c.optInfoGo(opt, data)
	case optStartTLS:
		if c.tlsConf != nil {
			return nil, false, c.startTLS(data)
		}
		fallthrough
	default:
		// NBD_OPT_STARTTLS (NOTLS mode: Serve, the unix socket), NBD_OPT_STRUCTURED_REPLY (simple
		// replies only), the metadata contexts and extended headers,
		// which need structured replies, and anything unknown.
		return nil, false, c.optReply(opt, repErrUnsup, fmt.Appendf(nil, "option %d not supported", opt))
	}
}

// optExportName answers NBD_OPT_EXPORT_NAME, which cannot fail gracefully:
// an unknown name closes the session.
func (c *conn) optExportName(data []byte) (*Export, bool, error) {
	if len(data) > maxNameLength {
		return nil, true, fmt.Errorf("%w: export name of %d bytes", ErrProtocol, len(data))
	}
	e, ok := c.s.lookup(string(data))
	if !ok {
		return nil, true, fmt.Errorf("%w: %q (NBD_OPT_EXPORT_NAME)", ErrUnknownExport, data)
	}
	b := make([]byte, 10, 10+exportNameZeros)
	binary.BigEndian.PutUint64(b[0:8], uint64(e.Backend.Size()))
	binary.BigEndian.PutUint16(b[8:10], c.s.transmissionFlags(e))
	if !c.noZeroes {
		b = b[:10+exportNameZeros]
	}
	if _, err := c.w.Write(b); err != nil {
		return nil, true, fmt.Errorf("send export info: %w", err)
	}
	return e, true, nil
}

// optList answers NBD_OPT_LIST: one NBD_REP_SERVER per export, then ACK.
func (c *conn) optList(data []byte) error {
	if len(data) != 0 {
		return c.optReply(optList, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
	}
	for i := range c.s.exports {
		e := &c.s.exports[i]
		b := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(e.Name)+len(e.Description)), uint32(len(e.Name)))
		b = append(b, e.Name...)
		b = append(b, e.Description...)
		if err := c.optReply(optList, repServer, b); err != nil {
			return err
		}
	}
	return c.optReply(optList, repAck, nil)
}

// optInfoGo answers NBD_OPT_INFO and NBD_OPT_GO: NBD_INFO_EXPORT always,
// NBD_INFO_BLOCK_SIZE always (the spec lets a server send it unasked, and
// clients that honour it avoid sub-sector requests), NBD_INFO_NAME and
// NBD_INFO_DESCRIPTION when asked for; then ACK. After the ACK to GO the
// transmission begins.
func (c *conn) optInfoGo(opt uint32, data []byte) (*Export, bool, error) {
	ir, err := parseInfoRequest(data)
	if err != nil {
		return nil, false, c.optReply(opt, repErrInvalid, []byte(err.Error()))
	}
	e, ok := c.s.lookup(ir.name)
	if !ok {
		return nil, false, c.optReply(opt, repErrUnknown, fmt.Appendf(nil, "unknown export %q", ir.name))
	}

	var b [14]byte
	binary.BigEndian.PutUint16(b[0:2], infoExport)
	binary.BigEndian.PutUint64(b[2:10], uint64(e.Backend.Size()))
	binary.BigEndian.PutUint16(b[10:12], c.s.transmissionFlags(e))
	if err := c.optReply(opt, repInfo, b[:12]); err != nil {
		return nil, true, err
	}
	binary.BigEndian.PutUint16(b[0:2], infoBlockSize)
	binary.BigEndian.PutUint32(b[2:6], MinBlockSize)
	binary.BigEndian.PutUint32(b[6:10], PreferredBlockSize)
	binary.BigEndian.PutUint32(b[10:14], MaxPayload)
	if err := c.optReply(opt, repInfo, b[:14]); err != nil {
		return nil, true, err
	}
	var sentName, sentDesc bool
	for _, it := range ir.infos {
		var s string
		switch {
		case it == infoName && !sentName:
			s, sentName = e.Name, true
		case it == infoDescription && !sentDesc && e.Description != "":
			s, sentDesc = e.Description, true
		default:
			continue // unknown or repeated requests are ignored, as the spec allows
		}
		payload := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(s)), it)
		if err := c.optReply(opt, repInfo, append(payload, s...)); err != nil {
			return nil, true, err
		}
	}
	if err := c.optReply(opt, repAck, nil); err != nil {
		return nil, true, err
	}
	if opt == optGo {
		return e, true, nil
	}
	return nil, false, nil
}

// optReply sends one option reply in one write.
func (c *conn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, optReplyHdrSize, optReplyHdrSize+len(data))
	binary.BigEndian.PutUint64(b[0:8], magicOptReply)
	binary.BigEndian.PutUint32(b[8:12], opt)
	binary.BigEndian.PutUint32(b[12:16], typ)
	binary.BigEndian.PutUint32(b[16:20], uint32(len(data)))
	b = append(b, data...)
	if _, err := c.w.Write(b); err != nil {
		return fmt.Errorf("send reply to option %d: %w", opt, err)
	}
	return nil
}

// --- transmission ---

// startTLS answers NBD_OPT_STARTTLS where TLS is configured: ACK, then the
// TLS handshake on the socket, then option haggling goes on inside TLS.
// Per the spec a second STARTTLS, or one with data, is NBD_REP_ERR_INVALID.
// A failed TLS handshake (no client certificate where one is required, a
// client that does not trust ours) closes the connection.
func (c *conn) startTLS(data []byte) error {
	switch {
	case c.tlsOn:
		return c.optReply(optStartTLS, repErrInvalid, []byte("TLS already negotiated"))
	case len(data) != 0:
		return c.optReply(optStartTLS, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	case c.br.Buffered() != 0:
		// The client sent more before our ACK: those bytes would be read
		// as plain text although the client meant them for TLS.
		return fmt.Errorf("%w: data after NBD_OPT_STARTTLS before its reply", ErrProtocol)
	}
	if err := c.optReply(optStartTLS, repAck, nil); err != nil {
		return err
	}
	tc := tls.Server(c.nc, c.tlsConf)
	if err := tc.Handshake(); err != nil { // within the handshake deadline
		return fmt.Errorf("%w: TLS handshake: %w", ErrTLSRequired, err)
	}
	c.w, c.tlsOn = tc, true
	c.br.Reset(tc)
	return nil
}
