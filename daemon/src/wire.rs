//! Wire types of the HTTP/JSON API, shared by labd and labctl.
//!
//! These are the only types that derive `Serialize`/`Deserialize` for the API. Internal types
//! (validated names, driver rows) convert into them at the API edge. Adding a field is a
//! compatible change; renaming or removing one is not (see docs/api.md).

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the API served under `/v1`.
pub const API_VERSION: &str = "v1";

/// `GET /v1`: who is serving and with what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SystemInfo {
    /// labd's version (Cargo package version).
    pub version: String,
    /// API version (`v1`).
    pub api_version: String,
    /// Configured root dataset under which short names resolve.
    pub root: String,
    /// Driver chosen for each subsystem, with the capabilities it probed.
    pub drivers: Vec<DriverInfo>,
}

/// One host driver and what it can do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DriverInfo {
    /// Subsystem (`zfs`).
    pub subsystem: String,
    /// Driver name (`openzfs`, or `zfs-legacy` for zfs-fuse and other pre-OpenZFS CLIs).
    pub name: String,
    /// Capabilities found by probing, e.g. `get_type_filter`.
    pub capabilities: Vec<String>,
}

/// `GET /v1/pools`: one ZFS pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    /// Pool name.
    pub name: String,
    /// Health as `zpool` reports it (`ONLINE`, `DEGRADED`, …).
    pub health: String,
    /// Size in bytes.
    pub size: u64,
    /// Allocated bytes.
    pub allocated: u64,
    /// Free bytes.
    pub free: u64,
    /// Percent of size allocated.
    pub capacity_percent: u8,
}

/// A filesystem dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataset {
    /// Full ZFS name (`tank/labd/photos`).
    pub name: String,
    /// Name relative to the configured root (`photos`); empty for the root itself.
    pub short_name: String,
    /// Bytes used by the dataset and its descendants.
    pub used: u64,
    /// Bytes available to the dataset.
    pub available: u64,
    /// Bytes referenced by the dataset.
    pub referenced: u64,
    /// Mount point (`none` and `legacy` are reported as they are).
    pub mountpoint: String,
    /// Whether labd created it (`labd:managed=on`): only those are destroyed without `force`.
    pub managed: bool,
    /// Every property with its source; only filled by `GET /v1/datasets/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<BTreeMap<String, Property>>,
}

/// A property value and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Property {
    /// Raw value as `zfs get -Hp` prints it (exact numbers).
    pub value: String,
    /// Where the value comes from.
    pub source: PropertySource,
    /// For inherited values: the dataset it is inherited from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherited_from: Option<String>,
}

/// Source of a property value, as `zfs get` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertySource {
    /// Set on this dataset.
    Local,
    /// The built-in default.
    Default,
    /// Inherited from an ancestor.
    Inherited,
    /// Set by `zfs receive`.
    Received,
    /// A temporary mount option.
    Temporary,
    /// Read-only or not applicable (`-`).
    None,
}

/// A snapshot of a dataset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// Full name (`tank/labd/photos@s1`).
    pub name: String,
    /// Full name of the dataset.
    pub dataset: String,
    /// Snapshot part of the name (`s1`).
    pub snapshot: String,
    /// Creation time.
    pub created: Timestamp,
    /// ZFS transaction group that created it: orders snapshots exactly.
    pub createtxg: u64,
    /// Bytes unique to this snapshot.
    pub used: u64,
    /// Bytes referenced.
    pub referenced: u64,
    /// Number of user holds (`userrefs`); a held snapshot is never destroyed.
    pub holds: u64,
}

/// `POST /v1/datasets`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateDataset {
    /// Short (relative to the root) or full name.
    pub name: String,
    /// Properties to set at creation (`-o k=v`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// Create missing parents (`zfs create -p`).
    #[serde(default)]
    pub parents: bool,
}

/// `PATCH /v1/datasets/{name}`: properties to set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetProperties {
    /// Properties and their new values.
    pub properties: BTreeMap<String, String>,
}

/// Query of `DELETE /v1/datasets/{name}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroyDataset {
    /// Also destroy children and snapshots (`zfs destroy -r`).
    #[serde(default)]
    pub recursive: bool,
    /// Destroy even though labd did not create it.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/datasets/{name}/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Snapshot name; defaults to a UTC timestamp such as `2026-11-25T190000Z`.
    #[serde(default)]
    pub name: Option<String>,
    /// Snapshot every descendant in the same transaction (`zfs snapshot -r`).
    #[serde(default)]
    pub recursive: bool,
}

