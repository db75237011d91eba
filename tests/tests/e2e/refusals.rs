//! Bad input is refused with an error naming the field and the rule, and changes nothing;
//! destroy protects what labd did not create, children, snapshots and holds.

use labd_e2e::Lab;

/// Each case: labctl arguments, and text the error must contain (field or rule).
const INVALID: &[(&[&str], &str)] = &[
    (&["dataset", "create", "bad name"], "' '"),
    (&["dataset", "create", "--", "-dash"], "-"),
    (&["dataset", "create", "a//b"], "empty"),
    (&["dataset", "create", "a/./b"], "."),
    (&["dataset", "create", "a%b"], "'%'"),
    (&["dataset", "create", "ünicode"], "allowed"),
    (&["dataset", "create", "photos@snap"], "@"),
    (&["dataset", "create", "tmp/"], "empty"),
    (&["dataset", "create", "POOL_OUTSIDE"], "outside"),
    (&["dataset", "create", "ok", "-o", "quota=lots"], "quota"),
    (
        &["dataset", "create", "ok", "-o", "compression=fast"],
        "compression",
    ),
    (
        &["dataset", "create", "ok", "-o", "recordsize=100K"],
        "recordsize",
    ),
    (
        &["dataset", "create", "ok", "-o", "mountpoint=relative/path"],
        "mountpoint",
    ),
    (&["dataset", "create", "ok", "-o", "used=5"], "read-only"),
    (
        &["dataset", "create", "ok", "-o", "nosuchprop=1"],
        "unknown property",
    ),
    (
        &["dataset", "create", "ok", "-o", "labd:managed=off"],
        "reserved",
    ),
    (
        &["dataset", "create", "ok", "-o", "Upper:case=x"],
        "Upper:case",
    ),
    (&["dataset", "snapshot", "ok", "--name", "bad snap"], "' '"),
    (&["dataset", "snapshot", "ok", "--name=-x"], "-"),
    (&["dataset", "set", "ok", "atime=maybe"], "atime"),
    (
        &["dataset", "set", "ok", "casesensitivity=mixed"],
        "created",
    ),
    (&["dataset", "hold", "ok@s1", "bad tag"], "tag"),
    (&["dataset", "clone", "ok@s1", "bad target"], "target"),
    (&["dataset", "create", LONG_NAME], "bytes"),
];

const LONG_NAME: &str = "x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789x123456789";

#[test]
fn invalid_input_is_refused_and_changes_nothing() {
    let lab = Lab::start();
    lab.labctl(&["dataset", "create", "ok"]).ok();
    lab.labctl(&["dataset", "snapshot", "ok", "--name", "s1"])
        .ok();
    let before = lab.inventory();
    let ok = lab.ds("ok");
    let props_before = lab
        .zfs(&["get", "-H", "-o", "property,value,source", "all", &ok])
        .ok()
        .stdout;
    for (args, needle) in INVALID {
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("POOL_OUTSIDE", &format!("{}/elsewhere", lab.pool)))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = lab.labctl(&args);
        assert_eq!(out.code, 1, "{args:?} must fail with 1:\n{out:#?}");
        assert!(
            out.stderr.contains(needle),
            "{args:?}: error must mention {needle:?}:\n{}",
            out.stderr
        );
        assert_eq!(lab.inventory(), before, "{args:?} changed the pool");
    }
    let props_after = lab
        .zfs(&["get", "-H", "-o", "property,value,source", "all", &ok])
        .ok()
        .stdout;
    assert_eq!(props_before, props_after);
    assert!(INVALID.len() >= 15);
}

