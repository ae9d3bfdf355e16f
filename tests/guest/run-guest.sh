#!/bin/bash
# run-guest.sh: boot a real Linux guest in QEMU (TCG) with one
# vhost-user-blk-pci disk per --socket, run the guest-side tests on
# /dev/vda (/dev/vdb, ...) and report the guest's verdict.
#
# usage: run-guest.sh --socket PATH [--socket PATH2 ...] [options]
#   --tests LIST       comma list run by the guest /init (default dd,full,rand):
#                      dd, full[:SEED], rand[:DURATION], write[:SEED],
#                      verify[:SEED], size
#   --queues N         num-queues of each vhost-user-blk-pci device (default 2)
#   --smp N            guest vCPUs (default 2)
#   --mem MiB          guest memory (default 512)
#   --timeout SEC      whole-run limit (default 300)
#   --rand DURATION    randverify duration: N, Ns or Nops (default 10s)
#   --threads N        randverify threads (default 8); e.g. `--tests rand:40s
#                      --threads 16` runs 40 s of 16-thread verified random
#                      I/O (about 45 s in all under TCG); its BLKCHECK line
#                      gives max_lat_ms/p99_lat_ms, the longest I/O stall
#   --seed N           default seed of write/verify (default 1)
#   --size BYTES       expected disk size (for the `size` test)
#   --reconnect        add reconnect=1 to the socket chardevs
#   --packed           packed=on on each vhost-user-blk-pci device (packed
#                      virtqueues if the back-end offers VIRTIO_F_RING_PACKED;
#                      the guest test feature:34 checks the guest got them)
#   --blkcheck PATH    static blkcheck binary (default: $BLKCHECK, else built
#                      from blkcheck.c with gcc -static into the cache)
#   --log FILE         write the guest serial console to FILE as it runs (a
#                      script can watch it, e.g. for "=== rand" or a BLKCHECK
#                      line); it is kept after the run
#   --append ARGS      extra kernel command line
#   --qmp PATH         QMP socket (-qmp unix:PATH,server=on,wait=off) so a
#                      test can drive the running VM (tests/guest/qmp.py)
#   --mem-opts OPTS    appended to -m, e.g. slots=10,maxmem=2G (memory hot-add)
#   --hugepages DIR    guest RAM from memory-backend-file,mem-path=DIR,share=on
#                      (hugetlbfs) instead of memfd
#   --allow-reboot     no -no-reboot: a reset (QMP system_reset) reboots the
#                      guest instead of ending QEMU
#   --pidfile FILE     write QEMU's pid to FILE once it runs
#   --qemu-arg ARG     one more QEMU argument (repeatable)
#   -v|--verbose       stream the guest console while it runs
#
# Without --socket the guest boots with no disk (vhostd.disks=0): a test can
# hot-plug one through --qmp.
#
# Cache: $VHOSTD_GUEST_CACHE or ${XDG_CACHE_HOME:-$HOME/.cache}/vhostd-guest
# Exit: 0 guest PASS, 1 guest FAIL / timeout / QEMU error, 77 a host
# requirement (qemu, kernel, busybox-static, ...) is missing, 2 usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

SOCKETS=()
TESTS=dd,full,rand
QUEUES=2
SMP=2
MEM=512
TIMEOUT=300
RAND=10s
THREADS=8
SEED=1
SIZE=
RECONNECT=0
PACKED=0
BLKCHECK_BIN=${BLKCHECK:-}
LOGCOPY=
APPEND_EXTRA=
VERBOSE=0
QMP_SOCK=
MEM_OPTS=
HUGEDIR=
NO_REBOOT=1
PIDFILE=
QEMU_EXTRA=()

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }
skip() { echo "run-guest: SKIP: $*" >&2; exit 77; }
die() { echo "run-guest: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
	case "$1" in
	--socket)     SOCKETS+=("$2"); shift 2 ;;
	--tests)      TESTS=$2; shift 2 ;;
	--queues)     QUEUES=$2; shift 2 ;;
	--smp)        SMP=$2; shift 2 ;;
	--mem)        MEM=$2; shift 2 ;;
	--timeout)    TIMEOUT=$2; shift 2 ;;
	--rand)       RAND=$2; shift 2 ;;
	--threads)    THREADS=$2; shift 2 ;;
	--seed)       SEED=$2; shift 2 ;;
	--size)       SIZE=$2; shift 2 ;;
	--reconnect)  RECONNECT=1; shift ;;
	--packed)     PACKED=1; shift ;;
	--blkcheck)   BLKCHECK_BIN=$2; shift 2 ;;
	--log)        LOGCOPY=$2; shift 2 ;;
	--append)     APPEND_EXTRA=$2; shift 2 ;;
	--qmp)        QMP_SOCK=$2; shift 2 ;;
	--mem-opts)   MEM_OPTS=$2; shift 2 ;;
	--hugepages)  HUGEDIR=$2; shift 2 ;;
	--allow-reboot) NO_REBOOT=0; shift ;;
	--pidfile)    PIDFILE=$2; shift 2 ;;
	--qemu-arg)   QEMU_EXTRA+=("$2"); shift 2 ;;
	-v|--verbose) VERBOSE=1; shift ;;
	-h|--help)    usage ;;
	*)            echo "run-guest: unknown argument '$1'" >&2; usage ;;
	esac
