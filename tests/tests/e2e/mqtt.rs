//! MQTT publishing against a real mosquitto on a free loopback port, observed with
//! `mosquitto_sub`: retained state, events, the last will, a broker that goes away and comes
//! back, a clean stop, and the same over mutual TLS (a throwaway PKI made with rcgen).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, run};
use nix::sys::signal::Signal;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A mosquitto without persistence on a loopback port; stopped on drop.
#[derive(Debug)]
pub(super) struct Broker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// `mosquitto_sub`'s TLS arguments, for a TLS listener.
    tls_args: Vec<String>,
}

impl Broker {
    pub(super) fn start() -> Self {
        Self::start_with(|_| "allow_anonymous true\n".to_owned(), Vec::new())
    }

    /// A broker whose only listener is TLS with client certificates (`pki`'s server
    /// certificate, `pki`'s CA for clients), the client's CN taken as its user name;
    /// `mosquitto_sub` connects with the `sub` client certificate.
    fn start_tls(pki: &Pki) -> Self {
        let conf = |_: &std::path::Path| {
            format!(
                "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n\
                 use_identity_as_username true\nallow_anonymous false\n",
                pki.ca.display(),
                pki.server_cert.display(),
                pki.server_key.display()
            )
        };
        let tls_args = [
            "--cafile",
            &pki.ca.display().to_string(),
            "--cert",
            &pki.sub_cert.display().to_string(),
            "--key",
            &pki.sub_key.display().to_string(),
        ]
        .map(String::from)
        .to_vec();
        Self::start_with(conf, tls_args)
    }

    /// A broker with `listener` lines of its own (`extra(dir)` after the listener line).
    fn start_with(extra: impl FnOnce(&std::path::Path) -> String, tls_args: Vec<String>) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("labd-mqtt-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("broker dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        std::fs::write(
            dir.join("mosquitto.conf"),
            format!(
                "listener {port} 127.0.0.1\n{}persistence false\n",
                extra(&dir)
            ),
        )
        .expect("broker config");
        let mut broker = Self {
            child: None,
            port,
            dir,
            tls_args,
        };
        broker.spawn();
        broker
    }

    /// Start mosquitto (again) on the same port.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mosquitto.log"))
            .expect("broker log");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto (install mosquitto mosquitto-clients)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default()
    }

    /// The `[mqtt]` table of a labd publishing under `prefix` to this broker.
    pub(super) fn labd_table(&self, prefix: &str) -> String {
        format!(
            "[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\ntopic_prefix = \"{prefix}\"\n\
             client_id = \"{}\"\ninterval = \"2s\"\nhome_assistant = true\n",
            self.port,
            prefix.replace('/', "-")
        )
    }

    pub(super) fn sub_args(&self) -> Vec<String> {
        let mut args = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        args.extend(self.tls_args.iter().cloned());
        args
    }

    /// The retained payload of `topic`, if any (waiting up to `secs` for it).
    pub(super) fn retained(&self, topic: &str, secs: u32) -> Option<String> {
        let mut args = self.sub_args();
        args.extend(
            [
                "--retained-only",
                "-C",
                "1",
                "-W",
                &secs.to_string(),
                "-t",
                topic,
            ]
            .map(String::from),
        );
        let out = bounded_sub(&args, secs);
        let payload = out.stdout.trim_end_matches('\n');
        (!payload.is_empty()).then(|| payload.to_owned())
    }

    /// Wait until the retained payload of `topic` satisfies `pred`; the last one seen.
    pub(super) fn wait_retained(
        &self,
        topic: &str,
        timeout: Duration,
        pred: impl Fn(Option<&str>) -> bool,
    ) -> Result<Option<String>, Option<String>> {
        let deadline = Instant::now() + timeout;
        loop {
            let payload = self.retained(topic, 1);
            if pred(payload.as_deref()) {
                return Ok(payload);
            }
            if Instant::now() >= deadline {
                return Err(payload);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Follow `<prefix>/#` in the background, once the subscription is in place.
    pub(super) fn follow(&self, prefix: &str) -> Follow {
        let mut args = self.sub_args();
        args.extend(["-v", "-t", &format!("{prefix}/#")].map(String::from));
        let mut child = Command::new("mosquitto_sub")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let (topic, payload) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                if tx.send((topic.to_owned(), payload.to_owned())).is_err() {
                    break;
                }
            }
        });
        let follow = Follow { child, rx };
        // The retained status arrives first: the subscription is then active.
        let status = format!("{prefix}/status");
        follow
            .wait_for(Duration::from_secs(10), |t, _| t == status)
            .expect("retained status through the follower");
        follow
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Messages seen by a background `mosquitto_sub -v`.
#[derive(Debug)]
pub(super) struct Follow {
    child: Child,
    rx: std::sync::mpsc::Receiver<(String, String)>,
}

impl Follow {
    pub(super) fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&str, &str) -> bool,
    ) -> Option<(String, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok((t, p)) if pred(&t, &p) => return Some((t, p)),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A broker and a lab publishing to it under a prefix of its own.
fn mqtt_lab() -> (Broker, Lab, String) {
    mqtt_lab_with("")
}

/// Like [`mqtt_lab`], with more configuration tables.
pub(super) fn mqtt_lab_with(tables: &str) -> (Broker, Lab, String) {
    let broker = Broker::start();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let prefix = format!("test/labd/{}_{n}", std::process::id());
    let lab = Lab::start_with(LabOptions {
        tables: format!("{}\n{tables}", broker.labd_table(&prefix)),
        ..LabOptions::default()
    });
    (broker, lab, prefix)
}

pub(super) fn json(payload: &str) -> serde_json::Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("not JSON ({e}): {payload}"))
}

