#!/bin/bash
# test-persist.sh VHOSTD BLKCHECK [run-guest.sh options...]
#
# A file-backed device survives the guest, a restart of vhostd and rmdir:
#
#   1. vhostd on a scratch store; mkdir ctl/pdisk0;
#      echo "size=64M backing=$T/disk.img" > ctl/pdisk0/config
#   2. a QEMU guest writes a pattern over the whole disk (blkcheck
#      writepattern, seed SEED, ending with fsync = FLUSH) and powers off
#   3. vhostd is stopped with SIGTERM (exit 0, ctl/ unmounted); the host
#      reads the pattern back from the file (blkcheck verifypattern)
#   4. vhostd is started again on the same store and state file: pdisk0
#      comes back by itself (same config, same 241:minor, socket listening,
#      node present); the host verifies the file again
#   5. a new guest on the restarted daemon verifies the pattern on /dev/vda
#   6. rmdir pdisk0 (socket and node go, the file and its data stay: the
#      host verifies it a third time); SIGTERM vhostd
#
# Prints the session (commands and output) and timings on stdout.  Exit 0
# pass, 1 fail, 77 skipped (not root, no /dev/fuse, no QEMU or guest kernel).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 VHOSTD BLKCHECK [run-guest options...]" >&2; exit 2; }
VHOSTD=$1
BLKCHECK_BIN=$2
shift 2
GUEST_TIMEOUT=${PERSIST_TIMEOUT:-300}
NAME=pdisk0
SIZE_BYTES=67108864

