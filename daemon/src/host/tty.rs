//! A terminal device as an async byte stream: the `B` side of a VM's nmdm(4) null-modem pair
//! on FreeBSD (bhyve has the `A` side as its com1), which labd holds open for the VM's life.
//!
//! The device is opened non-blocking and put in raw mode (no echo, no line editing, no
//! CR/LF translation, no signals: the guest's bytes pass unchanged both ways), then driven
//! through tokio's [`AsyncFd`] (kqueue on FreeBSD, epoll on Linux, where the tests use a
//! pseudo-terminal).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use nix::sys::termios::{self, SetArg};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An open terminal in raw mode.
#[derive(Debug)]
pub struct Tty(AsyncFd<File>);

impl Tty {
    /// Open the terminal device at `path` for reading and writing, raw and non-blocking,
    /// without making it labd's controlling terminal.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
            .open(path)?;
        Self::from_file(file)
    }

    /// Put an already open terminal in raw mode and drive it asynchronously. The file must be
    /// non-blocking.
    pub fn from_file(file: File) -> io::Result<Self> {
        let mut attrs = termios::tcgetattr(file.as_fd()).map_err(io::Error::from)?;
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(file.as_fd(), SetArg::TCSANOW, &attrs).map_err(io::Error::from)?;
        // `AsyncFd::new` is deprecated for types whose descriptor may be closed or replaced
        // behind the registration's back; a `File` owns its descriptor and is only closed
        // when this `Tty` drops it, so it is sound here, and labd forbids `unsafe` (which
        // the replacement, `AsyncFd::register`, needs).
        #[allow(deprecated)]
        let fd = AsyncFd::new(file)?;
        Ok(Self(fd))
    }
}

impl AsyncRead for Tty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| fd.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The other side closed (a pty's master sees EIO once the slave is gone):
                // the end of the stream.
                Ok(Err(e)) if e.raw_os_error() == Some(nix::libc::EIO) => {
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for Tty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| fd.get_ref().write(buf)) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A pseudo-terminal stands in for nmdm: labd's side is the master, the "guest" writes
    /// and reads the slave.
    #[tokio::test]
    async fn bytes_pass_raw_both_ways() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let master = File::from(pty.master);
        nix::fcntl::fcntl(
            master.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("nonblock");
        let mut tty = Tty::from_file(master).expect("tty");
        let mut slave = File::from(pty.slave);
        let mut attrs = termios::tcgetattr(slave.as_fd()).expect("attrs");
        termios::cfmakeraw(&mut attrs);
        termios::tcsetattr(slave.as_fd(), SetArg::TCSANOW, &attrs).expect("raw slave");

        slave.write_all(b"login: \r\n\x03").expect("guest writes");
        let mut got = [0u8; 10];
        tty.read_exact(&mut got).await.expect("labd reads");
        assert_eq!(&got, b"login: \r\n\x03");

        tty.write_all(b"root\r\x1d").await.expect("labd writes");
        let mut back = [0u8; 6];
        tokio::task::spawn_blocking(move || {
            slave.read_exact(&mut back).expect("guest reads");
            back
        })
        .await
        .map(|b| assert_eq!(&b, b"root\r\x1d"))
        .expect("join");
    }
}
