#!/usr/bin/env bash
# 12: soak. Four NBD connections, four requests in flight each, doing mixed
# verified I/O (writes of every shape, reads checked against a model,
# WRITE_ZEROES, TRIM, FLUSH, FUA) for WB_SOAK_SECONDS (default 60), while a
# second loop changes every tunable with wb-message and runs drop_caches.
# The cache is small, so segments are sealed, written back and reused all
# the while. Nothing may be wrong, nothing may panic, the engine must still
# stop cleanly.
. "$WB_TESTING/lib.sh"

secs=${WB_SOAK_SECONDS:-60}
torture=$(wb_torture)
sparse backing.img 64M
sparse cache.img 8M
wb_start vol backing.img cache.img --reformat

# The tunables loop: every setting, in range, round robin; drop_caches
# every few rounds. Its failures are counted in a file the scenario checks.
tune() {
	local i=0
	while :; do
		case $((i % 6)) in
		0) wb-message vol writeback_threshold $((i * 7 % 101)) ;;
		1) wb-message vol nr_max_batched_writeback $((i % 32 + 1)) ;;
		2) wb-message vol update_sb_record_interval $((i % 3)) ;;
		3) wb-message vol sync_data_interval $((i % 2)) ;;
		4) wb-message vol read_cache_threshold $((i * 5 % 128)) ;;
		5) timeout 60 wb-message vol drop_caches ;;
		esac || echo "round $i failed" >>tune.errors
		i=$((i + 1))
		echo "$i" >tune.rounds
		sleep 0.5
	done
}
tune &
tuner=$!
wb_defer "kill $tuner"

"$torture" soak --uri "$(wb_uri vol)" --sectors $((48 << 11)) --conns 4 --depth 4 \
	--duration "${secs}s" | tee soak.out || fail "soak found a wrong read or an error"
kill "$tuner"
wait "$tuner" 2>/dev/null || true
[ ! -s tune.errors ] || fail "wb-message failed: $(cat tune.errors)"
rounds=$(cat tune.rounds)
[ "$rounds" -ge 6 ] || fail "only $rounds tunable changes ran"
bytes=$(sed -n 's/.*bytes verified \([0-9]*\).*/\1/p' soak.out)
[ "${bytes:-0}" -gt 0 ] || fail "no bytes verified"
wb_stop
echo "figure: soak ${secs}s, bytes verified $bytes, tunable changes $rounds"
