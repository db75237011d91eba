//! VM templates and VM specs: the one description of a guest that both drivers (bhyve on
//! FreeBSD, QEMU on Linux) start from.
//!
//! # Model
//!
//! * A [`Template`] is a TOML file from `vm-templates/` (installed to
//!   `/usr/local/etc/labd/templates/`, user templates override shipped ones). It says what a
//!   kind of guest needs: CPUs, memory, a loader, disks (new sparse ones or an image to import,
//!   each a file or a ZFS volume, [`DiskBacking`]), NICs on switches, cloud-init, the stop
//!   timeout, the restart policy and autostart.
//! * A [`VmSpec`] is a template instantiated for one VM by [`instantiate`]: it adds the VM's
//!   name, a UUID and, per NIC, a MAC address, all assigned **once** at create and kept for the
//!   VM's life (reference/bhyve.md §8: vm-bhyve regenerates them only on clone), and a name for
//!   each disk: a file inside the VM's directory (`disk0.img`), or for a zvol disk the child
//!   dataset `diskN` whose full name labd records as the disk's `volume` when it creates the VM
//!   ([`VmSpec::place_volumes`]). It is stored as `vm.toml` in the VM's own dataset
//!   (`<vm_root>/<name>`), next to its disks, UEFI vars, cloud-init seed and console log, so labd
//!   can rebuild its VM list from the datasets alone.
//!
//! # Why the checks are here
//!
//! Everything is validated before any host command runs (docs/architecture.md, invariant 2):
//! [`Template::parse`] and [`VmSpec::from_toml`] report toml's own message for syntax errors,
//! wrong types and unknown keys (every table denies unknown fields, so a typo is an error,
//! not a silently ignored key), and a [`SpecError::Invalid`] naming the key path
//! (`cpu.count`, `disk[0].size`, `nic[1].switch`) and the rule for everything else.
//!
//! Templates and specs each have their own `[[disk]]` and `[[nic]]` types (a template says what
//! to make, a spec what was made), so a key both have, such as a disk's `backing`, is declared
//! on both and checked once, in the rules they share (`check_common`).
//!
//! # Disk backings
//!
//! A disk is a sparse file in the VM's dataset (`backing = "file"`, the default, on any ZFS;
//! the tests use these), or a sparse ZFS volume, the child dataset `<vm dataset>/diskN` created
//! with `volmode=dev` (`backing = "zvol"`, OpenZFS only; vm-bhyve's `sparse-zvol`,
//! reference/bhyve.md §5) which the hypervisor opens as `/dev/zvol/<pool>/…/diskN` on FreeBSD
//! and Linux alike. A zvol's size must be a multiple of its block size (zfsprops.7 volsize);
//! labd does not choose the block size, so it asks for a multiple of [`ZVOL_SIZE_ALIGN`]. Whether
//! the host's ZFS has volumes at all is a property of the host, checked by `vm create`.
//!
//! # MAC addresses
//!
//! vm-bhyve gives every NIC `58:9c:fc:0X:XX:XX`: the `58:9c:fc` OUI with the fourth byte's high
//! nibble zero and 20 free bits, never `00:00:00`, because bhyve was allocated the
//! `58:9c:fc:0x:xx:xx` range (reference/bhyve.md §3 "MAC addresses"; that the OUI belongs to
//! the FreeBSD Foundation is marked unverified there). labd follows it so its guests look like
//! every other bhyve guest on the LAN. Note that `58` has the locally-administered bit (0x02 of
//! the first octet) **clear**: these are universally administered addresses from a registered
//! OUI, not locally administered ones; they are unicast. Instead of random bits labd derives
//! the 20 bits from the VM's UUID and the NIC's index (FNV-1a), so the same UUID always gives the
//! same MACs, and two NICs of one VM never share one.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Longest VM name, in bytes. bhyve's kernel limit on FreeBSD 13 and 14 is `VM_MAX_NAMELEN`
/// (32 including the NUL, `sys/amd64/include/vmm.h`); newer kernels allow more
/// (`sys/dev/vmm/vmm_param.h`), but a name must work on every supported release.
pub const MAX_VM_NAME_LEN: usize = 31;
/// Most vCPUs a template may ask for.
pub const MAX_CPUS: u32 = 64;
/// Least guest memory: 32 MiB.
pub const MIN_MEMORY: u64 = 32 * MIB;
/// Most disks: with bhyveload, disks and the cloud-init seed are the functions 0-7 of one PCI
/// slot (reference/bhyve.md §1 "Slot layout"), so seven disks leave room for the seed.
pub const MAX_DISKS: usize = 7;
/// Most NICs: they are the functions 0-7 of one PCI slot (reference/bhyve.md §1).
pub const MAX_NICS: usize = 8;
/// The OUI of every MAC labd assigns (vm-bhyve's, reference/bhyve.md §3).
pub const MAC_PREFIX: [u8; 3] = [0x58, 0x9c, 0xfc];
/// Default time a guest gets to power off after the ACPI request before it is forced off.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `stop_timeout` and `boot_delay`.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Where OpenZFS puts the device node of volume `<pool>/<path>`: `/dev/zvol/<pool>/<path>`, on
/// FreeBSD (devfs, `zvol_os.c`) and Linux (a udev link to `/dev/zdN`).
pub const ZVOL_DEVICE_DIR: &str = "/dev/zvol";
/// A zvol disk's size must be a multiple of this: OpenZFS requires a multiple of the volume's
/// block size (zfsprops.7 volsize), which labd leaves to OpenZFS's default (16K since 2.2, 8K
/// before, more only on wide RAID-Z/dRAID pools); 128K, the classic largest block size, is a
/// multiple of every such power of two. `vm create` also checks the block size the volume got.
pub const ZVOL_SIZE_ALIGN: u64 = 128 * KIB;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
const TIB: u64 = 1024 * GIB;

/// A template or VM spec that labd refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The TOML does not parse, has a value of the wrong type or an unknown key (toml's own
    /// message, which shows the line and the key).
    #[error("{0}")]
    Toml(String),
    /// A value breaks a rule; `key` is its path, such as `cpu.count` or `disk[0].size`.
    #[error("{key}: {detail}")]
    Invalid {
        /// Path of the key, such as `memory`, `disk[1].boot`, `nic[0].mac`.
        key: String,
        /// The rule, as a lower-case phrase.
        detail: String,
    },
    /// A VM (or template) name breaks the naming rules of [`validate_vm_name`].
    #[error("invalid VM name '{}': {detail}", .name.escape_debug())]
    Name {
        /// The name as given.
        name: String,
        /// The rule, as a lower-case phrase.
        detail: String,
    },
    /// The spec could not be written as TOML.
    #[error("cannot write the VM spec as TOML: {0}")]
    Serialize(String),
}

impl SpecError {
    /// The key path of an [`SpecError::Invalid`] error (`"name"` for a name error).
    pub fn key(&self) -> Option<&str> {
        match self {
            SpecError::Invalid { key, .. } => Some(key),
            SpecError::Name { .. } => Some("name"),
            SpecError::Toml(_) | SpecError::Serialize(_) => None,
        }
    }
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        detail: detail.into(),
    }
}

/// Check a VM name.
///
/// Rules: 1 to [`MAX_VM_NAME_LEN`] characters of `a-z`, `0-9` and `-`, starting with a letter
/// and not ending with `-`. Why: the name becomes a ZFS dataset component (`<vm_root>/<name>`),
/// the bhyve VM name (`/dev/vmm/<name>`, `bhyve: <name>` in `ps`, bounded by `VM_MAX_NAMELEN`),
/// part of tap descriptions (`vmnet/<name>/0/<switch>`) and of the console device
/// (`/dev/nmdm-<name>.1A`), a cloud-init hostname (an RFC 1123 label) and a QEMU `-name`.
/// Lower-case letters, digits and inner dashes are valid in every one of them, need no quoting,
/// and cannot be read as an option.
pub fn validate_vm_name(name: &str) -> Result<(), SpecError> {
    check_label(name).map_err(|detail| SpecError::Name {
        name: name.to_owned(),
        detail,
    })
}

