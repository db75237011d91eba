//! Waiting for jobs: every mutation answers `202 Accepted` with a job, which labctl polls
//! with `GET /v1/jobs/{id}?wait=1` until it is final, showing a spinner on a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use labd::wire::{ExportsApplied, Job, JobState, PolicyRun};

use crate::args::OutputFormat;
use crate::client::Client;
use crate::output;

/// Seconds labd may hold one poll before answering with the job as it is.
const POLL_WAIT_SECS: u64 = 1;

/// A job that did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{kind} {target} {outcome}{}", detail(.code.as_deref(), .message.as_deref()))]
pub struct JobFailed {
    kind: String,
    target: String,
    outcome: &'static str,
    code: Option<String>,
    message: Option<String>,
}

fn detail(code: Option<&str>, message: Option<&str>) -> String {
    match (message, code) {
        (Some(m), Some(c)) => format!(": {m} ({c})"),
        (Some(m), None) => format!(": {m}"),
        (None, Some(c)) => format!(" ({c})"),
        (None, None) => String::new(),
    }
}

impl JobFailed {
    /// The failure of `job`, or `None` when it succeeded (or is not final).
    pub fn of(job: &Job) -> Option<Self> {
        let outcome = match job.state {
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Succeeded | JobState::Queued | JobState::Running => return None,
        };
        Some(Self {
            kind: job.kind.clone(),
            target: job.target.clone(),
            outcome,
            code: job.error.as_ref().map(|e| e.code.clone()),
            message: job.error.as_ref().map(|e| e.message.clone()),
        })
    }
}

/// Clears the spinner however waiting ends (dropping an unfinished bar would leave its
/// last frame on the terminal).
struct Spinner(ProgressBar);

impl Spinner {
    fn start(job: &Job) -> Self {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_message(label(job));
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(bar)
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// What the spinner says: `<kind> <target>`, the state while queued, the progress if known.
fn label(job: &Job) -> String {
    let mut s = format!("{} {}", job.kind, job.target);
    if job.state == JobState::Queued {
        s.push_str(" (queued)");
    }
    if let Some(p) = job.progress {
        s.push_str(&format!(" {p}%"));
    }
    s
}

/// Poll `job` until it is final. With `spinner`, show one on stderr meanwhile. Ctrl-C stops
/// waiting (not the job) with an error saying how to follow it.
pub async fn wait(client: &Client, job: Job, spinner: bool) -> anyhow::Result<Job> {
    let spinner = spinner.then(|| Spinner::start(&job));
    let path = format!("/v1/jobs/{}?wait={POLL_WAIT_SECS}", job.id);
    let id = job.id;
    let mut job = job;
    while !job.state.is_final() {
        job = tokio::select! {
            polled = client.get::<Job>(&path) => polled?,
            _ = tokio::signal::ctrl_c() => {
                anyhow::bail!("stopped waiting; job {id} goes on in labd (labctl job show {id})")
            }
        };
        if let Some(s) = &spinner {
            s.0.set_message(label(&job));
        }
    }
    Ok(job)
}

/// How a mutation command reports its job.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Output format.
    pub format: OutputFormat,
    /// `-q`: no spinner, no success line.
    pub quiet: bool,
}

impl Report {
    /// Whether to show a spinner: on a terminal, unless quiet.
    pub fn spinner(self) -> bool {
        !self.quiet && std::io::stderr().is_terminal()
    }

