//! Virtual switches: named bridges that VM NICs join through taps (the `switch` of a VM
//! spec's `[[nic]]`), created with `labctl switch create`, and the taps of running VMs.
//!
//! # Where switches are kept
//!
//! The definitions (name, optional uplink, optional MTU, or the adopted bridge) are the file
//! `switches.toml` in the mountpoint of the VM root dataset `<root>/<vm_root>`, written
//! atomically (temporary file, fsync, rename) by labd only. Why there: the switches belong to
//! the VMs that name them, and the VMs are the datasets below that one, so a snapshot, a
//! `zfs send` or a pool moved to another host carries both together; it is where vm-bhyve
//! keeps its switches too (`$vm_dir/.config/system.conf`, reference/bhyve.md §3). ZFS user
//! properties were the alternative, but a property set on `<vm_root>` is inherited by every
//! VM dataset and shows up in each one's property list, and removing one needs
//! `zfs inherit`. The bridges themselves are not state: after a host reboot they are gone,
//! and [`Core::restore_network`] re-creates them when labd starts.
//!
//! # Names and markers
//!
//! * A switch name is 1 to [`MAX_SWITCH_NAME_LEN`] (12) characters of `a-z`, `0-9` and `-`,
//!   starting with a letter and not ending with `-`: its bridge is `vm-<name>` (vm-bhyve's
//!   naming, reference/bhyve.md §3), and an interface name has at most 15 bytes on Linux and
//!   FreeBSD.
//! * labd's taps are `tap<first 10 hex digits of the VM's UUID>-<NIC index>` on Linux (15
//!   bytes, the same for every start of the VM, so a running VM's taps can be found again
//!   from its spec) and `tapN` on FreeBSD, where `ifconfig tap create` picks the number.
//! * Everything labd creates carries a *marker* (Linux: the interface alias; FreeBSD: the
//!   description) naming it and its owner, the VM root dataset, so two labd instances on one
//!   host (or the test suite's many) never touch each other's interfaces:
//!   `labd:switch:<switch>:<vm root>` on bridges, `labd:tap:<vm>:<nic>:<vm root>` on taps.
//!   labd only destroys interfaces whose marker is its own.
//!
//! # Rules
//!
//! * `create` checks everything before touching the host: the name, the MTU (1280-65535),
//!   and the uplink: it must exist, not be a loopback, bridge or tap, not be a member of a
//!   bridge already (Linux would silently move it), and, where the driver says a bridge
//!   member cannot keep addresses (Linux, where the addresses of a bridge port stop working),
//!   have none. A bridge takes its first member's MTU (if_bridge(4)), so with an uplink the
//!   MTU is the uplink's: a different `mtu` is refused rather than changing the host's
//!   interface.
//! * **Adoption.** `create NAME --bridge BR` adopts an existing bridge made by the admin: labd
//!   records it, joins taps to it, and never changes, re-creates or destroys it (destroying
//!   the switch only forgets it). An existing `vm-<name>` without labd's marker is never
//!   taken over silently: create is refused and names `--bridge`. One with labd's marker
//!   (a definition lost with its file) is taken back as labd's own.
//! * `destroy` refuses while a VM's spec names the switch or a tap is on its bridge, and
//!   destroys only a bridge carrying labd's marker.
//! * Every change to switches and taps holds one lock, so a destroy never races a VM start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::error::invalid;
use super::names::DatasetName;
use super::props::Assignment;
use super::vmspec::VmSpec;
use super::{Core, Error, Host, Refusal};
use crate::host::net::{BridgeSpec, Link, LinkKind, MAX_IFNAME_LEN, Net, NetKind, TapSpec};
use crate::host::zfs::ZfsErrorKind;
use crate::wire::{self, Actor};

/// Longest switch name: `vm-` + 12 = 15 bytes, the longest interface name.
pub const MAX_SWITCH_NAME_LEN: usize = 12;
/// Prefix of the bridges labd creates.
pub const BRIDGE_PREFIX: &str = "vm-";
/// Smallest MTU a switch may have (the IPv6 minimum).
pub const MIN_MTU: u32 = 1280;
/// Largest MTU.
pub const MAX_MTU: u32 = 65535;
/// The definitions file in the VM root's mountpoint.
pub const SWITCHES_FILE: &str = "switches.toml";
/// Longest a network command may take.
const NET_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest marker: Linux keeps at most 255 bytes of an interface alias (`IFALIASZ`).
const MAX_MARKER_LEN: usize = 255;

/// One switch in `switches.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchDef {
    /// The bridge's first member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uplink: Option<String>,
    /// The bridge's MTU when it has no uplink.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    /// An adopted bridge; absent for labd's own `vm-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    adopted: Option<String>,
}

impl SwitchDef {
    fn bridge(&self, name: &str) -> String {
        self.adopted.clone().unwrap_or_else(|| bridge_name(name))
    }

    fn managed(&self) -> bool {
        self.adopted.is_none()
    }
}

/// `switches.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchFile {
    #[serde(default, rename = "switch")]
    switches: BTreeMap<String, SwitchDef>,
}

/// The bridge labd creates for switch `name`.
pub fn bridge_name(name: &str) -> String {
    format!("{BRIDGE_PREFIX}{name}")
}

/// The Linux tap of NIC `nic` of the VM with `uuid` (module docs).
pub fn tap_name(uuid: Uuid, nic: usize) -> String {
    let hex = uuid.simple().to_string();
    format!("tap{}-{nic}", &hex[..10])
}

fn switch_marker(owner: &str, name: &str) -> String {
    format!("labd:switch:{name}:{owner}")
}

fn tap_marker(owner: &str, vm: &str, nic: usize) -> String {
    format!("labd:tap:{vm}:{nic}:{owner}")
}

/// The VM and NIC of a tap marker of `owner`; `None` for anything else.
fn parse_tap_marker(marker: &str, owner: &str) -> Option<(String, usize)> {
    let rest = marker.strip_prefix("labd:tap:")?;
    let mut parts = rest.splitn(3, ':');
    let vm = parts.next()?;
    let nic = parts.next()?.parse().ok()?;
    (parts.next()? == owner).then(|| (vm.to_owned(), nic))
}

/// Check a switch name (module docs).
pub fn validate_switch_name(name: &str) -> Result<(), String> {
    if name.len() > MAX_SWITCH_NAME_LEN {
        return Err(format!(
            "it is {} characters long; at most {MAX_SWITCH_NAME_LEN} are allowed (its bridge \
             vm-{name} must fit the 15-byte interface name limit)",
            name.len()
        ));
    }
    super::vmspec::check_label_chars(name)
}

