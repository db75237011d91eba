//! Harness of the end-to-end tests: each [`Lab`] is a fresh file-backed zfs-fuse pool with a
//! root dataset, a real `labd` serving its own socket on it, and helpers to run the real
//! `labctl` and `zfs` against it. Everything is removed on drop, also when a test fails.
//!
//! Needs root, a running zfs-fuse (`tests/env/install.sh` sets it up) and the workspace's
//! binaries built (`cargo build --workspace --bins`; `tests/env/run-tests.sh` does both).

pub mod guest_env;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Prefix of every pool the tests create; leftovers of dead test runs are swept by it.
pub const POOL_PREFIX: &str = "labdt";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Serializes pool creation and destruction: zfs-fuse has been seen to wedge (every later
/// request blocks in the kernel) when pools are created or destroyed concurrently. The mutex
/// covers this process's threads, the file lock other test processes (another checkout's
/// run, a benchmark).
static POOL_LOCK: Mutex<()> = Mutex::new(());

/// The file every test process locks around pool creation and destruction.
const POOL_LOCK_FILE: &str = "/run/lock/labd-e2e-pools.lock";

struct PoolLock {
    _file: Option<nix::fcntl::Flock<fs::File>>,
    _thread: MutexGuard<'static, ()>,
}

fn pool_lock() -> PoolLock {
    let thread = POOL_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(POOL_LOCK_FILE)
        .ok()
        .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
    PoolLock {
        _file: file,
        _thread: thread,
    }
}

/// Longest time a pool-level command may take before the harness gives up on zfs-fuse.
const POOL_CMD_TIMEOUT: &str = "120";

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/e2e-HASH -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    for bin in ["labd", "labctl"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: run `cargo build --workspace --bins` first",
            dir.join(bin).display()
        );
    }
    dir
}

/// What a command printed and how it ended.
#[derive(Debug)]
pub struct Out {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panic with the output unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "command failed:\n{self:#?}");
        self
    }

    /// Panic unless the command exited with `code`.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code:\n{self:#?}");
        self
    }

    /// Parse stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Run a program to completion.
pub fn run(program: &str, args: &[&str]) -> Out {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Out::from(out)
}

/// Destroy pools left by test runs whose process is gone.
fn sweep_stale_pools() {
    let out = run("zpool", &["list", "-H", "-o", "name"]);
    for pool in out.stdout.lines() {
        let Some(rest) = pool.strip_prefix(&format!("{POOL_PREFIX}_")) else {
            continue;
        };
        let pid = rest.split('_').next().and_then(|p| p.parse::<i32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run(
                "timeout",
                &[POOL_CMD_TIMEOUT, "zpool", "destroy", "-f", pool],
            );
        }
    }
}

/// Options of a lab.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Extra lines appended to the `[zfs]` table.
    pub zfs_extra: String,
    /// The `[daemon]` table's lines.
    pub daemon_extra: String,
    /// Pool size in MiB (default 256).
    pub pool_mib: u64,
    /// More TOML tables appended to the configuration (`[policies.x]`, `[schedule]`);
    /// `{dir}` stands for the lab's scratch directory.
    pub tables: String,
    /// Extra lines of the `[api]` table (`tcp_listen`, the `tls_*` files).
    pub api_extra: String,
    /// A directory (`{dir}` as above) put first on labd's PATH: recording stand-ins for
    /// programs only FreeBSD has.
    pub path_first: Option<String>,
}

/// A pool, a root dataset and a labd serving them.
#[derive(Debug)]
pub struct Lab {
    /// Pool name.
    pub pool: String,
    /// Root dataset labd manages (`<pool>/labd`).
    pub root: String,
    /// Scratch directory (pool image, config, socket, mountpoints).
    pub dir: PathBuf,
    /// labd's socket.
    pub socket: PathBuf,
    /// labd's configuration file.
    pub config: PathBuf,
    bins: PathBuf,
    labd: Option<Child>,
    path_first: Option<PathBuf>,
}

