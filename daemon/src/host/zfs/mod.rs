//! ZFS driver: a thin layer over the `zfs` and `zpool` commands (not libzetta, see
//! docs/architecture.md).
//!
//! Every operation builds an argv from validated names and runs it through the one
//! [`Runner`]. Reads use `zfs get -Hp -o name,property,value,source`, the form OpenZFS 2.x and
//! zfs-fuse 0.7 both print with exact numbers. Forms only newer ZFS has (several snapshots in
//! one command, comma-separated destroys, `get -t`) are used when the usage text says they
//! exist, with a per-item fallback. Failures are classified from stderr into [`ZfsErrorKind`].

mod parse;

use std::path::Path;
use std::time::Duration;

pub use parse::{Capabilities, PoolRow, PropRow};

use super::runner::{Argv, RunError, Runner};
use crate::core::names::{DatasetName, SnapshotName};
use crate::core::props::Assignment;

/// What went wrong with a zfs command, classified from its stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZfsErrorKind {
    /// The dataset, snapshot, pool or hold tag does not exist.
    NotFound,
    /// The dataset, snapshot or hold tag already exists.
    Exists,
    /// The dataset is busy (mounted and in use, held, being destroyed).
    Busy,
    /// It has children or snapshots.
    HasChildren,
    /// Clones depend on it.
    HasDependents,
    /// A rollback target has newer snapshots.
    NewerSnapshots,
    /// ZFS refused a property or value.
    InvalidValue,
    /// This ZFS does not support the operation.
    Unsupported,
    /// Not allowed.
    PermissionDenied,
    /// Anything else.
    Other,
}

/// A zfs driver error.
#[derive(Debug, thiserror::Error)]
pub enum ZfsError {
    /// zfs ran and refused; `message` is its first stderr line.
    #[error("{message}")]
    Command {
        /// Classification.
        kind: ZfsErrorKind,
        /// First line of stderr.
        message: String,
        /// All of stderr.
        stderr: String,
    },
    /// zfs could not be run, timed out or was killed.
    #[error(transparent)]
    Run(RunError),
    /// zfs printed something we do not understand.
    #[error("cannot parse zfs output: {0}")]
    Parse(String),
}

impl ZfsError {
    /// The classification, if zfs itself refused.
    pub fn kind(&self) -> Option<ZfsErrorKind> {
        match self {
            Self::Command { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Map stderr of a failed zfs/zpool command to a kind (messages of OpenZFS 2.x and zfs-fuse).
fn classify(stderr: &str) -> ZfsErrorKind {
    const TABLE: &[(&str, ZfsErrorKind)] = &[
        ("more recent snapshots exist", ZfsErrorKind::NewerSnapshots),
        ("dependent clones", ZfsErrorKind::HasDependents),
        ("has children", ZfsErrorKind::HasChildren),
        ("already exists", ZfsErrorKind::Exists),
        ("does not exist", ZfsErrorKind::NotFound),
        ("no such pool", ZfsErrorKind::NotFound),
        ("no such tag", ZfsErrorKind::NotFound),
        ("could not find any snapshots", ZfsErrorKind::NotFound),
        ("is busy", ZfsErrorKind::Busy),
        ("bad numeric value", ZfsErrorKind::InvalidValue),
        ("must be one of", ZfsErrorKind::InvalidValue),
        ("invalid property", ZfsErrorKind::InvalidValue),
        ("bad property value", ZfsErrorKind::InvalidValue),
        ("must be", ZfsErrorKind::InvalidValue),
        ("permission denied", ZfsErrorKind::PermissionDenied),
        ("not supported", ZfsErrorKind::Unsupported),
        ("not implemented", ZfsErrorKind::Unsupported),
        ("invalid option", ZfsErrorKind::Unsupported),
        ("unrecognized command", ZfsErrorKind::Unsupported),
    ];
    let lower = stderr.to_ascii_lowercase();
    TABLE
        .iter()
        .find(|(needle, _)| lower.contains(needle))
        .map_or(ZfsErrorKind::Other, |(_, kind)| *kind)
}

impl From<RunError> for ZfsError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Exit { stderr, stdout, .. } => {
                // zfs-fuse prints some internal errors on stdout.
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                let message = text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("zfs failed without a message")
                    .trim()
                    .to_owned();
                Self::Command {
                    kind: classify(&text),
                    message,
                    stderr: text,
                }
            }
            other => Self::Run(other),
        }
    }
}

/// Which ZFS this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// OpenZFS 2.x (FreeBSD 13+, Linux).
    OpenZfs,
    /// zfs-fuse 0.7 or another legacy (pool v23-era) CLI.
    Legacy,
}

