//! Benchmark: `labctl export apply` with 200 exports (validate against ZFS and each other,
//! render, write, reload a real nfs-ganesha), measured end to end. Also: an apply that
//! changes nothing, and one after one export changed.
//!
//! Run as root with zfs-fuse up: `cargo build --release --workspace --bins &&
//! cargo bench -p labd-e2e --bench exports_apply` (`EXPORTS=N` changes the count).

use std::time::{Duration, Instant};

use labd_e2e::{Ganesha, Lab, LabOptions, median, ms, run};

fn main() {
    let count: usize = std::env::var("EXPORTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let lab = Lab::start_with(LabOptions {
        pool_mib: 512,
        tables: Ganesha::LABD_CONFIG.to_owned(),
        ..LabOptions::default()
    });
    let _nfs = Ganesha::start(&lab.dir);
    let defs = lab.dir.join("exports.d");
    std::fs::create_dir_all(&defs).expect("exports dir");
    let started = Instant::now();
    for i in 0..count {
        run("zfs", &["create", &lab.ds(&format!("share{i}"))]).ok();
        // Each export: a host and a network with different options.
        let text = format!(
            "dataset = \"share{i}\"\n\n[[client]]\naddress = \"192.168.{}.{}\"\nmaproot = \"root\"\n\n\
             [[client]]\naddress = \"10.{}.0.0/16\"\naccess = \"ro\"\nmapall = \"1000:1000\"\n",
            i / 250,
            i % 250 + 1,
            i % 250
        );
        std::fs::write(defs.join(format!("share{i}.toml")), text).expect("definition");
    }
    eprintln!(
        "created {count} datasets and definitions in {:?}",
        started.elapsed()
    );

    let apply = || {
        let t = Instant::now();
        let out = lab.labctl(&["--output", "json", "export", "apply"]).ok();
        let elapsed = t.elapsed();
        (elapsed, out.json()["result"]["changed"] == true)
    };
    let (first, changed) = apply();
    assert!(changed, "the first apply writes the file");
    let mut same = Vec::new();
    for _ in 0..5 {
        let (d, changed) = apply();
        assert!(!changed);
        same.push(d);
    }
    let mut one = Vec::new();
    for round in 0..5 {
        let access = if round % 2 == 0 { "rw" } else { "ro" };
        let text = format!(
            "dataset = \"share0\"\n\n[[client]]\naddress = \"192.168.0.1\"\naccess = \"{access}\"\n"
        );
        std::fs::write(defs.join("share0.toml"), text).expect("definition");
        let (d, changed) = apply();
        assert!(changed);
        one.push(d);
    }
    let render = || {
        let t = Instant::now();
        lab.labctl(&["export", "render", "--format", "freebsd"])
            .ok();
        t.elapsed()
    };
    let renders: Vec<Duration> = (0..5).map(|_| render()).collect();
    println!("exports: {count} (each a host line and a network line)");
    println!(
        "first apply (validate, render, write, SIGHUP ganesha): {:.1} ms",
        ms(first)
    );
    println!(
        "apply with nothing changed: {:.1} ms (median of 5)",
        ms(median(same))
    );
    println!(
        "apply after one export changed: {:.1} ms (median of 5)",
        ms(median(one))
    );
    println!(
        "render --format freebsd (validate + render, no write): {:.1} ms (median of 5)",
        ms(median(renders))
    );
}
