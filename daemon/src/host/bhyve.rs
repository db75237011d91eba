//! The bhyve driver's command lines, as pure functions of a [`VmSpec`].
//!
//! labd runs the same commands vm-bhyve runs (reference/bhyve.md §1), built here as argv
//! vectors and golden-tested (`bhyve/fixtures/`, every option cited there). Nothing here runs
//! a program or looks at the host; the supervisor decides *when* each command runs.
//!
//! # The argv
//!
//! The argument order is the one of the maintained fork `freebsd/vm-bhyve` (v1.7.x):
//! `bhyve <devices> <options> <console> NAME` (reference/bhyve.md §1 "Argument order"; the fork
//! puts devices first so that a device's `-s` precedes any `-o` that configures it).
//!
//! * Devices, every slot written `bus:slot:function` (fork, Jan 2025): `-s 0,hostbridge`,
//!   `-s 31,lpc`; disks from slot 4 (UEFI: one slot each; bhyveload: functions of slot 4), a
//!   file disk as its path in the VM's directory, a zvol disk as its device node
//!   `/dev/zvol/<pool>/…/diskN` (vm-bhyve's `zvol`/`sparse-zvol` disks, reference/bhyve.md §5;
//!   with `volmode=dev` it is a character device bhyve's block backend opens like a disk);
//!   the cloud-init seed as the next disk (read-only, `virtio-blk` or `ahci-cd`, see
//!   [`SeedBus`]); NICs as functions of the next slot, each with its `mac=`; with graphics,
//!   `fbuf` and `xhci,tablet` one slot each.
//! * Options: `-c N[,sockets=..,cores=..,threads=..] -m SIZE`, then `-A -H -P -w` (ACPI tables,
//!   yield on HLT, exit on PAUSE, ignore unimplemented MSRs). Current bhyve.8 makes ACPI tables
//!   the default and drops `-A` from the synopsis but still accepts it; labd keeps it because
//!   without ACPI tables on FreeBSD 13/14.0 a guest has no power button and the ACPI stop
//!   could never work. UEFI adds `-l bootrom,<firmware>,<dir>/uefi-vars.fd` (a per-VM vars
//!   file, so boot entries survive: reference/bhyve.md §10 item 1). Then `-U <uuid> -u`.
//! * Console: `-l com1,/dev/nmdm-NAME.1A`; labd holds the `B` side open (§4, §10 item 7).
//!
//! # The start sequence
//!
//! [`sequence`] returns, in order: `bhyvectl --vm=NAME --destroy` (which labd runs **only when
//! `/dev/vmm/NAME` exists**: a stale kernel instance left by a crash, §2, §10 item 6), then for
//! `loader = "bhyveload"` the `bhyveload` command, then `bhyve`. On a guest reboot (bhyve exits
//! 0) a bhyveload guest goes through the whole sequence again (the loader runs before every
//! boot); a UEFI guest is not destroyed between reboots ([`destroy_between_boots`], §2 step 1).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::core::vmspec::{ByteSize, Disk, DiskBacking, Loader, SeedBus, VmSpec};
use crate::host::runner::Argv;

/// The bhyve program.
pub const BHYVE: &str = "bhyve";
/// The loader for FreeBSD guests.
pub const BHYVELOAD: &str = "bhyveload";
/// The VM control program.
pub const BHYVECTL: &str = "bhyvectl";
/// First PCI slot used for disks (vm-bhyve's `start_slot`).
pub const START_SLOT: u8 = 4;
/// The LPC bridge's slot; devices must stay below it.
pub const LPC_SLOT: u8 = 31;
/// Seconds the FreeBSD loader waits before booting (`autoboot_delay`, vm-bhyve's default).
pub const AUTOBOOT_DELAY: u32 = 3;

/// The UEFI firmware: code (read-only, shared) and the template of the per-VM vars file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    /// Firmware code, given to `-l bootrom,`.
    pub code: PathBuf,
    /// Vars template, copied once to `<dir>/uefi-vars.fd` at create.
    pub vars_template: PathBuf,
}

impl Default for Firmware {
    /// The paths `sysutils/bhyve-firmware` (edk2-bhyve) provides (reference/bhyve.md §1 (a)).
    fn default() -> Self {
        Self {
            code: PathBuf::from("/usr/local/share/uefi-firmware/BHYVE_UEFI.fd"),
            vars_template: PathBuf::from("/usr/local/share/uefi-firmware/BHYVE_UEFI_VARS.fd"),
        }
    }
}

