# Host side of the kernel interop suite; a scenario testing/kernel/[0-9]*.sh
# sources it first. It brings the helpers of testing/lib.sh (fail, note,
# wb_defer, wb_start, wb_stop, wb_kill, sha, ...) and adds the VM:
#
#   vm_boot JOB [DISK...]   boot Debian's kernel with the dm-writeboost
#                           module in QEMU, DISKs as /dev/vda, /dev/vdb, ...,
#                           and run the bash script JOB in the guest
#
# testing/kernel/run.sh sets up what every scenario shares and exports it:
# WBK_KERNEL (the kernel release), WBK_VMLINUZ, WBK_INITRD (the initramfs
# built from testing/kernel/init), WBK_ACCEL (kvm or tcg), WBK_KIO (the kio
# tool), WBK_LIB (this directory) and PATH with the project's bin/ first.
#
# The guest sees the host's root file system read-only and the scenario's
# work directory (the current directory) writable at the same path, so a job
# script uses the same paths as the scenario: $WBK_KIO, bin/, images...
# A job sources "$WBK_LIB/guest.sh" for the guest helpers.
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

: "${WBK_KERNEL:?run the kernel scenarios with testing/kernel/run.sh (make test-kernel)}"
WBK_BOOT_TIMEOUT=${WBK_BOOT_TIMEOUT:-300}
WBK_SMP=${WBK_SMP:-2}
WBK_MEM=${WBK_MEM:-1G}

# qemu_cmd ACCEL CONSOLE JOB [DISK...]: the QEMU command line, one word a line.
qemu_cmd() {
	local accel=$1 console=$2 job=$3 d
	shift 3
	local work
	work=$(dirname "$job")
	printf '%s\n' qemu-system-x86_64 -accel "$accel" -smp "$WBK_SMP" -m "$WBK_MEM" \
		-nodefaults -display none -no-reboot -serial "file:$console" \
		-kernel "$WBK_VMLINUZ" -initrd "$WBK_INITRD" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 wbk.job=$job wbk.work=$work" \
		-virtfs "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$work,mount_tag=work,security_model=none,multidevs=remap"
	if [ "$accel" = kvm ]; then printf '%s\n' -cpu host; fi
	for d in "$@"; do
		printf '%s\n' -drive "file=$d,if=virtio,format=raw,cache=unsafe,aio=threads"
	done
}

