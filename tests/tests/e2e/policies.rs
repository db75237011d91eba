//! Snapshot policies on a real pool, run at chosen times through labd's test clock.

use std::collections::BTreeSet;
use std::time::Duration;

use labd_e2e::{Lab, LabOptions};

const POLICIES: &str = r#"
[policies.production]
hourly = 24
daily = 30
monthly = 12
min_keep = 2

[policies.scratch]
hourly = 3
min_keep = 1

[policies.tiny]
hourly = 1
min_keep = 3
"#;

/// A lab whose policies run only when asked, at the time written to its clock file.
fn policy_lab() -> Lab {
    Lab::start_with(LabOptions {
        tables: format!("[schedule]\nenabled = false\nclock_file = \"{{dir}}/clock\"\n{POLICIES}"),
        ..LabOptions::default()
    })
}

fn clock_file(lab: &Lab) -> std::path::PathBuf {
    lab.dir.join("clock")
}

/// Run the policies as if it were `at`; return the job's result.
fn run_at(lab: &Lab, at: &str) -> serde_json::Value {
    std::fs::write(clock_file(lab), at).expect("clock");
    let job = lab
        .labctl(&["--output", "json", "policy", "run"])
        .ok()
        .json();
    assert_eq!(job["state"], "succeeded", "{job}");
    job["result"].clone()
}

/// Snapshot names (after '@') of one dataset.
fn snaps(lab: &Lab, ds: &str) -> BTreeSet<String> {
    lab.zfs(&[
        "list", "-H", "-t", "snapshot", "-o", "name", "-r", "-d", "1", ds,
    ])
    .ok()
    .stdout
    .lines()
    .filter_map(|l| l.split_once('@'))
    .filter(|(d, _)| *d == ds)
    .map(|(_, s)| s.to_owned())
    .collect()
}

fn hourly(h: u32) -> String {
    format!("labd_2026-11-25T{h:02}00Z_hourly")
}

