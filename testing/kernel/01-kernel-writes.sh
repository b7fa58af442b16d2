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
figure "kernel: $(sed 's/^kio verify: //' kernel.verify | cut -d, -f1)"
writeboost_reads backing.img cache.img kernel.status "$ksha" main
[ "$(jq .last_flushed_id check.json)" -lt "$(jq .nr_segments check.json)" ] || fail "the ring lapped: grow cache.img"

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
