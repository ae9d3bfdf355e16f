#!/bin/bash
# test-packed.sh VHOSTD BLKCHECK [run-guest.sh options...]
#
# Packed virtqueues end to end (issue 14): a real Linux guest on
# vhost-user-blk-pci with packed=on against the real daemon.
#
#   1. vhostd on a scratch store; two controllers: pk0 (packed left at its
#      default, 1) and sp0 (packed=0), both 64 MiB RAM, 2 queues
#   2. ctl/pk0/packed reads 1, ctl/sp0/packed 0 (and sp0's config packed=0)
#   3. a guest with packed=on on pk0: the virtio-blk device negotiated
#      VIRTIO_F_RING_PACKED (its /sys/bus/virtio/devices/*/features has
#      '1' at position 34), then the Kata guide's dd, the size, a fullcheck
#      of the whole disk and PACKED_RAND (default 20s) of 16-thread
#      verified random I/O; the controller's stats must have moved
#   4. a guest with packed=on on sp0: the device did NOT negotiate bit 34
#      (QEMU falls back to split rings), and dd + a fullcheck pass
#   5. SIGTERM: vhostd exits 0; no error in its log
#
# Exit 0 pass, 1 fail, 77 skipped (not root, no /dev/fuse, no QEMU or
# guest kernel).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 VHOSTD BLKCHECK [run-guest options...]" >&2; exit 2; }
VHOSTD=$1
BLKCHECK_BIN=$2
shift 2
EXTRA=("$@")
RAND=${PACKED_RAND:-20s}
GUEST_TIMEOUT=${PACKED_TIMEOUT:-420}
SIZE_BYTES=67108864

skip() { echo "packed: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
[ -x "$VHOSTD" ] || { echo "packed: $VHOSTD is not executable" >&2; exit 1; }
[ -x "$BLKCHECK_BIN" ] || { echo "packed: $BLKCHECK_BIN is not executable" >&2; exit 1; }

T=$(mktemp -d /var/tmp/vhostd-packed.XXXXXX)
STORE=$T/store
STATE=$T/vhostd.state
export STORE STATE T
DLOG=$T/vhostd.log
TEST_NAME=packed
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

# guest NAME LOG TESTS: run-guest.sh with packed=on on controller NAME
guest() {
	local rc=0
	"$HERE/run-guest.sh" --socket "$STORE/block/sockets/$1" --packed --blkcheck "$BLKCHECK_BIN" \
		--tests "$3" --size "$SIZE_BYTES" --queues 2 --threads 16 --rand "$RAND" \
		--timeout "$GUEST_TIMEOUT" --log "$2" "${EXTRA[@]}" >&2 || rc=$?
	return $rc
}

step "vhostd and two controllers: pk0 (packed by default) and sp0 (packed=0)"
start_vhostd || finish
sh_run "mkdir $Q_CTL/pk0 && echo 'size=64M queues=2' > $Q_CTL/pk0/config"
[ $RC -eq 0 ] || fail "configuring pk0 failed: $OUT"
sh_run "mkdir $Q_CTL/sp0 && echo 'size=64M queues=2 packed=0' > $Q_CTL/sp0/config"
[ $RC -eq 0 ] || fail "configuring sp0 with packed=0 failed: $OUT"
# config lists packed only when it is not the default (as the rbd keys);
# the key's own file always answers
sh_run "cat $Q_CTL/pk0/packed $Q_CTL/sp0/packed"
[ "$(echo $OUT)" = "1 0" ] || fail "ctl/pk0/packed and ctl/sp0/packed read '$(echo $OUT)', expected 1 and 0"
sh_run "grep -H packed $Q_CTL/pk0/config $Q_CTL/sp0/config"
grep -q "pk0/config:packed=0" <<<"$OUT" && fail "pk0's config reads packed=0"
grep -q "sp0/config:packed=0" <<<"$OUT" || fail "sp0's config does not read packed=0"
[ ${#FAILS[@]} -eq 0 ] || finish

step "guest with packed=on on pk0: bit 34 negotiated, verified I/O"
t0=$(now_ms)
if guest pk0 "$T/guest-pk0.log" "feature:34,dd,size,full,rand"; then
	timing "guest on pk0 (packed rings): boot, checks, I/O, poweroff" "$(( $(now_ms) - t0 ))"
else
	fail "the packed guest on pk0 failed (see above)"
fi
grep -a "features" "$T/guest-pk0.log" | tr -d '\r' | head -n 2 || true
sh_run "cat $Q_CTL/pk0/stats"
w=$(stat_of writes "$OUT")
r=$(stat_of reads "$OUT")
e=$(stat_of errors "$OUT")
[ "${w:-0}" -gt 1000 ] 2>/dev/null || fail "pk0 counted ${w:-no} writes after the packed guest"
[ "${r:-0}" -gt 1000 ] 2>/dev/null || fail "pk0 counted ${r:-no} reads after the packed guest"
[ "${e:-0}" = 0 ] || fail "pk0 counted $e errors"

step "guest with packed=on on sp0 (packed=0): bit 34 not negotiated, split rings work"
t0=$(now_ms)
if guest sp0 "$T/guest-sp0.log" "nofeature:34,dd,full"; then
	timing "guest on sp0 (packed=0): boot, checks, I/O, poweroff" "$(( $(now_ms) - t0 ))"
else
	fail "the guest asking for packed=on on sp0 (packed=0) failed (see above)"
fi

step "stop"
stop_vhostd
check_daemon_log
finish
