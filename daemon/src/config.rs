//! labd's configuration file (TOML), documented in docs/configuration.md.
//!
//! Every key is known: an unknown key or a bad value is an error that names the key, both at
//! start-up (labd refuses to start) and on SIGHUP (the old configuration stays in force).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::core::names::DatasetName;

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
}

/// `[api]`: where and to whom the API is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Path of the Unix socket (mode 0660).
    pub socket: PathBuf,
    /// Group that owns the socket; its members may use labctl.
    pub socket_group: Option<String>,
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
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: Option<PathBuf>,
    socket_group: Option<String>,
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
        Ok(Self {
            api: ApiConfig {
                socket,
                socket_group: raw.api.socket_group,
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

/// Parse `500ms`, `30s`, `5m` or `1h`.
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
        _ => return Err(format!("'{s}' has no unit: use ms, s, m or h")),
    };
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("labd.toml"), text)
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("[zfs]\nroot = \"tank/labd\"\n").expect("valid");
        assert_eq!(c.api.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.zfs.root.as_str(), "tank/labd");
        assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(30));
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
