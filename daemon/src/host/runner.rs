//! The one command runner: every external program labd starts goes through here.
//!
//! A command is an argv vector, never a shell string. The runner captures stdout and stderr,
//! enforces a timeout, kills the child when the caller goes away (a cancelled job, a shutdown),
//! records each command in a tracing span and, inside a job, in the job's log.

use std::fmt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::core::jobs;

/// An argv vector: a program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    program: String,
    args: Vec<String>,
}

impl Argv {
    /// Start an argv with the program.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Append one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Program and arguments as one list (for display and API answers).
    pub fn to_vec(&self) -> Vec<String> {
        std::iter::once(self.program.clone())
            .chain(self.args.iter().cloned())
            .collect()
    }

    /// Append arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }
}

impl fmt::Display for Argv {
    /// Shell-like rendering for logs only; it is never executed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c))
            {
                write!(f, " {a}")?;
            } else {
                write!(f, " '{}'", a.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

/// What a successful command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Standard output.
    pub stdout: String,
    /// Standard error (some tools warn on success).
    pub stderr: String,
}

/// A command that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It exited with a non-zero status.
    #[error("`{argv}` exited with status {code}: {}", first_line(stderr))]
    Exit {
        /// The command.
        argv: String,
        /// Exit status.
        code: i32,
        /// Standard output (some tools print errors there).
        stdout: String,
        /// Standard error.
        stderr: String,
    },
    /// It was killed by a signal.
    #[error("`{argv}` was killed by signal {signal}")]
    Killed {
        /// The command.
        argv: String,
        /// The signal number.
        signal: i32,
    },
    /// It ran longer than allowed and was killed.
    #[error("`{argv}` timed out after {:?}", timeout)]
    Timeout {
        /// The command.
        argv: String,
        /// The limit.
        timeout: Duration,
    },
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

/// Runs argv vectors with a timeout.
#[derive(Debug, Clone)]
pub struct Runner {
    timeout: Duration,
}

impl Runner {
    /// A runner that kills commands running longer than `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Run `argv` to completion; `Ok` only on exit status 0.
    pub async fn run(&self, argv: &Argv) -> Result<Output, RunError> {
        let started = Instant::now();
        let rendered = argv.to_string();
        jobs::log_line(format!("$ {rendered}"));
        let child = Command::new(&argv.program)
            .args(&argv.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RunError::Spawn {
                program: argv.program.clone(),
                source,
            })?;
        let output = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(result) => result.map_err(|source| RunError::Spawn {
                program: argv.program.clone(),
                source,
            })?,
            Err(_) => {
                tracing::warn!(command = %rendered, "command timed out");
                return Err(RunError::Timeout {
                    argv: rendered,
                    timeout: self.timeout,
                });
            }
        };
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let elapsed = started.elapsed();
        tracing::debug!(
            command = %rendered,
            status = ?output.status.code(),
            elapsed_ms = elapsed.as_millis(),
            stderr = %stderr.trim_end(),
            "command finished"
        );
        if output.status.success() {
            return Ok(Output { stdout, stderr });
        }
        if let Some(code) = output.status.code() {
            return Err(RunError::Exit {
                argv: rendered,
                code,
                stdout,
                stderr,
            });
        }
        use std::os::unix::process::ExitStatusExt;
        let signal = output.status.signal().unwrap_or(0);
        jobs::log_line(format!("killed by signal {signal}"));
        Err(RunError::Killed {
            argv: rendered,
            signal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let a = Argv::new("zfs")
            .args(["create", "-o", "com.x:note=a b"])
            .arg("tank/x");
        assert_eq!(a.to_string(), "zfs create -o 'com.x:note=a b' tank/x");
        let b = Argv::new("echo").arg("it's");
        assert_eq!(b.to_string(), r"echo 'it'\''s'");
    }

    #[tokio::test]
    async fn captures_exit_status_and_stderr() {
        let r = Runner::new(Duration::from_secs(5));
        let out = r.run(&Argv::new("sh").args(["-c", "echo hi"])).await;
        assert_eq!(out.map(|o| o.stdout).ok().as_deref(), Some("hi\n"));
        let err = r
            .run(&Argv::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .await;
        match err {
            Err(RunError::Exit { code, stderr, .. }) => {
                assert_eq!(code, 3);
                assert_eq!(stderr, "oops\n");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn missing_program_and_timeout() {
        let r = Runner::new(Duration::from_millis(200));
        assert!(matches!(
            r.run(&Argv::new("/nonexistent/zfs")).await,
            Err(RunError::Spawn { .. })
        ));
        assert!(matches!(
            r.run(&Argv::new("sleep").arg("5")).await,
            Err(RunError::Timeout { .. })
        ));
    }

    #[tokio::test]
    async fn killed_child_is_reported() {
        let r = Runner::new(Duration::from_secs(5));
        let res = r.run(&Argv::new("sh").args(["-c", "kill -9 $$"])).await;
        assert!(
            matches!(res, Err(RunError::Killed { signal: 9, .. })),
            "{res:?}"
        );
    }
}
