//! One run of a VM's hypervisor process, for either driver: launching it (taps, UEFI vars,
//! the argv, `run.json`, the console and, for QEMU, the QMP connection), finding it again
//! after a labd restart, asking it to power off, forcing it off, waiting for its end and
//! saying what the end means. The supervisor ([`super::supervise`]) decides *when*.
//!
//! | | QEMU | bhyve |
//! |---|---|---|
//! | before the run | remove stale sockets | `bhyvectl --destroy` when `/dev/vmm/NAME` is left over (always before the first run; before every run for bhyveload guests), then `bhyveload` |
//! | console | connect to `console.sock` (QEMU drops output while nobody is connected) | open `/dev/nmdm-NAME.1B` before the loader and keep it for the VM's life |
//! | ACPI power button | QMP `system_powerdown` | SIGTERM (bhyve.8) |
//! | forced off | SIGKILL | `bhyvectl --force-poweroff`, then SIGKILL |
//! | what the end means | QMP `SHUTDOWN` reason, else the exit status | exit status 0-4 (bhyve.8) |
//! | after the last run | - | `bhyvectl --destroy` if the instance remains |
//! | identity (adoption) | `-uuid UUID` in its command line | its process title `bhyve: NAME` |
//!
//! Both run in their own process group with stdout and stderr appended to the VM's log
//! (`qemu.log`, `bhyve.log`), so the reason of a failed start is never lost (vm-bhyve
//! discards bhyve's stderr: reference/bhyve.md §10 item 15).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Error;
use super::console::Console;
use super::jobs::log_line;
use super::supervise::StartPlan;
use super::vmspec::{Loader, VmSpec};
use crate::host::bhyve::{self, ExitMeaning, VmPaths};
use crate::host::qemu::{self, QemuPaths};
use crate::host::qmp::Qmp;
use crate::host::runner::{Argv, Runner};
use crate::host::tty::Tty;

/// How long labd retries connecting to QEMU's console and QMP sockets while QEMU creates them.
const CONNECT: Duration = Duration::from_secs(3);
/// How often an adopted hypervisor (not labd's child) is checked for life.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
/// Longest a bhyvectl or bhyveload command may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// The run record in the VM's directory.
pub const RUN_FILE: &str = "run.json";

/// The hypervisor a VM runs under, with what it needs.
#[derive(Debug, Clone)]
pub enum Driver {
    /// QEMU (Linux hosts, the tests).
    Qemu {
        /// The accelerator asked for.
        accel: qemu::Accel,
        /// Where relative kernel and initrd names are found.
        kernel_dir: PathBuf,
    },
    /// bhyve (FreeBSD).
    Bhyve,
}

/// `run.json`: which process is this VM's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// The hypervisor's pid.
    pub pid: u32,
    /// `qemu` or `bhyve`.
    pub driver: String,
    /// The VM's uuid.
    pub uuid: uuid::Uuid,
}

/// How a run ended, before it is interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The exit status as text (`exit status: 0`, `signal: 9 (SIGKILL)`).
    pub text: String,
    /// The exit code; `None` after a signal or for an adopted process (not labd's child).
    pub code: Option<i32>,
    /// Whether labd saw the status at all (false for an adopted process).
    pub known: bool,
}

/// One running hypervisor process.
pub struct Run {
    /// Its pid.
    pub pid: u32,
    driver: &'static str,
    name: String,
    process: Process,
    qmp: Option<Qmp>,
    started: Instant,
    /// QEMU's resolved accelerator.
    pub accel: Option<&'static str>,
}

enum Process {
    /// labd started it: its exit status is ours to read.
    Child(tokio::process::Child),
    /// It outlived a labd restart: watched by pid.
    Adopted,
}

fn cannot_start(message: String) -> Error {
    Error::Invalid {
        field: "name".to_owned(),
        code: "cannot_start",
        message,
    }
}

fn io_error(what: &Path, e: &std::io::Error) -> Error {
    Error::Internal(format!("cannot write {}: {e}", what.display()))
}

