//! A QMP connection held for a QEMU's whole life (QEMU Machine Protocol: one JSON object a
//! line over the VM's `qmp.sock`).
//!
//! labd connects once right after QEMU starts (or when it re-adopts a running QEMU) and keeps
//! the connection: QEMU's QMP socket serves one client at a time, and events such as
//! `SHUTDOWN` are only sent to a connected client. Holding the connection is what lets the
//! supervisor tell a guest's own poweroff from its reboot (`-no-reboot` makes both end QEMU
//! with status 0; only the event's `reason` differs, [`crate::host::qemu::shutdown_meaning`]).
//!
//! A reader task records the last `SHUTDOWN` reason and answers commands in order; the
//! connection closing (QEMU exited) is observable with [`Qmp::closed`].

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::qemu::{QMP_CAPABILITIES, QMP_POWERDOWN};

/// Longest wait for the greeting or for the answer to a command.
const ANSWER: Duration = Duration::from_secs(5);

/// A QMP failure.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// QEMU said something that is not QMP, or nothing in time.
    #[error("QMP: {0}")]
    Protocol(String),
    /// QEMU answered a command with an error.
    #[error("QMP {command}: {error}")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's error object.
        error: String,
    },
    /// The connection is gone (QEMU exited).
    #[error("QMP connection closed")]
    Closed,
}

type Reply = oneshot::Sender<Result<(), QmpError>>;

/// A held QMP connection.
#[derive(Debug, Clone)]
pub struct Qmp {
    commands: mpsc::Sender<(&'static str, Reply)>,
    reason: watch::Receiver<Option<String>>,
    open: watch::Receiver<bool>,
}

impl Qmp {
    /// Connect to `path`, retrying until `within` has passed (QEMU creates the socket a few
    /// milliseconds after it starts), and leave capabilities negotiation.
    pub async fn connect(path: &Path, within: Duration) -> Result<Self, QmpError> {
        let deadline = tokio::time::Instant::now() + within;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(QmpError::Connect {
                        path: path.display().to_string(),
                        source: e,
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = next_json(&mut lines).await?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        let (reason_tx, reason) = watch::channel(None);
        send(&mut write, QMP_CAPABILITIES).await?;
        await_return(&mut lines, QMP_CAPABILITIES, &reason_tx).await?;
        let (commands, mut rx) = mpsc::channel::<(&'static str, Reply)>(4);
        let (open_tx, open) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        let Some((cmd, reply)) = cmd else { break };
                        let result = match send(&mut write, cmd).await {
                            Ok(()) => await_return(&mut lines, cmd, &reason_tx).await,
                            Err(e) => Err(e),
                        };
                        let closed = matches!(result, Err(QmpError::Closed));
                        let _ = reply.send(result);
                        if closed {
                            break;
                        }
                    }
                    line = lines.next_line() => match line {
                        Ok(Some(line)) => note_event(&line, &reason_tx),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            open_tx.send_replace(false);
        });
        Ok(Self {
            commands,
            reason,
            open,
        })
    }

    /// Press the ACPI power button.
    pub async fn powerdown(&self) -> Result<(), QmpError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((QMP_POWERDOWN, tx))
            .await
            .map_err(|_| QmpError::Closed)?;
        rx.await.map_err(|_| QmpError::Closed)?
    }

    /// The `reason` of the last `SHUTDOWN` event QEMU sent.
    pub fn shutdown_reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// Wait until the connection is closed (QEMU exited), at most `within`. Returns whether
    /// it closed.
    pub async fn closed(&self, within: Duration) -> bool {
        let mut open = self.open.clone();
        tokio::time::timeout(within, open.wait_for(|o| !o))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>;

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, cmd: &str) -> Result<(), QmpError> {
    write
        .write_all(format!("{cmd}\n").as_bytes())
        .await
        .map_err(|_| QmpError::Closed)
}

/// Read until the answer to `cmd`, noting the events that come before it.
async fn await_return(
    lines: &mut Lines,
    cmd: &str,
    reason: &watch::Sender<Option<String>>,
) -> Result<(), QmpError> {
    loop {
        let v = next_json(lines).await?;
        if let Some(e) = v.get("error") {
            return Err(QmpError::Refused {
                command: cmd.to_owned(),
                error: e.to_string(),
            });
        }
        if v.get("return").is_some() {
            return Ok(());
        }
        if v.get("event").is_some() {
            note_event(&v.to_string(), reason);
        }
    }
}

/// The next message, waiting at most [`ANSWER`].
async fn next_json(lines: &mut Lines) -> Result<serde_json::Value, QmpError> {
    let line = tokio::time::timeout(ANSWER, lines.next_line())
        .await
        .map_err(|_| QmpError::Protocol(format!("no answer within {}s", ANSWER.as_secs())))?
        .map_err(|_| QmpError::Closed)?
        .ok_or(QmpError::Closed)?;
    serde_json::from_str(&line).map_err(|e| QmpError::Protocol(format!("bad line {line:?}: {e}")))
}

/// Record the reason of a `SHUTDOWN` event.
fn note_event(line: &str, reason: &watch::Sender<Option<String>>) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return;
    };
    if v.get("event").and_then(|e| e.as_str()) == Some("SHUTDOWN")
        && let Some(r) = v
            .get("data")
            .and_then(|d| d.get("reason"))
            .and_then(|r| r.as_str())
    {
        reason.send_replace(Some(r.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_events_record_their_reason() {
        let (tx, rx) = watch::channel(None);
        note_event(r#"{"event":"POWERDOWN","timestamp":{}}"#, &tx);
        assert_eq!(*rx.borrow(), None);
        note_event(
            r#"{"event":"SHUTDOWN","data":{"guest":true,"reason":"guest-reset"}}"#,
            &tx,
        );
        assert_eq!(rx.borrow().as_deref(), Some("guest-reset"));
        note_event("not json", &tx);
        assert_eq!(rx.borrow().as_deref(), Some("guest-reset"));
    }

    /// A fake QMP server on a socketpair-like listener: greeting, capabilities, then a
    /// SHUTDOWN event after the powerdown answer, then close.
    #[tokio::test]
    async fn powerdown_then_event_then_close() {
        let dir = std::env::temp_dir().join(format!("labd-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("qmp.sock");
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\":{\"version\":{}}}\n")
                .await
                .expect("w");
            for answer in [
                "{\"return\":{}}\n",
                "{\"return\":{}}\n{\"event\":\"SHUTDOWN\",\"data\":{\"guest\":true,\"reason\":\"guest-shutdown\"}}\n",
            ] {
                let _ = lines.next_line().await.expect("read");
                w.write_all(answer.as_bytes()).await.expect("w");
            }
        });
        let qmp = Qmp::connect(&path, Duration::from_secs(2))
            .await
            .expect("connect");
        qmp.powerdown().await.expect("powerdown");
        server.await.expect("server");
        assert!(qmp.closed(Duration::from_secs(2)).await);
        assert_eq!(qmp.shutdown_reason().as_deref(), Some("guest-shutdown"));
        assert!(matches!(qmp.powerdown().await, Err(QmpError::Closed)));
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
