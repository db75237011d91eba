//! Snapshot policies: the inventory they plan on, plans and explanations for one dataset, and
//! runs that take and prune snapshots with as few ZFS transactions as the ZFS allows.
//!
//! The rules live in the pure planner (`core::retention`); this module feeds it from ZFS and
//! carries its decisions out:
//! - the inventory is one `zfs get -Hp -r` of `labd:policy`, `userrefs` and `creation` under
//!   the root: each dataset's effective policy (inherited down the tree, `none` opts out) and
//!   each snapshot's marker (a policy snapshot carries a *local* `labd:policy`, set atomically
//!   by `zfs snapshot -o`), hold count and creation time;
//! - takes are grouped by pool, policy and name: a subtree whose every dataset takes the same
//!   snapshot gets one `zfs snapshot -r` (one transaction on every ZFS); the rest go into one
//!   multi-name `zfs snapshot` where supported, else one command each;
//! - destroys of one name across a subtree whose every copy is due go into one
//!   `zfs destroy -r ds@name`; the rest into comma lists where supported, else one by one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use jiff::Timestamp;
use serde_json::json;

use super::names::DatasetName;
use super::retention::{self, Action, Plan, PlanOptions, Policy, Snap};
use super::{Error, Host};
use crate::events::EventBus;
use crate::host::zfs::PropRow;
use crate::wire;

/// The user property naming a dataset's policy, and marking a snapshot as a policy's.
pub const POLICY_PROPERTY: &str = "labd:policy";
/// The value that opts a dataset (and, inherited, its children) out.
pub const NO_POLICY: &str = "none";
const INVENTORY_PROPERTIES: &str = "labd:policy,userrefs,creation";

/// The time policies plan for: the system clock, or for tests a file holding an RFC 3339
/// time (`[schedule] clock_file`).
pub fn now(clock_file: Option<&Path>) -> Result<Timestamp, Error> {
    let Some(path) = clock_file else {
        return Ok(Timestamp::now());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Internal(format!("cannot read clock file {}: {e}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e| Error::Internal(format!("clock file {}: {e}", path.display())))
}

/// One dataset as the inventory sees it.
#[derive(Debug, Clone)]
struct DatasetEntry {
    name: String,
    /// Effective `labd:policy` value (`-` when unset).
    policy: String,
    /// Its source column (`local`, `inherited from …`, `-`).
    policy_source: String,
    snaps: Vec<Snap>,
}

/// Fold `zfs get` rows (a dataset, its snapshots, then its children) into datasets.
fn inventory_from_rows(rows: &[PropRow]) -> Vec<DatasetEntry> {
    let mut datasets: Vec<DatasetEntry> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    // Per snapshot: (dataset index, name, policy source, userrefs, creation).
    let mut snaps: BTreeMap<(usize, String), (String, u64, u64)> = BTreeMap::new();
    let mut order: Vec<(usize, String)> = Vec::new();
    for row in rows {
        match row.name.split_once('@') {
            None => {
                let i = *index.entry(row.name.clone()).or_insert_with(|| {
                    datasets.push(DatasetEntry {
                        name: row.name.clone(),
                        policy: "-".into(),
                        policy_source: "-".into(),
                        snaps: Vec::new(),
                    });
                    datasets.len() - 1
                });
                if row.property == POLICY_PROPERTY {
                    datasets[i].policy.clone_from(&row.value);
                    datasets[i].policy_source.clone_from(&row.source);
                }
            }
            Some((ds, snap)) => {
                let Some(&i) = index.get(ds) else { continue };
                let key = (i, snap.to_owned());
                if !snaps.contains_key(&key) {
                    order.push(key.clone());
                }
                let entry = snaps.entry(key).or_insert_with(|| ("-".into(), 0, 0));
                let number = || row.value.parse::<u64>().unwrap_or(0);
                match row.property.as_str() {
                    POLICY_PROPERTY => entry.0.clone_from(&row.source),
                    "userrefs" => entry.1 = number(),
                    "creation" => entry.2 = number(),
                    _ => {}
                }
            }
        }
    }
    for key in order {
        let Some((source, userrefs, creation)) = snaps.get(&key) else {
            continue;
        };
        let created = i64::try_from(*creation)
            .ok()
            .and_then(|s| Timestamp::from_second(s).ok())
            .unwrap_or(Timestamp::UNIX_EPOCH);
        datasets[key.0].snaps.push(Snap {
            ours: source == "local" && retention::parse_name(&key.1).is_some(),
            held: *userrefs > 0,
            created,
            name: key.1,
        });
    }
    datasets
}

fn wire_plan(entry: &DatasetEntry, at: Timestamp, plan: Option<&Plan>) -> wire::DatasetPlan {
    let policy = match entry.policy.as_str() {
        "-" => NO_POLICY.to_owned(),
        p => p.to_owned(),
    };
    let decisions = match plan {
        Some(plan) => plan
            .decisions
            .iter()
            .map(|d| wire::SnapshotDecision {
                snapshot: d.snapshot.clone(),
                action: match d.action {
                    Action::Keep => "keep".to_owned(),
                    Action::Destroy => "destroy".to_owned(),
                },
                reasons: d.reasons.clone(),
            })
            .collect(),
        None => entry
            .snaps
            .iter()
            .map(|s| wire::SnapshotDecision {
                snapshot: s.name.clone(),
                action: "keep".to_owned(),
                reasons: vec![format!("no policy applies to {}", entry.name)],
            })
            .collect(),
    };
    wire::DatasetPlan {
        dataset: entry.name.clone(),
        policy,
        policy_source: entry.policy_source.clone(),
        at,
        take: plan
            .and_then(|p| p.take.as_ref())
            .map(|t| wire::PlannedSnapshot {
                name: t.name.clone(),
                due: t.due.iter().map(|b| b.as_str().to_owned()).collect(),
            }),
        decisions,
        pruning_paused: plan.and_then(|p| p.pruning_paused.clone()),
    }
}

/// The policy of an inventory entry, if one applies.
fn policy_of<'a>(host: &'a Host, entry: &DatasetEntry) -> Result<Option<&'a Policy>, String> {
    match entry.policy.as_str() {
        "-" | NO_POLICY => Ok(None),
        name => host.config.policies.get(name).map(Some).ok_or_else(|| {
            format!(
                "{}: unknown policy '{name}' in {POLICY_PROPERTY}",
                entry.name
            )
        }),
    }
}

fn options(host: &Host, clock_jumped: bool) -> PlanOptions {
    PlanOptions {
        max_destroy: host.config.schedule.max_destroy_per_run,
        clock_jumped,
    }
}

/// What a run would do to one dataset at `at`, with every reason.
pub async fn plan_dataset(
    host: &Host,
    dataset: &DatasetName,
    at: Timestamp,
) -> Result<wire::DatasetPlan, Error> {
    let rows = host
        .zfs
        .get_with_snapshots(dataset, INVENTORY_PROPERTIES, false)
        .await?;
    let entry = inventory_from_rows(&rows)
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound {
            what: dataset.to_string(),
        })?;
    let policy = policy_of(host, &entry).map_err(|message| Error::Invalid {
        field: "name".into(),
        code: "unknown_policy",
        message,
    })?;
    let plan = policy.map(|p| retention::plan(p, &entry.snaps, at, options(host, false)));
    Ok(wire_plan(&entry, at, plan.as_ref()))
}