impl Run {
    /// Start the VM's hypervisor (`first`: the first run of this supervision, when a stale
    /// bhyve instance is always cleaned).
    pub async fn launch(
        plan: &StartPlan,
        console: &Arc<Console>,
        taps: &[String],
        first: bool,
    ) -> Result<Self, Error> {
        ensure_uefi_vars(&plan.spec, &plan.dir, &plan.driver)?;
        match &plan.driver {
            Driver::Qemu { accel, kernel_dir } => {
                spawn_qemu(plan, console, taps, *accel, kernel_dir).await
            }
            Driver::Bhyve => spawn_bhyve(plan, console, taps, first).await,
        }
    }

    /// Find the VM's hypervisor again after a labd restart from its `run.json`: alive, and
    /// its command line or title names this VM. `Err` says why the record is stale.
    pub async fn adopt(
        spec: &VmSpec,
        dir: &Path,
        console: &Arc<Console>,
    ) -> Result<Option<Self>, String> {
        let Ok(text) = std::fs::read_to_string(dir.join(RUN_FILE)) else {
            return Ok(None);
        };
        let record: RunRecord = serde_json::from_str(&text)
            .map_err(|e| format!("the run record cannot be read: {e}"))?;
        if record.uuid != spec.uuid {
            return Err(format!("the run record names uuid {}", record.uuid));
        }
        let driver: &'static str = match record.driver.as_str() {
            "qemu" => "qemu",
            "bhyve" => "bhyve",
            other => return Err(format!("the run record names driver '{other}'")),
        };
        identify(record.pid, driver, &spec.name, &spec.uuid).await?;
        let mut qmp = None;
        if driver == "qemu" {
            let paths = QemuPaths {
                dir: dir.to_owned(),
            };
            attach_socket_console(console, &paths.console_socket()).await;
            match Qmp::connect(&paths.qmp_socket(), CONNECT).await {
                Ok(q) => qmp = Some(q),
                Err(e) => {
                    tracing::warn!(vm = %spec.name, error = %e, "adopted VM without QMP: stop will kill it");
                }
            }
        } else {
            attach_nmdm_console(console, &spec.name);
        }
        Ok(Some(Self {
            pid: record.pid,
            driver,
            name: spec.name.clone(),
            process: Process::Adopted,
            qmp,
            started: Instant::now(),
            accel: None,
        }))
    }

    /// The driver's name.
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// How long this run has lasted.
    pub fn ran(&self) -> Duration {
        self.started.elapsed()
    }

    /// QEMU's `SHUTDOWN` reason, when it sent one.
    pub fn shutdown_reason(&self) -> Option<String> {
        self.qmp.as_ref().and_then(Qmp::shutdown_reason)
    }

    /// Wait for the hypervisor to end.
    pub async fn wait(&mut self) -> Ended {
        let ended = match &mut self.process {
            Process::Child(child) => match child.wait().await {
                Ok(s) => Ended {
                    text: s.to_string(),
                    code: s.code(),
                    known: true,
                },
                Err(e) => Ended {
                    text: format!("cannot wait: {e}"),
                    code: None,
                    known: false,
                },
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
                Ended {
                    text: "ended (not labd's child: status unknown)".to_owned(),
                    code: None,
                    known: false,
                }
            }
        };
        // QEMU writes its SHUTDOWN event before exiting; let the reader take it in.
        if let Some(q) = &self.qmp {
            q.closed(Duration::from_secs(1)).await;
        }
        ended
    }

    /// Press the ACPI power button.
    pub async fn power_button(&self) -> Result<(), String> {
        match self.driver {
            "qemu" => match &self.qmp {
                Some(q) => q.powerdown().await.map_err(|e| e.to_string()),
                None => Err("no QMP connection".to_owned()),
            },
            _ => signal(self.pid, nix::sys::signal::Signal::SIGTERM),
        }
    }

    /// Force the VM off: bhyve's own forced poweroff first (it cleans up its instance), then
    /// SIGKILL.
    pub async fn force_off(&self) {
        if self.driver == "bhyve" {
            let argv = bhyve::bhyvectl_force_poweroff_argv(&self.name);
            if let Err(e) = Runner::new(TOOL_TIMEOUT).run(&argv).await {
                log_line(format!("{e}"));
            }
            for _ in 0..20 {
                if !alive(self.pid) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The whole process group (the hypervisor leads its own, see `spawn`): nothing it
        // started may keep the VM's files open once it is forced off.
        let group = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        match nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL) {
            Ok(()) => log_line(format!("sent SIGKILL to process group {}", self.pid)),
            Err(e) => log_line(format!("kill -KILL -{}: {e}", self.pid)),
        }
    }

    /// What the end means (`killed`: labd forced it off).
    pub fn meaning(&self, ended: &Ended, killed: bool) -> ExitMeaning {
        let reason = self.shutdown_reason();
        meaning_of(self.driver, reason.as_deref(), ended, killed)
    }

    /// After the last run: the bhyve instance, if one remains, is destroyed.
    pub async fn clean_up(&self) {
        if self.driver == "bhyve" && Path::new(&bhyve::vmm_device(&self.name)).exists() {
            let argv = bhyve::bhyvectl_destroy_argv(&self.name);
            if let Err(e) = Runner::new(TOOL_TIMEOUT).run(&argv).await {
                tracing::warn!(vm = %self.name, error = %e, "cannot destroy the bhyve instance");
            }
        }
    }
}

