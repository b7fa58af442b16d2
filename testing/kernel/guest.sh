# Guest side of the kernel interop suite: every job script (written by a
# scenario with `job NAME`) sources this first. It runs in the guest,
# chrooted into the host's root file system (read-only), in the scenario's
# work directory (writable, shared with the host). The kernel is Debian's,
# with the dm-writeboost module dkms built for it.
set -euo pipefail
export PATH="$WBK_BIN:$PATH"
# No udev in the guest: libdevmapper makes the /dev/mapper nodes itself.
export DM_DISABLE_UDEV=1

modprobe dm-writeboost
echo "guest: kernel $(uname -r), $(nproc) cpus, writeboost target $(dmsetup targets | awk '$1 == "writeboost" { print $2 }')"

# gfail MESSAGE: fail the job.
gfail() {
	echo "FAIL (guest): $*" >&2
	exit 1
}

# dm_create NAME BACKING CACHE [KEY VALUE...]: the kernel target over two
# virtio disks, as its documentation says: one table line.
dm_create() {
	local name=$1 backing=$2 cache=$3
	shift 3
	local table="0 $(blockdev --getsz "$backing") writeboost $backing $cache"
	[ $# -eq 0 ] || table="$table $# $*"
	echo "guest: dmsetup create $name --table '$table'"
	dmsetup create "$name" --table "$table"
}

# dm_status NAME: the kernel's status line, without the "0 SECTORS writeboost" prefix.
dm_status() { dmsetup status "$1" | cut -d' ' -f4-; }

# dm_field NAME N: field N (1-based, after the prefix) of the status line:
# 1 cursor_pos 2 nr_cache_blocks 3 nr_segments 4 current_id
# 5 last_flushed_id 6 last_writeback_id 7 nr_dirty_cache_blocks.
dm_field() { dm_status "$1" | cut -d' ' -f"$2"; }

# dm_wait_writeback NAME [SECONDS]: until everything flushed is written back
# (nr_dirty_cache_blocks 0 and last_writeback_id = last_flushed_id).
dm_wait_writeback() {
	local end=$((SECONDS + ${2:-120}))
	while [ $SECONDS -lt $end ]; do
		set -- "$1" $(dm_status "$1")
		if [ "$8" = 0 ] && [ "$6" = "$7" ]; then return 0; fi
		sleep 0.2
	done
	gfail "$1: not written back after ${2:-120} s: $(dm_status "$1")"
}

# dm_sb_record CACHE: the superblock record (last_writeback_segment_id) on
# the cache device as the kernel last wrote it (read with O_DIRECT, so no
# page cache in the way).
dm_sb_record() {
	dd if="$1" bs=512 skip=2047 count=1 iflag=direct status=none | od -An -t u8 -N 8 | tr -d ' '
}

# power_cut: record the job as done, then hard power off: no sync, no
# unmount, no remove; whatever the kernel target holds in RAM is lost.
power_cut() {
	echo "guest: power cut"
	echo 0 >"${WBK_JOB%.sh}.rc"
	echo b >/proc/sysrq-trigger
	sleep 60
}
