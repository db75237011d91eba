//! The VM supervisor (issue 3, second slice): `vm start` spawns QEMU with the VM's argv
//! ([`crate::host::qemu::qemu_argv`]), copies its serial console to `<dir>/console.log`, and
//! a task waits for QEMU's exit and records it; `vm stop` presses the ACPI power button over
//! QMP, waits the spec's `stop_timeout`, then kills. State lives in memory only.
//!
//! Out of scope so far: the bhyve driver (`vm start` refuses it), the restart policy,
//! re-adopting VMs that outlive a labd restart, and attaching to the console.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::watch;

use super::Error;
use super::jobs::log_line;
use super::vmspec::VmSpec;
use crate::events::EventBus;
use crate::host::bhyve::ExitMeaning;
use crate::host::qemu::{self, QMP_CAPABILITIES, QMP_POWERDOWN, QemuPaths};
use crate::wire::Actor;

/// How long labd retries connecting to the console socket while QEMU creates it.
const CONSOLE_CONNECT: Duration = Duration::from_secs(2);
/// How long to wait for QEMU to go after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// How a VM's QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// `stopped` or `crashed`.
    pub state: &'static str,
    /// What the exit means (`poweroff`, `reboot`, `fault`, `unknown`).
    pub meaning: String,
    /// The exit status as text (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub status: String,
    /// labd killed it (forced stop or the stop timeout).
    pub killed: bool,
}

/// One QEMU process labd started.
#[derive(Debug)]
struct Run {
    pid: u32,
    qmp: PathBuf,
    stop_timeout: Duration,
    stopping: AtomicBool,
    killed: AtomicBool,
    /// The `reason` of QMP's `SHUTDOWN` event, when a stop read it.
    reason: watch::Sender<Option<String>>,
    /// Set once QEMU has exited.
    exit: watch::Sender<Option<Exit>>,
}

impl Run {
    fn running(&self) -> bool {
        self.exit.borrow().is_none()
    }
}

/// The running (and last exited) VMs, by name.
#[derive(Debug, Default)]
pub struct Supervisor {
    runs: Mutex<HashMap<String, Arc<Run>>>,
}

/// What the API shows about a VM's process.
#[derive(Debug, Clone)]
pub struct Status {
    /// `running`, `stopped` or `crashed`.
    pub state: String,
    /// QEMU's pid while running.
    pub pid: Option<u32>,
    /// How the last run ended.
    pub last_exit: Option<String>,
}

fn meaning_str(m: ExitMeaning) -> String {
    m.to_string()
}

fn unsupported(message: String) -> Error {
    Error::Invalid {
        field: "driver".to_owned(),
        code: "unsupported",
        message,
    }
}

impl Supervisor {
    fn runs(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Run>>> {
        self.runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, name: &str) -> Option<Arc<Run>> {
        self.runs().get(name).cloned()
    }

    /// The process state of VM `name`: `None` when labd never started it.
    pub fn status(&self, name: &str) -> Option<Status> {
        let run = self.get(name)?;
        let exit = run.exit.borrow().clone();
        Some(match exit {
            None => Status {
                state: "running".to_owned(),
                pid: Some(run.pid),
                last_exit: None,
            },
            Some(e) => Status {
                state: e.state.to_owned(),
                pid: None,
                last_exit: Some(e.meaning),
            },
        })
    }

    /// Whether VM `name` runs.
    pub fn is_running(&self, name: &str) -> bool {
        self.get(name).is_some_and(|r| r.running())
    }

    /// Names of the running VMs.
    fn running(&self) -> Vec<(String, Arc<Run>)> {
        self.runs()
            .iter()
            .filter(|(_, r)| r.running())
            .map(|(n, r)| (n.clone(), Arc::clone(r)))
            .collect()
    }

    /// Stop every running VM (labd's shutdown): ACPI, each bounded by its stop_timeout, then
    /// SIGKILL.
    pub async fn stop_all(&self) {
        let all = self.running();
        let stops = all.into_iter().map(|(name, run)| async move {
            tracing::info!(vm = %name, "stopping VM");
            if let Err(e) = stop_run(&run, false).await {
                tracing::warn!(vm = %name, error = %e, "cannot stop VM");
            }
        });
        futures_util::future::join_all(stops).await;
    }
}

/// Everything `start` needs, read from the host's config and the VM's dataset.
pub(super) struct StartPlan {
    pub name: String,
    pub spec: VmSpec,
    pub dir: PathBuf,
    pub driver: String,
    pub accel: qemu::Accel,
    pub kernel_dir: PathBuf,
}

/// The job of `vm start`.
pub(super) async fn start(
    sup: Arc<Supervisor>,
    events: EventBus,
    plan: StartPlan,
    actor: Option<Actor>,
) -> Result<serde_json::Value, Error> {
    let StartPlan {
        name,
        spec,
        dir,
        driver,
        accel,
        kernel_dir,
    } = plan;
    if driver != "qemu" {
        return Err(unsupported(format!(
            "starting VMs with the {driver} driver is not supported yet; use [vms] driver = \"qemu\""
        )));
    }
    if sup.is_running(&name) {
        return Err(Error::refused(
            super::Refusal::Running,
            format!("VM '{name}' is already running"),
        ));
    }
    let accel = accel.resolve(qemu::kvm_usable());
    let paths = QemuPaths { dir: dir.clone() };
    let argv = qemu::qemu_argv(
        &spec,
        &paths,
        &[],
        accel,
        &qemu::Ovmf::default(),
        Some(&kernel_dir),
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
        Error::Internal(format!("cannot open {}: {e}", what.display()))
    };
    let log_path = dir.join("qemu.log");
    let qemu_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| io(&log_path, e))?;
    let qemu_out = qemu_log.try_clone().map_err(|e| io(&log_path, e))?;
    log_line(format!("running {}", words.join(" ")));
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stdout(qemu_out)
        .stderr(qemu_log)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot run {}: {e}", words[0])))?;
    let pid = child.id().unwrap_or_default();
    let (reason, _) = watch::channel(None);
    let (exit, _) = watch::channel(None);
    let run = Arc::new(Run {
        pid,
        qmp: paths.qmp_socket(),
        stop_timeout: spec.stop_timeout.get(),
        stopping: AtomicBool::new(false),
        killed: AtomicBool::new(false),
        reason,
        exit,
    });
    sup.runs().insert(name.clone(), Arc::clone(&run));

