//! Datasets and snapshots: reads go straight to ZFS; every mutation is validated first, then
//! runs as a job under the lock of each dataset it touches.
//!
//! Rules: names resolve under the root and nothing outside it is touched; labd marks what it
//! creates with `labd:managed=on` (a local value; an inherited one does not count) and
//! destroys only that unless forced; destroy is never recursive unless asked and refuses
//! children, snapshots and holds; rollback refuses to destroy newer snapshots unless asked.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::json;

use super::names::{self, DatasetName, SnapshotName};
use super::policy::{NO_POLICY, POLICY_PROPERTY};
use super::props::{self, Assignment};
use super::{Core, Error, Host, Refusal};
use crate::events::EventBus;
use crate::host::zfs::{PropRow, SnapshotRow};
use crate::wire::{self, Actor, Job, Property, PropertySource};

/// The user property marking what labd created.
pub(super) const MANAGED: &str = "labd:managed";

fn managed_assignment() -> Assignment {
    Assignment {
        name: MANAGED.to_owned(),
        value: "on".to_owned(),
    }
}

fn is_managed(row: &PropRow) -> bool {
    row.property == MANAGED && row.value == "on" && row.source == "local"
}

fn source_of(raw: &str) -> (PropertySource, Option<String>) {
    match raw {
        "local" => (PropertySource::Local, None),
        "default" => (PropertySource::Default, None),
        "temporary" => (PropertySource::Temporary, None),
        "received" => (PropertySource::Received, None),
        s => match s.strip_prefix("inherited from ") {
            Some(from) => (PropertySource::Inherited, Some(from.to_owned())),
            None => (PropertySource::None, None),
        },
    }
}

/// Fold `zfs get` rows (grouped by name, in ZFS order) into datasets.
fn datasets_from_rows(root: &DatasetName, rows: &[PropRow], all: bool) -> Vec<wire::Dataset> {
    let mut out: Vec<wire::Dataset> = Vec::new();
    for row in rows {
        if out.last().is_none_or(|d| d.name != row.name) {
            let short = DatasetName::parse(&row.name)
                .ok()
                .and_then(|n| n.relative_to(root).map(str::to_owned))
                .unwrap_or_default();
            out.push(wire::Dataset {
                name: row.name.clone(),
                short_name: short,
                used: 0,
                available: 0,
                referenced: 0,
                mountpoint: String::new(),
                managed: false,
                properties: all.then(BTreeMap::new),
            });
        }
        let Some(d) = out.last_mut() else { continue };
        let number = || row.value.parse::<u64>().unwrap_or(0);
        match row.property.as_str() {
            "used" => d.used = number(),
            "available" => d.available = number(),
            "referenced" => d.referenced = number(),
            "mountpoint" => d.mountpoint.clone_from(&row.value),
            MANAGED => d.managed = is_managed(row),
            _ => {}
        }
        if let Some(props) = d.properties.as_mut() {
            let (source, inherited_from) = source_of(&row.source);
            props.insert(
                row.property.clone(),
                Property {
                    value: row.value.clone(),
                    source,
                    inherited_from,
                },
            );
        }
    }
    out
}

fn snapshot_to_wire(s: &SnapshotRow) -> wire::Snapshot {
    let created = i64::try_from(s.creation)
        .ok()
        .and_then(|secs| Timestamp::from_second(secs).ok())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    wire::Snapshot {
        name: s.name.clone(),
        dataset: s.dataset.clone(),
        snapshot: s.snapshot.clone(),
        created,
        createtxg: s.createtxg,
        used: s.used,
        referenced: s.referenced,
        holds: s.userrefs,
    }
}