/// The VM-name rules, as a detail phrase; also used for template and switch names.
fn check_label(name: &str) -> Result<(), String> {
    if name.len() > MAX_VM_NAME_LEN {
        return Err(format!(
            "it is {} characters long; at most {MAX_VM_NAME_LEN} are allowed",
            name.len()
        ));
    }
    check_label_chars(name)
}

/// The characters of a name (VM, template, switch): not empty, `a-z`, `0-9` and `-`,
/// starting with a letter and not ending with `-`. Length limits are the caller's.
pub fn check_label_chars(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "'{}' is not allowed; use lower-case letters, digits and '-'",
            c.escape_debug()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it must start with a letter".to_owned());
    }
    if name.ends_with('-') {
        return Err("it must not end with '-'".to_owned());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Value types
// ---------------------------------------------------------------------------------------------

/// A size in bytes, written as `<number>[K|M|G|T]` (binary units, case-insensitive, an optional
/// trailing `B` or `iB`): `"4G"`, `"256M"`, `"20GiB"`. A bare number is bytes. Written back in
/// the largest unit that divides it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(u64);

impl ByteSize {
    /// A size of `bytes`.
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits_end);
        if num.is_empty() {
            return Err(format!(
                "'{}' is not a size; write a number with an optional unit K, M, G or T, e.g. \"4G\"",
                s.escape_debug()
            ));
        }
        let unit = unit.trim_start();
        let unit_upper = unit.to_ascii_uppercase();
        let base = unit_upper
            .strip_suffix("IB")
            .or_else(|| unit_upper.strip_suffix('B'))
            .unwrap_or(&unit_upper);
        let mult = match base {
            "" => 1,
            "K" => KIB,
            "M" => MIB,
            "G" => GIB,
            "T" => TIB,
            _ => {
                return Err(format!(
                    "unknown size unit '{}'; use K, M, G or T",
                    unit.escape_debug()
                ));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("'{}' is too large", s.escape_debug()))?;
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("'{}' is too large", s.escape_debug()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (mult, unit) in [(TIB, "T"), (GIB, "G"), (MIB, "M"), (KIB, "K")] {
            if b != 0 && b.is_multiple_of(mult) {
                return write!(f, "{}{unit}", b / mult);
            }
        }
        write!(f, "{b}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"4G\" or \"512M\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written as text: `"60s"`, `"2m"`, `"1m 30s"`, `"500ms"` (jiff's friendly format;
/// ISO 8601 `"PT60S"` is accepted too). Never negative. Written back as whole hours, minutes,
/// seconds or milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct HumanDuration(Duration);

impl HumanDuration {
    /// A duration of `d`.
    pub const fn new(d: Duration) -> Self {
        Self(d)
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let sd: jiff::SignedDuration = s.trim().parse().map_err(|e| {
            format!(
                "'{}' is not a duration (write e.g. \"60s\", \"2m\", \"1m 30s\"): {e}",
                s.escape_debug()
            )
        })?;
        if sd.is_negative() {
            return Err(format!("'{}' is negative", s.escape_debug()));
        }
        Duration::try_from(sd)
            .map(HumanDuration)
            .map_err(|e| format!("'{}': {e}", s.escape_debug()))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        if s != 0 && s.is_multiple_of(3600) {
            write!(f, "{}h", s / 3600)
        } else if s != 0 && s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// A MAC address, written `58:9c:fc:0a:bc:de`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Derive the MAC of NIC `index` of the VM with `uuid`: [`MAC_PREFIX`], then 20 bits of
    /// FNV-1a over the UUID, the index and an attempt counter (the fourth byte's high nibble
    /// is 0, as vm-bhyve does). The low 24 bits are never all zero (vm-bhyve excludes
    /// `00:00:00`), and `taken` addresses are skipped, so a VM's NICs never collide.
    pub fn derive(uuid: Uuid, index: usize, taken: &[MacAddr]) -> MacAddr {
        let mut attempt: u64 = 0;
        loop {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            let index = u64::try_from(index).unwrap_or(u64::MAX);
            for byte in uuid
                .as_bytes()
                .iter()
                .copied()
                .chain(index.to_le_bytes())
                .chain(attempt.to_le_bytes())
            {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            let b = h.to_be_bytes();
            let mac = MacAddr([
                MAC_PREFIX[0],
                MAC_PREFIX[1],
                MAC_PREFIX[2],
                b[5] & 0x0f,
                b[6],
                b[7],
            ]);
            if mac.0[3..] != [0, 0, 0] && !taken.contains(&mac) {
                return mac;
            }
            attempt += 1;
        }
    }

    /// Whether the group bit (0x01 of the first octet) is set; a NIC needs a unicast address.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// Whether the locally-administered bit (0x02 of the first octet) is set. It is clear for
    /// the addresses labd derives (vm-bhyve's registered OUI).
    pub fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{}' is not a MAC address like 58:9c:fc:0a:bc:de",
                s.escape_debug()
            )
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for slot in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *slot = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// Enumerations
// ---------------------------------------------------------------------------------------------

/// How the guest is booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    /// UEFI firmware (bhyve `-l bootrom,…`, QEMU OVMF) with a per-VM vars file.
    Uefi,
    /// FreeBSD guests: `bhyveload` loads the kernel from the boot disk before every boot.
    Bhyveload,
    /// Direct kernel boot (`kernel`, `initrd`, `cmdline`): QEMU only; the tiny test guest.
    Kernel,
}

impl Loader {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uefi => "uefi",
            Self::Bhyveload => "bhyveload",
            Self::Kernel => "kernel",
        }
    }
}

/// Emulation of a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum DiskBus {
    /// virtio-blk (the default; Debian's cloud kernel has it).
    #[default]
    #[serde(rename = "virtio-blk")]
    VirtioBlk,
    /// An AHCI (SATA) hard disk. Debian 12's cloud kernel lacks AHCI (reference/provisioning.md §3).
    #[serde(rename = "ahci-hd")]
    AhciHd,
    /// NVMe.
    #[serde(rename = "nvme")]
    Nvme,
}

impl DiskBus {
    /// The name used in the TOML and by bhyve's `-s` option.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBus::VirtioBlk => "virtio-blk",
            DiskBus::AhciHd => "ahci-hd",
            DiskBus::Nvme => "nvme",
        }
    }
}

/// What holds a disk's blocks (module docs, "Disk backings").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBacking {
    /// A sparse file in the VM's dataset (the default; any ZFS).
    #[default]
    File,
    /// A sparse ZFS volume `<vm dataset>/diskN` with `volmode=dev` (OpenZFS only).
    Zvol,
}

impl DiskBacking {
    /// The name used in the TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskBacking::File => "file",
            DiskBacking::Zvol => "zvol",
        }
    }

    /// Whether this is the default, a file (serde leaves the key out then).
    pub fn is_file(&self) -> bool {
        *self == DiskBacking::File
    }
}

/// Emulation of a NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NicModel {
    /// virtio-net (the default).
    #[default]
    #[serde(rename = "virtio-net")]
    VirtioNet,
    /// Intel e1000 (for guests without virtio; Debian 12's cloud kernel lacks it).
    #[serde(rename = "e1000")]
    E1000,
}

impl NicModel {
    /// The name used in the TOML and by bhyve's `-s` option.
    pub fn as_str(self) -> &'static str {
        match self {
            NicModel::VirtioNet => "virtio-net",
            NicModel::E1000 => "e1000",
        }
    }
}

/// What the supervisor does when the guest stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Start it again after any stop that labd did not ask for (poweroff, halt, fault).
    Always,
    /// Start it again after a fault (triple fault, hypervisor error, killed); not after a
    /// poweroff or halt from inside the guest. Restarts back off exponentially.
    #[default]
    OnFailure,
    /// Never start it again by itself (a guest reboot still reboots).
    Never,
}

