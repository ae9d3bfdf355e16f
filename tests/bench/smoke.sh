#!/bin/sh
# bench-smoke: run vhost-bench for ~2 s against bench-server with the null
# and ram backings (and the selftest), scale.sh, qos-cost.sh, ab.sh,
# compare.sh and rbd-compare.sh briefly, and check that they printed sane
# numbers: non-zero IOPS, no failed request, a latency, a ratio on every
# row of the comparisons.  Not a timed assertion: any speed passes.
#   smoke.sh BENCH_SERVER VHOST_BENCH
set -u
server=$1
bench=$2
dir=$(mktemp -d /tmp/bench-smoke.XXXXXX) || exit 1
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

fail() { echo "FAIL: $*"; exit 1; }

# check_json FILE: iops > 0, errors == 0, p50 latency > 0
check_json() {
	line=$(cat "$1")
	echo "  $line"
	iops=$(printf '%s' "$line" | sed -n 's/.*"iops":\([0-9.]*\).*/\1/p')
	errs=$(printf '%s' "$line" | sed -n 's/.*"errors":\([0-9]*\).*/\1/p')
	p50=$(printf '%s' "$line" | sed -n 's/.*"p50":\([0-9.]*\).*/\1/p')
	[ -n "$iops" ] && [ -n "$errs" ] && [ -n "$p50" ] || fail "unparsable output"
	awk -v v="$iops" 'BEGIN { exit !(v > 0) }' || fail "zero IOPS"
	[ "$errs" = 0 ] || fail "$errs failed requests"
	awk -v v="$p50" 'BEGIN { exit !(v > 0) }' || fail "no latency"
}

echo "selftest:"
"$bench" --selftest --iodepth 32 --time 0.5 --ramp 0.1 --json >"$dir/out" || fail "selftest exited $?"
check_json "$dir/out"

for backing in null ram; do
	sock=$dir/$backing.sock
	"$server" --socket "$sock" --backing "$backing" --size 64M >"$dir/server.out" 2>&1 &
	pid=$!
	i=0
	until grep -q READY "$dir/server.out" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt 100 ] && fail "bench-server did not start: $(cat "$dir/server.out")"
		kill -0 "$pid" 2>/dev/null || fail "bench-server died: $(cat "$dir/server.out")"
		sleep 0.05
	done
	for args in "--pattern randread --iodepth 1" \
		    "--pattern randwrite --iodepth 32 --mode irq" \
		    "--pattern randread --iodepth 32 --mode irq --coalesce 8" \
		    "--pattern randrw --iodepth 8 --queues 1"; do
		echo "$backing $args:"
		# shellcheck disable=SC2086
		"$bench" --socket "$sock" $args --time 0.7 --ramp 0.1 --pid "$pid" --json \
			>"$dir/out" 2>"$dir/err" || fail "vhost-bench exited $?: $(cat "$dir/err")"
		check_json "$dir/out"
	done
	kill "$pid"
	wait "$pid"
	rc=$?
	pid=
	grep STATS "$dir/server.out"
	[ $rc = 0 ] || fail "bench-server exited $rc"
done
# scale.sh: one thread vs two serving two controllers (its output is a
# table; here only that both runs served requests without an error)
echo "scale.sh:"
build=$(cd "$(dirname "$server")/../.." && pwd)
"$(dirname "$0")/scale.sh" --build "$build" --time 0.5 --ramp 0.1 --size 1M --json \
	>"$dir/out" 2>"$dir/err" || fail "scale.sh exited $?: $(cat "$dir/err")"
echo "  $(cat "$dir/out")"
for run in one two; do
	sed -n "s/.*\"$run\":{[^}]*\"iops\":\([0-9.]*\),.*\"errors\":\([0-9]*\)}.*/\1 \2/p" "$dir/out" >"$dir/r"
	read -r iops errs <"$dir/r" || fail "scale.sh: no result for $run"
	awk -v v="$iops" 'BEGIN { exit !(v > 0) }' || fail "scale.sh: zero IOPS ($run)"
	[ "$errs" = 0 ] || fail "scale.sh: $errs failed requests ($run)"