impl Lab {
    /// A lab with default options.
    pub fn start() -> Self {
        Self::start_with(LabOptions::default())
    }

    /// A lab with options.
    pub fn start_with(opts: LabOptions) -> Self {
        let bins = bin_dir();
        let guard = pool_lock();
        sweep_stale_pools();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pool = format!("{POOL_PREFIX}_{}_{n}", std::process::id());
        let dir = std::env::temp_dir().join(&pool);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        let image = dir.join("pool.img");
        let size = if opts.pool_mib == 0 {
            256
        } else {
            opts.pool_mib
        };
        fs::File::create(&image)
            .and_then(|f| f.set_len(size << 20))
            .expect("pool image");
        let mnt = dir.join("mnt");
        let image_s = image.display().to_string();
        let mnt_s = mnt.display().to_string();
        let t = POOL_CMD_TIMEOUT;
        run(
            "timeout",
            &[t, "zpool", "create", "-m", &mnt_s, &pool, &image_s],
        )
        .ok();
        let root = format!("{pool}/labd");
        run("timeout", &[t, "zfs", "create", &root]).ok();
        drop(guard);
        let socket = dir.join("labd.sock");
        let config = dir.join("labd.toml");
        let mut lab = Self {
            pool,
            root,
            dir,
            socket,
            config,
            bins,
            labd: None,
            path_first: None,
        };
        lab.path_first = opts
            .path_first
            .as_ref()
            .map(|p| PathBuf::from(p.replace("{dir}", &lab.dir.display().to_string())));
        lab.write_config(&lab.root.clone(), &opts);
        lab.spawn_labd();
        lab
    }

    /// Write labd's configuration with `root`.
    pub fn write_config(&self, root: &str, opts: &LabOptions) {
        let text = format!(
            "[api]\nsocket = \"{}\"\n{}\n\n[zfs]\nroot = \"{root}\"\n{}\n\n[daemon]\n{}\n\n{}\n",
            self.socket.display(),
            opts.api_extra,
            opts.zfs_extra,
            opts.daemon_extra,
            opts.tables
                .replace("{dir}", &self.dir.display().to_string())
        );
        fs::write(&self.config, text).expect("config");
    }

    /// Start labd and wait until it answers.
    pub fn spawn_labd(&mut self) {
        let log = fs::File::create(self.dir.join("labd.log")).expect("log file");
        let mut cmd = Command::new(self.bins.join("labd"));
        if let Some(first) = &self.path_first {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", first.display()));
        }
        let child = cmd
            .arg("--config")
            .arg(&self.config)
            .env("LABD_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn labd");
        self.labd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.labd.as_mut().map(Child::try_wait) {
                panic!("labd exited with {status}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("labd did not come up:\n{}", self.log());
    }

    /// labd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("labd.log")).unwrap_or_default()
    }

    /// labd's pid.
    pub fn labd_pid(&self) -> i32 {
        let id = self.labd.as_ref().expect("labd running").id();
        i32::try_from(id).expect("pid fits")
    }

    /// Send a signal to labd.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.labd_pid()), sig).expect("kill");
    }

    /// Wait for labd to exit and return its exit code.
    pub fn wait_labd(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.labd.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.labd = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// A `labctl` command on this lab's socket.
    pub fn labctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.bins.join("labctl"));
        cmd.arg("--socket").arg(&self.socket).args(args);
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Run `labctl` to completion.
    pub fn labctl(&self, args: &[&str]) -> Out {
        Out::from(self.labctl_cmd(args).output().expect("run labctl"))
    }

    /// Run `zfs`.
    pub fn zfs(&self, args: &[&str]) -> Out {
        run("zfs", args)
    }

    /// Full name of a dataset below the root.
    pub fn ds(&self, short: &str) -> String {
        format!("{}/{short}", self.root)
    }

    /// Every dataset and snapshot of the pool, sorted: the host's state, to compare before and
    /// after a refused request.
    pub fn inventory(&self) -> Vec<String> {
        let out = self
            .zfs(&["list", "-H", "-t", "all", "-o", "name", "-r", &self.pool])
            .ok();
        let mut names: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
        names.sort();
        names
    }

