#!/usr/bin/env bash
# 07: the kill test. A client (tools/wbtorture, speaking NBD itself) writes
# tagged sectors over 4 connections with 8 requests in flight each: whole
# blocks, runs of blocks (up to 64 KiB in odd cycles, served inline from the
# receive buffer; up to 512 KiB in even ones, read from the socket straight
# into the RAM buffer), partial blocks, unaligned runs; FLUSH and FUA at
# random points; reads checked against the last acknowledged write. At a
# random moment it SIGKILLs wb-create with requests in flight. The engine
# restarts without --reformat (the log replays) and every sector of the
# volume is read: it must hold its value as of the last completed FLUSH (or
# FUA) or a value written after it; never garbage, never older.
# The cache (6 MiB: 10 segments, 1270 blocks) is smaller than what most
# cycles write, so the ring wraps and writeback runs between kills; every
# other restart also turns background writeback on, so kills land in the
# middle of writeback batches and superblock record updates too; every
# third runs writeback_threshold 100 with update_sb_record_interval 1, where
# a flushed block overwritten without a flush has its old segment written
# back and recorded before the kill (issue 17). At the end drop_caches and
# remove leave the backing file alone, which must read exactly what the
# volume read (verified through nbdkit).
# WB_KILL_CYCLES sets the number of cycles (CI 20, long mode 200).
. "$WB_TESTING/lib.sh"

cycles=${WB_KILL_CYCLES:-20}
torture=$(wb_torture)
uri=$(wb_uri vol)

sparse backing.img 32M
sparse cache.img 6M
"$torture" init --state state --sectors $((32 << 11))
wb_start vol backing.img cache.img --reformat

for ((c = 1; c <= cycles; c++)); do
	note "cycle $c/$cycles"
	"$torture" write --state state --uri "$uri" --kill-pid "$WB_PID" \
		--kill-min 50ms --kill-max 1500ms --conns 4 --depth 8 --max-blocks $((c % 2 ? 16 : 128)) ||
		fail "cycle $c: the write run failed"
	wait "$WB_PID" 2>/dev/null || true
	kill -0 "$WB_PID" 2>/dev/null && fail "cycle $c: wb-create survived SIGKILL"
	no_panic "$WB_LOG"
	# Vary the daemons between restarts: background writeback on or off
	# (a kill then lands in the middle of a writeback batch), batch size,
	# superblock record updates and periodic data syncs.
	args=()
	if ((c % 3 == 0)); then
		args+=(writeback_threshold 100 update_sb_record_interval 1)
	else
		if ((RANDOM % 2)); then
			args+=(writeback_threshold 100 nr_max_batched_writeback $((RANDOM % 32 + 1)))
		fi
		if ((RANDOM % 2)); then
			args+=(update_sb_record_interval 1 sync_data_interval 1)
		fi
	fi
	wb_start vol backing.img cache.img "${args[@]}"
	"$torture" verify --state state --uri "$uri" || fail "cycle $c: verify failed"
done

# The ring must have wrapped and writeback must have run, or the test
# proved less than it claims.
st=$(wb-status --json vol)
echo "$st" | jq -c '{current_id, last_flushed_id, last_writeback_id, nr_segments, nr_dirty_cache_blocks}'
cur=$(jq -r .current_id <<<"$st")
nseg=$(jq -r .nr_segments <<<"$st")
wbid=$(jq -r .last_writeback_id <<<"$st")
[ "$cur" -gt "$nseg" ] || fail "current_id $cur <= nr_segments $nseg: the ring never wrapped"
[ "$wbid" -gt 0 ] || fail "last_writeback_id is 0: writeback never ran"

# drop_caches + remove: the backing file alone must hold what the volume
# read in the last verify, sector for sector.
wb_remove vol
serve_file backing.img backing
"$torture" verify --strict --state state --uri "$(file_uri backing)" ||
	fail "the backing file after drop_caches + remove differs from the volume"

read -r _ ncycles _ nsectors _ nbad _ nprefix < <("$torture" totals --state state)
[ "$ncycles" -eq $((cycles + 1)) ] || fail "$ncycles verifies, want $cycles cycles and the backing file"
[ "$nbad" -eq 0 ] || fail "$nbad bad sectors"
echo "figure: kill cycles $cycles (every third with writeback_threshold 100 + update_sb_record_interval 1), sectors checked $nsectors (volume and backing file), bad $nbad, exact-prefix recoveries $nprefix"
