//! A VM in labd's observability: the test guest under QEMU (TCG) is created, started, and
//! killed behind labd's back (SIGKILL) so that the supervisor restarts it; the Prometheus
//! series (`promtool`-checked) and the retained MQTT state and Home Assistant config
//! (`mosquitto_sub`) follow, and go when the VM is destroyed.

use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions};
use nix::sys::signal::Signal;

use super::metrics::{promtool_check, scrape_socket, scrape_until, value};
use super::mqtt::{Broker, bounded_sub, json, wait_status};

/// `labctl vm info NAME` until `f` holds (at most 60 s).
fn wait_info(lab: &Lab, what: &str, f: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = lab
            .labctl(&["--output", "json", "vm", "info", "t"])
            .ok()
            .json();
        if f(&info) {
            return info;
        }
        assert!(
            Instant::now() < deadline,
            "VM t: not {what} within 60s: {info}\nlabd:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The retained Home Assistant configs of binary sensors, as (topic, payload).
fn binary_sensor_configs(broker: &Broker) -> Vec<(String, String)> {
    let mut args = broker.sub_args();
    args.extend(
        [
            "--retained-only",
            "-v",
            "-W",
            "2",
            "-t",
            "homeassistant/binary_sensor/+/config",
        ]
        .map(String::from),
    );
    bounded_sub(&args, 2)
        .stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, payload)| !payload.is_empty())
        .map(|(t, p)| (t.to_owned(), p.to_owned()))
        .collect()
}

