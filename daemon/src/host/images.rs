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

/// Make the new disk `dst` from image `src`, grown to `size` (or the image's size). Reports
/// progress on the current job. `dst` must not exist. Returns the disk's size.
pub async fn import(src: &Path, dst: &Path, size: Option<u64>) -> Result<u64, ImageError> {
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
            tokio::task::spawn_blocking(move || copy_sparse(&s, &d, virtual_size, report))
                .await
                .map_err(|e| ImageError::QemuImg(format!("the copy task failed: {e}")))??;
        }
        Format::Qcow2 => convert_qcow2(src, dst).await?,
    }
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

/// Copy `len` bytes of `src` to the new file `dst`, leaving holes for all-zero blocks.
fn copy_sparse(src: &Path, dst: &Path, len: u64, progress: impl Fn(u8)) -> Result<(), ImageError> {
    let mut input = std::fs::File::open(src).map_err(io("cannot open", src))?;
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(io("cannot create", dst))?;
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
    // Trailing holes: the length comes from set_len, not from a write.
    output.set_len(done).map_err(io("cannot size", dst))?;
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

/// `qemu-img convert -p -f qcow2 -O raw SRC DST`, its progress passed on to the job.
async fn convert_qcow2(src: &Path, dst: &Path) -> Result<(), ImageError> {
    let argv = Argv::new("qemu-img")
        .args(["convert", "-p", "-f", "qcow2", "-O", "raw"])
        .arg(src.display().to_string())
        .arg(dst.display().to_string());
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
        let _ = std::fs::remove_file(dst);
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
}
