#!/bin/bash
# test-rbd.sh VHOSTD BLKCHECK
#
# The Ceph RBD backend (issue 12) end to end: a throwaway one-node cluster
# (contrib/ceph-test-cluster.sh), the real vhostd daemon driven through its
# control fs as an operator does, real QEMU guests (TCG) doing verified I/O,
# and the cluster's own tools (rbd create/import/export/resize/snap) on the
# other side:
#
#   1. the cluster; vhostd; images made with `rbd create` and `rbd import`
#   2. refused configs, each an errno the shell prints, `error` set, the
#      controller left unconfigured with its config unchanged: no such pool,
#      no such image, a monitor nobody listens on, a second writer of an
#      image another controller holds (exclusive lock)
#   3. guest -> cluster: a guest writes a stamped pattern over an image made
#      with `rbd create` (size taken from the image); the host reads it back
#      with `rbd export` and verifies every sector
#   4. cluster -> guest: the host writes a pattern into a file, `rbd import`s
#      it, snapshots it; a guest verifies it on the image and on a
#      controller of the snapshot (read-only to the guest)
#   5. resize and an outage with rbd_timeout=0: `rbd resize` from outside and
#      `echo 128M > ctl/NAME/size` are each seen by the running guest, which
#      writes and reads back the new size; then the OSD is stopped for a
#      few seconds under the guest's verified random I/O: the I/O pauses
#      (the guest's longest I/O spans the outage), nothing fails, nothing
#      reads back wrong, the daemon lives on
#   6. rbd_timeout=3 and a longer outage: the guest's I/O fails with EIO
#      (and never returns wrong data); the daemon lives on and serves again
#      once the OSD is back (verified I/O and a fullcheck of the disk)
#   7. rmdir of every controller, SIGTERM, the cluster stopped; no process
#      is left behind
#
# Prints the session (commands and output) and timings on stdout.  Exit 0
# pass, 1 fail, 77 skipped (not root, no /dev/fuse, no QEMU or guest kernel,
# no ceph packages, vhostd built without the RBD backend).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CLUSTER_SH=$(cd "$HERE/../.." && pwd)/contrib/ceph-test-cluster.sh
[ $# -ge 2 ] || { echo "usage: $0 VHOSTD BLKCHECK" >&2; exit 2; }
VHOSTD=$1
BLKCHECK_BIN=$2
TEST_NAME=rbd
GUEST_TIMEOUT=${RBD_GUEST_TIMEOUT:-150}
OUTAGE_S=${RBD_OUTAGE_S:-5}

skip() { echo "$TEST_NAME: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
for p in ceph-mon ceph-osd ceph rbd monmaptool; do
	command -v $p >/dev/null 2>&1 ||
		skip "$p not found: the test starts its own Ceph cluster (apt-get install ceph-mon ceph-osd ceph-common)"
done
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || [ -n "${VHOSTD_GUEST_KERNEL:-}" ] ||
	skip "no guest kernel /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)"
[ -x "$CLUSTER_SH" ] || { echo "$TEST_NAME: $CLUSTER_SH missing" >&2; exit 1; }
[ -x "$VHOSTD" ] || { echo "$TEST_NAME: $VHOSTD is not executable" >&2; exit 1; }
[ -x "$BLKCHECK_BIN" ] || { echo "$TEST_NAME: $BLKCHECK_BIN is not executable" >&2; exit 1; }

# The transcript's commands are relative to the source tree.
cd "$(dirname "$CLUSTER_SH")/.."

# The image files live on a disk-backed filesystem, not in tmpfs.
T=$(mktemp -d /var/tmp/vhostd-rbd.XXXXXX)
STORE=$T/store
STATE=$T/vhostd.state
CEPH_DIR=$T/ceph
CONF=$CEPH_DIR/ceph.conf
export STORE STATE T CONF
CTL=$STORE/block/ctl
SOCKS=$STORE/block/sockets
DLOG=$T/vhostd.log
CONSOLE=$T/console.log
Q_CONF='$CONF'
# shellcheck source=vhostd-lib.sh
. "$HERE/vhostd-lib.sh"

RG_PID=
CLUSTER_UP=0

stop_guest() {
	local qpid
	if [ -n "$RG_PID" ] && kill -0 "$RG_PID" 2>/dev/null; then
		kill -TERM "$RG_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$RG_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$RG_PID" 2>/dev/null || true
	fi
	[ -n "$RG_PID" ] && { wait "$RG_PID" 2>/dev/null || true; }
	RG_PID=
	qpid=$(cat "$T/qemu.pid" 2>/dev/null || true)
	if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null &&
	   grep -qa "$T" "/proc/$qpid/cmdline" 2>/dev/null; then
		kill -TERM "$qpid" 2>/dev/null || true
		for _ in $(seq 30); do kill -0 "$qpid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$qpid" 2>/dev/null || true
	fi
	rm -f "$T/qemu.pid"
}

cleanup() {
	local rc=$?
	stop_guest
	kill_vhostd
	if [ "$CLUSTER_UP" = 1 ]; then
		"$CLUSTER_SH" stop "$CEPH_DIR" || echo "$TEST_NAME: stopping the cluster failed" >&2
	fi
	[ -n "${KEEP_T:-}" ] && echo "$TEST_NAME: kept $T" >&2 || rm -rf "$T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The guest's /init has modes of its own (eio): a cache of our own keeps
# other tests' runs from rebuilding the shared one under us.
export VHOSTD_GUEST_CACHE=${VHOSTD_GUEST_CACHE:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vhostd-guest-rbd}

# start_guest RUN-GUEST-OPTIONS...: boot a guest in the background, its
# console in $CONSOLE.
start_guest() {
	rm -f "$T/qemu.pid"
	SHOWN=0
	: > "$CONSOLE"
	printf '$ tests/guest/run-guest.sh %s --log $T/console.log &\n' "$*"
	GUEST_T0=$(now_ms)
	"$HERE/run-guest.sh" --blkcheck "$BLKCHECK_BIN" --log "$CONSOLE" --timeout "$GUEST_TIMEOUT" \
		--pidfile "$T/qemu.pid" "$@" > "$T/run-guest.out" 2>&1 &
	RG_PID=$!
}

guest_progress() { # the guest's lines not shown yet
	local lines n
	lines=$(tr -d '\r' < "$CONSOLE" | grep -aE '^(vhostd-guest:|VHOSTD-GUEST|BLKCHECK)' || true)
	n=$(printf '%s' "$lines" | grep -c '' || true)
	[ "$n" -gt "$SHOWN" ] && printf '%s\n' "$lines" | sed -n "$((SHOWN + 1)),\$p" | sed 's/^/  guest| /'
	SHOWN=$n
	return 0
}

# wait_console REGEX SECONDS: 0 seen, 1 timeout, 2 the guest is gone.
wait_console() {
	local end=$(( $(now_ms) + $2 * 1000 ))
	until grep -aqE "$1" "$CONSOLE" 2>/dev/null; do
		if [ -n "$RG_PID" ] && ! kill -0 "$RG_PID" 2>/dev/null; then
			grep -aqE "$1" "$CONSOLE" 2>/dev/null && return 0
			return 2
		fi
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.05
	done
	return 0
}
# need_console REGEX SECONDS WHAT: 0 seen, else fail (1)
need_console() {
	local r=0
	wait_console "$1" "$2" || r=$?
	guest_progress
	[ $r -eq 0 ] && return 0
	if [ $r -eq 2 ]; then
		fail "the guest ended while waiting for '$1' ($3)"
	else
		fail "no '$1' on the guest console within $2 s ($3)"
	fi
	return 1
}
console_last() { grep -aE "$1" "$CONSOLE" | tail -n 1 | tr -d '\r'; }

# end_guest SECONDS: wait for the guest's verdict (run-guest.sh exit).
end_guest() {
	local grc=0 end=$(( $(date +%s) + $1 ))
	while kill -0 "$RG_PID" 2>/dev/null && [ "$(date +%s)" -lt "$end" ]; do sleep 0.2; done
	if kill -0 "$RG_PID" 2>/dev/null; then
		fail "the guest gave no verdict within $1 s"
		stop_guest
		echo "----- guest console -----"; tr -d '\r' < "$CONSOLE"; echo "-----"
		return
	fi
	wait "$RG_PID" || grc=$?
	RG_PID=
	guest_progress
	timing "guest from start to its verdict" $(( $(now_ms) - GUEST_T0 ))
	[ $grc -eq 77 ] && { cat "$T/run-guest.out"; skip "the guest cannot run here (run-guest.sh skipped)"; }
	if [ $grc -ne 0 ]; then
		cat "$T/run-guest.out"
		fail "guest verdict: $(console_last 'VHOSTD-GUEST-RESULT' || echo none) (run-guest.sh status $grc)"
	fi
}

daemon_alive() { # daemon_alive WHEN
	if [ -z "$DPID" ] || ! kill -0 "$DPID" 2>/dev/null; then
		fail "vhostd is gone $1"
		daemon_log
		finish
	fi
	mountpoint -q "$CTL" || fail "$CTL is not mounted any more $1"
}

# configure NAME CONFIG: mkdir + echo CONFIG > config; must be accepted.
configure() {
	sh_run "mkdir $Q_CTL/$1"
	[ $RC -eq 0 ] || fail "mkdir $1 failed: $OUT"
	sh_run "echo \"$2\" > $Q_CTL/$1/config"
	if [ $RC -ne 0 ]; then
		local err
		err=$(cat "$CTL/$1/error" 2>/dev/null || true)
		if grep -qE "is invalid: use ram, null or an absolute path|built without Ceph RBD support" <<<"$err"; then
			skip "this vhostd has no RBD backend ($err)"
		fi
		sh_run "cat $Q_CTL/$1/error"
		fail "config of $1 refused: $OUT"
		daemon_log
		finish
	fi
	sh_run "cat $Q_CTL/$1/state; cat $Q_CTL/$1/config"
}

# refused NAME CONFIG WHAT [ERRNO-TEXT] [MAX-SECONDS]: the write must fail with
# a message the shell prints, set `error`, and leave the controller as it was.
refused() {
	local name=$1 cfg=$2 what=$3 want=${4:-} max=${5:-30} before after err
	before=$(cat "$CTL/$name/config")
	sh_run "timeout $((max + 30)) bash -c 'echo \"$cfg\" > $Q_CTL/$name/config'"
	local ms=$LAST_MS
	if [ $RC -eq 0 ]; then
		fail "$what: the config was accepted"
		sh_run "cat $Q_CTL/$name/state; cat $Q_CTL/$name/config"
		return
	fi
	[ $RC -eq 124 ] && fail "$what: the write did not return within $((max + 30)) s"
	grep -q 'write error: ' <<<"$OUT" || fail "$what: the shell printed no errno ($OUT)"
	[ -n "$want" ] && ! grep -q "write error: $want" <<<"$OUT" &&
		fail "$what: expected '$want', the shell printed: $OUT"
	[ "$ms" -le $((max * 1000)) ] || fail "$what: refused only after $ms ms (limit $max s)"
	sh_run "cat $Q_CTL/$name/error; cat $Q_CTL/$name/state"
	err=$(cat "$CTL/$name/error")
	[ -n "$err" ] || fail "$what: the error file is empty"
	[ "$(cat "$CTL/$name/state")" = unconfigured ] || fail "$what: state is $(cat "$CTL/$name/state"), expected unconfigured"
	after=$(cat "$CTL/$name/config")
	[ "$after" = "$before" ] || fail "$what: the config changed though the write was refused: $(diff <(echo "$before") <(echo "$after") | tr '\n' ' ')"
	[ -e "$SOCKS/$name" ] && fail "$what: a socket $SOCKS/$name exists after a refused config"
	REFUSALS+=("$(printf '%-34s %-38s %6s ms  %s' "$what" "$(sed -n 's/.*write error: //p' <<<"$OUT")" "$ms" "$err")")
	return 0
}
REFUSALS=()

# show_stats NAME: the counters that matter here (sets OUT to all of them)
show_stats() {
	sh_run "grep -E '^(reads|writes|flushes|errors|in-flight|rbd_[a-z]*) ' $Q_CTL/$1/stats | paste -sd ' '"
	OUT=$(cat "$CTL/$1/stats")
}

echo "$TEST_NAME: vhostd=$VHOSTD blkcheck=$BLKCHECK_BIN"
printf '$ T=$(mktemp -d /var/tmp/vhostd-rbd.XXXXXX); STORE=$T/store; STATE=$T/vhostd.state; CONF=$T/ceph/ceph.conf; echo $T\n%s\n' "$T"
SEED_G=$(printf '0x%x' $(( (RANDOM << 30 | RANDOM << 15 | RANDOM) | 1 )))
SEED_H=$(printf '0x%x' $(( (RANDOM << 30 | RANDOM << 15 | RANDOM) | 2 )))

# --- 1 ---------------------------------------------------------------------
step "1. A one-node Ceph cluster, vhostd, images"
sh_run "contrib/ceph-test-cluster.sh start \$T/ceph"
if [ $RC -eq 77 ]; then skip "the test cluster cannot run here: $OUT"; fi
if [ $RC -ne 0 ]; then
	fail "the test cluster did not start: $OUT"
	"$CLUSTER_SH" stop "$CEPH_DIR" >/dev/null 2>&1 || true
	finish
fi
CLUSTER_UP=1
CLUSTER_MS=$LAST_MS
sh_run "rbd -c $Q_CONF create --size 64M rbd/vm0 && rbd -c $Q_CONF create --size 32M rbd/vm2 && rbd -c $Q_CONF ls -l"
[ $RC -eq 0 ] || { fail "rbd create failed: $OUT"; finish; }
start_vhostd || finish

# --- 2 ---------------------------------------------------------------------
step "2. Refused configs leave the controller unconfigured"
sh_run "mkdir $Q_CTL/bad"
[ $RC -eq 0 ] || { fail "mkdir bad failed: $OUT"; finish; }
if ! echo "backing=rbd:rbd/vm0 ceph_conf=$T/nonexistent.conf" > "$CTL/bad/config" 2>/dev/null &&
   grep -qE "is invalid: use ram, null or an absolute path|built without Ceph RBD support" "$CTL/bad/error"; then
	skip "this vhostd has no RBD backend ($(cat "$CTL/bad/error"))"
fi
refused bad "backing=rbd:rbd/vm0 ceph_conf=\$T/nonexistent.conf" "no such ceph_conf file"
refused bad "backing=rbd:nopool/vm0 ceph_conf=$Q_CONF" "no such pool"
refused bad "backing=rbd:rbd/nosuch ceph_conf=$Q_CONF" "no such image"
refused bad "backing=rbd:rbd/ns1/vm0 ceph_conf=$Q_CONF" "no such namespace"
# a conf whose monitor address nobody listens on
DEADPORT=$(( 60000 + RANDOM % 5000 ))
while ss -Hltn "sport = :$DEADPORT" | grep -q .; do DEADPORT=$((DEADPORT + 1)); done
sh_run "sed 's/^mon host = .*/mon host = v2:127.0.0.1:$DEADPORT/' $Q_CONF > \$T/dead.conf; grep 'mon host' \$T/dead.conf"
refused bad "backing=rbd:rbd/vm0 ceph_conf=\$T/dead.conf" "unreachable monitor" "" 60
refused bad "backing=rbd:rbd/vm0 ceph_conf=$Q_CONF ceph_id=nobody keyring=x" "unknown key" "Invalid argument" 5

# --- 3 ---------------------------------------------------------------------
step "3. Guest -> cluster: a guest writes a pattern over rbd/vm0 (seed $SEED_G), the host reads it with rbd export"
configure vm0 "backing=rbd:rbd/vm0 ceph_conf=$Q_CONF"
grep -qx 'size=67108864' <<<"$(cat "$CTL/vm0/config")" || fail "vm0: config does not read size=67108864 (the image's size)"
grep -qx 'backing=rbd:rbd/vm0' <<<"$(cat "$CTL/vm0/config")" || fail "vm0: config does not read backing=rbd:rbd/vm0"
sh_run "rbd -c $Q_CONF status rbd/vm0; rbd -c $Q_CONF lock ls rbd/vm0"
# a second writer of the image is refused while vm0 holds its exclusive lock
sh_run "mkdir $Q_CTL/dup"
refused dup "backing=rbd:rbd/vm0 ceph_conf=$Q_CONF" "image locked by another client" "Device or resource busy"
sh_run "rmdir $Q_CTL/dup $Q_CTL/bad"
[ $RC -eq 0 ] || fail "rmdir of the refused controllers failed: $OUT"

start_guest --socket "$SOCKS/vm0" --tests "size,write:$SEED_G" --size 67108864
end_guest "$GUEST_TIMEOUT"
grep -aq 'BLKCHECK writepattern OK' "$CONSOLE" || fail "the guest did not write its pattern"
show_stats vm0
[ "$(stat_of errors "$OUT")" = 0 ] || fail "vm0 stats: errors=$(stat_of errors "$OUT")"
sh_run "rbd -c $Q_CONF export --no-progress rbd/vm0 \$T/vm0.export && $BLKCHECK_BIN verifypattern \$T/vm0.export $SEED_G"
[ $RC -eq 0 ] && grep -q 'BLKCHECK verifypattern OK' <<<"$OUT" ||
	fail "rbd export of vm0 does not hold the guest's pattern"
rm -f "$T/vm0.export"

# --- 4 ---------------------------------------------------------------------
step "4. Cluster -> guest: the host imports a pattern (seed $SEED_H) as rbd/vm1 and snapshots it; a guest verifies both"
sh_run "truncate -s 32M \$T/host.img && $BLKCHECK_BIN writepattern \$T/host.img $SEED_H && rbd -c $Q_CONF import --no-progress \$T/host.img rbd/vm1 && rbd -c $Q_CONF snap create --no-progress rbd/vm1@snap1"
[ $RC -eq 0 ] || fail "import/snapshot failed: $OUT"
rm -f "$T/host.img"
configure vm1 "backing=rbd:rbd/vm1 ceph_conf=$Q_CONF"
configure vm1snap "backing=rbd:rbd/vm1@snap1 ceph_conf=$Q_CONF"
grep -qx 'size=33554432' <<<"$(cat "$CTL/vm1snap/config")" || fail "vm1snap: config does not read the snapshot's size 33554432"
# the guest sees vm1 as vda, vm1@snap1 as vdb
start_guest --socket "$SOCKS/vm1" --socket "$SOCKS/vm1snap" --tests "size,verify:$SEED_H" --size 33554432
end_guest "$GUEST_TIMEOUT"
[ "$(grep -ac 'BLKCHECK verifypattern OK' "$CONSOLE")" = 2 ] ||
	fail "the guest did not verify the imported pattern on both vm1 and its snapshot"
grep -aq 'vdb: .* ro=1' "$CONSOLE" || fail "the snapshot's disk (vdb) is not read-only in the guest: $(console_last 'vdb: ')"
grep -aq 'vda: .* ro=0' "$CONSOLE" || fail "vm1 (vda) is read-only in the guest: $(console_last 'vda: ')"
# A snapshot never takes writes.  Asked for explicitly with readonly=0, the
# config must be refused, or at least read back as what is served
# (readonly=1), so that what `config` says is true.
sh_run "mkdir $Q_CTL/snapw"
sh_run "echo \"backing=rbd:rbd/vm1@snap1 ceph_conf=$Q_CONF readonly=0\" > $Q_CTL/snapw/config"
if [ $RC -ne 0 ]; then
	sh_run "cat $Q_CTL/snapw/error; cat $Q_CTL/snapw/state"
	[ "$OUT" != "${OUT%unconfigured}" ] || fail "snapshot with readonly=0 refused but the controller is not unconfigured"
else
	sh_run "grep -E '^(backing|readonly)=' $Q_CTL/snapw/config"
	grep -qx 'readonly=1' <<<"$OUT" ||
		fail "a snapshot with readonly=0 was accepted and its config reads readonly=0, but a snapshot is served read-only: refuse it (EINVAL) or read back readonly=1"
fi
sh_run "rmdir $Q_CTL/snapw $Q_CTL/vm1snap $Q_CTL/vm1"
[ $RC -eq 0 ] || fail "rmdir vm1 vm1snap failed: $OUT"
sh_run "rbd -c $Q_CONF status rbd/vm1"
grep -q 'watcher=' <<<"$OUT" && fail "rbd/vm1 still has a watcher after rmdir (the daemon kept the image open)"

# --- 5 ---------------------------------------------------------------------
step "5. Resize seen by the guest; the OSD stopped for ${OUTAGE_S} s under verified I/O (rbd_timeout=0: a pause)"
start_guest --socket "$SOCKS/vm0" --tests "resize:100663296/134217728,rand:40s" --threads 8 \
	--append "vhostd.resize_wait=30"
if need_console 'VHOSTD-GUEST-READY resize1' 90 "the guest watches /sys/block/vda/size"; then
	t0=$(now_ms)
	sh_run "rbd -c $Q_CONF resize --no-progress --size 96M rbd/vm0"
	[ $RC -eq 0 ] || fail "rbd resize from outside failed: $OUT"
	if need_console 'VHOSTD-GUEST-RESIZED 1 ' 30 "the guest sees rbd resize"; then
		echo "  the guest saw the outside resize $(( $(now_ms) - t0 )) ms after rbd resize was started: $(console_last 'VHOSTD-GUEST-RESIZED 1 ')"
		timing "rbd resize until the guest saw it" $(( $(now_ms) - t0 ))
		grep -aq 'VHOSTD-GUEST-RESIZED 1 bytes=100663296' "$CONSOLE" || fail "the guest saw a wrong size after rbd resize"
	fi
	sh_run "cat $Q_CTL/vm0/size"
	[ "$OUT" = 100663296 ] || fail "ctl/vm0/size reads '$OUT' after rbd resize --size 96M"
	if need_console 'VHOSTD-GUEST-READY resize2' 90 "the guest checked the first grow"; then
		t0=$(now_ms)
		sh_run "echo 128M > $Q_CTL/vm0/size"
		[ $RC -eq 0 ] || fail "echo 128M > size failed: $OUT $(cat "$CTL/vm0/error")"
		if need_console 'VHOSTD-GUEST-RESIZED 2 ' 30 "the guest sees the size written to ctl/vm0/size"; then
			timing "echo 128M > size until the guest saw it" $(( $(now_ms) - t0 ))
			grep -aq 'VHOSTD-GUEST-RESIZED 2 bytes=134217728' "$CONSOLE" || fail "the guest saw a wrong size after echo 128M > size"
		fi
		sh_run "rbd -c $Q_CONF info rbd/vm0 | grep size"
		grep -q '^\s*size 128 MiB' <<<"$OUT" || fail "the image is not 128 MiB after echo 128M > size: $OUT"
	fi
fi
if need_console '=== rand:40s' 120 "the guest starts its verified random I/O"; then
	sleep 4
	step "5b. Stop the OSD under the guest's I/O, ${OUTAGE_S} s, start it again"
	show_stats vm0
	r0=$(stat_of reads "$OUT"); w0=$(stat_of writes "$OUT")
	t_down=$(now_ms)
	sh_run "contrib/ceph-test-cluster.sh stop-osd \$T/ceph"
	[ $RC -eq 0 ] || fail "stop-osd failed: $OUT"
	sleep 1
	show_stats vm0
	r1=$(stat_of reads "$OUT"); w1=$(stat_of writes "$OUT")
	sleep "$((OUTAGE_S - 1))"
	show_stats vm0
	r2=$(stat_of reads "$OUT"); w2=$(stat_of writes "$OUT")
	if [ "$r2" = "$r1" ] && [ "$w2" = "$w1" ]; then
		echo "  no request completed while the OSD was down (reads $r2, writes $w2; $(stat_of in-flight "$OUT") in flight)"
	else
		echo "  requests completed while the OSD was down: reads $r1 -> $r2, writes $w1 -> $w2"
	fi
	daemon_alive "while the OSD is down"
	sh_run "cat $Q_CTL/vm0/state"
	[ "$OUT" = connected ] || fail "vm0 state is '$OUT' while the OSD is down, expected connected"
	sh_run "contrib/ceph-test-cluster.sh start-osd \$T/ceph"
	[ $RC -eq 0 ] || fail "start-osd failed: $OUT"
	OUTAGE_MS=$(( $(now_ms) - t_down ))
	timing "OSD down (stop-osd until start-osd returned)" "$OUTAGE_MS"
fi
end_guest "$GUEST_TIMEOUT"
daemon_alive "after the OSD came back"
if grep -aq 'BLKCHECK randverify OK' "$CONSOLE"; then
	line=$(console_last 'BLKCHECK randverify OK')
	maxlat=$(sed -n 's/.*max_lat_ms=\([0-9]*\).*/\1/p' <<<"$line")
	echo "  the guest's longest I/O during the outage: ${maxlat:-?} ms (OSD down ${OUTAGE_MS:-?} ms)"
	[ -n "$maxlat" ] && [ -n "${OUTAGE_MS:-}" ] && [ "$maxlat" -ge $(( OUTAGE_MS / 2 )) ] ||
		fail "the guest's I/O did not pause during the outage (max_lat_ms=${maxlat:-?}, outage ${OUTAGE_MS:-?} ms): was the OSD really down?"
	PAUSE_LINE="guest max I/O latency ${maxlat} ms across an OSD outage of ${OUTAGE_MS} ms"
else
	fail "the guest's verified random I/O across the outage did not pass"
fi
grep -aq 'resize 2: verified write+read of all 134217728 bytes' "$CONSOLE" ||
	fail "the guest did not write+read back the whole 128M after the grows"
show_stats vm0
[ "$(stat_of errors "$OUT")" = 0 ] || fail "vm0 stats: errors=$(stat_of errors "$OUT") with rbd_timeout=0 (the guest must see a pause, not errors)"
wait_state vm0 listening 10 || fail "vm0 state is '$(cat "$CTL/vm0/state")' after the guest, expected listening"

# --- 6 ---------------------------------------------------------------------
step "6. rbd_timeout=3 and a longer outage: EIO in the guest, service again after"
configure vm2 "backing=rbd:rbd/vm2 ceph_conf=$Q_CONF rbd_timeout=3"
grep -qx 'rbd_timeout=3' <<<"$(cat "$CTL/vm2/config")" || fail "vm2: config does not read back rbd_timeout=3"
start_guest --socket "$SOCKS/vm2" --tests "eio:150"
if need_console 'VHOSTD-GUEST-READY eio' 90 "the guest starts its I/O rounds"; then
	sleep 3
	t_down=$(now_ms)
	sh_run "contrib/ceph-test-cluster.sh stop-osd \$T/ceph"
	if need_console 'VHOSTD-GUEST-EIO-SEEN' 40 "the guest's I/O fails while the OSD is down"; then
		echo "  EIO in the guest $(( $(now_ms) - t_down )) ms after stop-osd was started"
		timing "stop-osd until the guest saw EIO (rbd_timeout=3)" $(( $(now_ms) - t_down ))
	fi
	daemon_alive "while the guest gets EIO"
	sh_run "cat $Q_CTL/vm2/state"
	[ "$OUT" = connected ] || fail "vm2 state is '$OUT' while the guest gets EIO, expected connected"
	show_stats vm2
	e=$(stat_of errors "$OUT")
	[[ ${e:-} =~ ^[0-9]+$ ]] && [ "$e" -ge 1 ] || fail "vm2 stats: errors='${e:-}' while the guest gets EIO"
	sleep 2
	t_up=$(now_ms)
	sh_run "contrib/ceph-test-cluster.sh start-osd \$T/ceph"
	[ $RC -eq 0 ] || fail "start-osd failed: $OUT"
	if need_console 'VHOSTD-GUEST-EIO-RECOVERED' 90 "the guest's I/O works again once the OSD is back"; then
		echo "  the guest's I/O passed again $(( $(now_ms) - t_up )) ms after start-osd was started"
		timing "start-osd until the guest's I/O passed again" $(( $(now_ms) - t_up ))
	fi
fi
end_guest "$GUEST_TIMEOUT"
grep -aq 'BLKCHECK fullcheck OK' "$CONSOLE" || fail "no fullcheck of vm2 after the outage"
daemon_alive "after the rbd_timeout outage"
wait_state vm2 listening 10 || fail "vm2 state is '$(cat "$CTL/vm2/state")' after the guest, expected listening"

# --- 7 ---------------------------------------------------------------------
step "7. rmdir, SIGTERM, the cluster stopped"
sh_run "rmdir $Q_CTL/vm0 $Q_CTL/vm2"
[ $RC -eq 0 ] || fail "rmdir failed: $OUT"
sh_run "rbd -c $Q_CONF status rbd/vm0; rbd -c $Q_CONF status rbd/vm2"
grep -q 'watcher=' <<<"$OUT" && fail "an image still has a watcher after rmdir"
stop_vhostd
sh_run "contrib/ceph-test-cluster.sh stop \$T/ceph"
[ $RC -eq 0 ] || fail "stopping the cluster failed: $OUT"
CLUSTER_UP=0
left=$(pgrep -f -- "$T/" || true)
[ -z "$left" ] || fail "processes left behind: $(ps -o pid=,args= -p "$(echo $left | tr ' ' ,)")"

step "vhostd's log"
cat "$DLOG"
# vm2's requests that timed out during its outage are logged as errors, as
# they should be; any other error is a failure.
EXPECTED_RE='vhostd error: \[vm2 q[0-9]+\] backend I/O failed: Connection timed out'
n_expected=$(grep -cE "$EXPECTED_RE" "$DLOG" || true)
echo "($n_expected request timeouts of vm2 logged during its outage: expected)"
grep -vE "$EXPECTED_RE" "$DLOG" > "$T/vhostd.log.rest" || true
DLOG=$T/vhostd.log.rest check_daemon_log

step "Refusals (what, shell errno, time, error file)"
for l in "${REFUSALS[@]}"; do echo "$l"; done
echo
echo "$TEST_NAME: cluster start $CLUSTER_MS ms; ${PAUSE_LINE:-no pause measured}"
finish
