//! Prometheus metrics (STUB: being written).

use std::sync::Arc;

use tokio::sync::watch;

use crate::core::Core;

/// labd's metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    /// Count one API request.
    pub fn observe_request(&self, _method: &str, _route: &str, _status: u16, _seconds: f64) {}

    /// The exposition text.
    pub fn render(&self) -> String {
        String::new()
    }

    /// Count MQTT messages dropped.
    pub fn mqtt_dropped(&self, _n: u64) {}

    /// Record whether the MQTT broker is connected.
    pub fn set_mqtt_connected(&self, _connected: bool) {}
}

/// Keep the figures fresh until `stop`.
pub async fn run(_core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
