//! Disk images: a VM's disk made from a cloud image (`labctl vm create --image NAME`).
//!
//! Images are files in `[vms] images_dir`, named by their file name only: a request cannot
//! make labd (root) read an arbitrary path into a disk that its caller then boots. The format
//! is read from the file's first bytes, never from its name:
//!
//! * raw: copied by labd itself, block by block, leaving all-zero blocks as holes, so the
//!   disk stays as sparse as the image (a 2 GiB Debian image holds about 600 MiB of data);
//! * qcow2 (magic `QFI\xfb`): converted with `qemu-img convert -f qcow2 -O raw` (on FreeBSD,
//!   qemu-img comes with the `qemu-tools` package), whose `-p` progress becomes the job's;
//! * anything else recognisable (compressed, VMDK, VHDX) is refused with what to do instead.
//!
//! The disk then grows to the size the template or the request asks for (`set_len`: sparse);
//! a size below the image's is refused, since shrinking would cut the guest's file system.
//! cloud-init's growpart grows the guest's partition and file system at first boot.
//!
//! A zvol disk is written differently ([`import_to_device`]): its volume already exists at the
//! final size, so nothing is created, truncated, grown or removed; the image is written into
//! the device node. All-zero blocks of a raw image are still skipped by seeking, because a new
//! volume reads back as zeros: it is all holes (`zfs create -s` only leaves out the
//! reservation, it allocates nothing) and a hole of a ZFS object reads as zeros (the zvol read
//! paths, `zvol_os.c`, go through `dmu_read`). qemu-img is told the same (`-n
//! --target-is-zero`: write into the existing target, skip its zero blocks).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::runner::{Argv, Runner};
use crate::core::jobs::{self, log_line, progress};

/// Copy unit of the raw import.
const CHUNK: usize = 1 << 20;
/// Holes are left for all-zero blocks of this size (ZFS's default recordsize).
const HOLE: usize = 128 << 10;
/// Longest a qcow2 conversion may take.
const CONVERT_TIMEOUT: Duration = Duration::from_secs(3600);

/// An image's format, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A plain disk image.
    Raw,
    /// QEMU's copy-on-write format.
    Qcow2,
}

/// Why an image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The name is not a plain file name.
    #[error("'{0}' is not an image name: give the file name of an image in {1}")]
    BadName(String, String),
    /// No such image.
    #[error("no image '{name}' in {dir} (put the file there first)")]
    Missing {
        /// The name.
        name: String,
        /// The images directory.
        dir: String,
    },
    /// A format labd does not import.
    #[error("'{name}' is {what}; {hint}")]
    Unsupported {
        /// The name.
        name: String,
        /// What it is.
        what: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// The disk would be smaller than the image.
    #[error("the image holds {image} bytes, more than the disk size of {disk} bytes")]
    TooSmall {
        /// The image's virtual size.
        image: u64,
        /// The requested size.
        disk: u64,
    },
    /// Reading or writing failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// qemu-img failed.
    #[error("qemu-img: {0}")]
    QemuImg(String),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io { what, path, source }
}

/// The image file `name` in `dir`, checked: a plain name of an existing regular file.
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf, ImageError> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\0'])
        && name.len() <= 255;
    if !plain {
        return Err(ImageError::BadName(
            name.to_owned(),
            dir.display().to_string(),
        ));
    }
    let path = dir.join(name);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(path),
        _ => Err(ImageError::Missing {
            name: name.to_owned(),
            dir: dir.display().to_string(),
        }),
    }
}

/// The format of the image at `path`, from its magic bytes.
pub async fn detect(path: &Path) -> Result<Format, ImageError> {
    let mut head = [0u8; 8];
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(io("cannot open", path))?;
    let n = f.read(&mut head).await.map_err(io("cannot read", path))?;
    classify(&head[..n], &path.display().to_string())
}

