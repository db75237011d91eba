//! VMs as datasets (the first slice of issue 3): create from templates, list, info, the
//! command preview and destroy, checked against `zfs` and the files in the VM's dataset; and
//! starting and stopping the real test guest with the QEMU driver under TCG.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use labd_e2e::{Lab, LabOptions};
use nix::sys::signal::Signal;

fn vm_names(lab: &Lab) -> Vec<String> {
    let list = lab.labctl(&["--output", "json", "vm", "list"]).ok().json();
    list.as_array()
        .expect("array")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn vms_are_datasets_with_their_spec() {
    let mut lab = Lab::start_with(LabOptions {
        tables: "[vms]\nimages_dir = \"{dir}/images\"\n".to_owned(),
        ..LabOptions::default()
    });
    // The docker-host template's image: 8 MiB of raw disk with data at 0 and at 5 MiB.
    let images = lab.dir.join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    let mut image = vec![0u8; 8 << 20];
    image[..4096].fill(0x5a);
    image[5 << 20..(5 << 20) + 4096].fill(0xa5);
    std::fs::write(images.join("debian-12-genericcloud-amd64.raw"), &image).expect("image");
    let web = lab.ds("vms/web");
    let t1 = lab.ds("vms/t1");

    // No VM yet, and no vms dataset either: the list is empty.
    assert!(vm_names(&lab).is_empty());

    let job = lab
        .labctl(&[
            "--output",
            "json",
            "vm",
            "create",
            "web",
            "--template",
            "docker-host",
        ])
        .ok()
        .json();
    assert_eq!(job["kind"], "vm.create");
    assert_eq!(job["progress"], 100, "{job}");
    let log = job["log"].to_string();
    assert!(log.contains("importing") && log.contains("Raw"), "{log}");
    lab.labctl(&[
        "vm",
        "create",
        "t1",
        "--template",
        "tiny",
        "--cpus",
        "2",
        "--memory",
        "512M",
    ])
    .ok();
    assert!(lab.exists(&lab.ds("vms")));
    assert_eq!(lab.prop(&lab.ds("vms"), "labd:managed"), "on");
    for ds in [&web, &t1] {
        assert!(lab.exists(ds), "{ds}");
        assert_eq!(lab.prop(ds, "labd:managed"), "on");
        assert_eq!(lab.source(ds, "labd:vm"), "local");
    }

    // The table and the JSON list.
    let table = lab.labctl(&["vm", "list"]).ok().stdout;
    let head = table.lines().next().unwrap_or_default();
    for col in ["NAME", "STATE", "CPUS", "MEMORY", "TEMPLATE"] {
        assert!(head.contains(col), "{col} in {head}");
    }
    let web_line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("web"))
        .unwrap_or_else(|| panic!("no web row:\n{table}"));
    assert!(
        web_line.contains("stopped") && web_line.contains("docker-host"),
        "{web_line}"
    );
    assert_eq!(vm_names(&lab), ["t1", "web"]);
    let list = lab.labctl(&["--output", "json", "vm", "list"]).ok().json();
    let t1_json = list
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "t1"))
        .cloned()
        .expect("t1");
    assert_eq!(t1_json["cpus"], 2);
    assert_eq!(t1_json["memory"], 512u64 << 20);
    assert_eq!(t1_json["loader"], "kernel");
    assert_eq!(t1_json["dataset"], t1.as_str());

    // vm.toml is in the dataset's mountpoint, with the uuid of labd:vm.
    let info = lab
        .labctl(&["--output", "json", "vm", "info", "web"])
        .ok()
        .json();
    let uuid = info["uuid"].as_str().expect("uuid").to_owned();
    assert_eq!(lab.prop(&web, "labd:vm"), uuid);
    let mac = info["nics"][0]["mac"].as_str().expect("mac").to_owned();
    assert!(mac.starts_with("58:9c:fc:0"), "{mac}");
    assert_eq!(info["nics"][0]["switch"], "lan");
    let dir = std::path::PathBuf::from(lab.prop(&web, "mountpoint"));
    let text = std::fs::read_to_string(dir.join("vm.toml")).expect("vm.toml");
    assert!(text.contains(&uuid) && text.contains(&mac), "{text}");
    assert_eq!(info["text"].as_str(), Some(text.as_str()));

    // The boot disk: the image, grown to the template's 20G, still sparse.
    let meta = std::fs::metadata(dir.join("disk0.img")).expect("disk0.img");
    assert_eq!(meta.len(), 20u64 << 30);
    assert!(
        meta.blocks() * 512 < 2 << 20,
        "sparse: {} blocks",
        meta.blocks()
    );
    let mut head = vec![0u8; image.len()];
    std::io::Read::read_exact(
        &mut std::fs::File::open(dir.join("disk0.img")).expect("open"),
        &mut head,
    )
    .expect("read");
    assert!(head == image, "disk0.img does not start with the image");
    assert_eq!(info["disks"][0]["size"], 20u64 << 30);

    // The preview shows this VM's own MAC, uuid and directory.
    let preview = lab
        .labctl(&["vm", "command", "web", "--driver", "bhyve"])
        .ok()
        .stdout;
    for needle in [
        format!("mac={mac}"),
        uuid.clone(),
        dir.join("disk0.img").display().to_string(),
        "com1,/dev/nmdm-web.1A".to_owned(),
    ] {
        assert!(preview.contains(&needle), "{needle} in:\n{preview}");
    }
    let qemu = lab
        .labctl(&["vm", "command", "t1", "--driver", "qemu"])
        .ok()
        .stdout;
    assert!(qemu.contains("qemu-system-x86_64"), "{qemu}");

    // A qcow2 image, with the guest's SSH key and a static address.
    labd_e2e::run(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            &images
                .join("debian-12-genericcloud-amd64.raw")
                .display()
                .to_string(),
            &images.join("deb.qcow2").display().to_string(),
        ],
    )
    .ok();
    let good_key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHRlc3Qta2V5LW9ubHktZm9yLWxhYmQtdGVzdHM test@lab";
    let good = lab.dir.join("good.pub");
    std::fs::write(&good, format!("# my key\n{good_key}\n")).expect("key");
    let bad = lab.dir.join("bad.pub");
    std::fs::write(&bad, "hello\n").expect("key");
    let (good, bad) = (good.display().to_string(), bad.display().to_string());
    lab.labctl(&[
        "vm",
        "create",
        "q1",
        "--template",
        "docker-host",
        "--image",
        "deb.qcow2",
        "--ssh-key",
        &good,
        "--ip",
        "192.168.7.20/24",
        "--gateway",
        "192.168.7.1",
        "--nameserver",
        "192.168.7.1",
    ])
    .ok();
    let q1 = vm_json(&lab, "q1");
    assert_eq!(q1["nics"][0]["address"], "192.168.7.20/24", "{q1}");
    let q1_text = q1["text"].as_str().expect("text");
    assert!(
        q1_text.contains(good_key) && q1_text.contains("192.168.7.1"),
        "{q1_text}"
    );
    let q1_dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/q1"), "mountpoint"));
    let mut head = vec![0u8; image.len()];
    std::io::Read::read_exact(
        &mut std::fs::File::open(q1_dir.join("disk0.img")).expect("open"),
        &mut head,
    )
    .expect("read");
    assert!(head == image, "q1's disk0.img is not the converted image");
    assert_eq!(
        std::fs::metadata(q1_dir.join("disk0.img"))
            .expect("disk")
            .len(),
        20u64 << 30
    );
    lab.labctl(&["vm", "destroy", "q1"]).ok();

    // Refused requests change nothing.
    let before = lab.inventory();
    let dh = |name: &'static str, extra: &[&'static str]| {
        let mut v = vec!["vm", "create", name, "--template", "docker-host"];
        v.extend_from_slice(extra);
        v
    };
    let bad_key: &'static str = Box::leak(bad.into_boxed_str());
    for (args, needle) in [
        (dh("i1", &["--image", "nope.raw"]), "no image 'nope.raw'"),
        (dh("i2", &["--image", "../etc/passwd"]), "not an image name"),
        (dh("i3", &["--ip", "300.1.1.1/24"]), "(field: ip)"),
        (dh("i4", &["--gateway", "10.0.0.1"]), "(field: gateway)"),
        (dh("i5", &["--ssh-key", bad_key]), "(field: ssh_keys[0])"),
        (
            vec![
                "vm",
                "create",
                "i6",
                "--template",
                "tiny",
                "--image",
                "x.raw",
            ],
            "no disk",
        ),
        (
            vec!["vm", "create", "Bad_Name", "--template", "tiny"],
            "name",
        ),
        (vec!["vm", "create", "-x", "--template", "tiny"], ""),
        (vec!["vm", "create", "ok1", "--template", "nope"], "nope"),
        (vec!["vm", "create", "web", "--template", "tiny"], "exists"),
        (
            vec!["vm", "create", "ok2", "--template", "tiny", "--cpus", "0"],
            "cpus",
        ),
        (
            vec![
                "vm",
                "create",
                "ok3",
                "--template",
                "tiny",
                "--memory",
                "lots",
            ],
            "memory",
        ),
    ] {
        let out = lab.labctl(&args);
        assert_ne!(out.code, 0, "{args:?} succeeded");
        assert!(out.stderr.contains(needle), "{needle} in {}", out.stderr);
    }
    assert_eq!(lab.inventory(), before);
    let out = lab.labctl(&["vm", "info", "nope"]).code(1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);

    // A dataset in the VM root without a vm.toml is listed as broken.
    lab.zfs(&["create", &lab.ds("vms/junk")]).ok();
    let list = lab.labctl(&["--output", "json", "vm", "list"]).ok().json();
    let junk = list
        .as_array()
        .and_then(|l| l.iter().find(|v| v["name"] == "junk"))
        .cloned()
        .expect("junk listed");
    assert_eq!(junk["state"], "broken");
    assert!(
        junk["error"]
            .as_str()
            .is_some_and(|e| e.contains("vm.toml")),
        "{junk}"
    );
    // ... and labd does not destroy what it did not create.
    let out = lab.labctl(&["vm", "destroy", "junk"]).code(1);
    assert!(out.stderr.contains("not_managed"), "{}", out.stderr);
    assert!(lab.exists(&lab.ds("vms/junk")));

    // uuid and MACs persist across a restart of labd: they are read back, not re-derived.
    let before = lab
        .labctl(&["--output", "json", "vm", "info", "web"])
        .ok()
        .json();
    lab.signal(Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(10)), Some(0));
    lab.spawn_labd();
    let after = lab
        .labctl(&["--output", "json", "vm", "info", "web"])
        .ok()
        .json();
    assert_eq!(before, after);
    assert_eq!(after["uuid"], uuid.as_str());
    assert_eq!(after["nics"][0]["mac"], mac.as_str());

    // Destroy removes the dataset with its snapshots; a held one is refused first.
    let snap = format!("{web}@s1");
    lab.zfs(&["snapshot", &snap]).ok();
    lab.labctl(&["dataset", "hold", "vms/web@s1", "keep"]).ok();
    let out = lab.labctl(&["vm", "destroy", "web"]).code(1);
    assert!(out.stderr.contains("held"), "{}", out.stderr);
    assert!(lab.exists(&web) && lab.exists(&snap));
    lab.labctl(&["dataset", "release", "vms/web@s1", "keep"])
        .ok();
    lab.labctl(&["vm", "destroy", "web"]).ok();
    assert!(!lab.exists(&web));
    assert!(!lab.exists(&snap));
    assert_eq!(vm_names(&lab), ["junk", "t1"]);
    let out = lab.labctl(&["vm", "destroy", "web"]).code(1);
    assert!(out.stderr.contains("not_found"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "destroy", "photos"]).code(1);
    assert!(out.stderr.contains("not_found"), "{}", out.stderr);
    lab.labctl(&["vm", "destroy", "t1"]).ok();
    assert!(!lab.exists(&t1));
}

