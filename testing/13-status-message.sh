#!/usr/bin/env bash
# 13: wb-status and wb-message end to end, as issue 5 checks them. The
# counters move the way the kernel's do after qemu-io writes and reads;
# every tunable is set and read back; static options and out-of-range values
# are refused; clear_stat zeroes the counters; flush + drop_caches leaves
# nothing dirty with last_writeback_id == last_flushed_id, and then the
# backing file alone holds the data; remove stops the engine and a restart
# shows the same data with nothing dirty.
. "$WB_TESTING/lib.sh"

sparse backing.img 32M
sparse cache.img 8M
wb_start vol backing.img cache.img --reformat
uri=$(wb_uri vol)
# stat index: write<<3 | hit<<2 | on_buffer<<1 | fullsize
stat() { status_field vol ".stat[$1]"; }
stat_sum() { wb-status --json vol | jq '[.stat[]] | add'; }

note "status formats"
wb-status vol >status.txt || fail "wb-status"
wb-status --raw vol >status.raw || fail "wb-status --raw"
wb-status --table vol >status.table || fail "wb-status --table"
grep -q writeboost status.raw || fail "raw status lacks the target name: $(cat status.raw)"
[ "$(status_field vol .name)" = vol ] || fail "name"
[ "$(status_field vol .size_bytes)" -eq $((32 << 20)) ] || fail "size_bytes"
[ "$(status_field vol .nr_segments)" -eq 14 ] || fail "nr_segments of an 8 MiB cache should be 14"
[ "$(status_field vol .nr_cache_blocks)" -eq $((14 * 127)) ] || fail "nr_cache_blocks"
[ "$(stat_sum)" -eq 0 ] || fail "counters not zero on a fresh volume"

note "counters move"
# One qemu-io run in writeback mode (its default, writethrough, flushes
# after every write, sealing the RAM buffer): the second write finds the
# block in the RAM buffer. qemu-io still flushes when it exits.
qemu-io -t writeback -f raw "$uri" -c "write -P 1 0 4096" -c "write -P 2 0 4096" >/dev/null || fail "write"
stats=$(wb-status --json vol | jq -c .stat)
echo "stat after two writes of one block: $stats"
# A full-size write miss: write|fullsize = 9.
[ "$(stat 9)" -ge 1 ] || fail "full-size write miss not counted: $stats"
# The same block again, in the RAM buffer: write|hit|on_buffer|fullsize = 15.
[ "$(stat 15)" -ge 1 ] || fail "full-size write hit in the RAM buffer not counted: $stats"
# The block again, now in a sealed segment on the cache device: write|hit|fullsize = 13.
qemu-io -f raw "$uri" -c "write -P 3 0 4096" >/dev/null || fail "write"
[ "$(stat 13)" -ge 1 ] || fail "full-size write hit on the cache device not counted: $(wb-status --json vol | jq -c .stat)"
# A partial write miss: write only = 8.
qemu-io -f raw "$uri" -c "write -P 3 8192 512" >/dev/null || fail "write"
[ "$(stat 8)" -ge 1 ] || fail "partial write miss not counted: $(wb-status --json vol | jq -c .stat)"
# A full-size read miss: fullsize only = 1.
qemu-io -f raw "$uri" -c "read -P 0 1048576 4096" >/dev/null || fail "read"
[ "$(stat 1)" -ge 1 ] || fail "read miss not counted: $(wb-status --json vol | jq -c .stat)"
# A full-size read hit on the cache device: hit|fullsize = 5.
qemu-io -f raw "$uri" -c "read -P 3 0 4096" >/dev/null || fail "read"
[ "$(stat 5)" -ge 1 ] || fail "read hit not counted: $(wb-status --json vol | jq -c .stat)"
[ "$(status_field vol .nr_dirty_cache_blocks)" -ge 2 ] || fail "dirty blocks not counted"

