//! The provisioning plan: a TOML file that says what the guest should be (see
//! docs/provisioning.md), and its validation.
//!
//! Every table refuses unknown keys, so a misspelt key is an error that names it rather than
//! a silently ignored setting. [`Plan::load`] then checks everything that can be checked
//! without labd or the guest (names, CIDRs, addresses, options, the files the plan names) and
//! reports every problem at once, each with the key it is about. Whether the datasets exist
//! is asked of labd afterwards ([`Plan::dataset_refs`]).

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where compose projects live on the guest unless the plan says otherwise.
pub const DEFAULT_COMPOSE_DIR: &str = "/srv/labctl";

/// NFS mount options used unless the plan gives its own: `hard` because the server is the
/// hypervisor itself (a `soft` mount returns EIO on a hiccup and corrupts databases).
pub const DEFAULT_NFS_OPTIONS: [&str; 4] = ["hard", "timeo=600", "retrans=2", "noatime"];

/// The whole plan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// How to reach and drive the guest.
    #[serde(default)]
    pub guest: GuestSection,
    /// System updates.
    #[serde(default)]
    pub system: SystemSection,
    /// The Docker engine and networks.
    #[serde(default)]
    pub docker: DockerSection,
    /// How the guest mounts labd's datasets.
    #[serde(default)]
    pub nfs: Option<NfsSection>,
    /// Compose projects, deployed in this order.
    #[serde(default)]
    pub services: Vec<Service>,
}

/// `[guest]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSection {
    /// SSH user (default: the ssh configuration's, else the local user).
    pub user: Option<String>,
    /// SSH port (default: the ssh configuration's, else 22).
    pub port: Option<u16>,
    /// Run every step through `sudo -n` (for a non-root user).
    #[serde(default)]
    pub sudo: bool,
    /// Directory of the compose projects on the guest.
    pub compose_dir: Option<String>,
}

/// `[system]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemSection {
    /// Bring every package up to date (`apt-get dist-upgrade`).
    #[serde(default)]
    pub update: bool,
    /// Install and enable `unattended-upgrades`.
    #[serde(default)]
    pub auto_updates: bool,
}

/// Where the Docker packages come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineSource {
    /// Debian 12 and older: Docker's repository (Debian's has no compose v2); 13 and newer:
    /// Debian's.
    #[default]
    Auto,
    /// Debian's `docker.io` and `docker-compose` (compose v2 from Debian 13 on).
    Debian,
    /// Docker's own apt repository (`docker-ce`, `docker-compose-plugin`).
    Docker,
}

impl EngineSource {
    /// The word the remote step takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Debian => "debian",
            Self::Docker => "docker",
        }
    }
}

/// `[docker]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSection {
    /// Install the Docker engine and compose v2.
    #[serde(default)]
    pub engine: bool,
    /// Where the packages come from.
    #[serde(default)]
    pub engine_source: EngineSource,
    /// Networks to create.
    #[serde(default)]
    pub networks: Vec<Network>,
}

/// `[[docker.networks]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Network name.
    pub name: String,
    /// Driver (default `bridge`).
    #[serde(default = "default_driver")]
    pub driver: String,
    /// Subnet in CIDR notation (default: Docker picks one).
    pub subnet: Option<String>,
}

fn default_driver() -> String {
    "bridge".to_owned()
}

/// `[nfs]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NfsSection {
    /// The host's address as the guest reaches it (an IP: Docker resolves names for
    /// `type=nfs` only, and a name that stops resolving hangs every mount).
    pub server: String,
    /// `nfsvers` (default 4).
    #[serde(default = "default_nfs_version")]
    pub version: String,
    /// Mount options besides `addr`, `nfsvers` and `rw`/`ro`.
    pub options: Option<Vec<String>>,
    /// The server's NFSv4 root (FreeBSD's `V4:` line, labd's `exports.v4_root`): mount paths
    /// are the dataset's mount point relative to it. Default `/`.
    pub v4_root: Option<String>,
    /// For nfs-ganesha: exports appear at `PREFIX/<export name>` instead (labd's
    /// `exports.pseudo_prefix`).
    pub pseudo_prefix: Option<String>,
}

fn default_nfs_version() -> String {
    "4".to_owned()
}