#[track_caller]
pub(super) fn wait_status(
    broker: &Broker,
    lab: &Lab,
    prefix: &str,
    status: &str,
    timeout: Duration,
) {
    let topic = format!("{prefix}/status");
    if let Err(seen) = broker.wait_retained(&topic, timeout, |p| p == Some(status)) {
        panic!(
            "{topic} is {seen:?}, not {status}\nlabd:\n{}\nmosquitto:\n{}",
            lab.log(),
            broker.log()
        );
    }
}

#[test]
fn mqtt_publishes_state_events_and_discovery() {
    let (broker, lab, prefix) = mqtt_lab_with(labd_e2e::Ganesha::LABD_CONFIG);
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    let follow = broker.follow(&prefix);

    lab.labctl(&["dataset", "create", "photos", "-o", "quota=100M"])
        .ok();
    let photos = lab.ds("photos");
    let events = format!("{prefix}/events");
    let (_, created) = follow
        .wait_for(Duration::from_secs(10), |t, p| {
            t == events && json(p)["kind"] == "dataset.created"
        })
        .expect("dataset.created on the events topic");
    let created = json(&created);
    assert_eq!(created["resource"], photos.as_str());
    assert_eq!(created["actor"]["uid"], 0);
    let (_, finished) = follow
        .wait_for(Duration::from_secs(10), |t, p| {
            t == events && json(p)["kind"] == "job.finished"
        })
        .expect("job.finished on the events topic");
    assert_eq!(json(&finished)["data"]["kind"], "dataset.create");

    // The retained document has zfs's own numbers (they settle after the txg commits).
    let topic = format!("{prefix}/dataset/{photos}");
    let doc = broker
        .wait_retained(&topic, Duration::from_secs(20), |p| {
            p.is_some_and(|p| {
                let d = json(p);
                d["used"].as_u64().map(|n| n.to_string()) == Some(lab.prop(&photos, "used"))
                    && d["referenced"].as_u64().map(|n| n.to_string())
                        == Some(lab.prop(&photos, "referenced"))
            })
        })
        .unwrap_or_else(|seen| panic!("{topic}: {seen:?}\n{}", lab.log()))
        .expect("document");
    let doc = json(&doc);
    assert_eq!(doc["name"], photos.as_str());
    assert_eq!(doc["short_name"], "photos");
    assert_eq!(doc["quota"], 100u64 << 20);
    assert_eq!(doc["managed"], true);
    assert_eq!(doc["policy"], serde_json::Value::Null);
    assert!(doc["available"].as_u64().is_some_and(|n| n > 0), "{doc}");

    // A snapshot shows up as the dataset's last one.
    lab.labctl(&["dataset", "snapshot", "photos", "--name", "first"])
        .ok();
    let want = format!("{photos}@first");
    broker
        .wait_retained(&topic, Duration::from_secs(10), |p| {
            p.is_some_and(|p| json(p)["last_snapshot"] == want.as_str())
        })
        .unwrap_or_else(|seen| panic!("no last_snapshot {want}: {seen:?}"));

    // The pool document and its Home Assistant capacity sensor.
    let pool = broker
        .retained(&format!("{prefix}/pool/{}", lab.pool), 5)
        .expect("pool document");
    let pool = json(&pool);
    assert_eq!(pool["name"], lab.pool.as_str());
    assert!(pool["capacity_percent"].as_u64().is_some(), "{pool}");
    let mut args = broker.sub_args();
    args.extend(
        [
            "--retained-only",
            "-v",
            "-W",
            "2",
            "-t",
            "homeassistant/sensor/+/config",
        ]
        .map(String::from),
    );
    let out = bounded_sub(&args, 2);
    let suffix = format!("_{}_capacity/config", lab.pool);
    let line = out
        .stdout
        .lines()
        .find(|l| l.split(' ').next().is_some_and(|t| t.ends_with(&suffix)))
        .unwrap_or_else(|| panic!("no discovery config for {}:\n{}", lab.pool, out.stdout));
    let config = json(line.split_once(' ').map_or("", |(_, p)| p));
    assert_eq!(
        config["state_topic"],
        format!("{prefix}/pool/{}", lab.pool).as_str()
    );
    assert_eq!(
        config["availability_topic"],
        format!("{prefix}/status").as_str()
    );
    assert_eq!(
        config["value_template"],
        "{{ value_json.capacity_percent }}"
    );
    assert_eq!(config["unit_of_measurement"], "%");

    // An export definition has its document, cleared when it is removed.
    lab.labctl(&["export", "add", "photos", "--client", "127.0.0.1"])
        .ok();
    let export = format!("{prefix}/export/photos");
    let doc = broker
        .wait_retained(&export, Duration::from_secs(10), |p| p.is_some())
        .unwrap_or_else(|seen| panic!("{export}: {seen:?}\n{}", lab.log()))
        .expect("export document");
    let doc = json(&doc);
    assert_eq!(doc["dataset"], photos.as_str());
    assert_eq!(doc["clients"][0]["address"], "127.0.0.1");
    lab.labctl(&["export", "remove", "photos"]).ok();
    broker
        .wait_retained(&export, Duration::from_secs(10), |p| p.is_none())
        .unwrap_or_else(|seen| panic!("{export} still holds {seen:?}"));

    // A destroyed dataset's retained document is cleared.
    lab.labctl(&["dataset", "destroy", "-r", "photos"]).ok();
    broker
        .wait_retained(&topic, Duration::from_secs(10), |p| p.is_none())
        .unwrap_or_else(|seen| panic!("{topic} still holds {seen:?}"));
}

