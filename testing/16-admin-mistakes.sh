#!/usr/bin/env bash
# 16: no mistake an admin can make with device names destroys data (issue
# 11). Each mistake is refused before anything is written, with one line
# saying what is wrong, and the images keep their sha256:
#   - wb-format-cache and wb-create --reformat on an ext4 image (the probe is
#     util-linux's wipefs); --force formats it, and so does wipefs -a first;
#   - swapped arguments: BACKING a writeboost cache, CACHE an ext4 image;
#   - the same file as BACKING and CACHE, directly, through a hard link and
#     through a symbolic link;
#   - a cache larger than its backing device (accepted with --force);
#   - two volumes on one cache, the second through a loop device over it:
#     refused while the first runs, naming it, in both directions.
# (Partitions go the same way in internal/blockdev's tests: the loop driver
# here may not scan partition tables.)
. "$WB_TESTING/lib.sh"

refusals=0
# refuse LABEL PATTERN IMAGE... -- COMMAND...: COMMAND exits non-zero with
# one error line (prefixed with its name, matching the extended regex
# PATTERN), no panic, and every IMAGE keeps its sha256.
refuse() {
	local label=$1 pattern=$2 imgs=() rc=0 msg
	shift 2
	while [ "$1" != -- ]; do imgs+=("$1"); shift; done
	shift
	keep "${imgs[@]}"
	timeout 60 "$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" -ne 0 ] || fail "$label: '$*' succeeded"
	[ "$rc" -ne 124 ] || fail "$label: '$*' hung"
	no_panic err.txt out.txt
	# wb-create also logs (log/slog lines, "time=..."); the error is the
	# one other line.
	[ "$(grep -vc '^time=' err.txt || true)" -eq 1 ] || { cat err.txt; fail "$label: not one error line"; }
	msg=$(grep -v '^time=' err.txt)
	[[ "$msg" == "$(basename "$1"): "* ]] || fail "$label: error not prefixed with '$(basename "$1"): ': $msg"
	grep -Eq -- "$pattern" <<<"$msg" || fail "$label: '$msg' does not say /$pattern/"
	kept "$label"
	printf '%-30s exit %d: %s\n' "$label" "$rc" "$msg"
	refusals=$((refusals + 1))
}
forced=0

sparse backing.img 64M
sparse cache.img 8M
wb-format-cache -q cache.img
ext4() { sparse "$1" 32M; mkfs.ext4 -q -F "$1"; }

note "a file system is not formatted"
ext4 fs.img
refuse "wb-format-cache ext4" 'ext4 signature at offset 0x438.*wipefs -a fs\.img.*--force' \
	fs.img -- wb-format-cache fs.img
refuse "wb-create --reformat ext4" 'refusing to format CACHE fs\.img: it holds an ext4 signature at offset 0x438.*wipefs -a fs\.img.*--force' \
	fs.img backing.img -- wb-create --reformat vol backing.img fs.img
refuse "wb-create ext4 cache" 'not a writeboost cache: it holds an ext4 signature at offset 0x438: are BACKING and CACHE swapped\?' \
	fs.img backing.img -- wb-create vol backing.img fs.img
grep -q 'wb-format-cache\|--reformat' err.txt && fail "a command that formats fs.img was suggested: $(cat err.txt)"
e2fsck -fn fs.img >/dev/null 2>&1 || fail "fs.img is no longer a clean ext4"
wb-format-cache --force fs.img >/dev/null || fail "wb-format-cache --force fs.img"
[ -z "$(wipefs --no-act --noheadings fs.img)" ] || fail "a signature is left after formatting: $(wipefs --no-act fs.img)"
wb-check fs.img >/dev/null || fail "wb-check after wb-format-cache --force"
forced=$((forced + 1))
ext4 fs2.img
wb_start vol backing.img fs2.img --reformat --force
wb_stop
forced=$((forced + 1))
ext4 fs3.img
wipefs -a -q fs3.img
wb-format-cache -q fs3.img || fail "wb-format-cache after wipefs -a"

note "swapped arguments"
ext4 fs.img
refuse "swapped" 'cache device fs\.img is not a writeboost cache: it holds an ext4 signature at offset 0x438, and BACKING cache\.img is a writeboost cache device: BACKING and CACHE look swapped' \
	cache.img fs.img -- wb-create vol cache.img fs.img
grep -q 'wb-format-cache\|--reformat' err.txt && fail "a command that formats fs.img was suggested: $(cat err.txt)"
refuse "swapped, --reformat" 'BACKING cache\.img is a writeboost cache device.*swapped' \
	cache.img fs.img -- wb-create --reformat vol cache.img fs.img
sparse zero.img 64M
refuse "swapped, empty cache" 'cache device zero\.img is not formatted, but BACKING cache\.img is a writeboost cache device: are BACKING and CACHE swapped' \
	cache.img zero.img -- wb-create vol cache.img zero.img

note "one file twice"
ln cache.img hard.img
ln -s cache.img sym.img
refuse "same file" "share storage \(both are $WB_WORK/cache\.img\)" \
	cache.img -- wb-create vol cache.img cache.img
refuse "same file, --force" "share storage \(both are $WB_WORK/cache\.img\)" \
	cache.img -- wb-create --force vol ./cache.img "$WB_WORK/cache.img"
refuse "hard link" "share storage \($WB_WORK/hard\.img and $WB_WORK/cache\.img are the same file" \
	cache.img -- wb-create vol hard.img cache.img
refuse "symlink" "share storage \(both are $WB_WORK/cache\.img\)" \
	cache.img -- wb-create vol sym.img cache.img

note "a cache larger than its backing device"
sparse small.img 4M
refuse "cache larger" 'CACHE cache\.img \(8\.0 MiB\) is larger than BACKING small\.img \(4\.0 MiB\): are BACKING and CACHE swapped\? \(--force starts anyway\)' \
	small.img cache.img -- wb-create vol small.img cache.img
wb_start vol small.img cache.img --force
qemu-io -f raw "$(wb_uri vol)" -c "write -P 0x33 0 1M" -c flush >/dev/null || fail "write with --force"
wb_stop
forced=$((forced + 1))

note "two volumes on one cache through a loop device"
sparse b1.img 32M
sparse b2.img 32M
sparse c.img 8M
loop_attach c.img
loop=$LOOP_DEV
wb_start va b1.img c.img --reformat
refuse "loop over a held cache" "cache device $loop: in use by writeboost volume va \(pid $WB_PID\) \(through $loop → $WB_WORK/c\.img\)" \
	b2.img -- wb-create vb b2.img "$loop"
refuse "loop, --reformat --force" "cache device $loop: in use by writeboost volume va" \
	b2.img -- wb-create --reformat --force vb b2.img "$loop"
refuse "format a loop over it" "$loop: in use by writeboost volume va \(pid $WB_PID\) \(through $loop → $WB_WORK/c\.img\)" \
	-- wb-format-cache --force "$loop"
qemu-io -f raw "$(wb_uri va)" -c "read -P 0 0 1M" >/dev/null || fail "va stopped serving"
wb_stop
# The cache belongs to b1.img now: over b2.img only with --force (rebinds).
refuse "bound to another backing" "cache device $loop belongs to file $WB_WORK/b1\.img" \
	b2.img c.img -- wb-create vb b2.img "$loop"
wb_start vb b2.img "$loop" --force
forced=$((forced + 1))
refuse "file under a held loop" "cache device c\.img: in use by writeboost volume vb" \
	b1.img -- wb-create va b1.img c.img
wb_stop

echo "figure: admin mistakes $refusals refusals, 0 images modified, $forced accepted with --force"