/// Validate properties; `policy` (alias of `labd:policy`) must name a configured policy or
/// be `none`.
fn validate_properties(
    config: &crate::config::Config,
    properties: &BTreeMap<String, String>,
) -> Result<Vec<Assignment>, Error> {
    properties
        .iter()
        .map(|(k, v)| {
            if k != "policy" && k != POLICY_PROPERTY {
                return props::validate(k, v).map_err(|e| Error::property(&e));
            }
            if v != NO_POLICY && !config.policies.contains_key(v) {
                let known: Vec<&str> = config.policies.keys().map(String::as_str).collect();
                return Err(Error::Invalid {
                    field: format!("properties.{k}"),
                    code: "unknown_policy",
                    message: format!(
                        "unknown policy '{v}' (configured: {}; or {NO_POLICY} to opt out)",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                });
            }
            Ok(Assignment {
                name: POLICY_PROPERTY.to_owned(),
                value: v.clone(),
            })
        })
        .collect()
}

/// The default snapshot name: the UTC time, e.g. `2026-11-25T190000Z`.
fn default_snapshot_name() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H%M%SZ").to_string()
}

fn list(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut s = names
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Refuse when any of `snaps` is held: held snapshots are never destroyed.
fn refuse_held<'a>(snaps: impl IntoIterator<Item = &'a SnapshotRow>) -> Result<(), Error> {
    let held: Vec<&str> = snaps
        .into_iter()
        .filter(|s| s.userrefs > 0)
        .map(|s| s.name.as_str())
        .collect();
    if held.is_empty() {
        return Ok(());
    }
    Err(Error::refused(
        Refusal::Held,
        format!("held snapshots: {}; release them first", list(&held)),
    ))
}

/// The job of `destroy_dataset`: every check against the current ZFS state, then destroy.
async fn destroy_dataset_job(
    host: Arc<Host>,
    events: EventBus,
    ds: DatasetName,
    req: wire::DestroyDataset,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let rows = host.zfs.get_props(&ds, MANAGED, true).await?;
    if rows.is_empty() {
        return Err(Error::NotFound {
            what: ds.to_string(),
        });
    }
    let children: Vec<&str> = rows
        .iter()
        .map(|r| r.name.as_str())
        .filter(|n| *n != ds.as_str())
        .collect();
    if !req.recursive && !children.is_empty() {
        return Err(Error::refused(
            Refusal::HasChildren,
            format!(
                "{ds} has child datasets: {}; destroy them first, or destroy recursively \
                 (labctl: -r)",
                list(&children)
            ),
        ));
    }
    let unmanaged: Vec<&str> = rows
        .iter()
        .filter(|r| !is_managed(r))
        .map(|r| r.name.as_str())
        .collect();
    if !req.force && !unmanaged.is_empty() {
        return Err(Error::refused(
            Refusal::NotManaged,
            format!(
                "labd did not create {} (no local labd:managed=on); destroy with force to \
                 remove it anyway (labctl: -f)",
                list(&unmanaged)
            ),
        ));
    }
    let exported = super::nfs::exported_within(&host, &ds)?;
    if !exported.is_empty() {
        return Err(Error::refused(
            Refusal::Exported,
            format!(
                "{ds} is exported over NFS (export {}); remove the export and apply first \
                 (labctl export remove, labctl export apply)",
                list(&exported.iter().map(String::as_str).collect::<Vec<_>>())
            ),
        ));
    }
    let snaps = host.zfs.snapshots(&ds, req.recursive).await?;
    refuse_held(&snaps)?;
    if !req.recursive && !snaps.is_empty() {
        let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::refused(
            Refusal::HasSnapshots,
            format!(
                "{ds} has snapshots: {}; destroy them first, or destroy recursively (labctl: -r)",
                list(&names)
            ),
        ));
    }
    host.zfs.destroy(&ds, req.recursive).await?;
    for child in &children {
        let data = json!({"recursive_from": ds.as_str()});
        events.publish("dataset.destroyed", child, actor, data);
    }
    let data = json!({"recursive": req.recursive});
    events.publish("dataset.destroyed", ds.as_str(), actor, data);
    let destroyed: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    Ok(json!({"destroyed": destroyed, "snapshots": snaps.len()}))
}

