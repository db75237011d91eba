//! End-to-end tests: the real labd and labctl on real zfs-fuse pools, one pool per test.
//! Outcomes are checked with `zfs` itself. Run as root via `tests/env/run-tests.sh`.

// Integration tests live at the top of their own crate, not in a `mod tests`.
#![allow(clippy::tests_outside_test_module)]

mod api_tls;
mod bhyve;
mod daemon;
mod datasets;
mod exports;
mod guest;
mod metrics;
mod mqtt;
mod policies;
mod refusals;
mod switches;
mod templates;
mod vm_monitoring;
mod vms;
