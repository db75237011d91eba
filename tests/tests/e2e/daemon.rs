//! labd as a process: socket, events, jobs under locks, killed commands, signals.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, run};
use nix::sys::signal::Signal;

#[test]
fn socket_is_0660_and_events_name_the_caller() {
    let lab = Lab::start();
    let meta = std::fs::metadata(&lab.socket).expect("socket");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let events = lab.events();
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let photos = lab.ds("photos");
    let created = events
        .wait_for(Duration::from_secs(10), |e| {
            e["kind"] == "dataset.created" && e["resource"] == photos.as_str()
        })
        .expect("dataset.created event");
    assert_eq!(created["actor"]["uid"], 0);
    let finished = events
        .wait_for(Duration::from_secs(10), |e| e["kind"] == "job.finished")
        .expect("job.finished event");
    assert_eq!(finished["data"]["state"], "succeeded");
    assert_eq!(finished["data"]["kind"], "dataset.create");
}

#[test]
fn events_can_be_filtered_by_kind_and_resource() {
    let lab = Lab::start();
    let events = lab.events_with(&["--kind", "dataset.", "--resource", "photos"]);
    lab.labctl(&["dataset", "create", "music"]).ok();
    lab.labctl(&["dataset", "create", "photos"]).ok();
    lab.labctl(&["dataset", "create", "photos/2024"]).ok();
    let mut seen = Vec::new();
    while let Some(e) = events.wait_for(Duration::from_secs(3), |_| true) {
        seen.push(format!(
            "{} {}",
            e["kind"].as_str().unwrap_or(""),
            e["resource"].as_str().unwrap_or("")
        ));
    }
    let photos = lab.ds("photos");
    assert_eq!(
        seen,
        [
            format!("dataset.created {photos}"),
            format!("dataset.created {photos}/2024")
        ],
        "only dataset events about photos and below"
    );
}

