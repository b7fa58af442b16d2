#!/usr/bin/env bash
# 09: fault injection. The backing device (case A) and then the cache device
# (case B) are served by nbdkit with its error filter and exposed as a file
# with nbdfuse, so wb-create sees real EIO from pread/pwrite. Errors are
# switched on and off at run time by creating and removing trigger files.
#   A (backing): a read of an uncached block fails with EIO while cached and
#     other data keep being served; failed writeback keeps the blocks dirty,
#     last_writeback_id does not move past the failed segment, the errors are
#     counted in status and logged once per burst; once the device recovers
#     the retried writeback completes; SIGTERM stops the engine cleanly while
#     writeback is failing, and a restart loses nothing; transient errors
#     while writers wait for a full ring cost time, never data.
#   B (cache): writes that need the cache device fail with EIO (at FLUSH at
#     the latest), reads of data the cache device holds fail or return the
#     right bytes (never wrong ones); the engine keeps serving what does not
#     need the failing device. Once it recovers, writes work again or (as
#     the kernel target does) stay refused until a restart; SIGTERM stops it
#     and a restart serves every flushed write.
. "$WB_TESTING/lib.sh"

# serve_faulty IMAGE NAME: nbdkit + error filter for IMAGE, triggers
# NAME.fail-read / NAME.fail-write, exposed as the file NAME-fuse/nbd.
serve_faulty() {
	local img=$1 name=$2
	rm -f "$name.sock" "$name.fail-read" "$name.fail-write"
	nbdkit -f -U "$WB_WORK/$name.sock" --filter=error file "$img" error=EIO \
		error-pread-rate=100% error-pread-file="$WB_WORK/$name.fail-read" \
		error-pwrite-rate=100% error-pwrite-file="$WB_WORK/$name.fail-write" \
		error-zero-rate=100% error-zero-file="$WB_WORK/$name.fail-write" &
	wb_defer "kill_ours $! nbdkit"
	wait_for 10 "nbdkit for $img" test -S "$name.sock"
	fuse_attach "nbd+unix:///?socket=$WB_WORK/$name.sock" "$name-fuse"
}
alive() { kill -0 "$WB_PID" 2>/dev/null || { tail -n 30 "$WB_LOG" >&2; fail "wb-create died"; }; }
qio() { qemu-io -f raw "$uri" "$@" >qio.out 2>&1; }
st() { wb-status --json vol; }

cases=0
uri=$(wb_uri vol)

note "A: backing device faults"
sparse backing.img 32M
sparse cache.img 8M
head -c $((32 << 20)) /dev/urandom >backing.img
cp backing.img expect.img
serve_faulty backing.img bk
# writeback_threshold 100: background writeback allowed (0 would allow only
# forced writeback: a full ring or drop_caches), so its retries run alone.
wb_start vol bk-fuse/nbd cache.img --reformat writeback_threshold 100

note "A1: backing read errors"
qio -c "write -P 0x11 0 1M" || fail "write"
touch bk.fail-read
if qio -c "read 16M 64k"; then fail "a read of an uncached block succeeded while the backing device fails"; fi
grep -Eqi 'input/output error|EIO' qio.out || { cat qio.out; fail "the failed read did not report EIO"; }
alive
qio -c "read -P 0x11 0 1M" || fail "cached data not served while the backing device fails reads"
rm bk.fail-read
qio -c "read 16M 64k" || fail "read after the backing device recovered"
cases=$((cases + 1))

