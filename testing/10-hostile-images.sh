#!/usr/bin/env bash
# 10: hostile images. wb-check and wb-create on garbage, truncated and
# wrong-sized images must fail with a one-line error naming the problem and a
# non-zero exit: no panic, no goroutine dump, and the images untouched (a
# tool that "repairs" or formats what it was only asked to read would destroy
# the only copy of someone's dirty data).
. "$WB_TESTING/lib.sh"

# expect_refusal LABEL IMAGE... -- COMMAND...: COMMAND must exit non-zero
# with exactly one line on stderr, no panic, and leave IMAGEs as they were.
# expect_damage LABEL IMAGE... -- wb-check ...: wb-check reports a damaged
# device the way fsck does: exit 4, "status: damaged" and the problem on
# stdout (one line per problem), nothing on stderr.
expect_refusal() { _expect error "$@"; }
expect_damage() { _expect damage "$@"; }
_expect() {
	local kind=$1 label=$2 imgs=() rc=0
	shift 2
	while [ "$1" != -- ]; do imgs+=("$1"); shift; done
	shift
	keep "${imgs[@]}"
	timeout 60 "$@" >out.txt 2>err.txt || rc=$?
	[ "$rc" -ne 0 ] || fail "$label: '$*' succeeded"
	[ "$rc" -ne 124 ] || fail "$label: '$*' hung"
	no_panic err.txt out.txt
	local lines msg
	lines=$(grep -c . err.txt || true)
	if [ "$kind" = error ]; then
		# wb-create also logs (log/slog lines, "time=..."); the error is
		# the one other line, prefixed with the command's name.
		lines=$(grep -vc '^time=' err.txt || true)
		[ "$lines" -eq 1 ] || { cat err.txt out.txt; fail "$label: $lines error lines on stderr, want one"; }
		msg=$(grep -v '^time=' err.txt)
		[[ "$msg" == "$(basename "$1"): "* ]] || fail "$label: error not prefixed with '$(basename "$1"): ': $msg"
	else
		[ "$rc" -eq 4 ] || { cat err.txt out.txt; fail "$label: exit $rc, want 4 (damage)"; }
		[ "$lines" -eq 0 ] || { cat err.txt; fail "$label: stderr is not empty"; }
		grep -Eq '^status: damaged$|"status":"damaged"' out.txt || { cat out.txt; fail "$label: no 'status: damaged'"; }
		msg=$(grep -Eo '^problem: .*|"problems":\[[^]]*\]' out.txt | head -n 1)
		[ -n "$msg" ] || { cat out.txt; fail "$label: the problem is not named"; }
	fi
	kept "$label"
	printf '%-34s exit %d: %s\n' "$label" "$rc" "$msg"
	cases=$((cases + 1))
}
cases=0

sparse backing.img 16M
head -c $((8 << 20)) /dev/urandom >garbage.img
# A real cache with data in it, then truncated copies of it.
sparse cache.img 8M
wb_start vol backing.img cache.img --reformat
qemu-io -f raw "$(wb_uri vol)" -c "write -P 0x42 0 2M" -c flush >/dev/null || fail "qemu-io"
wb_kill
cp cache.img good.img
head -c $((1 << 20)) cache.img >trunc-superblock.img       # the superblock only
head -c $(((1 << 20) + 4096 + 100)) cache.img >trunc-odd.img # not a whole sector, below one segment
head -c 511 cache.img >trunc-sector.img
: >empty.img
head -c $((1 << 20)) /dev/zero >small.img # formatted size check: below superblock + 1 segment
sparse zero-backing.img 0

expect_damage "wb-check garbage" garbage.img -- wb-check garbage.img
expect_damage "wb-check truncated to superblock" trunc-superblock.img -- wb-check trunc-superblock.img
expect_damage "wb-check truncated odd" trunc-odd.img -- wb-check trunc-odd.img
expect_damage "wb-check truncated to 511 B" trunc-sector.img -- wb-check trunc-sector.img
expect_damage "wb-check empty" empty.img -- wb-check empty.img
expect_refusal "wb-check missing" -- wb-check nosuch.img
expect_refusal "wb-check directory" -- wb-check "$WB_WORK"
expect_damage "wb-check --json garbage" garbage.img -- wb-check --json garbage.img
expect_refusal "wb-check --writeback garbage" garbage.img backing.img -- wb-check --writeback backing.img garbage.img
expect_refusal "wb-create garbage cache" garbage.img backing.img -- wb-create g1 backing.img garbage.img
expect_refusal "wb-create truncated cache" trunc-superblock.img backing.img -- wb-create g2 backing.img trunc-superblock.img
expect_refusal "wb-create truncated odd cache" trunc-odd.img backing.img -- wb-create g3 backing.img trunc-odd.img
expect_refusal "wb-create --reformat tiny cache" small.img backing.img -- wb-create --reformat g4 backing.img small.img
expect_refusal "wb-create --reformat empty cache" empty.img backing.img -- wb-create --reformat g5 backing.img empty.img
expect_refusal "wb-create empty backing" zero-backing.img good.img -- wb-create g6 zero-backing.img good.img
expect_refusal "wb-create missing backing" good.img -- wb-create g7 nosuch.img good.img
expect_refusal "wb-create cache is backing" good.img -- wb-create g8 good.img good.img
expect_refusal "wb-create bad name" good.img backing.img -- wb-create 'bad/name' backing.img good.img
expect_refusal "wb-create bad tunable" good.img backing.img -- wb-create g9 backing.img good.img writeback_threshold 101
expect_refusal "wb-create unknown key" good.img backing.img -- wb-create g10 backing.img good.img nosuch_key 1
expect_refusal "wb-create odd KEY VALUE" good.img backing.img -- wb-create g11 backing.img good.img writeback_threshold
expect_refusal "wb-format-cache tiny" small.img -- wb-format-cache --force small.img

# The good image is still a good cache: it replays (the data comes back).
wb_start vol backing.img good.img
qemu-io -f raw "$(wb_uri vol)" -c "read -P 0x42 0 2M" >/dev/null || fail "the good image lost its data"
wb_stop
# NAME.lock files (the engine's start lock) may stay; sockets and state may not.
left=$(cd "$WB_RUN_DIR" && ls | grep -v '\.lock$' || true)
[ -z "$left" ] || fail "refused starts left files in the run directory: $left"
echo "figure: hostile images $cases refusals, 0 panics, 0 images modified"
