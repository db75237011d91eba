//! The QEMU driver's command line, as a pure function of a [`VmSpec`] (Linux hosts and tests).
//!
//! The same spec the bhyve driver starts ([`crate::host::bhyve`]) becomes one
//! `qemu-system-x86_64` argv here, golden-tested (`qemu/fixtures/`, every option cited there).
//! Nothing here runs a program or looks at the host, except [`kvm_usable`], which the caller
//! uses to resolve [`Accel::Auto`]; the supervisor decides *when* the command runs.
//!
//! # The argv
//!
//! * Identity: `-name guest=NAME,process=labd-vm-NAME` (the kernel keeps the first 15 bytes of
//!   the process name; the supervisor's identity check uses `-uuid`, which is in
//!   `/proc/PID/cmdline` in full), `-uuid UUID` (SMBIOS, like bhyve's `-U`).
//! * Machine: `-machine q35,accel=tcg|kvm`, `-cpu max` under TCG (every feature TCG emulates)
//!   or `-cpu host` under KVM, `-smp N[,sockets=S,cores=C,threads=T]` (all three written when
//!   the spec gives any, absent ones as 1, which is the spec's rule; QEMU would otherwise
//!   derive the missing ones differently), `-m <MiB>M`.
//! * Nothing implicit: `-nodefaults -no-user-config -display none` (no default NIC, VGA,
//!   serial, CD-ROM or config file), `-sandbox on,…` (seccomp: no obsolete syscalls, no
//!   privilege change, no spawning, no resource control; labd passes `script=no` so QEMU never
//!   spawns anything).
//! * `-no-reboot`: a guest reboot ends QEMU (status 0) instead of resetting in place, and the
//!   supervisor starts it again, as it does when bhyve exits 0 (reference/test-guest.md: "a
//!   guest reboot with `-no-reboot` also ends QEMU, so a supervisor must tell the two apart":
//!   by the QMP `SHUTDOWN` event's `reason`, see [`shutdown_meaning`]). Each boot therefore
//!   runs the current spec, and reboots and poweroffs go through one code path for both drivers.
//! * Console: `-chardev socket,id=console,path=<dir>/console.sock,server=on,wait=off` and
//!   `-serial chardev:console` (the guest's ttyS0/COM1). labd connects, logs and fans the
//!   console out itself (no `logfile=`). With `wait=off` QEMU does not buffer output while no
//!   client is connected: labd connects as soon as the socket exists.
//! * QMP: `-chardev socket,id=qmp,path=<dir>/qmp.sock,server=on,wait=off` and
//!   `-mon chardev=qmp,mode=control` (the long form of `-qmp unix:…,server=on,wait=off`, so
//!   both sockets are written and escaped the same way). Stop = [`QMP_POWERDOWN`] (the ACPI
//!   power button), force = [`QMP_QUIT`] or SIGKILL.
//! * UEFI: OVMF as two pflash drives, the code read-only and shared, the vars the per-VM
//!   `<dir>/uefi-vars.fd` (copied once from [`Ovmf::vars_template`]). Direct kernel boot:
//!   `-kernel`, `-initrd`, `-append`, relative file names taken from the test-guest directory.
//!   `loader = "bhyveload"` is refused: FreeBSD guests boot under QEMU with UEFI.
//! * Disks: `-drive file=…,if=none,id=diskN,format=raw,cache=writeback,discard=unmap` for a
//!   sparse file, `file=/dev/zvol/<pool>/…/diskN,…,cache=none,…` for a zvol (`format=raw` stops
//!   QEMU from probing a guest-written image for a format). For a file `cache=writeback`, QEMU's
//!   default, because unlike `cache=none` it needs no `O_DIRECT`, which zfs-fuse and older
//!   OpenZFS do not offer on files. A zvol is a block device, where the kernel's block layer
//!   provides `O_DIRECT` whatever the ZFS, and `cache=none` (`cache.direct=on`) keeps the
//!   host's page cache out: ZFS's ARC already caches the volume, so writeback would cache it
//!   twice. Both keep `cache.no-flush=off`, so guest flushes reach ZFS. `discard=unmap` passes
//!   the guest's TRIM down: holes punched in the sparse file, blocks freed in the sparse volume
//!   (zvols take discards). Then a device:
//!   `virtio-blk-pci`, `nvme` (with `serial=labd-diskN`, which QEMU requires), or `ide-hd` on a
//!   port of the AHCI controller q35 always has (`ide.0` to `ide.5`). The boot disk gets
//!   `bootindex=1` (OVMF follows it). The cloud-init seed comes after the disks, read-only:
//!   `virtio-blk-pci`, or an `ide-cd` on the next AHCI port.
//! * NICs: `-netdev tap,id=netN,ifname=TAP,script=no,downscript=no` (labd creates and removes
//!   the taps itself) and `-device virtio-net-pci|e1000,netdev=netN,mac=MAC`.
//!
//! Paths inside a QEMU option value have `,` doubled (QEMU's escape); paths that are not UTF-8
//! are refused, as are socket paths longer than a Unix socket address holds.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::core::vmspec::{Disk, DiskBacking, DiskBus, Loader, NicModel, SeedBus, VmSpec};
use crate::host::bhyve::ExitMeaning;
use crate::host::runner::Argv;

