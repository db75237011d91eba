#!/bin/sh
# Stop the zfs-fuse daemon that install.sh started (pools stay on their image files). A
# zfs-fuse that does not stop within 10 s is killed and its mounts are detached.
set -u
[ -f /run/zfs-fuse.pid ] || exit 0
pid=$(cat /run/zfs-fuse.pid)
kill "$pid" 2>/dev/null || true
i=0
while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do
    i=$((i + 1))
    sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
    echo "zfs-fuse did not stop: killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
    mount | awk '$5 == "fuse.zfs" { print $3 }' | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
fi
rm -f /run/zfs-fuse.pid
