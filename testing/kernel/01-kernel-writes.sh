# Scenario 1: the kernel target writes, the power goes; writeboost reads
# what the kernel left.
#
# Guest: dm-writeboost over two virtio disks takes a mixed workload (4 KiB,
# 64 KiB, 512 B, unaligned and FUA writes, overwrites, FLUSHes), then a
# short unflushed tail, then a hard power off. Host, on copies of the
# images: wb-check agrees with the kernel's dirty count; wb-create serves
# exactly the bytes the kernel served at its last FLUSH (sha256 read with
# nbdcopy, every tagged sector checked over NBD); wb-check --writeback
# leaves the backing image equal to them; wb-status - parses the kernel's
# status line and wb-status --raw - prints it back unchanged. Guest again:
# the kernel's own replay of the same images serves the same bytes.
source "$(dirname "$0")/lib.sh"

sparse backing.img 64M
sparse cache.img 64M # 126 segments: this workload does not lap the ring (scenario 2 does)

workload 1 240 4096 >workload # 16 MiB: overwrites are common

job boot1 <<'EOF'
dm_create wb /dev/vda /dev/vdb
kio write --target /dev/mapper/wb --script workload --phase main
kio verify --target /dev/mapper/wb --script workload --through main | tee kernel.verify
dmsetup status wb | tee kernel.status
kio write --target /dev/mapper/wb --script workload --phase tail
power_cut
EOF
vm_boot boot1 backing.img cache.img

ksha=$(sed -n 's/.*sha256 //p' kernel.verify)
kdirty=$(cut -d' ' -f10 kernel.status)
[ -n "$ksha" ] && [ -n "$kdirty" ] || fail "no kernel view"
figure "kernel: $(sed 's/^kio verify: //' kernel.verify | cut -d, -f1); $kdirty dirty blocks at the last FLUSH"
cp --sparse=always cache.img k-cache.img
cp --sparse=always backing.img k-backing.img

# wb-check: consistent, and the same dirty count; it changes nothing.
check_json cache.img >check.json
[ "$CHECK_RC" -eq 0 ] || { cat check.json; fail "wb-check exited $CHECK_RC on the kernel's cache"; }
same "wb-check dirty blocks vs the kernel's nr_dirty_cache_blocks" "$(jq .nr_dirty_blocks check.json)" "$kdirty"
same "cache image unchanged by wb-check" "$(sha cache.img)" "$(sha k-cache.img)"
figure "wb-check: $(jq -r '"\(.status), \(.valid_segments) valid segments, last_flushed_id \(.last_flushed_id)"' check.json)"
[ "$(jq .last_flushed_id check.json)" -lt "$(jq .nr_segments check.json)" ] || fail "the ring lapped: grow cache.img"

# wb-create serves the bytes the kernel served.
wb_copy k-backing.img b1.img
wb_copy k-cache.img c1.img
wb_start vol b1.img c1.img
same "wb-create (nbdcopy) vs the kernel's device" "$(nbd_sha "$(wb_uri vol)")" "$ksha"
kio verify --target "$(wb_uri vol)" --script workload --through main || fail "tagged sectors over NBD"
same "wb-status nr_dirty_cache_blocks after replay" "$(status_field vol .nr_dirty_cache_blocks)" "$kdirty"
wb-status --raw vol >wb.status
wb_stop

# wb-check --writeback: the backing image alone holds the same bytes.
wb_copy k-backing.img b2.img
wb_copy k-cache.img c2.img
wb-check --writeback b2.img c2.img >writeback.out || { cat writeback.out; fail "wb-check --writeback"; }
same "backing after wb-check --writeback vs the kernel's device" "$(sha b2.img)" "$ksha"
kio verify --target b2.img --script workload --through main >/dev/null || fail "tagged sectors of the written-back backing"
check_json c2.img >check2.json
same "dirty blocks after --writeback" "$(jq .nr_dirty_blocks check2.json)" 0

# wb-status - parses the kernel's line, and --raw prints it back.
wb-status - <kernel.status >/dev/null || fail "wb-status - rejects the kernel's line: $(cat kernel.status)"
same "wb-status --raw - of the kernel's line" "$(wb-status --raw - <kernel.status)" "$(cat kernel.status)"
same "wb-status --json - nr_dirty_cache_blocks" "$(wb-status --json - <kernel.status | jq .nr_dirty_cache_blocks)" "$kdirty"

# The kernel's own replay of the same images.
job boot2 <<'EOF'
dm_create wb /dev/vda /dev/vdb
kio sha --target /dev/mapper/wb | tee replay.sha
dmsetup status wb | tee replay.status
EOF
vm_boot boot2 k-backing.img k-cache.img
same "kernel replay vs writeboost replay" "$(cat replay.sha)" "$ksha"
figure "status after replay, kernel:     $(cut -d' ' -f4-10 replay.status)"
figure "status after replay, writeboost: $(cut -d' ' -f4-10 wb.status)"
