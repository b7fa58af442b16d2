#!/usr/bin/env bash
# 25: --socket-group (issue 12). A volume started with --socket-group
# wbtest25 has root:wbtest25 sockets, mode 0660, in a run directory with
# the group's search bit only (0710). A user in the group (nobody with
# wbtest25 as a supplementary group) can run nbdinfo on the NBD socket,
# wb-status NAME and wb-message; a user outside it (nobody alone) cannot,
# and is told which group to join and about WB_RUN_DIR. Bad --socket-mode
# values are usage errors (exit 2); a volume without the flag stays
# root-only and says so.
. "$WB_TESTING/lib.sh"

group=wbtest25
if ! getent group "$group" >/dev/null; then
	groupadd --system "$group"
	wb_defer "groupdel $group"
fi
gid=$(getent group "$group" | cut -d: -f3)
in_group() { setpriv --reuid=65534 --regid=65534 --groups="$gid" "$@"; }
outside() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }

sparse backing.img 16M
sparse cache.img 8M
chmod 0755 "$WB_WORK" # nobody may reach the run directory's parent

note "bad --socket-mode: usage errors"
for m in 0666 0640 0660x; do
	rc=0
	wb-create --socket-group "$group" --socket-mode "$m" vol backing.img cache.img --reformat 2>err.txt || rc=$?
	[ "$rc" = 2 ] || { cat err.txt; fail "--socket-mode $m exited $rc, want 2"; }
done
rc=0
wb-create --socket-mode 0660 vol backing.img cache.img --reformat 2>err.txt || rc=$?
[ "$rc" = 2 ] && grep -q -- "--socket-group" err.txt || { cat err.txt; fail "--socket-mode 0660 without a group: exit $rc"; }
rc=0
wb-create --socket-group no-such-group-25 vol backing.img cache.img --reformat 2>err.txt || rc=$?
[ "$rc" = 2 ] || { cat err.txt; fail "unknown group exited $rc"; }

note "root-only by default: the refusal says root is needed"
wb_start vol backing.img cache.img --reformat
[ "$(stat -c %a "$WB_RUN_DIR")" = 700 ] || fail "run directory not 700 without a group"
if in_group env WB_RUN_DIR="$WB_RUN_DIR" wb-status vol 2>err.txt; then fail "wb-status worked on a root-only volume"; fi
cat err.txt
grep -q "only root may" err.txt && grep -q WB_RUN_DIR err.txt || fail "refusal does not say root is needed"
wb_stop

note "--socket-group $group"
wb_start vol backing.img cache.img --socket-group "$group"
[ "$(stat -c '%a %G' "$WB_RUN_DIR")" = "710 $group" ] || fail "run directory: $(stat -c '%a %G' "$WB_RUN_DIR"), want 710 $group"
for f in vol.sock vol.ctl; do
	[ "$(stat -c '%a %U:%G' "$WB_RUN_DIR/$f")" = "660 root:$group" ] || fail "$f: $(stat -c '%a %U:%G' "$WB_RUN_DIR/$f")"
done
size=$(in_group nbdinfo --size "$(wb_uri vol)") || fail "a member's nbdinfo"
[ "$size" = 16777216 ] || fail "a member's nbdinfo: size $size"
in_group env WB_RUN_DIR="$WB_RUN_DIR" wb-status vol >out.txt || fail "a member's wb-status"
in_group env WB_RUN_DIR="$WB_RUN_DIR" wb-message vol writeback_threshold 20 || fail "a member's wb-message"
[ "$(status_field vol .tunables.writeback_threshold)" = 20 ] || fail "a member's tunable not applied"
if in_group env WB_RUN_DIR="$WB_RUN_DIR" wb-status 2>err.txt; then fail "a member listed the run directory"; fi
cat err.txt
grep -q "wb-status NAME" err.txt || fail "the list refusal does not say to name the volume"

note "a user outside the group"
if outside nbdinfo --size "$(wb_uri vol)" 2>err.txt; then fail "an outsider's nbdinfo connected"; fi
grep -qi 'permission denied' err.txt || { cat err.txt; fail "an outsider's nbdinfo failed for another reason"; }
if outside env WB_RUN_DIR="$WB_RUN_DIR" wb-status vol 2>err.txt; then fail "an outsider ran wb-status"; fi
cat err.txt
grep -q "join group $group" err.txt && grep -q WB_RUN_DIR err.txt || fail "the refusal does not say which group to join"
if outside env WB_RUN_DIR="$WB_RUN_DIR" wb-message vol writeback_threshold 50 2>err.txt; then fail "an outsider ran wb-message"; fi
cat err.txt
grep -q "join group $group" err.txt || fail "wb-message's refusal does not say which group to join"
[ "$(status_field vol .tunables.writeback_threshold)" = 20 ] || fail "an outsider changed a tunable"
wb_stop
echo "figure: socket-group: member ran nbdinfo, wb-status, wb-message; outsider refused 3 times with the group to join; 5 bad flag values exit 2"