/// `[[services]]`: one compose project.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Project name (`docker compose -p`).
    pub name: String,
    /// The compose file, relative to the plan's directory.
    pub compose: PathBuf,
    /// An env file uploaded as the project's `.env`, relative to the plan's directory.
    pub env: Option<PathBuf>,
    /// Named volumes labctl manages.
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// `[[services.volumes]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// The volume's key in the compose file.
    pub name: String,
    /// A labd dataset: the volume is an NFS mount of it. Absent: a local volume.
    pub dataset: Option<String>,
    /// `rw` (default) or `ro`.
    pub access: Option<String>,
    /// What root on the guest is on the host: `root`, `nobody` (default) or `UID:GID`.
    pub maproot: Option<String>,
    /// Every guest user becomes this identity on the host (instead of `maproot`).
    pub mapall: Option<String>,
}

/// One problem of a plan: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `services[0].volumes[1].dataset`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a plan cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The file cannot be read.
    #[error("cannot read the plan {}", path.display())]
    Read {
        /// The plan file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the plan's shape (toml names the key and line).
    #[error("plan {}: {message}", path.display())]
    Parse {
        /// The plan file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// Problems found by validation.
    #[error("plan {} is not valid:\n  {}", path.display(), join_problems(problems))]
    Invalid {
        /// The plan file.
        path: PathBuf,
        /// Every problem.
        problems: Vec<Problem>,
    },
}

fn join_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// A service's files, read from the plan's directory.
#[derive(Debug, Clone)]
pub struct ServiceFiles {
    /// The compose file's text.
    pub compose: String,
    /// The env file's bytes.
    pub env: Option<Vec<u8>>,
}

/// A plan that passed validation, with the files it names.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    /// The plan.
    pub plan: Plan,
    /// The files of `plan.services`, in the same order.
    pub files: Vec<ServiceFiles>,
}

impl Plan {
    /// Read, parse and validate the plan at `path` (files are relative to its directory).
    pub fn load(path: &Path) -> Result<LoadedPlan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.to_owned(),
            source,
        })?;
        let plan: Self = toml::from_str(&text).map_err(|e| PlanError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let mut problems = plan.validate();
        let mut files = Vec::with_capacity(plan.services.len());
        for (i, s) in plan.services.iter().enumerate() {
            let compose = read_text(base, &s.compose, &format!("services[{i}].compose"));
            let env = s.env.as_ref().map(|env| {
                std::fs::read(base.join(env)).map_err(|e| Problem {
                    key: format!("services[{i}].env"),
                    message: format!("cannot read {}: {e}", base.join(env).display()),
                })
            });
            match (compose, env.transpose()) {
                (Ok(compose), Ok(env)) => {
                    if let Err(message) = super::compose::check(&compose) {
                        problems.push(Problem {
                            key: format!("services[{i}].compose"),
                            message,
                        });
                    }
                    files.push(ServiceFiles { compose, env });
                }
                (compose, env) => {
                    problems.extend(compose.err());
                    problems.extend(env.err());
                }
            }
        }
        if problems.is_empty() {
            Ok(LoadedPlan { plan, files })
        } else {
            Err(PlanError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem that can be found without reading files, labd or the guest.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Problems::default();
        if let Some(user) = &self.guest.user
            && (user.is_empty() || user.starts_with('-') || user.contains(char::is_whitespace))
        {
            p.add("guest.user", format!("{user:?} is not a user name"));
        }
        if let Some(dir) = &self.guest.compose_dir {
            check_abs_path(&mut p, "guest.compose_dir", dir);
        }
        let mut names = BTreeSet::new();
        for (i, n) in self.docker.networks.iter().enumerate() {
            let key = format!("docker.networks[{i}]");
            check_name(&mut p, &format!("{key}.name"), &n.name);
            if !names.insert(n.name.as_str()) {
                p.add(
                    format!("{key}.name"),
                    format!("network {:?} is listed twice", n.name),
                );
            }
            check_name(&mut p, &format!("{key}.driver"), &n.driver);
            if let Some(subnet) = &n.subnet
                && let Err(e) = parse_cidr(subnet)
            {
                p.add(format!("{key}.subnet"), e);
            }
        }
        let uses_nfs = self
            .services
            .iter()
            .any(|s| s.volumes.iter().any(|v| v.dataset.is_some()));
        match &self.nfs {
            Some(nfs) => nfs.validate(&mut p),
            None if uses_nfs => p.add(
                "nfs.server",
                "a volume names a dataset, so the plan needs [nfs] server = \"HOST-IP\"",
            ),
            None => {}
        }
        let mut services = BTreeSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let key = format!("services[{i}]");
            if !is_project_name(&s.name) {
                p.add(
                    format!("{key}.name"),
                    format!(
                        "{:?} is not a compose project name (lower-case letters, digits, '-' \
                         and '_', starting with a letter or digit)",
                        s.name
                    ),
                );
            }
            if !services.insert(s.name.as_str()) {
                p.add(
                    format!("{key}.name"),
                    format!("service {:?} is listed twice", s.name),
                );
            }
            let mut volumes = BTreeSet::new();
            for (j, v) in s.volumes.iter().enumerate() {
                let key = format!("{key}.volumes[{j}]");
                check_name(&mut p, &format!("{key}.name"), &v.name);
                if !volumes.insert(v.name.as_str()) {
                    p.add(
                        format!("{key}.name"),
                        format!("volume {:?} is listed twice", v.name),
                    );
                }
                v.validate(&mut p, &key);
            }
        }
        p.0
    }

    /// `(key, dataset)` of every volume that names a dataset, for asking labd.
    pub fn dataset_refs(&self) -> Vec<(String, String)> {
        let mut refs = Vec::new();
        for (i, s) in self.services.iter().enumerate() {
            for (j, v) in s.volumes.iter().enumerate() {
                if let Some(ds) = &v.dataset {
                    refs.push((format!("services[{i}].volumes[{j}].dataset"), ds.clone()));
                }
            }
        }
        refs
    }

    /// The directory of the compose projects on the guest.
    pub fn compose_dir(&self) -> &str {
        self.guest
            .compose_dir
            .as_deref()
            .unwrap_or(DEFAULT_COMPOSE_DIR)
            .trim_end_matches('/')
    }
}

