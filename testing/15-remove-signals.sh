#!/usr/bin/env bash
# 15: no mistake an admin can make destroys data (issue 11): remove while
# clients are connected, and the signals an engine gets in real life.
#   A: two clients stay connected (qemu-io in interactive mode fed through
#      a fifo, one on the unix socket, one over TCP). wb-status counts them
#      (JSON and table; the --raw line stays the kernel's); `wb-message vol
#      remove` is refused with one line and exit 1, and the volume goes on
#      serving the same data to the same client; as the clients leave the
#      count falls to 0, remove is accepted and wb-create exits 0.
#   B: SIGHUP (an ssh logout) is a clean stop: exit 0, no socket, control
#      socket or state file left, wb-check consistent, a FLUSHed write and a
#      write still in the RAM buffer read back after a restart. Under nohup
#      (SIGHUP ignored at start) SIGHUP changes nothing.
#   C: `timeout 5 wb-create ...`, 8 times. timeout signals the process and
#      then its process group: two SIGTERMs at once, which used to take the
#      "second signal" exit about one run in three. Each run: timeout's
#      status 124, wb-create's log shows the clean stop and never "second
#      signal:", nothing left in the run directory, wb-check consistent; at
#      the end every FLUSHed write is there.
#   D: a real second signal: the stop is held up by a raw NBD client that
#      sends large READs and never reads the replies (the stop waits up to
#      5 s for them); a SIGTERM 1.5 s after "stopping cleanly" exits at once
#      with status 1, and the next start replays the log.
#   E: SIGPIPE: wb-create -v logging to a pipe whose reader has gone, and
#      control clients that hang up before reading their answers, do not
#      kill it.
. "$WB_TESTING/lib.sh"

# Every wb-create here starts through env(1) with SIGHUP at its default
# disposition (the harness itself may run under nohup), or as $WB_SIGNALS
# says. exec keeps the pid wb_start records.
real=$(command -v wb-create)
mkdir -p shim
printf '#!/bin/sh\nexec env ${WB_SIGNALS:---default-signal=HUP} %s "$@"\n' "$real" >shim/wb-create
chmod +x shim/wb-create
PATH=$WB_WORK/shim:$PATH

sparse backing.img 32M
sparse cache.img 8M
uri=$(wb_uri vol)
clients() { status_field vol .nr_clients; }
clients_are() { [ "$(clients)" = "$1" ]; }

# no_leftovers NAME: the run directory forgot the volume.
no_leftovers() {
	local f
	for f in "$WB_RUN_DIR/$1.sock" "$WB_RUN_DIR/$1.ctl" "$WB_RUN_DIR/$1.json"; do
		[ ! -e "$f" ] || fail "$f left after a clean stop"
	done
}

# wait_exit WANT WHAT: wb-create ($WB_PID) exits with status WANT.
wait_exit() {
	local want=$1 what=$2 rc=0
	wait_for 30 "wb-create to exit after $what" bash -c "! kill -0 $WB_PID"
	wait "$WB_PID" || rc=$?
	[ "$rc" -eq "$want" ] || { tail -n 20 "$WB_LOG" >&2; fail "wb-create exited $rc after $what, want $want"; }
	no_panic "$WB_LOG"
}

# check_cache WHAT: wb-check finds the cache device consistent.
check_cache() {
	local rc=0
	wb-check cache.img >check.txt 2>&1 || rc=$?
	[ "$rc" -eq 0 ] || { cat check.txt >&2; fail "wb-check after $1: exit $rc"; }
}

# refused N: remove and remove --no-writeback are refused naming N clients.
refused() {
	local n=$1 want
	if [ "$n" -eq 1 ]; then
		want="wb-message: remove refused: 1 NBD client is connected to vol; disconnect it first, or remove --force"
	else
		want="wb-message: remove refused: $n NBD clients are connected to vol; disconnect them first, or remove --force"
	fi
	for args in remove "remove --no-writeback"; do
		# shellcheck disable=SC2086
		if wb-message vol $args 2>err.txt; then fail "wb-message vol $args accepted with $n clients connected"; fi
		[ "$(cat err.txt)" = "$want" ] || fail "wb-message vol $args: $(cat err.txt); want: $want"
	done
	kill -0 "$WB_PID" 2>/dev/null || fail "a refused remove stopped the volume"
	echo "refused: $(cat err.txt)"
}