    /// Print the final job: the object in json/yaml mode, a summary line in table mode.
    /// A job that did not succeed is returned as a [`JobFailed`] error.
    pub fn finish(self, job: &Job) -> anyhow::Result<()> {
        let failed = JobFailed::of(job);
        match self.format {
            OutputFormat::Json | OutputFormat::Yaml => {
                output::emit(self.format, job, |_| String::new())?
            }
            OutputFormat::Table if failed.is_none() && !self.quiet => {
                output::write_stdout(&summary(job))?;
            }
            OutputFormat::Table => {}
        }
        match failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// The table-mode line of a finished job, plus the snapshot names a `snapshot.create` made,
/// the counts, errors and paused datasets of a `policy.run`, or what an `exports.apply`
/// changed.
fn summary(job: &Job) -> String {
    let mut s = format!(
        "{} {}: {}",
        job.kind,
        job.target,
        output::job_state(job.state)
    );
    if job.kind == "snapshot.create" {
        let names = job
            .result
            .as_ref()
            .and_then(|r| r.get("snapshots"))
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str());
        for name in names {
            s.push('\n');
            s.push_str(name);
        }
    }
    if job.kind == "policy.run" {
        let run = job
            .result
            .clone()
            .and_then(|r| serde_json::from_value::<PolicyRun>(r).ok());
        if let Some(run) = run {
            s.push('\n');
            s.push_str(&policy_run_summary(&run));
        }
    }
    if job.kind == "exports.apply" {
        let applied = job
            .result
            .clone()
            .and_then(|r| serde_json::from_value::<ExportsApplied>(r).ok());
        if let Some(applied) = applied {
            s.push('\n');
            s.push_str(&exports_applied_summary(&applied));
        }
    }
    s
}

/// What an exports apply did: whether the file changed, then the exports added, removed
/// and updated (empty lists left out).
fn exports_applied_summary(applied: &ExportsApplied) -> String {
    let mut lines = vec![format!("changed: {}", output::yes_no(applied.changed))];
    for (label, names) in [
        ("added", &applied.added),
        ("removed", &applied.removed),
        ("updated", &applied.updated),
    ] {
        if !names.is_empty() {
            lines.push(format!("{label}: {}", names.join(", ")));
        }
    }
    lines.join("\n")
}

/// What a policy run did: counts and time, then every error and every paused dataset.
fn policy_run_summary(run: &PolicyRun) -> String {
    let mut lines = vec![format!(
        "taken: {}, destroyed: {}, commands: {}, took: {} ms",
        run.taken.len(),
        run.destroyed.len(),
        run.commands,
        run.duration_ms
    )];
    lines.extend(run.errors.iter().map(|e| format!("error: {e}")));
    lines.extend(
        run.paused
            .iter()
            .map(|(dataset, reason)| format!("paused: {dataset}: {reason}")),
    );
    lines.join("\n")
}

/// Run a mutation: wait for the job it started and report it.
pub async fn run(client: &Client, report: Report, accepted: Job) -> anyhow::Result<()> {
    let job = wait(client, accepted, report.spinner()).await?;
    report.finish(&job)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use labd::wire::ErrorInfo;

    use super::*;

    fn job(kind: &str, state: JobState) -> Job {
        serde_json::from_value(serde_json::json!({
            "id": "4f8f9a2e-4c1a-4a55-9d8e-0a4c6f1f0d11",
            "kind": kind,
            "target": "tank/labd/photos",
            "state": state,
            "created_at": "2026-11-25T19:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn summary_names_kind_target_and_state() {
        assert_eq!(
            summary(&job("dataset.create", JobState::Succeeded)),
            "dataset.create tank/labd/photos: succeeded"
        );
    }

    #[test]
    fn snapshot_summary_lists_the_snapshots() {
        let mut j = job("snapshot.create", JobState::Succeeded);
        j.result =
            Some(serde_json::json!({"snapshots": ["tank/labd/photos@a", "tank/labd/photos/x@a"]}));
        assert_eq!(
            summary(&j),
            "snapshot.create tank/labd/photos: succeeded\ntank/labd/photos@a\ntank/labd/photos/x@a"
        );
    }

    #[test]
    fn policy_run_summary_lists_counts_errors_and_pauses() {
        let mut j = job("policy.run", JobState::Succeeded);
        j.target = "tank/labd".into();
        j.result = Some(serde_json::json!({
            "at": "2026-11-25T19:00:00Z",
            "taken": ["tank/labd/a@x", "tank/labd/b@x"],
            "destroyed": ["tank/labd/a@old"],
            "paused": {"tank/labd/b": "pool 95% full"},
            "errors": ["zfs destroy tank/labd/a@y: dataset is busy"],
            "commands": 4,
            "duration_ms": 120,
        }));
        assert_eq!(
            summary(&j),
            "policy.run tank/labd: succeeded\n\
             taken: 2, destroyed: 1, commands: 4, took: 120 ms\n\
             error: zfs destroy tank/labd/a@y: dataset is busy\n\
             paused: tank/labd/b: pool 95% full"
        );
        j.result = None;
        assert_eq!(summary(&j), "policy.run tank/labd: succeeded");
    }

    #[test]
    fn exports_apply_summary_names_the_file_and_the_changes() {
        let mut j = job("exports.apply", JobState::Succeeded);
        j.target = "/etc/exports".into();
        j.result = Some(serde_json::json!({
            "file": "/etc/exports",
            "changed": true,
            "added": ["photos", "media/music"],
            "removed": [],
            "updated": ["backups"],
        }));
        assert_eq!(
            summary(&j),
            "exports.apply /etc/exports: succeeded\n\
             changed: yes\n\
             added: photos, media/music\n\
             updated: backups"
        );
        j.result = Some(serde_json::json!({
            "file": "/etc/exports",
            "changed": false,
            "added": [],
            "removed": [],
            "updated": [],
        }));
        assert_eq!(
            summary(&j),
            "exports.apply /etc/exports: succeeded\nchanged: no"
        );
        j.result = None;
        assert_eq!(summary(&j), "exports.apply /etc/exports: succeeded");
    }

    #[test]
    fn failures_carry_message_and_code() {
        assert!(JobFailed::of(&job("dataset.create", JobState::Succeeded)).is_none());
        let mut j = job("dataset.destroy", JobState::Failed);
        j.error = Some(ErrorInfo {
            code: "has_children".into(),
            message: "it has children".into(),
            field: None,
        });
        assert_eq!(
            JobFailed::of(&j).unwrap().to_string(),
            "dataset.destroy tank/labd/photos failed: it has children (has_children)"
        );
        let j = job("dataset.destroy", JobState::Cancelled);
        assert_eq!(
            JobFailed::of(&j).unwrap().to_string(),
            "dataset.destroy tank/labd/photos cancelled"
        );
    }

    #[test]
    fn spinner_label_shows_queue_and_progress() {
        let mut j = job("dataset.create", JobState::Queued);
        assert_eq!(label(&j), "dataset.create tank/labd/photos (queued)");
        j.state = JobState::Running;
        j.progress = Some(40);
        assert_eq!(label(&j), "dataset.create tank/labd/photos 40%");
    }
}
