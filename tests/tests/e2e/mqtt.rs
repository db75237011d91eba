//! MQTT publishing against a real mosquitto on a free loopback port, observed with
//! `mosquitto_sub`: retained state, events, the last will, a broker that goes away and comes
//! back, and a clean stop.

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
}

impl Broker {
    pub(super) fn start() -> Self {
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
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        )
        .expect("broker config");
        let mut broker = Self {
            child: None,
            port,
            dir,
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
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
        ]
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
