#!/usr/bin/env bash
# 14: issue 17, a FLUSHed write must survive an unflushed overwrite whose
# old segment is written back and recorded before a crash. With qemu-io:
#   1. block 100 = A, FLUSH (A is promised);
#   2. overwrite without a FLUSH: the whole block = B, two sectors of it =
#      B, or a TRIM of it; B stays in RAM. qemu-io flushes when it closes,
#      so it goes through nbdkit's fua filter (fuamode=discard), which drops
#      FLUSH and FUA on the way to the volume;
#   3. writeback_threshold 100 and update_sb_record_interval 1: the segment
#      holding A is written back and the superblock record names it;
#   4. SIGKILL, restart: the volume reads A or B; drop_caches + remove: the
#      backing file alone reads A or B (B of a trim: zeros, the discarded
#      range of a sparse file).
# Before the fix, the volume read A from a copy replay took for clean while
# the backing file never got it: after remove, A was gone.
. "$WB_TESTING/lib.sh"

uri=$(wb_uri vol)
blk=100
off=$((blk * 4096))
qio() { qemu-io -f raw "$@" >qio.out 2>&1 || { cat qio.out >&2; fail "qemu-io $*"; }; }
# block_of FILE: block $blk of FILE, to stdout.
block_of() { dd if="$1" bs=4096 skip=$blk count=1 status=none; }

# The overwrite path: qemu-io -> nbdkit (fua filter drops FLUSH) -> volume.
noflush=$WB_WORK/noflush.sock
start_noflush() {
	rm -f "$noflush"
	nbdkit -f -U "$noflush" --filter=fua nbd socket="$(wb_sock vol)" fuamode=discard &
	local pid=$!
	wb_defer "kill_ours $pid nbdkit"
	wait_for 10 "nbdkit without flushes" test -S "$noflush"
	NOFLUSH_PID=$pid
}

printf 'A%.0s' $(seq 4096) >A.bin
for kind in full partial trim; do
	note "overwrite: $kind"
	sparse backing.img 32M
	sparse cache.img 6M
	wb_start vol backing.img cache.img --reformat
	qio "$uri" -c "write -P 0x41 $off 4096" -c flush
	durable=$(status_field vol .last_durable_id)
	[ "$durable" -ge 1 ] || fail "A's segment is not durable after FLUSH"
	start_noflush
	nf="nbd+unix:///?socket=$noflush"
	case $kind in
	full)
		qio "$nf" -c "write -P 0x42 $off 4096"
		printf 'B%.0s' $(seq 4096) >B.bin ;;
	partial)
		qio "$nf" -c "write -P 0x42 $((off + 1024)) 1024"
		{ head -c 1024 A.bin; printf 'B%.0s' $(seq 1024); head -c 2048 A.bin; } >B.bin ;;
	trim)
		qio -d unmap "$nf" -c "discard $off 4096"
		head -c 4096 /dev/zero >B.bin ;;
	esac
	kill "$NOFLUSH_PID"; wait "$NOFLUSH_PID" 2>/dev/null || true
	wb-message vol writeback_threshold 100 || fail "writeback_threshold"
	wb-message vol update_sb_record_interval 1 || fail "update_sb_record_interval"
	wait_for 20 "A's segment written back and recorded" \
		bash -c "[ \$(wb-status --json vol | jq .superblock_record_id) -ge $durable ]"
	# B must still be unflushed, or this case proves nothing.
	st=$(wb-status --json vol)
	[ "$(jq .last_durable_id <<<"$st")" -eq "$durable" ] || fail "B became durable: $(jq -c . <<<"$st")"
	if [ "$kind" != trim ]; then
		[ "$(jq .ram_buffer_bytes <<<"$st")" -gt 0 ] || fail "B is not in the RAM buffer: $(jq -c . <<<"$st")"
	fi
	wb_kill
	no_panic "$WB_LOG"

	wb_start vol backing.img cache.img
	qio "$uri" -c "read -v $off 4096"
	nbdcopy "$uri" vol.img || fail "nbdcopy"
	block_of vol.img >got.bin
	cmp -s got.bin A.bin || cmp -s got.bin B.bin ||
		fail "$kind: after the restart block $blk reads $(head -c 16 got.bin | od -An -c | tr -s ' '), want A or B"
	wb_remove vol
	block_of backing.img >got.bin
	cmp -s got.bin A.bin || cmp -s got.bin B.bin ||
		fail "$kind: after drop_caches + remove the backing file's block $blk reads $(head -c 16 got.bin | od -An -c | tr -s ' '), want A or B"
	wb-check cache.img >/dev/null || fail "wb-check after remove"
	echo "figure: $kind overwrite, SIGKILL after writeback + record: volume and backing file read $(cmp -s got.bin A.bin && echo A || echo B)"
done