WBK_BOOTS=0
# vm_boot JOB [DISK...]: run the job script JOB (JOB or JOB.sh, written by
# job JOB in the current directory) in a fresh guest with DISKs attached as virtio disks in order
# (/dev/vda, /dev/vdb, ...); the guest's writes go straight to the image
# files (cache=unsafe: no host flushes, but nothing is held back in QEMU
# either). Waits for the guest to power off (the job returned, or cut the
# power with power_cut), at most WBK_BOOT_TIMEOUT seconds. Prints the job's
# output and "figure: boot ..." with the time to the job's start and the
# job's own time. Fails unless the job exited 0.
vm_boot() {
	local job=$PWD/${1##*/} base console t0 t1 t2=0 pid rc i
	job=${job%.sh}.sh
	shift
	[ -f "$job" ] || fail "vm_boot: no job script $job"
	base=${job%.sh}
	console=$base.console
	rm -f "$base.out" "$base.rc" "$base.uptime" "$console"
	WBK_BOOTS=$((WBK_BOOTS + 1))
	local -a cmd
	mapfile -t cmd < <(qemu_cmd "$WBK_ACCEL" "$console" "$job" "$@")
	t0=$(date +%s%N)
	"${cmd[@]}" >"$base.qemu.log" 2>&1 &
	pid=$!
	wb_defer "kill_ours $pid qemu-system; wait $pid"
	t1=
	for ((i = 0; i < WBK_BOOT_TIMEOUT * 5; i++)); do
		if [ -z "$t1" ] && [ -e "$base.uptime" ]; then t1=$(date +%s%N); fi
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill_ours "$pid" qemu-system
		wait "$pid" 2>/dev/null || true
		tail -n 30 "$console" >&2
		[ -f "$base.out" ] && tail -n 30 "$base.out" >&2
		fail "guest ${job##*/} still running after ${WBK_BOOT_TIMEOUT}s (killed)"
	fi
	rc=0
	wait "$pid" || rc=$?
	t2=$(date +%s%N)
	[ "$rc" -eq 0 ] || { cat "$base.qemu.log" >&2; fail "qemu exited $rc"; }
	[ -n "$t1" ] || { cat "$base.qemu.log" >&2; tail -n 40 "$console" >&2; fail "guest ${job##*/}: the job never started"; }
	sed 's/^/   guest| /' "$base.out"
	echo "figure: boot ${job##*/} ($WBK_ACCEL): $(ms2s $((t1 - t0))) s to the job, job $(ms2s $((t2 - t1))) s"
	[ -f "$base.rc" ] || { tail -n 40 "$console" >&2; fail "guest ${job##*/}: no exit status (the guest died?)"; }
	rc=$(cat "$base.rc")
	[ "$rc" = 0 ] || { tail -n 20 "$console" >&2; fail "guest ${job##*/} exited $rc"; }
}

# ms2s NANOSECONDS: seconds with one decimal.
ms2s() { printf '%d.%d' $(($1 / 1000000000)) $(($1 / 100000000 % 10)); }

# job NAME: write the job script NAME.sh in the current directory from
# standard input, after the guest set-up: the suite's variables (the guest
# starts with an empty environment) and guest.sh.
job() {
	{
		printf 'export WBK_BIN=%q WBK_KIO=%q WBK_LIB=%q\n' "$WBK_BIN" "$WBK_KIO" "$WBK_LIB"
		printf 'kio() { "$WBK_KIO" "$@"; }\n'
		echo "source \"\$WBK_LIB/guest.sh\""
		cat
	} >"$1.sh"
}

# workload SEED OPS BLOCKS: a deterministic mixed workload for kio on
# stdout, as phase "main" (ending with a FLUSH) and phase "tail" (three
# writes, never flushed): OPS operations on the first BLOCKS 4 KiB blocks:
# 4 KiB, 64 KiB, 512 B, unaligned (1-24 sectors from inside a block),
# 8 KiB across two blocks, FUA writes, FLUSHes. Small BLOCKS means many
# overwrites.
workload() {
	local i r blk
	RANDOM=$1
	echo "phase main"
	for ((i = 0; i < $2; i++)); do
		r=$((RANDOM % 16))
		blk=$((RANDOM % $3))
		case $r in
		0 | 1 | 2 | 3 | 4) echo "w $((blk * 4))k 4k" ;;
		5 | 6) echo "w $((blk / 16 * 64))k 64k" ;;
		7 | 8 | 9) echo "w $(((blk * 8 + RANDOM % 8) * 512)) 512" ;;
		10 | 11 | 12) echo "w $(((blk * 8 + 1 + RANDOM % 6) * 512)) $(((1 + RANDOM % 24) * 512))" ;;
		13) echo "wf $((blk * 4))k 4k" ;;
		14) echo "w $(((blk * 8 + 3) * 512)) 8k" ;;
		15) echo "f" ;;
		esac
	done
	echo "f"
	echo "phase tail"
	echo "w 100k 4k"
	echo "w $((($3 - 1) * 4))k 512"
	echo "w 64k 64k"
}

