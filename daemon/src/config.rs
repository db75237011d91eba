//! labd's configuration file (TOML), documented in docs/configuration.md.
//!
//! Every key is known: an unknown key or a bad value is an error that names the key, both at
//! start-up (labd refuses to start) and on SIGHUP (the old configuration stays in force).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::names::DatasetName;
use crate::core::retention::Policy;
pub use crate::mqtt::{BrokerTls, TlsFileError};

/// Where labd looks for its configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/usr/local/etc/labd/labd.toml";
/// Where labd serves its API when `[api] socket` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/labd.sock";

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[api]`.
    pub api: ApiConfig,
    /// `[zfs]`.
    pub zfs: ZfsConfig,
    /// `[daemon]`.
    pub daemon: DaemonConfig,
    /// `[policies.NAME]`: snapshot policies by name.
    pub policies: BTreeMap<String, Policy>,
    /// `[schedule]`: when and how policies run.
    pub schedule: ScheduleConfig,
    /// `[exports]`: NFS exports.
    pub exports: ExportsConfig,
    /// `[metrics]`: Prometheus metrics.
    pub metrics: MetricsConfig,
    /// `[mqtt]`: publishing to an MQTT broker (off when absent).
    pub mqtt: Option<MqttConfig>,
    /// `[vms]`: virtual machines.
    pub vms: VmsConfig,
}

/// `[vms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmsConfig {
    /// User templates (`NAME.toml`); they override the built-in ones of the same name.
    pub templates_dir: PathBuf,
    /// Where VM datasets live, relative to the root dataset (`vms`: `<root>/vms/<name>`).
    pub vm_root: String,
    /// The driver that runs VMs: `bhyve` (the default on FreeBSD) or `qemu` (elsewhere).
    pub driver: String,
    /// QEMU's accelerator (`auto`, `kvm`, `tcg`).
    pub accel: crate::host::qemu::Accel,
    /// Where kernel-loader VMs find relative `kernel`/`initrd` names.
    pub kernel_dir: PathBuf,
    /// Disk images `vm create --image NAME` imports (raw or qcow2), by file name.
    pub images_dir: PathBuf,
    /// The supervisor's restart rules for VMs whose hypervisor ends on its own.
    pub restart: RestartRules,
    /// At labd's stop (host shutdown) all VMs must be down within this; it must fit inside
    /// FreeBSD's `rcshutdown_timeout` (docs/freebsd-host.md).
    pub shutdown_budget: Duration,
}

/// When a VM that ended by itself is started again (`[vms] restart_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartRules {
    /// Consecutive failed runs after which labd gives up (the crash-loop limit).
    pub limit: u32,
    /// The wait before the first restart after a failure; it doubles with each further
    /// failure, up to [`RestartRules::MAX_BACKOFF`].
    pub backoff: Duration,
}

impl RestartRules {
    /// The longest wait between two restarts.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
    /// A run at least this long resets the failure count.
    pub const STABLE: Duration = Duration::from_secs(120);

    /// The wait before restart number `failures` (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff
            .checked_mul(factor)
            .unwrap_or(Self::MAX_BACKOFF)
            .min(Self::MAX_BACKOFF)
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Also serve `GET /metrics` over plain HTTP on this address (loopback or a trusted
    /// network); it is always served on the API socket.
    pub listen: Option<std::net::SocketAddr>,
    /// How often the pool and dataset figures are re-read from ZFS (labd's own changes
    /// refresh them sooner).
    pub refresh: Duration,
}

/// `[mqtt]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// MQTT client id.
    pub client_id: String,
    /// Prefix of every topic (default `homelab/labd/<hostname>`).
    pub topic_prefix: String,
    /// How often retained state is published again even without changes.
    pub interval: Duration,
    /// Messages queued while the broker is away; beyond this they are dropped and counted.
    pub buffer: usize,
    /// Publish Home Assistant MQTT discovery documents.
    pub home_assistant: bool,
    /// TLS to the broker (`mqtts://`); `None`: plain TCP (`mqtt://`).
    pub tls: Option<BrokerTls>,
}

/// Which NFS server labd's exports are rendered for and reloaded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NfsDriver {
    /// FreeBSD mountd: an exports(5) file named in `mountd_flags`, reloaded with SIGHUP.
    FreeBsd,
    /// Linux knfsd: a file in /etc/exports.d, applied with `exportfs -ra`.
    Linux,
    /// nfs-ganesha: EXPORT blocks in a file ganesha's config includes, reloaded with SIGHUP.
    Ganesha,
}

