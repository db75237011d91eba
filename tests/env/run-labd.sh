#!/bin/sh
# Set up and run labd on a fresh Debian 12 machine (as root), on an embedded default: a
# file-backed zfs-fuse pool under /var/lib/labd and the Linux drivers. labd serves
# /var/run/labd.sock until Ctrl-C; labctl then works from a second terminal.
set -eu
cd "$(dirname "$0")/../.."

STATE=/var/lib/labd
POOL=labd
IMAGE=$STATE/pool.img
CONFIG=$STATE/labd.toml

started=$(sh tests/env/install.sh)
cleanup() {
    if [ "$started" = "started-zfs-fuse" ]; then
        sh tests/env/stop-zfs-fuse.sh
    fi
}
trap cleanup EXIT INT TERM

cargo build --release --locked --bins
install -m 755 target/release/labctl /usr/local/bin/labctl

mkdir -p "$STATE"
if ! zpool list -H -o name "$POOL" >/dev/null 2>&1; then
    if ! zpool import -d "$STATE" "$POOL" >/dev/null 2>&1; then
        [ -f "$IMAGE" ] || truncate -s 4G "$IMAGE"
        zpool create -m "$STATE/mnt" "$POOL" "$IMAGE"
    fi
fi
zfs list -H -o name "$POOL/data" >/dev/null 2>&1 || zfs create "$POOL/data"

if [ ! -f "$CONFIG" ]; then
    cat > "$CONFIG" <<'TOML'
# labd's development configuration, written by tests/env/run-labd.sh.
[api]
socket = "/var/run/labd.sock"

[zfs]
root = "labd/data"
TOML
fi

echo "labd: serving /var/run/labd.sock with root labd/data; try 'labctl status' in another terminal" >&2
target/release/labd --config "$CONFIG"
