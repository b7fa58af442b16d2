# Scenario 5: wb-create --attach /dev/nbd0 carries ext4 on a real kernel
# nbd device, and the kernel target reads the same file system.
#
# Guest (one boot): wb-create --attach /dev/nbd0 over two virtio disks;
# mkfs.ext4, files (random data, a copied tree, a sparse file), sync,
# umount, clean stop (SIGTERM); start again with --attach: e2fsck -fn is
# clean and every checksum matches; clean stop. Then the kernel target over
# the same disks (it replays writeboost's log): e2fsck -fn clean, mounted
# read-only, the same checksums.
source "$(dirname "$0")/lib.sh"

sparse backing.img 128M
sparse cache.img 32M
wb-format-cache -q cache.img

job guest <<'EOF'
modprobe nbd
modprobe ext4
export WB_RUN_DIR=/run/wb
start() {
	: >"wb-create.$1.log"
	wb-create vol /dev/vda /dev/vdb --attach /dev/nbd0 2>"wb-create.$1.log" &
	pid=$!
	local i
	for ((i = 0; i < 600; i++)); do
		grep -q ready "wb-create.$1.log" && [ "$(cat /sys/block/nbd0/size)" != 0 ] && return 0
		kill -0 $pid 2>/dev/null || { cat "wb-create.$1.log"; gfail "wb-create exited"; }
		sleep 0.1
	done
	cat "wb-create.$1.log"
	gfail "wb-create --attach not ready after 60 s"
}
stop() {
	kill -TERM $pid
	local rc=0
	wait $pid || rc=$?
	[ $rc = 0 ] || { tail "wb-create.$1.log"; gfail "wb-create exited $rc after SIGTERM"; }
	[ "$(cat /sys/block/nbd0/size)" = 0 ] || gfail "/dev/nbd0 still connected after the stop"
}

start 1
echo "guest: /dev/nbd0 is $(blockdev --getsize64 /dev/nbd0) bytes"
mkfs.ext4 -q -F /dev/nbd0
mount /dev/nbd0 /mnt
head -c 12M /dev/urandom >/mnt/random.bin
mkdir /mnt/tree
cp -a /usr/share/doc/dmsetup /usr/share/doc/e2fsprogs /usr/share/doc/qemu-system-x86 /mnt/tree/ 2>/dev/null || true
truncate -s 64M /mnt/sparse.bin
echo hello >/mnt/sparse.bin
dd if=/dev/urandom of=/mnt/sparse.bin bs=4k count=3 seek=5000 conv=notrunc status=none
(cd /mnt && find . -type f -print0 | sort -z | xargs -0 sha256sum) >sums
echo "guest: $(wc -l <sums) files written"
sync
umount /mnt
stop 1

start 2
e2fsck -fn /dev/nbd0 >fsck.wb 2>&1 || { cat fsck.wb; gfail "e2fsck -fn after the re-attach"; }
mount -o ro /dev/nbd0 /mnt
(cd /mnt && sha256sum --quiet -c "$WBK_WORK/sums") || gfail "checksums after the re-attach"
umount /mnt
echo "guest: re-attached: e2fsck clean, $(wc -l <sums) checksums match"
WB_RUN_DIR=/run/wb wb-status --raw vol >wb.status
stop 2

dm_create k /dev/vda /dev/vdb
dmsetup status k | tee kernel.status
e2fsck -fn /dev/mapper/k >fsck.kernel 2>&1 || { cat fsck.kernel; gfail "e2fsck -fn under the kernel target"; }
mount -o ro,noload /dev/mapper/k /mnt
(cd /mnt && sha256sum --quiet -c "$WBK_WORK/sums") || gfail "checksums under the kernel target"
umount /mnt
echo "guest: the kernel target: e2fsck clean, $(wc -l <sums) checksums match"
dmsetup remove k
EOF
vm_boot guest backing.img cache.img

figure "files: $(wc -l <sums); e2fsck -fn clean through wb-create --attach /dev/nbd0 and through the kernel target; checksums equal in both"
figure "status: writeboost at the second stop: $(cut -d' ' -f4-10 wb.status); the kernel after its replay: $(cut -d' ' -f4-10 kernel.status)"
