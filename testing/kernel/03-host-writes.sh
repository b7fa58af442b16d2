# Scenario 3: writeboost writes, the kernel target replays.
#
# Host: wb-format-cache, wb-create, a mixed workload over NBD (4 KiB,
# 64 KiB, 512 B, unaligned and FUA writes, overwrites, FLUSHes), then:
#   A. three more writes without a FLUSH and SIGKILL (a crash);
#   B. the same workload and tail, then a clean stop (SIGTERM).
# Guest: the kernel target (dmsetup create over the same images) serves
# the bytes writeboost served: A as at the last FLUSH (the unflushed tail
# is gone in both), B everything (sha256 of the dm device and every tagged
# sector); its dirty count equals wb-check's.
source "$(dirname "$0")/lib.sh"

workload 3 300 4096 >workload

for v in a b; do
	sparse backing-$v.img 64M
	sparse cache-$v.img 64M # 126 segments: no lap (the kernel's stale replay needs one; scenario 6)
	wb-format-cache -q cache-$v.img
	wb_start vol$v backing-$v.img cache-$v.img
	kio write --target "$(wb_uri vol$v)" --script workload --phase main
	kio verify --target "$(wb_uri vol$v)" --script workload --through main >/dev/null ||
		fail "$v: writeboost does not read back what it was given"
	eval "main_$v=\$(nbd_sha \"\$(wb_uri vol$v)\")"
	kio write --target "$(wb_uri vol$v)" --script workload --phase tail
	eval "all_$v=\$(nbd_sha \"\$(wb_uri vol$v)\")"
	wb-status --raw vol$v >wb-$v.status
	if [ $v = a ]; then wb_kill; else wb_stop; fi
	check_json cache-$v.img >check-$v.json
	[ "$CHECK_RC" -eq 0 ] || { cat check-$v.json; fail "$v: wb-check exited $CHECK_RC"; }
done
same "host: FLUSHed state of A and B" "$main_a" "$main_b"
figure "host A: $(jq -r '"\(.valid_segments) valid segments, \(.nr_dirty_blocks) dirty blocks, clean stop \(.clean_stop_last_id)"' check-a.json) (after SIGKILL)"
figure "host B: $(jq -r '"\(.valid_segments) valid segments, \(.nr_dirty_blocks) dirty blocks, clean stop \(.clean_stop_last_id)"' check-b.json) (after SIGTERM)"

job guest <<'EOF'
for v in a b; do
	case $v in a) disks="/dev/vda /dev/vdb" ;; b) disks="/dev/vdc /dev/vdd" ;; esac
	dm_create $v $disks
	dmsetup status $v | tee kernel-$v.status
	kio sha --target /dev/mapper/$v | tee kernel-$v.sha
	if [ $v = a ]; then through="--through main"; else through=; fi
	kio verify --target /dev/mapper/$v --script workload $through | tee kernel-$v.verify
	dmsetup remove $v
done
EOF
vm_boot guest backing-a.img cache-a.img backing-b.img cache-b.img

same "A (SIGKILL): the kernel's replay vs writeboost at its last FLUSH" "$(cat kernel-a.sha)" "$main_a"
same "B (clean stop): the kernel's replay vs writeboost at the stop" "$(cat kernel-b.sha)" "$all_b"
same "A: the kernel's nr_dirty_cache_blocks vs wb-check" "$(cut -d' ' -f10 kernel-a.status)" "$(jq .nr_dirty_blocks check-a.json)"
same "B: the kernel's nr_dirty_cache_blocks vs wb-check" "$(cut -d' ' -f10 kernel-b.status)" "$(jq .nr_dirty_blocks check-b.json)"
for v in a b; do
	figure "$v: status, writeboost before the stop: $(cut -d' ' -f4-10 wb-$v.status)"
	figure "$v: status, kernel after its replay:   $(cut -d' ' -f4-10 kernel-$v.status)"
done
