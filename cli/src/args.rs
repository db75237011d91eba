//! Command-line definitions (clap derive) and the parsers of the values they take.
//!
//! Everything a user can type is defined and validated here, so a malformed argument is a
//! usage error (exit status 2) before labctl connects to labd. The commands themselves live
//! in [`crate::commands`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use jiff::Timestamp;
use uuid::Uuid;

/// Socket used when neither `--socket` nor `LABD_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/var/run/labd.sock";

/// labctl: drive labd, the lab appliance daemon.
#[derive(Debug, Parser)]
#[command(name = "labctl", version, about, propagate_version = true)]
pub struct Cli {
    /// labd's API socket.
    #[arg(long, global = true, env = "LABD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// labd's API on TCP, `https://HOST:PORT` (mutual TLS: needs --ca, --cert and --key);
    /// without it, the socket.
    #[arg(long, global = true, env = "LABD_URL", value_name = "URL")]
    pub url: Option<String>,

    /// With --url: PEM file of the CA that signed labd's certificate.
    #[arg(long, global = true, env = "LABD_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,

    /// With --url: PEM file of labctl's client certificate.
    #[arg(long, global = true, env = "LABD_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,

    /// With --url: PEM file of the client certificate's private key.
    #[arg(long, global = true, env = "LABD_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,

    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// No progress spinner and no success line (errors are still printed).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Where labd is: `--url` with its three TLS files, or the socket.
    pub fn endpoint(&self) -> Result<crate::client::Endpoint, String> {
        use crate::client::Endpoint;
        let Some(url) = &self.url else {
            if self.ca.is_some() || self.cert.is_some() || self.key.is_some() {
                return Err("--ca, --cert and --key are only used with --url".into());
            }
            return Ok(Endpoint::Socket(self.socket.clone()));
        };
        let rest = url.strip_prefix("https://").ok_or_else(|| {
            format!("--url '{url}': must be https://HOST:PORT (labd's TCP API is mutual TLS only)")
        })?;
        if rest.trim_end_matches('/').is_empty() || rest.trim_end_matches('/').contains('/') {
            return Err(format!(
                "--url '{url}': must be https://HOST:PORT without a path"
            ));
        }
        let need = |flag: &str, file: &Option<PathBuf>| {
            file.clone()
                .ok_or_else(|| format!("{flag} FILE is required with --url (mutual TLS)"))
        };
        Ok(Endpoint::Tls {
            url: url.clone(),
            ca: need("--ca", &self.ca)?,
            cert: need("--cert", &self.cert)?,
            key: need("--key", &self.key)?,
        })
    }
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns without borders (grep-friendly).
    Table,
    /// The API objects as pretty-printed JSON (events: one JSON object per line).
    Json,
    /// The API objects as YAML (events: one document per event).
    Yaml,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show labd's version, drivers and pools.
    Status,
    /// Manage datasets and their snapshots.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Inspect jobs (long operations).
    #[command(subcommand)]
    Job(JobCommand),
    /// Inspect snapshot policies, see what they would do and why, run them.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Define NFS exports of datasets, preview the server's file and apply it.
    #[command(subcommand)]
    Export(ExportCommand),
    /// VM templates: list them, show one, preview the commands a VM made from it runs.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// VMs: create one from a template, list, inspect, preview its commands, destroy.
    #[command(subcommand)]
    Vm(VmCommand),
    /// Provision a VM over SSH from a plan: system updates, Docker, networks, compose
    /// projects with NFS volumes on labd's datasets (docs/provisioning.md).
    #[command(subcommand)]
    Guest(GuestCommand),
    /// Virtual switches: the bridges VM NICs join.
    #[command(subcommand)]
    Switch(SwitchCommand),
    /// Follow labd's event stream until it ends.
    Events {
        /// Only these kinds (repeatable or comma-separated); `job.` (ending in a dot) is a
        /// prefix: every `job.*` event.
        #[arg(long, value_delimiter = ',')]
        kind: Vec<String>,
        /// Only events about this resource or what lies below it (a dataset, snapshot or
        /// export name, short or full).
        #[arg(long)]
        resource: Option<String>,
    },
}