/// How the cloud-init seed is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SeedBus {
    /// A read-only virtio-blk disk: the only choice Debian's `genericcloud` kernel can read
    /// (no AHCI; cloud-init finds the `cidata` label on any block device,
    /// reference/provisioning.md §3).
    #[default]
    #[serde(rename = "virtio-blk")]
    VirtioBlk,
    /// An AHCI CD-ROM, as vm-bhyve attaches it (reference/bhyve.md §6); needs an AHCI driver.
    #[serde(rename = "ahci-cd")]
    AhciCd,
}

impl SeedBus {
    /// The name used in the TOML and by bhyve's `-s` option.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedBus::VirtioBlk => "virtio-blk",
            SeedBus::AhciCd => "ahci-cd",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tables shared by templates and specs
// ---------------------------------------------------------------------------------------------

/// `[cpu]`: the vCPUs and, optionally, their topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cpu {
    /// Number of vCPUs, 1 to [`MAX_CPUS`] (and not more than the host's `hw.vmm.maxcpu`,
    /// which only the host can check).
    pub count: u32,
    /// Sockets; with `cores` and `threads` (each 1 when absent) the product must be `count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Cores per socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Threads per core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

/// `[cloud_init]`: the NoCloud seed labd builds (meta-data, user-data, network-config v2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudInit {
    /// Build and attach a seed (default true when the table is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The login user cloud-init creates, in group `sudo`, with the SSH keys
    /// (Debian's cloud images call theirs `debian`).
    #[serde(default = "default_user")]
    pub user: String,
    /// Public SSH keys for `user`, one per entry (`labctl vm create --ssh-key` adds to them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Grow the root partition and filesystem to the disk at first boot (`growpart`,
    /// `resize_rootfs`).
    #[serde(default = "yes")]
    pub growpart: bool,
    /// Debian packages to install at first boot (with `package_update` when not empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    /// Extra `#cloud-config` text merged under what labd generates (users, keys, host key,
    /// growpart, packages); must start with `#cloud-config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// How the seed is attached (default `virtio-blk`).
    #[serde(default)]
    pub seed_bus: SeedBus,
}

fn yes() -> bool {
    true
}

fn default_user() -> String {
    "debian".to_owned()
}

/// `[graphics]`: a framebuffer with a VNC server (UEFI only). Absent = no graphics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Graphics {
    /// Address the VNC server listens on (default 127.0.0.1: unlike vm-bhyve's 0.0.0.0, the
    /// console is not offered to the whole LAN unless asked for).
    #[serde(default = "default_listen")]
    pub listen: IpAddr,
    /// TCP port (default 5900).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Width in pixels, 640 to 1920 (bhyve's `fbuf` limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels, 480 to 1200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Hold the guest until a VNC client connects.
    #[serde(default)]
    pub wait: bool,
}

fn default_listen() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

fn default_port() -> u16 {
    5900
}

fn default_stop_timeout() -> HumanDuration {
    HumanDuration(DEFAULT_STOP_TIMEOUT)
}

// ---------------------------------------------------------------------------------------------
// Template
// ---------------------------------------------------------------------------------------------

/// `[[disk]]` of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDisk {
    /// Size of a new sparse disk, or the size an imported image is grown to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// An image (raw or qcow2) to import: a file name in labd's image directory or a path;
    /// `labctl vm create --image` overrides it for the boot disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Emulation (default `virtio-blk`).
    #[serde(default)]
    pub bus: DiskBus,
    /// The disk the guest boots from (default: the first disk).
    #[serde(default)]
    pub boot: bool,
    /// A sparse file (default) or a ZFS volume (OpenZFS only); a volume needs a `size`.
    #[serde(default, skip_serializing_if = "DiskBacking::is_file")]
    pub backing: DiskBacking,
}

/// `[[nic]]` of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateNic {
    /// The labd switch (bridge) the NIC's tap joins.
    pub switch: String,
    /// Emulation (default `virtio-net`).
    #[serde(default)]
    pub model: NicModel,
}

/// A VM template (`vm-templates/*.toml`). See the module docs and `vm-templates/README.md`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// One line for `labctl template list`.
    #[serde(default)]
    pub description: String,
    /// How the guest boots.
    pub loader: Loader,
    /// Guest memory, at least 32M, a whole number of MiB.
    pub memory: ByteSize,
    /// `loader = "kernel"` only: the kernel file (relative names are looked up in the
    /// test-guest directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `loader = "kernel"` only: the initramfs file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// `loader = "kernel"` only: the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// Time from the ACPI power-button request to a forced poweroff (default 60s).
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    /// What happens when the guest stops by itself (default `on-failure`).
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Start the VM when labd starts.
    #[serde(default)]
    pub autostart: bool,
    /// Autostart order: lower first; stopped in reverse order.
    #[serde(default)]
    pub boot_order: u32,
    /// Pause after starting this VM before starting the next one.
    #[serde(default)]
    pub boot_delay: HumanDuration,
    /// vCPUs.
    pub cpu: Cpu,
    /// The cloud-init seed (absent = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Framebuffer and VNC (absent = none; UEFI only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphics: Option<Graphics>,
    /// Disks, in slot order.
    #[serde(default, rename = "disk", skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<TemplateDisk>,
    /// NICs, in order.
    #[serde(default, rename = "nic", skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<TemplateNic>,
}

impl Template {
    /// Parse and check a template.
    pub fn parse(text: &str) -> Result<Template, SpecError> {
        let t: Template = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        t.validate()?;
        Ok(t)
    }

