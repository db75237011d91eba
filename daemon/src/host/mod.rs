//! Host drivers: the only code that runs programs on the host, always as argv vectors through
//! [`runner::Runner`].

// Only template previews use it so far; the VM feature (issue 3) wires the rest.
#[allow(dead_code)]
pub mod bhyve;
pub mod net;
pub mod nfs;
// Only template previews use it so far; the VM feature (issue 3) wires the rest.
#[allow(dead_code)]
pub mod qemu;
pub mod runner;
pub mod zfs;