/// `labctl dataset …`.
#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// List the datasets under labd's root.
    List,
    /// Create a dataset.
    Create {
        /// Dataset name (short, relative to labd's root, or full).
        name: String,
        /// Set a property at creation (repeatable).
        #[arg(short = 'o', value_name = "PROP=VALUE", value_parser = parse_assignment)]
        properties: Vec<Assignment>,
        /// Create missing parent datasets.
        #[arg(short, long)]
        parents: bool,
    },
    /// Show every property of a dataset with its source.
    Get {
        /// Dataset name.
        name: String,
    },
    /// Set properties of a dataset.
    Set {
        /// Dataset name.
        name: String,
        /// Properties to set.
        #[arg(required = true, value_name = "PROP=VALUE", value_parser = parse_assignment)]
        properties: Vec<Assignment>,
    },
    /// Destroy a dataset, or a snapshot when NAME contains '@'.
    Destroy {
        /// Dataset name, or NAME@SNAP for a snapshot.
        #[arg(value_parser = parse_destroy_target)]
        name: DestroyTarget,
        /// Also destroy children and snapshots (for a snapshot: the same-named snapshot of
        /// every descendant).
        #[arg(short, long)]
        recursive: bool,
        /// Destroy even though labd did not create it (datasets only).
        #[arg(short, long)]
        force: bool,
    },
    /// Take a snapshot.
    Snapshot {
        /// Dataset name (NAME@SNAP names the snapshot too).
        name: String,
        /// Snapshot every descendant in the same transaction.
        #[arg(short, long)]
        recursive: bool,
        /// Snapshot name (default: labd picks a UTC timestamp).
        #[arg(long = "name", value_name = "SNAP")]
        snapshot: Option<String>,
    },
    /// List the snapshots of a dataset.
    Snapshots {
        /// Dataset name.
        name: String,
    },
    /// Roll a dataset back to a snapshot.
    Rollback {
        /// The snapshot.
        #[arg(value_name = "NAME@SNAP", value_parser = parse_snapshot_ref)]
        snapshot: SnapshotRef,
        /// Destroy the snapshots newer than SNAP (refused otherwise).
        #[arg(long)]
        destroy_newer: bool,
    },
    /// Clone a snapshot into a new dataset.
    Clone {
        /// The snapshot.
        #[arg(value_name = "NAME@SNAP", value_parser = parse_snapshot_ref)]
        snapshot: SnapshotRef,
        /// Name of the new dataset.
        target: String,
        /// Set a property of the clone (repeatable).
        #[arg(short = 'o', value_name = "PROP=VALUE", value_parser = parse_assignment)]
        properties: Vec<Assignment>,
    },
    /// Place a user hold on a snapshot (a held snapshot cannot be destroyed).
    Hold {
        /// The snapshot.
        #[arg(value_name = "NAME@SNAP", value_parser = parse_snapshot_ref)]
        snapshot: SnapshotRef,
        /// Hold tag.
        tag: String,
    },
    /// Release a user hold.
    Release {
        /// The snapshot.
        #[arg(value_name = "NAME@SNAP", value_parser = parse_snapshot_ref)]
        snapshot: SnapshotRef,
        /// Hold tag.
        tag: String,
    },
}

/// `labctl job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List the jobs labd knows, newest first.
    List,
    /// Show one job with its log.
    Show(JobShow),
}

/// `labctl template …`.
#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List the templates (built in, and files in labd's templates directory).
    List,
    /// Show one template with its TOML text.
    Show {
        /// Template name.
        name: String,
    },
    /// Print the exact commands a driver would run to start a VM made from the template.
    Command {
        /// Template name.
        name: String,
        /// The driver whose commands to show.
        #[arg(long, default_value = "bhyve")]
        driver: String,
        /// The VM name to show them for.
        #[arg(long, default_value = "example")]
        vm: String,
    },
}

