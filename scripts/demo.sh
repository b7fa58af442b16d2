#!/usr/bin/env bash
# The quick-start demo: a writeboost volume on sparse image files, used by
# real NBD clients, inspected, drained and checked offline.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/bin:$PATH"
dir=$(mktemp -d /tmp/wb-demo.XXXXXX)
export WB_RUN_DIR="$dir/run"
pid=
cleanup() {
	[ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
uri="nbd+unix:///demo?socket=$WB_RUN_DIR/demo.sock"

step "sparse images: a 1 GiB backing device (the slow disk) and a 64 MiB cache device (the SSD)"
truncate -s 1G "$dir/backing.img"
truncate -s 64M "$dir/cache.img"
ls -ls "$dir"/*.img

step "wb-format-cache cache.img"
wb-format-cache "$dir/cache.img"

step "wb-create demo backing.img cache.img  (dmsetup create ... writeboost)"
wb-create demo "$dir/backing.img" "$dir/cache.img" 2>"$dir/wb-create.log" &
pid=$!
for _ in $(seq 100); do
	grep -q ready "$dir/wb-create.log" 2>/dev/null && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/wb-create.log"; exit 1; }
	sleep 0.1
done
cat "$dir/wb-create.log"

step "nbdinfo $uri"
nbdinfo "$uri"

step "qemu-io: a 4 KiB write, a 64 KiB write at 100 MiB, an unaligned 1000-byte write; flush; read them back"
qemu-io -f raw "$uri" \
	-c 'write -P 0xa1 0 4k' -c 'write -P 0xb2 100m 64k' -c 'write -P 0xc3 8969 1000' -c 'flush' \
	-c 'read -P 0xa1 0 4k' -c 'read -P 0xb2 100m 64k' -c 'read -P 0xc3 8969 1000' -c 'read -P 0 9969 100'

step "8 MiB of random data written at 200 MiB, then nbdcopy copies the whole volume out and it matches"
head -c 8M /dev/urandom >"$dir/data"
qemu-io -f raw "$uri" -c "write -s $dir/data 200m 8m" -c flush | grep -v '^8 MiB'
nbdcopy --progress=no "$uri" "$dir/copy.img" 2>/dev/null || nbdcopy "$uri" "$dir/copy.img"
cmp <(dd if="$dir/copy.img" bs=1M skip=200 count=8 status=none) "$dir/data" && echo "nbdcopy: the 8 MiB at 200 MiB match"
rm -f "$dir/copy.img"

step "wb-status demo  (dmsetup status, readable)"
wb-status demo

step "wb-message demo drop_caches  (write every dirty block back to the backing device)"
wb-message demo drop_caches

step "wb-status --raw demo  (the kernel's status line)"
wb-status --raw demo

step "stop with SIGTERM; the cache holds nothing dirty, so the backing image alone holds the volume"
kill -TERM "$pid"; wait "$pid"; pid=
cmp <(dd if="$dir/backing.img" bs=1M skip=200 count=8 status=none) "$dir/data" && echo "backing.img holds the 8 MiB written at 200 MiB"

step "wb-check cache.img  (offline fsck)"
wb-check "$dir/cache.img"
echo
echo "demo done (files in $dir are removed on exit)"
