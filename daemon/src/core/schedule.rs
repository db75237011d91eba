//! The policy scheduler: runs policies at their calendar boundaries (and once at start-up,
//! which is the catch-up after downtime), as `policy.run` jobs.
//!
//! Between two wake-ups it compares how far the wall clock moved with how far the monotonic
//! clock moved; when they disagree by more than [`JUMP_TOLERANCE`] the clock jumped, and the
//! next run takes snapshots but does not prune (the planner's `clock_jumped`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tokio::sync::watch;

use super::Core;
use super::policy;
use super::retention;

/// Wall-clock drift between two wake-ups that counts as a jump.
pub const JUMP_TOLERANCE: Duration = Duration::from_secs(300);
/// Longest sleep: configuration and clock changes are noticed within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Whether the wall clock moved differently from the monotonic clock since `since`.
fn jumped(since: (Timestamp, Instant), now: Timestamp) -> bool {
    let wall = now.duration_since(since.0).as_secs_f64();
    let mono = since.1.elapsed().as_secs_f64();
    (wall - mono).abs() > JUMP_TOLERANCE.as_secs_f64()
}

/// Run until `stop` turns true.
pub async fn run(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let mut due_now = true; // catch-up at start-up
    let mut anchor: Option<(Timestamp, Instant)> = None;
    loop {
        let host = core.host();
        let schedule = &host.config.schedule;
        let now = match policy::now(schedule.clock_file.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "policy clock unreadable");
                Timestamp::now()
            }
        };
        let clock_jumped = anchor.is_some_and(|a| jumped(a, now));
        anchor = Some((now, Instant::now()));
        if clock_jumped {
            core.events.publish(
                "policy.clock_jump",
                "labd",
                None,
                serde_json::json!({"now": now, "pruning": "paused for this run"}),
            );
        }
        if schedule.enabled
            && !host.config.policies.is_empty()
            && (due_now || clock_jumped)
            && let Err(e) = core.run_policies(None, clock_jumped)
        {
            tracing::warn!(error = %e, "cannot start a policy run");
        }
        let next = if schedule.enabled {
            host.config
                .policies
                .values()
                .filter_map(|p| retention::next_due(p, now))
                .min()
        } else {
            None
        };
        core.set_next_policy_run(next);
        let until_next = next
            .map(|n| n.duration_since(now).unsigned_abs())
            .unwrap_or(MAX_SLEEP);
        let sleep = until_next.min(MAX_SLEEP);
        due_now = next.is_some() && until_next <= MAX_SLEEP;
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_is_a_disagreement_between_clocks() {
        let start = Timestamp::now();
        let anchor = (start, Instant::now());
        assert!(!jumped(anchor, start));
        let ahead = start + jiff::SignedDuration::from_hours(2);
        assert!(jumped(anchor, ahead));
        let behind = start - jiff::SignedDuration::from_mins(10);
        assert!(jumped(anchor, behind));
    }
}