    /// Check every rule; the error names the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        let disks: Vec<DiskView<'_>> = self
            .disks
            .iter()
            .map(|d| DiskView {
                size: d.size,
                image: d.image.as_deref(),
                boot: d.boot,
                backing: d.backing,
            })
            .collect();
        let switches: Vec<&str> = self.nics.iter().map(|n| n.switch.as_str()).collect();
        check_common(&Common {
            loader: self.loader,
            memory: self.memory,
            kernel: self.kernel.as_deref(),
            initrd: self.initrd.as_deref(),
            cmdline: self.cmdline.as_deref(),
            stop_timeout: self.stop_timeout,
            boot_delay: self.boot_delay,
            cpu: &self.cpu,
            cloud_init: self.cloud_init.as_ref(),
            graphics: self.graphics.as_ref(),
            disks: &disks,
            switches: &switches,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// VM spec
// ---------------------------------------------------------------------------------------------

/// `[[disk]]` of a VM spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Disk {
    /// File name inside the VM's directory (`disk0.img`, `disk1.img`, …); for a zvol disk the
    /// volume's name below the VM's dataset (`disk0`).
    pub file: String,
    /// Size of the disk (an imported image is grown to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
    /// The image it was imported from, kept for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Emulation.
    #[serde(default)]
    pub bus: DiskBus,
    /// The boot disk (if no disk says so, the first one).
    #[serde(default)]
    pub boot: bool,
    /// A sparse file or a ZFS volume.
    #[serde(default, skip_serializing_if = "DiskBacking::is_file")]
    pub backing: DiskBacking,
    /// zvol disks: the volume's dataset, `<vm dataset>/<file>`, recorded at create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

impl Disk {
    /// The device node the hypervisor opens for a zvol disk (`/dev/zvol/<volume>`); `None` for
    /// a file disk or a volume not yet placed.
    pub fn device(&self) -> Option<String> {
        match (self.backing, &self.volume) {
            (DiskBacking::Zvol, Some(v)) => Some(format!("{ZVOL_DEVICE_DIR}/{v}")),
            _ => None,
        }
    }
}

/// `[[nic]]` of a VM spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Nic {
    /// The labd switch the NIC's tap joins.
    pub switch: String,
    /// Emulation.
    #[serde(default)]
    pub model: NicModel,
    /// MAC address, assigned once at create ([`MacAddr::derive`]).
    pub mac: MacAddr,
    /// Static address with prefix for cloud-init's network-config (`192.168.1.20/24`);
    /// absent = DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Default gateway (needs `address`, same family).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<IpAddr>,
}

/// One VM: a template instantiated, stored as `vm.toml` in the VM's dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    /// The VM's name ([`validate_vm_name`]).
    pub name: String,
    /// The VM's UUID (bhyve `-U`, SMBIOS, cloud-init `instance-id`), assigned at create.
    pub uuid: Uuid,
    /// The template it was created from.
    pub template: String,
    /// Copied from the template.
    #[serde(default)]
    pub description: String,
    /// How the guest boots.
    pub loader: Loader,
    /// Guest memory.
    pub memory: ByteSize,
    /// `loader = "kernel"`: the kernel file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    /// `loader = "kernel"`: the initramfs file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd: Option<String>,
    /// `loader = "kernel"`: the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<String>,
    /// ACPI request → forced poweroff.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: HumanDuration,
    /// Restart policy.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Start with labd.
    #[serde(default)]
    pub autostart: bool,
    /// Autostart order.
    #[serde(default)]
    pub boot_order: u32,
    /// Pause after starting it.
    #[serde(default)]
    pub boot_delay: HumanDuration,
    /// vCPUs.
    pub cpu: Cpu,
    /// cloud-init.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Framebuffer and VNC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphics: Option<Graphics>,
    /// Disks, in slot order.
    #[serde(default, rename = "disk", skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// NICs, in order.
    #[serde(default, rename = "nic", skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
}

/// Make the spec of VM `vm_name` from `template` (named `template_name`): copies the template,
/// names the disks `disk0.img`, `disk1.img`, … (zvol disks `disk0`, …, placed later with
/// [`VmSpec::place_volumes`]) and derives each NIC's MAC from `uuid`
/// (create passes `Uuid::new_v4()`; the result is stored and never re-derived).
pub fn instantiate(
    template: &Template,
    template_name: &str,
    vm_name: &str,
    uuid: Uuid,
) -> Result<VmSpec, SpecError> {
    validate_vm_name(vm_name)?;
    check_label(template_name).map_err(|d| invalid("template", d))?;
    template.validate()?;
    let mut macs: Vec<MacAddr> = Vec::with_capacity(template.nics.len());
    for i in 0..template.nics.len() {
        let mac = MacAddr::derive(uuid, i, &macs);
        macs.push(mac);
    }
    let spec = VmSpec {
        name: vm_name.to_owned(),
        uuid,
        template: template_name.to_owned(),
        description: template.description.clone(),
        loader: template.loader,
        memory: template.memory,
        kernel: template.kernel.clone(),
        initrd: template.initrd.clone(),
        cmdline: template.cmdline.clone(),
        stop_timeout: template.stop_timeout,
        restart: template.restart,
        autostart: template.autostart,
        boot_order: template.boot_order,
        boot_delay: template.boot_delay,
        cpu: template.cpu.clone(),
        cloud_init: template.cloud_init.clone(),
        graphics: template.graphics.clone(),
        disks: template
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| Disk {
                file: match d.backing {
                    DiskBacking::File => format!("disk{i}.img"),
                    DiskBacking::Zvol => format!("disk{i}"),
                },
                size: d.size,
                image: d.image.clone(),
                bus: d.bus,
                boot: d.boot,
                backing: d.backing,
                volume: None,
            })
            .collect(),
        nics: template
            .nics
            .iter()
            .zip(macs)
            .map(|(n, mac)| Nic {
                switch: n.switch.clone(),
                model: n.model,
                mac,
                address: None,
                gateway: None,
                nameservers: Vec::new(),
            })
            .collect(),
    };
    spec.validate()?;
    Ok(spec)
}

impl VmSpec {
    /// Parse and check a `vm.toml`. Unlike a spec still being made, a stored one must say
    /// where each zvol disk's volume is.
    pub fn from_toml(text: &str) -> Result<VmSpec, SpecError> {
        let s: VmSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        s.validate()?;
        if let Some(i) = s
            .disks
            .iter()
            .position(|d| d.backing == DiskBacking::Zvol && d.volume.is_none())
        {
            return Err(invalid(
                format!("disk[{i}].volume"),
                "a zvol disk needs the dataset of its volume",
            ));
        }
        Ok(s)
    }

    /// Record where each zvol disk's volume is: `<vm_dataset>/<file>` (the VM's own dataset,
    /// at create and clone).
    pub fn place_volumes(&mut self, vm_dataset: &str) {
        for d in &mut self.disks {
            if d.backing == DiskBacking::Zvol {
                d.volume = Some(format!("{vm_dataset}/{}", d.file));
            }
        }
    }

