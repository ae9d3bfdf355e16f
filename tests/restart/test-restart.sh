#!/bin/bash
# Restart vhostd under a running guest.  A real QEMU guest (reconnect=1)
# runs a verified random write/read workload with many threads on a
# file-backed device while this script kills vhostd with SIGKILL twice and
# stops it once with SIGTERM, restarting it each time on the same store and
# state file.  The guest must finish with every block verified and no I/O
# error.  Prints how long each outage lasted (kill -> front-end reconnected).
#
# With --packed (or RESTART_PACKED=1) the guest's device has packed=on: the
# same, on packed virtqueues (the guest must have negotiated
# VIRTIO_F_RING_PACKED, bit 34), whose position after a restart comes from
# the inflight region and the base QEMU sends (bits 0-14 offset, bit 15
# wrap counter) instead of a used index in guest memory.
#
# usage: test-restart.sh VHOSTD BLKCHECK [--packed]
set -euo pipefail
VHOSTD=$1
BLKCHECK=$2
PACKED=${RESTART_PACKED:-0}
[ "${3:-}" = --packed ] && PACKED=1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
RUN_GUEST=$HERE/../guest/run-guest.sh
DURATION=${RESTART_DURATION:-40}
GUEST_TESTS="rand:${DURATION}s"
GUEST_OPTS=()
if [ "$PACKED" = 1 ]; then
	GUEST_TESTS="feature:34,$GUEST_TESTS"
	GUEST_OPTS=(--packed)
fi

skip() { echo "test-restart: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (FUSE mount, mknod)"
[ -e /dev/fuse ] || skip "no /dev/fuse"
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 not installed"

T=$(mktemp -d /var/tmp/vhostd-restart.XXXXXX)
STORE=$T/store
STATE=$T/state
DPID=
GPID=
cleanup() {
	[ -n "$GPID" ] && kill "$GPID" 2>/dev/null || true
	if [ -n "$DPID" ]; then kill -TERM "$DPID" 2>/dev/null || true; wait "$DPID" 2>/dev/null || true; fi
	umount -l "$STORE/block/ctl" 2>/dev/null || true
	rm -rf "$T"
}
trap cleanup EXIT

start_daemon() {
	"$VHOSTD" --store "$STORE" --state "$STATE" --log-level info >>"$T/vhostd.log" 2>&1 &
	DPID=$!
	for _ in $(seq 100); do
		if mountpoint -q "$STORE/block/ctl" 2>/dev/null; then
			[ ! -e "$STATE" ] && return 0
			[ -S "$STORE/block/sockets/r0" ] && return 0
		fi
		sleep 0.1
	done
	echo "test-restart: vhostd did not come up" >&2
	cat "$T/vhostd.log" >&2
	exit 1
}

wait_state() {  # wait until ctl/r0/state is $1 (up to $2 seconds)
	local want=$1 n=$(( $2 * 10 ))
	for _ in $(seq "$n"); do
		[ "$(cat "$STORE/block/ctl/r0/state" 2>/dev/null)" = "$want" ] && return 0
		sleep 0.1
	done
	return 1
}

now_ms() { date +%s%3N; }

start_daemon
mkdir "$STORE/block/ctl/r0"
echo "size=64M backing=$T/disk.img queues=2" > "$STORE/block/ctl/r0/config"

"$RUN_GUEST" --socket "$STORE/block/sockets/r0" --reconnect --blkcheck "$BLKCHECK" \
	--tests "$GUEST_TESTS" --threads 16 --timeout $((DURATION * 6 + 240)) \
	--log "$T/guest.log" "${GUEST_OPTS[@]}" &
GPID=$!

wait_state connected 120 || { echo "test-restart: the guest never connected" >&2; cat "$T/vhostd.log" >&2; exit 1; }
# let the workload start: the guest boots, loads the modules and writes
writes() { awk '$1 == "writes" { print $2 }' "$STORE/block/ctl/r0/stats" 2>/dev/null || echo 0; }
for _ in $(seq 600); do
	[ "$(writes)" -gt 100 ] 2>/dev/null && break
	sleep 0.1
done
sleep 2

outage() {      # $1 signal
	local sig=$1 t0 t1
	t0=$(now_ms)
	kill "-$sig" "$DPID"
	wait "$DPID" 2>/dev/null || true
	start_daemon
	wait_state connected 60 || { echo "test-restart: no reconnect after SIG$sig" >&2; tail -50 "$T/vhostd.log" >&2; exit 1; }
	t1=$(now_ms)
	echo "test-restart: SIG$sig: guest reconnected after $((t1 - t0)) ms (stats: $(tr '\n' ' ' < "$STORE/block/ctl/r0/stats"))"
	sleep 4
}

outage KILL
outage KILL
outage TERM

rc=0
wait "$GPID" || rc=$?
GPID=
grep -a "BLKCHECK\|VHOSTD-GUEST-RESULT" "$T/guest.log" | tail -5 || true
if [ $rc -ne 0 ]; then
	echo "test-restart: guest FAILED (rc $rc)" >&2
	tail -40 "$T/vhostd.log" >&2
	exit 1
fi
echo "test-restart: restarts that resubmitted in-flight requests: $(grep -c "resubmitting" "$T/vhostd.log" || true)"
grep "resubmitting" "$T/vhostd.log" || true
echo "test-restart: PASS$([ "$PACKED" = 1 ] && echo " (packed virtqueues)")"
