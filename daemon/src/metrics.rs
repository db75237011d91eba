//! Prometheus metrics: `GET /metrics` in the text exposition format 0.0.4, written by hand.
//!
//! Three sources feed it (docs/monitoring.md lists every metric):
//! - the inventory: pool and dataset figures read from ZFS by [`run`] (one `zpool list` and
//!   one `zfs get -Hp -r` over the root, datasets and snapshots together) at start, every
//!   `[metrics] refresh`, and soon after labd's own changes (debounced: at most one refresh
//!   a second). Each refresh renders its families to text once and swaps that in whole, so a
//!   scrape never waits on ZFS and costs the same with 10 or 10,000 datasets. The same
//!   refresh reads the VM list (`Core::list_vms`) into a [`VmTable`];
//! - the event bus, consumed by [`run`]: jobs by kind and outcome with their durations,
//!   policy runs, every event by kind, and the VM events folded into the [`VmTable`] (state
//!   changes at once, restarts, exits and crashes counted), rendered at scrape time from
//!   memory;
//! - direct calls: [`Metrics::observe_request`] from the API middleware, the MQTT counters.
//!
//! Nothing polls: between refreshes the task sleeps on the event bus and a timer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::{broadcast, watch};

use crate::core::Core;
use crate::host::zfs::{PoolRow, PropRow};
use crate::vmstate::{self, VmTable};
use crate::wire::{self, Event};

/// Upper bounds (seconds) of the API latency histogram buckets.
pub const API_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds (seconds) of the job duration histogram buckets.
pub const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Shortest time between two inventory refreshes caused by labd's own changes.
const MIN_REFRESH_GAP: Duration = Duration::from_secs(1);
/// How long a change waits for the rest of its burst before the inventory is re-read.
const SETTLE: Duration = Duration::from_millis(200);
/// Shortest periodic refresh interval honoured, whatever `[metrics] refresh` says.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Pool states always exposed by `labd_pool_health` (0 or 1), so alerts can match on them.
const POOL_STATES: &[&str] = &[
    "ONLINE",
    "DEGRADED",
    "FAULTED",
    "OFFLINE",
    "UNAVAIL",
    "REMOVED",
    "SUSPENDED",
];

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A histogram with fixed buckets; counts are per bucket, made cumulative when rendered.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the `+Inf` bucket last.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Record one observation.
    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    /// Append the `_bucket`, `_sum` and `_count` lines of one label set; `labels` is the
    /// rendered label list without braces (empty for none).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, n) in self.bounds.iter().zip(&self.counts) {
            cumulative += n;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                float(*bound)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", float(self.sum));
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Escape a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut s = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Escape a `# HELP` text: backslash and line feed.
pub fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value as Prometheus reads it (`+Inf`, `-Inf`, `NaN`, else the shortest decimal).
pub fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// Append the `# HELP` and `# TYPE` lines of a family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Unix time in seconds, with fractions.
fn unix_seconds(t: Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

/// API request figures of one route pattern.
#[derive(Debug)]
struct RouteStats {
    by_method_status: BTreeMap<(&'static str, u16), u64>,
    latency: Histogram,
}

/// Figures derived from the event bus.
#[derive(Debug, Default)]
struct EventStats {
    events: BTreeMap<String, u64>,
    jobs: BTreeMap<(String, String), u64>,
    job_durations: BTreeMap<String, Histogram>,
    policy_runs: BTreeMap<&'static str, u64>,
    policy_taken: u64,
    policy_destroyed: u64,
    policy_errors: u64,
    policy_last_duration: Option<f64>,
    policy_last_run: Option<Timestamp>,
    policy_last_success: Option<Timestamp>,
    lagged: u64,
}

/// Pool and dataset figures as of the last refresh, pre-rendered.
#[derive(Debug, Default)]
struct Inventory {
    /// `labd_pool_*` families (kept from the previous refresh if `zpool list` failed).
    pools: Arc<str>,
    /// `labd_dataset_*` families (kept from the previous refresh if `zfs get` failed).
    datasets: Arc<str>,
    /// When the last refresh finished.
    at: Option<Timestamp>,
    /// How long it took.
    duration: f64,
    /// Refreshes whose `zpool list` or `zfs get` failed.
    errors: u64,
    /// Refreshes done.
    refreshes: u64,
    /// CPU seconds of each running VM's hypervisor process, by VM name.
    vm_cpu: Arc<HashMap<String, f64>>,
}

/// labd's metrics.
#[derive(Debug)]
pub struct Metrics {
    api: Mutex<HashMap<String, RouteStats>>,
    events: Mutex<EventStats>,
    inventory: Mutex<Arc<Inventory>>,
    /// The VMs: the last list with the VM events since.
    vms: Mutex<VmTable>,
    mqtt_dropped: AtomicU64,
    mqtt_connected: AtomicBool,
    /// Failed or broken broker connections by reason (`mqtt::failure_reason`).
    mqtt_connect_failures: Mutex<BTreeMap<&'static str, u64>>,
    started: Timestamp,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            api: Mutex::default(),
            events: Mutex::default(),
            inventory: Mutex::default(),
            vms: Mutex::default(),
            mqtt_dropped: AtomicU64::new(0),
            mqtt_connected: AtomicBool::new(false),
            mqtt_connect_failures: Mutex::default(),
            started: Timestamp::now(),
        }
    }
}

