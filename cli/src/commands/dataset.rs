//! `labctl dataset …`: list, inspect and change datasets and snapshots. Reads print the API
//! objects; mutations start a job and wait for it (see [`crate::jobs`]).

use clap::error::ErrorKind;
use labd::wire::{self, Dataset, Job, PropertySource, Snapshot};

use super::Ctx;
use crate::args::{self, DatasetCommand, DestroyTarget, SnapshotRef};
use crate::client::{dataset_path, flags_query, snapshot_path};
use crate::{jobs, output};

/// Run `labctl dataset <cmd>`.
pub async fn run(ctx: &Ctx, cmd: DatasetCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    let job: Job = match cmd {
        DatasetCommand::List => {
            let datasets: Vec<Dataset> = client.get("/v1/datasets").await?;
            return output::emit(ctx.format, &datasets, |d| render_list(d));
        }
        DatasetCommand::Get { name } => {
            let dataset: Dataset = client.get(&dataset_path(&name)).await?;
            return output::emit(ctx.format, &dataset, render_properties);
        }
        DatasetCommand::Snapshots { name } => {
            let path = format!("{}/snapshots", dataset_path(&name));
            let snapshots: Vec<Snapshot> = client.get(&path).await?;
            return output::emit(ctx.format, &snapshots, |s| render_snapshots(s));
        }
        DatasetCommand::Create {
            name,
            properties,
            parents,
        } => {
            let req = wire::CreateDataset {
                name,
                properties: args::property_map(&["dataset", "create"], &properties)?,
                parents,
            };
            client.post("/v1/datasets", &req).await?
        }
        DatasetCommand::Set { name, properties } => {
            let req = wire::SetProperties {
                properties: args::property_map(&["dataset", "set"], &properties)?,
            };
            client.patch(&dataset_path(&name), &req).await?
        }
        DatasetCommand::Destroy {
            name: DestroyTarget::Dataset(name),
            recursive,
            force,
        } => {
            let query = flags_query(&[("recursive", recursive), ("force", force)]);
            client
                .delete(&format!("{}{query}", dataset_path(&name)))
                .await?
        }
        DatasetCommand::Destroy {
            name: DestroyTarget::Snapshot(snap),
            recursive,
            force,
        } => {
            if force {
                return Err(args::usage_error(
                    &["dataset", "destroy"],
                    ErrorKind::ArgumentConflict,
                    format!("--force applies to datasets only, not to the snapshot {snap}"),
                )
                .into());
            }
            let query = flags_query(&[("recursive", recursive)]);
            let path = snapshot_path(&snap.dataset, &snap.snapshot);
            client.delete(&format!("{path}{query}")).await?
        }
        DatasetCommand::Snapshot {
            name,
            recursive,
            snapshot,
        } => {
            let (dataset, snapshot) = snapshot_target(name, snapshot)?;
            let req = wire::CreateSnapshot {
                name: snapshot,
                recursive,
            };
            let path = format!("{}/snapshots", dataset_path(&dataset));
            client.post(&path, &req).await?
        }
        DatasetCommand::Rollback {
            snapshot,
            destroy_newer,
        } => {
            let req = wire::Rollback { destroy_newer };
            client
                .post(&action_path(&snapshot, "rollback"), &req)
                .await?
        }
        DatasetCommand::Clone {
            snapshot,
            target,
            properties,
        } => {
            let req = wire::Clone {
                target,
                properties: args::property_map(&["dataset", "clone"], &properties)?,
            };
            client.post(&action_path(&snapshot, "clone"), &req).await?
        }
        DatasetCommand::Hold { snapshot, tag } => {
            let req = wire::Hold { tag };
            client.post(&action_path(&snapshot, "hold"), &req).await?
        }
        DatasetCommand::Release { snapshot, tag } => {
            let req = wire::Hold { tag };
            client
                .post(&action_path(&snapshot, "release"), &req)
                .await?
        }
    };
    jobs::run(client, ctx.report(), job).await
}

/// `…/snapshots/{snap}/{action}`.
fn action_path(snap: &SnapshotRef, action: &str) -> String {
    format!("{}/{action}", snapshot_path(&snap.dataset, &snap.snapshot))
}

const SNAPSHOT_CMD: &[&str] = &["dataset", "snapshot"];

/// Dataset and snapshot name of `dataset snapshot NAME [--name SNAP]`; `NAME@SNAP` is
/// accepted as well, like `zfs snapshot`.
fn snapshot_target(
    name: String,
    snapshot: Option<String>,
) -> Result<(String, Option<String>), clap::Error> {
    if !name.contains('@') {
        return Ok((name, snapshot));
    }
    let r = args::parse_snapshot_ref(&name)
        .map_err(|e| args::usage_error(SNAPSHOT_CMD, ErrorKind::ValueValidation, e))?;
    if snapshot.is_some() {
        return Err(args::usage_error(
            SNAPSHOT_CMD,
            ErrorKind::ArgumentConflict,
            format!("'{name}' names the snapshot already; drop --name or the '@'"),
        ));
    }
    Ok((r.dataset, Some(r.snapshot)))
}

