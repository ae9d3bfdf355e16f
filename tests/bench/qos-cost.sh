#!/bin/bash
# qos-cost.sh: what the I/O limiter (issue 15) costs a request.  The same
# workload against bench-server unlimited and limited far above the rate it
# reaches (the token buckets are consulted for every request but never hold
# one back), interleaved round by round so that drifts of the machine hit
# both alike; prints the median of each side and the difference per
# request.
#
#   qos-cost.sh [--build DIR] [--backing null|ram] [--bs BYTES] [--iodepth N]
#               [--time SEC] [--ramp SEC] [--rounds N] [--mode poll|irq]
#               [--limit "--iops-limit 10000000"] [--json]
#
# Defaults: null backing, 4 KiB random reads at QD32, 5 rounds of 3 s after
# 1 s ramp, client polling; the limited side runs with --iops-limit
# 10000000 (--limit takes any bench-server limit options, e.g.
# "--iops-limit 100000000 --bps-limit 1T" to exercise both buckets).  The
# server's engine runs on cpu 1, the client on cpu 0 (one cpu: both on 0).
#
# Per request: 1e9 / IOPS is the engine's time per request when it is the
# bottleneck (its CPU at ~100%); the engine CPU per request (target CPU /
# IOPS) is printed too, which holds when it is not.  The limiter's cost is
# the difference of the two sides.  A limited side whose server reports
# throttled_ns > 0 was held back: the limit was not above the rate, and
# the figure is not the cost (the script says so).
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../../build
backing=null
bs=4K
qd=32
time_s=3
ramp_s=1
rounds=5
mode=poll
limit="--iops-limit 10000000"
json=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift ;;
	--backing) backing=$2; shift ;;
	--bs) bs=$2; shift ;;
	--iodepth) qd=$2; shift ;;
	--time) time_s=$2; shift ;;
	--ramp) ramp_s=$2; shift ;;
	--rounds) rounds=$2; shift ;;
	--mode) mode=$2; shift ;;
	--limit) limit=$2; shift ;;
	--json) json=1 ;;
	-h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "qos-cost.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
server=$build/tests/bench/bench-server
bench=$build/tests/bench/vhost-bench
for x in "$server" "$bench"; do
	[ -x "$x" ] || { echo "qos-cost.sh: $x not built" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "qos-cost.sh: needs jq" >&2; exit 1; }
case $backing in null|ram) ;; *) echo "qos-cost.sh: --backing null or ram" >&2; exit 2 ;; esac

if [ "$(nproc)" -ge 2 ]; then scpu=1 ccpu=0; else scpu=0 ccpu=0; fi

work=$(mktemp -d /tmp/vhostd-qoscost.XXXXXX) || exit 1
spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# one NAME [LIMIT OPTIONS...] -> one JSON line: vhost-bench's result plus
# the server's throttled_ns
one() {
	local name=$1 sock=$work/s i=0 res thr
	shift
	rm -f "$sock"
	"$server" --socket "$sock" --backing "$backing" --size 1G --threads 1 --cpu "$scpu" \
		"$@" >"$work/server.log" 2>&1 &
	spid=$!
	until grep -q READY "$work/server.log" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$spid" 2>/dev/null; then
			echo "qos-cost.sh: bench-server $* did not start" >&2
			cat "$work/server.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	if [ "$backing" = ram ]; then
		"$bench" --socket "$sock" --fill --pattern write --bs 128K --iodepth 8 --size 64M \
			--time 0 --ramp 0 --json >/dev/null || { echo "qos-cost.sh: fill failed" >&2; exit 1; }
	fi
	res=$("$bench" --socket "$sock" --pattern randread --bs "$bs" --iodepth "$qd" \
		--size 64M --time "$time_s" --ramp "$ramp_s" --mode "$mode" --cpu "$ccpu" \
		--pid "$spid" --json) || { echo "qos-cost.sh: vhost-bench failed ($name)" >&2; exit 1; }
	kill "$spid"
	wait "$spid" 2>/dev/null
	spid=
	thr=$(sed -n 's/.* throttled_ns=\([0-9]*\).*/\1/p' "$work/server.log" | head -1)
	jq -c --arg name "$name" --argjson thr "${thr:-0}" '. + {side: $name, throttled_ns: $thr}' \
		<<<"$res"
}

