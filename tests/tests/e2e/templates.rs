//! VM templates: built in, overridden and added by files, and the exact bhyve commands a VM
//! made from one would run.

use labd_e2e::{Lab, LabOptions};

#[test]
fn templates_list_show_override_and_preview() {
    let lab = Lab::start_with(LabOptions {
        tables: "[vms]\ntemplates_dir = \"{dir}/templates\"\n".to_owned(),
        ..LabOptions::default()
    });
    let dir = lab.dir.join("templates");
    std::fs::create_dir_all(&dir).expect("templates dir");

    let list = lab
        .labctl(&["--output", "json", "template", "list"])
        .ok()
        .json();
    let names: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    for name in ["docker-host", "dev", "tiny"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let docker = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == "docker-host"))
        .cloned()
        .expect("docker-host");
    assert_eq!(docker["source"], "builtin");
    assert_eq!(docker["cpus"], 2);
    assert_eq!(docker["memory"], 4u64 << 30);
    assert_eq!(docker["loader"], "uefi");

    // A file overrides the built-in template of the same name and adds new ones.
    let tiny = lab
        .labctl(&["--output", "json", "template", "show", "tiny"])
        .ok()
        .json();
    let text = tiny["text"].as_str().expect("text").to_owned();
    std::fs::write(dir.join("mine.toml"), &text).expect("write");
    std::fs::write(dir.join("dev.toml"), &text).expect("write");
    let list = lab
        .labctl(&["--output", "json", "template", "list"])
        .ok()
        .json();
    let find = |n: &str| {
        list.as_array()
            .and_then(|l| l.iter().find(|t| t["name"] == n))
            .cloned()
            .unwrap_or_else(|| panic!("{n} in {list}"))
    };
    assert!(
        find("mine")["source"]
            .as_str()
            .is_some_and(|s| s.ends_with("mine.toml"))
    );
    assert_eq!(find("dev")["loader"], tiny["loader"]);

    // The exact commands, for a FreeBSD user to read.
    let preview = lab
        .labctl(&[
            "template",
            "command",
            "docker-host",
            "--driver",
            "bhyve",
            "--vm",
            "web",
        ])
        .ok()
        .stdout;
    for needle in [
        "bhyve ",
        "0,hostbridge",
        "31,lpc",
        "virtio-net",
        "mac=58:9c:fc",
        "com1,/dev/nmdm-web.1A",
        "-U ",
        " web",
    ] {
        assert!(preview.contains(needle), "{needle} in:\n{preview}");
    }

    // The QEMU driver's command for the tiny test guest: direct kernel boot, console and QMP
    // on Unix sockets; bhyve cannot boot a kernel directly.
    let preview = lab
        .labctl(&[
            "template", "command", "tiny", "--driver", "qemu", "--vm", "t1",
        ])
        .ok()
        .stdout;
    for needle in [
        "qemu-system-x86_64",
        "-kernel",
        "/vms/t1/vmlinuz",
        "console.sock",
        "qmp.sock",
        "-no-reboot",
    ] {
        assert!(preview.contains(needle), "{needle} in:\n{preview}");
    }
    let out = lab
        .labctl(&["template", "command", "tiny", "--driver", "bhyve"])
        .code(1);
    assert!(out.stderr.contains("unsupported_loader"), "{}", out.stderr);

    // A bad template file is an error naming the file and the key; a bad VM name is refused.
    std::fs::write(dir.join("broken.toml"), format!("{text}\nbogus_key = 1\n")).expect("write");
    let out = lab.labctl(&["template", "list"]).code(1);
    assert!(
        out.stderr.contains("broken.toml") && out.stderr.contains("bogus_key"),
        "{}",
        out.stderr
    );
    std::fs::remove_file(dir.join("broken.toml")).expect("remove");
    let out = lab
        .labctl(&["template", "command", "docker-host", "--vm", "Bad_Name"])
        .code(1);
    assert!(out.stderr.contains("Bad_Name"), "{}", out.stderr);
    let out = lab.labctl(&["template", "show", "nope"]).code(1);
    assert!(out.stderr.contains("nope"), "{}", out.stderr);
}
