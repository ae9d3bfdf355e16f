#!/bin/sh
# Install what vhostd needs to build, run and test on Debian 12 (as root).
# Build: meson, ninja, libfuse3, liburing, libudev, criterion, librbd (the
# RBD backend; without it rbd backings are refused), and gcc's
# ThreadSanitizer runtime (libtsan2, for the TSan build of run-all.sh).
# Tests: QEMU (the real front-end and qemu-storage-daemon for comparisons),
# a Debian cloud kernel and busybox for the test guest, clang for fuzzing,
# jq for the benchmark scripts; a throwaway Ceph cluster for the RBD backend's
# tests (contrib/ceph-test-cluster.sh: ceph-mon, ceph-osd, ceph-common) and
# QEMU's rbd block driver (qemu-block-extra) for the comparisons.
set -eu
if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: run as root (apt-get)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
pkgs="build-essential meson ninja-build pkg-config libfuse3-dev fuse3 liburing-dev
      libudev-dev libcriterion-dev libtsan2 librbd-dev librados-dev"
if [ "${1:-}" != "--build-only" ]; then
	pkgs="$pkgs qemu-system-x86 qemu-utils linux-image-cloud-amd64 busybox-static
	      cpio kmod clang libclang-rt-dev python3 util-linux e2fsprogs jq
	      ceph-mon ceph-osd ceph-common qemu-block-extra iproute2"
fi
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi
