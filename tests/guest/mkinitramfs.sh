#!/bin/bash
# mkinitramfs.sh OUT_DIR BLKCHECK_BINARY
#
# Builds the initramfs of the vhostd guest test into OUT_DIR:
#   OUT_DIR/initramfs.cpio.gz   busybox-static, the virtio-pci/virtio-blk
#                               modules (+ dependencies), /init, blkcheck
#   OUT_DIR/vmlinuz             symlink to the guest kernel
#   OUT_DIR/key                 cache key of the current build
# Nothing is rebuilt when the inputs (kernel, modules, busybox, init,
# blkcheck, this script) are unchanged.
#
# Environment overrides:
#   VHOSTD_GUEST_KERNEL   kernel image (default: newest /boot/vmlinuz-*-cloud-amd64)
#   VHOSTD_GUEST_MODDIR   its modules directory (default: /lib/modules/<version>)
#   VHOSTD_GUEST_BUSYBOX  static busybox (default: /bin/busybox, Debian busybox-static)
#
# Exit status: 0 ok, 77 a required host package is missing, 1 other error.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
INIT_SCRIPT=$HERE/init
MODULES_WANTED=(virtio_pci virtio_blk)

skip() { echo "mkinitramfs: SKIP: $*" >&2; exit 77; }
die() { echo "mkinitramfs: error: $*" >&2; exit 1; }