/// `labctl vm …`.
#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// Create a VM (its dataset, vm.toml and disks, the boot disk from an image) from a
    /// template; it is not started.
    Create {
        /// VM name: lower-case letters, digits and '-', starting with a letter (at most 31).
        name: String,
        /// The template to make it from (labctl template list).
        #[arg(long)]
        template: String,
        /// vCPUs instead of the template's.
        #[arg(long)]
        cpus: Option<u32>,
        /// Memory instead of the template's (4G, 512M).
        #[arg(long)]
        memory: Option<String>,
        /// The boot disk's image (raw or qcow2), by file name in labd's images_dir.
        #[arg(long)]
        image: Option<String>,
        /// A file of SSH public keys for the guest's user (repeatable).
        #[arg(long = "ssh-key", value_name = "FILE")]
        ssh_keys: Vec<std::path::PathBuf>,
        /// Static address with prefix of the first NIC (192.168.1.20/24); default DHCP.
        #[arg(long)]
        ip: Option<String>,
        /// Default gateway (with --ip).
        #[arg(long)]
        gateway: Option<String>,
        /// DNS server (repeatable).
        #[arg(long = "nameserver")]
        nameservers: Vec<String>,
    },
    /// List the VMs.
    List,
    /// Show one VM with its vm.toml.
    Info {
        /// VM name.
        name: String,
    },
    /// Destroy a VM: its dataset, disks and snapshots.
    Destroy {
        /// VM name.
        name: String,
    },
    /// Start a VM under labd's supervision (the QEMU driver; bhyve comes later).
    Start {
        /// VM name.
        name: String,
    },
    /// Stop a VM: the ACPI power button, then a kill after its stop_timeout.
    Stop {
        /// VM name.
        name: String,
        /// Kill it at once instead of pressing the power button.
        #[arg(long)]
        force: bool,
    },
    /// Stop a VM (as `stop`), then start it again.
    Restart {
        /// VM name.
        name: String,
        /// Kill it at once instead of pressing the power button.
        #[arg(long)]
        force: bool,
    },
    /// Snapshot a VM's dataset: all its disks, spec and seed in one transaction.
    Snapshot {
        /// VM name.
        name: String,
        /// Snapshot name (default: a UTC timestamp).
        #[arg(long = "name", value_name = "SNAP")]
        snapshot: Option<String>,
    },
    /// Make a new VM from a snapshot of another (a ZFS clone: new uuid, MACs, host key; DHCP).
    Clone {
        /// The VM to clone.
        name: String,
        /// The new VM's name.
        target: String,
        /// Clone this existing snapshot (default: take one now).
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// Attach to a running VM's serial console (several clients may attach at once); detach
    /// with Ctrl-].
    Console {
        /// VM name.
        name: String,
    },
    /// Print the exact commands a driver would run to start this VM.
    Command {
        /// VM name.
        name: String,
        /// The driver whose commands to show.
        #[arg(long, default_value = "bhyve", value_parser = ["bhyve", "qemu"])]
        driver: String,
    },
}

/// `labctl guest …`.
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Make the guest what the plan says: each step probes, applies what differs and probes
    /// again; reported as changed, unchanged or failed. Stops at the first failure.
    Provision {
        #[command(flatten)]
        target: GuestTarget,
        /// Only probe: report what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check the guest against the plan, changing nothing; exit status 1 when it differs.
    Status {
        #[command(flatten)]
        target: GuestTarget,
    },
}

/// The guest and plan of `labctl guest …`.
#[derive(Debug, Args)]
pub struct GuestTarget {
    /// VM name: its static address and the SSH host key labd generated come from labd.
    pub vm: String,
    /// The provisioning plan (TOML).
    pub plan: PathBuf,
    /// Connect to this address instead of the VM's static one.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<String>,
    /// Pin this host key instead of labd's: a file holding it, or the key line itself.
    #[arg(long, value_name = "FILE|LINE")]
    pub host_key: Option<String>,
    /// SSH port (default: the plan's, else ssh's configuration, else 22).
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH user (default: the plan's, else ssh's configuration, else yours).
    #[arg(long)]
    pub user: Option<String>,
    /// Private key to log in with (then only that key is offered).
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// ssh configuration file to read instead of ~/.ssh/config.
    #[arg(long, value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,
}