/// Destroy the kernel instance a bhyve VM left behind when its process is gone (labd and
/// bhyve both died, or the host did not clean up): the VM is not running, so `/dev/vmm/NAME`
/// only holds its memory (reference/bhyve.md §10 item 6).
pub async fn destroy_stale_instance(driver: &Driver, name: &str) {
    if matches!(driver, Driver::Bhyve) && Path::new(&bhyve::vmm_device(name)).exists() {
        let argv = bhyve::bhyvectl_destroy_argv(name);
        match Runner::new(TOOL_TIMEOUT).run(&argv).await {
            Ok(_) => tracing::info!(vm = %name, "destroyed a stale bhyve instance"),
            Err(e) => {
                tracing::warn!(vm = %name, error = %e, "cannot destroy a stale bhyve instance")
            }
        }
    }
}

/// The meaning of an end (module docs' table).
fn meaning_of(driver: &str, reason: Option<&str>, ended: &Ended, killed: bool) -> ExitMeaning {
    if killed {
        return ExitMeaning::Poweroff;
    }
    if driver == "qemu"
        && let Some(m) = reason.map(qemu::shutdown_meaning)
        && m != ExitMeaning::Unknown
    {
        return m;
    }
    match (driver, ended.code) {
        (_, _) if !ended.known => ExitMeaning::Unknown,
        ("bhyve", Some(code)) => bhyve::bhyve_exit(code),
        // QEMU ended cleanly without a reason (QMP was not connected): the guest ended itself.
        (_, Some(0)) => ExitMeaning::Poweroff,
        _ => ExitMeaning::Fault,
    }
}

fn signal(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), String> {
    let p = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    nix::sys::signal::kill(p, sig).map_err(|e| format!("kill -{sig} {pid}: {e}"))
}

fn alive(pid: u32) -> bool {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    !matches!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Whether process `pid` lives and is the VM: QEMU's command line carries `-uuid UUID`;
/// bhyve retitles itself `bhyve: NAME` (setproctitle, reference/bhyve.md §1).
async fn identify(pid: u32, driver: &str, name: &str, uuid: &uuid::Uuid) -> Result<(), String> {
    let args = crate::host::procstat::command_line(pid)
        .await?
        .ok_or_else(|| format!("process {pid} is gone"))?;
    let ours = match driver {
        "bhyve" => args.trim() == format!("bhyve: {name}"),
        _ => args.contains(&uuid.to_string()),
    };
    if ours {
        Ok(())
    } else {
        Err(format!("process {pid} is not this VM: {}", args.trim()))
    }
}

/// A UEFI VM's per-VM vars file, copied once from the driver's template (its boot entries
/// then survive: reference/bhyve.md §10 item 1). The two drivers' files differ in format.
fn ensure_uefi_vars(spec: &VmSpec, dir: &Path, driver: &Driver) -> Result<(), Error> {
    if spec.loader != Loader::Uefi {
        return Ok(());
    }
    let vars = dir.join("uefi-vars.fd");
    if vars.exists() {
        return Ok(());
    }
    let template = match driver {
        Driver::Qemu { .. } => qemu::Ovmf::default().vars_template,
        Driver::Bhyve => bhyve::Firmware::default().vars_template,
    };
    std::fs::copy(&template, &vars).map_err(|e| {
        cannot_start(format!(
            "cannot copy the UEFI vars template {}: {e} (install the firmware: {})",
            template.display(),
            match driver {
                Driver::Qemu { .. } => "apt install ovmf",
                Driver::Bhyve => "pkg install bhyve-firmware",
            }
        ))
    })?;
    log_line(format!(
        "copied {} to {}",
        template.display(),
        vars.display()
    ));
    Ok(())
}

/// The VM's log for the hypervisor's own output, opened for appending twice (stdout, stderr).
fn log_files(dir: &Path, file: &str) -> Result<(std::fs::File, std::fs::File), Error> {
    let path = dir.join(file);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_error(&path, &e))?;
    let g = f.try_clone().map_err(|e| io_error(&path, &e))?;
    Ok((f, g))
}

