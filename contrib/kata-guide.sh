#!/bin/bash
# kata-guide.sh: the Kata Containers "SPDK vhost-user" guide, replayed with
# vhostd.  Every step prints the command it runs, so the output reads like
# the guide.
#
# usage: kata-guide.sh [options]
#   --store DIR        vhost-user store (default /var/run/kata-containers/vhost-user)
#   --state FILE       state file for a vhostd this script starts
#                      (default: vhostd's default for the default store,
#                      DIR/vhostd.state otherwise)
#   --scratch          use a new temporary store, removed at the end
#   --vhostd PATH      vhostd binary to start when the store is not served yet
#                      (default: build/vhostd of this tree, else vhostd in PATH)
#   --name NAME        controller name (default vhostblk0)
#   --config TEXT      what to write to its config (default "size=64M block_size=4096")
#   --qemu             boot the QEMU test guest (tests/guest/run-guest.sh) on the
#                      socket instead of `docker run --runtime kata-runtime`
#   --keep             leave the controller (and a vhostd this script started) running
#
# Exit: 0 done, 1 a step failed, 77 a requirement is missing (root, /dev/fuse,
# QEMU for --qemu), 2 usage.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$HERE/.." && pwd)

STORE=/var/run/kata-containers/vhost-user
STATE=
SCRATCH=0
VHOSTD=
NAME=vhostblk0
CONFIG="size=64M block_size=4096"
QEMU_MODE=0
KEEP=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }
skip() { echo "kata-guide: SKIP: $*" >&2; exit 77; }
die() { echo "kata-guide: error: $*" >&2; exit 1; }
step() { printf '\n### %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

while [ $# -gt 0 ]; do
	case "$1" in
	--store)   STORE=$2; shift 2 ;;
	--state)   STATE=$2; shift 2 ;;
	--scratch) SCRATCH=1; shift ;;
	--vhostd)  VHOSTD=$2; shift 2 ;;
	--name)    NAME=$2; shift 2 ;;
	--config)  CONFIG=$2; shift 2 ;;
	--qemu)    QEMU_MODE=1; shift ;;
	--keep)    KEEP=1; shift ;;
	-h|--help) usage ;;
	*)         echo "kata-guide: unknown argument '$1'" >&2; usage ;;
	esac
done

[ "$(id -u)" = 0 ] || skip "run as root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "/dev/fuse is missing"
if [ $QEMU_MODE = 1 ]; then
	command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 || skip "qemu-system-x86_64 not found"
fi

