//! Benchmark: one labd policy run against sanoid 2.1.0 (Debian package) on the same zfs-fuse
//! pool, for the same retention (24 hourly, 30 daily, 12 monthly) over 201 datasets per side
//! (a parent and 200 children), measured in the same run:
//!
//! - take: `labctl policy run` (one `zfs snapshot -r` for the fully covered subtree) against
//!   `sanoid --take-snapshots` with `recursive = yes` (sanoid's default and most common mode:
//!   every child is its own section, one `zfs snapshot` per dataset and snapshot type);
//!   target ratio sanoid/labd >= 10;
//! - prune: a backlog of 2,010 expired snapshots (10 per dataset) on each side; labd destroys
//!   each name across the subtree with one `zfs destroy -r`, sanoid one snapshot at a time;
//!   target ratio sanoid/labd >= 3.
//!
//! sanoid on zfs-fuse needs two adjustments, both printed with the results:
//! - its inventory is `zfs get -Hrpt snapshot creation`, and zfs-fuse's `zfs get` has no `-t`
//!   (`invalid option 't'`, so sanoid would see no snapshot at all). The benchmark runs a
//!   copy of /usr/sbin/sanoid whose only change is that command, minus `-t snapshot`
//!   (sanoid's parser ignores the extra filesystem rows);
//! - sanoid ages snapshots by `creation`, which ZFS sets, so a backlog made now is not
//!   expired to it. sanoid's clock is moved forward 3 days with libfaketime (`LD_PRELOAD`,
//!   `FAKETIME=+3d`). libfaketime 0.9.10 does not intercept glibc 2.33+'s `stat64`, so file
//!   times would stay real and sanoid's 15-minute snapshot cache would look 3 days old each
//!   time it is checked, making sanoid re-list every snapshot of every pool after each
//!   dataset it prunes (a real run reads the cache file it has just rewritten). A small Perl
//!   module shifts the times `stat` reports by the same 3 days, which is what libfaketime's
//!   stat faking does where it works, and drops `LD_PRELOAD` for sanoid's children (`zfs`,
//!   `ps`), whose clocks do not matter.
//!
//! Run as root with zfs-fuse up, after `cargo build --release --workspace --bins`:
//! `cargo bench -p labd-e2e --bench policy_vs_sanoid` (`CHILDREN=N` changes the child count).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use labd_e2e::{Lab, LabOptions, Out, ms, run};

/// The packaged sanoid.
const SANOID: &str = "/usr/sbin/sanoid";
/// libfaketime as the Debian package `libfaketime` installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// How far sanoid's clock is moved forward for the prune.
const FAKE_DAYS: i64 = 3;
/// Expired snapshots per dataset in each backlog.
const BACKLOG: usize = 10;
/// The retention of both sides.
const HOURLY: usize = 24;
const DAILY: usize = 30;
const MONTHLY: usize = 12;
/// sanoid's inventory command, and what zfs-fuse accepts instead.
const SANOID_GET: &str = "\"$zfs get -Hrpt snapshot creation |\"";
const FUSE_GET: &str = "\"$zfs get -Hrp creation |\"";

/// `stat` with file times shifted like the clock (see the module documentation).
const SHIFT_STAT_PM: &str = r#"package ShiftStat;
# Shift the times stat() reports by the same offset libfaketime adds to the clock, and keep
# libfaketime out of child processes. FAKETIME stays: libfaketime re-reads it every 10 s and
# stops faking when it is gone.
sub import {
    my (undef, $offset) = @_;
    *CORE::GLOBAL::stat = sub (;*) {
        my @s = CORE::stat($_[0]);
        if (@s) { $s[$_] += $offset for 8, 9, 10; }
        return wantarray ? @s : scalar(@s);
    };
    delete $ENV{LD_PRELOAD};
}
1;
"#;

/// UTC calendar fields of a Unix time: (year, month, day, hour, minute, second).
fn civil(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

fn rfc3339(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// labd's policy snapshot name (`labd_%Y-%m-%dT%H%MZ_<bucket>`).
fn labd_name(secs: i64, bucket: &str) -> String {
    let (y, mo, d, h, mi, _) = civil(secs);
    format!("labd_{y:04}-{mo:02}-{d:02}T{h:02}{mi:02}Z_{bucket}")
}

/// sanoid's snapshot name (`autosnap_%Y-%m-%d_%H:%M:%S_<type>`, local time = UTC here).
fn sanoid_name(secs: i64, kind: &str) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("autosnap_{y:04}-{mo:02}-{d:02}_{h:02}:{mi:02}:{s:02}_{kind}")
}

fn now_secs() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(d.as_secs()).expect("seconds fit")
}

