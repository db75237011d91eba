//! The cloud-init seed on disk: `seed.iso` in the VM's directory, and the VM's SSH host key.
//!
//! # Files in the VM's directory
//!
//! * `seed.iso` ([`SEED_FILE`]): an ISO 9660 image labelled `cidata` holding `meta-data`,
//!   `user-data` and `network-config` at its root (rendered by `core::cloudinit`). QEMU and
//!   bhyve attach it read-only. Mode 0600: user-data holds the private host key.
//! * `ssh_host_ed25519_key` / `ssh_host_ed25519_key.pub` ([`HOST_KEY_FILE`],
//!   [`HOST_KEY_PUB_FILE`]): the guest's SSH host key pair, generated once by [`ensure_host_key`]
//!   (private key mode 0600). It goes into every seed, so the guest's host key is the one labd
//!   reports, across restarts and seed rebuilds, and clients can pin it.
//!
//! # Writing the ISO: two drivers, chosen at run time
//!
//! Both are compiled everywhere ([`SeedDriver::host_default`] picks by the OS labd runs on):
//!
//! * [`SeedDriver::Rust`] (default except on FreeBSD): hadris-iso 2.5.0 in process, with Rock
//!   Ridge (so `meta-data` keeps its lower-case name and its dash; plain ISO 9660 level 1
//!   would store `META_DAT`) and Joliet, volume label `cidata` (reference/crates.md §11: checked
//!   with `isoinfo` and `blkid`; this module's tests check it again with both).
//! * [`SeedDriver::Makefs`] (default on FreeBSD, base system): `makefs -t cd9660 -o
//!   rockridge,label=cidata <iso> <dir>` (makefs(8) "CD9660-specific options": `rockridge`,
//!   `label`; `-o` takes a comma-separated list), the command vm-bhyve uses in its short
//!   spelling `-o R,L=cidata` (reference/bhyve.md §6). makefs stores the label in d-characters,
//!   so it becomes `CIDATA`, which cloud-init accepts as well. The argv is golden-tested
//!   (`seed/fixtures/makefs.argv`) and, where Debian's `makefs` package (NetBSD's makefs) is
//!   installed, run for real.
//!
//! # Atomic and private
//!
//! Everything is first written inside a private staging directory (mode 0700) in the VM's own
//! directory, so the final `rename` stays within one filesystem and is atomic: a guest (or a
//! crash) sees the old seed or the new one, never half of one, and a running guest keeps reading
//! the old inode it has open. The staging directory is removed on success and on failure.
//!
//! The host key's commit point is the private key file: the pair is generated in staging,
//! the public half is moved in first, the private half last. A crash in between leaves a
//! public file without a private one, and the next call generates a new pair (nothing was
//! handed out yet). An existing private key is never regenerated; a missing `.pub` is
//! derived from it again (`ssh-keygen -y`). A key file that is a symlink or not a regular
//! file is refused rather than followed (it would put a file of the host into the guest's
//! seed).
//!
//! # When the guest ignores its seed
//!
//! See `core::cloudinit` ("Debugging"). On the host: `isoinfo -d -i seed.iso` (volume id),
//! `isoinfo -R -f -i seed.iso` (the three names), `isoinfo -R -x /user-data -i seed.iso`
//! (the content); on FreeBSD `tar -tf seed.iso` lists it too.

use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::core::cloudinit::{HostKey, SeedFiles};
use crate::core::vmspec::validate_vm_name;
use crate::host::runner::{Argv, RunError, Runner};

/// The seed image, in the VM's directory.
pub const SEED_FILE: &str = "seed.iso";
/// The guest's private SSH host key, in the VM's directory.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// The guest's public SSH host key, in the VM's directory.
pub const HOST_KEY_PUB_FILE: &str = "ssh_host_ed25519_key.pub";
/// The volume label cloud-init's NoCloud datasource looks for.
pub const SEED_LABEL: &str = "cidata";

