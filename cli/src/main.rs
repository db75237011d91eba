//! labctl: the command line of labd.
//!
//! # Background
//! labd serves an HTTP/JSON API on a Unix socket (and optionally on TCP with mutual TLS,
//! `--url`); labctl is a thin client of it. It uses the
//! daemon's own wire types (`labd::wire`), so the two cannot disagree about a field.
//!
//! # Design
//! [`args`] defines and validates the command line (clap derive); [`commands`] turns each
//! command into API calls through [`client`]; mutations answer with a job that [`jobs`] waits
//! for; everything printed goes through [`output`] (tables, JSON, YAML), and [`sse`] parses
//! the event stream. `main` only maps the outcome to an exit status:
//!
//! * 0: success, also when stdout is a closed pipe (`labctl dataset list | head -1`);
//! * 1: labd refused or failed the request, a job failed, or labd is unreachable;
//! * 2: usage error (clap's own, and the few checks made after parsing).
//!
//! # Current limitations
//! No shell completions (clap_complete is not a workspace
//! dependency).

mod args;
mod client;
mod commands;
mod console;
mod guest;
mod jobs;
mod output;
mod sse;

use std::io;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use crate::args::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(commands::run(cli))
}

/// Print a clap error (or help/version) and exit with clap's status: 2 for usage errors.
fn usage_exit(e: &clap::Error) -> ExitCode {
    // Help on a closed pipe is not worth a complaint.
    let _ = e.print();
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The exit status of a failed run, after printing the error chain.
fn fail(e: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    if let Some(usage) = e.downcast_ref::<clap::Error>() {
        return usage_exit(usage);
    }
    output::write_stderr(&format!("labctl: {e:#}"));
    ExitCode::FAILURE
}

/// Whether the error comes from writing to a closed pipe: the reader went away, which is a
/// normal way for a pipeline to end.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_anywhere_in_the_chain_is_clean() {
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&e));
        let e = anyhow::Error::from(io::Error::from(io::ErrorKind::NotFound));
        assert!(!is_broken_pipe(&e));
    }
}
