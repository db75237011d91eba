//! The dataset and snapshot tour of the README, checked against `zfs`.

use labd_e2e::Lab;

#[test]
fn create_list_get_set() {
    let lab = Lab::start();
    let photos = lab.ds("photos");
    lab.labctl(&[
        "dataset",
        "create",
        "photos",
        "-o",
        "compression=gzip",
        "-o",
        "quota=100M",
    ])
    .ok();
    assert!(lab.exists(&photos));
    assert_eq!(lab.prop(&photos, "compression"), "gzip");
    assert_eq!(lab.prop(&photos, "quota"), (100u64 << 20).to_string());
    assert_eq!(lab.prop(&photos, "labd:managed"), "on");
    assert_eq!(lab.source(&photos, "labd:managed"), "local");

    // Table output names the dataset by its short name and says it is managed.
    let table = lab.labctl(&["dataset", "list"]).ok();
    let line = table
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some("photos"))
        .unwrap_or_else(|| panic!("no photos row:\n{}", table.stdout));
    assert!(line.contains("yes"), "{line}");

    // JSON output is the raw API objects, with the numbers zfs reports.
    let list = lab
        .labctl(&["--output", "json", "dataset", "list"])
        .ok()
        .json();
    let row = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == photos.as_str()))
        .expect("photos in JSON list");
    assert_eq!(row["short_name"], "photos");
    assert_eq!(row["managed"], true);
    assert_eq!(
        row["used"].as_u64().map(|u| u.to_string()),
        Some(lab.prop(&photos, "used"))
    );
    let root = list
        .as_array()
        .and_then(|a| a.iter().find(|d| d["name"] == lab.root.as_str()))
        .expect("root in list");
    assert_eq!(root["managed"], false);

    // YAML output parses as the same objects.
    let yaml = lab.labctl(&["--output", "yaml", "dataset", "list"]).ok();
    assert!(
        yaml.stdout.contains(&format!("name: {photos}")),
        "{}",
        yaml.stdout
    );

    // get: every property with its source.
    let get = lab
        .labctl(&["--output", "json", "dataset", "get", "photos"])
        .ok()
        .json();
    assert_eq!(get["properties"]["compression"]["value"], "gzip");
    assert_eq!(get["properties"]["compression"]["source"], "local");
    assert_eq!(get["properties"]["mountpoint"]["source"], "inherited");
    let table = lab.labctl(&["dataset", "get", "photos"]).ok();
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.contains("quota") && l.contains("local")),
        "{}",
        table.stdout
    );

    lab.labctl(&[
        "dataset",
        "set",
        "photos",
        "atime=off",
        "com.example:note=family",
    ])
    .ok();
    assert_eq!(lab.prop(&photos, "atime"), "off");
    assert_eq!(lab.prop(&photos, "com.example:note"), "family");

    // A full name under the root works like the short one.
    lab.labctl(&["dataset", "set", &photos, "atime=on"]).ok();
    assert_eq!(lab.prop(&photos, "atime"), "on");
}

#[test]
fn create_with_parents_marks_each_parent() {
    let lab = Lab::start();
    lab.labctl(&["dataset", "create", "media/music/flac"])
        .code(1);
    assert!(!lab.exists(&lab.ds("media")));
    lab.labctl(&["dataset", "create", "-p", "media/music/flac"])
        .ok();
    for ds in ["media", "media/music", "media/music/flac"] {
        assert_eq!(lab.source(&lab.ds(ds), "labd:managed"), "local", "{ds}");
    }
}