/// Every snapshot under `subtree`, by dataset.
fn snapshots(subtree: &str) -> BTreeMap<String, Vec<String>> {
    let out = run(
        "zfs",
        &["list", "-H", "-t", "snapshot", "-o", "name", "-r", subtree],
    )
    .ok();
    let mut by_ds: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.stdout.lines() {
        if let Some((ds, snap)) = line.split_once('@') {
            by_ds
                .entry(ds.to_owned())
                .or_default()
                .push(snap.to_owned());
        }
    }
    by_ds
}

/// Every filesystem of `subtree`, itself first.
fn datasets(subtree: &str) -> Vec<String> {
    run(
        "zfs",
        &[
            "list",
            "-H",
            "-t",
            "filesystem",
            "-o",
            "name",
            "-r",
            subtree,
        ],
    )
    .ok()
    .stdout
    .lines()
    .map(str::to_owned)
    .collect()
}

fn total(by_ds: &BTreeMap<String, Vec<String>>) -> usize {
    by_ds.values().map(Vec::len).sum()
}

/// Create `parent` (unmounted) with `children` children (which inherit `mountpoint=none`).
fn create_tree(parent: &str, children: usize, props: &[&str]) {
    let mut args = vec!["create", "-o", "mountpoint=none"];
    for p in props {
        args.extend(["-o", p]);
    }
    args.push(parent);
    run("zfs", &args).ok();
    for i in 0..children {
        run("zfs", &["create", &format!("{parent}/c{i}")]).ok();
    }
}

/// Run the policies once and return the wall time of `labctl` and the run's result.
fn policy_run(lab: &Lab) -> (Duration, serde_json::Value) {
    let t = Instant::now();
    let out = lab.labctl(&["--output", "json", "policy", "run"]).ok();
    let elapsed = t.elapsed();
    let job = out.json();
    assert_eq!(job["state"], "succeeded", "policy run failed: {job:#}");
    let result = job["result"].clone();
    let errors = result["errors"].as_array().map_or(0, Vec::len);
    assert_eq!(errors, 0, "policy run reported errors: {result:#}");
    (elapsed, result)
}

fn count(v: &serde_json::Value, key: &str) -> usize {
    v[key].as_array().map_or(0, Vec::len)
}

/// sanoid's files: the patched copy, its configuration, cache and lock directories.
struct Sanoid {
    dir: PathBuf,
}

impl Sanoid {
    fn setup(dir: PathBuf, section: &str) -> Self {
        let source = fs::read_to_string(SANOID).expect("sanoid is installed (apt install sanoid)");
        assert!(
            source.contains("$::VERSION = '2.1.0'"),
            "this benchmark was written against sanoid 2.1.0"
        );
        assert_eq!(
            source.matches(SANOID_GET).count(),
            1,
            "sanoid's inventory command changed"
        );
        fs::create_dir_all(dir.join("etc")).expect("sanoid dirs");
        fs::write(dir.join("sanoid"), source.replace(SANOID_GET, FUSE_GET)).expect("sanoid copy");
        fs::write(dir.join("ShiftStat.pm"), SHIFT_STAT_PM).expect("perl module");
        let conf = format!(
            "[template_bench]\n\thourly = {HOURLY}\n\tdaily = {DAILY}\n\tmonthly = {MONTHLY}\n\
             \tautosnap = yes\n\tautoprune = yes\n\n\
             [{section}]\n\tuse_template = bench\n\trecursive = yes\n"
        );
        fs::write(dir.join("etc/sanoid.conf"), conf).expect("sanoid.conf");
        Self { dir }
    }

    fn cache_file(&self) -> PathBuf {
        self.dir.join("cache/snapshots.txt")
    }

    /// `perl sanoid --configdir … --cache-dir … --run-dir … <action>`, timed; with the clock
    /// `fake_days` ahead when it is not 0.
    fn run(&self, action: &str, fake_days: i64) -> (Duration, Out) {
        let path = |p: &str| self.dir.join(p).display().to_string();
        let mut cmd = Command::new("perl");
        if fake_days != 0 {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME", format!("+{fake_days}d"))
                .arg("-I")
                .arg(&self.dir)
                .arg(format!("-MShiftStat={}", fake_days * 86_400));
        }
        cmd.arg(path("sanoid"))
            .args(["--configdir", &path("etc")])
            .args(["--cache-dir", &path("cache")])
            .args(["--run-dir", &path("run")])
            .arg(action)
            .stdin(Stdio::null());
        let t = Instant::now();
        let out = cmd.output().expect("run sanoid");
        let elapsed = t.elapsed();
        let out = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        (elapsed, out.ok())
    }
}

