//! `GET /metrics` on the socket and on `[metrics] listen`: valid exposition text (checked by
//! `promtool check metrics`), figures that match what `zfs` says, and counters that follow
//! the jobs, policy runs and requests labd served.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, run};

/// A free loopback port (bound, then released for labd to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `GET /metrics` over labd's socket; returns the content type and the body.
pub(super) fn scrape_socket(lab: &Lab) -> (String, String) {
    let socket = lab.socket.display().to_string();
    let out = run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--unix-socket",
            &socket,
            "-w",
            "\n%{content_type}",
            "http://labd/metrics",
        ],
    )
    .ok();
    let (body, content_type) = out.stdout.rsplit_once('\n').expect("content type line");
    (content_type.to_owned(), body.to_owned())
}

/// `GET` over plain TCP; returns the HTTP status and the body.
fn get_tcp(port: u16, path: &str) -> (String, String) {
    let out = run(
        "curl",
        &[
            "-sS",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}{path}"),
        ],
    )
    .ok();
    let (body, code) = out.stdout.rsplit_once('\n').expect("status line");
    (code.to_owned(), body.to_owned())
}

/// Validate a whole exposition with `promtool check metrics` (format and naming lint).
#[track_caller]
pub(super) fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- text ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of one series (`name{labels}` exactly as rendered), if present.
pub(super) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// Scrape the socket until `pred` holds for the text, or panic after `timeout`.
#[track_caller]
pub(super) fn scrape_until(
    lab: &Lab,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, text) = scrape_socket(lab);
        if pred(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {timeout:?}\n--- last scrape ---\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn snapshot_count(lab: &Lab, ds: &str) -> usize {
    lab.zfs(&[
        "list", "-H", "-t", "snapshot", "-o", "name", "-r", "-d", "1", ds,
    ])
    .ok()
    .stdout
    .lines()
    .filter(|l| l.split_once('@').is_some_and(|(d, _)| d == ds))
    .count()
}

#[test]
fn metrics_follow_zfs_jobs_policies_and_requests() {
    let port = free_port();
    // A periodic refresh far away: every figure seen below comes from the refreshes labd's
    // own changes cause.
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\nrefresh = \"1h\"\n\n\
             [schedule]\nenabled = false\nclock_file = \"{{dir}}/clock\"\n\n\
             [policies.hourly]\nhourly = 3\nmin_keep = 1\n"
        ),
        ..LabOptions::default()
    });
    let l = |args: &[&str]| lab.labctl(args).ok();

    // The first refresh (at start) already lists the root.
    let root_used = format!("labd_dataset_used_bytes{{dataset=\"{}\"}}", lab.root);
    scrape_until(&lab, Duration::from_secs(10), "first refresh", |t| {
        value(t, &root_used).is_some()
    });

    l(&["dataset", "create", "photos", "-o", "policy=hourly"]);
    l(&["dataset", "create", "music", "-o", "quota=64M"]);
    l(&["dataset", "create", "scratch"]);
    l(&["dataset", "snapshot", "music", "--name", "one"]);
    l(&["dataset", "snapshot", "music", "--name", "two"]);
    l(&["dataset", "snapshot", "scratch", "--name", "gone"]);
    l(&["dataset", "destroy", "scratch@gone"]);
    // A job that fails: the dataset exists.
    lab.labctl(&["dataset", "create", "scratch"]);
    std::fs::write(lab.dir.join("clock"), "2026-11-25T19:00:00Z").expect("clock");
    let job = l(&["--output", "json", "policy", "run"]).json();
    assert_eq!(job["state"], "succeeded", "{job}");
    let taken = job["result"]["taken"].as_array().map_or(0, Vec::len);
    assert!(taken >= 1, "{job}");

    // Figures equal zfs's own once the refresh after the last change is in.
    let datasets = [
        lab.root.clone(),
        lab.ds("photos"),
        lab.ds("music"),
        lab.ds("scratch"),
    ];
    let expected = |text: &str| {
        datasets.iter().all(|ds| {
            let series = |m: &str| format!("{m}{{dataset=\"{ds}\"}}");
            let num = |p: &str| lab.prop(ds, p).parse::<f64>().ok();
            value(text, &series("labd_dataset_used_bytes")) == num("used")
                && value(text, &series("labd_dataset_available_bytes")) == num("available")
                && value(text, &series("labd_dataset_referenced_bytes")) == num("referenced")
                && value(text, &series("labd_dataset_snapshots"))
                    == u32::try_from(snapshot_count(&lab, ds)).ok().map(f64::from)
        })
    };
    let text = scrape_until(
        &lab,
        Duration::from_secs(15),
        "figures equal to zfs",
        expected,
    );
    let series = |m: &str, ds: &str| format!("{m}{{dataset=\"{}\"}}", lab.ds(ds));
    assert_eq!(
        value(&text, &series("labd_dataset_snapshots", "music")),
        Some(2.0)
    );
    assert_eq!(
        value(&text, &series("labd_dataset_snapshots", "scratch")),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &series("labd_dataset_snapshots", "photos")),
        Some(1.0)
    );
    assert_eq!(
        value(&text, &series("labd_dataset_managed", "music")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("labd_dataset_managed{{dataset=\"{}\"}}", lab.root)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, &series("labd_dataset_available_bytes", "music")),
        lab.prop(&lab.ds("music"), "available").parse().ok()
    );

    // Pool figures and health.
    let pool = |m: &str| format!("{m}{{pool=\"{}\"}}", lab.pool);
    let size = value(&text, &pool("labd_pool_size_bytes")).expect("pool size");
    let alloc = value(&text, &pool("labd_pool_allocated_bytes")).expect("pool allocated");
    let free = value(&text, &pool("labd_pool_free_bytes")).expect("pool free");
    assert!(size > 0.0 && alloc > 0.0 && free > 0.0 && alloc + free <= size * 1.01);
    assert_eq!(
        value(
            &text,
            &format!("labd_pool_health{{pool=\"{}\",state=\"ONLINE\"}}", lab.pool)
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "labd_pool_health{{pool=\"{}\",state=\"FAULTED\"}}",
                lab.pool
            )
        ),
        Some(0.0)
    );

    // Jobs, policy runs, events and requests (the counters follow the event bus).
    let text = scrape_until(&lab, Duration::from_secs(10), "job counters", |t| {
        value(
            t,
            "labd_jobs_total{kind=\"policy.run\",outcome=\"succeeded\"}",
        ) == Some(1.0)
    });
    let at_least = |series: &str, n: f64| {
        let v = value(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"));
        assert!(v >= n, "{series} = {v}, expected >= {n}");
    };
    at_least(
        "labd_jobs_total{kind=\"dataset.create\",outcome=\"succeeded\"}",
        3.0,
    );
    at_least(
        "labd_jobs_total{kind=\"dataset.create\",outcome=\"failed\"}",
        1.0,
    );
    at_least(
        "labd_jobs_total{kind=\"snapshot.create\",outcome=\"succeeded\"}",
        3.0,
    );
    at_least(
        "labd_job_duration_seconds_count{kind=\"dataset.create\"}",
        4.0,
    );
    at_least(
        "labd_job_duration_seconds_bucket{kind=\"dataset.create\",le=\"+Inf\"}",
        4.0,
    );
    at_least("labd_events_total{kind=\"dataset.created\"}", 3.0);
    at_least("labd_events_total{kind=\"snapshot.destroyed\"}", 1.0);
    at_least("labd_policy_runs_total{outcome=\"succeeded\"}", 1.0);
    at_least("labd_policy_snapshots_taken_total", 1.0);
    at_least("labd_policy_run_duration_seconds", 0.0);
    at_least("labd_policy_lag_seconds", 0.0);
    let last = value(&text, "labd_policy_last_success_timestamp_seconds").expect("last success");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(last <= now + 1.0 && now - last < 120.0, "{last} vs {now}");
    at_least(
        "labd_api_requests_total{method=\"POST\",route=\"/v1/datasets\",status=\"202\"}",
        3.0,
    );
    at_least(
        "labd_api_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}",
        1.0,
    );
    at_least(
        "labd_api_request_duration_seconds_count{route=\"/v1/datasets\"}",
        4.0,
    );
    assert_eq!(value(&text, "labd_up"), Some(1.0));
    assert_eq!(value(&text, "labd_mqtt_dropped_total"), Some(0.0));
    assert!(
        text.contains(&format!(
            "labd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );

    // The socket's exposition is valid and says so.
    let (content_type, text) = scrape_socket(&lab);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    promtool_check(&text);

    // The same figures over TCP, and nothing but /metrics there.
    let (code, tcp) = get_tcp(port, "/metrics");
    assert_eq!(code, "200");
    promtool_check(&tcp);
    let music = series("labd_dataset_used_bytes", "music");
    assert_eq!(value(&tcp, &music), value(&text, &music));
    let (code, _) = get_tcp(port, "/v1/datasets");
    assert_eq!(code, "404", "the TCP listener serves only /metrics");

    // A destroyed dataset leaves the figures at the next refresh.
    l(&["dataset", "destroy", "scratch"]);
    let scratch = series("labd_dataset_used_bytes", "scratch");
    scrape_until(
        &lab,
        Duration::from_secs(10),
        "destroyed dataset gone",
        |t| value(t, &scratch).is_none(),
    );
}
