#!/usr/bin/env bash
# 11: who may talk to a volume. The run directory is created 0700 and the
# control socket is 0600, so another user (nobody) can connect neither to
# NAME.sock (the data) nor to NAME.ctl (status, tunables, remove). Even with
# the directory and socket opened up by a careless admin, the control
# socket checks the peer's credentials (SO_PEERCRED) and refuses.
. "$WB_TESTING/lib.sh"

as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
# connect_as_nobody PATH [REQUEST]: connect to a unix socket as nobody,
# send REQUEST (a line) if given, print what comes back; exit 0 only if
# the connection was accepted.
connect_as_nobody() {
	# The system python: nobody cannot run root's (e.g. pyenv) interpreters.
	as_nobody /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect refused:", e.strerror); sys.exit(1)
print("connected")
if len(sys.argv) > 2:
    s.sendall(sys.argv[2].encode() + b"\n")
    print(s.recv(65536).decode(errors="replace").strip())
' "$@"
}

sparse backing.img 16M
sparse cache.img 8M
chmod 0755 "$WB_WORK" # nobody may reach the run directory's parent
wb_start vol backing.img cache.img --reformat

mode=$(stat -c %a "$WB_RUN_DIR")
[ "$mode" = 700 ] || fail "run directory mode $mode, want 700"
mode=$(stat -c %a "$WB_RUN_DIR/vol.ctl")
[ "$mode" = 600 ] || fail "control socket mode $mode, want 600"
mode=$(stat -c %a "$WB_RUN_DIR/vol.json")
[ "$mode" = 600 ] || fail "state file mode $mode, want 600"

note "nobody, run directory as created"
if as_nobody nbdinfo --size "$(wb_uri vol)" 2>err.txt; then fail "nobody connected to vol.sock"; fi
cat err.txt
grep -qi 'permission denied' err.txt || fail "nobody's nbdinfo failed for another reason"
if as_nobody env WB_RUN_DIR="$WB_RUN_DIR" wb-status vol 2>err.txt; then fail "nobody ran wb-status"; fi
cat err.txt
if as_nobody env WB_RUN_DIR="$WB_RUN_DIR" wb-message vol writeback_threshold 50 2>err.txt; then fail "nobody ran wb-message"; fi
cat err.txt
if connect_as_nobody "$WB_RUN_DIR/vol.ctl" >out.txt; then fail "nobody connected to vol.ctl"; fi
cat out.txt
grep -q 'connect refused: Permission denied' out.txt || fail "nobody's connect to vol.ctl failed for another reason"
[ "$(status_field vol .tunables.writeback_threshold)" = 0 ] || fail "a tunable changed"

note "nobody, directory and control socket opened up: SO_PEERCRED must refuse"
chmod 0755 "$WB_RUN_DIR"
chmod 0666 "$WB_RUN_DIR/vol.ctl"
out=$(connect_as_nobody "$WB_RUN_DIR/vol.ctl" '{"op":"message","args":["writeback_threshold","77"]}' || true)
echo "$out"
grep -q '^connected' <<<"$out" || fail "nobody could not even connect to the opened-up socket: $out"
grep -q '"ok":true' <<<"$out" && fail "nobody's message was accepted: $out"
[ "$(status_field vol .tunables.writeback_threshold)" = 0 ] || fail "nobody changed a tunable"
chmod 0700 "$WB_RUN_DIR"

note "root still can"
wb-message vol writeback_threshold 10 || fail "root's wb-message"
[ "$(status_field vol .tunables.writeback_threshold)" = 10 ] || fail "root's tunable not applied"
nbdinfo --size "$(wb_uri vol)" >/dev/null || fail "root's nbdinfo"
wb_stop
echo "figure: permissions 5 refusals for another user (nbd socket, wb-status, wb-message, control connect, control peercred)"