/// Where a VM's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// The mountpoint of the VM's dataset: `vm.toml`, disks, `uefi-vars.fd`, `seed.iso`.
    pub dir: PathBuf,
}

impl VmPaths {
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

/// The side of the VM's com1 null-modem pair that bhyve and the loader open.
pub fn console_device(name: &str) -> String {
    format!("/dev/nmdm-{name}.1A")
}

/// The side labd opens to read and write the console (`cu -l` uses it too).
pub fn console_peer(name: &str) -> String {
    format!("/dev/nmdm-{name}.1B")
}

/// The kernel's device for a running (or stale) VM instance.
pub fn vmm_device(name: &str) -> String {
    format!("/dev/vmm/{name}")
}

/// A VM the bhyve driver cannot start as specified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BhyveError {
    /// Direct kernel boot exists only in the QEMU driver.
    #[error(
        "VM '{0}': loader \"kernel\" (direct kernel boot) is supported by the QEMU driver only"
    )]
    KernelLoader(String),
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
    /// bhyveload needs a disk to load the kernel from.
    #[error("VM '{0}': bhyveload needs a boot disk")]
    NoBootDisk(String),
    /// The devices do not fit below the LPC slot.
    #[error("VM '{0}': its devices need more PCI slots than bhyve has")]
    OutOfSlots(String),
    /// A zvol disk whose volume the spec does not name (a spec labd did not create).
    #[error("VM '{name}': zvol disk '{file}' names no volume")]
    NoVolume {
        /// The VM.
        name: String,
        /// The disk's name.
        file: String,
    },
    /// A path that cannot be passed in a bhyve device option.
    #[error("path '{}' cannot be given to bhyve: {why}", .path.display())]
    BadPath {
        /// The path.
        path: PathBuf,
        /// Why.
        why: &'static str,
    },
}

/// What bhyve's exit status says happened (bhyve.8, EXIT STATUS; reference/bhyve.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMeaning {
    /// 0: the guest rebooted; start it again.
    Reboot,
    /// 1: the guest powered off.
    Poweroff,
    /// 2: the guest halted.
    Halt,
    /// 3 (triple fault) or 4 (bhyve exited on an error): the restart policy decides.
    Fault,
    /// Any other status.
    Unknown,
}

/// Map bhyve's exit status (bhyve.8 EXIT STATUS: 0 rebooted, 1 powered off, 2 halted,
/// 3 triple fault, 4 exited due to an error).
pub fn bhyve_exit(code: i32) -> ExitMeaning {
    match code {
        0 => ExitMeaning::Reboot,
        1 => ExitMeaning::Poweroff,
        2 => ExitMeaning::Halt,
        3 | 4 => ExitMeaning::Fault,
        _ => ExitMeaning::Unknown,
    }
}

/// bhyve.8's wording for an exit status, for the VM log and `labctl vm info`.
pub fn describe_exit(code: i32) -> &'static str {
    match code {
        0 => "rebooted",
        1 => "powered off",
        2 => "halted",
        3 => "triple fault",
        4 => "exited due to an error",
        _ => "unknown exit status",
    }
}

impl fmt::Display for ExitMeaning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExitMeaning::Reboot => "reboot",
            ExitMeaning::Poweroff => "poweroff",
            ExitMeaning::Halt => "halt",
            ExitMeaning::Fault => "fault",
            ExitMeaning::Unknown => "unknown",
        })
    }
}

/// Whether a stale instance is destroyed and the loader rerun between two boots of a running
/// VM (vm-bhyve: yes for bhyveload guests, no for UEFI ones; reference/bhyve.md §2 step 1).
pub fn destroy_between_boots(spec: &VmSpec) -> bool {
    spec.loader != Loader::Uefi
}

/// `bhyvectl --vm=NAME --destroy`: free a VM's kernel instance (run only when
/// `/dev/vmm/NAME` exists).
pub fn bhyvectl_destroy_argv(name: &str) -> Argv {
    Argv::new(BHYVECTL).args([format!("--vm={name}"), "--destroy".to_owned()])
}

/// `bhyvectl --vm=NAME --force-poweroff`: the forced stop after `stop_timeout`.
pub fn bhyvectl_force_poweroff_argv(name: &str) -> Argv {
    Argv::new(BHYVECTL).args([format!("--vm={name}"), "--force-poweroff".to_owned()])
}

