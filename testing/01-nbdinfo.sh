#!/usr/bin/env bash
# 01: what the volume advertises. nbdinfo --json must report the backing
# device's size and every capability a write-back cache has to offer to be
# trusted: FLUSH and FUA (the durability promise reaches the client), TRIM,
# WRITE_ZEROES, and multi-conn (FLUSH on one connection covers them all);
# over the unix socket and over TCP (--listen).
. "$WB_TESTING/lib.sh"

sparse backing.img 96M
sparse cache.img 32M
wb_start vol backing.img cache.img --reformat

json=$(nbdinfo --json --no-content "$(wb_uri vol)") || fail "nbdinfo failed"
echo "$json"
size=$(jq -er '.exports[0]["export-size"]' <<<"$json")
[ "$size" -eq $((96 << 20)) ] || fail "export-size $size, want $((96 << 20))"
name=$(jq -er '.exports[0]["export-name"]' <<<"$json")
[ "$name" = vol ] || fail "export-name $name, want vol"
for cap in can_flush can_fua can_trim can_zero can_multi_conn; do
	v=$(jq -r ".exports[0].$cap" <<<"$json")
	[ "$v" = true ] || fail "$cap is $v, want true"
done
v=$(jq -r '.exports[0].is_read_only' <<<"$json")
[ "$v" = false ] || fail "is_read_only is $v"

# An unknown export name is refused, and the volume keeps serving.
if nbdinfo --no-content "nbd+unix:///nosuch?socket=$(wb_sock vol)" >/dev/null 2>&1; then
	fail "export 'nosuch' was accepted"
fi
nbdinfo --size "$(wb_uri vol)" >/dev/null || fail "volume stopped serving after a refused export"

wb_stop
[ ! -e "$(wb_sock vol)" ] || fail "socket left behind after a clean stop"

# The same export over TCP (--listen), on a port the kernel just handed out.
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
wb_start vol backing.img cache.img --listen "tcp://127.0.0.1:$port"
json=$(nbdinfo --json --no-content "nbd://127.0.0.1:$port/vol") || fail "nbdinfo over TCP failed"
size=$(jq -er '.exports[0]["export-size"]' <<<"$json")
[ "$size" -eq $((96 << 20)) ] || fail "export-size over TCP $size"
[ "$(jq -r '.exports[0].can_flush' <<<"$json")" = true ] || fail "can_flush over TCP"
wb_stop
echo "figure: nbdinfo capabilities 5/5 (unix socket and TCP)"
