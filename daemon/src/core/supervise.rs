//! The VM supervisor: labd is the hypervisor's parent and keeps each started VM under watch
//! until it is stopped for good.
//!
//! One task per VM (`watch_vm`) owns the hypervisor process and decides what happens when it
//! ends, for both drivers alike (bhyve's exit status and QEMU's QMP `SHUTDOWN` reason both map
//! to an [`ExitMeaning`]):
//!
//! | the run ended in    | restart policy `never` | `on-failure`        | `always`            |
//! |---------------------|------------------------|---------------------|---------------------|
//! | reboot              | started again at once  | at once             | at once             |
//! | poweroff, halt      | stopped                | stopped             | again, with backoff |
//! | fault (crash, kill) | crashed                | again, with backoff | again, with backoff |
//!
//! Backoff doubles from `[vms] restart_backoff` and a run of [`RestartRules::STABLE`] resets
//! it; after `[vms] restart_limit` failed runs in a row the VM is left `crashed` with the
//! reason (no endless crash loop). A stop request wins over everything: the ACPI power button
//! (QMP `system_powerdown`), the spec's `stop_timeout`, then SIGKILL.
//!
//! Each run records `run.json` (pid, uuid, driver) in the VM's directory. The hypervisor runs
//! in its own process group and outlives labd: when labd restarts, [`adopt`] finds the
//! record, checks the process is still that VM's (alive, and its command line carries the
//! VM's uuid), reconnects QMP and the console and watches it again; a record whose process is
//! gone or is someone else's is removed (a stale instance). The console is a
//! [`Console`] that survives reboots, so attached clients stay attached.
//!
//! Driver support: QEMU. bhyve's argv is produced and golden-tested
//! ([`crate::host::bhyve`]) but not run yet; `vm start` refuses it as unsupported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::Error;
use super::Host;
use super::console::Console;
use super::jobs::log_line;
use super::switches::Switches;
use super::vmspec::{RestartPolicy, VmSpec};
use crate::config::RestartRules;
use crate::events::EventBus;
use crate::host::bhyve::ExitMeaning;
use crate::host::qemu::{self, QemuPaths};
use crate::host::qmp::Qmp;
use crate::wire::Actor;

/// How long labd retries connecting to the console and QMP sockets while QEMU creates them.
const CONNECT: Duration = Duration::from_secs(3);
/// How long to wait for the hypervisor to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How often an adopted hypervisor (not labd's child) is checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// The run record in the VM's directory.
pub const RUN_FILE: &str = "run.json";

/// Where a supervised VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The hypervisor runs.
    Running,
    /// A stop is under way.
    Stopping,
    /// Waiting out the backoff before the next start.
    Restarting,
    /// Stopped (by request, or the guest powered off and the policy keeps it off).
    Stopped,
    /// Given up: a fault under the `never` policy, the crash-loop limit, or a failed restart.
    Crashed,
}

impl Phase {
    /// The API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Restarting => "restarting",
            Self::Stopped => "stopped",
            Self::Crashed => "crashed",
        }
    }

    fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Crashed)
    }
}

/// How one run of the hypervisor ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// What it means (`poweroff`, `reboot`, `halt`, `fault`, `unknown`).
    pub meaning: ExitMeaning,
    /// The exit status as text (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub status: String,
    /// QEMU's `SHUTDOWN` reason, when it sent one.
    pub reason: Option<String>,
    /// labd killed it (forced stop or the stop timeout).
    pub killed: bool,
}

/// What the API shows about a supervised VM.
#[derive(Debug, Clone)]
pub struct Status {
    /// Where it is.
    pub phase: Phase,
    /// The hypervisor's pid while it runs.
    pub pid: Option<u32>,
    /// How the last run ended.
    pub last_exit: Option<Exit>,
    /// Restarts by the supervisor since `vm start`.
    pub restarts: u32,
    /// Why it is `crashed`, or when it restarts.
    pub message: Option<String>,
}

/// A request to the VM's task.
struct StopRequest {
    force: bool,
    /// Longest wait after the ACPI button (the spec's stop_timeout, or less at shutdown).
    timeout: Duration,
    done: oneshot::Sender<Status>,
}

/// One VM under watch.
struct Supervised {
    spec: VmSpec,
    status: watch::Sender<Status>,
    stop: mpsc::Sender<StopRequest>,
    console: Arc<Console>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("name", &self.spec.name)
            .finish_non_exhaustive()
    }
}