#[test]
fn snapshots_rollback_clone_hold() {
    let lab = Lab::start();
    let photos = lab.ds("photos");
    lab.labctl(&["dataset", "create", "photos"]).ok();
    let mnt = lab.prop(&photos, "mountpoint");
    std::fs::write(format!("{mnt}/a.txt"), "first").expect("write");

    // Default name: a UTC timestamp.
    let job = lab
        .labctl(&["--output", "json", "dataset", "snapshot", "photos"])
        .ok()
        .json();
    let name = job["result"]["snapshots"][0]
        .as_str()
        .expect("snapshot name")
        .to_owned();
    assert!(
        name.starts_with(&format!("{photos}@20")) && name.ends_with('Z'),
        "{name}"
    );
    assert!(lab.exists(&name));

    lab.labctl(&["dataset", "snapshot", "photos", "--name", "before-upgrade"])
        .ok();
    std::fs::write(format!("{mnt}/a.txt"), "second").expect("write");
    lab.labctl(&["dataset", "snapshot", "photos", "--name", "after"])
        .ok();
    std::fs::write(format!("{mnt}/a.txt"), "third").expect("write");

    let snaps = lab
        .labctl(&["--output", "json", "dataset", "snapshots", "photos"])
        .ok()
        .json();
    let names: Vec<&str> = snaps
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|s| s["snapshot"].as_str())
        .collect();
    assert_eq!(names.len(), 3);
    assert_eq!(&names[1..], ["before-upgrade", "after"]);
    let table = lab.labctl(&["dataset", "snapshots", "photos"]).ok();
    assert!(
        table.stdout.contains(&format!("{photos}@before-upgrade")),
        "{}",
        table.stdout
    );

    // Rollback past a newer snapshot is refused and changes nothing...
    let before = lab.inventory();
    let out = lab
        .labctl(&["dataset", "rollback", "photos@before-upgrade"])
        .code(1);
    assert!(out.stderr.contains("newer"), "{}", out.stderr);
    assert_eq!(lab.inventory(), before);
    assert_eq!(
        std::fs::read_to_string(format!("{mnt}/a.txt")).expect("read"),
        "third"
    );
    // ...rollback to the newest works...
    lab.labctl(&["dataset", "rollback", "photos@after"]).ok();
    assert_eq!(
        std::fs::read_to_string(format!("{mnt}/a.txt")).expect("read"),
        "second"
    );
    // ...and --destroy-newer goes further back.
    lab.labctl(&[
        "dataset",
        "rollback",
        "photos@before-upgrade",
        "--destroy-newer",
    ])
    .ok();
    assert_eq!(
        std::fs::read_to_string(format!("{mnt}/a.txt")).expect("read"),
        "first"
    );
    assert!(!lab.exists(&format!("{photos}@after")));

    // Clone: a managed dataset whose origin is the snapshot.
    lab.labctl(&["dataset", "clone", "photos@before-upgrade", "photos-test"])
        .ok();
    let clone = lab.ds("photos-test");
    assert_eq!(
        lab.prop(&clone, "origin"),
        format!("{photos}@before-upgrade")
    );
    assert_eq!(lab.source(&clone, "labd:managed"), "local");

    // Hold and release, seen in userrefs.
    let snap = format!("{photos}@{}", names[0]);
    lab.labctl(&["dataset", "hold", &snap, "keep"]).ok();
    assert_eq!(lab.prop(&snap, "userrefs"), "1");
    let held = lab.labctl(&["dataset", "destroy", &snap]).code(1);
    assert!(held.stderr.contains("held"), "{}", held.stderr);
    assert!(lab.exists(&snap));
    lab.labctl(&["dataset", "release", &snap, "keep"]).ok();
    assert_eq!(lab.prop(&snap, "userrefs"), "0");
    lab.labctl(&["dataset", "release", &snap, "keep"]).code(1);

    // Snapshot destroy, then the clone.
    lab.labctl(&["dataset", "destroy", &snap]).ok();
    assert!(!lab.exists(&snap));
    lab.labctl(&["dataset", "destroy", "photos-test"]).ok();
    assert!(!lab.exists(&clone));
}

#[test]
fn recursive_snapshot_is_one_transaction() {
    let lab = Lab::start();
    lab.labctl(&["dataset", "create", "-p", "vms/a"]).ok();
    lab.labctl(&["dataset", "create", "vms/b"]).ok();
    lab.labctl(&["dataset", "snapshot", "vms", "-r", "--name", "nightly"])
        .ok();
    let txgs: Vec<String> = ["vms", "vms/a", "vms/b"]
        .iter()
        .map(|d| lab.prop(&format!("{}@nightly", lab.ds(d)), "createtxg"))
        .collect();
    assert!(txgs.iter().all(|t| t == &txgs[0]), "{txgs:?}");

    // Recursive destroy of the same-named snapshot in every descendant.
    lab.labctl(&["dataset", "destroy", "-r", "vms@nightly"])
        .ok();
    assert!(!lab.exists(&format!("{}@nightly", lab.ds("vms/a"))));
}

#[test]
fn status_shows_version_driver_and_pool() {
    let lab = Lab::start();
    let out = lab.labctl(&["status"]).ok();
    assert!(
        out.stdout.contains(env!("CARGO_PKG_VERSION")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(&lab.pool), "{}", out.stdout);
    assert!(out.stdout.contains("ONLINE"), "{}", out.stdout);
    let v = lab.labctl(&["--output", "json", "status"]).ok().json();
    assert_eq!(v["system"]["drivers"][0]["name"], "zfs-legacy", "{v}");
    assert_eq!(v["system"]["root"], lab.root.as_str(), "{v}");
    assert!(
        v["pools"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["name"] == lab.pool.as_str()))
    );
}