done
[ ${#SOCKETS[@]} -le 16 ] || die "at most 16 sockets"
for v in QUEUES SMP MEM TIMEOUT THREADS; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v,,} wants a positive integer, got '${!v}'"
done

QEMU=${QEMU:-qemu-system-x86_64}
command -v "$QEMU" >/dev/null 2>&1 || skip "$QEMU not found (apt-get install qemu-system-x86)"

CACHE=${VHOSTD_GUEST_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vhostd-guest}
mkdir -p "$CACHE"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-guest.XXXXXX")
QEMU_PID=
TAIL_PID=
cleanup() {
	local rc=$?
	if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null || true; fi
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill -TERM "$QEMU_PID" 2>/dev/null || true
		for _ in 1 2 3 4 5 6 7 8 9 10; do
			kill -0 "$QEMU_PID" 2>/dev/null || break
			sleep 0.2
		done
		kill -KILL "$QEMU_PID" 2>/dev/null || true
		wait "$QEMU_PID" 2>/dev/null || true
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# --- blkcheck + initramfs ----------------------------------------------------
if [ -z "$BLKCHECK_BIN" ]; then
	command -v gcc >/dev/null 2>&1 || skip "no --blkcheck given and gcc not found to build it"
	BLKCHECK_BIN=$CACHE/blkcheck
	if [ ! -x "$BLKCHECK_BIN" ] || [ "$HERE/blkcheck.c" -nt "$BLKCHECK_BIN" ]; then
		gcc -std=gnu11 -O2 -static -pthread -o "$WORK/blkcheck" "$HERE/blkcheck.c" ||
			skip "cannot build a static blkcheck (static glibc missing? apt-get install libc6-dev)"
		mv -f "$WORK/blkcheck" "$BLKCHECK_BIN"
	fi
fi
[ -x "$BLKCHECK_BIN" ] || die "blkcheck binary '$BLKCHECK_BIN' not found"

set +e
"$HERE/mkinitramfs.sh" "$CACHE/initramfs" "$BLKCHECK_BIN"
rc=$?
set -e
[ $rc -eq 0 ] || exit $rc
KERNEL=$CACHE/initramfs/vmlinuz
INITRD=$CACHE/initramfs/initramfs.cpio.gz

# --- QEMU --------------------------------------------------------------------
qesc() { printf '%s' "${1//,/,,}"; }    # QEMU option value escaping

for s in "${SOCKETS[@]}"; do
	if [ $RECONNECT -eq 0 ] && [ ! -S "$s" ]; then
		die "socket $s does not exist (is the backend running?)"
	fi
done

LOG=$WORK/console.log
[ -n "$LOGCOPY" ] && LOG=$LOGCOPY
QERR=$WORK/qemu.stderr
: > "$LOG"
# shellcheck disable=SC2054  # commas are QEMU option syntax
ARGS=(
	-accel tcg -cpu max -smp "$SMP"
	-m "${MEM}M${MEM_OPTS:+,$MEM_OPTS}"
	-numa node,memdev=mem
	-nodefaults -no-user-config -display none
	-chardev "file,id=serial0,path=$(qesc "$LOG")" -serial chardev:serial0
	-kernel "$KERNEL" -initrd "$INITRD"
)
if [ -n "$HUGEDIR" ]; then
	ARGS+=(-object "memory-backend-file,id=mem,size=${MEM}M,mem-path=$(qesc "$HUGEDIR"),share=on")
else
	ARGS+=(-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on")
fi
[ $NO_REBOOT -eq 1 ] && ARGS+=(-no-reboot)
[ -n "$QMP_SOCK" ] && ARGS+=(-qmp "unix:$(qesc "$QMP_SOCK"),server=on,wait=off")
ARGS+=("${QEMU_EXTRA[@]}")
i=0
for s in "${SOCKETS[@]}"; do
	chr="socket,id=vub$i,path=$(qesc "$s")"
	[ $RECONNECT -eq 1 ] && chr+=",reconnect=1"
	dev="vhost-user-blk-pci,chardev=vub$i,num-queues=$QUEUES"
	[ $PACKED -eq 1 ] && dev+=",packed=on"
	ARGS+=(-chardev "$chr" -device "$dev")
	i=$((i + 1))
done
CMDLINE="console=ttyS0 quiet panic=-1 vhostd.tests=$TESTS vhostd.disks=${#SOCKETS[@]}"
CMDLINE+=" vhostd.threads=$THREADS vhostd.rand=$RAND vhostd.seed=$SEED"
[ -n "$SIZE" ] && CMDLINE+=" vhostd.size=$SIZE"
[ -n "$APPEND_EXTRA" ] && CMDLINE+=" $APPEND_EXTRA"
ARGS+=(-append "$CMDLINE")

echo "run-guest: $QEMU ${ARGS[*]}" >&2
START=$(date +%s)
"$QEMU" "${ARGS[@]}" < /dev/null > "$QERR" 2>&1 &
QEMU_PID=$!
[ -n "$PIDFILE" ] && echo "$QEMU_PID" > "$PIDFILE"
if [ $VERBOSE -eq 1 ]; then
	tail -n +1 -f "$LOG" >&2 &
	TAIL_PID=$!
fi

TIMED_OUT=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
	if [ $(( $(date +%s) - START )) -ge "$TIMEOUT" ]; then
		TIMED_OUT=1
		break
	fi
	sleep 0.5
done
QEMU_RC=0
if [ $TIMED_OUT -eq 1 ]; then
	kill -TERM "$QEMU_PID" 2>/dev/null || true
	sleep 1
	kill -KILL "$QEMU_PID" 2>/dev/null || true
fi
wait "$QEMU_PID" 2>/dev/null || QEMU_RC=$?
QEMU_PID=
ELAPSED=$(( $(date +%s) - START ))
if [ -n "$TAIL_PID" ]; then
	sleep 0.2
	kill "$TAIL_PID" 2>/dev/null || true
	wait "$TAIL_PID" 2>/dev/null || true
	TAIL_PID=
fi

RESULT=$(grep -a 'VHOSTD-GUEST-RESULT:' "$LOG" | tail -n 1 | tr -d '\r' || true)
show_log() {
	echo "----- guest console ($LOG) -----" >&2
	tr -d '\r' < "$LOG" >&2 || true
	echo "----- QEMU output (exit status $QEMU_RC) -----" >&2
	cat "$QERR" >&2 || true
	echo "-----" >&2
}

if [ $TIMED_OUT -eq 1 ]; then
	show_log
	echo "run-guest: FAIL: timed out after ${TIMEOUT}s (${RESULT:-no verdict})" >&2
	exit 1
fi
case "$RESULT" in
*"VHOSTD-GUEST-RESULT: PASS"*)
	if [ $VERBOSE -eq 0 ]; then
		grep -a -E '^(vhostd-guest:|BLKCHECK|dd copied)' "$LOG" | tr -d '\r' >&2 || true
	fi
	echo "run-guest: PASS in ${ELAPSED}s" >&2
	exit 0 ;;
*"VHOSTD-GUEST-RESULT: FAIL"*)
	show_log
	echo "run-guest: FAIL: ${RESULT#*RESULT: FAIL } (${ELAPSED}s)" >&2
	exit 1 ;;
*)
	show_log
	echo "run-guest: FAIL: the guest gave no verdict (QEMU exit status $QEMU_RC, ${ELAPSED}s)" >&2
	exit 1 ;;
esac
