//! Jobs: every mutation runs as a job with an id, a state, a log and a final state that is
//! always reached: on success, on error, on panic, and on shutdown (when the grace period
//! ends, the job's task is dropped, which kills its child process, and it is marked failed).
//!
//! A job waits for its resource locks in state `queued`; `started_at` is set once it holds
//! them, so the run intervals of two jobs on one resource never overlap.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::error::Error;
use super::locks::Locks;
use crate::events::EventBus;
use crate::wire::{Actor, Job, JobState};

/// Finished jobs kept for `GET /v1/jobs/{id}`.
const KEEP_FINISHED: usize = 1000;
/// Log lines kept per job.
const MAX_LOG_LINES: usize = 500;

tokio::task_local! {
    static CURRENT: JobLog;
}

/// Append a line to the log of the job this task runs, if any.
pub fn log_line(line: String) {
    let _ = CURRENT.try_with(|log| log.push(line));
}

/// Set the progress (percent) of the job this task runs, if any.
pub fn progress(pct: u8) {
    let _ = CURRENT.try_with(|log| log.progress(pct));
}

/// The job this task runs, for work that continues on another thread (a blocking copy).
pub fn current() -> Option<JobLog> {
    CURRENT.try_with(Clone::clone).ok()
}

/// A handle on one job's log and progress.
#[derive(Clone)]
pub struct JobLog {
    id: Uuid,
    table: Arc<Mutex<Table>>,
}

