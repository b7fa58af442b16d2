#!/usr/bin/env bash
# 21: a crash loop on an emulated hard disk (issue 18). The backing device
# is nbdkit's file plugin behind the HDD filters the bench uses (7 ms per
# request, one at a time), exposed as a file with nbdfuse; the cache is 6
# MiB (10 segments), so the ring fills and writers wait for writeback.
# wbtorture writes tagged sectors (one or two blocks, no FLUSH: full
# segments of scattered blocks, about 1.2 s each to write back) and
# SIGKILLs wb-create 2 s into each cycle; after every restart the whole region is verified (0 bad sectors).
# Writeback must make progress across cycles although no cycle lives long
# enough for a batch of nr_max_batched_writeback (32) scattered segments:
# batches are sized by time. Writers are never blocked longer than a bound.
# WB_CRASHLOOP_CYCLES sets the cycles (default 30).
. "$WB_TESTING/lib.sh"

cycles=${WB_CRASHLOOP_CYCLES:-30}
max_wait_bound=10 # seconds a write or flush may take
torture=$(wb_torture)

sparse backing.img 32M
sparse cache.img 6M
nbdkit -f -U "$WB_WORK/hdd.sock" --filter=noparallel --filter=delay file backing.img \
	serialize=all-requests wdelay=7ms rdelay=7ms &
wb_defer "kill_ours $! nbdkit"
wait_for 10 "nbdkit" test -S hdd.sock
fuse_attach "nbd+unix:///?socket=$WB_WORK/hdd.sock" hdd
backing=$WB_WORK/hdd/nbd
uri=$(wb_uri vol)

"$torture" init --state state --sectors $((32 << 11))
wb_start vol "$backing" cache.img --reformat
advanced=0 last=0 worst=0
for ((c = 1; c <= cycles; c++)); do
	out=$("$torture" write --state state --uri "$uri" --kill-pid "$WB_PID" \
		--kill-min 2s --kill-max 2s --conns 2 --depth 4 --flush-pct 0 --fua-pct 0 --max-blocks 2) ||
		{ echo "$out"; fail "cycle $c: the write run failed"; }
	wait "$WB_PID" 2>/dev/null || true
	no_panic "$WB_LOG"
	w=$(sed -n 's/.*longest write or flush \([0-9.]*\)s.*/\1/p' <<<"$out")
	[ -n "$w" ] || { echo "$out"; fail "cycle $c: no latency figure"; }
	worst=$(awk -v a="$worst" -v b="$w" 'BEGIN { print (b > a ? b : a) }')
	wb_start vol "$backing" cache.img
	"$torture" verify --state state --uri "$uri" >verify.out || { cat verify.out; fail "cycle $c: verify failed"; }
	id=$(status_field vol .last_writeback_id)
	if [ "$id" -gt "$last" ]; then advanced=$((advanced + 1)); fi
	echo "cycle $c: last_writeback_id $id (was $last), longest write or flush ${w}s"
	last=$id
done
wb_stop
read -r _ ncycles _ nsectors _ nbad _ < <("$torture" totals --state state)
[ "$nbad" -eq 0 ] || fail "$nbad bad sectors"
# Writeback advanced in most cycles (before batches were sized by time, a
# batch of the whole ring took about 10 s here and never landed: 0 cycles,
# writers blocked from restart to kill), and writers were never blocked for
# long (requests waiting at the kill count with their age).
[ "$advanced" -ge $((cycles / 2)) ] || fail "last_writeback_id advanced in only $advanced of $cycles cycles"
awk -v w="$worst" -v b="$max_wait_bound" 'BEGIN { exit !(w <= b) }' || fail "a write or flush waited ${worst}s, more than ${max_wait_bound}s"
echo "figure: crash loop on a 7 ms disk: $cycles SIGKILLs 2 s apart, last_writeback_id advanced in $advanced cycles (to $last), longest write or flush ${worst}s (bound ${max_wait_bound}s), $nsectors sectors verified, bad $nbad"
