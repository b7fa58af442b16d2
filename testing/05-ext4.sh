#!/usr/bin/env bash
# 05: a real file system on the volume. ext4 through nbdfuse (the volume as
# a file) and a loop device: files written and synced, unmounted, the file
# system checked (e2fsck -fn), remounted and every checksum matched; then the
# same after a clean restart of the engine, when the data comes back from
# the log and the backing device instead of any page cache.
. "$WB_TESTING/lib.sh"

sparse backing.img 128M
sparse cache.img 24M
wb_start vol backing.img cache.img --reformat

attach() {
	fuse_attach "$(wb_uri vol)" fuse
	loop_attach fuse/nbd
}
detach() {
	umount mnt
	loop_detach "$LOOP_DEV"
	fuse_detach fuse
	wait_for 10 "nbdfuse to exit" bash -c "! mountpoint -q fuse"
}
check_sums() {
	(cd mnt && sha256sum --quiet -c "$WB_WORK/sums") || fail "checksums differ ($1)"
}

attach
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$LOOP_DEV" || fail "mkfs.ext4"
mount_at "$LOOP_DEV" mnt

note "write files"
mkdir -p mnt/a/b mnt/c
for i in $(seq 1 40); do
	head -c $(((i * 37 % 50 + 1) * 13100 + i)) /dev/urandom >"mnt/a/f$i"
done
for i in $(seq 1 5); do
	head -c $((i * 2 << 20)) /dev/urandom >"mnt/a/b/big$i"
done
cp -r mnt/a mnt/c/copy
rm mnt/a/f7 mnt/a/b/big2
echo small >mnt/c/small
(cd mnt && find . -type f ! -name lost+found -print0 | sort -z | xargs -0 sha256sum) >sums
sync -f mnt
nfiles=$(wc -l <sums)

note "unmount, e2fsck, remount"
umount mnt
e2fsck -fn "$LOOP_DEV" || fail "e2fsck after unmount"
mount "$LOOP_DEV" mnt || fail "remount"
check_sums "after remount"

note "clean restart of the engine"
detach
wb_stop
wb_start vol backing.img cache.img
attach
e2fsck -fn "$LOOP_DEV" || fail "e2fsck after restart"
mount "$LOOP_DEV" mnt || fail "mount after restart"
check_sums "after restart"
detach
wb_stop
echo "figure: ext4 $nfiles files, checksums match after remount and restart, e2fsck clean"
