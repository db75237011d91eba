//! The network driver: bridges (labd's switches) and taps (one per VM NIC), through `ip`
//! (iproute2) on Linux and `ifconfig` on FreeBSD.
//!
//! Both drivers are compiled on every OS; [`Net::for_host`] picks one at run time from the OS
//! labd runs on. Each operation is a fixed sequence of argv vectors run by the one
//! [`Runner`]; the FreeBSD sequences are golden-tested (`net/fixtures/`, every line citing
//! ifconfig(8), if_bridge(4), tap(4) or vm-bhyve's behaviour in reference/bhyve.md §3), the
//! Linux ones run for real in the tests.
//!
//! # What the driver knows
//!
//! * **State** is read in one command: `ip -j -d addr show` (JSON) or `ifconfig -a` (text),
//!   parsed into [`Link`]s: name, kind (bridge, tap, loopback), MTU, admin state, the bridge it
//!   is a member of, the *marker* (Linux: the interface alias, `ip link set … alias`; FreeBSD:
//!   the description, `ifconfig … description`) and its global addresses.
//! * **Markers** are how labd recognises what it created; the driver stores and reads them,
//!   `core::switches` decides what they say. Both are set before anything else touches the
//!   interface (FreeBSD: in the very `create` command), so an interface labd made is never
//!   unmarked for longer than one command.
//! * **MTU.** Every member of a bridge has the bridge's MTU (if_bridge(4): "all additional
//!   members are required to have exactly the same value"; Linux lowers the bridge to its
//!   smallest port otherwise), so a tap gets the bridge's MTU before it joins.
//! * **Rollback.** A multi-command operation that fails half-way removes what it created
//!   (the bridge, the tap) and returns the first error.
//!
//! # Names
//!
//! Interface names are at most 15 bytes on both systems (`IFNAMSIZ` 16 with the NUL). On
//! Linux labd names taps itself (`ip tuntap add dev NAME`); on FreeBSD `ifconfig tap create`
//! picks `tapN` and prints it (ifconfig(8) `create`), as vm-bhyve does.

use std::time::Duration;

use serde::Deserialize;

use super::runner::{Argv, Output, RunError, Runner};

/// Longest interface name (`IFNAMSIZ` - 1 on Linux and FreeBSD).
pub const MAX_IFNAME_LEN: usize = 15;

/// Which tool drives the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetKind {
    /// Linux: `ip` from iproute2.
    Iproute2,
    /// FreeBSD: `ifconfig` with if_bridge(4) and tap(4).
    Ifconfig,
}

impl NetKind {
    /// The driver's name (`iproute2`, `ifconfig`).
    pub fn as_str(self) -> &'static str {
        match self {
            NetKind::Iproute2 => "iproute2",
            NetKind::Ifconfig => "ifconfig",
        }
    }

    /// The driver for the OS labd runs on.
    pub fn for_host() -> Self {
        if std::env::consts::OS == "freebsd" {
            NetKind::Ifconfig
        } else {
            NetKind::Iproute2
        }
    }
}

/// What an interface is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkKind {
    /// A bridge (Linux bridge, FreeBSD if_bridge).
    Bridge,
    /// A tap.
    Tap,
    /// The loopback interface.
    Loopback,
    /// Anything else (Ethernet, veth, vlan…).
    #[default]
    Other,
}

/// One network interface as the host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Link {
    /// Interface name.
    pub name: String,
    /// What it is.
    pub kind: LinkKind,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// The bridge it is a member of.
    pub master: Option<String>,
    /// Linux alias / FreeBSD description.
    pub marker: Option<String>,
    /// Addresses other than link-local and host scope.
    pub addresses: Vec<String>,
}

/// What went wrong with a network command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetErrorKind {
    /// The interface does not exist.
    NotFound,
    /// An interface of that name exists already.
    Exists,
    /// Anything else.
    Other,
}

/// A network driver error.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The command ran and refused; `message` is its first line of stderr.
    #[error("`{argv}`: {message}")]
    Command {
        /// The command.
        argv: String,
        /// Classification.
        kind: NetErrorKind,
        /// First line of stderr.
        message: String,
    },
    /// The command could not be run, timed out or was killed.
    #[error(transparent)]
    Run(RunError),
    /// Its output made no sense.
    #[error("cannot parse the output of {program}: {detail}")]
    Parse {
        /// `ip` or `ifconfig`.
        program: &'static str,
        /// What was wrong.
        detail: String,
    },
}