/// The VMs labd started or adopted, by name.
#[derive(Debug, Default)]
pub struct Supervisor {
    vms: Mutex<HashMap<String, Arc<Supervised>>>,
}

/// Everything a run needs, read from the host's config and the VM's dataset.
#[derive(Debug, Clone)]
pub(super) struct StartPlan {
    pub spec: VmSpec,
    pub dir: PathBuf,
    pub accel: qemu::Accel,
    pub kernel_dir: PathBuf,
    pub rules: RestartRules,
    /// Where the VM's taps come from (created before each run, removed at the end).
    pub switches: Switches,
    pub host: Arc<Host>,
}

/// `run.json`: which process is this VM's.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunRecord {
    pid: u32,
    driver: String,
    uuid: uuid::Uuid,
}

impl Supervisor {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Supervised>>> {
        self.vms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, name: &str) -> Option<Arc<Supervised>> {
        self.lock().get(name).cloned()
    }

    /// The state of VM `name`: `None` when labd has not started it since it started.
    pub fn status(&self, name: &str) -> Option<Status> {
        self.get(name).map(|s| s.status.borrow().clone())
    }

    /// Whether VM `name` is under watch (running, stopping or waiting to restart).
    pub fn is_active(&self, name: &str) -> bool {
        self.status(name).is_some_and(|s| !s.phase.is_final())
    }

    /// The console of VM `name` while it is active, with a future that completes when the VM
    /// has stopped for good.
    pub fn console(
        &self,
        name: &str,
    ) -> Option<(Arc<Console>, impl std::future::Future<Output = ()> + use<>)> {
        let sv = self.get(name)?;
        let mut status = sv.status.subscribe();
        if status.borrow().phase.is_final() {
            return None;
        }
        let ended = async move {
            let _ = status.wait_for(|s| s.phase.is_final()).await;
        };
        Some((Arc::clone(&sv.console), ended))
    }

    /// Stop every active VM (labd's stop, i.e. host shutdown): in reverse boot order, one
    /// `boot_order` group at a time, all within `budget`; whatever is still up when the budget
    /// runs out is killed.
    pub async fn stop_all(&self, budget: Duration) {
        let mut active: Vec<Arc<Supervised>> = self
            .lock()
            .values()
            .filter(|s| !s.status.borrow().phase.is_final())
            .cloned()
            .collect();
        active.sort_by_key(|s| std::cmp::Reverse(s.spec.boot_order));
        let deadline = Instant::now() + budget;
        for group in active.chunk_by(|a, b| a.spec.boot_order == b.spec.boot_order) {
            let left = deadline.saturating_duration_since(Instant::now());
            let stops = group.iter().map(|s| {
                let timeout = s.spec.stop_timeout.get().min(left);
                tracing::info!(vm = %s.spec.name, timeout_s = timeout.as_secs(), "stopping VM");
                request_stop(s, left.is_zero(), timeout)
            });
            futures_util::future::join_all(stops).await;
        }
    }
}

/// Ask a VM's task to stop and wait for its final state.
async fn request_stop(sv: &Supervised, force: bool, timeout: Duration) -> Option<Status> {
    let (done, rx) = oneshot::channel();
    let req = StopRequest {
        force,
        timeout,
        done,
    };
    if sv.stop.send(req).await.is_err() {
        return None;
    }
    rx.await.ok()
}

/// Refuse a driver that cannot start VMs yet (before any job exists).
pub(super) fn check_driver(driver: &str) -> Result<(), Error> {
    if driver == "qemu" {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "starting VMs with the {driver} driver is not supported yet; \
             `labctl vm command NAME --driver {driver}` shows what it will run"
        )))
    }
}

/// The job of `vm start`: start the hypervisor and put the VM under watch.
pub(super) async fn start(
    sup: Arc<Supervisor>,
    events: EventBus,
    plan: StartPlan,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let name = plan.spec.name.clone();
    if sup.is_active(&name) {
        return Err(Error::refused(
            super::Refusal::Running,
            format!("VM '{name}' is already running"),
        ));
    }
    let console = Arc::new(Console::new(plan.dir.join("console.log")));
    let run = launch(&plan, &console).await?;
    let pid = run.pid;
    events.publish(
        "vm.started",
        &name,
        actor,
        json!({"pid": pid, "driver": "qemu", "accel": run.accel}),
    );
    let result = json!({
        "name": name,
        "pid": pid,
        "driver": "qemu",
        "accel": run.accel,
        "console_log": console.log_path(),
    });
    watch_vm(&sup, events, plan, console, run);
    Ok(result)
}