/// `[exports]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportsConfig {
    /// Export definitions, one TOML file each.
    pub dir: PathBuf,
    /// The NFS server.
    pub driver: NfsDriver,
    /// The file labd renders and owns.
    pub file: PathBuf,
    /// Pid file of the server to SIGHUP (mountd, ganesha); unused by `linux`.
    pub pidfile: PathBuf,
    /// FreeBSD: the NFSv4 root of the `V4:` line.
    pub v4_root: String,
    /// Ganesha: the pseudo-path prefix of exports.
    pub pseudo_prefix: String,
    /// Other exports files the server reads: labd refuses to export what they export.
    pub other_files: Vec<PathBuf>,
    /// Allow networks shorter than /16 (IPv4) or /48 (IPv6).
    pub allow_short_prefix: bool,
}

/// `[schedule]`: the policy scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Run policies on their schedule (off: only `labctl policy run`).
    pub enabled: bool,
    /// At most this many snapshots destroyed per dataset per run.
    pub max_destroy_per_run: usize,
    /// For tests only: read the policy clock (RFC 3339) from this file instead of the
    /// system clock.
    pub clock_file: Option<PathBuf>,
}

/// `[api]`: where and to whom the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Path of the Unix socket (mode 0660).
    pub socket: PathBuf,
    /// Group that owns the socket; its members may use labctl.
    pub socket_group: Option<String>,
    /// The API on TCP with mutual TLS (`tcp_listen` and the `tls_*` keys); `None`: the
    /// Unix socket only.
    pub tcp: Option<ApiTcpConfig>,
}

/// `[api] tcp_listen` and its TLS files: the API on TCP, mutual TLS only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTcpConfig {
    /// Address to listen on (`tcp_listen`).
    pub listen: std::net::SocketAddr,
    /// The server's certificate chain, PEM (`tls_cert_file`).
    pub cert_file: PathBuf,
    /// The server's private key, PEM (`tls_key_file`).
    pub key_file: PathBuf,
    /// The CA that signs client certificates, PEM (`tls_client_ca_file`).
    pub client_ca_file: PathBuf,
    /// Client certificate CNs let in (`tls_allowed_clients`); `None`: any certificate the
    /// CA signed.
    pub allowed_clients: Option<Vec<String>>,
}

/// `[zfs]`: the dataset tree labd manages and the commands it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZfsConfig {
    /// Root dataset: short names resolve below it, nothing outside it is touched.
    pub root: DatasetName,
    /// The `zfs` program.
    pub zfs: PathBuf,
    /// The `zpool` program.
    pub zpool: PathBuf,
    /// Longest time one zfs command may run before it is killed.
    pub command_timeout: Duration,
}

/// `[daemon]`: process-wide behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// On SIGTERM, how long running jobs may take to finish before they are failed.
    pub shutdown_grace: Duration,
}