    /// Whether a dataset or snapshot exists, according to `zfs list`.
    pub fn exists(&self, name: &str) -> bool {
        self.zfs(&["list", "-H", "-t", "all", "-o", "name", name])
            .code
            == 0
    }

    /// A property's value (`zfs get -Hp -o value`).
    pub fn prop(&self, name: &str, property: &str) -> String {
        self.zfs(&["get", "-Hp", "-o", "value", property, name])
            .ok()
            .stdout
            .trim_end()
            .to_owned()
    }

    /// A property's source column.
    pub fn source(&self, name: &str, property: &str) -> String {
        self.zfs(&["get", "-H", "-o", "source", property, name])
            .ok()
            .stdout
            .trim_end()
            .to_owned()
    }

    /// Follow `labctl --output json events` in the background.
    pub fn events(&self) -> EventStream {
        self.events_with(&[])
    }

    /// Follow `labctl --output json events ARGS…` (filters) in the background.
    pub fn events_with(&self, args: &[&str]) -> EventStream {
        self.events_from(&[&["--output", "json", "events"], args].concat())
    }

    /// Follow `labctl ARGS…` (a full `events` command line printing JSON, e.g. with global
    /// options such as `--url`) in the background.
    pub fn events_from(&self, args: &[&str]) -> EventStream {
        let mut child = self
            .labctl_cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("labctl events");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        // Let the subscription reach labd before the caller acts.
        std::thread::sleep(Duration::from_millis(300));
        EventStream { child, rx }
    }

