#!/usr/bin/env bash
# bootstrap-debian.sh SUITE OUT.qcow2 [WORKDIR]
#
# Builds a bootable, cloud-init (NoCloud) enabled Debian qcow2 from the mirror, without booting
# a VM and without loop devices:
#   mmdebstrap (root mode when run as root, else --mode=unshare)  -> root tree
#   customize hook: config files, grub core.img (grub-mkimage from the guest's own grub-pc),
#                   mkfs.ext4 -d <non-recursive bind mount of the tree> into a partition offset
#   sfdisk on the raw file, dd boot.img (440 bytes) + core.img (sector 1..) into the MBR gap
#   qemu-img convert -O qcow2 [-c]
# Progress lines start with "==> ". Env knobs:
#   KILN_KERNEL=linux-image-cloud-amd64|linux-image-amd64  (default cloud)
#   KILN_DISK_SIZE=3G   virtual size of the image (the root partition fills it; cloud-init growpart
#                       grows it further when the overlay is bigger)
#   KILN_COMPRESS=none|zlib|zstd (default zstd: qcow2 compression_type=zstd; needs qemu >= 5.1 readers)
#   KILN_MIRROR=http://deb.debian.org/debian
# dbus is required: without it systemd-logind does not run and the ACPI power button (QMP
# system_powerdown) is ignored.
set -euo pipefail

SELF=$(readlink -f "$0")

# ---------------------------------------------------------------- hook (runs inside mmdebstrap)
if [[ "${1:-}" == "__customize" ]]; then
    ROOT=$2 WORK=$3 UUID=$4 SUITE=$5
    echo "==> configure image"
    # cloud-init: NoCloud only (plus None so a missing seed does not hang the boot)
    cat > "$ROOT/etc/cloud/cloud.cfg.d/01_kiln_datasource.cfg" <<CFG
datasource_list: [ NoCloud, None ]
# Debian's cloud.cfg runs cc_locale with en_US.UTF-8, which is not generated in this image
# (no locales package) -> "update-locale: Error: invalid locale settings" -> status error.
# C.UTF-8 is built into libc.
locale: C.UTF-8
# keep /etc/hosts in step with the hostname from meta-data (else sudo warns "unable to resolve host")
manage_etc_hosts: localhost
CFG
    # hostname, hosts (fstab was written by the essential hook, before the initramfs was built)
    echo debian > "$ROOT/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$ROOT/etc/hosts"
    if [[ $SUITE == bookworm ]]; then
        # networking: ifupdown + cloud-init's eni renderer (writes interfaces.d/50-cloud-init)
        cat > "$ROOT/etc/network/interfaces" <<'CFG'
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
CFG
    else
        # networking: systemd-networkd + resolved, by cloud-init's networkd renderer. Since
        # trixie cloud-init's fallback config asks for DHCPv6 too, which ifupdown's dhclient -6
        # waits on for 5 minutes where no DHCPv6 server answers (QEMU's user network);
        # networkd asks for DHCPv6 only when the router says so.
        cat > "$ROOT/etc/cloud/cloud.cfg.d/02_kiln_network.cfg" <<'CFG'
system_info:
  network:
    renderers: [networkd]
CFG
        chroot "$ROOT" systemctl enable systemd-networkd.service systemd-resolved.service
    fi
    # apt sources with updates and security
    cat > "$ROOT/etc/apt/sources.list" <<CFG
deb http://deb.debian.org/debian $SUITE main
deb http://deb.debian.org/debian $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
CFG
    # GRUB: serial console, short timeout; /etc/default/grub makes a later in-guest update-grub
    # produce an equivalent config
    cat > "$ROOT/etc/default/grub" <<'CFG'
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
CFG
    # later grub-pc upgrades inside the guest reinstall GRUB onto the virtio disk
    echo "grub-pc grub-pc/install_devices multiselect /dev/vda" | chroot "$ROOT" debconf-set-selections
    mkdir -p "$ROOT/boot/grub"
    cp -a "$ROOT/usr/lib/grub/i386-pc" "$ROOT/boot/grub/"
    cat > "$ROOT/boot/grub/grub.cfg" <<CFG
# written by kiln bootstrap-debian.sh; replaced by update-grub inside the guest
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $UUID
menuentry 'Debian GNU/Linux' {
    linux /vmlinuz root=UUID=$UUID ro console=tty0 console=ttyS0,115200n8
    initrd /initrd.img
}
CFG
    # core.img built with the guest's own grub-mkimage; the early config finds /boot/grub by UUID
    cat > "$ROOT/tmp/early.cfg" <<CFG