/// `bhyvectl --vm=NAME --force-reset`: a hard reset (bhyve exits 0 and the VM boots again).
pub fn bhyvectl_force_reset_argv(name: &str) -> Argv {
    Argv::new(BHYVECTL).args([format!("--vm={name}"), "--force-reset".to_owned()])
}

/// The bhyve command for `spec` (module docs; reference/bhyve.md §1). `taps[i]` is the tap
/// of NIC `i`.
pub fn bhyve_argv(
    spec: &VmSpec,
    paths: &VmPaths,
    taps: &[String],
    firmware: &Firmware,
) -> Result<Argv, BhyveError> {
    bhyve_words(spec, paths, taps, firmware).map(to_argv)
}

/// The bhyveload command for `loader = "bhyveload"`: loads the FreeBSD kernel from the boot
/// disk (reference/bhyve.md §1 (b)).
pub fn bhyveload_argv(spec: &VmSpec, paths: &VmPaths) -> Result<Argv, BhyveError> {
    bhyveload_words(spec, paths).map(to_argv)
}

/// The whole start sequence, in order (module docs): destroy (only when `/dev/vmm/NAME`
/// exists), bhyveload (bhyveload guests), bhyve.
pub fn sequence(
    spec: &VmSpec,
    paths: &VmPaths,
    taps: &[String],
    firmware: &Firmware,
) -> Result<Vec<Argv>, BhyveError> {
    sequence_words(spec, paths, taps, firmware).map(|cmds| cmds.into_iter().map(to_argv).collect())
}

fn to_argv(words: Vec<String>) -> Argv {
    let mut it = words.into_iter();
    let program = it.next().unwrap_or_default();
    Argv::new(program).args(it)
}

fn sequence_words(
    spec: &VmSpec,
    paths: &VmPaths,
    taps: &[String],
    firmware: &Firmware,
) -> Result<Vec<Vec<String>>, BhyveError> {
    let mut out = vec![vec![
        BHYVECTL.to_owned(),
        format!("--vm={}", spec.name),
        "--destroy".to_owned(),
    ]];
    if spec.loader == Loader::Bhyveload {
        out.push(bhyveload_words(spec, paths)?);
    }
    out.push(bhyve_words(spec, paths, taps, firmware)?);
    Ok(out)
}

/// What bhyve and bhyveload open for disk `d`: a zvol's device node, else the file in the VM's
/// directory.
fn disk_path(spec: &VmSpec, paths: &VmPaths, d: &Disk) -> Result<String, BhyveError> {
    match (d.backing, d.device()) {
        (DiskBacking::File, _) => path_arg(&paths.disk(&d.file)),
        (_, Some(device)) => path_arg(Path::new(&device)),
        (_, None) => Err(BhyveError::NoVolume {
            name: spec.name.clone(),
            file: d.file.clone(),
        }),
    }
}

/// bhyve's `-m` size: whole GiB as `NG`, else MiB as `NM` (bhyve.8 `-m`; the spec guarantees
/// whole MiB).
fn memory_arg(size: ByteSize) -> String {
    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;
    let b = size.bytes();
    if b.is_multiple_of(GIB) {
        format!("{}G", b / GIB)
    } else {
        format!("{}M", b / MIB)
    }
}

/// A path as an argument inside a comma-separated device option.
fn path_arg(p: &Path) -> Result<String, BhyveError> {
    let s = p.to_str().ok_or_else(|| BhyveError::BadPath {
        path: p.to_owned(),
        why: "it is not valid UTF-8",
    })?;
    if s.contains(',') {
        return Err(BhyveError::BadPath {
            path: p.to_owned(),
            why: "bhyve splits device options on ','",
        });
    }
    Ok(s.to_owned())
}

fn bhyveload_words(spec: &VmSpec, paths: &VmPaths) -> Result<Vec<String>, BhyveError> {
    let boot = spec
        .boot_disk()
        .and_then(|i| spec.disks.get(i))
        .ok_or_else(|| BhyveError::NoBootDisk(spec.name.clone()))?;
    Ok(vec![
        BHYVELOAD.to_owned(),
        "-c".to_owned(),
        console_device(&spec.name),
        "-m".to_owned(),
        memory_arg(spec.memory),
        "-e".to_owned(),
        format!("smbios.system.uuid={}", spec.uuid),
        "-e".to_owned(),
        format!("autoboot_delay={AUTOBOOT_DELAY}"),
        "-e".to_owned(),
        format!("bhyve_vm_name={}", spec.name),
        "-d".to_owned(),
        disk_path(spec, paths, boot)?,
        spec.name.clone(),
    ])
}

