//! `vm snapshot` and `vm clone`: a VM's dataset (all its disks, its spec and seed together)
//! snapshotted in one transaction, and a new VM cloned from such a snapshot.
//!
//! A clone is a ZFS clone of the whole VM dataset, so it costs no space until it diverges and
//! depends on its origin snapshot (the source VM cannot be destroyed while clones exist:
//! `zfs promote` the clone first). A zvol disk, a child volume of the VM's dataset, is cloned
//! the same way from the same (recursive) snapshot, with `volmode=dev` again (a clone does not
//! keep its origin's local properties) and recorded at its new place in the clone's `vm.toml`;
//! a snapshot taken without `-r` has no volume snapshots and the clone fails, removing what it
//! made. It is a new machine: a fresh uuid, MACs derived from it, a
//! new SSH host key and seed (cloud-init sees a new instance-id and sets the clone up as a
//! new host), no static address (two VMs must not share one: the clone's NIC uses DHCP until
//! `vm.toml` says otherwise), and none of the source's run state or logs.

use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;
use uuid::Uuid;

use super::error::invalid;
use super::names::{self, DatasetName, SnapshotName};
use super::vms::{
    SPEC_FILE, VM_PROPERTY, managed, mounted_dir, refresh_seed, refuse_existing, vm_dataset,
    vm_spec, write_atomic,
};
use super::vmspec::{self, MacAddr, VmSpec};
use super::{Core, Error, Host};
use crate::events::EventBus;
use crate::wire::{self, Actor, Job};

use super::datasets::MANAGED;

/// Files of a VM's directory that belong to one machine and one run, not to its disks: a
/// clone starts without them (its run record, logs and their rotations, sockets, seed and
/// host key).
fn instance_files() -> Vec<String> {
    let mut files: Vec<String> = [
        super::hypervisor::RUN_FILE,
        "qemu.log",
        "bhyve.log",
        "console.sock",
        "qmp.sock",
        "seed.iso",
        crate::host::seed::HOST_KEY_FILE,
        crate::host::seed::HOST_KEY_PUB_FILE,
        "console.log",
    ]
    .map(str::to_owned)
    .into();
    files.extend((1..=super::console::LOG_KEEP).map(|n| format!("console.log.{n}")));
    files
}

impl Core {
    /// Snapshot VM `name`: its dataset and any children in one transaction (a running VM's
    /// disks are crash-consistent, as after a power cut).
    pub async fn snapshot_vm(
        &self,
        name: &str,
        req: wire::SnapshotVm,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let host = self.host();
        let ds = vm_dataset(&host, name)?;
        vm_spec(&host, name).await?;
        self.create_snapshot(
            ds.as_str(),
            wire::CreateSnapshot {
                name: req.name,
                recursive: true,
            },
            actor,
        )
    }

    /// Clone VM `name` into the new VM `req.target` (module docs): a `vm.clone` job.
    pub async fn clone_vm(
        &self,
        name: &str,
        req: wire::CloneVm,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let host = self.host();
        vmspec::validate_vm_name(&req.target)
            .map_err(|e| invalid("target", "invalid_name", e.to_string()))?;
        let target = vm_dataset(&host, &req.target)?;
        let source = vm_dataset(&host, name)?;
        let (_, spec) = vm_spec(&host, name).await?;
        let snapshot = match &req.snapshot {
            Some(s) => {
                names::validate_snapshot_component(s).map_err(|e| Error::name("snapshot", &e))?;
                s.clone()
            }
            None => format!(
                "clone-{}-{}",
                req.target,
                Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
            ),
        };
        let snap = SnapshotName::new(source.clone(), &snapshot)
            .map_err(|e| Error::name("snapshot", &e))?;
        refuse_existing(&host, &target, &req.target).await?;
        let events = self.events.clone();
        let take = req.snapshot.is_none();
        let keys = vec![source.to_string(), target.to_string()];
        let job = CloneJob {
            host,
            events,
            spec,
            snap,
            take,
            target,
            target_name: req.target.clone(),
            actor,
        };
        self.jobs
            .spawn("vm.clone", &req.target, actor, keys, move || job.run())
    }
}

struct CloneJob {
    host: Arc<Host>,
    events: EventBus,
    spec: VmSpec,
    snap: SnapshotName,
    take: bool,
    target: DatasetName,
    target_name: String,
    actor: Option<Actor>,
}