    /// The indexes of the zvol disks.
    pub fn zvol_disks(&self) -> impl Iterator<Item = usize> + '_ {
        self.disks
            .iter()
            .enumerate()
            .filter(|(_, d)| d.backing == DiskBacking::Zvol)
            .map(|(i, _)| i)
    }

    /// Write the spec as `vm.toml` text; [`VmSpec::from_toml`] reads it back unchanged.
    pub fn to_toml(&self) -> Result<String, SpecError> {
        toml::to_string(self).map_err(|e| SpecError::Serialize(e.to_string()))
    }

    /// The index of the boot disk: the one marked `boot`, else the first; `None` without disks.
    pub fn boot_disk(&self) -> Option<usize> {
        self.disks
            .iter()
            .position(|d| d.boot)
            .or(if self.disks.is_empty() { None } else { Some(0) })
    }

    /// Whether a cloud-init seed (`seed.iso` in the VM's directory) is attached, and how.
    pub fn seed(&self) -> Option<SeedBus> {
        self.cloud_init
            .as_ref()
            .filter(|c| c.enabled)
            .map(|c| c.seed_bus)
    }

    /// Check every rule; the error names the key.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_vm_name(&self.name)?;
        check_label(&self.template).map_err(|d| invalid("template", d))?;
        let disks: Vec<DiskView<'_>> = self
            .disks
            .iter()
            .map(|d| DiskView {
                size: d.size,
                image: d.image.as_deref(),
                boot: d.boot,
                backing: d.backing,
            })
            .collect();
        let switches: Vec<&str> = self.nics.iter().map(|n| n.switch.as_str()).collect();
        check_common(&Common {
            loader: self.loader,
            memory: self.memory,
            kernel: self.kernel.as_deref(),
            initrd: self.initrd.as_deref(),
            cmdline: self.cmdline.as_deref(),
            stop_timeout: self.stop_timeout,
            boot_delay: self.boot_delay,
            cpu: &self.cpu,
            cloud_init: self.cloud_init.as_ref(),
            graphics: self.graphics.as_ref(),
            disks: &disks,
            switches: &switches,
        })?;
        for (i, d) in self.disks.iter().enumerate() {
            check_file_name(&d.file).map_err(|e| invalid(format!("disk[{i}].file"), e))?;
            if matches!(d.file.as_str(), "seed.iso" | "uefi-vars.fd" | "vm.toml") {
                return Err(invalid(
                    format!("disk[{i}].file"),
                    format!("'{}' is reserved for labd's own files", d.file),
                ));
            }
            if let Some(j) = self.disks[..i].iter().position(|o| o.file == d.file) {
                return Err(invalid(
                    format!("disk[{i}].file"),
                    format!("'{}' is already used by disk[{j}]", d.file),
                ));
            }
            if let Some(v) = &d.volume {
                check_volume(d, v).map_err(|e| invalid(format!("disk[{i}].volume"), e))?;
            }
        }
        for (i, n) in self.nics.iter().enumerate() {
            let key = |k: &str| format!("nic[{i}].{k}");
            if n.mac.is_multicast() {
                return Err(invalid(
                    key("mac"),
                    format!(
                        "{} is a multicast address; a NIC needs a unicast one",
                        n.mac
                    ),
                ));
            }
            if n.mac.0 == [0; 6] {
                return Err(invalid(key("mac"), "00:00:00:00:00:00 is not usable"));
            }
            if let Some(j) = self.nics[..i].iter().position(|o| o.mac == n.mac) {
                return Err(invalid(
                    key("mac"),
                    format!("{} is already used by nic[{j}]", n.mac),
                ));
            }
            let family = match &n.address {
                Some(a) => Some(check_cidr(a).map_err(|e| invalid(key("address"), e))?),
                None => None,
            };
            if let Some(gw) = n.gateway {
                match family {
                    None => {
                        return Err(invalid(
                            key("gateway"),
                            "a gateway needs a static address (nic.address); with DHCP the server sends it",
                        ));
                    }
                    Some(is_v4) if is_v4 != gw.is_ipv4() => {
                        return Err(invalid(
                            key("gateway"),
                            format!("{gw} is not of the same family as the address"),
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Rules shared by templates and specs
// ---------------------------------------------------------------------------------------------

struct DiskView<'a> {
    size: Option<ByteSize>,
    image: Option<&'a str>,
    boot: bool,
    backing: DiskBacking,
}

struct Common<'a> {
    loader: Loader,
    memory: ByteSize,
    kernel: Option<&'a str>,
    initrd: Option<&'a str>,
    cmdline: Option<&'a str>,
    stop_timeout: HumanDuration,
    boot_delay: HumanDuration,
    cpu: &'a Cpu,
    cloud_init: Option<&'a CloudInit>,
    graphics: Option<&'a Graphics>,
    disks: &'a [DiskView<'a>],
    switches: &'a [&'a str],
}

fn check_common(c: &Common<'_>) -> Result<(), SpecError> {
    check_cpu(c.cpu)?;
    let mem = c.memory.bytes();
    if mem < MIN_MEMORY {
        return Err(invalid(
            "memory",
            format!("{} is less than the minimum of 32M", c.memory),
        ));
    }
    if !mem.is_multiple_of(MIB) {
        return Err(invalid(
            "memory",
            format!(
                "{} is not a whole number of MiB (bhyve's -m counts in MiB)",
                c.memory
            ),
        ));
    }
    check_loader(c)?;
    if c.stop_timeout.get() < Duration::from_secs(1) || c.stop_timeout.get() > MAX_DELAY {
        return Err(invalid(
            "stop_timeout",
            format!("{} is outside 1s..1h", c.stop_timeout),
        ));
    }
    if c.boot_delay.get() > MAX_DELAY {
        return Err(invalid(
            "boot_delay",
            format!("{} is longer than 1h", c.boot_delay),
        ));
    }
    check_disks(c)?;
    if c.switches.len() > MAX_NICS {
        return Err(invalid(
            "nic",
            format!(
                "{} NICs; at most {MAX_NICS} are supported (functions of one PCI slot)",
                c.switches.len()
            ),
        ));
    }
    for (i, s) in c.switches.iter().enumerate() {
        check_label(s).map_err(|d| invalid(format!("nic[{i}].switch"), d))?;
    }
    if let Some(ci) = c.cloud_init {
        check_cloud_init(ci)?;
    }
    if let Some(g) = c.graphics {
        check_graphics(g, c.loader)?;
    }
    Ok(())
}

fn check_cpu(cpu: &Cpu) -> Result<(), SpecError> {
    if !(1..=MAX_CPUS).contains(&cpu.count) {
        return Err(invalid(
            "cpu.count",
            format!("{} is outside 1..={MAX_CPUS}", cpu.count),
        ));
    }
    let mut product: u32 = 1;
    let mut any = false;
    for (key, v) in [
        ("cpu.sockets", cpu.sockets),
        ("cpu.cores", cpu.cores),
        ("cpu.threads", cpu.threads),
    ] {
        if let Some(v) = v {
            if !(1..=MAX_CPUS).contains(&v) {
                return Err(invalid(key, format!("{v} is outside 1..={MAX_CPUS}")));
            }
            any = true;
            product = product.saturating_mul(v);
        }
    }
    if any && product != cpu.count {
        return Err(invalid(
            "cpu.count",
            format!(
                "sockets x cores x threads is {product} (absent ones count as 1) but count is {}",
                cpu.count
            ),
        ));
    }
    Ok(())
}

fn check_loader(c: &Common<'_>) -> Result<(), SpecError> {
    if c.loader == Loader::Kernel {
        let kernel = c.kernel.ok_or_else(|| {
            invalid(
                "kernel",
                "loader = \"kernel\" needs the kernel file (e.g. kernel = \"vmlinuz\")",
            )
        })?;
        check_path_text(kernel).map_err(|d| invalid("kernel", d))?;
        if let Some(i) = c.initrd {
            check_path_text(i).map_err(|d| invalid("initrd", d))?;
        }
        if let Some(cmd) = c.cmdline
            && cmd.chars().any(char::is_control)
        {
            return Err(invalid("cmdline", "control characters are not allowed"));
        }
    } else {
        for (key, v) in [
            ("kernel", c.kernel),
            ("initrd", c.initrd),
            ("cmdline", c.cmdline),
        ] {
            if v.is_some() {
                return Err(invalid(key, "only allowed with loader = \"kernel\""));
            }
        }
        if c.disks.is_empty() {
            return Err(invalid(
                "disk",
                "loader = \"uefi\" or \"bhyveload\" needs at least one [[disk]] to boot from",
            ));
        }
    }
    Ok(())
}

fn check_disks(c: &Common<'_>) -> Result<(), SpecError> {
    if c.disks.len() > MAX_DISKS {
        return Err(invalid(
            "disk",
            format!("{} disks; at most {MAX_DISKS} are supported", c.disks.len()),
        ));
    }
    let mut boot: Option<usize> = None;
    for (i, d) in c.disks.iter().enumerate() {
        if d.size.is_none() && d.image.is_none() {
            return Err(invalid(
                format!("disk[{i}]"),
                "needs a size (a new sparse disk) or an image to import",
            ));
        }
        if let Some(size) = d.size {
            if size.bytes() < MIB {
                return Err(invalid(
                    format!("disk[{i}].size"),
                    format!("{size} is smaller than 1M"),
                ));
            }
            if !size.bytes().is_multiple_of(512) {
                return Err(invalid(
                    format!("disk[{i}].size"),
                    format!("{size} is not a multiple of 512 bytes"),
                ));
            }
        }
        if d.backing == DiskBacking::Zvol {
            let size = d.size.ok_or_else(|| {
                invalid(
                    format!("disk[{i}].size"),
                    "a zvol disk needs a size: its volume is created at that size \
                     (zfs create -V) before an image is written into it",
                )
            })?;
            if !size.bytes().is_multiple_of(ZVOL_SIZE_ALIGN) {
                return Err(invalid(
                    format!("disk[{i}].size"),
                    format!(
                        "{size} is not a multiple of 128K; a zvol's size must be a multiple of \
                         its block size (OpenZFS's default is 16K; 128K covers every default)"
                    ),
                ));
            }
        }
        if let Some(img) = d.image {
            check_path_text(img).map_err(|e| invalid(format!("disk[{i}].image"), e))?;
        }
        if d.boot {
            if let Some(j) = boot {
                return Err(invalid(
                    format!("disk[{i}].boot"),
                    format!("only one disk can boot; disk[{j}] already does"),
                ));
            }
            boot = Some(i);
        }
    }
    Ok(())
}

fn check_cloud_init(ci: &CloudInit) -> Result<(), SpecError> {
    let user_ok = !ci.user.is_empty()
        && ci.user.len() <= 32
        && ci
            .user
            .starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && ci
            .user
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !user_ok {
        return Err(invalid(
            "cloud_init.user",
            format!(
                "'{}' is not a user name (1-32 of a-z, 0-9, '_', '-', starting with a letter or '_')",
                ci.user.escape_debug()
            ),
        ));
    }
    for (i, k) in ci.ssh_authorized_keys.iter().enumerate() {
        let key = format!("cloud_init.ssh_authorized_keys[{i}]");
        if k.contains(['\n', '\r']) {
            return Err(invalid(key, "one key per entry, on one line"));
        }
        let kind = k.split_whitespace().next().unwrap_or("");
        if !(kind.starts_with("ssh-")
            || kind.starts_with("ecdsa-")
            || kind.starts_with("sk-ssh-")
            || kind.starts_with("sk-ecdsa-"))
        {
            return Err(invalid(
                key,
                "not an OpenSSH public key (ssh-ed25519 AAAA… comment)",
            ));
        }
    }
    for (i, p) in ci.packages.iter().enumerate() {
        // Debian policy 5.6.1: lower-case letters, digits, '+', '-', '.'; at least two
        // characters; starts with a letter or digit.
        let ok = p.len() >= 2
            && p.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !ok {
            return Err(invalid(
                format!("cloud_init.packages[{i}]"),
                format!("'{}' is not a Debian package name", p.escape_debug()),
            ));
        }
    }
    if let Some(ud) = &ci.user_data
        && !ud.starts_with("#cloud-config")
    {
        return Err(invalid(
            "cloud_init.user_data",
            "must be a cloud-config document starting with '#cloud-config'",
        ));
    }
    Ok(())
}

fn check_graphics(g: &Graphics, loader: Loader) -> Result<(), SpecError> {
    if loader != Loader::Uefi {
        return Err(invalid(
            "graphics",
            "a framebuffer needs loader = \"uefi\" (bhyve's fbuf is UEFI only)",
        ));
    }
    if g.port == 0 {
        return Err(invalid("graphics.port", "0 is not a TCP port"));
    }
    if let Some(w) = g.width
        && !(640..=1920).contains(&w)
    {
        return Err(invalid(
            "graphics.width",
            format!("{w} is outside 640..=1920"),
        ));
    }
    if let Some(h) = g.height
        && !(480..=1200).contains(&h)
    {
        return Err(invalid(
            "graphics.height",
            format!("{h} is outside 480..=1200"),
        ));
    }
    Ok(())
}

/// A file name or path given as text: not empty, no control characters, no ',' (bhyve's
/// option separator).
fn check_path_text(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("it is empty".to_owned());
    }
    if p.chars().any(char::is_control) {
        return Err("control characters are not allowed".to_owned());
    }
    if p.contains(',') {
        return Err("',' is not allowed (bhyve separates device options with it)".to_owned());
    }
    Ok(())
}

/// A plain file name inside the VM's directory.
fn check_file_name(f: &str) -> Result<(), String> {
    if f.is_empty() || f == "." || f == ".." || f.starts_with('-') || f.len() > 64 {
        return Err(format!("'{}' is not a usable file name", f.escape_debug()));
    }
    if let Some(c) = f
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c)))
    {
        return Err(format!(
            "'{}' is not allowed in a disk file name (letters, digits, '.', '_', '-')",
            c.escape_debug()
        ));
    }
    Ok(())
}

