//! Guest provisioning: turn a VM into what a plan says (system updates, Docker, networks,
//! compose projects with NFS volumes on labd's datasets), over SSH.
//!
//! # Design
//! [`plan`] reads and validates the plan; [`compose`] renders each project's compose file
//! with its NFS volumes; [`steps`] holds the steps and their remote scripts; [`remote`] is
//! the SSH session with the pinned host key and the quoting. [`run`] ties them: validate
//! everything (including asking labd for the datasets), resolve the guest's address and host
//! key, connect, then run the steps in order and stop at the first failure. Each step
//! reports changed, unchanged, would change (dry run) or failed with its reason.
//!
//! Order: system update, automatic updates, Docker engine, networks, labd's exports to the
//! guest (and applying them), then per service its files, its NFS volumes and
//! `docker compose up`.
//!
//! # Current limitations
//! Files and volumes removed from the plan are left on the guest; a service is "in sync"
//! only while its containers run (one-shot services are re-upped on every run).

pub mod compose;
pub mod plan;
pub mod remote;
pub mod steps;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use labd::wire::{Dataset, Export, ExportClient, ExportsApplied, Job, PutExport, Vm};
use serde::Serialize;

use self::plan::{LoadedPlan, Plan, PlanError, Problem};
use self::remote::{Remote, Target};
use self::steps::{Action, Step};
use crate::client::{Client, dataset_path, encode_segment, export_path, is_not_found};
use crate::jobs::{self, JobFailed};

/// How much a run may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Probe, apply what differs, probe again.
    Apply,
    /// Probe only.
    DryRun,
}

/// Where the guest is and how to log in; what the command line gives.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Address instead of the VM's static one.
    pub host: Option<String>,
    /// Host key (file or line) instead of the one labd generated.
    pub host_key: Option<String>,
    /// SSH port.
    pub port: Option<u16>,
    /// SSH user.
    pub user: Option<String>,
    /// Private key file.
    pub identity: Option<PathBuf>,
    /// ssh configuration file.
    pub ssh_config: Option<PathBuf>,
}

/// The result of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Already as planned.
    Unchanged,
    /// Changed to what is planned.
    Changed,
    /// A dry run found it differs.
    WouldChange,
    /// It failed; the run stopped here.
    Failed,
    /// Not run because an earlier step failed.
    NotRun,
}

impl Outcome {
    /// The word the report prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Changed => "changed",
            Self::WouldChange => "would-change",
            Self::Failed => "failed",
            Self::NotRun => "not-run",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step.
    pub step: String,
    /// What happened.
    pub result: Outcome,
    /// Why, or what changed.
    pub detail: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The VM.
    pub vm: String,
    /// The address connected to.
    pub address: String,
    /// Whether it was a dry run.
    pub dry_run: bool,
    /// Every step in order (those after a failure as `not_run`).
    pub steps: Vec<StepReport>,
}

impl Report {
    /// How many steps ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.steps.iter().filter(|s| s.result == outcome).count()
    }

    /// The step that failed, if one did.
    pub fn failed(&self) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.result == Outcome::Failed)
    }
}

/// A plan with everything labd knows that it needs.
#[derive(Debug)]
struct Resolved {
    loaded: LoadedPlan,
    /// Per dataset name: (export name, mount point).
    datasets: Vec<(String, Dataset)>,
}

