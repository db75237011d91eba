//! The supervisor driving bhyve. bhyve, bhyveload and bhyvectl exist only on FreeBSD, so here
//! they are recording stand-ins on labd's PATH (the one place a recording runner is allowed):
//! each writes its arguments to a log; the bhyve stand-in runs until the test tells it to exit
//! with a given status (bhyve.8: 0 reboot, 1 poweroff, 2 halt, 3 triple fault, 4 error) and
//! exits 1 on SIGTERM, as bhyve does when the guest obeys the ACPI power button. What is
//! checked is labd's side: the commands in order, with exactly the argv `labctl vm command`
//! shows, and the supervisor's reading of each exit status.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions};

const BHYVE: &str = r#"#!/bin/sh
d=$(dirname "$0")
echo "bhyve $*" >> "$d/calls"
trap 'echo "bhyve got SIGTERM" >> "$d/calls"; exit 1' TERM
while :; do
    if [ -f "$d/next" ]; then n=$(cat "$d/next"); rm -f "$d/next"; exit "$n"; fi
    sleep 0.05
done
"#;

const TOOL: &str = r#"#!/bin/sh
echo "$(basename "$0") $*" >> "$(dirname "$0")/calls"
"#;

/// A FreeBSD guest: bhyveload, one disk, no NIC, no seed.
const TEMPLATE: &str = r#"description = "FreeBSD test guest"
loader = "bhyveload"
memory = "256M"
stop_timeout = "5s"
restart = "on-failure"
[cpu]
count = 1
[[disk]]
size = "1G"
"#;

fn calls(bin: &Path) -> Vec<String> {
    std::fs::read_to_string(bin.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn info(lab: &Lab) -> serde_json::Value {
    lab.labctl(&["--output", "json", "vm", "info", "fb1"])
        .ok()
        .json()
}

/// Wait (at most 30 s) until `f` holds for the VM's info.
fn wait(lab: &Lab, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let i = info(lab);
        if f(&i) {
            return i;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not {what}: {i}\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bhyve_runs_are_sequenced_and_their_exit_statuses_read() {
    let lab = Lab::start_with(LabOptions {
        tables: "[vms]\ndriver = \"bhyve\"\ntemplates_dir = \"{dir}/templates\"\n\
                 restart_backoff = \"100ms\"\n"
            .to_owned(),
        path_first: Some("{dir}/fakebin".to_owned()),
        ..LabOptions::default()
    });
    let bin: PathBuf = lab.dir.join("fakebin");
    std::fs::create_dir_all(&bin).expect("fakebin");
    for (name, text) in [("bhyve", BHYVE), ("bhyveload", TOOL), ("bhyvectl", TOOL)] {
        std::fs::write(bin.join(name), text).expect("stand-in");
        labd_e2e::run("chmod", &["755", &bin.join(name).display().to_string()]).ok();
    }
    std::fs::create_dir_all(lab.dir.join("templates")).expect("templates");
    std::fs::write(lab.dir.join("templates/fbsd.toml"), TEMPLATE).expect("template");
    lab.labctl(&["vm", "create", "fb1", "--template", "fbsd"])
        .ok();
    let preview = lab
        .labctl(&[
            "--output", "json", "vm", "command", "fb1", "--driver", "bhyve",
        ])
        .ok()
        .json();
    let argv = |i: usize| -> String {
        preview["commands"][i]["argv"]
            .as_array()
            .expect("argv")
            .iter()
            .map(|a| a.as_str().expect("word"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    // bhyvectl --destroy (only for a stale instance: none here), bhyveload, bhyve.
    let (loader, bhyve) = (argv(1), argv(2));
    assert!(
        loader.starts_with("bhyveload ") && bhyve.starts_with("bhyve "),
        "{preview}"
    );

    lab.labctl(&["vm", "start", "fb1"]).ok();
    let first = wait(&lab, "running", |i| i["state"] == "running");
    assert_eq!(calls(&bin), [loader.clone(), bhyve.clone()]);

    // Exit 0 is a reboot: the loader runs again before bhyve, at once.
    std::fs::write(bin.join("next"), "0").expect("next");
    let i = wait(&lab, "rebooted", |i| {
        i["restarts"] == 1 && i["state"] == "running" && i["pid"] != first["pid"]
    });
    assert_eq!(i["last_exit"], "reboot", "{i}");
    assert_eq!(
        calls(&bin),
        [loader.clone(), bhyve.clone(), loader.clone(), bhyve.clone()]
    );

    // Exit 3 (triple fault) is a fault: on-failure starts it again after the backoff.
    std::fs::write(bin.join("next"), "3").expect("next");
    let i = wait(&lab, "restarted after a fault", |i| {
        i["restarts"] == 2 && i["state"] == "running"
    });
    assert_eq!(i["last_exit"], "fault", "{i}");

    // Stop: SIGTERM (the ACPI power button); bhyve exits 1, a poweroff.
    let job = lab
        .labctl(&["--output", "json", "vm", "stop", "fb1"])
        .ok()
        .json();
    assert_eq!(job["result"]["meaning"], "poweroff", "{job}");
    assert_eq!(job["result"]["killed"], false, "{job}");
    assert!(calls(&bin).contains(&"bhyve got SIGTERM".to_owned()));

    // Exit 1 from inside (the guest powered off): stopped, not restarted.
    lab.labctl(&["vm", "start", "fb1"]).ok();
    wait(&lab, "running", |i| i["state"] == "running");
    std::fs::write(bin.join("next"), "1").expect("next");
    let i = wait(&lab, "stopped", |i| i["state"] == "stopped");
    assert_eq!(i["last_exit"], "poweroff", "{i}");
    assert!(i.get("restarts").is_none(), "not restarted: {i}");

    // A forced stop asks bhyvectl to power off, then kills what is left.
    lab.labctl(&["vm", "start", "fb1"]).ok();
    wait(&lab, "running", |i| i["state"] == "running");
    let job = lab
        .labctl(&["--output", "json", "vm", "stop", "fb1", "--force"])
        .ok()
        .json();
    assert_eq!(job["result"]["killed"], true, "{job}");
    assert!(
        calls(&bin).contains(&"bhyvectl --vm=fb1 --force-poweroff".to_owned()),
        "{:?}",
        calls(&bin)
    );
    lab.labctl(&["vm", "destroy", "fb1"]).ok();
}
