//! `labctl vm console NAME`: the VM's serial console in this terminal.
//!
//! The API connection is upgraded to the raw console (daemon/src/api/console.rs). On a
//! terminal, stdin goes to raw mode (every key, Ctrl-C included, goes to the guest) and is
//! restored however labctl ends; Ctrl-] (0x1d, as telnet and virsh) detaches. Other
//! consoles attached at the same time see the same output; the VM keeps running.
//!
//! Without a terminal (a script), stdin is forwarded as it is, and the escape byte or the end
//! of stdin detaches.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use nix::sys::termios::{self, SetArg, Termios};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{Client, encode_segment};

/// The detach key: Ctrl-].
pub const ESCAPE: u8 = 0x1d;

/// Puts the terminal back as it was when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow::anyhow!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Attach to VM `name`'s console until the user detaches or the VM stops.
pub async fn attach(client: &Client, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/vms/{}/console", encode_segment(name));
    let conn = client.upgrade(&path, "labd-console").await?;
    let tty = std::io::stdin().is_terminal();
    eprint!("[labctl: attached to {name}'s console; detach with Ctrl-]]\r\n");
    let raw = if tty { Some(RawMode::enter()?) } else { None };
    let (mut from_vm, mut to_vm) = tokio::io::split(conn);
    let mut stdout = tokio::io::stdout();
    let output = async {
        let mut buf = vec![0u8; 8192];
        loop {
            match from_vm.read(&mut buf).await {
                Ok(0) | Err(_) => return "the console closed",
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).await.is_err() || stdout.flush().await.is_err() {
                        return "stdout closed";
                    }
                }
            }
        }
    };
    let mut keyboard = read_stdin();
    let input = async {
        loop {
            let Some(buf) = keyboard.recv().await else {
                return "end of input";
            };
            let (keys, detach) = match buf.iter().position(|&b| b == ESCAPE) {
                Some(i) => (&buf[..i], true),
                None => (&buf[..], false),
            };
            if !keys.is_empty() && to_vm.write_all(keys).await.is_err() {
                return "the console closed";
            }
            if detach {
                return "detached";
            }
        }
    };
    let why = tokio::select! {
        why = output => why,
        why = input => why,
    };
    drop(raw);
    eprint!("\r\n[labctl: {why}]\r\n");
    Ok(())
}

/// Stdin, read by a thread of its own: a blocking read cannot be interrupted, and a thread
/// (unlike tokio's stdin, which uses the runtime's blocking pool) does not hold up labctl's
/// exit when the console ends first.
fn read_stdin() -> tokio::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 1024];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}
