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
//! | unknown (adopted)   | stopped                | stopped             | again, with backoff |
//!
//! Backoff doubles from `[vms] restart_backoff` and a run of [`RestartRules::STABLE`] resets
//! it; after `[vms] restart_limit` failed runs in a row the VM is left `crashed` with the
//! reason (no endless crash loop). A stop request wins over everything: the ACPI power button,
//! the spec's `stop_timeout`, then forced off.
//!
//! Each run records `run.json` (pid, uuid, driver) in the VM's directory. The hypervisor runs
//! in its own process group and outlives labd: when labd restarts, [`adopt`] finds the
//! record, checks the process is still that VM's (alive, and it names the VM), reconnects QMP
//! and the console and watches it again; a record whose process is gone or is someone else's
//! is removed (a stale instance). An adopted hypervisor is not labd's child, so its exit
//! status is unknown: unless QMP said why, such an end is `unknown`. The console is a
//! [`Console`] that survives reboots, so attached clients stay attached.
//!
//! What differs between QEMU and bhyve (launch, power button, forced off, what an end means,
//! identity) lives in [`super::hypervisor`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};

use super::Error;
use super::Host;
use super::console::Console;
use super::hypervisor::{Driver, Ended, RUN_FILE, Run};
use super::jobs::log_line;
use super::switches::Switches;
use super::vmspec::{RestartPolicy, VmSpec};
use crate::config::RestartRules;
use crate::events::EventBus;
use crate::host::bhyve::ExitMeaning;
use crate::wire::Actor;

/// How long to wait for the hypervisor to go after it was forced off.
const KILL_WAIT: Duration = Duration::from_secs(5);

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
    pub driver: Driver,
    pub rules: RestartRules,
    /// Where the VM's taps come from (created before each run, removed at the end).
    pub switches: Switches,
    pub host: Arc<Host>,
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
    let run = launch(&plan, &console, true).await?;
    let pid = run.pid;
    events.publish(
        "vm.started",
        &name,
        actor,
        json!({"pid": pid, "driver": run.driver(), "accel": run.accel}),
    );
    let result = json!({
        "name": name,
        "pid": pid,
        "driver": run.driver(),
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
    let console = Arc::new(Console::new(plan.dir.join("console.log")));
    match Run::adopt(&plan.spec, &plan.dir, &console).await {
        Ok(Some(run)) => {
            tracing::info!(vm = %name, pid = run.pid, "re-adopted a running VM");
            events.publish(
                "vm.adopted",
                &name,
                None,
                json!({"pid": run.pid, "driver": run.driver()}),
            );
            watch_vm(sup, events.clone(), plan, console, run);
            true
        }
        Ok(None) => false,
        Err(why) => {
            tracing::info!(vm = %name, %why, "removing a stale run record");
            let _ = std::fs::remove_file(plan.dir.join(RUN_FILE));
            super::hypervisor::destroy_stale_instance(&plan.driver, &name).await;
            events.publish("vm.stale", &name, None, json!({"reason": why}));
            false
        }
    }
}

/// Start a run: the VM's taps on their switches, then the hypervisor; the taps are removed
/// again when it cannot start.
async fn launch(plan: &StartPlan, console: &Arc<Console>, first: bool) -> Result<Run, Error> {
    // One tap per NIC on its switch's bridge (leftovers of an earlier run are replaced).
    let taps = plan.switches.attach_taps(&plan.host, &plan.spec).await?;
    if !taps.is_empty() {
        log_line(format!("taps {}", taps.join(", ")));
    }
    let launched = Run::launch(plan, console, &taps, first).await;
    if launched.is_err() {
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
        // The status of an adopted hypervisor is unknown: restarting a guest that powered
        // itself off would be worse than leaving a crashed one off.
        ExitMeaning::Unknown => {
            if policy != RestartPolicy::Always {
                return Next::Stop;
            }
            false
        }
        ExitMeaning::Fault => {
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
        let (ended, killed, pending) = tokio::select! {
            ended = run.wait() => (ended, false, None),
            Some(req) = stops.recv() => {
                set(&|s| s.phase = Phase::Stopping);
                let (ended, killed) = stop_run(&mut run, req.force, req.timeout).await;
                (ended, killed, Some(req.done))
            }
        };
        let reason = run.shutdown_reason();
        let meaning = run.meaning(&ended, killed);
        let exit = Exit {
            meaning,
            status: ended.text,
            reason,
            killed,
        };
        let ran = run.ran();
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
        match launch(&plan, &sv.console, false).await {
            Ok(next_run) => {
                run = next_run;
                events.publish(
                    "vm.started",
                    &name,
                    None,
                    json!({"pid": run.pid, "driver": run.driver(), "accel": run.accel, "restart": restarts}),
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
    run.clean_up().await;
    sv.console.close();
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

/// Stop a run: the ACPI power button (unless `force`), up to `timeout`, then forced off.
/// Returns how it ended and whether labd forced it.
async fn stop_run(run: &mut Run, force: bool, timeout: Duration) -> (Ended, bool) {
    if !force {
        match run.power_button().await {
            Ok(()) => {
                log_line(format!(
                    "pressed the ACPI power button; waiting up to {}s",
                    timeout.as_secs()
                ));
                if let Ok(ended) = tokio::time::timeout(timeout, run.wait()).await {
                    return (ended, false);
                }
                log_line(format!(
                    "still running after {}s: forcing it off",
                    timeout.as_secs()
                ));
            }
            Err(e) => log_line(format!(
                "cannot press the power button ({e}): forcing it off"
            )),
        }
    }
    run.force_off().await;
    match tokio::time::timeout(KILL_WAIT, run.wait()).await {
        Ok(ended) => (ended, true),
        Err(_) => (
            Ended {
                text: format!("did not exit within {}s of SIGKILL", KILL_WAIT.as_secs()),
                code: None,
                known: false,
            },
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
    fn an_unknown_end_restarts_only_under_always() {
        for p in [RestartPolicy::Never, RestartPolicy::OnFailure] {
            assert_eq!(decide(ExitMeaning::Unknown, p, RULES, 0, SHORT), Next::Stop);
        }
        assert_eq!(
            decide(ExitMeaning::Unknown, RestartPolicy::Always, RULES, 0, SHORT),
            Next::After(Duration::from_secs(1), 1)
        );
    }
}
