//! A VM's serial console, owned by labd for the VM's whole life.
//!
//! labd is the console's only client on the hypervisor side (QEMU's `console.sock`; on
//! FreeBSD the nmdm B side) and fans it out: every byte the guest prints is appended to
//! `console.log` (rotated at [`LOG_MAX`], [`LOG_KEEP`] old files kept) and sent to every
//! attached `labctl vm console`; what any attached client types goes to the guest. So there
//! is never a "port busy" (vm-bhyve's `cu` holds the nmdm device exclusively), the log has the
//! whole boot even when nobody watches, and a client attaching late first gets the last
//! [`BACKLOG`] bytes so it sees the current prompt.
//!
//! A [`Console`] outlives the hypervisor process: after a reboot (a new QEMU) the supervisor
//! hands it the new stream with [`Console::feed`], and attached clients stay attached.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

/// The log is rotated when it grows past this many bytes.
pub const LOG_MAX: u64 = 4 << 20;
/// Rotated logs kept (`console.log.1` … `console.log.N`).
pub const LOG_KEEP: u32 = 3;
/// Bytes of recent output a newly attached client receives first.
pub const BACKLOG: usize = 16 << 10;
/// Output chunks queued for a slow client before it is cut off.
const CLIENT_QUEUE: usize = 1024;

/// One VM's console.
#[derive(Debug)]
pub struct Console {
    log: PathBuf,
    output: broadcast::Sender<Vec<u8>>,
    backlog: Mutex<VecDeque<u8>>,
    /// Input to the hypervisor stream fed last; `None` while there is none.
    input: Mutex<Option<mpsc::Sender<Vec<u8>>>>,
    /// Set when the VM is off for good: a feed still running (a terminal device that never
    /// reports an end) lets go of its stream.
    closed: tokio::sync::watch::Sender<bool>,
}

/// A client's view: recent output, then everything that follows.
#[derive(Debug)]
pub struct Attachment {
    /// The last [`BACKLOG`] bytes of output.
    pub backlog: Vec<u8>,
    /// Output from now on. A client that falls [`CLIENT_QUEUE`] chunks behind gets
    /// `Lagged` and should be told so.
    pub output: broadcast::Receiver<Vec<u8>>,
}

impl Console {
    /// A console logging to `log`.
    pub fn new(log: PathBuf) -> Self {
        let (output, _) = broadcast::channel(CLIENT_QUEUE);
        Self {
            log,
            output,
            backlog: Mutex::new(VecDeque::with_capacity(BACKLOG)),
            input: Mutex::new(None),
            closed: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Copy `stream` (the hypervisor's side of the console) to the log and the attached
    /// clients until it closes, and send clients' input into it. Returns when the stream
    /// ends (the hypervisor exited).
    pub async fn feed<S>(&self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut read, mut write) = tokio::io::split(stream);
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        *self.lock_input() = Some(tx);
        let writer = tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if write.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let mut log = LogFile::open(&self.log).await;
        let mut buf = vec![0u8; 8192];
        let mut closed = self.closed.subscribe();
        loop {
            let n = tokio::select! {
                n = read.read(&mut buf) => n,
                _ = closed.wait_for(|c| *c) => break,
            };
            match n {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    if let Some(l) = log.as_mut() {
                        l.write(chunk).await;
                    }
                    self.remember(chunk);
                    let _ = self.output.send(chunk.to_vec());
                }
            }
        }
        *self.lock_input() = None;
        writer.abort();
    }

    /// Whether a hypervisor stream feeds this console now.
    pub fn is_fed(&self) -> bool {
        self.lock_input().is_some()
    }

    /// The VM is off for good: let go of the hypervisor's stream.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Attach a client.
    pub fn attach(&self) -> Attachment {
        // Subscribe before copying the backlog so no byte falls between the two.
        let output = self.output.subscribe();
        let backlog = self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect();
        Attachment { backlog, output }
    }

    /// Send a client's keystrokes to the guest. Returns false when no hypervisor is
    /// connected (the VM is between two boots or stopped).
    pub async fn input(&self, bytes: Vec<u8>) -> bool {
        let tx = self.lock_input().clone();
        match tx {
            Some(tx) => tx.send(bytes).await.is_ok(),
            None => false,
        }
    }

    /// Serve one attached client over `stream` (an upgraded API connection): the backlog,
    /// then output as it comes, and the client's bytes to the guest, until the client goes
    /// or `ended` completes (the VM stopped for good). Notes from labd itself are written
    /// between `[labd: ` and `]` on a line of their own.
    pub async fn serve_client<S>(&self, stream: S, ended: impl std::future::Future<Output = ()>)
    where
        S: AsyncRead + AsyncWrite,
    {
        let Attachment {
            backlog,
            mut output,
        } = self.attach();
        let (mut from_client, mut to_client) = tokio::io::split(stream);
        if to_client.write_all(&backlog).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 1024];
        tokio::pin!(ended);
        loop {
            tokio::select! {
                chunk = output.recv() => {
                    let bytes = match chunk {
                        Ok(b) => b,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            format!("\r\n[labd: this client fell behind; {n} chunks of output skipped]\r\n").into_bytes()
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    };
                    if to_client.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                n = from_client.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if !self.input(buf[..n].to_vec()).await {
                            let note = b"\r\n[labd: the VM is restarting; input dropped]\r\n";
                            if to_client.write_all(note).await.is_err() {
                                break;
                            }
                        }
                    }
                },
                () = &mut ended => {
                    let _ = to_client.write_all(b"\r\n[labd: the VM stopped]\r\n").await;
                    break;
                }
            }
        }
        let _ = to_client.shutdown().await;
    }

    fn lock_input(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Vec<u8>>>> {
        self.input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, chunk: &[u8]) {
        let mut b = self
            .backlog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        b.extend(chunk);
        let excess = b.len().saturating_sub(BACKLOG);
        b.drain(..excess);
    }
}