fn classify(head: &[u8], name: &str) -> Result<Format, ImageError> {
    let unsupported = |what, hint| ImageError::Unsupported {
        name: name.to_owned(),
        what,
        hint,
    };
    if head.starts_with(b"QFI\xfb") {
        Ok(Format::Qcow2)
    } else if head.starts_with(b"\xfd7zXZ\x00") {
        Err(unsupported("xz-compressed", "decompress it first (unxz)"))
    } else if head.starts_with(b"\x1f\x8b") {
        Err(unsupported(
            "gzip-compressed",
            "decompress it first (gunzip)",
        ))
    } else if head.starts_with(b"KDMV") {
        Err(unsupported(
            "a VMDK image",
            "convert it to raw or qcow2 (qemu-img convert -O raw)",
        ))
    } else if head.starts_with(b"vhdxfile") {
        Err(unsupported(
            "a VHDX image",
            "convert it to raw or qcow2 (qemu-img convert -O raw)",
        ))
    } else {
        Ok(Format::Raw)
    }
}

/// What an image is written into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dest {
    /// A new file, created by the import (`create_new`) and sized with `set_len`.
    NewFile,
    /// An existing device of the final size whose every block reads as zeros (a new zvol):
    /// opened for writing only, never created, truncated, resized or removed.
    ZeroedDevice,
}

/// Make the new disk `dst` from image `src`, grown to `size` (or the image's size). Reports
/// progress on the current job. `dst` must not exist. Returns the disk's size.
pub async fn import(src: &Path, dst: &Path, size: Option<u64>) -> Result<u64, ImageError> {
    let (target, virtual_size) = write_image(src, dst, size, Dest::NewFile).await?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dst)
        .map_err(io("cannot open", dst))?;
    f.set_len(target).map_err(io("cannot grow", dst))?;
    f.sync_all().map_err(io("cannot sync", dst))?;
    if target > virtual_size {
        log_line(format!("grew {} to {target} bytes", dst.display()));
    }
    progress(100);
    Ok(target)
}

/// Write image `src` into `device`, the node of a new volume of `size` bytes that reads as
/// zeros (module docs). The device is not resized: the volume was created at its final size.
/// Reports progress on the current job. Returns `size`.
pub async fn import_to_device(src: &Path, device: &Path, size: u64) -> Result<u64, ImageError> {
    write_image(src, device, Some(size), Dest::ZeroedDevice).await?;
    progress(100);
    Ok(size)
}

/// Check the image against the disk size and write it into `dst`; returns the disk's size and
/// the image's.
async fn write_image(
    src: &Path,
    dst: &Path,
    size: Option<u64>,
    dest: Dest,
) -> Result<(u64, u64), ImageError> {
    let format = detect(src).await?;
    let virtual_size = match format {
        Format::Raw => std::fs::metadata(src)
            .map_err(io("cannot read", src))?
            .len(),
        Format::Qcow2 => qcow2_size(src).await?,
    };
    let target = size.unwrap_or(virtual_size);
    if target < virtual_size {
        return Err(ImageError::TooSmall {
            image: virtual_size,
            disk: target,
        });
    }
    log_line(format!(
        "importing {} ({format:?}, {virtual_size} bytes) into {}",
        src.display(),
        dst.display()
    ));
    match format {
        Format::Raw => {
            let (s, d) = (src.to_owned(), dst.to_owned());
            let job = jobs::current();
            let report = move |pct| {
                if let Some(j) = &job {
                    j.progress(pct);
                }
            };
            tokio::task::spawn_blocking(move || copy_sparse(&s, &d, virtual_size, dest, report))
                .await
                .map_err(|e| ImageError::QemuImg(format!("the copy task failed: {e}")))??;
        }
        Format::Qcow2 => convert_qcow2(src, dst, dest).await?,
    }
    Ok((target, virtual_size))
}

