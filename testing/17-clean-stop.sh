#!/usr/bin/env bash
# 17: a clean stop is remembered (issue 11). After wb-create stops cleanly,
# every segment is whole: one byte flipped in the newest segment's data is
# damage (wb-check exit 4, naming the segment; wb-create refuses to start,
# the cache unchanged), not a torn tail to discard with the flushed data in
# it. After a crash the same flip is a torn tail (exit 1), as a power cut
# may leave. The engine clears the record when it starts, before it writes
# anything.
. "$WB_TESTING/lib.sh"

uri=$(wb_uri vol)
# flip_newest CACHE: flip one byte in the data of the newest segment.
flip_newest() {
	local slot off b
	slot=$(wb-check --json --segments "$1" | jq '.segments | max_by(.id) | .slot') || true
	[ -n "$slot" ] && [ "$slot" != null ] || fail "no segment in $1"
	off=$(( (1 << 20) + slot * (512 << 10) + 4096 + 100 ))
	b=$(od -An -tu1 -j "$off" -N1 "$1" | tr -d ' ')
	printf "$(printf '\\%03o' $(( b ^ 1 )))" | dd of="$1" bs=1 seek="$off" conv=notrunc status=none
	NEWEST=$(wb-check --json "$1" | jq .max_id) || true
}

sparse backing.img 32M
sparse cache.img 8M
wb_start vol backing.img cache.img --reformat
qemu-io -f raw "$uri" -c "write -P 0x41 0 256k" -c flush >/dev/null || fail "qemu-io write"
wb_stop
out=$(wb-check --json cache.img) || fail "wb-check after a clean stop: exit $?"
last=$(jq .clean_stop_last_id <<<"$out")
[ "$last" != null ] && [ "$last" -ge 1 ] || fail "no clean-stop record after a clean stop: $out"

note "clean stop, then one byte flipped"
flip_newest cache.img
before=$(sha cache.img)
rc=0; wb-check cache.img >check.out || rc=$?
cat check.out
[ "$rc" -eq 4 ] || fail "wb-check exit $rc after a flip following a clean stop, want 4"
grep -q "segment $NEWEST .*fails its checksum, but the engine stopped cleanly" check.out || fail "wb-check does not name segment $NEWEST"
if wb-create vol backing.img cache.img 2>create.err; then fail "wb-create started on a damaged cache"; fi
cat create.err
grep -q "damage" create.err || fail "wb-create's refusal does not say damage"
[ "$(sha cache.img)" = "$before" ] || fail "the refused start changed the cache"
[ ! -e "$WB_RUN_DIR/vol.sock" ] || fail "a socket was left behind"

note "the start clears the record; after a crash the same flip is a torn tail"
sparse cache.img 8M
wb_start vol backing.img cache.img --reformat
qemu-io -f raw "$uri" -c "write -P 0x42 0 256k" -c flush >/dev/null || fail "qemu-io write"
wb_stop
wb_start vol backing.img cache.img
[ "$(wb-check --json cache.img | jq .clean_stop_last_id)" = null ] || fail "a running engine left the clean-stop record in place"
qemu-io -f raw "$uri" -c "write -P 0x43 1M 256k" -c flush >/dev/null || fail "qemu-io write"
wb_kill
flip_newest cache.img
rc=0; wb-check cache.img >check.out || rc=$?
[ "$rc" -eq 1 ] || { cat check.out; fail "wb-check exit $rc after a flip following a crash, want 1 (torn tail)"; }
wb_start vol backing.img cache.img
wb_stop
echo "figure: clean stop + 1 flipped byte: wb-check exit 4 naming segment $NEWEST, wb-create refused, cache unchanged; after a crash: exit 1 (torn tail)"