/// The name a list shows: the short name, or the full one for the root itself.
fn display_name(d: &Dataset) -> &str {
    if d.short_name.is_empty() {
        &d.name
    } else {
        &d.short_name
    }
}

fn render_list(datasets: &[Dataset]) -> String {
    let mut t = output::table(&["NAME", "USED", "AVAIL", "REFER", "MOUNTPOINT", "MANAGED"]);
    for d in datasets {
        t.add_row(vec![
            display_name(d).to_owned(),
            output::size(d.used),
            output::size(d.available),
            output::size(d.referenced),
            d.mountpoint.clone(),
            output::yes_no(d.managed).to_owned(),
        ]);
    }
    output::render(&t)
}

fn render_properties(d: &Dataset) -> String {
    let mut t = output::table(&["PROPERTY", "VALUE", "SOURCE"]);
    for (name, p) in d.properties.iter().flatten() {
        let source = match (p.source, &p.inherited_from) {
            (PropertySource::Inherited, Some(from)) => format!("inherited from {from}"),
            (PropertySource::Inherited, None) => "inherited".to_owned(),
            (PropertySource::Local, _) => "local".to_owned(),
            (PropertySource::Default, _) => "default".to_owned(),
            (PropertySource::Received, _) => "received".to_owned(),
            (PropertySource::Temporary, _) => "temporary".to_owned(),
            (PropertySource::None, _) => "-".to_owned(),
        };
        t.add_row(vec![name.clone(), p.value.clone(), source]);
    }
    output::render(&t)
}

fn render_snapshots(snapshots: &[Snapshot]) -> String {
    let mut t = output::table(&["NAME", "CREATED", "USED", "REFER", "HOLDS"]);
    for s in snapshots {
        t.add_row(vec![
            s.name.clone(),
            output::time(s.created),
            output::size(s.used),
            output::size(s.referenced),
            s.holds.to_string(),
        ]);
    }
    output::render(&t)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use labd::wire::Property;

    use super::*;

    fn dataset(name: &str, short: &str) -> Dataset {
        Dataset {
            name: name.into(),
            short_name: short.into(),
            used: 1536,
            available: 1 << 30,
            referenced: 512,
            mountpoint: "/mnt/x".into(),
            managed: !short.is_empty(),
            properties: None,
        }
    }

    #[test]
    fn list_shows_short_names_and_the_root_in_full() {
        let text = render_list(&[
            dataset("tank/labd", ""),
            dataset("tank/labd/photos", "photos"),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME       USED   AVAIL  REFER  MOUNTPOINT  MANAGED"
        );
        assert_eq!(lines[1], "tank/labd  1.50K  1G     512B   /mnt/x      no");
        assert_eq!(lines[2], "photos     1.50K  1G     512B   /mnt/x      yes");
    }

    #[test]
    fn properties_show_their_source() {
        let mut d = dataset("tank/labd/photos", "photos");
        let prop = |value: &str, source, from: Option<&str>| Property {
            value: value.into(),
            source,
            inherited_from: from.map(str::to_owned),
        };
        d.properties = Some(BTreeMap::from([
            (
                "compression".to_owned(),
                prop("lz4", PropertySource::Inherited, Some("tank")),
            ),
            ("quota".to_owned(), prop("0", PropertySource::Default, None)),
            ("used".to_owned(), prop("1536", PropertySource::None, None)),
        ]));
        let text = render_properties(&d);
        assert_eq!(
            text,
            "PROPERTY     VALUE  SOURCE\n\
             compression  lz4    inherited from tank\n\
             quota        0      default\n\
             used         1536   -"
        );
    }

    #[test]
    fn snapshot_name_from_at_or_option() {
        assert_eq!(
            snapshot_target("a".into(), Some("s".into())).unwrap(),
            ("a".into(), Some("s".into()))
        );
        assert_eq!(
            snapshot_target("a@s".into(), None).unwrap(),
            ("a".into(), Some("s".into()))
        );
        assert!(snapshot_target("a@s".into(), Some("t".into())).is_err());
        assert!(snapshot_target("a@s@t".into(), None).is_err());
    }

    #[test]
    fn action_paths_encode_the_dataset() {
        let s = args::parse_snapshot_ref("tank/labd/a@s1").unwrap();
        assert_eq!(
            action_path(&s, "rollback"),
            "/v1/datasets/tank%2Flabd%2Fa/snapshots/s1/rollback"
        );
    }
}
