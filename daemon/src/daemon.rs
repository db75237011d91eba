//! labd's life: start, serve, reload on SIGHUP, stop on SIGTERM.
//!
//! Start-up fails with a message naming the key or the missing piece (bad config, missing
//! root dataset, socket in use). Once serving, labd re-adopts the VMs that outlived its last
//! run and starts the `autostart` ones. On SIGHUP the configuration is read and its drivers
//! probed again; a bad one is rejected with the reason and the old one stays in force. On
//! SIGTERM (or SIGINT: the host shuts down, or `service labd stop`) labd stops accepting
//! connections, stops its VMs in reverse boot order within `[vms] shutdown_budget`, gives
//! running jobs the configured grace to finish, fails the rest, and exits 0. On SIGUSR2
//! (`service labd respawn`, after an upgrade) it does the same but leaves the VMs running,
//! for the next labd to re-adopt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::api;
use crate::config::Config;
use crate::core::{Core, Host};

/// Run labd with the configuration at `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&config_path)?;
    let socket = config.api.socket.clone();
    let host = Host::build(config.clone()).await?;
    let core = Arc::new(Core::new(host));
    let listener = api::bind(&config.api)?;
    let tcp = listener.tcp.as_ref().and_then(|t| t.local_addr().ok());
    tracing::info!(
        socket = %socket.display(),
        tcp = ?tcp,
        root = %config.zfs.root,
        version = env!("CARGO_PKG_VERSION"),
        "labd serving"
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(api::serve(listener, Arc::clone(&core), stop_rx.clone()));
    let scheduler = tokio::spawn(crate::core::schedule::run(
        Arc::clone(&core),
        stop_rx.clone(),
    ));
    let metrics = tokio::spawn(crate::metrics::run(Arc::clone(&core), stop_rx.clone()));
    if let Some(addr) = config.metrics.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("metrics.listen: cannot listen on {addr}"))?;
        tokio::spawn(api::serve_metrics(
            listener,
            Arc::clone(&core),
            stop_rx.clone(),
        ));
    }
    let mqtt = config
        .mqtt
        .clone()
        .map(|m| tokio::spawn(crate::mqtt::run(Arc::clone(&core), m, stop_rx)));
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut usr2 = signal(SignalKind::user_defined2()).context("cannot handle SIGUSR2")?;
    let boot = tokio::spawn({
        let core = Arc::clone(&core);
        async move { core.start_vms_at_boot().await }
    });
    let keep_vms = loop {
        tokio::select! {
            _ = term.recv() => break false,
            _ = int.recv() => break false,
            _ = usr2.recv() => break true,
            _ = hup.recv() => reload(&core, &config_path).await,
        }
    };
    boot.abort();

    let grace = core.host().config.daemon.shutdown_grace;
    tracing::info!(
        grace_ms = grace.as_millis(),
        "stopping: no new connections, finishing jobs"
    );
    stop_tx.send_replace(true);
    if keep_vms {
        tracing::info!("leaving the VMs running for the next labd");
    } else {
        // VMs get their ACPI button and their stop_timeout, within the budget, then are killed.
        core.vms
            .stop_all(core.host().config.vms.shutdown_budget)
            .await;
    }
    let _ = scheduler.await;
    let _ = metrics.await;
    core.jobs.shutdown(grace).await;
    core.events
        .publish("daemon.stopped", "labd", None, json!({}));
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!("open connections did not close in 5s"),
    }
    if let Some(mqtt) = mqtt {
        // It publishes `offline` and disconnects; bounded so a dead broker cannot hold us.
        let _ = tokio::time::timeout(Duration::from_secs(5), mqtt).await;
    }
    api::unlink(&socket);
    tracing::info!("labd stopped");
    Ok(())
}

async fn reload(core: &Core, path: &Path) {
    let result = async {
        let config = Config::load(path)?;
        let host = Host::build(config).await?;
        anyhow::Ok(host)
    }
    .await;
    match result {
        Ok(host) => {
            let old = core.host();
            if old.config.api != host.config.api {
                tracing::warn!("[api] changes take effect at the next restart");
            }
            let root = host.config.zfs.root.to_string();
            core.replace_host(host);
            tracing::info!(%root, "configuration reloaded");
            core.events
                .publish("config.reloaded", "labd", None, json!({"root": root}));
        }
        Err(e) => {
            let reason = format!("{e:#}");
            tracing::error!(%reason, "configuration rejected; the old one stays in force");
            core.events
                .publish("config.rejected", "labd", None, json!({"reason": reason}));
        }
    }
}