# writeboost_reads BACKING CACHE STATUS SHA PHASE: the host's side of a
# cache the kernel target left behind (scenarios 1 and 2). STATUS is the
# kernel's `dmsetup status` line at its last FLUSH, SHA the sha256 of its
# device then, PHASE the workload's phase that FLUSH ended. Copies of the
# images go to k-backing.img and k-cache.img, untouched. On copies:
# wb-check is consistent, agrees with the kernel's dirty count and changes
# nothing; wb-create serves the same bytes (nbdcopy, and every tagged
# sector over NBD) with the same dirty count; wb-check --writeback leaves
# the backing image equal to them; wb-status - parses the kernel's status
# line and --raw prints it back. Leaves check.json (wb-check's report) and
# wb.status (wb-status --raw after the replay).
writeboost_reads() {
	local backing=$1 cache=$2 status=$3 ksha=$4 phase=$5 kdirty
	kdirty=$(cut -d' ' -f10 "$status")
	[ -n "$ksha" ] && [ -n "$kdirty" ] || fail "no kernel view"
	figure "kernel: $kdirty dirty blocks at the last FLUSH; status $(cut -d' ' -f4-10 "$status")"
	wb_copy "$cache" k-cache.img
	wb_copy "$backing" k-backing.img

	# wb-check: consistent, and the same dirty count; it changes nothing.
	check_json "$cache" >check.json
	[ "$CHECK_RC" -eq 0 ] || { cat check.json; fail "wb-check exited $CHECK_RC on the kernel's cache"; }
	same "wb-check dirty blocks vs the kernel's nr_dirty_cache_blocks" "$(jq .nr_dirty_blocks check.json)" "$kdirty"
	same "cache image unchanged by wb-check" "$(sha "$cache")" "$(sha k-cache.img)"
	figure "wb-check: $(jq -r '"\(.status), \(.valid_segments) valid segments, last_flushed_id \(.last_flushed_id), last_writeback_id \(.last_writeback_id), superblock record \(.superblock_record)"' check.json)"

	# wb-create serves the bytes the kernel served.
	wb_copy k-backing.img b1.img
	wb_copy k-cache.img c1.img
	wb_start vol b1.img c1.img
	same "wb-create (nbdcopy) vs the kernel's device" "$(nbd_sha "$(wb_uri vol)")" "$ksha"
	kio verify --target "$(wb_uri vol)" --script workload --through "$phase" || fail "tagged sectors over NBD"
	same "wb-status nr_dirty_cache_blocks after replay" "$(status_field vol .nr_dirty_cache_blocks)" "$kdirty"
	wb-status --raw vol >wb.status
	wb_stop

	# wb-check --writeback: the backing image alone holds the same bytes.
	wb_copy k-backing.img b2.img
	wb_copy k-cache.img c2.img
	wb-check c2.img --writeback b2.img >writeback.out || { cat writeback.out; fail "wb-check --writeback"; }
	same "backing after wb-check --writeback vs the kernel's device" "$(sha b2.img)" "$ksha"
	kio verify --target b2.img --script workload --through "$phase" >/dev/null || fail "tagged sectors of the written-back backing"
	check_json c2.img >check2.json
	same "dirty blocks after --writeback" "$(jq .nr_dirty_blocks check2.json)" 0

	# wb-status - parses the kernel's line, and --raw prints it back.
	wb-status - <"$status" >/dev/null || fail "wb-status - rejects the kernel's line: $(cat "$status")"
	same "wb-status --raw - of the kernel's line" "$(wb-status --raw - <"$status")" "$(cat "$status")"
	same "wb-status --json - nr_dirty_cache_blocks" "$(wb-status --json - <"$status" | jq .nr_dirty_cache_blocks)" "$kdirty"
	rm -f b1.img c1.img b2.img c2.img
}

# figure TEXT: a figure line (testing/kernel/run.sh shows them).
figure() { echo "figure: $*"; }

# same WHAT A B: fail unless A = B, else print a figure line.
same() {
	[ "$2" = "$3" ] || fail "$1: $2 != $3"
	figure "$1: equal ($2)"
}

# kio ARGS...: the workload and checking tool (testing/kernel/tools/kio).
kio() { "$WBK_KIO" "$@"; }

# wb_copy SRC DST: copy an image, keeping holes.
wb_copy() { cp --sparse=always "$1" "$2"; }

# nbd_sha URI: sha256 of the export, read with nbdcopy.
nbd_sha() { nbdcopy "$1" - | sha256sum | cut -d' ' -f1; }

# check_json CACHE [ARGS...]: wb-check --json, with its exit code in CHECK_RC.
CHECK_RC=0
check_json() {
	CHECK_RC=0
	wb-check --json "$@" || CHECK_RC=$?
}