/// Hands out PCI slots from [`START_SLOT`] up to below [`LPC_SLOT`].
struct Slots {
    next: u8,
    name: String,
}

impl Slots {
    fn take(&mut self) -> Result<u8, BhyveError> {
        if self.next >= LPC_SLOT {
            return Err(BhyveError::OutOfSlots(self.name.clone()));
        }
        let s = self.next;
        self.next += 1;
        Ok(s)
    }
}

fn bhyve_words(
    spec: &VmSpec,
    paths: &VmPaths,
    taps: &[String],
    firmware: &Firmware,
) -> Result<Vec<String>, BhyveError> {
    if spec.loader == Loader::Kernel {
        return Err(BhyveError::KernelLoader(spec.name.clone()));
    }
    if taps.len() != spec.nics.len() {
        return Err(BhyveError::TapCount {
            name: spec.name.clone(),
            nics: spec.nics.len(),
            taps: taps.len(),
        });
    }
    let uefi = spec.loader == Loader::Uefi;
    let mut w: Vec<String> = vec![BHYVE.to_owned()];
    let dev = |w: &mut Vec<String>, slot: u8, func: usize, rest: String| {
        w.push("-s".to_owned());
        w.push(format!("0:{slot}:{func},{rest}"));
    };
    w.extend(["-s", "0,hostbridge", "-s", "31,lpc"].map(str::to_owned));

    let mut slots = Slots {
        next: START_SLOT,
        name: spec.name.clone(),
    };
    // Disks, then the seed as the next disk: one slot each under UEFI, functions of one slot
    // otherwise (at most 7 disks + the seed = functions 0-7).
    let mut blocks: Vec<String> = Vec::with_capacity(spec.disks.len() + 1);
    for d in &spec.disks {
        blocks.push(format!("{},{}", d.bus.as_str(), disk_path(spec, paths, d)?));
    }
    if let Some(bus) = spec.seed() {
        let seed = path_arg(&paths.seed())?;
        blocks.push(match bus {
            SeedBus::VirtioBlk => format!("virtio-blk,{seed},ro"),
            SeedBus::AhciCd => format!("ahci-cd,{seed},ro"),
        });
    }
    if uefi {
        for b in blocks {
            let slot = slots.take()?;
            dev(&mut w, slot, 0, b);
        }
    } else if !blocks.is_empty() {
        let slot = slots.take()?;
        for (func, b) in blocks.into_iter().enumerate() {
            dev(&mut w, slot, func, b);
        }
    }
    // NICs: functions of the next slot.
    if !spec.nics.is_empty() {
        let slot = slots.take()?;
        for (func, (nic, tap)) in spec.nics.iter().zip(taps).enumerate() {
            dev(
                &mut w,
                slot,
                func,
                format!("{},{tap},mac={}", nic.model.as_str(), nic.mac),
            );
        }
    }
    // Framebuffer (UEFI only, checked by the spec) and a USB tablet for the VNC pointer.
    if let Some(g) = &spec.graphics {
        let listen = match g.listen {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let mut fbuf = format!("fbuf,tcp={listen}:{}", g.port);
        if let Some(width) = g.width {
            fbuf.push_str(&format!(",w={width}"));
        }
        if let Some(height) = g.height {
            fbuf.push_str(&format!(",h={height}"));
        }
        if g.wait {
            fbuf.push_str(",wait");
        }
        let slot = slots.take()?;
        dev(&mut w, slot, 0, fbuf);
        let slot = slots.take()?;
        dev(&mut w, slot, 0, "xhci,tablet".to_owned());
    }

    // Options.
    let mut cpu = spec.cpu.count.to_string();
    for (k, v) in [
        ("sockets", spec.cpu.sockets),
        ("cores", spec.cpu.cores),
        ("threads", spec.cpu.threads),
    ] {
        if let Some(v) = v {
            cpu.push_str(&format!(",{k}={v}"));
        }
    }
    w.extend([
        "-c".to_owned(),
        cpu,
        "-m".to_owned(),
        memory_arg(spec.memory),
    ]);
    w.extend(["-A", "-H", "-P", "-w"].map(str::to_owned));
    if uefi {
        w.push("-l".to_owned());
        w.push(format!(
            "bootrom,{},{}",
            path_arg(&firmware.code)?,
            path_arg(&paths.uefi_vars())?
        ));
    }
    w.extend([
        "-U".to_owned(),
        spec.uuid.to_string(),
        "-u".to_owned(),
        "-l".to_owned(),
        format!("com1,{}", console_device(&spec.name)),
        spec.name.clone(),
    ]);
    Ok(w)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::vmspec::{Template, instantiate};
    use uuid::Uuid;

    const UUID: u128 = 0x5f0c_1b2a_3c4d_4e5f_8a6b_7c8d_9e0f_1a2b;

    fn spec(template_text: &str, template: &str, name: &str) -> VmSpec {
        let t = Template::parse(template_text).unwrap();
        instantiate(&t, template, name, Uuid::from_u128(UUID)).unwrap()
    }

    fn paths(name: &str) -> VmPaths {
        VmPaths {
            dir: PathBuf::from(format!("/tank/labd/vm/{name}")),
        }
    }

    fn taps(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tap{i}")).collect()
    }

    /// One argument per line, commands separated by a blank line.
    fn render(cmds: &[Vec<String>]) -> String {
        cmds.iter()
            .map(|c| c.join("\n") + "\n")
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The fixture without its leading `#` lines.
    fn golden(text: &str) -> String {
        text.lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn check(spec: &VmSpec, fixture: &str) {
        let p = paths(&spec.name);
        let t = taps(spec.nics.len());
        let fw = Firmware::default();
        let words = sequence_words(spec, &p, &t, &fw).unwrap();
        let got = render(&words);
        let want = golden(fixture);
        assert!(
            got == want,
            "argv differs from the fixture\n--- got ---\n{got}--- want ---\n{want}"
        );
        // The public Argv API builds exactly these words.
        let argvs = sequence(spec, &p, &t, &fw).unwrap();
        let expected: Vec<Argv> = words.into_iter().map(to_argv).collect();
        assert_eq!(argvs, expected);
        assert_eq!(argvs.last(), Some(&bhyve_argv(spec, &p, &t, &fw).unwrap()));
        assert_eq!(argvs.first(), Some(&bhyvectl_destroy_argv(&spec.name)));
    }

    #[test]
    fn golden_uefi_docker_host() {
        let s = spec(
            include_str!("../../../vm-templates/docker-host.toml"),
            "docker-host",
            "docker-host",
        );
        check(&s, include_str!("bhyve/fixtures/uefi-docker-host.argv"));
    }

    #[test]
    fn golden_uefi_dev_two_disks_two_nics() {
        let s = spec(include_str!("../../../vm-templates/dev.toml"), "dev", "dev");
        check(
            &s,
            include_str!("bhyve/fixtures/uefi-dev-two-disks-two-nics.argv"),
        );
    }

    const FREEBSD: &str = r#"
description = "FreeBSD guest, as vm-bhyve's default template"
loader = "bhyveload"
memory = "256M"
[cpu]
count = 1
[[disk]]
size = "20G"
[[nic]]
switch = "public"
"#;

    #[test]
    fn golden_bhyveload_freebsd() {
        let s = spec(FREEBSD, "freebsd", "fbsd");
        check(&s, include_str!("bhyve/fixtures/bhyveload-freebsd.argv"));
        assert!(destroy_between_boots(&s));
        assert_eq!(
            bhyveload_argv(&s, &paths("fbsd")).unwrap().to_string(),
            format!(
                "bhyveload -c /dev/nmdm-fbsd.1A -m 256M -e smbios.system.uuid={} \
                 -e autoboot_delay=3 -e bhyve_vm_name=fbsd -d /tank/labd/vm/fbsd/disk0.img fbsd",
                Uuid::from_u128(UUID)
            )
        );
    }

    #[test]
    fn golden_bhyveload_freebsd_zvol() {
        let text = FREEBSD.replace("size = \"20G\"", "size = \"20G\"\nbacking = \"zvol\"");
        let mut s = spec(&text, "freebsd-zvol", "fbsd");
        // A zvol disk names no device until create records its volume.
        assert_eq!(
            bhyve_argv(&s, &paths("fbsd"), &taps(1), &Firmware::default()).unwrap_err(),
            BhyveError::NoVolume {
                name: "fbsd".to_owned(),
                file: "disk0".to_owned()
            }
        );
        s.place_volumes("tank/labd/vm/fbsd");
        check(
            &s,
            include_str!("bhyve/fixtures/bhyveload-freebsd-zvol.argv"),
        );
    }

    const DESKTOP: &str = r#"
description = "UEFI guest with a framebuffer, a CPU topology and an AHCI seed"
loader = "uefi"
memory = "1536M"
[cpu]
count = 4
sockets = 2
cores = 2
[graphics]
listen = "127.0.0.1"
port = 5901
width = 1024
height = 768
wait = true
[cloud_init]
seed_bus = "ahci-cd"
[[disk]]
image = "debian-12-generic-amd64.qcow2"
size = "30G"
bus = "ahci-hd"
[[nic]]
switch = "lan"
model = "e1000"
"#;

    #[test]
    fn golden_uefi_graphics() {
        let s = spec(DESKTOP, "desktop", "desk");
        check(&s, include_str!("bhyve/fixtures/uefi-graphics.argv"));
        assert!(!destroy_between_boots(&s));
    }

    #[test]
    fn bhyveload_puts_the_seed_on_the_disk_slot() {
        let text = format!("{FREEBSD}[cloud_init]\nuser = \"freebsd\"\n");
        let s = spec(&text, "freebsd", "fbsd");
        let w = bhyve_words(&s, &paths("fbsd"), &taps(1), &Firmware::default()).unwrap();
        assert!(w.contains(&"0:4:1,virtio-blk,/tank/labd/vm/fbsd/seed.iso,ro".to_owned()));
        assert!(
            w.iter()
                .any(|a| a.starts_with("0:5:0,virtio-net,tap0,mac=58:9c:fc:0"))
        );
    }

    #[test]
    fn refusals() {
        let tiny = spec(include_str!("../../../vm-templates/tiny.toml"), "tiny", "t");
        let fw = Firmware::default();
        assert_eq!(
            sequence(&tiny, &paths("t"), &[], &fw).unwrap_err(),
            BhyveError::KernelLoader("t".to_owned())
        );
        let s = spec(FREEBSD, "freebsd", "fbsd");
        assert!(matches!(
            bhyve_argv(&s, &paths("fbsd"), &[], &fw).unwrap_err(),
            BhyveError::TapCount {
                nics: 1,
                taps: 0,
                ..
            }
        ));
        let comma = VmPaths {
            dir: PathBuf::from("/tank/a,b"),
        };
        assert!(matches!(
            bhyve_argv(&s, &comma, &taps(1), &fw).unwrap_err(),
            BhyveError::BadPath { .. }
        ));
        let mut no_disk = s.clone();
        no_disk.disks.clear();
        assert_eq!(
            bhyveload_argv(&no_disk, &paths("fbsd")).unwrap_err(),
            BhyveError::NoBootDisk("fbsd".to_owned())
        );
    }

    #[test]
    fn exit_codes() {
        assert_eq!(bhyve_exit(0), ExitMeaning::Reboot);
        assert_eq!(bhyve_exit(1), ExitMeaning::Poweroff);
        assert_eq!(bhyve_exit(2), ExitMeaning::Halt);
        assert_eq!(bhyve_exit(3), ExitMeaning::Fault);
        assert_eq!(bhyve_exit(4), ExitMeaning::Fault);
        assert_eq!(bhyve_exit(5), ExitMeaning::Unknown);
        assert_eq!(bhyve_exit(-1), ExitMeaning::Unknown);
        assert_eq!(bhyve_exit(137), ExitMeaning::Unknown);
        assert_eq!(describe_exit(3), "triple fault");
        assert_eq!(describe_exit(4), "exited due to an error");
        assert_eq!(ExitMeaning::Poweroff.to_string(), "poweroff");
    }

    #[test]
    fn small_builders() {
        assert_eq!(
            bhyvectl_destroy_argv("vm1").to_string(),
            "bhyvectl --vm=vm1 --destroy"
        );
        assert_eq!(
            bhyvectl_force_poweroff_argv("vm1").to_string(),
            "bhyvectl --vm=vm1 --force-poweroff"
        );
        assert_eq!(
            bhyvectl_force_reset_argv("vm1").to_string(),
            "bhyvectl --vm=vm1 --force-reset"
        );
        assert_eq!(console_device("vm1"), "/dev/nmdm-vm1.1A");
        assert_eq!(console_peer("vm1"), "/dev/nmdm-vm1.1B");
        assert_eq!(vmm_device("vm1"), "/dev/vmm/vm1");
        assert_eq!(memory_arg(ByteSize::new(4 << 30)), "4G");
        assert_eq!(memory_arg(ByteSize::new(1536 << 20)), "1536M");
        assert_eq!(
            paths("x").uefi_vars(),
            PathBuf::from("/tank/labd/vm/x/uefi-vars.fd")
        );
    }
}