note "A2: backing write errors: writeback fails, blocks stay dirty, retries"
touch bk.fail-write
qio -c "write -P 0x22 2M 3M" -c "write -P 0x33 12345 777" -c flush || fail "writes to the cache failed while only the backing device fails"
# expect.img mirrors what the volume must hold.
qemu-io -f raw expect.img -c "write -P 0x11 0 1M" -c "write -P 0x22 2M 3M" -c "write -P 0x33 12345 777" >/dev/null
wb-message vol flush || fail "flush"
if timeout 5 wb-message vol drop_caches 2>err.txt; then fail "drop_caches succeeded while the backing device fails writes"; fi
sleep 2
s1=$(st)
sleep 3
s2=$(st)
echo "$s2" | jq -c '{last_flushed_id, last_writeback_id, nr_dirty_cache_blocks, errors}'
[ "$(jq .nr_dirty_cache_blocks <<<"$s2")" -gt 0 ] || fail "dirty blocks dropped while writeback fails"
[ "$(jq .last_writeback_id <<<"$s1")" = "$(jq .last_writeback_id <<<"$s2")" ] || fail "last_writeback_id moved while writeback fails"
[ "$(jq .last_writeback_id <<<"$s2")" -lt "$(jq .last_flushed_id <<<"$s2")" ] || fail "last_writeback_id reached last_flushed_id while writeback fails"
[ "$(jq '.errors.backing_write // 0' <<<"$s2")" -gt 0 ] || fail "backing write errors not counted in status"
[ "$(jq '.errors.writeback // 0' <<<"$s2")" -ge 2 ] || fail "failed writeback was not retried: $(jq -c .errors <<<"$s2")"
qio -c "read -P 0x22 2M 3M" -c "read -P 0x33 12345 777" || fail "dirty data not served while writeback fails"
alive
rm bk.fail-write
# No drop_caches: the retried background writeback must get there alone.
wait_for 60 "writeback to finish after the backing device recovered" \
	bash -c "[ \"\$(wb-status --json vol | jq .nr_dirty_cache_blocks)\" -eq 0 ]"
s3=$(st)
[ "$(jq .nr_dirty_cache_blocks <<<"$s3")" -eq 0 ] || fail "dirty blocks left after recovery"
[ "$(jq .last_writeback_id <<<"$s3")" = "$(jq .last_flushed_id <<<"$s3")" ] || fail "last_writeback_id != last_flushed_id after recovery"
cmp backing.img expect.img || fail "the backing device does not hold the written data after the retried writeback"
errlines=$(grep -ci 'error' "$WB_LOG" || true)
echo "error log lines during A2: $errlines"
[ "$errlines" -lt 50 ] || fail "$errlines error lines logged: not once per burst"
cases=$((cases + 1))

note "A3: SIGTERM while writeback fails, restart loses nothing"
touch bk.fail-write
qio -c "write -P 0x44 20M 2M" -c flush || fail "write"
qemu-io -f raw expect.img -c "write -P 0x44 20M 2M" >/dev/null
sleep 1
wb_stop
rm bk.fail-write
wb_start vol bk-fuse/nbd cache.img
nbdcopy "$uri" out.img || fail "nbdcopy out after restart"
cmp out.img expect.img || fail "data lost across a stop during failing writeback"
timeout 120 wb-message vol drop_caches || fail "drop_caches"
wb_stop
cmp backing.img expect.img || fail "backing device after drop_caches"
cases=$((cases + 1))

note "A4: transient backing write errors while the ring is full"
# The trigger flips every 0.3 s while 24 MiB (3 times the cache) are
# written: writers wait for ring slots that only writeback can free, and
# writeback keeps failing and retrying. Every write must complete, and the
# backing device must end up with all of it.
wb_start vol bk-fuse/nbd cache.img writeback_threshold 100
head -c $((24 << 20)) /dev/urandom >in.img
touch bk.fail-write # failing from the first write on
(
	while :; do
		sleep 0.3
		rm -f bk.fail-write
		sleep 0.3
		touch bk.fail-write
	done
) &
flipper=$!
wb_defer "kill $flipper"
nbdcopy --flush in.img "$uri" || fail "nbdcopy under transient backing errors"
kill "$flipper"
wait "$flipper" 2>/dev/null || true
rm -f bk.fail-write
st | jq -c '{last_flushed_id, last_writeback_id, nr_dirty_cache_blocks, errors}'
[ "$(st | jq '.errors.writeback // 0')" -gt 0 ] || fail "no writeback failed: the transient errors missed"
timeout 120 wb-message vol drop_caches || fail "drop_caches after transient errors"
wb_stop
cmp -n $((24 << 20)) in.img backing.img || fail "backing device lacks data written under transient errors"
fuse_detach bk-fuse
rm -f in.img
cases=$((cases + 1))