impl CloneJob {
    async fn run(self) -> Result<serde_json::Value, Error> {
        let Self {
            host,
            events,
            spec,
            snap,
            take,
            target,
            target_name,
            actor,
        } = self;
        refuse_existing(&host, &target, &target_name).await?;
        if take {
            host.zfs
                .snapshot(std::slice::from_ref(&snap), true, &[])
                .await?;
            events.publish(
                "snapshot.created",
                &snap.to_string(),
                actor,
                json!({"recursive": true}),
            );
        }
        let uuid = Uuid::new_v4();
        let clone = clone_spec(&spec, &target_name, target.as_str(), uuid)?;
        let text = clone
            .to_toml()
            .map_err(|e| Error::Internal(format!("VM spec of '{target_name}': {e}")))?;
        let props = [
            managed(MANAGED, "on"),
            managed(VM_PROPERTY, &uuid.to_string()),
        ];
        host.zfs.clone_snapshot(&snap, &target, &props).await?;
        events.publish(
            "dataset.created",
            target.as_str(),
            actor,
            json!({"origin": snap.to_string(), "vm": target_name}),
        );
        let made = async {
            for i in clone.zvol_disks() {
                let file = &clone.disks[i].file;
                let origin = DatasetName::parse(&format!("{}/{file}", snap.dataset()))
                    .and_then(|d| SnapshotName::new(d, snap.snapshot()))
                    .map_err(|e| Error::Internal(format!("disk[{i}]'s snapshot: {e}")))?;
                let volume = DatasetName::parse(&format!("{target}/{file}"))
                    .map_err(|e| Error::Internal(format!("disk[{i}]'s volume: {e}")))?;
                let props = [managed(MANAGED, "on"), managed("volmode", "dev")];
                host.zfs.clone_snapshot(&origin, &volume, &props).await?;
                events.publish(
                    "dataset.created",
                    volume.as_str(),
                    actor,
                    json!({"origin": origin.to_string(), "vm": target_name}),
                );
            }
            let dir = mounted_dir(&host, &target).await?;
            for f in instance_files() {
                match std::fs::remove_file(dir.join(&f)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(Error::Internal(format!(
                            "cannot remove {f} from the clone: {e}"
                        )));
                    }
                }
            }
            write_atomic(&dir, SPEC_FILE, &text).map_err(|e| {
                Error::Internal(format!(
                    "cannot write {}: {e}",
                    dir.join(SPEC_FILE).display()
                ))
            })?;
            let key = refresh_seed(&dir, &clone).await?;
            Ok::<_, Error>((dir, key))
        }
        .await;
        let (dir, key) = match made {
            Ok(m) => m,
            Err(e) => {
                super::jobs::log_line(format!("{e}; destroying {target} again"));
                if host.zfs.destroy(&target, true).await.is_ok() {
                    events.publish("dataset.destroyed", target.as_str(), actor, json!({}));
                }
                return Err(e);
            }
        };
        if spec.nics.iter().any(|n| n.address.is_some()) {
            super::jobs::log_line(
                "the source's static addresses were not copied: the clone's NICs use DHCP"
                    .to_owned(),
            );
        }
        let macs: Vec<String> = clone.nics.iter().map(|n| n.mac.to_string()).collect();
        events.publish(
            "vm.created",
            &target_name,
            actor,
            json!({"uuid": uuid, "template": clone.template, "dataset": target.as_str(),
                   "macs": macs, "origin": snap.to_string()}),
        );
        Ok(json!({
            "name": target_name,
            "uuid": uuid,
            "dataset": target.as_str(),
            "path": dir,
            "origin": snap.to_string(),
            "macs": macs,
            "ssh_host_key": key,
        }))
    }
}

/// The spec of the clone, whose dataset is `dataset`: a new name, uuid and MACs; static
/// addresses dropped; zvol disks on the clone's own volumes.
fn clone_spec(source: &VmSpec, name: &str, dataset: &str, uuid: Uuid) -> Result<VmSpec, Error> {
    let mut spec = source.clone();
    spec.name = name.to_owned();
    spec.uuid = uuid;
    spec.place_volumes(dataset);
    let mut macs: Vec<MacAddr> = Vec::new();
    for (i, nic) in spec.nics.iter_mut().enumerate() {
        nic.mac = MacAddr::derive(uuid, i, &macs);
        macs.push(nic.mac);
        nic.address = None;
        nic.gateway = None;
    }
    spec.validate()
        .map_err(|e| Error::Internal(format!("the clone's spec: {e}")))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_leaves_behind_every_log_and_rotation() {
        let files = instance_files();
        for f in [
            "run.json",
            "qemu.log",
            "bhyve.log",
            "seed.iso",
            "console.log",
        ] {
            assert!(files.iter().any(|x| x == f), "{f}");
        }
        let last = format!("console.log.{}", super::super::console::LOG_KEEP);
        assert!(files.contains(&last), "{files:?}");
    }

    #[test]
    fn a_clone_is_a_new_machine() {
        let text = include_str!("../../../vm-templates/docker-host.toml");
        let t = vmspec::Template::parse(text).expect("template");
        let mut src = vmspec::instantiate(&t, "docker-host", "web", Uuid::new_v4()).expect("spec");
        src.nics[0].address = Some("192.168.1.20/24".to_owned());
        src.nics[0].gateway = Some("192.168.1.1".parse().expect("ip"));
        let uuid = Uuid::new_v4();
        let c = clone_spec(&src, "web2", "t/labd/vms/web2", uuid).expect("clone");
        assert_eq!((c.name.as_str(), c.uuid), ("web2", uuid));
        assert_ne!(c.nics[0].mac, src.nics[0].mac);
        assert_eq!(c.nics[0].mac, MacAddr::derive(uuid, 0, &[]));
        assert!(c.nics[0].address.is_none() && c.nics[0].gateway.is_none());
        assert_eq!(c.disks, src.disks);
        assert_eq!(c.cloud_init, src.cloud_init);
    }

    #[test]
    fn a_clone_opens_its_own_volumes() {
        let text = include_str!("../../../vm-templates/docker-host.toml")
            .replace("size = \"20G\"", "size = \"20G\"\nbacking = \"zvol\"");
        let t = vmspec::Template::parse(&text).expect("template");
        let mut src = vmspec::instantiate(&t, "docker-host", "web", Uuid::new_v4()).expect("spec");
        src.place_volumes("t/labd/vms/web");
        let c = clone_spec(&src, "web2", "t/labd/vms/web2", Uuid::new_v4()).expect("clone");
        assert_eq!(c.disks[0].volume.as_deref(), Some("t/labd/vms/web2/disk0"));
        assert_eq!(src.disks[0].volume.as_deref(), Some("t/labd/vms/web/disk0"));
    }
}
