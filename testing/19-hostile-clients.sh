#!/usr/bin/env bash
# 19: the NBD server's memory is bounded under hostile clients (issue 18).
# 8 connections each send four 32 MiB READs and never read a reply, so the
# server's reply writes block and hold the read buffers. Before the memory
# budget each connection could pin 128 MiB (RSS 1138 MiB with 8, and it
# stayed there after they closed). Now: one budget for the server (64 MiB by
# default, the last quarter kept for light connections), so a normal client
# doing verified I/O (qemu-io write -P / read -P) keeps its latency under a
# second and wb-create's RSS stays under a stated bound; the stalled
# connections are closed after --stall-timeout (one at a time: only the one
# holding a READ has a reply to stall on) and after they disconnect RSS
# drops back. Then a
# flood of connections beyond --max-connections is refused at accept, with
# a log line, and the volume keeps serving.
. "$WB_TESTING/lib.sh"

sparse backing.img 256M
sparse cache.img 64M
wb_start vol backing.img cache.img --reformat --stall-timeout 10s
sock=$(wb_sock vol)
rss() { awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$WB_PID/status"; }

# hostile.py N READS SIZE SECONDS: N connections, each negotiates the export
# and sends READS reads of SIZE bytes, reads nothing, and holds on.
cat >hostile.py <<'PY'
import socket, struct, sys, time
n, reads, size, secs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
path = sys.argv[5]
def recvn(s, k):
    b = b""
    while len(b) < k:
        c = s.recv(k - len(b))
        if not c:
            raise EOFError
        b += c
    return b
conns = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    recvn(s, 18)
    s.sendall(struct.pack(">I", 3))
    name = b"vol"
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    s.sendall(struct.pack(">QII", 0x49484156454F5054, 7, len(data)) + data)
    while True:  # option replies up to the ACK
        magic, opt, typ, ln = struct.unpack(">QIII", recvn(s, 20))
        recvn(s, ln)
        if typ == 1:
            break
        if typ & 0x80000000:
            sys.exit("NBD_OPT_GO refused: %#x" % typ)
    for r in range(reads):
        s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, r, 0, size))
    conns.append(s)
print("hostile: %d connections, %d x %d-byte READs each, not reading" % (n, reads, size), flush=True)
time.sleep(secs)
PY

# flood.py N: N connections at once; counts those closed at once, without
# the greeting, and those greeted; holds them a moment.
cat >flood.py <<'PY'
import socket, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socks.append(s)
greeted = refused = 0
for s in socks:
    s.settimeout(10)
    try:
        b = s.recv(18)
    except OSError:
        b = b""
    if b:
        greeted += 1
    else:
        refused += 1
print(greeted, refused)
PY

verified_io() { # verified_io OFFSET: write then read back 1 MiB; prints seconds
	local start end
	start=$(date +%s.%N)
	qemu-io -f raw -c "write -P 0x5a $1 1M" -c "read -P 0x5a $1 1M" "$(wb_uri vol)" >qio.out 2>&1 ||
		{ cat qio.out >&2; fail "verified I/O at $1"; }
	grep -q "Pattern verification failed" qio.out && fail "pattern mismatch at $1"
	end=$(date +%s.%N)
	awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'
}

verified_io 0 >/dev/null
rss0=$(rss)
note "RSS idle: $rss0 MiB"

python3 hostile.py 8 4 $((32 << 20)) 60 "$sock" &
hpid=$!
wb_defer "kill_ours $hpid hostile.py"
sleep 2
[ "$(status_field vol .nr_clients)" -ge 8 ] || fail "hostile clients not connected"

maxlat=0 maxrss=$(rss)
for i in 1 2 3 4 5 6 7 8; do
	lat=$(verified_io $((i << 20)))
	echo "verified I/O $i: ${lat}s"
	r=$(rss)
	maxrss=$((r > maxrss ? r : maxrss))
	maxlat=$(awk -v a="$lat" -v b="$maxlat" 'BEGIN { print (a > b ? a : b) }')
	sleep 0.3
done
note "with 8 stalled connections: normal client max latency ${maxlat}s, RSS max ${maxrss} MiB"
awk -v l="$maxlat" 'BEGIN { exit !(l < 1.0) }' || fail "normal client latency ${maxlat}s, want under 1s"
# The bound: the idle process plus the budget (64 MiB), one oversized
# READ over it (32 MiB) and the runtime's slack (a GC cycle's garbage).
bound=$((rss0 + 192))
[ "$maxrss" -le "$bound" ] || fail "RSS $maxrss MiB with 8 stalled connections, bound $bound MiB"

# --stall-timeout closes a connection whose reply makes no progress: one at
# a time here, since only one of them at a time holds a 32 MiB READ (the
# others wait for the budget and have no reply to write yet). Two of them,
# then the clients disconnect, and the memory returns.
wait_for 40 "two stalled connections to be closed" \
	bash -c "[ \$(grep -c 'client stopped reading replies' '$WB_LOG') -ge 2 ]"
kill_ours $hpid hostile.py
wait $hpid 2>/dev/null || true
wait_for 30 "the hostile connections to be gone" bash -c "[ \$(wb-status --json vol | jq -r .nr_clients) -eq 0 ]"
wait_for 30 "RSS to drop back" bash -c "[ \$(awk '/^VmRSS:/ {print int(\$2 / 1024)}' /proc/$WB_PID/status) -le $((rss0 + 32)) ]"
rss1=$(rss)
note "RSS after the stalled connections closed: $rss1 MiB"
verified_io $((16 << 20)) >/dev/null

# A flood beyond --max-connections (64) is refused at accept, logged.
read -r greeted refused < <(python3 flood.py 80 "$sock")
note "flood of 80 connections: $greeted served, $refused refused"
[ "$greeted" -eq 64 ] && [ "$refused" -eq 16 ] || fail "flood: $greeted served, $refused refused; want 64 and 16"
grep -q 'connection refused: too many connections' "$WB_LOG" || fail "no log line for the refused connections"
wait_for 30 "the flood to be gone" bash -c "[ \$(wb-status --json vol | jq -r .nr_clients) -eq 0 ]"
verified_io $((20 << 20)) >/dev/null

wb_stop
echo "figure: 8 stalled connections x 4 x 32 MiB READs: normal client latency max ${maxlat}s (< 1s)"
echo "figure: wb-create RSS idle ${rss0} MiB, max ${maxrss} MiB with stalled clients (bound ${bound} MiB), ${rss1} MiB after they were closed"
echo "figure: flood of 80 connections: ${greeted} served, ${refused} refused (--max-connections 64)"
