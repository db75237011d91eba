//! MQTT publishing: labd's state as retained documents and its events as a stream, for
//! dashboards and home automation (docs/monitoring.md, "MQTT").
//!
//! Topic tree below `<prefix>` (`[mqtt] topic_prefix`, default `homelab/labd/<hostname>`):
//!
//! ```text
//! <prefix>/status                 retained  "online" / "offline" (last will: "offline")
//! <prefix>/pool/<pool>            retained  the Pool object of GET /v1/pools
//! <prefix>/dataset/<full name>    retained  {name, short_name, used, available, referenced,
//!                                            quota?, mountpoint, managed, policy,
//!                                            last_snapshot?, last_snapshot_at?}
//!                                           ('/' in the name are topic levels:
//!                                            <prefix>/dataset/tank/labd/photos)
//! <prefix>/export/<export name>   retained  the Export object of GET /v1/exports
//! <prefix>/vms/<name>/state       retained  {name, uuid, template, state, pid, last_exit,
//!                                            restarts, message, cpus, memory}
//! <prefix>/events                 live      every Event of GET /v1/events, as JSON
//! homeassistant/sensor/labd_<host>_<pool>_capacity/config
//! homeassistant/binary_sensor/labd_<host>_vm_<vm>_running/config
//!                                 retained  Home Assistant discovery (`home_assistant = true`)
//! ```
//!
//! A dataset, export, pool or VM that goes away has its topic cleared (an empty retained
//! message). Everything is published with QoS 1.
//!
//! A VM's state document follows its events at once (`vmstate`: the VM list read at each
//! refresh, with the `vm.*` events folded in), with no ZFS read in between: a crash, a
//! restart or a stop is on the broker as soon as the supervisor publishes it.
//!
//! The broker never holds labd up: publishing is `try_publish` into a queue of
//! `[mqtt] buffer` messages that the connection task drains; when the queue is full (the
//! broker is away or slow) the message is dropped and counted (`Metrics::mqtt_dropped`). The
//! connection task polls for ever, reconnecting with a backoff of 0.5 s doubling to 10 s; at
//! each connection it publishes `online` and the whole retained state again (a restarted
//! broker may have lost it). State is read again (one `zpool list`, two `zfs get -r`, the
//! export files) at each connection, every `[mqtt] interval` (then every document is sent
//! again), and at most once a second after events that change it (then only what changed).
//! At shutdown it forwards the events up to `daemon.stopped`, publishes `offline` and
//! disconnects (so the broker does not fire the last will), within a few seconds.
//!
//! A failed or broken connection is logged (at `warn` once per reason until the next
//! connection) and counted by reason (`labd_mqtt_connect_failures_total{reason}`, see
//! [`failure_reason`]): a broker whose certificate does not verify shows as
//! `tls_certificate`, and labd keeps serving and keeps retrying.
//!
//! TLS (`mqtts://`, [`tls`]): rustls on the ring provider, with the broker's CA or the
//! system's roots and an optional client certificate; the server name checked is the URL's
//! host.
//!
//! The client crate is `rumqttc-v4-next` (the MQTT 3.1.1 crate of the maintained
//! rumqttc-next fork, whose library is still called `rumqttc`), not rumqttc 0.25.1: with any
//! of 0.25.1's rustls features, even `use-rustls-no-provider` with ring, `cargo tree -i
//! rustls-webpki@0.102.8` shows rumqttc 0.25.1 depending on rustls-webpki 0.102.8 (the
//! versions RUSTSEC-2026-0049/-0098/-0099/-0104 are about) and on the unmaintained
//! rustls-pemfile; its fix has waited upstream since 2026-03. The fork depends on
//! rustls-webpki 0.103.17 and no pemfile, has a `use-rustls-ring` feature (no aws-lc, so the
//! FreeBSD build stays pure Rust + ring), and its 3.1.1 crate keeps the protocol labd spoke
//! before (retained messages, the last will and QoS 1 mean what they meant). Its risk is a
//! single maintainer; the API we use is small (options, `try_publish`, `try_disconnect`,
//! `poll`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, PublishOptions, QoS, TlsConfiguration, Transport,
};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::MqttConfig;
use crate::core::Core;
use crate::core::names::DatasetName;
use crate::host::zfs::PropRow;
use crate::vmstate::{Change, VmTable, VmView};
use crate::wire;

mod tls;

pub use tls::{BrokerTls, TlsFileError};

/// Properties of the dataset documents (one `zfs get -r`).
const DATASET_PROPERTIES: &str =
    "used,available,referenced,quota,mountpoint,labd:managed,labd:policy";
/// Properties giving each dataset's newest snapshot (the second `zfs get -r`).
const SNAPSHOT_PROPERTIES: &str = "createtxg,creation";
/// Home Assistant's discovery prefix.
const DISCOVERY_PREFIX: &str = "homeassistant";
/// Payloads of the status topic.
const ONLINE: &str = "online";
/// The last will, and the last word at a clean stop.
const OFFLINE: &str = "offline";
/// Largest payload published; bigger ones are dropped (and counted), never sent.
const MAX_PAYLOAD: usize = 1 << 20;
/// State is read again at most this often after events.
const DEBOUNCE: Duration = Duration::from_secs(1);
/// Events of one burst (a job's events) are let in before state is read.
const SETTLE: Duration = Duration::from_millis(200);
/// Reconnection backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Time given to `offline` and the disconnect at shutdown (labd waits 5 s at most).
const FINISH: Duration = Duration::from_secs(3);
/// Time allowed, beyond the shutdown grace, for `daemon.stopped` to come.
const STOP_EVENTS: Duration = Duration::from_secs(2);