/// The job of `destroy_snapshot`.
async fn destroy_snapshot_job(
    host: Arc<Host>,
    events: EventBus,
    snap: SnapshotName,
    req: wire::DestroySnapshot,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let all = host.zfs.snapshots(snap.dataset(), req.recursive).await?;
    let matching: Vec<&SnapshotRow> = all
        .iter()
        .filter(|s| s.snapshot == snap.snapshot())
        .collect();
    if !matching.iter().any(|s| s.name == snap.to_string()) {
        return Err(Error::NotFound {
            what: snap.to_string(),
        });
    }
    refuse_held(matching.iter().copied())?;
    host.zfs
        .destroy_snapshots(snap.dataset(), &[snap.snapshot()], req.recursive)
        .await?;
    for s in &matching {
        events.publish("snapshot.destroyed", &s.name, actor, json!({}));
    }
    let destroyed: Vec<&str> = matching.iter().map(|s| s.name.as_str()).collect();
    Ok(json!({"destroyed": destroyed}))
}

impl Core {
    /// A name whose first component is another pool is a full name outside the root: it is
    /// refused rather than taken as a short name.
    fn refuse_other_pool(&self, field: &str, input: &str) -> Result<(), Error> {
        let host = self.host();
        let root = &host.config.zfs.root;
        let first = input.split(['/', '@']).next().unwrap_or_default();
        if first == root.pool() || !host.pools.iter().any(|p| p == first) {
            return Ok(());
        }
        Err(Error::Invalid {
            field: field.to_owned(),
            code: names::NameRule::OutsideRoot.code(),
            message: format!(
                "'{input}' is in pool '{first}', outside labd's root {root}; \
                 a dataset below the root is named {root}/{input}"
            ),
        })
    }

    /// A resource name for event filters: a dataset or snapshot name resolved under the root
    /// when it is one, anything else (a job target, `labd`) as given.
    pub fn resolve_resource(&self, input: &str) -> String {
        let root = &self.host().config.zfs.root;
        if input.contains('@') {
            names::resolve_snapshot(root, input)
                .map_or_else(|_| input.to_owned(), |s| s.to_string())
        } else {
            names::resolve_dataset(root, input).map_or_else(|_| input.to_owned(), |d| d.to_string())
        }
    }

    /// Resolve a user's dataset name under the root.
    pub(super) fn resolve(&self, field: &str, input: &str) -> Result<DatasetName, Error> {
        self.refuse_other_pool(field, input)?;
        names::resolve_dataset(&self.host().config.zfs.root, input)
            .map_err(|e| Error::name(field, &e))
    }

    /// Resolve `dataset@snapshot` under the root.
    pub(super) fn resolve_snapshot(
        &self,
        dataset: &str,
        snapshot: &str,
    ) -> Result<SnapshotName, Error> {
        let input = format!("{dataset}@{snapshot}");
        self.refuse_other_pool("snapshot", &input)?;
        names::resolve_snapshot(&self.host().config.zfs.root, &input)
            .map_err(|e| Error::name("snapshot", &e))
    }

    /// Every filesystem under the root (the root included).
    pub async fn list_datasets(&self) -> Result<Vec<wire::Dataset>, Error> {
        let host = self.host();
        let root = &host.config.zfs.root;
        let rows = host.zfs.list_filesystems(root).await?;
        Ok(datasets_from_rows(root, &rows, false))
    }

    /// One dataset with every property and its source.
    pub async fn get_dataset(&self, name: &str) -> Result<wire::Dataset, Error> {
        let ds = self.resolve("name", name)?;
        let host = self.host();
        let rows = host.zfs.get_all(ds.as_str()).await?;
        datasets_from_rows(&host.config.zfs.root, &rows, true)
            .into_iter()
            .next()
            .ok_or(Error::NotFound {
                what: ds.to_string(),
            })
    }

    /// Snapshots of one dataset, oldest first.
    pub async fn list_snapshots(&self, name: &str) -> Result<Vec<wire::Snapshot>, Error> {
        let ds = self.resolve("name", name)?;
        let rows = self.host().zfs.snapshots(&ds, false).await?;
        Ok(rows.iter().map(snapshot_to_wire).collect())
    }