/// The job of `vm stop`.
pub(super) async fn stop(
    sup: Arc<Supervisor>,
    name: String,
    force: bool,
) -> Result<serde_json::Value, Error> {
    let Some(sv) = sup
        .get(&name)
        .filter(|s| !s.status.borrow().phase.is_final())
    else {
        log_line(format!("VM '{name}' is not running"));
        return Ok(json!({"name": name, "state": "stopped", "was_running": false}));
    };
    let timeout = sv.spec.stop_timeout.get();
    let status = request_stop(&sv, force, timeout)
        .await
        .ok_or_else(|| Error::Internal(format!("the supervisor of VM '{name}' went away")))?;
    let exit = status.last_exit.as_ref();
    Ok(json!({
        "name": name,
        "state": status.phase.as_str(),
        "meaning": exit.map(|e| e.meaning.to_string()),
        "status": exit.map(|e| e.status.clone()),
        "killed": exit.is_some_and(|e| e.killed),
        "was_running": true,
    }))
}

/// Re-adopt a VM whose hypervisor outlived labd, or clean its stale run record. Returns
/// whether it was adopted.
pub(super) async fn adopt(sup: &Arc<Supervisor>, events: &EventBus, plan: StartPlan) -> bool {
    let name = plan.spec.name.clone();
    let record_path = plan.dir.join(RUN_FILE);
    let Ok(text) = std::fs::read_to_string(&record_path) else {
        return false;
    };
    let record: Option<RunRecord> = serde_json::from_str(&text).ok();
    let verdict = match &record {
        None => Err("the run record cannot be read".to_owned()),
        Some(r) if r.uuid != plan.spec.uuid => Err(format!("it names uuid {}", r.uuid)),
        Some(r) => identify(r.pid, &r.uuid).await,
    };
    let record = match (verdict, record) {
        (Ok(()), Some(r)) => r,
        (verdict, _) => {
            let why = verdict.err().unwrap_or_default();
            tracing::info!(vm = %name, %why, "removing a stale run record");
            let _ = std::fs::remove_file(&record_path);
            events.publish("vm.stale", &name, None, json!({"reason": why}));
            return false;
        }
    };
    let console = Arc::new(Console::new(plan.dir.join("console.log")));
    let paths = QemuPaths {
        dir: plan.dir.clone(),
    };
    attach_console(&console, &paths.console_socket()).await;
    let qmp = Qmp::connect(&paths.qmp_socket(), CONNECT).await;
    if let Err(e) = &qmp {
        tracing::warn!(vm = %name, error = %e, "adopted VM without QMP: stop will kill it");
    }
    let run = Run {
        pid: record.pid,
        process: Process::Adopted,
        qmp: qmp.ok(),
        started: Instant::now(),
        accel: plan.accel.as_str(),
    };
    tracing::info!(vm = %name, pid = record.pid, "re-adopted a running VM");
    events.publish("vm.adopted", &name, None, json!({"pid": record.pid}));
    watch_vm(sup, events.clone(), plan, console, run);
    true
}

/// Whether process `pid` lives and is the VM with `uuid` (its command line carries it:
/// QEMU's `-uuid`, bhyve's `-U`). Read with ps(1), whose `-o args=` both FreeBSD and procps
/// print.
async fn identify(pid: u32, uuid: &uuid::Uuid) -> Result<(), String> {
    let out = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::process::Command::new("ps")
            .args(["-ww", "-o", "args=", "-p", &pid.to_string()])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .map_err(|_| "ps did not answer within 5s".to_owned())?
    .map_err(|e| format!("cannot run ps: {e}"))?;
    if !out.status.success() {
        return Err(format!("process {pid} is gone"));
    }
    let args = String::from_utf8_lossy(&out.stdout);
    if args.contains(&uuid.to_string()) {
        Ok(())
    } else {
        Err(format!("process {pid} is not this VM: {}", args.trim()))
    }
}

