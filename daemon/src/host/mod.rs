//! Host drivers: the only code that runs programs on the host, always as argv vectors through
//! [`runner::Runner`].

pub mod nfs;
pub mod runner;
pub mod zfs;
