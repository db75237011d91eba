//! Benchmark: `labctl --output json dataset list` against `zfs list -H -o
//! name,used,avail,refer,mountpoint` on the same 1,000 datasets of a zfs-fuse pool, measured
//! in the same run. Prints the medians and their ratio (target: <= 1.5), and the time of the
//! `zfs get` labd itself runs, which separates labd's own overhead from the cost of ZFS.
//!
//! Run as root with zfs-fuse up: `cargo bench -p labd-e2e --bench dataset_list`
//! (`DATASETS=N` changes the count).

use std::time::Instant;

use labd_e2e::{Lab, LabOptions, median, run};

fn main() {
    let count: usize = std::env::var("DATASETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let lab = Lab::start_with(LabOptions {
        pool_mib: 1024,
        ..LabOptions::default()
    });
    let took = labd_e2e::create_unmounted_tree(&lab, count);
    eprintln!("created {count} datasets in {took:?}");

    let labctl = || {
        let t = Instant::now();
        let out = lab.labctl(&["--output", "json", "dataset", "list"]).ok();
        let elapsed = t.elapsed();
        let n = out.json().as_array().map_or(0, Vec::len);
        assert!(n > count, "labctl listed {n} datasets");
        elapsed
    };
    let zfs = || {
        let t = Instant::now();
        let out = run(
            "zfs",
            &[
                "list",
                "-H",
                "-o",
                "name,used,avail,refer,mountpoint",
                "-r",
                &lab.root,
            ],
        )
        .ok();
        let elapsed = t.elapsed();
        assert!(out.stdout.lines().count() > count);
        elapsed
    };
    let get = || {
        let t = Instant::now();
        let props = "used,available,referenced,mountpoint,labd:managed";
        let out = run(
            "zfs",
            &[
                "get",
                "-Hp",
                "-r",
                "-o",
                "name,property,value,source",
                props,
                &lab.root,
            ],
        )
        .ok();
        let elapsed = t.elapsed();
        assert!(out.stdout.lines().count() > count);
        elapsed
    };
    // Warm all, then interleave so that noise hits them alike.
    labctl();
    zfs();
    get();
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..7 {
        a.push(labctl());
        b.push(zfs());
        c.push(get());
    }
    let (a, b, c) = (median(a), median(b), median(c));
    let ratio = a.as_secs_f64() / b.as_secs_f64();
    println!("datasets: {count}");
    println!(
        "labctl --output json dataset list: {:.1} ms (median of 7)",
        a.as_secs_f64() * 1e3
    );
    println!(
        "zfs list -H -o name,used,avail,refer,mountpoint: {:.1} ms (median of 7)",
        b.as_secs_f64() * 1e3
    );
    println!(
        "zfs get -Hp -r (what labd runs): {:.1} ms (median of 7)",
        c.as_secs_f64() * 1e3
    );
    println!("ratio labctl/zfs list: {ratio:.2} (target <= 1.5)");
    println!(
        "ratio labctl/zfs get: {:.2} (labd's own overhead)",
        a.as_secs_f64() / c.as_secs_f64()
    );
}