    // The console: connect while QEMU creates the socket, then copy it to console.log.
    let console = paths.console_socket();
    let console_log = dir.join("console.log");
    let connected = connect_retry(&console, CONSOLE_CONNECT).await;
    match connected {
        Some(stream) => {
            log_line(format!(
                "console {} -> {}",
                console.display(),
                console_log.display()
            ));
            tokio::spawn(copy_console(stream, console_log));
        }
        None => log_line(format!(
            "could not connect to the console {} within {}s; it is not logged",
            console.display(),
            CONSOLE_CONNECT.as_secs()
        )),
    }

    // The waiter: records QEMU's exit.
    let waiter_run = Arc::clone(&run);
    let waiter_events = events.clone();
    let waiter_name = name.clone();
    tokio::spawn(async move {
        let status = child.wait().await;
        let run = waiter_run;
        if run.stopping.load(Ordering::SeqCst) && !run.killed.load(Ordering::SeqCst) {
            // A stop is reading QMP's SHUTDOWN event; give it a moment to record the reason.
            let mut rx = run.reason.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                rx.wait_for(std::option::Option::is_some),
            )
            .await;
        }
        let reason = run.reason.borrow().clone();
        let killed = run.killed.load(Ordering::SeqCst);
        let status_text = match &status {
            Ok(s) => s.to_string(),
            Err(e) => format!("cannot wait: {e}"),
        };
        let success = status.as_ref().is_ok_and(std::process::ExitStatus::success);
        let (state, meaning) = if killed {
            ("stopped", meaning_str(ExitMeaning::Poweroff))
        } else if let Some(r) = &reason {
            let m = qemu::shutdown_meaning(r);
            let state = if m == ExitMeaning::Fault {
                "crashed"
            } else {
                "stopped"
            };
            (state, meaning_str(m))
        } else if success {
            // Poweroff or reboot from inside the guest: without the QMP event, unknown.
            ("stopped", meaning_str(ExitMeaning::Unknown))
        } else {
            ("crashed", meaning_str(ExitMeaning::Fault))
        };
        let exit = Exit {
            state,
            meaning: meaning.clone(),
            status: status_text.clone(),
            killed,
        };
        tracing::info!(vm = %waiter_name, %state, %meaning, status = %status_text, killed, "VM exited");
        run.exit.send_replace(Some(exit));
        waiter_events.publish(
            "vm.stopped",
            &waiter_name,
            None,
            json!({
                "state": state,
                "meaning": meaning,
                "status": status_text,
                "reason": reason,
                "killed": killed,
            }),
        );
    });

    events.publish(
        "vm.started",
        &name,
        actor,
        json!({"pid": pid, "driver": "qemu", "accel": accel.as_str()}),
    );
    Ok(json!({
        "name": name,
        "pid": pid,
        "driver": "qemu",
        "accel": accel.as_str(),
        "console_log": dir.join("console.log"),
    }))
}

