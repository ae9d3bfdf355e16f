#!/bin/bash
# compare.sh: vhostd against qemu-storage-daemon, same machine, same CPU,
# same backing, same client, in one run.
#
# Both targets run pinned to one CPU (--target-cpu, default 1) and stay up
# side by side (idle, each sleeps while the other is measured); the client
# (vhost-bench) is pinned to another (--client-cpu, default 0).  Each
# workload runs against vhostd and then against qsd before the next one, so
# slow drifts of the machine hit both alike.  Prints a markdown table and
# writes it, with the date, the CPU model and the exact commands, to --out.
#
#   tests/bench/compare.sh [--build DIR] [--out FILE] [--time SEC] [--ramp SEC]
#                          [--mode poll|irq] [--backings "null ram file"]
#                          [--file PATH] [--size BYTES] [--poll-mode MODE]
#                          [--daemon] [--repeat N] [--nice N]
#                          [--idle-time SEC | --no-idle] [--packed]
#
# --daemon serves vhostd's side with the real daemon (vhostd --store, a
# controller made through its control filesystem) instead of bench-server.
# --repeat N runs every measurement N times and keeps the median by IOPS;
# the repeats are interleaved (vhostd, qsd, vhostd, qsd... with the first
# target rotating), so slow drifts of the machine hit both alike.
# --packed also measures vhostd with packed virtqueues (vhost-bench
# --packed, VIRTIO_F_RING_PACKED) in the same rounds, and adds a table of
# split against packed (qsd has no packed rings: libvhost-user serves
# split ones only).
# The idle part serves 16 null devices from each target (bench-server
# --devices 16, one qsd with 16 exports), connects a front-end to each, stays
# silent for --idle-time (default 20 s) measuring the target's CPU, then
# times single 4 KiB reads that each follow 100 ms of silence.
# --nice N (default -20 as root, 0 otherwise) runs targets and client at
# that nice level, and gives the same level to this script's scheduler
# autogroup (/proc/self/autogroup, restored at exit): with autogroups a
# plain nice only counts inside one session, and work from other sessions
# on a shared machine would otherwise take its fair share of both CPUs.
set -u

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=$src/build-bench
out=
time_s=10
ramp_s=2
mode=poll
backings="null ram file"
file=/var/tmp/vhostd-bench.img
size=1G
poll_mode=adaptive
use_daemon=0
repeat=1
tcpu=1
ccpu=0
idle_time=20
packed=0
nice_lvl=0
[ "$(id -u)" = 0 ] && nice_lvl=-20

while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift ;;
	--out) out=$2; shift ;;
	--time) time_s=$2; shift ;;
	--ramp) ramp_s=$2; shift ;;
	--mode) mode=$2; shift ;;
	--backings) backings=$2; shift ;;
	--file) file=$2; shift ;;
	--size) size=$2; shift ;;
	--poll-mode) poll_mode=$2; shift ;;
	--daemon) use_daemon=1 ;;
	--repeat) repeat=$2; shift ;;
	--target-cpu) tcpu=$2; shift ;;
	--client-cpu) ccpu=$2; shift ;;
	--nice) nice_lvl=$2; shift ;;
	--idle-time) idle_time=$2; shift ;;
	--no-idle) idle_time=0 ;;
	--packed) packed=1 ;;
	-h|--help) sed -n '2,35p' "$0"; exit 0 ;;
	*) echo "compare.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

bench=$build/tests/bench/vhost-bench
server=$build/tests/bench/bench-server
vhostd=$build/vhostd
for p in "$bench" "$server"; do
	[ -x "$p" ] || { echo "compare.sh: $p not built (meson setup $build && ninja -C $build)" >&2; exit 1; }
done
command -v qemu-storage-daemon >/dev/null || { echo "compare.sh: qemu-storage-daemon not installed" >&2; exit 1; }
command -v jq >/dev/null || { echo "compare.sh: needs jq" >&2; exit 1; }
[ "$use_daemon" = 0 ] || [ -x "$vhostd" ] || { echo "compare.sh: $vhostd not built" >&2; exit 1; }

bytes=$(numfmt --from=iec "$size")
stamp=$(date -u +%Y%m%d-%H%M%S)
[ -n "$out" ] || out=$PWD/bench-compare-$stamp.md
work=$(mktemp -d /tmp/vhostd-compare.XXXXXX)
ramfile=/dev/shm/vhostd-bench-$$.img
pids=()
made_file=0

