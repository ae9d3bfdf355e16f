#!/bin/bash
# scale.sh: how vhostd's engine scales from one thread to two, serving two
# controllers (bench-server --devices 2 --threads 1|2).  The figure of
# interest is total IOPS with two engine threads over total IOPS with one.
#
#   scale.sh [--build DIR] [--backing ram|null] [--bs BYTES] [--iodepth N]
#            [--time SEC] [--ramp SEC] [--coalesce N] [--json]
#
# With 4+ cpus it measures that directly: the client (vhost-bench, polling)
# on cpu 0, the engine thread(s) on cpu 1 (and 2).
#
# With 2 or 3 cpus the client has no core of its own once two engine threads
# run, so the script measures what it can and says so: the engines on cpu 1
# (one thread) and cpus 0,1 (two), the client on cpu 0 sleeping on the call
# eventfds (irq mode, SCHED_FIFO so that it runs at once when woken, calls
# coalesced), with each engine thread's CPU and each controller's IOPS.  The
# ratio it prints then is not the scaling figure (docs/benchmarks.md).
#
# Defaults: ram backing of 4 MiB per controller (cache resident: the copy
# costs CPU, not memory bandwidth, which does not scale with cores), 16 KiB
# random reads, QD 256 per controller, 5 s after 1 s ramp.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$here/../../build
backing=ram
bs=16K
size=4M
qd=256
time_s=5
ramp_s=1
coalesce=
json=0
while [ $# -gt 0 ]; do
	case $1 in
	--build) build=$2; shift ;;
	--backing) backing=$2; shift ;;
	--bs) bs=$2; shift ;;
	--size) size=$2; shift ;;
	--iodepth) qd=$2; shift ;;
	--time) time_s=$2; shift ;;
	--ramp) ramp_s=$2; shift ;;
	--coalesce) coalesce=$2; shift ;;
	--json) json=1 ;;
	-h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "scale.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
server=$build/tests/bench/bench-server
bench=$build/tests/bench/vhost-bench
for x in "$server" "$bench"; do
	[ -x "$x" ] || { echo "scale.sh: $x not built" >&2; exit 1; }
done
command -v jq >/dev/null || { echo "scale.sh: needs jq" >&2; exit 1; }
[ -n "$coalesce" ] || coalesce=$((qd / 2 > 0 ? qd / 2 : 1))

ncpu=$(nproc)
if [ "$ncpu" -ge 4 ]; then
	method=direct
	cpus1=1 cpus2=1,2 mode=poll rt=()
else
	method=shared
	cpus1=1 cpus2=0,1 mode=irq rt=()
	chrt -f 50 true 2>/dev/null && rt=(chrt -f 50)
fi