note "A: remove refused while clients are connected"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
wb_start vol backing.img cache.img --reformat --listen "tcp://127.0.0.1:$port"
clients_are 0 || fail "nr_clients on an idle volume: $(clients)"
qemu-io -f raw "$uri" -c "write -P 0x5a 1M 64k" -c flush >/dev/null || fail "write"
wait_for 10 "the writer to be gone" clients_are 0
rm -f a.in b.in
mkfifo a.in b.in
# Both start before this shell opens the fifos' write ends (3 and 4): a
# client holding the other's write end would never see its EOF.
qemu-io -f raw "$uri" <a.in >a.out 2>&1 &
apid=$!
wb_defer "kill_ours $apid qemu-io"
qemu-io -f raw "nbd://127.0.0.1:$port/vol" <b.in >b.out 2>&1 &
bpid=$!
wb_defer "kill_ours $bpid qemu-io"
exec 3>a.in 4>b.in
wait_for 10 "2 NBD clients in the status" clients_are 2
table=$(wb-status vol)
grep -Eq '^\| NBD clients +\| 2 ' <<<"$table" || fail "the table does not show 2 NBD clients: $table"
raw=$(wb-status --raw vol)
[ "$(wc -w <<<"$raw")" -eq 38 ] || fail "--raw is not the kernel's 38-word line: $raw"
refused 2
# The volume is untouched: the held client still reads the data and writes.
# NB: qemu-io takes one command per wakeup: the next waits for the answer.
echo "read -P 0x5a 1M 64k" >&3
wait_for 10 "the held client's read" grep -q "read 65536/65536 bytes at offset 1048576" a.out
echo "write -P 0x5b 2M 4k" >&3
wait_for 10 "the held client's write" grep -q "wrote 4096/4096 bytes at offset 2097152" a.out
! grep -qi "fail" a.out || fail "the held client: $(cat a.out)"
exec 3>&- # EOF: qemu-io flushes and quits
wait "$apid" || fail "the unix client failed: $(cat a.out)"
wait_for 10 "1 NBD client in the status" clients_are 1
refused 1
exec 4>&-
wait "$bpid" || fail "the TCP client failed: $(cat b.out)"
wait_for 10 "0 NBD clients in the status" clients_are 0
wb-message vol remove >out.txt || fail "remove with no client connected"
wait_exit 0 "remove"
no_leftovers vol
grep -q 'msg="volume closed cleanly"' "$WB_LOG" || fail "remove did not close the volume cleanly"
echo "figure: remove refused with 2 then 1 NBD clients connected (unix + TCP), accepted at 0; wb-create exit 0"

note "B: SIGHUP is a clean stop"
wb_start vol backing.img cache.img
qemu-io -f raw "$uri" -c "write -P 0x61 3M 64k" -c flush >/dev/null || fail "write"
rm -f c.in
mkfifo c.in
qemu-io -t writeback -f raw "$uri" <c.in >c.out 2>&1 &
cpid=$!
wb_defer "kill_ours $cpid qemu-io"
exec 3>c.in
echo "write -P 0x62 5M 8k" >&3
wait_for 10 "the unflushed write" grep -q "wrote 8192/8192 bytes at offset 5242880" c.out
ram=$(status_field vol '.ram_buffer_bytes // 0')
[ "$ram" -gt 0 ] || fail "the unflushed write is not in the RAM buffer"
kill -HUP "$WB_PID"
wait_exit 0 "SIGHUP"
exec 3>&-
wait "$cpid" || true # its connection was closed under it
grep -q 'msg="stopping cleanly.*signal=hangup' "$WB_LOG" || fail "SIGHUP did not start a clean stop: $(cat "$WB_LOG")"
grep -q 'msg="volume closed cleanly"' "$WB_LOG" || fail "SIGHUP: no clean close"
no_leftovers vol
check_cache "SIGHUP"
wb_start vol backing.img cache.img
qemu-io -f raw "$uri" -c "read -P 0x61 3M 64k" -c "read -P 0x62 5M 8k" >qio.out || fail "after SIGHUP and a restart: $(cat qio.out)"
! grep -qi "fail" qio.out || fail "after SIGHUP and a restart: $(cat qio.out)"
wb_stop
echo "figure: SIGHUP: exit 0, $ram bytes of RAM buffer written, flushed and unflushed writes read back"