impl NfsSection {
    fn validate(&self, p: &mut Problems) {
        if self.server.parse::<IpAddr>().is_err() {
            p.add(
                "nfs.server",
                format!(
                    "{:?} is not an IP address (Docker resolves names for type=nfs only, and \
                     a name that stops resolving hangs every mount)",
                    self.server
                ),
            );
        }
        if !matches!(self.version.as_str(), "4" | "4.0" | "4.1" | "4.2" | "3") {
            p.add(
                "nfs.version",
                format!("{:?} is not 3, 4, 4.0, 4.1 or 4.2", self.version),
            );
        }
        for (i, o) in self.options.iter().flatten().enumerate() {
            let key = format!("nfs.options[{i}]");
            let name = o.split('=').next().unwrap_or_default();
            if o.is_empty() || o.contains([',', ' ', '\n', '\t']) {
                p.add(key, format!("{o:?} is not one mount option"));
            } else if o == "soft" {
                p.add(
                    key,
                    "soft mounts return EIO when the host is slow and corrupt databases; \
                     labctl mounts hard",
                );
            } else if matches!(name, "addr" | "nfsvers" | "vers" | "rw" | "ro") {
                p.add(
                    key,
                    format!("{name} is set by labctl (nfs.server, nfs.version, volume access)"),
                );
            }
        }
        if let Some(root) = &self.v4_root {
            check_abs_path(p, "nfs.v4_root", root);
        }
        if let Some(prefix) = &self.pseudo_prefix {
            check_abs_path(p, "nfs.pseudo_prefix", prefix);
            if self.v4_root.is_some() {
                p.add(
                    "nfs.pseudo_prefix",
                    "give v4_root or pseudo_prefix, not both",
                );
            }
        }
    }

    /// The `o=` option of a volume's mount.
    pub fn mount_options(&self, read_only: bool) -> String {
        let mut o = vec![
            format!("addr={}", self.server),
            format!("nfsvers={}", self.version),
            if read_only { "ro" } else { "rw" }.to_owned(),
        ];
        match &self.options {
            Some(options) => o.extend(options.iter().cloned()),
            None => o.extend(DEFAULT_NFS_OPTIONS.iter().map(|s| (*s).to_owned())),
        }
        o.join(",")
    }

    /// The NFS path of an export (the `device` of the volume, without its leading `:`).
    pub fn export_path(&self, export_name: &str, mountpoint: &str) -> Result<String, String> {
        if let Some(prefix) = &self.pseudo_prefix {
            return Ok(format!("{}/{export_name}", prefix.trim_end_matches('/')));
        }
        let root = self.v4_root.as_deref().unwrap_or("/").trim_end_matches('/');
        if root.is_empty() {
            return Ok(mountpoint.to_owned());
        }
        match mountpoint.strip_prefix(root) {
            Some("") => Ok("/".to_owned()),
            Some(rest) if rest.starts_with('/') => Ok(rest.to_owned()),
            _ => Err(format!(
                "the dataset is mounted at {mountpoint}, outside nfs.v4_root {root}"
            )),
        }
    }
}

