#!/bin/bash
# ceph-test-cluster.sh: a throwaway one-node Ceph cluster on loopback, for
# tests and for trying the RBD backend (backing=rbd:POOL/IMAGE) by hand.
#
# One monitor and one OSD whose object store is memstore (objects in RAM,
# written to DIR when the OSD stops cleanly), no mgr, no cephx (auth none),
# pool size 1.  Needs the Debian 12 packages ceph-mon ceph-osd ceph-common
# (contrib/install-deps.sh installs them).  Not for data you want to keep.
#
# usage:
#   ceph-test-cluster.sh start DIR    create DIR (must be absent or empty),
#                                     write DIR/ceph.conf (mon on 127.0.0.1,
#                                     a free port or $CEPH_PORT), start the
#                                     mon and the OSD, create and `rbd pool
#                                     init` the pool "rbd"; exit 0 only when
#                                     `rbd create` + `rbd info` work
#   ceph-test-cluster.sh stop DIR [--purge]
#                                     stop the OSD and the mon by their pid
#                                     files and wait until they are gone;
#                                     --purge also removes DIR
#   ceph-test-cluster.sh stop-osd DIR stop only the OSD (clean shutdown: the
#                                     memstore data is kept in DIR)
#   ceph-test-cluster.sh start-osd DIR start it again; returns once the mon
#                                     sees it up
#   ceph-test-cluster.sh conf DIR     print the path of DIR/ceph.conf
#   ceph-test-cluster.sh status DIR   `ceph -s` of the cluster
#
# Clients use the conf: `rbd -c DIR/ceph.conf create --size 64M rbd/img0`,
# `export CEPH_CONF=DIR/ceph.conf`, or vhostd's `ceph_conf=DIR/ceph.conf`.
#
# Environment: CEPH_PORT (mon port; default: a free one in 40000-59999),
# CEPH_START_TIMEOUT (seconds, default 60), CEPH_MEMSTORE_BYTES (the OSD's
# capacity, default 1G: memstore only uses memory for data written).
# Logs: DIR/log/.  Exit status 0 success, 1 failure (reason on stderr),
# 2 usage, 77 ceph packages missing.
set -euo pipefail