#[test]
fn mqtt_last_will_says_offline_when_labd_dies() {
    let (broker, mut lab, prefix) = mqtt_lab();
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    lab.signal(Signal::SIGKILL);
    assert!(lab.wait_labd(Duration::from_secs(10)).is_some());
    wait_status(&broker, &lab, &prefix, "offline", Duration::from_secs(10));
}

#[test]
fn mqtt_broker_away_never_holds_labd_and_state_comes_back() {
    let (mut broker, lab, prefix) = mqtt_lab();
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    broker.stop();

    // labd serves as usual while the broker is away.
    let started = Instant::now();
    lab.labctl(&["dataset", "create", "during"]).ok();
    lab.labctl(&["dataset", "list"]).ok();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "labctl took {:?} with the broker down",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_secs(2));

    // A fresh broker (no persistence: nothing retained) gets everything again.
    broker.spawn();
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(20));
    let during = lab.ds("during");
    let topic = format!("{prefix}/dataset/{during}");
    let doc = broker
        .wait_retained(&topic, Duration::from_secs(10), |p| p.is_some())
        .unwrap_or_else(|seen| panic!("{topic}: {seen:?}\n{}", lab.log()))
        .expect("document");
    assert_eq!(json(&doc)["managed"], true);
    let root = format!("{prefix}/dataset/{}", lab.root);
    assert!(
        broker.retained(&root, 5).is_some(),
        "no document for the root"
    );
}

