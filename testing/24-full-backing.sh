#!/usr/bin/env bash
# 24: the backing device fills up (issue 18). The backing file lives on a
# small ext4 (a loop device) nearly full: writeback fails with ENOSPC,
# wb-status shows it (writeback_error, since when), the ring fills, and
# with --write-wait-limit 3s the next write fails with ENOSPC instead of
# hanging. Space is freed: writeback resumes by itself, and every FLUSHed
# write is there, through the volume, after a restart, and on the backing
# file alone after drop_caches + remove.
. "$WB_TESTING/lib.sh"

uri=$(wb_uri vol)
sparse fs.img 48M
mkfs.ext4 -q -F fs.img || fail "mkfs.ext4"
loop_attach fs.img
mount_at "$LOOP_DEV" mnt
avail=$(df --output=avail -B1 mnt | tail -n 1)
fallocate -l $((avail - (4 << 20))) mnt/filler || fail "fallocate"
truncate -s 32M mnt/backing.img
sparse cache.img 6M
wb_start vol mnt/backing.img cache.img --reformat --write-wait-limit 3s writeback_threshold 100

note "write 1 MiB chunks, each flushed, until the backing device is full"
flushed=0 failed_at=
for ((i = 0; i < 24; i++)); do
	t0=$(date +%s.%N)
	if qemu-io -f raw "$uri" -c "write -P $((0x20 + i)) ${i}M 1M" -c flush >qio.out 2>&1; then
		flushed=$((i + 1))
		continue
	fi
	t1=$(date +%s.%N)
	cat qio.out
	grep -qi "no space left" qio.out || fail "chunk $i failed without ENOSPC"
	failed_at=$i
	waited=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
	break
done
[ -n "$failed_at" ] || fail "24 MiB went in although the backing device has 4 MiB free"
st=$(wb-status --json vol)
jq -e '.writeback_error | test("no space left")' <<<"$st" >/dev/null || fail "wb-status does not show the failing writeback: $st"
since=$(jq .writeback_failing_seconds <<<"$st")
grep -q "writeback failed, will retry" "$WB_LOG" || fail "no log line about the failing writeback"
awk -v w="$waited" 'BEGIN { exit !(w >= 3 && w < 30) }' || fail "the refused write took ${waited}s, want the 3 s limit"

note "space comes back: writeback resumes by itself"
rm mnt/filler
wait_for 60 "writeback to recover" bash -c "[ \"\$(wb-status --json vol | jq -r '.writeback_error // empty')\" = '' ]"
check_chunks() {
	local i target=$1
	for ((i = 0; i < flushed; i++)); do
		qemu-io -f raw "$target" -c "read -P $((0x20 + i)) ${i}M 1M" >qio.out 2>&1 || { cat qio.out; fail "chunk $i of $target"; }
		grep -qi "fail\|error" qio.out && { cat qio.out; fail "chunk $i of $target differs"; }
	done
	return 0
}
check_chunks "$uri"
qemu-io -f raw "$uri" -c "write -P 0x77 20M 1M" -c flush >/dev/null || fail "a write after the space came back"
wb_stop
wb_start vol mnt/backing.img cache.img
check_chunks "$uri"
wb_remove vol
check_chunks mnt/backing.img
echo "figure: full backing device: $flushed flushed MiB in, chunk $failed_at refused with ENOSPC after ${waited}s (limit 3 s), writeback failing ${since}s shown in wb-status; after freeing space writeback resumed and all $flushed flushed MiB read back (volume, restart, backing file alone)"
