//! The VMs' hypervisor processes as ps(1) shows them: their command line (which VM a pid
//! is) and their CPU time.
//!
//! A VM's vCPUs are threads of its hypervisor process (bhyve or QEMU), so the process's
//! accumulated CPU time (user + system) is the VM's CPU time as the host sees it. `ps -o
//! time=` prints it on both systems, in different shapes: FreeBSD `MMM:SS.hh` (minutes may
//! exceed 59), procps `[DD-]HH:MM:SS`. One `ps` call covers every VM.

use std::collections::HashMap;
use std::time::Duration;

use super::runner::{Argv, Runner};

/// The CPU seconds of each process in `pids` that still exists.
pub async fn cpu_seconds(pids: &[u32]) -> HashMap<u32, f64> {
    if pids.is_empty() {
        return HashMap::new();
    }
    let mut argv = Argv::new("ps").args(["-o", "pid=", "-o", "time="]);
    for pid in pids {
        argv = argv.arg("-p").arg(pid.to_string());
    }
    // ps exits 1 when one of the pids is gone; its output still lists the others.
    let stdout = match Runner::new(Duration::from_secs(10)).run(&argv).await {
        Ok(out) => out.stdout,
        Err(super::runner::RunError::Exit { stdout, .. }) => stdout,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the VMs' CPU time");
            return HashMap::new();
        }
    };
    parse(&stdout)
}

/// The command line (or title) of process `pid`, `None` when it is gone: `ps -ww -o args=`,
/// which both FreeBSD and procps print.
pub async fn command_line(pid: u32) -> Result<Option<String>, String> {
    let argv = Argv::new("ps")
        .args(["-ww", "-o", "args=", "-p"])
        .arg(pid.to_string());
    match Runner::new(Duration::from_secs(5)).run(&argv).await {
        Ok(out) => Ok(Some(out.stdout.trim().to_owned())),
        // ps exits 1 when no process matched.
        Err(super::runner::RunError::Exit { code: 1, .. }) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn parse(stdout: &str) -> HashMap<u32, f64> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let pid = words.next()?.parse().ok()?;
            let time = parse_time(words.next()?)?;
            Some((pid, time))
        })
        .collect()
}

/// `[DD-]HH:MM:SS` (procps) or `M:SS.hh` / `H:MM:SS.hh` (FreeBSD) in seconds.
fn parse_time(text: &str) -> Option<f64> {
    let (days, clock) = match text.split_once('-') {
        Some((d, rest)) => (d.parse::<f64>().ok()?, rest),
        None => (0.0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let (hours, minutes, seconds) = match parts.as_slice() {
        [m, s] => ("0", *m, *s),
        [h, m, s] => (*h, *m, *s),
        _ => return None,
    };
    let hours: f64 = hours.parse().ok()?;
    let minutes: f64 = minutes.parse().ok()?;
    let seconds: f64 = seconds.parse().ok()?;
    Some(((days * 24.0 + hours) * 60.0 + minutes) * 60.0 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_time_formats_parse() {
        // procps
        assert_eq!(parse_time("00:00:03"), Some(3.0));
        assert_eq!(parse_time("01:02:03"), Some(3723.0));
        assert_eq!(parse_time("2-01:00:00"), Some(176_400.0));
        // FreeBSD ps(1): minutes:seconds.hundredths, minutes unbounded
        assert_eq!(parse_time("0:01.25"), Some(1.25));
        assert_eq!(parse_time("125:00.50"), Some(7500.5));
        assert_eq!(parse_time("junk"), None);
        assert_eq!(parse_time("1:2:3:4"), None);
    }

    #[test]
    fn output_lines_map_pids() {
        let got = parse("  101 00:00:07\n 2002   0:01.50\nbad line\n");
        assert_eq!(got.get(&101), Some(&7.0));
        assert_eq!(got.get(&2002), Some(&1.5));
        assert_eq!(got.len(), 2);
    }

    #[tokio::test]
    async fn a_command_line_is_read_and_a_gone_process_is_none() {
        let me = command_line(std::process::id()).await.expect("ps");
        assert!(me.is_some_and(|args| !args.is_empty()));
        assert_eq!(command_line(4_000_000).await, Ok(None));
    }

    #[tokio::test]
    async fn this_process_has_cpu_time() {
        let me = std::process::id();
        let got = cpu_seconds(&[me, 4_000_000]).await;
        assert!(got.get(&me).is_some_and(|s| *s >= 0.0), "{got:?}");
        assert_eq!(got.len(), 1);
    }
}