    /// Pools with health and capacity.
    pub async fn list_pools(&self) -> Result<Vec<wire::Pool>, Error> {
        let rows = self.host().zfs.pools().await?;
        Ok(rows
            .into_iter()
            .map(|p| wire::Pool {
                name: p.name,
                health: p.health,
                size: p.size,
                allocated: p.allocated,
                free: p.free,
                capacity_percent: p.capacity,
            })
            .collect())
    }

    /// Create a dataset marked as labd's (and, with `parents`, each missing ancestor).
    pub fn create_dataset(
        &self,
        req: wire::CreateDataset,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let ds = self.resolve("name", &req.name)?;
        let mut properties = validate_properties(&self.host().config, &req.properties)?;
        properties.push(managed_assignment());
        let host = self.host();
        if ds == host.config.zfs.root {
            return Err(Error::refused(
                Refusal::RootDataset,
                "the root dataset already exists",
            ));
        }
        let parent = ds.parent().map(|p| p.to_string()).unwrap_or_default();
        let events = self.events.clone();
        let target = ds.to_string();
        self.jobs.spawn(
            "dataset.create",
            &target,
            actor,
            vec![target.clone(), parent],
            move || async move {
                let root = &host.config.zfs.root;
                if req.parents {
                    let mut missing = Vec::new();
                    let mut cur = ds.parent();
                    while let Some(p) =
                        cur.filter(|p| p.is_same_or_descendant_of(root) && p != root)
                    {
                        match host.zfs.get_props(&p, "type", false).await {
                            Ok(_) => break,
                            Err(e)
                                if e.kind() == Some(crate::host::zfs::ZfsErrorKind::NotFound) => {}
                            Err(e) => return Err(e.into()),
                        }
                        cur = p.parent();
                        missing.push(p);
                    }
                    for p in missing.iter().rev() {
                        host.zfs.create(p, &[managed_assignment()], false).await?;
                        events.publish(
                            "dataset.created",
                            p.as_str(),
                            actor,
                            json!({"parent_of": ds.as_str()}),
                        );
                    }
                }
                host.zfs.create(&ds, &properties, false).await?;
                events.publish(
                    "dataset.created",
                    ds.as_str(),
                    actor,
                    json!({"properties": req.properties}),
                );
                let rows = host
                    .zfs
                    .get_props(&ds, crate::host::zfs::LIST_PROPERTIES, false)
                    .await?;
                let created = datasets_from_rows(root, &rows, false);
                Ok(json!(created.first()))
            },
        )
    }

    /// Set properties of a dataset.
    pub fn set_properties(
        &self,
        name: &str,
        req: wire::SetProperties,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let ds = self.resolve("name", name)?;
        if req.properties.is_empty() {
            return Err(Error::Invalid {
                field: "properties".into(),
                code: "empty",
                message: "no property to set".into(),
            });
        }
        if let Some(p) = req
            .properties
            .keys()
            .find(|k| props::CREATE_ONLY.contains(&k.as_str()))
        {
            return Err(Error::Invalid {
                field: format!("properties.{p}"),
                code: "create_only",
                message: format!("property '{p}' can only be set when the dataset is created"),
            });
        }
        let properties = validate_properties(&self.host().config, &req.properties)?;
        let host = self.host();
        let events = self.events.clone();
        let target = ds.to_string();
        self.jobs.spawn(
            "dataset.set",
            &target,
            actor,
            vec![target.clone()],
            move || async move {
                host.zfs.set(ds.as_str(), &properties).await?;
                let set: BTreeMap<&str, &str> = properties
                    .iter()
                    .map(|a| (a.name.as_str(), a.value.as_str()))
                    .collect();
                events.publish(
                    "dataset.changed",
                    ds.as_str(),
                    actor,
                    json!({"properties": set}),
                );
                Ok(json!({"properties": set}))
            },
        )
    }