/// Publish labd's state and events to the broker of `config` until `stop`.
pub async fn run(core: Arc<Core>, config: MqttConfig, mut stop: watch::Receiver<bool>) {
    let topics = Topics::new(&config.topic_prefix);
    let (client, eventloop) = match AsyncClient::builder(options(&config, &topics))
        .capacity(config.buffer.max(1))
        .try_build()
    {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(error = %e, "mqtt: bad client options; not publishing");
            return;
        }
    };
    let (link_tx, mut link_rx) = watch::channel(Link::default());
    let poller = tokio::spawn(drive(eventloop, Arc::clone(&core), link_tx));
    let mut events = core.events.subscribe();
    let discovery = config
        .home_assistant
        .then(|| Discovery::new(&crate::config::hostname()));
    let mut publisher = Publisher::new(client, topics, discovery);
    tracing::info!(
        host = %config.host,
        port = config.port,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(BrokerTls::mutual),
        prefix = %config.topic_prefix,
        "mqtt publishing"
    );

    let period = config.interval.max(Duration::from_secs(1));
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refresh = Debounce::default();
    let mut generation = 0;
    loop {
        let due = refresh.due;
        tokio::select! {
            () = stopped(&mut stop) => break,
            changed = link_rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let link = *link_rx.borrow_and_update();
                if link.connected && link.generation != generation {
                    generation = link.generation;
                    publisher.connected();
                    refresh.ran();
                    if !publisher.refresh(&core, false).await {
                        refresh.request();
                    }
                }
            }
            event = events.recv() => match event {
                Ok(event) => {
                    publisher.event(&event);
                    publisher.vm_event(&event);
                    if changes_state(&event.kind) {
                        refresh.request();
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    core.metrics.mqtt_dropped(n);
                    publisher.vms.forget_events();
                    refresh.request();
                }
                Err(RecvError::Closed) => break,
            },
            _ = ticker.tick() => {
                let connected = link_rx.borrow().connected;
                if connected {
                    refresh.ran();
                    if !publisher.refresh(&core, true).await {
                        refresh.request();
                    }
                }
            }
            () = sleep_until(due), if due.is_some() => {
                refresh.ran();
                // Not connected: the next connection sends everything anyway.
                let connected = link_rx.borrow().connected;
                if connected && !publisher.refresh(&core, false).await {
                    refresh.request();
                }
            }
        }
        core.metrics.mqtt_dropped(publisher.take_dropped());
    }
    forward_last_events(&core, &mut events, &mut publisher).await;
    core.metrics.mqtt_dropped(publisher.take_dropped());
    finish(&publisher, &link_rx, poller).await;
}

/// Returns once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn sleep_until(due: Option<Instant>) {
    if let Some(at) = due {
        tokio::time::sleep_until(at).await;
    }
}

/// Connection options: TLS, credentials, the `offline` last will, and room for big
/// documents.
fn options(config: &MqttConfig, topics: &Topics) -> MqttOptions {
    let mut options = MqttOptions::new(
        config.client_id.as_str(),
        (config.host.as_str(), config.port),
    );
    if let Some(tls) = &config.tls {
        // The server name checked is the URL's host (rumqttc passes it to rustls).
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls.client_config(),
        )));
    }
    options.set_keep_alive(30);
    options.set_max_packet_size(64 << 10, MAX_PAYLOAD + (64 << 10));
    options.set_last_will(LastWill::new(
        topics.status(),
        OFFLINE,
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(user) = &config.username {
        options.set_credentials(user.as_str(), config.password.clone().unwrap_or_default());
    }
    options
}

/// The connection as the connection task last saw it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Link {
    connected: bool,
    /// Number of connections made so far (each one gets the whole state).
    generation: u64,
}

/// Poll the connection for ever: reconnect with backoff, report connections in `link`.
/// Returns once the disconnect requested at shutdown has been sent.
async fn drive(mut eventloop: EventLoop, core: Arc<Core>, link: watch::Sender<Link>) {
    let mut backoff = BACKOFF_MIN;
    // The reason of the last failure logged at `warn` since the last connection.
    let mut reported: Option<&'static str> = None;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                tracing::info!("mqtt broker connected");
                backoff = BACKOFF_MIN;
                reported = None;
                core.metrics.set_mqtt_connected(true);
                link.send_modify(|l| {
                    l.connected = true;
                    l.generation += 1;
                });
            }
            Ok(MqttEvent::Outgoing(Outgoing::Disconnect)) => {
                core.metrics.set_mqtt_connected(false);
                link.send_modify(|l| l.connected = false);
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => {
                // Every client handle is gone: nothing more will be sent.
                core.metrics.set_mqtt_connected(false);
                link.send_modify(|l| l.connected = false);
                return;
            }
            Err(e) => {
                let reason = failure_reason(&e);
                if reported == Some(reason) {
                    tracing::debug!(error = %e, reason, "mqtt broker still unreachable");
                } else {
                    tracing::warn!(error = %e, reason, "mqtt broker unreachable; retrying");
                    reported = Some(reason);
                }
                core.metrics.mqtt_connect_failed(reason);
                core.metrics.set_mqtt_connected(false);
                link.send_if_modified(|l| std::mem::replace(&mut l.connected, false));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Why a connection failed or broke, as a metric label (a closed set):
/// `tls_certificate` (the broker's certificate did not verify, or the broker refused ours),
/// `tls` (another TLS failure), `refused` (the broker's CONNACK said no: credentials, client
/// id), `network` (connect, read or write failed; timeouts), `protocol` (anything else).
fn failure_reason(e: &ConnectionError) -> &'static str {
    if let Some(tls) = rustls_error(e) {
        return match tls {
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::AlertReceived(
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateRequired
                | rustls::AlertDescription::CertificateExpired
                | rustls::AlertDescription::CertificateRevoked
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::UnsupportedCertificate,
            ) => "tls_certificate",
            _ => "tls",
        };
    }
    match e {
        ConnectionError::ConnectionRefused(_) => "refused",
        ConnectionError::Io(_)
        | ConnectionError::NetworkTimeout
        | ConnectionError::FlushTimeout => "network",
        ConnectionError::Tls(_) => "tls",
        _ => "protocol",
    }
}

/// The rustls error behind a connection error, if any: rustls's errors reach rumqttc wrapped
/// in `io::Error`s, whose `source()` skips the wrapped error, so each `io::Error` of the chain
/// is opened by hand.
fn rustls_error(e: &ConnectionError) -> Option<&rustls::Error> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        next = err.source();
    }
    None
}

