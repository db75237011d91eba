//! The event bus: every state change labd makes is published here once, and fanned out to
//! `GET /v1/events` subscribers (and, later, MQTT and metrics).
//!
//! A subscriber that falls more than [`CAPACITY`] events behind is told it lagged and is
//! disconnected rather than silently skipping events: it must re-read state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use tokio::sync::broadcast;

use crate::wire::{Actor, Event};

/// Events buffered per subscriber before it counts as lagging.
pub const CAPACITY: usize = 1024;

/// Publishes events to every subscriber.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self {
            tx,
            seq: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Publish one event; it is logged even when nobody listens.
    pub fn publish(
        &self,
        kind: &str,
        resource: &str,
        actor: Option<Actor>,
        data: serde_json::Value,
    ) {
        let event = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            time: Timestamp::now(),
            kind: kind.to_owned(),
            resource: resource.to_owned(),
            actor,
            data,
        };
        tracing::info!(
            target: "labd::events",
            kind = %event.kind,
            resource = %event.resource,
            actor = event.actor.map(|a| a.to_string()),
            "event"
        );
        // Err only means there is no subscriber right now.
        let _ = self.tx.send(event);
    }

    /// A new subscriber, seeing events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// A subscriber's choice of events (`GET /v1/events?kind=…&resource=…`).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    kinds: Vec<String>,
    resources: Vec<String>,
}

impl Filter {
    /// `kinds`: comma-separated kinds, an entry ending in `.` being a prefix; `resources`:
    /// names (e.g. as typed and as resolved under the root), each matching itself and what
    /// lies below it; empty matches every resource.
    pub fn new(kinds: Option<&str>, resources: Vec<String>) -> Self {
        Self {
            kinds: kinds
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned)
                .collect(),
            resources,
        }
    }

    /// Whether `event` passes. `daemon.stopped` and `lagged` always do: they end the stream.
    pub fn matches(&self, event: &Event) -> bool {
        if matches!(event.kind.as_str(), "daemon.stopped" | "lagged") {
            return true;
        }
        let kind_ok = self.kinds.is_empty()
            || self.kinds.iter().any(|k| {
                if k.ends_with('.') {
                    event.kind.starts_with(k.as_str())
                } else {
                    event.kind == *k
                }
            });
        let resource_ok = self.resources.is_empty()
            || self.resources.iter().any(|r| {
                event.resource == *r
                    || event
                        .resource
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('/') || rest.starts_with('@'))
            });
        kind_ok && resource_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, resource: &str) -> Event {
        Event {
            seq: 1,
            time: Timestamp::now(),
            kind: kind.to_owned(),
            resource: resource.to_owned(),
            actor: None,
            data: serde_json::Value::Null,
        }
    }

    #[test]
    fn filters_by_kind_prefix_and_resource_subtree() {
        let f = Filter::new(
            Some("job.,snapshot.created"),
            vec!["tank/labd/photos".into()],
        );
        assert!(f.matches(&event("job.finished", "tank/labd/photos")));
        assert!(f.matches(&event("snapshot.created", "tank/labd/photos@s1")));
        assert!(f.matches(&event("snapshot.created", "tank/labd/photos/2024@s1")));
        assert!(!f.matches(&event("snapshot.destroyed", "tank/labd/photos@s1")));
        assert!(!f.matches(&event("job.finished", "tank/labd/photos-old")));
        assert!(f.matches(&event("daemon.stopped", "labd")));
        assert!(Filter::default().matches(&event("anything", "x")));
        let either = Filter::new(None, vec!["photos".into(), "tank/labd/photos".into()]);
        assert!(either.matches(&event("export.changed", "photos")));
        assert!(either.matches(&event("dataset.created", "tank/labd/photos")));
    }

    #[tokio::test]
    async fn subscribers_see_events_in_order() {
        let bus = EventBus::new();
        let mut rx = bus.subscribe();
        bus.publish("a", "x", None, serde_json::Value::Null);
        bus.publish("b", "x", None, serde_json::Value::Null);
        let first = rx.recv().await.expect("first");
        let second = rx.recv().await.expect("second");
        assert_eq!((first.kind.as_str(), second.kind.as_str()), ("a", "b"));
        assert_eq!(second.seq, first.seq + 1);
    }
}
