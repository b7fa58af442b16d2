#!/usr/bin/env bash
# The kernel interop suite: runs every scenario testing/kernel/[0-9]*.sh,
# each in its own temporary directory, against Debian's kernel with the
# distribution's dm-writeboost module in QEMU, and ends with the line
# "kernel: N passed, N failed". scripts/kernel-deps.sh installs what it
# needs (make test-kernel runs both).
#
# Usage: testing/kernel/run.sh [REGEX]   (scenarios whose name matches, e.g. 03 or '0[12]')
# Environment:
#   WB_BIN            the writeboost binaries to test (default: bin/ of this tree)
#   WB_KERNEL_ACCEL   kvm, tcg or auto (default: KVM if a probe boot shows
#                     it works, else TCG)
#   WB_KERNEL         the kernel release (default: the newest one in /boot
#                     with dm-writeboost built for it)
#   WB_KERNEL_KEEP=1  keep the work directory of a scenario that passed too
set -uo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
lib=$top/testing/kernel
started=$(date +%s)

die() {
	echo "kernel: cannot run the suite: $*" >&2
	echo "kernel: 0 passed, 1 failed"
	exit 1
}

export WBK_BIN=${WB_BIN:-$top/bin}
export WBK_LIB=$lib
export WB_TESTING=$top/testing
for c in wb-format-cache wb-create wb-status wb-message wb-check; do
	[ -x "$WBK_BIN/$c" ] || die "no $WBK_BIN/$c (make build)"
done
export PATH="$WBK_BIN:$PATH"
for c in qemu-system-x86_64 dmsetup modprobe cpio gzip nbdcopy; do
	command -v "$c" >/dev/null || die "no $c (scripts/kernel-deps.sh installs it)"
done
[ "$(dpkg-query -W -f '${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] ||
	die "busybox-static is not installed (scripts/kernel-deps.sh installs it)"

# The kernel: the newest in /boot whose modules include dm-writeboost.
kver=${WB_KERNEL:-}
if [ -z "$kver" ]; then
	for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -rV); do
		if modinfo -k "$v" -n dm-writeboost >/dev/null 2>&1; then
			kver=$v
			break
		fi
	done
fi
[ -n "$kver" ] || die "no kernel in /boot with the dm-writeboost module (scripts/kernel-deps.sh)"
export WBK_KERNEL=$kver WBK_VMLINUZ=/boot/vmlinuz-$kver
[ -r "$WBK_VMLINUZ" ] || die "no $WBK_VMLINUZ"

run=$(mktemp -d /tmp/wbkernel.XXXXXX)
trap 'rm -rf "$run"' EXIT

# kio, built on the host, runs on both sides.
export WBK_KIO=$run/kio
(cd "$top" && go build -o "$WBK_KIO" ./testing/kernel/tools/kio) || die "go build kio"

# The initramfs: static busybox, testing/kernel/init, and the modules the
# init needs before it can reach the host's root file system (virtio, 9p);
# everything else (dm-mod, dm-writeboost, nbd, ext4) the job loads with the
# host's modprobe from the host's /lib/modules.
ir=$run/initramfs
mkdir -p "$ir"/{bin,dev,proc,sys,newroot}
cp /bin/busybox "$ir/bin/busybox"
cp "$lib/init" "$ir/init"
chmod 755 "$ir/init"
for m in virtio_pci virtio_blk 9pnet_virtio 9p; do
	modprobe -S "$kver" --show-depends "$m" || die "modprobe -S $kver --show-depends $m"
done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' >"$ir/modules.list"
while read -r m; do
	mkdir -p "$ir$(dirname "$m")"
	case $m in
	*.ko) cp "$m" "$ir$m" ;;
	*.ko.xz) xz -dc "$m" >"$ir${m%.xz}" ;;
	*.ko.zst) zstd -qdc "$m" >"$ir${m%.zst}" ;;
	*.ko.gz) gzip -dc "$m" >"$ir${m%.gz}" ;;
	esac
done <"$ir/modules.list"
sed -i -E 's/\.ko\.(xz|zst|gz)$/.ko/' "$ir/modules.list"
export WBK_INITRD=$run/initrd.gz
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) >"$WBK_INITRD" || die "cpio"

# KVM when it works, TCG otherwise: a guest under KVM reaches its job in a
# second or two, so a probe that shows nothing in 15 s means no KVM here.
accel=${WB_KERNEL_ACCEL:-auto}
if [ "$accel" = auto ]; then
	accel=tcg
	if [ -w /dev/kvm ]; then
		probe=$run/probe
		mkdir -p "$probe"
		t0=$(date +%s)
		if (cd "$probe" && WBK_ACCEL=kvm WBK_BOOT_TIMEOUT=15 WBK_SMP=1 bash -c '
			source "$WBK_LIB/lib.sh"
			job probe <<<"echo probe ok"
			vm_boot probe.sh' >"$probe/log" 2>&1); then
			accel=kvm
			echo "kernel: KVM works ($(($(date +%s) - t0))s probe boot)"
		else
			echo "kernel: KVM does not work here (probe boot: $(grep -m1 '^FAIL' "$probe/log" | cut -c7-120)); using TCG"
		fi
	else
		echo "kernel: no writable /dev/kvm; using TCG"
	fi
fi
export WBK_ACCEL=$accel
echo "kernel: $kver, dm-writeboost-dkms $(dpkg-query -W -f '${Version}' dm-writeboost-dkms 2>/dev/null || echo '?'), $(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//'), $accel, binaries from $WBK_BIN"

pass=0 failn=0 failed=()
for t in "$lib"/[0-9]*.sh; do
	name=$(basename "$t" .sh)
	[[ -n "${1:-}" && ! "$name" =~ $1 ]] && continue
	work=$(mktemp -d "/tmp/wbktest.$name.XXXXXX")
	start=$(date +%s)
	if (cd "$work" && WB_RUN_DIR="$work/run" timeout 900 bash "$t") >"$work/log" 2>&1; then
		pass=$((pass + 1))
		echo "PASS $name ($(($(date +%s) - start))s)"
		grep '^figure:' "$work/log" | sed 's/^/     /'
		if [ "${WB_KERNEL_KEEP:-0}" = 1 ]; then echo "     (kept: $work)"; else rm -rf "$work"; fi
	else
		failn=$((failn + 1))
		failed+=("$name")
		echo "FAIL $name ($(($(date +%s) - start))s), log: $work/log"
		grep '^figure:' "$work/log" | sed 's/^/     /'
		grep -v '^figure:' "$work/log" | tail -n 40 | sed 's/^/     | /'
	fi
done
[ $((pass + failn)) -gt 0 ] || { echo "kernel: no scenario matches ${1:-}"; failn=1; }
echo "kernel: suite took $(($(date +%s) - started))s${failed:+; failed: ${failed[*]}}"
echo "kernel: $pass passed, $failn failed"
[ "$failn" -eq 0 ]
