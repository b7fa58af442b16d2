#!/usr/bin/env bash
# 23: BACKING on the network (issue 15): wb-create's own NBD client talks to
# a real server, no nbdfuse hop. Servers: nbdkit memory, qemu-nbd on a raw
# file, and nbdkit with --tls=require and openssl-made certificates over
# nbds://. In each: data written through the volume (nbdcopy), flushed, a
# clean stop, wb-check --writeback to the URI, and the export alone then
# equals what the volume served (nbdcopy + cmp). The cache records the URI
# as its binding, without TLS parameters.
# Fault leg: the backing nbdkit (file plugin, slowed by its delay filter) is
# killed during writeback and restarted 7 s later on the same socket over
# the same file. While it is down, cached data is served, a read of
# uncached data fails with EIO within the request timeout (--backing-timeout
# 3s), wb-status says the backing device is unreachable, and writes land in
# the cache; once it is back, writeback resumes by
# itself and nothing is lost. Then SIGTERM during an outage: the engine
# stops cleanly (exit 0) within seconds, and a restart begun while the
# server is still down waits for it (a warning, then ready once it is up
# 2 s later) and serves every write.
# Last, nbdkit's error filter between the engine and a reachable server:
# EIO reaches only reads of uncached data, writeback holds last_writeback_id
# while writes fail, and no acknowledged write is lost.
. "$WB_TESTING/lib.sh"

vol=$(wb_uri vol)
size=$((64 << 20))
head -c $((40 << 20)) /dev/urandom >data.bin

# leg NAME URI [wb-create flags]: the round trip through one server.
leg() {
	local name=$1 uri=$2
	shift 2
	note "$name: $uri"
	sparse "cache-$name.img" 16M
	wb_start vol "$uri" "cache-$name.img" --reformat "$@"
	nbdcopy --flush data.bin "$vol" || fail "$name: nbdcopy to the volume"
	qemu-io -f raw -c "write -P 0x5a 50M 3M" "$vol" >/dev/null || fail "$name: qemu-io write"
	nbdcopy "$vol" "expect-$name.img" || fail "$name: nbdcopy from the volume"
	dirty=$(status_field vol .nr_dirty_cache_blocks)
	conns=$(grep -o 'msg="backing device on the network".*conns=[0-9]*' "$WB_LOG" | grep -o '[0-9]*$') || fail "$name: no connection count logged"
	wb_stop
	wb-check --json "cache-$name.img" | jq -er '.binding' >"binding-$name.txt" || fail "$name: no binding"
	grep -q "tls" "binding-$name.txt" && fail "$name: the binding keeps TLS parameters: $(cat "binding-$name.txt")"
	wb-check --writeback "$uri" "cache-$name.img" || fail "$name: wb-check --writeback $uri"
	nbdcopy "$uri" "export-$name.img" || fail "$name: nbdcopy from the export"
	cmp "export-$name.img" "expect-$name.img" || fail "$name: the export differs from the volume"
	echo "figure: $name: $conns connection(s), $dirty dirty cache blocks at stop, written back offline; export equals the volume"
}

# nbdkit memory.
nbdkit -f -U "$WB_WORK/mem.sock" memory "$size" &
wb_defer "kill_ours $! nbdkit"
wait_for 10 "nbdkit memory" test -S mem.sock
leg memory "nbd+unix:///?socket=$WB_WORK/mem.sock"

# qemu-nbd on a raw file (persistent: wb-create, wb-check and nbdcopy each
# connect).
sparse qemu.img "$size"
qemu-nbd --fork --persistent --shared=8 --pid-file="$WB_WORK/qemu-nbd.pid" --socket="$WB_WORK/qemu.sock" -f raw qemu.img ||
	fail "qemu-nbd"
wb_defer "kill_ours \$(cat $WB_WORK/qemu-nbd.pid) qemu-nbd"
leg qemu-nbd "nbd+unix:///?socket=$WB_WORK/qemu.sock"
cmp -n $((40 << 20)) qemu.img data.bin || fail "qemu-nbd: the file behind the export lacks the data"

# Debian's nbd-server on a file, on a unix socket (and loopback TCP, which
# its configuration cannot leave out).
sparse nbd-server.img "$size"
nport=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >nbd-server.conf <<EOF
[generic]
    user = root
    group = root
    unixsock = $WB_WORK/nbd-server.sock
    listenaddr = 127.0.0.1
    port = $nport
[disk]
    exportname = $WB_WORK/nbd-server.img
    flush = true
    fua = true
    trim = true
EOF
# NB: -d (no daemon) serves one connection only: it forks, with a pid file.
nbd-server -C "$WB_WORK/nbd-server.conf" -p "$WB_WORK/nbd-server.pid" 2>nbd-server.log || fail "nbd-server"
wb_defer "kill_ours \$(cat $WB_WORK/nbd-server.pid) nbd-server"
wait_for 10 "nbd-server" test -S nbd-server.sock
leg nbd-server "nbd+unix:///disk?socket=$WB_WORK/nbd-server.sock"
cmp -n $((40 << 20)) nbd-server.img data.bin || fail "nbd-server: the file behind the export lacks the data"

