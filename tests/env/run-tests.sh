#!/bin/sh
# The whole test suite, from a fresh Debian 12 machine (as root): install what it needs,
# start zfs-fuse, run formatting, lints, shellcheck, the FreeBSD type-check, unit tests and
# the end-to-end tests, then stop what it started.
set -eu
cd "$(dirname "$0")/../.."

started=$(sh tests/env/install.sh)
cleanup() {
    if [ "$started" = "started-zfs-fuse" ]; then
        sh tests/env/stop-zfs-fuse.sh
    fi
}
trap cleanup EXIT INT TERM

echo "== fmt"
cargo fmt --all --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== shellcheck"
shellcheck -s sh rc.d/labd tests/env/*.sh .ci/run
if rustup target list --installed 2>/dev/null | grep -q x86_64-unknown-freebsd; then
    echo "== cargo check (x86_64-unknown-freebsd)"
    cargo check --workspace --locked --target x86_64-unknown-freebsd
fi
echo "== build"
cargo build --workspace --bins --locked
echo "== test guest"
# The tiny guest the VM tests boot under QEMU (shared/reference/test-guest.md).
LABD_TEST_GUEST=$(sh tests/env/build-test-guest.sh /var/cache/labd-test-guest)
export LABD_TEST_GUEST
echo "== tests"
# A wedged zfs-fuse must fail the run, not hang it.
timeout 1500 cargo test --workspace --locked
