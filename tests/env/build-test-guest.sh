#!/bin/sh
# Build labd's tiny test guest (shared/reference/test-guest.md) into a cache directory outside
# the repository: a Debian kernel (`vmlinuz`) and a busybox initramfs (`initrd.gz`) whose /init
# mounts proc, sysfs and devtmpfs, loads evdev and the ACPI button driver (and what they
# depend on, from each module's modinfo), prints
# "LABD-TEST-GUEST up" on the console and powers off (`poweroff -f`) when the ACPI power button
# is pressed (QMP `system_powerdown`). vm-templates/tiny.toml boots it.
#
# Usage (as root): tests/env/build-test-guest.sh [CACHE_DIR]   (default /var/cache/labd-test-guest)
#
# Idempotent: does nothing when CACHE_DIR/vmlinuz and CACHE_DIR/initrd.gz exist and are newer
# than this script. Installs busybox-static, cpio and qemu-system-x86 with apt when missing.
# Prints the cache directory on stdout; progress goes to stderr.
set -eu

CACHE=${1:-/var/cache/labd-test-guest}
BANNER="LABD-TEST-GUEST up"
PACKAGES="busybox-static cpio qemu-system-x86"
# Modules the power button needs (test-guest.md "ACPI shutdown"), and those that read a
# cloud-init seed on a virtio disk; their dependencies are added from each module's
# `depends=` modinfo field.
MODULES="evdev button virtio_pci virtio_blk isofs"

log() { echo "build-test-guest: $*" >&2; }
die() { log "$*"; exit 1; }

fresh() {
    # find prints the file only when it is newer than the script.
    [ -n "$(find "$1" -newer "$0" 2>/dev/null)" ]
}

if [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd.gz" ] \
    && fresh "$CACHE/vmlinuz" && fresh "$CACHE/initrd.gz"; then
    log "up to date in $CACHE"
    echo "$CACHE"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "run as root (apt-get install, dpkg -x)"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 $missing >&2; then
        apt-get update -qq -o DPkg::Lock::Timeout=600 >&2
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            -o DPkg::Lock::Timeout=600 $missing >&2
    fi
fi

work=$(mktemp -d /tmp/labd-test-guest.XXXXXX)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

# The kernel package the meta package currently names (test-guest.md "Kernel"); the cloud
# flavour first (smaller), the generic one if the cloud one lacks a module.
kernel_pkg() {
    apt-cache depends "$1" 2>/dev/null \
        | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'
}

# The path (relative to lib/modules/VERSION) of module $2 ('-' and '_' are the same).
module_path() {
    find "$1/kernel" -type f \( -name "$2.ko" -o -name "$2.ko.*" \
        -o -name "$(echo "$2" | tr _ -).ko" -o -name "$(echo "$2" | tr _ -).ko.*" \
        -o -name "$(echo "$2" | tr - _).ko" -o -name "$(echo "$2" | tr - _).ko.*" \) \
        | head -n 1 | sed "s|^$1/||"
}

# A module's `depends=` field from its .modinfo section (NUL-separated strings). The .deb
# ships no modules.dep (depmod writes it at install time), so this stands in for it.
module_depends() {
    case "$1" in
        *.ko) cat "$1" ;;
        *.ko.xz) xz -dc "$1" ;;
        *.ko.zst) zstd -qdc "$1" ;;
    esac | tr '\000' '\n' | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}

# Print the paths of module $2 and everything it needs, dependencies first.
resolve() {
    rel=$(module_path "$1" "$2")
    [ -n "$rel" ] || return 0
    for dep in $(module_depends "$1/$rel"); do
        resolve "$1" "$dep"
    done
    rel=$(module_path "$1" "$2")
    echo "$rel"
}

