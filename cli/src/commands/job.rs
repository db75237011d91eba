//! `labctl job list` and `labctl job show ID`.

use labd::wire::Job;

use super::Ctx;
use crate::args::JobCommand;
use crate::output;

/// Run `labctl job <cmd>`.
pub async fn run(ctx: &Ctx, cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::List => {
            let jobs: Vec<Job> = ctx.client.get("/v1/jobs").await?;
            output::emit(ctx.format, &jobs, |j| render_list(j))
        }
        JobCommand::Show(args) => {
            let job: Job = ctx.client.get(&format!("/v1/jobs/{}", args.id)).await?;
            output::emit(ctx.format, &job, render_job)
        }
    }
}

fn render_list(jobs: &[Job]) -> String {
    let mut t = output::table(&["ID", "KIND", "TARGET", "STATE", "CREATED"]);
    for j in jobs {
        t.add_row(vec![
            j.id.to_string(),
            j.kind.clone(),
            j.target.clone(),
            output::job_state(j.state).to_owned(),
            output::time(j.created_at),
        ]);
    }
    output::render(&t)
}

fn render_job(j: &Job) -> String {
    let mut rows = vec![
        ("id", j.id.to_string()),
        ("kind", j.kind.clone()),
        ("target", j.target.clone()),
        ("state", output::job_state(j.state).to_owned()),
    ];
    if let Some(p) = j.progress {
        rows.push(("progress", format!("{p}%")));
    }
    if let Some(a) = &j.actor {
        rows.push(("actor", a.to_string()));
    }
    rows.push(("created", output::time(j.created_at)));
    if let Some(t) = j.started_at {
        rows.push(("started", output::time(t)));
    }
    if let Some(t) = j.finished_at {
        rows.push(("finished", output::time(t)));
    }
    if let Some(e) = &j.error {
        rows.push(("error", format!("{} ({})", e.message, e.code)));
    }
    if let Some(r) = &j.result {
        rows.push(("result", r.to_string()));
    }
    for line in &j.log {
        rows.push(("log", line.clone()));
    }
    output::render(&output::key_values(rows))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn show_lists_fields_then_log() {
        let job: Job = serde_json::from_value(serde_json::json!({
            "id": "4f8f9a2e-4c1a-4a55-9d8e-0a4c6f1f0d11",
            "kind": "snapshot.create",
            "target": "tank/labd/photos",
            "state": "failed",
            "actor": {"uid": 0, "gid": 0},
            "created_at": "2026-11-25T19:00:00.5Z",
            "log": ["zfs snapshot tank/labd/photos@a"],
            "error": {"code": "exists", "message": "snapshot exists"},
        }))
        .unwrap();
        assert_eq!(
            render_job(&job),
            "id       4f8f9a2e-4c1a-4a55-9d8e-0a4c6f1f0d11\n\
             kind     snapshot.create\n\
             target   tank/labd/photos\n\
             state    failed\n\
             actor    uid=0 gid=0\n\
             created  2026-11-25T19:00:00Z\n\
             error    snapshot exists (exists)\n\
             log      zfs snapshot tank/labd/photos@a"
        );
        assert!(render_list(&[job]).contains("snapshot.create  tank/labd/photos  failed"));
    }
}