search.fs_uuid $UUID root
set prefix=(\$root)/boot/grub
CFG
    chroot "$ROOT" grub-mkimage -O i386-pc -o /tmp/core.img -c /tmp/early.cfg \
        -p /boot/grub biosdisk part_msdos ext2 search_fs_uuid
    cp "$ROOT/tmp/core.img" "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/"
    rm -f "$ROOT/tmp/core.img" "$ROOT/tmp/early.cfg"

    echo "==> generalize tree"
    # mmdebstrap blocks service starts while it installs; its blockers must not reach the image
    # (it removes them only after this hook, when the tree is already copied).
    rm -f "$ROOT/usr/sbin/policy-rc.d"
    for ssd in "$ROOT/sbin/start-stop-daemon" "$ROOT/usr/sbin/start-stop-daemon"; do
        if [ -e "$ssd.REAL" ]; then mv -f "$ssd.REAL" "$ssd"; fi
    done
    rm -f "$ROOT"/etc/ssh/ssh_host_*
    : > "$ROOT/etc/machine-id"
    rm -f "$ROOT/var/lib/dbus/machine-id"
    rm -f "$ROOT/etc/resolv.conf"
    if [[ $SUITE != bookworm ]]; then
        ln -s ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
    fi
    rm -rf "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/log/*.log \
           "$ROOT"/var/lib/cloud/* "$ROOT"/tmp/* "$ROOT"/var/tmp/*

    echo "==> mkfs.ext4 -d (root filesystem into partition 1)"
    # /proc, /sys, /dev are still mounted under $ROOT here; a non-recursive bind mount shows
    # only the root tree itself.
    SNAP="$WORK/snap"; mkdir -p "$SNAP"
    mount --bind "$ROOT" "$SNAP"
    rc=0
    mkfs.ext4 -q -F -L root -U "$UUID" -d "$SNAP" -E offset=$((2048*512)) \
        "$WORK/disk.raw" "$(cat "$WORK/part_kib")k" || rc=$?
    umount "$SNAP"; rmdir "$SNAP"
    exit $rc
fi

# ---------------------------------------------------------------- main
usage() { echo "usage: $0 SUITE OUT.qcow2 [WORKDIR]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 3 ]] || usage
SUITE=$1 OUT=$2 WORKDIR=${3:-${TMPDIR:-/var/tmp}}
KERNEL=${KILN_KERNEL:-linux-image-cloud-amd64}
DISK_SIZE=${KILN_DISK_SIZE:-3G}
COMPRESS=${KILN_COMPRESS:-zstd}
MIRROR=${KILN_MIRROR:-http://deb.debian.org/debian}

T0=$(date +%s.%N)
lap() { printf '    (%s: %.1fs)\n' "$1" "$(echo "$(date +%s.%N) - $2" | bc)"; }

WORK=$(mktemp -d "$WORKDIR/kiln-bootstrap.XXXXXX")
chmod 755 "$WORK"   # the unshare-mode namespace root must be able to write disk.raw
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

if [[ $(id -u) -eq 0 ]]; then MODE=root; else MODE=unshare; fi
UUID=$(cat /proc/sys/kernel/random/uuid)

echo "==> partition raw disk ($DISK_SIZE, MBR, one bootable ext4 partition at 1 MiB)"
truncate -s "$DISK_SIZE" "$WORK/disk.raw"
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$WORK/disk.raw"
# partition size in KiB (sfdisk --dump gives sectors)
psec=$(sfdisk --dump "$WORK/disk.raw" | awk -F'size=' '/disk.raw1/ {split($2,a,","); print a[1]+0}')
echo $((psec / 2)) > "$WORK/part_kib"
chmod 666 "$WORK/disk.raw" "$WORK/part_kib"

echo "==> mmdebstrap $SUITE (mode=$MODE, kernel=$KERNEL)"
t=$(date +%s.%N)
PKGS="$KERNEL,grub-pc,cloud-init,cloud-guest-utils,openssh-server,sudo,ca-certificates,curl,qemu-guest-agent,systemd-sysv,dbus"
if [[ $SUITE == bookworm ]]; then PKGS="$PKGS,ifupdown,isc-dhcp-client"; else PKGS="$PKGS,systemd-resolved"; fi
mmdebstrap --mode="$MODE" --variant=important --include="$PKGS" \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --essential-hook="printf 'UUID=%s / ext4 errors=remount-ro,discard 0 1\\n' $UUID > \"\$1/etc/fstab\"" \
    --customize-hook="\"$SELF\" __customize \"\$1\" \"$WORK\" $UUID $SUITE" \
    "$SUITE" /dev/null \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb http://deb.debian.org/debian-security $SUITE-security main" 2>&1 \
  | tee "$WORK/mmdebstrap.log" | grep --line-buffered -E '^(==>|E:|W:)' \
  || { echo "mmdebstrap failed; last lines of its log:" >&2; tail -40 "$WORK/mmdebstrap.log" >&2; exit 1; }
lap mmdebstrap "$t"

echo "==> install GRUB boot.img + core.img into the MBR gap"
[[ -s $WORK/core.img && -s $WORK/boot.img ]] || { echo "core.img missing (hook failed)" >&2; exit 1; }
csz=$(stat -c %s "$WORK/core.img")
(( csz < 2047*512 )) || { echo "core.img too big ($csz)" >&2; exit 1; }
dd if="$WORK/boot.img" of="$WORK/disk.raw" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$WORK/disk.raw" bs=512 seek=1 conv=notrunc status=none

echo "==> qemu-img convert -O qcow2 (compression: $COMPRESS)"
t=$(date +%s.%N)
case $COMPRESS in
    none) copts=() ;;
    zlib) copts=(-c) ;;
    zstd) copts=(-c -o compression_type=zstd) ;;
    *) echo "bad KILN_COMPRESS" >&2; exit 2 ;;
esac
qemu-img convert -f raw -O qcow2 "${copts[@]}" "$WORK/disk.raw" "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
lap convert "$t"
echo "==> done: $OUT ($(du -h --apparent-size "$OUT" | cut -f1), rootfs UUID $UUID)"
lap total "$T0"