/// Spawn the hypervisor's argv in its own process group (a signal to labd's group, such as a
/// terminal's Ctrl-C, does not reach the VM; labd stops VMs itself) and write `run.json`.
fn spawn(
    argv: &Argv,
    dir: &Path,
    log: &str,
    spec: &VmSpec,
    driver: &str,
) -> Result<(tokio::process::Child, u32), Error> {
    let words = argv.to_vec();
    let (out, err) = log_files(dir, log)?;
    log_line(format!("running {}", words.join(" ")));
    let child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Internal(format!("cannot run {}: {e}", words[0])))?;
    let pid = child.id().ok_or_else(|| {
        Error::Internal(format!("{} exited before it could be watched", words[0]))
    })?;
    let record = RunRecord {
        pid,
        driver: driver.to_owned(),
        uuid: spec.uuid,
    };
    let path = dir.join(RUN_FILE);
    let text = serde_json::to_string(&record).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| io_error(&path, &e))?;
    Ok((child, pid))
}

async fn spawn_qemu(
    plan: &StartPlan,
    console: &Arc<Console>,
    taps: &[String],
    accel: qemu::Accel,
    kernel_dir: &Path,
) -> Result<Run, Error> {
    let accel = accel.resolve(qemu::kvm_usable());
    let paths = QemuPaths {
        dir: plan.dir.clone(),
    };
    let argv = qemu::qemu_argv(
        &plan.spec,
        &paths,
        taps,
        accel,
        &qemu::Ovmf::default(),
        Some(kernel_dir),
    )
    .map_err(|e| cannot_start(e.to_string()))?;
    for sock in [paths.console_socket(), paths.qmp_socket()] {
        let _ = std::fs::remove_file(&sock);
    }
    let (child, pid) = spawn(&argv, &plan.dir, "qemu.log", &plan.spec, "qemu")?;
    // The console first: QEMU drops output while no client is connected.
    attach_socket_console(console, &paths.console_socket()).await;
    let qmp = match Qmp::connect(&paths.qmp_socket(), CONNECT).await {
        Ok(q) => Some(q),
        Err(e) => {
            log_line(format!("{e}; a stop will kill QEMU"));
            None
        }
    };
    Ok(Run {
        pid,
        driver: "qemu",
        name: plan.spec.name.clone(),
        process: Process::Child(child),
        qmp,
        started: Instant::now(),
        accel: Some(accel.as_str()),
    })
}