    /// Write a wrapper around the real `zfs` that sleeps `seconds` before running the
    /// subcommand `slow_cmd`, and return its path (for `[zfs] zfs = ...`). The zfs command it
    /// then runs is the real one.
    pub fn slow_zfs(dir: &Path, slow_cmd: &str, seconds: u32) -> PathBuf {
        let path = dir.join(format!("slow-zfs-{slow_cmd}"));
        let script = format!(
            "#!/bin/sh\nif [ \"$1\" = \"{slow_cmd}\" ]; then sleep {seconds}; fi\nexec zfs \"$@\"\n"
        );
        fs::write(&path, script).expect("wrapper");
        let _ = run("chmod", &["755", &path.display().to_string()]);
        path
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.labd.take() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(0));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_processes_using(&self.dir);
        // zfs-fuse sometimes reports busy right after activity: retry.
        let _guard = pool_lock();
        for _ in 0..10 {
            if run(
                "timeout",
                &[POOL_CMD_TIMEOUT, "zpool", "destroy", "-f", &self.pool],
            )
            .code
                == 0
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Events received by a background `labctl events`.
#[derive(Debug)]
pub struct EventStream {
    child: Child,
    rx: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl EventStream {
    /// Wait for an event matching `pred`, returning it; events before it are consumed.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(left) {
                Ok(v) if pred(&v) => return Some(v),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A userspace NFSv4 server (nfs-ganesha) on a free loopback port, serving the exports file
/// labd renders (`[exports] driver = "ganesha"`). Stopped on drop.
#[derive(Debug)]
pub struct Ganesha {
    child: Child,
    /// The NFS port.
    pub port: u16,
    /// The file of EXPORT blocks that ganesha's configuration includes (labd writes it).
    pub exports_file: PathBuf,
    /// ganesha's pid file (labd sends SIGHUP to it).
    pub pidfile: PathBuf,
    dir: PathBuf,
}

impl Ganesha {
    /// Start ganesha with its state under `dir`.
    pub fn start(dir: &Path) -> Self {
        let dir = dir.join("ganesha");
        fs::create_dir_all(dir.join("recovery")).expect("ganesha dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let exports_file = dir.join("exports.conf");
        fs::write(&exports_file, "").expect("exports file");
        let pidfile = dir.join("ganesha.pid");
        let config = dir.join("ganesha.conf");
        fs::write(
            &config,
            format!(
                "NFS_CORE_PARAM {{ Protocols = 4; Bind_addr = 127.0.0.1; NFS_Port = {port}; \
                 Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}\n\
                 NFSv4 {{ Graceless = true; RecoveryBackend = fs; RecoveryRoot = \"{}\"; \
                 Only_Numeric_Owners = true; }}\n\
                 %include \"{}\"\n",
                dir.join("recovery").display(),
                exports_file.display()
            ),
        )
        .expect("ganesha config");
        let child = Command::new("ganesha.nfsd")
            .arg("-F")
            .arg("-f")
            .arg(&config)
            .arg("-L")
            .arg(dir.join("ganesha.log"))
            .arg("-p")
            .arg(&pidfile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ganesha.nfsd (install nfs-ganesha nfs-ganesha-vfs)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "ganesha did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            exports_file,
            pidfile,
            dir,
        }
    }

    /// The `[exports]` table (for [`LabOptions::tables`]) that makes a lab's labd drive the
    /// ganesha that `Ganesha::start(&lab.dir)` starts.
    pub const LABD_CONFIG: &str = "[exports]\ndriver = \"ganesha\"\ndir = \"{dir}/exports.d\"\n\
        file = \"{dir}/ganesha/exports.conf\"\npidfile = \"{dir}/ganesha/ganesha.pid\"\n\
        other_files = []\n";

    /// An `nfs://` URL of `path` below the NFSv4 pseudo root, for libnfs (`nfs-cat`, `nfs-cp`),
    /// with the caller's uid and gid.
    pub fn url(&self, path: &str, uid: u32, gid: u32) -> String {
        format!(
            "nfs://127.0.0.1{path}?version=4&nfsport={}&uid={uid}&gid={gid}",
            self.port
        )
    }

    /// ganesha's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("ganesha.log")).unwrap_or_default()
    }
}

impl Drop for Ganesha {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test guest's directory (`vmlinuz`, `initrd.gz`; shared/reference/test-guest.md):
/// `$LABD_TEST_GUEST` when it holds both (tests/env/run-tests.sh builds it first), else built
/// here with `sh tests/env/build-test-guest.sh DIR` (DIR `/var/cache/labd-test-guest`).
pub fn test_guest_dir() -> PathBuf {
    let have = |d: &Path| d.join("vmlinuz").is_file() && d.join("initrd.gz").is_file();
    let dir = std::env::var_os("LABD_TEST_GUEST").map_or_else(
        || PathBuf::from("/var/cache/labd-test-guest"),
        PathBuf::from,
    );
    if have(&dir) {
        return dir;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("env/build-test-guest.sh");
    let script_s = script.display().to_string();
    let dir_s = dir.display().to_string();
    let out = run("sh", &[&script_s, &dir_s]);
    assert!(
        out.code == 0 && have(&dir),
        "cannot build the test guest into {dir_s}:\n{}",
        out.stderr
    );
    dir
}

/// For benchmarks: `count` datasets below the lab's root, in parents of 100 created with
/// `mountpoint=none` (a listing is what is measured, and zfs-fuse holds one file descriptor
/// per mount). Returns how long it took.
pub fn create_unmounted_tree(lab: &Lab, count: usize) -> Duration {
    let started = Instant::now();
    for i in 0..count {
        let parent = lab.ds(&format!("g{}", i / 100));
        if i % 100 == 0 {
            run("zfs", &["create", "-o", "mountpoint=none", &parent]).ok();
        }
        run("zfs", &["create", &format!("{parent}/d{i}")]).ok();
    }
    started.elapsed()
}

/// For benchmarks: the median of some timings.
pub fn median(mut timings: Vec<Duration>) -> Duration {
    timings.sort();
    timings.get(timings.len() / 2).copied().unwrap_or_default()
}

/// For benchmarks: a duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// SIGKILL every process whose command line names a path under `dir` (hypervisors a failed
/// test left running: they outlive labd by design and would keep the pool busy).
pub fn kill_processes_using(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
