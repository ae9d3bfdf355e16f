#!/bin/bash
# test-live.sh VHOSTD BLKCHECK PART
#
# Live VM operations (issue 11) with the real vhostd daemon and a real QEMU
# guest (TCG) driven through QMP (tests/guest/qmp.py) while the guest does
# verified I/O (tests/guest/init's live modes, blkcheck).  One PART per run:
#
#   memhp    Kata's memory hot-add: -m 256M,slots=10,maxmem=2G (memfd,
#            share=on); the guest pins most of its boot RAM and does rounds of
#            verified I/O on /dev/vda while 9 pc-dimms of 128 MiB are
#            hot-added (object-add memory-backend-memfd share=on +
#            device_add pc-dimm); the guest onlines them (online_movable) and
#            steers each round's I/O buffers into one hot-added DIMM (the
#            others offlined inside the guest for the round, newest first):
#            a round must have all its buffers in the last DIMM added;
#            one DIMM is removed again (device_del, DEVICE_DELETED) and the
#            I/O carries on.  Prints how many DIMMs were accepted; with
#            /usr/bin/qemu-storage-daemon the same DIMM-count step runs
#            against it too and both counts are printed.
#   resize   a 64M ram controller, guest running: echo 128M > ctl/NAME/size;
#            the guest must see /sys/block/vda/size change within a second
#            (host-side time from the write returning to the guest's line on
#            the console) and write+read back the whole new size; then the
#            same to 192M by writing config back with only size= changed.  A control
#            run does the same grow on QEMU's own virtio-blk (QMP
#            block_resize), so a failure is the back-end's, not the test's.
#   plug     Kata's attach path: a VM booted without the disk; twice
#            chardev-add + device_add vhost-user-blk-pci, verified I/O in the
#            guest, device_del (DEVICE_DELETED) + chardev-remove; after each
#            del the guest's disk is gone and ctl/NAME/state is listening.
#   reset    QMP system_reset while the guest does verified random I/O: the
#            guest boots again and its verified I/O passes.
#   huge     guest RAM from hugetlbfs (memory-backend-file,
#            mem-path=/dev/hugepages,share=on, as Kata requires); reserves
#            the hugepages (and mounts /dev/hugepages) if needed and gives
#            back what it changed.  Exit 77 where hugepages cannot be had.
#
# Prints the session (commands, QMP answers, guest progress) and timings on
# stdout; every failure says what was seen.  Exit 0 pass, 1 fail, 77 skipped
# (not root, no /dev/fuse, no QEMU/guest kernel/python3, no hugepages).
# Every vhostd, qemu-storage-daemon and QEMU it starts is stopped by pid,
# on failure too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ $# -eq 3 ] || { echo "usage: $0 VHOSTD BLKCHECK memhp|resize|plug|reset|huge" >&2; exit 2; }
VHOSTD=$1
BLKCHECK_BIN=$2
PART=$3
case "$PART" in memhp|resize|plug|reset|huge) ;; *) echo "test-live: unknown part '$PART'" >&2; exit 2 ;; esac
TEST_NAME=live-$PART
NAME=live0

