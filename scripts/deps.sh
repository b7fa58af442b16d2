#!/usr/bin/env bash
# Install what the demo, the test suite and the benchmark need on Debian.
# Usage: scripts/deps.sh [test|bench|demo]
# As root it installs the missing Debian packages with apt-get; otherwise it
# prints the exact apt-get line and fails.
set -euo pipefail

# command -> Debian package
declare -A pkg=(
	[nbdkit]=nbdkit
	[nbdinfo]=libnbd-bin
	[nbdcopy]=libnbd-bin
	[nbdfuse]=nbdfuse
	[qemu-io]=qemu-utils
	[qemu-nbd]=qemu-utils
	[nbd-server]=nbd-server
	[qemu-img]=qemu-utils
	[fio]=fio
	[fusermount3]=fuse3
	[mkfs.ext4]=e2fsprogs
	[e2fsck]=e2fsprogs
	[losetup]=mount
	[wipefs]=util-linux
	[mkswap]=util-linux
	[flock]=util-linux
	[mkfs.xfs]=xfsprogs
	[mkfs.btrfs]=btrfs-progs
	[sfdisk]=fdisk
	[cryptsetup]=cryptsetup-bin
	[make-bcache]=bcache-tools
	[man]=man-db
	[jq]=jq
	[systemd-analyze]=systemd
)

missing=()
for cmd in "${!pkg[@]}"; do
	command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkg[$cmd]}")
done
# The scenarios run Debian's own python3 (as other users too, so not a
# per-user install).
[ -x /usr/bin/python3 ] || missing+=(python3)
if ! command -v go >/dev/null 2>&1; then
	echo "deps: Go 1.26 is required (https://go.dev/dl/); put it on PATH" >&2
	exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing Debian packages; run as root: apt-get install -y ${missing[*]}" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
