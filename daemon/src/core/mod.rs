//! The core: validated requests become jobs that drive the host drivers, under the rules
//! (ownership, destroy protections, one lock per resource) described in
//! docs/architecture.md. Nothing here knows about HTTP.

pub mod cloudinit;
pub mod console;
mod datasets;
pub mod error;
pub mod exports;
mod hypervisor;
pub mod jobs;
mod locks;
pub mod names;
mod nfs;
mod policy;
pub mod props;
mod templates;
mod vmclone;
mod vms;
// Only templates and previews use it so far; the VM feature (issue 3) wires the rest.
pub mod retention;
pub mod schedule;
pub mod supervise;
pub mod switches;
#[allow(dead_code)]
pub mod vmspec;

use std::sync::{Arc, RwLock};

pub use error::{Error, Refusal};

use crate::config::Config;
use crate::events::EventBus;
use crate::host::zfs::{Flavor, Zfs, ZfsErrorKind};
use crate::wire::{DriverInfo, SystemInfo};

/// The configuration in force and the drivers built from it; replaced whole on reload.
#[derive(Debug)]
pub struct Host {
    /// Validated configuration.
    pub config: Config,
    /// ZFS driver.
    pub zfs: Zfs,
    /// Names of the pools imported when the host was built: a name starting with one of them
    /// is a full name outside the root, not a short name.
    pub pools: Vec<String>,
}

/// Why labd cannot start (or reload) with a configuration.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The zfs programs could not be probed.
    #[error("cannot use the zfs commands")]
    Zfs(#[source] crate::host::zfs::ZfsError),
    /// The root dataset is missing.
    #[error("root dataset '{0}' (zfs.root) does not exist: create it with `zfs create {0}`")]
    NoRoot(String),
}

impl Host {
    /// Probe the drivers for `config` and check the root dataset exists.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        let zfs = Zfs::probe(
            &config.zfs.zfs,
            &config.zfs.zpool,
            config.zfs.command_timeout,
        )
        .await
        .map_err(StartError::Zfs)?;
        match zfs.get_props(&config.zfs.root, "type", false).await {
            Ok(_) => {}
            Err(e) if e.kind() == Some(ZfsErrorKind::NotFound) => {
                return Err(StartError::NoRoot(config.zfs.root.to_string()));
            }
            Err(e) => return Err(StartError::Zfs(e)),
        }
        let pools = zfs
            .pools()
            .await
            .map_err(StartError::Zfs)?
            .into_iter()
            .map(|p| p.name)
            .collect();
        Ok(Self { config, zfs, pools })
    }
}

/// labd's state: the host in force, the jobs and the event bus.
#[derive(Debug)]
pub struct Core {
    host: RwLock<Arc<Host>>,
    /// Job registry.
    pub jobs: jobs::Jobs,
    /// Event bus.
    pub events: EventBus,
    /// Prometheus metrics.
    pub metrics: crate::metrics::Metrics,
    policy_state: std::sync::Mutex<policy::PolicyState>,
    /// The VMs labd runs (in memory only).
    pub vms: Arc<supervise::Supervisor>,
    /// Virtual switches and the taps of VMs (`switches.rs`).
    pub switches: switches::Switches,
}

impl Core {
    /// A core over a probed host.
    pub fn new(host: Host) -> Self {
        let events = EventBus::new();
        Self {
            host: RwLock::new(Arc::new(host)),
            jobs: jobs::Jobs::new(events.clone()),
            events,
            metrics: crate::metrics::Metrics::default(),
            policy_state: std::sync::Mutex::default(),
            vms: Arc::default(),
            switches: switches::Switches::for_host(),
        }
    }

    /// The host in force now. Jobs keep the one they started with.
    pub fn host(&self) -> Arc<Host> {
        Arc::clone(
            &self
                .host
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Put a new host (from a reloaded configuration) in force.
    pub fn replace_host(&self, host: Host) {
        *self
            .host
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(host);
    }

    /// `GET /v1`.
    pub fn system_info(&self) -> SystemInfo {
        let host = self.host();
        let zfs_name = match host.zfs.flavor() {
            Flavor::OpenZfs => "openzfs",
            Flavor::Legacy => "zfs-legacy",
        };
        SystemInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            api_version: crate::wire::API_VERSION.to_owned(),
            root: host.config.zfs.root.to_string(),
            drivers: vec![
                DriverInfo {
                    subsystem: "zfs".to_owned(),
                    name: zfs_name.to_owned(),
                    capabilities: host.zfs.capabilities().names(),
                },
                DriverInfo {
                    subsystem: "net".to_owned(),
                    name: self.switches.driver().as_str().to_owned(),
                    capabilities: Vec::new(),
                },
            ],
        }
    }
}