fn vm_json(lab: &Lab, name: &str) -> serde_json::Value {
    lab.labctl(&["--output", "json", "vm", "info", name])
        .ok()
        .json()
}

fn banners(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("LABD-TEST-GUEST up")
        .count()
}

/// Wait (at most 60 s) until `log` holds `n` banners; the time it took.
fn wait_banners(lab: &Lab, log: &std::path::Path, n: usize) -> Duration {
    let start = std::time::Instant::now();
    while banners(log) < n {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no banner #{n} in {} within 60s:\n{}\nqemu.log:\n{}\nlabd:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default(),
            std::fs::read_to_string(log.with_file_name("qemu.log")).unwrap_or_default(),
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn the_test_guest_starts_and_stops_under_qemu() {
    let guest = labd_e2e::test_guest_dir();
    let mut lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    lab.labctl(&["vm", "create", "t1", "--template", "tiny"])
        .ok();
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/t1"), "mountpoint"));
    assert!(
        dir.join("console.sock").as_os_str().len() < 108,
        "{}",
        dir.display()
    );
    let console = dir.join("console.log");

    let job = lab
        .labctl(&["--output", "json", "vm", "start", "t1"])
        .ok()
        .json();
    assert_eq!(job["kind"], "vm.start");
    let boot = wait_banners(&lab, &console, 1);
    eprintln!("vm start -> banner: {:.1}s", boot.as_secs_f64());
    let info = vm_json(&lab, "t1");
    assert_eq!(info["state"], "running", "{info}");
    let pid = info["pid"].as_u64().expect("pid");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let table = lab.labctl(&["vm", "list"]).ok().stdout;
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some("t1"))
        .unwrap_or_else(|| panic!("no t1 row:\n{table}"));
    assert!(row.contains("running"), "{row}");

    // A second start is refused while it runs; so is destroy.
    let out = lab.labctl(&["vm", "start", "t1"]).code(1);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "destroy", "t1"]).code(1);
    assert!(out.stderr.contains("running"), "{}", out.stderr);

    // The ACPI button: the guest powers off by itself, within the spec's stop_timeout (10s).
    let t = std::time::Instant::now();
    let job = lab
        .labctl(&["--output", "json", "vm", "stop", "t1"])
        .ok()
        .json();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(job["result"]["meaning"], "poweroff", "{job}");
    assert_eq!(job["result"]["killed"], false, "{job}");
    let info = vm_json(&lab, "t1");
    assert_eq!(info["state"], "stopped", "{info}");
    assert_eq!(info["last_exit"], "poweroff", "{info}");
    assert!(info.get("pid").is_none(), "{info}");

    // Again: the console log is appended to; then a forced stop kills it.
    lab.labctl(&["vm", "start", "t1"]).ok();
    wait_banners(&lab, &console, 2);
    assert_eq!(vm_json(&lab, "t1")["state"], "running");
    let job = lab
        .labctl(&["--output", "json", "vm", "stop", "t1", "--force"])
        .ok()
        .json();
    assert_eq!(job["result"]["killed"], true, "{job}");
    assert_eq!(vm_json(&lab, "t1")["state"], "stopped");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());

    // labd's shutdown stops the VMs it runs.
    lab.labctl(&["vm", "start", "t1"]).ok();
    wait_banners(&lab, &console, 3);
    let pid = vm_json(&lab, "t1")["pid"].as_u64().expect("pid");
    lab.signal(Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(20)), Some(0));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    lab.spawn_labd();
    lab.labctl(&["vm", "destroy", "t1"]).ok();
}

