//! Guest provisioning end to end: the real labctl over a real OpenSSH connection to a real
//! sshd on loopback (the "guest"), driving a real dockerd with compose v2, and a real labd
//! whose exports are served by nfs-ganesha. Only the package tools (apt-get, dpkg-query,
//! cloud-init) are recording shims, so this machine is never upgraded. The kernel here has
//! no NFS client, so no container mounts the NFS volume: its options are checked with
//! `docker volume inspect`, and the export with labd.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use labd_e2e::guest_env::{Dockerd, Shims, Sshd, keygen};
use labd_e2e::{Ganesha, Lab, LabOptions, Out, bin_dir};

const IMAGE: &str = "labctl-test/busybox:1";

fn compose_v1() -> String {
    format!(
        "services:\n  app:\n    image: {IMAGE}\n    command: [\"sleep\", \"3600\"]\n    \
         environment:\n      GREETING: ${{GREETING}}\n    networks: [proxy]\n    \
         volumes:\n      - config:/config\nnetworks:\n  proxy:\n    external: true\n    \
         name: lt-proxy\n"
    )
}

/// A plan for the "guest": everything of the issue, files under `dir`.
fn write_plan(dir: &Path, compose_dir: &Path, nfs_extra: &str) -> PathBuf {
    fs::create_dir_all(dir.join("web")).expect("plan dir");
    fs::write(dir.join("web/compose.yaml"), compose_v1()).expect("compose");
    fs::write(dir.join("web/web.env"), "GREETING=hello\n").expect("env");
    let plan = format!(
        r#"[guest]
compose_dir = "{}"

[system]
update = true
auto_updates = true

[docker]
engine = true
engine_source = "debian"

[[docker.networks]]
name = "lt-proxy"
driver = "bridge"
subnet = "172.31.250.0/24"

[nfs]
server = "127.0.0.1"
{nfs_extra}

[[services]]
name = "web"
compose = "web/compose.yaml"
env = "web/web.env"

[[services.volumes]]
name = "library"
dataset = "photos"
maproot = "root"

[[services.volumes]]
name = "config"
"#,
        compose_dir.display()
    );
    let path = dir.join("docker-host.toml");
    fs::write(&path, plan).expect("plan");
    path
}

/// `labctl [--output json] guest CMD docker-host PLAN <ssh options> EXTRA…`.
fn guest(socket: &Path, sshd: &Sshd, cmd: &str, plan: &Path, extra: &[&str], json: bool) -> Out {
    guest_with(socket, &sshd.labctl_args(), cmd, plan, extra, json)
}