#[test]
fn mqtt_clean_stop_publishes_offline() {
    let (broker, mut lab, prefix) = mqtt_lab();
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    let follow = broker.follow(&prefix);
    let started = Instant::now();
    lab.signal(Signal::SIGTERM);
    assert_eq!(lab.wait_labd(Duration::from_secs(10)), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    // The last event went out before offline.
    let events = format!("{prefix}/events");
    follow
        .wait_for(Duration::from_secs(5), |t, p| {
            t == events && json(p)["kind"] == "daemon.stopped"
        })
        .expect("daemon.stopped on the events topic");
    wait_status(&broker, &lab, &prefix, "offline", Duration::from_secs(5));
}

/// Run `mosquitto_sub ARGS` (which carry their own `-W SECS`) under `timeout`: mosquitto_sub
/// 2.0.11 has been seen to hang in a futex instead of honouring `-W`, which would hang the
/// test; a killed run reads as "no message", and callers retry within their deadline.
pub(super) fn bounded_sub(args: &[String], secs: u32) -> labd_e2e::Out {
    let limit = (secs + 3).to_string();
    let mut argv: Vec<&str> = vec!["-s", "KILL", &limit, "mosquitto_sub"];
    argv.extend(args.iter().map(String::as_str));
    run("timeout", &argv)
}

/// A throwaway PKI: a CA, the broker's certificate (127.0.0.1, localhost), a client
/// certificate for labd (CN `labd-client`) and one for `mosquitto_sub`, and a second CA
/// that signed none of them. PEM files in `dir`.
#[derive(Debug)]
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    labd_cert: PathBuf,
    labd_key: PathBuf,
    sub_cert: PathBuf,
    sub_key: PathBuf,
    rogue_ca: PathBuf,
}

impl Pki {
    fn make(dir: &std::path::Path) -> Self {
        std::fs::create_dir_all(dir).expect("pki dir");
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let params = ca_params("labd test CA");
        let ca = params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(params, ca_key);
        let leaf = |name: &str, cn: &str, sans: &[&str]| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut params = rcgen::CertificateParams::new(
                sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
            .expect("params");
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            let cert = params.signed_by(&key, &issuer).expect("leaf");
            let cert_path = dir.join(format!("{name}.pem"));
            let key_path = dir.join(format!("{name}.key"));
            std::fs::write(&cert_path, cert.pem()).expect("write cert");
            std::fs::write(&key_path, key.serialize_pem()).expect("write key");
            (cert_path, key_path)
        };
        let (server_cert, server_key) = leaf("server", "localhost", &["127.0.0.1", "localhost"]);
        let (labd_cert, labd_key) = leaf("labd", "labd-client", &[]);
        let (sub_cert, sub_key) = leaf("sub", "test-subscriber", &[]);
        let rogue_key = rcgen::KeyPair::generate().expect("key");
        let rogue = ca_params("labd test CA")
            .self_signed(&rogue_key)
            .expect("rogue CA");
        let pki = Self {
            ca: dir.join("ca.pem"),
            server_cert,
            server_key,
            labd_cert,
            labd_key,
            sub_cert,
            sub_key,
            rogue_ca: dir.join("rogue-ca.pem"),
        };
        std::fs::write(&pki.ca, ca.pem()).expect("write CA");
        std::fs::write(&pki.rogue_ca, rogue.pem()).expect("write rogue CA");
        pki
    }

