#!/usr/bin/env bash
# 22: writeboost as a service (issue 12). --version on all five commands,
# with the checkout's revision;
# wb-status --json is JSON with no volume ([], the note on stderr); usage
# errors exit 2 (16 for wb-check, as its man page says); a volume started
# from a writeboosttab line under a fake systemd (a unixgram NOTIFY_SOCKET
# read by python3) sends READY=1 only once its NBD socket accepts, runs
# with the line's tunables, again after a restart, writes its --pidfile and
# removes it at a clean stop, which sends STOPPING=1; make install into a
# DESTDIR lays out binaries, man pages (man -l renders each), the unit and
# the example table, and make uninstall takes them away again. /metrics
# (--metrics) shows the counters, dirty bytes, tunables, NBD requests by
# command and their latency histograms move; the
# binaries complete volume names, messages and tunables for the shell.
. "$WB_TESTING/lib.sh"
top=$(cd "$WB_TESTING/.." && pwd)
cmds=(wb-format-cache wb-create wb-status wb-message wb-check)

note "--version"
for c in "${cmds[@]}"; do
	out=$("$c" --version) || fail "$c --version exited $?"
	[[ "$out" == "$c "* ]] || fail "$c --version printed '$out'"
	# make build stamps the checkout's revision (the Makefile's LDFLAGS),
	# whatever GOFLAGS says about -buildvcs.
	if git -C "$top" rev-parse HEAD >/dev/null 2>&1; then
		[[ "$out" =~ \(rev\ [0-9a-f]{7,} ]] || fail "$c --version has no revision in a git checkout: '$out'"
	fi
done
echo "$out"

note "wb-status with no volume"
out=$(wb-status --json 2>err.txt) || fail "wb-status --json exited $?"
[ "$out" = "[]" ] && [ ! -s err.txt ] || fail "wb-status --json with no volume: stdout '$out', stderr '$(cat err.txt)'"
jq -e 'length == 0' <<<"$out" >/dev/null || fail "not a JSON array: $out"
out=$(wb-status 2>err.txt) || fail "wb-status exited $?"
[ -z "$out" ] && grep -qx "No volumes found" err.txt || fail "wb-status with no volume: stdout '$out', stderr '$(cat err.txt)'"

note "usage errors"
sparse backing.img 32M
sparse cache.img 8M
wb-format-cache -q cache.img
usage=0
# exits WANT COMMAND...: COMMAND exits WANT with one error line.
exits() {
	local want=$1 rc=0
	shift
	"$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" -eq "$want" ] || { cat err.txt >&2; fail "'$*' exited $rc, want $want"; }
	[ "$(grep -vc '^time=' err.txt)" -eq 1 ] || { cat err.txt >&2; fail "'$*': not one error line"; }
	usage=$((usage + 1))
}
exits 2 wb-status a/b
exits 2 wb-status --watch=-1 vol
exits 2 wb-message a/b flush
exits 2 wb-message vol writeback_threshold 101
exits 2 wb-message vol suspend
exits 2 wb-create a/b backing.img cache.img
exits 2 wb-create vol backing.img cache.img writeback_threshold 101
exits 2 wb-create vol backing.img cache.img writeback_threshold
exits 2 wb-create --listen udp://x:1 vol backing.img cache.img
exits 2 wb-create --tab nosuch.tab vol
exits 2 wb-create --metrics http://:1 vol backing.img cache.img
exits 2 wb-format-cache --bogus cache.img
exits 16 wb-check --backing 12X cache.img
exits 16 wb-check --segment 999999 cache.img