/// Copy `len` bytes of `src` to `dst`, skipping all-zero blocks: holes in a new file, blocks
/// left as they are (zeros) on a zeroed device.
fn copy_sparse(
    src: &Path,
    dst: &Path,
    len: u64,
    dest: Dest,
    progress: impl Fn(u8),
) -> Result<(), ImageError> {
    let mut input = std::fs::File::open(src).map_err(io("cannot open", src))?;
    let mut output = match dest {
        Dest::NewFile => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dst)
            .map_err(io("cannot create", dst))?,
        Dest::ZeroedDevice => std::fs::OpenOptions::new()
            .write(true)
            .open(dst)
            .map_err(io("cannot open", dst))?,
    };
    let mut buf = vec![0u8; CHUNK];
    let mut done: u64 = 0;
    let mut last_pct = 0;
    loop {
        let n = read_full(&mut input, &mut buf).map_err(io("cannot read", src))?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(HOLE) {
            if block.iter().all(|&b| b == 0) {
                let skip = i64::try_from(block.len()).unwrap_or(i64::MAX);
                output
                    .seek(SeekFrom::Current(skip))
                    .map_err(io("cannot seek", dst))?;
            } else {
                output.write_all(block).map_err(io("cannot write", dst))?;
            }
        }
        done += n as u64;
        let pct = u8::try_from(done.saturating_mul(99) / len.max(1)).unwrap_or(99);
        if pct != last_pct {
            progress(pct);
            last_pct = pct;
        }
    }
    if dest == Dest::NewFile {
        // Trailing holes: the length comes from set_len, not from a write.
        output.set_len(done).map_err(io("cannot size", dst))?;
    }
    output.sync_all().map_err(io("cannot sync", dst))
}

/// Read until `buf` is full or the input ends.
fn read_full(input: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// A qcow2 image's virtual size (`qemu-img info --output=json`).
async fn qcow2_size(src: &Path) -> Result<u64, ImageError> {
    let argv = Argv::new("qemu-img")
        .args(["info", "-f", "qcow2", "--output=json"])
        .arg(src.display().to_string());
    let out = Runner::new(Duration::from_secs(60))
        .run(&argv)
        .await
        .map_err(|e| ImageError::QemuImg(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .map_err(|e| ImageError::QemuImg(format!("unexpected `qemu-img info` output: {e}")))?;
    v.get("virtual-size")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| ImageError::QemuImg("`qemu-img info` gave no virtual-size".to_owned()))
}

/// The qemu-img command that writes qcow2 image `src` as raw into `dst`: `qemu-img convert -p
/// -f qcow2 -O raw SRC DST`, which creates the file; into a zeroed device with `-n` (skip the
/// target's creation: the volume exists) and `--target-is-zero` (it reads as zeros, so zero
/// blocks need not be written; qemu-img.1, QEMU 5.0+).
fn convert_argv(src: &Path, dst: &Path, dest: Dest) -> Argv {
    let mut argv = Argv::new("qemu-img").args(["convert", "-p"]);
    if dest == Dest::ZeroedDevice {
        argv = argv.args(["-n", "--target-is-zero"]);
    }
    argv.args(["-f", "qcow2", "-O", "raw"])
        .arg(src.display().to_string())
        .arg(dst.display().to_string())
}

/// Run [`convert_argv`], its `-p` progress passed on to the job.
async fn convert_qcow2(src: &Path, dst: &Path, dest: Dest) -> Result<(), ImageError> {
    let argv = convert_argv(src, dst, dest);
    log_line(format!("$ {argv}"));
    let words = argv.to_vec();
    let mut child = tokio::process::Command::new(&words[0])
        .args(&words[1..])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ImageError::QemuImg(format!("cannot run qemu-img: {e}")))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| ImageError::QemuImg("no stdout".to_owned()))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| ImageError::QemuImg("no stderr".to_owned()))?;
    let watch = async {
        // `-p` redraws "    (42.00/100%)\r" on stdout.
        let mut buf = [0u8; 256];
        let mut text = String::new();
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(pct) = last_percent(&text) {
                progress(pct.min(99));
            }
            let keep = text.len().saturating_sub(64);
            text.drain(..keep);
        }
    };
    let run = async {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err).await;
        (child.wait().await, err)
    };
    let ((status, err), ()) =
        tokio::time::timeout(CONVERT_TIMEOUT, async { tokio::join!(run, watch) })
            .await
            .map_err(|_| {
                ImageError::QemuImg("the conversion took longer than an hour".to_owned())
            })?;
    let status = status.map_err(|e| ImageError::QemuImg(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        // A half-written file goes; a device node is never removed (the caller destroys the
        // volume with the VM's dataset).
        if dest == Dest::NewFile {
            let _ = std::fs::remove_file(dst);
        }
        Err(ImageError::QemuImg(format!("{status}: {}", err.trim())))
    }
}