/// Wait (at most 60 s) until `f` holds for VM `name`'s info; returns that info.
fn wait_info(
    lab: &Lab,
    name: &str,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = std::time::Instant::now();
    loop {
        let info = vm_json(lab, name);
        if f(&info) {
            return info;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "VM {name}: not {what} within 60s: {info}\nlabd:\n{}",
            lab.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn kill9(pid: u64) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, Signal::SIGKILL).expect("kill");
}

#[test]
fn the_supervisor_restarts_readopts_autostarts_and_gives_up() {
    let guest = labd_e2e::test_guest_dir();
    let mut lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n\
             restart_limit = 2\nrestart_backoff = \"200ms\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    lab.labctl(&["vm", "create", "t2", "--template", "tiny"])
        .ok();
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/t2"), "mountpoint"));
    let console = dir.join("console.log");
    lab.labctl(&["vm", "start", "t2"]).ok();
    wait_banners(&lab, &console, 1);
    let pid1 = vm_json(&lab, "t2")["pid"].as_u64().expect("pid");

    // A crash (QEMU killed behind labd's back): the on-failure policy starts it again.
    kill9(pid1);
    let info = wait_info(&lab, "t2", "restarted", |i| {
        i["state"] == "running" && i["pid"].as_u64().is_some_and(|p| p != pid1)
    });
    assert_eq!(info["restarts"], 1, "{info}");
    assert_eq!(info["last_exit"], "fault", "{info}");
    wait_banners(&lab, &console, 2);
    let pid2 = info["pid"].as_u64().expect("pid");

    // labd restarts (SIGUSR2: leave the VMs running): the VM keeps running and the next labd
    // re-adopts it, QMP included (the ACPI stop works).
    lab.signal(Signal::SIGUSR2);
    assert_eq!(lab.wait_labd(Duration::from_secs(20)), Some(0));
    assert!(alive(pid2), "QEMU died with labd");
    lab.spawn_labd();
    let info = wait_info(&lab, "t2", "re-adopted", |i| i["state"] == "running");
    assert_eq!(info["pid"].as_u64(), Some(pid2), "{info}");
    let job = lab
        .labctl(&["--output", "json", "vm", "stop", "t2"])
        .ok()
        .json();
    assert_eq!(job["result"]["meaning"], "poweroff", "{job}");
    assert_eq!(job["result"]["killed"], false, "{job}");
    assert!(!alive(pid2));
    assert!(!dir.join("run.json").exists());

    // A labd that dies hard leaves a stale record when its VM dies too: cleaned at start.
    lab.labctl(&["vm", "start", "t2"]).ok();
    let pid3 = wait_info(&lab, "t2", "running", |i| i["state"] == "running")["pid"]
        .as_u64()
        .expect("pid");
    lab.signal(Signal::SIGKILL);
    lab.wait_labd(Duration::from_secs(10));
    kill9(pid3);
    while alive(pid3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(dir.join("run.json").exists());
    lab.spawn_labd();
    let info = vm_json(&lab, "t2");
    assert_eq!(info["state"], "stopped", "{info}");
    assert!(!dir.join("run.json").exists());

    // Autostart: labd starts the VM by itself.
    let spec = dir.join("vm.toml");
    let text = std::fs::read_to_string(&spec).expect("vm.toml");
    assert!(text.contains("autostart = false"), "{text}");
    std::fs::write(&spec, text.replace("autostart = false", "autostart = true")).expect("write");
    lab.signal(Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(20)), Some(0));
    lab.spawn_labd();
    let before = banners(&console);
    wait_info(&lab, "t2", "autostarted", |i| i["state"] == "running");
    wait_banners(&lab, &console, before + 1);

    // The crash-loop limit (2): the third failure in a row is not restarted.
    for attempt in 1..=3 {
        let info = wait_info(&lab, "t2", "running", |i| i["state"] == "running");
        kill9(info["pid"].as_u64().expect("pid"));
        if attempt < 3 {
            wait_info(&lab, "t2", "restarted", |i| {
                i["restarts"].as_u64() == Some(attempt) && i["state"] == "running"
            });
        }
    }
    let info = wait_info(&lab, "t2", "crashed", |i| i["state"] == "crashed");
    assert!(
        info["message"]
            .as_str()
            .is_some_and(|m| m.contains("crash loop")),
        "{info}"
    );
    lab.labctl(&["vm", "destroy", "t2"]).ok();
}

/// A `labctl vm console` running in the background, its output collected.
struct ConsoleClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    output: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl ConsoleClient {
    fn attach(lab: &Lab, name: &str) -> Self {
        use std::process::Stdio;
        let mut child = lab
            .labctl_cmd(&["vm", "console", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("labctl vm console");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = child.stdout.take().expect("stdout");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&output);
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().expect("lock").extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stdin,
            output,
        }
    }

    fn send(&mut self, line: &str) {
        use std::io::Write;
        self.stdin.write_all(line.as_bytes()).expect("write");
        self.stdin.flush().expect("flush");
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("lock")).into_owned()
    }

    /// Wait (at most 60 s) until the output holds `n` times `what`.
    fn wait_for(&self, what: &str, n: usize) {
        let start = std::time::Instant::now();
        while self.text().matches(what).count() < n {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "console: no {n}x {what:?} within 60s:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_exit(&mut self) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "labctl vm console did not end:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn consoles_are_shared_and_the_guest_reboots_and_powers_off_by_itself() {
    let guest = labd_e2e::test_guest_dir();
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    lab.labctl(&["vm", "create", "t3", "--template", "tiny"])
        .ok();
    let out = lab.labctl(&["vm", "console", "t3"]).code(1);
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "console", "nope"]).code(1);
    assert!(out.stderr.contains("not_found"), "{}", out.stderr);
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/t3"), "mountpoint"));
    let console = dir.join("console.log");
    lab.labctl(&["vm", "start", "t3"]).ok();
    wait_banners(&lab, &console, 1);
    let pid1 = vm_json(&lab, "t3")["pid"].as_u64().expect("pid");

    // Two clients at once: both get the backlog (the banner) and what either types.
    let mut a = ConsoleClient::attach(&lab, "t3");
    let mut b = ConsoleClient::attach(&lab, "t3");
    a.wait_for("LABD-TEST-GUEST up", 1);
    b.wait_for("LABD-TEST-GUEST up", 1);
    a.send("hello from a\n");
    b.wait_for("guest got: hello from a", 1);
    a.wait_for("guest got: hello from a", 1);

    // The guest reboots itself: QEMU ends (-no-reboot), QMP says guest-reset, labd starts it
    // again at once; the clients stay attached and see the second boot.
    a.send("reboot\n");
    let info = wait_info(&lab, "t3", "rebooted", |i| {
        i["state"] == "running" && i["pid"].as_u64().is_some_and(|p| p != pid1)
    });
    assert_eq!(info["last_exit"], "reboot", "{info}");
    assert_eq!(info["restarts"], 1, "{info}");
    b.wait_for("LABD-TEST-GUEST up", 2);

    // Ctrl-] detaches one client; the VM keeps running.
    b.send("\u{1d}");
    assert_eq!(b.wait_exit(), 0);
    assert_eq!(vm_json(&lab, "t3")["state"], "running");

    // The guest powers itself off: on-failure leaves it off; the attached client is told.
    a.wait_for("LABD-TEST-GUEST up", 2);
    a.send("poweroff\n");
    let info = wait_info(&lab, "t3", "powered off", |i| i["state"] == "stopped");
    assert_eq!(info["last_exit"], "poweroff", "{info}");
    a.wait_for("[labd: the VM stopped]", 1);
    assert_eq!(a.wait_exit(), 0);

    // restart starts a stopped VM, and restarts a running one.
    lab.labctl(&["vm", "restart", "t3"]).ok();
    let pid2 = wait_info(&lab, "t3", "running", |i| i["state"] == "running")["pid"]
        .as_u64()
        .expect("pid");
    wait_banners(&lab, &console, 3);
    let job = lab
        .labctl(&["--output", "json", "vm", "restart", "t3"])
        .ok()
        .json();
    assert_eq!(job["result"]["stop"]["meaning"], "poweroff", "{job}");
    let pid3 = job["result"]["start"]["pid"].as_u64().expect("pid");
    assert_ne!(pid2, pid3);
    assert!(alive(pid3) && !alive(pid2));
    lab.labctl(&["vm", "stop", "t3", "--force"]).ok();
    lab.labctl(&["vm", "destroy", "t3"]).ok();
}

#[test]
fn a_vm_snapshot_clones_into_a_new_machine() {
    let lab = Lab::start_with(LabOptions {
        tables: "[vms]\nimages_dir = \"{dir}/images\"\n".to_owned(),
        ..LabOptions::default()
    });
    let images = lab.dir.join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    let mut image = vec![0u8; 4 << 20];
    image[..4096].fill(0x42);
    std::fs::write(images.join("debian-12-genericcloud-amd64.raw"), &image).expect("image");
    lab.labctl(&[
        "vm",
        "create",
        "web",
        "--template",
        "docker-host",
        "--ip",
        "10.9.8.7/24",
    ])
    .ok();
    let web = vm_json(&lab, "web");
    let key = web["ssh_host_key"].as_str().expect("host key").to_owned();
    assert!(key.starts_with("ssh-ed25519 AAAA"), "{key}");

    lab.labctl(&["vm", "snapshot", "web", "--name", "s1"]).ok();
    assert!(lab.exists(&format!("{}@s1", lab.ds("vms/web"))));
    let job = lab
        .labctl(&[
            "--output",
            "json",
            "vm",
            "clone",
            "web",
            "web2",
            "--snapshot",
            "s1",
        ])
        .ok()
        .json();
    assert_eq!(job["kind"], "vm.clone");
    let web2_ds = lab.ds("vms/web2");
    assert_eq!(
        lab.prop(&web2_ds, "origin"),
        format!("{}@s1", lab.ds("vms/web"))
    );
    assert_eq!(lab.prop(&web2_ds, "labd:managed"), "on");
    let web2 = vm_json(&lab, "web2");
    assert_eq!(
        lab.prop(&web2_ds, "labd:vm"),
        web2["uuid"].as_str().expect("uuid")
    );
    assert_ne!(web2["uuid"], web["uuid"]);
    assert_ne!(web2["nics"][0]["mac"], web["nics"][0]["mac"]);
    assert!(web2["nics"][0].get("address").is_none(), "{web2}");
    let key2 = web2["ssh_host_key"].as_str().expect("host key");
    assert!(
        key2.starts_with("ssh-ed25519 AAAA") && key2 != key,
        "{key2}"
    );
    let dir2 = std::path::PathBuf::from(lab.prop(&web2_ds, "mountpoint"));
    assert!(dir2.join("seed.iso").exists());
    let text = std::fs::read_to_string(dir2.join("vm.toml")).expect("vm.toml");
    assert!(text.contains("name = \"web2\""), "{text}");
    let mut head = vec![0u8; image.len()];
    std::io::Read::read_exact(
        &mut std::fs::File::open(dir2.join("disk0.img")).expect("disk"),
        &mut head,
    )
    .expect("read");
    assert!(head == image, "the clone's disk is not the source's");

    // Without --snapshot one is taken; refusals make nothing.
    lab.labctl(&["vm", "clone", "web", "web3"]).ok();
    assert!(lab.exists(&lab.ds("vms/web3")));
    let before = lab.inventory();
    let out = lab.labctl(&["vm", "clone", "web", "Bad_Name"]).code(1);
    assert!(out.stderr.contains("field: target"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "clone", "web", "web2"]).code(1);
    assert!(out.stderr.contains("exists"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "clone", "nope", "web4"]).code(1);
    assert!(out.stderr.contains("not_found"), "{}", out.stderr);
    let out = lab.labctl(&["vm", "clone", "web", "web5", "--snapshot", "nosuch"]);
    assert_ne!(out.code, 0);
    assert_eq!(lab.inventory(), before);

    for vm in ["web2", "web3", "web"] {
        lab.labctl(&["vm", "destroy", vm]).ok();
    }
}

/// A template whose boot disk is a ZFS volume; zfs-fuse has none.
const ZVOL_TEMPLATE: &str = r#"
description = "UEFI guest on a sparse zvol"
loader = "uefi"
memory = "512M"
[cpu]
count = 1
[[disk]]
size = "1G"
backing = "zvol"
"#;

/// zfs-fuse has no volumes (`zfs create -V` aborts, reference/zfs.md §2): the probe says so, and
/// `vm create` of a template with a zvol disk is refused before anything is made, naming the
/// disk's `backing` and why. What the VM would run is still shown (the template is valid; the
/// host lacks volumes), with the volume's device node.
#[test]
fn zvol_disks_are_refused_on_a_zfs_without_volumes() {
    let lab = Lab::start_with(LabOptions {
        tables: "[vms]\ntemplates_dir = \"{dir}/templates\"\n".to_owned(),
        ..LabOptions::default()
    });
    std::fs::create_dir_all(lab.dir.join("templates")).expect("templates dir");
    std::fs::write(lab.dir.join("templates/onzvol.toml"), ZVOL_TEMPLATE).expect("template");

    let status = lab.labctl(&["--output", "json", "status"]).ok().json();
    let zfs = status["system"]["drivers"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["subsystem"] == "zfs"))
        .cloned()
        .unwrap_or_else(|| panic!("zfs driver in {status}"));
    let caps = zfs["capabilities"].to_string();
    assert!(!caps.contains("zvols"), "{caps}");

    let before = lab.inventory();
    let out = lab
        .labctl(&["vm", "create", "vol1", "--template", "onzvol"])
        .code(1);
    for needle in [
        "disk[0].backing",
        "\"zvol\"",
        "has none",
        "unsupported_backing",
    ] {
        assert!(out.stderr.contains(needle), "{needle} in {}", out.stderr);
    }
    assert_eq!(lab.inventory(), before, "nothing was made");
    assert!(vm_names(&lab).is_empty());

    let preview = lab
        .labctl(&[
            "template", "command", "onzvol", "--driver", "qemu", "--vm", "vol1",
        ])
        .ok()
        .stdout;
    let device = format!("file=/dev/zvol/{}/disk0,", lab.ds("vms/vol1"));
    assert!(
        preview.contains(&device) && preview.contains("cache=none"),
        "{device} in {preview}"
    );
}

