// Package control is the management side of a running writeboost volume:
// what `dmsetup status`, `dmsetup table` and `dmsetup message` are for the
// kernel target. It owns
//
//   - the status snapshot (Status) and the kernel's status and table lines,
//     byte for byte as dm-writeboost 2.2.x emits them (cf. writeboost_status,
//     STATUSTYPE_INFO and STATUSTYPE_TABLE), so scripts written for the kernel
//     target read ours unchanged;
//   - the message verbs and the optional table arguments with the kernel's
//     ranges (cf. do_consume_optional_argv), validated in one place for
//     wb-create, wb-message and the control server;
//   - the run directory: RUNDIR/NAME.sock (NBD), RUNDIR/NAME.ctl (control),
//     RUNDIR/NAME.json (state file);
//   - the control protocol: JSON lines over the unix socket NAME.ctl.
//
// The control protocol, one JSON object per line in each direction, one
// response per request, in order:
//
//	-> {"op":"status"}                      <- {"ok":true,"status":{...}}
//	-> {"op":"table"}                       <- {"ok":true,"table":"0 2048 writeboost ..."}
//	-> {"op":"message","args":["flush"]}    <- {"ok":true} (and "result" if the volume said something)
//	                                        <- {"ok":false,"error":"..."}
//
// A message runs with a context that is cancelled when the client goes away
// (its connection reaches EOF or fails), so a client interrupts a long
// drop_caches by closing its connection. Progress is read by polling status
// on a second connection. Only root and the owner of the run directory may
// connect (SO_PEERCRED).
//
// A remove without --force is refused while the volume's status counts NBD
// clients (nr_clients), as dmsetup remove refuses an open device: the
// server asks before the volume sees the message (for up to a second while
// the count falls: clients that just hung up), and the volume asks again
// before it stops (RefuseRemove).
//
// The package knows nothing of the engine: the server calls a Volume.
package control
