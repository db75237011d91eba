//! Benchmark: starting a VM (the tiny test guest under QEMU/TCG).
//!
//! Measures, over `RUNS` starts (default 10):
//! * `labctl vm start` → the QEMU process exists (has exec'd, its command line carries the
//!   VM's uuid): everything labd adds before the hypervisor runs (labctl's own start-up, the
//!   request, the job, the seed, taps, the run record, the spawn). Target: < 50 ms of
//!   overhead.
//! * the peer, in the same run: the same QEMU argv (read from the process labd started)
//!   spawned directly → the process exists. The difference is labd's overhead.
//! * `labctl vm start` → the job finished (console and QMP connected);
//! * `labctl vm start` → the guest's banner in `console.log` (the boot itself, under TCG).
//!
//! Run as root with zfs-fuse up and the test guest built (`tests/env/run-tests.sh` does both),
//! after `cargo build --release --workspace --bins`:
//! `LABD_TEST_GUEST=/var/cache/labd-test-guest cargo bench -p labd-e2e --bench vm_start`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use labd_e2e::{Lab, LabOptions, median, ms};

/// The pid of the process whose command line holds `needle`, if any.
fn find_process(needle: &str) -> Option<u32> {
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(needle)
        {
            return Some(pid);
        }
    }
    None
}

/// Poll (every 200 µs, at most 10 s) until a process with `needle` in its command line runs.
fn wait_process(needle: &str, since: Instant) -> (u32, Duration) {
    loop {
        if let Some(pid) = find_process(needle) {
            return (pid, since.elapsed());
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "no process with {needle}"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn banners(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("LABD-TEST-GUEST up")
        .count()
}

fn kill9(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
}

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let guest = labd_e2e::test_guest_dir();
    let lab = Lab::start_with(LabOptions {
        tables: format!(
            "[vms]\ndriver = \"qemu\"\naccel = \"tcg\"\nkernel_dir = \"{}\"\n",
            guest.display()
        ),
        ..LabOptions::default()
    });
    lab.labctl(&["vm", "create", "bench", "--template", "tiny"])
        .ok();
    let info = lab
        .labctl(&["--output", "json", "vm", "info", "bench"])
        .ok()
        .json();
    let uuid = info["uuid"].as_str().expect("uuid").to_owned();
    let dir = std::path::PathBuf::from(lab.prop(&lab.ds("vms/bench"), "mountpoint"));
    let log = dir.join("console.log");

    let (mut to_process, mut to_job, mut to_banner) = (Vec::new(), Vec::new(), Vec::new());
    let mut argv: Vec<String> = Vec::new();
    for _ in 0..runs {
        let before = banners(&log);
        let t0 = Instant::now();
        let mut labctl = lab
            .labctl_cmd(&["vm", "start", "bench"])
            .stdout(Stdio::null())
            .spawn()
            .expect("labctl");
        let (pid, process) = wait_process(&uuid, t0);
        let status = labctl.wait().expect("labctl wait");
        to_job.push(t0.elapsed());
        assert!(status.success(), "vm start failed");
        to_process.push(process);
        while banners(&log) <= before {
            assert!(t0.elapsed() < Duration::from_secs(60), "no banner");
            std::thread::sleep(Duration::from_millis(2));
        }
        to_banner.push(t0.elapsed());
        if argv.is_empty() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
            argv = cmd
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
        }
        lab.labctl(&["vm", "stop", "bench", "--force"]).ok();
    }

    // The peer: the same argv, spawned directly.
    let mut direct = Vec::new();
    for _ in 0..runs {
        for sock in ["console.sock", "qmp.sock"] {
            let _ = std::fs::remove_file(dir.join(sock));
        }
        let t0 = Instant::now();
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("qemu");
        let (_, d) = wait_process(&uuid, t0);
        direct.push(d);
        kill9(child.id());
        let _ = child.wait();
    }

    let (p, d) = (median(to_process), median(direct));
    println!("vm start, tiny guest, QEMU/TCG, {runs} runs (medians):");
    println!("  labctl vm start -> QEMU running:   {:8.1} ms", ms(p));
    println!(
        "  direct spawn    -> QEMU running:   {:8.1} ms (peer)",
        ms(d)
    );
    println!(
        "  labd's overhead:                   {:8.1} ms (target < 50 ms); ratio {:.1}x",
        ms(p.saturating_sub(d)),
        p.as_secs_f64() / d.as_secs_f64().max(1e-9)
    );
    println!(
        "  labctl vm start -> job done:       {:8.1} ms",
        ms(median(to_job))
    );
    println!(
        "  labctl vm start -> guest banner:   {:8.1} ms",
        ms(median(to_banner))
    );
    lab.labctl(&["vm", "destroy", "bench"]).ok();
}