/// A zvol disk's `volume`: a dataset name (the ZFS grammar, labd's rules) ending in the disk's
/// `file`.
fn check_volume(d: &Disk, volume: &str) -> Result<(), String> {
    if d.backing != DiskBacking::Zvol {
        return Err("only a zvol disk (backing = \"zvol\") has a volume".to_owned());
    }
    // The ZFS grammar has no ',' (bhyve's option separator) and labd's no space or leading '-'.
    super::names::DatasetName::parse(volume).map_err(|e| e.to_string())?;
    match volume.rsplit_once('/') {
        Some((_, last)) if last == d.file => Ok(()),
        _ => Err(format!(
            "'{}' is not a volume below a VM's dataset named after the disk (.../{})",
            volume.escape_debug(),
            d.file
        )),
    }
}

/// `addr/prefix`; returns whether it is IPv4.
fn check_cidr(s: &str) -> Result<bool, String> {
    let bad = || {
        format!(
            "'{}' is not an address with a prefix, like 192.168.1.20/24",
            s.escape_debug()
        )
    };
    let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix == 0 || prefix > max {
        return Err(format!("prefix /{prefix} is outside 1..={max}"));
    }
    Ok(addr.is_ipv4())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DOCKER_HOST: &str = include_str!("../../../vm-templates/docker-host.toml");
    const DEV: &str = include_str!("../../../vm-templates/dev.toml");
    const TINY: &str = include_str!("../../../vm-templates/tiny.toml");

    fn uuid() -> Uuid {
        Uuid::from_u128(0x5f0c_1b2a_3c4d_4e5f_8a6b_7c8d_9e0f_1a2b)
    }

    fn tiny() -> Template {
        Template::parse(TINY).unwrap()
    }

    /// A minimal valid template text, with `extra` inserted before the tables.
    fn minimal(extra: &str) -> String {
        format!(
            "loader = \"uefi\"\nmemory = \"1G\"\n{extra}\n[cpu]\ncount = 2\n\n[[disk]]\nsize = \"10G\"\n\n[[nic]]\nswitch = \"lan\"\n"
        )
    }

    fn key_of(r: Result<Template, SpecError>) -> String {
        match r {
            Err(e) => e.key().unwrap_or("<toml>").to_owned(),
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn shipped_docker_host() {
        let t = Template::parse(DOCKER_HOST).unwrap();
        assert_eq!(t.loader, Loader::Uefi);
        assert_eq!(t.cpu.count, 2);
        assert_eq!(t.memory.bytes(), 4 * GIB);
        assert_eq!(t.disks.len(), 1);
        assert_eq!(t.disks[0].size, Some(ByteSize::new(20 * GIB)));
        assert_eq!(t.disks[0].bus, DiskBus::VirtioBlk);
        assert!(
            t.disks[0]
                .image
                .as_deref()
                .unwrap()
                .contains("genericcloud")
        );
        assert_eq!(t.nics.len(), 1);
        assert_eq!(t.nics[0].model, NicModel::VirtioNet);
        let ci = t.cloud_init.as_ref().unwrap();
        assert!(ci.enabled && ci.growpart);
        assert_eq!(ci.seed_bus, SeedBus::VirtioBlk);
        assert_eq!(t.stop_timeout.get(), Duration::from_secs(60));
        assert_eq!(t.restart, RestartPolicy::OnFailure);
        assert!(t.graphics.is_none());
    }

    #[test]
    fn shipped_dev() {
        let t = Template::parse(DEV).unwrap();
        assert_eq!(t.loader, Loader::Uefi);
        assert!(t.disks.len() >= 2);
        assert!(t.nics.len() >= 2);
    }

    #[test]
    fn shipped_tiny() {
        let t = tiny();
        assert_eq!(t.loader, Loader::Kernel);
        assert_eq!(t.cpu.count, 1);
        assert_eq!(t.memory.bytes(), 256 * MIB);
        assert!(t.disks.is_empty());
        assert_eq!(t.kernel.as_deref(), Some("vmlinuz"));
        assert_eq!(t.initrd.as_deref(), Some("initrd.gz"));
        assert_eq!(t.cmdline.as_deref(), Some("console=ttyS0 quiet panic=-1"));
        assert_eq!(t.restart, RestartPolicy::OnFailure);
        assert_eq!(t.stop_timeout.get(), Duration::from_secs(10));
    }

    #[test]
    fn defaults() {
        let t = Template::parse(&minimal("")).unwrap();
        assert_eq!(t.stop_timeout.get(), DEFAULT_STOP_TIMEOUT);
        assert_eq!(t.restart, RestartPolicy::OnFailure);
        assert!(!t.autostart);
        assert_eq!(t.boot_order, 0);
        assert_eq!(t.boot_delay.get(), Duration::ZERO);
        assert!(t.cloud_init.is_none() && t.graphics.is_none());
    }

    #[test]
    fn unknown_keys_are_toml_errors_naming_the_key() {
        let e = Template::parse(&minimal("memroy = \"1G\"")).unwrap_err();
        assert!(matches!(e, SpecError::Toml(_)));
        assert!(e.to_string().contains("memroy"), "{e}");
        let e = Template::parse(&format!("{}\n[cpu2]\nx = 1\n", minimal(""))).unwrap_err();
        assert!(e.to_string().contains("cpu2"), "{e}");
        let bad_nic = minimal("").replace(
            "switch = \"lan\"",
            "switch = \"lan\"\nmac = \"58:9c:fc:00:00:01\"",
        );
        let e = Template::parse(&bad_nic).unwrap_err();
        assert!(e.to_string().contains("mac"), "{e}");
    }

    #[test]
    fn bad_values_are_toml_errors_with_the_line() {
        let e = Template::parse(&minimal("").replace("\"1G\"", "\"1X\"")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("memory") && msg.contains("unit"), "{msg}");
        let e = Template::parse(&minimal("stop_timeout = \"soon\"")).unwrap_err();
        assert!(e.to_string().contains("stop_timeout"), "{e}");
        let e = Template::parse(&minimal("restart = \"sometimes\"")).unwrap_err();
        assert!(e.to_string().contains("restart"), "{e}");
        let e = Template::parse(&minimal("").replace("uefi", "grub")).unwrap_err();
        assert!(e.to_string().contains("loader"), "{e}");
    }

    #[test]
    fn rule_refusals_name_the_key() {
        let cases: &[(&str, &str)] = &[
            ("cpu.count", &minimal("").replace("count = 2", "count = 0")),
            ("cpu.count", &minimal("").replace("count = 2", "count = 65")),
            ("cpu.sockets", &minimal("").replace("count = 2", "count = 2\nsockets = 0")),
            ("cpu.count", &minimal("").replace("count = 2", "count = 2\nsockets = 2\ncores = 2")),
            ("memory", &minimal("").replace("\"1G\"", "\"16M\"")),
            ("memory", &minimal("").replace("\"1G\"", "\"33000K\"")),
            ("stop_timeout", &minimal("stop_timeout = \"0s\"")),
            ("stop_timeout", &minimal("stop_timeout = \"2h\"")),
            ("boot_delay", &minimal("boot_delay = \"3h\"")),
            ("kernel", &minimal("kernel = \"vmlinuz\"")),
            ("cmdline", &minimal("cmdline = \"quiet\"")),
            ("disk[0].size", &minimal("").replace("\"10G\"", "\"100K\"")),
            ("disk[0].size", &minimal("").replace("\"10G\"", "\"1048577\"")),
            ("disk[0]", &minimal("").replace("size = \"10G\"", "bus = \"nvme\"")),
            ("disk[0].image", &minimal("").replace("size = \"10G\"", "image = \"a,b.raw\"")),
            ("disk[1].boot", &format!("{}\n[[disk]]\nsize = \"1G\"\nboot = true\n[[disk]]\nsize = \"1G\"\nboot = true\n", minimal("")).replace("[[disk]]\nsize = \"10G\"\n", "")),
            ("nic[0].switch", &minimal("").replace("\"lan\"", "\"Lan\"")),
            ("disk", &minimal("").replace("[[disk]]\nsize = \"10G\"\n", "")),
            ("graphics", &format!("{}\n[graphics]\nport = 5901\n", minimal("")).replace("uefi", "bhyveload")),
            ("graphics.width", &format!("{}\n[graphics]\nwidth = 4000\n", minimal(""))),
            ("graphics.port", &format!("{}\n[graphics]\nport = 0\n", minimal(""))),
            ("cloud_init.user", &format!("{}\n[cloud_init]\nuser = \"Root\"\n", minimal(""))),
            ("cloud_init.packages[1]", &format!("{}\n[cloud_init]\npackages = [\"curl\", \"rm -rf\"]\n", minimal(""))),
            ("cloud_init.user_data", &format!("{}\n[cloud_init]\nuser_data = \"users: []\"\n", minimal(""))),
            ("cloud_init.ssh_authorized_keys[0]", &format!("{}\n[cloud_init]\nssh_authorized_keys = [\"hello\"]\n", minimal(""))),
        ];
        for (key, text) in cases {
            let got = key_of(Template::parse(text));
            assert_eq!(&got, key, "for:\n{text}");
        }
        let many_nics = format!("{}{}", minimal(""), "[[nic]]\nswitch = \"lan\"\n".repeat(8));
        assert_eq!(key_of(Template::parse(&many_nics)), "nic");
        let many_disks = format!("{}{}", minimal(""), "[[disk]]\nsize = \"1G\"\n".repeat(7));
        assert_eq!(key_of(Template::parse(&many_disks)), "disk");
    }

    #[test]
    fn tiny_loader_rules() {
        let e = Template::parse(&TINY.replace("kernel = \"vmlinuz\"", "")).unwrap_err();
        assert_eq!(e.key(), Some("kernel"));
        let e = Template::parse(&TINY.replace("[cpu]", "[graphics]\n[cpu]")).unwrap_err();
        assert_eq!(e.key(), Some("graphics"));
    }

    #[test]
    fn vm_names() {
        for ok in ["a", "docker-host", "dev2", "a-b-c", &"x".repeat(31)] {
            validate_vm_name(ok).unwrap();
        }
        for bad in [
            "",
            "2vm",
            "-a",
            "a-",
            "Docker",
            "a_b",
            "a.b",
            "a b",
            "é",
            &"x".repeat(32),
        ] {
            let e = validate_vm_name(bad).unwrap_err();
            assert!(matches!(e, SpecError::Name { .. }), "{bad}");
            assert_eq!(e.key(), Some("name"));
        }
        let e = validate_vm_name("Dev").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid VM name 'Dev': 'D' is not allowed; use lower-case letters, digits and '-'"
        );
    }

    #[test]
    fn instantiate_assigns_files_and_macs() {
        let t = Template::parse(DEV).unwrap();
        let s = instantiate(&t, "dev", "dev1", uuid()).unwrap();
        assert_eq!(s.name, "dev1");
        assert_eq!(s.template, "dev");
        assert_eq!(s.uuid, uuid());
        let files: Vec<&str> = s.disks.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(&files[..2], ["disk0.img", "disk1.img"]);
        assert_eq!(s.nics.len(), t.nics.len());
        for n in &s.nics {
            assert_eq!(n.mac.0[..3], MAC_PREFIX);
            assert_eq!(n.mac.0[3] & 0xf0, 0, "fourth byte is 0X as in vm-bhyve");
            assert_ne!(n.mac.0[3..], [0, 0, 0]);
            assert!(!n.mac.is_multicast());
            // 58:9c:fc is a registered OUI: the locally-administered bit is clear.
            assert!(!n.mac.is_locally_administered());
        }
        assert_ne!(s.nics[0].mac, s.nics[1].mac);
        assert!(instantiate(&t, "dev", "Dev1", uuid()).is_err());
        assert_eq!(
            instantiate(&t, "Dev", "dev1", uuid()).unwrap_err().key(),
            Some("template")
        );
    }

    #[test]
    fn macs_are_stable() {
        let t = Template::parse(DEV).unwrap();
        let a = instantiate(&t, "dev", "a", uuid()).unwrap();
        let b = instantiate(&t, "dev", "b", uuid()).unwrap();
        let macs = |s: &VmSpec| s.nics.iter().map(|n| n.mac).collect::<Vec<_>>();
        assert_eq!(
            macs(&a),
            macs(&b),
            "same uuid, same MACs, whatever the name"
        );
        let c = instantiate(&t, "dev", "a", Uuid::from_u128(7)).unwrap();
        assert_ne!(macs(&a), macs(&c));
        // Pinned so that a change of the derivation (which would renumber every VM) shows.
        assert_eq!(
            MacAddr::derive(uuid(), 0, &[]),
            MacAddr::derive(uuid(), 0, &[])
        );
        let first = MacAddr::derive(uuid(), 0, &[]);
        let skipped = MacAddr::derive(uuid(), 0, &[first]);
        assert_ne!(first, skipped);
        assert_eq!(first.to_string(), a.nics[0].mac.to_string());
        assert_eq!(first.to_string().parse::<MacAddr>().unwrap(), first);
    }

    #[test]
    fn round_trip() {
        for (name, text) in [("docker-host", DOCKER_HOST), ("dev", DEV), ("tiny", TINY)] {
            let t = Template::parse(text).unwrap();
            let mut s = instantiate(&t, name, "vm1", uuid()).unwrap();
            if let Some(n) = s.nics.first_mut() {
                n.address = Some("192.168.1.20/24".to_owned());
                n.gateway = Some("192.168.1.1".parse().unwrap());
                n.nameservers = vec!["192.168.1.1".parse().unwrap()];
            }
            if let Some(ci) = s.cloud_init.as_mut() {
                ci.ssh_authorized_keys = vec!["ssh-ed25519 AAAAC3Nza me@host".to_owned()];
            }
            let text = s.to_toml().unwrap();
            let back = VmSpec::from_toml(&text).unwrap();
            assert_eq!(back, s, "{text}");
            assert_eq!(back.to_toml().unwrap(), text);
        }
    }

    #[test]
    fn spec_rules() {
        let t = Template::parse(DEV).unwrap();
        let s = instantiate(&t, "dev", "vm1", uuid()).unwrap();
        let text = s.to_toml().unwrap();
        let mut dup = s.clone();
        dup.nics[1].mac = dup.nics[0].mac;
        assert_eq!(dup.validate().unwrap_err().key(), Some("nic[1].mac"));
        let mut multi = s.clone();
        multi.nics[0].mac = "01:00:5e:00:00:01".parse().unwrap();
        assert_eq!(multi.validate().unwrap_err().key(), Some("nic[0].mac"));
        let mut file = s.clone();
        file.disks[0].file = "../etc/passwd".to_owned();
        assert_eq!(file.validate().unwrap_err().key(), Some("disk[0].file"));
        let mut same = s.clone();
        same.disks[1].file = "disk0.img".to_owned();
        assert_eq!(same.validate().unwrap_err().key(), Some("disk[1].file"));
        let mut gw = s.clone();
        gw.nics[0].gateway = Some("192.168.1.1".parse().unwrap());
        assert_eq!(gw.validate().unwrap_err().key(), Some("nic[0].gateway"));
        let mut addr = s.clone();
        addr.nics[0].address = Some("192.168.1.20".to_owned());
        assert_eq!(addr.validate().unwrap_err().key(), Some("nic[0].address"));
        let e = VmSpec::from_toml(&text.replace("name = \"vm1\"", "name = \"VM1\"")).unwrap_err();
        assert_eq!(e.key(), Some("name"));
        let e = VmSpec::from_toml(&text.replacen("mac = \"58:9c:fc", "mac = \"58-9c-fc", 1))
            .unwrap_err();
        assert!(e.to_string().contains("mac"), "{e}");
        let e = VmSpec::from_toml(&format!("colour = 1\n{text}")).unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        for (s, b) in [
            ("4G", 4 * GIB),
            ("256M", 256 * MIB),
            ("20GiB", 20 * GIB),
            ("1t", TIB),
            ("512", 512),
            ("32 MB", 32 * MIB),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap().bytes(), b, "{s}");
        }
        for bad in [
            "",
            "G",
            "4X",
            "-1G",
            "99999999999999999999",
            "18014398509481984T",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize::new(4 * GIB).to_string(), "4G");
        assert_eq!(ByteSize::new(1536 * MIB).to_string(), "1536M");
        assert_eq!(ByteSize::new(1000).to_string(), "1000");
        for (s, d) in [
            ("60s", 60),
            ("10s", 10),
            ("2m", 120),
            ("1m 30s", 90),
            ("1h", 3600),
            ("PT5S", 5),
        ] {
            assert_eq!(
                s.parse::<HumanDuration>().unwrap().get(),
                Duration::from_secs(d),
                "{s}"
            );
        }
        assert!("-5s".parse::<HumanDuration>().is_err());
        assert_eq!(
            HumanDuration::new(Duration::from_secs(90)).to_string(),
            "90s"
        );
        assert_eq!(
            HumanDuration::new(Duration::from_secs(120)).to_string(),
            "2m"
        );
        assert_eq!(
            HumanDuration::new(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(
            "1500ms".parse::<HumanDuration>().unwrap().get(),
            Duration::from_millis(1500)
        );
    }

    #[test]
    fn zvol_disks() {
        let text = minimal("").replace("size = \"10G\"", "size = \"10G\"\nbacking = \"zvol\"")
            + "[[disk]]\nsize = \"1G\"\n";
        let t = Template::parse(&text).unwrap();
        assert_eq!(t.disks[0].backing, DiskBacking::Zvol);
        assert_eq!(t.disks[1].backing, DiskBacking::File);
        let mut s = instantiate(&t, "t", "vm1", uuid()).unwrap();
        let files: Vec<&str> = s.disks.iter().map(|d| d.file.as_str()).collect();
        assert_eq!(files, ["disk0", "disk1.img"]);
        assert_eq!(s.zvol_disks().collect::<Vec<_>>(), [0]);
        // Not placed yet: no device, and a stored spec must be placed.
        assert_eq!(s.disks[0].device(), None);
        let e = VmSpec::from_toml(&s.to_toml().unwrap()).unwrap_err();
        assert_eq!(e.key(), Some("disk[0].volume"));
        s.place_volumes("tank/labd/vms/vm1");
        assert_eq!(
            s.disks[0].volume.as_deref(),
            Some("tank/labd/vms/vm1/disk0")
        );
        assert_eq!(s.disks[1].volume, None);
        assert_eq!(
            s.disks[0].device().as_deref(),
            Some("/dev/zvol/tank/labd/vms/vm1/disk0")
        );
        assert_eq!(s.disks[1].device(), None);
        let text = s.to_toml().unwrap();
        assert!(
            text.contains("backing = \"zvol\"") && text.contains("volume = "),
            "{text}"
        );
        assert_eq!(
            text.matches("backing").count(),
            1,
            "a file disk says nothing: {text}"
        );
        assert_eq!(VmSpec::from_toml(&text).unwrap(), s);

        // The volume is a dataset named after the disk, and only zvol disks have one.
        for (bad, key) in [
            ("tank/labd/vms/vm1/disk9", "disk[0].volume"),
            ("tank/labd/vms/vm1/di sk0", "disk[0].volume"),
            ("/dev/zvol/tank/disk0", "disk[0].volume"),
            ("disk0", "disk[0].volume"),
        ] {
            let mut b = s.clone();
            b.disks[0].volume = Some(bad.to_owned());
            assert_eq!(b.validate().unwrap_err().key(), Some(key), "{bad}");
        }
        let mut b = s.clone();
        b.disks[1].volume = Some("tank/labd/vms/vm1/disk1.img".to_owned());
        assert_eq!(b.validate().unwrap_err().key(), Some("disk[1].volume"));

        // Sizes: needed, and a multiple of 128K.
        let zvol = |size: &str| {
            minimal("").replace("size = \"10G\"", &format!("{size}backing = \"zvol\""))
        };
        assert_eq!(
            key_of(Template::parse(&zvol("image = \"a.raw\"\n"))),
            "disk[0].size"
        );
        let e = Template::parse(&zvol("size = \"1100K\"\n")).unwrap_err();
        assert_eq!(e.key(), Some("disk[0].size"));
        assert!(e.to_string().contains("128K"), "{e}");
        Template::parse(&zvol("size = \"1152K\"\n")).unwrap();
        let e = Template::parse(&zvol("size = \"1G\"\n").replace("zvol", "lvm")).unwrap_err();
        assert!(e.to_string().contains("backing"), "{e}");
    }

    #[test]
    fn seed_and_boot_disk() {
        let t = Template::parse(DOCKER_HOST).unwrap();
        let s = instantiate(&t, "docker-host", "docker-host", uuid()).unwrap();
        assert_eq!(s.seed(), Some(SeedBus::VirtioBlk));
        assert_eq!(s.boot_disk(), Some(0));
        let tiny = instantiate(&tiny(), "tiny", "t", uuid()).unwrap();
        assert_eq!(tiny.seed(), None);
        assert_eq!(tiny.boot_disk(), None);
    }
}
