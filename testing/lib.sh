# Shared helpers for the scenarios testing/[0-9]*.sh; source it first.
# testing/run.sh runs each scenario in its own temporary directory (the
# current directory) with WB_RUN_DIR set and bin/ on PATH. Every helper that
# starts something registers its undoing with wb_defer; the EXIT trap runs
# those in reverse order, so a failing scenario leaves no process, mount or
# loop device behind.
set -euo pipefail

WB_TESTING=${WB_TESTING:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
export WB_RUN_DIR=${WB_RUN_DIR:-$PWD/run}
WB_WORK=$PWD

# fail MESSAGE: print and exit non-zero (the EXIT trap cleans up).
fail() {
	echo "FAIL: $*" >&2
	exit 1
}

# note MESSAGE: progress line on stdout.
note() { echo "== $*"; }

_wb_deferred=()
# wb_defer COMMAND...: run COMMAND (one string, eval'd) at exit, last first.
wb_defer() { _wb_deferred+=("$*"); }
_wb_cleanup() {
	local rc=$? i
	set +e
	for ((i = ${#_wb_deferred[@]} - 1; i >= 0; i--)); do
		eval "${_wb_deferred[$i]}" >/dev/null 2>&1
	done
	exit "$rc"
}
trap _wb_cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.1 s.
wait_for() {
	local secs=$1 what=$2 i
	shift 2
	for ((i = 0; i < secs * 10; i++)); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	fail "timed out after ${secs}s waiting for $what"
}

# kill_ours PID WORD: SIGKILL PID only if it is still the process we started
# (its command line contains WORD): a reaped pid may have been reused.
kill_ours() {
	if [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "$2"; then
		kill -KILL "$1"
	fi
}

# sparse FILE SIZE: a fresh sparse file (truncate size syntax, e.g. 64M).
sparse() {
	rm -f "$1"
	truncate -s "$2" "$1"
}

# wb_uri NAME: the NBD URI of a volume.
wb_uri() { echo "nbd+unix:///$1?socket=$WB_RUN_DIR/$1.sock"; }

# wb_sock NAME: the NBD unix socket path.
wb_sock() { echo "$WB_RUN_DIR/$1.sock"; }

WB_PID=
WB_LOG=
_wb_starts=0
# wb_start NAME BACKING CACHE [wb-create flags and KEY VALUE...]: start
# wb-create in the background and wait for "ready" on its stderr. Flags
# come after the positional arguments (kong accepts them anywhere). Sets
# WB_PID and WB_LOG (a fresh log per start).
wb_start() {
	local name=$1
	_wb_starts=$((_wb_starts + 1))
	WB_LOG=$WB_WORK/wb-create.$name.$_wb_starts.log
	: >"$WB_LOG"
	wb-create "$@" 2>"$WB_LOG" &
	WB_PID=$!
	wb_defer "kill_ours $WB_PID wb-create; wait $WB_PID"
	local i
	for ((i = 0; i < 600; i++)); do
		if grep -q ready "$WB_LOG"; then
			[ -S "$(wb_sock "$name")" ] || fail "wb-create said ready but $(wb_sock "$name") is missing"
			return 0
		fi
		if ! kill -0 "$WB_PID" 2>/dev/null; then
			cat "$WB_LOG" >&2
			fail "wb-create $* exited before ready"
		fi
		sleep 0.1
	done
	cat "$WB_LOG" >&2
	fail "wb-create $* not ready after 60s"
}

# wb_stop: SIGTERM the engine; it must exit 0 within 30 s.
wb_stop() {
	local pid=$WB_PID rc=0 i
	kill -TERM "$pid"
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		tail -n 20 "$WB_LOG" >&2
		fail "wb-create (pid $pid) still running 30s after SIGTERM"
	fi
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || { tail -n 20 "$WB_LOG" >&2; fail "wb-create exited $rc after SIGTERM"; }
	no_panic "$WB_LOG"
}

# wb_kill: SIGKILL the engine and reap it.
wb_kill() {
	kill -KILL "$WB_PID" 2>/dev/null || true
	wait "$WB_PID" 2>/dev/null || true
}

# no_panic FILE...: fail if a Go panic or goroutine dump is in FILE.
no_panic() {
	local f
	for f in "$@"; do
		if grep -Eq 'panic:|^goroutine [0-9]+ |fatal error:|DATA RACE' "$f"; then
			cat "$f" >&2
			fail "panic or goroutine dump in $f"
		fi
	done
}

# status_field NAME JQ-PATH: one value from wb-status --json (e.g. .nr_dirty_cache_blocks).
status_field() {
	wb-status --json "$1" | jq -er "$2"
}

# wb_torture: build the tagged-sector client (once per scenario) and print its path.
wb_torture() {
	local bin=$WB_WORK/wbtorture
	if [ ! -x "$bin" ]; then
		(cd "$WB_TESTING/.." && go build -o "$bin" ./testing/tools/wbtorture) || fail "build wbtorture"
	fi
	echo "$bin"
}

# fuse_attach URI DIR: expose the NBD export as the file DIR/nbd with
# nbdfuse (no kernel nbd module needed). The fuse mount is undone at exit.
fuse_attach() {
	local uri=$1 dir=$2
	mkdir -p "$dir"
	nbdfuse "$dir" --uri "$uri" &
	local pid=$!
	wb_defer "fusermount3 -u $dir; kill_ours $pid nbdfuse; wait $pid"
	wait_for 20 "nbdfuse at $dir" test -e "$dir/nbd"
}

# fuse_detach DIR: unmount an nbdfuse mount (it then exits).
fuse_detach() {
	fusermount3 -u "$1"
}

LOOP_DEV=
declare -A _wb_loops=()
# loop_attach FILE: attach FILE to a free loop device; sets LOOP_DEV.
# (Not for $(...): the device must be recorded in this shell.)
loop_attach() {
	LOOP_DEV=$(losetup -f --show "$1") || fail "losetup $1"
	_wb_loops[$LOOP_DEV]=1
	wb_defer "loop_detach $LOOP_DEV"
}

# loop_detach DEV: detach DEV if this scenario attached it and has not
# detached it yet. Other test runs on this machine use loop devices too, and
# a loop device over an nbdfuse file cannot be recognised by its backing
# file once the fuse mount is gone (losetup shows "/nbd (deleted)").
loop_detach() {
	[ -n "${_wb_loops[$1]:-}" ] || return 0
	unset "_wb_loops[$1]"
	losetup -d "$1"
}

# mount_at DEV DIR: mount DEV on DIR; the unmount is registered.
mount_at() {
	mkdir -p "$2"
	mount "$1" "$2" || fail "mount $1 $2"
	wb_defer "mountpoint -q $2 && umount $2"
}

# sha FILE: its sha256.
sha() { sha256sum "$1" | cut -d' ' -f1; }

# serve_file IMAGE NAME: serve IMAGE read-only with nbdkit on the unix
# socket NAME.sock (here); prints nothing, the URI is file_uri NAME.
serve_file() {
	local img=$1 name=$2
	rm -f "$name.sock"
	nbdkit -f -r -U "$WB_WORK/$name.sock" file "$img" &
	wb_defer "kill_ours $! nbdkit"
	wait_for 10 "nbdkit for $img" test -S "$name.sock"
}
file_uri() { echo "nbd+unix:///?socket=$WB_WORK/$1.sock"; }

# wb_remove NAME: drop_caches (everything written back), then remove; the
# engine must exit 0. Afterwards the backing device alone holds the volume.
wb_remove() {
	local pid=$WB_PID rc=0
	timeout 120 wb-message "$1" drop_caches || fail "drop_caches"
	[ "$(status_field "$1" .nr_dirty_cache_blocks)" -eq 0 ] || fail "dirty blocks after drop_caches"
	wb-message "$1" remove || fail "remove"
	wait_for 30 "wb-create to exit after remove" bash -c "! kill -0 $pid"
	wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || { tail -n 20 "$WB_LOG" >&2; fail "wb-create exited $rc after remove"; }
	no_panic "$WB_LOG"
}

_wb_kept=() _wb_kept_sums=()
# keep IMAGE...: remember the sha256 of each IMAGE, for kept.
keep() {
	local f
	_wb_kept=("$@") _wb_kept_sums=()
	for f in "$@"; do _wb_kept_sums+=("$(sha "$f")"); done
}
# kept LABEL: fail unless every IMAGE given to the last keep still has its
# sha256 (a refusal must write nothing).
kept() {
	local i
	for i in "${!_wb_kept[@]}"; do
		[ "$(sha "${_wb_kept[$i]}")" = "${_wb_kept_sums[$i]}" ] || fail "$1: ${_wb_kept[$i]} was modified"
	done
}
