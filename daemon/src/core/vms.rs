//! VMs as datasets: each VM is the dataset `<root>/<vm_root>/<name>` (`[vms] vm_root`, default
//! `vms`) holding its spec as `vm.toml` and its disks as sparse files, or as sparse ZFS volumes
//! `<name>/diskN` below it (`backing = "zvol"`, OpenZFS only). This is the first slice of
//! issue 3: VMs are created, listed, inspected, previewed and destroyed; `supervise.rs` starts
//! and stops them.
//!
//! Rules:
//! * **ZFS is the database.** labd keeps no VM list: every read lists the datasets directly
//!   below `<root>/<vm_root>` and reads their `vm.toml`. A dataset there without a readable,
//!   valid `vm.toml` is listed as `broken` with the reason.
//! * **Assigned once.** The UUID (v4) and the MACs derived from it are written to `vm.toml` at
//!   create and only ever read back afterwards; the dataset also carries the UUID as the user
//!   property `labd:vm`.
//! * **Ownership.** labd creates VM datasets (and `<vm_root>` when missing) with a local
//!   `labd:managed=on`; destroy refuses a dataset without it or without a local `labd:vm`.
//! * Create validates everything (name, template, overrides, and that the ZFS has volumes when
//!   a disk asks for one) before the job, refuses an existing VM, and removes the half-made
//!   dataset (with any volume made so far) again if writing its files or disks fails.
//! * A zvol disk is made in the job: `zfs create -s -V SIZE -o volmode=dev -o
//!   labd:managed=on <vm>/diskN` (the driver's `create_volume`), a check that the block size
//!   OpenZFS chose divides the size, a bounded wait for `/dev/zvol/<vm>/diskN` (udev makes it
//!   asynchronously on Linux, and OpenZFS creates the node from a task queue on both), then the
//!   image, if any, written into the device (`images::import_to_device`).
//! * Destroy is recursive (the VM's snapshots go with it) but refuses held snapshots.
//!   A running VM is refused (the supervisor, `supervise.rs`, knows which run).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::error::invalid;
use super::names::DatasetName;
use super::props::Assignment;
use super::vmspec::{self, ByteSize, Disk, DiskBacking, SpecError, VmSpec};
use super::{Core, Error, Host, Refusal, templates};
use crate::events::EventBus;
use crate::host::zfs::{PropRow, ZfsError, ZfsErrorKind};
use crate::wire::{self, Actor, Job};

use super::datasets::MANAGED;
/// The user property carrying a VM's UUID on its dataset.
pub(super) const VM_PROPERTY: &str = "labd:vm";
/// The spec's file name in the VM's dataset.
pub(super) const SPEC_FILE: &str = "vm.toml";
/// Properties read to list VMs.
const VM_PROPERTIES: &str = "mountpoint,labd:managed,labd:vm";
/// Longest wait for a new volume's device node.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

fn not_found(name: &str) -> Error {
    Error::NotFound {
        what: format!("VM '{name}'"),
    }
}

fn is_not_found(e: &ZfsError) -> bool {
    e.kind() == Some(ZfsErrorKind::NotFound)
}

