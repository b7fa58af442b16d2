#!/usr/bin/env bash
# 06: a clean stop keeps every byte. Write a mix of data (some of it only in
# the RAM buffer at the time of the stop), take an nbdcopy image, SIGTERM,
# start again without --reformat: the volume must be byte for byte the same,
# twice over. Then SIGTERM under load: 4 connections with 8 writes in flight
# each (tools/wbtorture), no FLUSH at all; the engine must stop within
# seconds, and after a restart every acknowledged write must be there (a
# clean stop seals and writes the RAM buffer), in-flight ones whole or not.
. "$WB_TESTING/lib.sh"

sparse backing.img 32M
sparse cache.img 12M
head -c $((20 << 20)) /dev/urandom >seed.img
wb_start vol backing.img cache.img --reformat
uri=$(wb_uri vol)

nbdcopy seed.img "$uri" || fail "nbdcopy in"
# Small writes last: they sit in the RAM buffer, not yet in a segment.
qemu-io -f raw "$uri" -c "write -P 0x5a 4096 512" -c "write -P 0xa5 30000000 3000" \
	-c "write -z 8192 8192" >/dev/null || fail "qemu-io writes"
nbdcopy "$uri" before.img || fail "nbdcopy out"

for round in 1 2; do
	note "restart $round"
	wb_stop
	[ ! -e "$WB_RUN_DIR/vol.json" ] || fail "state file left after a clean stop"
	wb_start vol backing.img cache.img
	rm -f after.img
	nbdcopy "$uri" after.img || fail "nbdcopy out after restart $round"
	cmp before.img after.img || fail "volume changed across restart $round"
done
wb_stop

note "SIGTERM with clients connected and writes in flight"
sparse backing2.img 32M
sparse cache2.img 12M
wb_start vol backing2.img cache2.img --reformat
torture=$(wb_torture)
"$torture" init --state state --sectors $((32 << 11))
"$torture" write --state state --uri "$uri" --flush-pct 0 --fua-pct 0 \
	--kill-pid "$WB_PID" --kill-signal TERM --kill-min 500ms --kill-max 1500ms ||
	fail "write run under SIGTERM"
wait_for 10 "wb-create to stop after SIGTERM with clients connected" bash -c "! kill -0 $WB_PID"
rc=0
wait "$WB_PID" || rc=$?
[ "$rc" -eq 0 ] || { tail -n 20 "$WB_LOG"; fail "wb-create exited $rc after SIGTERM under load"; }
no_panic "$WB_LOG"
wb_start vol backing2.img cache2.img
"$torture" verify --strict --state state --uri "$uri" || fail "an acknowledged write was lost by a clean stop"
wb_stop
rm -f seed.img before.img after.img
echo "figure: restart 2 clean restarts, 32 MiB identical; SIGTERM under load kept every acknowledged write"