/// One run of the hypervisor.
struct Run {
    pid: u32,
    process: Process,
    qmp: Option<Qmp>,
    started: Instant,
    accel: &'static str,
}

enum Process {
    /// labd started it: its exit status is ours to read.
    Child(tokio::process::Child),
    /// It outlived a labd restart: watched by pid.
    Adopted,
}

impl Run {
    /// Wait for the hypervisor to end; returns its status as text and whether it succeeded.
    async fn wait(&mut self) -> (String, bool) {
        let (text, success) = match &mut self.process {
            Process::Child(child) => match child.wait().await {
                Ok(s) => (s.to_string(), s.success()),
                Err(e) => (format!("cannot wait: {e}"), false),
            },
            Process::Adopted => {
                while alive(self.pid) {
                    match &self.qmp {
                        Some(q) => {
                            q.closed(ADOPTED_POLL).await;
                        }
                        None => tokio::time::sleep(ADOPTED_POLL).await,
                    }
                }
                ("ended (not labd's child: status unknown)".to_owned(), false)
            }
        };
        // QEMU writes its SHUTDOWN event before exiting; let the reader take it in.
        if let Some(q) = &self.qmp {
            q.closed(Duration::from_secs(1)).await;
        }
        (text, success)
    }

    fn kill(&self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) => log_line(format!("sent SIGKILL to {}", self.pid)),
            Err(e) => log_line(format!("kill {}: {e}", self.pid)),
        }
    }
}

fn alive(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    !matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Start QEMU for `plan`, connect its console to `console` and hold its QMP connection.
async fn launch(plan: &StartPlan, console: &Arc<Console>) -> Result<Run, Error> {
    let spec = &plan.spec;
    let accel = plan.accel.resolve(qemu::kvm_usable());
    let paths = QemuPaths {
        dir: plan.dir.clone(),
    };
    // One tap per NIC on its switch's bridge (leftovers of an earlier run are replaced).
    let taps = plan.switches.attach_taps(&plan.host, spec).await?;
    if !taps.is_empty() {
        log_line(format!("taps {}", taps.join(", ")));
    }
    let launched = spawn_qemu(plan, console, &paths, &taps, accel).await;
    if launched.is_err() && !taps.is_empty() {
        release_taps(plan).await;
    }
    launched
}

/// Remove the VM's taps (its run ended for good, or never began).
async fn release_taps(plan: &StartPlan) {
    if plan.spec.nics.is_empty() {
        return;
    }
    match plan.switches.detach_taps(&plan.host, &plan.spec.name).await {
        Ok(gone) if !gone.is_empty() => log_line(format!("removed taps {}", gone.join(", "))),
        Ok(_) => {}
        Err(e) => tracing::warn!(vm = %plan.spec.name, error = %e, "cannot remove the VM's taps"),
    }
}

async fn spawn_qemu(
    plan: &StartPlan,
    console: &Arc<Console>,
    paths: &QemuPaths,
    taps: &[String],
    accel: qemu::Accel,
) -> Result<Run, Error> {
    let spec = &plan.spec;
    let argv = qemu::qemu_argv(
        spec,
        paths,
        taps,
        accel,
        &qemu::Ovmf::default(),
        Some(&plan.kernel_dir),
    )
    .map_err(|e| Error::Invalid {
        field: "name".to_owned(),
        code: "cannot_start",
        message: e.to_string(),
    })?;
    let words = argv.to_vec();
    for sock in [paths.console_socket(), paths.qmp_socket()] {
        let _ = std::fs::remove_file(&sock);
    }
    let io = |what: &Path, e: std::io::Error| {
        Error::Internal(format!("cannot write {}: {e}", what.display()))
    };
    // QEMU's own messages (stderr) go to the VM's log, always.
    let log_path = plan.dir.join("qemu.log");
    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io(&log_path, e))?;
    let qemu_out = qemu_log.try_clone().map_err(|e| io(&log_path, e))?;
    log_line(format!("running {}", words.join(" ")));
    let child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stdout(qemu_out)
        .stderr(qemu_log)
        // Its own process group: a signal to labd's group (a terminal's Ctrl-C, a service
        // manager stopping labd) does not reach the VM; labd stops VMs itself.
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot run {}: {e}", words[0])))?;
    let pid = child
        .id()
        .ok_or_else(|| Error::Internal("QEMU exited before it could be watched".to_owned()))?;
    let record = RunRecord {
        pid,
        driver: "qemu".to_owned(),
        uuid: spec.uuid,
    };
    let record_path = plan.dir.join(RUN_FILE);
    let text = serde_json::to_string(&record).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&record_path, text).map_err(|e| io(&record_path, e))?;

    // The console first: QEMU drops output while no client is connected.
    attach_console(console, &paths.console_socket()).await;
    let qmp = match Qmp::connect(&paths.qmp_socket(), CONNECT).await {
        Ok(q) => Some(q),
        Err(e) => {
            log_line(format!("{e}; a stop will kill QEMU"));
            None
        }
    };
    Ok(Run {
        pid,
        process: Process::Child(child),
        qmp,
        started: Instant::now(),
        accel: accel.as_str(),
    })
}