[ $# -eq 2 ] || { echo "usage: $0 OUT_DIR BLKCHECK_BINARY" >&2; exit 2; }
OUT=$1
BLKCHECK=$2
[ -x "$BLKCHECK" ] || die "blkcheck binary '$BLKCHECK' not found or not executable"
[ -f "$INIT_SCRIPT" ] || die "missing $INIT_SCRIPT"

# --- inputs -------------------------------------------------------------------
KERNEL=${VHOSTD_GUEST_KERNEL:-}
if [ -z "$KERNEL" ]; then
	KERNEL=$(ls -1 /boot/vmlinuz-*-cloud-amd64 2>/dev/null | sort -V | tail -n 1 || true)
	[ -n "$KERNEL" ] || skip "no guest kernel: /boot/vmlinuz-*-cloud-amd64 not found (apt-get install linux-image-cloud-amd64)"
fi
[ -r "$KERNEL" ] || skip "guest kernel $KERNEL is not readable"
KVER=${KERNEL##*/vmlinuz-}
MODDIR=${VHOSTD_GUEST_MODDIR:-/lib/modules/$KVER}
[ -r "$MODDIR/modules.dep" ] || skip "no modules for kernel $KVER ($MODDIR/modules.dep missing)"

BUSYBOX=${VHOSTD_GUEST_BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || skip "busybox not found at $BUSYBOX (apt-get install busybox-static)"
if command -v readelf >/dev/null 2>&1; then
	if readelf -l "$BUSYBOX" 2>/dev/null | grep -q 'Requesting program interpreter'; then
		skip "$BUSYBOX is dynamically linked; the guest needs a static one (apt-get install busybox-static)"
	fi
elif LC_ALL=C grep -q 'ld-linux' "$BUSYBOX"; then
	skip "$BUSYBOX looks dynamically linked; the guest needs a static one (apt-get install busybox-static)"
fi
command -v cpio >/dev/null 2>&1 || skip "cpio not found (apt-get install cpio)"
command -v gzip >/dev/null 2>&1 || skip "gzip not found"

# --- module dependencies (modules.dep) ------------------------------------------
declare -A DEPS=() SEEN=()
while IFS= read -r line; do
	DEPS[${line%%:*}]=${line#*:}
done < "$MODDIR/modules.dep"

# path of a module (relative to MODDIR) by name; '-' and '_' are equivalent
mod_path() {
	local want=${1//-/_} p b
	for p in "${!DEPS[@]}"; do
		b=${p##*/}
		b=${b%%.ko*}
		[ "${b//-/_}" = "$want" ] && { echo "$p"; return 0; }
	done
	return 1
}

ORDER=()
add_path() {
	local p=$1 d
	[ -n "${SEEN[$p]:-}" ] && return 0
	SEEN[$p]=1
	for d in ${DEPS[$p]:-}; do
		add_path "$d"
	done
	ORDER+=("$p")
}

for m in "${MODULES_WANTED[@]}"; do
	if p=$(mod_path "$m"); then
		add_path "$p"
	elif grep -qE "/${m//_/[-_]}\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then
		: # built into the kernel
	else
		skip "kernel $KVER has neither a module nor built-in support for $m"
	fi
done

decompressor() {
	case "$1" in
	*.ko) echo cat ;;
	*.ko.xz)
		if command -v xz >/dev/null 2>&1; then echo "xz -dc"
		else echo "$BUSYBOX xz -dc"; fi ;;
	*.ko.gz) echo "gzip -dc" ;;
	*.ko.zst)
		command -v zstd >/dev/null 2>&1 || skip "modules are zstd-compressed and zstd is missing (apt-get install zstd)"
		echo "zstd -dc" ;;
	*) die "unknown module format: $1" ;;
	esac
}

# --- cache key ------------------------------------------------------------------
key_input() {
	echo "kernel $KERNEL $(stat -c '%s %Y' "$KERNEL")"
	echo "modules ${ORDER[*]:-}"
	local p
	for p in "${ORDER[@]}"; do
		[ -f "$MODDIR/$p" ] || die "module file $MODDIR/$p missing"
		stat -c "%n %s %Y" "$MODDIR/$p"
	done
	sha256sum "$BUSYBOX" "$INIT_SCRIPT" "$BLKCHECK" "${BASH_SOURCE[0]}" | cut -d' ' -f1
}
KEY=$(key_input | sha256sum | cut -d' ' -f1)

mkdir -p "$OUT"
exec 9>"$OUT/.lock"
if command -v flock >/dev/null 2>&1; then
	flock 9
fi

if [ -f "$OUT/key" ] && [ "$(cat "$OUT/key")" = "$KEY" ] &&
   [ -s "$OUT/initramfs.cpio.gz" ] && [ -e "$OUT/vmlinuz" ]; then
	exit 0
fi

# --- build ----------------------------------------------------------------------
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/vhostd-initramfs.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
mkdir -p "$ROOT"/{bin,sbin,dev,proc,sys,tmp,etc,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
cp "$BLKCHECK" "$ROOT/bin/blkcheck"
cp "$INIT_SCRIPT" "$ROOT/init"
chmod 0755 "$ROOT/init" "$ROOT/bin/busybox" "$ROOT/bin/blkcheck"
ln -s busybox "$ROOT/bin/sh"
: > "$ROOT/etc/modules.order"
for p in "${ORDER[@]}"; do
	name=${p##*/}
	name=${name%%.ko*}.ko
	$(decompressor "$p") "$MODDIR/$p" > "$ROOT/lib/modules/$name"
	echo "$name" >> "$ROOT/etc/modules.order"
done

# An uncompressed first archive holding /dev/console, so that the kernel can
# give /init its stdio before devtmpfs is mounted (creating the node with
# mknod would need root).  newc format, written by hand.
cpio_entry() { # NAME MODE(octal) RDEV_MAJOR RDEV_MINOR INO
	local name=$1 mode=$((8#$2)) namesize=$((${#1} + 1)) pad
	printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X' \
		"$5" "$mode" 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0
	printf '%s\0' "$name"
	pad=$(( (4 - (110 + namesize) % 4) % 4 ))
	head -c "$pad" /dev/zero
}
{
	cpio_entry dev 40755 0 0 1
	cpio_entry dev/console 20600 5 1 2
	cpio_entry TRAILER!!! 0 0 0 0
	head -c 512 /dev/zero   # harmless padding; the kernel skips zeroes
} > "$STAGE/console.cpio"

(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) |
	gzip -6 -n > "$STAGE/main.cpio.gz"
cat "$STAGE/console.cpio" "$STAGE/main.cpio.gz" > "$STAGE/initramfs.cpio.gz"

cp "$STAGE/initramfs.cpio.gz" "$OUT/.initramfs.cpio.gz.tmp"
mv -f "$OUT/.initramfs.cpio.gz.tmp" "$OUT/initramfs.cpio.gz"
ln -sfn "$KERNEL" "$OUT/vmlinuz"
echo "$KEY" > "$OUT/key"
echo "mkinitramfs: built $OUT/initramfs.cpio.gz (kernel $KVER, modules: ${ORDER[*]:-none})" >&2