/// A configuration that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and its line.
        message: String,
    },
    /// A value that parses but breaks a rule.
    #[error("{path}: key '{key}': {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `zfs.root`.
        key: &'static str,
        /// The rule.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    api: RawApi,
    zfs: RawZfs,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    schedule: RawSchedule,
    #[serde(default)]
    exports: RawExports,
    #[serde(default)]
    metrics: RawMetrics,
    mqtt: Option<RawMqtt>,
    #[serde(default)]
    vms: RawVms,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVms {
    templates_dir: Option<PathBuf>,
    vm_root: Option<String>,
    driver: Option<String>,
    accel: Option<String>,
    kernel_dir: Option<PathBuf>,
    images_dir: Option<PathBuf>,
    restart_limit: Option<u32>,
    restart_backoff: Option<String>,
    shutdown_budget: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
    refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: String,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    topic_prefix: Option<String>,
    interval: Option<String>,
    buffer: Option<usize>,
    home_assistant: Option<bool>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExports {
    dir: Option<PathBuf>,
    driver: Option<String>,
    file: Option<PathBuf>,
    pidfile: Option<PathBuf>,
    v4_root: Option<String>,
    pseudo_prefix: Option<String>,
    other_files: Option<Vec<PathBuf>>,
    allow_short_prefix: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    frequent_period: Option<String>,
    frequently: Option<u32>,
    hourly: Option<u32>,
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
    min_keep: Option<u32>,
    max_age: Option<String>,
    autosnap: Option<bool>,
    autoprune: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    enabled: Option<bool>,
    max_destroy_per_run: Option<usize>,
    clock_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: Option<PathBuf>,
    socket_group: Option<String>,
    tcp_listen: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    tls_allowed_clients: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZfs {
    root: String,
    zfs: Option<PathBuf>,
    zpool: Option<PathBuf>,
    command_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    shutdown_grace: Option<String>,
}

impl Config {
    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validate configuration text; `path` only labels errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let value_error = |key: &'static str, message: String| ConfigError::Value {
            path: path.to_owned(),
            key,
            message,
        };

        let api_tcp = api_tcp(&raw.api).map_err(|(key, m)| value_error(key, m))?;
        let socket = raw
            .api
            .socket
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
        if !socket.is_absolute() {
            return Err(value_error("api.socket", "must be an absolute path".into()));
        }
        if let Some(group) = &raw.api.socket_group
            && (group.is_empty() || group.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(value_error(
                "api.socket_group",
                "must be a group name without spaces".into(),
            ));
        }
        let root = DatasetName::parse(&raw.zfs.root)
            .map_err(|e| value_error("zfs.root", e.to_string()))?;
        let command_timeout = match raw.zfs.command_timeout {
            Some(s) => parse_duration(&s).map_err(|m| value_error("zfs.command_timeout", m))?,
            None => Duration::from_secs(600),
        };
        let shutdown_grace = match raw.daemon.shutdown_grace {
            Some(s) => parse_duration(&s).map_err(|m| value_error("daemon.shutdown_grace", m))?,
            None => Duration::from_secs(30),
        };
        let mut policies = BTreeMap::new();
        for (name, raw) in raw.policies {
            let policy = policy(&name, raw).map_err(|message| ConfigError::Value {
                path: path.to_owned(),
                key: "policies",
                message,
            })?;
            policies.insert(name, policy);
        }
        let schedule = ScheduleConfig {
            enabled: raw.schedule.enabled.unwrap_or(true),
            max_destroy_per_run: raw.schedule.max_destroy_per_run.unwrap_or(1000),
            clock_file: raw.schedule.clock_file,
        };
        let exports = exports(raw.exports).map_err(|(key, message)| ConfigError::Value {
            path: path.to_owned(),
            key,
            message,
        })?;
        let metrics = MetricsConfig {
            listen: match raw.metrics.listen {
                Some(s) => Some(s.parse().map_err(|_| {
                    value_error(
                        "metrics.listen",
                        format!("'{s}' is not an address such as 127.0.0.1:9101"),
                    )
                })?),
                None => None,
            },
            refresh: match raw.metrics.refresh {
                Some(s) => parse_duration(&s).map_err(|m| value_error("metrics.refresh", m))?,
                None => Duration::from_secs(60),
            },
        };
        let mqtt = match raw.mqtt {
            Some(m) => Some(mqtt(m).map_err(|(key, message)| value_error(key, message))?),
            None => None,
        };
        let templates_dir = raw
            .vms
            .templates_dir
            .unwrap_or_else(|| PathBuf::from("/usr/local/etc/labd/templates"));
        if !templates_dir.is_absolute() {
            return Err(value_error(
                "vms.templates_dir",
                "must be an absolute path".into(),
            ));
        }
        let vm_root = raw.vms.vm_root.unwrap_or_else(|| "vms".to_owned());
        check_vm_root(&root, &vm_root).map_err(|m| value_error("vms.vm_root", m))?;
        let driver = raw.vms.driver.unwrap_or_else(|| {
            if cfg!(target_os = "freebsd") {
                "bhyve".to_owned()
            } else {
                "qemu".to_owned()
            }
        });
        if driver != "bhyve" && driver != "qemu" {
            return Err(value_error(
                "vms.driver",
                format!("'{driver}' is not one of bhyve, qemu"),
            ));
        }
        let accel = match raw.vms.accel {
            Some(a) => a.parse().map_err(|m| value_error("vms.accel", m))?,
            None => crate::host::qemu::Accel::Auto,
        };
        let kernel_dir = raw
            .vms
            .kernel_dir
            .unwrap_or_else(|| PathBuf::from("/var/cache/labd-test-guest"));
        if !kernel_dir.is_absolute() {
            return Err(value_error(
                "vms.kernel_dir",
                "must be an absolute path".into(),
            ));
        }
        let images_dir = raw
            .vms
            .images_dir
            .unwrap_or_else(|| PathBuf::from("/var/db/labd/images"));
        if !images_dir.is_absolute() {
            return Err(value_error(
                "vms.images_dir",
                "must be an absolute path".into(),
            ));
        }
        let restart = RestartRules {
            limit: match raw.vms.restart_limit {
                Some(0) => {
                    return Err(value_error(
                        "vms.restart_limit",
                        "must be at least 1".into(),
                    ));
                }
                Some(n) => n,
                None => 5,
            },
            backoff: match raw.vms.restart_backoff {
                Some(s) => parse_duration(&s).map_err(|m| value_error("vms.restart_backoff", m))?,
                None => Duration::from_secs(2),
            },
        };
        let shutdown_budget = match raw.vms.shutdown_budget {
            Some(s) => parse_duration(&s).map_err(|m| value_error("vms.shutdown_budget", m))?,
            None => Duration::from_secs(80),
        };
        Ok(Self {
            vms: VmsConfig {
                templates_dir,
                vm_root,
                driver,
                accel,
                kernel_dir,
                images_dir,
                restart,
                shutdown_budget,
            },
            metrics,
            mqtt,
            exports,
            policies,
            schedule,
            api: ApiConfig {
                socket,
                socket_group: raw.api.socket_group,
                tcp: api_tcp,
            },
            zfs: ZfsConfig {
                root,
                zfs: raw.zfs.zfs.unwrap_or_else(|| PathBuf::from("zfs")),
                zpool: raw.zfs.zpool.unwrap_or_else(|| PathBuf::from("zpool")),
                command_timeout,
            },
            daemon: DaemonConfig { shutdown_grace },
        })
    }
}