/// Datasets under the root by effective policy name.
pub async fn datasets_by_policy(host: &Host) -> Result<BTreeMap<String, Vec<String>>, Error> {
    let rows = host
        .zfs
        .get_props(&host.config.zfs.root, POLICY_PROPERTY, true)
        .await?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        if row.value != "-" && row.value != NO_POLICY {
            out.entry(row.value).or_default().push(row.name);
        }
    }
    Ok(out)
}

/// Whether `child` is strictly below `parent`.
fn is_below(child: &str, parent: &str) -> bool {
    child.len() > parent.len()
        && child.starts_with(parent)
        && child[parent.len()..].starts_with('/')
}

/// Split `members` into roots of subtrees whose every dataset (among `all`) is a member,
/// and the members not covered by such a subtree.
fn subtree_roots(members: &BTreeSet<&str>, all: &[&str]) -> (Vec<String>, Vec<String>) {
    let covers = |d: &str| {
        let mut has_child = false;
        for other in all.iter().filter(|o| is_below(o, d)) {
            has_child = true;
            if !members.contains(other) {
                return false;
            }
        }
        has_child
    };
    let mut roots: Vec<String> = Vec::new();
    let mut singles = Vec::new();
    for m in members {
        if roots.iter().any(|r| is_below(m, r)) {
            continue;
        }
        if covers(m) {
            roots.push((*m).to_owned());
        } else {
            singles.push((*m).to_owned());
        }
    }
    (roots, singles)
}

fn dataset(name: &str) -> Result<DatasetName, Error> {
    DatasetName::parse(name).map_err(|e| Error::Internal(format!("zfs listed a bad name: {e}")))
}

