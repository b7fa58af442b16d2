# Scenario 7: a cache formatted by the kernel target vs one formatted by
# wb-format-cache, from the same starting bytes.
#
# The starting image is random bytes (so every byte a format writes, zeroes
# included, shows) of 1 MiB + 20 segments + 100 KiB (an unused tail), with
# its first sector zeroed: the kernel target's documented way to ask for a
# format. Guest: dmsetup create over it formats it; the power is cut at
# once (no I/O, no remove, which would write a segment). Host: the same
# bytes through wb-format-cache. The two images must be equal in every
# sector but the two that docs/format.md gives to writeboost's extension
# records (8: binding, 2040: clean stop), which a format clears anyway, so
# they are expected equal too and the figure says whether they are.
# Then each side accepts the other's format: wb-check calls the kernel's
# consistent and empty, and the kernel target starts on writeboost's.
source "$(dirname "$0")/lib.sh"

sectors=$(((1024 + 20 * 512 + 100) * 2))
head -c $((sectors * 512)) /dev/urandom >start.img
dd if=/dev/zero of=start.img bs=512 count=1 conv=notrunc status=none
wb_copy start.img kernel.img
wb_copy start.img wb.img
sparse backing.img 16M

t0=$(date +%s%N)
wb-format-cache -q wb.img || fail "wb-format-cache"
figure "wb-format-cache: $(ms2s $(($(date +%s%N) - t0))) s"

job format <<'EOF'
t0=$(date +%s%N)
dm_create f /dev/vda /dev/vdb
echo "guest: dmsetup create (format) took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
dmsetup status f | tee kernel.status
power_cut
EOF
vm_boot format backing.img kernel.img

figure "the kernel's status on its fresh cache: $(cut -d' ' -f4- kernel.status)"
kio diff --ignore 8,2040 kernel.img wb.img || fail "the kernel's format and wb-format-cache's differ (sectors above)"
if kio diff kernel.img wb.img >/dev/null 2>&1; then
	figure "kernel format vs wb-format-cache: equal in every byte ($sectors sectors, extension sectors 8 and 2040 included)"
else
	figure "kernel format vs wb-format-cache: equal but for the extension sectors 8 and 2040 ($(kio diff kernel.img wb.img 2>&1 | sed 's/^kio: //'))"
fi
kio diff start.img kernel.img >format.diff 2>&1 || true
figure "what a format writes: $(sed 's/^kio: diff: //' format.diff)"

check_json kernel.img >check.json
[ "$CHECK_RC" -eq 0 ] || { cat check.json; fail "wb-check on the kernel's fresh cache exited $CHECK_RC"; }
same "wb-check on the kernel's fresh cache: valid segments" "$(jq .valid_segments check.json)" 0
same "wb-check on the kernel's fresh cache: nr_segments" "$(jq .nr_segments check.json)" 20

job start <<'EOF'
dm_create f /dev/vda /dev/vdb
dmsetup status f | tee kernel2.status
dmsetup remove f
EOF
vm_boot start backing.img wb.img
same "the kernel's status on wb-format-cache's cache (nr_segments)" "$(cut -d' ' -f6 kernel2.status)" 20