work=$(mktemp -d /tmp/vhostd-scale.XXXXXX) || exit 1
spid=
cleanup() {
	[ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# eng_cpu -> {"vhostd-eng0": ns, ...}: run time of the engine threads so far
eng_cpu() {
	local t first=1
	printf '{'
	for t in /proc/"$spid"/task/*; do
		case $(cat "$t/comm" 2>/dev/null) in
		vhostd-eng*)
			[ $first = 1 ] || printf ','
			printf '"%s":%s' "$(cat "$t/comm")" "$(cut -d' ' -f1 "$t/schedstat")"
			first=0 ;;
		esac
	done
	printf '}'
}

# one THREADS CPUS -> JSON of vhost-bench driving both devices
one() {
	local sock=$work/s i=0
	rm -f "$sock".*
	"$server" --socket "$sock" --devices 2 --backing "$backing" --size "$size" \
		--threads "$1" --cpu "$2" >"$work/server.log" 2>&1 &
	spid=$!
	until grep -q READY "$work/server.log" 2>/dev/null; do
		i=$((i + 1))
		if [ $i -gt 200 ] || ! kill -0 "$spid" 2>/dev/null; then
			echo "scale.sh: bench-server did not start" >&2
			cat "$work/server.log" >&2
			exit 1
		fi
		sleep 0.05
	done
	if [ "$backing" = ram ]; then
		for d in 0 1; do
			"$bench" --socket "$sock.$d" --fill --pattern write --bs 128K --iodepth 8 \
				--time 0 --ramp 0 --json >/dev/null || { echo "scale.sh: fill failed" >&2; exit 1; }
		done
	fi
	local t0 t1 res
	t0=$(eng_cpu)
	res=$("${rt[@]}" "$bench" --socket "$sock.0" --socket "$sock.1" --pattern randread --bs "$bs" \
		--iodepth "$qd" --time "$time_s" --ramp "$ramp_s" --mode "$mode" \
		--coalesce "$coalesce" --cpu 0 --pid "$spid" --json) ||
		{ echo "scale.sh: vhost-bench failed" >&2; exit 1; }
	t1=$(eng_cpu)
	# each engine thread's part of the target's CPU (over the whole run,
	# ramp included: vhost-bench's window only has the sum)
	jq -c --argjson t0 "$t0" --argjson t1 "$t1" '
		([$t1 | to_entries[] | .value - ($t0[.key] // 0)]) as $d
		| ($d | add) as $sum
		| . + {engine_share: [$d[] | if $sum > 0 then . / $sum else 0 end]}' <<<"$res"
	kill "$spid"
	wait "$spid" 2>/dev/null
	spid=
}

r1=$(one 1 "$cpus1") || exit 1
r2=$(one 2 "$cpus2") || exit 1

jq -n -c --argjson a "$r1" --argjson b "$r2" --arg method "$method" --arg backing "$backing" \
	--arg cpus1 "$cpus1" --arg cpus2 "$cpus2" --argjson ncpu "$ncpu" '
	def run(r; cpus): {cpus: cpus, iops: r.iops, dev_iops: r.dev_iops,
		engine_cpu_pct: r.target_cpu_pct,
		engine_thread_cpu_pct: [r.engine_share[] * r.target_cpu_pct | . * 10 | round / 10],
		client_cpu_pct: r.client_cpu_pct, lat_p50_us: r.lat_us.p50, errors: r.errors};
	{method: $method, ncpu: $ncpu, backing: $backing, bs: $a.bs, iodepth: $a.iodepth,
	 mode: $a.mode, coalesce: $a.coalesce,
	 one: run($a; $cpus1), two: run($b; $cpus2), ratio: ($b.iops / $a.iops)}' \
	>"$work/result" || exit 1

if [ "$json" = 1 ]; then
	cat "$work/result"
	exit 0
fi
jq -r '
	def k: if . >= 1000000 then "\(. / 10000 | floor / 100)M" else "\(. / 100 | floor / 10)k" end;
	def r2: (. * 100 | round) / 100;
	"scale: \(.backing) \(.bs) B randread, 2 controllers x QD\(.iodepth), client \(.mode)" +
	  (if .mode == "irq" then " (coalesce \(.coalesce))" else "" end) + ", \(.ncpu) cpus, method \(.method)",
	"| engine threads (cpus) | IOPS | per controller | engine CPU (per thread) | client CPU | p50 (us) |",
	"|---|---:|---:|---:|---:|---:|",
	(["1", .one], ["2", .two]) as [$n, $r]
	| "| \($n) (\($r.cpus)) | \($r.iops | k) | \([$r.dev_iops[] | k] | join(" + ")) | \($r.engine_cpu_pct)% (\([$r.engine_thread_cpu_pct[] | "\(.)%"] | join(" + "))) | \($r.client_cpu_pct)% | \($r.lat_p50_us | r2) |"' \
	"$work/result"
jq -r '
	def r2: (. * 100 | round) / 100;
	"2 threads / 1 thread: \(.ratio | r2)x" +
	  (if .method == "shared" then
	     " -- NOT the scaling figure: with \(.ncpu) cpus the client shares cpu 0 with the second engine thread (client CPU above), which gets only the rest of that core; run on 4+ cpus for the real ratio"
	   else "" end)' "$work/result"