impl JobLog {
    fn push(&self, line: String) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.jobs.get_mut(&self.id)
            && entry.job.log.len() < MAX_LOG_LINES
        {
            entry.job.log.push(line);
        }
    }

    /// Set the job's progress (0 to 100) while it runs.
    pub fn progress(&self, pct: u8) {
        let mut table = lock(&self.table);
        if let Some(entry) = table.jobs.get_mut(&self.id)
            && !entry.job.state.is_final()
        {
            entry.job.progress = Some(pct.min(100));
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    jobs: HashMap<Uuid, Entry>,
    finished: VecDeque<Uuid>,
}

#[derive(Debug)]
struct Entry {
    job: Job,
    done: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    table
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The job registry.
#[derive(Debug, Clone)]
pub struct Jobs {
    table: Arc<Mutex<Table>>,
    locks: Arc<Locks>,
    events: EventBus,
    accepting: Arc<AtomicBool>,
}

impl Jobs {
    /// A registry publishing to `events`.
    pub fn new(events: EventBus) -> Self {
        Self {
            table: Arc::default(),
            locks: Arc::default(),
            events,
            accepting: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Start a job that runs `work` once it holds the locks on `lock_keys`.
    pub fn spawn<F, Fut>(
        &self,
        kind: &str,
        target: &str,
        actor: Option<Actor>,
        lock_keys: Vec<String>,
        work: F,
    ) -> Result<Job, Error>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<serde_json::Value, Error>> + Send + 'static,
    {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(Error::ShuttingDown);
        }
        let job = Job {
            id: Uuid::new_v4(),
            kind: kind.to_owned(),
            target: target.to_owned(),
            state: JobState::Queued,
            progress: None,
            actor,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            log: Vec::new(),
            error: None,
            result: None,
        };
        let id = job.id;
        let (done, _) = watch::channel(false);
        lock(&self.table).jobs.insert(
            id,
            Entry {
                job: job.clone(),
                done,
                task: None,
            },
        );
        self.publish("job.created", &job);

        let this = self.clone();
        let log = JobLog {
            id,
            table: Arc::clone(&self.table),
        };
        let task = tokio::spawn(CURRENT.scope(log, async move {
            let _guards = this.locks.acquire(lock_keys).await;
            this.update(id, |j| {
                j.state = JobState::Running;
                j.started_at = Some(Timestamp::now());
            });
            let outcome = AssertUnwindSafe(work()).catch_unwind().await;
            let result = outcome.unwrap_or_else(|_| Err(Error::Internal("job panicked".into())));
            this.finish(id, result);
        }));
        let mut table = lock(&self.table);
        if let Some(entry) = table.jobs.get_mut(&id)
            && !entry.job.state.is_final()
        {
            entry.task = Some(task);
        }
        Ok(job)
    }

    fn update(&self, id: Uuid, change: impl FnOnce(&mut Job)) {
        let job = {
            let mut table = lock(&self.table);
            let Some(entry) = table.jobs.get_mut(&id) else {
                return;
            };
            change(&mut entry.job);
            entry.job.clone()
        };
        if job.state == JobState::Running {
            self.publish("job.started", &job);
        }
    }

    fn finish(&self, id: Uuid, result: Result<serde_json::Value, Error>) {
        let job = {
            let mut table = lock(&self.table);
            let Some(entry) = table.jobs.get_mut(&id) else {
                return;
            };
            if entry.job.state.is_final() {
                return;
            }
            match result {
                Ok(value) => {
                    entry.job.state = JobState::Succeeded;
                    entry.job.result = Some(value);
                    entry.job.progress = Some(100);
                }
                Err(e) => {
                    tracing::warn!(job = %id, kind = %entry.job.kind, error = %e, "job failed");
                    entry.job.state = JobState::Failed;
                    entry.job.error = Some(e.info());
                }
            }
            entry.job.finished_at = Some(Timestamp::now());
            entry.task = None;
            entry.done.send_replace(true);
            let job = entry.job.clone();
            table.finished.push_back(id);
            while table.finished.len() > KEEP_FINISHED {
                if let Some(old) = table.finished.pop_front() {
                    table.jobs.remove(&old);
                }
            }
            job
        };
        self.publish("job.finished", &job);
    }

    fn publish(&self, kind: &str, job: &Job) {
        let mut data = serde_json::json!({
            "id": job.id,
            "kind": job.kind,
            "state": job.state,
        });
        if let Some(error) = &job.error {
            data["error"] = serde_json::json!(error);
        }
        if let (Some(start), Some(end)) = (job.started_at, job.finished_at) {
            let ms = end.duration_since(start).as_millis_f64();
            data["duration_ms"] = serde_json::json!(ms);
        }
        self.events.publish(kind, &job.target, job.actor, data);
    }

    /// One job.
    pub fn get(&self, id: Uuid) -> Option<Job> {
        lock(&self.table).jobs.get(&id).map(|e| e.job.clone())
    }

    /// All jobs known, newest first.
    pub fn list(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = lock(&self.table)
            .jobs
            .values()
            .map(|e| e.job.clone())
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
        jobs
    }

    /// The job once it is final, or as it is after `timeout`.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Option<Job> {
        let mut rx = lock(&self.table).jobs.get(&id)?.done.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|done| *done)).await;
        self.get(id)
    }

    /// Stop taking jobs, give running ones `grace` to finish, then stop the rest (killing
    /// their commands) and mark them failed.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        let pending: Vec<Uuid> = lock(&self.table)
            .jobs
            .iter()
            .filter(|(_, e)| !e.job.state.is_final())
            .map(|(id, _)| *id)
            .collect();
        let waits = pending.iter().map(|id| self.wait(*id, grace));
        futures_util::future::join_all(waits).await;
        let leftovers: Vec<(Uuid, JoinHandle<()>)> = lock(&self.table)
            .jobs
            .iter_mut()
            .filter(|(_, e)| !e.job.state.is_final())
            .filter_map(|(id, e)| e.task.take().map(|t| (*id, t)))
            .collect();
        for (id, task) in leftovers {
            task.abort();
            // Dropping the task drops its child process handle, which kills it.
            let _ = task.await;
            self.finish(id, Err(Error::Interrupted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn job_reaches_final_state_with_log() {
        let jobs = Jobs::new(EventBus::new());
        let job = jobs
            .spawn("test.ok", "t", None, vec!["t".into()], || async {
                log_line("did it".into());
                Ok(serde_json::json!({"x": 1}))
            })
            .expect("spawned");
        let done = jobs
            .wait(job.id, Duration::from_secs(5))
            .await
            .expect("known");
        assert_eq!(done.state, JobState::Succeeded);
        assert_eq!(done.log, vec!["did it".to_owned()]);
        assert!(done.started_at.is_some() && done.finished_at.is_some());
    }

    #[tokio::test]
    async fn panic_and_error_fail_the_job() {
        let jobs = Jobs::new(EventBus::new());
        let a = jobs
            .spawn("test.panic", "t", None, vec![], || async { panic!("boom") })
            .expect("spawned");
        let b = jobs
            .spawn("test.err", "t", None, vec![], || async {
                Err(Error::NotFound { what: "x".into() })
            })
            .expect("spawned");
        for (id, code) in [(a.id, "internal"), (b.id, "not_found")] {
            let j = jobs.wait(id, Duration::from_secs(5)).await.expect("known");
            assert_eq!(j.state, JobState::Failed);
            assert_eq!(j.error.map(|e| e.code), Some(code.to_owned()));
        }
    }

    #[tokio::test]
    async fn shutdown_fails_jobs_past_grace_and_refuses_new_ones() {
        let jobs = Jobs::new(EventBus::new());
        let slow = jobs
            .spawn("test.slow", "t", None, vec![], || async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(serde_json::Value::Null)
            })
            .expect("spawned");
        jobs.shutdown(Duration::from_millis(100)).await;
        let j = jobs.get(slow.id).expect("known");
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.error.map(|e| e.code), Some("interrupted".to_owned()));
        assert!(matches!(
            jobs.spawn("x", "t", None, vec![], || async {
                Ok(serde_json::Value::Null)
            }),
            Err(Error::ShuttingDown)
        ));
    }
}