    /// Destroy a dataset: refuses the root, unmanaged datasets (unless `force`), children and
    /// snapshots (unless `recursive`) and held snapshots (always).
    pub fn destroy_dataset(
        &self,
        name: &str,
        req: wire::DestroyDataset,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let ds = self.resolve("name", name)?;
        let host = self.host();
        if ds == host.config.zfs.root {
            return Err(Error::refused(
                Refusal::RootDataset,
                format!("{ds} is labd's root dataset"),
            ));
        }
        let events = self.events.clone();
        let target = ds.to_string();
        self.jobs.spawn(
            "dataset.destroy",
            &target,
            actor,
            vec![target.clone()],
            move || destroy_dataset_job(host, events, ds, req, actor),
        )
    }

    /// Take a snapshot (with `recursive`, of every descendant in the same transaction).
    pub fn create_snapshot(
        &self,
        name: &str,
        req: wire::CreateSnapshot,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let ds = self.resolve("dataset", name)?;
        let snap_name = req.name.clone().unwrap_or_else(default_snapshot_name);
        names::validate_snapshot_component(&snap_name).map_err(|e| Error::name("name", &e))?;
        let snap =
            SnapshotName::new(ds.clone(), &snap_name).map_err(|e| Error::name("name", &e))?;
        let host = self.host();
        let events = self.events.clone();
        let target = ds.to_string();
        self.jobs.spawn(
            "snapshot.create",
            &target,
            actor,
            vec![target.clone()],
            move || async move {
                host.zfs
                    .snapshot(std::slice::from_ref(&snap), req.recursive, &[])
                    .await?;
                let created: Vec<String> = if req.recursive {
                    host.zfs
                        .snapshots(&ds, true)
                        .await?
                        .into_iter()
                        .filter(|s| s.snapshot == snap.snapshot())
                        .map(|s| s.name)
                        .collect()
                } else {
                    vec![snap.to_string()]
                };
                for s in &created {
                    events.publish(
                        "snapshot.created",
                        s,
                        actor,
                        json!({"recursive": req.recursive}),
                    );
                }
                Ok(json!({"snapshots": created}))
            },
        )
    }

    /// Destroy a snapshot (with `recursive`, the same-named snapshot of every descendant);
    /// held snapshots are refused.
    pub fn destroy_snapshot(
        &self,
        dataset: &str,
        snapshot: &str,
        req: wire::DestroySnapshot,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let snap = self.resolve_snapshot(dataset, snapshot)?;
        let host = self.host();
        let events = self.events.clone();
        let target = snap.dataset().to_string();
        self.jobs.spawn(
            "snapshot.destroy",
            &snap.to_string(),
            actor,
            vec![target],
            move || destroy_snapshot_job(host, events, snap, req, actor),
        )
    }

    /// Roll a dataset back to a snapshot; newer snapshots are destroyed only when asked, and
    /// never when one of them is held.
    pub fn rollback(
        &self,
        dataset: &str,
        snapshot: &str,
        req: wire::Rollback,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let snap = self.resolve_snapshot(dataset, snapshot)?;
        let host = self.host();
        let events = self.events.clone();
        let target = snap.dataset().to_string();
        self.jobs.spawn(
            "snapshot.rollback",
            &snap.to_string(),
            actor,
            vec![target],
            move || async move {
                let all = host.zfs.snapshots(snap.dataset(), false).await?;
                let Some(txg) = all
                    .iter()
                    .find(|s| s.snapshot == snap.snapshot())
                    .map(|s| s.createtxg)
                else {
                    return Err(Error::NotFound {
                        what: snap.to_string(),
                    });
                };
                let newer: Vec<&SnapshotRow> = all.iter().filter(|s| s.createtxg > txg).collect();
                let newer_names: Vec<&str> = newer.iter().map(|s| s.name.as_str()).collect();
                if !newer.is_empty() && !req.destroy_newer {
                    return Err(Error::refused(
                        Refusal::NewerSnapshots,
                        format!(
                            "newer snapshots exist: {}; rollback destroys them only when asked \
                             (labctl: --destroy-newer)",
                            list(&newer_names)
                        ),
                    ));
                }
                refuse_held(newer.iter().copied())?;
                host.zfs.rollback(&snap, req.destroy_newer).await?;
                for s in &newer_names {
                    events.publish(
                        "snapshot.destroyed",
                        s,
                        actor,
                        json!({"by_rollback_to": snap.to_string()}),
                    );
                }
                events.publish(
                    "dataset.rolled_back",
                    snap.dataset().as_str(),
                    actor,
                    json!({"snapshot": snap.to_string()}),
                );
                Ok(json!({"rolled_back_to": snap.to_string(), "destroyed": newer_names}))
            },
        )
    }