/// When state is read again after events: at most once per [`DEBOUNCE`].
#[derive(Debug)]
struct Debounce {
    last: Instant,
    due: Option<Instant>,
}

impl Default for Debounce {
    fn default() -> Self {
        let now = Instant::now();
        Self {
            last: now.checked_sub(DEBOUNCE).unwrap_or(now),
            due: None,
        }
    }
}

impl Debounce {
    /// Ask for a refresh (soon, but not sooner than a second after the last one).
    fn request(&mut self) {
        if self.due.is_none() {
            self.due = Some((Instant::now() + SETTLE).max(self.last + DEBOUNCE));
        }
    }

    /// A refresh starts now.
    fn ran(&mut self) {
        self.last = Instant::now();
        self.due = None;
    }
}

/// Whether an event kind means the retained documents may have changed.
fn changes_state(kind: &str) -> bool {
    kind.starts_with("dataset.")
        || kind.starts_with("snapshot.")
        || kind.starts_with("export.")
        || matches!(
            kind,
            "exports.applied" | "policy.run.finished" | "config.reloaded" | "vm.created"
        )
}

/// Topic names below the prefix.
#[derive(Debug, Clone)]
struct Topics {
    prefix: String,
}

impl Topics {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }

    fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }

    fn events(&self) -> String {
        format!("{}/events", self.prefix)
    }

    /// Prefix of the topics of one kind of document (`pool`, `dataset`, `export`).
    fn section(&self, kind: &str) -> String {
        format!("{}/{kind}/", self.prefix)
    }

    fn pool(&self, name: &str) -> String {
        self.section("pool") + name
    }

    /// A dataset's topic: its full name, whose `/` become topic levels.
    fn dataset(&self, name: &str) -> String {
        self.section("dataset") + name
    }

    fn export(&self, name: &str) -> String {
        self.section("export") + name
    }

    /// A VM's state document.
    fn vm(&self, name: &str) -> String {
        format!("{}{name}/state", self.section("vms"))
    }
}

/// Whether `topic` can be published to: not empty, no wildcard, no NUL, within MQTT's limit.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= 65_535 && !topic.contains(['+', '#', '\0'])
}

/// Home Assistant discovery of one capacity sensor per pool and one running sensor per VM.
#[derive(Debug, Clone)]
struct Discovery {
    /// The host's name made safe for discovery ids (`[A-Za-z0-9_-]`).
    host: String,
}

impl Discovery {
    fn new(host: &str) -> Self {
        Self {
            host: node_id(host),
        }
    }

    /// Prefix of every discovery topic of this host.
    fn section(&self) -> String {
        format!("{DISCOVERY_PREFIX}/sensor/labd_{}_", self.host)
    }

    fn unique_id(&self, pool: &str) -> String {
        format!("labd_{}_{}_capacity", self.host, node_id(pool))
    }

    fn topic(&self, pool: &str) -> String {
        format!("{DISCOVERY_PREFIX}/sensor/{}/config", self.unique_id(pool))
    }

    fn config(&self, topics: &Topics, pool: &str) -> Value {
        json!({
            "name": format!("{pool} capacity"),
            "unique_id": self.unique_id(pool),
            "state_topic": topics.pool(pool),
            "value_template": "{{ value_json.capacity_percent }}",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:harddisk",
            "availability_topic": topics.status(),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device(),
        })
    }

    /// The host's device, which every entity belongs to.
    fn device(&self) -> Value {
        json!({
            "identifiers": [format!("labd_{}", self.host)],
            "name": format!("labd {}", self.host),
            "manufacturer": "labd",
            "sw_version": env!("CARGO_PKG_VERSION"),
        })
    }

    /// Prefix of every VM discovery topic of this host.
    fn vm_section(&self) -> String {
        format!("{DISCOVERY_PREFIX}/binary_sensor/labd_{}_vm_", self.host)
    }

    fn vm_unique_id(&self, vm: &str) -> String {
        format!("labd_{}_vm_{}_running", self.host, node_id(vm))
    }

    fn vm_topic(&self, vm: &str) -> String {
        format!(
            "{DISCOVERY_PREFIX}/binary_sensor/{}/config",
            self.vm_unique_id(vm)
        )
    }

    /// A binary sensor that is on while the VM's hypervisor runs (as `labd_vm_up`), with the
    /// state document's fields as attributes.
    fn vm_config(&self, topics: &Topics, vm: &str) -> Value {
        json!({
            "name": format!("{vm} running"),
            "unique_id": self.vm_unique_id(vm),
            "state_topic": topics.vm(vm),
            "value_template":
                "{{ 'ON' if value_json.state in ['running', 'stopping'] else 'OFF' }}",
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "running",
            "json_attributes_topic": topics.vm(vm),
            "icon": "mdi:server",
            "availability_topic": topics.status(),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": self.device(),
        })
    }
}

