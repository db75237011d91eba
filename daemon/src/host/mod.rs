//! Host drivers: the only code that runs programs on the host, always as argv vectors through
//! [`runner::Runner`].

// Only template previews use it so far; the VM feature (issue 3) wires the rest.
#[allow(dead_code)]
pub mod bhyve;
pub mod images;
pub mod net;
pub mod nfs;
// Parts serve only the bhyve driver's golden tests so far.
pub mod procstat;
#[allow(dead_code)]
pub mod qemu;
pub mod qmp;
pub mod runner;
pub mod seed;
pub mod tty;
pub mod zfs;