#[test]
fn a_vm_restart_shows_in_metrics_and_on_mqtt() {
    let guest = labd_e2e::test_guest_dir();
    // No periodic refresh, of the metrics or of MQTT: after the create (whose events cause
    // one), every VM state below comes from the VM events.
    let broker = Broker::start();
    let prefix = format!("test/labd/vm_{}", std::process::id());
    let mqtt = broker
        .labd_table(&prefix)
        .replace("interval = \"2s\"", "interval = \"1h\"");
    assert!(mqtt.contains("interval = \"1h\""), "{mqtt}");
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "{mqtt}\n[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n\
             restart_backoff = \"200ms\"\n\n[metrics]\nrefresh = \"1h\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    let follow = broker.follow(&prefix);
    let topic = format!("{prefix}/vms/t/state");

    lab.labctl(&["vm", "create", "t", "--template", "tiny"])
        .ok();
    let info = wait_info(&lab, "created", |i| i["state"] == "stopped");
    let uuid = info["uuid"].as_str().expect("uuid").to_owned();
    let cpus = info["cpus"].as_f64().expect("cpus");
    let memory = info["memory"].as_f64().expect("memory");
    let s = |metric: &str| format!("{metric}{{vm=\"t\"}}");
    let state = |st: &str| format!("labd_vm_state{{vm=\"t\",state=\"{st}\"}}");
    let text = scrape_until(&lab, Duration::from_secs(10), "VM listed", |t| {
        value(t, &s("labd_vm_cpus")).is_some()
    });
    assert_eq!(value(&text, &s("labd_vm_cpus")), Some(cpus));
    assert_eq!(value(&text, &s("labd_vm_memory_bytes")), Some(memory));
    assert_eq!(value(&text, &state("stopped")), Some(1.0));
    assert_eq!(value(&text, &s("labd_vm_up")), Some(0.0));
    let info_series = format!("labd_vm_info{{vm=\"t\",template=\"tiny\",uuid=\"{uuid}\"}}");
    assert_eq!(value(&text, &info_series), Some(1.0), "{text}");
    let doc = broker
        .wait_retained(&topic, Duration::from_secs(10), |p| {
            p.is_some_and(|p| json(p)["cpus"].as_f64() == Some(cpus))
        })
        .unwrap_or_else(|seen| panic!("{topic}: {seen:?}\n{}", lab.log()))
        .expect("state document");
    let doc = json(&doc);
    assert_eq!(doc["state"], "stopped", "{doc}");
    assert_eq!(doc["uuid"], uuid.as_str(), "{doc}");
    assert_eq!(doc["memory"].as_f64(), Some(memory), "{doc}");
    // Home Assistant: a running sensor for the VM, reading its state topic.
    let configs = binary_sensor_configs(&broker);
    let (_, config) = configs
        .iter()
        .find(|(t, _)| t.ends_with("_vm_t_running/config"))
        .unwrap_or_else(|| panic!("no discovery config for t: {configs:?}"));
    let config = json(config);
    assert_eq!(config["state_topic"], topic.as_str());
    assert_eq!(config["device_class"], "running");
    assert_eq!(
        config["availability_topic"],
        format!("{prefix}/status").as_str()
    );

    lab.labctl(&["vm", "start", "t"]).ok();
    let pid1 = wait_info(&lab, "running", |i| i["pid"].as_u64().is_some())["pid"]
        .as_u64()
        .expect("pid");
    scrape_until(&lab, Duration::from_secs(10), "VM up", |t| {
        value(t, &s("labd_vm_up")) == Some(1.0)
            && value(t, &state("running")) == Some(1.0)
            && value(t, &s("labd_vm_start_timestamp_seconds")).is_some()
    });
    // The start refreshes the inventory, which reads QEMU's CPU time with ps.
    scrape_until(&lab, Duration::from_secs(15), "VM CPU time", |t| {
        value(t, &s("labd_vm_cpu_seconds_total")).is_some_and(|v| v >= 0.0)
    });
    broker
        .wait_retained(&topic, Duration::from_secs(10), |p| {
            p.is_some_and(|p| json(p)["state"] == "running" && json(p)["pid"] == pid1)
        })
        .unwrap_or_else(|seen| panic!("{topic} not running: {seen:?}"));

    // QEMU killed behind labd's back: a fault, and the supervisor starts it again.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid1).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill");
    let info = wait_info(&lab, "restarted", |i| {
        i["state"] == "running" && i["pid"].as_u64().is_some_and(|p| p != pid1)
    });
    let pid2 = info["pid"].as_u64().expect("pid");
    let text = scrape_until(&lab, Duration::from_secs(10), "restart counted", |t| {
        value(t, &s("labd_vm_restarts_total")) == Some(1.0)
            && value(t, &s("labd_vm_up")) == Some(1.0)
    });
    assert_eq!(
        value(&text, "labd_vm_exits_total{vm=\"t\",meaning=\"fault\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "labd_vm_exits_total{vm=\"t\",meaning=\"poweroff\"}"),
        Some(0.0)
    );
    assert_eq!(value(&text, &state("running")), Some(1.0));
    assert_eq!(value(&text, &s("labd_vm_crashes_total")), Some(0.0));
    assert_eq!(
        value(&text, "labd_events_total{kind=\"vm.restarting\"}"),
        Some(1.0)
    );
    promtool_check(&text);
    let doc = broker
        .wait_retained(&topic, Duration::from_secs(10), |p| {
            p.is_some_and(|p| json(p)["pid"] == pid2)
        })
        .unwrap_or_else(|seen| panic!("{topic} not restarted: {seen:?}"))
        .expect("state document");
    let doc = json(&doc);
    assert_eq!(doc["state"], "running", "{doc}");
    assert_eq!(doc["restarts"], 1, "{doc}");
    assert_eq!(doc["last_exit"], "fault", "{doc}");
    // The events went out on the events topic too.
    let events = format!("{prefix}/events");
    let (_, exited) = follow
        .wait_for(Duration::from_secs(10), |t, p| {
            t == events && json(p)["kind"] == "vm.exited"
        })
        .expect("vm.exited on the events topic");
    let exited = json(&exited);
    assert_eq!(exited["resource"], "t");
    assert_eq!(exited["data"]["meaning"], "fault");

    // Stopped: down, and the metrics say so at once.
    lab.labctl(&["vm", "stop", "t", "--force"]).ok();
    let text = scrape_until(&lab, Duration::from_secs(10), "VM down", |t| {
        value(t, &s("labd_vm_up")) == Some(0.0)
    });
    assert_eq!(value(&text, &state("stopped")), Some(1.0), "{text}");
    broker
        .wait_retained(&topic, Duration::from_secs(10), |p| {
            p.is_some_and(|p| json(p)["state"] == "stopped" && json(p)["pid"].is_null())
        })
        .unwrap_or_else(|seen| panic!("{topic} not stopped: {seen:?}"));

    // Destroyed: its series, state topic and discovery config go.
    lab.labctl(&["vm", "destroy", "t"]).ok();
    let text = scrape_until(&lab, Duration::from_secs(10), "VM series gone", |t| {
        !t.contains("vm=\"t\"")
    });
    promtool_check(&text);
    broker
        .wait_retained(&topic, Duration::from_secs(10), |p| p.is_none())
        .unwrap_or_else(|seen| panic!("{topic} still holds {seen:?}"));
    let configs = binary_sensor_configs(&broker);
    assert!(
        !configs
            .iter()
            .any(|(t, _)| t.ends_with("_vm_t_running/config")),
        "{configs:?}"
    );
    // A scrape after the destroy: still nothing of t (no stale list brings it back).
    std::thread::sleep(Duration::from_secs(2));
    let (_, text) = scrape_socket(&lab);
    assert!(!text.contains("vm=\"t\""), "{text}");
}