note "clear_stat"
wb-message vol clear_stat || fail "clear_stat"
[ "$(stat_sum)" -eq 0 ] || fail "clear_stat left $(wb-status --json vol | jq -c .stat)"

note "tunables set and read back"
set_get() { # NAME VALUE JQ-PATH
	wb-message vol "$1" "$2" || fail "wb-message $1 $2"
	local got
	got=$(status_field vol "$3")
	[ "$got" = "$2" ] || fail "$1: set $2, read back $got"
}
set_get writeback_threshold 70 .tunables.writeback_threshold
set_get writeback_threshold 0 .tunables.writeback_threshold
set_get nr_max_batched_writeback 5 .nr_max_batched_writeback
set_get update_sb_record_interval 3600 .tunables.update_sb_record_interval
set_get update_sb_record_interval 1 .tunables.update_sb_record_interval
set_get sync_data_interval 2 .tunables.sync_data_interval
set_get read_cache_threshold 127 .tunables.read_cache_threshold
set_get read_cache_threshold 0 .tunables.read_cache_threshold

note "refusals"
refuse() {
	if wb-message vol "$@" 2>err.txt; then fail "wb-message vol $* was accepted"; fi
	[ -s err.txt ] || fail "wb-message vol $*: no error message"
	no_panic err.txt
	echo "refused: $* -> $(head -n 1 err.txt)"
}
refuse writeback_threshold 101
refuse nr_max_batched_writeback 0
refuse nr_max_batched_writeback 33
refuse update_sb_record_interval 3601
refuse sync_data_interval -1
refuse read_cache_threshold 128
refuse read_cache_threshold abc
refuse write_around_mode 1
refuse nr_read_cache_cells 16
refuse no_such_tunable 1
refuse writeback_threshold
[ "$(status_field vol .tunables.writeback_threshold)" = 0 ] || fail "a refused message changed a tunable"

note "flush + drop_caches"
head -c $((12 << 20)) /dev/urandom >data.img
nbdcopy data.img "$uri" || fail "nbdcopy in"
[ "$(status_field vol .nr_dirty_cache_blocks)" -gt 0 ] || fail "nothing dirty after 12 MiB of writes"
wb-message vol flush || fail "flush"
wb-message vol drop_caches || fail "drop_caches"
st=$(wb-status --json vol)
echo "$st" | jq -c '{last_flushed_id, last_writeback_id, nr_dirty_cache_blocks}'
[ "$(jq .nr_dirty_cache_blocks <<<"$st")" -eq 0 ] || fail "dirty blocks after drop_caches"
[ "$(jq .last_writeback_id <<<"$st")" -eq "$(jq .last_flushed_id <<<"$st")" ] ||
	fail "last_writeback_id != last_flushed_id after drop_caches"
# The backing file alone holds the data, while the volume still runs.
cmp -n $((12 << 20)) data.img backing.img || fail "backing file differs from what was written"

note "remove, restart"
qemu-io -f raw "$uri" -c "write -P 0x77 20000000 65536" >/dev/null || fail "write"
nbdcopy "$uri" before.img || fail "nbdcopy out"
wb-message vol remove || fail "remove"
wait_for 30 "wb-create to exit after remove" bash -c "! kill -0 $WB_PID"
rc=0
wait "$WB_PID" || rc=$?
[ "$rc" -eq 0 ] || fail "wb-create exited $rc after remove"
no_panic "$WB_LOG"
[ ! -e "$WB_RUN_DIR/vol.sock" ] || fail "socket left after remove"
wb_start vol backing.img cache.img
[ "$(status_field vol .nr_dirty_cache_blocks)" -eq 0 ] || fail "dirty blocks after remove and restart"
nbdcopy "$uri" after.img || fail "nbdcopy out after restart"
cmp before.img after.img || fail "data changed across remove and restart"
cmp before.img backing.img || fail "backing file does not hold everything after remove"
wb_stop
rm -f data.img before.img after.img
echo "figure: status/message 8 tunables read back, 11 refusals, drop_caches then backing == volume"