    /// labd's `[mqtt]` table for `broker`, trusting `ca`, with labd's client certificate.
    fn labd_table(&self, broker: &Broker, prefix: &str, ca: &std::path::Path) -> String {
        format!(
            "[mqtt]\nurl = \"mqtts://127.0.0.1:{}\"\ntopic_prefix = \"{prefix}\"\n\
             client_id = \"{}\"\ninterval = \"2s\"\nca_file = \"{}\"\n\
             client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
            broker.port,
            prefix.replace('/', "-"),
            ca.display(),
            self.labd_cert.display(),
            self.labd_key.display()
        )
    }
}

/// A CA's parameters (same subject for the real and the rogue CA: only the key differs).
fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
}

#[test]
fn mqtt_over_mutual_tls_publishes_and_a_wrong_ca_is_refused() {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pki_dir = std::env::temp_dir().join(format!("labd-mqtt-pki-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pki_dir);
    let pki = Pki::make(&pki_dir);
    let broker = Broker::start_tls(&pki);
    let prefix = format!("test/labd/{}_{n}_tls", std::process::id());

    // The right CA and a client certificate: labd is online, its documents arrive.
    let lab = Lab::start_with(LabOptions {
        tables: pki.labd_table(&broker, &prefix, &pki.ca),
        ..LabOptions::default()
    });
    wait_status(&broker, &lab, &prefix, "online", Duration::from_secs(15));
    let follow = broker.follow(&prefix);
    lab.labctl(&["dataset", "create", "secret"]).ok();
    let events = format!("{prefix}/events");
    follow
        .wait_for(Duration::from_secs(10), |t, p| {
            t == events && json(p)["kind"] == "dataset.created"
        })
        .expect("dataset.created on the events topic over TLS");
    let secret = lab.ds("secret");
    let topic = format!("{prefix}/dataset/{secret}");
    let doc = broker
        .wait_retained(&topic, Duration::from_secs(10), |p| p.is_some())
        .unwrap_or_else(|seen| panic!("{topic}: {seen:?}\n{}", lab.log()))
        .expect("document");
    assert_eq!(json(&doc)["name"], secret.as_str());
    // The broker took the certificate's CN as labd's user name.
    let log = broker.log();
    assert!(
        log.lines()
            .any(|l| l.contains("New client connected") && l.contains("u'labd-client'")),
        "mosquitto did not see labd as labd-client:\n{log}"
    );
    drop(follow);
    drop(lab);

    // A CA that did not sign the broker's certificate: labd serves, publishes nothing, and
    // says why in its log and its metrics.
    let prefix = format!("{prefix}_rogue");
    let lab = Lab::start_with(LabOptions {
        tables: pki.labd_table(&broker, &prefix, &pki.rogue_ca),
        ..LabOptions::default()
    });
    let text = super::metrics::scrape_until(
        &lab,
        Duration::from_secs(15),
        "a tls_certificate connection failure",
        |t| {
            super::metrics::value(
                t,
                "labd_mqtt_connect_failures_total{reason=\"tls_certificate\"}",
            )
            .is_some_and(|v| v >= 1.0)
        },
    );
    assert_eq!(
        super::metrics::value(&text, "labd_mqtt_connected"),
        Some(0.0),
        "{text}"
    );
    lab.labctl(&["dataset", "list"]).ok();
    let log = lab.log();
    assert!(
        log.lines().any(|l| l.contains("mqtt broker unreachable")
            && l.contains("tls_certificate")
            && l.contains("certificate")),
        "no certificate failure in labd's log:\n{log}"
    );
    assert_eq!(
        broker.retained(&format!("{prefix}/status"), 2),
        None,
        "labd published through a broker it could not verify"
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&pki_dir);
}