/// The QEMU program.
pub const QEMU: &str = "qemu-system-x86_64";
/// The device node KVM needs.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Ports of q35's built-in AHCI controller (`ide.0` to `ide.5`).
pub const AHCI_PORTS: usize = 6;
/// Longest Unix socket path QEMU can bind: `sun_path` is 108 bytes on Linux, with the NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// The first QMP command on a new connection (leaves capabilities negotiation mode).
pub const QMP_CAPABILITIES: &str = r#"{"execute":"qmp_capabilities"}"#;
/// Press the ACPI power button (the graceful stop).
pub const QMP_POWERDOWN: &str = r#"{"execute":"system_powerdown"}"#;
/// End QEMU at once (the forced stop; the guest gets no say).
pub const QMP_QUIT: &str = r#"{"execute":"quit"}"#;

/// Which accelerator QEMU uses (`accel` in labd's configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization (`/dev/kvm`).
    Kvm,
    /// Software emulation. The tests use it: on the CI machines `/dev/kvm` opens but guests
    /// hang under it (reference/test-guest.md).
    Tcg,
    /// KVM when [`kvm_usable`], else TCG; resolved by the caller at run time with
    /// [`Accel::resolve`], never passed to [`qemu_argv`].
    #[default]
    Auto,
}

impl Accel {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
            Accel::Auto => "auto",
        }
    }

    /// The concrete accelerator: `Auto` becomes `Kvm` when `kvm_usable`, else `Tcg`.
    pub fn resolve(self, kvm_usable: bool) -> Accel {
        match self {
            Accel::Auto if kvm_usable => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Accel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            "auto" => Ok(Accel::Auto),
            _ => Err(format!(
                "unknown accel '{}'; use kvm, tcg or auto",
                s.escape_debug()
            )),
        }
    }
}

/// Whether `/dev/kvm` opens for reading and writing: what [`Accel::Auto`] goes by. It does not
/// prove that guests run under KVM (reference/test-guest.md: on the CI machines it opens but
/// guests hang), which is why `accel` can be set to `tcg`.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .is_ok()
}

/// The UEFI firmware (OVMF): code (read-only, shared) and the template of the per-VM vars file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ovmf {
    /// Firmware code, the read-only pflash unit 0.
    pub code: PathBuf,
    /// Vars template, copied once to `<dir>/uefi-vars.fd` (pflash unit 1). It must come from
    /// the same OVMF build as `code` (the 4M code needs the 4M vars).
    pub vars_template: PathBuf,
}

impl Default for Ovmf {
    /// The files of Debian 12's `ovmf` package (2022.11-6+deb12u2, checked with `dpkg -c`):
    /// the 4 MiB build without Secure Boot, which needs no SMM. The package also ships the
    /// 2 MiB `OVMF_CODE.fd`/`OVMF_VARS.fd` and Secure Boot variants.
    fn default() -> Self {
        Self {
            code: PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            vars_template: PathBuf::from("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        }
    }
}

/// Where a VM's files are (the same directory layout as [`crate::host::bhyve::VmPaths`], plus
/// the two sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuPaths {
    /// The mountpoint of the VM's dataset: `vm.toml`, disks, `uefi-vars.fd`, `seed.iso`.
    pub dir: PathBuf,
}

impl QemuPaths {
    /// The serial console's Unix socket (QEMU listens, labd connects).
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// The QMP Unix socket (QEMU listens, labd connects).
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }

