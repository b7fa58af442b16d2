package nbd

import (
	"encoding/binary"
	"fmt"
	"time"
)

// Protocol constants. The names follow NetworkBlockDevice/nbd doc/proto.md;
// each carries the spec name in its comment. Everything on the wire is
// big-endian (network byte order).

// Magic numbers.
const (
	magicInit     uint64 = 0x4e42444d41474943 // INIT_PASSWD, "NBDMAGIC"
	magicOpt      uint64 = 0x49484156454F5054 // IHAVEOPT, newstyle magic
	magicOptReply uint64 = 0x0003e889045565a9 // NBD_REP_MAGIC, option replies
	magicRequest  uint32 = 0x25609513         // NBD_REQUEST_MAGIC
	magicReply    uint32 = 0x67446698         // NBD_SIMPLE_REPLY_MAGIC
)

// Handshake flags, sent by the server after IHAVEOPT.
const (
	flagFixedNewstyle uint16 = 1 << 0 // NBD_FLAG_FIXED_NEWSTYLE
	flagNoZeroes      uint16 = 1 << 1 // NBD_FLAG_NO_ZEROES
)

// Client flags, the client's answer to the handshake flags.
const (
	clientFlagFixedNewstyle uint32 = 1 << 0 // NBD_FLAG_C_FIXED_NEWSTYLE
	clientFlagNoZeroes      uint32 = 1 << 1 // NBD_FLAG_C_NO_ZEROES
	clientFlagsKnown               = clientFlagFixedNewstyle | clientFlagNoZeroes
)

// Transmission flags: what the export supports, sent with the export size.
// They are also what the kernel driver takes with NBD_SET_FLAGS.
const (
	FlagHasFlags        uint16 = 1 << 0  // NBD_FLAG_HAS_FLAGS
	FlagReadOnly        uint16 = 1 << 1  // NBD_FLAG_READ_ONLY
	FlagSendFlush       uint16 = 1 << 2  // NBD_FLAG_SEND_FLUSH
	FlagSendFUA         uint16 = 1 << 3  // NBD_FLAG_SEND_FUA
	FlagRotational      uint16 = 1 << 4  // NBD_FLAG_ROTATIONAL
	FlagSendTrim        uint16 = 1 << 5  // NBD_FLAG_SEND_TRIM
	FlagSendWriteZeroes uint16 = 1 << 6  // NBD_FLAG_SEND_WRITE_ZEROES
	FlagSendDF          uint16 = 1 << 7  // NBD_FLAG_SEND_DF
	FlagCanMultiConn    uint16 = 1 << 8  // NBD_FLAG_CAN_MULTI_CONN
	FlagSendResize      uint16 = 1 << 9  // NBD_FLAG_SEND_RESIZE
	FlagSendCache       uint16 = 1 << 10 // NBD_FLAG_SEND_CACHE
	FlagSendFastZero    uint16 = 1 << 11 // NBD_FLAG_SEND_FAST_ZERO
)

// Options (the "option haggling" of the newstyle handshake).
const (
	optExportName      uint32 = 1  // NBD_OPT_EXPORT_NAME
	optAbort           uint32 = 2  // NBD_OPT_ABORT
	optList            uint32 = 3  // NBD_OPT_LIST
	optPeekExport      uint32 = 4  // NBD_OPT_PEEK_EXPORT (withdrawn)
	optStartTLS        uint32 = 5  // NBD_OPT_STARTTLS
	optInfo            uint32 = 6  // NBD_OPT_INFO
	optGo              uint32 = 7  // NBD_OPT_GO
	optStructuredReply uint32 = 8  // NBD_OPT_STRUCTURED_REPLY
	optListMetaContext uint32 = 9  // NBD_OPT_LIST_META_CONTEXT
	optSetMetaContext  uint32 = 10 // NBD_OPT_SET_META_CONTEXT
	optExtendedHeaders uint32 = 11 // NBD_OPT_EXTENDED_HEADERS
)