    /// Clone a snapshot into a new dataset marked as labd's.
    pub fn clone_snapshot(
        &self,
        dataset: &str,
        snapshot: &str,
        req: wire::Clone,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let snap = self.resolve_snapshot(dataset, snapshot)?;
        let clone = self.resolve("target", &req.target)?;
        let mut properties = validate_properties(&self.host().config, &req.properties)?;
        properties.push(managed_assignment());
        let host = self.host();
        let events = self.events.clone();
        let keys = vec![snap.dataset().to_string(), clone.to_string()];
        self.jobs.spawn(
            "snapshot.clone",
            &clone.to_string(),
            actor,
            keys,
            move || async move {
                host.zfs.clone_snapshot(&snap, &clone, &properties).await?;
                events.publish(
                    "dataset.created",
                    clone.as_str(),
                    actor,
                    json!({"origin": snap.to_string()}),
                );
                Ok(json!({"dataset": clone.as_str(), "origin": snap.to_string()}))
            },
        )
    }

    /// Place (`hold = true`) or release a user hold on a snapshot.
    pub fn hold(
        &self,
        dataset: &str,
        snapshot: &str,
        req: wire::Hold,
        hold: bool,
        actor: Option<Actor>,
    ) -> Result<Job, Error> {
        let snap = self.resolve_snapshot(dataset, snapshot)?;
        names::validate_hold_tag(&req.tag).map_err(|e| Error::name("tag", &e))?;
        let host = self.host();
        let events = self.events.clone();
        let (kind, event) = if hold {
            ("snapshot.hold", "snapshot.held")
        } else {
            ("snapshot.release", "snapshot.released")
        };
        self.jobs.spawn(
            kind,
            &snap.to_string(),
            actor,
            vec![snap.dataset().to_string()],
            move || async move {
                if hold {
                    host.zfs.hold(&snap, &req.tag).await?;
                } else {
                    host.zfs.release(&snap, &req.tag).await?;
                }
                events.publish(event, &snap.to_string(), actor, json!({"tag": req.tag}));
                Ok(json!({"snapshot": snap.to_string(), "tag": req.tag}))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, property: &str, value: &str, source: &str) -> PropRow {
        PropRow::new(name, property, value, source)
    }

    #[test]
    fn managed_only_when_set_locally() {
        let root = DatasetName::parse("tank/labd").expect("valid");
        let rows = [
            row("tank/labd/a", "used", "100", "-"),
            row("tank/labd/a", MANAGED, "on", "local"),
            row("tank/labd/a/b", "used", "5", "-"),
            row("tank/labd/a/b", MANAGED, "on", "inherited from tank/labd/a"),
        ];
        let ds = datasets_from_rows(&root, &rows, false);
        assert_eq!(ds.len(), 2);
        assert!(ds[0].managed && !ds[1].managed);
        assert_eq!((ds[0].short_name.as_str(), ds[0].used), ("a", 100));
        assert_eq!(ds[1].short_name, "a/b");
    }

    #[test]
    fn properties_carry_their_source() {
        let root = DatasetName::parse("tank").expect("valid");
        let rows = [row("tank/a", "compression", "lz4", "inherited from tank")];
        let ds = datasets_from_rows(&root, &rows, true);
        let props = ds[0].properties.as_ref().expect("all properties");
        assert_eq!(props["compression"].source, PropertySource::Inherited);
        assert_eq!(props["compression"].inherited_from.as_deref(), Some("tank"));
    }

    #[test]
    fn default_snapshot_name_is_a_valid_utc_stamp() {
        let n = default_snapshot_name();
        assert!(n.ends_with('Z') && n.len() == 18, "{n}");
        assert!(names::validate_snapshot_component(&n).is_ok());
    }
}
