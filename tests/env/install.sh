#!/bin/sh
# Install (idempotently) what labd's dev setup and test suite need on Debian 12, and start
# the zfs-fuse daemon if it is not running. Run as root.
#
# Prints "started-zfs-fuse" on stdout when it started zfs-fuse, so callers can stop it again.
set -eu

PACKAGES="zfs-fuse iproute2 shellcheck procps nfs-ganesha nfs-ganesha-vfs libnfs-utils mosquitto mosquitto-clients prometheus"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "installing:$missing" >&2
    apt-get update -qq >&2
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 $missing >&2
fi

# The FreeBSD target is only type-checked; its absence is not an error.
if command -v rustup >/dev/null 2>&1; then
    rustup target add x86_64-unknown-freebsd >/dev/null 2>&1 || true
fi

# zfs-fuse needs /dev/fuse.
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
if ! timeout 10 zpool list >/dev/null 2>&1; then
    # A zfs-fuse that runs but does not answer is wedged: stop it. One that was killed
    # (a machine stopped under it) leaves its pid file behind, and zfs-fuse refuses to
    # start while that file exists, exiting 1 with its reason only in syslog.
    if pgrep -x zfs-fuse >/dev/null 2>&1; then
        echo "zfs-fuse runs but does not answer: restarting it" >&2
        sh "$(dirname "$0")/stop-zfs-fuse.sh"
        pkill -9 -x zfs-fuse 2>/dev/null || true
    fi
    if [ -e /run/zfs-fuse.pid ]; then
        echo "removing the stale /run/zfs-fuse.pid" >&2
        rm -f /run/zfs-fuse.pid
    fi
    zfs-fuse --pidfile /run/zfs-fuse.pid >&2 \
        || { echo "zfs-fuse failed to start (exit $?); see syslog" >&2; exit 1; }
    i=0
    until zpool list >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -lt 50 ] || { echo "zfs-fuse did not come up" >&2; exit 1; }
        sleep 0.1
    done
    echo started-zfs-fuse
fi