/// The key generator, in FreeBSD's base system and Debian's openssh-client.
const SSH_KEYGEN: &str = "ssh-keygen";
/// Largest key file labd reads (an ed25519 private key is about 400 bytes).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// How `seed.iso` is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedDriver {
    /// hadris-iso, in process.
    Rust,
    /// makefs(8) at this path.
    Makefs(String),
}

impl SeedDriver {
    /// FreeBSD's `/usr/sbin/makefs` on FreeBSD, the Rust writer elsewhere (chosen at run time,
    /// so both are built and tested everywhere).
    pub fn host_default() -> Self {
        if std::env::consts::OS == "freebsd" {
            SeedDriver::Makefs("/usr/sbin/makefs".to_owned())
        } else {
            SeedDriver::Rust
        }
    }
}

/// Why a seed or a host key could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// A file operation failed.
    #[error("cannot {what} {}", path.display())]
    Io {
        /// What labd was doing (`write`, `rename`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The ISO writer failed.
    #[error("cannot build the ISO image {}", path.display())]
    Iso {
        /// The image being written.
        path: PathBuf,
        /// Why.
        #[source]
        source: hadris_iso::write::IsoCreationError,
    },
    /// makefs or ssh-keygen failed.
    #[error(transparent)]
    Command(#[from] RunError),
    /// A path or a file's content is not what labd needs.
    #[error("{}: {detail}", path.display())]
    Invalid {
        /// The path.
        path: PathBuf,
        /// The rule, as a lower-case phrase.
        detail: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SeedError + use<> {
    let path = path.to_owned();
    move |source| SeedError::Io { what, path, source }
}

fn invalid(path: &Path, detail: impl Into<String>) -> SeedError {
    SeedError::Invalid {
        path: path.to_owned(),
        detail: detail.into(),
    }
}

/// Write `files` as `<dir>/seed.iso` (atomically, mode 0600) and return its path. `dir` is the
/// VM's directory (an absolute path); `runner` runs makefs for [`SeedDriver::Makefs`].
pub async fn write_seed(
    runner: &Runner,
    dir: &Path,
    files: &SeedFiles,
    driver: &SeedDriver,
) -> Result<PathBuf, SeedError> {
    check_dir(dir)?;
    let target = dir.join(SEED_FILE);
    let staging = Staging::create(dir)?;
    let iso = staging.path.join(SEED_FILE);
    match driver {
        SeedDriver::Rust => {
            let iso = iso.clone();
            let files = files.clone();
            tokio::task::spawn_blocking(move || write_iso_rust(&iso, &files))
                .await
                .map_err(|e| io_err("write", &target)(io::Error::other(e)))??;
        }
        SeedDriver::Makefs(program) => {
            let src = staging.path.join("cidata");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&src)
                .map_err(io_err("create", &src))?;
            for (name, text) in files.files() {
                write_private(&src.join(name), text.as_bytes())?;
            }
            // makefs opens the image with O_TRUNC and keeps an existing file's mode: creating
            // it first makes it 0600 from the start.
            write_private(&iso, b"")?;
            runner.run(&makefs_argv(program, &iso, &src)?).await?;
            let len = std::fs::metadata(&iso).map_err(io_err("read", &iso))?.len();
            if len == 0 {
                return Err(invalid(&iso, "makefs exited 0 but wrote no image"));
            }
            sync_file(&iso)?;
        }
    }
    std::fs::rename(&iso, &target).map_err(io_err("rename into place", &target))?;
    sync_dir(dir)?;
    Ok(target)
}

/// The makefs(8) command that writes `iso` from the files in `src`.
fn makefs_argv(program: &str, iso: &Path, src: &Path) -> Result<Argv, SeedError> {
    Ok(Argv::new(program)
        .args(["-t", "cd9660", "-o"])
        .arg(format!("rockridge,label={SEED_LABEL}"))
        .arg(arg_path(iso)?)
        .arg(arg_path(src)?))
}

/// A path as an argument: absolute (so it cannot be read as an option) and UTF-8.
fn arg_path(p: &Path) -> Result<String, SeedError> {
    if !p.is_absolute() {
        return Err(invalid(p, "must be an absolute path"));
    }
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(p, "is not valid UTF-8"))
}

fn check_dir(dir: &Path) -> Result<(), SeedError> {
    arg_path(dir)?;
    let m = std::fs::metadata(dir).map_err(io_err("read", dir))?;
    if !m.is_dir() {
        return Err(invalid(dir, "is not a directory"));
    }
    Ok(())
}

fn write_iso_rust(path: &Path, files: &SeedFiles) -> Result<(), SeedError> {
    use hadris_iso::read::PathSeparator;
    use hadris_iso::write::options::{CreationFeatures, IsoFormatOptions};
    use hadris_iso::write::{InputEntry, InputMetadata, InputTree, IsoImageWriter};

    let entries = files
        .files()
        .iter()
        .map(|(name, text)| {
            InputEntry::file(*name, text.as_bytes().to_vec()).with_metadata(InputMetadata {
                mode: Some(0o100_444),
                ..InputMetadata::default()
            })
        })
        .collect();
    let options = IsoFormatOptions {
        volume_name: SEED_LABEL.to_owned(),
        system_id: None,
        volume_set_id: None,
        publisher_id: None,
        preparer_id: None,
        application_id: None,
        sector_size: 2048,
        path_separator: PathSeparator::ForwardSlash,
        features: CreationFeatures::extensions(),
        strict_charset: false,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    let file = IsoImageWriter::create(
        file,
        InputTree::new(PathSeparator::ForwardSlash, entries),
        options,
    )
    .map_err(|source| SeedError::Iso {
        path: path.to_owned(),
        source,
    })?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Return the VM's host key pair, generating it (`ssh-keygen`, comment `vm_name`) in `dir`
/// when it does not exist yet. An existing private key is never replaced.
pub async fn ensure_host_key(
    runner: &Runner,
    dir: &Path,
    vm_name: &str,
) -> Result<HostKey, SeedError> {
    check_dir(dir)?;
    validate_vm_name(vm_name).map_err(|e| invalid(dir, e.to_string()))?;
    let private = dir.join(HOST_KEY_FILE);
    let public = dir.join(HOST_KEY_PUB_FILE);
    match std::fs::symlink_metadata(&private) {
        Ok(m) if m.is_file() => {
            if m.permissions().mode() & 0o077 != 0 {
                std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))
                    .map_err(io_err("make private", &private))?;
            }
            let key = read_key(&private)?;
            let line = match read_public(&public) {
                Some(line) => line,
                None => {
                    let line = derive_public(runner, &private).await?;
                    replace_file(dir, &public, format!("{line}\n").as_bytes(), 0o644)?;
                    line
                }
            };
            Ok(HostKey {
                private: key,
                public: line,
            })
        }
        Ok(_) => Err(invalid(
            &private,
            "is not a regular file (a symlink?); labd does not follow it",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            generate(runner, dir, vm_name, &private, &public).await
        }
        Err(e) => Err(io_err("read", &private)(e)),
    }
}

async fn generate(
    runner: &Runner,
    dir: &Path,
    vm_name: &str,
    private: &Path,
    public: &Path,
) -> Result<HostKey, SeedError> {
    let staging = Staging::create(dir)?;
    let tmp = staging.path.join(HOST_KEY_FILE);
    let argv = Argv::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", vm_name, "-f"])
        .arg(arg_path(&tmp)?);
    runner.run(&argv).await?;
    let tmp_pub = staging.path.join(HOST_KEY_PUB_FILE);
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("make private", &tmp))?;
    let key = read_key(&tmp)?;
    let line = read_public(&tmp_pub).ok_or_else(|| {
        invalid(
            &tmp_pub,
            "ssh-keygen wrote no 'ssh-ed25519 AAAA…' public key",
        )
    })?;
    sync_file(&tmp)?;
    sync_file(&tmp_pub)?;
    std::fs::rename(&tmp_pub, public).map_err(io_err("rename into place", public))?;
    std::fs::rename(&tmp, private).map_err(io_err("rename into place", private))?;
    sync_dir(dir)?;
    Ok(HostKey {
        private: key,
        public: line,
    })
}

/// `ssh-keygen -y -f KEY`: the public key of a private key.
async fn derive_public(runner: &Runner, private: &Path) -> Result<String, SeedError> {
    let out = runner
        .run(
            &Argv::new(SSH_KEYGEN)
                .args(["-y", "-f"])
                .arg(arg_path(private)?),
        )
        .await?;
    public_line(&out.stdout)
        .ok_or_else(|| invalid(private, "ssh-keygen -y printed no ed25519 public key"))
}

fn read_limited(path: &Path) -> Result<String, SeedError> {
    let m = std::fs::symlink_metadata(path).map_err(io_err("read", path))?;
    if !m.is_file() {
        return Err(invalid(path, "is not a regular file"));
    }
    if m.len() > MAX_KEY_FILE {
        return Err(invalid(path, "is too large to be an SSH key"));
    }
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

fn read_key(path: &Path) -> Result<String, SeedError> {
    let text = read_limited(path)?;
    if !text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return Err(invalid(path, "is not an OpenSSH private key"));
    }
    Ok(text)
}

/// The public key line of a `.pub` file, if it holds a usable one.
fn read_public(path: &Path) -> Option<String> {
    public_line(&read_limited(path).ok()?)
}

fn public_line(text: &str) -> Option<String> {
    let line = text.lines().next()?.trim();
    (line.starts_with("ssh-ed25519 AAAA") && !line.chars().any(char::is_control))
        .then(|| line.to_owned())
}

/// Create `path` with `data`, mode 0600, failing if it exists.
fn write_private(path: &Path, data: &[u8]) -> Result<(), SeedError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

/// Replace `path` atomically with `data` at `mode`.
fn replace_file(dir: &Path, path: &Path, data: &[u8], mode: u32) -> Result<(), SeedError> {
    let staging = Staging::create(dir)?;
    let tmp = staging.path.join("file");
    write_private(&tmp, data)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))?;
    sync_dir(dir)
}

