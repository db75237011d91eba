//! Host drivers: the only code that runs programs on the host, always as argv vectors through
//! [`runner::Runner`].

// Only template previews use it so far; the VM feature (issue 3) wires the rest.
#[allow(dead_code)]
pub mod bhyve;
pub mod images;
pub mod nfs;
// Only template previews use it so far; the VM feature (issue 3) wires the rest.
#[allow(dead_code)]
pub mod qemu;
pub mod qmp;
pub mod runner;
// The VM feature wires it (vm create, seed rebuilds); until then only its tests use it.
#[allow(dead_code)]
pub mod seed;
pub mod zfs;