/// `POST /v1/datasets/{name}/snapshots/{snap}/rollback`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// Destroy snapshots newer than the target (`zfs rollback -r`); refused otherwise.
    #[serde(default)]
    pub destroy_newer: bool,
}

/// `POST /v1/datasets/{name}/snapshots/{snap}/clone`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clone {
    /// Name of the new dataset (short or full).
    pub target: String,
    /// Properties of the clone.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// `POST …/hold` and `POST …/release`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    /// Hold tag.
    pub tag: String,
}

/// Query of `DELETE /v1/datasets/{name}/snapshots/{snap}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestroySnapshot {
    /// Destroy the snapshot of the same name in every descendant too.
    #[serde(default)]
    pub recursive: bool,
}

/// Query of `GET /v1/jobs/{id}`.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobWait {
    /// Wait up to this many seconds for the job to reach a final state.
    #[serde(default)]
    pub wait: Option<u64>,
}

/// State of a job. `Succeeded`, `Failed` and `Cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for the resource lock.
    Queued,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped before completion on request. Reserved: jobs stopped by shutdown fail with
    /// the code `interrupted`.
    Cancelled,
}

impl JobState {
    /// Whether no further transition can happen.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// Who asked: the peer credentials of a Unix socket connection (`uid`, `gid`, `pid`), or the
/// client certificate's subject CN and the remote address of a TCP (mutual TLS) connection
/// (`cn`, `addr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Effective uid of the caller (Unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Effective gid of the caller (Unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Process id where the OS reports it (Unix socket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Subject CN of the client certificate (TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<CommonName>,
    /// Remote address of the connection (TCP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<std::net::SocketAddr>,
}

impl fmt::Display for Actor {
    /// `uid=0 gid=0 pid=42` on the socket, `cn=labctl-admin addr=192.0.2.7:50123` on TCP.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(uid) = self.uid {
            parts.push(format!("uid={uid}"));
        }
        if let Some(gid) = self.gid {
            parts.push(format!("gid={gid}"));
        }
        if let Some(pid) = self.pid {
            parts.push(format!("pid={pid}"));
        }
        if let Some(cn) = &self.cn {
            parts.push(format!("cn={cn}"));
        }
        if let Some(addr) = self.addr {
            parts.push(format!("addr={addr}"));
        }
        f.write_str(&parts.join(" "))
    }
}

/// A certificate subject CN: UTF-8 of at most [`CommonName::MAX`] bytes (RFC 5280's
/// `ub-common-name`), held inline so that [`Actor`] stays `Copy` and is passed to jobs and
/// events as it always was.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CommonName {
    len: u8,
    bytes: [u8; CommonName::MAX],
}

impl CommonName {
    /// The longest CN in bytes.
    pub const MAX: usize = 64;

    /// The CN `text`, or `None` when it is empty or longer than [`Self::MAX`] bytes.
    pub fn new(text: &str) -> Option<Self> {
        let len = u8::try_from(text.len()).ok()?;
        if text.is_empty() || text.len() > Self::MAX {
            return None;
        }
        let mut bytes = [0; Self::MAX];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Some(Self { len, bytes })
    }

    /// The CN.
    pub fn as_str(&self) -> &str {
        // Built only from a &str in `new`, cut at its own length.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl fmt::Display for CommonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CommonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for CommonName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CommonName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::new(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "a CN is 1 to {} bytes, not {}",
                Self::MAX,
                text.len()
            ))
        })
    }
}

/// A long operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Job id.
    pub id: Uuid,
    /// What it does (`dataset.create`, `snapshot.rollback`, …).
    pub kind: String,
    /// The resource it works on (`tank/labd/photos`).
    pub target: String,
    /// Current state.
    pub state: JobState,
    /// Progress in percent, where known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Who asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// When it was accepted.
    pub created_at: Timestamp,
    /// When it got its lock and started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached its final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// What it did, one line each (commands run, decisions).
    #[serde(default)]
    pub log: Vec<String>,
    /// The error of a failed or cancelled job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The result of a successful job (e.g. the created snapshot names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
}

/// The body of every error response: `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorInfo,
}