note "B2: under nohup SIGHUP is ignored"
export WB_SIGNALS=--ignore-signal=HUP
wb_start vol backing.img cache.img
unset WB_SIGNALS
kill -HUP "$WB_PID"
sleep 1
kill -0 "$WB_PID" 2>/dev/null || fail "SIGHUP stopped a wb-create started with SIGHUP ignored (nohup)"
! grep -q stopping "$WB_LOG" || fail "SIGHUP under nohup started a stop"
qemu-io -f raw "$uri" -c "read -P 0x61 3M 64k" >/dev/null || fail "read under nohup after SIGHUP"
wb_stop

note "C: timeout 5 wb-create"
runs=8 dups=0
for ((i = 1; i <= runs; i++)); do
	log=$WB_WORK/timeout.$i.log
	timeout 5 wb-create vol backing.img cache.img 2>"$log" &
	tpid=$!
	wb_defer "kill_ours $tpid timeout"
	wait_for 20 "wb-create under timeout (run $i) to be ready" grep -q ready "$log"
	child=$(jq -r .pid "$WB_RUN_DIR/vol.json")
	wb_defer "kill_ours $child wb-create"
	qemu-io -f raw "$uri" -c "write -P $((0x70 + i)) $((10 + i))M 64k" -c flush >/dev/null || fail "run $i: write"
	rc=0
	wait "$tpid" || rc=$?
	# timeout waits for its child: wb-create is gone too.
	[ "$rc" -eq 124 ] || { cat "$log" >&2; fail "run $i: timeout exited $rc, want 124"; }
	! kill -0 "$child" 2>/dev/null || fail "run $i: wb-create outlived timeout"
	no_panic "$log"
	if grep -q "second signal:" "$log"; then
		cat "$log" >&2
		fail "run $i: timeout's duplicate SIGTERM was taken for a second signal"
	fi
	grep -q 'msg="stopping cleanly.*signal=terminated' "$log" || fail "run $i: no clean stop begun: $(cat "$log")"
	grep -q 'msg="volume closed cleanly"' "$log" || fail "run $i: no clean close: $(cat "$log")"
	if grep -q "signal ignored: a duplicate" "$log"; then dups=$((dups + 1)); fi
	no_leftovers vol
	check_cache "timeout run $i"
done
wb_start vol backing.img cache.img
for ((i = 1; i <= runs; i++)); do
	qemu-io -f raw "$uri" -c "read -P $((0x70 + i)) $((10 + i))M 64k" >qio.out || fail "the write of timeout run $i is lost: $(cat qio.out)"
done
wb_stop
echo "figure: timeout 5 wb-create x$runs: exit 124 and a clean stop each time, duplicate SIGTERM received and ignored in $dups runs, $runs flushed writes read back"

note "D: a second signal during a held-up stop exits at once"
cat >stall.py <<'EOF'
# stall.py SOCKET EXPORT: an NBD client that sends 8 READs of 4 MiB and
# never reads the replies, so the server's replies block and a clean stop
# waits for them (up to its 5 s bound). Prints "sent" once they are out.
import socket, struct, sys, time

s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])

def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            sys.exit("server closed the connection")
        b += c
    return b

recv(18)  # NBDMAGIC IHAVEOPT handshake-flags
s.sendall(struct.pack(">I", 1 | 2))  # NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES
name = sys.argv[2].encode()
data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)  # NBD_OPT_GO
while True:
    _, _, typ, n = struct.unpack(">QIII", recv(20))
    recv(n)
    if typ == 1:  # NBD_REP_ACK
        break
    if typ & 0x80000000:
        sys.exit("NBD_OPT_GO refused")
