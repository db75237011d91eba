#!/bin/sh
# Set up and run labd on a fresh Debian 12 machine (as root), on an embedded default: a
# file-backed zfs-fuse pool under /var/lib/labd, a `production` snapshot policy, NFS exports
# served by nfs-ganesha (NFSv4 on 127.0.0.1:2049), and VMs under QEMU (software emulation)
# with the tiny test guest built into /var/cache/labd-test-guest. labd serves
# /var/run/labd.sock until Ctrl-C (which also stops its VMs); labctl then works from a second
# terminal.
set -eu
cd "$(dirname "$0")/../.."

STATE=/var/lib/labd
POOL=labd
IMAGE=$STATE/pool.img
CONFIG=$STATE/labd.toml
GANESHA=$STATE/ganesha

started=$(sh tests/env/install.sh)
cleanup() {
    if [ -f "$GANESHA/ganesha.pid" ]; then
        kill "$(cat "$GANESHA/ganesha.pid")" 2>/dev/null || true
        rm -f "$GANESHA/ganesha.pid"
    fi
    if [ "$started" = "started-zfs-fuse" ]; then
        sh tests/env/stop-zfs-fuse.sh
    fi
}
trap cleanup EXIT INT TERM

cargo build --release --locked --bins
install -m 755 target/release/labctl /usr/local/bin/labctl
# The tiny guest the `tiny` template boots (a Debian kernel and a busybox initramfs).
GUEST=$(sh tests/env/build-test-guest.sh /var/cache/labd-test-guest)

mkdir -p "$STATE" "$STATE/images"
if ! zpool list -H -o name "$POOL" >/dev/null 2>&1; then
    if ! zpool import -d "$STATE" "$POOL" >/dev/null 2>&1; then
        [ -f "$IMAGE" ] || truncate -s 4G "$IMAGE"
        zpool create -m "$STATE/mnt" "$POOL" "$IMAGE"
    fi
fi
zfs list -H -o name "$POOL/data" >/dev/null 2>&1 || zfs create "$POOL/data"

if [ ! -f "$CONFIG" ]; then
    cat > "$CONFIG" <<TOML
# labd's development configuration, written by tests/env/run-labd.sh (edit freely: it is
# only written when missing).
[api]
socket = "/var/run/labd.sock"

[zfs]
root = "labd/data"

[policies.production]
hourly = 24
daily = 30
monthly = 12
min_keep = 3

[exports]
driver = "ganesha"
dir = "$STATE/exports.d"
file = "$GANESHA/exports.conf"
pidfile = "$GANESHA/ganesha.pid"

[vms]
driver = "qemu"
# Software emulation: works everywhere (use "auto" where KVM guests run).
accel = "tcg"
kernel_dir = "$GUEST"
images_dir = "$STATE/images"
TOML
fi

# nfs-ganesha, NFSv4 only (no rpcbind), serving the exports labd renders.
mkdir -p "$GANESHA/recovery"
[ -f "$GANESHA/exports.conf" ] || : > "$GANESHA/exports.conf"
cat > "$GANESHA/ganesha.conf" <<CONF
NFS_CORE_PARAM { Protocols = 4; Bind_addr = 127.0.0.1; NFS_Port = 2049; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }
NFSv4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = "$GANESHA/recovery"; Only_Numeric_Owners = true; }
%include "$GANESHA/exports.conf"
CONF
ganesha.nfsd -f "$GANESHA/ganesha.conf" -L "$GANESHA/ganesha.log" -p "$GANESHA/ganesha.pid" \
    || echo "nfs-ganesha did not start (see $GANESHA/ganesha.log): exports cannot be applied" >&2

echo "labd: serving /var/run/labd.sock with root labd/data; try 'labctl status' in another terminal" >&2
target/release/labd --config "$CONFIG"