impl NetError {
    /// The classification, when the command itself refused.
    pub fn kind(&self) -> NetErrorKind {
        match self {
            NetError::Command { kind, .. } => *kind,
            _ => NetErrorKind::Other,
        }
    }
}

/// Classify a failed command from its stderr (iproute2 and FreeBSD ifconfig wording).
fn classify(stderr: &str) -> NetErrorKind {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("cannot find device") || lower.contains("does not exist") {
        NetErrorKind::NotFound
    } else if lower.contains("file exists") {
        NetErrorKind::Exists
    } else {
        NetErrorKind::Other
    }
}

impl From<RunError> for NetError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::Exit {
                argv,
                stderr,
                stdout,
                ..
            } => {
                let text = if stderr.trim().is_empty() {
                    stdout
                } else {
                    stderr
                };
                let message = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("failed without a message")
                    .to_owned();
                NetError::Command {
                    argv,
                    kind: classify(&text),
                    message,
                }
            }
            other => NetError::Run(other),
        }
    }
}

/// A bridge to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// The marker (alias / description).
    pub marker: &'a str,
    /// MTU to set on the bridge when it has no uplink (a bridge takes its first member's MTU).
    pub mtu: Option<u32>,
    /// The host interface to make its first member.
    pub uplink: Option<&'a str>,
}

/// A tap to create and join to a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec<'a> {
    /// Its name (iproute2 only; FreeBSD picks `tapN`).
    pub name: &'a str,
    /// The marker.
    pub marker: &'a str,
    /// The bridge it joins.
    pub bridge: &'a str,
    /// The bridge's MTU.
    pub mtu: u32,
}

/// How commands are run: the real runner, or (in tests of the FreeBSD sequences only) a
/// recorder with canned answers.
#[derive(Clone)]
enum Exec {
    Real(Runner),
    #[cfg(test)]
    Recorded(tests::Recorder),
}

impl std::fmt::Debug for Exec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exec::Real(r) => f.debug_tuple("Real").field(r).finish(),
            #[cfg(test)]
            Exec::Recorded(_) => f.write_str("Recorded"),
        }
    }
}

/// The network driver.
#[derive(Debug, Clone)]
pub struct Net {
    kind: NetKind,
    exec: Exec,
}

impl Net {
    /// The driver for the OS labd runs on, running commands with `timeout`.
    pub fn for_host(timeout: Duration) -> Self {
        Self::new(NetKind::for_host(), timeout)
    }

    /// A driver of `kind`.
    pub fn new(kind: NetKind, timeout: Duration) -> Self {
        Self {
            kind,
            exec: Exec::Real(Runner::new(timeout)),
        }
    }

    /// Which driver this is.
    pub fn kind(&self) -> NetKind {
        self.kind
    }

    async fn run(&self, argv: Argv) -> Result<Output, NetError> {
        match &self.exec {
            Exec::Real(r) => Ok(r.run(&argv).await?),
            #[cfg(test)]
            Exec::Recorded(r) => r.run(&argv),
        }
    }

    fn program(&self) -> Argv {
        match self.kind {
            NetKind::Iproute2 => Argv::new("ip"),
            NetKind::Ifconfig => Argv::new("ifconfig"),
        }
    }

    /// Every interface of the host.
    pub async fn links(&self) -> Result<Vec<Link>, NetError> {
        match self.kind {
            NetKind::Iproute2 => {
                let out = self
                    .run(self.program().args(["-j", "-d", "addr", "show"]))
                    .await?;
                parse_ip_json(&out.stdout)
            }
            NetKind::Ifconfig => {
                let out = self.run(self.program().arg("-a")).await?;
                Ok(parse_ifconfig(&out.stdout))
            }
        }
    }

    /// Create a bridge: named, marked, with its MTU (no uplink) or its uplink as first member,
    /// then up. Removed again if a step fails.
    pub async fn create_bridge(&self, spec: &BridgeSpec<'_>) -> Result<(), NetError> {
        let mut steps = self.bridge_steps(spec);
        let first = steps.remove(0);
        self.run(first).await?;
        for step in steps {
            if let Err(e) = self.run(step).await {
                self.undo(spec.name).await;
                return Err(e);
            }
        }
        Ok(())
    }

