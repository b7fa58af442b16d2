#!/usr/bin/env bash
# 06: a clean stop keeps every byte. Write a mix of data (some of it only in
# the RAM buffer at the time of the stop), take an nbdcopy image, SIGTERM,
# start again without --reformat: the volume must be byte for byte the same,
# twice over.
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
rm -f seed.img before.img after.img
echo "figure: restart 2 clean restarts, 32 MiB identical"
