//! NFS exports: definitions on disk, validated against ZFS and against each other, rendered
//! for the configured server and applied.
//!
//! A definition is `<exports.dir>/<name>.toml` (`/` in the name written as `+`), where the
//! name is the dataset's name below the root; the CLI and API edit these files, and they can
//! be edited by hand. Nothing reaches the server until `apply`: it reads every definition,
//! checks each dataset is mounted where ZFS says and not a symlink, has `sharenfs=off`, and the
//! whole set against the rules of `core::exports` (and the other exports files the server
//! reads), renders the file, and installs it only if every check passed; the old file and the
//! server stay as they were otherwise.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::json;

use super::error::invalid;
use super::exports::{self, CheckOptions, Export, ExportError, ExportSpec, Rule};
use super::names::DatasetName;
use super::{Core, Error, Host};
use crate::config::NfsDriver;
use crate::host::nfs::Nfs;
use crate::host::runner::Runner;
use crate::wire;

/// File of the last applied set, beside the definitions (for "what changed").
const APPLIED: &str = ".applied.json";

fn file_of(host: &Host, name: &str) -> PathBuf {
    host.config
        .exports
        .dir
        .join(format!("{}.toml", name.replace('/', "+")))
}

fn export_error(e: &exports::ExportError) -> Error {
    Error::Invalid {
        field: e.field.clone(),
        code: e.rule.code(),
        message: e.to_string(),
    }
}

/// Every definition on disk, by name.
fn load(host: &Host) -> Result<BTreeMap<String, ExportSpec>, Error> {
    let dir = &host.config.exports.dir;
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::Internal(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
        let spec: ExportSpec = toml::from_str(&text).map_err(|e| {
            invalid(
                "exports",
                "invalid_definition",
                format!("{}: {e}", path.display()),
            )
        })?;
        out.insert(stem.replace('+', "/"), spec);
    }
    Ok(out)
}

