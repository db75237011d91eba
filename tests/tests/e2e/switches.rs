//! Virtual switches through labctl, checked on the host with `ip -j link`: a bridge with its
//! uplink and MTU, re-created when labd starts after it vanished (host reboot), refusals that
//! create nothing, and bridges labd did not create that it never destroys.
//!
//! Interface names carry the test process's pid (`vm-s<pid>x<n>` bridges, `le<pid>x<n>` veth
//! uplinks: this kernel has no dummy driver); leftovers of dead runs are swept first.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use labd_e2e::{Lab, LabOptions, run};

static N: AtomicU32 = AtomicU32::new(0);

/// A switch name and an uplink name unique to this process and test.
fn names() -> (String, String) {
    sweep_dead();
    let n = N.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    (format!("s{pid}x{n}"), format!("le{pid}x{n}"))
}

/// Delete interfaces of test processes that are gone.
fn sweep_dead() {
    let out = run("ip", &["-j", "link", "show"]);
    let links: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    for l in links.as_array().into_iter().flatten() {
        let Some(name) = l["ifname"].as_str() else {
            continue;
        };
        let pid = ["vm-s", "le"]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|rest| rest.split_once('x'))
            .map(|(pid, _)| pid);
        if let Some(pid) = pid
            && !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run("ip", &["link", "del", "dev", name]);
        }
    }
}

/// Deletes the named interfaces when dropped (also when the test fails).
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = run("ip", &["link", "del", "dev", name]);
        }
    }
}

/// `ip -j -d link show dev NAME`, or `None` when there is no such interface.
fn link(name: &str) -> Option<serde_json::Value> {
    let out = run("ip", &["-j", "-d", "link", "show", "dev", name]);
    if out.code != 0 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("ip -j output");
    v.get(0).cloned()
}

fn veth(name: &str, mtu: u32) {
    run(
        "ip",
        &[
            "link",
            "add",
            name,
            "mtu",
            &mtu.to_string(),
            "type",
            "veth",
            "peer",
            "name",
            &format!("{name}p"),
        ],
    )
    .ok();
}

fn switches(lab: &Lab) -> Vec<serde_json::Value> {
    lab.labctl(&["--output", "json", "switch", "list"])
        .ok()
        .json()
        .as_array()
        .cloned()
        .expect("array")
}