/// Take the planned snapshots: one `zfs snapshot -r` per fully covered subtree, the rest
/// batched. Returns the datasets whose snapshot could not be taken.
async fn take_all(
    host: &Host,
    events: &EventBus,
    takes: &BTreeMap<(String, String, String), BTreeSet<&str>>,
    all: &[&str],
    report: &mut wire::PolicyRun,
) -> Result<BTreeSet<String>, Error> {
    let caps = host.zfs.capabilities();
    let mut failed_takes: BTreeSet<String> = BTreeSet::new();
    for ((_, policy, name), members) in takes {
        let marker = super::props::Assignment {
            name: POLICY_PROPERTY.to_owned(),
            value: policy.clone(),
        };
        let (roots, singles) = subtree_roots(members, all);
        let mut batches: Vec<(Vec<String>, bool)> =
            roots.into_iter().map(|r| (vec![r], true)).collect();
        if !singles.is_empty() {
            batches.push((singles, false));
        }
        for (datasets, recursive) in batches {
            let snaps = datasets
                .iter()
                .map(|d| {
                    super::names::SnapshotName::new(dataset(d)?, name)
                        .map_err(|e| Error::Internal(e.to_string()))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            report.commands += if recursive || caps.multi_snapshot {
                1
            } else {
                u32::try_from(snaps.len()).unwrap_or(u32::MAX)
            };
            match host
                .zfs
                .snapshot(&snaps, recursive, std::slice::from_ref(&marker))
                .await
            {
                Ok(()) => {
                    for d in &datasets {
                        let covered: Vec<&str> = if recursive {
                            all.iter()
                                .copied()
                                .filter(|a| a == d || is_below(a, d))
                                .collect()
                        } else {
                            vec![d.as_str()]
                        };
                        for c in covered {
                            let full = format!("{c}@{name}");
                            events.publish(
                                "snapshot.created",
                                &full,
                                None,
                                json!({"policy": policy}),
                            );
                            report.taken.push(full);
                        }
                    }
                }
                Err(e) => {
                    report
                        .errors
                        .push(format!("snapshot {name} of {}: {e}", datasets.join(", ")));
                    for d in &datasets {
                        failed_takes.insert(d.clone());
                        if recursive {
                            let below = all.iter().filter(|a| is_below(a, d));
                            failed_takes.extend(below.map(|a| (*a).to_owned()));
                        }
                    }
                }
            }
        }
    }

    Ok(failed_takes)
}

/// Destroy the snapshots the plans doomed: one `zfs destroy -r ds@name` where every copy of
/// a name in a subtree is due, the rest batched per dataset. Returns what was destroyed.
async fn prune_all(
    host: &Host,
    inventory: &[DatasetEntry],
    all: &[&str],
    destroys: &BTreeMap<&str, Vec<&str>>,
    report: &mut wire::PolicyRun,
) -> Result<BTreeSet<(String, String)>, Error> {
    let caps = host.zfs.capabilities();
    let mut by_name: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (ds, names) in destroys {
        for n in names {
            by_name.entry(n).or_default().insert(ds);
        }
    }
    let holders: HashMap<&str, BTreeSet<&str>> = inventory
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.snaps.iter().map(|s| s.name.as_str()).collect(),
            )
        })
        .collect();
    let mut done: BTreeSet<(String, String)> = BTreeSet::new();
    for (name, members) in &by_name {
        let with_name: Vec<&str> = all
            .iter()
            .copied()
            .filter(|d| holders.get(d).is_some_and(|s| s.contains(name)))
            .collect();
        let (roots, _) = subtree_roots(members, &with_name);
        for root in roots {
            report.commands += 1;
            let covered: Vec<&str> = with_name
                .iter()
                .copied()
                .filter(|d| *d == root || is_below(d, &root))
                .collect();
            match host
                .zfs
                .destroy_snapshots(&dataset(&root)?, &[name], true)
                .await
            {
                Ok(()) => {
                    for c in covered {
                        done.insert((c.to_owned(), (*name).to_owned()));
                    }
                }
                Err(e) => report.errors.push(format!("destroy -r {root}@{name}: {e}")),
            }
        }
    }
    for (ds, names) in destroys {
        let left: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !done.contains(&((*ds).to_owned(), (*n).to_owned())))
            .collect();
        if left.is_empty() {
            continue;
        }
        report.commands += if caps.comma_destroy {
            1
        } else {
            u32::try_from(left.len()).unwrap_or(u32::MAX)
        };
        match host
            .zfs
            .destroy_snapshots(&dataset(ds)?, &left, false)
            .await
        {
            Ok(()) => {
                for n in left {
                    done.insert(((*ds).to_owned(), n.to_owned()));
                }
            }
            Err(e) => report
                .errors
                .push(format!("destroy {ds}@{}: {e}", left.join(","))),
        }
    }
    Ok(done)
}