    /// A disk file of the VM.
    pub fn disk(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The cloud-init seed.
    pub fn seed(&self) -> PathBuf {
        self.dir.join("seed.iso")
    }

    /// The per-VM UEFI vars file.
    pub fn uefi_vars(&self) -> PathBuf {
        self.dir.join("uefi-vars.fd")
    }
}

/// A VM the QEMU driver cannot start as specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QemuError {
    /// bhyveload exists only under bhyve.
    #[error(
        "VM '{0}': loader \"bhyveload\" is bhyve only; boot FreeBSD guests under QEMU with loader \"uefi\""
    )]
    Bhyveload(String),
    /// [`Accel::Auto`] reached the builder; the caller resolves it first.
    #[error("accel \"auto\" must be resolved to kvm or tcg before building the QEMU command")]
    UnresolvedAccel,
    /// The caller passed a different number of taps than the VM has NICs.
    #[error("VM '{name}' has {nics} NICs but {taps} taps were given")]
    TapCount {
        /// The VM.
        name: String,
        /// NICs in the spec.
        nics: usize,
        /// Taps given.
        taps: usize,
    },
    /// `loader = "kernel"` without a kernel file (a spec that skipped validation).
    #[error("VM '{0}': loader \"kernel\" needs a kernel file")]
    NoKernel(String),
    /// A relative kernel or initrd name but no test-guest directory configured.
    #[error("VM '{name}': '{file}' is a relative name but no test-guest directory is configured")]
    NoKernelDir {
        /// The VM.
        name: String,
        /// The file name from the spec.
        file: String,
    },
    /// `[graphics]` (a framebuffer with VNC) is not implemented by the QEMU driver yet.
    #[error("VM '{0}': [graphics] is supported by the bhyve driver only, so far")]
    Graphics(String),
    /// More AHCI devices than q35's controller has ports.
    #[error("VM '{0}': more than {AHCI_PORTS} AHCI disks and CD-ROMs")]
    OutOfAhciPorts(String),
    /// A zvol disk whose volume the spec does not name (a spec labd did not create).
    #[error("VM '{name}': zvol disk '{file}' names no volume")]
    NoVolume {
        /// The VM.
        name: String,
        /// The disk's name.
        file: String,
    },
    /// A path that cannot be passed to QEMU.
    #[error("path '{}' cannot be given to QEMU: {why}", .path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
}

/// What the `reason` of QMP's `SHUTDOWN` event says happened (QEMU's `ShutdownCause`;
/// reference/test-guest.md: `guest-shutdown`, `guest-reset`, `host-qmp-quit`). QEMU exits 0 in
/// every one of these cases under `-no-reboot`, so the event, not the status, tells them apart.
///
/// * `guest-shutdown` (ACPI poweroff, `poweroff -f`): poweroff.
/// * `guest-reset` (guest reboot; also a triple fault, which QEMU treats as a reset),
///   `host-qmp-system-reset`, `subsystem-reset`: reboot.
/// * `host-qmp-quit`, `host-signal`, `host-ui`: stopped from the host (labd's forced stop, or
///   someone else's signal), like bhyve's exit 1 after `bhyvectl --force-poweroff`: poweroff.
/// * `guest-panic`, `host-error`: fault.
/// * anything else (`none`, causes newer QEMUs add): unknown.
pub fn shutdown_meaning(reason: &str) -> ExitMeaning {
    match reason {
        "guest-shutdown" | "host-qmp-quit" | "host-signal" | "host-ui" => ExitMeaning::Poweroff,
        "guest-reset" | "host-qmp-system-reset" | "subsystem-reset" => ExitMeaning::Reboot,
        "guest-panic" | "host-error" => ExitMeaning::Fault,
        _ => ExitMeaning::Unknown,
    }
}

