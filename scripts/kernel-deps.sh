#!/usr/bin/env bash
# Install what the kernel interop suite (make test-kernel, testing/kernel/)
# needs on Debian: QEMU, Debian's kernel and its headers, the distribution's
# dm-writeboost module (dkms builds it against those headers), a static
# busybox for the guest's initramfs, dmsetup.
# As root it installs the missing packages with apt-get; otherwise it
# prints the exact apt-get line and fails.
# Exit status: 0 ready; 1 not root (nothing tried); 2 a package or the
# module cannot be had here (the reason is printed).
set -euo pipefail

pkgs=(qemu-system-x86 linux-image-amd64 linux-headers-amd64 dkms dm-writeboost-dkms
	busybox-static dmsetup kmod cpio e2fsprogs libnbd-bin jq)

installed() { [ "$(dpkg-query -W -f '${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# kernel: the newest kernel in /boot (linux-image-amd64 brings one).
kernel() { ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -rV | head -n 1; }
module_ok() { modinfo -k "$1" -n dm-writeboost >/dev/null 2>&1; }

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done
k=$(kernel)
if [ ${#missing[@]} -eq 0 ] && [ -n "$k" ] && module_ok "$k"; then
	exit 0
fi

if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "kernel-deps: missing Debian packages; run as root: apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	echo "kernel-deps: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	log=$(mktemp)
	trap 'rm -f "$log"' EXIT
	if ! apt-get update -q >"$log" 2>&1; then
		tail -n 5 "$log" >&2
		echo "kernel-deps: apt-get update failed: the kernel suite's packages cannot be had here" >&2
		exit 2
	fi
	for p in "${missing[@]}"; do
		if ! apt-cache show "$p" >/dev/null 2>&1; then
			echo "kernel-deps: Debian package $p is not available from this machine's apt sources" >&2
			exit 2
		fi
	done
	if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
		tail -n 15 "$log" >&2
		echo "kernel-deps: apt-get install ${missing[*]} failed (above): the kernel suite cannot run here" >&2
		exit 2
	fi
fi

k=$(kernel)
if [ -z "$k" ]; then
	echo "kernel-deps: no kernel in /boot after installing linux-image-amd64" >&2
	exit 2
fi
if ! module_ok "$k"; then
	# dkms builds for the kernels it is told about at install time; a kernel
	# installed before the headers, or headers after the module, needs this.
	[ "$(id -u)" -eq 0 ] || { echo "kernel-deps: dm-writeboost is not built for $k; as root: dkms autoinstall -k $k" >&2; exit 1; }
	echo "kernel-deps: building dm-writeboost for $k with dkms" >&2
	if ! dkms autoinstall -k "$k" >&2 || ! module_ok "$k"; then
		echo "kernel-deps: dkms could not build dm-writeboost for $k (linux-headers-$k installed?)" >&2
		exit 2
	fi
fi
