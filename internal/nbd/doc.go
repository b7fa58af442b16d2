// Package nbd serves block volumes over the NBD protocol
// (NetworkBlockDevice/nbd doc/proto.md). It is the protocol only: it knows
// nothing of caching, and the engine's volume is just a Backend to it.
//
// Handshake (fixed newstyle; the server speaks first):
//
//	S: "NBDMAGIC" "IHAVEOPT" handshake flags (FIXED_NEWSTYLE | NO_ZEROES)
//	C: client flags
//	C: IHAVEOPT option length data      repeated: option haggling
//	S: REP_MAGIC option type length data  one or more replies per option
//
// Options served: NBD_OPT_GO and NBD_OPT_INFO (NBD_INFO_EXPORT and
// NBD_INFO_BLOCK_SIZE always, NBD_INFO_NAME and NBD_INFO_DESCRIPTION on
// request), NBD_OPT_LIST, NBD_OPT_EXPORT_NAME, NBD_OPT_ABORT, and
// NBD_OPT_STARTTLS on a listener served with ServeTLS. Everything else,
// NBD_OPT_STRUCTURED_REPLY included, gets NBD_REP_ERR_UNSUP: replies are
// simple replies only.
//
// TLS (ServeTLS, the spec's FORCEDTLS mode): before NBD_OPT_STARTTLS every
// option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD, and
// NBD_OPT_EXPORT_NAME closes the connection. STARTTLS is answered with
// NBD_REP_ACK, the TLS handshake (crypto/tls, x509; client certificates if
// the tls.Config requires them) runs on the socket, and option haggling
// goes on inside TLS. Serve is NOTLS mode: STARTTLS gets NBD_REP_ERR_UNSUP. A client without NBD_FLAG_C_FIXED_NEWSTYLE may
// only send NBD_OPT_EXPORT_NAME.
//
// Transmission:
//
//	C: request  magic flags type handle offset length [payload of a WRITE]
//	S: reply    magic error handle [payload of a successful READ]
//
// Commands: READ, WRITE (FUA), FLUSH, TRIM (FUA), WRITE_ZEROES (FUA,
// NO_HOLE), DISC. The transmission flags say so: HAS_FLAGS, SEND_FLUSH,
// SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES and CAN_MULTI_CONN, because the
// backend's Flush covers writes from all connections.
//
// Concurrency: one goroutine per connection reads requests and starts one
// goroutine per request, at most Options.MaxInFlight (and
// Options.MaxInFlightBytes of payload) per connection, and within one
// memory budget for the server (Options.BudgetBytes, see budget.go), at
// most Options.MaxConns connections; replies go out in
// completion order, each in a single write under the connection's write
// lock. Payload buffers come from size-class pools. The exception is a
// write without FUA of at most 64 KiB to a backend that implements
// InlineWriter and says yes (a write-back cache taking writes into RAM):
// the connection goroutine serves it itself, straight from its receive
// buffer, and batches the replies of such writes until it is about to wait
// for the client, so a burst of small writes costs one reply write, not one
// goroutine, one copy and one write each. A larger write without FUA to a
// backend that also implements StreamWriter is served there too: the
// backend reads the payload from the connection itself, straight into the
// place it keeps it (writeboost: its RAM buffer), so no payload buffer of
// the server's holds it and nothing copies it again. Measured with fio's nbd engine,
// 4 KiB random writes at iodepth 32 on 2 cores: ~115k IOPS one goroutine
// per write, ~170-180k inline (nbdkit memory: ~220k). A reply write that
// makes no progress for Options.StallTimeout closes the connection: a
// client that does not read its replies pins no memory for longer.
//
// Bad input: a range past the end gets EINVAL (ENOSPC for writes), an
// unknown command or flag EINVAL, and the connection goes on. A READ or
// WRITE over MaxPayload is refused before anything is allocated; for a
// WRITE the payload cannot be skipped, so that connection is closed. A bad
// magic, an oversized option, or a client that vanishes closes that
// connection only.
//
// Attach (Linux) hands a connection to the kernel's nbd driver instead, for
// a /dev/nbdN device.
//
// Client (client.go, client_handshake.go, client_ops.go, client_uri.go) is
// the other side, for a backing device on the network: NBD URIs (nbd://,
// nbds://, nbd+unix://), the fixed newstyle handshake with NBD_OPT_STARTTLS
// and NBD_OPT_GO (NBD_OPT_EXPORT_NAME where GO is unknown), block sizes
// honoured, simple replies only, one connection with many requests in
// flight, a timeout per request, and a reconnect that re-sends them. Its
// rule for FLUSH across a reconnect is in Client's comment.
package nbd