note "B: cache device faults"
sparse backing2.img 32M
sparse cache2.img 8M
serve_faulty cache2.img ca
wb_start vol backing2.img ca-fuse/nbd --reformat
qio -c "write -P 0x55 0 1M" -c flush || fail "write"

note "B1: cache write errors"
touch ca.fail-write
if qio -c "write -P 0x66 4M 1M" -c flush; then fail "write + flush succeeded while the cache device fails writes"; fi
grep -Eqi 'input/output error|EIO' qio.out || { cat qio.out; fail "the failed write/flush did not report EIO"; }
alive
qio -c "read -P 0 16M 1M" || fail "reads of uncached (backing) data failed while the cache device fails writes"
qio -c "read -P 0x55 0 1M" || fail "flushed data not served after a cache write error"
rm ca.fail-write
# Like the kernel target, the engine may refuse every write once the cache
# device failed one (the log is no longer trustworthy), until a restart;
# otherwise writes must work again.
if qio -c "write -P 0x77 8M 1M" -c flush; then
	qio -c "read -P 0x77 8M 1M" || fail "read back after the cache device recovered"
	echo "writes work again after the cache device recovered"
else
	grep -q 'refuses further writes' "$WB_LOG" || { cat qio.out; fail "writes fail after the cache device recovered, and the engine did not say it refuses them"; }
	echo "writes refused until restart (dead cache device), as the kernel target does"
fi
cases=$((cases + 1))

note "B2: cache read errors"
touch ca.fail-read
# The 0x55 MiB was flushed to the cache device: reading it must either fail
# with EIO or return the right bytes (a copy in memory), never wrong ones.
if qio -c "read -P 0x55 0 1M"; then
	echo "read served from memory while the cache device fails reads"
else
	grep -q 'Pattern verification failed' qio.out && fail "wrong data while the cache device fails reads"
	grep -Eqi 'input/output error|EIO' qio.out || { cat qio.out; fail "the failed read did not report EIO"; }
fi
alive
qio -c "read -P 0 20M 1M" || fail "backing data not served while the cache device fails reads"
rm ca.fail-read
qio -c "read -P 0x55 0 1M" || fail "reads after the cache device recovered"
cases=$((cases + 1))

note "B3: SIGTERM after cache errors stops the engine; a restart serves the flushed data"
kill -TERM "$WB_PID"
wait_for 30 "wb-create to exit after SIGTERM" bash -c "! kill -0 $WB_PID"
rc=0
wait "$WB_PID" || rc=$?
no_panic "$WB_LOG"
echo "exit status after SIGTERM with a failed cache device: $rc"
[ "$rc" -eq 0 ] || [ "$(grep -c '^wb-create:' "$WB_LOG")" -eq 1 ] || fail "exit $rc without a one-line error"
[ ! -e "$(wb_sock vol)" ] || fail "socket left after SIGTERM"
wb_start vol backing2.img ca-fuse/nbd
qio -c "read -P 0x55 0 1M" || fail "flushed data lost after cache errors and a restart"
qio -c "write -P 0x77 8M 1M" -c flush -c "read -P 0x77 8M 1M" || fail "writes after a restart"
wb_stop
cases=$((cases + 1))
rm -f expect.img out.img
echo "figure: fault scenarios passed $cases/7 (backing read, backing write + retry, SIGTERM during failing writeback, transient backing errors with a full ring, cache write, cache read, restart after cache errors)"
