#!/bin/bash
# quickstart.sh: install the build dependencies (Debian 12), build vhostd and
# start it in the background on the default store, then show how to make a
# first controller.  Run as root from anywhere in the tree.
#
# usage: ./contrib/quickstart.sh [--store DIR] [--foreground]
#   (as root; a user who is not root is sent through sudo if it is installed)
#   --store DIR     store to serve (default /var/run/kata-containers/vhost-user)
#   --foreground    run vhostd in this terminal instead (Ctrl-C stops it)
# The daemon's log goes to /var/log/vhostd.log; stop it with
# `kill $(cat /run/vhostd.pid)`.
set -euo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."

STORE=/var/run/kata-containers/vhost-user
FG=0
while [ $# -gt 0 ]; do
	case "$1" in
	--store)      STORE=$2; shift 2 ;;
	--foreground) FG=1; shift ;;
	-h|--help)    sed -n '2,/^set -euo/p' "$SELF" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*)            echo "quickstart: unknown argument '$1'" >&2; exit 2 ;;
	esac
done
if [ "$(id -u)" != 0 ]; then
	command -v sudo >/dev/null && exec sudo "$SELF" "$@"
	echo "quickstart: run as root (sudo is not installed)" >&2
	exit 1
fi

echo "== installing build dependencies"
./contrib/install-deps.sh --build-only
echo "== building"
[ -f build/build.ninja ] || meson setup build
ninja -C build

CTL=$STORE/block/ctl
if grep -q vhostd "$CTL/.version" 2>/dev/null; then
	echo "== a vhostd already serves $STORE ($(cat "$CTL/.version")); not starting another"
	exit 0
fi
if [ $FG = 1 ]; then
	echo "== starting vhostd in the foreground on $STORE (Ctrl-C stops it)"
	exec build/vhostd --store "$STORE"
fi
echo "== starting vhostd on $STORE (log: /var/log/vhostd.log)"
setsid build/vhostd --store "$STORE" >>/var/log/vhostd.log 2>&1 < /dev/null &
echo $! > /run/vhostd.pid
for _ in $(seq 100); do
	grep -q vhostd "$CTL/.version" 2>/dev/null && break
	if ! kill -0 "$(cat /run/vhostd.pid)" 2>/dev/null; then
		echo "quickstart: vhostd exited; the end of its log:" >&2
		tail -5 /var/log/vhostd.log >&2
		exit 1
	fi
	sleep 0.1
done
grep -q vhostd "$CTL/.version" 2>/dev/null || { echo "quickstart: vhostd did not come up" >&2; exit 1; }
cat <<MSG
== vhostd $(cat "$CTL/.version" | cut -d' ' -f2) is running (pid $(cat /run/vhostd.pid)), control fs at $CTL
A first controller, as in the Kata guide:
  mkdir $CTL/vhostblk0
  echo "size=64M block_size=4096" > $CTL/vhostblk0/config
  ls -l $STORE/block/devices $STORE/block/sockets
Stop it with: kill \$(cat /run/vhostd.pid)
MSG
