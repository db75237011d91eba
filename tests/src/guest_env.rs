//! Harness of the guest-provisioning tests: a "guest" made of real components on loopback.
//!
//! * [`Sshd`]: a real OpenSSH server on a free 127.0.0.1 port with throwaway host and client
//!   keys (shared/reference/provisioning.md §4). Its sessions get, through `SetEnv`, a PATH
//!   whose first directory holds the recording package-tool shims, `DOCKER_HOST` pointing at
//!   the test's dockerd, and `APT_CONFIG` pointing apt's configuration directory into the
//!   test's directory (the real `apt-config` honours it), so nothing on this machine is
//!   upgraded or reconfigured.
//! * [`Dockerd`]: Debian's real `dockerd` on its own socket, data root and exec root, with no
//!   default bridge; stopped on drop. Compose v2 is Debian 13's plugin (tests/env/install.sh).
//! * The shims: `apt-get` records its argv and remembers what it "installed" and whether it
//!   "upgraded"; `dpkg-query` answers from that; `cloud-init` records `status --wait`;
//!   `systemctl` records and fails as it does without systemd (so no test starts a service
//!   of this machine).
//!
//! Every wait is bounded; a component that does not come up fails the test with its log.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Out, run};

/// The recording `apt-get`: argv to `$SHIM_STATE/log`; `install` adds to `installed`,
/// `dist-upgrade` marks `upgraded`; `-s dist-upgrade` lists one upgrade until then. A file
/// `$SHIM_STATE/fail-apt` makes it fail.
const APT_GET: &str = r#"#!/bin/sh
state=${SHIM_STATE:?}
printf 'apt-get %s\n' "$*" >>"$state/log"
if [ -e "$state/fail-apt" ]; then echo "E: the test told apt-get to fail" >&2; exit 100; fi
sim= cmd= skip= pkgs=
for a; do
    if [ -n "$skip" ]; then skip=; continue; fi
    case $a in
        -o) skip=1 ;;
        -s) sim=1 ;;
        -*) ;;
        update|install|dist-upgrade|remove) [ -z "$cmd" ] && cmd=$a || pkgs="$pkgs $a" ;;
        *) pkgs="$pkgs $a" ;;
    esac
done
case $cmd in
    dist-upgrade)
        if [ -n "$sim" ]; then
            [ -e "$state/upgraded" ] || echo "Inst base-files [12.4] (12.5 Debian:12.5/stable [amd64])"
        else
            touch "$state/upgraded"
        fi ;;
    install) for p in $pkgs; do echo "$p" >>"$state/installed"; done ;;
esac
exit 0
"#;

/// The `dpkg-query -W -f=… PKG` of the shim world.
const DPKG_QUERY: &str = r#"#!/bin/sh
state=${SHIM_STATE:?}
for p; do :; done
if grep -qxF "$p" "$state/installed" 2>/dev/null; then
    printf 'install ok installed\n'
else
    echo "dpkg-query: no packages found matching $p" >&2
    exit 1
fi
"#;

/// `cloud-init status --wait` that is done at once.
const CLOUD_INIT: &str = r#"#!/bin/sh
printf 'cloud-init %s\n' "$*" >>"${SHIM_STATE:?}/log"
echo "status: done"
"#;

/// `systemctl` of a guest without systemd: records, and fails like systemctl does there.
const SYSTEMCTL: &str = r#"#!/bin/sh
printf 'systemctl %s\n' "$*" >>"${SHIM_STATE:?}/log"
echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
exit 1
"#;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn stop(child: &mut Child, grace: Duration) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Generate an ed25519 key pair at `path` (and `path.pub`); returns the public key line.
pub fn keygen(path: &Path) -> String {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(path.with_extension("pub"));
    let p = path.display().to_string();
    run(
        "ssh-keygen",
        &["-q", "-t", "ed25519", "-N", "", "-C", "labd-test", "-f", &p],
    )
    .ok();
    fs::read_to_string(format!("{p}.pub"))
        .expect("public key")
        .trim()
        .to_owned()
}

/// The shim world of one test: where the shims record and what apt reads.
#[derive(Debug)]
pub struct Shims {
    /// Directory prepended to the guest's PATH.
    pub bin: PathBuf,
    /// `SHIM_STATE`: `log`, `installed`, `upgraded`, `fail-apt`.
    pub state: PathBuf,
    /// The file `APT_CONFIG` names.
    pub apt_config: PathBuf,
    /// apt's configuration-parts directory in this world (`Dir::Etc::parts`).
    pub apt_parts: PathBuf,
}

impl Shims {
    /// Create the shims under `dir`.
    pub fn create(dir: &Path) -> Self {
        let bin = dir.join("shim-bin");
        let state = dir.join("shim-state");
        let apt_parts = dir.join("apt.conf.d");
        for d in [&bin, &state, &apt_parts] {
            fs::create_dir_all(d).expect("shim dirs");
        }
        write_exec(&bin.join("apt-get"), APT_GET);
        write_exec(&bin.join("dpkg-query"), DPKG_QUERY);
        write_exec(&bin.join("cloud-init"), CLOUD_INIT);
        write_exec(&bin.join("systemctl"), SYSTEMCTL);
        let apt_config = dir.join("apt.conf");
        fs::write(
            &apt_config,
            format!(
                "Dir::Etc::parts \"{}/\";\nDir::Etc::sourceparts \"{}/\";\n",
                apt_parts.display(),
                dir.join("sources.list.d").display()
            ),
        )
        .expect("apt.conf");
        Self {
            bin,
            state,
            apt_config,
            apt_parts,
        }
    }

