//! `labctl policy …`: list and show snapshot policies, plan a dataset or explain one snapshot
//! decision (optionally `--at` another time), and run the policies now (a job, see
//! [`crate::jobs`]).

use std::collections::BTreeMap;

use jiff::Timestamp;
use labd::wire::{DatasetPlan, Job, PolicyInfo, PolicyRun};

use super::Ctx;
use crate::args::{OutputFormat, PolicyCommand, SnapshotRef};
use crate::client::{dataset_path, encode_query_value, encode_segment, snapshot_path};
use crate::{jobs, output};

/// The buckets of a policy in the order they are shown, with the unit of the KEEP summary
/// (`frequently` is shown as `COUNTxPERIOD` instead).
const BUCKETS: [(&str, &str); 6] = [
    ("frequently", ""),
    ("hourly", "h"),
    ("daily", "d"),
    ("weekly", "w"),
    ("monthly", "m"),
    ("yearly", "y"),
];

/// Run `labctl policy <cmd>`.
pub async fn run(ctx: &Ctx, cmd: PolicyCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match cmd {
        PolicyCommand::List => {
            let policies: Vec<PolicyInfo> = client.get("/v1/policies").await?;
            output::emit(ctx.format, &policies, |p| render_list(p))
        }
        PolicyCommand::Show { name } => {
            let path = format!("/v1/policies/{}", encode_segment(&name));
            let policy: PolicyInfo = client.get(&path).await?;
            output::emit(ctx.format, &policy, render_policy)
        }
        PolicyCommand::Plan { dataset, at } => {
            let path = format!("{}/plan{}", dataset_path(&dataset), at_query(at));
            let plan: DatasetPlan = client.get(&path).await?;
            output::emit(ctx.format, &plan, render_plan)
        }
        PolicyCommand::Explain { snapshot, at } => {
            let path = explain_path(&snapshot, at);
            let plan: DatasetPlan = client.get(&path).await?;
            if ctx.format == OutputFormat::Table && plan.decisions.is_empty() {
                anyhow::bail!("labd decided nothing about {snapshot}");
            }
            output::emit(ctx.format, &plan, render_explain)
        }
        PolicyCommand::Run => {
            let job: Job = client
                .post("/v1/policies/run", &serde_json::json!({}))
                .await?;
            jobs::run(client, ctx.report(), job).await
        }
    }
}

/// `?at=…` with the time percent-encoded, or nothing for "now".
fn at_query(at: Option<Timestamp>) -> String {
    match at {
        Some(t) => format!("?at={}", encode_query_value(&t.to_string())),
        None => String::new(),
    }
}

/// `…/snapshots/{snap}/explain[?at=…]`.
fn explain_path(snap: &SnapshotRef, at: Option<Timestamp>) -> String {
    format!(
        "{}/explain{}",
        snapshot_path(&snap.dataset, &snap.snapshot),
        at_query(at)
    )
}

/// The KEEP column: `4x15min 24h 30d 8w 12m 2y`, zero counts left out, `-` when all are
/// zero. Buckets labctl does not know are appended as `NAME=COUNT`.
fn keep_summary(keep: &BTreeMap<String, u32>, frequent_minutes: u32) -> String {
    let mut parts = Vec::new();
    for (bucket, unit) in BUCKETS {
        match keep.get(bucket) {
            None | Some(0) => {}
            Some(n) if bucket == "frequently" => parts.push(format!("{n}x{frequent_minutes}min")),
            Some(n) => parts.push(format!("{n}{unit}")),
        }
    }
    for (bucket, n) in keep {
        if *n > 0 && !BUCKETS.iter().any(|(known, _)| known == bucket) {
            parts.push(format!("{bucket}={n}"));
        }
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}

/// A duration in seconds as days, hours, minutes and seconds: `400d`, `1d12h`, `90min` is
/// `1h30min`, `0s`.
fn duration(seconds: i64) -> String {
    if seconds <= 0 {
        return format!("{seconds}s");
    }
    let mut rest = seconds;
    let mut s = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)] {
        if rest >= len {
            s.push_str(&format!("{}{unit}", rest / len));
            rest %= len;
        }
    }
    s
}