/// The QEMU command for `spec` (module docs). `taps[i]` is the tap of NIC `i`; `accel` must be
/// [`Accel::Kvm`] or [`Accel::Tcg`] ([`Accel::resolve`]); `kernel_dir` is the test-guest
/// directory relative `kernel`/`initrd` names are taken from (`loader = "kernel"` only).
pub fn qemu_argv(
    spec: &VmSpec,
    paths: &QemuPaths,
    taps: &[String],
    accel: Accel,
    ovmf: &Ovmf,
    kernel_dir: Option<&Path>,
) -> Result<Argv, QemuError> {
    let words = qemu_words(spec, paths, taps, accel, ovmf, kernel_dir)?;
    let mut it = words.into_iter();
    let program = it.next().unwrap_or_default();
    Ok(Argv::new(program).args(it))
}

/// A path as a whole argument (`-kernel PATH`): UTF-8 only.
fn path_str(p: &Path) -> Result<&str, QemuError> {
    p.to_str().ok_or_else(|| QemuError::BadPath {
        path: p.to_owned(),
        why: "it is not valid UTF-8",
    })
}

/// A path inside a comma-separated option value: QEMU reads `,,` as a literal comma.
fn opt_path(p: &Path) -> Result<String, QemuError> {
    Ok(path_str(p)?.replace(',', ",,"))
}

/// A Unix socket path, which must fit a socket address.
fn socket_path(p: &Path) -> Result<String, QemuError> {
    if path_str(p)?.len() > MAX_SOCKET_PATH {
        return Err(QemuError::BadPath {
            path: p.to_owned(),
            why: "it is longer than a Unix socket address holds (107 bytes)",
        });
    }
    opt_path(p)
}

/// A kernel or initrd file: absolute as given, relative in `kernel_dir`.
fn kernel_file(spec: &VmSpec, file: &str, kernel_dir: Option<&Path>) -> Result<String, QemuError> {
    let p = Path::new(file);
    let full = if p.is_absolute() {
        p.to_owned()
    } else {
        kernel_dir
            .ok_or_else(|| QemuError::NoKernelDir {
                name: spec.name.clone(),
                file: file.to_owned(),
            })?
            .join(p)
    };
    Ok(path_str(&full)?.to_owned())
}

/// The `-drive` value of disk `i` (module docs): a file in the VM's directory with the host's
/// page cache, or a zvol's device node without it.
fn disk_drive(spec: &VmSpec, paths: &QemuPaths, i: usize, d: &Disk) -> Result<String, QemuError> {
    let (file, cache) = match (d.backing, d.device()) {
        (DiskBacking::File, _) => (opt_path(&paths.disk(&d.file))?, "writeback"),
        (DiskBacking::Zvol, Some(device)) => (opt_path(Path::new(&device))?, "none"),
        (DiskBacking::Zvol, None) => {
            return Err(QemuError::NoVolume {
                name: spec.name.clone(),
                file: d.file.clone(),
            });
        }
    };
    Ok(format!(
        "file={file},if=none,id=disk{i},format=raw,cache={cache},discard=unmap"
    ))
}

/// Hands out ports of q35's AHCI controller.
struct AhciPorts {
    next: usize,
    name: String,
}

impl AhciPorts {
    fn take(&mut self) -> Result<String, QemuError> {
        if self.next >= AHCI_PORTS {
            return Err(QemuError::OutOfAhciPorts(self.name.clone()));
        }
        let bus = format!("ide.{}", self.next);
        self.next += 1;
        Ok(bus)
    }
}

