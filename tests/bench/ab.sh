#!/bin/bash
# ab.sh: one tree's engine against another's (a regression check, or a
# change measured alone), and split rings against packed ones, on the same
# machine in one run.
#
#   tests/bench/ab.sh --a DIR --b DIR [--backings "null ram"]
#                     [--workloads "randread:1 randread:32"] [--rounds N]
#                     [--time SEC] [--ramp SEC] [--size BYTES] [--packed]
#                     [--nice N] [--client "OPTIONS"] [--out FILE]
#
# A backing is null, ram, or the absolute path of a file or block device
# (both servers open it, O_DIRECT; use a scratch file: randwrite writes it).
# DIR is a build directory of each tree (its tests/bench/bench-server; the
# client is B's vhost-bench, so both sides are measured alike).  For each
# backing both servers run at once on cpu 1 (adaptive polling: the one not
# measured sleeps), the client on cpu 0 in poll mode.  Every round runs each
# side once, the first side rotating round by round, so slow drifts of the
# machine hit all sides alike; the table keeps each side's median by IOPS
# and gives B/A.  --packed adds a third side: B with packed virtqueues
# (vhost-bench --packed), and the ratio packed/split of B.  Defaults: null
# and ram, 4 KiB randread at QD1 and QD32, 5 rounds of 3 s after 1 s ramp,
# 256 MiB devices, nice -20 as root.  --client adds vhost-bench options to
# every run (e.g. "--fresh-desc": split descriptors written per request).
set -u
a='' b='' out=''
backings="null ram"
workloads="randread:1 randread:32"
rounds=5
time_s=3
ramp_s=1
size=256M
packed=0
client=
nice_lvl=0
[ "$(id -u)" = 0 ] && nice_lvl=-20
while [ $# -gt 0 ]; do
	case $1 in
	--a) a=$2; shift ;;
	--b) b=$2; shift ;;
	--backings) backings=$2; shift ;;
	--workloads) workloads=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--time) time_s=$2; shift ;;
	--ramp) ramp_s=$2; shift ;;
	--size) size=$2; shift ;;
	--packed) packed=1 ;;
	--nice) nice_lvl=$2; shift ;;
	--client) client=$2; shift ;;
	--out) out=$2; shift ;;
	-h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$a" ] && [ -n "$b" ] || { echo "ab.sh: --a DIR and --b DIR are needed" >&2; exit 2; }
bench=$b/tests/bench/vhost-bench
for x in "$a/tests/bench/bench-server" "$b/tests/bench/bench-server" "$bench"; do
	[ -x "$x" ] || { echo "ab.sh: $x not built" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "ab.sh: needs jq" >&2; exit 1; }
if [ "$(nproc)" -ge 2 ]; then tcpu=1 ccpu=0; else tcpu=0 ccpu=0; fi
bytes=$(numfmt --from=iec "$size") || exit 2

work=$(mktemp -d /tmp/vhostd-ab.XXXXXX) || exit 1
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "$*" >&2; }

start() {               # start NAME DIR BACKING -> pid on stdout
	local sock=$work/$1.sock i=0 sz=(--size "$bytes")
	[ "${3:0:1}" = / ] && sz=()     # a file or block device: its size
	nice -n "$nice_lvl" taskset -c "$tcpu" "$2/tests/bench/bench-server" --socket "$sock" \
		--backing "$3" "${sz[@]}" --cpu "$tcpu" --poll-mode adaptive \
		>"$work/$1.log" 2>&1 &
	echo $!
	until [ -S "$sock" ]; do
		i=$((i + 1))
		[ $i -gt 200 ] && { log "ab.sh: $1 did not listen"; cat "$work/$1.log" >&2; return 1; }
		sleep 0.05
	done
}

run() {                 # run NAME PID PATTERN QD [EXTRA...] -> JSON
	local name=$1 pid=$2 pat=$3 qd=$4
	shift 4
	nice -n "$nice_lvl" "$bench" --socket "$work/$name.sock" --pattern "$pat" --bs 4096 \
		--iodepth "$qd" --time "$time_s" --ramp "$ramp_s" --mode poll --cpu "$ccpu" \
		--pid "$pid" --json $client "$@" || { log "ab.sh: vhost-bench failed against $name"; return 1; }
}

median() { printf '%s\n' "$@" | jq -s -c 'sort_by(.iops) | .[(length / 2 | floor)]'; }