pub(super) fn managed(name: &str, value: &str) -> Assignment {
    Assignment {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// The dataset holding every VM: `<root>/<vm_root>` (checked when the config was loaded).
pub(super) fn vm_root(host: &Host) -> Result<DatasetName, Error> {
    DatasetName::parse(&format!(
        "{}/{}",
        host.config.zfs.root, host.config.vms.vm_root
    ))
    .map_err(|e| Error::Internal(format!("vms.vm_root: {e}")))
}

/// The dataset of VM `name`, after checking the name (field `name`).
pub(super) fn vm_dataset(host: &Host, name: &str) -> Result<DatasetName, Error> {
    vmspec::validate_vm_name(name).map_err(|e| invalid("name", "invalid_name", e.to_string()))?;
    DatasetName::parse(&format!("{}/{name}", vm_root(host)?))
        .map_err(|e| invalid("name", "invalid_name", e.to_string()))
}

/// Where `<root>/<vm_root>` is (or would be) mounted: its own mountpoint when it exists, else
/// the root's with `vm_root` appended (`/<root>` when the root has no path mountpoint).
pub(super) async fn vm_root_mountpoint(host: &Host) -> Result<PathBuf, Error> {
    let root = vm_root(host)?;
    match host.zfs.get_props(&root, "mountpoint", false).await {
        Ok(rows) => {
            if let Some(m) = rows.into_iter().next().map(|r| r.value)
                && m.starts_with('/')
            {
                return Ok(PathBuf::from(m));
            }
        }
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(e.into()),
    }
    let base = &host.config.zfs.root;
    let mount = host
        .zfs
        .get_props(base, "mountpoint", false)
        .await?
        .into_iter()
        .next()
        .map(|r| r.value)
        .filter(|m| m.starts_with('/'))
        .unwrap_or_else(|| format!("/{base}"));
    Ok(Path::new(&mount).join(&host.config.vms.vm_root))
}

/// What `zfs get` says about one VM dataset.
#[derive(Debug, Default)]
pub(super) struct VmRow {
    dataset: String,
    mountpoint: String,
    managed: bool,
    uuid: Option<String>,
}

impl VmRow {
    /// The VM's name: the last component of its dataset.
    fn name(&self) -> &str {
        self.dataset.rsplit('/').next().unwrap_or_default()
    }
}

/// The datasets directly below `<root>/<vm_root>` (none when it does not exist yet).
async fn vm_datasets(host: &Host) -> Result<Vec<VmRow>, Error> {
    let root = vm_root(host)?;
    let rows = match host.zfs.get_props(&root, VM_PROPERTIES, true).await {
        Ok(rows) => rows,
        Err(e) if is_not_found(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let prefix = format!("{root}/");
    Ok(vm_rows(&rows)
        .into_iter()
        .filter(|v| {
            v.dataset
                .strip_prefix(&prefix)
                .is_some_and(|rest| !rest.contains('/'))
        })
        .collect())
}

/// Fold rows of `zfs get` into one entry per dataset, in ZFS order.
fn vm_rows(rows: &[PropRow]) -> Vec<VmRow> {
    let mut out: Vec<VmRow> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|v| v.dataset != row.name) {
            out.push(VmRow {
                dataset: row.name.clone(),
                ..VmRow::default()
            });
        }
        let Some(v) = out.last_mut() else { continue };
        let local = row.source == "local";
        match row.property.as_str() {
            "mountpoint" => v.mountpoint.clone_from(&row.value),
            MANAGED => v.managed = local && row.value == "on",
            VM_PROPERTY if local && row.value != "-" => v.uuid = Some(row.value.clone()),
            _ => {}
        }
    }
    out
}

/// The dataset row of VM `name`; `not_found` when there is no such VM dataset.
async fn vm_row(host: &Host, name: &str) -> Result<VmRow, Error> {
    let ds = vm_dataset(host, name)?;
    let rows = match host.zfs.get_props(&ds, VM_PROPERTIES, false).await {
        Ok(rows) => rows,
        Err(e) if is_not_found(&e) => return Err(not_found(name)),
        Err(e) => return Err(e.into()),
    };
    vm_rows(&rows)
        .into_iter()
        .next()
        .ok_or_else(|| not_found(name))
}

/// The dataset row and the parsed `vm.toml` of VM `name`.
pub(super) async fn vm_spec(host: &Host, name: &str) -> Result<(VmRow, VmSpec), Error> {
    let row = vm_row(host, name).await?;
    let (_, spec) = read_spec(name, &row)
        .map_err(|e| Error::Internal(format!("VM '{name}' is broken: {e}")))?;
    Ok((row, spec))
}

/// What the supervisor needs to run a VM.
fn start_plan(
    host: &Arc<Host>,
    switches: &super::switches::Switches,
    row: &VmRow,
    spec: VmSpec,
) -> super::supervise::StartPlan {
    let vms = &host.config.vms;
    super::supervise::StartPlan {
        spec,
        dir: PathBuf::from(&row.mountpoint),
        driver: if vms.driver == "bhyve" {
            super::hypervisor::Driver::Bhyve
        } else {
            super::hypervisor::Driver::Qemu {
                accel: vms.accel,
                kernel_dir: vms.kernel_dir.clone(),
            }
        },
        rules: vms.restart,
        switches: switches.clone(),
        host: Arc::clone(host),
    }
}

/// Read and check a VM's `vm.toml`: the text and the spec, or why it cannot be used.
fn read_spec(name: &str, row: &VmRow) -> Result<(String, VmSpec), String> {
    if !row.mountpoint.starts_with('/') {
        return Err(format!(
            "{} has no mountpoint (mountpoint={})",
            row.dataset, row.mountpoint
        ));
    }
    let path = Path::new(&row.mountpoint).join(SPEC_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let spec = VmSpec::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    if spec.name != name {
        return Err(format!(
            "{}: name is '{}', but the dataset is {}",
            path.display(),
            spec.name,
            row.dataset
        ));
    }
    // A VM opens only volumes of its own dataset.
    let own = format!("{}/", row.dataset);
    if let Some((i, v)) = spec.disks.iter().enumerate().find_map(|(i, d)| {
        d.volume
            .as_deref()
            .filter(|v| !v.starts_with(&own))
            .map(|v| (i, v))
    }) {
        return Err(format!(
            "{}: disk[{i}].volume {v} is not below the VM's dataset {}",
            path.display(),
            row.dataset
        ));
    }
    Ok((text, spec))
}

/// The wire form of one VM dataset: from its spec, or `broken` with the reason.
fn vm_info(row: &VmRow, with_text: bool) -> wire::Vm {
    let name = row.name().to_owned();
    match read_spec(&name, row) {
        Ok((text, spec)) => wire::Vm {
            name,
            uuid: Some(spec.uuid),
            template: spec.template.clone(),
            cpus: spec.cpu.count,
            memory: spec.memory.bytes(),
            loader: spec.loader.as_str().to_owned(),
            disks: spec
                .disks
                .iter()
                .map(|d| wire::VmDisk {
                    file: d.file.clone(),
                    size: d.size.map(ByteSize::bytes),
                    image: d.image.clone(),
                    bus: d.bus.as_str().to_owned(),
                    backing: d.backing.as_str().to_owned(),
                    volume: d.volume.clone(),
                })
                .collect(),
            nics: spec
                .nics
                .iter()
                .map(|n| wire::VmNic {
                    mac: n.mac.to_string(),
                    switch: n.switch.clone(),
                    model: n.model.as_str().to_owned(),
                    address: n.address.clone(),
                })
                .collect(),
            dataset: row.dataset.clone(),
            state: "stopped".to_owned(),
            pid: None,
            last_exit: None,
            restarts: 0,
            message: None,
            error: None,
            text: with_text.then_some(text),
            ssh_host_key: host_key(Path::new(&row.mountpoint)),
        },
        Err(error) => wire::Vm {
            name,
            uuid: row.uuid.as_deref().and_then(|u| Uuid::parse_str(u).ok()),
            template: String::new(),
            cpus: 0,
            memory: 0,
            loader: String::new(),
            disks: Vec::new(),
            nics: Vec::new(),
            dataset: row.dataset.clone(),
            state: "broken".to_owned(),
            pid: None,
            last_exit: None,
            restarts: 0,
            message: None,
            error: Some(error),
            text: None,
            ssh_host_key: None,
        },
    }
}

/// Put the request's per-VM settings into `spec` (boot disk image, SSH keys, the first NIC's
/// address) and check the result; errors name the request field.
fn apply_request(spec: &mut VmSpec, req: &wire::CreateVm) -> Result<(), Error> {
    if let Some(image) = &req.image {
        let boot = spec
            .disks
            .iter()
            .position(|d| d.boot)
            .or(if spec.disks.is_empty() { None } else { Some(0) })
            .ok_or_else(|| {
                invalid(
                    "image",
                    "no_disk",
                    format!("template '{}' has no disk to put an image on", req.template),
                )
            })?;
        spec.disks[boot].image = Some(image.clone());
    }
    if !req.ssh_keys.is_empty() {
        let ci = spec
            .cloud_init
            .as_mut()
            .filter(|c| c.enabled)
            .ok_or_else(|| {
                invalid(
                    "ssh_keys",
                    "no_cloud_init",
                    format!(
                        "template '{}' has no cloud-init to hand SSH keys to the guest",
                        req.template
                    ),
                )
            })?;
        ci.ssh_authorized_keys
            .extend(req.ssh_keys.iter().map(|k| k.trim().to_owned()));
    }
    if req.ip.is_some() || req.gateway.is_some() || !req.nameservers.is_empty() {
        let field = if req.ip.is_some() { "ip" } else { "gateway" };
        let nic = spec.nics.first_mut().ok_or_else(|| {
            invalid(
                field,
                "no_nic",
                format!("template '{}' has no NIC", req.template),
            )
        })?;
        nic.address = req.ip.clone();
        if let Some(gw) = &req.gateway {
            nic.gateway = Some(gw.parse().map_err(|_| {
                invalid(
                    "gateway",
                    "invalid_address",
                    format!("'{gw}' is not an IP address"),
                )
            })?);
        }
        nic.nameservers = req
            .nameservers
            .iter()
            .map(|n| {
                n.parse().map_err(|_| {
                    invalid(
                        "nameservers",
                        "invalid_address",
                        format!("'{n}' is not an IP address"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
    }
    spec.validate()
        .map_err(|e| invalid(&request_field(&e), "invalid_spec", e.to_string()))
}

/// The `vm create` request field a spec error comes from.
fn request_field(e: &SpecError) -> String {
    match e.key() {
        Some(k) if k.ends_with("address") => "ip".to_owned(),
        Some(k) if k.ends_with("gateway") => "gateway".to_owned(),
        Some(k) if k.ends_with("nameservers") => "nameservers".to_owned(),
        Some(k) if k.starts_with("cloud_init.ssh_authorized_keys") => {
            k.replacen("cloud_init.ssh_authorized_keys", "ssh_keys", 1)
        }
        _ => spec_field(e).to_owned(),
    }
}

/// Write the VM's cloud-init seed (again: it follows the spec) and make sure its SSH host key
/// exists; returns the public key, or `None` when the VM has no seed.
pub(super) async fn refresh_seed(dir: &Path, spec: &VmSpec) -> Result<Option<String>, Error> {
    use crate::host::seed;
    if spec.seed().is_none() {
        return Ok(None);
    }
    let runner = crate::host::runner::Runner::new(Duration::from_secs(60));
    let failed = |e: seed::SeedError| Error::Internal(format!("cloud-init seed: {e}"));
    let key = seed::ensure_host_key(&runner, dir, &spec.name)
        .await
        .map_err(failed)?;
    let files = super::cloudinit::render(spec, &key)
        .map_err(|e| invalid(&request_field(&e), "invalid_spec", e.to_string()))?;
    let path = seed::write_seed(&runner, dir, &files, &seed::SeedDriver::host_default())
        .await
        .map_err(failed)?;
    super::jobs::log_line(format!("wrote the cloud-init seed {}", path.display()));
    Ok(Some(key.public))
}

/// The guest's SSH host key as recorded in its directory.
fn host_key(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join(crate::host::seed::HOST_KEY_PUB_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The image file of each disk that names one (by disk index), checked before anything is
/// made. `requested` says the boot disk's image came from the request (`image`) rather than
/// the template.
fn disk_images(spec: &VmSpec, dir: &Path, requested: bool) -> Result<Vec<(usize, PathBuf)>, Error> {
    let mut out = Vec::new();
    for (i, d) in spec.disks.iter().enumerate() {
        let Some(name) = &d.image else { continue };
        let path = crate::host::images::resolve(dir, name).map_err(|e| {
            let how = if requested {
                String::new()
            } else {
                format!(" (named by the template's disk[{i}]; pass --image to use another)")
            };
            invalid("image", "unknown_image", format!("{e}{how}"))
        })?;
        out.push((i, path));
    }
    Ok(out)
}

/// The request field a spec error belongs to.
fn spec_field(e: &SpecError) -> &'static str {
    match e.key() {
        Some(k) if k.starts_with("cpu") => "cpus",
        Some("memory") => "memory",
        Some("name") => "name",
        _ => "template",
    }
}

/// Write `text` to `dir/file` atomically: a temporary file, synced, then renamed over.
pub(super) fn write_atomic(dir: &Path, file: &str, text: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{file}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(file))
}

/// Refuse a zvol disk on a ZFS without volumes (zfs-fuse), before anything is made: the
/// template decides the backing, so the field is `template` and the message names the disk.
fn check_backings(host: &Host, spec: &VmSpec) -> Result<(), Error> {
    if host.zfs.capabilities().zvols {
        return Ok(());
    }
    match spec.zvol_disks().next() {
        None => Ok(()),
        Some(i) => Err(invalid(
            "template",
            "unsupported_backing",
            format!(
                "disk[{i}].backing: \"zvol\" needs ZFS volumes with volmode (OpenZFS), and this \
                 ZFS has none (zfs-fuse cannot create volumes); use backing = \"file\" in \
                 template '{}'",
                spec.template
            ),
        )),
    }
}

/// Make zvol disk `i` of VM `spec` (module docs): the volume, the block-size check and the wait
/// for its device node. Returns the volume's name.
async fn make_volume(
    host: &Host,
    events: &EventBus,
    actor: Option<Actor>,
    spec: &VmSpec,
    i: usize,
    disk: &Disk,
) -> Result<String, Error> {
    let (Some(volume), Some(size), Some(device)) = (&disk.volume, disk.size, disk.device()) else {
        return Err(Error::Internal(format!(
            "disk[{i}] of VM '{}' is a zvol without a volume or size",
            spec.name
        )));
    };
    let ds = DatasetName::parse(volume)
        .map_err(|e| Error::Internal(format!("disk[{i}].volume: {e}")))?;
    host.zfs
        .create_volume(&ds, size.bytes(), &[managed(MANAGED, "on")])
        .await?;
    events.publish(
        "dataset.created",
        volume,
        actor,
        json!({"vm": spec.name.as_str(), "volsize": size.bytes()}),
    );
    super::jobs::log_line(format!(
        "created the sparse volume {volume} of {size} (volmode=dev)"
    ));
    let rows = host.zfs.get_props(&ds, "volblocksize", false).await?;
    let block = rows
        .iter()
        .find(|r| r.property == "volblocksize")
        .and_then(|r| r.value.parse::<u64>().ok())
        .unwrap_or(0);
    if block == 0 || !size.bytes().is_multiple_of(block) {
        return Err(invalid(
            "template",
            "invalid_spec",
            format!(
                "disk[{i}].size: {size} is not a multiple of the volume's block size \
                 ({block} bytes, the pool's default)"
            ),
        ));
    }
    wait_for_device(Path::new(&device), DEVICE_WAIT)
        .await
        .map_err(|waited| {
            Error::Internal(format!(
                "{device} did not appear within {}s of creating {volume}",
                waited.as_secs()
            ))
        })?;
    Ok(volume.clone())
}

/// Wait until `path` exists, checking every 50 ms for at most `limit` (returned on timeout).
async fn wait_for_device(path: &Path, limit: Duration) -> Result<(), Duration> {
    let start = tokio::time::Instant::now();
    loop {
        if tokio::fs::metadata(path).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(limit);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Write the VM's files into its mounted dataset: `vm.toml`, then a sparse file per sized disk
/// (zvol disks are volumes, made by [`make_volume`]).
fn write_files(dir: &Path, spec: &VmSpec, text: &str) -> Result<Vec<String>, Error> {
    let io = |what: &Path, e: std::io::Error| {
        Error::Internal(format!("cannot write {}: {e}", what.display()))
    };
    write_atomic(dir, SPEC_FILE, text).map_err(|e| io(&dir.join(SPEC_FILE), e))?;
    super::jobs::log_line(format!("wrote {}", dir.join(SPEC_FILE).display()));
    let mut created = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let path = dir.join(&disk.file);
        if disk.image.is_some() || disk.backing == DiskBacking::Zvol {
            // Made from its image, or as a volume, by the caller.
            continue;
        }
        let Some(size) = disk.size else {
            super::jobs::log_line(format!("disk[{i}] has no size: no file created"));
            continue;
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|f| f.set_len(size.bytes()))
            .map_err(|e| io(&path, e))?;
        super::jobs::log_line(format!(
            "created sparse {} of {size} ({} bytes)",
            path.display(),
            size.bytes()
        ));
        created.push(disk.file.clone());
    }
    Ok(created)
}

/// The job of `create_vm`: under the locks of the VM dataset and `<vm_root>`.
async fn create_vm_job(
    host: Arc<Host>,
    events: EventBus,
    ds: DatasetName,
    spec: VmSpec,
    images: Vec<(usize, PathBuf)>,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let name = spec.name.clone();
    refuse_existing(&host, &ds, &name).await?;
    let text = spec
        .to_toml()
        .map_err(|e| Error::Internal(format!("VM spec of '{name}': {e}")))?;
    let root = vm_root(&host)?;
    match host.zfs.get_props(&root, "type", false).await {
        Ok(_) => {}
        Err(e) if is_not_found(&e) => {
            host.zfs
                .create(&root, &[managed(MANAGED, "on")], true)
                .await?;
            events.publish(
                "dataset.created",
                root.as_str(),
                actor,
                json!({"parent_of": ds.as_str()}),
            );
        }
        Err(e) => return Err(e.into()),
    }
    let uuid = spec.uuid.to_string();
    let properties = [managed(MANAGED, "on"), managed(VM_PROPERTY, &uuid)];
    host.zfs.create(&ds, &properties, false).await?;
    events.publish(
        "dataset.created",
        ds.as_str(),
        actor,
        json!({"vm": name.as_str()}),
    );
    let written = async {
        let dir = mounted_dir(&host, &ds).await?;
        let mountpoint = dir.display().to_string();
        let mut disks = write_files(&dir, &spec, &text)?;
        for i in spec.zvol_disks() {
            disks.push(make_volume(&host, &events, actor, &spec, i, &spec.disks[i]).await?);
        }
        for (i, src) in &images {
            let disk = &spec.disks[*i];
            let failed = |e: crate::host::images::ImageError| {
                invalid("image", "import_failed", e.to_string())
            };
            match (disk.device(), disk.size) {
                (Some(device), Some(size)) => {
                    crate::host::images::import_to_device(src, Path::new(&device), size.bytes())
                        .await
                        .map_err(failed)?;
                }
                _ => {
                    let dst = dir.join(&disk.file);
                    crate::host::images::import(src, &dst, disk.size.map(ByteSize::bytes))
                        .await
                        .map_err(failed)?;
                    disks.push(disk.file.clone());
                }
            }
        }
        let host_key = refresh_seed(&dir, &spec).await?;
        Ok::<_, Error>((mountpoint, disks, host_key))
    }
    .await;
    let (mountpoint, disks, host_key) = match written {
        Ok(done) => done,
        Err(e) => {
            super::jobs::log_line(format!("{e}; destroying {ds} again"));
            if let Err(undo) = host.zfs.destroy(&ds, true).await {
                tracing::warn!(dataset = %ds, error = %undo, "cannot remove a half-made VM dataset");
            } else {
                events.publish(
                    "dataset.destroyed",
                    ds.as_str(),
                    actor,
                    json!({"vm": name.as_str()}),
                );
            }
            return Err(e);
        }
    };
    let macs: Vec<String> = spec.nics.iter().map(|n| n.mac.to_string()).collect();
    let data = json!({
        "uuid": uuid,
        "template": spec.template,
        "dataset": ds.as_str(),
        "macs": macs,
    });
    events.publish("vm.created", &name, actor, data);
    Ok(json!({
        "name": name,
        "uuid": uuid,
        "dataset": ds.as_str(),
        "path": mountpoint,
        "macs": macs,
        "disks": disks,
        "ssh_host_key": host_key,
    }))
}

/// The mountpoint of a dataset labd writes files into (a VM's, or `<root>/<vm_root>`), which
/// must be mounted.
pub(super) async fn mounted_dir(host: &Host, ds: &DatasetName) -> Result<PathBuf, Error> {
    let rows = host.zfs.get_props(ds, "mountpoint,mounted", false).await?;
    let prop = |p: &str| {
        rows.iter()
            .find(|r| r.property == p)
            .map(|r| r.value.clone())
            .unwrap_or_default()
    };
    let mountpoint = prop("mountpoint");
    if !mountpoint.starts_with('/') || prop("mounted") == "no" {
        return Err(Error::Internal(format!(
            "{ds} is not mounted (mountpoint={mountpoint}): labd cannot read or write its files"
        )));
    }
    Ok(PathBuf::from(mountpoint))
}

/// Refuse when the VM's dataset already exists (code `exists`, status 409 like ZFS's own).
pub(super) async fn refuse_existing(
    host: &Host,
    ds: &DatasetName,
    name: &str,
) -> Result<(), Error> {
    match host.zfs.get_props(ds, "type", false).await {
        Ok(_) => {
            let message = format!("VM '{name}' already exists (dataset {ds})");
            Err(Error::Zfs(ZfsError::Command {
                kind: ZfsErrorKind::Exists,
                stderr: message.clone(),
                message,
            }))
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The job of `destroy_vm`.
async fn destroy_vm_job(
    host: Arc<Host>,
    events: EventBus,
    ds: DatasetName,
    name: String,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let rows = match host.zfs.get_props(&ds, VM_PROPERTIES, true).await {
        Ok(rows) => rows,
        Err(e) if is_not_found(&e) => return Err(not_found(&name)),
        Err(e) => return Err(e.into()),
    };
    let all = vm_rows(&rows);
    let Some(vm) = all.iter().find(|v| v.dataset == ds.as_str()) else {
        return Err(not_found(&name));
    };
    if !vm.managed || vm.uuid.is_none() {
        return Err(Error::refused(
            Refusal::NotManaged,
            format!(
                "labd did not create {ds} as a VM (no local labd:managed=on and labd:vm); \
                 it is left alone"
            ),
        ));
    }
    let unmanaged: Vec<&str> = all
        .iter()
        .filter(|v| !v.managed)
        .map(|v| v.dataset.as_str())
        .collect();
    if !unmanaged.is_empty() {
        return Err(Error::refused(
            Refusal::NotManaged,
            format!(
                "labd did not create {} inside VM '{name}'; remove it first",
                unmanaged.join(", ")
            ),
        ));
    }
    let snaps = host.zfs.snapshots(&ds, true).await?;
    let held: Vec<&str> = snaps
        .iter()
        .filter(|s| s.userrefs > 0)
        .map(|s| s.name.as_str())
        .collect();
    if !held.is_empty() {
        return Err(Error::refused(
            Refusal::Held,
            format!(
                "VM '{name}' has held snapshots: {}; release them first",
                held.join(", ")
            ),
        ));
    }
    let uuid = vm.uuid.clone();
    host.zfs.destroy(&ds, true).await?;
    for child in all.iter().filter(|v| v.dataset != ds.as_str()) {
        let data = json!({"recursive_from": ds.as_str()});
        events.publish("dataset.destroyed", &child.dataset, actor, data);
    }
    events.publish(
        "dataset.destroyed",
        ds.as_str(),
        actor,
        json!({"recursive": true, "vm": name.as_str()}),
    );
    events.publish(
        "vm.destroyed",
        &name,
        actor,
        json!({"uuid": uuid, "dataset": ds.as_str(), "snapshots": snaps.len()}),
    );
    Ok(json!({"name": name, "dataset": ds.as_str(), "snapshots": snaps.len()}))
}

impl Core {
    /// Create VM `req.name` from a template: validated here, then a `vm.create` job makes its
    /// dataset, writes `vm.toml` and creates its sparse disks (files or volumes). The VM is not
    /// started.
    pub async fn create_vm(&self, req: wire::CreateVm, actor: Option<Actor>) -> Result<Job, Error> {
        let host = self.host();
        let ds = vm_dataset(&host, &req.name)?;
        vmspec::validate_vm_name(&req.template)
            .map_err(|e| invalid("template", "invalid_name", e.to_string()))?;
        let mut template = match templates::find_template(self, &req.template) {
            Err(Error::NotFound { what }) => {
                return Err(invalid(
                    "template",
                    "unknown_template",
                    format!("{what} does not exist (labctl template list)"),
                ));
            }
            other => other?,
        };
        if let Some(cpus) = req.cpus {
            template.cpu.count = cpus;
            template.cpu.sockets = None;
            template.cpu.cores = None;
            template.cpu.threads = None;
        }
        if let Some(memory) = &req.memory {
            template.memory = memory
                .parse::<ByteSize>()
                .map_err(|e| invalid("memory", "invalid_size", format!("'{memory}': {e}")))?;
        }
        let mut spec = vmspec::instantiate(&template, &req.template, &req.name, Uuid::new_v4())
            .map_err(|e| invalid(spec_field(&e), "invalid_spec", e.to_string()))?;
        apply_request(&mut spec, &req)?;
        spec.place_volumes(ds.as_str());
        spec.validate()
            .map_err(|e| invalid(spec_field(&e), "invalid_spec", e.to_string()))?;
        check_backings(&host, &spec)?;
        super::cloudinit::check(&spec)
            .map_err(|e| invalid(&request_field(&e), "invalid_spec", e.to_string()))?;
        let images = disk_images(&spec, &host.config.vms.images_dir, req.image.is_some())?;
        refuse_existing(&host, &ds, &req.name).await?;
        let events = self.events.clone();
        let keys = vec![ds.to_string(), vm_root(&host)?.to_string()];
        self.jobs
            .spawn("vm.create", &req.name, actor, keys, move || {
                create_vm_job(host, events, ds, spec, images, actor)
            })
    }

    /// Every VM: the datasets directly below `<root>/<vm_root>`, each with its `vm.toml`.
    pub async fn list_vms(&self) -> Result<Vec<wire::Vm>, Error> {
        let host = self.host();
        let mut vms: Vec<wire::Vm> = vm_datasets(&host)
            .await?
            .iter()
            .map(|v| self.with_status(vm_info(v, false)))
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(vms)
    }

    /// One VM with its `vm.toml` text.
    pub async fn get_vm(&self, name: &str) -> Result<wire::Vm, Error> {
        let host = self.host();
        let row = vm_row(&host, name).await?;
        Ok(self.with_status(vm_info(&row, true)))
    }

    /// `vm` with the supervisor's state (running, pid, last exit) over the dataset's.
    fn with_status(&self, mut vm: wire::Vm) -> wire::Vm {
        if vm.state != "broken"
            && let Some(st) = self.vms.status(&vm.name)
        {
            vm.state = st.phase.as_str().to_owned();
            vm.pid = st.pid;
            vm.last_exit = st.last_exit.map(|e| e.meaning.to_string());
            vm.restarts = st.restarts;
            vm.message = st.message;
        }
        vm
    }

    /// Start VM `name` under the configured driver: a `vm.start` job that starts the
    /// hypervisor and leaves the VM under the supervisor's watch (QEMU only so far).
    pub async fn start_vm(&self, name: &str, actor: Option<Actor>) -> Result<Job, Error> {
        let host = self.host();
        let (row, spec) = vm_spec(&host, name).await?;
        self.switches.check_nics(&host, &spec).await?;
        let plan = start_plan(&host, &self.switches, &row, spec);
        let sup = Arc::clone(&self.vms);
        let events = self.events.clone();
        self.jobs.spawn(
            "vm.start",
            name,
            actor,
            vec![row.dataset.clone()],
            move || async move {
                // The seed follows the spec (an edited vm.toml, a new labd).
                refresh_seed(&plan.dir, &plan.spec).await?;
                super::supervise::start(sup, events, plan, actor).await
            },
        )
    }

    /// At labd's start: re-adopt the VMs whose hypervisor outlived the last labd (cleaning
    /// stale run records), restore the switches (and remove stale taps), then start the
    /// `autostart` VMs in `boot_order`, pausing each one's `boot_delay` before the next.
    /// Returns when all were started.
    pub async fn start_vms_at_boot(&self) {
        let host = self.host();
        let boot = self.adopt_vms(&host).await;
        // Bridges do not survive a host reboot, and taps of VMs that do not run (now that the
        // survivors are adopted) are leftovers.
        self.restore_network().await;
        if boot.is_empty() {
            return;
        }
        let mut boot = boot;
        boot.sort_by_key(|p| (p.spec.boot_order, p.spec.name.clone()));
        for plan in boot {
            let name = plan.spec.name.clone();
            let delay = plan.spec.boot_delay.get();
            match self.start_vm(&name, None).await {
                Ok(job) => {
                    tracing::info!(vm = %name, job = %job.id, "autostart");
                    let _ = self.jobs.wait(job.id, Duration::from_secs(60)).await;
                }
                Err(e) => tracing::warn!(vm = %name, error = %e, "autostart failed"),
            }
            tokio::time::sleep(delay).await;
        }
    }

    /// Re-adopt the VMs that still run (or clean their stale records); returns the plans of
    /// the `autostart` VMs that do not run.
    async fn adopt_vms(&self, host: &Arc<Host>) -> Vec<super::supervise::StartPlan> {
        let rows = match vm_datasets(host).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list VMs at start");
                return Vec::new();
            }
        };
        let mut boot = Vec::new();
        for row in rows.into_iter().filter(|v| v.managed) {
            let Ok((_, spec)) = read_spec(row.name(), &row) else {
                continue;
            };
            let plan = start_plan(host, &self.switches, &row, spec);
            if super::supervise::adopt(&self.vms, &self.events, plan.clone()).await {
                continue;
            }
            if plan.spec.autostart {
                boot.push(plan);
            }
        }
        boot
    }

    /// Stop VM `name`: a `vm.stop` job (the ACPI power button, then SIGKILL after the spec's
    /// stop_timeout; `force` kills at once).
    pub fn stop_vm(&self, name: &str, force: bool, actor: Option<Actor>) -> Result<Job, Error> {
        let host = self.host();
        let ds = vm_dataset(&host, name)?;
        let sup = Arc::clone(&self.vms);
        let owned = name.to_owned();
        self.jobs
            .spawn("vm.stop", name, actor, vec![ds.to_string()], move || {
                super::supervise::stop(sup, owned, force)
            })
    }

    /// Restart VM `name`: a `vm.restart` job that stops it (as `stop_vm`; a VM that is not
    /// running is simply started) and starts it again with its current `vm.toml`.
    pub async fn restart_vm(
        &self,
        name: &str,
        force: bool,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let host = self.host();
        let (row, spec) = vm_spec(&host, name).await?;
        self.switches.check_nics(&host, &spec).await?;
        let plan = start_plan(&host, &self.switches, &row, spec);
        let sup = Arc::clone(&self.vms);
        let events = self.events.clone();
        let owned = name.to_owned();
        self.jobs.spawn(
            "vm.restart",
            name,
            actor,
            vec![row.dataset.clone()],
            move || async move {
                let stopped = super::supervise::stop(Arc::clone(&sup), owned, force).await?;
                refresh_seed(&plan.dir, &plan.spec).await?;
                let started = super::supervise::start(sup, events, plan, actor).await?;
                Ok(json!({"stop": stopped, "start": started}))
            },
        )
    }

    /// Destroy a VM's dataset, its disks and snapshots: a `vm.destroy` job. Refuses a dataset
    /// labd did not create as a VM and held snapshots.
    pub fn destroy_vm(&self, name: &str, actor: Option<Actor>) -> Result<Job, Error> {
        let host = self.host();
        let ds = vm_dataset(&host, name)?;
        if self.vms.is_active(name) {
            return Err(Error::refused(
                super::Refusal::Running,
                format!("VM '{name}' is running; stop it first (labctl vm stop {name})"),
            ));
        }
        let events = self.events.clone();
        let switches = self.switches.clone();
        let name = name.to_owned();
        self.jobs.spawn(
            "vm.destroy",
            &name.clone(),
            actor,
            vec![ds.to_string()],
            move || async move {
                let done =
                    destroy_vm_job(Arc::clone(&host), events, ds, name.clone(), actor).await?;
                // Taps left by a run that ended without labd (they are removed at every stop).
                if let Err(e) = switches.detach_taps(&host, &name).await {
                    super::jobs::log_line(format!("cannot remove the VM's taps: {e}"));
                }
                Ok(done)
            },
        )
    }

    /// The console of running VM `name` (`labctl vm console`), and a future that completes
    /// when the VM has stopped for good.
    pub async fn vm_console(
        &self,
        name: &str,
    ) -> Result<
        (
            Arc<super::console::Console>,
            impl std::future::Future<Output = ()> + use<>,
        ),
        Error,
    > {
        if let Some(attached) = self.vms.console(name) {
            return Ok(attached);
        }
        let host = self.host();
        vm_row(&host, name).await?;
        Err(Error::refused(
            Refusal::NotRunning,
            format!("VM '{name}' is not running (labctl vm start {name})"),
        ))
    }

    /// The commands `driver` would run to start this VM, with its own directory, UUID and
    /// MACs.
    pub async fn vm_command(
        &self,
        name: &str,
        driver: Option<&str>,
    ) -> Result<wire::CommandPreview, Error> {
        let driver = templates::check_driver(driver)?;
        let host = self.host();
        let (row, spec) = vm_spec(&host, name).await?;
        templates::preview(&spec, driver, PathBuf::from(&row.mountpoint), "name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, property: &str, value: &str, source: &str) -> PropRow {
        PropRow::new(name, property, value, source)
    }

    #[test]
    fn only_local_markers_count() {
        let rows = [
            row("t/labd/vms/a", "mountpoint", "/m/vms/a", "inherited from t"),
            row("t/labd/vms/a", MANAGED, "on", "local"),
            row("t/labd/vms/a", VM_PROPERTY, "u-1", "local"),
            row(
                "t/labd/vms/a/x",
                MANAGED,
                "on",
                "inherited from t/labd/vms/a",
            ),
            row(
                "t/labd/vms/a/x",
                VM_PROPERTY,
                "u-1",
                "inherited from t/labd/vms/a",
            ),
        ];
        let vms = vm_rows(&rows);
        assert_eq!(vms.len(), 2);
        assert!(vms[0].managed && vms[0].uuid.as_deref() == Some("u-1"));
        assert!(!vms[1].managed && vms[1].uuid.is_none());
        assert_eq!(vms[0].mountpoint, "/m/vms/a");
    }

    #[test]
    fn unreadable_spec_is_broken_with_the_reason() {
        let v = VmRow {
            dataset: "t/labd/vms/gone".into(),
            mountpoint: "/nonexistent/labd-test/gone".into(),
            managed: true,
            uuid: None,
        };
        let info = vm_info(&v, true);
        assert_eq!(
            (info.name.as_str(), info.state.as_str()),
            ("gone", "broken")
        );
        assert!(info.error.is_some_and(|e| e.contains("vm.toml")));
    }

    #[test]
    fn files_are_written_and_disks_sparse() {
        let dir = std::env::temp_dir().join(format!("labd-vms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let text = include_str!("../../../vm-templates/docker-host.toml");
        let t = vmspec::Template::parse(text).expect("template");
        let mut spec = vmspec::instantiate(&t, "docker-host", "web", Uuid::new_v4()).expect("spec");
        // A disk with an image is made by the importer; a blank one here.
        spec.disks[0].image = None;
        let toml = spec.to_toml().expect("toml");
        let disks = write_files(&dir, &spec, &toml).expect("write");
        assert_eq!(disks, ["disk0.img"]);
        let back = std::fs::read_to_string(dir.join(SPEC_FILE)).expect("read");
        assert_eq!(VmSpec::from_toml(&back).expect("parse"), spec);
        let meta = std::fs::metadata(dir.join("disk0.img")).expect("disk");
        assert_eq!(meta.len(), 20 << 30);
        // A second create into the same directory does not overwrite a disk.
        assert!(write_files(&dir, &spec, &toml).is_err());
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    fn zvol_spec(vm_dataset: &str) -> VmSpec {
        let text = include_str!("../../../vm-templates/docker-host.toml")
            .replace("size = \"20G\"", "size = \"20G\"\nbacking = \"zvol\"");
        let t = vmspec::Template::parse(&text).expect("template");
        let mut spec = vmspec::instantiate(&t, "docker-host", "web", Uuid::new_v4()).expect("spec");
        spec.place_volumes(vm_dataset);
        spec
    }

    #[test]
    fn zvol_disks_make_no_file_and_stay_in_their_vm() {
        let dir = std::env::temp_dir().join(format!("labd-vms-zvol-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut spec = zvol_spec("t/labd/vms/web");
        spec.disks[0].image = None;
        let toml = spec.to_toml().expect("toml");
        let disks = write_files(&dir, &spec, &toml).expect("write");
        assert!(disks.is_empty(), "{disks:?}");
        assert!(!dir.join("disk0").exists() && !dir.join("disk0.img").exists());
        let row = VmRow {
            dataset: "t/labd/vms/web".into(),
            mountpoint: dir.display().to_string(),
            managed: true,
            uuid: None,
        };
        let (_, back) = read_spec("web", &row).expect("own volume");
        assert_eq!(
            back.disks[0].device().as_deref(),
            Some("/dev/zvol/t/labd/vms/web/disk0")
        );
        // A vm.toml pointing at another VM's volume makes the VM broken, not a way in.
        let foreign = zvol_spec("t/labd/vms/other").to_toml().expect("toml");
        write_atomic(&dir, SPEC_FILE, &foreign).expect("write");
        let e = read_spec("web", &row).expect_err("foreign volume");
        assert!(
            e.contains("disk[0].volume") && e.contains("not below"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[tokio::test]
    async fn device_wait_is_bounded() {
        let dir = std::env::temp_dir().join(format!("labd-vms-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let node = dir.join("disk0");
        let later = node.clone();
        let maker = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            std::fs::write(later, b"").expect("node");
        });
        wait_for_device(&node, Duration::from_secs(5))
            .await
            .expect("appears");
        maker.await.expect("maker");
        let start = std::time::Instant::now();
        let waited = wait_for_device(&dir.join("never"), Duration::from_millis(300))
            .await
            .expect_err("never appears");
        assert_eq!(waited, Duration::from_millis(300));
        assert!(start.elapsed() >= Duration::from_millis(300));
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn spec_errors_name_the_request_field() {
        let e = SpecError::Invalid {
            key: "cpu.count".into(),
            detail: "x".into(),
        };
        assert_eq!(spec_field(&e), "cpus");
        let e = SpecError::Invalid {
            key: "memory".into(),
            detail: "x".into(),
        };
        assert_eq!(spec_field(&e), "memory");
    }
}
