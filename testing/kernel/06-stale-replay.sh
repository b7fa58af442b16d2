# Scenario 6: the kernel target's stale replay (a known kernel behaviour,
# docs/kernel-differences.md).
#
# Guest, dm-writeboost with update_sb_record_interval 1: write block 100 in
# full (A), FLUSH, write it all back (drop_caches) and wait for the
# superblock record to name that segment; write one sector of it (B, sector
# 800), FLUSH, write back, wait for the record again; cut the power. The
# volume then holds B in sector 800 and A in 801-807.
# Host, on copies: writeboost's replay (wb-create, and wb-check --writeback)
# returns exactly that. Guest: the kernel's replay of the same images
# returns the old full copy A in sector 800 too, and writes it over the
# backing device. Both are asserted: writeboost must be right, and the
# kernel's known difference must still be there as documented (if a kernel
# fixes it, this scenario says so and the document must change).
source "$(dirname "$0")/lib.sh"

sparse backing.img 16M
sparse cache.img 5M
cat >workload <<'EOF'
phase full
w 400k 4k
f
phase sector
w 400k 512
f
EOF
A=2 B=5 # the script lines of the two writes: their tags

job boot1 <<'EOF'
dm_create wb /dev/vda /dev/vdb update_sb_record_interval 1
settle() {
	dmsetup message wb 0 drop_caches
	dm_wait_writeback wb 60
	local want i
	want=$(dm_field wb 6)
	for ((i = 0; i < 100; i++)); do
		[ "$(dm_sb_record /dev/vdb)" = "$want" ] && break
		sleep 0.1
	done
	[ "$(dm_sb_record /dev/vdb)" = "$want" ] || gfail "the superblock record stays at $(dm_sb_record /dev/vdb), not $want"
	echo "guest: written back and recorded: status $(dm_status wb | cut -d' ' -f1-7), record $(dm_sb_record /dev/vdb)"
}
kio write --target /dev/mapper/wb --script workload --phase full
settle
kio write --target /dev/mapper/wb --script workload --phase sector
settle
kio verify --target /dev/mapper/wb --script workload | tee kernel.verify
power_cut
EOF
vm_boot boot1 backing.img cache.img
wb_copy backing.img k-backing.img
wb_copy cache.img k-cache.img

# writeboost's replay: the newest data.
wb_start vol backing.img cache.img
kio verify --target "$(wb_uri vol)" --script workload || fail "writeboost's replay does not return the newest data"
same "writeboost's replay, sector 800 (B) and 801 (A)" "$(kio tags --target "$(wb_uri vol)" 800 801 | cut -d' ' -f2 | xargs)" "$B $A"
wb_stop
wb_copy k-backing.img b2.img
wb_copy k-cache.img c2.img
wb-check c2.img --writeback b2.img >/dev/null || fail "wb-check --writeback"
kio verify --target b2.img --script workload >/dev/null || fail "wb-check --writeback: the backing image does not hold the newest data"
figure "writeboost (wb-create and wb-check --writeback): sector 800 holds B (line $B), 801-807 A (line $A)"

# The kernel's replay of the same images.
job boot2 <<'EOF'
dm_create wb /dev/vda /dev/vdb
kio tags --target /dev/mapper/wb 800 801 | cut -d' ' -f2 | xargs >kernel.tags
dmsetup status wb | tee replay.status
dmsetup remove wb
kio tags --target /dev/vda 800 801 | cut -d' ' -f2 | xargs >backing.tags
EOF
vm_boot boot2 k-backing.img k-cache.img
figure "kernel replay: sectors 800 801 hold lines $(cat kernel.tags); its backing device after remove: $(cat backing.tags)"
if [ "$(cat kernel.tags)" = "$B $A" ]; then
	fail "the kernel's replay returned the newest data: its stale replay (docs/kernel-differences.md) did not reproduce; update the document"
fi
same "known kernel difference: the kernel's replay returns the old full copy" "$(cat kernel.tags)" "$A $A"
same "known kernel difference: and writes it over the backing device" "$(cat backing.tags)" "$A $A"