autogroup_old=
cleanup() {
	[ -n "$autogroup_old" ] && echo "$autogroup_old" >/proc/self/autogroup 2>/dev/null
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null
	done
	[ -d "$work/store/block/ctl" ] && umount -l "$work/store/block/ctl" 2>/dev/null
	rm -f "$ramfile"
	[ "$made_file" = 1 ] && rm -f "$file"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "$*" >&2; }

wait_socket() {         # wait_socket PATH PID
	local i=0
	until [ -S "$1" ]; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$2" 2>/dev/null; then
			log "compare.sh: no socket at $1"
			cat "$work"/*.log >&2
			exit 1
		fi
		sleep 0.05
	done
}

record() { echo "$*" >>"$work/commands"; }

# start_vhostd BACKING -> sets vpid, vsock
start_vhostd() {
	local b=$1 arg
	case $b in
	null) arg=null ;;
	ram) arg=ram ;;
	file) arg=$file ;;
	esac
	if [ "$use_daemon" = 1 ]; then
		local store=$work/store
		mkdir -p "$store"
		record "nice -n $nice_lvl taskset -c $tcpu $vhostd --store $store --state $work/state --cpus $tcpu --poll-mode $poll_mode"
		nice -n "$nice_lvl" taskset -c "$tcpu" "$vhostd" --store "$store" --state "$work/state" --cpus "$tcpu" \
			--poll-mode "$poll_mode" --log-level warning >"$work/vhostd-$b.log" 2>&1 &
		vpid=$!
		pids+=("$vpid")
		local i=0
		until [ -d "$store/block/ctl" ] && mountpoint -q "$store/block/ctl"; do
			i=$((i + 1))
			[ $i -gt 200 ] && { log "vhostd did not mount its control fs"; cat "$work/vhostd-$b.log" >&2; exit 1; }
			sleep 0.05
		done
		local cfg="size=$bytes backing=$arg"
		[ "$b" = file ] && cfg="backing=$arg"
		record "mkdir $store/block/ctl/b$b; echo '$cfg' > $store/block/ctl/b$b/config"
		mkdir "$store/block/ctl/b$b" && echo "$cfg" >"$store/block/ctl/b$b/config" ||
			{ log "configuring the vhostd controller failed"; exit 1; }
		vsock=$store/block/sockets/b$b
	else
		vsock=$work/vhostd-$b.sock
		local sz="--size $bytes"
		[ "$b" = file ] && sz=
		record "nice -n $nice_lvl taskset -c $tcpu $server --socket $vsock --backing $arg $sz --cpu $tcpu --poll-mode $poll_mode"
		# shellcheck disable=SC2086
		nice -n "$nice_lvl" taskset -c "$tcpu" "$server" --socket "$vsock" --backing "$arg" $sz --cpu "$tcpu" \
			--poll-mode "$poll_mode" >"$work/vhostd-$b.log" 2>&1 &
		vpid=$!
		pids+=("$vpid")
	fi
	wait_socket "$vsock" "$vpid"
}

# start_qsd BACKING -> sets qpid, qsock
start_qsd() {
	local b=$1 dev
	case $b in
	null) dev="driver=null-co,node-name=n0,size=$bytes,read-zeroes=off" ;;
	ram) dev="driver=file,node-name=n0,filename=$ramfile,aio=io_uring" ;;
	file) dev="driver=file,node-name=n0,filename=$file,aio=io_uring,cache.direct=on" ;;
	esac
	qsock=$work/qsd-$b.sock
	local exp="type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path=$qsock,writable=on,num-queues=1"
	record "nice -n $nice_lvl taskset -c $tcpu qemu-storage-daemon --blockdev $dev --export $exp"
	nice -n "$nice_lvl" taskset -c "$tcpu" qemu-storage-daemon --blockdev "$dev" --export "$exp" >"$work/qsd-$b.log" 2>&1 &
	qpid=$!
	pids+=("$qpid")
	wait_socket "$qsock" "$qpid"
}

stop_pid() {
	local p=$1 keep=()
	kill "$p" 2>/dev/null
	wait "$p" 2>/dev/null
	for x in "${pids[@]}"; do [ "$x" != "$p" ] && keep+=("$x"); done
	pids=("${keep[@]}")
}

# bench1 SOCK PID PATTERN QD [EXTRA...] -> one run's JSON on stdout
bench1() {
	local sock=$1 pid=$2 pat=$3 qd=$4 r
	shift 4
	local cmd=(nice -n "$nice_lvl" "$bench" --socket "$sock" --pattern "$pat" --bs 4096 --iodepth "$qd"
		   --time "$time_s" --ramp "$ramp_s" --mode "$mode" --cpu "$ccpu" --pid "$pid" --json "$@")
	grep -qxF "${cmd[*]}" "$work/commands" 2>/dev/null || record "${cmd[*]}"
	r=$("${cmd[@]}") || { log "vhost-bench failed against $sock"; return 1; }
	echo "$r"
}

median() {              # median JSON... -> the run with the median IOPS
	printf '%s\n' "$@" | jq -s -c 'sort_by(.iops) | .[(length / 2 | floor)]'
}

fill() {                # fill SOCK: write the whole device once (ram backings)
	local cmd=("$bench" --socket "$1" --fill --pattern write --bs 128K --iodepth 8
		   --time 0 --ramp 0 --cpu "$ccpu" --json)
	record "${cmd[*]}"
	"${cmd[@]}" >/dev/null || { log "fill of $1 failed"; exit 1; }
}

if [ "$nice_lvl" != 0 ] && [ -w /proc/self/autogroup ]; then
	autogroup_old=$(sed -n 's/.* nice //p' /proc/self/autogroup)
	echo "$nice_lvl" >/proc/self/autogroup 2>/dev/null || autogroup_old=
fi

model=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
load0=$(cut -d' ' -f1-3 /proc/loadavg)

# The machine itself: how fast cache lines travel between the two cpus and
# how many requests/s the client can drive against a device that costs
# nothing (vhost-bench's fake device polling on the target cpu).  On a VM
# these move with the host's placement of the vcpus, and so does everything
# below: compare the ratios, not the absolute numbers, across runs.
machine() {
	local a b
	a=$(nice -n "$nice_lvl" "$bench" --selftest-cpu "$tcpu" --cpu "$ccpu" --iodepth 1 --time 1 --ramp 0.2 --json) || exit 1
	b=$(nice -n "$nice_lvl" "$bench" --selftest-cpu "$tcpu" --cpu "$ccpu" --iodepth 32 --time 1 --ramp 0.2 --json) || exit 1
	jq -n -r --argjson a "$a" --argjson b "$b" \
		'"cpu\($ENV.ccpu)<->cpu\($ENV.tcpu) request round trip p50 \($a.lat_us.p50) us; client ceiling at QD32 \($b.iops / 1e6 | . * 10 | round / 10)M IOPS"'
}
export ccpu tcpu
record "nice -n $nice_lvl $bench --selftest-cpu $tcpu --cpu $ccpu --iodepth 1|32 --time 1 --ramp 0.2 --json   # machine check"
mach0=$(machine)
log "vhostd vs qemu-storage-daemon: target cpu $tcpu, client cpu $ccpu, ${time_s}s per run"
log "cpu: $model; load average $load0"
log "machine: $mach0"

results=()              # "workload|vjson|qjson"
pk_results=()           # "workload|vhostd split json|vhostd packed json"
for b in $backings; do
	case $b in
	null) workloads="randread:1 randread:32" ;;
	ram)
		workloads="randread:1 randread:32"
		record "dd if=/dev/urandom of=$ramfile bs=1M count=$((bytes >> 20))"
		dd if=/dev/urandom of="$ramfile" bs=1M count=$((bytes >> 20)) status=none ;;
	file)
		workloads="randread:1 randread:32 randwrite:1 randwrite:32"
		if [ "$(stat -c %s "$file" 2>/dev/null)" != "$bytes" ]; then
			record "dd if=/dev/urandom of=$file bs=1M count=$((bytes >> 20)) oflag=direct conv=fsync"
			dd if=/dev/urandom of="$file" bs=1M count=$((bytes >> 20)) oflag=direct \
				conv=fsync status=none || exit 1
			made_file=1
		fi ;;
	*) log "unknown backing $b"; exit 2 ;;
	esac
	start_vhostd "$b"
	start_qsd "$b"
	if [ "$b" = ram ]; then
		fill "$vsock"   # vhostd's ram starts as untouched zero pages
		fill "$qsock"
	fi
	for w in $workloads; do
		pat=${w%:*}
		qd=${w#*:}
		log "  $b $pat QD$qd ..."
		# Interleaved: round i runs each target once, the first target
		# rotating round by round, so that a drift of the machine during
		# the repeats hits every target alike.
		targets=(vhostd qsd)
		[ "$packed" = 1 ] && targets+=(packed)
		vres=() qres=() pres=()
		for ((i = 0; i < repeat; i++)); do
			for ((k = 0; k < ${#targets[@]}; k++)); do
				t=${targets[$(((i + k) % ${#targets[@]}))]}
				case $t in
				vhostd) vres+=("$(bench1 "$vsock" "$vpid" "$pat" "$qd")") || exit 1 ;;
				qsd) qres+=("$(bench1 "$qsock" "$qpid" "$pat" "$qd")") || exit 1 ;;
				packed) pres+=("$(bench1 "$vsock" "$vpid" "$pat" "$qd" --packed)") || exit 1 ;;
				esac
			done
		done
		vj=$(median "${vres[@]}")
		qj=$(median "${qres[@]}")
		results+=("$b 4k $pat QD$qd|$vj|$qj")
		pj=
		if [ "$packed" = 1 ]; then
			pj=$(median "${pres[@]}")
			pk_results+=("$b 4k $pat QD$qd|$vj|$pj")
		fi
		for t in vhostd qsd packed; do
			j=$vj
			[ $t = qsd ] && j=$qj
			[ $t = packed ] && { [ -n "$pj" ] || continue; j=$pj; }
			log "    $(printf '%-6s' $t) $(jq -r '"\(.iops|floor) IOPS, lat avg \(.lat_us.avg) p50 \(.lat_us.p50) us, cpu \(.target_cpu_pct)%, client \(.client_cpu_pct)%, \(.time_s)s"' <<<"$j")"
		done
	done
	stop_pid "$vpid"
	stop_pid "$qpid"
	if [ "$use_daemon" = 1 ]; then
		umount -l "$work/store/block/ctl" 2>/dev/null
		rm -rf "$work/store" "$work/state"
	fi
	[ "$b" = ram ] && rm -f "$ramfile"
done

# Idle: 16 connected, silent devices per target.
idle_rows=()
if [ "$idle_time" != 0 ]; then
	log "  idle: 16 devices each, ${idle_time}s"
	ndev=16
	isock=$work/vhostd-idle.sock
	record "nice -n $nice_lvl taskset -c $tcpu $server --socket $isock --devices $ndev --backing null --size $bytes --cpu $tcpu --poll-mode $poll_mode"
	nice -n "$nice_lvl" taskset -c "$tcpu" "$server" --socket "$isock" --devices "$ndev" \
		--backing null --size "$bytes" --cpu "$tcpu" --poll-mode "$poll_mode" \
		>"$work/vhostd-idle.log" 2>&1 &
	vpid=$!
	pids+=("$vpid")
	qargs=()
	vs=()
	qs=()
	for ((i = 0; i < ndev; i++)); do
		wait_socket "$isock.$i" "$vpid"
		vs+=(--socket "$isock.$i")
		qs+=(--socket "$work/qsd-idle.sock.$i")
		qargs+=(--blockdev "driver=null-co,node-name=n$i,size=$bytes,read-zeroes=off"
			--export "type=vhost-user-blk,id=e$i,node-name=n$i,addr.type=unix,addr.path=$work/qsd-idle.sock.$i,writable=on,num-queues=1")
	done
	record "nice -n $nice_lvl taskset -c $tcpu qemu-storage-daemon ${qargs[*]}"
	nice -n "$nice_lvl" taskset -c "$tcpu" qemu-storage-daemon "${qargs[@]}" >"$work/qsd-idle.log" 2>&1 &
	qpid=$!
	pids+=("$qpid")
	for ((i = 0; i < ndev; i++)); do
		wait_socket "$work/qsd-idle.sock.$i" "$qpid"
	done
	for t in vhostd qsd floor; do
		if [ $t = vhostd ]; then
			s=("${vs[@]}" --pid "$vpid")
		elif [ $t = qsd ]; then
			s=("${qs[@]}" --pid "$qpid")
		else
			s=(--selftest-cpu "$tcpu")
		fi
		it=$idle_time
		[ $t = floor ] && it=1
		cmd=(nice -n "$nice_lvl" "$bench" "${s[@]}" --idle "$it" --probes 50 --probe-gap 100
		     --cpu "$ccpu" --mode poll --json)
		record "${cmd[*]}"
		j=$("${cmd[@]}") || { log "idle test against $t failed"; exit 1; }
		idle_rows+=("$t|$j")
		log "    $(printf '%-6s' $t) $(jq -r '"idle cpu \(.idle_target_cpu_pct)%, first request after 100 ms: avg \(.lat_us.avg) p50 \(.lat_us.p50) max \(.lat_us.max) us"' <<<"$j")"
	done
	stop_pid "$vpid"
	stop_pid "$qpid"
fi
load1=$(cut -d' ' -f1-3 /proc/loadavg)
mach1=$(machine)
log "machine: $mach1"

table() {
	echo "| workload | vhostd IOPS | vhostd lat avg / p99 (us) | vhostd CPU | qsd IOPS | qsd lat avg / p99 (us) | qsd CPU | IOPS vhostd/qsd | lat vhostd/qsd |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for r in "${results[@]}"; do
		IFS='|' read -r name vj qj <<<"$r"
		jq -n -r --arg name "$name" --argjson v "$vj" --argjson q "$qj" '
			def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M"
			       else "\(. / 100 | floor / 10)k" end;
			def r2: (. * 100 | round) / 100;
			"| \($name) | \($v.iops | k) | \($v.lat_us.avg | r2) / \($v.lat_us.p99 | r2) | \($v.target_cpu_pct)% | \($q.iops | k) | \($q.lat_us.avg | r2) / \($q.lat_us.p99 | r2) | \($q.target_cpu_pct)% | \($v.iops / $q.iops | r2)x | \($v.lat_us.avg / $q.lat_us.avg | r2)x |"'
	done
}

# vhostd's split rings against its packed rings (--packed), same workload,
# measured back to back.
packed_table() {
	[ ${#pk_results[@]} = 0 ] && return
	echo "| workload (vhostd) | split IOPS | split lat avg / p99 (us) | split CPU | packed IOPS | packed lat avg / p99 (us) | packed CPU | IOPS packed/split | lat packed/split |"
	echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
	for r in "${pk_results[@]}"; do
		IFS='|' read -r name sj pj <<<"$r"
		jq -n -r --arg name "$name" --argjson v "$sj" --argjson q "$pj" '
			def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M"
			       else "\(. / 100 | floor / 10)k" end;
			def r2: (. * 100 | round) / 100;
			"| \($name) | \($v.iops | k) | \($v.lat_us.avg | r2) / \($v.lat_us.p99 | r2) | \($v.target_cpu_pct)% | \($q.iops | k) | \($q.lat_us.avg | r2) / \($q.lat_us.p99 | r2) | \($q.target_cpu_pct)% | \($q.iops / $v.iops | r2)x | \($q.lat_us.avg / $v.lat_us.avg | r2)x |"'
	done
}

idle_table() {
	[ ${#idle_rows[@]} = 0 ] && return
	echo "| 16 idle connected devices | target CPU (% of a core) | first 4 KiB read after 100 ms idle: avg / p50 / p99 / max (us) |"
	echo "|---|---:|---:|"
	for r in "${idle_rows[@]}"; do
		IFS='|' read -r name j <<<"$r"
		[ "$name" = floor ] && name="floor: vhost-bench's fake device, asleep on the kick like an adaptive back-end"
		jq -r --arg name "$name" '
			def r1: (. * 10 | round) / 10;
			"| \($name) | \(if .idle_target_cpu_pct < 0 then "-" else "\(.idle_target_cpu_pct * 1000 | round / 1000)%" end) | \(.lat_us.avg | r1) / \(.lat_us.p50 | r1) / \(.lat_us.p99 | r1) / \(.lat_us.max | r1) |"' <<<"$j"
	done
}

{
	echo "## vhostd vs qemu-storage-daemon ($(date -u '+%Y-%m-%d %H:%M UTC'))"
	echo
	echo "- machine: $model, $(nproc) cpus, kernel $(uname -r)"
	echo "- $(qemu-storage-daemon --version | head -1)"
	echo "- vhostd: $(git -C "$src" describe --always --dirty 2>/dev/null || echo unknown)," \
	     "$([ "$use_daemon" = 1 ] && echo "daemon" || echo "bench-server (core library)")" \
	     "built $(date -u -r "$([ "$use_daemon" = 1 ] && echo "$vhostd" || echo "$server")" '+%Y-%m-%d %H:%M UTC'), poll mode $poll_mode"
	echo "- target pinned to cpu $tcpu, client (vhost-bench, mode $mode) to cpu $ccpu;" \
	     "${time_s}s measured after ${ramp_s}s ramp, 4 KiB requests, 1 queue, size $size; repeat $repeat (median, interleaved)"
	echo "- machine check before/after: $mach0 / $mach1"
	echo "- nice $nice_lvl for targets and client (and their scheduler autogroup); load average before/after: $load0 / $load1"
	echo
	table
	echo
	echo "CPU: the target's CPU time (sum of its threads' schedstat) over the measured window, % of one core."
	echo
	if [ ${#pk_results[@]} != 0 ]; then
		packed_table
		echo
	fi
	idle_table
	echo
	echo "<details><summary>commands</summary>"
	echo
	echo '```'
	cat "$work/commands"
	echo '```'
	echo "</details>"
} >"$out"
table
echo
if [ ${#pk_results[@]} != 0 ]; then
	packed_table
	echo
fi
idle_table
log "written to $out"