/// Run every policy under the root once, at `at`.
pub async fn run(
    host: &Host,
    events: &EventBus,
    at: Timestamp,
    clock_jumped: bool,
) -> Result<wire::PolicyRun, Error> {
    let started = Instant::now();
    let mut report = wire::PolicyRun {
        at: Some(at),
        ..wire::PolicyRun::default()
    };
    let rows = host
        .zfs
        .get_with_snapshots(&host.config.zfs.root, INVENTORY_PROPERTIES, true)
        .await?;
    let inventory = inventory_from_rows(&rows);
    let all: Vec<&str> = inventory.iter().map(|d| d.name.as_str()).collect();

    // Plan every dataset.
    let mut takes: BTreeMap<(String, String, String), BTreeSet<&str>> = BTreeMap::new();
    let mut destroys: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut plans = Vec::new();
    for entry in &inventory {
        let policy = match policy_of(host, entry) {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => {
                report.errors.push(e);
                continue;
            }
        };
        plans.push((
            entry,
            policy,
            retention::plan(policy, &entry.snaps, at, options(host, clock_jumped)),
        ));
    }
    for (entry, policy, plan) in &plans {
        if let Some(reason) = &plan.pruning_paused {
            report.paused.insert(entry.name.clone(), reason.clone());
        }
        if let Some(take) = &plan.take {
            let pool = entry.name.split('/').next().unwrap_or_default().to_owned();
            takes
                .entry((pool, policy.name.clone(), take.name.clone()))
                .or_default()
                .insert(entry.name.as_str());
        }
        let doomed: Vec<&str> = plan
            .decisions
            .iter()
            .filter(|d| d.action == Action::Destroy)
            .map(|d| d.snapshot.as_str())
            .collect();
        if !doomed.is_empty() {
            destroys.insert(entry.name.as_str(), doomed);
        }
    }
    if !report.paused.is_empty() {
        events.publish(
            "policy.pruning_paused",
            &host.config.zfs.root.to_string(),
            None,
            json!({"datasets": report.paused}),
        );
    }

    let failed_takes = take_all(host, events, &takes, &all, &mut report).await?;

    // The plans counted on the new snapshots: no pruning where one could not be taken.
    destroys.retain(|ds, _| !failed_takes.contains(*ds));
    let done = prune_all(host, &inventory, &all, &destroys, &mut report).await?;
    for (ds, n) in &done {
        let full = format!("{ds}@{n}");
        events.publish("snapshot.destroyed", &full, None, json!({"by": "policy"}));
        report.destroyed.push(full);
    }
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    events.publish(
        "policy.run.finished",
        &host.config.zfs.root.to_string(),
        None,
        json!({
            "at": at,
            "taken": report.taken.len(),
            "destroyed": report.destroyed.len(),
            "errors": report.errors,
            "commands": report.commands,
            "duration_ms": report.duration_ms,
        }),
    );
    Ok(report)
}

/// What the scheduler and the last run left for `GET /v1/policies`.
#[derive(Debug, Default)]
pub struct PolicyState {
    /// The last finished run.
    pub last_run: Option<wire::PolicyRun>,
    /// When the scheduler runs next.
    pub next_run: Option<Timestamp>,
}

impl super::Core {
    fn policy_state(&self) -> std::sync::MutexGuard<'_, PolicyState> {
        self.policy_state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record when the scheduler runs next.
    pub fn set_next_policy_run(&self, at: Option<Timestamp>) {
        self.policy_state().next_run = at;
    }

    /// Every configured policy with its datasets, next and last run.
    pub async fn list_policies(&self) -> Result<Vec<wire::PolicyInfo>, Error> {
        let host = self.host();
        let mut by_policy = datasets_by_policy(&host).await?;
        let state = self.policy_state();
        Ok(host
            .config
            .policies
            .values()
            .map(|p| {
                let datasets = by_policy.remove(&p.name).unwrap_or_default();
                let last_run = state.last_run.as_ref().map(|run| {
                    let mine = |full: &String| {
                        full.split_once('@')
                            .is_some_and(|(ds, _)| datasets.iter().any(|d| d == ds))
                    };
                    wire::PolicyRun {
                        taken: run.taken.iter().filter(|s| mine(s)).cloned().collect(),
                        destroyed: run.destroyed.iter().filter(|s| mine(s)).cloned().collect(),
                        paused: run
                            .paused
                            .iter()
                            .filter(|(ds, _)| datasets.contains(ds))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                        ..run.clone()
                    }
                });
                wire::PolicyInfo {
                    name: p.name.clone(),
                    frequent_minutes: p.frequent_minutes,
                    keep: retention::Bucket::ALL
                        .iter()
                        .map(|b| (b.as_str().to_owned(), p.count(*b)))
                        .collect(),
                    min_keep: p.min_keep,
                    max_age_seconds: p.max_age.map(|d| d.as_secs()),
                    autosnap: p.autosnap,
                    autoprune: p.autoprune,
                    datasets,
                    next_run: state.next_run,
                    last_run,
                }
            })
            .collect())
    }

