//! NFS exports served by a real nfs-ganesha and read by a real NFS client (libnfs's
//! `nfs-cat`/`nfs-cp`).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use labd_e2e::{Ganesha, Lab, LabOptions, run};

/// Run a libnfs command, retrying while the server answers NFS4ERR_DELAY (ganesha does for a
/// moment after a reload, and so would a real client).
fn nfs(args: &[&str]) -> labd_e2e::Out {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Bounded: a client stuck on a dead server must fail the test, not hang it.
        let out = run("timeout", &[&["-s", "KILL", "20"], args].concat());
        if !out.stderr.contains("NFS4ERR_DELAY") || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn nfs_cat(url: &str) -> labd_e2e::Out {
    nfs(&["nfs-cat", url])
}

#[test]
fn exports_are_served_squashed_and_withdrawn() {
    let lab = Lab::start_with(LabOptions {
        tables: Ganesha::LABD_CONFIG.to_owned(),
        ..LabOptions::default()
    });
    let nfs = Ganesha::start(&lab.dir);
    let l = |args: &[&str]| lab.labctl(args).ok();
    for ds in ["photos", "media", "docs"] {
        l(&["dataset", "create", ds]);
    }
    let photos_mnt = lab.prop(&lab.ds("photos"), "mountpoint");
    std::fs::write(format!("{photos_mnt}/hello.txt"), "hello from zfs\n").expect("write");
    let root_only = |dir: &str| {
        let path = format!("{dir}/secret.txt");
        std::fs::write(&path, "root only\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    root_only(&photos_mnt);
    let docs_mnt = lab.prop(&lab.ds("docs"), "mountpoint");
    root_only(&docs_mnt);
    let media_mnt = lab.prop(&lab.ds("media"), "mountpoint");
    let song = format!("{media_mnt}/song.txt");
    std::fs::write(&song, "la la\n").expect("write");
    std::fs::set_permissions(&song, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::chown(&song, Some(1000), Some(1000)).expect("chown");

    // Bad exports are refused and change nothing.
    let defs = lab.dir.join("exports.d");
    for (client, needle) in [
        ("0.0.0.0/0", "world"),
        ("10.0.0.0/8", "/16"),
        ("192.168.1.7/24", "host bits"),
    ] {
        let out = lab
            .labctl(&["export", "add", "photos", "--client", client])
            .code(1);
        assert!(
            out.stderr.to_lowercase().contains(needle),
            "{client}: {}",
            out.stderr
        );
        assert!(
            !defs.join("photos.toml").exists(),
            "{client} left a definition"
        );
    }

    l(&["export", "add", "photos", "--client", "127.0.0.1"]);
    l(&[
        "export",
        "add",
        "docs",
        "--client",
        "127.0.0.1",
        "--maproot",
        "root",
    ]);
    l(&[
        "export",
        "add",
        "media",
        "--client",
        "127.0.0.1",
        "--ro",
        "--mapall",
        "1000:1000",
    ]);
    // Nothing is served before apply.
    assert!(nfs_cat(&nfs.url("/export/photos/hello.txt", 0, 0)).code != 0);

    let applied = lab
        .labctl(&["--output", "json", "export", "apply"])
        .ok()
        .json();
    assert_eq!(applied["result"]["changed"], true, "{applied}");
    let added = applied["result"]["added"].to_string();
    assert!(
        added.contains("photos") && added.contains("media"),
        "{added}"
    );
    // Applying the same set again changes nothing.
    let again = lab
        .labctl(&["--output", "json", "export", "apply"])
        .ok()
        .json();
    assert_eq!(again["result"]["changed"], false, "{again}");

    // The client reads what is in the dataset.
    let cat = nfs_cat(&nfs.url("/export/photos/hello.txt", 0, 0));
    assert_eq!(cat.code, 0, "{cat:#?}\n{}", nfs.log());
    assert_eq!(cat.stdout, "hello from zfs\n");

    // Root is squashed by default: root's 0600 file is out of reach...
    let cat = nfs_cat(&nfs.url("/export/photos/secret.txt", 0, 0));
    assert_ne!(cat.code, 0, "root was not squashed: {cat:#?}");
    // ...and kept where the export says maproot=root.
    let cat = nfs_cat(&nfs.url("/export/docs/secret.txt", 0, 0));
    assert_eq!(cat.stdout, "root only\n", "{cat:#?}");

    // mapall: the client's root reads 1000's 0600 file as 1000 on the read-only export.
    let cat = nfs_cat(&nfs.url("/export/media/song.txt", 0, 0));
    assert_eq!(cat.stdout, "la la\n", "{cat:#?}");

    // A definition edited by hand into a world export is rejected at apply: the server's file
    // stays as it was and the server keeps serving.
    let served = std::fs::read_to_string(&nfs.exports_file).expect("ganesha's file");
    let docs_def = std::fs::read_to_string(defs.join("docs.toml")).expect("definition");
    std::fs::write(
        defs.join("docs.toml"),
        "dataset = \"docs\"\n[[client]]\naddress = \"0.0.0.0/0\"\n",
    )
    .expect("hand edit");
    let out = lab.labctl(&["export", "apply"]).code(1);
    assert!(out.stderr.contains("world"), "{}", out.stderr);
    assert_eq!(
        std::fs::read_to_string(&nfs.exports_file).expect("file"),
        served
    );
    let cat = nfs_cat(&nfs.url("/export/docs/secret.txt", 0, 0));
    assert_eq!(cat.stdout, "root only\n", "{cat:#?}");
    std::fs::write(defs.join("docs.toml"), docs_def).expect("restore");

    // An exported dataset cannot be destroyed.
    let out = lab
        .labctl(&["dataset", "destroy", "photos", "-r", "-f"])
        .code(1);
    assert!(out.stderr.contains("exported"), "{}", out.stderr);
    assert!(lab.exists(&lab.ds("photos")));

    // The FreeBSD rendering of the same set is an exports(5) file with a V4 line.
    let freebsd = l(&["export", "render", "--format", "freebsd"]).stdout;
    assert!(freebsd.contains("V4:"), "{freebsd}");
    assert!(
        freebsd
            .lines()
            .any(|line| line.starts_with(&photos_mnt) && line.contains("127.0.0.1")),
        "{freebsd}"
    );

    // Withdrawn: after remove + apply the client is refused.
    l(&["export", "remove", "photos"]);
    let applied = lab
        .labctl(&["--output", "json", "export", "apply"])
        .ok()
        .json();
    assert!(
        applied["result"]["removed"].to_string().contains("photos"),
        "{applied}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let cat = loop {
        let cat = nfs_cat(&nfs.url("/export/photos/hello.txt", 0, 0));
        if cat.code != 0 || Instant::now() > deadline {
            break cat;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_ne!(cat.code, 0, "still served after removal: {cat:#?}");
    assert!(
        cat.stderr.contains("NOENT") || cat.stderr.contains("ACCESS"),
        "{cat:#?}"
    );
    // The others still are.
    let cat = nfs_cat(&nfs.url("/export/media/song.txt", 0, 0));
    assert_eq!(cat.stdout, "la la\n");
    // And the dataset can now be destroyed.
    l(&["dataset", "destroy", "photos"]);
}