impl Volume {
    fn validate(&self, p: &mut Problems, key: &str) {
        if let Some(access) = &self.access
            && !matches!(access.as_str(), "rw" | "ro")
        {
            p.add(
                format!("{key}.access"),
                format!("{access:?} is not rw or ro"),
            );
        }
        for (field, value) in [("maproot", &self.maproot), ("mapall", &self.mapall)] {
            if let Some(v) = value
                && crate::args::parse_identity(v).is_err()
            {
                p.add(
                    format!("{key}.{field}"),
                    format!("{v:?} is not root, nobody or UID:GID (numbers)"),
                );
            }
        }
        if self.maproot.is_some() && self.mapall.is_some() {
            p.add(format!("{key}.mapall"), "give maproot or mapall, not both");
        }
        if self.dataset.is_none() {
            for (field, set) in [
                ("access", self.access.is_some()),
                ("maproot", self.maproot.is_some()),
                ("mapall", self.mapall.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{key}.{field}"),
                        "only a volume with a dataset (an NFS volume) takes this",
                    );
                }
            }
        }
        if let Some(ds) = &self.dataset
            && (ds.is_empty() || ds.starts_with('/') || ds.contains(['@', ' ']))
        {
            p.add(
                format!("{key}.dataset"),
                format!("{ds:?} is not a dataset name"),
            );
        }
    }

    /// Whether the volume is mounted read-only.
    pub fn read_only(&self) -> bool {
        self.access.as_deref() == Some("ro")
    }
}

#[derive(Debug, Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