    /// What the shims recorded, one command per line.
    pub fn log(&self) -> String {
        fs::read_to_string(self.state.join("log")).unwrap_or_default()
    }

    /// The session environment of a guest whose Docker answers at `docker_host`.
    pub fn env(&self, docker_host: &str) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.bin.display()
                ),
            ),
            ("SHIM_STATE".into(), self.state.display().to_string()),
            ("APT_CONFIG".into(), self.apt_config.display().to_string()),
            ("DOCKER_HOST".into(), docker_host.to_owned()),
        ]
    }
}

/// A real sshd on 127.0.0.1, logging in root with a throwaway key.
#[derive(Debug)]
pub struct Sshd {
    child: Child,
    /// Its port.
    pub port: u16,
    /// The client's private key.
    pub client_key: PathBuf,
    /// The host's public key line.
    pub host_key: String,
    /// An empty ssh client configuration (so root's ~/.ssh/config plays no part).
    pub ssh_config: PathBuf,
    dir: PathBuf,
}

impl Sshd {
    /// Start one with its files under `dir/sshd`, its sessions getting `env`.
    pub fn start(dir: &Path, env: &[(String, String)]) -> Self {
        let dir = dir.join("sshd");
        fs::create_dir_all(&dir).expect("sshd dir");
        // sshd's privilege separation directory.
        fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let host_key = keygen(&dir.join("hostkey"));
        let client_pub = keygen(&dir.join("clientkey"));
        fs::write(dir.join("authorized_keys"), format!("{client_pub}\n")).expect("keys");
        let ssh_config = dir.join("ssh_config");
        fs::write(&ssh_config, "").expect("ssh_config");
        let port = free_port();
        let setenv: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/hostkey\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding no\n\
             X11Forwarding no\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\nSetEnv {}\n",
            setenv.join(" "),
            d = dir.display()
        );
        let config_path = dir.join("sshd_config");
        fs::write(&config_path, config).expect("sshd_config");
        let log = fs::File::create(dir.join("sshd.log")).expect("sshd log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("/usr/sbin/sshd (install openssh-server: tests/env/install.sh)");
        let mut sshd = Self {
            child,
            port,
            client_key: dir.join("clientkey"),
            host_key,
            ssh_config,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                panic!("sshd exited with {status}:\n{}", sshd.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {port}:\n{}",
                sshd.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sshd
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// The labctl options that reach this sshd as the guest, its real host key pinned.
    pub fn labctl_args(&self) -> Vec<String> {
        self.labctl_args_with_key(&self.host_key)
    }

    /// The labctl options that reach this sshd, pinning `host_key`.
    pub fn labctl_args_with_key(&self, host_key: &str) -> Vec<String> {
        vec![
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            self.port.to_string(),
            "--user".into(),
            "root".into(),
            "--identity".into(),
            self.client_key.display().to_string(),
            "--ssh-config".into(),
            self.ssh_config.display().to_string(),
            "--host-key".into(),
            host_key.to_owned(),
        ]
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(5));
    }
}

/// A real dockerd on its own socket, data root and exec root.
#[derive(Debug)]
pub struct Dockerd {
    child: Child,
    /// `unix://…` of its socket.
    pub host: String,
    dir: PathBuf,
}

impl Dockerd {
    /// Start one under `dir/dk` and wait (at most 60 s) until it answers.
    pub fn start(dir: &Path) -> Self {
        // Short: containerd's sockets live under the exec root and must fit in sun_path.
        let dir = dir.join("dk");
        fs::create_dir_all(&dir).expect("docker dir");
        let host = format!("unix://{}/docker.sock", dir.display());
        let log = fs::File::create(dir.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(&host)
            .arg("--bridge")
            .arg("none")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd (install docker.io: tests/env/install.sh)");
        let mut d = Self { child, host, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if d.docker(&["info", "--format", "{{.ServerVersion}}"]).code == 0 {
                break;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("dockerd exited with {status}:\n{}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    /// dockerd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
    }

    /// Run the docker CLI against this daemon (bounded: 120 s).
    pub fn docker(&self, args: &[&str]) -> Out {
        let out = Command::new("timeout")
            .arg("120")
            .arg("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .stdin(Stdio::null())
            .output()
            .expect("docker CLI");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Import a tiny image `tag` made of the static busybox (no registry is reachable).
    pub fn import_busybox(&self, tag: &str) {
        let root = self.dir.join("img");
        fs::create_dir_all(root.join("bin")).expect("image dir");
        fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("/bin/busybox (install busybox-static)");
        for applet in ["sh", "sleep", "true", "cat", "ls"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        let tar = self.dir.join("img.tar");
        run(
            "tar",
            &[
                "-C",
                &root.display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ],
        )
        .ok();
        self.docker(&[
            "import",
            "--change",
            "CMD [\"sleep\", \"3600\"]",
            &tar.display().to_string(),
            tag,
        ])
        .ok();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // Containers first, so nothing of them outlives the daemon.
        let ids = self.docker(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = self.docker(&[&["rm", "-f"], &ids[..]].concat());
        }
        // User-defined networks are host bridges (`br-<id>`) that outlive the daemon.
        let _ = self.docker(&["network", "prune", "-f"]);
        stop(&mut self.child, Duration::from_secs(20));
    }
}
