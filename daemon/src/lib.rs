//! labd: the daemon of a FreeBSD-first storage and virtualization appliance for homelabs.
//!
//! # Background
//! labd owns the host: ZFS datasets and snapshots (and, as the product grows, NFS exports,
//! bhyve VMs, snapshot policies). It serves an HTTP/JSON API on a Unix socket; `labctl` is its
//! command line.
//!
//! # Design
//! A request flows one way: [`api`] (parse, peer credentials) → `core` (validate, lock, run
//! as a job) → `host` drivers (argv vectors) → the one command runner → events. ZFS is the
//! database: labd keeps no state that ZFS does not have. See docs/architecture.md.
//!
//! # Current limitations
//! Datasets and snapshots only; exports, VMs, policies and MQTT come with their own features.

pub mod api;
pub mod config;
mod core;
pub mod daemon;
mod events;
mod host;
mod metrics;
mod mqtt;
mod vmstate;
pub mod wire;
