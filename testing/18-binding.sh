#!/usr/bin/env bash
# 18: a cache remembers its backing device (issue 11). The first start binds
# it; a start over another backing device is refused (nothing written to
# either), and so is wb-check --writeback to it; the right one is accepted;
# --force rebinds. A cache written the kernel's way (testimg: no binding) is
# accepted and bound, and serves exactly the expected volume.
. "$WB_TESTING/lib.sh"

uri=$(wb_uri vol)
sparse b1.img 32M
sparse b2.img 32M
sparse c.img 8M
wb-format-cache -q c.img || fail "format"
wb_start vol b1.img c.img
qemu-io -f raw "$uri" -c "write -P 0x5a 0 1M" -c flush >/dev/null || fail "qemu-io write"
wb_stop
# has_line FILE-OF-OUTPUT PATTERN (no pipe: grep -q would cut wb-check off).
has_line() { grep -q "$2" "$1" || { cat "$1"; fail "no line $2"; }; }
wb-check c.img >out.txt || fail "wb-check"
has_line out.txt "^binding: file $PWD/b1.img"

note "wrong backing device: refused, nothing written"
c_sum=$(sha c.img); b2_sum=$(sha b2.img)
if wb-create vol b2.img c.img 2>err.txt; then fail "wb-create started c.img over b2.img"; fi
cat err.txt
grep -q "belongs to file $PWD/b1.img.*not to BACKING file $PWD/b2.img" err.txt || fail "the refusal does not name both devices"
rc=0; wb-check --writeback b2.img c.img >/dev/null 2>err.txt || rc=$?
cat err.txt
[ "$rc" -eq 16 ] || fail "wb-check --writeback to the wrong backing device: exit $rc, want 16"
grep -q "belongs to file $PWD/b1.img" err.txt || fail "wb-check's refusal does not name the binding"
[ "$(sha c.img)" = "$c_sum" ] && [ "$(sha b2.img)" = "$b2_sum" ] || fail "a refusal wrote to a device"

note "right backing device: dry run, then accepted"
wb-check --writeback b1.img --dry-run c.img >out.txt || fail "dry run"
has_line out.txt "^writeback_dry_run: would write"
[ "$(sha c.img)" = "$c_sum" ] || fail "the dry run wrote to the cache"
wb_start vol b1.img c.img
wb_stop

note "--force rebinds"
wb_start vol b2.img c.img --force
wb_stop
wb-check c.img >out.txt || fail "wb-check"
has_line out.txt "^binding: file $PWD/b2.img"

note "a cache without a binding (the kernel's) is accepted and bound"
(cd "$WB_TESTING/.." && go run ./internal/testimg/cmd/wb-testimg --nr-segments 16 --segments 40 --backing-blocks 8192 \
	"$WB_WORK/k.img" "$WB_WORK/kb.img" "$WB_WORK/expected.img") >/dev/null || fail "wb-testimg"
wb-check k.img >out.txt || fail "wb-check"
has_line out.txt "^binding: none"
wb_start kvol kb.img k.img
nbdcopy "$(wb_uri kvol)" got.img || fail "nbdcopy"
cmp got.img expected.img || fail "the kernel-style cache does not serve the expected volume"
wb_stop
wb-check k.img >out.txt || fail "wb-check"
has_line out.txt "^binding: file $PWD/kb.img"
echo "figure: binding: 2 refusals (wb-create, wb-check --writeback) with nothing written, rebind with --force, kernel-style cache accepted and bound, served volume identical"