/// Connect to a Unix socket, retrying until `within` has passed.
async fn connect_retry(path: &Path, within: Duration) -> Option<UnixStream> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(s) = UnixStream::connect(path).await {
            return Some(s);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copy the console to `log` (appending) until QEMU closes it.
async fn copy_console(mut stream: UnixStream, log: PathBuf) {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await;
    let mut file = match file {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(log = %log.display(), error = %e, "cannot open the console log");
            return;
        }
    };
    let mut buf = vec![0u8; 8192];
    loop {
        use tokio::io::AsyncReadExt;
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if file.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                let _ = file.flush().await;
            }
        }
    }
}

/// The job of `vm stop`.
pub(super) async fn stop(
    sup: Arc<Supervisor>,
    name: String,
    force: bool,
) -> Result<serde_json::Value, Error> {
    let Some(run) = sup.get(&name).filter(|r| r.running()) else {
        log_line(format!("VM '{name}' is not running"));
        return Ok(json!({"name": name, "state": "stopped", "was_running": false}));
    };
    let exit = stop_run(&run, force).await?;
    Ok(json!({
        "name": name,
        "state": exit.state,
        "meaning": exit.meaning,
        "status": exit.status,
        "killed": exit.killed,
        "was_running": true,
    }))
}

/// Stop one run: the ACPI button over QMP (unless `force`), up to its stop_timeout, then
/// SIGKILL.
async fn stop_run(run: &Arc<Run>, force: bool) -> Result<Exit, Error> {
    run.stopping.store(true, Ordering::SeqCst);
    let mut exited = run.exit.subscribe();
    if !force {
        match powerdown(run).await {
            Ok(events) => {
                log_line(format!(
                    "pressed the ACPI power button; waiting up to {}s",
                    run.stop_timeout.as_secs()
                ));
                let waited = tokio::time::timeout(
                    run.stop_timeout,
                    exited.wait_for(std::option::Option::is_some),
                )
                .await;
                events.abort();
                if waited.is_ok() {
                    return exited_now(run);
                }
                log_line(format!(
                    "still running after {}s: killing",
                    run.stop_timeout.as_secs()
                ));
            }
            Err(e) => log_line(format!("QMP: {e}; killing")),
        }
    }
    if run.running() {
        run.killed.store(true, Ordering::SeqCst);
        let pid = nix::unistd::Pid::from_raw(i32::try_from(run.pid).unwrap_or(i32::MAX));
        if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
            log_line(format!("kill {}: {e}", run.pid));
        } else {
            log_line(format!("sent SIGKILL to {}", run.pid));
        }
    }
    tokio::time::timeout(KILL_WAIT, exited.wait_for(std::option::Option::is_some))
        .await
        .map_err(|_| Error::Internal(format!("QEMU {} did not exit after SIGKILL", run.pid)))?
        .map_err(|_| Error::Internal("the exit watcher went away".to_owned()))?;
    exited_now(run)
}

fn exited_now(run: &Run) -> Result<Exit, Error> {
    let exit = run
        .exit
        .borrow()
        .clone()
        .ok_or_else(|| Error::Internal("no exit recorded".to_owned()))?;
    log_line(format!(
        "exited: {} ({}), {}",
        exit.state, exit.meaning, exit.status
    ));
    Ok(exit)
}

/// Press the ACPI power button over QMP; the returned task keeps reading QMP and records the
/// `SHUTDOWN` event's reason.
async fn powerdown(run: &Arc<Run>) -> Result<tokio::task::JoinHandle<()>, String> {
    let stream = UnixStream::connect(&run.qmp)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", run.qmp.display()))?;
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let greeting = next_json(&mut lines).await?;
    if greeting.get("QMP").is_none() {
        return Err(format!("unexpected QMP greeting {greeting}"));
    }
    for cmd in [QMP_CAPABILITIES, QMP_POWERDOWN] {
        write
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let v = next_json(&mut lines).await?;
            if let Some(e) = v.get("error") {
                return Err(format!("{cmd}: {e}"));
            }
            if v.get("return").is_some() {
                break;
            }
            note_event(run, &v);
        }
    }
    let run = Arc::clone(run);
    Ok(tokio::spawn(async move {
        let _keep = write;
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                note_event(&run, &v);
            }
        }
    }))
}

type QmpLines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

/// The next QMP message (one JSON object a line), waiting at most 5 s.
async fn next_json(lines: &mut QmpLines) -> Result<serde_json::Value, String> {
    let line = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
        .await
        .map_err(|_| "no answer within 5s".to_owned())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "QEMU closed the QMP connection".to_owned())?;
    serde_json::from_str(&line).map_err(|e| format!("bad QMP line {line:?}: {e}"))
}

/// Record the reason of a QMP `SHUTDOWN` event.
fn note_event(run: &Run, v: &serde_json::Value) {
    if v.get("event").and_then(|e| e.as_str()) == Some("SHUTDOWN")
        && let Some(reason) = v
            .get("data")
            .and_then(|d| d.get("reason"))
            .and_then(|r| r.as_str())
    {
        run.reason.send_replace(Some(reason.to_owned()));
    }
}