: >"$work/runs"
for r in $(seq 1 "$rounds"); do
	# shellcheck disable=SC2086
	if [ $((r % 2)) = 1 ]; then
		one unlimited >>"$work/runs" || exit 1
		one limited $limit >>"$work/runs" || exit 1
	else
		one limited $limit >>"$work/runs" || exit 1
		one unlimited >>"$work/runs" || exit 1
	fi
done

jq -s -c --arg limit "$limit" --arg backing "$backing" --arg bs "$bs" --argjson qd "$qd" '
	def median: sort | if length == 0 then 0 elif length % 2 == 1 then .[length / 2 | floor]
		else (.[length / 2 - 1] + .[length / 2]) / 2 end;
	def side(n): [.[] | select(.side == n)] as $r
		| {runs: ($r | length), iops: ($r | map(.iops) | median),
		   iops_all: ($r | map(.iops)), lat_p50_us: ($r | map(.lat_us.p50) | median),
		   lat_p99_us: ($r | map(.lat_us.p99) | median),
		   target_cpu_pct: ($r | map(.target_cpu_pct) | median),
		   cpu_ns_per_req: ($r | map(if .iops > 0 then .target_cpu_pct / 100 * 1e9 / .iops else 0 end) | median),
		   errors: ($r | map(.errors) | add), throttled_ns: ($r | map(.throttled_ns) | max)};
	side("unlimited") as $u | side("limited") as $l
	| {backing: $backing, bs: $bs, iodepth: $qd, limit: $limit, unlimited: $u, limited: $l,
	   ns_per_req_unlimited: (if $u.iops > 0 then 1e9 / $u.iops else 0 end),
	   ns_per_req_limited: (if $l.iops > 0 then 1e9 / $l.iops else 0 end),
	   cost_ns_per_req: (if $u.iops > 0 and $l.iops > 0 then 1e9 / $l.iops - 1e9 / $u.iops else 0 end),
	   cost_cpu_ns_per_req: ($l.cpu_ns_per_req - $u.cpu_ns_per_req),
	   held_back: ($l.throttled_ns > 0)}' "$work/runs" >"$work/result" || exit 1

if [ "$json" = 1 ]; then
	cat "$work/result"
	exit 0
fi
jq -r '
	def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M" else "\(. / 100 | floor / 10)k" end;
	def r1: (. * 10 | round) / 10;
	"qos-cost: \(.backing) \(.bs) randread QD\(.iodepth), limited side: bench-server \(.limit)",
	"| side | IOPS (median of \(.unlimited.runs)) | all runs | ns/request | engine CPU | CPU ns/request | p50 / p99 (us) |",
	"|---|---:|---|---:|---:|---:|---:|",
	(["unlimited", .unlimited, .ns_per_req_unlimited], ["limited", .limited, .ns_per_req_limited]) as [$n, $s, $ns]
	| "| \($n) | \($s.iops | k) | \([$s.iops_all[] | k] | join(" ")) | \($ns | r1) | \($s.target_cpu_pct)% | \($s.cpu_ns_per_req | r1) | \($s.lat_p50_us | r1) / \($s.lat_p99_us | r1) |"' \
	"$work/result"
jq -r '
	def r1: (. * 10 | round) / 10;
	"limiter cost: \(.cost_ns_per_req | r1) ns per request (1e9/IOPS), \(.cost_cpu_ns_per_req | r1) ns of engine CPU per request" +
	(if .held_back then "  -- WARNING: the limited side was held back (throttled_ns > 0): the limit is not above the rate, this is not the cost" else "" end),
	(if (.unlimited.errors + .limited.errors) > 0 then "WARNING: \(.unlimited.errors + .limited.errors) failed requests" else empty end)' \
	"$work/result"
