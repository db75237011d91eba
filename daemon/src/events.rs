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
            uid = event.actor.map(|a| a.uid),
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

#[cfg(test)]
mod tests {
    use super::*;

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