fn sync_file(path: &Path) -> Result<(), SeedError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", path))
}

fn sync_dir(dir: &Path) -> Result<(), SeedError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", dir))
}

/// A private directory (0700) inside the VM's directory, removed when dropped.
#[derive(Debug)]
struct Staging {
    path: PathBuf,
}

impl Staging {
    fn create(dir: &Path) -> Result<Self, SeedError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut last = None;
        // A name left by a labd that crashed with the same pid is skipped, not reused.
        for _ in 0..16 {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".labd-staging.{}.{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(path),
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
        Err(invalid(
            &last.unwrap_or_else(|| dir.to_owned()),
            "no free staging directory name",
        ))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a staging directory");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "labd-seed-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn runner() -> Runner {
        Runner::new(Duration::from_secs(30))
    }

    fn files(n: &str) -> SeedFiles {
        SeedFiles {
            meta_data: format!("instance-id: \"iid-{n}\"\nlocal-hostname: \"vm1\"\n"),
            user_data: format!("#cloud-config\n# ünïcode stays\nfqdn: \"vm{n}.lan\"\n"),
            network_config: "version: 2\nethernets: {}\n".to_owned(),
        }
    }

    fn run(program: &str, args: &[&str]) -> String {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (tests/env/install.sh installs it)"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Read the image back with tools that share no code with its writer: util-linux's
    /// blkid (what udev and cloud-init's label search rely on) and genisoimage's isoinfo.
    fn check_image(iso: &Path, want: &SeedFiles, label: &str) {
        let iso_s = iso.to_str().unwrap();
        let probe = run("blkid", &["-p", iso_s]);
        assert!(probe.contains(&format!("LABEL=\"{label}\"")), "{probe}");
        assert!(probe.contains("TYPE=\"iso9660\""), "{probe}");
        let listing = run("isoinfo", &["-R", "-f", "-i", iso_s]);
        let mut names: Vec<&str> = listing.lines().collect();
        names.sort_unstable();
        assert_eq!(names, ["/meta-data", "/network-config", "/user-data"]);
        for (name, text) in want.files() {
            let got = run("isoinfo", &["-R", "-x", &format!("/{name}"), "-i", iso_s]);
            assert_eq!(got, text, "{name}");
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn rust_driver_writes_a_seed_linux_reads() {
        let d = TempDir::new("rust");
        let first = files("1");
        let iso = write_seed(&runner(), &d.0, &first, &SeedDriver::Rust)
            .await
            .unwrap();
        assert_eq!(iso, d.0.join("seed.iso"));
        check_image(&iso, &first, "cidata");
        // Joliet names too (Windows-style readers, FreeBSD's cd9660 without RR).
        let joliet = run("isoinfo", &["-J", "-f", "-i", iso.to_str().unwrap()]);
        assert!(joliet.lines().any(|l| l == "/network-config"), "{joliet}");
        assert_eq!(mode(&iso), 0o600, "user-data holds the private host key");
        // A rebuild replaces the image in one rename and leaves nothing behind.
        let second = files("2");
        write_seed(&runner(), &d.0, &second, &SeedDriver::Rust)
            .await
            .unwrap();
        check_image(&iso, &second, "cidata");
        assert_eq!(entries(&d.0), ["seed.iso"]);
    }

    #[test]
    fn makefs_argv_golden() {
        let fixture = include_str!("seed/fixtures/makefs.argv");
        let want: String = fixture
            .lines()
            .skip_while(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        let staging = Path::new("/tank/labd/vms/docker-host/.labd-staging.1.0");
        let argv = makefs_argv(
            "/usr/sbin/makefs",
            &staging.join("seed.iso"),
            &staging.join("cidata"),
        )
        .unwrap();
        let got: String = argv.to_vec().iter().map(|a| format!("{a}\n")).collect();
        assert_eq!(got, want);
        // A relative path could be read as an option.
        assert!(makefs_argv("makefs", Path::new("-x.iso"), staging).is_err());
    }

    /// Debian's `makefs` package is NetBSD's makefs, from which FreeBSD's descends: it takes
    /// the same cd9660 options, so the argv is run for real here.
    #[tokio::test]
    async fn makefs_driver_writes_a_seed_linux_reads() {
        let d = TempDir::new("makefs");
        let want = files("m");
        let driver = SeedDriver::Makefs("/usr/sbin/makefs".to_owned());
        let iso = write_seed(&runner(), &d.0, &want, &driver).await.unwrap();
        check_image(&iso, &want, "CIDATA");
        assert_eq!(mode(&iso), 0o600);
        assert_eq!(entries(&d.0), ["seed.iso"]);
        // A failing makefs leaves the old seed and no staging behind.
        let broken = SeedDriver::Makefs("/nonexistent/makefs".to_owned());
        assert!(matches!(
            write_seed(&runner(), &d.0, &files("x"), &broken).await,
            Err(SeedError::Command(RunError::Spawn { .. }))
        ));
        check_image(&iso, &want, "CIDATA");
        assert_eq!(entries(&d.0), ["seed.iso"]);
        // One that "succeeds" without writing is caught too.
        let silent = SeedDriver::Makefs("/bin/true".to_owned());
        assert!(matches!(
            write_seed(&runner(), &d.0, &files("y"), &silent).await,
            Err(SeedError::Invalid { .. })
        ));
        check_image(&iso, &want, "CIDATA");
        assert_eq!(entries(&d.0), ["seed.iso"]);
    }

    #[tokio::test]
    async fn refuses_bad_dirs() {
        let f = files("1");
        let e = write_seed(&runner(), Path::new("rel/dir"), &f, &SeedDriver::Rust).await;
        assert!(matches!(e, Err(SeedError::Invalid { .. })), "{e:?}");
        let e = write_seed(
            &runner(),
            Path::new("/nonexistent/labd"),
            &f,
            &SeedDriver::Rust,
        )
        .await;
        assert!(matches!(e, Err(SeedError::Io { .. })), "{e:?}");
    }

    #[tokio::test]
    async fn host_key_is_generated_once() {
        let d = TempDir::new("key");
        let r = runner();
        let k = ensure_host_key(&r, &d.0, "vm1").await.unwrap();
        let private = d.0.join(HOST_KEY_FILE);
        let public = d.0.join(HOST_KEY_PUB_FILE);
        assert_eq!(mode(&private), 0o600);
        assert!(k.public.starts_with("ssh-ed25519 AAAA"), "{}", k.public);
        assert!(k.public.ends_with(" vm1"), "{}", k.public);
        assert_eq!(std::fs::read_to_string(&private).unwrap(), k.private);
        assert_eq!(
            std::fs::read_to_string(&public).unwrap().trim_end(),
            k.public
        );
        // ssh-keygen agrees that the two halves belong together.
        let derived = run("ssh-keygen", &["-y", "-f", private.to_str().unwrap()]);
        let fields = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        assert_eq!(fields(&derived), fields(&k.public));
        assert_eq!(entries(&d.0), [HOST_KEY_FILE, HOST_KEY_PUB_FILE]);

        // Never regenerated: the pin survives restarts and seed rebuilds.
        assert_eq!(ensure_host_key(&r, &d.0, "vm1").await.unwrap(), k);
        // A lost .pub is derived again from the private key.
        std::fs::remove_file(&public).unwrap();
        let again = ensure_host_key(&r, &d.0, "vm1").await.unwrap();
        assert_eq!(again.private, k.private);
        assert_eq!(fields(&again.public), fields(&k.public));
        assert!(public.exists());
        // A private key readable by others is made private again.
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_host_key(&r, &d.0, "vm1").await.unwrap();
        assert_eq!(mode(&private), 0o600);
        assert_eq!(entries(&d.0), [HOST_KEY_FILE, HOST_KEY_PUB_FILE]);
    }

    #[tokio::test]
    async fn host_key_refuses_symlinks_and_bad_names() {
        let d = TempDir::new("link");
        let secret = d.0.join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        std::os::unix::fs::symlink(&secret, d.0.join(HOST_KEY_FILE)).unwrap();
        let e = ensure_host_key(&runner(), &d.0, "vm1").await.unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let d = TempDir::new("name");
        for bad in ["-oops", "Vm", "a b"] {
            assert!(
                ensure_host_key(&runner(), &d.0, bad).await.is_err(),
                "{bad}"
            );
        }
        assert!(entries(&d.0).is_empty());
    }

    /// The whole path the lead wires at `vm create`: key, render, write; then the guest's
    /// view of user-data (extracted from the image) carries exactly that key.
    #[tokio::test]
    async fn create_path_end_to_end() {
        use crate::core::cloudinit::render;
        use crate::core::vmspec::{Template, instantiate};
        let d = TempDir::new("e2e");
        let t = Template::parse(include_str!("../../../vm-templates/docker-host.toml")).unwrap();
        let spec = instantiate(&t, "docker-host", "docker-host", uuid::Uuid::from_u128(9)).unwrap();
        let key = ensure_host_key(&runner(), &d.0, &spec.name).await.unwrap();
        let seed = render(&spec, &key).unwrap();
        let iso = write_seed(&runner(), &d.0, &seed, &SeedDriver::Rust)
            .await
            .unwrap();
        check_image(&iso, &seed, "cidata");
        let user_data = run(
            "isoinfo",
            &["-R", "-x", "/user-data", "-i", iso.to_str().unwrap()],
        );
        let v: serde_norway::Value = serde_norway::from_str(&user_data).unwrap();
        assert_eq!(
            v["ssh_keys"]["ed25519_public"].as_str(),
            Some(key.public.as_str())
        );
        assert_eq!(
            v["ssh_keys"]["ed25519_private"].as_str(),
            Some(key.private.as_str())
        );
    }
}