    fn bridge_steps(&self, spec: &BridgeSpec<'_>) -> Vec<Argv> {
        let p = || self.program();
        let mut steps = Vec::new();
        match self.kind {
            NetKind::Iproute2 => {
                steps.push(p().args(["link", "add", "name", spec.name, "type", "bridge"]));
                steps.push(p().args(["link", "set", "dev", spec.name, "alias", spec.marker]));
                if let (Some(mtu), None) = (spec.mtu, spec.uplink) {
                    steps.push(
                        p().args(["link", "set", "dev", spec.name, "mtu"])
                            .arg(mtu.to_string()),
                    );
                }
                if let Some(uplink) = spec.uplink {
                    steps.push(p().args(["link", "set", "dev", uplink, "master", spec.name]));
                }
                steps.push(p().args(["link", "set", "dev", spec.name, "up"]));
            }
            NetKind::Ifconfig => {
                steps.push(p().args([
                    "bridge",
                    "create",
                    "name",
                    spec.name,
                    "description",
                    spec.marker,
                ]));
                if let (Some(mtu), None) = (spec.mtu, spec.uplink) {
                    steps.push(p().args([spec.name, "mtu"]).arg(mtu.to_string()));
                }
                if let Some(uplink) = spec.uplink {
                    steps.push(p().args([spec.name, "addm", uplink]));
                }
                steps.push(p().args([spec.name, "up"]));
            }
        }
        steps
    }