    /// One policy.
    pub async fn get_policy(&self, name: &str) -> Result<wire::PolicyInfo, Error> {
        self.list_policies()
            .await?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::NotFound {
                what: format!("policy '{name}'"),
            })
    }

    /// The plan of one dataset at `at` (default: the policy clock's now).
    pub async fn plan(
        &self,
        name: &str,
        at: Option<Timestamp>,
    ) -> Result<wire::DatasetPlan, Error> {
        let ds = self.resolve("name", name)?;
        let host = self.host();
        let at = match at {
            Some(t) => t,
            None => now(host.config.schedule.clock_file.as_deref())?,
        };
        plan_dataset(&host, &ds, at).await
    }

    /// Why one snapshot is kept or destroyed: the plan of its dataset, reduced to it.
    pub async fn explain(
        &self,
        name: &str,
        snapshot: &str,
        at: Option<Timestamp>,
    ) -> Result<wire::DatasetPlan, Error> {
        let snap = self.resolve_snapshot(name, snapshot)?;
        let mut plan = self.plan(snap.dataset().as_str(), at).await?;
        plan.decisions.retain(|d| d.snapshot == snap.snapshot());
        if plan.decisions.is_empty() {
            return Err(Error::NotFound {
                what: snap.to_string(),
            });
        }
        plan.take = None;
        Ok(plan)
    }

    /// Start one policy run now (at the policy clock's time) as a job.
    pub fn run_policies(
        self: &std::sync::Arc<Self>,
        actor: Option<wire::Actor>,
        clock_jumped: bool,
    ) -> Result<wire::Job, Error> {
        let host = self.host();
        let core = std::sync::Arc::clone(self);
        let root = host.config.zfs.root.to_string();
        self.jobs.spawn(
            "policy.run",
            &root,
            actor,
            vec!["policy-run".to_owned()],
            move || async move {
                let at = now(host.config.schedule.clock_file.as_deref())?;
                let report = run(&host, &core.events, at, clock_jumped).await?;
                core.policy_state().last_run = Some(report.clone());
                Ok(json!(report))
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
    fn inventory_marks_only_local_policy_snapshots_as_ours() {
        let rows = [
            row("t/a", POLICY_PROPERTY, "prod", "local"),
            row(
                "t/a@labd_2026-11-25T1900Z_hourly",
                POLICY_PROPERTY,
                "prod",
                "local",
            ),
            row("t/a@labd_2026-11-25T1900Z_hourly", "userrefs", "0", "-"),
            row(
                "t/a@labd_2026-11-25T2000Z_hourly",
                POLICY_PROPERTY,
                "prod",
                "inherited from t/a",
            ),
            row("t/a@manual", POLICY_PROPERTY, "prod", "local"),
            row("t/a@manual", "userrefs", "2", "-"),
            row("t/a/b", POLICY_PROPERTY, "prod", "inherited from t/a"),
        ];
        let inv = inventory_from_rows(&rows);
        assert_eq!(inv.len(), 2);
        let ours: Vec<bool> = inv[0].snaps.iter().map(|s| s.ours).collect();
        assert_eq!(ours, [true, false, false]);
        assert!(inv[0].snaps[2].held);
        assert_eq!(inv[1].policy_source, "inherited from t/a");
    }

    #[test]
    fn subtrees_are_found_only_when_fully_covered() {
        let all = ["t/p", "t/p/a", "t/p/b", "t/q", "t/q/a", "t/q/b", "t/r"];
        let members: BTreeSet<&str> = ["t/p", "t/p/a", "t/p/b", "t/q", "t/q/a", "t/r"].into();
        let (roots, singles) = subtree_roots(&members, &all);
        assert_eq!(roots, ["t/p"]);
        assert_eq!(singles, ["t/q", "t/q/a", "t/r"]);
        assert!(!is_below("t/pa", "t/p"));
    }
}
