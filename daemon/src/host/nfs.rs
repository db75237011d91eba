//! NFS server drivers: install labd's rendered exports file and make the server re-read it.
//!
//! The file is written next to its final path and renamed over it, so the server never reads
//! half a file. If the server cannot be told to reload, the previous file is put back (and the
//! server told again), so a failed apply leaves the server serving what it served before.
//! - `freebsd`: SIGHUP to mountd (its pid file); mountd re-reads every exports file.
//! - `linux`: `exportfs -ra`.
//! - `ganesha`: SIGHUP to ganesha (its pid file), whose configuration includes the file.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::runner::{Argv, RunError, Runner};
use crate::config::{ExportsConfig, NfsDriver};

/// An NFS driver failure.
#[derive(Debug, thiserror::Error)]
pub enum NfsError {
    /// The file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be found through its pid file.
    #[error("cannot signal the NFS server (pid file {path}): {reason}")]
    Signal {
        /// The pid file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The reload command failed.
    #[error(transparent)]
    Reload(#[from] RunError),
}

/// One NFS server.
#[derive(Debug, Clone)]
pub struct Nfs {
    runner: Runner,
    driver: NfsDriver,
    file: PathBuf,
    pidfile: PathBuf,
}

impl Nfs {
    /// The driver `config` names.
    pub fn new(config: &ExportsConfig, runner: Runner) -> Self {
        Self {
            runner,
            driver: config.driver,
            file: config.file.clone(),
            pidfile: config.pidfile.clone(),
        }
    }

    /// The file labd owns.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// What the file holds now (empty if it does not exist).
    pub fn current(&self) -> String {
        std::fs::read_to_string(&self.file).unwrap_or_default()
    }

    /// Replace the file with `content` and reload the server; on a failed reload, put the old
    /// file back.
    pub async fn install(&self, content: &str) -> Result<(), NfsError> {
        let old = std::fs::read_to_string(&self.file).ok();
        write_atomically(&self.file, content)?;
        match self.reload().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let restored = match &old {
                    Some(text) => write_atomically(&self.file, text),
                    None => std::fs::remove_file(&self.file).map_err(|source| NfsError::Write {
                        path: self.file.clone(),
                        source,
                    }),
                };
                if restored.is_ok() {
                    let _ = self.reload().await;
                }
                Err(e)
            }
        }
    }

    async fn reload(&self) -> Result<(), NfsError> {
        match self.driver {
            NfsDriver::Linux => {
                self.runner
                    .run(&Argv::new("exportfs").arg("-ra"))
                    .await
                    .map(drop)?;
                Ok(())
            }
            NfsDriver::FreeBsd | NfsDriver::Ganesha => self.hangup(),
        }
    }

    fn hangup(&self) -> Result<(), NfsError> {
        let fail = |reason: String| NfsError::Signal {
            path: self.pidfile.clone(),
            reason,
        };
        let text = std::fs::read_to_string(&self.pidfile).map_err(|e| fail(e.to_string()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| fail(format!("'{}' is not a pid", text.trim())))?;
        crate::core::jobs::log_line(format!("kill -HUP {pid}"));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .map_err(|e| fail(e.to_string()))
    }
}

/// Write `content` to a temporary file in the same directory, sync it, and rename it over
/// `path`.
fn write_atomically(path: &Path, content: &str) -> Result<(), NfsError> {
    let fail = |source| NfsError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.labd-tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(fail)?;
    f.write_all(content.as_bytes()).map_err(fail)?;
    f.sync_all().map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("labd-nfs-{}", std::process::id()));
        let path = dir.join("exports");
        write_atomically(&path, "one\n").expect("write");
        write_atomically(&path, "two\n").expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two\n");
        let leftovers = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(leftovers, 1, "no temporary file is left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn failed_reload_restores_the_old_file() {
        let dir = std::env::temp_dir().join(format!("labd-nfs-r-{}", std::process::id()));
        let file = dir.join("exports");
        write_atomically(&file, "old\n").expect("write");
        let nfs = Nfs {
            runner: Runner::new(std::time::Duration::from_secs(5)),
            driver: NfsDriver::FreeBsd,
            file: file.clone(),
            pidfile: dir.join("missing.pid"),
        };
        let err = nfs.install("new\n").await.expect_err("no server to signal");
        assert!(err.to_string().contains("missing.pid"), "{err}");
        assert_eq!(nfs.current(), "old\n");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