/// Properties read for dataset listings.
pub const LIST_PROPERTIES: &str = "used,available,referenced,mountpoint,labd:managed";
/// Properties read for snapshot listings.
const SNAPSHOT_PROPERTIES: &str = "creation,createtxg,used,referenced,userrefs";

/// The ZFS driver.
#[derive(Debug, Clone)]
pub struct Zfs {
    runner: Runner,
    zfs: String,
    zpool: String,
    flavor: Flavor,
    caps: Capabilities,
}

impl Zfs {
    /// Probe the `zfs` and `zpool` programs and build a driver for what they support.
    pub async fn probe(zfs: &Path, zpool: &Path, timeout: Duration) -> Result<Self, ZfsError> {
        let runner = Runner::new(timeout);
        let zfs = zfs.display().to_string();
        let zpool = zpool.display().to_string();
        let usage = |argv: Argv| {
            let runner = runner.clone();
            async move {
                match runner.run(&argv).await {
                    Ok(out) => Ok(out.stderr + &out.stdout),
                    Err(RunError::Exit { stderr, stdout, .. }) => Ok(stderr + &stdout),
                    Err(e) => Err(ZfsError::Run(e)),
                }
            }
        };
        // `zfs get` without arguments adds the property table (for `volmode`).
        let caps = parse::capabilities(
            &usage(Argv::new(&zfs)).await?,
            &usage(Argv::new(&zpool)).await?,
            &usage(Argv::new(&zfs).arg("get")).await?,
        );
        let flavor = match runner.run(&Argv::new(&zfs).arg("version")).await {
            Ok(_) => Flavor::OpenZfs,
            Err(RunError::Exit { .. }) => Flavor::Legacy,
            Err(e) => return Err(ZfsError::Run(e)),
        };
        Ok(Self {
            runner,
            zfs,
            zpool,
            flavor,
            caps,
        })
    }

    /// Which ZFS this is.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    /// What it supports.
    pub fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn zfs(&self) -> Argv {
        Argv::new(&self.zfs)
    }

    async fn run(&self, argv: Argv) -> Result<String, ZfsError> {
        Ok(self.runner.run(&argv).await?.stdout)
    }

    /// `zfs get -Hp -o name,property,value,source PROPS [-r|-d N] NAME`.
    async fn get(
        &self,
        properties: &str,
        depth: Depth,
        types: Option<&str>,
        name: &str,
    ) -> Result<Vec<PropRow>, ZfsError> {
        let mut argv = self
            .zfs()
            .args(["get", "-Hp", "-o", "name,property,value,source"]);
        match depth {
            Depth::Zero => {}
            Depth::One => argv = argv.args(["-d", "1"]),
            Depth::All => argv = argv.arg("-r"),
        }
        if let (Some(types), true) = (types, self.caps.get_type_filter) {
            argv = argv.args(["-t", types]);
        }
        let stdout = self.run(argv.args([properties, name])).await?;
        parse::get_rows(&stdout)
    }

    /// Property rows of `root` and every filesystem below it (snapshots left out).
    pub async fn list_filesystems(&self, root: &DatasetName) -> Result<Vec<PropRow>, ZfsError> {
        let mut rows = self
            .get(
                LIST_PROPERTIES,
                Depth::All,
                Some("filesystem,volume"),
                root.as_str(),
            )
            .await?;
        rows.retain(|r| !r.name.contains('@'));
        Ok(rows)
    }

    /// Every property of one dataset or snapshot.
    pub async fn get_all(&self, name: &str) -> Result<Vec<PropRow>, ZfsError> {
        self.get("all", Depth::Zero, None, name).await
    }