/// Check a host interface name: 1-15 bytes of letters, digits, `_`, `.`, `-`, not starting
/// with `-` (so it cannot read as an option) and not `.` or `..`.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("it is empty".to_owned());
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(format!(
            "'{name}' is {} bytes long; interface names have at most {MAX_IFNAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "'{}' is not allowed in an interface name",
            c.escape_debug()
        ));
    }
    if name.starts_with('-') || name == "." || name == ".." {
        return Err(format!("'{name}' is not an interface name"));
    }
    Ok(())
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        what: format!("switch '{name}'"),
    }
}

/// Where the definitions live.
#[derive(Debug, Clone)]
struct Store {
    /// `<root>/<vm_root>`: the owner id in markers.
    dataset: DatasetName,
    /// Its mountpoint.
    dir: PathBuf,
    /// Whether the dataset exists (it is created with the first switch or VM).
    exists: bool,
}

impl Store {
    fn owner(&self) -> &str {
        self.dataset.as_str()
    }

    fn file(&self) -> PathBuf {
        self.dir.join(SWITCHES_FILE)
    }
}

async fn store(host: &Host) -> Result<Store, Error> {
    let dataset = super::vms::vm_root(host)?;
    let (dir, exists) = match super::vms::mounted_dir(host, &dataset).await {
        Ok(dir) => (dir, true),
        // Made with the first switch or VM, where vms::vm_root_mountpoint says.
        Err(Error::Zfs(e)) if e.kind() == Some(ZfsErrorKind::NotFound) => {
            (super::vms::vm_root_mountpoint(host).await?, false)
        }
        Err(e) => return Err(e),
    };
    Ok(Store {
        dataset,
        dir,
        exists,
    })
}

/// The definitions and where they are.
async fn load(host: &Host) -> Result<(Store, SwitchFile), Error> {
    let store = store(host).await?;
    if !store.exists {
        return Ok((store, SwitchFile::default()));
    }
    let path = store.file();
    let file = match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SwitchFile::default(),
        Err(e) => {
            return Err(Error::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            )));
        }
    };
    Ok((store, file))
}

/// Write the definitions atomically.
fn save(store: &Store, file: &SwitchFile) -> Result<(), Error> {
    let text = toml::to_string(file)
        .map_err(|e| Error::Internal(format!("cannot write the switch definitions: {e}")))?;
    let text = format!(
        "# labd's switches (labctl switch create/destroy); written by labd, not for editing.\n{text}"
    );
    let tmp = store.dir.join(format!(".{SWITCHES_FILE}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, store.file())
    };
    write().map_err(|e| Error::Internal(format!("cannot write {}: {e}", store.file().display())))
}

fn find<'a>(links: &'a [Link], name: &str) -> Option<&'a Link> {
    links.iter().find(|l| l.name == name)
}

/// The wire form of one switch, with the host's view of its bridge.
fn describe(name: &str, def: &SwitchDef, links: &[Link]) -> wire::Switch {
    let bridge = def.bridge(name);
    let link = find(links, &bridge).filter(|l| l.kind == LinkKind::Bridge);
    let mut ports: Vec<String> = links
        .iter()
        .filter(|l| l.master.as_deref() == Some(bridge.as_str()))
        .map(|l| l.name.clone())
        .collect();
    ports.sort();
    wire::Switch {
        name: name.to_owned(),
        managed: def.managed(),
        uplink: def.uplink.clone(),
        mtu: link.map(|l| l.mtu).or(def.mtu),
        state: match link {
            Some(l) if l.up => "up",
            Some(_) => "down",
            None => "missing",
        }
        .to_owned(),
        ports,
        bridge,
    }
}

/// The checks of an uplink against the host (field `uplink`).
fn check_uplink(
    net: NetKind,
    uplink: &str,
    mtu: Option<u32>,
    links: &[Link],
) -> Result<u32, Error> {
    let Some(link) = find(links, uplink) else {
        return Err(invalid(
            "uplink",
            "unknown_interface",
            format!("there is no interface '{uplink}' on this host"),
        ));
    };
    let what = match link.kind {
        LinkKind::Loopback => Some("the loopback interface"),
        LinkKind::Bridge => Some("a bridge"),
        LinkKind::Tap => Some("a tap"),
        LinkKind::Other => None,
    };
    if let Some(what) = what {
        return Err(invalid(
            "uplink",
            "invalid_uplink",
            format!("'{uplink}' is {what}; an uplink is a host interface such as em0 or eth1"),
        ));
    }
    if let Some(bridge) = &link.master {
        return Err(invalid(
            "uplink",
            "uplink_in_use",
            format!("'{uplink}' is already a member of bridge '{bridge}'"),
        ));
    }
    if net == NetKind::Iproute2 && !link.addresses.is_empty() {
        return Err(invalid(
            "uplink",
            "uplink_has_addresses",
            format!(
                "'{uplink}' has addresses ({}); on Linux the addresses of a bridge member stop \
                 working, so move them to the bridge first or use another interface",
                link.addresses.join(", ")
            ),
        ));
    }
    if let Some(mtu) = mtu
        && mtu != link.mtu
    {
        return Err(invalid(
            "mtu",
            "mtu_mismatch",
            format!(
                "a bridge takes its uplink's MTU and '{uplink}' has {}, not {mtu}; set the MTU \
                 on '{uplink}' first or leave mtu out",
                link.mtu
            ),
        ));
    }
    Ok(link.mtu)
}