note "a volume from its writeboosttab line, under a fake systemd"
cat >tab <<EOF
# NAME BACKING CACHE [KEY VALUE]...
other  /dev/null  /dev/null
vol    $WB_WORK/backing.img  $WB_WORK/cache.img  writeback_threshold 0 update_sb_record_interval 37 read_cache_threshold 9  # no background writeback: dirty data stays
EOF
# The service manager's end of NOTIFY_SOCKET: log each datagram; at READY=1
# connect to the NBD socket at once and log whether it accepted.
cat >fake-systemd.py <<'EOF'
import socket, sys
path, nbd, log = sys.argv[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
with open(log, "a", buffering=1) as out:
    while True:
        msg = s.recv(4096).decode()
        out.write(msg.replace("\n", " | ") + "\n")
        if "READY=1" in msg:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                c.connect(nbd)
                out.write("nbd accepted at READY=1\n")
            except OSError as e:
                out.write("nbd refused at READY=1: %s\n" % e)
            c.close()
EOF
: >notify.log
python3 fake-systemd.py "$WB_WORK/notify.sock" "$(wb_sock vol)" notify.log &
fake=$!
wb_defer "kill $fake"
wait_for 10 "the fake notify socket" test -S notify.sock

# start_from_tab N: wb-create --tab under the fake systemd; wait for READY=1.
start_from_tab() {
	WB_LOG=$WB_WORK/wb-create.tab.$1.log
	NOTIFY_SOCKET=$WB_WORK/notify.sock WB_TAB=$WB_WORK/tab wb-create --tab vol --pidfile "$WB_WORK/wb.pid" --metrics tcp://127.0.0.1:0 2>"$WB_LOG" &
	WB_PID=$!
	wb_defer "kill_ours $WB_PID wb-create; wait $WB_PID"
	wait_for 60 "READY=1 number $1" bash -c "[ \$(grep -c '^READY=1' notify.log) -ge $1 ]"
	[ "$(grep -c "nbd accepted at READY=1" notify.log)" -ge "$1" ] || { cat notify.log; fail "READY=1 before the NBD socket accepted"; }
	[ "$(cat wb.pid)" = "$WB_PID" ] || fail "pidfile holds '$(cat wb.pid)', want $WB_PID"
	[ "$(status_field vol .tunables.update_sb_record_interval)" = 37 ] && [ "$(status_field vol .tunables.read_cache_threshold)" = 9 ] ||
		fail "start $1: the table's tunables are not in effect: $(wb-status --json vol | jq -c .tunables)"
}
start_from_tab 1
grep -q "STATUS=opening" notify.log || fail "no STATUS= before READY=1: $(cat notify.log)"
murl=$(grep -o 'url=http://[^ ]*/metrics' "$WB_LOG" | cut -d= -f2)
[ -n "$murl" ] || fail "no metrics url logged"
# metric SERIES: its value in one scrape of /metrics.
metric() {
	python3 -c 'import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
print(next(l.rsplit(" ", 1)[1] for l in body.splitlines() if l.startswith(sys.argv[2] + " ")))' "$murl" "$1"
}
writes='writeboost_io_total{op="write",result="miss",size="full",volume="vol",where="cache"}'
[ "$(metric "$writes")" = 0 ] && [ "$(metric 'writeboost_dirty_bytes{volume="vol"}')" = 0 ] || fail "metrics not 0 on a fresh volume"
qemu-io -f raw "$(wb_uri vol)" -c "write -P 7 0 64k" >/dev/null || fail "write"
[ "$(metric "$writes")" = 16 ] || fail "writes: $(metric "$writes") in /metrics, want 16"
[ "$(metric 'writeboost_dirty_bytes{volume="vol"}')" = 65536 ] || fail "dirty_bytes in /metrics: $(metric 'writeboost_dirty_bytes{volume="vol"}')"
[ "$(metric 'writeboost_tunable{name="update_sb_record_interval",volume="vol"}')" = 37 ] || fail "tunable not in /metrics"
# The NBD requests by command, and the latency histograms, move too.
[ "$(metric 'writeboost_nbd_bytes_total{command="write",volume="vol"}')" = 65536 ] || fail "nbd write bytes: $(metric 'writeboost_nbd_bytes_total{command="write",volume="vol"}'), want 65536"
[ "$(metric 'writeboost_nbd_request_duration_seconds_count{command="write",volume="vol"}')" -ge 1 ] || fail "no write in the latency histogram"
reads0=$(metric 'writeboost_nbd_request_duration_seconds_count{command="read",volume="vol"}')
qemu-io -f raw "$(wb_uri vol)" -c "read -P 7 0 64k" >/dev/null || fail "read"
[ "$(metric 'writeboost_nbd_request_duration_seconds_count{command="read",volume="vol"}')" -gt "$reads0" ] || fail "no read in the latency histogram"
[ "$(metric 'writeboost_nbd_bytes_total{command="read",volume="vol"}')" -ge 65536 ] || fail "nbd read bytes: $(metric 'writeboost_nbd_bytes_total{command="read",volume="vol"}')"
[ "$(metric 'writeboost_nbd_errors_total{command="write",volume="vol"}')" = 0 ] || fail "nbd write errors"
metric 'writeboost_replay_seconds{volume="vol"}' | grep -Eq '^[0-9.e+-]+$' || fail "no replay_seconds in /metrics"
[ "$(status_field vol .dirty_bytes)" -gt 0 ] || fail "dirty_bytes 0 after a write"
[ "$(status_field vol .schema)" = 1 ] || fail "schema not 1"

note "shell completion"
# What bash's complete -C asks of the binary (dist/completion/writeboost.bash).
comp() { COMP_LINE="$*" "${1}"; }
[ "$(comp wb-status v)" = vol ] || fail "wb-status does not complete the running volume: $(comp wb-status v)"
[ "$(comp wb-message vol drop)" = drop_caches ] || fail "wb-message does not complete messages: $(comp wb-message vol drop)"
[ "$(WB_TAB=$WB_WORK/tab comp wb-create vo)" = vol ] || fail "wb-create does not complete names from the table"
comp wb-create vol backing.img cache.img writeback | grep -qx writeback_threshold || fail "wb-create does not complete tunables"
bash -c ". '$top/dist/completion/writeboost.bash' && complete -p wb-create" | grep -q -- "-C 'wb-create' wb-create" || fail "the bash completion does not register"

wb_stop
grep -q "STOPPING=1" notify.log || fail "no STOPPING=1 at the clean stop: $(cat notify.log)"
[ ! -e wb.pid ] || fail "pidfile left after a clean stop"

note "restart from the table: same tunables, same data"
start_from_tab 2
qemu-io -f raw "$(wb_uri vol)" -c "read -P 7 0 64k" >/dev/null || fail "data lost across the restart"
wb_stop
[ ! -e wb.pid ] || fail "pidfile left after the second clean stop"
notes=$(grep -c . notify.log)
cat notify.log

note "make install / uninstall into a DESTDIR"
dest=$WB_WORK/dest
make -s -C "$top" install DESTDIR="$dest" PREFIX=/usr >make.log 2>&1 || { cat make.log; fail "make install"; }
for c in "${cmds[@]}"; do
	[ -x "$dest/usr/sbin/$c" ] || fail "$c not installed"
	page=$dest/usr/share/man/man8/$c.8
	[ -f "$page" ] || fail "man page $c.8 not installed"
	MANWIDTH=80 man -l "$page" 2>man.err | grep -q "^NAME" || { cat man.err; fail "man -l $page renders nothing"; }
done
unit=$dest/usr/lib/systemd/system/writeboost@.service
for c in "${cmds[@]}"; do
	[ -f "$dest/usr/share/bash-completion/completions/$c" ] || fail "no bash completion for $c"
done
[ -f "$dest/usr/share/zsh/site-functions/_writeboost" ] || fail "no zsh completion"
grep -qx "ExecStart=/usr/sbin/wb-create --tab /etc/writeboosttab %i" "$unit" || fail "unit not pointed at /usr/sbin: $(grep ExecStart "$unit")"
[ -f "$dest/etc/writeboosttab" ] && [ -f "$dest/usr/share/doc/writeboost/writeboosttab.example" ] || fail "example table not installed"
installed=$(find "$dest" -type f | wc -l)
echo "keep me" >>"$dest/etc/writeboosttab"
make -s -C "$top" install DESTDIR="$dest" PREFIX=/usr >make.log 2>&1 || { cat make.log; fail "make install (again)"; }
grep -q "keep me" "$dest/etc/writeboosttab" || fail "make install overwrote the volume table"
make -s -C "$top" uninstall DESTDIR="$dest" PREFIX=/usr >make.log 2>&1 || { cat make.log; fail "make uninstall"; }
left=$(find "$dest" -type f)
[ "$left" = "$dest/etc/writeboosttab" ] || fail "make uninstall left: $left"

echo "figure: service: --version on ${#cmds[@]} commands, $usage usage errors with their exit status, 2 starts from writeboosttab with its tunables, $notes sd_notify messages (READY=1 after the NBD socket accepted, STOPPING=1), pidfile written and removed, /metrics counters, dirty bytes, NBD requests and latency histograms moved with qemu-io writes and reads, 4 completions, $installed files installed and uninstalled"