PROG=ceph-test-cluster
die() { echo "$PROG: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }

[ $# -ge 2 ] || usage
CMD=$1
DIR=$2
shift 2
case "$DIR" in /*) ;; *) DIR=$(pwd)/$DIR ;; esac
CONF=$DIR/ceph.conf
START_TIMEOUT=${CEPH_START_TIMEOUT:-60}

need_ceph() {
	local p missing=
	for p in ceph-mon ceph-osd ceph monmaptool rbd; do
		command -v "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "$PROG: missing$missing (apt-get install ceph-mon ceph-osd ceph-common)" >&2
		exit 77
	fi
}

# ceph_cli ARGS: the ceph CLI on this cluster, bounded in time.
ceph_cli() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

pick_port() {
	if [ -n "${CEPH_PORT:-}" ]; then
		[[ $CEPH_PORT =~ ^[0-9]+$ ]] && [ "$CEPH_PORT" -ge 1 ] && [ "$CEPH_PORT" -le 65535 ] ||
			die "CEPH_PORT='$CEPH_PORT' is not a port number"
		port_in_use "$CEPH_PORT" && die "CEPH_PORT $CEPH_PORT is already in use on this machine"
		echo "$CEPH_PORT"
		return
	fi
	local p
	for _ in $(seq 50); do
		p=$(( 40000 + (RANDOM * 32768 + RANDOM) % 20000 ))
		port_in_use "$p" || { echo "$p"; return; }
	done
	die "no free port found in 40000-59999"
}

# pid_of NAME: the pid in DIR/NAME.pid if that process is alive and is a
# ceph daemon using this DIR's conf; empty otherwise.
pid_of() {
	local pid
	pid=$(cat "$DIR/$1.pid" 2>/dev/null || true)
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF" || return 0
	echo "$pid"
}

# stop_daemon NAME: SIGTERM, wait up to 30 s, then SIGKILL.
stop_daemon() {
	local pid
	pid=$(pid_of "$1")
	if [ -z "$pid" ]; then
		rm -f "$DIR/$1.pid"
		return 0
	fi
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 300); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "$PROG: $1 (pid $pid) still running 30 s after SIGTERM; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	fi
	rm -f "$DIR/$1.pid"
}

# wait_pidfile NAME: the daemon forks; wait for its pid file.
wait_pidfile() {
	for _ in $(seq 100); do
		[ -n "$(pid_of "$1")" ] && return 0
		sleep 0.1
	done
	return 1
}

tail_log() { [ -f "$DIR/log/$1.log" ] && tail -n 15 "$DIR/log/$1.log" | sed "s/^/  $1.log: /" >&2 || true; }

start_osd_daemon() {
	ceph-osd -c "$CONF" -i 0 </dev/null >>"$DIR/log/osd.0.stdout" 2>&1 ||
		{ tail_log osd.0; die "ceph-osd failed to start (log: $DIR/log/osd.0.log)"; }
	wait_pidfile osd.0 || { tail_log osd.0; die "ceph-osd did not write its pid file"; }
}

# wait_osd_up SECONDS
wait_osd_up() {
	local end=$(( $(date +%s) + $1 )) st
	while :; do
		st=$(ceph_cli osd stat -f json 2>/dev/null || true)
		grep -q '"num_up_osds":1' <<<"$st" && return 0
		[ -n "$(pid_of osd.0)" ] || { tail_log osd.0; die "ceph-osd exited (log: $DIR/log/osd.0.log)"; }
		[ "$(date +%s)" -lt "$end" ] || { tail_log osd.0; die "the OSD is not up after $1 s"; }
		sleep 0.2
	done
}

cmd_start() {
	need_ceph
	if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
		die "$DIR exists and is not empty"
	fi
	mkdir -p "$DIR/log" "$DIR/run" "$DIR/mon.a" "$DIR/osd.0"
	local port fsid osd_uuid t0
	t0=$(date +%s%3N)
	port=$(pick_port)
	fsid=$(cat /proc/sys/kernel/random/uuid)
	osd_uuid=$(cat /proc/sys/kernel/random/uuid)
	cat > "$CONF" <<EOF
# Written by contrib/ceph-test-cluster.sh: a throwaway one-node test cluster.
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = false
keyring = $DIR/keyring
run dir = $DIR/run
log file = $DIR/log/\$name.log
pid file = $DIR/\$name.pid
# one OSD: a pool of size 1 is all there can be
mon allow pool size one = true
mon allow pool delete = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false
mon warn on msgr2 not enabled = false
mon data avail warn = 1
mon data avail crit = 0
# a one-node cluster has no peer to report a dead OSD: the mon notices by
# the OSD's beacons; a stopped OSD tells the mon itself
osd beacon report interval = 1
mon osd report timeout = 10
mon osd min down reporters = 1
osd heartbeat interval = 1
osd heartbeat grace = 5
mon osd adjust heartbeat grace = false

[mon]
admin socket = $DIR/run/\$cluster-\$name.asok
mon data = $DIR/mon.\$id
mon memory target = 134217728
mon osd cache size = 10
rocksdb cache size = 8388608

[osd]
admin socket = $DIR/run/\$cluster-\$name.asok
osd data = $DIR/osd.\$id
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-1073741824}
# a clean shutdown is what writes memstore's objects to DIR (stop-osd/start-osd)
osd fast shutdown = false
osd memory target = 134217728
osd op num shards = 2
osd op num threads per shard = 1
osd crush update on start = true
osd max object name len = 256
osd max object namespace len = 64
EOF
	monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
		"$DIR/monmap" >"$DIR/log/monmaptool.out" 2>&1 ||
		{ cat "$DIR/log/monmaptool.out" >&2; die "monmaptool failed"; }
	ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" >"$DIR/log/mon-mkfs.out" 2>&1 ||
		{ cat "$DIR/log/mon-mkfs.out" >&2; die "ceph-mon --mkfs failed"; }
	ceph-mon -c "$CONF" -i a </dev/null >>"$DIR/log/mon.a.stdout" 2>&1 ||
		{ tail_log mon.a; die "ceph-mon failed to start (log: $DIR/log/mon.a.log)"; }
	wait_pidfile mon.a || { tail_log mon.a; die "ceph-mon did not write its pid file"; }

	# the OSD: registered with the mon, then its (memstore) data dir
	local id
	id=$(ceph_cli osd new "$osd_uuid" 2>"$DIR/log/osd-new.err") ||
		{ cat "$DIR/log/osd-new.err" >&2; tail_log mon.a; die "'ceph osd new' failed: is the mon up on 127.0.0.1:$port?"; }
	[ "$id" = 0 ] || die "'ceph osd new' gave osd id '$id', expected 0"
	ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$DIR/log/osd-mkfs.out" 2>&1 ||
		{ cat "$DIR/log/osd-mkfs.out" >&2; die "ceph-osd --mkfs failed"; }
	start_osd_daemon
	ceph_cli osd set noout >/dev/null 2>&1 || true
	wait_osd_up "$START_TIMEOUT"

	ceph_cli osd pool create rbd 8 8 >"$DIR/log/pool.out" 2>&1 ||
		{ cat "$DIR/log/pool.out" >&2; die "'ceph osd pool create rbd' failed"; }
	timeout "$START_TIMEOUT" rbd -c "$CONF" pool init rbd >>"$DIR/log/pool.out" 2>&1 ||
		{ cat "$DIR/log/pool.out" >&2; die "'rbd pool init rbd' failed or timed out"; }

	# the proof: an image can be made and read back
	local probe=ceph-test-cluster-probe
	timeout "$START_TIMEOUT" rbd -c "$CONF" create --size 1M "rbd/$probe" >"$DIR/log/probe.out" 2>&1 &&
	timeout 30 rbd -c "$CONF" info "rbd/$probe" >>"$DIR/log/probe.out" 2>&1 &&
	timeout 30 rbd -c "$CONF" rm --no-progress "rbd/$probe" >>"$DIR/log/probe.out" 2>&1 ||
		{ cat "$DIR/log/probe.out" >&2; die "rbd create/info/rm of a probe image failed"; }
	echo "$PROG: started in $(( $(date +%s%3N) - t0 )) ms: mon 127.0.0.1:$port (pid $(pid_of mon.a)), osd.0 (pid $(pid_of osd.0)), pool rbd; conf $CONF" >&2
}

cmd_stop() {
	[ -f "$CONF" ] || [ -d "$DIR" ] || die "$DIR is not a test cluster directory"
	stop_daemon osd.0
	stop_daemon mon.a
	if [ "${1:-}" = --purge ]; then
		[ -f "$CONF" ] && grep -q '^# Written by contrib/ceph-test-cluster.sh' "$CONF" ||
			die "not purging $DIR: no ceph.conf written by this script in it"
		rm -rf "$DIR"
	fi
}

case "$CMD" in
start)
	cmd_start ;;
stop)
	cmd_stop "$@" ;;
stop-osd)
	[ -f "$CONF" ] || die "no $CONF"
	stop_daemon osd.0 ;;
start-osd)
	need_ceph
	[ -f "$CONF" ] || die "no $CONF"
	[ -z "$(pid_of osd.0)" ] || die "osd.0 is already running (pid $(pid_of osd.0))"
	[ -n "$(pid_of mon.a)" ] || die "the mon is not running (start DIR first)"
	start_osd_daemon
	wait_osd_up "$START_TIMEOUT" ;;
conf)
	[ -f "$CONF" ] || die "no $CONF"
	echo "$CONF" ;;
status)
	[ -f "$CONF" ] || die "no $CONF"
	ceph_cli -s ;;
-h|--help|help)
	usage ;;
*)
	usage ;;
esac