rows=()
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for be in $backings; do
	apid=$(start a "$a" "$be") || exit 1
	pids+=("$apid")
	bpid=$(start b "$b" "$be") || exit 1
	pids+=("$bpid")
	if [ "$be" = ram ]; then        # ram starts as untouched zero pages
		for s in a b; do
			"$bench" --socket "$work/$s.sock" --fill --pattern write --bs 128K --iodepth 8 \
				--time 0 --ramp 0 --cpu "$ccpu" --json >/dev/null || exit 1
		done
	fi
	sides=(a b)
	[ "$packed" = 1 ] && sides+=(p)
	for w in $workloads; do
		pat=${w%:*} qd=${w#*:}
		ra=() rb=() rp=()
		for ((i = 0; i < rounds; i++)); do
			for ((k = 0; k < ${#sides[@]}; k++)); do
				case ${sides[$(((i + k) % ${#sides[@]}))]} in
				a) ra+=("$(run a "$apid" "$pat" "$qd")") || exit 1 ;;
				b) rb+=("$(run b "$bpid" "$pat" "$qd")") || exit 1 ;;
				p) rp+=("$(run b "$bpid" "$pat" "$qd" --packed)") || exit 1 ;;
				esac
			done
		done
		ja=$(median "${ra[@]}")
		jb=$(median "${rb[@]}")
		jp=null
		[ "$packed" = 1 ] && jp=$(median "${rp[@]}")
		spread=$(printf '%s\n' "${ra[@]}" "${rb[@]}" "${rp[@]}" | jq -s -r --arg n "$rounds" '
			def k: "\(. / 1000 | floor)k";
			[.[] | .iops] as $v | ($n | tonumber) as $r |
			"A \($v[0:$r] | min | k)-\($v[0:$r] | max | k), B \($v[$r:2*$r] | min | k)-\($v[$r:2*$r] | max | k)" +
			(if length > 2 * $r then ", packed \($v[2*$r:] | min | k)-\($v[2*$r:] | max | k)" else "" end)')
		rows+=("$be 4k $pat QD$qd|$ja|$jb|$jp|$spread")
		log "  $be $pat QD$qd: $(jq -r '.iops | floor' <<<"$ja") / $(jq -r '.iops | floor' <<<"$jb")$([ "$packed" = 1 ] && echo " / packed $(jq -r '.iops | floor' <<<"$jp")") IOPS ($spread)"
	done
	kill "$apid" "$bpid" 2>/dev/null
	wait "$apid" "$bpid" 2>/dev/null
	pids=()
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

{
	echo "## ab.sh: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo
	echo "- machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cpus, kernel $(uname -r); load average $load0 -> $load1"
	echo "- A: $a, B: $b; $rounds interleaved rounds of ${time_s}s after ${ramp_s}s ramp, median by IOPS; targets on cpu $tcpu, client on cpu $ccpu (poll${client:+, $client}), nice $nice_lvl"
	echo
	if [ "$packed" = 1 ]; then
		echo "| workload | A split IOPS (p50/p99 us) | B split IOPS (p50/p99 us) | B packed IOPS (p50/p99 us) | B/A | B packed/split | spread (min-max) |"
		echo "|---|---:|---:|---:|---:|---:|---|"
	else
		echo "| workload | A IOPS (p50/p99 us) | B IOPS (p50/p99 us) | B/A | spread (min-max) |"
		echo "|---|---:|---:|---:|---|"
	fi
	for r in "${rows[@]}"; do
		IFS='|' read -r name ja jb jp spread <<<"$r"
		jq -n -r --arg name "$name" --arg spread "$spread" --argjson a "$ja" --argjson b "$jb" \
			--argjson p "$jp" '
			def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M"
			       else "\(. / 100 | floor / 10)k" end;
			def r2: (. * 100 | round) / 100;
			def cell: "\(.iops | k) (\(.lat_us.p50 | r2)/\(.lat_us.p99 | r2))";
			"| \($name) | \($a | cell) | \($b | cell) | " +
			(if $p == null then "\($b.iops / $a.iops | r2)x | \($spread) |"
			 else "\($p | cell) | \($b.iops / $a.iops | r2)x | \($p.iops / $b.iops | r2)x | \($spread) |" end)'
	done
} | tee ${out:+"$out"}
