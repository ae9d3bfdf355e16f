#!/bin/bash
# rbd-compare.sh: vhostd's RBD backend against qemu-storage-daemon's rbd
# driver, on the same image of the same cluster, with the same client, in
# one run.
#
# Starts its own one-node cluster (contrib/ceph-test-cluster.sh: one mon,
# one memstore OSD on loopback), makes an image (rbd create) and fills it
# (rbd bench, sequential 4 MiB writes) so that reads hit data.  Then for
# each workload (4 KiB randread and randwrite at QD1 and QD32) it measures
# vhostd (the real daemon: mkdir + echo config on its control fs, rmdir
# after) and then qsd (--blockdev driver=rbd,cache.direct=on), one at a time
# so that the image's exclusive lock is never fought over: each target
# opens the image, is measured, and closes it.  With --repeat N the N runs
# are interleaved (vhostd, qsd, qsd, vhostd, ... each opening and closing
# the image around its run) and each side keeps its median by IOPS: the
# cluster drifts by 2x within minutes, and must hit both sides alike.  Both run pinned to
# --target-cpu (librbd's threads inherit it); the client (vhost-bench) to
# --client-cpu; the mon and OSD are not pinned.  The cluster's conf turns
# the librbd cache off for every client ([client] rbd cache = false; QEMU
# sets the same for cache.direct=on), so both targets send every request to
# the OSD.
#
#   tests/bench/rbd-compare.sh [--build DIR] [--out FILE] [--time SEC] [--ramp SEC]
#                              [--size SIZE] [--mode irq|poll] [--repeat N]
#                              [--target-cpu N] [--client-cpu N] [--nice N]
#                              [--poll-mode adaptive|poll|interrupt]
#                              [--workloads "randread:1 randread:32 randwrite:1 randwrite:32"]
#
# Prints a markdown table (with vhostd/qsd ratios) and writes it, with the
# date, the machine and the exact commands, to --out (default
# ./bench-rbd-DATE.md).  Needs root, /dev/fuse, jq, qemu-storage-daemon
# with the rbd driver (qemu-block-extra) and the ceph packages.
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cluster=$src/contrib/ceph-test-cluster.sh
build=$src/build-bench
out=
time_s=10
ramp_s=2
size=128M
mode=irq
repeat=1
tcpu=1
ccpu=0
nice_lvl=0
workloads="randread:1 randread:32 randwrite:1 randwrite:32"
poll_mode=adaptive

while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift ;;
	--out) out=$2; shift ;;
	--time) time_s=$2; shift ;;
	--ramp) ramp_s=$2; shift ;;
	--size) size=$2; shift ;;
	--mode) mode=$2; shift ;;
	--repeat) repeat=$2; shift ;;
	--target-cpu) tcpu=$2; shift ;;
	--client-cpu) ccpu=$2; shift ;;
	--nice) nice_lvl=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--poll-mode) poll_mode=$2; shift ;;
	-h|--help) sed -n '2,32p' "$0"; exit 0 ;;
	*) echo "rbd-compare.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

log() { echo "$*" >&2; }
die() { log "rbd-compare.sh: $*"; exit 1; }

bench=$build/tests/bench/vhost-bench
vhostd=$build/src/vhostd
[ -x "$vhostd" ] || vhostd=$build/vhostd
[ -x "$bench" ] || die "$bench not built (meson setup $build && ninja -C $build)"
[ -x "$vhostd" ] || die "vhostd not built in $build"
[ "$(id -u)" = 0 ] || die "needs root (vhostd's control fs)"
for p in jq qemu-storage-daemon rbd ceph-mon ceph-osd; do
	command -v $p >/dev/null || die "$p not installed (contrib/install-deps.sh)"
done
ls /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so >/dev/null 2>&1 ||
	log "rbd-compare.sh: warning: QEMU's block-rbd.so not found (apt-get install qemu-block-extra)"

bytes=$(numfmt --from=iec "$size")
stamp=$(date -u +%Y%m%d-%H%M%S)
[ -n "$out" ] || out=$PWD/bench-rbd-$stamp.md
work=$(mktemp -d /var/tmp/vhostd-rbd-compare.XXXXXX)
conf=$work/ceph/ceph.conf
pids=()
cluster_up=0
autogroup_old=

