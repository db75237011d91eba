#!/bin/sh
# Install (idempotently) what labd's dev setup and test suite need on Debian 12, and start
# the zfs-fuse daemon if it is not running. Run as root.
#
# Prints "started-zfs-fuse" on stdout when it started zfs-fuse, so callers can stop it again.
set -eu

# The cloud-init seed tests read seed.iso with isoinfo (genisoimage) and blkid, run NetBSD's
# makefs (FreeBSD's ancestor), parse with cloud-init's YAML library (python3-yaml) and make
# host keys with ssh-keygen (openssh-client). The guest provisioning tests run a throwaway
# sshd (openssh-server) and dockerd (docker.io) with a busybox image (busybox-static).
PACKAGES="zfs-fuse iproute2 shellcheck procps qemu-utils nfs-ganesha nfs-ganesha-vfs libnfs-utils mosquitto mosquitto-clients prometheus genisoimage makefs python3-yaml openssh-client openssh-server docker.io busybox-static"

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

# Compose v2 for the guest-provisioning tests. Debian 12 has only the Python compose v1;
# Debian 13 packages v2 as a CLI plugin that depends on nothing but libc. Fetch that .deb
# with a private, throwaway apt state (the machine's own sources and lists are untouched),
# from the mirror this machine already uses, verified by the archive keyring, and install
# only the plugin binary. Skipped once the plugin is there.
COMPOSE_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose
if [ ! -x "$COMPOSE_PLUGIN" ]; then
    echo "installing compose v2 from Debian 13's docker-compose package" >&2
    mirror=$(apt-cache policy | awk '$3 == "bookworm/main" && $2 ~ /^https?:/ { print $2; exit }')
    [ -n "$mirror" ] || { echo "no Debian mirror in apt's sources" >&2; exit 1; }
    tmp=$(mktemp -d)
    mkdir -p "$tmp/lists/partial" "$tmp/deb"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" \
        >"$tmp/sources.list"
    set -- -o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$tmp/lists" -o Dir::Cache::archives="$tmp/deb" \
        -o APT::Sandbox::User=root
    apt-get -qq "$@" update >&2
    (cd "$tmp/deb" && apt-get -qq "$@" download docker-compose >&2)
    dpkg-deb -x "$tmp"/deb/docker-compose_*.deb "$tmp/x"
    install -D -m 755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_PLUGIN"
    rm -rf "$tmp"
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