/// Assert that every dataset of `all` has at least one snapshot in `by_ds`.
fn assert_all_have_snapshots(all: &[String], by_ds: &BTreeMap<String, Vec<String>>, who: &str) {
    let missing: Vec<&String> = all.iter().filter(|d| !by_ds.contains_key(*d)).collect();
    assert!(
        missing.is_empty(),
        "{who} took no snapshot of {} datasets, e.g. {:?}",
        missing.len(),
        missing.first()
    );
}

fn check_tools() {
    for (path, package) in [(SANOID, "sanoid"), (LIBFAKETIME, "libfaketime")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: apt install {package}"
        );
    }
    let faked = Command::new("date")
        .arg("+%s")
        .env("LD_PRELOAD", LIBFAKETIME)
        .env("FAKETIME", format!("+{FAKE_DAYS}d"))
        .output()
        .expect("run date");
    let faked: i64 = String::from_utf8_lossy(&faked.stdout)
        .trim()
        .parse()
        .expect("date prints seconds");
    let shift = faked - now_secs();
    assert!(
        (shift - FAKE_DAYS * 86_400).abs() < 60,
        "libfaketime did not move the clock {FAKE_DAYS} days (moved {shift} s)"
    );
}

fn main() {
    let children: usize = std::env::var("CHILDREN")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let per_side = children + 1;
    check_tools();
    let mut lab = Lab::start_with(LabOptions {
        pool_mib: 2048,
        ..LabOptions::default()
    });
    let bench_dir = lab.dir.join("policy-bench");
    fs::create_dir_all(&bench_dir).expect("bench dir");

    // Datasets: labd's subtree below its root, sanoid's outside it.
    let started = Instant::now();
    let p = lab.ds("bench");
    create_tree(&p, children, &["labd:policy=bench"]);
    let s = format!("{}/sanoid", lab.pool);
    create_tree(&s, children, &[]);
    let p_all = datasets(&p);
    let s_all = datasets(&s);
    assert_eq!((p_all.len(), s_all.len()), (per_side, per_side));
    eprintln!(
        "created 2 x {per_side} datasets in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // labd: the policy, no scheduler, the policy clock in a file.
    let clock = bench_dir.join("clock");
    let t = now_secs() / 60 * 60;
    fs::write(&clock, rfc3339(t)).expect("clock file");
    let config = format!(
        "[api]\nsocket = \"{}\"\n\n[zfs]\nroot = \"{}\"\n\n[daemon]\n\n\
         [policies.bench]\nhourly = {HOURLY}\ndaily = {DAILY}\nmonthly = {MONTHLY}\nmin_keep = 1\n\n\
         [schedule]\nenabled = false\nmax_destroy_per_run = 100000\nclock_file = \"{}\"\n",
        lab.socket.display(),
        lab.root,
        clock.display()
    );
    lab.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        lab.wait_labd(Duration::from_secs(30)).is_some(),
        "labd did not stop"
    );
    fs::write(&lab.config, config).expect("labd config");
    lab.spawn_labd();
    let sanoid = Sanoid::setup(bench_dir.join("sanoid"), &s);

    // Take.
    let (labd_take, take) = policy_run(&lab);
    let taken = snapshots(&p);
    assert_all_have_snapshots(&p_all, &taken, "labd");
    assert_eq!(count(&take, "taken"), per_side);
    assert_eq!(total(&taken), per_side);
    let take_name = taken[&p][0].clone();
    let (sanoid_take, _) = sanoid.run("--take-snapshots", 0);
    let s_taken = snapshots(&s);
    assert_all_have_snapshots(&s_all, &s_taken, "sanoid");
    let s_taken_total = total(&s_taken);
    let s_hourly_now = s_taken[&s]
        .iter()
        .filter(|n| n.ends_with("_hourly"))
        .count();

    // labd backlog: ten policy snapshots per dataset on one day two years back, which no rule
    // keeps; the clock stays at T, so the run only prunes.
    let backlog_day = (t / 86_400 - 730) * 86_400;
    for h in 1..=BACKLOG {
        let at = backlog_day + i64::try_from(h).expect("small") * 3600;
        let snap = format!("{p}@{}", labd_name(at, "hourly"));
        run("zfs", &["snapshot", "-r", "-o", "labd:policy=bench", &snap]).ok();
    }
    let before = snapshots(&p);
    assert_eq!(total(&before), per_side * (BACKLOG + 1));
    let (labd_prune, prune) = policy_run(&lab);
    let after = snapshots(&p);
    assert_eq!(count(&prune, "destroyed"), per_side * BACKLOG);
    assert_eq!(count(&prune, "taken"), 0);
    assert_eq!(total(&after), per_side, "labd left {after:?}");
    assert!(
        after
            .values()
            .all(|v| v == std::slice::from_ref(&take_name)),
        "labd kept other snapshots than {take_name}"
    );

    // sanoid backlog: hourlies made now, enough that from 3 days ahead every dataset has
    // BACKLOG more hourlies than it keeps, all older than HOURLY hours.
    let fake_now = now_secs() + FAKE_DAYS * 86_400;
    let extra = HOURLY + BACKLOG - s_hourly_now;
    for k in 0..extra {
        let at = fake_now - i64::try_from(HOURLY + 1 + k).expect("small") * 3600;
        run(
            "zfs",
            &[
                "snapshot",
                "-r",
                &format!("{s}@{}", sanoid_name(at, "hourly")),
            ],
        )
        .ok();
    }
    let s_before = total(&snapshots(&s));
    assert_eq!(s_before, s_taken_total + per_side * extra);
    // sanoid's cache of the take predates the backlog: a standalone prune finds it expired
    // (it is older than 15 minutes in the faked world) and lists all snapshots once.
    fs::remove_file(sanoid.cache_file()).expect("sanoid cache file");
    let (sanoid_prune, _) = sanoid.run("--prune-snapshots", FAKE_DAYS);
    let s_after = snapshots(&s);
    let s_destroyed = s_before - total(&s_after);
    assert_eq!(
        s_destroyed,
        per_side * BACKLOG,
        "sanoid destroyed {s_destroyed}"
    );
    for (ds, names) in &s_after {
        let hourly = names.iter().filter(|n| n.ends_with("_hourly")).count();
        assert_eq!(hourly, HOURLY, "{ds} keeps {hourly} hourlies");
    }

    let num = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "datasets: {per_side} per side (a parent and {children} children), policy \
         hourly={HOURLY} daily={DAILY} monthly={MONTHLY}"
    );
    println!(
        "sanoid 2.1.0 runs with recursive = yes (its default and most common mode: each child \
         is its own section)"
    );
    println!("take:");
    println!(
        "  labctl policy run: {:.1} ms (job {} ms, {} zfs commands, {} snapshots)",
        ms(labd_take),
        num(&take, "duration_ms"),
        num(&take, "commands"),
        count(&take, "taken")
    );
    println!(
        "  sanoid --take-snapshots: {:.1} ms ({s_taken_total} snapshots: one zfs snapshot per \
         dataset and type, plus 1 zfs list and 2 zfs get of all pools)",
        ms(sanoid_take)
    );
    println!(
        "  ratio sanoid/labd: {:.1} (target >= 10)",
        sanoid_take.as_secs_f64() / labd_take.as_secs_f64()
    );
    println!("prune ({BACKLOG} expired snapshots per dataset):");
    println!(
        "  labctl policy run: {:.1} ms (job {} ms, {} zfs commands, {} destroyed)",
        ms(labd_prune),
        num(&prune, "duration_ms"),
        num(&prune, "commands"),
        count(&prune, "destroyed")
    );
    println!(
        "  sanoid --prune-snapshots (clock +{FAKE_DAYS} d): {:.1} ms ({s_destroyed} destroyed, \
         one zfs destroy and one ps -Ao args= each, plus 1 zfs list and 1 zfs get of all pools)",
        ms(sanoid_prune)
    );
    println!(
        "  ratio sanoid/labd: {:.1} (target >= 3)",
        sanoid_prune.as_secs_f64() / labd_prune.as_secs_f64()
    );
    println!(
        "sanoid adjustments: inventory `zfs get -Hrp creation` (zfs-fuse has no `get -t`); \
         expired backlog via libfaketime FAKETIME=+{FAKE_DAYS}d plus file times shifted alike \
         (libfaketime misses glibc's stat64); cache deleted before the prune"
    );
    let _ = fs::remove_dir_all(&bench_dir);
}