/// The last whole percentage in qemu-img's progress text.
fn last_percent(text: &str) -> Option<u8> {
    let end = text.rfind("/100%)")?;
    let start = text[..end].rfind('(')? + 1;
    let value: f64 = text[start..end].trim().parse().ok()?;
    // The float is in 0..=100: the cast cannot truncate meaningfully.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(value.clamp(0.0, 100.0) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_come_from_magic_bytes() {
        assert_eq!(
            classify(b"QFI\xfb\0\0\0\x03", "a").ok(),
            Some(Format::Qcow2)
        );
        assert_eq!(classify(b"\xebc\x90\0", "a").ok(), Some(Format::Raw));
        assert_eq!(classify(b"", "a").ok(), Some(Format::Raw));
        for (head, word) in [
            (&b"\xfd7zXZ\x00\x00"[..], "xz"),
            (b"\x1f\x8b\x08", "gzip"),
            (b"KDMV\x01", "VMDK"),
            (b"vhdxfile", "VHDX"),
        ] {
            let e = classify(head, "img").expect_err(word).to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn names_are_plain_files_in_the_images_dir() {
        let dir = std::env::temp_dir().join(format!("labd-images-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("deb.raw"), b"x").expect("image");
        assert_eq!(resolve(&dir, "deb.raw").ok(), Some(dir.join("deb.raw")));
        for bad in ["../etc/shadow", "/etc/shadow", ".hidden", "", "a/b"] {
            assert!(
                matches!(resolve(&dir, bad), Err(ImageError::BadName(..))),
                "{bad}"
            );
        }
        assert!(matches!(
            resolve(&dir, "nope.raw"),
            Err(ImageError::Missing { .. })
        ));
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn progress_text_parses() {
        assert_eq!(
            last_percent("    (0.00/100%)\r    (42.17/100%)\r"),
            Some(42)
        );
        assert_eq!(last_percent("    (100.00/100%)\r\n"), Some(100));
        assert_eq!(last_percent("nothing"), None);
    }

    #[tokio::test]
    async fn raw_images_are_copied_sparse_and_grown() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("labd-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let src = dir.join("img.raw");
        // 8 MiB with data at the start, in the middle and in the last block.
        let mut data = vec![0u8; 8 << 20];
        data[..512].fill(0xaa);
        data[4 << 20..(4 << 20) + 4096].fill(0xbb);
        let last = data.len() - 1;
        data[last] = 0xcc;
        std::fs::write(&src, &data).expect("image");
        let dst = dir.join("disk0.img");
        let size = import(&src, &dst, Some(64 << 20)).await.expect("import");
        assert_eq!(size, 64 << 20);
        let got = std::fs::read(&dst).expect("disk");
        assert_eq!(got.len(), 64 << 20);
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|&b| b == 0));
        // Three 128 KiB blocks hold data; the rest are holes (allow file system slack).
        let allocated = std::fs::metadata(&dst).expect("meta").blocks() * 512;
        assert!(allocated < 1 << 20, "{allocated} bytes allocated");
        let e = import(&src, &dir.join("small.img"), Some(1 << 20))
            .await
            .expect_err("too small");
        assert!(matches!(e, ImageError::TooSmall { .. }), "{e}");
        assert!(!dir.join("small.img").exists());
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    /// 8 MiB of raw image with data at the start, in the middle and in the last byte.
    fn sample_image() -> Vec<u8> {
        let mut data = vec![0u8; 8 << 20];
        data[..512].fill(0xaa);
        data[4 << 20..(4 << 20) + 4096].fill(0xbb);
        let last = data.len() - 1;
        data[last] = 0xcc;
        data
    }

    #[tokio::test]
    async fn into_a_device_nothing_is_created_or_resized() {
        use std::os::unix::fs::MetadataExt;
        let dir = std::env::temp_dir().join(format!("labd-import-dev-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let src = dir.join("img.raw");
        let data = sample_image();
        std::fs::write(&src, &data).expect("image");
        // A sparse file of the final size reads as zeros, as a new volume does.
        let dev = dir.join("zvol");
        std::fs::File::create(&dev)
            .and_then(|f| f.set_len(64 << 20))
            .expect("device");
        assert_eq!(
            import_to_device(&src, &dev, 64 << 20)
                .await
                .expect("import"),
            64 << 20
        );
        let got = std::fs::read(&dev).expect("read");
        assert_eq!(got.len(), 64 << 20, "the device keeps its size");
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|&b| b == 0));
        let allocated = std::fs::metadata(&dev).expect("meta").blocks() * 512;
        assert!(
            allocated < 1 << 20,
            "zero blocks skipped: {allocated} bytes"
        );
        // A missing device is not created, and a too-small one is refused before writing.
        let gone = dir.join("gone");
        let e = import_to_device(&src, &gone, 64 << 20)
            .await
            .expect_err("missing");
        assert!(matches!(e, ImageError::Io { .. }), "{e}");
        assert!(!gone.exists());
        let e = import_to_device(&src, &dev, 1 << 20)
            .await
            .expect_err("small");
        assert!(matches!(e, ImageError::TooSmall { .. }), "{e}");
        std::fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn qemu_img_writes_into_an_existing_device() {
        let (src, dst) = (
            Path::new("/i/a.qcow2"),
            Path::new("/dev/zvol/tank/vm/disk0"),
        );
        assert_eq!(
            convert_argv(src, dst, Dest::ZeroedDevice).to_string(),
            "qemu-img convert -p -n --target-is-zero -f qcow2 -O raw /i/a.qcow2 \
             /dev/zvol/tank/vm/disk0"
        );
        assert_eq!(
            convert_argv(src, Path::new("/d/disk0.img"), Dest::NewFile).to_string(),
            "qemu-img convert -p -f qcow2 -O raw /i/a.qcow2 /d/disk0.img"
        );
    }

    /// A loop device over a sparse file, detached on drop.
    struct Loop(String);

    impl Drop for Loop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }

    /// What a zvol is to the importer, a real block device of the final size reading as
    /// zeros: raw and qcow2 images written into it (zfs-fuse has no volumes; a loop device
    /// stands in, with the same open/seek/write/fsync calls and the same qemu-img argv).
    #[tokio::test]
    async fn into_a_real_block_device() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: loop devices need root");
            return;
        }
        let dir = std::env::temp_dir().join(format!("labd-import-blk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let data = sample_image();
        let raw = dir.join("img.raw");
        std::fs::write(&raw, &data).expect("image");
        let qcow2 = dir.join("img.qcow2");
        let out = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .args([&raw, &qcow2])
            .output()
            .expect("qemu-img");
        assert!(out.status.success(), "{out:?}");
        for (n, image) in [&raw, &qcow2].into_iter().enumerate() {
            let backing = dir.join(format!("backing{n}"));
            std::fs::File::create(&backing)
                .and_then(|f| f.set_len(32 << 20))
                .expect("backing");
            let out = std::process::Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&backing)
                .output()
                .expect("losetup");
            assert!(out.status.success(), "{out:?}");
            let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            let path = Path::new(&dev.0);
            let kind = std::fs::metadata(path).expect("dev").file_type();
            assert!(std::os::unix::fs::FileTypeExt::is_block_device(&kind));
            import_to_device(image, path, 32 << 20)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", image.display()));
            let got = std::fs::read(path).expect("read back");
            assert_eq!(got.len(), 32 << 20, "{}", image.display());
            assert_eq!(&got[..data.len()], &data[..], "{}", image.display());
            assert!(got[data.len()..].iter().all(|&b| b == 0));
            drop(dev);
        }
        std::fs::remove_dir_all(&dir).expect("clean");
    }
}