/// The last applied set: export name -> clients.
fn applied(host: &Host) -> BTreeMap<String, Vec<wire::ExportClient>> {
    std::fs::read_to_string(host.config.exports.dir.join(APPLIED))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Names of the exports, defined or still applied on the server, of `dataset` or below it.
pub fn exported_within(host: &Host, dataset: &DatasetName) -> Result<Vec<String>, Error> {
    let root = &host.config.zfs.root;
    let mut names: Vec<String> = load(host)?.into_keys().collect();
    names.extend(applied(host).into_keys());
    names.sort();
    names.dedup();
    names.retain(|name| {
        super::names::resolve_dataset(root, name).is_ok_and(|d| d.is_same_or_descendant_of(dataset))
    });
    Ok(names)
}

/// Resolve, read ZFS and check every definition: the exports ready to render, or every
/// problem found.
async fn build(host: &Host, specs: &BTreeMap<String, ExportSpec>) -> Result<Vec<Export>, Error> {
    let root = &host.config.zfs.root;
    let mut out = Vec::new();
    let mut problems: Vec<ExportError> = Vec::new();
    // One `zfs get -r` for every dataset, not one per export.
    let mut props: HashMap<(String, String), String> = HashMap::new();
    if !specs.is_empty() {
        for row in host
            .zfs
            .get_props(root, "mounted,mountpoint,sharenfs", true)
            .await?
        {
            props.insert((row.name, row.property), row.value);
        }
    }
    for (name, spec) in specs {
        let ds = super::names::resolve_dataset(root, &spec.dataset)
            .map_err(|e| Error::name(&format!("exports.{name}.dataset"), &e))?;
        let clients = spec.clients().map_err(|e| export_error(&e))?;
        if !props.contains_key(&(ds.to_string(), "mountpoint".to_owned())) {
            return Err(Error::NotFound {
                what: format!("{ds} (dataset of export '{name}')"),
            });
        }
        let get = |p: &str| {
            props
                .get(&(ds.to_string(), p.to_owned()))
                .cloned()
                .unwrap_or_default()
        };
        let mountpoint = get("mountpoint");
        let problem = |rule: Rule, message: String| {
            ExportError::new(Some(name), format!("exports.{name}.dataset"), rule, message)
        };
        if get("mounted") != "yes" || !mountpoint.starts_with('/') {
            problems.push(problem(
                Rule::NotMounted,
                format!(
                    "{ds} is not mounted (mountpoint {mountpoint}): the server would export the \
                     directory beneath it"
                ),
            ));
        } else if std::fs::canonicalize(&mountpoint)
            .map(|p| p.to_string_lossy() != mountpoint.as_str())
            .unwrap_or(true)
        {
            problems.push(problem(
                Rule::BadPath,
                format!("{mountpoint} is not a canonical path (a symlink?)"),
            ));
        }
        let sharenfs = get("sharenfs");
        if sharenfs != "off" {
            problems.push(problem(
                Rule::SharenfsOn,
                format!("{ds} has sharenfs={sharenfs}: ZFS would export it too; set sharenfs=off"),
            ));
        }
        out.push(Export {
            name: name.clone(),
            dataset: ds.to_string(),
            mountpoint,
            clients,
        });
    }
    let other_files = host
        .config
        .exports
        .other_files
        .iter()
        .filter_map(|p| {
            std::fs::read_to_string(p)
                .ok()
                .map(|t| (p.display().to_string(), t))
        })
        .collect();
    let opts = CheckOptions {
        allow_short_prefix: host.config.exports.allow_short_prefix,
        other_files,
    };
    if let Err(errors) = exports::check(&out, &opts) {
        problems.extend(errors);
    }
    match problems.as_slice() {
        [] => Ok(out),
        [one] => Err(export_error(one)),
        many => Err(invalid(
            "exports",
            "invalid_exports",
            many.iter()
                .map(|e| format!("{e} [{}]", e.rule.code()))
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

fn render(host: &Host, set: &[Export], driver: NfsDriver) -> String {
    let config = &host.config.exports;
    match driver {
        NfsDriver::FreeBsd => exports::render_freebsd(set, &config.v4_root),
        NfsDriver::Linux => exports::render_linux(set),
        NfsDriver::Ganesha => exports::render_ganesha(set, &config.pseudo_prefix, 1),
    }
}

impl Core {
    /// Every export definition.
    pub async fn list_exports(&self) -> Result<Vec<wire::Export>, Error> {
        let host = self.host();
        let root = &host.config.zfs.root;
        let specs = load(&host)?;
        let mountpoints: HashMap<String, String> = if specs.is_empty() {
            HashMap::new()
        } else {
            host.zfs
                .get_props(root, "mountpoint", true)
                .await?
                .into_iter()
                .map(|r| (r.name, r.value))
                .collect()
        };
        let mut out = Vec::new();
        for (name, spec) in &specs {
            let dataset = super::names::resolve_dataset(root, &spec.dataset)
                .map_err(|e| Error::name("dataset", &e))?;
            let mountpoint = mountpoints
                .get(dataset.as_str())
                .filter(|m| m.starts_with('/'))
                .cloned();
            out.push(wire::Export {
                name: name.clone(),
                dataset: dataset.to_string(),
                mountpoint,
                clients: spec.clients.clone(),
            });
        }
        Ok(out)
    }

    /// One export definition.
    pub async fn get_export(&self, name: &str) -> Result<wire::Export, Error> {
        let ds = self.resolve("name", name)?;
        let short = ds
            .relative_to(&self.host().config.zfs.root)
            .unwrap_or_default()
            .to_owned();
        self.list_exports()
            .await?
            .into_iter()
            .find(|e| e.name == short)
            .ok_or_else(|| Error::NotFound {
                what: format!("export '{name}'"),
            })
    }

    /// Create or replace the definition of the export of dataset `name`, after checking it
    /// together with every other definition. Nothing reaches the server until `apply`.
    pub async fn put_export(
        &self,
        name: &str,
        req: wire::PutExport,
        actor: Option<wire::Actor>,
    ) -> Result<wire::Export, Error> {
        let ds = self.resolve("name", name)?;
        let host = self.host();
        let short = ds
            .relative_to(&host.config.zfs.root)
            .unwrap_or_default()
            .to_owned();
        if short.is_empty() {
            return Err(invalid(
                "name",
                "root_dataset",
                "labd's root dataset is not exported",
            ));
        }
        let spec = ExportSpec {
            dataset: short.clone(),
            clients: req.clients.clone(),
        };
        spec.clients().map_err(|e| export_error(&e))?;
        let mut specs = load(&host)?;
        specs.insert(short.clone(), spec.clone());
        build(&host, &specs).await?;
        let text = toml::to_string(&spec)
            .map_err(|e| Error::Internal(format!("cannot write the definition: {e}")))?;
        let path = file_of(&host, &short);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Internal(format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
        self.events.publish(
            "export.changed",
            &short,
            actor,
            json!({"dataset": ds.as_str(), "clients": req.clients}),
        );
        self.get_export(&short).await
    }

    /// Remove the definition of an export (the server keeps it until `apply`).
    pub fn remove_export(&self, name: &str, actor: Option<wire::Actor>) -> Result<(), Error> {
        let ds = self.resolve("name", name)?;
        let host = self.host();
        let short = ds.relative_to(&host.config.zfs.root).unwrap_or_default();
        let path = file_of(&host, short);
        std::fs::remove_file(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound {
                what: format!("export '{name}'"),
            },
            _ => Error::Internal(format!("cannot remove {}: {e}", path.display())),
        })?;
        self.events.publish(
            "export.removed",
            short,
            actor,
            json!({"dataset": ds.as_str()}),
        );
        Ok(())
    }

    /// The file labd would write for `format` (default: the configured driver).
    pub async fn render_exports(&self, format: Option<&str>) -> Result<String, Error> {
        let host = self.host();
        let driver = match format {
            None => host.config.exports.driver,
            Some("freebsd") => NfsDriver::FreeBsd,
            Some("linux") => NfsDriver::Linux,
            Some("ganesha") => NfsDriver::Ganesha,
            Some(other) => {
                return Err(invalid(
                    "format",
                    "invalid_format",
                    format!("'{other}' is not one of freebsd, linux, ganesha"),
                ));
            }
        };
        let set = build(&host, &load(&host)?).await?;
        Ok(render(&host, &set, driver))
    }

    /// Validate every definition, write the server's file atomically and reload it, as a job.
    pub fn apply_exports(&self, actor: Option<wire::Actor>) -> Result<wire::Job, Error> {
        let host = self.host();
        let events = self.events.clone();
        let file = host.config.exports.file.display().to_string();
        self.jobs.spawn(
            "exports.apply",
            &file,
            actor,
            vec!["exports".to_owned()],
            move || async move {
                let specs = load(&host)?;
                let set = build(&host, &specs).await?;
                let content = render(&host, &set, host.config.exports.driver);
                let nfs = Nfs::new(
                    &host.config.exports,
                    Runner::new(host.config.zfs.command_timeout),
                );
                let applied_path = host.config.exports.dir.join(APPLIED);
                let before = applied(&host);
                let now: BTreeMap<String, Vec<wire::ExportClient>> = specs
                    .iter()
                    .map(|(n, s)| (n.clone(), s.clients.clone()))
                    .collect();
                let changed = nfs.current() != content;
                if changed {
                    nfs.install(&content).await.map_err(|e| {
                        Error::Internal(format!("{e:#}; the previous file stays in place"))
                    })?;
                }
                let _ = std::fs::write(
                    &applied_path,
                    serde_json::to_string(&now).unwrap_or_default(),
                );
                let report = wire::ExportsApplied {
                    file: nfs.file().display().to_string(),
                    changed,
                    added: now
                        .keys()
                        .filter(|n| !before.contains_key(*n))
                        .cloned()
                        .collect(),
                    removed: before
                        .keys()
                        .filter(|n| !now.contains_key(*n))
                        .cloned()
                        .collect(),
                    updated: now
                        .iter()
                        .filter(|(n, c)| before.get(*n).is_some_and(|b| b != *c))
                        .map(|(n, _)| n.clone())
                        .collect(),
                };
                events.publish("exports.applied", &report.file, actor, json!(report));
                Ok(json!(report))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_are_valid_definitions() {
        for text in [
            include_str!("../../../exports/photos.toml"),
            include_str!("../../../exports/media.toml"),
            include_str!("../../../exports/backups.toml"),
        ] {
            let spec: ExportSpec = toml::from_str(text).expect("parses");
            let clients = spec.clients().expect("valid clients");
            assert!(!clients.is_empty());
        }
    }
}
