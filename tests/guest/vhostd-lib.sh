# shellcheck shell=bash disable=SC2034
# vhostd-lib.sh: shell helpers shared by the end-to-end tests that drive the
# real vhostd daemon (test-kata-guide.sh, test-persist.sh).  Sourced, not
# run.  The caller sets VHOSTD, STORE, STATE, DLOG (daemon log file) and
# exports STORE/STATE: the transcript shows commands with $STORE and $STATE
# unexpanded, as an operator would type them after `STORE=$(mktemp -d)`.
#
# Transcript on stdout, diagnostics on stderr; failures are collected in
# FAILS and reported by finish().

FAILS=()
TIMINGS=()
DPID=
RC=0
OUT=
LAST_MS=0
LIB_T_START=$(date +%s%3N)

fail() { FAILS+=("$*"); echo "${TEST_NAME:-test}: FAIL: $*" >&2; }
now_ms() { date +%s%3N; }
timing() { TIMINGS+=("$(printf '%-64s %8s ms' "$1" "$2")"); }
step() { printf '\n# %s\n' "$*"; }
stat_of() { sed -n "s/^$1 //p" <<<"$2" | head -n 1; }
daemon_log() { echo "----- vhostd log ($DLOG) -----" >&2; cat "$DLOG" >&2 || true; echo "-----" >&2; }

# The paths as the transcript shows them.
Q_STORE='$STORE'
Q_STATE='$STATE'
Q_CTL='$STORE/block/ctl'
Q_DEVS='$STORE/block/devices'
Q_SOCKS='$STORE/block/sockets'

# sh_run 'COMMAND LINE': show it as typed at a root prompt, run it with
# bash -c (so $STORE/$STATE expand there), show its output; sets RC, OUT
# and LAST_MS and records the time taken.
sh_run() {
	local t0 t1
	printf '$ %s\n' "$1"
	t0=$(now_ms)
	set +e
	OUT=$(bash -c "$1" 2>&1)
	RC=$?
	set -e
	t1=$(now_ms)
	[ -n "$OUT" ] && printf '%s\n' "$OUT"
	[ $RC -eq 0 ] || printf '(exit status %d)\n' "$RC"
	LAST_MS=$((t1 - t0))
	timing "$1" "$LAST_MS"
	return 0
}

# start_vhostd: start the daemon in the background (DPID) and wait until the
# control fs is mounted; vhostd restores every controller before it mounts,
# so a mounted ctl/ means the restore is done.  Returns 1 (after showing the
# log) if it does not come up within 10 s.
start_vhostd() {
	local t0
	printf '$ %s --store $STORE --state $STATE --log-level info &\n' "$VHOSTD"
	t0=$(now_ms)
	"$VHOSTD" --store "$STORE" --state "$STATE" --log-level info >>"$DLOG" 2>&1 &
	DPID=$!
	for _ in $(seq 100); do
		mountpoint -q "$STORE/block/ctl" 2>/dev/null && break
		kill -0 "$DPID" 2>/dev/null || break
		sleep 0.1
	done
	if ! mountpoint -q "$STORE/block/ctl" 2>/dev/null; then
		daemon_log
		if kill -0 "$DPID" 2>/dev/null; then
			fail "vhostd did not mount $STORE/block/ctl within 10 s"
		else
			local rc=0
			wait "$DPID" || rc=$?
			DPID=
			fail "vhostd exited with status $rc before mounting $STORE/block/ctl"
		fi
		return 1
	fi
	LAST_MS=$(( $(now_ms) - t0 ))
	timing "vhostd start until ctl/ is mounted (pid $DPID)" "$LAST_MS"
	return 0
}

# stop_vhostd: SIGTERM; it must exit 0 within 10 s and leave ctl/ unmounted.
stop_vhostd() {
	local t0 drc=0
	printf '$ kill -TERM %s; wait %s; echo "exit status $?"\n' "$DPID" "$DPID"
	t0=$(now_ms)
	kill -TERM "$DPID"
	for _ in $(seq 100); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
	if kill -0 "$DPID" 2>/dev/null; then
		fail "vhostd still running 10 s after SIGTERM"
		kill -KILL "$DPID" 2>/dev/null || true
	fi
	wait "$DPID" || drc=$?
	DPID=
	LAST_MS=$(( $(now_ms) - t0 ))
	timing "SIGTERM until vhostd exited" "$LAST_MS"
	echo "exit status $drc"
	[ $drc -eq 0 ] || fail "vhostd exited with status $drc after SIGTERM (expected 0)"
	sh_run "mountpoint $Q_CTL"
	[ $RC -ne 0 ] || fail "$STORE/block/ctl is still a mount point after vhostd exited"
	if grep -qs " $STORE/block/ctl " /proc/mounts; then
		fail "$STORE/block/ctl is still in /proc/mounts"
	fi
}

# kill_vhostd: for cleanup traps only.
kill_vhostd() {
	if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
		kill -TERM "$DPID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$DPID" 2>/dev/null || true
		wait "$DPID" 2>/dev/null || true
	fi
	DPID=
	if mountpoint -q "$STORE/block/ctl" 2>/dev/null; then
		umount -l "$STORE/block/ctl" 2>/dev/null || true
	fi
}

# wait_state NAME WANT SECONDS
wait_state() {
	local n=$(( $3 * 10 ))
	for _ in $(seq "$n"); do
		[ "$(cat "$STORE/block/ctl/$1/state" 2>/dev/null)" = "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

# check_daemon_log: errors in the log are failures.
check_daemon_log() {
	local re='( vhostd (emerg|alert|crit|error): |^<[0-3]>)'
	if grep -qE "$re" "$DLOG"; then
		fail "vhostd logged errors: $(grep -E "$re" "$DLOG" | head -n 3 | tr '\n' ' ')"
	fi
}

# finish: timing summary and verdict; exits.
finish() {
	step "Timings"
	local l f
	for l in "${TIMINGS[@]}"; do echo "$l"; done
	echo "total: $(( $(now_ms) - LIB_T_START )) ms"
	if [ ${#FAILS[@]} -gt 0 ]; then
		echo
		echo "${TEST_NAME:-test}: FAIL (${#FAILS[@]} problems):"
		for f in "${FAILS[@]}"; do echo "  - $f"; done
		exit 1
	fi
	echo
	echo "${TEST_NAME:-test}: PASS"
	exit 0
}
