#!/usr/bin/env bash
# Runs every scenario testing/[0-9]*.sh against the binaries in bin/, each in
# its own temporary directory, and ends with the line "N passed, N failed".
# Usage: testing/run.sh [PATTERN]   (e.g. testing/run.sh 03)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
export PATH="$top/bin:$PATH"
export WB_TESTING="$top/testing"
pass=0 fail=0 failed=()
for t in "$top"/testing/[0-9]*.sh; do
	name=$(basename "$t" .sh)
	[[ -n "${1:-}" && "$name" != *"$1"* ]] && continue
	work=$(mktemp -d "/tmp/wbtest.$name.XXXXXX")
	start=$(date +%s)
	if (cd "$work" && WB_RUN_DIR="$work/run" timeout 900 bash "$t") >"$work/log" 2>&1; then
		pass=$((pass + 1))
		echo "PASS $name ($(( $(date +%s) - start ))s)"
		# The figures a scenario reports are lines starting with "figure:".
		grep '^figure:' "$work/log" | sed 's/^/     /'
		rm -rf "$work"
	else
		fail=$((fail + 1))
		failed+=("$name")
		echo "FAIL $name ($(( $(date +%s) - start ))s), log: $work/log"
		tail -n 40 "$work/log" | sed 's/^/     | /'
	fi
done
echo "scenarios: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