skip() { echo "$TEST_NAME: SKIP: $*" >&2; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (vhostd mounts a FUSE fs and makes device nodes)"
[ -c /dev/fuse ] || skip "no /dev/fuse"
command -v "${QEMU:-qemu-system-x86_64}" >/dev/null 2>&1 ||
	skip "${QEMU:-qemu-system-x86_64} not found (apt-get install qemu-system-x86)"
command -v python3 >/dev/null 2>&1 || skip "python3 not found (the QMP client is tests/guest/qmp.py)"
ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 || [ -n "${VHOSTD_GUEST_KERNEL:-}" ] ||
	skip "no guest kernel /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)"
[ -x "$VHOSTD" ] || { echo "$TEST_NAME: $VHOSTD is not executable" >&2; exit 1; }
[ -x "$BLKCHECK_BIN" ] || { echo "$TEST_NAME: $BLKCHECK_BIN is not executable" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-live-$PART.XXXXXX")
STORE=$T/store
STATE=$T/vhostd.state
export STORE STATE T
CTL=$STORE/block/ctl
SOCKS=$STORE/block/sockets
DLOG=$T/vhostd.log
QMPS=$T/qmp.sock
CONSOLE=$T/console.log
# shellcheck source=vhostd-lib.sh
. "$HERE/vhostd-lib.sh"

RG_PID=         # run-guest.sh (it stops its QEMU on TERM)
QSD_PID=        # qemu-storage-daemon
HP_ADDED=0      # hugepages this test reserved
HP_MOUNTED=0    # this test mounted /dev/hugepages

stop_guest() {
	local qpid
	if [ -n "$RG_PID" ] && kill -0 "$RG_PID" 2>/dev/null; then
		kill -TERM "$RG_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$RG_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$RG_PID" 2>/dev/null || true
	fi
	[ -n "$RG_PID" ] && { wait "$RG_PID" 2>/dev/null || true; }
	RG_PID=
	# run-guest.sh stops QEMU itself; if it was killed before it could, do it here
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
	if [ -n "$QSD_PID" ] && kill -0 "$QSD_PID" 2>/dev/null; then
		kill -TERM "$QSD_PID" 2>/dev/null || true
		for _ in $(seq 30); do kill -0 "$QSD_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$QSD_PID" 2>/dev/null || true
		wait "$QSD_PID" 2>/dev/null || true
	fi
	kill_vhostd
	if [ "$HP_MOUNTED" = 1 ]; then
		umount /dev/hugepages 2>/dev/null || echo "$TEST_NAME: could not unmount /dev/hugepages" >&2
	fi
	if [ "$HP_ADDED" -gt 0 ]; then
		local cur
		cur=$(cat /proc/sys/vm/nr_hugepages)
		echo $(( cur > HP_ADDED ? cur - HP_ADDED : 0 )) > /proc/sys/vm/nr_hugepages 2>/dev/null ||
			echo "$TEST_NAME: could not give back $HP_ADDED hugepages" >&2
	fi
	rm -rf "$T"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# qmp CMD [ARGS-JSON] [qmp.py options]: run one QMP command, show it and the
# answer; sets RC and OUT (stdout+stderr of qmp.py).
qmp() {
	local t0
	printf '(qmp) %s %s\n' "$1" "${2:-}"
	if [ -z "$RG_PID" ] || ! kill -0 "$RG_PID" 2>/dev/null; then
		OUT="QEMU is not running any more" RC=4
		printf '  %s\n' "$OUT"
		return 0
	fi
	t0=$(now_ms)
	set +e
	OUT=$(python3 -B "$HERE/qmp.py" --timeout "${QMP_TIMEOUT:-30}" "${QMP_TARGET:-$QMPS}" "$@" 2>&1)
	RC=$?
	set -e
	LAST_MS=$(( $(now_ms) - t0 ))
	[ -n "$OUT" ] && printf '%s\n' "$OUT" | sed 's/^/  /'
	[ $RC -eq 0 ] || printf '  (qmp.py exit status %d)\n' "$RC"
	return 0
}

# start_guest RUN-GUEST-OPTIONS...: boot the guest in the background with a
# QMP socket and its console in $CONSOLE.
start_guest() {
	rm -f "$QMPS" "$T/qemu.pid"
	SHOWN=0
	: > "$CONSOLE"
	printf '$ tests/guest/run-guest.sh %s --qmp $T/qmp.sock --log $T/console.log &\n' "$*"
	GUEST_T0=$(now_ms)
	"$HERE/run-guest.sh" --blkcheck "$BLKCHECK_BIN" --qmp "$QMPS" --log "$CONSOLE" \
		--pidfile "$T/qemu.pid" "$@" > "$T/run-guest.out" 2>&1 &
	RG_PID=$!
}

# guest_gone: run-guest.sh ended; show why (77 = cannot run here: skip).
guest_gone() {
	local grc=0
	wait "$RG_PID" || grc=$?
	RG_PID=
	cat "$T/run-guest.out"
	[ $grc -eq 77 ] && skip "the guest cannot run here (run-guest.sh skipped)"
	fail "the guest ended early (run-guest.sh status $grc) while waiting for: $1"
	finish
}

# wait_console REGEX SECONDS [COUNT]: wait until COUNT (default 1) console
# lines match; 1 on timeout or when the guest is gone.
wait_console() {
	local want=${3:-1} end=$(( $(now_ms) + $2 * 1000 ))
	while [ "$(grep -acE "$1" "$CONSOLE" 2>/dev/null || true)" -lt "$want" ]; do
		if [ -n "$RG_PID" ] && ! kill -0 "$RG_PID" 2>/dev/null; then
			return 2
		fi
		[ "$(now_ms)" -lt "$end" ] || return 1
		sleep 0.02
	done
	return 0
}
# need_console REGEX SECONDS [COUNT] WHAT: wait_console or fail (and finish
# if the guest is gone).
need_console() {
	local r=0
	wait_console "$1" "$2" "${3:-1}" || r=$?
	[ $r -eq 0 ] && return 0
	if [ $r -eq 2 ]; then guest_gone "$4"; fi
	fail "no '$1' on the guest console within $2 s ($4)"
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
	timing "guest from start to its verdict" $(( $(now_ms) - GUEST_T0 ))
	sed -e 's/^run-guest: qemu-system/run-guest: (QEMU command line) qemu-system/' "$T/run-guest.out"
	[ $grc -eq 77 ] && skip "the guest cannot run here (run-guest.sh skipped)"
	[ $grc -eq 0 ] || fail "guest verdict: $(console_last 'VHOSTD-GUEST-RESULT' || echo none) (run-guest.sh status $grc)"
}

SHOWN=0
guest_progress() { # the guest's progress lines not shown yet (for the transcript)
	local lines n
	lines=$(tr -d '\r' < "$CONSOLE" | grep -aE '^(vhostd-guest:|VHOSTD-GUEST|BLKCHECK)' || true)
	n=$(printf '%s' "$lines" | grep -c '' || true)
	[ "$n" -gt "$SHOWN" ] && printf '%s\n' "$lines" | sed -n "$((SHOWN + 1)),\$p" | sed 's/^/  guest| /'
	SHOWN=$n
	return 0
}

controller() { # controller SIZE: a ram controller NAME
	start_vhostd || exit 1
	sh_run "mkdir $Q_CTL/$NAME"
	[ $RC -eq 0 ] || { fail "mkdir failed: $OUT"; finish; }
	sh_run "echo $1 > $Q_CTL/$NAME/config"
	[ $RC -eq 0 ] || { fail "config '$1' refused: $OUT $(cat "$CTL/$NAME/error" 2>/dev/null)"; finish; }
	sh_run "cat $Q_CTL/$NAME/state"
}

# ============================================================================
# memhp
# ============================================================================
DIMMS=9
DIMM_BYTES=$((128 << 20))

# add_dimms LABEL: hot-add up to $DIMMS DIMMs; sets ACCEPTED and REFUSAL.
add_dimms() {
	local i
	ACCEPTED=0 REFUSAL=
	for i in $(seq "$DIMMS"); do
		qmp object-add "{\"qom-type\":\"memory-backend-memfd\",\"id\":\"hpmem$i\",\"size\":$DIMM_BYTES,\"share\":true}"
		if [ $RC -ne 0 ]; then REFUSAL="object-add hpmem$i: $OUT"; break; fi
		qmp device_add "{\"driver\":\"pc-dimm\",\"id\":\"dimm$i\",\"memdev\":\"hpmem$i\"}"
		if [ $RC -ne 0 ]; then
			REFUSAL="DIMM $i: $(sed -n 's/^qmp: //p' <<<"$OUT" | head -n 1)"
			qmp object-del "{\"id\":\"hpmem$i\"}"
			break
		fi
		ACCEPTED=$i
		sleep 0.3
	done
	echo "$1: $ACCEPTED of $DIMMS DIMMs of 128 MiB accepted${REFUSAL:+; refused: $REFUSAL}"
}

part_memhp() {
	local r
	step "memhp 1. A ram controller and a guest with -m 256M,slots=10,maxmem=2G (memfd, share=on)"
	controller 64M
	start_guest --socket "$SOCKS/$NAME" --mem 256 --mem-opts slots=10,maxmem=2G --timeout 175 \
		--tests memhp --append "memhp_default_state=online_movable vhostd.memhp_wait=140"
	need_console 'VHOSTD-GUEST-READY memhp' 90 1 "the guest pinned its boot RAM" || finish
	need_console 'memhp round 1:' 30 1 "the first round of verified I/O" || finish
	timing "guest boot until its verified I/O runs" $(( $(now_ms) - GUEST_T0 ))
	guest_progress

	step "memhp 2. Hot-add $DIMMS pc-dimms of 128 MiB while the guest does verified I/O"
	add_dimms "vhostd"
	VHOSTD_ACCEPTED=$ACCEPTED VHOSTD_REFUSAL=$REFUSAL
	qmp query-memory-devices
	[ "$(grep -o '"id": "dimm' <<<"$OUT" | wc -l)" = "$ACCEPTED" ] ||
		fail "query-memory-devices does not list the $ACCEPTED accepted DIMMs"
	[ "$ACCEPTED" -ge "$DIMMS" ] ||
		fail "only $ACCEPTED of $DIMMS DIMMs accepted with vhostd (refused: $REFUSAL)"

	if [ "$ACCEPTED" -eq 0 ]; then
		echo "no DIMM was accepted: nothing for the guest to online or remove; stopping it"
		stop_guest
	else
		step "memhp 3. The guest onlines the $ACCEPTED new DIMMs and does verified I/O with buffers in them"
		# One 128 MiB DIMM = one memory block of this guest (checked by the
		# count).  The guest steers each round's buffers into one hot-added
		# block, the newest (the last DIMM) first: wanted, a round with all
		# its buffer pages in the last DIMM.
		local want="memhp round [0-9]+: hotadded_blocks=$ACCEPTED .*rc=0 target=memory[0-9]+\(newest\)[^ ]* in_target=([1-9][0-9]*)/\1 "
		r=0
		need_console "$want" 60 1 \
			"a round of verified I/O with all $ACCEPTED DIMMs online and all its buffers in the last one" || r=1
		guest_progress
		[ $r -eq 0 ] && echo "seen: $(console_last "$want")"
		need_console "VHOSTD-GUEST-READY memhp-remove blocks=$ACCEPTED" 30 1 \
			"the guest stopped steering its buffers (no offlining in the guest during the removal)" || true
		guest_progress

		step "memhp 4. device_del one DIMM (dimm$ACCEPTED) while the I/O goes on"
		QMP_TIMEOUT=60 qmp device_del "{\"id\":\"dimm$ACCEPTED\"}" --event DEVICE_DELETED --match "device=dimm$ACCEPTED"
		if [ $RC -eq 0 ]; then
			timing "device_del dimm$ACCEPTED until DEVICE_DELETED" "$LAST_MS"
			qmp object-del "{\"id\":\"hpmem$ACCEPTED\"}"
			[ $RC -eq 0 ] || fail "object-del hpmem$ACCEPTED after its DIMM was deleted: $OUT"
		else
			fail "device_del dimm$ACCEPTED: no DEVICE_DELETED (the guest did not give the memory back): $OUT"
		fi
	fi

	step "memhp 5. The guest's verdict"
	[ -n "$RG_PID" ] && end_guest 120
	guest_progress
	local stall
	stall=$(grep -aoE 'memhp round [0-9]+: .* max_lat_ms=[0-9.]+' "$CONSOLE" | sed 's/.*max_lat_ms=//' | sort -g | tail -n 1)
	echo "longest single guest I/O (max_lat_ms) over all rounds, DIMM adds and removal included: ${stall:-?} ms"
	grep -aq 'memhp: hot-added memory removed again' "$CONSOLE" ||
		{ [ "$ACCEPTED" -eq 0 ] || fail "the guest did not see the DIMM removal"; }
	sh_run "cat $Q_CTL/$NAME/stats"
	[ "$(stat_of errors "$OUT")" = 0 ] || fail "stats: errors='$(stat_of errors "$OUT")'"

	# --- the same DIMM-count step against qemu-storage-daemon -------------
	QSD_ACCEPTED=
	local qsd
	if qsd=$(command -v qemu-storage-daemon); then
		step "memhp 6. The same DIMM-count step with qemu-storage-daemon as the back-end"
		truncate -s 64M "$T/qsd.img"
		printf '$ %s --blockdev driver=file,node-name=f,filename=$T/qsd.img --export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path=$T/qsd.sock,writable=on,num-queues=2 &\n' "$qsd"
		"$qsd" --blockdev driver=file,node-name=f,filename="$T/qsd.img" \
			--export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path="$T/qsd.sock",writable=on,num-queues=2 \
			> "$T/qsd.log" 2>&1 &
		QSD_PID=$!
		for _ in $(seq 100); do [ -S "$T/qsd.sock" ] && break; kill -0 "$QSD_PID" 2>/dev/null || break; sleep 0.05; done
		if [ ! -S "$T/qsd.sock" ]; then
			echo "qemu-storage-daemon did not start:"; cat "$T/qsd.log"
			fail "qemu-storage-daemon did not start (comparison not made)"
		else
			start_guest --socket "$T/qsd.sock" --mem 256 --mem-opts slots=10,maxmem=2G --timeout 120 \
				--tests rand:100s --threads 2
			if need_console '=== rand' 90 1 "the guest on qemu-storage-daemon runs its I/O"; then
				add_dimms "qemu-storage-daemon"
				QSD_ACCEPTED=$ACCEPTED
			fi
			stop_guest
			kill -TERM "$QSD_PID" 2>/dev/null || true
			wait "$QSD_PID" 2>/dev/null || true
			QSD_PID=
		fi
	fi
	step "memhp: DIMMs accepted"
	echo "vhostd:              $VHOSTD_ACCEPTED of $DIMMS${VHOSTD_REFUSAL:+ (refused: $VHOSTD_REFUSAL)}"
	[ -n "$QSD_ACCEPTED" ] && echo "qemu-storage-daemon: $QSD_ACCEPTED of $DIMMS${REFUSAL:+ (refused: $REFUSAL)}"
	[ -z "$qsd" ] && echo "qemu-storage-daemon: not installed, no comparison"
	return 0
}

# ============================================================================
# resize
# ============================================================================
# resize_seen T0 WHO STEP BYTES: the guest's view after grow STEP (to BYTES)
# made at T0 (ms).
resize_seen() {
	local seen_ms
	if wait_console "VHOSTD-GUEST-RESIZED $3 " 10; then
		seen_ms=$(( $(now_ms) - $1 ))
		echo "guest: $(console_last "VHOSTD-GUEST-RESIZED $3 ")"
		timing "$2: grow $3 until the guest saw the new /sys/block/vda/size" "$seen_ms"
		echo "$2: the guest saw the new size $seen_ms ms after the change"
		grep -aq "VHOSTD-GUEST-RESIZED $3 bytes=$4 " "$CONSOLE" ||
			fail "$2: grow $3: the guest saw '$(console_last "VHOSTD-GUEST-RESIZED $3 ")', expected $4 bytes"
		[ "$seen_ms" -le 1000 ] ||
			fail "$2: grow $3: the guest saw the new size $seen_ms ms after the change (limit 1000 ms)"
	else
		fail "$2: grow $3: the guest did not see the new size within 10 s (the change is not announced to the running guest)"
	fi
}
# resize_done WHO: the guest's verdict and its write+read past the old ends.
resize_done() {
	end_guest 120
	guest_progress
	grep -aq 'resize 1: verified write+read of all 134217728 bytes' "$CONSOLE" ||
		fail "$1: no verified write+read past the old end (64M) in the guest after the grow to 128M"
	grep -aq 'resize 2: verified write+read of all 201326592 bytes' "$CONSOLE" ||
		fail "$1: no verified write+read past the old end (128M) in the guest after the grow to 192M"
}
RESIZE_TESTS=resize:134217728/201326592

part_resize() {
	local t0 cfg
	step "resize 1. A 64M ram controller and a guest doing verified I/O on it"
	controller 64M
	start_guest --socket "$SOCKS/$NAME" --mem 256 --timeout 150 --tests "$RESIZE_TESTS" \
		--append "vhostd.resize_wait=60"
	need_console 'VHOSTD-GUEST-READY resize1' 90 1 "the guest watches /sys/block/vda/size" || finish
	guest_progress
	sleep 1

	step "resize 2. Grow it to 128M through ctl/$NAME/size while the guest runs"
	t0=$(now_ms)
	sh_run "echo 128M > $Q_CTL/$NAME/size"
	if [ $RC -ne 0 ]; then
		local err wout=$OUT
		err=$(cat "$CTL/$NAME/error" 2>/dev/null || true)
		sh_run "cat $Q_CTL/$NAME/error $Q_CTL/$NAME/size $Q_CTL/$NAME/state"
		fail "the size change of the connected controller was refused: '$(head -n 1 <<<"$wout")'; ctl/$NAME/error: '$err'"
		grep -q 'Device or resource busy' <<<"$wout" ||
			echo "note: the refusal is not EBUSY (the contract's errno for a change that cannot be made live)"
		stop_guest
	else
		sh_run "cat $Q_CTL/$NAME/size"
		[ "$OUT" = 134217728 ] || fail "ctl/$NAME/size reads '$OUT' after the write, expected 134217728"
		resize_seen "$t0" vhostd 1 134217728

		step "resize 3. Grow it to 192M by writing config back with only size= changed"
		need_console 'VHOSTD-GUEST-READY resize2' 60 1 "the guest checked the first grow and watches again" || finish
		guest_progress
		sleep 1
		cfg=$(sed 's/^size=.*/size=201326592/' "$CTL/$NAME/config")
		echo "$ cat \$STORE/block/ctl/$NAME/config | sed 's/^size=.*/size=201326592/' > \$STORE/block/ctl/$NAME/config"
		t0=$(now_ms)
		set +e
		OUT=$(printf '%s\n' "$cfg" 2>&1 > "$CTL/$NAME/config")
		RC=$?
		set -e
		[ -n "$OUT" ] && echo "$OUT"
		if [ $RC -ne 0 ]; then
			fail "config with only size= changed was refused (status $RC): $(cat "$CTL/$NAME/error" 2>/dev/null)"
			stop_guest
		else
			sh_run "cat $Q_CTL/$NAME/config"
			grep -qx 'size=201326592' <<<"$OUT" || fail "config does not read back size=201326592 after the write"
			resize_seen "$t0" vhostd 2 201326592
			step "resize 4. The guest wrote and read back past each old end"
			resize_done vhostd
			sh_run "cat $Q_CTL/$NAME/stats"
			[ "$(stat_of errors "$OUT")" = 0 ] || fail "stats: errors='$(stat_of errors "$OUT")'"
		fi
	fi

	# --- control: the same grows announced by QEMU's own virtio-blk ---------
	# Proves the guest side of this test sees a resize when the device
	# announces one (qemu-storage-daemon 7.2 resizes its export on
	# block_resize but does not announce it to the guest, so it is no
	# reference here).
	step "resize 5. Control: the same grows on QEMU's built-in virtio-blk (QMP block_resize)"
	truncate -s 64M "$T/control.img"
	start_guest --mem 256 --timeout 150 --tests "$RESIZE_TESTS" \
		--append "vhostd.disks=1 vhostd.resize_wait=60" \
		--qemu-arg -blockdev --qemu-arg "driver=file,node-name=ctl0,filename=$T/control.img" \
		--qemu-arg -device --qemu-arg virtio-blk-pci,drive=ctl0
	local i bytes
	for i in 1 2; do
		bytes=$(( (i + 1) * 64 << 20 ))
		need_console "VHOSTD-GUEST-READY resize$i" 90 1 "the control guest watches its size" || finish
		guest_progress
		sleep 1
		t0=$(now_ms)
		qmp block_resize "{\"node-name\":\"ctl0\",\"size\":$bytes}"
		[ $RC -eq 0 ] || fail "control: block_resize: $OUT"
		resize_seen "$t0" "control (QEMU virtio-blk)" "$i" "$bytes"
	done
	resize_done "control (QEMU virtio-blk)"
}

# ============================================================================
# plug
# ============================================================================
part_plug() {
	local i sock
	step "plug 1. A 64M ram controller; a VM booted without it"
	controller 64M
	start_guest --mem 256 --timeout 170 --tests plug:2
	sock=$SOCKS/$NAME
	for i in 1 2; do
		step "plug 2.$i Attach #$i: chardev-add + device_add vhost-user-blk-pci"
		need_console "VHOSTD-GUEST-READY plug$i" 90 1 "the guest waits for disk #$i" || finish
		[ $i = 1 ] && timing "guest boot (no disk)" $(( $(now_ms) - GUEST_T0 ))
		qmp chardev-add "{\"id\":\"vub$i\",\"backend\":{\"type\":\"socket\",\"data\":{\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"$sock\"}},\"server\":false}}}"
		[ $RC -eq 0 ] || { fail "chardev-add #$i: $OUT"; finish; }
		qmp device_add "{\"driver\":\"vhost-user-blk-pci\",\"id\":\"vblk$i\",\"chardev\":\"vub$i\",\"num-queues\":2}"
		[ $RC -eq 0 ] || { fail "device_add #$i: $OUT"; finish; }
		wait_state "$NAME" connected 10 || fail "state is '$(cat "$CTL/$NAME/state")' after device_add #$i, expected connected"
		sh_run "cat $Q_CTL/$NAME/state"
		need_console "VHOSTD-GUEST-PLUGGED $i " 90 1 "verified I/O on hot-plugged disk #$i" || finish
		echo "guest: $(console_last "VHOSTD-GUEST-PLUGGED $i ")"
		grep -aqE "VHOSTD-GUEST-PLUGGED $i vd[a-z]+ ok" "$CONSOLE" || fail "verified I/O on hot-plugged disk #$i failed"

		step "plug 3.$i Detach #$i: device_del + chardev-remove"
		QMP_TIMEOUT=60 qmp device_del "{\"id\":\"vblk$i\"}" --event DEVICE_DELETED --match "device=vblk$i"
		[ $RC -eq 0 ] || { fail "device_del vblk$i: $OUT"; finish; }
		timing "device_del #$i until DEVICE_DELETED" "$LAST_MS"
		sh_run "cat $Q_CTL/$NAME/state"
		qmp chardev-remove "{\"id\":\"vub$i\"}"
		[ $RC -eq 0 ] || fail "chardev-remove vub$i: $OUT"
		need_console "VHOSTD-GUEST-UNPLUGGED $i" 30 1 "disk #$i gone in the guest" || true
		wait_state "$NAME" listening 10 ||
			fail "state is '$(cat "$CTL/$NAME/state")' 10 s after detach #$i, expected listening"
		sh_run "cat $Q_CTL/$NAME/state"
	done
	step "plug 4. The guest's verdict"
	end_guest 60
	guest_progress
	sh_run "cat $Q_CTL/$NAME/stats"
	[ "$(stat_of errors "$OUT")" = 0 ] || fail "stats: errors='$(stat_of errors "$OUT")'"
}

# ============================================================================
# reset
# ============================================================================
part_reset() {
	step "reset 1. A 64M ram controller; a guest doing verified random I/O"
	controller 64M
	start_guest --socket "$SOCKS/$NAME" --mem 256 --timeout 170 --allow-reboot --tests rand:15s
	need_console '=== rand' 90 1 "the guest's verified I/O starts" || finish
	timing "guest boot until its I/O starts" $(( $(now_ms) - GUEST_T0 ))
	sleep 4

	step "reset 2. system_reset while the I/O runs"
	sh_run "cat $Q_CTL/$NAME/state"
	qmp system_reset
	[ $RC -eq 0 ] || { fail "system_reset: $OUT"; finish; }
	local t0
	t0=$(now_ms)
	need_console 'vhostd-guest: tests=' 90 2 "the guest boots again after the reset" || finish
	timing "system_reset until the guest's /init runs again" $(( $(now_ms) - t0 ))
	grep -aq 'VHOSTD-GUEST-RESULT' "$CONSOLE" && fail "a verdict came before the reset: $(console_last VHOSTD-GUEST-RESULT)"

	step "reset 3. The rebooted guest's verified I/O"
	end_guest 120
	guest_progress
	[ "$(grep -ac 'vhostd-guest: tests=' "$CONSOLE")" = 2 ] ||
		fail "the guest booted $(grep -ac 'vhostd-guest: tests=' "$CONSOLE") times, expected 2"
	grep -aq 'BLKCHECK randverify OK' "$CONSOLE" || fail "no verified I/O passed after the reset"
	local stall
	stall=$(grep -aoE 'BLKCHECK randverify OK .*max_lat_ms=[0-9.]+ max_lat_at_s=[0-9.]+' "$CONSOLE" |
		sed 's/.*max_lat_ms=\([0-9.]*\) max_lat_at_s=\([0-9.]*\)/\1 ms (at \2 s into the run)/' | tail -n 1)
	echo "longest single guest I/O after the reset: ${stall:-?}"
	case "${stall%%.*}" in
	[0-9][0-9][0-9][0-9]*) [ "${stall%%.*}" -ge 5000 ] &&
		echo "WARNING: a guest I/O took ${stall} after the reset (a lost notification? or a starved machine)" ;;
	esac
	sh_run "cat $Q_CTL/$NAME/state $Q_CTL/$NAME/stats"
}

# ============================================================================
# huge
# ============================================================================
part_huge() {
	local mem=256 need free total
	step "huge 1. Hugepages for a ${mem}M guest"
	[ "$(awk '/Hugepagesize/ {print $2}' /proc/meminfo)" = 2048 ] ||
		skip "the default hugepage size is not 2 MiB"
	need=$(( mem / 2 + 4 ))
	free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
	if [ "$free" -lt "$need" ]; then
		total=$(cat /proc/sys/vm/nr_hugepages)
		sh_run "echo $(( total + need - free )) > /proc/sys/vm/nr_hugepages"
		[ $RC -eq 0 ] || skip "cannot reserve hugepages: $OUT"
		HP_ADDED=$(( $(cat /proc/sys/vm/nr_hugepages) - total ))
		free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
		[ "$free" -ge "$need" ] || skip "only $free of $need hugepages could be reserved"
	fi
	if ! mountpoint -q /dev/hugepages 2>/dev/null; then
		mkdir -p /dev/hugepages
		sh_run "mount -t hugetlbfs nodev /dev/hugepages"
		[ $RC -eq 0 ] || skip "cannot mount hugetlbfs on /dev/hugepages: $OUT"
		HP_MOUNTED=1
	fi
	sh_run "grep -i huge /proc/meminfo; grep hugetlbfs /proc/mounts"
	local free0
	free0=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)

	step "huge 2. A guest with memory-backend-file,mem-path=/dev/hugepages,share=on does verified I/O"
	controller 64M
	start_guest --socket "$SOCKS/$NAME" --mem "$mem" --hugepages /dev/hugepages --timeout 170 \
		--tests dd,full,rand:8s --size 67108864
	need_console '=== rand' 90 1 "the guest's verified I/O runs" || finish
	free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
	echo "hugepages used while the guest runs: $(( free0 - free )) (HugePages_Free $free0 -> $free)"
	[ $(( free0 - free )) -gt 0 ] || fail "the guest's RAM does not come from hugepages (HugePages_Free did not drop)"
	end_guest 120
	guest_progress
	sh_run "cat $Q_CTL/$NAME/stats"
	[ "$(stat_of errors "$OUT")" = 0 ] || fail "stats: errors='$(stat_of errors "$OUT")'"
}

echo "$TEST_NAME: vhostd=$VHOSTD blkcheck=$BLKCHECK_BIN qemu=$(command -v "${QEMU:-qemu-system-x86_64}")"
printf '$ T=$(mktemp -d); STORE=$T/store; STATE=$T/vhostd.state; echo $T\n%s\n' "$T"
"part_$PART"
if [ -n "$DPID" ]; then
	stop_vhostd
	check_daemon_log
fi
finish