    /// Create a tap, marked, with the bridge's MTU, joined to the bridge and up; returns its
    /// name. Removed again if a step fails.
    pub async fn create_tap(&self, spec: &TapSpec<'_>) -> Result<String, NetError> {
        let p = || self.program();
        let mtu = spec.mtu.to_string();
        match self.kind {
            NetKind::Iproute2 => {
                self.run(p().args(["tuntap", "add", "dev", spec.name, "mode", "tap"]))
                    .await?;
                let rest = [
                    p().args(["link", "set", "dev", spec.name, "alias", spec.marker]),
                    p().args(["link", "set", "dev", spec.name, "mtu", &mtu])
                        .args(["master", spec.bridge, "up"]),
                ];
                for step in rest {
                    if let Err(e) = self.run(step).await {
                        self.undo(spec.name).await;
                        return Err(e);
                    }
                }
                Ok(spec.name.to_owned())
            }
            NetKind::Ifconfig => {
                let out = self
                    .run(p().args(["tap", "create", "description", spec.marker]))
                    .await?;
                let name = out.stdout.trim().to_owned();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(NetError::Parse {
                        program: "ifconfig",
                        detail: format!("`ifconfig tap create` printed {:?}", out.stdout),
                    });
                }
                let rest = [
                    p().args([name.as_str(), "mtu", &mtu]),
                    p().args([spec.bridge, "addm", &name]),
                    p().args([name.as_str(), "up"]),
                ];
                for step in rest {
                    if let Err(e) = self.run(step).await {
                        self.undo(&name).await;
                        return Err(e);
                    }
                }
                Ok(name)
            }
        }
    }

    /// Destroy an interface labd created (bridge or tap). `Ok(false)` when it was already gone.
    pub async fn destroy(&self, name: &str) -> Result<bool, NetError> {
        let argv = match self.kind {
            NetKind::Iproute2 => self.program().args(["link", "del", "dev", name]),
            NetKind::Ifconfig => self.program().args([name, "destroy"]),
        };
        match self.run(argv).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == NetErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Remove a half-made interface; a failure is logged, the original error is what counts.
    async fn undo(&self, name: &str) {
        if let Err(e) = self.destroy(name).await {
            tracing::warn!(interface = name, error = %e, "cannot remove a half-made interface");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsers

/// One interface of `ip -j -d addr show`.
#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    master: Option<String>,
    #[serde(default)]
    ifalias: Option<String>,
    #[serde(default)]
    link_type: Option<String>,
    #[serde(default)]
    linkinfo: Option<IpLinkInfo>,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct IpLinkInfo {
    #[serde(default)]
    info_kind: Option<String>,
    #[serde(default)]
    info_data: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct IpAddr {
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u32>,
    #[serde(default)]
    scope: Option<String>,
}

/// Parse `ip -j -d addr show` (iproute2 ≥ 4.14 JSON output).
pub fn parse_ip_json(text: &str) -> Result<Vec<Link>, NetError> {
    let links: Vec<IpLink> = serde_json::from_str(text).map_err(|e| NetError::Parse {
        program: "ip",
        detail: e.to_string(),
    })?;
    Ok(links
        .into_iter()
        .map(|l| {
            let info_kind = l.linkinfo.as_ref().and_then(|i| i.info_kind.as_deref());
            let tun_type = l
                .linkinfo
                .as_ref()
                .and_then(|i| i.info_data.as_ref())
                .and_then(|d| d.get("type"))
                .and_then(serde_json::Value::as_str);
            let kind = if l.link_type.as_deref() == Some("loopback")
                || l.flags.iter().any(|f| f == "LOOPBACK")
            {
                LinkKind::Loopback
            } else if info_kind == Some("bridge") {
                LinkKind::Bridge
            } else if info_kind == Some("tun") && tun_type == Some("tap") {
                LinkKind::Tap
            } else {
                LinkKind::Other
            };
            let addresses = l
                .addr_info
                .iter()
                .filter(|a| !matches!(a.scope.as_deref(), Some("link" | "host")))
                .filter_map(|a| {
                    a.local
                        .as_ref()
                        .map(|ip| format!("{ip}/{}", a.prefixlen.unwrap_or(0)))
                })
                .collect();
            Link {
                up: l.flags.iter().any(|f| f == "UP"),
                name: l.ifname,
                kind,
                mtu: l.mtu,
                master: l.master,
                marker: l.ifalias.filter(|a| !a.is_empty()),
                addresses,
            }
        })
        .collect())
}

/// Parse FreeBSD `ifconfig -a`: a header line per interface
/// (`NAME: flags=HEX<FLAG,…> metric N mtu N`) and tab-indented detail lines, of which labd
/// reads `description:`, `member:` (a bridge's members), `groups:` (`bridge`, `tap`) and
/// `inet`/`inet6` (link-local and loopback scope left out).
pub fn parse_ifconfig(text: &str) -> Vec<Link> {
    let mut links: Vec<Link> = Vec::new();
    let mut members: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let Some((name, rest)) = line.split_once(": ") else {
                continue;
            };
            if !rest.starts_with("flags=") {
                continue;
            }
            let flags = rest
                .split_once('<')
                .and_then(|(_, r)| r.split_once('>'))
                .map_or("", |(f, _)| f);
            let words: Vec<&str> = rest.split_whitespace().collect();
            let mtu = words
                .iter()
                .position(|w| *w == "mtu")
                .and_then(|i| words.get(i + 1))
                .and_then(|m| m.parse().ok())
                .unwrap_or(0);
            let flags: Vec<&str> = flags.split(',').collect();
            links.push(Link {
                name: name.to_owned(),
                kind: if flags.contains(&"LOOPBACK") {
                    LinkKind::Loopback
                } else {
                    LinkKind::Other
                },
                mtu,
                up: flags.contains(&"UP"),
                ..Link::default()
            });
            continue;
        }
        let Some(link) = links.last_mut() else {
            continue;
        };
        let detail = line.trim();
        if let Some(d) = detail.strip_prefix("description: ") {
            link.marker = Some(d.to_owned());
        } else if let Some(m) = detail.strip_prefix("member: ") {
            if let Some(member) = m.split_whitespace().next() {
                members.push((member.to_owned(), link.name.clone()));
            }
        } else if let Some(g) = detail.strip_prefix("groups: ") {
            let groups: Vec<&str> = g.split_whitespace().collect();
            if link.kind != LinkKind::Loopback {
                if groups.contains(&"bridge") {
                    link.kind = LinkKind::Bridge;
                } else if groups.contains(&"tap") {
                    link.kind = LinkKind::Tap;
                }
            }
        } else if let Some(a) = detail
            .strip_prefix("inet ")
            .or_else(|| detail.strip_prefix("inet6 "))
        {
            let addr = a.split_whitespace().next().unwrap_or_default();
            let link_local = addr.to_ascii_lowercase().starts_with("fe80:");
            if !addr.is_empty() && !link_local && link.kind != LinkKind::Loopback {
                link.addresses.push(addr.to_owned());
            }
        }
    }
    for (member, bridge) in members {
        if let Some(l) = links.iter_mut().find(|l| l.name == member) {
            l.master = Some(bridge);
        }
    }
    links
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records the argv of every command and answers from canned outputs: only for the
    /// FreeBSD sequences, which cannot run here.
    #[derive(Clone, Default)]
    pub(super) struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        /// (argv prefix, stdout) answers: the first matching one answers and is used up
        /// unless it is the last for its prefix; no match is an empty stdout.
        answers: Arc<Mutex<Vec<(String, String)>>>,
        /// argv prefixes that fail with this stderr.
        failures: Arc<Vec<(String, String)>>,
    }

    impl Recorder {
        pub(super) fn run(&self, argv: &Argv) -> Result<Output, NetError> {
            let rendered = argv.to_string();
            self.log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(rendered.clone());
            if let Some((_, stderr)) = self.failures.iter().find(|(p, _)| rendered.starts_with(p)) {
                return Err(RunError::Exit {
                    argv: rendered,
                    code: 1,
                    stdout: String::new(),
                    stderr: stderr.clone(),
                }
                .into());
            }
            let mut answers = self
                .answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let matching: Vec<usize> = (0..answers.len())
                .filter(|&i| rendered.starts_with(&answers[i].0))
                .collect();
            let stdout = match matching.as_slice() {
                [] => String::new(),
                [only] => answers[*only].1.clone(),
                [first, ..] => answers.remove(*first).1,
            };
            Ok(Output {
                stdout,
                stderr: String::new(),
            })
        }

        pub(super) fn commands(&self) -> Vec<String> {
            self.log
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        }
    }

    /// A FreeBSD driver over a recorder.
    pub(crate) fn recorded_ifconfig(
        answers: Vec<(&str, &str)>,
        failures: Vec<(&str, &str)>,
    ) -> (Net, RecorderHandle) {
        let rec = Recorder {
            log: Arc::default(),
            answers: Arc::new(Mutex::new(
                answers
                    .into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
            )),
            failures: Arc::new(
                failures
                    .into_iter()
                    .map(|(a, b)| (a.to_owned(), b.to_owned()))
                    .collect(),
            ),
        };
        let net = Net {
            kind: NetKind::Ifconfig,
            exec: Exec::Recorded(rec.clone()),
        };
        (net, RecorderHandle(rec))
    }

    /// What the tests of other modules see of a recorder.
    #[derive(Clone)]
    pub(crate) struct RecorderHandle(Recorder);

    impl RecorderHandle {
        /// Every command run so far, rendered.
        pub(crate) fn commands(&self) -> Vec<String> {
            self.0.commands()
        }
    }

    /// The commands of a golden fixture: every non-empty line that is not a comment, without
    /// its trailing `  # citation`.
    pub(crate) fn golden(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                l.split_once("  #")
                    .map_or(l, |(cmd, _)| cmd)
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    /// Every command line of a fixture must carry its citation.
    pub(crate) fn assert_cited(name: &str, text: &str) {
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            assert!(
                line.split_once("  # ")
                    .is_some_and(|(_, c)| !c.trim().is_empty()),
                "{name}: line without a citation: {line}"
            );
        }
    }

    const IP_JSON: &str = include_str!("net/fixtures/ip-j-d-addr-show.json");
    const IFCONFIG_A: &str = include_str!("net/fixtures/ifconfig-a.txt");

    #[test]
    fn ip_json_capture_is_understood() {
        let links = parse_ip_json(IP_JSON).expect("parse");
        let get = |n: &str| links.iter().find(|l| l.name == n).expect(n);
        let lo = get("lo");
        assert_eq!(lo.kind, LinkKind::Loopback);
        assert!(lo.addresses.is_empty(), "host scope is left out");
        let eth = get("eth0");
        assert_eq!((eth.kind, eth.mtu, eth.up), (LinkKind::Other, 1400, true));
        assert_eq!(
            eth.addresses.len(),
            2,
            "IPv4 and IPv6 global, not link-local: {eth:?}"
        );
        let br = get("vm-lan");
        assert_eq!(br.kind, LinkKind::Bridge);
        assert_eq!(br.mtu, 9000);
        assert_eq!(br.marker.as_deref(), Some("labd:switch:lan:tank/labd/vms"));
        let tap = get("tap5f0c1b2a3c-0");
        assert_eq!(tap.kind, LinkKind::Tap);
        assert_eq!(tap.master.as_deref(), Some("vm-lan"));
        assert_eq!(tap.marker.as_deref(), Some("labd:tap:web:0:tank/labd/vms"));
        assert_eq!(tap.mtu, 9000);
        let up = get("labdu1");
        assert_eq!(up.master.as_deref(), Some("vm-lan"));
        assert_eq!(up.marker, None);
    }

    #[test]
    fn ip_json_garbage_is_an_error() {
        assert!(matches!(
            parse_ip_json("not json"),
            Err(NetError::Parse { program: "ip", .. })
        ));
        assert_eq!(parse_ip_json("[]").expect("empty").len(), 0);
    }

    #[test]
    fn ifconfig_text_is_understood() {
        let links = parse_ifconfig(IFCONFIG_A);
        let get = |n: &str| links.iter().find(|l| l.name == n).expect(n);
        let em0 = get("em0");
        assert_eq!((em0.kind, em0.mtu, em0.up), (LinkKind::Other, 1500, true));
        assert_eq!(em0.addresses, ["192.168.1.10"]);
        assert_eq!(em0.master.as_deref(), Some("vm-lan"));
        let lo0 = get("lo0");
        assert_eq!(lo0.kind, LinkKind::Loopback);
        assert!(lo0.addresses.is_empty());
        let br = get("vm-lan");
        assert_eq!(br.kind, LinkKind::Bridge);
        assert_eq!(br.marker.as_deref(), Some("labd:switch:lan:zroot/labd/vms"));
        let tap = get("tap0");
        assert_eq!(tap.kind, LinkKind::Tap);
        assert_eq!(tap.master.as_deref(), Some("vm-lan"));
        assert_eq!(tap.marker.as_deref(), Some("labd:tap:web:0:zroot/labd/vms"));
        assert!(!get("tap1").up);
        let admin = get("bridge0");
        assert_eq!(admin.kind, LinkKind::Bridge);
        assert_eq!(admin.marker, None);
        assert_eq!(admin.addresses, ["10.0.0.1"]);
    }

    #[test]
    fn stderr_classification() {
        assert_eq!(
            classify("Cannot find device \"tapx\"\n"),
            NetErrorKind::NotFound
        );
        assert_eq!(
            classify("ifconfig: interface tap9 does not exist\n"),
            NetErrorKind::NotFound
        );
        assert_eq!(
            classify("RTNETLINK answers: File exists\n"),
            NetErrorKind::Exists
        );
        assert_eq!(
            classify("ifconfig: SIOCIFCREATE2: File exists\n"),
            NetErrorKind::Exists
        );
        assert_eq!(classify("Operation not permitted"), NetErrorKind::Other);
    }

    #[test]
    fn linux_bridge_steps() {
        let net = Net::new(NetKind::Iproute2, Duration::from_secs(1));
        let spec = BridgeSpec {
            name: "vm-lan",
            marker: "labd:switch:lan:t/vms",
            mtu: Some(9000),
            uplink: None,
        };
        let steps: Vec<String> = net
            .bridge_steps(&spec)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            steps,
            [
                "ip link add name vm-lan type bridge",
                "ip link set dev vm-lan alias labd:switch:lan:t/vms",
                "ip link set dev vm-lan mtu 9000",
                "ip link set dev vm-lan up",
            ]
        );
        let with_uplink = BridgeSpec {
            uplink: Some("eth1"),
            ..spec
        };
        let steps: Vec<String> = net
            .bridge_steps(&with_uplink)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(steps[2], "ip link set dev eth1 master vm-lan");
        assert_eq!(
            steps.len(),
            4,
            "the bridge takes the uplink's MTU: {steps:?}"
        );
    }

    #[tokio::test]
    async fn freebsd_tap_create_reads_the_name_and_undoes_on_failure() {
        let (net, rec) = recorded_ifconfig(
            vec![("ifconfig tap create", "tap3\n")],
            vec![(
                "ifconfig vm-lan addm",
                "ifconfig: BRDGADD tap3: Invalid argument\n",
            )],
        );
        let spec = TapSpec {
            name: "ignored",
            marker: "labd:tap:web:0:zroot/labd/vms",
            bridge: "vm-lan",
            mtu: 1500,
        };
        let err = net.create_tap(&spec).await.expect_err("addm fails");
        assert!(err.to_string().contains("BRDGADD"), "{err}");
        assert_eq!(
            rec.commands(),
            [
                "ifconfig tap create description labd:tap:web:0:zroot/labd/vms",
                "ifconfig tap3 mtu 1500",
                "ifconfig vm-lan addm tap3",
                "ifconfig tap3 destroy",
            ]
        );
    }

    #[tokio::test]
    async fn destroy_of_a_missing_interface_is_not_an_error() {
        let (net, _) = recorded_ifconfig(
            vec![],
            vec![(
                "ifconfig tap7 destroy",
                "ifconfig: interface tap7 does not exist\n",
            )],
        );
        assert!(!net.destroy("tap7").await.expect("gone is fine"));
    }
}
