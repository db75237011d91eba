//! The API on TCP with mutual TLS (`[api] tcp_listen`), driven by the real labctl (`--url`).
//!
//! A throwaway PKI made with rcgen: a CA, labd's certificate (SAN 127.0.0.1), an allowed
//! client (`labctl-admin`), a client of the same CA whose CN is not allowed (`labctl-guest`),
//! and a client with the allowed CN from another CA. Refusals, as documented: no certificate
//! or a foreign CA fail the TLS handshake; a CN outside `tls_allowed_clients` gets
//! `403 forbidden`. Neither changes anything.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, run};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// The PEM files of one test, in a directory removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "labd-apitls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("pki dir");
        let pki = Self { dir };
        let ca = pki.ca("labd test CA");
        let rogue = pki.ca("rogue CA");
        std::fs::write(pki.file("ca.pem"), ca.pem()).expect("ca.pem");
        pki.leaf(&ca, "server", "labd", ExtendedKeyUsagePurpose::ServerAuth);
        pki.leaf(
            &ca,
            "admin",
            "labctl-admin",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki.leaf(
            &ca,
            "guest",
            "labctl-guest",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki.leaf(
            &rogue,
            "rogue",
            "labctl-admin",
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki
    }

    fn ca(&self, cn: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca")
    }

    fn leaf(
        &self,
        ca: &CertifiedIssuer<'static, KeyPair>,
        name: &str,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        std::fs::write(self.file(&format!("{name}.pem")), cert.pem()).expect("cert");
        std::fs::write(self.file(&format!("{name}.key")), key.serialize_pem()).expect("key");
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn path(&self, name: &str) -> String {
        self.file(name).display().to_string()
    }

    /// labctl's global options for `url` as client `who` (its cert and key).
    fn client(&self, url: &str, who: &str) -> Vec<String> {
        [
            "--url".to_owned(),
            url.to_owned(),
            "--ca".to_owned(),
            self.path("ca.pem"),
            "--cert".to_owned(),
            self.path(&format!("{who}.pem")),
            "--key".to_owned(),
            self.path(&format!("{who}.key")),
        ]
        .into()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (closed again before labd binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A lab whose labd also listens on TCP with mutual TLS; `tables` as in [`LabOptions`].
fn tls_lab(pki: &Pki, tables: String) -> (Lab, String) {
    let port = free_port();
    let api_extra = format!(
        "tcp_listen = \"127.0.0.1:{port}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n\
         tls_client_ca_file = \"{}\"\ntls_allowed_clients = [\"labctl-admin\"]\n",
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    let lab = Lab::start_with(LabOptions {
        api_extra,
        tables,
        ..LabOptions::default()
    });
    (lab, format!("https://127.0.0.1:{port}"))
}

/// `labctl GLOBAL… ARGS…`.
fn labctl(lab: &Lab, global: &[String], args: &[&str]) -> labd_e2e::Out {
    let global: Vec<&str> = global.iter().map(String::as_str).collect();
    lab.labctl(&[&global[..], args].concat())
}

#[test]
fn the_tcp_api_is_mutual_tls_and_names_the_certificate() {
    let pki = Pki::new();
    let (lab, url) = tls_lab(&pki, String::new());
    let admin = pki.client(&url, "admin");

    // Events over TLS see a dataset created over TLS, and name the certificate's CN.
    let global: Vec<&str> = admin.iter().map(String::as_str).collect();
    let events = lab.events_from(&[&global[..], &["--output", "json", "events"]].concat());
    let job = labctl(
        &lab,
        &admin,
        &["--output", "json", "dataset", "create", "photos"],
    )
    .ok()
    .json();
    assert!(lab.exists(&lab.ds("photos")));
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["actor"]["cn"], "labctl-admin", "{job}");
    assert!(
        job["actor"]["addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{job}"
    );
    assert!(job["actor"].get("uid").is_none(), "{job}");
    let photos = lab.ds("photos");
    let created = events
        .wait_for(Duration::from_secs(10), |e| {
            e["kind"] == "dataset.created" && e["resource"] == photos.as_str()
        })
        .expect("dataset.created over TLS");
    assert_eq!(created["actor"]["cn"], "labctl-admin", "{created}");
    // Table output says who, and the socket still names the uid.
    let shown = labctl(
        &lab,
        &admin,
        &["job", "show", job["id"].as_str().expect("id")],
    )
    .ok();
    assert!(
        shown.stdout.contains("cn=labctl-admin addr=127.0.0.1:"),
        "{}",
        shown.stdout
    );
    lab.labctl(&["dataset", "create", "music"]).ok();
    let jobs = lab.labctl(&["--output", "json", "job", "list"]).ok().json();
    let music = jobs
        .as_array()
        .and_then(|j| j.iter().find(|j| j["target"] == lab.ds("music").as_str()))
        .expect("music job");
    assert_eq!(music["actor"]["uid"], 0, "{music}");

    // Labd's error body crosses TLS unchanged.
    let out = labctl(&lab, &admin, &["dataset", "get", "nope"]).code(1);
    assert!(out.stderr.contains("[not_found]"), "{}", out.stderr);

    // A CN outside tls_allowed_clients: 403, nothing done.
    let guest = pki.client(&url, "guest");
    let out = labctl(&lab, &guest, &["dataset", "create", "guest"]).code(1);
    assert!(
        out.stderr
            .contains("'labctl-guest' is not in api.tls_allowed_clients")
            && out.stderr.contains("[forbidden]"),
        "{}",
        out.stderr
    );
    // A certificate with the allowed CN from another CA: the handshake fails.
    let rogue = pki.client(&url, "rogue");
    let out = labctl(&lab, &rogue, &["dataset", "create", "rogue"]).code(1);
    assert!(
        out.stderr.contains("TLS with labd at https://") && out.stderr.contains("UnknownCA"),
        "{}",
        out.stderr
    );
    // No client certificate at all (labctl always sends one, so curl): the handshake fails.
    let port = url.rsplit(':').next().expect("port");
    let no_cert = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "--cacert",
            &pki.path("ca.pem"),
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-d",
            &format!("{{\"name\":\"{}\"}}", lab.ds("nocert")),
            &format!("{url}/v1/datasets"),
        ],
    );
    assert_ne!(no_cert.code, 0, "{}", no_cert.stdout);
    assert!(no_cert.stdout.is_empty(), "{}", no_cert.stdout);
    for name in ["guest", "rogue", "nocert"] {
        assert!(!lab.exists(&lab.ds(name)), "{name} was created");
    }
    assert!(
        lab.log().contains("api tls handshake refused"),
        "{}",
        lab.log()
    );

    // Plain HTTP to the TCP port gets no HTTP answer.
    let mut tcp = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(b"GET /v1 HTTP/1.1\r\nHost: labd\r\n\r\n")
        .expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    // labctl refuses to talk plain HTTP at all.
    let mut plain = admin.clone();
    plain[1] = format!("http://127.0.0.1:{port}");
    let out = labctl(&lab, &plain, &["status"]).code(2);
    assert!(out.stderr.contains("https://"), "{}", out.stderr);

    // SIGTERM closes the TCP listener with the socket.
    let mut lab = lab;
    lab.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(
        lab.wait_labd(Duration::from_secs(30)),
        Some(0),
        "{}",
        lab.log()
    );
    assert!(std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err());
}

#[test]
fn the_console_upgrade_works_over_tls() {
    let pki = Pki::new();
    let guest = labd_e2e::test_guest_dir();
    let (lab, url) = tls_lab(
        &pki,
        format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n",
            guest.display()
        ),
    );
    let admin = pki.client(&url, "admin");
    labctl(&lab, &admin, &["vm", "create", "t1", "--template", "tiny"]).ok();
    labctl(&lab, &admin, &["vm", "start", "t1"]).ok();
    let global: Vec<&str> = admin.iter().map(String::as_str).collect();
    let mut child = lab
        .labctl_cmd(&[&global[..], &["vm", "console", "t1"]].concat())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("labctl vm console");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !String::from_utf8_lossy(&seen).contains(what) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(bytes) => seen.extend(bytes),
                Err(_) => panic!(
                    "console over TLS: no {what:?} within 60s:\n{}",
                    String::from_utf8_lossy(&seen)
                ),
            }
        }
    };
    wait_for("LABD-TEST-GUEST up");
    stdin.write_all(b"hello over tls\n").expect("write");
    wait_for("guest got: hello over tls");
    stdin.write_all(b"\x1d").expect("detach");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "labctl vm console did not detach"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    labctl(&lab, &admin, &["vm", "stop", "t1", "--force"]).ok();
    labctl(&lab, &admin, &["vm", "destroy", "t1"]).ok();
}