    /// Chosen properties of one dataset and, with `recursive`, every descendant filesystem.
    pub async fn get_props(
        &self,
        dataset: &DatasetName,
        properties: &str,
        recursive: bool,
    ) -> Result<Vec<PropRow>, ZfsError> {
        let depth = if recursive { Depth::All } else { Depth::Zero };
        let mut rows = self
            .get(
                properties,
                depth,
                Some("filesystem,volume"),
                dataset.as_str(),
            )
            .await?;
        rows.retain(|r| !r.name.contains('@'));
        Ok(rows)
    }

    /// Property rows of `dataset` and its snapshots, and with `recursive` of every descendant
    /// and their snapshots, in ZFS order (a dataset, its snapshots, then its children).
    pub async fn get_with_snapshots(
        &self,
        dataset: &DatasetName,
        properties: &str,
        recursive: bool,
    ) -> Result<Vec<PropRow>, ZfsError> {
        let depth = if recursive { Depth::All } else { Depth::One };
        let mut rows = self
            .get(
                properties,
                depth,
                Some("filesystem,volume,snapshot"),
                dataset.as_str(),
            )
            .await?;
        if !recursive {
            let own = format!("{dataset}@");
            rows.retain(|r| r.name == dataset.as_str() || r.name.starts_with(&own));
        }
        Ok(rows)
    }

    /// Snapshots of `dataset` (or of it and its descendants), ordered by creation txg.
    pub async fn snapshots(
        &self,
        dataset: &DatasetName,
        recursive: bool,
    ) -> Result<Vec<SnapshotRow>, ZfsError> {
        let depth = if recursive { Depth::All } else { Depth::One };
        let rows = self
            .get(
                SNAPSHOT_PROPERTIES,
                depth,
                Some("snapshot"),
                dataset.as_str(),
            )
            .await?;
        let mut snaps: Vec<SnapshotRow> = Vec::new();
        for row in rows {
            let Some((ds, snap)) = row.name.split_once('@') else {
                continue;
            };
            if !recursive && ds != dataset.as_str() {
                continue;
            }
            if snaps.last().is_none_or(|s| s.name != row.name) {
                snaps.push(SnapshotRow {
                    name: row.name.clone(),
                    dataset: ds.to_owned(),
                    snapshot: snap.to_owned(),
                    ..SnapshotRow::default()
                });
            }
            let Some(s) = snaps.last_mut() else { continue };
            let n = parse::number(&row.value).unwrap_or(0);
            match row.property.as_str() {
                "creation" => s.creation = n,
                "createtxg" => s.createtxg = n,
                "used" => s.used = n,
                "referenced" => s.referenced = n,
                "userrefs" => s.userrefs = n,
                _ => {}
            }
        }
        snaps.sort_by(|a, b| (&a.dataset, a.createtxg).cmp(&(&b.dataset, b.createtxg)));
        Ok(snaps)
    }

