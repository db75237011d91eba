//! MQTT publishing (STUB: being written).

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::MqttConfig;
use crate::core::Core;

/// Publish until `stop`.
pub async fn run(_core: Arc<Core>, _config: MqttConfig, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