fn guest_with(
    socket: &Path,
    ssh_args: &[String],
    cmd: &str,
    plan: &Path,
    extra: &[&str],
    json: bool,
) -> Out {
    let mut c = Command::new("timeout");
    c.arg("-s")
        .arg("KILL")
        .arg("300")
        .arg(bin_dir().join("labctl"));
    c.arg("--socket").arg(socket);
    if json {
        c.args(["--output", "json"]);
    }
    c.args(["guest", cmd, "docker-host"]).arg(plan);
    c.args(ssh_args).args(extra).stdin(Stdio::null());
    let out = c.output().expect("labctl");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `(step, result)` of every step of a JSON report.
fn results(out: &Out) -> Vec<(String, String)> {
    out.json()["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_owned(),
                s["result"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn result_of<'a>(results: &'a [(String, String)], step: &str) -> &'a str {
    results
        .iter()
        .find(|(s, _)| s == step)
        .map(|(_, r)| r.as_str())
        .unwrap_or_else(|| panic!("no step {step} in {results:?}"))
}

fn all_are(results: &[(String, String)], want: &str) -> bool {
    results.iter().all(|(_, r)| r == want)
}

fn container_id(docker: &Dockerd) -> String {
    docker
        .docker(&[
            "ps",
            "-q",
            "--filter",
            "label=com.docker.compose.project=web",
            "--filter",
            "label=com.docker.compose.service=app",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

fn volume_options(docker: &Dockerd) -> String {
    docker
        .docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Driver}} {{index .Options \"type\"}} {{index .Options \"o\"}} {{index .Options \"device\"}}",
            "web_library",
        ])
        .ok()
        .stdout
        .trim()
        .to_owned()
}

#[test]
fn a_plan_converges_reports_no_change_the_second_time_and_follows_edits() {
    let lab = Lab::start_with(LabOptions {
        tables: Ganesha::LABD_CONFIG.to_owned(),
        ..LabOptions::default()
    });
    let _nfs = Ganesha::start(&lab.dir);
    let docker = Dockerd::start(&lab.dir);
    docker.import_busybox(IMAGE);
    let shims = Shims::create(&lab.dir);
    let sshd = Sshd::start(&lab.dir, &shims.env(&docker.host));
    let plans = lab.dir.join("plans");
    let srv = lab.dir.join("srv");
    let plan = write_plan(&plans, &srv, "");
    let socket = &lab.socket;

    // The dataset does not exist yet: the plan is refused before anything runs, naming the key.
    let out = guest(socket, &sshd, "provision", &plan, &[], false).code(1);
    assert!(
        out.stderr
            .contains("services[0].volumes[0].dataset: labd has no dataset \"photos\""),
        "{}",
        out.stderr
    );
    assert_eq!(shims.log(), "", "a refused plan ran something");
    lab.labctl(&["dataset", "create", "photos"]).ok();

    // A dry run probes only.
    let out = guest(socket, &sshd, "provision", &plan, &["--dry-run"], true).ok();
    let r = results(&out);
    assert!(
        r.iter().all(|(_, res)| res == "would_change"),
        "{}",
        out.stdout
    );
    assert_ne!(docker.docker(&["network", "inspect", "lt-proxy"]).code, 0);
    assert!(!shims.log().contains("install"), "{}", shims.log());
    assert!(!srv.join("web").exists());
    assert!(lab.labctl(&["export", "show", "photos"]).code != 0);

    // The real run: every step changes something, in order.
    let out = guest(socket, &sshd, "provision", &plan, &[], true).ok();
    let r = results(&out);
    assert!(all_are(&r, "changed"), "{}", out.stdout);
    let steps: Vec<&str> = r.iter().map(|(s, _)| s.as_str()).collect();
    let compose_file = srv.join("web/compose.yaml");
    let env_file = srv.join("web/.env");
    assert_eq!(
        steps,
        [
            "system update".to_owned(),
            "system auto-updates".to_owned(),
            "docker engine".to_owned(),
            "network lt-proxy".to_owned(),
            "export photos to 127.0.0.1".to_owned(),
            "exports apply".to_owned(),
            format!("file {}", compose_file.display()),
            format!("file {}", env_file.display()),
            "volume web_library".to_owned(),
            "compose web".to_owned(),
        ]
    );
    // The packages were installed after cloud-init finished; the upgrade ran.
    let log = shims.log();
    let wait = log
        .find("cloud-init status --wait")
        .expect("cloud-init wait");
    let install = log.find("install -y -q -o DPkg::Lock::Timeout=600 docker.io docker-compose");
    assert!(install.is_some_and(|i| i > wait), "{log}");
    assert!(log.contains("dist-upgrade"), "{log}");
    assert_eq!(
        fs::read_to_string(shims.apt_parts.join("20auto-upgrades")).expect("20auto-upgrades"),
        "APT::Periodic::Update-Package-Lists \"1\";\nAPT::Periodic::Unattended-Upgrade \"1\";\n"
    );
    // Docker state really exists.
    let net = docker
        .docker(&[
            "network",
            "inspect",
            "-f",
            "{{.Driver}} {{range .IPAM.Config}}{{.Subnet}}{{end}}",
            "lt-proxy",
        ])
        .ok();
    assert_eq!(net.stdout.trim(), "bridge 172.31.250.0/24");
    let ps = docker
        .docker(&[
            "compose",
            "-p",
            "web",
            "-f",
            &compose_file.display().to_string(),
            "ps",
            "--format",
            "{{.Service}} {{.State}}",
        ])
        .ok();
    assert_eq!(ps.stdout.trim(), "app running", "{ps:?}");
    let env = docker
        .docker(&["exec", &container_id(&docker), "sh", "-c", "echo $GREETING"])
        .ok();
    assert_eq!(env.stdout.trim(), "hello");
    let mnt = lab.prop(&lab.ds("photos"), "mountpoint");
    assert_eq!(
        volume_options(&docker),
        format!("local nfs addr=127.0.0.1,nfsvers=4,rw,hard,timeo=600,retrans=2,noatime :{mnt}")
    );
    let export = lab
        .labctl(&["--output", "json", "export", "show", "photos"])
        .ok()
        .json();
    assert_eq!(
        export["clients"],
        serde_json::json!([{"address": "127.0.0.1", "maproot": "root"}])
    );
    let served = fs::read_to_string(lab.dir.join("ganesha/exports.conf")).expect("ganesha file");
    assert!(served.contains("127.0.0.1"), "{served}");
    let mode = fs::metadata(&env_file).expect(".env").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // The same plan again: nothing to do, and the status agrees.
    let before = container_id(&docker);
    let out = guest(socket, &sshd, "provision", &plan, &[], true).ok();
    assert!(all_are(&results(&out), "unchanged"), "{}", out.stdout);
    assert_eq!(container_id(&docker), before);
    let out = guest(socket, &sshd, "status", &plan, &[], false).ok();
    assert!(
        out.stdout.contains("changed 0, unchanged 10, failed 0"),
        "{}",
        out.stdout
    );

    // An edited compose file: status reports the drift (exit 1), provision applies it.
    let edited = compose_v1().replace("GREETING: ${GREETING}", "GREETING: ${GREETING}-v2");
    fs::write(plans.join("web/compose.yaml"), edited).expect("edit");
    let out = guest(socket, &sshd, "status", &plan, &[], true).code(1);
    let r = results(&out);
    assert_eq!(
        result_of(&r, &format!("file {}", compose_file.display())),
        "would_change"
    );
    assert_eq!(result_of(&r, "compose web"), "would_change");
    assert_eq!(result_of(&r, "network lt-proxy"), "unchanged");
    assert!(
        out.stderr
            .contains("differs from the plan in 2 of 10 steps"),
        "{}",
        out.stderr
    );
    let out = guest(socket, &sshd, "provision", &plan, &[], true).ok();
    let r = results(&out);
    assert_eq!(
        result_of(&r, &format!("file {}", compose_file.display())),
        "changed"
    );
    assert_eq!(result_of(&r, "compose web"), "changed");
    assert_eq!(
        r.iter().filter(|(_, x)| x == "changed").count(),
        2,
        "{}",
        out.stdout
    );
    let after = container_id(&docker);
    assert_ne!(after, before, "the container was not recreated");
    let env = docker
        .docker(&["exec", &after, "sh", "-c", "echo $GREETING"])
        .ok();
    assert_eq!(env.stdout.trim(), "hello-v2");

    // A changed NFS definition: the volume is recreated, the containers using it stopped and
    // removed first (here one made by hand: no container can mount NFS on this kernel).
    let user = docker
        .docker(&["create", "-v", "web_library:/library", IMAGE])
        .ok()
        .stdout
        .trim()
        .to_owned();
    let plan = write_plan(&plans, &srv, "options = [\"hard\", \"timeo=300\"]");
    fs::write(
        plans.join("web/compose.yaml"),
        compose_v1().replace("GREETING: ${GREETING}", "GREETING: ${GREETING}-v2"),
    )
    .expect("edit");
    let out = guest(socket, &sshd, "provision", &plan, &[], true).ok();
    let r = results(&out);
    assert_eq!(
        result_of(&r, "volume web_library"),
        "changed",
        "{}",
        out.stdout
    );
    assert_eq!(
        result_of(&r, &format!("file {}", compose_file.display())),
        "changed"
    );
    assert_eq!(
        volume_options(&docker),
        format!("local nfs addr=127.0.0.1,nfsvers=4,rw,hard,timeo=300 :{mnt}")
    );
    assert_ne!(
        docker.docker(&["inspect", &user]).code,
        0,
        "the volume's user is still there"
    );
    let out = guest(socket, &sshd, "provision", &plan, &[], true).ok();
    assert!(all_are(&results(&out), "unchanged"), "{}", out.stdout);
}

/// A plan with only the apt steps and the engine, for the tests without a dockerd.
fn small_plan(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("plan dir");
    let path = dir.join("small.toml");
    fs::write(
        &path,
        "[system]\nupdate = true\nauto_updates = true\n[docker]\nengine = true\n\
         engine_source = \"debian\"\n[[docker.networks]]\nname = \"never\"\n",
    )
    .expect("plan");
    path
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("labd-guest-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch");
    dir
}

#[test]
fn a_wrong_host_key_is_refused_before_anything_runs() {
    let dir = scratch("hostkey");
    let shims = Shims::create(&dir);
    let sshd = Sshd::start(&dir, &shims.env("unix:///nonexistent.sock"));
    let plan = small_plan(&dir.join("plans"));
    let other = keygen(&dir.join("otherkey"));
    let socket = dir.join("no-labd.sock");
    let out = guest_with(
        &socket,
        &sshd.labctl_args_with_key(&other),
        "provision",
        &plan,
        &[],
        false,
    )
    .code(1);
    assert!(out.stderr.contains("host key pinned"), "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("host key"),
        "{}",
        out.stderr
    );
    assert_eq!(
        shims.log(),
        "",
        "something ran on a guest with the wrong key"
    );
    // The right key gets in (the sshd is fine).
    let out = guest(&socket, &sshd, "provision", &plan, &["--dry-run"], false);
    assert!(
        out.stdout.contains("would-change  system update"),
        "{out:?}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_step_stops_the_run_and_the_report_says_what_was_done() {
    let dir = scratch("failing");
    let shims = Shims::create(&dir);
    // No Docker daemon answers on this socket: the engine step cannot converge.
    let sshd = Sshd::start(
        &dir,
        &shims.env(&format!("unix://{}/none.sock", dir.display())),
    );
    let plan = small_plan(&dir.join("plans"));
    let socket = dir.join("no-labd.sock");
    let out = guest(&socket, &sshd, "provision", &plan, &[], true).code(1);
    let r = results(&out);
    assert_eq!(
        r,
        [
            ("system update".to_owned(), "changed".to_owned()),
            ("system auto-updates".to_owned(), "changed".to_owned()),
            ("docker engine".to_owned(), "failed".to_owned()),
            ("network never".to_owned(), "not_run".to_owned()),
        ]
    );
    let detail = out.json()["steps"][2]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.contains("the Docker daemon does not answer"),
        "{detail}"
    );
    assert!(
        out.stderr.contains("step `docker engine` failed"),
        "{}",
        out.stderr
    );

    // Validation names the keys and runs nothing.
    let before = shims.log();
    fs::write(&plan, "[docker]\nengine = true\nengin_source = \"x\"\n").expect("plan");
    let out = guest(&socket, &sshd, "provision", &plan, &[], false).code(1);
    assert!(out.stderr.contains("engin_source"), "{}", out.stderr);
    fs::write(
        &plan,
        "[[docker.networks]]\nname = \"n\"\nsubnet = \"10.1.2.3/16\"\n\
         [[services]]\nname = \"web\"\ncompose = \"missing.yaml\"\n",
    )
    .expect("plan");
    let out = guest(&socket, &sshd, "provision", &plan, &[], false).code(1);
    assert!(
        out.stderr.contains("docker.networks[0].subnet"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("services[0].compose: cannot read"),
        "{}",
        out.stderr
    );
    assert_eq!(shims.log(), before, "an invalid plan ran something");
    let _ = fs::remove_dir_all(&dir);
}