    /// Names of the descendant filesystems of `dataset` (not itself, and not volumes, which
    /// are never mounted), deepest first.
    pub async fn descendants(&self, dataset: &DatasetName) -> Result<Vec<String>, ZfsError> {
        let rows = self.get_props(dataset, "type", true).await?;
        let mut names: Vec<String> = rows
            .into_iter()
            .filter(|r| r.value != "volume")
            .map(|r| r.name)
            .filter(|n| n != dataset.as_str())
            .collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.matches('/').count()));
        Ok(names)
    }

    /// `zfs create [-p] [-o k=v]… NAME`.
    pub async fn create(
        &self,
        dataset: &DatasetName,
        properties: &[Assignment],
        parents: bool,
    ) -> Result<(), ZfsError> {
        let mut argv = self.zfs().arg("create");
        if parents {
            argv = argv.arg("-p");
        }
        for p in properties {
            argv = argv.args(["-o".to_owned(), p.to_arg()]);
        }
        self.run(argv.arg(dataset.as_str())).await.map(drop)
    }

    /// Create the sparse volume `dataset` of `size` bytes for a VM disk:
    /// [`volume_create_argv`]. The caller checks [`Capabilities::zvols`] first.
    pub async fn create_volume(
        &self,
        dataset: &DatasetName,
        size: u64,
        properties: &[Assignment],
    ) -> Result<(), ZfsError> {
        self.run(volume_create_argv(&self.zfs, dataset, size, properties))
            .await
            .map(drop)
    }

    /// Set properties: one command where ZFS takes several, else one command each (legacy ZFS
    /// applies a multi-set partially, so it is never used there).
    pub async fn set(&self, name: &str, properties: &[Assignment]) -> Result<(), ZfsError> {
        if self.caps.multi_set {
            let argv = self
                .zfs()
                .arg("set")
                .args(properties.iter().map(Assignment::to_arg))
                .arg(name);
            return self.run(argv).await.map(drop);
        }
        for p in properties {
            self.run(
                self.zfs()
                    .args(["set".to_owned(), p.to_arg(), name.to_owned()]),
            )
            .await?;
        }
        Ok(())
    }

    /// Unmount a filesystem; returns whether it was mounted ("not mounted" is success).
    async fn unmount(&self, name: &str) -> Result<bool, ZfsError> {
        match self.run(self.zfs().args(["unmount", name])).await {
            Ok(_) => Ok(true),
            Err(ZfsError::Command { ref stderr, .. })
                if stderr.contains("not currently mounted") || stderr.contains("not mounted") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Destroy a filesystem, unmounting it (and, with `recursive`, its descendants, deepest
    /// first) before, and retrying briefly while ZFS says it is busy (zfs-fuse often does
    /// right after an unmount). If the destroy fails, what was unmounted is mounted again.
    pub async fn destroy(&self, dataset: &DatasetName, recursive: bool) -> Result<(), ZfsError> {
        let mut order = if recursive {
            self.descendants(dataset).await?
        } else {
            Vec::new()
        };
        order.push(dataset.to_string());
        let mut unmounted = Vec::new();
        let mut result = Ok(());
        for name in &order {
            match self.unmount(name).await {
                Ok(true) => unmounted.push(name.as_str()),
                Ok(false) => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            let argv = if recursive {
                self.zfs().args(["destroy", "-r", dataset.as_str()])
            } else {
                self.zfs().args(["destroy", dataset.as_str()])
            };
            result = self.retry_busy(argv).await;
        }
        if result.is_err() {
            // Parents before children: the reverse of the unmount order.
            for name in unmounted.iter().rev() {
                if let Err(e) = self.run(self.zfs().args(["mount", name])).await {
                    tracing::warn!(dataset = %name, error = %e, "cannot mount again after a failed destroy");
                }
            }
        }
        result
    }

    async fn retry_busy(&self, argv: Argv) -> Result<(), ZfsError> {
        let mut delay = Duration::from_millis(200);
        for attempt in 1.. {
            match self.run(argv.clone()).await {
                Err(e) if e.kind() == Some(ZfsErrorKind::Busy) && attempt < 8 => {
                    tracing::debug!(%argv, attempt, "zfs busy, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                other => return other.map(drop),
            }
        }
        Ok(())
    }

    /// Take snapshots: `zfs snapshot -r` for a recursive one, several names in one command
    /// (one transaction) where supported, else one command per name.
    pub async fn snapshot(
        &self,
        snapshots: &[SnapshotName],
        recursive: bool,
        properties: &[Assignment],
    ) -> Result<(), ZfsError> {
        let base = || {
            let mut argv = self.zfs().arg("snapshot");
            if recursive {
                argv = argv.arg("-r");
            }
            for p in properties {
                argv = argv.args(["-o".to_owned(), p.to_arg()]);
            }
            argv
        };
        if self.caps.multi_snapshot || snapshots.len() == 1 {
            let argv = base().args(snapshots.iter().map(ToString::to_string));
            return self.run(argv).await.map(drop);
        }
        for s in snapshots {
            self.run(base().arg(s.to_string())).await?;
        }
        Ok(())
    }

    /// Destroy snapshots of one dataset: one comma list where supported, else one by one.
    pub async fn destroy_snapshots(
        &self,
        dataset: &DatasetName,
        snapshots: &[&str],
        recursive: bool,
    ) -> Result<(), ZfsError> {
        let base = || {
            let argv = self.zfs().arg("destroy");
            if recursive { argv.arg("-r") } else { argv }
        };
        if self.caps.comma_destroy || snapshots.len() == 1 {
            let target = format!("{dataset}@{}", snapshots.join(","));
            return self.retry_busy(base().arg(target)).await;
        }
        for s in snapshots {
            self.retry_busy(base().arg(format!("{dataset}@{s}")))
                .await?;
        }
        Ok(())
    }

    /// `zfs rollback [-r] SNAP`.
    pub async fn rollback(
        &self,
        snapshot: &SnapshotName,
        destroy_newer: bool,
    ) -> Result<(), ZfsError> {
        let mut argv = self.zfs().arg("rollback");
        if destroy_newer {
            argv = argv.arg("-r");
        }
        self.run(argv.arg(snapshot.to_string())).await.map(drop)
    }

    /// `zfs clone [-o k=v]… SNAP TARGET`.
    pub async fn clone_snapshot(
        &self,
        snapshot: &SnapshotName,
        target: &DatasetName,
        properties: &[Assignment],
    ) -> Result<(), ZfsError> {
        let mut argv = self.zfs().arg("clone");
        for p in properties {
            argv = argv.args(["-o".to_owned(), p.to_arg()]);
        }
        let argv = argv.args([snapshot.to_string(), target.to_string()]);
        self.run(argv).await.map(drop)
    }

    /// `zfs hold TAG SNAP`.
    pub async fn hold(&self, snapshot: &SnapshotName, tag: &str) -> Result<(), ZfsError> {
        let argv = self.zfs().args(["hold", tag, &snapshot.to_string()]);
        self.run(argv).await.map(drop)
    }

    /// `zfs release TAG SNAP`.
    pub async fn release(&self, snapshot: &SnapshotName, tag: &str) -> Result<(), ZfsError> {
        let argv = self.zfs().args(["release", tag, &snapshot.to_string()]);
        self.run(argv).await.map(drop)
    }

    /// Hold tags of a snapshot, where `zfs holds` works; `None` where it does not (zfs-fuse),
    /// in which case only the count (`userrefs`) is known.
    pub async fn hold_tags(
        &self,
        snapshot: &SnapshotName,
    ) -> Result<Option<Vec<String>>, ZfsError> {
        if !self.caps.holds_listing {
            return Ok(None);
        }
        let out = self
            .run(self.zfs().args(["holds", "-H", &snapshot.to_string()]))
            .await?;
        Ok(Some(
            out.lines()
                .filter_map(|l| l.split('\t').nth(1))
                .map(str::to_owned)
                .collect(),
        ))
    }

    /// Pools with size and health.
    pub async fn pools(&self) -> Result<Vec<PoolRow>, ZfsError> {
        let mut argv = Argv::new(&self.zpool).args(["list", "-H"]);
        if self.caps.zpool_parsable {
            argv = argv.arg("-p");
        }
        let argv = argv.args(["-o", "name,size,allocated,free,capacity,health"]);
        parse::pool_rows(&self.run(argv).await?)
    }
}

/// `zfs create -s -V <size> -o volmode=dev [-o k=v]… NAME`: the volume behind a VM disk.
///
/// * `-s`: sparse, no `refreservation` (zfs.8 create: "-s Creates a sparse volume with no
///   reservation"), as vm-bhyve's `sparse-zvol` (reference/bhyve.md §5): like a sparse disk
///   file, space is taken as the guest writes.
/// * `-V <size>` in bytes: exact; the caller keeps it a multiple of the volume block size
///   (zfsprops.7 volsize: "a multiple of volblocksize"; `zfs create -V` would round it up).
/// * `-o volmode=dev`: the volume is only a device node, `/dev/zvol/<name>` (a character device
///   on FreeBSD, a block device without partition nodes on Linux): GEOM or udev never taste the
///   guest's partitions and file systems (zfsprops.7 volmode; vm-bhyve creates its zvols
///   with it, reference/bhyve.md §5).
/// * then the caller's properties (`labd:managed=on`).
pub fn volume_create_argv(
    zfs: &str,
    dataset: &DatasetName,
    size: u64,
    properties: &[Assignment],
) -> Argv {
    let mut argv = Argv::new(zfs)
        .args(["create", "-s", "-V"])
        .arg(size.to_string());
    argv = argv.args(["-o", "volmode=dev"]);
    for p in properties {
        argv = argv.args(["-o".to_owned(), p.to_arg()]);
    }
    argv.arg(dataset.as_str())
}

/// How deep `zfs get` descends.
#[derive(Debug, Clone, Copy)]
enum Depth {
    Zero,
    One,
    All,
}

/// A snapshot as read from `zfs get`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotRow {
    /// Full name.
    pub name: String,
    /// Dataset part.
    pub dataset: String,
    /// Snapshot part.
    pub snapshot: String,
    /// Creation, Unix seconds.
    pub creation: u64,
    /// Creation transaction group.
    pub createtxg: u64,
    /// Unique bytes.
    pub used: u64,
    /// Referenced bytes.
    pub referenced: u64,
    /// Number of holds.
    pub userrefs: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_classification_covers_both_zfs() {
        let cases = [
            (
                "cannot open 'p1/nope': dataset does not exist",
                ZfsErrorKind::NotFound,
            ),
            (
                "cannot create 'p1/a': dataset already exists",
                ZfsErrorKind::Exists,
            ),
            (
                "cannot destroy 'p1/a@s1': dataset is busy",
                ZfsErrorKind::Busy,
            ),
            (
                "cannot destroy 'p1/a': filesystem has children\nuse '-r' to destroy",
                ZfsErrorKind::HasChildren,
            ),
            (
                "cannot rollback to 'p1/a@s1': more recent snapshots exist",
                ZfsErrorKind::NewerSnapshots,
            ),
            (
                "cannot hold 'p1/a@s1': tag already exists on this dataset",
                ZfsErrorKind::Exists,
            ),
            (
                "cannot release 'x' from 'p1/a@s1': no such tag on this dataset",
                ZfsErrorKind::NotFound,
            ),
            (
                "cannot set property for 'p1/a': bad numeric value 'abc'",
                ZfsErrorKind::InvalidValue,
            ),
            (
                "cannot destroy 'p1/a': filesystem has dependent clones",
                ZfsErrorKind::HasDependents,
            ),
            (
                "internal error: Function not implemented",
                ZfsErrorKind::Unsupported,
            ),
            ("something new", ZfsErrorKind::Other),
        ];
        for (stderr, kind) in cases {
            assert_eq!(classify(stderr), kind, "{stderr}");
        }
    }

    /// The exact argv of a VM disk's volume. A golden argv and not a run: zfs-fuse, the ZFS the
    /// tests run, has no volumes (`zfs create -V` aborts there, reference/zfs.md §2), so the
    /// command is checked against zfs.8 and zfsprops.7 here (see [`volume_create_argv`]).
    #[test]
    fn golden_volume_create_argv() {
        let ds = DatasetName::parse("tank/labd/vms/web/disk0").expect("name");
        let props = [Assignment {
            name: "labd:managed".to_owned(),
            value: "on".to_owned(),
        }];
        let argv = volume_create_argv("zfs", &ds, 20 << 30, &props);
        assert_eq!(
            argv.to_vec(),
            [
                "zfs",
                "create",
                "-s",
                "-V",
                "21474836480",
                "-o",
                "volmode=dev",
                "-o",
                "labd:managed=on",
                "tank/labd/vms/web/disk0",
            ]
        );
        assert_eq!(
            argv.to_string(),
            "zfs create -s -V 21474836480 -o volmode=dev -o labd:managed=on tank/labd/vms/web/disk0"
        );
    }

    #[test]
    fn exit_error_keeps_stderr_and_first_line() {
        let e = ZfsError::from(RunError::Exit {
            argv: "zfs destroy p1/a".into(),
            code: 1,
            stdout: String::new(),
            stderr: "cannot destroy 'p1/a': filesystem has children\nuse '-r'\np1/a/b\n".into(),
        });
        assert_eq!(e.kind(), Some(ZfsErrorKind::HasChildren));
        assert_eq!(
            e.to_string(),
            "cannot destroy 'p1/a': filesystem has children"
        );
    }
}