for i in range(8):  # NBD_CMD_READ, 4 MiB each
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, i << 22, 4 << 20))
print("sent", flush=True)
time.sleep(300)
EOF
wb_start vol backing.img cache.img
qemu-io -f raw "$uri" -c "write -P 0x7f 7M 64k" -c flush >/dev/null || fail "write"
python3 stall.py "$(wb_sock vol)" vol >stall.out 2>&1 &
spid=$!
wb_defer "kill_ours $spid stall.py"
wait_for 10 "the stalling client's reads" grep -q sent stall.out
kill -TERM "$WB_PID"
wait_for 10 "the stop to begin" grep -q 'msg="stopping cleanly' "$WB_LOG"
sleep 1.5
# Without a held-up stop this leg would prove nothing.
kill -0 "$WB_PID" 2>/dev/null || fail "the stop was over within 1.5 s: the stalling client did not hold it up"
t0=$(date +%s%N)
kill -TERM "$WB_PID"
wait_exit 1 "a second SIGTERM"
ms=$((($(date +%s%N) - t0) / 1000000))
grep -q "second signal: exiting without a clean stop" "$WB_LOG" || fail "no second-signal line: $(cat "$WB_LOG")"
! grep -q 'msg="volume closed cleanly"' "$WB_LOG" || fail "the stop finished before the second signal"
[ "$ms" -lt 1500 ] || fail "wb-create took ${ms} ms to exit after the second signal"
kill_ours "$spid" stall.py
wait "$spid" 2>/dev/null || true
rc=0
wb-check cache.img >check.txt 2>&1 || rc=$?
# 0 consistent, 1 only a torn tail (what a crash may leave).
[ "$rc" -le 1 ] || { cat check.txt >&2; fail "wb-check after the second signal: exit $rc"; }
wb_start vol backing.img cache.img # the stale sockets and state file are replaced
qemu-io -f raw "$uri" -c "read -P 0x7f 7M 64k" >qio.out || fail "the flushed write is lost after the second signal: $(cat qio.out)"
wb_stop
echo "figure: second SIGTERM 1.5 s into a held-up stop: exit 1 within ${ms} ms (polled every 0.1 s), wb-check $rc, the log replayed"

note "E: SIGPIPE"
rm -f err.fifo
mkfifo err.fifo
grep -m1 -q ready <err.fifo & # the log's reader goes away after "ready"
rpid=$!
WB_LOG=$WB_WORK/epipe.note
echo "(wb-create's standard error went to a pipe whose reader had gone)" >"$WB_LOG"
wb-create vol backing.img cache.img -v 2>err.fifo &
WB_PID=$!
wb_defer "kill_ours $WB_PID wb-create; wait $WB_PID"
wait "$rpid" || fail "wb-create -v never logged ready"
# Each connection now logs (debug) into the closed pipe.
for i in 1 2 3; do
	qemu-io -f raw "$uri" -c "write -P 0x66 $((8 + i))M 4k" -c flush >/dev/null || fail "write $i with the log pipe closed"
done
kill -0 "$WB_PID" 2>/dev/null || fail "wb-create died writing its log to a closed pipe"
python3 - "$WB_RUN_DIR/vol.ctl" <<'EOF'
# Control clients that ask and hang up without reading the answers.
import socket, sys
for _ in range(50):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall(b'{"op":"status"}\n' * 64)
    s.close()
EOF
kill -0 "$WB_PID" 2>/dev/null || fail "wb-create died when control clients hung up"
[ "$(status_field vol .name)" = vol ] || fail "status after the hang-ups"
kill -PIPE "$WB_PID"
[ "$(status_field vol .name)" = vol ] || fail "status after kill -PIPE"
wb_stop
no_leftovers vol
check_cache "the SIGPIPE leg"
wb_start vol backing.img cache.img
qemu-io -f raw "$uri" -c "read -P 0x66 9M 4k" -c "read -P 0x66 11M 4k" -c "read -P 0x5b 2M 4k" >qio.out || fail "after the SIGPIPE leg: $(cat qio.out)"
wb_stop
echo "figure: SIGPIPE: 3 logged connections into a closed log pipe, 50 control hang-ups, kill -PIPE: still serving, clean stop"