/// A machine-readable error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable code (`invalid_name`, `not_found`, `has_children`, …).
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// The request field that broke a rule, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One event on `GET /v1/events` (server-sent events, `event:` = `kind`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic sequence number since labd started.
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// What happened (`job.started`, `dataset.created`, `snapshot.destroyed`, …).
    pub kind: String,
    /// The resource (`tank/labd/photos`; for `job.*` events the job's target, its id being
    /// in `data.id`).
    pub resource: String,
    /// Who caused it, for events caused by an API request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// Event details.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// `GET /v1/policies`: a snapshot policy and how it is doing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// Policy name (the value of `labd:policy`).
    pub name: String,
    /// Period of the `frequently` bucket, in minutes.
    pub frequent_minutes: u32,
    /// Count of each bucket: `frequently`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`.
    pub keep: BTreeMap<String, u32>,
    /// Never prune below this many policy snapshots per dataset.
    pub min_keep: u32,
    /// Bucket rules do not keep snapshots older than this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i64>,
    /// Whether runs take snapshots.
    pub autosnap: bool,
    /// Whether runs prune.
    pub autoprune: bool,
    /// Datasets whose effective policy this is.
    pub datasets: Vec<String>,
    /// When the scheduler runs next (none when it is off or nothing is due).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Timestamp>,
    /// The last run that involved this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<PolicyRun>,
}

/// Summary of one policy run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyRun {
    /// The time the run planned for (the policy clock).
    pub at: Option<Timestamp>,
    /// Snapshots taken.
    pub taken: Vec<String>,
    /// Snapshots destroyed.
    pub destroyed: Vec<String>,
    /// Why pruning was paused, per dataset.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paused: BTreeMap<String, String>,
    /// Errors, one line each (a failed command does not stop the rest of the run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// ZFS commands the run issued.
    pub commands: u32,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// Query of `GET /v1/datasets/{name}/plan` and `…/explain`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    /// Plan as if it were this time (RFC 3339); default: now.
    #[serde(default)]
    pub at: Option<Timestamp>,
}

/// `GET /v1/datasets/{name}/plan`: what the next run does to one dataset, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatasetPlan {
    /// Full dataset name.
    pub dataset: String,
    /// Effective policy (`none` when no policy applies).
    pub policy: String,
    /// Where the policy comes from (`local`, `inherited from …`).
    pub policy_source: String,
    /// The time planned for.
    pub at: Timestamp,
    /// The snapshot the run takes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub take: Option<PlannedSnapshot>,
    /// One decision per existing snapshot, oldest first.
    pub decisions: Vec<SnapshotDecision>,
    /// Why pruning is paused, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruning_paused: Option<String>,
}

/// A snapshot a run would take.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlannedSnapshot {
    /// Snapshot name (the part after `@`).
    pub name: String,
    /// The buckets it is due for.
    pub due: Vec<String>,
}

/// Keep or destroy one snapshot, with every reason.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotDecision {
    /// Snapshot name (the part after `@`).
    pub snapshot: String,
    /// `keep` or `destroy`.
    pub action: String,
    /// Why, in rule order.
    pub reasons: Vec<String>,
}

/// `GET /v1/exports`: one NFS export definition (a whole dataset to some clients).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Export {
    /// Export name: the dataset's name relative to the root (`photos`).
    pub name: String,
    /// Full dataset name.
    pub dataset: String,
    /// Where the dataset is mounted (what the server exports), if it is mounted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mountpoint: Option<String>,
    /// Who may mount it, and how.
    pub clients: Vec<ExportClient>,
}

/// One client of an export (also a `[[client]]` table of a definition file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportClient {
    /// Host address (`192.168.1.20`) or network (`192.168.1.0/24`, `fd00::/64`).
    pub address: String,
    /// `rw` (default) or `ro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// Root's identity on the server: `root`, `nobody` (default) or `UID:GID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maproot: Option<String>,
    /// Everyone's identity on the server: `root`, `nobody` or `UID:GID` (excludes `maproot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapall: Option<String>,
    /// Security flavors, most preferred first: `sys` (default), `krb5`, `krb5i`, `krb5p`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sec: Option<Vec<String>>,
}

/// `PUT /v1/exports/{name}`: the whole definition of one export.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutExport {
    /// Clients (at least one).
    pub clients: Vec<ExportClient>,
}