async fn spawn_bhyve(
    plan: &StartPlan,
    console: &Arc<Console>,
    taps: &[String],
    first: bool,
) -> Result<Run, Error> {
    let spec = &plan.spec;
    let paths = VmPaths {
        dir: plan.dir.clone(),
    };
    let mut cmds = bhyve::sequence(spec, &paths, taps, &bhyve::Firmware::default())
        .map_err(|e| cannot_start(e.to_string()))?;
    let bhyve_argv = cmds
        .pop()
        .ok_or_else(|| Error::Internal("empty bhyve sequence".to_owned()))?;
    let runner = Runner::new(TOOL_TIMEOUT);
    let stale = Path::new(&bhyve::vmm_device(&spec.name)).exists();
    // cmds[0] is `bhyvectl --destroy`: only for an instance left over (always before the
    // first run; between reboots only for loader guests, reference/bhyve.md §2 step 1).
    let mut rest = cmds.into_iter();
    if let Some(destroy) = rest.next()
        && stale
        && (first || bhyve::destroy_between_boots(spec))
    {
        runner
            .run(&destroy)
            .await
            .map_err(|e| cannot_start(format!("cannot destroy the stale instance: {e}")))?;
    }
    // The console before the loader: bhyveload prints to it too.
    attach_nmdm_console(console, &spec.name);
    for loader in rest {
        runner
            .run(&loader)
            .await
            .map_err(|e| cannot_start(format!("the loader failed: {e}")))?;
    }
    let (child, pid) = spawn(&bhyve_argv, &plan.dir, "bhyve.log", spec, "bhyve")?;
    Ok(Run {
        pid,
        driver: "bhyve",
        name: spec.name.clone(),
        process: Process::Child(child),
        qmp: None,
        started: Instant::now(),
        accel: None,
    })
}

/// Connect to QEMU's console socket (retrying while QEMU creates it) and feed `console`.
async fn attach_socket_console(console: &Arc<Console>, socket: &Path) {
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

/// Open the `B` side of the VM's nmdm pair (once per supervision: it stays open across
/// reboots) and feed `console` from it.
fn attach_nmdm_console(console: &Arc<Console>, name: &str) {
    if console.is_fed() {
        return;
    }
    let peer = bhyve::console_peer(name);
    match Tty::open(Path::new(&peer)) {
        Ok(tty) => {
            log_line(format!(
                "console {peer} -> {}",
                console.log_path().display()
            ));
            let console = Arc::clone(console);
            tokio::spawn(async move { console.feed(tty).await });
        }
        Err(e) => log_line(format!(
            "cannot open the console {peer}: {e}; it is not logged"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(code: Option<i32>, known: bool) -> Ended {
        Ended {
            text: String::new(),
            code,
            known,
        }
    }

    #[test]
    fn qemu_ends_mean_what_qmp_says_first() {
        let ok = ended(Some(0), true);
        assert_eq!(
            meaning_of("qemu", Some("guest-reset"), &ok, false),
            ExitMeaning::Reboot
        );
        assert_eq!(
            meaning_of("qemu", Some("guest-shutdown"), &ok, false),
            ExitMeaning::Poweroff
        );
        assert_eq!(
            meaning_of("qemu", Some("guest-panic"), &ok, false),
            ExitMeaning::Fault
        );
        assert_eq!(meaning_of("qemu", None, &ok, false), ExitMeaning::Poweroff);
        assert_eq!(
            meaning_of("qemu", None, &ended(None, true), false),
            ExitMeaning::Fault
        );
        assert_eq!(
            meaning_of("qemu", None, &ended(None, true), true),
            ExitMeaning::Poweroff
        );
        // Adopted: the QMP reason still counts, else unknown.
        assert_eq!(
            meaning_of("qemu", Some("guest-reset"), &ended(None, false), false),
            ExitMeaning::Reboot
        );
        assert_eq!(
            meaning_of("qemu", None, &ended(None, false), false),
            ExitMeaning::Unknown
        );
    }

    #[test]
    fn bhyve_ends_mean_its_exit_status() {
        let m = |code, known| meaning_of("bhyve", None, &ended(code, known), false);
        assert_eq!(m(Some(0), true), ExitMeaning::Reboot);
        assert_eq!(m(Some(1), true), ExitMeaning::Poweroff);
        assert_eq!(m(Some(2), true), ExitMeaning::Halt);
        assert_eq!(m(Some(3), true), ExitMeaning::Fault);
        assert_eq!(m(Some(4), true), ExitMeaning::Fault);
        assert_eq!(m(None, true), ExitMeaning::Fault);
        assert_eq!(m(None, false), ExitMeaning::Unknown);
        assert_eq!(
            meaning_of("bhyve", None, &ended(None, true), true),
            ExitMeaning::Poweroff
        );
    }
}