kdir=""
for meta in linux-image-cloud-amd64 linux-image-amd64; do
    pkg=$(kernel_pkg "$meta")
    [ -n "$pkg" ] || { log "apt-cache names no kernel for $meta"; continue; }
    log "downloading $pkg"
    rm -rf "$work/deb" "$work/root"
    mkdir -p "$work/deb" "$work/root"
    (cd "$work/deb" && apt-get download -q "$pkg" >&2 2>/dev/null) \
        || (cd "$work/deb" && apt-get download "$pkg" >&2) \
        || { log "cannot download $pkg"; continue; }
    dpkg -x "$work"/deb/*.deb "$work/root"
    kdir=$(find "$work/root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    if [ -z "$kdir" ] || [ ! -d "$kdir/kernel" ]; then
        log "$pkg has no modules"
        kdir=""
        continue
    fi
    ok=yes
    for m in $MODULES; do
        [ -n "$(resolve "$kdir" "$m")" ] || { log "$pkg lacks $m.ko"; ok=no; }
    done
    [ "$ok" = yes ] && break
    kdir=""
done
[ -n "$kdir" ] || die "no Debian kernel package with the modules: $MODULES"
version=$(basename "$kdir")
vmlinuz=$(find "$work/root/boot" -name 'vmlinuz-*' | head -n 1)
[ -n "$vmlinuz" ] || die "no boot/vmlinuz-* in the kernel package"

# The initramfs tree (test-guest.md "Initramfs").
ird="$work/initramfs"
mkdir -p "$ird/bin" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/run" "$ird/lib/modules"
cp /bin/busybox "$ird/bin/busybox"
order=""
i=0
for m in $MODULES; do
    for rel in $(resolve "$kdir" "$m"); do
        base=$(basename "$rel")
        base=${base%.xz}
        base=${base%.zst}
        case " $order " in *" $base "*) continue ;; esac
        i=$((i + 1))
        dest="$ird/lib/modules/$(printf '%02d' "$i")-$base"
        case "$rel" in
            *.ko) cp "$kdir/$rel" "$dest" ;;
            *.ko.xz) xz -dc "$kdir/$rel" >"$dest" ;;
            *.ko.zst) zstd -qdc "$kdir/$rel" >"$dest" ;;
            *) die "unknown module format: $rel" ;;
        esac
        order="$order $base"
    done
done
log "kernel $version, modules:$order"

# /init. It must never exit (the kernel panics when init exits). evdev's read() refuses a
# buffer smaller than one event (EINVAL), so each watcher reads a whole block, not one byte.
# evdev queues events only for readers that have the device open, so the banner comes after
# every watcher has opened its device ("armed"): a power-button press sent as soon as the
# banner shows is never lost.
cat >"$ird/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
for m in /lib/modules/*.ko; do
    insmod "\$m" || echo "insmod \$m failed"
done
n=0
for e in /dev/input/event*; do
    [ -e "\$e" ] || continue
    n=\$((n + 1))
    (exec 3<"\$e"; : >"/run/armed.\$n"; dd bs=4096 count=1 <&3 >/dev/null 2>&1; echo "power button: powering off"; poweroff -f) &
done
k=1
while [ "\$k" -le "\$n" ]; do
    while [ ! -e "/run/armed.\$k" ]; do usleep 10000; done
    k=\$((k + 1))
done
# A cloud-init seed attached as a virtio disk (the only disk of a VM made from a template
# with [cloud_init]): print its label and files, so tests see what a real kernel reads.
# (virtio_blk probes the disks that exist while insmod runs: no waiting.)
if [ -b /dev/vda ]; then
    # The ISO 9660 volume identifier: 32 bytes at 0x8028, in the primary volume descriptor.
    echo "seed: volume id \$(dd if=/dev/vda bs=1 skip=32808 count=32 2>/dev/null)"
    mkdir -p /seed
    if mount -t iso9660 -o ro /dev/vda /seed; then
        for f in meta-data network-config; do
            sed "s/^/seed \$f: /" "/seed/\$f"
        done
        umount /seed
    fi
fi
echo "$BANNER"
# Console input (labctl vm console): echo lines back; "reboot" and "poweroff" act from inside
# the guest, so tests can tell a guest's own reboot from its poweroff.
while read -r line; do
    case "\$line" in
        reboot) echo "guest: rebooting"; reboot -f ;;
        poweroff) echo "guest: powering off"; poweroff -f ;;
        *) echo "guest got: \$line" ;;
    esac
done
while :; do sleep 3600; done
EOF
chmod 755 "$ird/init"

mkdir -p "$CACHE"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/initrd.gz"
[ -s "$work/initrd.gz" ] || die "the initramfs is empty"
cp "$vmlinuz" "$work/vmlinuz"
# Replace both files at once-ish: rename is atomic per file.
mv "$work/vmlinuz" "$CACHE/vmlinuz"
mv "$work/initrd.gz" "$CACHE/initrd.gz"
echo "$version" >"$CACHE/kernel-version"
log "built $CACHE/vmlinuz and $CACHE/initrd.gz (kernel $version)"
echo "$CACHE"