#[test]
fn switch_with_uplink_and_mtu_survives_a_lost_bridge_and_is_destroyed() {
    let (sw, uplink) = names();
    let bridge = format!("vm-{sw}");
    let _cleanup = Cleanup(vec![bridge.clone(), uplink.clone()]);
    veth(&uplink, 9000);
    let mut lab = Lab::start();
    let events = lab.events_with(&["--kind", "switch."]);

    let out = lab
        .labctl(&[
            "switch", "create", &sw, "--uplink", &uplink, "--mtu", "9000",
        ])
        .ok();
    assert!(out.stdout.contains(&bridge), "{}", out.stdout);
    let br = link(&bridge).expect("the bridge exists");
    assert_eq!(br["linkinfo"]["info_kind"], "bridge", "{br}");
    assert_eq!(br["mtu"], 9000);
    assert_eq!(
        br["ifalias"].as_str(),
        Some(format!("labd:switch:{sw}:{}/vms", lab.root).as_str())
    );
    assert!(
        br["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP")),
        "{br}"
    );
    assert_eq!(link(&uplink).expect("uplink")["master"], bridge.as_str());
    let ev = events
        .wait_for(Duration::from_secs(5), |e| e["kind"] == "switch.created")
        .expect("switch.created");
    assert_eq!(ev["resource"], sw.as_str());
    assert_eq!(ev["data"]["bridge"], bridge.as_str());

    let list = switches(&lab);
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(
        (
            &s["name"],
            &s["bridge"],
            &s["managed"],
            &s["uplink"],
            &s["mtu"],
            &s["state"]
        ),
        (
            &serde_json::json!(sw),
            &serde_json::json!(bridge),
            &serde_json::json!(true),
            &serde_json::json!(uplink),
            &serde_json::json!(9000),
            &serde_json::json!("up")
        )
    );
    assert_eq!(s["ports"], serde_json::json!([uplink]));
    let table = lab.labctl(&["switch", "list"]).ok().stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&sw) && l.contains("9000")),
        "{table}"
    );
    let mountpoint = lab.prop(&lab.ds("vms"), "mountpoint");
    let file = std::fs::read_to_string(Path::new(&mountpoint).join("switches.toml"))
        .expect("switches.toml");
    assert!(file.contains(&format!("[switch.{sw}]")), "{file}");

    // The bridge vanishes (a host reboot); labd re-creates it when it starts.
    run("ip", &["link", "del", "dev", &bridge]).ok();
    assert!(link(&bridge).is_none());
    drop(events);
    lab.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(20)), Some(0));
    lab.spawn_labd();
    // Restored in the background once running VMs are re-adopted (their taps must stay).
    let started = std::time::Instant::now();
    let br = loop {
        if let Some(br) = link(&bridge) {
            break br;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{bridge} not re-created at start:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(br["mtu"], 9000);
    assert!(
        br["ifalias"]
            .as_str()
            .is_some_and(|a| a.starts_with("labd:switch:"))
    );
    assert_eq!(link(&uplink).expect("uplink")["master"], bridge.as_str());

    let events = lab.events_with(&["--kind", "switch."]);
    lab.labctl(&["switch", "destroy", &sw]).ok();
    assert!(link(&bridge).is_none(), "the bridge is gone");
    let up = link(&uplink).expect("the uplink is not labd's: it stays");
    assert!(up.get("master").is_none(), "{up}");
    let ev = events
        .wait_for(Duration::from_secs(5), |e| e["kind"] == "switch.destroyed")
        .expect("switch.destroyed");
    assert_eq!(ev["data"]["bridge_destroyed"], true);
    assert!(switches(&lab).is_empty());
}

#[test]
fn refused_switches_create_nothing() {
    let (sw, uplink) = names();
    let bridge = format!("vm-{sw}");
    let _cleanup = Cleanup(vec![bridge.clone(), uplink.clone()]);
    veth(&uplink, 1500);
    let lab = Lab::start();
    let before = lab.inventory();
    let missing = format!("nx{}", std::process::id());
    for (args, needle) in [
        (vec!["switch", "create", "Bad"], "name"),
        (vec!["switch", "create", "abcdefghijklm"], "at most 12"),
        (vec!["switch", "create", "a_b"], "name"),
        (
            vec!["switch", "create", &sw, "--uplink", &missing],
            "no interface",
        ),
        (vec!["switch", "create", &sw, "--uplink", "lo"], "loopback"),
        (vec!["switch", "create", &sw, "--uplink", "a/b"], "uplink"),
        (vec!["switch", "create", &sw, "--mtu", "100"], "mtu"),
        (
            vec![
                "switch", "create", &sw, "--uplink", &uplink, "--mtu", "9000",
            ],
            "1500",
        ),
        (
            vec!["switch", "create", &sw, "--bridge", &missing],
            "no interface",
        ),
        (vec!["switch", "destroy", &sw], "does not exist"),
    ] {
        let out = lab.labctl(&args).code(1);
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
    // --bridge adopts as is: with --uplink it is a usage error.
    lab.labctl(&["switch", "create", &sw, "--bridge", "x", "--uplink", "y"])
        .code(2);
    assert!(link(&bridge).is_none(), "no bridge was created");
    assert!(link(&uplink).expect("uplink").get("master").is_none());
    assert!(switches(&lab).is_empty());
    assert_eq!(lab.inventory(), before, "no dataset was created");
}

#[test]
fn a_bridge_labd_did_not_create_is_adopted_and_never_destroyed() {
    let (sw, _) = names();
    let bridge = format!("vm-{sw}");
    let _cleanup = Cleanup(vec![bridge.clone()]);
    run("ip", &["link", "add", "name", &bridge, "type", "bridge"]).ok();
    let lab = Lab::start_with(LabOptions {
        tables: "[vms]\ntemplates_dir = \"{dir}/templates\"\n".to_owned(),
        ..LabOptions::default()
    });

    let out = lab.labctl(&["switch", "create", &sw]).code(1);
    assert!(out.stderr.contains("did not create"), "{}", out.stderr);
    assert!(out.stderr.contains("--bridge"), "{}", out.stderr);
    let adopted = lab
        .labctl(&[
            "--output", "json", "switch", "create", &sw, "--bridge", &bridge,
        ])
        .ok()
        .json();
    assert_eq!(adopted["managed"], false, "{adopted}");
    assert_eq!(adopted["bridge"], bridge.as_str());

    // A VM naming the switch keeps it.
    let templates = lab.dir.join("templates");
    std::fs::create_dir_all(&templates).expect("templates dir");
    let tiny = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../vm-templates/tiny.toml"),
    )
    .expect("tiny.toml");
    std::fs::write(
        templates.join("net.toml"),
        format!("{tiny}\n[[nic]]\nswitch = \"{sw}\"\n"),
    )
    .expect("template");
    lab.labctl(&["vm", "create", "v1", "--template", "net"])
        .ok();
    let out = lab.labctl(&["switch", "destroy", &sw]).code(1);
    assert!(out.stderr.contains("v1"), "{}", out.stderr);
    lab.labctl(&["vm", "destroy", "v1"]).ok();

    lab.labctl(&["switch", "destroy", &sw]).ok();
    assert!(switches(&lab).is_empty());
    let br = link(&bridge).expect("the admin's bridge is still there");
    assert!(br.get("ifalias").is_none(), "labd did not mark it: {br}");
}

/// The members of bridge `bridge`.
fn members(bridge: &str) -> Vec<String> {
    let out = run("ip", &["-j", "link", "show", "master", bridge]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn a_running_vm_has_its_tap_on_the_switch_bridge() {
    let (sw, _) = names();
    let bridge = format!("vm-{sw}");
    let _cleanup = Cleanup(vec![bridge.clone()]);
    let guest = labd_e2e::test_guest_dir();
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    lab.labctl(&["switch", "create", &sw, "--mtu", "1400"]).ok();
    lab.labctl(&["vm", "create", "n1", "--template", "tiny"])
        .ok();
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/n1"), "mountpoint"));
    let spec = dir.join("vm.toml");
    let mut text = std::fs::read_to_string(&spec).expect("vm.toml");
    // A NIC on a switch that does not exist is refused at start, naming the NIC.
    text.push_str(
        "\n[[nic]]\nswitch = \"nosuch\"\nmodel = \"virtio-net\"\nmac = \"58:9c:fc:0e:2e:01\"\n",
    );
    std::fs::write(&spec, &text).expect("write");
    let out = lab.labctl(&["vm", "start", "n1"]).code(1);
    assert!(
        out.stderr.contains("nosuch") && out.stderr.contains("switch"),
        "{}",
        out.stderr
    );
    std::fs::write(&spec, text.replace("\"nosuch\"", &format!("\"{sw}\""))).expect("write");

    lab.labctl(&["vm", "start", "n1"]).ok();
    let info = lab
        .labctl(&["--output", "json", "vm", "info", "n1"])
        .ok()
        .json();
    assert_eq!(info["state"], "running", "{info}");
    let uuid = info["uuid"].as_str().expect("uuid").replace('-', "");
    let tap = format!("tap{}-0", &uuid[..10]);
    assert_eq!(members(&bridge), std::slice::from_ref(&tap));
    let l = link(&tap).expect("tap exists");
    assert_eq!(l["mtu"], 1400, "{l}");
    let pid = info["pid"].as_u64().expect("pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&format!("ifname={tap}")),
        "QEMU does not use {tap}"
    );

    // Stopped: the tap is gone, the bridge stays.
    lab.labctl(&["vm", "stop", "n1", "--force"]).ok();
    assert!(link(&tap).is_none(), "{tap} left behind");
    assert!(link(&bridge).is_some());
    lab.labctl(&["vm", "destroy", "n1"]).ok();
    lab.labctl(&["switch", "destroy", &sw]).ok();
    assert!(link(&bridge).is_none());
}