fn read_text(base: &Path, file: &Path, key: &str) -> Result<String, Problem> {
    let path = base.join(file);
    std::fs::read_to_string(&path).map_err(|e| Problem {
        key: key.to_owned(),
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Docker object names: letters, digits, `_ . -`, starting with a letter or digit.
fn check_name(p: &mut Problems, key: &str, name: &str) {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        p.add(
            key,
            format!(
                "{name:?} is not a name (letters, digits, '_', '.', '-', starting with a letter \
                 or digit, at most 64)"
            ),
        );
    }
}

fn is_project_name(name: &str) -> bool {
    name.len() <= 63
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

fn check_abs_path(p: &mut Problems, key: &str, path: &str) {
    if !path.starts_with('/') || path.contains(['\n', '\0']) || path.split('/').any(|c| c == "..") {
        p.add(key, format!("{path:?} is not an absolute path"));
    }
}

/// Parse `ADDR/PREFIX` with the host bits zero.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let Some((addr, prefix)) = text.split_once('/') else {
        return Err(format!("{text:?} is not ADDRESS/PREFIX"));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("{text:?}: the prefix must be 0..={max}"))?;
    let host_bits_zero = match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            prefix == 32 || bits & (u32::MAX >> prefix) == 0
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            prefix == 128 || bits & (u128::MAX >> prefix) == 0
        }
    };
    if host_bits_zero {
        Ok((addr, prefix))
    } else {
        Err(format!(
            "{text:?} has host bits set (not a network address)"
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse(text: &str) -> Plan {
        toml::from_str(text).unwrap()
    }

    fn keys(plan: &Plan) -> Vec<String> {
        plan.validate().into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<Plan>("[docker]\nengin = true\n").unwrap_err();
        assert!(err.to_string().contains("engin"), "{err}");
        let err = toml::from_str::<Plan>(
            "[[services]]\nname = \"a\"\ncompose = \"c.yaml\"\n[[services.volumes]]\nname = \"v\"\ndatset = \"x\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("datset"), "{err}");
    }

    #[test]
    fn a_full_plan_is_valid() {
        let plan = parse(
            r#"
            [guest]
            user = "debian"
            sudo = true
            [system]
            update = true
            auto_updates = true
            [docker]
            engine = true
            engine_source = "debian"
            [[docker.networks]]
            name = "proxy"
            subnet = "172.30.0.0/24"
            [nfs]
            server = "192.168.1.10"
            [[services]]
            name = "photos"
            compose = "photos/compose.yaml"
            env = "photos/photos.env"
            [[services.volumes]]
            name = "library"
            dataset = "photos"
            maproot = "root"
            [[services.volumes]]
            name = "config"
            "#,
        );
        assert_eq!(plan.validate(), []);
        assert_eq!(plan.docker.networks[0].driver, "bridge");
        assert_eq!(plan.compose_dir(), "/srv/labctl");
        assert_eq!(
            plan.dataset_refs(),
            [(
                "services[0].volumes[0].dataset".to_owned(),
                "photos".to_owned()
            )]
        );
    }

    #[test]
    fn bad_values_name_their_keys() {
        let plan = parse(
            r#"
            [guest]
            compose_dir = "srv"
            [[docker.networks]]
            name = "proxy"
            subnet = "172.30.0.1/24"
            [[docker.networks]]
            name = "proxy"
            subnet = "10.0.0.0/33"
            [[docker.networks]]
            name = "bad name"
            [[services]]
            name = "Photos"
            compose = "c.yaml"
            [[services.volumes]]
            name = "v"
            dataset = "photos"
            maproot = "alice"
            [[services.volumes]]
            name = "v"
            access = "ro"
            "#,
        );
        assert_eq!(
            keys(&plan),
            [
                "guest.compose_dir",
                "docker.networks[0].subnet",
                "docker.networks[1].name",
                "docker.networks[1].subnet",
                "docker.networks[2].name",
                "nfs.server",
                "services[0].name",
                "services[0].volumes[0].maproot",
                "services[0].volumes[1].name",
                "services[0].volumes[1].access",
            ]
        );
    }

    #[test]
    fn nfs_options_are_checked() {
        let plan = parse(
            r#"
            [nfs]
            server = "nas.local"
            version = "5"
            options = ["soft", "addr=1.2.3.4", "a,b", "noatime"]
            v4_root = "/tank"
            pseudo_prefix = "/export"
            "#,
        );
        assert_eq!(
            keys(&plan),
            [
                "nfs.server",
                "nfs.version",
                "nfs.options[0]",
                "nfs.options[1]",
                "nfs.options[2]",
                "nfs.pseudo_prefix",
            ]
        );
    }

    #[test]
    fn mount_options_and_paths() {
        let nfs: NfsSection = toml::from_str("server = \"192.168.1.10\"").unwrap();
        assert_eq!(
            nfs.mount_options(false),
            "addr=192.168.1.10,nfsvers=4,rw,hard,timeo=600,retrans=2,noatime"
        );
        assert_eq!(
            nfs.export_path("photos", "/tank/labd/photos").unwrap(),
            "/tank/labd/photos"
        );
        let nfs: NfsSection = toml::from_str(
            "server = \"10.0.0.1\"\nversion = \"4.2\"\noptions = [\"hard\"]\nv4_root = \"/tank\"",
        )
        .unwrap();
        assert_eq!(nfs.mount_options(true), "addr=10.0.0.1,nfsvers=4.2,ro,hard");
        assert_eq!(
            nfs.export_path("photos", "/tank/labd/photos").unwrap(),
            "/labd/photos"
        );
        assert!(nfs.export_path("x", "/other/x").is_err());
        let nfs: NfsSection =
            toml::from_str("server = \"10.0.0.1\"\npseudo_prefix = \"/export/\"").unwrap();
        assert_eq!(
            nfs.export_path("media/music", "/tank/labd/media/music")
                .unwrap(),
            "/export/media/music"
        );
    }

    #[test]
    fn cidrs() {
        assert!(parse_cidr("192.168.1.0/24").is_ok());
        assert!(parse_cidr("10.0.0.5/32").is_ok());
        assert!(parse_cidr("fd00::/64").is_ok());
        assert!(parse_cidr("0.0.0.0/0").is_ok());
        for bad in [
            "192.168.1.0",
            "192.168.1.1/24",
            "192.168.1.0/33",
            "fd00::1/64",
            "x/24",
            "10.0.0.0/-1",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    /// The sample in docs/examples is a valid plan (labd's datasets aside).
    #[test]
    fn the_documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/docker-host.toml");
        let loaded = Plan::load(&path).unwrap();
        assert_eq!(loaded.plan.services.len(), 2);
        assert_eq!(loaded.files.len(), 2);
        assert_eq!(
            loaded.plan.dataset_refs(),
            [(
                "services[1].volumes[0].dataset".to_owned(),
                "photos".to_owned()
            )]
        );
    }

    #[test]
    fn missing_files_name_their_keys() {
        let dir = std::env::temp_dir().join(format!("labctl-plan-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plan.toml");
        std::fs::write(
            &path,
            "[[services]]\nname = \"a\"\ncompose = \"nope.yaml\"\nenv = \"nope.env\"\n",
        )
        .unwrap();
        let err = Plan::load(&path).unwrap_err();
        let PlanError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["services[0].compose", "services[0].env"]);
        assert!(err.to_string().contains("nope.yaml"), "{err}");
        std::fs::write(dir.join("c.yaml"), "services: [1, 2]\n").unwrap();
        std::fs::write(&path, "[[services]]\nname = \"a\"\ncompose = \"c.yaml\"\n").unwrap();
        let err = Plan::load(&path).unwrap_err();
        assert!(err.to_string().contains("services[0].compose"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