#[test]
fn policies_take_and_prune_a_mixed_tree() {
    let lab = policy_lab();
    let l = |args: &[&str]| lab.labctl(args).ok();
    l(&["dataset", "create", "photos", "-o", "policy=production"]);
    l(&["dataset", "create", "photos/2024"]);
    l(&["dataset", "create", "photos/private", "-o", "policy=none"]);
    l(&["dataset", "create", "scratch", "-o", "policy=scratch"]);
    l(&["dataset", "create", "logs", "-o", "policy=tiny"]);
    l(&["dataset", "create", "music"]);
    l(&[
        "dataset",
        "create",
        "-p",
        "vms/a",
        "-o",
        "policy=production",
    ]);
    l(&["dataset", "set", "vms", "policy=production"]);
    l(&["dataset", "create", "vms/b"]);
    l(&["dataset", "snapshot", "scratch", "--name", "manual"]);
    let events = lab.events();

    // First run: every dataset with a policy gets one snapshot named for its largest bucket.
    let first = run_at(&lab, "2026-11-25T19:00:00Z");
    let taken: BTreeSet<String> = first["taken"]
        .as_array()
        .expect("taken")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for ds in ["photos", "photos/2024", "vms", "vms/a", "vms/b"] {
        let name = format!("{}@labd_2026-11-25T1900Z_monthly", lab.ds(ds));
        assert!(
            taken.contains(&name) && lab.exists(&name),
            "{name} in {taken:?}"
        );
        assert_eq!(lab.source(&name, "labd:policy"), "local");
        assert_eq!(lab.prop(&name, "labd:policy"), "production");
    }
    for ds in ["scratch", "logs"] {
        assert!(snaps(&lab, &lab.ds(ds)).contains(&hourly(19)), "{ds}");
    }
    // Opted out and policy-less datasets are left alone.
    assert!(snaps(&lab, &lab.ds("photos/private")).is_empty());
    assert!(snaps(&lab, &lab.ds("music")).is_empty());
    // The fully covered subtree vms was one `zfs snapshot -r`: one transaction.
    let txg = |ds: &str| {
        lab.prop(
            &format!("{}@labd_2026-11-25T1900Z_monthly", lab.ds(ds)),
            "createtxg",
        )
    };
    assert_eq!(txg("vms"), txg("vms/a"));
    assert_eq!(txg("vms"), txg("vms/b"));
    events
        .wait_for(Duration::from_secs(10), |e| {
            e["kind"] == "policy.run.finished"
        })
        .expect("policy.run.finished event");

    // Not due again within the same hour.
    let again = run_at(&lab, "2026-11-25T19:40:00Z");
    assert_eq!(again["taken"].as_array().map(Vec::len), Some(0), "{again}");

    // Hourly runs: scratch keeps its last 3 hours, logs its newest 3 (min_keep), and the
    // manual and held snapshots stay.
    lab.labctl(&[
        "dataset",
        "hold",
        &format!("{}@{}", lab.ds("scratch"), hourly(19)),
        "keep",
    ])
    .ok();
    for h in 20..=23 {
        run_at(&lab, &format!("2026-11-25T{h}:00:00Z"));
    }
    let expected: BTreeSet<String> = [
        "manual".to_owned(),
        hourly(19),
        hourly(21),
        hourly(22),
        hourly(23),
    ]
    .into();
    assert_eq!(snaps(&lab, &lab.ds("scratch")), expected);
    let logs: BTreeSet<String> = [hourly(21), hourly(22), hourly(23)].into();
    assert_eq!(snaps(&lab, &lab.ds("logs")), logs);
    // production keeps every hour of the day so far.
    assert_eq!(snaps(&lab, &lab.ds("photos")).len(), 5);

    // plan and explain say why.
    let plan = lab
        .labctl(&[
            "--output",
            "json",
            "policy",
            "plan",
            "scratch",
            "--at",
            "2026-11-26T00:00:00Z",
        ])
        .ok()
        .json();
    assert_eq!(plan["policy"], "scratch");
    assert_eq!(plan["take"]["name"], "labd_2026-11-26T0000Z_hourly");
    let decision = |name: &str| {
        plan["decisions"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["snapshot"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {plan}"))
    };
    assert_eq!(decision(&hourly(21))["action"], "destroy");
    assert_eq!(decision(&hourly(23))["action"], "keep");
    assert!(
        decision(&hourly(19))["reasons"]
            .to_string()
            .contains("held")
    );
    let explain = lab
        .labctl(&[
            "policy",
            "explain",
            &format!("{}@manual", lab.ds("scratch")),
        ])
        .ok();
    assert!(
        explain.stdout.contains("not a policy snapshot"),
        "{}",
        explain.stdout
    );
    // A plan changes nothing.
    assert!(snaps(&lab, &lab.ds("scratch")).contains(&hourly(21)));

    // The clock going backwards pauses pruning.
    let back = run_at(&lab, "2026-11-25T10:30:00Z");
    assert_eq!(
        back["destroyed"].as_array().map(Vec::len),
        Some(0),
        "{back}"
    );
    assert!(
        !back["paused"]
            .as_object()
            .is_none_or(serde_json::Map::is_empty),
        "{back}"
    );
    assert!(snaps(&lab, &lab.ds("scratch")).contains(&hourly(21)));

    // policy list shows the datasets and the last run.
    let list = lab
        .labctl(&["--output", "json", "policy", "list"])
        .ok()
        .json();
    let production = list
        .as_array()
        .and_then(|l| l.iter().find(|p| p["name"] == "production"))
        .cloned()
        .expect("production");
    let datasets = production["datasets"].to_string();
    for ds in ["photos", "photos/2024", "vms", "vms/a", "vms/b"] {
        assert!(
            datasets.contains(&format!("\"{}\"", lab.ds(ds))),
            "{ds}: {datasets}"
        );
    }
    assert!(!datasets.contains("private"), "{datasets}");
    assert!(production["last_run"]["at"].is_string(), "{production}");
}

#[test]
fn unknown_policy_is_refused() {
    let lab = policy_lab();
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let before = lab.inventory();
    let out = lab
        .labctl(&["dataset", "set", "photos", "policy=nope"])
        .code(1);
    assert!(
        out.stderr.contains("unknown policy 'nope'"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("properties.policy"), "{}", out.stderr);
    assert_eq!(lab.inventory(), before);
    assert_eq!(lab.prop(&lab.ds("photos"), "labd:policy"), "-");
}
