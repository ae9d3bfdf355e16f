#!/bin/bash
# run-fuzz.sh SECONDS [TARGET...]
#
# Builds the libFuzzer targets with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer (in $BUILD_DIR, default build-fuzz) and runs each
# target (default: all) for SECONDS on a working copy of its committed corpus,
# then prints one line per target with executions, coverage and the result.
# New inputs stay in the working copy ($OUT_DIR, default $BUILD_DIR/fuzz-out);
# crash inputs are written there as crash-*/leak-*/timeout-* — add them to
# tests/fuzz/corpus/NAME/ as regress-*.bin (the `fuzz` suite replays them;
# this script leaves them out of the working copy so that a known bug does
# not stop the run at startup).  Exits 1 if a target failed.
#
# Minimize a corpus afterwards with libFuzzer's merge, e.g.
#   build-fuzz/tests/fuzz/fuzz-vu -merge=1 NEW_DIR tests/fuzz/corpus/vu OUT/vu/corpus
set -uo pipefail

secs=${1:-}
if ! [[ "$secs" =~ ^[0-9]+$ ]]; then
	echo "usage: $0 SECONDS [vu|vq|cfg ...]" >&2
	exit 2
fi
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(vu vq cfg)

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$src/build-fuzz}
out=${OUT_DIR:-$build/fuzz-out}

if [ ! -f "$build/build.ninja" ]; then
	CC=${CC:-clang} meson setup "$build" "$src" -Dfuzzing=true \
		-Db_sanitize=address,undefined -Db_lundef=false >/dev/null ||
		{ echo "run-fuzz: meson setup failed" >&2; exit 1; }
fi
ninja -C "$build" $(printf 'tests/fuzz/fuzz-%s ' "${targets[@]}") >/dev/null ||
	{ echo "run-fuzz: build failed" >&2; exit 1; }

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# A small quarantine: the vq target frees megabytes of request slots per
# input, and recycling a large quarantine stalls a loaded machine for
# seconds (once mistaken for a hang).  FUZZ_TIMEOUT: seconds one input may
# take before it counts as a hang.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:quarantine_size_mb=32}
timeout_s=${FUZZ_TIMEOUT:-20}

failed=0
summary=()
for t in "${targets[@]}"; do
	case $t in
	vu) max_len=16384 ;;
	vq) max_len=32768 ;;
	cfg) max_len=4200 ;;
	*) echo "run-fuzz: unknown target $t" >&2; exit 2 ;;
	esac
	dir="$out/$t"
	mkdir -p "$dir/corpus"
	# regress-* inputs reproduce known bugs: the `fuzz` test suite replays
	# them; here they would only stop the run before it starts.
	for f in "$here/corpus/$t/"*; do
		case $(basename "$f") in regress-*) ;; *) cp -n "$f" "$dir/corpus/" ;; esac
	done
	echo "=== fuzz-$t for ${secs}s (log: $dir/log)"
	"$build/tests/fuzz/fuzz-$t" -max_total_time="$secs" -timeout="$timeout_s" \
		-max_len="$max_len" -print_final_stats=1 -artifact_prefix="$dir/" \
		"$dir/corpus" >"$dir/log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$dir/log" | tail -1)
	crash=$(ls "$dir"/crash-* "$dir"/leak-* "$dir"/timeout-* "$dir"/oom-* 2>/dev/null | head -1)
	if [ $rc -ne 0 ]; then
		failed=1
		grep -m1 -E 'ERROR|runtime error|fuzz-[a-z]*:' "$dir/log" | sed 's/^/    /'
		line="fuzz-$t: FAILED (exit $rc) after ${execs:-?} execs, ${cov:-no coverage}${crash:+, input $crash}"
	else
		line="fuzz-$t: ok, ${execs:-?} execs in ${secs}s, ${cov:-no coverage}, corpus $(ls "$dir/corpus" | wc -l) files"
	fi
	echo "$line"
	summary+=("$line")
done
echo "--- summary"
printf '%s\n' "${summary[@]}"
exit $failed
