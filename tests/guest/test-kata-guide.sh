#!/bin/bash
# test-kata-guide.sh VHOSTD BLKCHECK [run-guest.sh options...]
#
# The Kata guide ("Setup to run SPDK vhost-user devices with Kata
# Containers") end to end with the real vhostd daemon, done the way an
# operator does it, with a QEMU test guest in place of `docker run`:
#
#   1. vhostd --store STORE (a scratch store from mktemp -d)
#   2. mkdir STORE/block/ctl/vhostblk0
#      echo "size=64M block_size=4096" > STORE/block/ctl/vhostblk0/config
#      (on the next line the socket listens and the node exists)
#   3. find the device as Kata does: the --device node is a block node with
#      major 241; the runtime scans block/devices/ (sorted, first match) for
#      the node with the same major:minor and uses block/sockets/<that name>
#   4. boot the test guest (run-guest.sh) on that socket: the guide's
#      `dd if=/dev/vda of=/tmp/ddtest bs=4k count=20`, the size, and a
#      verified write/read of the whole disk (blkcheck fullcheck); while the
#      guest is connected, `state` says connected and rmdir is refused (EBUSY)
#   5. check the guest's verdict and that `stats` counted its reads/writes
#   6. the guest gone: `rmdir` succeeds at once, the socket and node are gone
#   7. SIGTERM vhostd: it exits 0 within 10 s and the control fs is unmounted
#
# Prints the operator's terminal session (commands and their output) and a
# timing summary on stdout; diagnostics on stderr.  Exit 0 pass, 1 fail, 77
# skipped (not root, no /dev/fuse, no QEMU or guest kernel).
#
# Environment: KATA_GUIDE_TESTS (guest tests, default dd,size,full),
# KATA_GUIDE_TIMEOUT (guest timeout, default 300).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 VHOSTD BLKCHECK [run-guest options...]" >&2; exit 2; }
VHOSTD=$1
BLKCHECK_BIN=$2
shift 2
GUEST_TESTS=${KATA_GUIDE_TESTS:-dd,size,full}
GUEST_TIMEOUT=${KATA_GUIDE_TIMEOUT:-300}
NAME=vhostblk0
SIZE_BYTES=67108864