/// labd's switches and the taps of its VMs: the network driver and the one lock every change
/// holds. Cheap to clone (the lock is shared).
#[derive(Debug, Clone)]
pub struct Switches {
    net: Net,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Switches {
    /// Over a network driver.
    pub fn new(net: Net) -> Self {
        Self {
            net,
            lock: Arc::default(),
        }
    }

    /// With the driver of the OS labd runs on.
    pub fn for_host() -> Self {
        Self::new(Net::for_host(NET_TIMEOUT))
    }

    /// The network driver's kind.
    pub fn driver(&self) -> NetKind {
        self.net.kind()
    }

    /// Refuse a VM whose NIC names a switch that does not exist (field `nics[i].switch`,
    /// code `unknown_switch`). Changes nothing; for `vm start` before anything is created.
    pub async fn check_nics(&self, host: &Host, vm: &VmSpec) -> Result<(), Error> {
        let (_, file) = load(host).await?;
        check_nics_in(&file, vm)
    }

    /// Create one tap per NIC of `vm`, in NIC order, each marked as the VM's, with its bridge's
    /// MTU, joined to the bridge of the NIC's switch and up; returns their names. Taps left
    /// over from an earlier run of the VM are removed first; a missing bridge of a managed
    /// switch is re-created. On failure the taps made so far are removed again.
    pub async fn attach_taps(&self, host: &Host, vm: &VmSpec) -> Result<Vec<String>, Error> {
        let _guard = self.lock.lock().await;
        let (store, file) = load(host).await?;
        self.attach_in(&file, store.owner(), vm).await
    }

    /// [`Self::attach_taps`] once the definitions are read (under the lock).
    async fn attach_in(
        &self,
        file: &SwitchFile,
        owner: &str,
        vm: &VmSpec,
    ) -> Result<Vec<String>, Error> {
        check_nics_in(file, vm)?;
        let mut links = self.net.links().await?;
        self.remove_taps(&links, owner, |v| v == vm.name).await?;
        links = self.net.links().await?;
        // Every bridge first, so a missing one stops the start before any tap exists.
        let mut bridges: Vec<(String, u32)> = Vec::with_capacity(vm.nics.len());
        for nic in &vm.nics {
            let def = file.switches.get(&nic.switch).cloned().unwrap_or_default();
            let bridge = def.bridge(&nic.switch);
            if find(&links, &bridge).is_none() {
                self.recreate(&nic.switch, &def, owner, &links).await?;
                links = self.net.links().await?;
            }
            let link = find(&links, &bridge)
                .filter(|l| l.kind == LinkKind::Bridge)
                .ok_or_else(|| Error::NotFound {
                    what: format!("bridge '{bridge}' of switch '{}'", nic.switch),
                })?;
            bridges.push((bridge, link.mtu));
        }
        let mut made: Vec<String> = Vec::with_capacity(vm.nics.len());
        for (i, (bridge, mtu)) in bridges.iter().enumerate() {
            let name = tap_name(vm.uuid, i);
            let marker = tap_marker(owner, &vm.name, i);
            let result = if self.net.kind() == NetKind::Iproute2 && find(&links, &name).is_some() {
                Err(Error::refused(
                    Refusal::Exists,
                    format!("an interface '{name}' labd did not create exists; remove it"),
                ))
            } else if marker.len() > MAX_MARKER_LEN {
                Err(Error::Internal(format!(
                    "the tap marker '{marker}' is longer than {MAX_MARKER_LEN} bytes"
                )))
            } else {
                let spec = TapSpec {
                    name: &name,
                    marker: &marker,
                    bridge,
                    mtu: *mtu,
                };
                self.net.create_tap(&spec).await.map_err(Error::from)
            };
            match result {
                Ok(tap) => {
                    super::jobs::log_line(format!("tap {tap} of nic[{i}] joined {bridge}"));
                    made.push(tap);
                }
                Err(e) => {
                    for tap in &made {
                        if let Err(undo) = self.net.destroy(tap).await {
                            tracing::warn!(tap, error = %undo, "cannot remove a tap again");
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(made)
    }

    /// Remove the taps of VM `vm_name` (found by their marker); already-gone taps are fine.
    /// Returns the names removed.
    pub async fn detach_taps(&self, host: &Host, vm_name: &str) -> Result<Vec<String>, Error> {
        let _guard = self.lock.lock().await;
        let store = store(host).await?;
        self.detach_in(store.owner(), vm_name).await
    }

    /// [`Self::detach_taps`] once the owner is known (under the lock).
    async fn detach_in(&self, owner: &str, vm_name: &str) -> Result<Vec<String>, Error> {
        let links = self.net.links().await?;
        self.remove_taps(&links, owner, |v| v == vm_name).await
    }

    /// Remove labd's taps of every VM for which `is_running` is false (left by a crash or a
    /// labd restart). Returns the names removed.
    pub async fn remove_stale_taps(
        &self,
        host: &Host,
        is_running: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<Vec<String>, Error> {
        let _guard = self.lock.lock().await;
        let store = store(host).await?;
        let links = self.net.links().await?;
        self.remove_taps(&links, store.owner(), |v| !is_running(v))
            .await
    }

    async fn remove_taps(
        &self,
        links: &[Link],
        owner: &str,
        which: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, Error> {
        let mut removed = Vec::new();
        for link in links.iter().filter(|l| l.kind == LinkKind::Tap) {
            let Some((vm, _)) = link
                .marker
                .as_deref()
                .and_then(|m| parse_tap_marker(m, owner))
            else {
                continue;
            };
            if which(&vm) && self.net.destroy(&link.name).await? {
                super::jobs::log_line(format!("removed tap {} of VM '{vm}'", link.name));
                removed.push(link.name.clone());
            }
        }
        Ok(removed)
    }

    /// Create the bridge of a managed switch that is missing (host reboot, removed by hand).
    async fn recreate(
        &self,
        name: &str,
        def: &SwitchDef,
        owner: &str,
        links: &[Link],
    ) -> Result<(), Error> {
        let bridge = def.bridge(name);
        if !def.managed() {
            return Err(Error::NotFound {
                what: format!(
                    "bridge '{bridge}' (adopted by switch '{name}'; labd does not create it)"
                ),
            });
        }
        let uplink = def.uplink.as_deref();
        if let Some(up) = uplink {
            check_uplink(self.net.kind(), up, def.mtu, links).map_err(|e| {
                Error::Internal(format!("switch '{name}' cannot be re-created: {e}"))
            })?;
        }
        let marker = switch_marker(owner, name);
        self.net
            .create_bridge(&BridgeSpec {
                name: &bridge,
                marker: &marker,
                mtu: def.mtu,
                uplink,
            })
            .await?;
        tracing::info!(switch = name, bridge = %bridge, "bridge re-created");
        Ok(())
    }

    /// Re-create the bridges of managed switches that are missing (labd start after a host
    /// reboot). Returns one line per switch that could not be restored.
    pub async fn restore(&self, host: &Host) -> Result<Vec<String>, Error> {
        let _guard = self.lock.lock().await;
        let (store, file) = load(host).await?;
        if file.switches.is_empty() {
            return Ok(Vec::new());
        }
        let links = self.net.links().await?;
        let mut problems = Vec::new();
        for (name, def) in &file.switches {
            if find(&links, &def.bridge(name)).is_some() {
                continue;
            }
            if let Err(e) = self.recreate(name, def, store.owner(), &links).await {
                problems.push(format!("switch '{name}': {e}"));
            }
        }
        Ok(problems)
    }

    async fn list(&self, host: &Host) -> Result<Vec<wire::Switch>, Error> {
        let (_, file) = load(host).await?;
        let links = if file.switches.is_empty() {
            Vec::new()
        } else {
            self.net.links().await?
        };
        Ok(file
            .switches
            .iter()
            .map(|(name, def)| describe(name, def, &links))
            .collect())
    }

    /// Create (or adopt) switch `req.name`. Returns it and whether `<vm_root>` was created.
    async fn create(
        &self,
        host: &Host,
        req: &wire::CreateSwitch,
    ) -> Result<(wire::Switch, Option<String>), Error> {
        check_request(req)?;
        let _guard = self.lock.lock().await;
        let (store, mut file) = load(host).await?;
        let links = self.net.links().await?;
        let plan = plan_create(self.net.kind(), &file, store.owner(), req, &links)?;
        let (store, made_root) = ensure_store(host, store).await?;
        if let Some(spec) = &plan.create {
            self.net.create_bridge(&spec.as_spec()).await?;
        }
        file.switches.insert(req.name.clone(), plan.def.clone());
        if let Err(e) = save(&store, &file) {
            if let Some(spec) = &plan.create {
                let _ = self.net.destroy(&spec.name).await;
            }
            return Err(e);
        }
        let links = self.net.links().await?;
        Ok((describe(&req.name, &plan.def, &links), made_root))
    }

    /// Destroy switch `name` unless `users` (VMs naming it) or a tap on its bridge says no.
    /// Returns the bridge and whether it was destroyed.
    async fn destroy(
        &self,
        host: &Host,
        name: &str,
        users: &[String],
    ) -> Result<(String, bool), Error> {
        validate_switch_name(name).map_err(|m| {
            invalid(
                "name",
                "invalid_name",
                format!("invalid switch name '{name}': {m}"),
            )
        })?;
        let _guard = self.lock.lock().await;
        let (store, mut file) = load(host).await?;
        let links = self.net.links().await?;
        let (bridge, ours) = plan_destroy(&file, store.owner(), name, users, &links)?;
        let destroyed = if ours {
            self.net.destroy(&bridge).await?
        } else {
            false
        };
        file.switches.remove(name);
        save(&store, &file)?;
        Ok((bridge, destroyed))
    }
}

/// The checks of a create request that need nothing but the request.
fn check_request(req: &wire::CreateSwitch) -> Result<(), Error> {
    validate_switch_name(&req.name).map_err(|m| {
        invalid(
            "name",
            "invalid_name",
            format!("invalid switch name '{}': {m}", req.name),
        )
    })?;
    if let Some(up) = &req.uplink {
        validate_ifname(up).map_err(|m| invalid("uplink", "invalid_interface", m))?;
    }
    if let Some(mtu) = req.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(invalid(
            "mtu",
            "invalid_mtu",
            format!("{mtu} is outside {MIN_MTU}..{MAX_MTU}"),
        ));
    }
    if let Some(br) = &req.bridge {
        validate_ifname(br).map_err(|m| invalid("bridge", "invalid_interface", m))?;
        if req.uplink.is_some() || req.mtu.is_some() {
            return Err(invalid(
                "bridge",
                "adopt_as_is",
                format!(
                    "an adopted bridge is used as it is; configure uplink and MTU on '{br}' \
                     yourself and leave uplink and mtu out"
                ),
            ));
        }
    }
    Ok(())
}

/// A bridge `create` will make.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NewBridge {
    name: String,
    marker: String,
    mtu: Option<u32>,
    uplink: Option<String>,
}

impl NewBridge {
    fn as_spec(&self) -> BridgeSpec<'_> {
        BridgeSpec {
            name: &self.name,
            marker: &self.marker,
            mtu: self.mtu,
            uplink: self.uplink.as_deref(),
        }
    }
}

/// What `create` records and makes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CreatePlan {
    def: SwitchDef,
    /// `None`: adopt, or take back labd's own bridge.
    create: Option<NewBridge>,
}

/// Decide `create` against the definitions and the host's interfaces (module docs, Rules).
fn plan_create(
    net: NetKind,
    file: &SwitchFile,
    owner: &str,
    req: &wire::CreateSwitch,
    links: &[Link],
) -> Result<CreatePlan, Error> {
    if file.switches.contains_key(&req.name) {
        return Err(Error::refused(
            Refusal::Exists,
            format!("switch '{}' already exists", req.name),
        ));
    }
    let def = SwitchDef {
        uplink: req.uplink.clone(),
        mtu: req.mtu,
        adopted: req.bridge.clone(),
    };
    if let Some(br) = &req.bridge {
        match find(links, br) {
            None => {
                return Err(invalid(
                    "bridge",
                    "unknown_interface",
                    format!("there is no interface '{br}' on this host"),
                ));
            }
            Some(l) if l.kind != LinkKind::Bridge => {
                return Err(invalid(
                    "bridge",
                    "not_a_bridge",
                    format!("'{br}' is not a bridge"),
                ));
            }
            Some(_) => {}
        }
        if let Some((other, _)) = file.switches.iter().find(|(n, d)| d.bridge(n) == *br) {
            return Err(Error::refused(
                Refusal::Exists,
                format!("bridge '{br}' is switch '{other}' already"),
            ));
        }
        return Ok(CreatePlan { def, create: None });
    }
    let bridge = def.bridge(&req.name);
    let marker = switch_marker(owner, &req.name);
    match find(links, &bridge) {
        Some(l) if l.marker.as_deref() == Some(marker.as_str()) => {
            tracing::info!(bridge = %bridge, "taking back a bridge labd created");
            Ok(CreatePlan { def, create: None })
        }
        Some(_) => Err(Error::refused(
            Refusal::Exists,
            format!(
                "an interface '{bridge}' that labd did not create exists; to use it as switch \
                 '{0}', adopt it: labctl switch create {0} --bridge {bridge}",
                req.name
            ),
        )),
        None => {
            if let Some(up) = &req.uplink {
                check_uplink(net, up, req.mtu, links)?;
            }
            if marker.len() > MAX_MARKER_LEN {
                return Err(Error::Internal(format!(
                    "the bridge marker '{marker}' is longer than {MAX_MARKER_LEN} bytes"
                )));
            }
            let create = NewBridge {
                name: bridge,
                marker,
                mtu: req.mtu,
                uplink: req.uplink.clone(),
            };
            Ok(CreatePlan {
                def,
                create: Some(create),
            })
        }
    }
}

/// Decide `destroy`: the bridge and whether to destroy it (labd's marker on it), or why not.
fn plan_destroy(
    file: &SwitchFile,
    owner: &str,
    name: &str,
    users: &[String],
    links: &[Link],
) -> Result<(String, bool), Error> {
    let def = file.switches.get(name).ok_or_else(|| not_found(name))?;
    if !users.is_empty() {
        return Err(Error::refused(
            Refusal::InUse,
            format!(
                "switch '{name}' is used by VM {}; change or destroy them first",
                users.join(", ")
            ),
        ));
    }
    let bridge = def.bridge(name);
    let taps: Vec<&str> = links
        .iter()
        .filter(|l| l.kind == LinkKind::Tap && l.master.as_deref() == Some(bridge.as_str()))
        .map(|l| l.name.as_str())
        .collect();
    if !taps.is_empty() {
        return Err(Error::refused(
            Refusal::InUse,
            format!(
                "taps {} are on bridge '{bridge}' of switch '{name}'",
                taps.join(", ")
            ),
        ));
    }
    let marker = switch_marker(owner, name);
    let ours = match find(links, &bridge) {
        Some(l) if def.managed() && l.marker.as_deref() == Some(marker.as_str()) => true,
        Some(_) if def.managed() => {
            tracing::warn!(bridge = %bridge, "bridge without labd's marker left alone");
            false
        }
        _ => false,
    };
    Ok((bridge, ours))
}

fn check_nics_in(file: &SwitchFile, vm: &VmSpec) -> Result<(), Error> {
    for (i, nic) in vm.nics.iter().enumerate() {
        if !file.switches.contains_key(&nic.switch) {
            return Err(invalid(
                &format!("nics[{i}].switch"),
                "unknown_switch",
                format!(
                    "VM '{}' nic[{i}] is on switch '{}', which does not exist (labctl switch \
                     list; labctl switch create {})",
                    vm.name, nic.switch, nic.switch
                ),
            ));
        }
    }
    Ok(())
}

/// Create `<root>/<vm_root>` (managed) when missing, so the file has a home. Returns the
/// store and the dataset's name if it was created.
async fn ensure_store(host: &Host, store: Store) -> Result<(Store, Option<String>), Error> {
    if store.exists {
        return Ok((store, None));
    }
    let managed = Assignment {
        name: super::datasets::MANAGED.to_owned(),
        value: "on".to_owned(),
    };
    host.zfs.create(&store.dataset, &[managed], true).await?;
    let created = store.dataset.to_string();
    let store = self::store(host).await?;
    if !store.exists || !Path::new(&store.dir).is_dir() {
        return Err(Error::Internal(format!(
            "{created} was created but is not mounted at {}",
            store.dir.display()
        )));
    }
    Ok((store, Some(created)))
}

impl Core {
    /// Every switch with its bridge's state.
    pub async fn list_switches(&self) -> Result<Vec<wire::Switch>, Error> {
        self.switches.list(&self.host()).await
    }

    /// Create switch `req.name` (or adopt `req.bridge`): checked, created on the host, then
    /// recorded; event `switch.created`.
    pub async fn create_switch(
        &self,
        req: wire::CreateSwitch,
        actor: Option<Actor>,
    ) -> Result<wire::Switch, Error> {
        let host = self.host();
        let (switch, made_root) = self.switches.create(&host, &req).await?;
        if let Some(root) = made_root {
            self.events.publish(
                "dataset.created",
                &root,
                actor,
                json!({"for_switch": switch.name}),
            );
        }
        self.events.publish(
            "switch.created",
            &switch.name,
            actor,
            json!({
                "bridge": switch.bridge,
                "managed": switch.managed,
                "uplink": switch.uplink,
                "mtu": switch.mtu,
            }),
        );
        Ok(switch)
    }

    /// Destroy switch `name`: refused while a VM names it or a tap is on it; its bridge is
    /// destroyed only when labd created it. Event `switch.destroyed`.
    pub async fn destroy_switch(&self, name: &str, actor: Option<Actor>) -> Result<(), Error> {
        let host = self.host();
        let users: Vec<String> = self
            .list_vms()
            .await?
            .into_iter()
            .filter(|vm| vm.nics.iter().any(|n| n.switch == name))
            .map(|vm| vm.name)
            .collect();
        let (bridge, destroyed) = self.switches.destroy(&host, name, &users).await?;
        self.events.publish(
            "switch.destroyed",
            name,
            actor,
            json!({"bridge": bridge, "bridge_destroyed": destroyed}),
        );
        Ok(())
    }

    /// At start: re-create missing bridges of managed switches and remove taps of VMs that do
    /// not run. Problems are logged; they never stop labd.
    pub async fn restore_network(&self) {
        let host = self.host();
        match self.switches.restore(&host).await {
            Ok(problems) => {
                for p in problems {
                    tracing::warn!(problem = %p, "switch not restored");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot restore switches"),
        }
        let vms = Arc::clone(&self.vms);
        let running = move |vm: &str| vms.is_active(vm);
        match self.switches.remove_stale_taps(&host, &running).await {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(taps = ?removed, "removed stale taps");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot remove stale taps"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn switch_names() {
        for ok in ["lan", "a", "dmz-2", "abcdefghijkl"] {
            validate_switch_name(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("abcdefghijklm", "at most 12"),
            ("Lan", "'L' is not allowed"),
            ("a_b", "'_' is not allowed"),
            ("2lan", "start with a letter"),
            ("lan-", "end with '-'"),
            ("-lan", "start with a letter"),
            ("lan 1", "' ' is not allowed"),
        ] {
            let e = validate_switch_name(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(bridge_name("abcdefghijkl").len(), MAX_IFNAME_LEN);
    }

    #[test]
    fn interface_names() {
        for ok in ["em0", "eth1", "enp0s31f6", "vlan.100", "br_lan", "bridge0"] {
            validate_ifname(ok).unwrap();
        }
        for bad in [
            "",
            "-eth0",
            "..",
            "eth0/1",
            "a b",
            "abcdefghijklmnop",
            "eth0:1",
            "é",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tap_names_and_markers() {
        let uuid = Uuid::parse_str("5f0c1b2a-3c4d-4e5f-8a6b-7c8d9e0f1a2b").unwrap();
        assert_eq!(tap_name(uuid, 0), "tap5f0c1b2a3c-0");
        assert_eq!(tap_name(uuid, 7).len(), MAX_IFNAME_LEN);
        let owner = "tank/labd/vms";
        let m = tap_marker(owner, "web", 1);
        assert_eq!(m, "labd:tap:web:1:tank/labd/vms");
        assert_eq!(parse_tap_marker(&m, owner), Some(("web".to_owned(), 1)));
        // Another labd's taps, bridges and foreign descriptions are not ours.
        assert_eq!(parse_tap_marker(&m, "other/vms"), None);
        assert_eq!(parse_tap_marker(&switch_marker(owner, "lan"), owner), None);
        assert_eq!(parse_tap_marker("vmnet/web/0/public", owner), None);
        // A dataset name may contain ':'; it is the last field.
        let colon = "tank/a:b";
        let m = tap_marker(colon, "web", 0);
        assert_eq!(parse_tap_marker(&m, colon), Some(("web".to_owned(), 0)));
    }

    fn link(name: &str, kind: LinkKind) -> Link {
        Link {
            name: name.to_owned(),
            kind,
            mtu: 1500,
            up: true,
            ..Link::default()
        }
    }

    #[test]
    fn uplink_rules() {
        let mut links = vec![
            link("lo", LinkKind::Loopback),
            link("eth0", LinkKind::Other),
            link("eth1", LinkKind::Other),
            link("br0", LinkKind::Bridge),
            link("eth2", LinkKind::Other),
        ];
        links[1].addresses = vec!["192.0.2.1/24".to_owned()];
        links[4].master = Some("br0".to_owned());
        let code = |r: Result<u32, Error>| match r {
            Err(Error::Invalid { field, code, .. }) => format!("{field}:{code}"),
            other => format!("{other:?}"),
        };
        let ip = NetKind::Iproute2;
        assert_eq!(check_uplink(ip, "eth1", None, &links).unwrap(), 1500);
        assert_eq!(check_uplink(ip, "eth1", Some(1500), &links).unwrap(), 1500);
        assert_eq!(
            code(check_uplink(ip, "eth9", None, &links)),
            "uplink:unknown_interface"
        );
        assert_eq!(
            code(check_uplink(ip, "lo", None, &links)),
            "uplink:invalid_uplink"
        );
        assert_eq!(
            code(check_uplink(ip, "br0", None, &links)),
            "uplink:invalid_uplink"
        );
        assert_eq!(
            code(check_uplink(ip, "eth2", None, &links)),
            "uplink:uplink_in_use"
        );
        assert_eq!(
            code(check_uplink(ip, "eth0", None, &links)),
            "uplink:uplink_has_addresses"
        );
        // FreeBSD up to 14 keeps addresses on bridge members (the host's em0 as uplink).
        assert_eq!(
            check_uplink(NetKind::Ifconfig, "eth0", None, &links).unwrap(),
            1500
        );
        assert_eq!(
            code(check_uplink(ip, "eth1", Some(9000), &links)),
            "mtu:mtu_mismatch"
        );
    }

    #[test]
    fn definitions_round_trip_and_describe() {
        let text = "[switch.lan]\nuplink = \"em0\"\n\n[switch.dmz]\nadopted = \"bridge0\"\n\n[switch.jumbo]\nmtu = 9000\n";
        let file: SwitchFile = toml::from_str(text).unwrap();
        assert_eq!(file.switches.len(), 3);
        let back: SwitchFile = toml::from_str(&toml::to_string(&file).unwrap()).unwrap();
        assert_eq!(back, file);
        assert!(toml::from_str::<SwitchFile>("[switch.x]\nuplnk = \"em0\"\n").is_err());

        let links =
            crate::host::net::parse_ifconfig(include_str!("../host/net/fixtures/ifconfig-a.txt"));
        let lan = describe("lan", &file.switches["lan"], &links);
        assert_eq!(
            (
                lan.bridge.as_str(),
                lan.managed,
                lan.state.as_str(),
                lan.mtu
            ),
            ("vm-lan", true, "up", Some(1500))
        );
        assert_eq!(lan.ports, ["em0", "tap0"]);
        let dmz = describe("dmz", &file.switches["dmz"], &links);
        assert_eq!((dmz.bridge.as_str(), dmz.managed), ("bridge0", false));
        let jumbo = describe("jumbo", &file.switches["jumbo"], &links);
        assert_eq!((jumbo.state.as_str(), jumbo.mtu), ("missing", Some(9000)));
    }

    #[test]
    fn unknown_switch_names_the_nic() {
        let t = crate::core::vmspec::Template::parse(include_str!(
            "../../../vm-templates/docker-host.toml"
        ))
        .unwrap();
        let spec =
            crate::core::vmspec::instantiate(&t, "docker-host", "web", Uuid::new_v4()).unwrap();
        let switch = spec.nics[0].switch.clone();
        match check_nics_in(&SwitchFile::default(), &spec) {
            Err(Error::Invalid {
                field,
                code,
                message,
            }) => {
                assert_eq!((field.as_str(), code), ("nics[0].switch", "unknown_switch"));
                assert!(message.contains(&format!("'{switch}'")), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let mut file = SwitchFile::default();
        file.switches.insert(switch, SwitchDef::default());
        check_nics_in(&file, &spec).unwrap();
    }

    // ---- FreeBSD golden sequences (recording runner; host/net/fixtures/README.md) ----

    use crate::host::net::tests::{assert_cited, golden, recorded_ifconfig};

    const OWNER: &str = "zroot/labd/vms";
    const STATE: &str = include_str!("../host/net/fixtures/ifconfig-a.txt");
    const BOOT: &str = include_str!("../host/net/fixtures/ifconfig-a-boot.txt");
    const SWITCH: &str = include_str!("../host/net/fixtures/ifconfig-a-switch.txt");

    fn check_golden(name: &str, fixture: &str, commands: &[String]) {
        assert_cited(name, fixture);
        assert_eq!(commands, golden(fixture), "{name}");
    }

    /// `create`'s host part: read the state, plan, create the bridge.
    async fn create_on(state: &str, req: &wire::CreateSwitch) -> Result<Vec<String>, Error> {
        let (net, rec) = recorded_ifconfig(vec![("ifconfig -a", state)], vec![]);
        let links = net.links().await?;
        let plan = plan_create(net.kind(), &SwitchFile::default(), OWNER, req, &links)?;
        if let Some(new) = &plan.create {
            net.create_bridge(&new.as_spec()).await?;
        }
        Ok(rec.commands())
    }

    fn req(name: &str, uplink: Option<&str>, mtu: Option<u32>) -> wire::CreateSwitch {
        wire::CreateSwitch {
            name: name.to_owned(),
            uplink: uplink.map(str::to_owned),
            mtu,
            bridge: None,
        }
    }

    #[tokio::test]
    async fn freebsd_create_goldens() {
        let cmds = create_on(BOOT, &req("lan", Some("em0"), None))
            .await
            .unwrap();
        check_golden(
            "bridge-uplink.cmds",
            include_str!("../host/net/fixtures/bridge-uplink.cmds"),
            &cmds,
        );
        let cmds = create_on(BOOT, &req("jumbo", None, Some(9000)))
            .await
            .unwrap();
        check_golden(
            "bridge-mtu.cmds",
            include_str!("../host/net/fixtures/bridge-mtu.cmds"),
            &cmds,
        );
    }

    #[tokio::test]
    async fn freebsd_create_refusals_run_nothing_but_the_read() {
        let code = |r: Result<Vec<String>, Error>| match r {
            Err(e) => e.code(),
            Ok(cmds) => panic!("created: {cmds:?}"),
        };
        // em0 is vm-lan's member already; vm-lan exists (labd's: taken back, not created).
        assert_eq!(
            code(create_on(STATE, &req("dmz", Some("em0"), None)).await),
            "uplink_in_use"
        );
        assert_eq!(
            code(create_on(BOOT, &req("dmz", Some("em9"), None)).await),
            "unknown_interface"
        );
        assert_eq!(
            code(create_on(BOOT, &req("dmz", Some("em0"), Some(9000))).await),
            "mtu_mismatch"
        );
        assert_eq!(
            code(create_on(BOOT, &req("dmz", Some("lo0"), None)).await),
            "invalid_uplink"
        );
        // The same bridge name with another owner's (or no) marker is not labd's.
        let other = BOOT.replace("bridge0:", "vm-lan:");
        assert_eq!(
            code(create_on(&other, &req("lan", None, None)).await),
            "exists"
        );
        let taken_back = create_on(SWITCH, &req("lan", None, None)).await.unwrap();
        assert_eq!(taken_back, ["ifconfig -a"]);
        // Adopting: only an existing bridge, and as it is.
        let adopt = |br: &str| wire::CreateSwitch {
            bridge: Some(br.to_owned()),
            ..req("lab", None, None)
        };
        assert_eq!(
            create_on(BOOT, &adopt("bridge0")).await.unwrap(),
            ["ifconfig -a"]
        );
        assert_eq!(code(create_on(BOOT, &adopt("em0")).await), "not_a_bridge");
        assert_eq!(
            code(create_on(BOOT, &adopt("bridge7")).await),
            "unknown_interface"
        );
        let both = wire::CreateSwitch {
            mtu: Some(9000),
            ..adopt("bridge0")
        };
        assert_eq!(check_request(&both).unwrap_err().code(), "adopt_as_is");
    }

    fn dev_spec() -> VmSpec {
        let t =
            crate::core::vmspec::Template::parse(include_str!("../../../vm-templates/dev.toml"))
                .unwrap();
        let uuid = Uuid::parse_str("5f0c1b2a-3c4d-4e5f-8a6b-7c8d9e0f1a2b").unwrap();
        crate::core::vmspec::instantiate(&t, "dev", "dev", uuid).unwrap()
    }

    fn two_switches() -> SwitchFile {
        toml::from_str("[switch.lan]\nuplink = \"em0\"\n[switch.lab]\nadopted = \"bridge0\"\n")
            .unwrap()
    }

    #[tokio::test]
    async fn freebsd_attach_and_detach_goldens() {
        let spec = dev_spec();
        assert_eq!(
            spec.nics
                .iter()
                .map(|n| n.switch.as_str())
                .collect::<Vec<_>>(),
            ["lan", "lab"]
        );
        let (net, rec) = recorded_ifconfig(
            vec![
                ("ifconfig -a", STATE),
                ("ifconfig tap create", "tap3\n"),
                ("ifconfig tap create", "tap4\n"),
            ],
            vec![],
        );
        let taps = Switches::new(net)
            .attach_in(&two_switches(), OWNER, &spec)
            .await
            .unwrap();
        assert_eq!(taps, ["tap3", "tap4"]);
        check_golden(
            "attach-dev.cmds",
            include_str!("../host/net/fixtures/attach-dev.cmds"),
            &rec.commands(),
        );

        let (net, rec) = recorded_ifconfig(vec![("ifconfig -a", STATE)], vec![]);
        let removed = Switches::new(net).detach_in(OWNER, "web").await.unwrap();
        assert_eq!(removed, ["tap0"]);
        check_golden(
            "detach-web.cmds",
            include_str!("../host/net/fixtures/detach-web.cmds"),
            &rec.commands(),
        );
    }

    #[tokio::test]
    async fn freebsd_attach_refuses_an_unknown_switch_before_any_command() {
        let (net, rec) = recorded_ifconfig(vec![("ifconfig -a", STATE)], vec![]);
        let mut file = two_switches();
        file.switches.remove("lab");
        let e = Switches::new(net)
            .attach_in(&file, OWNER, &dev_spec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "unknown_switch");
        assert!(rec.commands().is_empty(), "{:?}", rec.commands());
    }

    #[tokio::test]
    async fn freebsd_destroy_golden_and_refusals() {
        let file = two_switches();
        let (net, rec) = recorded_ifconfig(vec![("ifconfig -a", SWITCH)], vec![]);
        let links = net.links().await.unwrap();
        let (bridge, ours) = plan_destroy(&file, OWNER, "lan", &[], &links).unwrap();
        assert!(ours);
        assert!(net.destroy(&bridge).await.unwrap());
        check_golden(
            "destroy-bridge.cmds",
            include_str!("../host/net/fixtures/destroy-bridge.cmds"),
            &rec.commands(),
        );
        // A VM names it; a tap is on it; not defined.
        let users = ["web".to_owned()];
        let e = plan_destroy(&file, OWNER, "lan", &users, &links).unwrap_err();
        assert_eq!(e.code(), "in_use");
        assert!(e.to_string().contains("web"), "{e}");
        let busy = crate::host::net::parse_ifconfig(STATE);
        let e = plan_destroy(&file, OWNER, "lan", &[], &busy).unwrap_err();
        assert!(e.to_string().contains("tap0"), "{e}");
        assert_eq!(
            plan_destroy(&file, OWNER, "nope", &[], &links)
                .unwrap_err()
                .code(),
            "not_found"
        );
        // The adopted bridge and a bridge with another owner's marker are never destroyed.
        assert_eq!(
            plan_destroy(&file, OWNER, "lab", &[], &links).unwrap(),
            ("bridge0".to_owned(), false)
        );
        assert!(
            !plan_destroy(&file, "tank/other/vms", "lan", &[], &links)
                .unwrap()
                .1
        );
    }

    // ---- Linux, for real: iproute2 on this host (root) ----

    /// Removes the test's interfaces by name when dropped, also when the test fails.
    struct Cleanup(Vec<String>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", "dev", name])
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Interfaces left by earlier runs of this test whose process is gone (names and markers
    /// carry the pid).
    fn sweep_dead_test_interfaces(links: &[Link]) {
        let dead = |pid: &str| {
            !pid.is_empty()
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new(&format!("/proc/{pid}")).exists()
        };
        for l in links {
            let by_name = ["lu", "vm-t", "vm-f"].iter().any(|p| {
                l.name
                    .strip_prefix(p)
                    .is_some_and(|rest| dead(rest.trim_end_matches('p')))
            });
            let by_marker = l
                .marker
                .as_deref()
                .and_then(|m| m.rsplit_once(":labdtest/"))
                .is_some_and(|(_, pid)| dead(pid));
            if by_name || by_marker {
                let _ = std::process::Command::new("ip")
                    .args(["link", "del", "dev", &l.name])
                    .status();
            }
        }
    }

    #[tokio::test]
    async fn linux_switch_and_taps_for_real() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: creating bridges and taps needs root");
            return;
        }
        let net = Net::new(NetKind::Iproute2, Duration::from_secs(10));
        sweep_dead_test_interfaces(&net.links().await.unwrap());
        let pid = std::process::id();
        let owner = format!("labdtest/{pid}");
        let (switch, uplink, foreign) =
            (format!("t{pid}"), format!("lu{pid}"), format!("vm-f{pid}"));
        let bridge = bridge_name(&switch);
        let mut spec = dev_spec();
        spec.uuid = Uuid::new_v4();
        for nic in &mut spec.nics {
            nic.switch.clone_from(&switch);
        }
        let taps: Vec<String> = (0..2).map(|i| tap_name(spec.uuid, i)).collect();
        let _cleanup = Cleanup(
            [bridge.clone(), uplink.clone(), foreign.clone()]
                .into_iter()
                .chain(taps.iter().cloned())
                .collect(),
        );
        // The uplink: a veth (this kernel has no dummy driver), MTU 9000.
        ip(&[
            "link",
            "add",
            &uplink,
            "mtu",
            "9000",
            "type",
            "veth",
            "peer",
            "name",
            &format!("{uplink}p"),
        ]);

        let links = net.links().await.unwrap();
        let plan = plan_create(
            net.kind(),
            &SwitchFile::default(),
            &owner,
            &req(&switch, Some(&uplink), Some(9000)),
            &links,
        )
        .unwrap();
        net.create_bridge(&plan.create.clone().unwrap().as_spec())
            .await
            .unwrap();
        let links = net.links().await.unwrap();
        let br = find(&links, &bridge).expect("bridge");
        assert_eq!((br.kind, br.mtu, br.up), (LinkKind::Bridge, 9000, true));
        assert_eq!(
            br.marker.as_deref(),
            Some(switch_marker(&owner, &switch).as_str())
        );
        assert_eq!(
            find(&links, &uplink).unwrap().master.as_deref(),
            Some(bridge.as_str())
        );

        let mut file = SwitchFile::default();
        file.switches.insert(switch.clone(), plan.def.clone());
        let sw = Switches::new(net.clone());
        assert_eq!(sw.attach_in(&file, &owner, &spec).await.unwrap(), taps);
        // Again (a crash left them): the old ones go, the same names come back.
        assert_eq!(sw.attach_in(&file, &owner, &spec).await.unwrap(), taps);
        let links = net.links().await.unwrap();
        for (i, tap) in taps.iter().enumerate() {
            let t = find(&links, tap).expect("tap");
            assert_eq!((t.kind, t.mtu, t.up), (LinkKind::Tap, 9000, true), "{t:?}");
            assert_eq!(t.master.as_deref(), Some(bridge.as_str()));
            assert_eq!(
                t.marker.as_deref(),
                Some(tap_marker(&owner, "dev", i).as_str())
            );
        }
        let listed = describe(&switch, &file.switches[&switch], &links);
        assert_eq!(listed.ports.len(), 3, "{listed:?}");
        let e = plan_destroy(&file, &owner, &switch, &[], &links).unwrap_err();
        assert_eq!(e.code(), "in_use");
        // Another owner's stale-tap sweep does not see them.
        let other = Switches::new(net.clone());
        assert!(
            other
                .detach_in("labdtest/other", "dev")
                .await
                .unwrap()
                .is_empty()
        );

        let mut removed = sw.detach_in(&owner, "dev").await.unwrap();
        removed.sort();
        assert_eq!(removed, taps);
        assert!(
            sw.detach_in(&owner, "dev").await.unwrap().is_empty(),
            "gone is fine"
        );
        let links = net.links().await.unwrap();
        assert!(taps.iter().all(|t| find(&links, t).is_none()));

        let (name, ours) = plan_destroy(&file, &owner, &switch, &[], &links).unwrap();
        assert!(ours);
        assert!(net.destroy(&name).await.unwrap());
        let links = net.links().await.unwrap();
        assert!(find(&links, &bridge).is_none());
        let up = find(&links, &uplink).expect("the uplink is not destroyed");
        assert_eq!(up.master, None);

        // A bridge made by hand is not labd's: create refuses, destroy of an adopted one or
        // of a managed definition over it leaves it.
        ip(&["link", "add", "name", &foreign, "type", "bridge"]);
        let links = net.links().await.unwrap();
        let fsw = format!("f{pid}");
        let e = plan_create(
            net.kind(),
            &SwitchFile::default(),
            &owner,
            &req(&fsw, None, None),
            &links,
        )
        .unwrap_err();
        assert_eq!(e.code(), "exists");
        let mut file = SwitchFile::default();
        file.switches.insert(fsw.clone(), SwitchDef::default());
        assert_eq!(
            plan_destroy(&file, &owner, &fsw, &[], &links).unwrap(),
            (foreign.clone(), false)
        );
        file.switches.insert(
            fsw.clone(),
            SwitchDef {
                adopted: Some(foreign.clone()),
                ..SwitchDef::default()
            },
        );
        assert_eq!(
            plan_destroy(&file, &owner, &fsw, &[], &links).unwrap(),
            (foreign.clone(), false)
        );
        assert!(find(&net.links().await.unwrap(), &foreign).is_some());
    }
}
