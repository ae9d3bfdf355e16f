#!/bin/bash
# The full test suite: installs the dependencies (Debian 12, as root),
# builds with -Werror, runs every test suite, then the core suites again
# under AddressSanitizer + UndefinedBehaviorSanitizer and the unit,
# integration, backend and cfs suites under ThreadSanitizer.  Ends with one
# summary line "vhostd: N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."

# Root runs everything.  A user who is not root goes through sudo when it is
# installed (VHOSTD_NO_SUDO=1: run unprivileged, the root-only tests skip).
if [ "$(id -u)" != 0 ] && [ -z "${VHOSTD_NO_SUDO:-}" ] && command -v sudo >/dev/null; then
	exec sudo --preserve-env=FUZZ_SECONDS,FUZZ_STRICT,SUITES "$0" "$@"
fi
if [ "$(id -u)" = 0 ]; then
	./contrib/install-deps.sh || { echo "vhostd: dependency install failed" >&2; exit 1; }
else
	echo "run-all: not root: not installing packages; FUSE/QEMU tests may skip" >&2
fi

passed=0 failed=0 skipped=0
recap=""
count() {       # count results of the meson test run in build dir $1
	local log="$1/meson-logs/testlog.json"
	[ -f "$log" ] || return 0
	local p f s
	p=$(grep -c '"result": "OK"' "$log")
	f=$(grep -cE '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
	s=$(grep -c '"result": "SKIP"' "$log")
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	# The end of each failed test's output (the criterion programs end it
	# with their failed tests and assertions), repeated at the very end of
	# the run: a CI excerpt that keeps only the tail still says what failed.
	if [ "$f" -gt 0 ] && command -v jq >/dev/null; then
		recap+=$(jq -r --arg dir "$1" 'select(.result | test("FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS"))
			| "--- \($dir): \(.name): \(.result)\n"
			  + ((.stdout // "") | split("\n") | .[-12:] | join("\n")) + "\n"
			  + ((.stderr // "") | split("\n") | .[-16:] | join("\n"))' "$log")$'\n'
	fi
}

run_suite() {   # $1 build dir, $2.. meson setup options; SUITES=... to pick
	local dir="$1"; shift
	if [ ! -f "$dir/build.ninja" ]; then
		meson setup "$dir" "$@" || { failed=$((failed + 1)); return; }
	elif [ $# -gt 0 ]; then
		# a build dir kept from an earlier run keeps its old options
		meson configure "$dir" "$@" || { failed=$((failed + 1)); return; }
	fi
	ninja -C "$dir" || { failed=$((failed + 1)); return; }
	local args=()
	for s in ${SUITES:-}; do args+=(--suite "$s"); done
	meson test -C "$dir" --print-errorlogs "${args[@]}"
	count "$dir"
}

# Every suite, rbd included (the Ceph RBD backend against a throwaway
# one-node cluster; skipped without the ceph packages).
run_suite build -Dwerror=true
SUITES="unit integration backend cfs fuzz rbd" run_suite build-asan -Db_sanitize=address,undefined -Db_lundef=false
# The engine threads, the control thread and what connects them (mailboxes,
# atomics), and the daemon's FUSE workers (cfs); a report fails the test
# (TSAN_OPTIONS in the suites' meson.build; test-cfs.sh greps the daemon log).
# About a minute of tests.
SUITES="unit integration backend cfs" run_suite build-tsan -Db_sanitize=thread -Db_lundef=false

# A time-boxed fuzz run of each libFuzzer target (needs clang); FUZZ_SECONDS=0
# skips it.  It explores: a finding is reported loudly with its input, but
# only fails the run with FUZZ_STRICT=1 — the deterministic gate is the
# corpus replay above (suite fuzz), where every past finding lives on.
fuzz_secs=${FUZZ_SECONDS:-60}
if [ "$fuzz_secs" -gt 0 ] && command -v clang >/dev/null; then
	if ./tests/fuzz/run-fuzz.sh "$fuzz_secs"; then
		passed=$((passed + 1))
	elif [ "${FUZZ_STRICT:-0}" = 1 ]; then
		failed=$((failed + 1))
	else
		echo "run-all: FUZZ FINDING (see above): add the input to tests/fuzz/corpus/ as regress-*.bin and fix it" >&2
		skipped=$((skipped + 1))
	fi
else
	skipped=$((skipped + 1))
fi

[ -z "$recap" ] || printf "run-all: what failed (the end of each failed test's output):\n%s" "$recap"
echo "vhostd: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