/// `[vms] vm_root`: one or more dataset name components (`vms`, `lab/vms`) that, below the
/// root, make a valid dataset name.
fn check_vm_root(root: &DatasetName, vm_root: &str) -> Result<(), String> {
    if vm_root.is_empty()
        || vm_root.starts_with('/')
        || vm_root.ends_with('/')
        || vm_root
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
        || vm_root.contains(['@', '#'])
    {
        return Err(format!(
            "'{vm_root}' is not a dataset name relative to the root (such as \"vms\")"
        ));
    }
    DatasetName::parse(&format!("{root}/{vm_root}"))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// This host's name, for default topic and client names.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "labd".to_owned())
}

/// Validate `[mqtt]`: `url` is `mqtt://host[:port]` (plain TCP, port 1883 by default) or
/// `mqtts://host[:port]` (TLS, port 8883 by default, whose files are read here).
fn mqtt(raw: RawMqtt) -> Result<MqttConfig, (&'static str, String)> {
    let (rest, tls, default_port) = if let Some(rest) = raw.url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else if let Some(rest) = raw.url.strip_prefix("mqtt://") {
        (rest, false, 1883)
    } else {
        return Err((
            "mqtt.url",
            format!(
                "'{}' must start with mqtt:// (plain) or mqtts:// (TLS)",
                raw.url
            ),
        ));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .map_err(|_| ("mqtt.url", format!("bad port in '{}'", raw.url)))?,
        ),
        None => (rest, default_port),
    };
    if host.is_empty() || host.contains('/') {
        return Err(("mqtt.url", format!("no host in '{}'", raw.url)));
    }
    for (key, path) in [
        ("mqtt.ca_file", &raw.ca_file),
        ("mqtt.client_cert_file", &raw.client_cert_file),
        ("mqtt.client_key_file", &raw.client_key_file),
    ] {
        if path.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err((key, "must be an absolute path".into()));
        }
    }
    let tls = if tls {
        Some(
            BrokerTls::load(
                raw.ca_file.as_deref(),
                raw.client_cert_file.as_deref(),
                raw.client_key_file.as_deref(),
            )
            .map_err(|e| (e.key(), e.to_string()))?,
        )
    } else {
        let set = [
            ("mqtt.ca_file", raw.ca_file.is_some()),
            ("mqtt.client_cert_file", raw.client_cert_file.is_some()),
            ("mqtt.client_key_file", raw.client_key_file.is_some()),
        ];
        if let Some((key, _)) = set.into_iter().find(|(_, set)| *set) {
            return Err((key, "applies to mqtts:// URLs only (TLS)".into()));
        }
        None
    };
    let name = hostname();
    let topic_prefix = raw
        .topic_prefix
        .unwrap_or_else(|| format!("homelab/labd/{name}"));
    if topic_prefix.is_empty() || topic_prefix.ends_with('/') || topic_prefix.contains(['+', '#']) {
        return Err((
            "mqtt.topic_prefix",
            "must be non-empty, without a trailing '/' and without wildcards (+, #)".into(),
        ));
    }
    Ok(MqttConfig {
        host: host.to_owned(),
        port,
        username: raw.username,
        password: raw.password,
        client_id: raw.client_id.unwrap_or_else(|| format!("labd-{name}")),
        topic_prefix,
        interval: match raw.interval {
            Some(s) => parse_duration(&s).map_err(|m| ("mqtt.interval", m))?,
            None => Duration::from_secs(60),
        },
        buffer: raw.buffer.unwrap_or(1000),
        home_assistant: raw.home_assistant.unwrap_or(false),
        tls,
    })
}

