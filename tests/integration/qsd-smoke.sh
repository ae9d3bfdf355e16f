#!/bin/sh
# Check fakefe itself against a reference back-end: qemu-storage-daemon's
# vhost-user-blk export.  Usage: qsd-smoke.sh PATH/TO/fakefe-smoke
# Exit 77 (meson: skipped) when qemu-storage-daemon is not installed.
smoke=$1
qsd=$(command -v qemu-storage-daemon) || { echo "no qemu-storage-daemon"; exit 77; }
dir=$(mktemp -d /tmp/fakefe-qsd.XXXXXX) || exit 1
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT INT TERM

truncate -s 64M "$dir/disk.img" || exit 1
"$qsd" --blockdev driver=file,node-name=f,filename="$dir/disk.img" \
	--export type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path="$dir/qsd.sock",writable=on,num-queues=4 \
	>"$dir/qsd.log" 2>&1 &
pid=$!
i=0
while [ ! -S "$dir/qsd.sock" ]; do
	i=$((i + 1))
	if [ $i -gt 100 ] || ! kill -0 "$pid" 2>/dev/null; then
		echo "qemu-storage-daemon did not start:"; cat "$dir/qsd.log"; exit 77
	fi
	sleep 0.05
done

rc=0
for args in "-q 4" "-r 2 -q 2" "-r 3 -e" "-r 8 -q 4 -e -n 1024" "-q 1 -n 256"; do
	echo "== fakefe-smoke $args"
	# shellcheck disable=SC2086
	timeout 60 "$smoke" "$dir/qsd.sock" $args || rc=1
	kill -0 "$pid" 2>/dev/null || { echo "qemu-storage-daemon died"; cat "$dir/qsd.log"; exit 1; }
done
exit $rc
