//! `labctl guest provision|status`: make a VM what a provisioning plan says, or check how far
//! it is from it (see [`crate::guest`] and docs/provisioning.md).
//!
//! In table mode every step is printed as it finishes (`changed  network proxy: …`), then a
//! summary; json and yaml print the whole report at the end. A failed step, and for `status`
//! any drift, makes the exit status 1.

use super::Ctx;
use crate::args::{GuestCommand, GuestTarget, OutputFormat};
use crate::guest::{self, Mode, Outcome, Overrides, Report, StepReport};
use crate::output;

/// Run `labctl guest <cmd>`.
pub async fn run(ctx: &Ctx, cmd: GuestCommand) -> anyhow::Result<()> {
    let (target, mode, status) = match cmd {
        GuestCommand::Provision { target, dry_run } => (
            target,
            if dry_run { Mode::DryRun } else { Mode::Apply },
            false,
        ),
        GuestCommand::Status { target } => (target, Mode::DryRun, true),
    };
    let overrides = overrides(&target);
    let streaming = ctx.format == OutputFormat::Table;
    let mut write_error = None;
    let report = guest::run(
        &ctx.client,
        &target.vm,
        &target.plan,
        &overrides,
        mode,
        |step| {
            if streaming && write_error.is_none() {
                write_error = output::write_stdout(&step_line(step)).err();
            }
        },
    )
    .await?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    match ctx.format {
        OutputFormat::Table => output::write_stdout(&summary(&report))?,
        OutputFormat::Json | OutputFormat::Yaml => {
            output::emit(ctx.format, &report, |_| String::new())?;
        }
    }
    if let Some(failed) = report.failed() {
        anyhow::bail!("step `{}` failed: {}", failed.step, failed.detail);
    }
    let drift = report.count(Outcome::WouldChange);
    if status && drift > 0 {
        anyhow::bail!(
            "{} differs from the plan in {drift} of {} steps",
            report.vm,
            report.steps.len()
        );
    }
    Ok(())
}

fn overrides(t: &GuestTarget) -> Overrides {
    Overrides {
        host: t.host.clone(),
        host_key: t.host_key.clone(),
        port: t.port,
        user: t.user.clone(),
        identity: t.identity.clone(),
        ssh_config: t.ssh_config.clone(),
    }
}

/// `changed       network proxy: network proxy does not exist`.
fn step_line(s: &StepReport) -> String {
    if s.detail.is_empty() {
        format!("{:<13} {}", s.result.as_str(), s.step)
    } else {
        format!("{:<13} {}: {}", s.result.as_str(), s.step, s.detail)
    }
}

/// The closing line: the counts, and the dry-run mark.
fn summary(r: &Report) -> String {
    let mut parts = Vec::new();
    for o in [
        Outcome::Changed,
        Outcome::WouldChange,
        Outcome::Unchanged,
        Outcome::Failed,
        Outcome::NotRun,
    ] {
        let n = r.count(o);
        if n > 0 || matches!(o, Outcome::Changed | Outcome::Unchanged | Outcome::Failed) {
            parts.push(format!("{} {n}", o.as_str()));
        }
    }
    let mode = if r.dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    format!("{} ({}): {}{mode}", r.vm, r.address, parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(result: Outcome, detail: &str) -> StepReport {
        StepReport {
            step: "network proxy".into(),
            result,
            detail: detail.into(),
        }
    }

    #[test]
    fn lines_and_summary() {
        assert_eq!(
            step_line(&step(Outcome::Changed, "network proxy does not exist")),
            "changed       network proxy: network proxy does not exist"
        );
        assert_eq!(
            step_line(&step(Outcome::NotRun, "")),
            "not-run       network proxy"
        );
        let r = Report {
            vm: "docker-host".into(),
            address: "192.168.1.20".into(),
            dry_run: true,
            steps: vec![
                step(Outcome::WouldChange, "x"),
                step(Outcome::Unchanged, "y"),
            ],
        };
        assert_eq!(
            summary(&r),
            "docker-host (192.168.1.20): changed 0, would-change 1, unchanged 1, failed 0 \
             (dry run: nothing changed)"
        );
    }
}