skip() { echo "persist: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
[ -x "$VHOSTD" ] || { echo "persist: $VHOSTD is not executable" >&2; exit 1; }
[ -x "$BLKCHECK_BIN" ] || { echo "persist: $BLKCHECK_BIN is not executable" >&2; exit 1; }

# The image lives on a disk-backed filesystem (not tmpfs), so the daemon can
# use O_DIRECT as it would in production.
T=$(mktemp -d /var/tmp/vhostd-persist.XXXXXX)
STORE=$T/store
STATE=$T/vhostd.state
IMG=$T/disk.img
export STORE STATE T
CTL=$STORE/block/ctl
DEVS=$STORE/block/devices
SOCKS=$STORE/block/sockets
DLOG=$T/vhostd.log
TEST_NAME=persist
# shellcheck source=vhostd-lib.sh
. "$HERE/vhostd-lib.sh"

cleanup() {
	local rc=$?
	kill_vhostd
	rm -rf "$T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# A fresh seed each run, so nothing left from an earlier run can pass.
SEED=$(printf '0x%x' $(( (RANDOM << 30 | RANDOM << 15 | RANDOM) | 1 )))
echo "persist: vhostd=$VHOSTD blkcheck=$BLKCHECK_BIN seed=$SEED"
printf '$ T=$(mktemp -d /var/tmp/vhostd-persist.XXXXXX); STORE=$T/store; STATE=$T/vhostd.state; echo $T\n%s\n' "$T"

# guest TESTS WHAT [run-guest options]: boot a guest on the socket; checks
# its verdict and that its console shows WHAT.
guest() {
	local tests=$1 want=$2 grc=0 t0 log=$T/guest.$1.console
	shift 2
	printf '$ %s --socket %s --blkcheck %s --tests %s --size %s --timeout %s\n' \
		"tests/guest/run-guest.sh" "$Q_SOCKS/$NAME" "$BLKCHECK_BIN" "$tests" \
		"$SIZE_BYTES" "$GUEST_TIMEOUT"
	t0=$(now_ms)
	"$HERE/run-guest.sh" --socket "$SOCKS/$NAME" --blkcheck "$BLKCHECK_BIN" \
		--tests "$tests" --size "$SIZE_BYTES" --timeout "$GUEST_TIMEOUT" \
		--log "$log" "$@" >"$T/guest.out" 2>&1 || grc=$?
	timing "guest --tests $tests (boot, test, poweroff)" $(( $(now_ms) - t0 ))
	sed -e 's/^run-guest: qemu-system/run-guest: (QEMU command line) qemu-system/' "$T/guest.out"
	if [ $grc -eq 77 ]; then
		echo "persist: the guest cannot run here (run-guest.sh skipped)" >&2
		exit 77
	fi
	[ $grc -eq 0 ] || fail "guest --tests $tests failed (run-guest.sh status $grc)"
	grep -aq 'VHOSTD-GUEST-RESULT: PASS' "$log" 2>/dev/null ||
		fail "guest --tests $tests: no PASS verdict on the console"
	grep -aq "$want" "$log" 2>/dev/null || fail "guest --tests $tests: no '$want' on the console"
}

# host_verify WHEN: the host reads the pattern back from the image file.
host_verify() {
	sh_run "$BLKCHECK_BIN verifypattern \$T/disk.img $SEED"
	[ $RC -eq 0 ] && grep -q "BLKCHECK verifypattern OK" <<<"$OUT" ||
		fail "the host does not read the guest's pattern back from the file $1"
}

# --- 1 ---------------------------------------------------------------------
step "1. A file-backed controller"
start_vhostd || exit 1
sh_run "mkdir $Q_CTL/$NAME"
[ $RC -eq 0 ] || { fail "mkdir failed"; exit 1; }
sh_run "echo \"size=64M backing=\$T/disk.img\" > $Q_CTL/$NAME/config"
if [ $RC -ne 0 ]; then
	sh_run "cat $Q_CTL/$NAME/error"
	fail "the file-backed config was refused: $OUT"
	daemon_log
	exit 1
fi
sh_run "cat $Q_CTL/$NAME/config"
CONFIG1=$OUT
grep -qx "backing=$IMG" <<<"$CONFIG1" || fail "config does not read back backing=$IMG"
grep -qx "size=$SIZE_BYTES" <<<"$CONFIG1" || fail "config does not read back size=$SIZE_BYTES"
sh_run "cat $Q_CTL/$NAME/state $Q_CTL/$NAME/device"
DEVICE1=$(cat "$CTL/$NAME/device")
sh_run "ls -ls \$T/disk.img"
[ -f "$IMG" ] && [ "$(stat -c %s "$IMG")" = "$SIZE_BYTES" ] ||
	fail "$IMG is not a $SIZE_BYTES-byte file after the config write"

# --- 2 ---------------------------------------------------------------------
step "2. A guest writes a pattern over the whole disk (seed $SEED) and powers off"
guest "size,write:$SEED" "BLKCHECK writepattern OK" "$@"
sh_run "cat $Q_CTL/$NAME/stats"
bw=$(stat_of bytes_written "$OUT"); fl=$(stat_of flushes "$OUT"); errs=$(stat_of errors "$OUT")
[[ ${bw:-} =~ ^[0-9]+$ ]] && [ "$bw" -ge "$SIZE_BYTES" ] ||
	fail "stats: bytes_written='${bw:-}' after the guest wrote $SIZE_BYTES bytes"
[[ ${fl:-} =~ ^[0-9]+$ ]] && [ "$fl" -ge 1 ] || fail "stats: flushes='${fl:-}' (the guest fsynced)"
[ "${errs:-}" = 0 ] || fail "stats: errors='${errs:-}'"
wait_state "$NAME" listening 10 || fail "state is '$(cat "$CTL/$NAME/state" 2>&1)' 10 s after the guest exited, expected listening"

# --- 3 ---------------------------------------------------------------------
step "3. Stop vhostd; the data is in the file"
stop_vhostd
sh_run "ls -l $Q_SOCKS $Q_DEVS"
# DESIGN §2: sockets and nodes are ordinary files, a restart does not make
# them vanish (the node at least must stay; the socket is dead until restart).
[ -b "$DEVS/$NAME" ] || fail "the node $DEVS/$NAME vanished when vhostd stopped (DESIGN §2)"
sh_run "grep -c . \$STATE; grep -F $NAME \$STATE"
grep -qF "$IMG" "$STATE" || fail "the state file does not record the backing $IMG"
host_verify "with vhostd stopped"

# --- 4 ---------------------------------------------------------------------
step "4. Restart vhostd on the same store and state file: $NAME comes back by itself"
start_vhostd || exit 1
RESTART_MS=$LAST_MS
sh_run "ls $Q_CTL"
if [ ! -d "$CTL/$NAME" ]; then
	fail "$NAME did not come back after the restart"
	daemon_log
	finish
fi
sh_run "cat $Q_CTL/$NAME/state"
[ "$OUT" = listening ] || fail "restored $NAME is '$OUT', expected listening"
sh_run "cat $Q_CTL/$NAME/config"
[ "$OUT" = "$CONFIG1" ] || fail "the restored config differs from the one before the restart"
sh_run "cat $Q_CTL/$NAME/device"
[ "$OUT" = "$DEVICE1" ] || fail "the restored device is '$OUT', was '$DEVICE1'"
sh_run "stat -c '%n: %F %t:%T' $Q_SOCKS/$NAME $Q_DEVS/$NAME"
[ -S "$SOCKS/$NAME" ] || fail "no socket at $SOCKS/$NAME after the restart"
[ -b "$DEVS/$NAME" ] && [ "$(stat -c %t "$DEVS/$NAME")" = f1 ] ||
	fail "no major-241 node at $DEVS/$NAME after the restart"
grep -q 'restored 1 ' "$DLOG" || fail "vhostd's log does not say it restored 1 controller"
host_verify "after the restart"

# --- 5 ---------------------------------------------------------------------
step "5. A new guest on the restarted daemon reads the pattern back"
guest "size,verify:$SEED" "BLKCHECK verifypattern OK" "$@"
sh_run "cat $Q_CTL/$NAME/stats"
br=$(stat_of bytes_read "$OUT"); errs=$(stat_of errors "$OUT")
[[ ${br:-} =~ ^[0-9]+$ ]] && [ "$br" -ge "$SIZE_BYTES" ] ||
	fail "stats: bytes_read='${br:-}' after the guest read $SIZE_BYTES bytes"
[ "${errs:-}" = 0 ] || fail "stats: errors='${errs:-}'"
wait_state "$NAME" listening 10 || fail "state is '$(cat "$CTL/$NAME/state" 2>&1)' 10 s after the guest exited, expected listening"

# --- 6 ---------------------------------------------------------------------
step "6. rmdir: the socket and node go, the file and its data stay"
sh_run "rmdir $Q_CTL/$NAME"
[ $RC -eq 0 ] || fail "rmdir $NAME failed after the guest exited: $OUT"
sh_run "ls -A $Q_CTL $Q_SOCKS $Q_DEVS; ls -ls \$T/disk.img"
[ ! -e "$SOCKS/$NAME" ] || fail "socket $SOCKS/$NAME still exists after rmdir"
[ ! -e "$DEVS/$NAME" ] || fail "node $DEVS/$NAME still exists after rmdir"
[ -f "$IMG" ] || fail "rmdir deleted the backing file (DESIGN §3: never)"
[ -f "$IMG" ] && host_verify "after rmdir"
stop_vhostd

step "vhostd's log"
cat "$DLOG"
check_daemon_log
echo
echo "persist: vhostd restart until $NAME was back (ctl/ mounted): $RESTART_MS ms"
finish