// Option reply types. Errors have bit 31 set.
const (
	repAck              uint32 = 1          // NBD_REP_ACK
	repServer           uint32 = 2          // NBD_REP_SERVER
	repInfo             uint32 = 3          // NBD_REP_INFO
	repErrUnsup         uint32 = 1<<31 + 1  // NBD_REP_ERR_UNSUP
	repErrPolicy        uint32 = 1<<31 + 2  // NBD_REP_ERR_POLICY
	repErrInvalid       uint32 = 1<<31 + 3  // NBD_REP_ERR_INVALID
	repErrPlatform      uint32 = 1<<31 + 4  // NBD_REP_ERR_PLATFORM
	repErrTLSReqd       uint32 = 1<<31 + 5  // NBD_REP_ERR_TLS_REQD
	repErrUnknown       uint32 = 1<<31 + 6  // NBD_REP_ERR_UNKNOWN
	repErrShutdown      uint32 = 1<<31 + 7  // NBD_REP_ERR_SHUTDOWN
	repErrBlockSizeReqd uint32 = 1<<31 + 8  // NBD_REP_ERR_BLOCK_SIZE_REQD
	repErrTooBig        uint32 = 1<<31 + 9  // NBD_REP_ERR_TOO_BIG
	repErrExtHeaderReqd uint32 = 1<<31 + 10 // NBD_REP_ERR_EXT_HEADER_REQD
)

// Info types, carried in NBD_REP_INFO replies to NBD_OPT_INFO and NBD_OPT_GO.
const (
	infoExport      uint16 = 0 // NBD_INFO_EXPORT
	infoName        uint16 = 1 // NBD_INFO_NAME
	infoDescription uint16 = 2 // NBD_INFO_DESCRIPTION
	infoBlockSize   uint16 = 3 // NBD_INFO_BLOCK_SIZE
)

// Commands (the request "type" field).
const (
	cmdRead        uint16 = 0 // NBD_CMD_READ
	cmdWrite       uint16 = 1 // NBD_CMD_WRITE
	cmdDisc        uint16 = 2 // NBD_CMD_DISC
	cmdFlush       uint16 = 3 // NBD_CMD_FLUSH
	cmdTrim        uint16 = 4 // NBD_CMD_TRIM
	cmdCache       uint16 = 5 // NBD_CMD_CACHE
	cmdWriteZeroes uint16 = 6 // NBD_CMD_WRITE_ZEROES
	cmdBlockStatus uint16 = 7 // NBD_CMD_BLOCK_STATUS
	cmdResize      uint16 = 8 // NBD_CMD_RESIZE
)

// Command flags.
const (
	cmdFlagFUA      uint16 = 1 << 0 // NBD_CMD_FLAG_FUA
	cmdFlagNoHole   uint16 = 1 << 1 // NBD_CMD_FLAG_NO_HOLE
	cmdFlagDF       uint16 = 1 << 2 // NBD_CMD_FLAG_DF
	cmdFlagReqOne   uint16 = 1 << 3 // NBD_CMD_FLAG_REQ_ONE
	cmdFlagFastZero uint16 = 1 << 4 // NBD_CMD_FLAG_FAST_ZERO
)

// Error values of the reply's error field. They are Linux errno values, but
// the protocol allows only these.
const (
	errPerm     uint32 = 1   // NBD_EPERM
	errIO       uint32 = 5   // NBD_EIO
	errNoMem    uint32 = 12  // NBD_ENOMEM
	errInval    uint32 = 22  // NBD_EINVAL
	errNoSpc    uint32 = 28  // NBD_ENOSPC
	errOverflow uint32 = 75  // NBD_EOVERFLOW
	errNotSup   uint32 = 95  // NBD_ENOTSUP
	errShutdown uint32 = 108 // NBD_ESHUTDOWN
)

// Sizes and limits.
const (
	// Block size constraints advertised with NBD_INFO_BLOCK_SIZE. The server
	// itself accepts any byte alignment (the backend is byte-addressed), but
	// 512 is the sector, the unit of dm-writeboost's dirty bits, below which
	// a write costs the engine a read-modify-write; 4096 is a cache block.
	MinBlockSize       = 512
	PreferredBlockSize = 4096
	// MaxPayload is the largest READ or WRITE accepted: a request beyond it
	// is refused before any buffer is allocated.
	MaxPayload = 32 << 20

	// maxOptionLength bounds an option's data. The longest legitimate option
	// is NBD_OPT_GO/INFO: a 4096-byte name plus a few info requests.
	maxOptionLength = 64 << 10
	// maxNameLength is the protocol's string limit (export names).
	maxNameLength = 4096
	// maxOptions bounds option haggling: a client that never ends it is
	// dropped rather than served forever.
	maxOptions = 1024

	requestSize     = 28  // magic, flags, type, handle, offset, length
	simpleReplySize = 16  // magic, error, handle
	optHeaderSize   = 16  // IHAVEOPT, option, length
	optReplyHdrSize = 20  // magic, option, type, length
	exportNameZeros = 124 // reserved zeroes after the NBD_OPT_EXPORT_NAME reply
)