/// The console log, appended to and rotated by size.
struct LogFile {
    path: PathBuf,
    file: tokio::fs::File,
    size: u64,
}

impl LogFile {
    async fn open(path: &Path) -> Option<Self> {
        match Self::try_open(path).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(log = %path.display(), error = %e, "cannot open the console log");
                None
            }
        }
    }

    async fn try_open(path: &Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let size = file.metadata().await?.len();
        Ok(Self {
            path: path.to_owned(),
            file,
            size,
        })
    }

    async fn write(&mut self, chunk: &[u8]) {
        if self.size >= LOG_MAX
            && let Err(e) = self.rotate().await
        {
            tracing::warn!(log = %self.path.display(), error = %e, "cannot rotate the console log");
        }
        if self.file.write_all(chunk).await.is_ok() {
            let _ = self.file.flush().await;
            self.size += chunk.len() as u64;
        }
    }

    /// `console.log.(N-1)` → `.N`, …, `console.log` → `.1`, then a fresh `console.log`.
    async fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..LOG_KEEP).rev() {
            let from = numbered(n);
            if tokio::fs::try_exists(&from).await.unwrap_or(false) {
                tokio::fs::rename(&from, numbered(n + 1)).await?;
            }
        }
        tokio::fs::rename(&self.path, numbered(1)).await?;
        *self = Self::try_open(&self.path).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labd-console-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[tokio::test]
    async fn output_reaches_log_backlog_and_clients_and_input_reaches_the_guest() {
        let dir = scratch("fanout");
        let console = std::sync::Arc::new(Console::new(dir.join("console.log")));
        let (guest, host) = tokio::io::duplex(1024);
        let (mut guest_r, mut guest_w) = tokio::io::split(guest);
        let feeder = {
            let c = std::sync::Arc::clone(&console);
            tokio::spawn(async move { c.feed(host).await })
        };
        guest_w.write_all(b"boot banner\n").await.expect("w");
        // Wait until the banner is in the backlog, then attach two clients.
        for _ in 0..100 {
            if !console.attach().backlog.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut a = console.attach();
        let mut b = console.attach();
        assert_eq!(a.backlog, b"boot banner\n");
        guest_w.write_all(b"login: ").await.expect("w");
        assert_eq!(a.output.recv().await.expect("a"), b"login: ");
        assert_eq!(b.output.recv().await.expect("b"), b"login: ");
        assert!(console.input(b"root\n".to_vec()).await);
        let mut got = [0u8; 5];
        guest_r.read_exact(&mut got).await.expect("guest reads");
        assert_eq!(&got, b"root\n");
        drop(guest_w);
        drop(guest_r);
        feeder.await.expect("feeder");
        assert!(!console.input(b"x".to_vec()).await);
        let log = std::fs::read(dir.join("console.log")).expect("log");
        assert_eq!(log, b"boot banner\nlogin: ");
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[tokio::test]
    async fn the_log_rotates_and_keeps_a_bounded_number_of_files() {
        let dir = scratch("rotate");
        let path = dir.join("console.log");
        let mut log = LogFile::try_open(&path).await.expect("open");
        let chunk = vec![b'x'; usize::try_from(LOG_MAX).expect("fits")];
        for _ in 0..(LOG_KEEP + 3) {
            log.write(&chunk).await;
        }
        log.write(b"tail").await;
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "console.log",
                "console.log.1",
                "console.log.2",
                "console.log.3"
            ]
        );
        assert_eq!(std::fs::read(&path).expect("current"), b"tail");
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn the_backlog_keeps_the_latest_bytes() {
        let c = Console::new(PathBuf::from("/nonexistent/console.log"));
        c.remember(&vec![b'a'; BACKLOG]);
        c.remember(b"end");
        let got = c.attach().backlog;
        assert_eq!(got.len(), BACKLOG);
        assert!(got.ends_with(b"aend"));
    }
}