/// The method as a label: the standard ones, else `other` (bounded cardinality).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

impl Metrics {
    /// Count one API request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = method_label(method);
        let mut api = lock(&self.api);
        let stats = match api.get_mut(route) {
            Some(s) => s,
            None => api.entry(route.to_owned()).or_insert_with(|| RouteStats {
                by_method_status: BTreeMap::new(),
                latency: Histogram::new(API_BUCKETS),
            }),
        };
        *stats.by_method_status.entry((method, status)).or_insert(0) += 1;
        stats.latency.observe(seconds);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        self.render_at(Timestamp::now())
    }

    /// The exposition text, with `now` for the figures computed at scrape time.
    fn render_at(&self, now: Timestamp) -> String {
        let inventory = Arc::clone(&lock(&self.inventory));
        let mut out =
            String::with_capacity(inventory.pools.len() + inventory.datasets.len() + 8192);

        header(
            &mut out,
            "labd_build_info",
            "gauge",
            "labd's version (always 1).",
        );
        let _ = writeln!(
            out,
            "labd_build_info{{version=\"{}\"}} 1",
            escape_label(env!("CARGO_PKG_VERSION"))
        );
        header(&mut out, "labd_up", "gauge", "labd is serving (always 1).");
        out.push_str("labd_up 1\n");
        header(
            &mut out,
            "labd_start_timestamp_seconds",
            "gauge",
            "When labd started, Unix time.",
        );
        let _ = writeln!(
            out,
            "labd_start_timestamp_seconds {}",
            float(unix_seconds(self.started))
        );

        out.push_str(&inventory.pools);
        out.push_str(&inventory.datasets);
        render_vms(&mut out, &lock(&self.vms), &self.inventory().vm_cpu);
        header(
            &mut out,
            "labd_inventory_refreshes_total",
            "counter",
            "Refreshes of the pool, dataset and VM figures from ZFS.",
        );
        let _ = writeln!(
            out,
            "labd_inventory_refreshes_total {}",
            inventory.refreshes
        );
        header(
            &mut out,
            "labd_inventory_refresh_errors_total",
            "counter",
            "Refreshes in which zpool list or a zfs get failed (the previous figures were kept).",
        );
        let _ = writeln!(
            out,
            "labd_inventory_refresh_errors_total {}",
            inventory.errors
        );
        if let Some(at) = inventory.at {
            header(
                &mut out,
                "labd_inventory_refresh_timestamp_seconds",
                "gauge",
                "When the pool and dataset figures were last read from ZFS, Unix time.",
            );
            let _ = writeln!(
                out,
                "labd_inventory_refresh_timestamp_seconds {}",
                float(unix_seconds(at))
            );
            header(
                &mut out,
                "labd_inventory_refresh_duration_seconds",
                "gauge",
                "How long the last refresh from ZFS took.",
            );
            let _ = writeln!(
                out,
                "labd_inventory_refresh_duration_seconds {}",
                float(inventory.duration)
            );
        }

        self.render_events(&mut out, now);
        self.render_api(&mut out);

        header(
            &mut out,
            "labd_mqtt_dropped_total",
            "counter",
            "MQTT messages dropped because the broker was away and the buffer was full.",
        );
        let _ = writeln!(
            out,
            "labd_mqtt_dropped_total {}",
            self.mqtt_dropped.load(Ordering::Relaxed)
        );
        header(
            &mut out,
            "labd_mqtt_connected",
            "gauge",
            "1 when labd is connected to its MQTT broker, else 0 (also when MQTT is off).",
        );
        let _ = writeln!(
            out,
            "labd_mqtt_connected {}",
            u8::from(self.mqtt_connected.load(Ordering::Relaxed))
        );
        header(
            &mut out,
            "labd_mqtt_connect_failures_total",
            "counter",
            "Failed or broken MQTT broker connections, by reason (tls_certificate, tls, \
             refused, network, protocol).",
        );
        for (reason, n) in lock(&self.mqtt_connect_failures).iter() {
            let _ = writeln!(
                out,
                "labd_mqtt_connect_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }

    fn render_events(&self, out: &mut String, now: Timestamp) {
        let ev = lock(&self.events);
        header(
            out,
            "labd_events_total",
            "counter",
            "Events published, by kind.",
        );
        for (kind, n) in &ev.events {
            let _ = writeln!(
                out,
                "labd_events_total{{kind=\"{}\"}} {n}",
                escape_label(kind)
            );
        }
        header(
            out,
            "labd_events_lagged_total",
            "counter",
            "Events the metrics task missed because it fell behind the event bus.",
        );
        let _ = writeln!(out, "labd_events_lagged_total {}", ev.lagged);
        header(
            out,
            "labd_jobs_total",
            "counter",
            "Finished jobs, by kind and outcome (succeeded, failed).",
        );
        for ((kind, outcome), n) in &ev.jobs {
            let _ = writeln!(
                out,
                "labd_jobs_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
                escape_label(kind),
                escape_label(outcome)
            );
        }
        header(
            out,
            "labd_job_duration_seconds",
            "histogram",
            "Time from a job getting its locks to its end, by kind.",
        );
        for (kind, h) in &ev.job_durations {
            h.render(
                out,
                "labd_job_duration_seconds",
                &format!("kind=\"{}\"", escape_label(kind)),
            );
        }
        header(
            out,
            "labd_policy_runs_total",
            "counter",
            "Policy runs, by outcome: succeeded, partial (some zfs commands failed), failed.",
        );
        for outcome in ["succeeded", "partial", "failed"] {
            let n = ev.policy_runs.get(outcome).copied().unwrap_or(0);
            let _ = writeln!(out, "labd_policy_runs_total{{outcome=\"{outcome}\"}} {n}");
        }
        for (name, help, n) in [
            (
                "labd_policy_snapshots_taken_total",
                "Snapshots taken by policy runs.",
                ev.policy_taken,
            ),
            (
                "labd_policy_snapshots_destroyed_total",
                "Snapshots destroyed by policy runs.",
                ev.policy_destroyed,
            ),
            (
                "labd_policy_errors_total",
                "Failed zfs commands in policy runs.",
                ev.policy_errors,
            ),
        ] {
            header(out, name, "counter", help);
            let _ = writeln!(out, "{name} {n}");
        }
        if let Some(d) = ev.policy_last_duration {
            header(
                out,
                "labd_policy_run_duration_seconds",
                "gauge",
                "How long the last finished policy run took.",
            );
            let _ = writeln!(out, "labd_policy_run_duration_seconds {}", float(d));
        }
        if let Some(t) = ev.policy_last_run {
            header(
                out,
                "labd_policy_last_run_timestamp_seconds",
                "gauge",
                "When the last policy run finished, Unix time.",
            );
            let _ = writeln!(
                out,
                "labd_policy_last_run_timestamp_seconds {}",
                float(unix_seconds(t))
            );
        }
        if let Some(t) = ev.policy_last_success {
            header(
                out,
                "labd_policy_last_success_timestamp_seconds",
                "gauge",
                "When the last policy run without errors finished, Unix time.",
            );
            let _ = writeln!(
                out,
                "labd_policy_last_success_timestamp_seconds {}",
                float(unix_seconds(t))
            );
            header(
                out,
                "labd_policy_lag_seconds",
                "gauge",
                "Seconds since the last policy run without errors finished.",
            );
            let lag = (now.as_millisecond() - t.as_millisecond()).max(0);
            let _ = writeln!(
                out,
                "labd_policy_lag_seconds {}",
                float(lag as f64 / 1000.0)
            );
        }
    }

    fn render_api(&self, out: &mut String) {
        let api = lock(&self.api);
        let mut routes: Vec<(&String, &RouteStats)> = api.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        header(
            out,
            "labd_api_requests_total",
            "counter",
            "API requests answered, by method, route pattern and status code.",
        );
        for (route, stats) in &routes {
            let route = escape_label(route);
            for ((method, status), n) in &stats.by_method_status {
                let _ = writeln!(
                    out,
                    "labd_api_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        header(
            out,
            "labd_api_request_duration_seconds",
            "histogram",
            "Time to answer an API request, by route pattern (event streams: until the headers).",
        );
        for (route, stats) in &routes {
            stats.latency.render(
                out,
                "labd_api_request_duration_seconds",
                &format!("route=\"{}\"", escape_label(route)),
            );
        }
    }

    /// Count MQTT messages dropped.
    pub fn mqtt_dropped(&self, n: u64) {
        self.mqtt_dropped.fetch_add(n, Ordering::Relaxed);
    }

    /// Count a failed or broken MQTT connection.
    pub fn mqtt_connect_failed(&self, reason: &'static str) {
        *lock(&self.mqtt_connect_failures).entry(reason).or_default() += 1;
    }

    /// Record whether the MQTT broker is connected.
    pub fn set_mqtt_connected(&self, connected: bool) {
        self.mqtt_connected.store(connected, Ordering::Relaxed);
    }

    /// Count one event from the bus (jobs, policy runs, events by kind, VMs).
    fn observe_event(&self, event: &Event) {
        if event.kind.starts_with("vm.") || event.kind == "job.started" {
            lock(&self.vms).apply(event);
        }
        let data = &event.data;
        let mut ev = lock(&self.events);
        match ev.events.get_mut(&event.kind) {
            Some(n) => *n += 1,
            None => {
                ev.events.insert(event.kind.clone(), 1);
            }
        }
        match event.kind.as_str() {
            "job.finished" => {
                let kind = data["kind"].as_str().unwrap_or("unknown").to_owned();
                let state = data["state"].as_str().unwrap_or("unknown").to_owned();
                if kind == "policy.run" && state == "failed" {
                    *ev.policy_runs.entry("failed").or_insert(0) += 1;
                }
                if let Some(ms) = data["duration_ms"].as_f64() {
                    ev.job_durations
                        .entry(kind.clone())
                        .or_insert_with(|| Histogram::new(JOB_BUCKETS))
                        .observe(ms / 1000.0);
                }
                *ev.jobs.entry((kind, state)).or_insert(0) += 1;
            }
            "policy.run.finished" => {
                let errors = count(&data["errors"]);
                let outcome = if errors == 0 { "succeeded" } else { "partial" };
                *ev.policy_runs.entry(outcome).or_insert(0) += 1;
                ev.policy_taken += count(&data["taken"]);
                ev.policy_destroyed += count(&data["destroyed"]);
                ev.policy_errors += errors;
                ev.policy_last_duration = data["duration_ms"].as_f64().map(|ms| ms / 1000.0);
                ev.policy_last_run = Some(event.time);
                if errors == 0 {
                    ev.policy_last_success = Some(event.time);
                }
            }
            _ => {}
        }
    }

    fn lagged(&self, missed: u64) {
        lock(&self.events).lagged += missed;
        lock(&self.vms).forget_events();
    }

    fn swap_inventory(&self, inventory: Inventory) {
        *lock(&self.inventory) = Arc::new(inventory);
    }

    fn inventory(&self) -> Arc<Inventory> {
        Arc::clone(&lock(&self.inventory))
    }
}

/// A count given as a number or as an array of names.
fn count(v: &serde_json::Value) -> u64 {
    match v.as_array() {
        Some(a) => u64::try_from(a.len()).unwrap_or(u64::MAX),
        None => v.as_u64().unwrap_or(0),
    }
}

/// Whether an event means the pool, dataset or VM figures changed.
fn changes_inventory(kind: &str) -> bool {
    kind.starts_with("dataset.")
        || kind.starts_with("snapshot.")
        || matches!(
            kind,
            "policy.run.finished"
                | "config.reloaded"
                | "vm.created"
                | "vm.destroyed"
                // The new process's CPU time is read with the inventory.
                | "vm.started"
        )
}

/// Render the `labd_pool_*` families.
fn render_pools(pools: &[PoolRow]) -> String {
    let mut out = String::new();
    type Get = fn(&PoolRow) -> u64;
    let families: [(&str, &str, Get); 3] = [
        (
            "labd_pool_size_bytes",
            "Pool size (zpool list size).",
            |p| p.size,
        ),
        (
            "labd_pool_allocated_bytes",
            "Bytes allocated in the pool (zpool list allocated).",
            |p| p.allocated,
        ),
        (
            "labd_pool_free_bytes",
            "Bytes free in the pool (zpool list free).",
            |p| p.free,
        ),
    ];
    for (name, help, get) in families {
        header(&mut out, name, "gauge", help);
        for p in pools {
            let _ = writeln!(
                out,
                "{name}{{pool=\"{}\"}} {}",
                escape_label(&p.name),
                get(p)
            );
        }
    }
    header(
        &mut out,
        "labd_pool_health",
        "gauge",
        "1 for the pool's health state (zpool list), 0 for the others.",
    );
    for p in pools {
        let pool = escape_label(&p.name);
        for state in POOL_STATES {
            let v = u8::from(p.health == *state);
            let _ = writeln!(
                out,
                "labd_pool_health{{pool=\"{pool}\",state=\"{state}\"}} {v}"
            );
        }
        if !POOL_STATES.contains(&p.health.as_str()) {
            let _ = writeln!(
                out,
                "labd_pool_health{{pool=\"{pool}\",state=\"{}\"}} 1",
                escape_label(&p.health)
            );
        }
    }
    out
}

/// One dataset's figures.
#[derive(Debug, Default)]
struct DatasetFigures {
    used: Option<u64>,
    available: Option<u64>,
    referenced: Option<u64>,
    managed: bool,
    snapshots: u64,
}

/// Properties read for the inventory, with the snapshots in the same command.
const INVENTORY_PROPERTIES: &str = "used,available,referenced,labd:managed";

/// Render the `labd_dataset_*` families from `zfs get` rows of datasets and snapshots.
fn render_datasets(rows: &[PropRow]) -> String {
    let mut datasets: BTreeMap<&str, DatasetFigures> = BTreeMap::new();
    for row in rows {
        if let Some((ds, _)) = row.name.split_once('@') {
            // One row per property of each snapshot: count it once.
            if row.property == "used" {
                datasets.entry(ds).or_default().snapshots += 1;
            }
            continue;
        }
        let d = datasets.entry(row.name.as_str()).or_default();
        match row.property.as_str() {
            "used" => d.used = row.value.parse().ok(),
            "available" => d.available = row.value.parse().ok(),
            "referenced" => d.referenced = row.value.parse().ok(),
            "labd:managed" => d.managed = row.value == "on",
            _ => {}
        }
    }
    let labels: Vec<(String, &DatasetFigures)> = datasets
        .iter()
        .map(|(name, d)| (escape_label(name), d))
        .collect();
    let mut out = String::with_capacity(labels.len() * 400);
    type Get = fn(&DatasetFigures) -> Option<u64>;
    let families: [(&str, &str, &str, Get); 5] = [
        (
            "labd_dataset_used_bytes",
            "gauge",
            "Bytes used by the dataset and its descendants and snapshots (zfs used).",
            |d| d.used,
        ),
        (
            "labd_dataset_available_bytes",
            "gauge",
            "Bytes available to the dataset (zfs available).",
            |d| d.available,
        ),
        (
            "labd_dataset_referenced_bytes",
            "gauge",
            "Bytes referenced by the dataset (zfs referenced).",
            |d| d.referenced,
        ),
        (
            "labd_dataset_snapshots",
            "gauge",
            "Snapshots of the dataset (not of its descendants).",
            |d| Some(d.snapshots),
        ),
        (
            "labd_dataset_managed",
            "gauge",
            "1 when labd created the dataset (labd:managed=on), else 0.",
            |d| Some(u64::from(d.managed)),
        ),
    ];
    for (name, kind, help, get) in families {
        header(&mut out, name, kind, help);
        for (label, d) in &labels {
            if let Some(v) = get(d) {
                let _ = writeln!(out, "{name}{{dataset=\"{label}\"}} {v}");
            }
        }
    }
    out
}

/// Append the `labd_vm_*` families: a few series per VM, whose state and counters are
/// bounded sets ([`vmstate::STATES`], [`vmstate::MEANINGS`]), so cardinality grows with the
/// number of VMs only.
fn render_vms(out: &mut String, table: &VmTable, cpu: &HashMap<String, f64>) {
    let vms: Vec<(String, &vmstate::VmView)> =
        table.iter().map(|v| (escape_label(&v.name), v)).collect();
    header(
        out,
        "labd_vm_info",
        "gauge",
        "A VM labd knows (always 1); its template and uuid are in the labels.",
    );
    for (vm, v) in &vms {
        let _ = writeln!(
            out,
            "labd_vm_info{{vm=\"{vm}\",template=\"{}\",uuid=\"{}\"}} 1",
            escape_label(&v.template),
            escape_label(v.uuid.as_deref().unwrap_or_default())
        );
    }
    header(
        out,
        "labd_vm_state",
        "gauge",
        "1 for the VM's state (running, stopping, restarting, stopped, crashed, broken), 0 for the others.",
    );
    for (vm, v) in &vms {
        for state in vmstate::STATES {
            let on = u8::from(v.state == *state);
            let _ = writeln!(out, "labd_vm_state{{vm=\"{vm}\",state=\"{state}\"}} {on}");
        }
        if !vmstate::STATES.contains(&v.state.as_str()) {
            let _ = writeln!(
                out,
                "labd_vm_state{{vm=\"{vm}\",state=\"{}\"}} 1",
                escape_label(&v.state)
            );
        }
    }
    type Get = fn(&vmstate::VmView) -> Option<String>;
    let families: [(&str, &str, &str, Get); 6] = [
        (
            "labd_vm_up",
            "gauge",
            "1 while the VM's hypervisor runs (state running or stopping), else 0.",
            |v| Some(u8::from(v.up()).to_string()),
        ),
        ("labd_vm_cpus", "gauge", "vCPUs of the VM (vm.toml).", |v| {
            v.cpus.map(|n| n.to_string())
        }),
        (
            "labd_vm_memory_bytes",
            "gauge",
            "Memory of the VM (vm.toml).",
            |v| v.memory.map(|n| n.to_string()),
        ),
        (
            "labd_vm_restarts_total",
            "counter",
            "Restarts of the VM by labd's supervisor (reboots and restarts after a failure).",
            |v| Some(v.restarts_total.to_string()),
        ),
        (
            "labd_vm_crashes_total",
            "counter",
            "Times the supervisor gave up on the VM (state crashed: the crash-loop limit, a fault under restart = never, a failed restart).",
            |v| Some(v.crashes_total.to_string()),
        ),
        (
            "labd_vm_start_timestamp_seconds",
            "gauge",
            "When labd last started the VM's hypervisor (restarts included), Unix time.",
            |v| v.started_at.map(|t| float(unix_seconds(t))),
        ),
    ];
    for (name, kind, help, get) in families {
        header(out, name, kind, help);
        for (vm, v) in &vms {
            if let Some(value) = get(v) {
                let _ = writeln!(out, "{name}{{vm=\"{vm}\"}} {value}");
            }
        }
    }
    header(
        out,
        "labd_vm_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of the VM's hypervisor process as of the last inventory refresh; starts again at 0 with each run.",
    );
    for (vm, v) in &vms {
        if let Some(seconds) = cpu.get(&v.name).filter(|_| v.up()) {
            let _ = writeln!(
                out,
                "labd_vm_cpu_seconds_total{{vm=\"{vm}\"}} {}",
                float(*seconds)
            );
        }
    }
    header(
        out,
        "labd_vm_exits_total",
        "counter",
        "Ended runs of the VM's hypervisor, by what the end meant (poweroff, reboot, halt, fault, unknown).",
    );
    for (vm, v) in &vms {
        for (meaning, n) in vmstate::MEANINGS.iter().zip(v.exits_total) {
            let _ = writeln!(
                out,
                "labd_vm_exits_total{{vm=\"{vm}\",meaning=\"{meaning}\"}} {n}"
            );
        }
    }
}

/// Read the pools, datasets and VMs from ZFS and build the next inventory from the last one;
/// the VM list is handed back for the [`VmTable`] (`None` when it could not be read).
async fn refresh(core: &Core, previous: &Inventory) -> (Inventory, Option<Vec<wire::Vm>>) {
    let started = Instant::now();
    let host = core.host();
    let (pools, rows, vms) = tokio::join!(
        host.zfs.pools(),
        host.zfs
            .get_with_snapshots(&host.config.zfs.root, INVENTORY_PROPERTIES, true),
        core.list_vms()
    );
    let mut failed = false;
    let pools = match pools {
        Ok(p) => Arc::from(render_pools(&p)),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the pools");
            failed = true;
            Arc::clone(&previous.pools)
        }
    };
    let datasets = match rows {
        Ok(r) => Arc::from(render_datasets(&r)),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read the datasets");
            failed = true;
            Arc::clone(&previous.datasets)
        }
    };
    let vms = match vms {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot list the VMs");
            failed = true;
            None
        }
    };
    let running: Vec<(&str, u32)> = vms
        .iter()
        .flatten()
        .filter_map(|v| v.pid.map(|p| (v.name.as_str(), p)))
        .collect();
    let pids: Vec<u32> = running.iter().map(|(_, p)| *p).collect();
    let by_pid = crate::host::procstat::cpu_seconds(&pids).await;
    let vm_cpu = running
        .iter()
        .filter_map(|(name, pid)| by_pid.get(pid).map(|s| ((*name).to_owned(), *s)))
        .collect();
    let inventory = Inventory {
        pools,
        datasets,
        at: Some(Timestamp::now()),
        duration: started.elapsed().as_secs_f64(),
        errors: previous.errors + u64::from(failed),
        refreshes: previous.refreshes + 1,
        vm_cpu: Arc::new(vm_cpu),
    };
    (inventory, vms)
}

/// A refresh in progress.
type Refresh = std::pin::Pin<Box<dyn Future<Output = (Inventory, Option<Vec<wire::Vm>>)> + Send>>;

/// Keep the figures fresh until `stop`.
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut events = core.events.subscribe();
    let metrics = &core.metrics;
    // When the next refresh is due, and when the last one started.
    let mut due = tokio::time::Instant::now();
    let mut last_start: Option<tokio::time::Instant> = None;
    // A change was seen since the running refresh started.
    let mut dirty = false;
    let mut running: Option<Refresh> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            (inventory, vms) = async {
                match running.as_mut() {
                    Some(refresh) => refresh.await,
                    None => std::future::pending().await,
                }
            } => {
                running = None;
                metrics.swap_inventory(inventory);
                lock(&metrics.vms).finish_resync(vms);
                let interval = core.host().config.metrics.refresh.max(MIN_INTERVAL);
                let periodic = last_start.unwrap_or_else(tokio::time::Instant::now) + interval;
                due = if dirty { soon(last_start).min(periodic) } else { periodic };
                dirty = false;
            }
            received = events.recv() => match received {
                Ok(event) => {
                    metrics.observe_event(&event);
                    if changes_inventory(&event.kind) {
                        if running.is_none() {
                            due = due.min(soon(last_start));
                        } else {
                            dirty = true;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    metrics.lagged(missed);
                    if running.is_none() {
                        due = due.min(soon(last_start));
                    } else {
                        dirty = true;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = tokio::time::sleep_until(due), if running.is_none() => {
                last_start = Some(tokio::time::Instant::now());
                // VMs created or destroyed from now on are replayed over the list read.
                lock(&metrics.vms).begin_resync();
                let core = Arc::clone(&core);
                let previous = metrics.inventory();
                running = Some(Box::pin(async move { refresh(&core, &previous).await }));
            }
        }
    }
}

/// When a refresh caused by a change may start: after the burst settles, and not sooner
/// than [`MIN_REFRESH_GAP`] after the last one started.
fn soon(last_start: Option<tokio::time::Instant>) -> tokio::time::Instant {
    let settled = tokio::time::Instant::now() + SETTLE;
    match last_start {
        Some(t) => settled.max(t + MIN_REFRESH_GAP),
        None => settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("two\nlines"), "two\\nlines");
        assert_eq!(escape_label("tank/labd/photos"), "tank/labd/photos");
        assert_eq!(escape_help("a \\ \"b\"\nc"), "a \\\\ \"b\"\\nc");
    }

    #[test]
    fn floats_are_written_as_prometheus_reads_them() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.005), "0.005");
        assert_eq!(float(1.0), "1");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        static BOUNDS: &[f64] = &[0.1, 1.0];
        let mut h = Histogram::new(BOUNDS);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "route=\"/v1\"");
        assert_eq!(
            out,
            "x_seconds_bucket{route=\"/v1\",le=\"0.1\"} 2\n\
             x_seconds_bucket{route=\"/v1\",le=\"1\"} 3\n\
             x_seconds_bucket{route=\"/v1\",le=\"+Inf\"} 4\n\
             x_seconds_sum{route=\"/v1\"} 3.65\n\
             x_seconds_count{route=\"/v1\"} 4\n"
        );
        let mut bare = String::new();
        Histogram::new(BOUNDS).render(&mut bare, "y", "");
        assert!(bare.starts_with("y_bucket{le=\"0.1\"} 0\n"), "{bare}");
        assert!(bare.ends_with("y_sum 0\ny_count 0\n"), "{bare}");
    }

    fn event(kind: &str, data: serde_json::Value) -> Event {
        Event {
            seq: 1,
            time: Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH),
            kind: kind.to_owned(),
            resource: "tank/labd".to_owned(),
            actor: None,
            data,
        }
    }

    #[test]
    fn requests_jobs_and_policy_runs_are_counted() {
        let m = Metrics::default();
        m.observe_request("GET", "/v1/datasets", 200, 0.003);
        m.observe_request("GET", "/v1/datasets", 200, 0.2);
        m.observe_request("BREW", "unmatched", 404, 0.0001);
        m.observe_event(&event(
            "job.finished",
            serde_json::json!({"kind": "dataset.create", "state": "succeeded", "duration_ms": 12.5}),
        ));
        m.observe_event(&event(
            "policy.run.finished",
            serde_json::json!({"taken": 3, "destroyed": 1, "errors": [], "duration_ms": 40}),
        ));
        m.mqtt_dropped(2);
        m.mqtt_connect_failed("tls_certificate");
        m.mqtt_connect_failed("tls_certificate");
        let now = Timestamp::from_second(1_700_000_010).unwrap_or(Timestamp::UNIX_EPOCH);
        let text = m.render_at(now);
        for line in [
            "labd_api_requests_total{method=\"GET\",route=\"/v1/datasets\",status=\"200\"} 2",
            "labd_api_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1",
            "labd_api_request_duration_seconds_bucket{route=\"/v1/datasets\",le=\"0.005\"} 1",
            "labd_api_request_duration_seconds_count{route=\"/v1/datasets\"} 2",
            "labd_jobs_total{kind=\"dataset.create\",outcome=\"succeeded\"} 1",
            "labd_job_duration_seconds_bucket{kind=\"dataset.create\",le=\"0.01\"} 0",
            "labd_job_duration_seconds_bucket{kind=\"dataset.create\",le=\"0.05\"} 1",
            "labd_events_total{kind=\"job.finished\"} 1",
            "labd_policy_runs_total{outcome=\"succeeded\"} 1",
            "labd_policy_snapshots_taken_total 3",
            "labd_policy_snapshots_destroyed_total 1",
            "labd_policy_run_duration_seconds 0.04",
            "labd_policy_last_success_timestamp_seconds 1700000000",
            "labd_policy_lag_seconds 10",
            "labd_mqtt_dropped_total 2",
            "labd_mqtt_connected 0",
            "labd_mqtt_connect_failures_total{reason=\"tls_certificate\"} 2",
            "labd_up 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Every family is introduced once, with HELP before TYPE.
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(types.len(), unique.len());
    }

    #[test]
    fn vm_families_follow_the_events() {
        let m = Metrics::default();
        let at = |s| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        let vm_event = |kind: &str, vm: &str, time, data| Event {
            seq: 1,
            time: at(time),
            kind: kind.to_owned(),
            resource: vm.to_owned(),
            actor: None,
            data,
        };
        m.observe_event(&vm_event(
            "vm.created",
            "we\"b",
            1_700_000_000,
            serde_json::json!({"uuid": "u1", "template": "tiny"}),
        ));
        m.observe_event(&vm_event(
            "vm.started",
            "we\"b",
            1_700_000_005,
            serde_json::json!({"pid": 9}),
        ));
        m.observe_event(&vm_event(
            "vm.exited",
            "we\"b",
            1_700_000_006,
            serde_json::json!({"meaning": "fault"}),
        ));
        m.observe_event(&vm_event(
            "vm.restarting",
            "we\"b",
            1_700_000_006,
            serde_json::json!({"meaning": "fault", "delay_ms": 2000, "attempt": 1}),
        ));
        m.observe_event(&vm_event(
            "vm.created",
            "db",
            1_700_000_007,
            serde_json::json!({}),
        ));
        let text = m.render();
        for line in [
            "labd_vm_info{vm=\"we\\\"b\",template=\"tiny\",uuid=\"u1\"} 1",
            "labd_vm_info{vm=\"db\",template=\"\",uuid=\"\"} 1",
            "labd_vm_state{vm=\"we\\\"b\",state=\"restarting\"} 1",
            "labd_vm_state{vm=\"we\\\"b\",state=\"running\"} 0",
            "labd_vm_state{vm=\"db\",state=\"stopped\"} 1",
            "labd_vm_up{vm=\"we\\\"b\"} 0",
            "labd_vm_restarts_total{vm=\"we\\\"b\"} 1",
            "labd_vm_exits_total{vm=\"we\\\"b\",meaning=\"fault\"} 1",
            "labd_vm_exits_total{vm=\"we\\\"b\",meaning=\"poweroff\"} 0",
            "labd_vm_exits_total{vm=\"db\",meaning=\"fault\"} 0",
            "labd_vm_crashes_total{vm=\"db\"} 0",
            "labd_vm_start_timestamp_seconds{vm=\"we\\\"b\"} 1700000005",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // Unknown until the list says: no series rather than a wrong one.
        assert!(!text.contains("labd_vm_cpus{"), "{text}");
        assert!(!text.contains("labd_vm_start_timestamp_seconds{vm=\"db\"}"));
        let series = |t: &str| t.lines().filter(|l| l.starts_with("labd_vm_")).count();
        // info, 6 states, up, restarts, crashes, start, 5 exits; db has no start time.
        assert_eq!(series(&text), 2 * 16 - 1, "{text}");

        // A destroyed VM's series go, counters included.
        m.observe_event(&vm_event(
            "vm.destroyed",
            "we\"b",
            1_700_000_009,
            serde_json::json!({}),
        ));
        let text = m.render();
        assert!(!text.contains("we\\\"b"), "{text}");
        assert_eq!(series(&text), 15, "{text}");
    }

    #[test]
    fn inventory_families_come_from_one_zfs_get() {
        let rows = [
            PropRow::new("tank/labd", "used", "300", "-"),
            PropRow::new("tank/labd", "available", "1000", "-"),
            PropRow::new("tank/labd", "referenced", "24", "-"),
            PropRow::new("tank/labd", "labd:managed", "-", "-"),
            PropRow::new("tank/labd@a", "used", "0", "-"),
            PropRow::new("tank/labd@a", "available", "-", "-"),
            PropRow::new("tank/labd/x\"y", "used", "100", "-"),
            PropRow::new("tank/labd/x\"y", "labd:managed", "on", "local"),
            PropRow::new("tank/labd/x\"y@1", "used", "0", "-"),
            PropRow::new("tank/labd/x\"y@2", "used", "0", "-"),
        ];
        let text = render_datasets(&rows);
        for line in [
            "labd_dataset_used_bytes{dataset=\"tank/labd\"} 300",
            "labd_dataset_available_bytes{dataset=\"tank/labd\"} 1000",
            "labd_dataset_snapshots{dataset=\"tank/labd\"} 1",
            "labd_dataset_snapshots{dataset=\"tank/labd/x\\\"y\"} 2",
            "labd_dataset_managed{dataset=\"tank/labd\"} 0",
            "labd_dataset_managed{dataset=\"tank/labd/x\\\"y\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let pools = render_pools(&[PoolRow {
            name: "tank".into(),
            size: 100,
            allocated: 40,
            free: 60,
            capacity: 40,
            health: "ONLINE".into(),
        }]);
        assert!(pools.contains("labd_pool_health{pool=\"tank\",state=\"ONLINE\"} 1\n"));
        assert!(pools.contains("labd_pool_health{pool=\"tank\",state=\"DEGRADED\"} 0\n"));
        assert!(pools.contains("labd_pool_free_bytes{pool=\"tank\"} 60\n"));
    }
}
