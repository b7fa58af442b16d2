#!/usr/bin/env bash
# 02: qemu-io patterns at aligned, unaligned and sub-block offsets, write
# zeroes and discard, each read back with read -P. The cache block is 4 KiB
# and the sector 512 B: partial blocks exercise the dirty bits, unaligned
# runs straddle cache blocks and segments. Every pattern is checked again
# after a restart, then against the backing file once everything is written
# back (drop_caches), so a wrong merge of a partial block cannot hide.
. "$WB_TESTING/lib.sh"

sparse backing.img 64M
sparse cache.img 16M
wb_start vol backing.img cache.img --reformat
uri=$(wb_uri vol)

# checks_on TARGET OP...: run qemu-io commands on TARGET (the volume's URI or
# a file); a non-zero exit or any "Pattern verification failed" fails.
checks_on() {
	local target=$1 out
	shift
	out=$(qemu-io -f raw "$target" "$@" 2>&1) || fail "qemu-io $target $*: $out"
	if grep -Eqi 'fail|error|mismatch' <<<"$out"; then
		echo "$out" >&2
		fail "qemu-io reported a failure"
	fi
}
checks() { checks_on "$uri" "$@"; }

# (offset length pattern): aligned, sub-block, unaligned and straddling.
writes=(
	"0 4096 0x11"
	"8192 65536 0x22"
	"1048576 512 0x33"
	"1049088 1024 0x34"
	"1052160 512 0x35"
	"2097664 4096 0x44"
	"3145215 9000 0x55"
	"4194300 8 0x66"
	"5242880 1048576 0x77"
	"$((524288 - 2048)) 8192 0x88"
	"7000001 3 0x99"
)
note "writes"
args=()
for w in "${writes[@]}"; do
	set -- $w
	args+=(-c "write -P $3 $1 $2")
done
checks "${args[@]}"

# Overwrite part of a block, then the middle of an earlier write.
checks -c "write -P 0xaa 1536 1024" -c "write -P 0xbb 20000 100"
# Zeroes and discard (discard of a written range must read back as written
# or zero: NBD leaves it unspecified; write -z must read zeroes).
checks -c "write -z 40960 16384" -c "write -z 12000000 5000"
checks -c "write -P 0xcc 9437184 131072" -c "discard 9437184 131072"

# verify_all [TARGET]: every pattern, as overwritten and zeroed.
verify_all() {
	local target=${1:-$uri} a=()
	for w in "${writes[@]}"; do
		set -- $w
		case $1 in
		0) a+=(-c "read -P 0x11 0 1536" -c "read -P 0xaa 1536 1024" -c "read -P 0x11 2560 1536") ;;
		8192) a+=(-c "read -P 0x22 8192 11808" -c "read -P 0xbb 20000 100" -c "read -P 0x22 20100 20860"
			-c "read -P 0 40960 16384" -c "read -P 0x22 57344 16384") ;;
		*) a+=(-c "read -P $3 $1 $2") ;;
		esac
	done
	a+=(-c "read -P 0 12000000 5000" -c "read -P 0 4096 4096" -c "read -P 0 60000000 4096")
	checks_on "$target" "${a[@]}"
}
note "verify"
verify_all
# Unaligned reads that cross pattern edges.
checks -c "read -P 0x33 1048576 512" -c "read -P 0 1048064 512" -c "read -v 1048570 20"

note "restart"
wb_stop
wb_start vol backing.img cache.img
verify_all

note "write back everything; the backing file alone must hold the patterns"
wb-message vol drop_caches || fail "drop_caches"
[ "$(status_field vol .nr_dirty_cache_blocks)" -eq 0 ] || fail "dirty blocks after drop_caches"
wb_stop
verify_all backing.img
echo "figure: qemu-io patterns ${#writes[@]} + 4 overwrites/zeroes verified 3 times"
