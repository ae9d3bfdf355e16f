#!/bin/bash
# qemu-vhost-user-blk.sh: the QEMU command line equivalent to what Kata runs
# for a container given --device=<store>/block/devices/NAME (a vhostd
# controller).  Prints it; with --run, executes it.
#
# What Kata does: the VM's RAM is a shared memory backend (hugepages with
# enable_hugepages = true), and the device is hot-plugged over QMP:
#   {"execute": "chardev-add", "arguments": {"id": "char-NAME", "backend":
#     {"type": "socket", "data": {"addr": {"type": "unix", "data":
#     {"path": "<store>/block/sockets/NAME"}}, "server": false}}}}
#   {"execute": "device_add", "arguments": {"driver": "vhost-user-blk-pci",
#     "id": "blk-NAME", "chardev": "char-NAME", "bus": ..., "addr": ...}}
# The cold-plugged -chardev/-device pair below is the same device.
#
# usage: qemu-vhost-user-blk.sh [options]
#   --store DIR     vhost-user store (default /var/run/kata-containers/vhost-user)
#   --name NAME     controller (default vhostblk0)
#   --mem MiB       guest memory (default 2048, Kata's default)
#   --smp N         vCPUs (default 1, Kata's default)
#   --hugepages     back the memory with /dev/hugepages (as Kata with
#                   enable_hugepages = true); default: memfd, shared
#   --kernel FILE   guest kernel (default: /boot/vmlinuz-$(uname -r))
#   --initrd FILE   guest initrd (optional)
#   --append ARGS   kernel command line (default "console=ttyS0")
#   --run           run it instead of printing it
set -euo pipefail

STORE=/var/run/kata-containers/vhost-user
NAME=vhostblk0
MEM=2048
SMP=1
HUGE=0
KERNEL=/boot/vmlinuz-$(uname -r)
INITRD=
APPEND="console=ttyS0"
RUN=0

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
	case "$1" in
	--store)     STORE=$2; shift 2 ;;
	--name)      NAME=$2; shift 2 ;;
	--mem)       MEM=$2; shift 2 ;;
	--smp)       SMP=$2; shift 2 ;;
	--hugepages) HUGE=1; shift ;;
	--kernel)    KERNEL=$2; shift 2 ;;
	--initrd)    INITRD=$2; shift 2 ;;
	--append)    APPEND=$2; shift 2 ;;
	--run)       RUN=1; shift ;;
	-h|--help)   usage ;;
	*)           echo "qemu-vhost-user-blk.sh: unknown argument '$1'" >&2; usage ;;
	esac
done

SOCK=$STORE/block/sockets/$NAME
if [ $HUGE = 1 ]; then
	MEMDEV="memory-backend-file,id=dimm1,size=${MEM}M,mem-path=/dev/hugepages,share=on,prealloc=on"
else
	MEMDEV="memory-backend-memfd,id=dimm1,size=${MEM}M,share=on"
fi
ACCEL=tcg
[ -w /dev/kvm ] && ACCEL=kvm

cmd=(qemu-system-x86_64
	-machine q35,accel=$ACCEL -cpu max -smp "$SMP" -m "${MEM}M"
	# vhost-user: the back-end maps guest RAM, so it must be shared memory
	-object "$MEMDEV" -numa node,memdev=dimm1
	# the controller's socket; reconnect=1 rides over a vhostd restart
	-chardev "socket,id=char-$NAME,path=$SOCK,reconnect=1"
	# num-queues defaults to the vCPU count; vhostd serves up to the
	# controller's `queues`
	-device "vhost-user-blk-pci,id=blk-$NAME,chardev=char-$NAME"
	-nodefaults -nographic -serial mon:stdio
	-kernel "$KERNEL" -append "$APPEND")
[ -n "$INITRD" ] && cmd+=(-initrd "$INITRD")

if [ $RUN = 1 ]; then
	[ -S "$SOCK" ] || { echo "no socket at $SOCK: mkdir/configure the controller first" >&2; exit 1; }
	exec "${cmd[@]}"
fi
# One option per line, quoted only where the shell needs it.
out=
for w in "${cmd[@]}"; do
	[[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]] || w=$(printf '%q' "$w")
	if [[ $w == -* ]]; then out+=$' \\\n  '"$w"; else out+=" $w"; fi
done
echo "${out# }"