/// `s` with every character outside `[A-Za-z0-9_-]` replaced by `_`.
fn node_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The retained documents read at one refresh.
#[derive(Debug, Default)]
struct State {
    /// Topic and payload, in publishing order.
    docs: Vec<(String, String)>,
    /// Topic prefixes of sections that could not be read: their old documents stay.
    failed: Vec<String>,
}

impl State {
    fn add(&mut self, topic: String, doc: &Value) {
        self.docs.push((topic, doc.to_string()));
    }

    /// A wire type, serialized as the API does (fields in their declared order).
    fn add_wire(&mut self, topic: String, doc: &impl serde::Serialize) {
        match serde_json::to_string(doc) {
            Ok(payload) => self.docs.push((topic, payload)),
            Err(e) => tracing::warn!(%topic, error = %e, "cannot serialize for MQTT"),
        }
    }

    fn keeps(&self, topic: &str) -> bool {
        self.failed.iter().any(|p| topic.starts_with(p.as_str()))
    }
}

/// Publishes into the client's bounded queue, remembering what the broker should hold.
#[derive(Debug)]
struct Publisher {
    client: AsyncClient,
    topics: Topics,
    discovery: Option<Discovery>,
    /// Retained topics published, with their payload (`None`: queued nowhere, send again).
    published: BTreeMap<String, Option<String>>,
    /// Messages dropped since the last [`Publisher::take_dropped`].
    dropped: AtomicU64,
    /// The VMs: the last list with the VM events since.
    vms: VmTable,
}

impl Publisher {
    fn new(client: AsyncClient, topics: Topics, discovery: Option<Discovery>) -> Self {
        Self {
            client,
            topics,
            discovery,
            published: BTreeMap::new(),
            dropped: AtomicU64::new(0),
            vms: VmTable::default(),
        }
    }

    /// Messages dropped since the last call (for `Metrics::mqtt_dropped`).
    fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Queue one retained message; false (and counted) when it was dropped.
    fn send(&self, topic: &str, payload: &str) -> bool {
        self.queue(topic, payload, true)
    }

    fn queue(&self, topic: &str, payload: &str, retain: bool) -> bool {
        if !valid_topic(topic) {
            tracing::warn!(%topic, "not a valid MQTT topic; not published");
            return false;
        }
        if payload.len() > MAX_PAYLOAD {
            tracing::warn!(%topic, bytes = payload.len(), "MQTT payload too big; dropped");
            self.drop_one();
            return false;
        }
        match self.client.try_publish(
            topic,
            payload,
            PublishOptions::at_least_once().retain(retain),
        ) {
            Ok(()) => true,
            Err(_) => {
                self.drop_one();
                false
            }
        }
    }

    /// A (new) connection: the broker may have lost everything, so everything is sent again,
    /// `online` first.
    fn connected(&mut self) {
        for payload in self.published.values_mut() {
            *payload = None;
        }
        let status = self.topics.status();
        let sent = self.send(&status, ONLINE);
        self.published
            .insert(status, sent.then(|| ONLINE.to_owned()));
    }