/// `N error` / `N errors`.
fn errors_count(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

/// The LAST RUN column: `+taken -destroyed`, with ` (N errors)` when there were errors.
fn last_run_summary(run: Option<&PolicyRun>) -> String {
    let Some(run) = run else {
        return "-".to_owned();
    };
    let mut s = format!("+{} -{}", run.taken.len(), run.destroyed.len());
    if !run.errors.is_empty() {
        s.push_str(&format!(" ({})", errors_count(run.errors.len())));
    }
    s
}

fn time_or_dash(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), output::time)
}

fn render_list(policies: &[PolicyInfo]) -> String {
    let mut t = output::table(&[
        "NAME",
        "KEEP",
        "MIN",
        "AUTOSNAP",
        "AUTOPRUNE",
        "DATASETS",
        "NEXT RUN",
        "LAST RUN",
    ]);
    for p in policies {
        t.add_row(vec![
            p.name.clone(),
            keep_summary(&p.keep, p.frequent_minutes),
            p.min_keep.to_string(),
            output::yes_no(p.autosnap).to_owned(),
            output::yes_no(p.autoprune).to_owned(),
            p.datasets.len().to_string(),
            time_or_dash(p.next_run),
            last_run_summary(p.last_run.as_ref()),
        ]);
    }
    output::render(&t)
}

fn render_policy(p: &PolicyInfo) -> String {
    let mut lines = vec![
        format!("name: {}", p.name),
        format!("frequent period: {}min", p.frequent_minutes),
    ];
    for (bucket, _) in BUCKETS {
        lines.push(format!(
            "{bucket}: {}",
            p.keep.get(bucket).copied().unwrap_or(0)
        ));
    }
    for (bucket, n) in &p.keep {
        if !BUCKETS.iter().any(|(known, _)| known == bucket) {
            lines.push(format!("{bucket}: {n}"));
        }
    }
    lines.push(format!("min_keep: {}", p.min_keep));
    lines.push(format!(
        "max_age: {}",
        p.max_age_seconds.map_or_else(|| "-".to_owned(), duration)
    ));
    lines.push(format!("autosnap: {}", output::yes_no(p.autosnap)));
    lines.push(format!("autoprune: {}", output::yes_no(p.autoprune)));
    lines.push(format!("next run: {}", time_or_dash(p.next_run)));
    lines.push(format!("datasets: {}", p.datasets.len()));
    lines.extend(p.datasets.iter().map(|d| format!("  {d}")));
    match &p.last_run {
        None => lines.push("last run: -".to_owned()),
        Some(run) => {
            lines.push(format!("last run: {}", time_or_dash(run.at)));
            lines.push(format!("  taken: {}", run.taken.len()));
            lines.push(format!("  destroyed: {}", run.destroyed.len()));
            lines.extend(
                run.paused
                    .iter()
                    .map(|(dataset, reason)| format!("  paused: {dataset}: {reason}")),
            );
            lines.extend(run.errors.iter().map(|e| format!("  error: {e}")));
        }
    }
    lines.join("\n")
}

/// `policy: NAME (SOURCE)`, without the parentheses when labd gives no source.
fn policy_line(plan: &DatasetPlan) -> String {
    if plan.policy_source.is_empty() {
        format!("policy: {}", plan.policy)
    } else {
        format!("policy: {} ({})", plan.policy, plan.policy_source)
    }
}

fn render_plan(plan: &DatasetPlan) -> String {
    let mut lines = vec![
        format!("dataset: {}", plan.dataset),
        policy_line(plan),
        format!("at: {}", output::time(plan.at)),
    ];
    lines.push(match &plan.take {
        Some(take) if take.due.is_empty() => format!("take: {}", take.name),
        Some(take) => format!("take: {} (due: {})", take.name, take.due.join(", ")),
        None => "take: nothing due".to_owned(),
    });
    if let Some(reason) = &plan.pruning_paused {
        lines.push(format!("pruning paused: {reason}"));
    }
    let mut t = output::table(&["SNAPSHOT", "ACTION", "REASONS"]);
    for d in &plan.decisions {
        t.add_row(vec![
            d.snapshot.clone(),
            d.action.clone(),
            d.reasons.join("; "),
        ]);
    }
    format!("{}\n\n{}", lines.join("\n"), output::render(&t))
}