/// `labctl switch …`.
#[derive(Debug, Subcommand)]
pub enum SwitchCommand {
    /// Create a switch: the bridge vm-NAME, optionally with a host interface as uplink; or
    /// adopt an existing bridge with --bridge.
    Create {
        /// Switch name: 1-12 of lower-case letters, digits and '-', starting with a letter.
        name: String,
        /// Host interface to join to the bridge (em0, eth1); the switch gets its MTU.
        #[arg(long, value_name = "IF")]
        uplink: Option<String>,
        /// The bridge's MTU (with --uplink it must be the uplink's).
        #[arg(long, value_name = "N")]
        mtu: Option<u32>,
        /// Adopt this existing bridge as is (labd never changes or destroys it).
        #[arg(long, value_name = "BRIDGE", conflicts_with_all = ["uplink", "mtu"])]
        bridge: Option<String>,
    },
    /// List the switches with their bridges and ports.
    List,
    /// Destroy a switch (refused while a VM uses it); an adopted bridge is left in place.
    Destroy {
        /// Switch name.
        name: String,
    },
}

/// `labctl job show ID`.
#[derive(Debug, Args)]
pub struct JobShow {
    /// Job id.
    pub id: Uuid,
}

/// `labctl policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// List the snapshot policies with their datasets, next and last run.
    List,
    /// Show one policy: its rules, datasets, next run and last run.
    Show {
        /// Policy name (the value of `labd:policy`).
        name: String,
    },
    /// Show what the next policy run does to a dataset: the snapshot it takes and, for every
    /// existing snapshot, keep or destroy with the reasons.
    Plan {
        /// Dataset name.
        dataset: String,
        /// Plan as if it were this time (RFC 3339, e.g. 2026-11-25T19:00:00Z; default: now).
        #[arg(long, value_name = "RFC3339")]
        at: Option<Timestamp>,
    },
    /// Explain why the policy keeps or destroys one snapshot.
    Explain {
        /// The snapshot.
        #[arg(value_name = "DATASET@SNAP", value_parser = parse_snapshot_ref)]
        snapshot: SnapshotRef,
        /// Decide as if it were this time (RFC 3339; default: now).
        #[arg(long, value_name = "RFC3339")]
        at: Option<Timestamp>,
    },
    /// Run every policy now (take due snapshots, prune) and wait for the run.
    Run,
}

/// `labctl export …`. Definitions are only checked and stored by `add` and `remove`; the NFS
/// server sees them after `apply`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Export a dataset to clients, or change the options of clients it has already.
    Add {
        /// Dataset name (short or full).
        name: String,
        /// Client address or network (`192.168.1.20`, `192.168.1.0/24`, `fd00::/64`);
        /// repeatable. A client the export has already gets the new options.
        #[arg(long = "client", value_name = "ADDR", required = true, value_parser = parse_client_address)]
        clients: Vec<String>,
        /// Read-only (default: read-write).
        #[arg(long)]
        ro: bool,
        /// What root on the client is on the server (default: nobody).
        #[arg(long, value_name = "root|nobody|UID:GID", value_parser = parse_identity, conflicts_with = "mapall")]
        maproot: Option<String>,
        /// Map every user of the client to this identity (instead of --maproot).
        #[arg(long, value_name = "root|nobody|UID:GID", value_parser = parse_identity)]
        mapall: Option<String>,
        /// Security flavors, most preferred first (default: sys).
        #[arg(
            long,
            value_name = "FLAVOR[,FLAVOR…]",
            value_delimiter = ',',
            value_parser = ["sys", "krb5", "krb5i", "krb5p"]
        )]
        sec: Vec<String>,
    },
    /// Remove clients from an export, or the whole export when no --client is given.
    Remove {
        /// Dataset name (short or full).
        name: String,
        /// Client address to remove (repeatable); removing the last one removes the export.
        #[arg(long = "client", value_name = "ADDR", value_parser = parse_client_address)]
        clients: Vec<String>,
    },
    /// List the export definitions.
    List,
    /// Show one export definition with every client's options.
    Show {
        /// Dataset name (short or full).
        name: String,
    },
    /// Print the exports file labd would write (nothing is written).
    Render {
        /// File format (default: the one of labd's configured NFS server).
        #[arg(long, value_enum)]
        format: Option<ExportFormat>,
    },
    /// Check every definition, write the server's file, reload the server, and wait.
    Apply,
}