    /// Publish one event on the events topic.
    fn event(&self, event: &wire::Event) {
        match serde_json::to_string(event) {
            Ok(payload) => {
                self.queue(&self.topics.events(), &payload, false);
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize an event for MQTT"),
        }
    }

    /// Fold a VM event in and publish what it changed: the VM's state document (and its
    /// discovery config, new VMs), or the clearing of both (a destroyed VM).
    fn vm_event(&mut self, event: &wire::Event) {
        match self.vms.apply(event) {
            Some(Change::Updated(name)) => {
                let Some(vm) = self.vms.get(&name) else {
                    return;
                };
                for (topic, payload) in vm_docs(&self.topics, self.discovery.as_ref(), vm) {
                    let known = self.published.get(&topic).and_then(Option::as_deref);
                    if known == Some(payload.as_str()) || !valid_topic(&topic) {
                        continue;
                    }
                    let sent = self.send(&topic, &payload);
                    self.published.insert(topic, sent.then_some(payload));
                }
            }
            Some(Change::Removed(name)) => {
                let mut topics = vec![self.topics.vm(&name)];
                topics.extend(self.discovery.as_ref().map(|d| d.vm_topic(&name)));
                for topic in topics {
                    // Kept when it cannot be sent: the next refresh clears it.
                    if self.published.contains_key(&topic) && self.send(&topic, "") {
                        self.published.remove(&topic);
                    }
                }
            }
            None => {}
        }
    }

    /// Read the state and publish it: every document with `all`, else only what changed;
    /// clear the topics of what is gone. False when something was dropped.
    async fn refresh(&mut self, core: &Core, all: bool) -> bool {
        let state = read_state(core, &self.topics, self.discovery.as_ref(), &mut self.vms).await;
        self.apply(&state, all)
    }

    fn apply(&mut self, state: &State, all: bool) -> bool {
        let mut complete = true;
        for (topic, payload) in &state.docs {
            let known = self.published.get(topic).and_then(Option::as_deref);
            if (!all && known == Some(payload.as_str())) || !valid_topic(topic) {
                continue;
            }
            let sent = self.send(topic, payload);
            complete &= sent;
            self.published
                .insert(topic.clone(), sent.then(|| payload.clone()));
        }
        let current: BTreeSet<&str> = state.docs.iter().map(|(t, _)| t.as_str()).collect();
        let gone: Vec<String> = self
            .published
            .keys()
            .filter(|t| !current.contains(t.as_str()) && !state.keeps(t))
            .cloned()
            .collect();
        for topic in gone {
            if self.send(&topic, "") {
                self.published.remove(&topic);
            } else {
                complete = false;
            }
        }
        complete
    }
}

/// The retained documents: status, pools (and their discovery), datasets, exports, VMs (and
/// their discovery). A section that cannot be read is logged and left as it was.
async fn read_state(
    core: &Core,
    topics: &Topics,
    discovery: Option<&Discovery>,
    vms: &mut VmTable,
) -> State {
    let mut state = State::default();
    state.docs.push((topics.status(), ONLINE.to_owned()));
    match core.list_pools().await {
        Ok(pools) => add_pools(&mut state, topics, discovery, &pools),
        Err(e) => {
            tracing::warn!(error = %e, "mqtt: cannot list pools");
            state.failed.push(topics.section("pool"));
            state.failed.extend(discovery.map(Discovery::section));
        }
    }
    match dataset_docs(core).await {
        Ok(docs) => {
            for doc in docs {
                let topic = doc["name"].as_str().map(|n| topics.dataset(n));
                state.docs.extend(topic.map(|t| (t, doc.to_string())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "mqtt: cannot read datasets");
            state.failed.push(topics.section("dataset"));
        }
    }
    match core.list_exports().await {
        Ok(exports) => {
            for export in &exports {
                state.add_wire(topics.export(&export.name), export);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "mqtt: cannot list exports");
            state.failed.push(topics.section("export"));
        }
    }
    // Events are taken in between refreshes only, so nothing is folded during this read.
    vms.begin_resync();
    match core.list_vms().await {
        Ok(list) => {
            vms.finish_resync(Some(list));
            for vm in vms.iter() {
                state.docs.extend(vm_docs(topics, discovery, vm));
            }
        }
        Err(e) => {
            vms.finish_resync(None);
            tracing::warn!(error = %e, "mqtt: cannot list VMs");
            state.failed.push(topics.section("vms"));
            state.failed.extend(discovery.map(Discovery::vm_section));
        }
    }
    state
}

/// A VM's retained documents: its state, and its discovery config.
fn vm_docs(topics: &Topics, discovery: Option<&Discovery>, vm: &VmView) -> Vec<(String, String)> {
    let mut docs = vec![(topics.vm(&vm.name), vm.document().to_string())];
    if let Some(d) = discovery {
        docs.push((
            d.vm_topic(&vm.name),
            d.vm_config(topics, &vm.name).to_string(),
        ));
    }
    docs
}

fn add_pools(
    state: &mut State,
    topics: &Topics,
    discovery: Option<&Discovery>,
    pools: &[wire::Pool],
) {
    for pool in pools {
        state.add_wire(topics.pool(&pool.name), pool);
        if let Some(d) = discovery {
            state.add(d.topic(&pool.name), &d.config(topics, &pool.name));
        }
    }
}

/// The dataset documents, from two `zfs get -r` (properties, and snapshots' txg).
async fn dataset_docs(core: &Core) -> Result<Vec<Value>, crate::host::zfs::ZfsError> {
    let host = core.host();
    let root = &host.config.zfs.root;
    let props = host.zfs.get_props(root, DATASET_PROPERTIES, true).await?;
    let snaps = host
        .zfs
        .get_with_snapshots(root, SNAPSHOT_PROPERTIES, true)
        .await?;
    Ok(dataset_documents(root, &props, &snaps))
}

/// One dataset as published.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct DatasetDoc {
    name: String,
    used: u64,
    available: u64,
    referenced: u64,
    quota: Option<u64>,
    mountpoint: String,
    managed: bool,
    policy: Option<String>,
}

/// A dataset's newest snapshot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Newest {
    name: String,
    createtxg: u64,
    creation: u64,
}

fn number(value: &str) -> u64 {
    value.parse().unwrap_or(0)
}

/// Build the documents from the rows of `DATASET_PROPERTIES` (filesystems) and of
/// `SNAPSHOT_PROPERTIES` (snapshots; filesystem rows are ignored).
fn dataset_documents(root: &DatasetName, props: &[PropRow], snaps: &[PropRow]) -> Vec<Value> {
    let mut datasets: Vec<DatasetDoc> = Vec::new();
    for row in props.iter().filter(|r| !r.name.contains('@')) {
        if datasets.last().is_none_or(|d| d.name != row.name) {
            datasets.push(DatasetDoc {
                name: row.name.clone(),
                ..DatasetDoc::default()
            });
        }
        let Some(d) = datasets.last_mut() else {
            continue;
        };
        match row.property.as_str() {
            "used" => d.used = number(&row.value),
            "available" => d.available = number(&row.value),
            "referenced" => d.referenced = number(&row.value),
            "quota" => d.quota = Some(number(&row.value)).filter(|q| *q != 0 && *q != u64::MAX),
            "mountpoint" => d.mountpoint.clone_from(&row.value),
            "labd:managed" => d.managed = row.value == "on" && row.source == "local",
            "labd:policy" => {
                d.policy = Some(row.value.clone()).filter(|p| p != "-" && p != "none");
            }
            _ => {}
        }
    }
    let newest = newest_snapshots(snaps);
    datasets
        .iter()
        .map(|d| dataset_json(root, d, newest.get(&d.name)))
        .collect()
}

/// Each dataset's snapshot with the highest `createtxg`.
fn newest_snapshots(rows: &[PropRow]) -> BTreeMap<String, Newest> {
    let mut all: BTreeMap<&str, Newest> = BTreeMap::new();
    for row in rows {
        if !row.name.contains('@') {
            continue;
        }
        let entry = all.entry(row.name.as_str()).or_insert_with(|| Newest {
            name: row.name.clone(),
            ..Newest::default()
        });
        match row.property.as_str() {
            "createtxg" => entry.createtxg = number(&row.value),
            "creation" => entry.creation = number(&row.value),
            _ => {}
        }
    }
    let mut out: BTreeMap<String, Newest> = BTreeMap::new();
    for snap in all.into_values() {
        let Some((dataset, _)) = snap.name.split_once('@') else {
            continue;
        };
        if out
            .get(dataset)
            .is_none_or(|old| old.createtxg < snap.createtxg)
        {
            out.insert(dataset.to_owned(), snap);
        }
    }
    out
}

fn dataset_json(root: &DatasetName, d: &DatasetDoc, newest: Option<&Newest>) -> Value {
    let short = DatasetName::parse(&d.name)
        .ok()
        .and_then(|n| n.relative_to(root).map(str::to_owned))
        .unwrap_or_default();
    let mut doc = json!({
        "name": d.name,
        "short_name": short,
        "used": d.used,
        "available": d.available,
        "referenced": d.referenced,
        "mountpoint": d.mountpoint,
        "managed": d.managed,
        "policy": d.policy,
    });
    if let Some(q) = d.quota {
        doc["quota"] = json!(q);
    }
    if let Some(n) = newest {
        doc["last_snapshot"] = json!(n.name);
        let at = i64::try_from(n.creation)
            .ok()
            .and_then(|s| jiff::Timestamp::from_second(s).ok());
        if let Some(at) = at {
            doc["last_snapshot_at"] = json!(at.to_string());
        }
    }
    doc
}

/// After `stop`: keep forwarding events until labd's last one (`daemon.stopped`), which comes
/// once jobs are finished or interrupted (bounded by the shutdown grace).
async fn forward_last_events(
    core: &Core,
    events: &mut tokio::sync::broadcast::Receiver<wire::Event>,
    publisher: &mut Publisher,
) {
    let deadline = Instant::now() + core.host().config.daemon.shutdown_grace + STOP_EVENTS;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(event)) => {
                publisher.event(&event);
                // VMs stopped at shutdown.
                publisher.vm_event(&event);
                if event.kind == "daemon.stopped" {
                    return;
                }
            }
            Ok(Err(RecvError::Lagged(n))) => core.metrics.mqtt_dropped(n),
            Ok(Err(RecvError::Closed)) | Err(_) => return,
        }
    }
}