/// Validate `[exports]`; defaults follow the driver, which defaults to the host's OS (chosen
/// at run time, so every driver is built and tested everywhere).
fn exports(raw: RawExports) -> Result<ExportsConfig, (&'static str, String)> {
    let driver = match raw.driver.as_deref() {
        Some("freebsd") => NfsDriver::FreeBsd,
        Some("linux") => NfsDriver::Linux,
        Some("ganesha") => NfsDriver::Ganesha,
        Some(other) => {
            return Err((
                "exports.driver",
                format!("'{other}' is not one of freebsd, linux, ganesha"),
            ));
        }
        None if std::env::consts::OS == "freebsd" => NfsDriver::FreeBsd,
        None => NfsDriver::Linux,
    };
    let (file, pidfile) = match driver {
        NfsDriver::FreeBsd => ("/usr/local/etc/labd/exports", "/var/run/mountd.pid"),
        NfsDriver::Linux => ("/etc/exports.d/labd.exports", "/run/labd-unused.pid"),
        NfsDriver::Ganesha => (
            "/etc/ganesha/labd-exports.conf",
            "/var/run/ganesha/ganesha.pid",
        ),
    };
    let config = ExportsConfig {
        dir: raw
            .dir
            .unwrap_or_else(|| PathBuf::from("/usr/local/etc/labd/exports.d")),
        driver,
        file: raw.file.unwrap_or_else(|| PathBuf::from(file)),
        pidfile: raw.pidfile.unwrap_or_else(|| PathBuf::from(pidfile)),
        v4_root: raw.v4_root.unwrap_or_else(|| "/".to_owned()),
        pseudo_prefix: raw.pseudo_prefix.unwrap_or_else(|| "/export".to_owned()),
        other_files: raw.other_files.unwrap_or_else(|| {
            ["/etc/exports", "/etc/zfs/exports"]
                .iter()
                .map(PathBuf::from)
                .collect()
        }),
        allow_short_prefix: raw.allow_short_prefix.unwrap_or(false),
    };
    for (key, path) in [
        ("exports.dir", &config.dir),
        ("exports.file", &config.file),
        ("exports.pidfile", &config.pidfile),
    ] {
        if !path.is_absolute() {
            return Err((key, "must be an absolute path".into()));
        }
    }
    crate::core::exports::check_v4_root(&config.v4_root)
        .map_err(|e| ("exports.v4_root", e.message))?;
    Ok(config)
}

/// Validate one `[policies.NAME]` table; the message names the key.
fn policy(name: &str, raw: RawPolicy) -> Result<Policy, String> {
    let valid_name = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
        && name != "none"
        && name.len() <= 64;
    if !valid_name {
        return Err(format!(
            "policies.{name}: a policy name is 1-64 lowercase letters, digits, '_', '.', '-', \
             starts with a letter or digit, and is not 'none'"
        ));
    }
    let frequent_minutes = match raw.frequent_period {
        Some(s) => {
            let d =
                parse_duration(&s).map_err(|m| format!("policies.{name}.frequent_period: {m}"))?;
            u32::try_from(d.as_secs() / 60)
                .ok()
                .filter(|m| d.as_secs() % 60 == 0 && *m > 0 && 60 % *m == 0)
                .ok_or_else(|| {
                    format!("policies.{name}.frequent_period: '{s}' is not a whole number of minutes dividing an hour")
                })?
        }
        None => 15,
    };
    let max_age = match raw.max_age {
        Some(s) => {
            let d = parse_duration(&s).map_err(|m| format!("policies.{name}.max_age: {m}"))?;
            Some(
                jiff::SignedDuration::try_from(d)
                    .map_err(|e| format!("policies.{name}.max_age: {e}"))?,
            )
        }
        None => None,
    };
    let policy = Policy {
        name: name.to_owned(),
        frequent_minutes,
        frequently: raw.frequently.unwrap_or(0),
        hourly: raw.hourly.unwrap_or(0),
        daily: raw.daily.unwrap_or(0),
        weekly: raw.weekly.unwrap_or(0),
        monthly: raw.monthly.unwrap_or(0),
        yearly: raw.yearly.unwrap_or(0),
        min_keep: raw.min_keep.unwrap_or(1),
        max_age,
        autosnap: raw.autosnap.unwrap_or(true),
        autoprune: raw.autoprune.unwrap_or(true),
    };
    policy
        .validate()
        .map_err(|m| format!("policies.{name}.{m}"))?;
    Ok(policy)
}

