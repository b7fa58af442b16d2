#!/usr/bin/env bash
# 26: the device I/O engines (issue 16). With io_uring (the default where
# the kernel allows it; wb-status says which runs) read hits are served
# without a goroutine each and complete from the cache device's native AIO
# context (io_uring+aio; the ring where the file has no O_DIRECT): fio
# with 32 reads in flight against cached and uncached blocks, with verify,
# then the same data through --io-engine blocking, through io_uring again
# after a restart, and on the backing file after drop_caches.
. "$WB_TESTING/lib.sh"

sparse backing.img 64M
sparse cache.img 32M
wb_start vol backing.img cache.img --reformat
uri=$(wb_uri vol)

# What the kernel answers, not kernel.io_uring_disabled alone: a kernel
# before 6.6 has no such sysctl and allows io_uring, a seccomp filter may
# refuse it with the sysctl at 0. fio's io_uring engine asks.
want=blocking
if fio --name=probe --ioengine=io_uring --filename="$WB_WORK/probe" --size=4k --rw=read --bs=4k >/dev/null 2>&1; then
	want=io_uring
	if dd if=cache.img of=/dev/null bs=4096 count=1 iflag=direct 2>/dev/null; then
		want=io_uring+aio # asynchronous O_DIRECT reads through native AIO
	fi
fi
got=$(status_field vol .cache_io)
[ "$got" = "$want" ] || fail "cache_io is $got, want $want (fio io_uring probe; kernel.io_uring_disabled=$(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent))"
wb-status vol | grep "device I/O.*cache $want" >/dev/null || fail "the status table does not show the device I/O engine"
# Only the cache device serves read hits asynchronously: the backing file
# keeps the ring for its reads.
[ "$(status_field vol .backing_io)" = "${want%+aio}" ] || fail "backing_io is $(status_field vol .backing_io), want ${want%+aio}"

note "fio: write 24 MiB with verify headers, read them back (verify_only: the reads) at QD32 ($want)"
fio_job() {
	fio --name=j --ioengine=nbd --uri="$uri" --bs=4k --size=24M --iodepth=32 \
		--verify=crc32c --verify_backlog=0 --do_verify=1 --randseed=26 "$@" >"$WB_WORK/fio.out" 2>&1 ||
		{ cat "$WB_WORK/fio.out" >&2; fail "fio $*"; }
}
fio_job --rw=randwrite
fio_job --rw=randwrite --verify_only
# Partial blocks and unaligned reads in the mix, past the region fio verifies.
out=$(qemu-io -f raw "$uri" -c "write -P 0x5a 26215936 1024" -c "read -P 0x5a 26215936 1024" -c "write -P 0x6b 30000001 3" -c "read -P 0x6b 30000001 3" 2>&1) || fail "qemu-io: $out"
if grep -qi "fail\|error" <<<"$out"; then fail "qemu-io: $out"; fi
sum=$(nbdcopy "$uri" - | sha256sum | cut -d' ' -f1)

note "the same bytes through blocking system calls"
wb_stop
wb_start vol backing.img cache.img --io-engine blocking
[ "$(status_field vol .cache_io)" = blocking ] || fail "--io-engine blocking: cache_io is $(status_field vol .cache_io)"
fio_job --rw=randwrite --verify_only
[ "$(nbdcopy "$uri" - | sha256sum | cut -d' ' -f1)" = "$sum" ] || fail "blocking engine reads other bytes"

if [ "$want" != blocking ]; then
	note "io_uring again, then drop_caches onto the backing file"
	wb_stop
	wb_start vol backing.img cache.img --io-engine io_uring
	[ "$(status_field vol .cache_io)" = "$want" ] || fail "--io-engine io_uring: cache_io is $(status_field vol .cache_io), want $want"
	fio_job --rw=randwrite --verify_only
fi
wb-message vol drop_caches >/dev/null || fail "drop_caches"
wb_stop
[ "$(sha backing.img)" = "$sum" ] || fail "backing file after drop_caches differs from what the volume served"
note "ok"