cleanup() {
	[ -n "$autogroup_old" ] && echo "$autogroup_old" >/proc/self/autogroup 2>/dev/null
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	mountpoint -q "$work/store/block/ctl" 2>/dev/null && umount -l "$work/store/block/ctl"
	[ "$cluster_up" = 1 ] && "$cluster" stop "$work/ceph"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { echo "$*" >>"$work/commands"; }

wait_socket() {         # wait_socket PATH PID
	local i=0
	until [ -S "$1" ]; do
		i=$((i + 1))
		if [ $i -gt 600 ] || ! kill -0 "$2" 2>/dev/null; then
			cat "$work"/*.log >&2
			die "no socket at $1"
		fi
		sleep 0.05
	done
}

stop_pid() {
	local p=$1 keep=() x
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	for x in "${pids[@]}"; do [ "$x" != "$p" ] && keep+=("$x"); done
	pids=("${keep[@]}")
}

if [ "$nice_lvl" != 0 ] && [ -w /proc/self/autogroup ]; then
	autogroup_old=$(sed -n 's/.* nice //p' /proc/self/autogroup)
	echo "$nice_lvl" >/proc/self/autogroup 2>/dev/null || autogroup_old=
fi

model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the cluster and the image ------------------------------------------------
record "nice -n $nice_lvl contrib/ceph-test-cluster.sh start $work/ceph"
nice -n "$nice_lvl" "$cluster" start "$work/ceph" || die "the test cluster did not start"
cluster_up=1
printf '\n[client]\nrbd cache = false\n' >>"$conf"
record "printf '[client]\\nrbd cache = false\\n' >> $conf"
record "rbd -c $conf create --size $size rbd/bench"
rbd -c "$conf" create --size "$size" rbd/bench || die "rbd create failed"
record "rbd -c $conf bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 --io-total $size rbd/bench"
rbd -c "$conf" bench --io-type write --io-pattern seq --io-size 4M --io-threads 4 --io-total "$size" \
	rbd/bench >"$work/fill.log" 2>&1 || { cat "$work/fill.log" >&2; die "filling the image failed"; }

# --- vhostd: the daemon, one controller per measurement ------------------------
store=$work/store
record "nice -n $nice_lvl taskset -c $tcpu $vhostd --store $store --state $work/state --cpus $tcpu --poll-mode $poll_mode"
nice -n "$nice_lvl" taskset -c "$tcpu" "$vhostd" --store "$store" --state "$work/state" --cpus "$tcpu" --poll-mode "$poll_mode" \
	--log-level warning >"$work/vhostd.log" 2>&1 &
vpid=$!
pids+=("$vpid")
for _ in $(seq 200); do mountpoint -q "$store/block/ctl" 2>/dev/null && break; sleep 0.05; done
mountpoint -q "$store/block/ctl" || { cat "$work/vhostd.log" >&2; die "vhostd did not mount its control fs"; }
record "mkdir $store/block/ctl/bench; echo 'backing=rbd:rbd/bench ceph_conf=$conf' > $store/block/ctl/bench/config   # rmdir after each run"

vhostd_on() {
	mkdir "$store/block/ctl/bench" &&
	echo "backing=rbd:rbd/bench ceph_conf=$conf" >"$store/block/ctl/bench/config" ||
		{ cat "$store/block/ctl/bench/error" >&2; die "configuring vhostd's controller failed"; }
	vsock=$store/block/sockets/bench
	wait_socket "$vsock" "$vpid"
}
vhostd_off() { rmdir "$store/block/ctl/bench" || die "rmdir of vhostd's controller failed"; }

qdev="driver=rbd,pool=rbd,image=bench,conf=$conf,node-name=r0,cache.direct=on"
qsock=$work/qsd.sock
qexp="type=vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path=$qsock,writable=on,num-queues=1"
record "nice -n $nice_lvl taskset -c $tcpu qemu-storage-daemon --blockdev $qdev --export $qexp   # stopped after each run"
qsd_on() {
	rm -f "$qsock"
	nice -n "$nice_lvl" taskset -c "$tcpu" qemu-storage-daemon --blockdev "$qdev" --export "$qexp" \
		>>"$work/qsd.log" 2>&1 &
	qpid=$!
	pids+=("$qpid")
	wait_socket "$qsock" "$qpid"
}
qsd_off() { stop_pid "$qpid"; }

# bench1 SOCK PID PATTERN QD -> one run's JSON
bench1() {
	local sock=$1 pid=$2 pat=$3 qd=$4
	local cmd=(nice -n "$nice_lvl" "$bench" --socket "$sock" --pattern "$pat" --bs 4096 --iodepth "$qd"
		   --size "$bytes" --time "$time_s" --ramp "$ramp_s" --mode "$mode" --cpu "$ccpu" --pid "$pid" --json)
	grep -qxF "${cmd[*]}" "$work/commands" 2>/dev/null || record "${cmd[*]}"
	"${cmd[@]}" || { log "vhost-bench failed against $sock"; return 1; }
}

median() { printf '%s\n' "$@" | jq -s -c 'sort_by(.iops) | .[(length / 2 | floor)]'; }

log "vhostd (rbd backend) vs qemu-storage-daemon (driver=rbd): target cpu $tcpu, client cpu $ccpu, ${time_s}s per run, image $size"
log "cpu: $model; load average $load0"
results=()
for w in $workloads; do
	pat=${w%:*}
	qd=${w#*:}
	log "  $pat QD$qd ..."
	# Interleaved: each round opens the image in one target, measures,
	# closes it, then the other (the first one rotating), so that the
	# cluster's drift hits both alike.
	vres=() qres=()
	for ((i = 0; i < repeat; i++)); do
		for k in 0 1; do
			if [ $(((i + k) % 2)) = 0 ]; then
				vhostd_on
				vres+=("$(bench1 "$vsock" "$vpid" "$pat" "$qd")") || exit 1
				vhostd_off
			else
				qsd_on
				qres+=("$(bench1 "$qsock" "$qpid" "$pat" "$qd")") || exit 1
				qsd_off
			fi
		done
	done
	vj=$(median "${vres[@]}")
	qj=$(median "${qres[@]}")
	results+=("rbd 4k $pat QD$qd|$vj|$qj")
	for t in vhostd qsd; do
		j=$vj
		[ $t = qsd ] && j=$qj
		log "    $(printf '%-6s' $t) $(jq -r '"\(.iops|floor) IOPS, lat avg \(.lat_us.avg) p99 \(.lat_us.p99) us, cpu \(.target_cpu_pct)%, client \(.client_cpu_pct)%"' <<<"$j")"
	done
done
stop_pid "$vpid"
load1=$(cut -d' ' -f1-3 /proc/loadavg)

table() {
	echo "| workload | vhostd IOPS | vhostd lat avg / p99 (us) | vhostd CPU | qsd IOPS | qsd lat avg / p99 (us) | qsd CPU | IOPS vhostd/qsd | lat vhostd/qsd |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for r in "${results[@]}"; do
		IFS='|' read -r name vj qj <<<"$r"
		jq -n -r --arg name "$name" --argjson v "$vj" --argjson q "$qj" '
			def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M"
			       else "\(. / 100 | floor / 10)k" end;
			def r2: (. * 100 | round) / 100;
			"| \($name) | \($v.iops | k) | \($v.lat_us.avg | r2 | floor) / \($v.lat_us.p99 | floor) | \($v.target_cpu_pct)% | \($q.iops | k) | \($q.lat_us.avg | floor) / \($q.lat_us.p99 | floor) | \($q.target_cpu_pct)% | \($v.iops / $q.iops | r2)x | \($v.lat_us.avg / $q.lat_us.avg | r2)x |"'
	done
}

{
	echo "## vhostd's RBD backend vs qemu-storage-daemon's rbd driver ($(date -u '+%Y-%m-%d %H:%M UTC'))"
	echo
	echo "- machine: $model, $(nproc) cpus, kernel $(uname -r); load average before/after: $load0 / $load1"
	echo "- $(qemu-storage-daemon --version | head -1); ceph $(ceph --version | awk '{print $3}')"
	echo "- vhostd: $(git -C "$src" describe --always --dirty 2>/dev/null || echo unknown), the daemon, built $(date -u -r "$vhostd" '+%Y-%m-%d %H:%M UTC'), poll mode $poll_mode"
	echo "- cluster: contrib/ceph-test-cluster.sh (1 mon, 1 memstore OSD on loopback, pool size 1, not pinned); image $size filled with rbd bench; librbd cache off"
	echo "- target pinned to cpu $tcpu, client (vhost-bench, mode $mode) to cpu $ccpu; ${time_s}s measured after ${ramp_s}s ramp, 4 KiB requests, 1 queue; repeat $repeat (median, interleaved); nice $nice_lvl"
	echo
	table
	echo
	echo "CPU: the target's CPU time (all its threads, librbd's included) over the measured window, % of one core."
	echo
	echo "<details><summary>commands</summary>"
	echo
	echo '```'
	cat "$work/commands"
	echo '```'
	echo "</details>"
} >"$out"
table
log "written to $out"
