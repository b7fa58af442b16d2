# Scenario 2: scenario 1 with update_sb_record_interval 1 and a ring that
# laps many times.
#
# Guest: the kernel target on a cache of 8 segments (1016 cache blocks)
# with update_sb_record_interval 1 takes a workload of about ten times
# that over 8 MiB, so it writes back and reuses every slot again and again
# and its superblock record moves; after the last FLUSH the job waits until
# the record has caught up with last_writeback_id, then the power is cut. Host: the same
# checks as scenario 1 (writeboost_reads in lib.sh): wb-check, wb-create,
# wb-check --writeback and wb-status agree with the kernel's last FLUSH.
# The kernel's own replay of these images is shown, not asserted: with a
# superblock record it can return stale data (scenario 6).
source "$(dirname "$0")/lib.sh"

sparse backing.img 32M
sparse cache.img 5M # 1 MiB + 8 segments
workload 2 700 2048 >workload

job boot1 <<'EOF'
dm_create wb /dev/vda /dev/vdb update_sb_record_interval 1
kio write --target /dev/mapper/wb --script workload --phase main
kio verify --target /dev/mapper/wb --script workload --through main | tee kernel.verify
dmsetup status wb | tee kernel.status
# The record names the last segment the kernel has written back: wait
# until it has caught up with last_writeback_id and both stay put (writeback
# of a batch may still run after the FLUSH returned), so the dirty count
# below is the one the record tells a replay.
stable=0
for ((i = 0; i < 40 && stable < 2; i++)); do
	if [ "$(dm_sb_record /dev/vdb)" = "$(dm_field wb 6)" ]; then
		stable=$((stable + 1))
	else
		stable=0
	fi
	sleep 0.7
done
[ $stable -ge 2 ] || gfail "the superblock record $(dm_sb_record /dev/vdb) does not settle at last_writeback_id $(dm_field wb 6)"
echo "guest: superblock record $(dm_sb_record /dev/vdb) = last_writeback_id"
dm_sb_record /dev/vdb >kernel.record
dmsetup status wb | tee kernel.status2
kio write --target /dev/mapper/wb --script workload --phase tail
power_cut
EOF
vm_boot boot1 backing.img cache.img

# The kernel's status may have moved while the job waited for the record
# (writeback); the bytes have not. Take the later line for the counts.
ksha=$(sed -n 's/.*sha256 //p' kernel.verify)
figure "kernel: $(sed 's/^kio verify: //' kernel.verify | cut -d, -f1)"
nseg=$(cut -d' ' -f6 kernel.status2)
flushed=$(cut -d' ' -f8 kernel.status2)
[ "$flushed" -ge $((3 * nseg)) ] || fail "the ring lapped fewer than 3 times (last_flushed_id $flushed, $nseg segments)"
figure "ring: last_flushed_id $flushed on $nseg segments: $((flushed / nseg)) laps; superblock record $(cat kernel.record)"
[ "$(cat kernel.record)" -gt 0 ] || fail "the kernel never wrote its superblock record"
writeboost_reads backing.img cache.img kernel.status2 "$ksha" main
same "wb-check's superblock_record vs the kernel's" "$(jq .superblock_record check.json)" "$(cat kernel.record)"

job boot2 <<'EOF'
dm_create wb /dev/vda /dev/vdb
kio sha --target /dev/mapper/wb >replay.sha
kio verify --target /dev/mapper/wb --script workload --through main >replay.verify 2>&1 || true
EOF
vm_boot boot2 k-backing.img k-cache.img
if [ "$(cat replay.sha)" = "$ksha" ]; then
	figure "the kernel's own replay: the same bytes"
else
	figure "the kernel's own replay differs (its known stale replay, scenario 6): $(tail -n 1 replay.verify | cut -c1-160)"
	sed -n 's/^  /   kernel replay: /p' replay.verify | head -n 5
fi