/// The exports file formats labd renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// FreeBSD mountd `/etc/exports`.
    Freebsd,
    /// Linux `exportfs` `/etc/exports`.
    Linux,
    /// NFS-Ganesha `EXPORT` blocks.
    Ganesha,
}

impl ExportFormat {
    /// The name the API takes (`freebsd`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Freebsd => "freebsd",
            Self::Linux => "linux",
            Self::Ganesha => "ganesha",
        }
    }
}

/// One `PROP=VALUE` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Property name.
    pub property: String,
    /// Its value (may be empty).
    pub value: String,
}

/// `NAME@SNAP`: a dataset and the name of one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRef {
    /// Dataset name (short or full).
    pub dataset: String,
    /// Snapshot part, after the '@'.
    pub snapshot: String,
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.snapshot)
    }
}

/// What `dataset destroy` destroys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestroyTarget {
    /// A dataset.
    Dataset(String),
    /// A snapshot (the argument contained '@').
    Snapshot(SnapshotRef),
}

/// Parse `PROP=VALUE`, split at the first '='.
pub fn parse_assignment(arg: &str) -> Result<Assignment, String> {
    match arg.split_once('=') {
        Some(("", _)) => Err(format!("'{arg}' has no property name before '='")),
        Some((property, value)) => Ok(Assignment {
            property: property.to_owned(),
            value: value.to_owned(),
        }),
        None => Err(format!("'{arg}' is not PROP=VALUE (no '=')")),
    }
}

/// Parse `NAME@SNAP` with exactly one '@' and both parts non-empty.
pub fn parse_snapshot_ref(arg: &str) -> Result<SnapshotRef, String> {
    let mut parts = arg.split('@');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(dataset), Some(snapshot), None) if !dataset.is_empty() && !snapshot.is_empty() => {
            Ok(SnapshotRef {
                dataset: dataset.to_owned(),
                snapshot: snapshot.to_owned(),
            })
        }
        (_, None, _) => Err(format!("'{arg}' is not NAME@SNAP (no '@')")),
        (_, Some(_), Some(_)) => Err(format!("'{arg}' has more than one '@'")),
        _ => Err(format!("'{arg}' is not NAME@SNAP (empty name or snapshot)")),
    }
}

/// Parse the argument of `dataset destroy`: a snapshot when it contains '@'.
pub fn parse_destroy_target(arg: &str) -> Result<DestroyTarget, String> {
    if arg.contains('@') {
        parse_snapshot_ref(arg).map(DestroyTarget::Snapshot)
    } else if arg.is_empty() {
        Err("empty dataset name".to_owned())
    } else {
        Ok(DestroyTarget::Dataset(arg.to_owned()))
    }
}

/// Parse a client address: non-empty, without blanks (labd checks the rest).
pub fn parse_client_address(arg: &str) -> Result<String, String> {
    if arg.is_empty() {
        Err("empty client address".to_owned())
    } else if arg.chars().any(char::is_whitespace) {
        Err(format!(
            "'{arg}' is not an address or network (it contains blanks)"
        ))
    } else {
        Ok(arg.to_owned())
    }
}

/// Parse the identity of `--maproot` and `--mapall`: `root`, `nobody` or numeric `UID:GID`.
pub fn parse_identity(arg: &str) -> Result<String, String> {
    if matches!(arg, "root" | "nobody") {
        return Ok(arg.to_owned());
    }
    let numeric = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.parse::<u32>().is_ok()
    };
    match arg.split_once(':') {
        Some((uid, gid)) if numeric(uid) && numeric(gid) => Ok(arg.to_owned()),
        _ => Err(format!("'{arg}' is not root, nobody or UID:GID (numbers)")),
    }
}

/// Turn assignments into the property map of a request; naming a property twice is a usage
/// error (of the subcommand at `path`) rather than a silent "last one wins".
pub fn property_map(
    path: &[&str],
    assignments: &[Assignment],
) -> Result<BTreeMap<String, String>, clap::Error> {
    let mut map = BTreeMap::new();
    for a in assignments {
        if map.insert(a.property.clone(), a.value.clone()).is_some() {
            return Err(usage_error(
                path,
                ErrorKind::ArgumentConflict,
                format!("property '{}' is given more than once", a.property),
            ));
        }
    }
    Ok(map)
}