done
# qos-cost.sh: unlimited against limited-above-rate, one short round
# (here only that both sides served requests without an error)
echo "qos-cost.sh:"
"$(dirname "$0")/qos-cost.sh" --build "$build" --rounds 1 --time 0.3 --ramp 0.1 --json \
	>"$dir/out" 2>"$dir/err" || fail "qos-cost.sh exited $?: $(cat "$dir/err")"
echo "  $(cat "$dir/out")"
for side in unlimited limited; do
	jq -e --arg s "$side" '.[$s].iops > 0 and .[$s].errors == 0' "$dir/out" >/dev/null ||
		fail "qos-cost.sh: $side side: no IOPS or failed requests"
done
# ab.sh: the tree against itself, split (descriptors written per request)
# and packed, one short round: a row with both ratios
echo "ab.sh:"
"$(dirname "$0")/ab.sh" --a "$build" --b "$build" --backings null --workloads randread:4 \
	--rounds 1 --time 0.3 --ramp 0.1 --size 1M --nice 0 --packed --client --fresh-desc \
	--out "$dir/ab.md" >"$dir/ab.out" 2>&1 || fail "ab.sh exited $?: $(tail -20 "$dir/ab.out")"
grep '^| null' "$dir/ab.md" | sed 's/^/  /'
grep -qE '^\| null 4k randread QD4 .* [0-9.]+x \| [0-9.]+x \| ' "$dir/ab.md" ||
	fail "ab.sh: no row with both ratios in its report"
# compare.sh: vhostd against qemu-storage-daemon, every backing and
# workload once, briefly: a report with a ratio on every row
echo "compare.sh:"
if command -v qemu-storage-daemon >/dev/null 2>&1; then
	"$(dirname "$0")/compare.sh" --build "$build" --time 0.3 --ramp 0.1 --size 64M \
		--no-idle --nice 0 --file "/var/tmp/vhostd-smoke-$$.img" --out "$dir/compare.md" \
		>"$dir/cmp.out" 2>&1 || fail "compare.sh exited $?: $(tail -20 "$dir/cmp.out")"
	grep '^| ' "$dir/compare.md" | sed 's/^/  /'
	rows=$(grep -cE '^\| (null|ram|file) 4k .*[0-9.]+x \| [0-9.]+x \|$' "$dir/compare.md")
	[ "$rows" = 8 ] || fail "compare.sh: $rows of 8 rows with ratios in its report"
else
	echo "  skipped: qemu-storage-daemon not installed (apt-get install qemu-system-common)"
fi
# rbd-compare.sh: vhostd's rbd backend against qsd's rbd driver on a
# throwaway one-node cluster, two short interleaved rounds (root, /dev/fuse,
# the ceph packages and QEMU's rbd driver needed; ~30 s)
echo "rbd-compare.sh:"
if [ "$(id -u)" = 0 ] && [ -e /dev/fuse ] && command -v ceph-mon >/dev/null 2>&1 &&
   command -v ceph-osd >/dev/null 2>&1 && command -v rbd >/dev/null 2>&1 &&
   command -v qemu-storage-daemon >/dev/null 2>&1 &&
   [ -e /usr/lib/x86_64-linux-gnu/qemu/block-rbd.so ]; then
	"$(dirname "$0")/rbd-compare.sh" --build "$build" --repeat 2 --time 0.3 --ramp 0.1 --size 16M \
		--workloads "randread:1 randwrite:4" --nice 0 --out "$dir/rbd.md" \
		>"$dir/rbd.out" 2>&1 || fail "rbd-compare.sh exited $?: $(tail -20 "$dir/rbd.out")"
	grep '^| rbd' "$dir/rbd.md" | sed 's/^/  /'
	rows=$(grep -cE '^\| rbd 4k .*[0-9.]+x \| [0-9.]+x \|$' "$dir/rbd.md")
	[ "$rows" = 2 ] || fail "rbd-compare.sh: $rows of 2 rows with ratios in its report"
else
	echo "  skipped: needs root, /dev/fuse, ceph-mon, ceph-osd, rbd and QEMU's rbd driver (contrib/install-deps.sh)"
fi
echo "OK"