fn render_explain(plan: &DatasetPlan) -> String {
    let mut lines = Vec::new();
    for d in &plan.decisions {
        lines.push(format!("{}@{}: {}", plan.dataset, d.snapshot, d.action));
        lines.extend(d.reasons.iter().map(|r| format!("  - {r}")));
    }
    lines.push(policy_line(plan));
    lines.push(format!("at: {}", output::time(plan.at)));
    if let Some(reason) = &plan.pruning_paused {
        lines.push(format!("pruning paused: {reason}"));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::args;

    fn keep(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    }

    fn policy() -> PolicyInfo {
        serde_json::from_value(serde_json::json!({
            "name": "daily",
            "frequent_minutes": 15,
            "keep": {"frequently": 4, "hourly": 24, "daily": 30, "weekly": 0,
                     "monthly": 12, "yearly": 0},
            "min_keep": 3,
            "max_age_seconds": 400 * 86_400,
            "autosnap": true,
            "autoprune": false,
            "datasets": ["tank/labd/a", "tank/labd/b"],
            "next_run": "2026-11-25T19:15:00.25Z",
            "last_run": {
                "at": "2026-11-25T19:00:00Z",
                "taken": ["tank/labd/a@x", "tank/labd/b@x", "tank/labd/c@x"],
                "destroyed": ["tank/labd/a@old"],
                "paused": {"tank/labd/b": "a hold"},
                "errors": ["zfs destroy failed", "again"],
                "commands": 5,
                "duration_ms": 40,
            },
        }))
        .unwrap()
    }

    fn plan() -> DatasetPlan {
        serde_json::from_value(serde_json::json!({
            "dataset": "tank/labd/a",
            "policy": "daily",
            "policy_source": "inherited from tank/labd",
            "at": "2026-11-25T19:00:00Z",
            "take": {"name": "labd-2026-11-25T190000Z", "due": ["hourly", "daily"]},
            "decisions": [
                {"snapshot": "s1", "action": "destroy", "reasons": ["older than max_age"]},
                {"snapshot": "s2", "action": "keep",
                 "reasons": ["daily bucket 2026-11-24", "held"]},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn keep_summary_skips_zero_counts_in_bucket_order() {
        let p = policy();
        assert_eq!(keep_summary(&p.keep, 15), "4x15min 24h 30d 12m");
        assert_eq!(
            keep_summary(
                &keep(&[
                    ("yearly", 2),
                    ("weekly", 8),
                    ("frequently", 4),
                    ("monthly", 12),
                    ("daily", 30),
                    ("hourly", 24)
                ]),
                5
            ),
            "4x5min 24h 30d 8w 12m 2y"
        );
        assert_eq!(keep_summary(&keep(&[("daily", 7)]), 15), "7d");
    }

    #[test]
    fn keep_summary_is_a_dash_when_nothing_is_kept() {
        assert_eq!(keep_summary(&keep(&[]), 15), "-");
        assert_eq!(keep_summary(&keep(&[("hourly", 0), ("daily", 0)]), 15), "-");
    }

    #[test]
    fn keep_summary_appends_unknown_buckets() {
        assert_eq!(
            keep_summary(&keep(&[("daily", 1), ("decadely", 3), ("minutely", 0)]), 15),
            "1d decadely=3"
        );
    }

    #[test]
    fn at_is_percent_encoded_in_the_query() {
        assert_eq!(at_query(None), "");
        let at: Timestamp = "2026-11-25T19:00:00Z".parse().unwrap();
        assert_eq!(at_query(Some(at)), "?at=2026-11-25T19%3A00%3A00Z");
        let at: Timestamp = "2026-11-25T20:00:00.5+01:00".parse().unwrap();
        assert_eq!(at_query(Some(at)), "?at=2026-11-25T19%3A00%3A00.5Z");
        let snap = args::parse_snapshot_ref("tank/labd/a@s1").unwrap();
        assert_eq!(
            explain_path(&snap, Some(at)),
            "/v1/datasets/tank%2Flabd%2Fa/snapshots/s1/explain?at=2026-11-25T19%3A00%3A00.5Z"
        );
        assert_eq!(
            explain_path(&snap, None),
            "/v1/datasets/tank%2Flabd%2Fa/snapshots/s1/explain"
        );
    }

    #[test]
    fn durations_are_humanized() {
        assert_eq!(duration(400 * 86_400), "400d");
        assert_eq!(duration(86_400 + 12 * 3_600), "1d12h");
        assert_eq!(duration(5_400), "1h30min");
        assert_eq!(duration(61), "1min1s");
        assert_eq!(duration(0), "0s");
    }

    #[test]
    fn list_summarizes_each_policy() {
        let mut quiet = policy();
        quiet.name = "none".into();
        quiet.keep = keep(&[]);
        quiet.datasets.clear();
        quiet.next_run = None;
        quiet.last_run = None;
        let mut one = policy();
        one.name = "one".into();
        if let Some(run) = one.last_run.as_mut() {
            run.errors.truncate(1);
        }
        let text = render_list(&[policy(), quiet, one]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME   KEEP                 MIN  AUTOSNAP  AUTOPRUNE  DATASETS  NEXT RUN              LAST RUN",
                "daily  4x15min 24h 30d 12m  3    yes       no         2         2026-11-25T19:15:00Z  +3 -1 (2 errors)",
                "none   -                    3    yes       no         0         -                     -",
                "one    4x15min 24h 30d 12m  3    yes       no         2         2026-11-25T19:15:00Z  +3 -1 (1 error)",
            ]
        );
    }

    #[test]
    fn show_lists_rules_datasets_and_last_run() {
        assert_eq!(
            render_policy(&policy()),
            "name: daily\n\
             frequent period: 15min\n\
             frequently: 4\n\
             hourly: 24\n\
             daily: 30\n\
             weekly: 0\n\
             monthly: 12\n\
             yearly: 0\n\
             min_keep: 3\n\
             max_age: 400d\n\
             autosnap: yes\n\
             autoprune: no\n\
             next run: 2026-11-25T19:15:00Z\n\
             datasets: 2\n\
             \x20 tank/labd/a\n\
             \x20 tank/labd/b\n\
             last run: 2026-11-25T19:00:00Z\n\
             \x20 taken: 3\n\
             \x20 destroyed: 1\n\
             \x20 paused: tank/labd/b: a hold\n\
             \x20 error: zfs destroy failed\n\
             \x20 error: again"
        );
        let mut p = policy();
        p.max_age_seconds = None;
        p.next_run = None;
        p.last_run = None;
        let text = render_policy(&p);
        assert!(text.contains("max_age: -\n"), "{text}");
        assert!(text.contains("next run: -\n"), "{text}");
        assert!(text.ends_with("last run: -"), "{text}");
    }

    #[test]
    fn plan_shows_header_then_decisions() {
        assert_eq!(
            render_plan(&plan()),
            "dataset: tank/labd/a\n\
             policy: daily (inherited from tank/labd)\n\
             at: 2026-11-25T19:00:00Z\n\
             take: labd-2026-11-25T190000Z (due: hourly, daily)\n\
             \n\
             SNAPSHOT  ACTION   REASONS\n\
             s1        destroy  older than max_age\n\
             s2        keep     daily bucket 2026-11-24; held"
        );
        let mut p = plan();
        p.take = None;
        p.pruning_paused = Some("pool is 95% full".into());
        let text = render_plan(&p);
        assert!(
            text.contains("take: nothing due\npruning paused: pool is 95% full\n\nSNAPSHOT"),
            "{text}"
        );
    }

    #[test]
    fn explain_gives_one_reason_per_line() {
        let mut p = plan();
        p.take = None;
        p.decisions.remove(0);
        assert_eq!(
            render_explain(&p),
            "tank/labd/a@s2: keep\n\
             \x20 - daily bucket 2026-11-24\n\
             \x20 - held\n\
             policy: daily (inherited from tank/labd)\n\
             at: 2026-11-25T19:00:00Z"
        );
    }
}