/// Query of `GET /v1/exports/render`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderQuery {
    /// `freebsd`, `linux` or `ganesha`; default: the configured driver.
    #[serde(default)]
    pub format: Option<String>,
}

/// The result of a `exports.apply` job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExportsApplied {
    /// The file written.
    pub file: String,
    /// Whether the file changed (and the server was reloaded).
    pub changed: bool,
    /// Exports added since the last apply.
    pub added: Vec<String>,
    /// Exports removed.
    pub removed: Vec<String>,
    /// Exports whose lines changed.
    pub updated: Vec<String>,
}

/// Query of `GET /v1/events`: which events to receive (all when empty).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Comma-separated kinds; an entry ending in `.` is a prefix (`job.,snapshot.created`).
    #[serde(default)]
    pub kind: Option<String>,
    /// A resource: events about it or anything below it (`tank/labd/photos` also matches
    /// `tank/labd/photos/2024` and `tank/labd/photos@s1`). A short dataset name matches both
    /// as given (export events) and resolved under the root.
    #[serde(default)]
    pub resource: Option<String>,
}

/// `GET /v1/templates`: a VM template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    /// Template name (`docker-host`).
    pub name: String,
    /// `builtin`, or the file that overrides or adds it.
    pub source: String,
    /// What it is for.
    pub description: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// `uefi`, `bhyveload` or `kernel`.
    pub loader: String,
    /// Number of disks.
    pub disks: usize,
    /// Number of NICs.
    pub nics: usize,
    /// The template's TOML text; only filled by `GET /v1/templates/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Query of `GET /v1/templates/{name}/command`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandQuery {
    /// `bhyve` (default).
    #[serde(default)]
    pub driver: Option<String>,
    /// The VM name to show (default `example`).
    #[serde(default)]
    pub vm: Option<String>,
}

/// The commands a driver would run to start a VM made from a template.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandPreview {
    /// The driver.
    pub driver: String,
    /// The VM name used.
    pub vm: String,
    /// Each command as an argv vector, in order, with a note on when it runs.
    pub commands: Vec<PreviewCommand>,
}

/// One command of a preview.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviewCommand {
    /// When labd runs it.
    pub when: String,
    /// Program and arguments.
    pub argv: Vec<String>,
}

/// `POST /v1/vms`: create a VM (its dataset and `vm.toml`) from a template. It is not started.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVm {
    /// VM name: 1 to 31 of `a-z`, `0-9`, `-`, starting with a letter, not ending with `-`.
    pub name: String,
    /// The template it is made from.
    pub template: String,
    /// vCPUs instead of the template's (its CPU topology is then dropped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Memory instead of the template's, as a size (`4G`, `512M`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The boot disk's image instead of the template's: a file name in `[vms] images_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// SSH public keys (OpenSSH lines) for the cloud-init user, added to the template's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_keys: Vec<String>,
    /// Static address with prefix of the first NIC (`192.168.1.20/24`); without it, DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Default gateway of the first NIC (needs `ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers of the first NIC.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

/// `GET /v1/vms`: one VM, rebuilt from its dataset and `vm.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    /// VM name (the last component of its dataset).
    pub name: String,
    /// UUID assigned at create; absent when the spec cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// The template it was made from.
    pub template: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in bytes.
    pub memory: u64,
    /// `uefi`, `bhyveload` or `kernel`.
    pub loader: String,
    /// Disks, in slot order.
    pub disks: Vec<VmDisk>,
    /// NICs, in order.
    pub nics: Vec<VmNic>,
    /// The VM's dataset.
    pub dataset: String,
    /// `running`, `stopping`, `restarting` (waiting out the backoff), `stopped`, `crashed`
    /// (given up: a fault under `restart = "never"`, the crash-loop limit), or `broken` when its
    /// `vm.toml` cannot be read.
    pub state: String,
    /// QEMU's pid while `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// What the last run's end meant (`poweroff`, `reboot`, `fault`, `unknown`), once labd has
    /// seen one end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Restarts by labd's supervisor since the VM was started (reboots and restarts after a
    /// failure).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restarts: u32,
    /// Why it is `crashed` (the crash-loop limit, a failed restart), or when it restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why the VM is `broken`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The `vm.toml` text; only filled by `GET /v1/vms/{name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The guest's SSH host key (one OpenSSH public key line, `ssh-ed25519 AAAA...`), generated
    /// by labd at create and handed to the guest in its cloud-init seed; clients pin it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_host_key: Option<String>,
}

