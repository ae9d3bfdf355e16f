#!/bin/bash
# test-guest.sh BENCH_SERVER BLKCHECK [run-guest.sh options...]
#
# The guest-e2e test: serve one 64 MiB RAM device with the vhostd core
# (bench-server), boot a real Linux guest on it with run-guest.sh, run the
# Kata guide's dd plus blkcheck fullcheck and randverify in the guest, stop
# the server, and exit with the guest's verdict (0 pass, 1 fail, 77 skip).
# A server that fails to start, dies, or does not shut down cleanly on
# SIGTERM fails the test too.
#
# Environment: GUEST_TESTS (default dd,size,full,rand), GUEST_SIZE (bytes,
# default 67108864), GUEST_QUEUES (default 2), GUEST_TIMEOUT (default 480).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 BENCH_SERVER BLKCHECK [run-guest options...]" >&2; exit 2; }
SERVER=$1
BLKCHECK_BIN=$2
shift 2

TESTS=${GUEST_TESTS:-dd,size,full,rand}
SIZE=${GUEST_SIZE:-67108864}
QUEUES=${GUEST_QUEUES:-2}
TIMEOUT=${GUEST_TIMEOUT:-480}

skip() { echo "test-guest: SKIP: $*" >&2; exit 77; }
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
[ -x "$SERVER" ] || { echo "test-guest: $SERVER is not executable" >&2; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-guest-test.XXXXXX")
SOCK=$WORK/guest0.sock
SERVER_PID=
cleanup() {
	local rc=$?
	if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		wait "$SERVER_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

server_logs() {
	echo "----- bench-server stdout -----" >&2
	cat "$WORK/server.out" >&2 || true
	echo "----- bench-server stderr -----" >&2
	cat "$WORK/server.err" >&2 || true
	echo "-----" >&2
}

"$SERVER" --socket "$SOCK" --backing ram --size "$SIZE" --queues "$QUEUES" \
	> "$WORK/server.out" 2> "$WORK/server.err" &
SERVER_PID=$!

for _ in $(seq 1 100); do
	grep -q '^READY$' "$WORK/server.out" 2>/dev/null && break
	if ! kill -0 "$SERVER_PID" 2>/dev/null; then
		wait "$SERVER_PID" 2>/dev/null && src=0 || src=$?
		SERVER_PID=
		server_logs
		echo "test-guest: FAIL: bench-server exited (status $src) before READY" >&2
		exit 1
	fi
	sleep 0.1
done
if ! grep -q '^READY$' "$WORK/server.out"; then
	server_logs
	echo "test-guest: FAIL: bench-server not READY after 10s" >&2
	exit 1
fi
[ -S "$SOCK" ] || { server_logs; echo "test-guest: FAIL: READY but $SOCK is not a socket" >&2; exit 1; }

set +e
"$HERE/run-guest.sh" --socket "$SOCK" --blkcheck "$BLKCHECK_BIN" --tests "$TESTS" \
	--size "$SIZE" --queues "$QUEUES" --timeout "$TIMEOUT" "$@"
GUEST_RC=$?
set -e

# Stop the server: it must exit by itself, cleanly, on SIGTERM.
SERVER_RC=0
if kill -0 "$SERVER_PID" 2>/dev/null; then
	kill -TERM "$SERVER_PID"
	for _ in $(seq 1 100); do
		kill -0 "$SERVER_PID" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$SERVER_PID" 2>/dev/null; then
		kill -KILL "$SERVER_PID" 2>/dev/null || true
		echo "test-guest: bench-server did not exit within 10s of SIGTERM" >&2
		SERVER_RC=124
		wait "$SERVER_PID" 2>/dev/null || true
	else
		wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
	fi
else
	wait "$SERVER_PID" 2>/dev/null || SERVER_RC=$?
	echo "test-guest: bench-server died during the guest run (status $SERVER_RC)" >&2
	[ $SERVER_RC -ne 0 ] || SERVER_RC=1
fi
SERVER_PID=

grep '^STATS' "$WORK/server.out" | sed 's/^/test-guest: server /' >&2 || true
if [ $GUEST_RC -eq 0 ] && grep -qE '^STATS .* writes=0 ' "$WORK/server.out"; then
	echo "test-guest: WARNING: the guest passed but the server counted no writes" >&2
fi
if [ -e "$SOCK" ]; then
	echo "test-guest: socket $SOCK still exists after shutdown" >&2
	[ $SERVER_RC -ne 0 ] || SERVER_RC=1
fi
if [ $SERVER_RC -ne 0 ]; then
	server_logs
	echo "test-guest: FAIL: bench-server status $SERVER_RC (guest verdict: $GUEST_RC)" >&2
	exit 1
fi
if [ $GUEST_RC -ne 0 ] && [ -s "$WORK/server.err" ]; then
	server_logs
fi
case $GUEST_RC in
0)  echo "test-guest: PASS" >&2 ;;
77) echo "test-guest: SKIP" >&2 ;;
*)  echo "test-guest: FAIL (run-guest status $GUEST_RC)" >&2; GUEST_RC=1 ;;
esac
exit $GUEST_RC