WORK=
DPID=
cleanup() {
	local rc=$?
	if [ $KEEP = 0 ] && [ -d "$STORE/block/ctl/$NAME" ]; then
		rmdir "$STORE/block/ctl/$NAME" 2>/dev/null || true
	fi
	if [ -n "$DPID" ] && [ $KEEP = 0 ]; then
		kill -TERM "$DPID" 2>/dev/null || true
		wait "$DPID" 2>/dev/null || true
	fi
	if [ -n "$WORK" ] && [ $KEEP = 0 ]; then
		grep -q " $CTL " /proc/mounts && umount -l "$CTL"
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT

if [ $SCRATCH = 1 ]; then
	WORK=$(mktemp -d /tmp/vhostd-kata-guide.XXXXXX)
	STORE=$WORK/store
fi
CTL=$STORE/block/ctl
DEVS=$STORE/block/devices
SOCKS=$STORE/block/sockets

step "1. Hugepages for the target (SPDK: HUGEMEM=4096 scripts/setup.sh)"
echo "nothing to do: vhostd uses no hugepages of its own; the VM's memory must be"
echo "shared (Kata: enable_hugepages = true, or virtio-fs' shared memory)"

step "2-3. The store directories and the target (SPDK: mkdir -p .../block/{sockets,devices}; spdk_tgt -S ... &)"
if grep -q vhostd "$CTL/.version" 2>/dev/null; then
	echo "vhostd already serves $STORE: $(cat "$CTL/.version")"
else
	if [ -z "$VHOSTD" ]; then
		if [ -x "$TOP/build/vhostd" ]; then VHOSTD=$TOP/build/vhostd
		else VHOSTD=$(command -v vhostd) || die "no vhostd binary: build it or pass --vhostd"
		fi
	fi
	if [ -z "$STATE" ]; then
		[ "$STORE" = /var/run/kata-containers/vhost-user ] && STATE=/var/lib/vhostd/state ||
			STATE=$STORE/vhostd.state
	fi
	LOG=${WORK:-/tmp}/vhostd-kata-guide.log
	printf '$ %s --store %s --state %s &\n' "$VHOSTD" "$STORE" "$STATE"
	"$VHOSTD" --store "$STORE" --state "$STATE" >"$LOG" 2>&1 &
	DPID=$!
	for _ in $(seq 100); do
		grep -q vhostd "$CTL/.version" 2>/dev/null && break
		kill -0 "$DPID" 2>/dev/null || { cat "$LOG" >&2; die "vhostd exited"; }
		sleep 0.1
	done
	grep -q vhostd "$CTL/.version" 2>/dev/null || { cat "$LOG" >&2; die "vhostd did not come up"; }
	echo "(vhostd log: $LOG)"
fi
run ls -l "$STORE/block"

step "4. The controller (SPDK: rpc.py bdev_malloc_create 64 4096 -b Malloc0; rpc.py vhost_create_blk_controller $NAME Malloc0)"
run mkdir "$CTL/$NAME"
printf '$ echo "%s" > %s\n' "$CONFIG" "$CTL/$NAME/config"
echo "$CONFIG" > "$CTL/$NAME/config" || { cat "$CTL/$NAME/error" >&2; die "the config was refused"; }
run cat "$CTL/$NAME/config"
run cat "$CTL/$NAME/state"

step "5. The device node (SPDK: mknod $DEVS/$NAME b 241 0)"
echo "done by vhostd when the controller went live:"
run ls -l "$DEVS" "$SOCKS"
run cat "$CTL/$NAME/device"

step "How Kata finds the socket: the node in devices/ with the major:minor of the --device node, the socket of the same name"
NODE=$DEVS/$NAME
MM=$(stat -c '%Hr:%Lr' "$NODE")
[ "${MM%%:*}" = 241 ] || die "$NODE is not a major-241 node ($MM)"
FOUND=
for f in $(ls "$DEVS"); do                     # os.ReadDir order, first match wins
	[ "$(stat -c '%Hr:%Lr' "$DEVS/$f")" = "$MM" ] && { FOUND=$f; break; }
done
[ "$FOUND" = "$NAME" ] || die "Kata would pick devices/$FOUND for $MM, not $NAME"
SOCK=$SOCKS/$FOUND
[ -S "$SOCK" ] || die "no socket at $SOCK"
echo "$NODE is $MM -> devices/$FOUND -> socket $SOCK"

SIZE=$(cat "$CTL/$NAME/size")
if [ $QEMU_MODE = 1 ]; then
	step "6. The VM (Kata: QEMU with vhost-user-blk-pci on $SOCK), running the guide's dd and a verified write/read"
	rc=0
	run "$TOP/tests/guest/run-guest.sh" --socket "$SOCK" --tests dd,size,write,verify \
		--size "$SIZE" || rc=$?
	[ $rc = 0 ] || exit $rc
	run cat "$CTL/$NAME/stats"
elif command -v docker >/dev/null 2>&1 && docker info 2>/dev/null | grep -q kata; then
	step "6. The container (unchanged from the guide)"
	run docker run --rm --runtime kata-runtime --device="$NODE:/dev/vda" busybox \
		sh -c 'ls -l /dev/vda && dd if=/dev/vda of=/tmp/ddtest bs=4k count=20'
	run cat "$CTL/$NAME/stats"
else
	step "6. The container (unchanged from the guide)"
	echo "docker with the kata runtime is not available here; the command would be:"
	echo "\$ docker run --runtime kata-runtime --device=$NODE:/dev/vda -it busybox sh"
	echo "(use --qemu to boot the test guest on the socket instead)"
fi

if [ $KEEP = 0 ]; then
	step "Clean up"
	run rmdir "$CTL/$NAME"
	run ls -A "$DEVS" "$SOCKS"
fi
echo
echo "kata-guide: done"
