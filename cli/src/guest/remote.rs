//! The SSH session to a guest, and how commands cross it safely.
//!
//! The session is the system `ssh` in ControlMaster mode, driven by the `openssh` crate
//! (native mux): the operator's `~/.ssh/config`, agent, ProxyJump and certificates all apply,
//! and every step after the first connect reuses one TCP connection.
//!
//! The guest's host key is pinned, never learned: labctl writes a private known_hosts file
//! that holds exactly the key labd generated for the VM (or the one given with `--host-key`)
//! and runs ssh with `StrictHostKeyChecking=yes` and `UserKnownHostsFile=` that file. A
//! guest that presents another key is refused before anything runs.
//!
//! A remote command is a string the guest's login shell parses, so labctl builds it only from
//! [`shell_quote`]d words: each step is `sh -c 'SCRIPT' labctl-step 'ARG'…`, its script fixed
//! text and everything from the plan a quoted positional argument (or stdin). Nothing from the
//! plan is ever interpolated into shell text.

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use openssh::{KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::AsyncWriteExt as _;

/// Longest wait for the SSH connection to come up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// `$0` of every step script (what `ps` on the guest shows).
const SCRIPT_NAME: &str = "labctl-step";

/// Why talking to the guest failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The host key given is not one OpenSSH public key line.
    #[error("host key is not an OpenSSH public key line (`ssh-ed25519 AAAA…`): {0:?}")]
    BadHostKey(String),
    /// The private known_hosts file or control directory could not be written.
    #[error("cannot prepare the SSH session in {}", path.display())]
    Prepare {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ssh could not connect, authenticate or verify the host key.
    #[error("cannot connect to {destination} over SSH (host key pinned, no trust on first use)")]
    Connect {
        /// `[user@]address`.
        destination: String,
        /// ssh's error.
        #[source]
        source: openssh::Error,
    },
    /// A command could not be run or its output read.
    #[error("remote command failed to run")]
    Exec(#[source] openssh::Error),
    /// Writing a step's stdin failed.
    #[error("cannot send the step's input")]
    Stdin(#[source] std::io::Error),
}

/// Quote one word for a POSIX shell: the result, pasted into a command line, is exactly one
/// word whose value is `word`. Words made only of safe characters stay as they are; anything
/// else is single-quoted, an embedded `'` written as `'\''`.
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        return word.to_owned();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line that runs `script` with `args` as `$1…`: `sh -c 'SCRIPT' labctl-step
/// 'ARG'…`, with `sudo -n` in front when `sudo`.
pub fn step_command_line(script: &str, args: &[String], sudo: bool) -> String {
    let mut words: Vec<String> = Vec::with_capacity(args.len() + 5);
    if sudo {
        words.extend(["sudo".to_owned(), "-n".to_owned()]);
    }
    words.extend(["sh".to_owned(), "-c".to_owned(), shell_quote(script)]);
    words.push(SCRIPT_NAME.to_owned());
    words.extend(args.iter().map(|a| shell_quote(a)));
    words.join(" ")
}

/// The known_hosts line that pins `key` for `address` on any port: `ADDR,[ADDR]:* KEY`.
pub fn known_hosts_line(address: &str, key: &str) -> Result<String, RemoteError> {
    let key = normalize_host_key(key)?;
    Ok(format!("{address},[{address}]:* {key}"))
}

/// `TYPE BASE64` of an OpenSSH public key line (a trailing comment is dropped).
fn normalize_host_key(line: &str) -> Result<String, RemoteError> {
    let bad = || RemoteError::BadHostKey(line.trim().to_owned());
    let mut fields = line.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(bad());
    };
    let kind_ok = kind.starts_with("ssh-")
        || kind.starts_with("ecdsa-sha2-")
        || kind.starts_with("sk-ssh-")
        || kind.starts_with("sk-ecdsa-");
    let blob_ok = blob.len() > 16
        && blob
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if kind_ok && blob_ok {
        Ok(format!("{kind} {blob}"))
    } else {
        Err(bad())
    }
}

/// Where and how to reach the guest.
#[derive(Debug, Clone)]
pub struct Target {
    /// Address (or name) ssh connects to.
    pub address: String,
    /// The pinned host key (one OpenSSH public key line).
    pub host_key: String,
    /// Port, when not the ssh config's or 22.
    pub port: Option<u16>,
    /// User, when not the ssh config's or the local one.
    pub user: Option<String>,
    /// Private key file (only that key is offered then).
    pub identity: Option<PathBuf>,
    /// ssh configuration file instead of `~/.ssh/config`.
    pub ssh_config: Option<PathBuf>,
    /// Run the steps through `sudo -n`.
    pub sudo: bool,
}

/// What one remote step printed and how it ended.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Exit status; `None` when the remote process was killed or the connection dropped.
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// An open SSH session to a guest; closed (master stopped, files removed) on [`Remote::close`]
/// or drop.
#[derive(Debug)]
pub struct Remote {
    session: Session,
    sudo: bool,
    _dir: TempDir,
}

impl Remote {
    /// Connect to `target`, its host key pinned.
    pub async fn connect(target: &Target) -> Result<Self, RemoteError> {
        let dir = TempDir::new()?;
        let known_hosts = dir.path.join("known_hosts");
        let line = known_hosts_line(&target.address, &target.host_key)?;
        write_private(&known_hosts, &format!("{line}\n"))?;
        let mut builder = SessionBuilder::default();
        builder
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(&known_hosts)
            .control_directory(&dir.path)
            .connect_timeout(CONNECT_TIMEOUT)
            .server_alive_interval(Duration::from_secs(15));
        if let Some(port) = target.port {
            builder.port(port);
        }
        if let Some(user) = &target.user {
            builder.user(user.clone());
        }
        if let Some(identity) = &target.identity {
            builder.keyfile(identity);
        }
        if let Some(config) = &target.ssh_config {
            builder.config_file(config);
        }
        let destination = match &target.user {
            Some(u) => format!("{u}@{}", target.address),
            None => target.address.clone(),
        };
        let session = builder
            .connect_mux(&target.address)
            .await
            .map_err(|source| RemoteError::Connect {
                destination,
                source,
            })?;
        Ok(Self {
            session,
            sudo: target.sudo,
            _dir: dir,
        })
    }

    /// Run `script` with `args` as its positional parameters, `stdin` (if any) as its input.
    pub async fn exec(
        &self,
        script: &str,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, RemoteError> {
        let line = step_command_line(script, args, self.sudo);
        let mut cmd = self.session.raw_command(line);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().await.map_err(RemoteError::Exec)?;
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin().take()) {
            // A step that finds its file in sync exits without reading its input: a closed
            // pipe then is no error (the exit status says what happened).
            let written = match pipe.write_all(data).await {
                Ok(()) => pipe.shutdown().await,
                Err(e) => Err(e),
            };
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(RemoteError::Stdin(e));
                }
                _ => drop(pipe),
            }
        }
        let out = child.wait_with_output().await;
        let out = match out {
            Ok(out) => out,
            Err(openssh::Error::RemoteProcessTerminated) => {
                return Ok(ExecOutput {
                    status: None,
                    stdout: String::new(),
                    stderr: "the remote process was terminated (or the connection dropped)"
                        .to_owned(),
                });
            }
            Err(e) => return Err(RemoteError::Exec(e)),
        };
        Ok(ExecOutput {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Stop the master connection.
    pub async fn close(self) {
        // The master is stopped on drop too; an error closing it changes nothing for the
        // report.
        let _ = self.session.close().await;
    }
}

/// A private directory for the known_hosts file and the control socket, removed on drop.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self, RemoteError> {
        // Short: the control socket's path must fit in sun_path.
        let base = std::env::temp_dir();
        for attempt in 0..100u32 {
            let path = base.join(format!("labctl-ssh-{}-{attempt}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(RemoteError::Prepare { path, source }),
            }
        }
        Err(RemoteError::Prepare {
            path: base,
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Write `text` to a new file readable by the owner only.
fn write_private(path: &Path, text: &str) -> Result<(), RemoteError> {
    let prepare = |source| RemoteError::Prepare {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(prepare)?;
    file.write_all(text.as_bytes()).map_err(prepare)
}

/// Run `sh -c LINE` locally: how the tests check that a quoted line means what it says.
#[cfg(test)]
fn local_sh(line: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("sh")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn safe_words_stay_and_others_are_single_quoted() {
        assert_eq!(shell_quote("photos"), "photos");
        assert_eq!(shell_quote("/srv/a-b_c.d"), "/srv/a-b_c.d");
        assert_eq!(shell_quote("addr=1.2.3.4,hard"), "addr=1.2.3.4,hard");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(reboot)"), "'$(reboot)'");
    }

    #[test]
    fn quoted_words_reach_the_program_unchanged() {
        let nasty = [
            "plain",
            "",
            "two words",
            "it's",
            "''",
            "\"double\"",
            "$HOME $(id) `id` ${x:-y}",
            "a;b|c&d>e<f",
            "*?[a-z]~",
            "back\\slash\\",
            "new\nline",
            "tab\there",
            "!bang!",
            "-n",
            "ümlaut ✓",
        ];
        let args: Vec<String> = nasty.iter().map(|s| (*s).to_owned()).collect();
        // The script prints each argument NUL-terminated.
        let line = step_command_line("for a; do printf '%s\\0' \"$a\"; done", &args, false);
        let out = local_sh(&line);
        assert!(out.status.success(), "{out:?}");
        let got: Vec<String> = out
            .stdout
            .split(|b| *b == 0)
            .map(|w| String::from_utf8(w.to_vec()).unwrap())
            .collect();
        // split leaves an empty tail after the last NUL.
        assert_eq!(&got[..got.len() - 1], &nasty[..]);
    }

    #[test]
    fn the_script_itself_is_one_quoted_word() {
        let line = step_command_line("echo \"$0:$#:$1\"; echo 'q'", &["x y".into()], false);
        let out = local_sh(&line);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "labctl-step:1:x y\nq\n"
        );
        let line = step_command_line("true", &[], true);
        assert!(line.starts_with("sudo -n sh -c true labctl-step"), "{line}");
    }

    #[test]
    fn host_key_lines_pin_every_port() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXVnGQf1j8n9PjpZ5X5 root@guest";
        assert_eq!(
            known_hosts_line("192.168.1.20", key).unwrap(),
            "192.168.1.20,[192.168.1.20]:* ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBXVnGQf1j8n9PjpZ5X5"
        );
        for bad in [
            "",
            "ssh-ed25519",
            "hello world",
            "ssh-ed25519 AAAA$(reboot)AAAAAAAAAAAAAAA",
            "192.168.1.20 ssh-ed25519",
        ] {
            assert!(known_hosts_line("h", bad).is_err(), "{bad}");
        }
    }
}