/// A disk of a [`Vm`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmDisk {
    /// File name in the VM's dataset (`disk0.img`).
    pub file: String,
    /// Size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// The image it is (to be) imported from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Emulation (`virtio-blk`, `nvme`, `ahci-hd`).
    pub bus: String,
    /// `file` (a sparse file in the VM's dataset) or `zvol` (a ZFS volume).
    #[serde(default)]
    pub backing: String,
    /// zvol disks: the volume's dataset (its device is `/dev/zvol/<volume>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

/// A NIC of a [`Vm`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmNic {
    /// MAC address, assigned once at create.
    pub mac: String,
    /// The labd switch it joins.
    pub switch: String,
    /// Emulation (`virtio-net`, `e1000`).
    pub model: String,
    /// Static address with prefix (`192.168.1.20/24`); absent means DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// Query of `GET /v1/vms/{name}/command`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmCommandQuery {
    /// `bhyve` (default) or `qemu`.
    #[serde(default)]
    pub driver: Option<String>,
}

/// Body of `POST /v1/vms/{name}/snapshots`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotVm {
    /// Snapshot name; defaults to a UTC timestamp.
    #[serde(default)]
    pub name: Option<String>,
}

/// Body of `POST /v1/vms/{name}/clone`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneVm {
    /// The new VM's name.
    pub target: String,
    /// Clone from this existing snapshot of the VM (default: take one now).
    #[serde(default)]
    pub snapshot: Option<String>,
}

/// `POST /v1/vms/{name}/stop?force=true`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopVmQuery {
    /// Skip the ACPI power button and kill QEMU at once.
    #[serde(default)]
    pub force: bool,
}

/// A virtual switch (`GET /v1/switches`): a bridge that VM NICs join through taps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Switch {
    /// Switch name (what a VM NIC's `switch` names).
    pub name: String,
    /// The host bridge: `vm-<name>`, or the adopted bridge.
    pub bridge: String,
    /// Whether labd created the bridge (and destroys it with the switch); `false` for an
    /// adopted bridge, which labd never changes or destroys.
    pub managed: bool,
    /// The host interface that is the bridge's first member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<String>,
    /// The bridge's MTU (the configured one while the bridge is missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// `up`, `down` or `missing` (the bridge does not exist on the host now).
    pub state: String,
    /// The bridge's members: the uplink and VM taps.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// Body of `POST /v1/switches`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSwitch {
    /// Switch name: 1-12 of `a-z 0-9 -`, starting with a letter.
    pub name: String,
    /// A host interface to make the bridge's first member.
    #[serde(default)]
    pub uplink: Option<String>,
    /// The bridge's MTU (with an uplink it must be the uplink's).
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Adopt this existing bridge as is instead of creating `vm-<name>`.
    #[serde(default)]
    pub bridge: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_of_both_listeners_round_trip() {
        // The socket's actor is as it always was on the wire.
        let old: Actor = serde_json::from_str(r#"{"uid":0,"gid":5,"pid":42}"#).expect("old");
        assert_eq!(
            (old.uid, old.gid, old.pid, old.cn),
            (Some(0), Some(5), Some(42), None)
        );
        assert_eq!(old.to_string(), "uid=0 gid=5 pid=42");
        let tcp = Actor {
            uid: None,
            gid: None,
            pid: None,
            cn: CommonName::new("labctl-admin"),
            addr: "192.0.2.7:50123".parse().ok(),
        };
        let json = serde_json::to_string(&tcp).expect("json");
        assert_eq!(json, r#"{"cn":"labctl-admin","addr":"192.0.2.7:50123"}"#);
        assert_eq!(serde_json::from_str::<Actor>(&json).expect("back"), tcp);
        assert_eq!(tcp.to_string(), "cn=labctl-admin addr=192.0.2.7:50123");
        assert!(CommonName::new("").is_none());
        assert!(CommonName::new(&"x".repeat(65)).is_none());
        assert_eq!(
            CommonName::new(&"é".repeat(32)).map(|c| c.as_str().len()),
            Some(64)
        );
        assert!(
            serde_json::from_str::<Actor>(&format!(r#"{{"cn":"{}"}}"#, "x".repeat(65))).is_err()
        );
    }
}