/// The tiny guest with a cloud-init seed: its kernel finds the seed disk, reads the label and
/// the files labd wrote, and prints them before its banner.
const SEEDED_TEMPLATE: &str = r#"description = "Test guest with a cloud-init seed"
loader = "kernel"
kernel = "vmlinuz"
initrd = "initrd.gz"
cmdline = "console=ttyS0 quiet panic=-1"
memory = "256M"
stop_timeout = "10s"
[cpu]
count = 1
[[nic]]
switch = "SWITCH"
[cloud_init]
user = "debian"
seed_bus = "virtio-blk"
"#;

#[test]
fn a_real_guest_kernel_reads_the_seed_labd_wrote() {
    let guest = labd_e2e::test_guest_dir();
    let sw = format!("sd{}", std::process::id() % 100_000);
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n\
             templates_dir = \"{{dir}}/templates\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    std::fs::create_dir_all(lab.dir.join("templates")).expect("templates");
    std::fs::write(
        lab.dir.join("templates/seeded.toml"),
        SEEDED_TEMPLATE.replace("SWITCH", &sw),
    )
    .expect("template");
    lab.labctl(&["switch", "create", &sw]).ok();
    lab.labctl(&[
        "vm",
        "create",
        "s1",
        "--template",
        "seeded",
        "--ip",
        "192.168.50.7/24",
        "--gateway",
        "192.168.50.1",
    ])
    .ok();
    let info = vm_json(&lab, "s1");
    let uuid = info["uuid"].as_str().expect("uuid").to_owned();
    let mac = info["nics"][0]["mac"].as_str().expect("mac").to_owned();
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/s1"), "mountpoint"));
    let console = dir.join("console.log");
    lab.labctl(&["vm", "start", "s1"]).ok();
    wait_banners(&lab, &console, 1);
    let log = std::fs::read_to_string(&console).expect("console.log");
    lab.labctl(&["vm", "stop", "s1", "--force"]).ok();
    lab.labctl(&["vm", "destroy", "s1"]).ok();
    lab.labctl(&["switch", "destroy", &sw]).ok();

    let seed: Vec<&str> = log.lines().filter(|l| l.starts_with("seed")).collect();
    let has = |needle: &str| seed.iter().any(|l| l.contains(needle));
    assert!(
        seed.iter()
            .any(|l| l.trim_end() == "seed: volume id cidata"),
        "{seed:#?}"
    );
    assert!(
        has(&format!("seed meta-data: instance-id: \"{uuid}-")),
        "{seed:#?}"
    );
    assert!(has("seed meta-data: local-hostname: \"s1\""), "{seed:#?}");
    assert!(
        has(&mac) && has("192.168.50.7/24") && has("192.168.50.1"),
        "{seed:#?}"
    );
}