/// Publish `offline` and disconnect (when connected), then end the connection task.
async fn finish(
    publisher: &Publisher,
    link: &watch::Receiver<Link>,
    poller: tokio::task::JoinHandle<()>,
) {
    let deadline = Instant::now() + FINISH;
    let connected = link.borrow().connected;
    if connected {
        let status = publisher.topics.status();
        let client = &publisher.client;
        let offline = retry_until(deadline, || {
            client
                .try_publish(
                    status.as_str(),
                    OFFLINE,
                    PublishOptions::at_least_once().retained(),
                )
                .is_ok()
        })
        .await;
        let disconnect = offline && retry_until(deadline, || client.try_disconnect().is_ok()).await;
        if disconnect {
            let abort = poller.abort_handle();
            if tokio::time::timeout_at(deadline, poller).await.is_err() {
                abort.abort();
            }
            tracing::info!("mqtt: offline published, disconnected");
            return;
        }
        tracing::warn!("mqtt: could not queue offline in time; the broker's last will says it");
    }
    poller.abort();
}

/// Call `attempt` every 20 ms until it succeeds (true) or `deadline` passes (false).
async fn retry_until(deadline: Instant, mut attempt: impl FnMut() -> bool) -> bool {
    loop {
        if attempt() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, property: &str, value: &str, source: &str) -> PropRow {
        PropRow::new(name, property, value, source)
    }

    fn root() -> DatasetName {
        DatasetName::parse("tank/labd").expect("name")
    }

    #[test]
    fn topics_keep_dataset_levels() {
        let t = Topics::new("homelab/labd/nas");
        assert_eq!(t.status(), "homelab/labd/nas/status");
        assert_eq!(t.events(), "homelab/labd/nas/events");
        assert_eq!(t.pool("tank"), "homelab/labd/nas/pool/tank");
        assert_eq!(
            t.dataset("tank/labd/photos"),
            "homelab/labd/nas/dataset/tank/labd/photos"
        );
        assert_eq!(
            t.export("photos/2024"),
            "homelab/labd/nas/export/photos/2024"
        );
        assert!(
            t.dataset("tank/labd/photos")
                .starts_with(&t.section("dataset"))
        );
    }

    #[test]
    fn invalid_topics_are_refused() {
        assert!(valid_topic("a/b c/d"));
        assert!(!valid_topic("a/+/b"));
        assert!(!valid_topic("a/#"));
        assert!(!valid_topic(""));
    }

    #[test]
    fn state_changing_kinds() {
        for kind in [
            "dataset.created",
            "dataset.destroyed",
            "snapshot.created",
            "snapshot.destroyed",
            "export.changed",
            "export.removed",
            "exports.applied",
            "policy.run.finished",
            "config.reloaded",
            "vm.created",
        ] {
            assert!(changes_state(kind), "{kind}");
        }
        for kind in [
            "job.created",
            "job.finished",
            "config.rejected",
            "daemon.stopped",
        ] {
            assert!(!changes_state(kind), "{kind}");
        }
    }

    #[test]
    fn dataset_documents_carry_sizes_policy_and_newest_snapshot() {
        let props = [
            row("tank/labd", "used", "3000", "-"),
            row("tank/labd", "available", "9000", "-"),
            row("tank/labd", "referenced", "100", "-"),
            row("tank/labd", "quota", "0", "default"),
            row("tank/labd", "mountpoint", "/tank/labd", "default"),
            row("tank/labd", "labd:managed", "-", "-"),
            row("tank/labd", "labd:policy", "-", "-"),
            row("tank/labd/photos", "used", "2000", "-"),
            row("tank/labd/photos", "available", "8000", "-"),
            row("tank/labd/photos", "referenced", "1500", "-"),
            row("tank/labd/photos", "quota", "10737418240", "local"),
            row(
                "tank/labd/photos",
                "mountpoint",
                "/tank/labd/photos",
                "default",
            ),
            row("tank/labd/photos", "labd:managed", "on", "local"),
            row("tank/labd/photos", "labd:policy", "production", "local"),
            row(
                "tank/labd/photos/x",
                "labd:managed",
                "on",
                "inherited from tank/labd/photos",
            ),
            row("tank/labd/photos/x", "labd:policy", "none", "local"),
        ];
        let snaps = [
            row("tank/labd/photos", "createtxg", "5", "-"),
            row("tank/labd/photos@b", "createtxg", "20", "-"),
            row("tank/labd/photos@b", "creation", "1764100800", "-"),
            row("tank/labd/photos@a", "createtxg", "10", "-"),
            row("tank/labd/photos@a", "creation", "1764097200", "-"),
        ];
        let docs = dataset_documents(&root(), &props, &snaps);
        assert_eq!(docs.len(), 3);
        assert_eq!(
            docs[0],
            json!({"name": "tank/labd", "short_name": "", "used": 3000, "available": 9000,
                   "referenced": 100, "mountpoint": "/tank/labd", "managed": false,
                   "policy": null})
        );
        assert_eq!(
            docs[1],
            json!({"name": "tank/labd/photos", "short_name": "photos", "used": 2000,
                   "available": 8000, "referenced": 1500, "quota": 10_737_418_240_u64,
                   "mountpoint": "/tank/labd/photos", "managed": true,
                   "policy": "production", "last_snapshot": "tank/labd/photos@b",
                   "last_snapshot_at": "2025-11-25T20:00:00Z"})
        );
        // Inherited labd:managed does not count; policy `none` is no policy.
        assert_eq!(docs[2]["managed"], false);
        assert_eq!(docs[2]["policy"], Value::Null);
        assert_eq!(docs[2]["short_name"], "photos/x");
    }

    #[test]
    fn discovery_config_points_at_the_pool_topic() {
        let t = Topics::new("homelab/labd/nas.lan");
        let d = Discovery::new("nas.lan");
        assert_eq!(
            d.topic("tank"),
            "homeassistant/sensor/labd_nas_lan_tank_capacity/config"
        );
        assert!(d.topic("tank").starts_with(&d.section()));
        let c = d.config(&t, "tank");
        assert_eq!(c["state_topic"], "homelab/labd/nas.lan/pool/tank");
        assert_eq!(c["availability_topic"], "homelab/labd/nas.lan/status");
        assert_eq!(c["value_template"], "{{ value_json.capacity_percent }}");
        assert_eq!(c["unit_of_measurement"], "%");
        assert_eq!(c["unique_id"], "labd_nas_lan_tank_capacity");
        assert_eq!(c["device"]["identifiers"][0], "labd_nas_lan");
    }

    #[test]
    fn node_ids_are_safe() {
        assert_eq!(node_id("my-host.example:1"), "my-host_example_1");
    }

    #[test]
    fn debounce_waits_a_second_after_the_last_refresh() {
        let mut d = Debounce::default();
        d.ran();
        let ran = d.last;
        d.request();
        let first = d.due.expect("due");
        assert!(first >= ran + DEBOUNCE);
        d.request();
        assert_eq!(d.due, Some(first), "a second request does not move it");
    }

    /// A publisher whose queue holds `cap` messages (nothing drains it).
    fn publisher(cap: usize) -> (Publisher, EventLoop) {
        let (client, eventloop) = AsyncClient::builder(MqttOptions::new("t", ("127.0.0.1", 1)))
            .capacity(cap)
            .build();
        (Publisher::new(client, Topics::new("p"), None), eventloop)
    }

    fn state(docs: &[(&str, &str)]) -> State {
        State {
            docs: docs
                .iter()
                .map(|(t, p)| ((*t).to_owned(), (*p).to_owned()))
                .collect(),
            failed: Vec::new(),
        }
    }

    #[test]
    fn apply_sends_changes_clears_the_gone_and_counts_drops() {
        let (mut p, _el) = publisher(100);
        assert!(p.apply(
            &state(&[
                ("p/status", "online"),
                ("p/dataset/a", "1"),
                ("p/dataset/b", "2")
            ]),
            false
        ));
        assert_eq!(p.published.len(), 3);
        // b changed, a gone, c new: only those are sent (a as an empty payload).
        assert!(p.apply(
            &state(&[
                ("p/status", "online"),
                ("p/dataset/b", "3"),
                ("p/dataset/c", "4")
            ]),
            false
        ));
        assert_eq!(
            p.published.keys().cloned().collect::<Vec<_>>(),
            ["p/dataset/b", "p/dataset/c", "p/status"]
        );
        assert_eq!(p.take_dropped(), 0);
        // After a reconnection everything is sent again, but status only once.
        p.connected();
        assert_eq!(p.published["p/status"].as_deref(), Some("online"));
        assert_eq!(p.published["p/dataset/b"], None);
        assert!(p.apply(
            &state(&[("p/status", "online"), ("p/dataset/b", "3")]),
            false
        ));
        assert_eq!(p.published.len(), 2, "c is cleared");
        assert!(p.published.values().all(Option::is_some));
        // A queue of 4 holding 3 takes one more of a forced refresh of 3: 2 are dropped.
        let (mut small, _el) = publisher(4);
        assert!(small.apply(&state(&[("p/x", "1"), ("p/y", "1"), ("p/z", "1")]), false));
        assert!(!small.apply(&state(&[("p/x", "1"), ("p/y", "1"), ("p/z", "1")]), true));
        assert_eq!(small.take_dropped(), 2);
        assert_eq!(small.take_dropped(), 0);
        // What was dropped is sent again at the next (unforced) refresh.
        assert_eq!(small.published.values().filter(|v| v.is_none()).count(), 2);
    }

    #[test]
    fn a_section_that_failed_keeps_its_documents() {
        let (mut p, _el) = publisher(100);
        assert!(p.apply(&state(&[("p/dataset/a", "1"), ("p/export/e", "2")]), false));
        let mut failed = state(&[("p/export/e", "2")]);
        failed.failed.push("p/dataset/".into());
        assert!(p.apply(&failed, false));
        assert!(p.published.contains_key("p/dataset/a"));
    }

    fn vm_event(kind: &str, vm: &str, data: Value) -> wire::Event {
        wire::Event {
            seq: 1,
            time: jiff::Timestamp::UNIX_EPOCH,
            kind: kind.to_owned(),
            resource: vm.to_owned(),
            actor: None,
            data,
        }
    }

    #[test]
    fn vm_topics_and_discovery() {
        let t = Topics::new("homelab/labd/nas");
        assert_eq!(t.vm("web"), "homelab/labd/nas/vms/web/state");
        assert!(t.vm("web").starts_with(&t.section("vms")));
        let d = Discovery::new("nas");
        assert_eq!(
            d.vm_topic("web-1"),
            "homeassistant/binary_sensor/labd_nas_vm_web-1_running/config"
        );
        assert!(d.vm_topic("web-1").starts_with(&d.vm_section()));
        let c = d.vm_config(&t, "web-1");
        assert_eq!(c["state_topic"], "homelab/labd/nas/vms/web-1/state");
        assert_eq!(c["json_attributes_topic"], c["state_topic"]);
        assert_eq!(c["device_class"], "running");
        assert_eq!(c["unique_id"], "labd_nas_vm_web-1_running");
        assert_eq!(c["device"], d.config(&t, "tank")["device"]);
        assert_eq!(c["availability_topic"], "homelab/labd/nas/status");
    }

    #[test]
    fn vm_events_publish_the_state_and_destroy_clears_it() {
        let (client, _el) = AsyncClient::builder(MqttOptions::new("t", ("127.0.0.1", 1)))
            .capacity(100)
            .build();
        let mut p = Publisher::new(client, Topics::new("p"), Some(Discovery::new("h")));
        let config = "homeassistant/binary_sensor/labd_h_vm_web_running/config";
        p.vm_event(&vm_event(
            "vm.created",
            "web",
            json!({"uuid": "u1", "template": "tiny"}),
        ));
        let doc = |p: &Publisher| {
            p.published
                .get("p/vms/web/state")
                .cloned()
                .flatten()
                .map(|d| json(&d))
        };
        assert_eq!(doc(&p).map(|d| d["state"].clone()), Some(json!("stopped")));
        assert!(p.published.contains_key(config));
        p.vm_event(&vm_event("vm.started", "web", json!({"pid": 42})));
        p.vm_event(&vm_event("vm.exited", "web", json!({"meaning": "fault"})));
        p.vm_event(&vm_event(
            "vm.restarting",
            "web",
            json!({"meaning": "fault", "delay_ms": 200, "attempt": 1}),
        ));
        p.vm_event(&vm_event(
            "vm.started",
            "web",
            json!({"pid": 43, "restart": 1}),
        ));
        let d = doc(&p).expect("state document");
        assert_eq!(
            (
                d["state"].clone(),
                d["pid"].clone(),
                d["restarts"].clone(),
                d["last_exit"].clone()
            ),
            (json!("running"), json!(43), json!(1), json!("fault"))
        );
        // Events that are not about VMs change nothing.
        let before = p.published.clone();
        p.vm_event(&vm_event("dataset.created", "tank/x", json!({})));
        assert_eq!(p.published, before);
        p.vm_event(&vm_event("vm.destroyed", "web", json!({})));
        assert!(!p.published.contains_key("p/vms/web/state"));
        assert!(!p.published.contains_key(config));
        assert_eq!(p.take_dropped(), 0);
    }

    fn json(payload: &str) -> Value {
        serde_json::from_str(payload).expect("JSON")
    }

    #[test]
    fn pool_documents_are_the_wire_pool() {
        let t = Topics::new("p");
        let mut state = State::default();
        let pool = wire::Pool {
            name: "tank".into(),
            health: "ONLINE".into(),
            size: 100,
            allocated: 20,
            free: 80,
            capacity_percent: 20,
        };
        add_pools(&mut state, &t, Some(&Discovery::new("h")), &[pool]);
        assert_eq!(state.docs.len(), 2);
        assert_eq!(state.docs[0].0, "p/pool/tank");
        assert_eq!(
            state.docs[0].1,
            r#"{"name":"tank","health":"ONLINE","size":100,"allocated":20,"free":80,"capacity_percent":20}"#
        );
        assert_eq!(
            state.docs[1].0,
            "homeassistant/sensor/labd_h_tank_capacity/config"
        );
    }
}
