//! Benchmark: `GET /metrics` over labd's socket with 1,000 datasets (and a snapshot of each)
//! on a zfs-fuse pool, once the inventory has been refreshed. Prints the median and p95 of
//! 20 scrapes (target: < 50 ms), the time of labd's inventory refresh (`zfs get` + `zpool
//! list`, off the scrape path), and labd's CPU time over 10 s of idleness (no polling: it
//! should be near zero).
//!
//! Run as root with zfs-fuse up, after `cargo build --release --workspace --bins`:
//! `cargo bench -p labd-e2e --bench metrics_scrape` (`DATASETS=N` changes the count,
//! `METRICS_DUMP=FILE` writes one scrape to FILE).

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, run};

/// One `GET /metrics` over the socket (HTTP/1.1, connection closed by labd); the body.
fn scrape(lab: &Lab) -> String {
    let mut stream = UnixStream::connect(&lab.socket).expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: labd\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Series of one family in a scrape.
fn series(text: &str, family: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(family) && l[family.len()..].starts_with('{'))
        .count()
}

fn value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// CPU time (user + system) labd has used so far.
fn cpu_time(pid: i32, ticks_per_second: f64) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may contain spaces): state is field 3.
    let rest = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u32 =
        fields[11].parse::<u32>().expect("utime") + fields[12].parse::<u32>().expect("stime");
    Duration::from_secs_f64(f64::from(ticks) / ticks_per_second)
}

fn main() {
    let count: usize = std::env::var("DATASETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let lab = Lab::start_with(LabOptions {
        pool_mib: 1024,
        ..LabOptions::default()
    });
    let started = Instant::now();
    labd_e2e::create_unmounted_tree(&lab, count);
    run("zfs", &["snapshot", "-r", &format!("{}@bench", lab.root)]).ok();
    eprintln!(
        "created {count} datasets and a snapshot of each in {:?}",
        started.elapsed()
    );

    // labd did not make these: one change of its own makes it re-read the inventory.
    lab.labctl(&["dataset", "create", "trigger"]).ok();
    let deadline = Instant::now() + Duration::from_secs(120);
    let text = loop {
        let text = scrape(&lab);
        if series(&text, "labd_dataset_used_bytes") > count {
            break text;
        }
        assert!(Instant::now() < deadline, "the inventory was not refreshed");
        std::thread::sleep(Duration::from_millis(200));
    };
    if let Ok(path) = std::env::var("METRICS_DUMP") {
        std::fs::write(path, &text).expect("dump");
    }
    let refresh = value(&text, "labd_inventory_refresh_duration_seconds").unwrap_or(f64::NAN);

    scrape(&lab);
    let mut times: Vec<Duration> = (0..20)
        .map(|_| {
            let t = Instant::now();
            let body = scrape(&lab);
            let elapsed = t.elapsed();
            assert!(series(&body, "labd_dataset_used_bytes") > count);
            elapsed
        })
        .collect();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let median = times[times.len() / 2];
    let p95 = times[(times.len() * 95).div_ceil(100) - 1];

    let ticks: f64 = run("getconf", &["CLK_TCK"])
        .ok()
        .stdout
        .trim()
        .parse()
        .expect("CLK_TCK");
    let pid = lab.labd_pid();
    std::thread::sleep(Duration::from_secs(1));
    let idle = Duration::from_secs(10);
    let before = cpu_time(pid, ticks);
    std::thread::sleep(idle);
    let used = cpu_time(pid, ticks).saturating_sub(before);

    println!("datasets: {count} (+ {count} snapshots)");
    println!(
        "exposition: {} bytes, {} lines",
        text.len(),
        text.lines().count()
    );
    println!(
        "GET /metrics over the socket: median {:.2} ms, p95 {:.2} ms of 20 (target < 50 ms)",
        ms(median),
        ms(p95)
    );
    println!(
        "inventory refresh (zfs get -r + zpool list, off the scrape path): {:.1} ms",
        refresh * 1e3
    );
    println!(
        "labd CPU while idle: {:.0} ms over {} s = {:.2} ms/s (clock tick {:.0} ms)",
        ms(used),
        idle.as_secs(),
        ms(used) / idle.as_secs_f64(),
        1e3 / ticks
    );
}