/// Parse `500ms`, `30s`, `5m`, `1h` or `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as 500ms, 30s, 5m or 1h"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86400)),
        _ => return Err(format!("'{s}' has no unit: use ms, s, m, h or d")),
    };
    Ok(d)
}

/// `[api] tcp_listen` and the TLS keys: all three files with `tcp_listen` (never plain HTTP
/// on TCP, never TLS without client certificates), none of them without it.
fn api_tcp(raw: &RawApi) -> Result<Option<ApiTcpConfig>, (&'static str, String)> {
    let files = [
        ("api.tls_cert_file", &raw.tls_cert_file),
        ("api.tls_key_file", &raw.tls_key_file),
        ("api.tls_client_ca_file", &raw.tls_client_ca_file),
    ];
    let Some(listen) = &raw.tcp_listen else {
        for (key, file) in files {
            if file.is_some() {
                return Err((key, "is only used with api.tcp_listen".into()));
            }
        }
        if raw.tls_allowed_clients.is_some() {
            return Err((
                "api.tls_allowed_clients",
                "is only used with api.tcp_listen".into(),
            ));
        }
        return Ok(None);
    };
    let listen = listen.parse().map_err(|_| {
        (
            "api.tcp_listen",
            format!("'{listen}' is not an address such as 0.0.0.0:8443"),
        )
    })?;
    let file = |key: &'static str, file: &Option<PathBuf>| match file {
        None => Err((
            key,
            "is required with api.tcp_listen: the API on TCP is mutual TLS only".to_owned(),
        )),
        Some(path) if !path.is_absolute() => Err((key, "must be an absolute path".to_owned())),
        Some(path) => Ok(path.clone()),
    };
    let cert_file = file("api.tls_cert_file", &raw.tls_cert_file)?;
    let key_file = file("api.tls_key_file", &raw.tls_key_file)?;
    let client_ca_file = file("api.tls_client_ca_file", &raw.tls_client_ca_file)?;
    if let Some(names) = &raw.tls_allowed_clients {
        if names.is_empty() {
            return Err((
                "api.tls_allowed_clients",
                "must name at least one certificate CN (leave it out to let in every \
                 certificate the client CA signed)"
                    .into(),
            ));
        }
        if let Some(bad) = names
            .iter()
            .find(|n| crate::wire::CommonName::new(n).is_none())
        {
            return Err((
                "api.tls_allowed_clients",
                format!("'{bad}' is not a CN (1 to 64 bytes)"),
            ));
        }
    }
    Ok(Some(ApiTcpConfig {
        listen,
        cert_file,
        key_file,
        client_ca_file,
        allowed_clients: raw.tls_allowed_clients.clone(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mqtt_urls_pick_tls_and_default_ports() {
        let base = "[zfs]\nroot = \"tank\"\n[mqtt]\n";
        let plain = parse(&format!("{base}url = \"mqtt://broker\"\n")).expect("valid");
        let plain = plain.mqtt.expect("mqtt");
        assert_eq!((plain.host.as_str(), plain.port), ("broker", 1883));
        assert!(plain.tls.is_none());
        // mqtts:// without ca_file trusts the system's roots (when the host has some).
        if let Ok(tls) = parse(&format!("{base}url = \"mqtts://broker\"\n")) {
            let tls = tls.mqtt.expect("mqtt");
            assert_eq!((tls.host.as_str(), tls.port), ("broker", 8883));
            assert!(tls.tls.is_some_and(|t| !t.mutual()));
        }
        for (text, key, rule) in [
            ("url = \"tcp://broker\"\n", "mqtt.url", "mqtts://"),
            (
                "url = \"mqtt://broker\"\nca_file = \"/etc/ca.pem\"\n",
                "mqtt.ca_file",
                "mqtts:// URLs only",
            ),
            (
                "url = \"mqtts://broker\"\nca_file = \"ca.pem\"\n",
                "mqtt.ca_file",
                "absolute",
            ),
            (
                "url = \"mqtts://broker:8883\"\nca_file = \"/nonexistent/ca.pem\"\n",
                "mqtt.ca_file",
                "cannot read /nonexistent/ca.pem",
            ),
            (
                "url = \"mqtts://broker\"\nclient_key_file = \"/nonexistent/key.pem\"\n",
                "mqtt.client_cert_file",
                "together with mqtt.client_key_file",
            ),
        ] {
            let e = parse(&format!("{base}{text}")).expect_err(key);
            let e = e.to_string();
            assert!(e.contains(&format!("key '{key}'")), "{key}: {e}");
            assert!(e.contains(rule), "{key}: {e}");
        }
    }

    #[test]
    fn policies_are_validated_with_their_key() {
        let base = "[zfs]\nroot = \"tank\"\n";
        let ok = parse(&format!(
            "{base}[policies.production]\nhourly = 24\ndaily = 30\nmonthly = 12\nmax_age = \"400d\"\n"
        ))
        .expect("valid");
        let p = &ok.policies["production"];
        assert_eq!((p.hourly, p.daily, p.monthly, p.min_keep), (24, 30, 12, 1));
        assert!(ok.schedule.enabled);
        for (text, key) in [
            ("[policies.Prod]\nhourly = 1\n", "policies.Prod"),
            ("[policies.none]\nhourly = 1\n", "policies.none"),
            (
                "[policies.p]\nhourly = 1\nfrequent_period = \"7m\"\n",
                "policies.p.frequent_period",
            ),
            (
                "[policies.p]\nhourly = 1\nmax_age = \"soon\"\n",
                "policies.p.max_age",
            ),
            ("[policies.p]\nhourlyy = 1\n", "hourlyy"),
            ("[policies.p]\nhourly = -1\n", "hourly"),
            ("[schedule]\nenable = true\n", "enable"),
        ] {
            let e = parse(&format!("{base}{text}")).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("labd.toml"), text)
    }

    #[test]
    fn vm_restart_rules_and_shutdown_budget() {
        let c = parse("[zfs]\nroot = \"tank\"\n").expect("valid");
        assert_eq!(c.vms.restart.limit, 5);
        assert_eq!(c.vms.shutdown_budget, Duration::from_secs(80));
        let r = RestartRules {
            limit: 5,
            backoff: Duration::from_secs(2),
        };
        let delays: Vec<u64> = (1..=10).map(|n| r.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(r.delay(200), RestartRules::MAX_BACKOFF);
        let c = parse(
            "[zfs]\nroot = \"tank\"\n[vms]\nrestart_limit = 2\nrestart_backoff = \"100ms\"\nshutdown_budget = \"5m\"\n",
        )
        .expect("valid");
        assert_eq!(c.vms.restart.limit, 2);
        assert_eq!(c.vms.restart.backoff, Duration::from_millis(100));
        assert_eq!(c.vms.shutdown_budget, Duration::from_secs(300));
        for (text, key) in [
            ("restart_limit = 0", "vms.restart_limit"),
            ("restart_backoff = \"soon\"", "vms.restart_backoff"),
            ("shutdown_budget = \"-1s\"", "vms.shutdown_budget"),
        ] {
            let e = parse(&format!("[zfs]\nroot = \"tank\"\n[vms]\n{text}\n")).expect_err(key);
            assert!(e.to_string().contains(key), "{e}");
        }
    }

    #[test]
    fn vms_driver_accel_and_kernel_dir() {
        let c = parse("[zfs]\nroot = \"tank\"\n").expect("valid");
        let want = if cfg!(target_os = "freebsd") {
            "bhyve"
        } else {
            "qemu"
        };
        assert_eq!(c.vms.driver, want);
        assert_eq!(c.vms.accel, crate::host::qemu::Accel::Auto);
        assert_eq!(
            c.vms.kernel_dir,
            PathBuf::from("/var/cache/labd-test-guest")
        );
        let c = parse(
            "[zfs]\nroot = \"tank\"\n[vms]\ndriver = \"bhyve\"\naccel = \"tcg\"\nkernel_dir = \"/g\"\n",
        )
        .expect("valid");
        assert_eq!(c.vms.driver, "bhyve");
        assert_eq!(c.vms.accel, crate::host::qemu::Accel::Tcg);
        assert_eq!(c.vms.kernel_dir, PathBuf::from("/g"));
        for (text, key) in [
            ("driver = \"xen\"", "vms.driver"),
            ("accel = \"hvf\"", "vms.accel"),
            ("kernel_dir = \"rel\"", "vms.kernel_dir"),
        ] {
            let e = parse(&format!("[zfs]\nroot = \"tank\"\n[vms]\n{text}\n")).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[zfs]\nroot = \"tank/labd\"\n").expect("valid");
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.zfs.root.as_str(), "tank/labd");
        assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.vms.vm_root, "vms");
        let c = parse("[zfs]\nroot = \"tank\"\n[vms]\nvm_root = \"lab/vms\"\n").expect("valid");
        assert_eq!(c.vms.vm_root, "lab/vms");
    }

    #[test]
    fn api_tcp_is_mutual_tls_only() {
        let base = "[zfs]\nroot = \"tank\"\n[api]\n";
        let files = "tls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"\ntls_client_ca_file = \"/ca.pem\"\n";
        assert_eq!(parse(base).expect("valid").api.tcp, None);
        let c = parse(&format!(
            "{base}tcp_listen = \"127.0.0.1:8443\"\n{files}tls_allowed_clients = [\"labctl-admin\"]\n"
        ))
        .expect("valid");
        let tcp = c.api.tcp.expect("tcp");
        assert_eq!(tcp.listen.port(), 8443);
        assert_eq!(tcp.client_ca_file, PathBuf::from("/ca.pem"));
        assert_eq!(tcp.allowed_clients, Some(vec!["labctl-admin".to_owned()]));
        for (text, key) in [
            ("tcp_listen = \"127.0.0.1:8443\"\n", "api.tls_cert_file"),
            (
                "tcp_listen = \"127.0.0.1:8443\"\ntls_cert_file = \"/c\"\ntls_key_file = \"/k\"\n",
                "api.tls_client_ca_file",
            ),
            ("tls_key_file = \"/k\"\n", "api.tls_key_file"),
            ("tls_allowed_clients = [\"a\"]\n", "api.tls_allowed_clients"),
            (&format!("tcp_listen = \"8443\"\n{files}"), "api.tcp_listen"),
            (
                &format!("tcp_listen = \"[::1]:1\"\n{files}tls_allowed_clients = []\n"),
                "api.tls_allowed_clients",
            ),
            (
                "tcp_listen = \"[::1]:1\"\ntls_cert_file = \"c.pem\"\n",
                "api.tls_cert_file",
            ),
        ] {
            let e = parse(&format!("{base}{text}")).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[zfs]\nroot = \"tank\"\nrooot = 1\n").expect_err("unknown key");
        assert!(e.to_string().contains("rooot"), "{e}");
        let e = parse("[zfs]\nroot = \"tank\"\n[apii]\n").expect_err("unknown table");
        assert!(e.to_string().contains("apii"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("[zfs]\nroot = \"tank/a b\"\n", "zfs.root"),
            (
                "[zfs]\nroot = \"tank\"\n[api]\nsocket = \"rel.sock\"\n",
                "api.socket",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[daemon]\nshutdown_grace = \"soon\"\n",
                "daemon.shutdown_grace",
            ),
            (
                "[zfs]\nroot = \"tank\"\ncommand_timeout = \"10\"\n",
                "zfs.command_timeout",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[api]\nsocket_group = \"a b\"\n",
                "api.socket_group",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[vms]\nvm_root = \"/vms\"\n",
                "vms.vm_root",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[vms]\nvm_root = \"a//b\"\n",
                "vms.vm_root",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[vms]\nvm_root = \"v m\"\n",
                "vms.vm_root",
            ),
            (
                "[zfs]\nroot = \"tank\"\n[vms]\nvm_root = \"v@s\"\n",
                "vms.vm_root",
            ),
        ];
        for (text, key) in cases {
            let e = parse(text).expect_err(key);
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn wrong_type_is_named() {
        let e = parse("[zfs]\nroot = 5\n").expect_err("type");
        assert!(e.to_string().contains("root"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("").is_err());
    }
}