# nbdkit with TLS required, over TCP.
mkdir -p pki server client
ossl() { openssl "$@" >/dev/null 2>&1 || fail "openssl $1"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=wb-test-CA \
	-keyout pki/ca-key.pem -out pki/ca-cert.pem
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost -keyout server/server-key.pem -out pki/server.csr
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >pki/server.ext
ossl x509 -req -in pki/server.csr -CA pki/ca-cert.pem -CAkey pki/ca-key.pem -CAcreateserial -days 2 \
	-extfile pki/server.ext -out server/server-cert.pem
cp pki/ca-cert.pem server/ && cp pki/ca-cert.pem client/
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
nbdkit -f -i 127.0.0.1 -p "$port" --tls=require --tls-certificates="$WB_WORK/server" memory "$size" &
wb_defer "kill_ours $! nbdkit"
wait_for 10 "nbdkit with TLS" bash -c "nbdinfo --size 'nbds://localhost:$port/?tls-certificates=$WB_WORK/client'"
if wb-check --backing "nbd://localhost:$port/" data.bin >plain.out 2>&1; then
	fail "a plain connection to a TLS server was accepted"
fi
grep -q "nbds://" plain.out || { cat plain.out; fail "the TLS refusal does not say to use nbds://"; }
leg tls "nbds://localhost:$port/?tls-certificates=$WB_WORK/client"

# --- fault leg ---
note "fault: backing server killed during writeback, restarted 7 s later"
sparse back.img "$size"
bsock=$WB_WORK/back.sock
serve_back() {
	rm -f "$bsock"
	nbdkit -f -U "$bsock" --filter=delay file back.img delay-write=20ms &
	BACK_PID=$!
	wb_defer "kill_ours $BACK_PID nbdkit"
	wait_for 10 "backing nbdkit" test -S "$bsock"
}
serve_back
sparse cache.img 32M
buri="nbd+unix:///?socket=$bsock"
# writeback_threshold 0: only forced writeback (drop_caches, a full ring).
wb_start vol "$buri" cache.img --reformat --backing-timeout 3s writeback_threshold 0
nbdcopy --flush data.bin "$vol" || fail "fault: nbdcopy to the volume"
timeout 300 wb-message vol drop_caches >drop.out 2>&1 &
drop=$!
wait_for 20 "writeback to start" bash -c "[ \$(wb-status --json vol | jq -er .nr_dirty_cache_blocks) -lt $((40 << 20 >> 12)) ]"
kill -KILL "$BACK_PID"
down=$(date +%s%3N)
# Cached data is served; uncached data fails within the timeout; writes land.
qemu-io -f raw -c "read -P 0 60M 64k" "$vol" >uncached.out 2>&1 && fail "a read of uncached data succeeded with the backing server down"
took=$(($(date +%s%3N) - down))
grep -qi "input/output error" uncached.out || { cat uncached.out; fail "the uncached read did not fail with EIO"; }
echo "figure: uncached read with the backing server down failed with EIO after ${took} ms (--backing-timeout 3s)"
[ "$took" -lt 10000 ] || fail "the uncached read took ${took} ms"
why=$(status_field vol .backing_unreachable) && [ -n "$why" ] || fail "wb-status does not say the backing device is unreachable"
wb-status vol >summary.out || fail "wb-status"
grep -q "backing device unreachable" summary.out || fail "wb-status's summary does not say the backing device is unreachable"
echo "figure: wb-status with the backing server down: backing_unreachable: $why"
qemu-io -f raw -c "write -P 0xc3 44M 2M" "$vol" >/dev/null || fail "a write with the backing server down failed"
qemu-io -f raw -c "read -P 0xc3 44M 2M" "$vol" >/dev/null || fail "cached data not served with the backing server down"
kill -0 "$drop" || fail "drop_caches ended while the backing server was down: $(cat drop.out)"
sleep 7
serve_back
wait "$drop" || fail "drop_caches after the backing server returned: $(cat drop.out)"
[ "$(status_field vol .nr_dirty_cache_blocks)" -eq 0 ] || fail "dirty blocks after drop_caches"
[ "$(wb-status --json vol | jq -r '.backing_unreachable // ""')" = "" ] || fail "the backing device still said unreachable once back"
grep -q "nbd connection restored" "$WB_LOG" || fail "no reconnect logged"
grep -q "writeback failed, will retry" "$WB_LOG" || fail "writeback never failed: the server was not killed during writeback"
nbdcopy "$vol" expect.img || fail "nbdcopy from the volume"
cmp -n $((40 << 20)) expect.img data.bin || fail "the data written before the outage differs"
qemu-io -f raw -c "read -P 0xc3 44M 2M" "$vol" >/dev/null || fail "the write made during the outage is missing"
wb_stop
cmp back.img expect.img || fail "after the outage, the backing file differs from the volume"
echo "figure: writeback resumed after the outage; the backing file equals the volume"

note "fault: SIGTERM while the backing server is down"
wb_start vol "$buri" cache.img --backing-timeout 3s writeback_threshold 0
qemu-io -f raw -c "write -P 0x7e 8M 4M" "$vol" >/dev/null || fail "write"
kill -KILL "$BACK_PID"
timeout 120 wb-message vol drop_caches >/dev/null 2>&1 &
drop=$!
sleep 1
qemu-io -f raw -c "write -P 0x7f 20M 1M" "$vol" >/dev/null || fail "a write with the backing server down failed"
start=$(date +%s%3N)
kill -TERM "$WB_PID"
wait_for 30 "wb-create to exit after SIGTERM during the outage" bash -c "! kill -0 $WB_PID"
took=$(($(date +%s%3N) - start))
rc=0
wait "$WB_PID" || rc=$?
wait "$drop" 2>/dev/null || true
no_panic "$WB_LOG"
echo "figure: SIGTERM with the backing server down: exit $rc after ${took} ms"
[ "$rc" -eq 0 ] || { tail -n 5 "$WB_LOG"; fail "SIGTERM during the outage: exit $rc"; }
[ "$took" -lt 10000 ] || fail "SIGTERM during the outage took ${took} ms"

note "start while the backing server is down: wb-create waits for it (--backing-timeout)"
rm -f "$bsock"
(sleep 2 && exec nbdkit -f -U "$bsock" --filter=delay file back.img delay-write=20ms) &
BACK_PID=$!
wb_defer "kill_ours $BACK_PID nbdkit"
start=$(date +%s%3N)
wb_start vol "$buri" cache.img --backing-timeout 15s
took=$(($(date +%s%3N) - start))
grep -q "unreachable; trying again" "$WB_LOG" || { cat "$WB_LOG"; fail "no warning while the start waited for the backing server"; }
[ "$took" -ge 1500 ] || fail "ready after ${took} ms, before the backing server listened"
echo "figure: started with the backing server down; ready ${took} ms after the start, the server up 2 s in"
qemu-io -f raw -c "read -P 0x7e 8M 4M" -c "read -P 0x7f 20M 1M" -c "read -P 0xc3 44M 2M" "$vol" >/dev/null ||
	fail "after a stop during the outage, a write is lost"
wb_stop
wb-check --writeback "$buri" cache.img || fail "wb-check --writeback"
qemu-io -f raw -c "read -P 0x7e 8M 4M" -c "read -P 0x7f 20M 1M" "nbd+unix:///?socket=$bsock" >/dev/null ||
	fail "the backing export lacks the writes after wb-check --writeback"

note "fault: the server answers with EIO (nbdkit's error filter)"
sparse err.img "$size"
rm -f err.fail-read err.fail-write
nbdkit -f -U "$WB_WORK/err.sock" --filter=error file err.img error=EIO \
	error-pread-rate=100% error-pread-file="$WB_WORK/err.fail-read" \
	error-pwrite-rate=100% error-pwrite-file="$WB_WORK/err.fail-write" &
wb_defer "kill_ours $! nbdkit"
wait_for 10 "nbdkit with the error filter" test -S err.sock
euri="nbd+unix:///?socket=$WB_WORK/err.sock"
sparse cache-err.img 16M
wb_start vol "$euri" cache-err.img --reformat writeback_threshold 0
qemu-io -f raw -c "write -P 0x11 0 4M" "$vol" >/dev/null || fail "write"
touch err.fail-read err.fail-write
qemu-io -f raw -c "read -P 0x11 0 4M" "$vol" >/dev/null || fail "cached data not served while the server fails"
qemu-io -f raw -c "read 30M 64k" "$vol" >eio.out 2>&1 && fail "a read of uncached data succeeded while the server fails reads"
grep -qi "input/output error" eio.out || { cat eio.out; fail "the uncached read did not fail with EIO"; }
qemu-io -f raw -c "write -P 0x22 8M 1M" "$vol" >/dev/null || fail "a write failed while the server fails writes"
wid=$(status_field vol .last_writeback_id)
if timeout 5 wb-message vol drop_caches >/dev/null 2>&1; then fail "drop_caches succeeded while the server fails writes"; fi
[ "$(status_field vol .last_writeback_id)" = "$wid" ] || fail "last_writeback_id moved while the server fails writes"
[ "$(status_field vol .errors.writeback)" -gt 0 ] || fail "no writeback error counted"
rm -f err.fail-read err.fail-write
timeout 120 wb-message vol drop_caches || fail "drop_caches once the server recovered"
wb_stop
qemu-io -f raw -c "read -P 0x11 0 4M" -c "read -P 0x22 8M 1M" "$euri" >/dev/null || fail "the export lacks acknowledged writes after the errors"
echo "figure: server EIO: cached reads served, uncached reads EIO, writeback held at id $wid until the errors stopped, nothing lost"
