#!/usr/bin/env bash
# 08: file system crash test. ext4 on the volume (nbdfuse + loop). Each
# round writes a batch of files and syncs (syncfs: ext4 commits its journal
# with FLUSH, which reaches the engine through loop and nbdfuse), then keeps
# writing more files with no sync and SIGKILLs wb-create in the middle of
# it. The mount stack is torn down as it is (umount, loop, fuse), the engine
# restarted without --reformat, the file system mounted (the journal
# replays), every file synced in any round so far checked against its
# checksum, unmounted and checked with e2fsck -fn, which must be clean.
# WB_FS_CRASH_ROUNDS sets the number of rounds (default 4).
. "$WB_TESTING/lib.sh"

rounds=${WB_FS_CRASH_ROUNDS:-4}
sparse backing.img 192M
sparse cache.img 16M
wb_start vol backing.img cache.img --reformat

attach() {
	fuse_attach "$(wb_uri vol)" fuse
	loop_attach fuse/nbd
}
# teardown: whatever state the stack is in after the kill.
teardown() {
	umount mnt 2>/dev/null || umount -l mnt || fail "umount after the kill"
	loop_detach "$LOOP_DEV"
	fusermount3 -u fuse 2>/dev/null || fusermount3 -uz fuse || true
	wait_for 20 "nbdfuse to exit" bash -c "! mountpoint -q fuse"
}

attach
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP_DEV" || fail "mkfs.ext4"
mount_at "$LOOP_DEV" mnt
: >synced.sums
checked=0
for ((r = 1; r <= rounds; r++)); do
	note "round $r/$rounds: synced files"
	mkdir -p "mnt/r$r"
	for i in $(seq 1 12); do
		head -c $(((RANDOM % 64 + 1) * 8192 + RANDOM)) /dev/urandom >"mnt/r$r/s$i"
	done
	head -c $((3 << 20)) /dev/urandom >"mnt/r$r/big"
	sync -f mnt
	(cd mnt && sha256sum "r$r"/*) >>synced.sums

	note "round $r: unsynced writes, then SIGKILL"
	(
		i=0
		while :; do
			head -c $(((i % 16 + 1) * 65536)) /dev/urandom >"mnt/r$r/u$i" 2>/dev/null || exit 0
			i=$((i + 1))
		done
	) &
	writer=$!
	wb_defer "kill $writer"
	sleep "0.$((RANDOM % 8 + 2))"
	wb_kill
	kill "$writer" 2>/dev/null || true
	wait "$writer" 2>/dev/null || true
	no_panic "$WB_LOG"
	teardown

	note "round $r: restart, replay, check"
	wb_start vol backing.img cache.img
	attach
	mount "$LOOP_DEV" mnt || fail "round $r: mount after the crash"
	(cd mnt && sha256sum --quiet -c "$WB_WORK/synced.sums") || fail "round $r: a synced file is damaged"
	checked=$((checked + $(wc -l <synced.sums)))
	umount mnt
	e2fsck -fn "$LOOP_DEV" || fail "round $r: e2fsck after journal replay"
	mount "$LOOP_DEV" mnt || fail "round $r: remount"
done
umount mnt
loop_detach "$LOOP_DEV"
fuse_detach fuse
wait_for 20 "nbdfuse to exit" bash -c "! mountpoint -q fuse"
wb_stop
echo "figure: fs crash rounds $rounds, synced files checked $checked, e2fsck clean every round"
