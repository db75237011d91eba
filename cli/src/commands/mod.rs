//! The commands: one module per command group, each turning parsed arguments into API calls
//! and printing the answers through [`crate::output`].

mod dataset;
mod events;
mod export;
mod guest;
mod job;
mod policy;
mod status;
mod switch;
mod template;
mod vm;

use crate::args::{Cli, Command, OutputFormat};
use crate::client::Client;
use crate::jobs::Report;

/// What every command needs: the client and the output options.
#[derive(Debug)]
pub struct Ctx {
    /// The API client.
    pub client: Client,
    /// Output format.
    pub format: OutputFormat,
    /// `-q`.
    pub quiet: bool,
}

impl Ctx {
    /// How mutations report their jobs.
    pub fn report(&self) -> Report {
        Report {
            format: self.format,
            quiet: self.quiet,
        }
    }
}

/// Run the command `cli` names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let ctx = Ctx {
        client: Client::new(&cli.endpoint().map_err(|m| {
            crate::args::usage_error(&[], clap::error::ErrorKind::ArgumentConflict, m)
        })?)?,
        format: cli.output,
        quiet: cli.quiet,
    };
    match cli.command {
        Command::Status => status::run(&ctx).await,
        Command::Dataset(cmd) => dataset::run(&ctx, cmd).await,
        Command::Job(cmd) => job::run(&ctx, cmd).await,
        Command::Policy(cmd) => policy::run(&ctx, cmd).await,
        Command::Export(cmd) => export::run(&ctx, cmd).await,
        Command::Template(cmd) => template::run(&ctx, cmd).await,
        Command::Vm(cmd) => vm::run(&ctx, cmd).await,
        Command::Guest(cmd) => guest::run(&ctx, cmd).await,
        Command::Switch(cmd) => switch::run(&ctx, cmd).await,
        Command::Events { kind, resource } => events::run(&ctx, &kind, resource.as_deref()).await,
    }
}