// request is a decoded request header (NBD_REQUEST_MAGIC, 28 bytes).
type request struct {
	flags  uint16
	typ    uint16
	handle uint64
	offset uint64
	length uint32

	// received is when the server read the header, as time since
	// observeEpoch (monotonic, and 8 bytes rather than a time.Time's 24
	// in a struct copied along the hot path); set only when an Observer
	// watches (observe.go).
	received time.Duration
}

// parseRequest decodes a request header. Only the magic can make it fail:
// flag, type and range checks belong to the command, which must answer them
// with an error reply rather than a dropped connection.
func parseRequest(b *[requestSize]byte) (request, error) {
	if m := binary.BigEndian.Uint32(b[0:4]); m != magicRequest {
		return request{}, fmt.Errorf("%w: request magic %#08x", ErrProtocol, m)
	}
	return request{
		flags:  binary.BigEndian.Uint16(b[4:6]),
		typ:    binary.BigEndian.Uint16(b[6:8]),
		handle: binary.BigEndian.Uint64(b[8:16]),
		offset: binary.BigEndian.Uint64(b[16:24]),
		length: binary.BigEndian.Uint32(b[24:28]),
	}, nil
}

// encode writes the request header into b; the inverse of parseRequest, used
// by tests and clients.
func (r request) encode(b *[requestSize]byte) {
	binary.BigEndian.PutUint32(b[0:4], magicRequest)
	binary.BigEndian.PutUint16(b[4:6], r.flags)
	binary.BigEndian.PutUint16(b[6:8], r.typ)
	binary.BigEndian.PutUint64(b[8:16], r.handle)
	binary.BigEndian.PutUint64(b[16:24], r.offset)
	binary.BigEndian.PutUint32(b[24:28], r.length)
}

// putSimpleReply encodes a simple reply header.
func putSimpleReply(b *[simpleReplySize]byte, errCode uint32, handle uint64) {
	binary.BigEndian.PutUint32(b[0:4], magicReply)
	binary.BigEndian.PutUint32(b[4:8], errCode)
	binary.BigEndian.PutUint64(b[8:16], handle)
}

// infoRequest is the decoded data of NBD_OPT_INFO and NBD_OPT_GO:
//
//	32 bits  length of name
//	String   name
//	16 bits  number of info requests N
//	N x 16   info types
type infoRequest struct {
	name  string
	infos []uint16
}

// parseInfoRequest decodes NBD_OPT_INFO/NBD_OPT_GO data. Any inconsistency
// between the lengths is an error: the spec answers it with
// NBD_REP_ERR_INVALID.
func parseInfoRequest(data []byte) (infoRequest, error) {
	if len(data) < 6 {
		return infoRequest{}, fmt.Errorf("%w: info request of %d bytes, want at least 6", ErrProtocol, len(data))
	}
	nameLen := binary.BigEndian.Uint32(data[0:4])
	if uint64(nameLen) > uint64(len(data)-6) {
		return infoRequest{}, fmt.Errorf("%w: info request name length %d exceeds the option (%d bytes)", ErrProtocol, nameLen, len(data))
	}
	if nameLen > maxNameLength {
		return infoRequest{}, fmt.Errorf("%w: export name of %d bytes, limit %d", ErrProtocol, nameLen, maxNameLength)
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	n := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*n {
		return infoRequest{}, fmt.Errorf("%w: %d info requests need %d bytes, option has %d", ErrProtocol, n, 2*n, len(rest))
	}
	infos := make([]uint16, n)
	for i := range infos {
		infos[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return infoRequest{name: name, infos: infos}, nil
}