#[test]
fn api_errors_name_the_field() {
    let lab = Lab::start();
    let out = lab
        .labctl(&["--output", "json", "dataset", "create", "bad name"])
        .code(1);
    assert!(out.stderr.contains("field: name"), "{}", out.stderr);
    assert!(out.stderr.contains("bad_character"), "{}", out.stderr);
    let out = lab
        .labctl(&["dataset", "create", "ok", "-o", "quota=lots"])
        .code(1);
    assert!(out.stderr.contains("properties.quota"), "{}", out.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let lab = Lab::start();
    lab.labctl(&["dataset", "create", "ok", "-o", "novalue"])
        .code(2);
    lab.labctl(&["dataset", "rollback", "no-at-sign"]).code(2);
    lab.labctl(&["dataset", "frobnicate"]).code(2);
}

#[test]
fn destroy_protections() {
    let lab = Lab::start();
    // Not created by labd: refused unless forced.
    let foreign = lab.ds("foreign");
    lab.zfs(&["create", &foreign]).ok();
    let out = lab.labctl(&["dataset", "destroy", "foreign"]).code(1);
    assert!(out.stderr.contains("not_managed"), "{}", out.stderr);
    assert!(lab.exists(&foreign));
    lab.labctl(&["dataset", "destroy", "foreign", "--force"])
        .ok();
    assert!(!lab.exists(&foreign));

    // Children: refused unless recursive.
    lab.labctl(&["dataset", "create", "-p", "tree/leaf"]).ok();
    let out = lab.labctl(&["dataset", "destroy", "tree"]).code(1);
    assert!(out.stderr.contains("has_children"), "{}", out.stderr);
    assert!(lab.exists(&lab.ds("tree/leaf")));

    // Snapshots: refused unless recursive.
    lab.labctl(&["dataset", "snapshot", "tree/leaf", "--name", "s1"])
        .ok();
    let out = lab.labctl(&["dataset", "destroy", "tree/leaf"]).code(1);
    assert!(out.stderr.contains("has_snapshots"), "{}", out.stderr);

    // A foreign child below a managed parent stops a recursive destroy unless forced.
    lab.zfs(&["create", &lab.ds("tree/alien")]).ok();
    let out = lab.labctl(&["dataset", "destroy", "-r", "tree"]).code(1);
    assert!(out.stderr.contains("alien"), "{}", out.stderr);
    lab.labctl(&["dataset", "destroy", "tree/alien", "--force"])
        .ok();

    // Held snapshots: refused even recursive.
    lab.labctl(&[
        "dataset",
        "hold",
        &format!("{}@s1", lab.ds("tree/leaf")),
        "keep",
    ])
    .ok();
    let out = lab.labctl(&["dataset", "destroy", "-r", "tree"]).code(1);
    assert!(out.stderr.contains("held"), "{}", out.stderr);
    assert!(lab.exists(&format!("{}@s1", lab.ds("tree/leaf"))));
    lab.labctl(&[
        "dataset",
        "release",
        &format!("{}@s1", lab.ds("tree/leaf")),
        "keep",
    ])
    .ok();
    lab.labctl(&["dataset", "destroy", "-r", "tree"]).ok();
    assert!(!lab.exists(&lab.ds("tree")));

    // The root and anything outside it are never destroyed.
    let out = lab
        .labctl(&["dataset", "destroy", &lab.root, "--force", "-r"])
        .code(1);
    assert!(out.stderr.contains("root"), "{}", out.stderr);
    let out = lab
        .labctl(&["dataset", "destroy", &lab.pool, "--force", "-r"])
        .code(1);
    assert!(out.stderr.contains("outside"), "{}", out.stderr);
    assert!(lab.exists(&lab.root));
    // Destroying what is not there says so.
    let out = lab.labctl(&["dataset", "destroy", "ghost"]).code(1);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[test]
fn names_in_other_pools_are_outside_the_root() {
    let other = Lab::start();
    let lab = Lab::start();
    let name = format!("{}/x", other.pool);
    let out = lab.labctl(&["dataset", "create", &name]).code(1);
    assert!(out.stderr.contains("outside"), "{}", out.stderr);
    assert!(!lab.exists(&name));
    assert!(!lab.exists(&lab.ds(&name)));
    let out = lab.labctl(&["dataset", "snapshot", &name]).code(1);
    assert!(out.stderr.contains("outside"), "{}", out.stderr);
}