/// A usage error found after parsing, printed like clap's own with the usage of the
/// subcommand at `path` (e.g. `["dataset", "destroy"]`); exit status 2.
pub fn usage_error(path: &[&str], kind: ErrorKind, message: impl fmt::Display) -> clap::Error {
    let mut cmd = Cli::command();
    cmd.build();
    let mut sub = &cmd;
    for name in path {
        match sub.find_subcommand(name) {
            Some(next) => sub = next,
            None => break,
        }
    }
    sub.clone().error(kind, message)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn assignment_splits_at_the_first_equals() {
        let a = parse_assignment("quota=10G").unwrap();
        assert_eq!((a.property.as_str(), a.value.as_str()), ("quota", "10G"));
        let a = parse_assignment("labd:note=a=b").unwrap();
        assert_eq!(
            (a.property.as_str(), a.value.as_str()),
            ("labd:note", "a=b")
        );
        let a = parse_assignment("comment=").unwrap();
        assert_eq!(a.value, "");
    }

    #[test]
    fn assignment_needs_a_name_and_an_equals() {
        assert!(parse_assignment("quota").unwrap_err().contains("'quota'"));
        assert!(parse_assignment("=on").is_err());
        assert!(parse_assignment("").is_err());
    }

    #[test]
    fn snapshot_ref_needs_exactly_one_at() {
        let s = parse_snapshot_ref("tank/labd/photos@s1").unwrap();
        assert_eq!(s.dataset, "tank/labd/photos");
        assert_eq!(s.snapshot, "s1");
        assert_eq!(s.to_string(), "tank/labd/photos@s1");
        assert!(parse_snapshot_ref("photos").unwrap_err().contains("no '@'"));
        assert!(
            parse_snapshot_ref("a@b@c")
                .unwrap_err()
                .contains("more than one")
        );
        assert!(parse_snapshot_ref("@s1").is_err());
        assert!(parse_snapshot_ref("photos@").is_err());
    }

    #[test]
    fn destroy_target_is_a_snapshot_with_an_at() {
        assert_eq!(
            parse_destroy_target("photos").unwrap(),
            DestroyTarget::Dataset("photos".into())
        );
        assert!(matches!(
            parse_destroy_target("photos@s1").unwrap(),
            DestroyTarget::Snapshot(s) if s.snapshot == "s1"
        ));
        assert!(parse_destroy_target("a@b@c").is_err());
    }

    #[test]
    fn duplicate_properties_are_refused() {
        let a = parse_assignment("quota=1G").unwrap();
        let b = parse_assignment("quota=2G").unwrap();
        assert!(property_map(&[], std::slice::from_ref(&a)).is_ok());
        let err = property_map(&["dataset", "create"], &[a, b]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("labctl dataset create"), "{err}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_exit_with_2() {
        let err = Cli::try_parse_from(["labctl", "dataset", "set", "photos", "quota"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = Cli::try_parse_from(["labctl", "dataset", "rollback", "a@b@c"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn policy_at_is_an_rfc3339_time() {
        let cli = Cli::try_parse_from([
            "labctl",
            "policy",
            "plan",
            "photos",
            "--at",
            "2026-11-25T20:00:00+01:00",
        ])
        .unwrap();
        let Command::Policy(PolicyCommand::Plan { dataset, at }) = cli.command else {
            panic!("not policy plan: {:?}", cli.command);
        };
        assert_eq!(dataset, "photos");
        assert_eq!(at.unwrap().to_string(), "2026-11-25T19:00:00Z");
        for bad in ["tomorrow", "2026-11-25", "2026-11-25T19:00:00"] {
            let err = Cli::try_parse_from(["labctl", "policy", "plan", "photos", "--at", bad])
                .unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn policy_explain_takes_a_snapshot_ref() {
        let cli = Cli::try_parse_from(["labctl", "policy", "explain", "tank/labd/a@s1"]).unwrap();
        let Command::Policy(PolicyCommand::Explain { snapshot, at }) = cli.command else {
            panic!("not policy explain: {:?}", cli.command);
        };
        assert_eq!(snapshot.dataset, "tank/labd/a");
        assert_eq!(snapshot.snapshot, "s1");
        assert!(at.is_none());
        let err = Cli::try_parse_from(["labctl", "policy", "explain", "photos"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn export_add_takes_clients_and_options() {
        let cli = Cli::try_parse_from([
            "labctl",
            "export",
            "add",
            "photos",
            "--client",
            "192.168.1.20",
            "--client",
            "192.168.1.0/24",
            "--ro",
            "--mapall",
            "1000:1000",
            "--sec",
            "krb5p,sys",
        ])
        .unwrap();
        let Command::Export(ExportCommand::Add {
            name,
            clients,
            ro,
            maproot,
            mapall,
            sec,
        }) = cli.command
        else {
            panic!("not export add: {:?}", cli.command);
        };
        assert_eq!(name, "photos");
        assert_eq!(clients, ["192.168.1.20", "192.168.1.0/24"]);
        assert!(ro);
        assert_eq!(maproot, None);
        assert_eq!(mapall.as_deref(), Some("1000:1000"));
        assert_eq!(sec, ["krb5p", "sys"]);
    }

    #[test]
    fn export_add_usage_errors_exit_with_2() {
        let base = ["labctl", "export", "add", "photos"];
        let bad: [&[&str]; 6] = [
            &[],
            &["--client", "a", "--maproot", "root", "--mapall", "nobody"],
            &["--client", "a", "--maproot", "alice"],
            &["--client", "a", "--mapall", "1000:"],
            &["--client", "a", "--sec", "sys,ntlm"],
            &["--client", ""],
        ];
        for extra in bad {
            let err = Cli::try_parse_from(base.iter().chain(extra)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{extra:?}");
        }
    }

    #[test]
    fn identities_are_root_nobody_or_numbers() {
        for ok in ["root", "nobody", "0:0", "1000:1000", "65534:65533"] {
            assert_eq!(parse_identity(ok).unwrap(), ok);
        }
        for bad in [
            "",
            "alice",
            "1000",
            "1000:",
            ":1000",
            "a:b",
            "-1:0",
            "1:2:3",
            "99999999999:0",
        ] {
            assert!(parse_identity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn export_remove_and_render_parse() {
        let cli = Cli::try_parse_from(["labctl", "export", "remove", "photos"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Export(ExportCommand::Remove { clients, .. }) if clients.is_empty()
        ));
        let cli = Cli::try_parse_from(["labctl", "export", "render", "--format", "linux"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Export(ExportCommand::Render {
                format: Some(ExportFormat::Linux)
            })
        ));
        let err =
            Cli::try_parse_from(["labctl", "export", "render", "--format", "solaris"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        for f in ExportFormat::value_variants() {
            assert_eq!(f.to_possible_value().unwrap().get_name(), f.as_str());
        }
    }

    #[test]
    fn global_options_go_before_or_after_the_command() {
        let cli =
            Cli::try_parse_from(["labctl", "dataset", "list", "--output", "json", "-q"]).unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(cli.quiet);
        let cli = Cli::try_parse_from(["labctl", "--socket", "/tmp/x.sock", "status"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
        assert!(matches!(
            cli.endpoint(),
            Ok(crate::client::Endpoint::Socket(p)) if p == std::path::Path::new("/tmp/x.sock")
        ));
        let tls = [
            "--url",
            "https://h:8443",
            "--ca",
            "/ca",
            "--cert",
            "/c",
            "--key",
            "/k",
        ];
        let cli = Cli::try_parse_from(["labctl"].into_iter().chain(tls).chain(["status"])).unwrap();
        assert!(matches!(
            cli.endpoint(),
            Ok(crate::client::Endpoint::Tls { .. })
        ));
        for (args, said) in [
            (&["--url", "http://h:1"][..], "https://"),
            (&["--url", "https://h:1"][..], "--ca"),
            (
                &["--url", "https://h:1/v1", "--ca", "/a"][..],
                "without a path",
            ),
            (&["--cert", "/c"][..], "only used with --url"),
        ] {
            let cli = Cli::try_parse_from(
                ["labctl"]
                    .into_iter()
                    .chain(args.iter().copied())
                    .chain(["status"]),
            )
            .unwrap();
            let e = cli.endpoint().unwrap_err();
            assert!(e.contains(said), "{args:?}: {e}");
        }
    }
}