/// Connect to the hypervisor's console socket and feed `console` from it in the background.
async fn attach_console(console: &Arc<Console>, socket: &Path) {
    let deadline = tokio::time::Instant::now() + CONNECT;
    loop {
        if let Ok(stream) = tokio::net::UnixStream::connect(socket).await {
            log_line(format!(
                "console {} -> {}",
                socket.display(),
                console.log_path().display()
            ));
            let console = Arc::clone(console);
            tokio::spawn(async move { console.feed(stream).await });
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            log_line(format!(
                "could not connect to the console {} within {}s; it is not logged",
                socket.display(),
                CONNECT.as_secs()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Put the VM under watch: register it and spawn its task.
fn watch_vm(
    sup: &Arc<Supervisor>,
    events: EventBus,
    plan: StartPlan,
    console: Arc<Console>,
    run: Run,
) {
    let (stop, stop_rx) = mpsc::channel(4);
    let (status, _) = watch::channel(Status {
        phase: Phase::Running,
        pid: Some(run.pid),
        last_exit: None,
        restarts: 0,
        message: None,
    });
    let sv = Arc::new(Supervised {
        spec: plan.spec.clone(),
        status,
        stop,
        console,
    });
    sup.lock().insert(plan.spec.name.clone(), Arc::clone(&sv));
    tokio::spawn(vm_task(sv, events, plan, run, stop_rx));
}

/// What the supervisor does after a run ended by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// Start again now (a reboot).
    Now,
    /// Start again after this wait; the run counted as failed number `.1`.
    After(Duration, u32),
    /// Leave it stopped.
    Stop,
    /// Give up, with the reason.
    GiveUp(String),
}

/// The restart decision (module docs' table). `failures` counts failed runs in a row before
/// this one; `ran` is how long this one lasted.
fn decide(
    meaning: ExitMeaning,
    policy: RestartPolicy,
    rules: RestartRules,
    failures: u32,
    ran: Duration,
) -> Next {
    let failed = match meaning {
        ExitMeaning::Reboot => return Next::Now,
        ExitMeaning::Poweroff | ExitMeaning::Halt => {
            if policy != RestartPolicy::Always {
                return Next::Stop;
            }
            false
        }
        ExitMeaning::Fault | ExitMeaning::Unknown => {
            if policy == RestartPolicy::Never {
                return Next::GiveUp(format!("the run ended in a {meaning}; restart = \"never\""));
            }
            true
        }
    };
    let before = if ran >= RestartRules::STABLE {
        0
    } else {
        failures
    };
    let count = if failed || ran < RestartRules::STABLE {
        before + 1
    } else {
        1
    };
    if failed && count > rules.limit {
        return Next::GiveUp(format!(
            "crash loop: {count} failed runs in a row (restart_limit = {}); not restarted",
            rules.limit
        ));
    }
    Next::After(rules.delay(count), count)
}

/// What a run's end means: the QMP reason when QEMU gave one, else the exit status.
fn meaning_of(reason: Option<&str>, success: bool, killed: bool) -> ExitMeaning {
    if killed {
        return ExitMeaning::Poweroff;
    }
    match reason.map(qemu::shutdown_meaning) {
        Some(m) if m != ExitMeaning::Unknown => m,
        // Clean exit without a reason (QMP was not connected): the guest ended itself.
        _ if success => ExitMeaning::Poweroff,
        _ => ExitMeaning::Fault,
    }
}

/// The VM's task: watch runs, restart per policy, serve stop requests; always ends in
/// `stopped` or `crashed`.
async fn vm_task(
    sv: Arc<Supervised>,
    events: EventBus,
    plan: StartPlan,
    mut run: Run,
    mut stops: mpsc::Receiver<StopRequest>,
) {
    let name = plan.spec.name.clone();
    let record_path = plan.dir.join(RUN_FILE);
    let mut failures = 0u32;
    let mut restarts = 0u32;
    let set = |f: &dyn Fn(&mut Status)| sv.status.send_modify(|s| f(s));
    let end: Option<oneshot::Sender<Status>> = loop {
        // Wait for the run to end, or a stop.
        let (status_text, success, killed, pending) = tokio::select! {
            (text, ok) = run.wait() => (text, ok, false, None),
            Some(req) = stops.recv() => {
                set(&|s| s.phase = Phase::Stopping);
                let (text, ok, killed) = stop_run(&mut run, req.force, req.timeout).await;
                (text, ok, killed, Some(req.done))
            }
        };
        let reason = run.qmp.as_ref().and_then(Qmp::shutdown_reason);
        let meaning = meaning_of(reason.as_deref(), success, killed);
        let exit = Exit {
            meaning,
            status: status_text,
            reason,
            killed,
        };
        let ran = run.started.elapsed();
        tracing::info!(vm = %name, %meaning, status = %exit.status, killed, "VM exited");
        events.publish(
            "vm.exited",
            &name,
            None,
            json!({
                "meaning": meaning.to_string(),
                "status": exit.status,
                "reason": exit.reason,
                "killed": killed,
                "ran_s": ran.as_secs(),
            }),
        );
        set(&|s| {
            s.pid = None;
            s.last_exit = Some(exit.clone());
        });
        if let Some(done) = pending {
            set(&|s| {
                s.phase = Phase::Stopped;
                s.message = None;
            });
            break Some(done);
        }
        let next = decide(meaning, plan.spec.restart, plan.rules, failures, ran);
        let wait = match next {
            Next::Stop => {
                set(&|s| s.phase = Phase::Stopped);
                break None;
            }
            Next::GiveUp(why) => {
                tracing::warn!(vm = %name, %why, "VM crashed");
                events.publish("vm.crashed", &name, None, json!({"reason": why}));
                set(&|s| {
                    s.phase = Phase::Crashed;
                    s.message = Some(why.clone());
                });
                break None;
            }
            Next::Now => Duration::ZERO,
            Next::After(delay, count) => {
                failures = count;
                delay
            }
        };
        restarts += 1;
        let why = format!("{meaning}; starting again in {}ms", wait.as_millis());
        events.publish(
            "vm.restarting",
            &name,
            None,
            json!({"meaning": meaning.to_string(), "delay_ms": wait.as_millis(), "attempt": restarts}),
        );
        set(&|s| {
            s.phase = Phase::Restarting;
            s.restarts = restarts;
            s.message = Some(why.clone());
        });
        // The backoff yields to a stop request.
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            Some(req) = stops.recv() => {
                set(&|s| {
                    s.phase = Phase::Stopped;
                    s.message = None;
                });
                break Some(req.done);
            }
        }
        match launch(&plan, &sv.console).await {
            Ok(next_run) => {
                run = next_run;
                events.publish(
                    "vm.started",
                    &name,
                    None,
                    json!({"pid": run.pid, "driver": "qemu", "accel": run.accel, "restart": restarts}),
                );
                set(&|s| {
                    s.phase = Phase::Running;
                    s.pid = Some(run.pid);
                    s.message = None;
                });
            }
            Err(e) => {
                let why = format!("restart failed: {e}");
                events.publish("vm.crashed", &name, None, json!({"reason": why}));
                set(&|s| {
                    s.phase = Phase::Crashed;
                    s.message = Some(why.clone());
                });
                break None;
            }
        }
    };
    let _ = std::fs::remove_file(&record_path);
    release_taps(&plan).await;
    let final_status = sv.status.borrow().clone();
    events.publish(
        "vm.stopped",
        &name,
        None,
        json!({
            "state": final_status.phase.as_str(),
            "meaning": final_status.last_exit.as_ref().map(|e| e.meaning.to_string()),
            "killed": final_status.last_exit.as_ref().is_some_and(|e| e.killed),
            "message": final_status.message,
        }),
    );
    if let Some(done) = end {
        let _ = done.send(final_status);
    }
    // Stop requests that raced with the end get the final state too.
    stops.close();
    while let Some(req) = stops.recv().await {
        let _ = req.done.send(sv.status.borrow().clone());
    }
}

/// Stop a run: the ACPI power button (unless `force`), up to `timeout`, then SIGKILL.
/// Returns the exit status text, success, and whether labd killed it.
async fn stop_run(run: &mut Run, force: bool, timeout: Duration) -> (String, bool, bool) {
    if !force {
        let pressed = match &run.qmp {
            Some(q) => q.powerdown().await.map_err(|e| e.to_string()),
            None => Err("no QMP connection".to_owned()),
        };
        match pressed {
            Ok(()) => {
                log_line(format!(
                    "pressed the ACPI power button; waiting up to {}s",
                    timeout.as_secs()
                ));
                if let Ok((text, ok)) = tokio::time::timeout(timeout, run.wait()).await {
                    return (text, ok, false);
                }
                log_line(format!(
                    "still running after {}s: killing",
                    timeout.as_secs()
                ));
            }
            Err(e) => log_line(format!("cannot press the power button ({e}): killing")),
        }
    }
    run.kill();
    match tokio::time::timeout(KILL_WAIT, run.wait()).await {
        Ok((text, ok)) => (text, ok, true),
        Err(_) => (
            format!("did not exit within {}s of SIGKILL", KILL_WAIT.as_secs()),
            false,
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: RestartRules = RestartRules {
        limit: 3,
        backoff: Duration::from_secs(1),
    };
    const SHORT: Duration = Duration::from_secs(5);

    #[test]
    fn reboots_restart_at_once_whatever_the_policy() {
        for p in [
            RestartPolicy::Never,
            RestartPolicy::OnFailure,
            RestartPolicy::Always,
        ] {
            assert_eq!(decide(ExitMeaning::Reboot, p, RULES, 2, SHORT), Next::Now);
        }
    }

    #[test]
    fn poweroff_stops_unless_always() {
        assert_eq!(
            decide(
                ExitMeaning::Poweroff,
                RestartPolicy::OnFailure,
                RULES,
                0,
                SHORT
            ),
            Next::Stop
        );
        assert_eq!(
            decide(ExitMeaning::Halt, RestartPolicy::Never, RULES, 0, SHORT),
            Next::Stop
        );
        assert_eq!(
            decide(
                ExitMeaning::Poweroff,
                RestartPolicy::Always,
                RULES,
                0,
                SHORT
            ),
            Next::After(Duration::from_secs(1), 1)
        );
    }

    #[test]
    fn faults_back_off_and_give_up_at_the_limit() {
        let p = RestartPolicy::OnFailure;
        assert_eq!(
            decide(ExitMeaning::Fault, p, RULES, 0, SHORT),
            Next::After(Duration::from_secs(1), 1)
        );
        assert_eq!(
            decide(ExitMeaning::Fault, p, RULES, 2, SHORT),
            Next::After(Duration::from_secs(4), 3)
        );
        assert!(matches!(
            decide(ExitMeaning::Fault, p, RULES, 3, SHORT),
            Next::GiveUp(why) if why.contains("crash loop") && why.contains("restart_limit = 3")
        ));
        // A long, healthy run resets the count.
        assert_eq!(
            decide(ExitMeaning::Fault, p, RULES, 3, RestartRules::STABLE),
            Next::After(Duration::from_secs(1), 1)
        );
        assert!(matches!(
            decide(ExitMeaning::Fault, RestartPolicy::Never, RULES, 0, SHORT),
            Next::GiveUp(why) if why.contains("never")
        ));
    }

    #[test]
    fn exit_meaning_prefers_the_qmp_reason() {
        assert_eq!(
            meaning_of(Some("guest-reset"), true, false),
            ExitMeaning::Reboot
        );
        assert_eq!(
            meaning_of(Some("guest-shutdown"), true, false),
            ExitMeaning::Poweroff
        );
        assert_eq!(
            meaning_of(Some("guest-panic"), true, false),
            ExitMeaning::Fault
        );
        assert_eq!(meaning_of(None, false, false), ExitMeaning::Fault);
        assert_eq!(meaning_of(None, true, false), ExitMeaning::Poweroff);
        assert_eq!(meaning_of(None, false, true), ExitMeaning::Poweroff);
    }
}