skip() { echo "kata-guide: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
[ -x "$VHOSTD" ] || { echo "kata-guide: $VHOSTD is not executable" >&2; exit 1; }
[ -x "$BLKCHECK_BIN" ] || { echo "kata-guide: $BLKCHECK_BIN is not executable" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-kata-guide-work.XXXXXX")
STORE=$(mktemp -d)                      # the operator's scratch store
STATE=$T/vhostd.state
export STORE STATE                      # the transcript's commands use them
CTL=$STORE/block/ctl
DEVS=$STORE/block/devices
SOCKS=$STORE/block/sockets
DLOG=$T/vhostd.log
TEST_NAME=kata-guide
# shellcheck source=vhostd-lib.sh
. "$HERE/vhostd-lib.sh"
GPID=

cleanup() {
	local rc=$?
	if [ -n "$GPID" ] && kill -0 "$GPID" 2>/dev/null; then
		kill -TERM "$GPID" 2>/dev/null || true        # run-guest.sh stops its QEMU
		wait "$GPID" 2>/dev/null || true
	fi
	kill_vhostd
	rm -rf "$T" "$STORE"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

echo "kata-guide: vhostd=$VHOSTD blkcheck=$BLKCHECK_BIN work=$T"
printf '$ STORE=$(mktemp -d); STATE=%s; echo $STORE\n%s\n' "$STATE" "$STORE"

# --- 1. the target ---------------------------------------------------------
step "1. Start the target (SPDK: HUGEMEM=4096 scripts/setup.sh; mkdir -p \$STORE/block/{sockets,devices}; spdk_tgt -S \$STORE/block/sockets &)"
start_vhostd || exit 1
sh_run "ls -l $Q_STORE/block"
sh_run "cat $Q_CTL/.version"

# --- 2. the controller -----------------------------------------------------
step "2. Create the controller (SPDK: rpc.py bdev_malloc_create 64 4096 -b Malloc0; rpc.py vhost_create_blk_controller $NAME Malloc0; mknod ...)"
sh_run "mkdir $Q_CTL/$NAME"
[ $RC -eq 0 ] || { fail "mkdir $CTL/$NAME failed: $OUT"; daemon_log; exit 1; }
# The config write and the existence checks run in one shell, so "on the
# next line" really is the next line.
CFG_CMD="echo \"size=64M block_size=4096\" > $Q_CTL/$NAME/config"
printf '$ %s\n' "$CFG_CMD"
t0=$(now_ms)
set +e
OUT=$(bash -c "$CFG_CMD" 2>&1)
RC=$?
NEXT_LINE=$( { [ -S "$SOCKS/$NAME" ] && echo socket; [ -b "$DEVS/$NAME" ] && echo node; } | tr '\n' ' ')
set -e
timing "$CFG_CMD" $(( $(now_ms) - t0 ))
[ -n "$OUT" ] && printf '%s\n' "$OUT"
if [ $RC -ne 0 ]; then
	printf '(exit status %d)\n' "$RC"
	sh_run "cat $Q_CTL/$NAME/error"
	fail "the config write was refused"
	daemon_log
	exit 1
fi
[ "$NEXT_LINE" = "socket node " ] ||
	fail "right after the config write returned, found only '$NEXT_LINE' of 'socket node' (DESIGN §3: the socket listens and the node exists when the write returns)"
sh_run "cat $Q_CTL/$NAME/config"
CONFIG_OUT=$OUT
grep -qx "size=$SIZE_BYTES" <<<"$CONFIG_OUT" || fail "config does not read back size=$SIZE_BYTES"
grep -qx "block_size=4096" <<<"$CONFIG_OUT" || fail "config does not read back block_size=4096"
sh_run "cat $Q_CTL/$NAME/state"
[ "$OUT" = listening ] || fail "state is '$OUT' after the config write, expected listening"
sh_run "cat $Q_CTL/$NAME/socket $Q_CTL/$NAME/device"
sh_run "ls -l $Q_DEVS $Q_SOCKS"

# --- 3. Kata's device lookup -----------------------------------------------
step "3. Find the device the way Kata does (docker run --runtime kata-runtime --device=$Q_DEVS/$NAME:/dev/vda ...)"
# The runtime stats the --device path; a block node with major 241 is a
# vhost-user-blk device.  It then reads block/devices/ (os.ReadDir: sorted by
# name), takes the first node with the same major:minor, and uses the socket
# of that name in block/sockets/ (which must exist).
sh_run "stat -c '%n: %F, major 0x%t minor 0x%T' $Q_DEVS/$NAME"
read -r TYPE MAJ_HEX MIN_HEX < <(stat -c '%F|%t|%T' "$DEVS/$NAME" | awk -F'|' '{ gsub(/ /, "_", $1); print $1, $2, $3 }')
MAJ=$((16#$MAJ_HEX))
MIN=$((16#$MIN_HEX))
[ "$TYPE" = block_special_file ] || fail "$DEVS/$NAME is a '$TYPE', not a block node"
[ "$MAJ" = 241 ] || fail "$DEVS/$NAME has major $MAJ, not 241 (Kata would not treat it as vhost-user-blk)"
printf '$ for f in $(ls %s); do stat -c "%%n %%t:%%T" %s/$f; done   # major 0xf1 = 241\n' "$Q_DEVS" "$Q_DEVS"
FOUND=
N241=0
while IFS= read -r f; do
	stat -c '%n %t:%T' "$DEVS/$f"
	if [ -b "$DEVS/$f" ] && [ "$(stat -c '%t' "$DEVS/$f")" = f1 ]; then
		N241=$((N241 + 1))
		if [ -z "$FOUND" ] && [ "$(stat -c '%t:%T' "$DEVS/$f")" = "$MAJ_HEX:$MIN_HEX" ]; then
			FOUND=$f
		fi
	fi
done < <(LC_ALL=C ls "$DEVS")
[ "$N241" = 1 ] || fail "expected exactly one major-241 node in $DEVS, found $N241"
[ "$FOUND" = "$NAME" ] || fail "Kata would map $MAJ:$MIN to devices/'$FOUND', not $NAME"
SOCK=$SOCKS/${FOUND:-$NAME}
Q_SOCK=$Q_SOCKS/${FOUND:-$NAME}
sh_run "stat -c '%n: %F' $Q_SOCK"
[ -S "$SOCK" ] || { fail "no socket at $SOCK"; daemon_log; exit 1; }
echo "=> $Q_DEVS/$NAME is $MAJ:$MIN -> devices/$FOUND -> vhost-user socket $Q_SOCK"

# --- 4. the VM -------------------------------------------------------------
step "4. Boot the VM on the socket (Kata: QEMU with -device vhost-user-blk-pci) and run the guide's dd plus a verified write/read"
GLOG=$T/guest.console
GOUT=$T/guest.out
printf '$ %s --socket %s --blkcheck %s --tests %s --size %s --timeout %s\n' "tests/guest/run-guest.sh" "$Q_SOCK" "$BLKCHECK_BIN" \
	"$GUEST_TESTS" "$SIZE_BYTES" "$GUEST_TIMEOUT"
t0=$(now_ms)
"$HERE/run-guest.sh" --socket "$SOCK" --blkcheck "$BLKCHECK_BIN" --tests "$GUEST_TESTS" \
	--size "$SIZE_BYTES" --timeout "$GUEST_TIMEOUT" --log "$GLOG" "$@" >"$GOUT" 2>&1 &
GPID=$!

# While the guest runs: the controller is connected and rmdir is refused.
CONNECTED=0
for _ in $(seq $((GUEST_TIMEOUT * 10))); do
	if [ "$(cat "$CTL/$NAME/state" 2>/dev/null)" = connected ]; then CONNECTED=1; break; fi
	kill -0 "$GPID" 2>/dev/null || break
	sleep 0.1
done
T_CONNECTED=$(( $(now_ms) - t0 ))
GUEST_DURING=
if [ $CONNECTED = 1 ]; then
	timing "guest start until state=connected" "$T_CONNECTED"
	GUEST_DURING=$(
		echo "(while the guest runs, in another terminal)"
		sh_run "cat $Q_CTL/$NAME/state"
		sh_run "rmdir $Q_CTL/$NAME"
		echo "RMDIR_RC=$RC" > "$T/rmdir-rc"
		sh_run "cat $Q_CTL/$NAME/error"
		sh_run "cat $Q_CTL/.status"
	)
	if ! grep -q '^RMDIR_RC=[1-9]' "$T/rmdir-rc"; then
		fail "rmdir of a controller with a connected VM succeeded (DESIGN §3: EBUSY)"
	elif ! grep -q 'busy' <<<"$GUEST_DURING"; then
		fail "rmdir while connected failed, but not with EBUSY"
	fi
else
	fail "state never became 'connected' while the guest ran"
fi
GUEST_RC=0
wait "$GPID" || GUEST_RC=$?
GPID=
GUEST_MS=$(( $(now_ms) - t0 ))
timing "guest run (boot, tests, poweroff; QEMU exited)" "$GUEST_MS"
# run-guest.sh's own report: QEMU command line, the guest's lines, verdict
sed -e 's/^run-guest: qemu-system/run-guest: (QEMU command line) qemu-system/' "$GOUT"
[ -n "$GUEST_DURING" ] && printf '%s\n' "$GUEST_DURING"
if [ $GUEST_RC -eq 77 ]; then
	echo "kata-guide: the guest cannot run here (run-guest.sh skipped)" >&2
	exit 77
fi

step "5. The guest's verdict and the controller's counters"
[ $GUEST_RC -eq 0 ] || fail "the guest failed (run-guest.sh status $GUEST_RC)"
if [ -f "$GLOG" ]; then
	grep -aq 'VHOSTD-GUEST-RESULT: PASS' "$GLOG" || fail "no PASS verdict on the guest console"
	case ",$GUEST_TESTS," in *,dd,*)
		grep -aq 'dd copied 81920 bytes' "$GLOG" || fail "the guide's dd did not copy 81920 bytes";;
	esac
	case ",$GUEST_TESTS," in *,full*)
		grep -aq 'BLKCHECK fullcheck OK' "$GLOG" || fail "no 'BLKCHECK fullcheck OK' from the guest";;
	esac
	echo "guest verdict: $(grep -a 'VHOSTD-GUEST-RESULT' "$GLOG" | tail -n 1 | tr -d '\r')"
else
	fail "no guest console log"
fi
sh_run "cat $Q_CTL/$NAME/stats"
STATS=$OUT
reads=$(stat_of reads "$STATS"); writes=$(stat_of writes "$STATS")
br=$(stat_of bytes_read "$STATS"); bw=$(stat_of bytes_written "$STATS")
errs=$(stat_of errors "$STATS"); infl=$(stat_of in-flight "$STATS"); fl=$(stat_of flushes "$STATS")
min_read=81920; min_written=0
case ",$GUEST_TESTS," in *,full*) min_read=$((SIZE_BYTES + 81920)); min_written=$SIZE_BYTES;; esac
[[ ${reads:-} =~ ^[0-9]+$ ]] && [ "$reads" -gt 0 ] || fail "stats: reads='${reads:-}' (expected > 0)"
[[ ${br:-} =~ ^[0-9]+$ ]] && [ "$br" -ge "$min_read" ] ||
	fail "stats: bytes_read='${br:-}' (the guest read at least $min_read bytes)"
if [ "$min_written" -gt 0 ]; then
	[[ ${writes:-} =~ ^[0-9]+$ ]] && [ "$writes" -gt 0 ] || fail "stats: writes='${writes:-}' (expected > 0)"
	[[ ${bw:-} =~ ^[0-9]+$ ]] && [ "$bw" -ge "$min_written" ] ||
		fail "stats: bytes_written='${bw:-}' (the guest wrote at least $min_written bytes)"
	[[ ${fl:-} =~ ^[0-9]+$ ]] && [ "$fl" -ge 1 ] || fail "stats: flushes='${fl:-}' (blkcheck fsyncs)"
fi
[ "${errs:-}" = 0 ] || fail "stats: errors='${errs:-}' (expected 0)"
[ "${infl:-}" = 0 ] || fail "stats: in-flight='${infl:-}' after the guest exited (expected 0)"

# --- 6. tear down ----------------------------------------------------------
step "6. The VM is gone: remove the controller (SPDK: rpc.py vhost_delete_controller; rpc.py bdev_malloc_delete; rm the node)"
sh_run "rmdir $Q_CTL/$NAME"
if [ $RC -ne 0 ]; then
	fail "rmdir right after QEMU exited failed: $OUT"
	# how long until it works, for the report
	t1=$(now_ms)
	for _ in $(seq 100); do
		rmdir "$CTL/$NAME" 2>/dev/null && break
		sleep 0.1
	done
	if [ -d "$CTL/$NAME" ]; then
		echo "kata-guide: rmdir still refused 10 s after QEMU exited (state: $(cat "$CTL/$NAME/state" 2>&1))" >&2
	else
		echo "kata-guide: rmdir succeeded $(( $(now_ms) - t1 )) ms after the first refusal" >&2
	fi
fi
sh_run "ls -A $Q_CTL $Q_DEVS $Q_SOCKS"
[ ! -e "$CTL/$NAME" ] || fail "$CTL/$NAME still exists after rmdir"
[ ! -e "$SOCKS/$NAME" ] || fail "socket $SOCKS/$NAME still exists after rmdir"
[ ! -e "$DEVS/$NAME" ] || fail "node $DEVS/$NAME still exists after rmdir"
sh_run "cat $Q_STATE"
grep -q "$NAME" <<<"$OUT" && fail "the state file still mentions $NAME after rmdir"

step "7. Stop the target (SIGTERM, as systemd does)"
stop_vhostd
sh_run "ls -A $Q_STORE/block $Q_CTL"

step "vhostd's log"
cat "$DLOG"
check_daemon_log
finish