fn qemu_words(
    spec: &VmSpec,
    paths: &QemuPaths,
    taps: &[String],
    accel: Accel,
    ovmf: &Ovmf,
    kernel_dir: Option<&Path>,
) -> Result<Vec<String>, QemuError> {
    if spec.loader == Loader::Bhyveload {
        return Err(QemuError::Bhyveload(spec.name.clone()));
    }
    let (accel_name, cpu_model) = match accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
        Accel::Auto => return Err(QemuError::UnresolvedAccel),
    };
    if spec.graphics.is_some() {
        return Err(QemuError::Graphics(spec.name.clone()));
    }
    if taps.len() != spec.nics.len() {
        return Err(QemuError::TapCount {
            name: spec.name.clone(),
            nics: spec.nics.len(),
            taps: taps.len(),
        });
    }

    let mut w: Vec<String> = Vec::new();
    let push = |w: &mut Vec<String>, opt: &str, val: String| {
        w.push(opt.to_owned());
        w.push(val);
    };
    w.push(QEMU.to_owned());
    push(
        &mut w,
        "-name",
        format!("guest={0},process=labd-vm-{0}", spec.name),
    );
    push(&mut w, "-uuid", spec.uuid.to_string());
    push(&mut w, "-machine", format!("q35,accel={accel_name}"));
    push(&mut w, "-cpu", cpu_model.to_owned());

    let c = &spec.cpu;
    let mut smp = c.count.to_string();
    if c.sockets.is_some() || c.cores.is_some() || c.threads.is_some() {
        smp.push_str(&format!(
            ",sockets={},cores={},threads={}",
            c.sockets.unwrap_or(1),
            c.cores.unwrap_or(1),
            c.threads.unwrap_or(1)
        ));
    }
    push(&mut w, "-smp", smp);
    // The spec guarantees whole MiB.
    push(
        &mut w,
        "-m",
        format!("{}M", spec.memory.bytes() / (1024 * 1024)),
    );
    w.extend(
        [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-no-reboot",
        ]
        .map(str::to_owned),
    );

    // Console and QMP.
    push(
        &mut w,
        "-chardev",
        format!(
            "socket,id=console,path={},server=on,wait=off",
            socket_path(&paths.console_socket())?
        ),
    );
    push(&mut w, "-serial", "chardev:console".to_owned());
    push(
        &mut w,
        "-chardev",
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            socket_path(&paths.qmp_socket())?
        ),
    );
    push(&mut w, "-mon", "chardev=qmp,mode=control".to_owned());

    // Firmware or kernel.
    match spec.loader {
        Loader::Uefi => {
            push(
                &mut w,
                "-drive",
                format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    opt_path(&ovmf.code)?
                ),
            );
            push(
                &mut w,
                "-drive",
                format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    opt_path(&paths.uefi_vars())?
                ),
            );
        }
        Loader::Kernel => {
            let kernel = spec
                .kernel
                .as_deref()
                .ok_or_else(|| QemuError::NoKernel(spec.name.clone()))?;
            push(&mut w, "-kernel", kernel_file(spec, kernel, kernel_dir)?);
            if let Some(initrd) = spec.initrd.as_deref() {
                push(&mut w, "-initrd", kernel_file(spec, initrd, kernel_dir)?);
            }
            if let Some(cmdline) = spec.cmdline.as_deref() {
                push(&mut w, "-append", cmdline.to_owned());
            }
        }
        Loader::Bhyveload => return Err(QemuError::Bhyveload(spec.name.clone())),
    }

    // Disks, then the seed.
    let mut ahci = AhciPorts {
        next: 0,
        name: spec.name.clone(),
    };
    let boot = spec.boot_disk();
    for (i, d) in spec.disks.iter().enumerate() {
        let id = format!("disk{i}");
        push(&mut w, "-drive", disk_drive(spec, paths, i, d)?);
        let mut dev = match d.bus {
            DiskBus::VirtioBlk => format!("virtio-blk-pci,drive={id}"),
            DiskBus::Nvme => format!("nvme,drive={id},serial=labd-{id}"),
            DiskBus::AhciHd => format!("ide-hd,drive={id},bus={}", ahci.take()?),
        };
        if boot == Some(i) && spec.loader == Loader::Uefi {
            dev.push_str(",bootindex=1");
        }
        push(&mut w, "-device", dev);
    }
    if let Some(bus) = spec.seed() {
        let seed = opt_path(&paths.seed())?;
        match bus {
            SeedBus::VirtioBlk => {
                push(
                    &mut w,
                    "-drive",
                    format!("file={seed},if=none,id=seed,format=raw,readonly=on"),
                );
                push(&mut w, "-device", "virtio-blk-pci,drive=seed".to_owned());
            }
            SeedBus::AhciCd => {
                push(
                    &mut w,
                    "-drive",
                    format!("file={seed},if=none,id=seed,format=raw,readonly=on,media=cdrom"),
                );
                push(
                    &mut w,
                    "-device",
                    format!("ide-cd,drive=seed,bus={}", ahci.take()?),
                );
            }
        }
    }

    // NICs.
    for (i, (nic, tap)) in spec.nics.iter().zip(taps).enumerate() {
        push(
            &mut w,
            "-netdev",
            format!(
                "tap,id=net{i},ifname={},script=no,downscript=no",
                tap.replace(',', ",,")
            ),
        );
        let model = match nic.model {
            NicModel::VirtioNet => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        };
        push(
            &mut w,
            "-device",
            format!("{model},netdev=net{i},mac={}", nic.mac),
        );
    }
    Ok(w)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::vmspec::{Graphics, Template, instantiate};
    use std::net::IpAddr;
    use uuid::Uuid;

    const UUID: u128 = 0x5f0c_1b2a_3c4d_4e5f_8a6b_7c8d_9e0f_1a2b;
    const TINY: &str = include_str!("../../../vm-templates/tiny.toml");
    const DOCKER_HOST: &str = include_str!("../../../vm-templates/docker-host.toml");
    const DEV: &str = include_str!("../../../vm-templates/dev.toml");
    const TEST_GUEST_DIR: &str = "/var/cache/labd-test-guest";

    fn spec(template_text: &str, template: &str, name: &str) -> VmSpec {
        let t = Template::parse(template_text).unwrap();
        instantiate(&t, template, name, Uuid::from_u128(UUID)).unwrap()
    }

    fn paths(name: &str) -> QemuPaths {
        QemuPaths {
            dir: PathBuf::from(format!("/tank/labd/vm/{name}")),
        }
    }

    fn taps(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tap{i}")).collect()
    }

    fn build(spec: &VmSpec, accel: Accel) -> Result<Vec<String>, QemuError> {
        qemu_words(
            spec,
            &paths(&spec.name),
            &taps(spec.nics.len()),
            accel,
            &Ovmf::default(),
            Some(Path::new(TEST_GUEST_DIR)),
        )
    }

    /// The fixture without its leading `#` lines.
    fn golden(text: &str) -> String {
        text.lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn check(spec: &VmSpec, accel: Accel, fixture: &str) {
        let words = build(spec, accel).unwrap();
        let got: String = words.iter().map(|a| format!("{a}\n")).collect();
        let want = golden(fixture);
        assert!(
            got == want,
            "argv differs from the fixture\n--- got ---\n{got}--- want ---\n{want}"
        );
        // The public Argv API builds exactly these words.
        let argv = qemu_argv(
            spec,
            &paths(&spec.name),
            &taps(spec.nics.len()),
            accel,
            &Ovmf::default(),
            Some(Path::new(TEST_GUEST_DIR)),
        )
        .unwrap();
        assert_eq!(argv.to_vec(), words);
    }

    #[test]
    fn golden_tiny_kernel_tcg() {
        let s = spec(TINY, "tiny", "tiny");
        check(
            &s,
            Accel::Tcg,
            include_str!("qemu/fixtures/tiny-kernel-tcg.argv"),
        );
    }

    #[test]
    fn golden_docker_host_uefi_tcg() {
        let s = spec(DOCKER_HOST, "docker-host", "docker-host");
        check(
            &s,
            Accel::Tcg,
            include_str!("qemu/fixtures/docker-host-uefi-tcg.argv"),
        );
    }

    #[test]
    fn golden_dev_two_disks_two_nics_kvm() {
        let s = spec(DEV, "dev", "dev");
        check(
            &s,
            Accel::Kvm,
            include_str!("qemu/fixtures/dev-two-disks-two-nics-kvm.argv"),
        );
    }

    const ZVOL: &str = r#"
description = "UEFI guest with a zvol boot disk and a file data disk"
loader = "uefi"
memory = "512M"
[cpu]
count = 1
[[disk]]
size = "1G"
backing = "zvol"
[[disk]]
size = "1G"
"#;

    #[test]
    fn golden_zvol_and_file_disks_uefi_tcg() {
        let mut s = spec(ZVOL, "zvol", "vol");
        assert_eq!(
            build(&s, Accel::Tcg).unwrap_err(),
            QemuError::NoVolume {
                name: "vol".to_owned(),
                file: "disk0".to_owned()
            }
        );
        s.place_volumes("tank/labd/vm/vol");
        check(
            &s,
            Accel::Tcg,
            include_str!("qemu/fixtures/zvol-and-file-disks-uefi-tcg.argv"),
        );
    }

    const AHCI: &str = r#"
loader = "uefi"
memory = "1536M"
[cpu]
count = 2
cores = 2
[cloud_init]
seed_bus = "ahci-cd"
[[disk]]
size = "10G"
bus = "ahci-hd"
[[disk]]
size = "10G"
bus = "ahci-hd"
boot = true
[[nic]]
switch = "lan"
model = "e1000"
"#;

    #[test]
    fn ahci_disks_seed_cd_and_e1000() {
        let s = spec(AHCI, "ahci", "win");
        let w = build(&s, Accel::Tcg).unwrap();
        let has = |a: &str| w.iter().any(|x| x == a);
        assert!(has("2,sockets=1,cores=2,threads=1"));
        assert!(has("1536M"));
        assert!(has("ide-hd,drive=disk0,bus=ide.0"));
        assert!(has("ide-hd,drive=disk1,bus=ide.1,bootindex=1"));
        assert!(has(
            "file=/tank/labd/vm/win/seed.iso,if=none,id=seed,format=raw,readonly=on,media=cdrom"
        ));
        assert!(has("ide-cd,drive=seed,bus=ide.2"));
        assert!(
            w.iter()
                .any(|a| a.starts_with("e1000,netdev=net0,mac=58:9c:fc:0"))
        );
        let mut many = s.clone();
        for i in 2..6 {
            let mut d = many.disks[0].clone();
            d.file = format!("disk{i}.img");
            d.boot = false;
            many.disks.push(d);
        }
        assert_eq!(
            build(&many, Accel::Tcg).unwrap_err(),
            QemuError::OutOfAhciPorts("win".to_owned())
        );
        many.cloud_init = None;
        build(&many, Accel::Tcg).unwrap();
    }

    #[test]
    fn kernel_paths() {
        let mut s = spec(TINY, "tiny", "t");
        let p = paths("t");
        let e = qemu_argv(&s, &p, &[], Accel::Tcg, &Ovmf::default(), None).unwrap_err();
        assert_eq!(
            e,
            QemuError::NoKernelDir {
                name: "t".to_owned(),
                file: "vmlinuz".to_owned()
            }
        );
        s.kernel = Some("/boot/vmlinuz".to_owned());
        s.initrd = None;
        s.cmdline = None;
        let a = qemu_argv(&s, &p, &[], Accel::Tcg, &Ovmf::default(), None).unwrap();
        let v = a.to_vec();
        assert!(v.windows(2).any(|w| w == ["-kernel", "/boot/vmlinuz"]));
        assert!(!v.iter().any(|x| x == "-initrd" || x == "-append"));
        s.kernel = None;
        assert_eq!(
            qemu_argv(&s, &p, &[], Accel::Tcg, &Ovmf::default(), None).unwrap_err(),
            QemuError::NoKernel("t".to_owned())
        );
    }

    #[test]
    fn refusals() {
        let fw = Ovmf::default();
        let tiny = spec(TINY, "tiny", "t");
        assert_eq!(
            qemu_argv(&tiny, &paths("t"), &[], Accel::Auto, &fw, None).unwrap_err(),
            QemuError::UnresolvedAccel
        );

        let mut fbsd = spec(DOCKER_HOST, "docker-host", "fbsd");
        fbsd.loader = Loader::Bhyveload;
        let e = qemu_argv(&fbsd, &paths("fbsd"), &taps(1), Accel::Tcg, &fw, None).unwrap_err();
        assert_eq!(e, QemuError::Bhyveload("fbsd".to_owned()));
        assert!(e.to_string().contains("uefi"), "{e}");

        let dh = spec(DOCKER_HOST, "docker-host", "dh");
        assert!(matches!(
            qemu_argv(&dh, &paths("dh"), &[], Accel::Tcg, &fw, None).unwrap_err(),
            QemuError::TapCount {
                nics: 1,
                taps: 0,
                ..
            }
        ));

        let mut gfx = dh.clone();
        gfx.graphics = Some(Graphics {
            listen: IpAddr::from([127, 0, 0, 1]),
            port: 5900,
            width: None,
            height: None,
            wait: false,
        });
        assert_eq!(
            qemu_argv(&gfx, &paths("dh"), &taps(1), Accel::Tcg, &fw, None).unwrap_err(),
            QemuError::Graphics("dh".to_owned())
        );

        let long = QemuPaths {
            dir: PathBuf::from(format!("/{}", "d".repeat(100))),
        };
        assert!(matches!(
            qemu_argv(&dh, &long, &taps(1), Accel::Tcg, &fw, None).unwrap_err(),
            QemuError::BadPath { .. }
        ));

        #[cfg(unix)]
        {
            use std::ffi::OsStr;
            use std::os::unix::ffi::OsStrExt;
            let bad = QemuPaths {
                dir: PathBuf::from(OsStr::from_bytes(b"/tank/\xff")),
            };
            let e = qemu_argv(&dh, &bad, &taps(1), Accel::Tcg, &fw, None).unwrap_err();
            assert!(e.to_string().contains("UTF-8"), "{e}");
        }
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let dh = spec(DOCKER_HOST, "docker-host", "dh");
        let p = QemuPaths {
            dir: PathBuf::from("/tank/a,b"),
        };
        let v = qemu_argv(&dh, &p, &taps(1), Accel::Tcg, &Ovmf::default(), None)
            .unwrap()
            .to_vec();
        assert!(v.contains(
            &"socket,id=console,path=/tank/a,,b/console.sock,server=on,wait=off".to_owned()
        ));
        assert!(v.contains(&"if=pflash,format=raw,unit=1,file=/tank/a,,b/uefi-vars.fd".to_owned()));
        assert!(
            v.iter()
                .any(|a| a.starts_with("file=/tank/a,,b/disk0.img,"))
        );
    }

    #[test]
    fn accel() {
        assert_eq!(Accel::Auto.resolve(true), Accel::Kvm);
        assert_eq!(Accel::Auto.resolve(false), Accel::Tcg);
        assert_eq!(Accel::Tcg.resolve(true), Accel::Tcg);
        assert_eq!(Accel::Kvm.resolve(false), Accel::Kvm);
        for a in [Accel::Kvm, Accel::Tcg, Accel::Auto] {
            assert_eq!(a.as_str().parse::<Accel>().unwrap(), a);
            assert_eq!(a.to_string(), a.as_str());
        }
        assert!("hvf".parse::<Accel>().is_err());
        assert_eq!(Accel::default(), Accel::Auto);
    }

    #[test]
    fn shutdown_reasons() {
        assert_eq!(shutdown_meaning("guest-shutdown"), ExitMeaning::Poweroff);
        assert_eq!(shutdown_meaning("guest-reset"), ExitMeaning::Reboot);
        assert_eq!(shutdown_meaning("host-qmp-quit"), ExitMeaning::Poweroff);
        assert_eq!(shutdown_meaning("host-signal"), ExitMeaning::Poweroff);
        assert_eq!(shutdown_meaning("guest-panic"), ExitMeaning::Fault);
        assert_eq!(shutdown_meaning("host-error"), ExitMeaning::Fault);
        assert_eq!(shutdown_meaning("snapshot-load"), ExitMeaning::Unknown);
    }

    #[test]
    fn small_paths() {
        let p = paths("x");
        assert_eq!(
            p.console_socket(),
            PathBuf::from("/tank/labd/vm/x/console.sock")
        );
        assert_eq!(p.qmp_socket(), PathBuf::from("/tank/labd/vm/x/qmp.sock"));
        assert_eq!(
            p.disk("disk0.img"),
            PathBuf::from("/tank/labd/vm/x/disk0.img")
        );
        assert_eq!(p.seed(), PathBuf::from("/tank/labd/vm/x/seed.iso"));
        assert_eq!(p.uefi_vars(), PathBuf::from("/tank/labd/vm/x/uefi-vars.fd"));
        assert_eq!(
            Ovmf::default().code,
            PathBuf::from("/usr/share/OVMF/OVMF_CODE_4M.fd")
        );
    }
}