/// Load the plan, validate it and check its datasets with labd.
async fn resolve_plan(client: &Client, path: &std::path::Path) -> anyhow::Result<Resolved> {
    let loaded = Plan::load(path)?;
    let mut problems = Vec::new();
    let mut datasets = Vec::new();
    for (key, name) in loaded.plan.dataset_refs() {
        match client.get::<Dataset>(&dataset_path(&name)).await {
            Ok(ds) if ds.mountpoint.starts_with('/') => datasets.push((name, ds)),
            Ok(ds) => problems.push(Problem {
                key,
                message: format!(
                    "dataset {name} is not mounted (mountpoint {}), so it cannot be exported",
                    ds.mountpoint
                ),
            }),
            Err(e) if is_not_found(&e) => problems.push(Problem {
                key,
                message: format!(
                    "labd has no dataset {name:?} (create it: labctl dataset create {name})"
                ),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    if !problems.is_empty() {
        return Err(PlanError::Invalid {
            path: path.to_owned(),
            problems,
        }
        .into());
    }
    Ok(Resolved { loaded, datasets })
}

/// The guest's address and host key: the overrides, else the VM's static address and the
/// key labd generated.
async fn resolve_target(
    client: &Client,
    vm: &str,
    plan: &Plan,
    o: &Overrides,
) -> anyhow::Result<(Target, Option<IpAddr>)> {
    let needs_vm = o.host.is_none() || o.host_key.is_none();
    let spec: Option<Vm> = if needs_vm {
        Some(
            client
                .get(&format!("/v1/vms/{}", encode_segment(vm)))
                .await
                .map_err(|e| anyhow::anyhow!("cannot read VM {vm} from labd: {e}"))?,
        )
    } else {
        None
    };
    let static_ip = spec.as_ref().and_then(|v| {
        v.nics.iter().find_map(|n| {
            let addr = n.address.as_deref()?;
            addr.split('/').next()?.parse::<IpAddr>().ok()
        })
    });
    let address = match (&o.host, static_ip) {
        (Some(h), _) => h.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => anyhow::bail!(
            "VM {vm} has no static address (its NICs use DHCP): give the guest's address with \
             --host ADDR"
        ),
    };
    let host_key = match (
        &o.host_key,
        spec.as_ref().and_then(|v| v.ssh_host_key.clone()),
    ) {
        (Some(given), _) => read_host_key(given)?,
        (None, Some(key)) => key,
        (None, None) => anyhow::bail!(
            "labd has no SSH host key for VM {vm}, and labctl does not trust a key on first \
             use: give the guest's key with --host-key FILE|LINE"
        ),
    };
    let guest_ip = static_ip.or_else(|| address.parse().ok());
    let target = Target {
        address,
        host_key,
        port: o.port.or(plan.guest.port),
        user: o.user.clone().or_else(|| plan.guest.user.clone()),
        identity: o.identity.clone(),
        ssh_config: o.ssh_config.clone(),
        sudo: plan.guest.sudo,
    };
    Ok((target, guest_ip))
}

/// `--host-key`: a key line, or a file holding one (its first non-comment line).
fn read_host_key(given: &str) -> anyhow::Result<String> {
    let looks_like_key = given
        .split_whitespace()
        .next()
        .is_some_and(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"));
    if looks_like_key {
        return Ok(given.to_owned());
    }
    let text = std::fs::read_to_string(given)
        .map_err(|e| anyhow::anyhow!("--host-key {given}: not a key line, and {e}"))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("--host-key {given}: the file holds no key"))
}

/// The steps of a plan, in order.
fn build_steps(r: &Resolved, guest_ip: Option<IpAddr>) -> anyhow::Result<Vec<Step>> {
    let plan = &r.loaded.plan;
    let mut steps = Vec::new();
    if plan.system.update {
        steps.push(Step::system_update());
    }
    if plan.system.auto_updates {
        steps.push(Step::auto_updates());
    }
    if plan.docker.engine {
        steps.push(Step::docker_engine(plan.docker.engine_source.as_str()));
    }
    for n in &plan.docker.networks {
        steps.push(Step::network(&n.name, &n.driver, n.subnet.as_deref()));
    }
    let dataset = |name: &str| r.datasets.iter().find(|(n, _)| n == name).map(|(_, d)| d);
    // Exports first: one client entry per dataset (two volumes of one dataset must agree).
    let mut exported: Vec<(String, ExportClient)> = Vec::new();
    let mut export_steps = Vec::new();
    for (i, s) in plan.services.iter().enumerate() {
        for (j, v) in s.volumes.iter().enumerate() {
            let (Some(name), Some(ip)) = (&v.dataset, guest_ip) else {
                if v.dataset.is_some() {
                    anyhow::bail!(
                        "services[{i}].volumes[{j}].dataset: the guest's address is not an IP, \
                         so labd cannot export to it (give --host IP)"
                    );
                }
                continue;
            };
            let Some(ds) = dataset(name) else { continue };
            let client = ExportClient {
                address: ip.to_string(),
                access: v.access.clone(),
                maproot: v.maproot.clone(),
                mapall: v.mapall.clone(),
                sec: None,
            };
            match exported.iter().find(|(n, _)| *n == ds.short_name) {
                Some((_, c)) if normalized(c) != normalized(&client) => anyhow::bail!(
                    "services[{i}].volumes[{j}]: dataset {name} is used twice with different \
                     access or mapping"
                ),
                Some(_) => {}
                None => {
                    exported.push((ds.short_name.clone(), client.clone()));
                    export_steps.push(Step::export(&ds.short_name, client));
                }
            }
        }
    }
    if !export_steps.is_empty() {
        steps.extend(export_steps);
        steps.push(Step::exports_apply());
    }
    let dir = plan.compose_dir();
    for (s, files) in plan.services.iter().zip(&r.loaded.files) {
        let mut nfs_volumes = Vec::new();
        for v in &s.volumes {
            let (Some(name), Some(nfs)) = (&v.dataset, &plan.nfs) else {
                continue;
            };
            let Some(ds) = dataset(name) else { continue };
            let path = nfs
                .export_path(&ds.short_name, &ds.mountpoint)
                .map_err(|e| anyhow::anyhow!("services volume {}: {e}", v.name))?;
            nfs_volumes.push(compose::nfs_volume(
                &s.name,
                &v.name,
                nfs,
                v.read_only(),
                &path,
            ));
        }
        let rendered = compose::render(&files.compose, s, &nfs_volumes)
            .map_err(|e| anyhow::anyhow!("service {}: {e}", s.name))?;
        let project_dir = format!("{dir}/{}", s.name);
        let compose_file = format!("{project_dir}/compose.yaml");
        steps.push(Step::file(
            &s.name,
            &compose_file,
            "644",
            rendered.into_bytes(),
        ));
        if let Some(env) = &files.env {
            steps.push(Step::file(
                &s.name,
                &format!("{project_dir}/.env"),
                "600",
                env.clone(),
            ));
        }
        for v in &nfs_volumes {
            steps.push(Step::nfs_volume(&s.name, v));
        }
        steps.push(Step::compose_up(&s.name, &compose_file));
    }
    Ok(steps)
}

/// A client entry with labd's defaults filled in, for comparing.
fn normalized(c: &ExportClient) -> (String, String, Option<String>, Option<String>) {
    let access = c.access.clone().unwrap_or_else(|| "rw".to_owned());
    let maproot = match (&c.maproot, &c.mapall) {
        (Some(m), _) => Some(m.clone()),
        (None, Some(_)) => None,
        (None, None) => Some("nobody".to_owned()),
    };
    (c.address.clone(), access, maproot, c.mapall.clone())
}

fn describe_client(c: &ExportClient) -> String {
    let (_, access, maproot, mapall) = normalized(c);
    let mut s = access;
    if let Some(m) = maproot {
        s.push_str(&format!(", maproot={m}"));
    }
    if let Some(m) = mapall {
        s.push_str(&format!(", mapall={m}"));
    }
    s
}

/// Run the plan at `plan_path` against VM `vm`, calling `progress` after each step.
pub async fn run(
    client: &Client,
    vm: &str,
    plan_path: &std::path::Path,
    overrides: &Overrides,
    mode: Mode,
    mut progress: impl FnMut(&StepReport),
) -> anyhow::Result<Report> {
    let resolved = resolve_plan(client, plan_path).await?;
    let (target, guest_ip) = resolve_target(client, vm, &resolved.loaded.plan, overrides).await?;
    let steps = build_steps(&resolved, guest_ip)?;
    let remote = Remote::connect(&target).await?;
    let dry = mode == Mode::DryRun;
    let mut report = Report {
        vm: vm.to_owned(),
        address: target.address.clone(),
        dry_run: dry,
        steps: Vec::with_capacity(steps.len()),
    };
    let mut pending_groups: BTreeSet<String> = BTreeSet::new();
    let mut failed = false;
    for step in &steps {
        let result = if failed {
            StepReport {
                step: step.name.clone(),
                result: Outcome::NotRun,
                detail: "an earlier step failed".to_owned(),
            }
        } else {
            let pending = step
                .group
                .as_ref()
                .is_some_and(|g| pending_groups.contains(g));
            let (result, detail) = run_step(client, &remote, step, dry, pending).await;
            if result == Outcome::WouldChange
                && let Some(g) = &step.group
            {
                pending_groups.insert(g.clone());
            }
            failed = result == Outcome::Failed;
            StepReport {
                step: step.name.clone(),
                result,
                detail,
            }
        };
        progress(&result);
        report.steps.push(result);
    }
    remote.close().await;
    Ok(report)
}

/// Run one step; `pending` is whether an earlier step of its group would change (dry run).
async fn run_step(
    client: &Client,
    remote: &Remote,
    step: &Step,
    dry: bool,
    pending: bool,
) -> (Outcome, String) {
    match &step.action {
        Action::Remote {
            body,
            args,
            stdin,
            after_group,
        } => {
            if dry && pending && *after_group {
                return (
                    Outcome::WouldChange,
                    "after the changes above (not probed)".to_owned(),
                );
            }
            let mut all = vec![if dry { "1" } else { "0" }.to_owned()];
            all.extend(args.iter().cloned());
            let input = if dry { None } else { stdin.as_deref() };
            match remote.exec(&steps::script(body), &all, input).await {
                Ok(out) => interpret(&out),
                Err(e) => (Outcome::Failed, error_chain(&e)),
            }
        }
        Action::Export {
            export,
            client: want,
        } => match export_step(client, export, want, dry).await {
            Ok(r) => r,
            Err(e) => (Outcome::Failed, format!("{e:#}")),
        },
        Action::ExportsApply if dry => {
            if pending {
                (
                    Outcome::WouldChange,
                    "the NFS server would get the definitions above".to_owned(),
                )
            } else {
                (Outcome::Unchanged, "definitions as planned".to_owned())
            }
        }
        Action::ExportsApply => match exports_apply(client).await {
            Ok(r) => r,
            Err(e) => (Outcome::Failed, format!("{e:#}")),
        },
    }
}

/// The outcome of a remote step from its exit status and output.
fn interpret(out: &remote::ExecOutput) -> (Outcome, String) {
    let last_line = |text: &str| {
        text.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    match out.status {
        Some(steps::EXIT_UNCHANGED) => (Outcome::Unchanged, last_line(&out.stdout)),
        Some(steps::EXIT_CHANGED) => (Outcome::Changed, last_line(&out.stdout)),
        Some(steps::EXIT_WOULD_CHANGE) => (Outcome::WouldChange, last_line(&out.stdout)),
        status => {
            let tail: Vec<&str> = out
                .stderr
                .lines()
                .filter(|l| !l.trim().is_empty())
                .collect();
            let tail = tail[tail.len().saturating_sub(6)..].join(" | ");
            let code = status.map_or_else(|| "killed".to_owned(), |c| format!("exit {c}"));
            let detail = if tail.is_empty() {
                code
            } else {
                format!("{tail} ({code})")
            };
            (Outcome::Failed, detail)
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(next) = cur {
        s.push_str(": ");
        s.push_str(&next.to_string());
        cur = next.source();
    }
    s
}

/// Make sure `export` has the guest's client entry `want` (other clients are kept).
async fn export_step(
    client: &Client,
    export: &str,
    want: &ExportClient,
    dry: bool,
) -> anyhow::Result<(Outcome, String)> {
    let current = current_clients(client, export).await?;
    let others: Vec<&str> = current
        .iter()
        .filter(|c| c.address != want.address)
        .map(|c| c.address.as_str())
        .collect();
    let note = if others.is_empty() {
        String::new()
    } else {
        format!(" (also exported to {})", others.join(", "))
    };
    let have = current.iter().find(|c| c.address == want.address);
    if have.is_some_and(|h| normalized(h) == normalized(want)) {
        return Ok((
            Outcome::Unchanged,
            format!("{}{note}", describe_client(want)),
        ));
    }
    let why = match have {
        Some(h) => format!(
            "{} instead of {}",
            describe_client(h),
            describe_client(want)
        ),
        None => format!("not exported to {}", want.address),
    };
    if dry {
        return Ok((Outcome::WouldChange, why));
    }
    let mut clients = current.clone();
    match clients.iter_mut().find(|c| c.address == want.address) {
        Some(c) => *c = want.clone(),
        None => clients.push(want.clone()),
    }
    let _: Export = client
        .put(&export_path(export), &PutExport { clients })
        .await?;
    let after = current_clients(client, export).await?;
    if after
        .iter()
        .any(|c| c.address == want.address && normalized(c) == normalized(want))
    {
        Ok((Outcome::Changed, format!("{why}{note}")))
    } else {
        Ok((
            Outcome::Failed,
            "labd accepted the definition but does not show it".to_owned(),
        ))
    }
}

async fn current_clients(client: &Client, export: &str) -> anyhow::Result<Vec<ExportClient>> {
    match client.get::<Export>(&export_path(export)).await {
        Ok(e) => Ok(e.clients),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Apply labd's export definitions (idempotent: labd reports whether its file changed).
async fn exports_apply(client: &Client) -> anyhow::Result<(Outcome, String)> {
    let job: Job = client.post_empty("/v1/exports/apply").await?;
    let job = jobs::wait(client, job, false).await?;
    if let Some(failed) = JobFailed::of(&job) {
        return Ok((Outcome::Failed, failed.to_string()));
    }
    let applied: ExportsApplied = job
        .result
        .clone()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    if applied.changed {
        let mut what = Vec::new();
        for (label, names) in [
            ("added", &applied.added),
            ("updated", &applied.updated),
            ("removed", &applied.removed),
        ] {
            if !names.is_empty() {
                what.push(format!("{label} {}", names.join(", ")));
            }
        }
        Ok((
            Outcome::Changed,
            format!(
                "{} rewritten and reloaded: {}",
                applied.file,
                what.join("; ")
            ),
        ))
    } else {
        Ok((Outcome::Unchanged, format!("{} up to date", applied.file)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn out(status: Option<i32>, stdout: &str, stderr: &str) -> remote::ExecOutput {
        remote::ExecOutput {
            status,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn exit_status_is_the_outcome() {
        assert_eq!(
            interpret(&out(Some(0), "x\nin sync\n", "")),
            (Outcome::Unchanged, "in sync".into())
        );
        assert_eq!(
            interpret(&out(Some(3), "2 packages\n", "")).0,
            Outcome::Changed
        );
        assert_eq!(
            interpret(&out(Some(4), "diff\n", "")).0,
            Outcome::WouldChange
        );
        let (o, detail) = interpret(&out(Some(1), "", "noise\n\napt-get failed\n"));
        assert_eq!(o, Outcome::Failed);
        assert_eq!(detail, "noise | apt-get failed (exit 1)");
        assert_eq!(interpret(&out(None, "", "")).1, "killed");
        assert_eq!(
            interpret(&out(Some(127), "", "sh: x: not found")).0,
            Outcome::Failed
        );
    }

    #[test]
    fn client_entries_compare_with_defaults() {
        let c = |access: Option<&str>, maproot: Option<&str>, mapall: Option<&str>| ExportClient {
            address: "10.0.0.5".into(),
            access: access.map(str::to_owned),
            maproot: maproot.map(str::to_owned),
            mapall: mapall.map(str::to_owned),
            sec: None,
        };
        assert_eq!(
            normalized(&c(None, None, None)),
            normalized(&c(Some("rw"), Some("nobody"), None))
        );
        assert_ne!(
            normalized(&c(None, Some("root"), None)),
            normalized(&c(None, None, None))
        );
        assert_eq!(
            describe_client(&c(None, None, Some("1000:1000"))),
            "rw, mapall=1000:1000"
        );
    }

    #[test]
    fn host_keys_are_lines_or_files() {
        let line = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyFakeKeyFakeKey";
        assert_eq!(read_host_key(line).unwrap(), line);
        let path = std::env::temp_dir().join(format!("labctl-hk-{}", std::process::id()));
        std::fs::write(&path, format!("# comment\n\n{line} root@x\n")).unwrap();
        assert_eq!(
            read_host_key(path.to_str().unwrap()).unwrap(),
            format!("{line} root@x")
        );
        std::fs::remove_file(&path).unwrap();
        assert!(read_host_key("/nonexistent/key").is_err());
    }
}