#[test]
fn socket_group_is_applied() {
    let mut lab = Lab::start();
    lab.signal(Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(&lab.config).expect("config");
    std::fs::write(
        &lab.config,
        text.replace("[api]\n", "[api]\nsocket_group = \"daemon\"\n"),
    )
    .expect("config");
    lab.spawn_labd();
    let gid = nix::unistd::Group::from_name("daemon")
        .ok()
        .flatten()
        .expect("group daemon")
        .gid;
    let meta = std::fs::metadata(&lab.socket).expect("socket");
    assert_eq!(meta.gid(), gid.as_raw());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
}

#[test]
fn bad_config_is_a_startup_error_naming_the_key() {
    let lab = Lab::start();
    let bad = lab.dir.join("bad.toml");
    let labd = labd_e2e::bin_dir().join("labd");
    let labd = labd.to_str().expect("utf-8 path");
    for (text, key) in [
        ("[zfs]\nroot = \"tank\"\nroots = \"x\"\n", "roots"),
        ("[zfs]\nroot = \"tank/a b\"\n", "zfs.root"),
        (
            "[api]\nsocket = \"relative.sock\"\n[zfs]\nroot = \"tank\"\n",
            "api.socket",
        ),
        ("[zfs]\nroot = \"nosuchpool/labd\"\n", "does not exist"),
    ] {
        std::fs::write(&bad, text).expect("write");
        let out = run(labd, &["--config", bad.to_str().expect("utf-8")]);
        assert_ne!(out.code, 0, "{text}");
        assert!(out.stderr.contains(key), "{key}: {}", out.stderr);
    }
}

/// Two snapshots of one dataset requested at once run one after the other: their run
/// intervals do not overlap, and both succeed.
#[test]
fn mutations_of_one_dataset_never_interleave() {
    let tmp = std::env::temp_dir().join(format!("labd-slow-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("dir");
    let slow = Lab::slow_zfs(&tmp, "snapshot", 1);
    let lab = Lab::start_with(LabOptions {
        zfs_extra: format!("zfs = \"{}\"", slow.display()),
        ..LabOptions::default()
    });
    lab.labctl(&["dataset", "create", "photos"]).ok();
    lab.labctl(&["dataset", "create", "music"]).ok();
    let spawn = |args: &[&str]| lab.labctl_cmd(args).spawn().expect("labctl");
    let started = Instant::now();
    let mut a = spawn(&["dataset", "snapshot", "photos", "--name", "a"]);
    let mut b = spawn(&["dataset", "snapshot", "photos", "--name", "b"]);
    let mut c = spawn(&["dataset", "snapshot", "music", "--name", "c"]);
    for child in [&mut a, &mut b, &mut c] {
        assert!(child.wait().expect("wait").success());
    }
    let elapsed = started.elapsed();
    let jobs = lab.labctl(&["--output", "json", "job", "list"]).ok().json();
    let interval = |target: &str, snap: &str| {
        let job = jobs
            .as_array()
            .expect("jobs")
            .iter()
            .find(|j| {
                j["kind"] == "snapshot.create"
                    && j["target"] == target
                    && j["log"].to_string().contains(&format!("@{snap}"))
            })
            .unwrap_or_else(|| panic!("job for {snap} in {jobs}"));
        assert_eq!(job["state"], "succeeded");
        let t = |k: &str| job[k].as_str().expect("timestamp").to_owned();
        (t("started_at"), t("finished_at"))
    };
    let photos = lab.ds("photos");
    let (a0, a1) = interval(&photos, "a");
    let (b0, b1) = interval(&photos, "b");
    // RFC 3339 UTC timestamps of equal precision compare as strings.
    assert!(
        a1 <= b0 || b1 <= a0,
        "a [{a0}, {a1}] and b [{b0}, {b1}] overlap"
    );
    // The other dataset did not wait: three 1 s snapshots took well under 3 s.
    assert!(elapsed < Duration::from_millis(2900), "took {elapsed:?}");
    assert!(lab.exists(&format!("{photos}@a")) && lab.exists(&format!("{photos}@b")));
    let _ = std::fs::remove_dir_all(&tmp);
}

fn pids_of(pattern: &str) -> Vec<i32> {
    run("pgrep", &["-f", pattern])
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A zfs child killed under labd fails its job with the signal; labd keeps serving.
#[test]
fn killed_zfs_child_fails_the_job() {
    let tmp = std::env::temp_dir().join(format!("labd-kill-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("dir");
    let slow = Lab::slow_zfs(&tmp, "snapshot", 20);
    let lab = Lab::start_with(LabOptions {
        zfs_extra: format!("zfs = \"{}\"", slow.display()),
        ..LabOptions::default()
    });
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let child = lab
        .labctl_cmd(&[
            "--output", "json", "dataset", "snapshot", "photos", "--name", "k",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("labctl");
    let pattern = format!("{} snapshot", slow.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    let pid = loop {
        if let Some(pid) = pids_of(&pattern).first() {
            break *pid;
        }
        assert!(Instant::now() < deadline, "the zfs child never started");
        std::thread::sleep(Duration::from_millis(50));
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).expect("kill");
    let out = child.wait_with_output().expect("labctl");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("signal 9"), "{stderr}");
    assert!(!lab.exists(&format!("{}@k", lab.ds("photos"))));
    // labd is still serving.
    lab.labctl(&["dataset", "list"]).ok();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// SIGTERM while a job runs: labd stops accepting, lets the job finish within the grace
/// period, and exits 0.
#[test]
fn sigterm_finishes_running_job() {
    let tmp = std::env::temp_dir().join(format!("labd-term-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("dir");
    let slow = Lab::slow_zfs(&tmp, "snapshot", 2);
    let mut lab = Lab::start_with(LabOptions {
        zfs_extra: format!("zfs = \"{}\"", slow.display()),
        daemon_extra: "shutdown_grace = \"20s\"".into(),
        ..LabOptions::default()
    });
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let mut child = lab
        .labctl_cmd(&["dataset", "snapshot", "photos", "--name", "t"])
        .spawn()
        .expect("labctl");
    std::thread::sleep(Duration::from_millis(700));
    lab.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    // No new connections once stopping.
    assert!(std::os::unix::net::UnixStream::connect(&lab.socket).is_err());
    assert_eq!(
        lab.wait_labd(Duration::from_secs(20)),
        Some(0),
        "{}",
        lab.log()
    );
    assert!(
        lab.exists(&format!("{}@t", lab.ds("photos"))),
        "the job finished"
    );
    let _ = child.wait();
    assert!(lab.log().contains("job.finished") || lab.log().contains("kind=job.finished"));
    let _ = std::fs::remove_dir_all(&tmp);
}

/// SIGTERM with a job that outlives the grace period: the job's command is killed, labd
/// exits 0 promptly, and nothing half-done remains.
#[test]
fn sigterm_fails_job_past_grace() {
    let tmp = std::env::temp_dir().join(format!("labd-grace-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("dir");
    let slow = Lab::slow_zfs(&tmp, "snapshot", 30);
    let mut lab = Lab::start_with(LabOptions {
        zfs_extra: format!("zfs = \"{}\"", slow.display()),
        daemon_extra: "shutdown_grace = \"1s\"".into(),
        ..LabOptions::default()
    });
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let mut child = lab
        .labctl_cmd(&["dataset", "snapshot", "photos", "--name", "late"])
        .spawn()
        .expect("labctl");
    let pattern = format!("{} snapshot", slow.display());
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_of(&pattern).is_empty() {
        assert!(Instant::now() < deadline, "the zfs child never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stopping = Instant::now();
    lab.signal(Signal::SIGTERM);
    assert_eq!(
        lab.wait_labd(Duration::from_secs(15)),
        Some(0),
        "{}",
        lab.log()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    assert!(
        pids_of(&pattern).is_empty(),
        "the zfs command was not killed"
    );
    assert!(!lab.exists(&format!("{}@late", lab.ds("photos"))));
    assert!(
        lab.log().contains("interrupted") || lab.log().contains("shut down before"),
        "{}",
        lab.log()
    );
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// SIGHUP re-reads the configuration; a bad one is rejected and the old one kept.
#[test]
fn sighup_reloads_or_keeps_the_old_config() {
    let lab = Lab::start();
    lab.zfs(&["create", &format!("{}/other", lab.pool)]).ok();
    let events = lab.events();

    let good = std::fs::read_to_string(&lab.config).expect("config");
    std::fs::write(&lab.config, format!("{good}\nbogus = 1\n")).expect("write");
    lab.signal(Signal::SIGHUP);
    let rejected = events
        .wait_for(Duration::from_secs(10), |e| e["kind"] == "config.rejected")
        .expect("config.rejected event");
    assert!(
        rejected["data"]["reason"].to_string().contains("bogus"),
        "{rejected}"
    );
    let status = lab.labctl(&["--output", "json", "status"]).ok();
    assert!(
        status.stdout.contains(&format!("\"{}\"", lab.root)),
        "{}",
        status.stdout
    );

    let other = format!("{}/other", lab.pool);
    std::fs::write(
        &lab.config,
        good.replace(
            &format!("root = \"{}\"", lab.root),
            &format!("root = \"{other}\""),
        ),
    )
    .expect("write");
    lab.signal(Signal::SIGHUP);
    events
        .wait_for(Duration::from_secs(10), |e| e["kind"] == "config.reloaded")
        .expect("config.reloaded event");
    lab.labctl(&["dataset", "create", "moved"]).ok();
    assert!(lab.exists(&format!("{other}/moved")));
}
