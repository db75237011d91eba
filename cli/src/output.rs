//! Rendering: borderless tables, JSON and YAML, human sizes and times, and the one way to
//! write to stdout.
//!
//! Every command prints through [`emit`] (or [`write_stdout`]), which never panics: a closed
//! pipe (`labctl dataset list | head -1`) surfaces as an `io::Error` of kind `BrokenPipe`
//! that `main` turns into a clean exit.

use std::io::{self, Write};

use anyhow::Context as _;
use comfy_table::{CellAlignment, Table, presets};
use jiff::Timestamp;
use labd::wire::JobState;
use serde::Serialize;

use crate::args::OutputFormat;

/// Write `text` to stdout, adding a final newline when it lacks one, and flush.
pub fn write_stdout(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Write `text` to stdout exactly as it is (no newline added), and flush.
pub fn write_stdout_raw(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Write one line to stderr; a failure to write there is ignored (there is nowhere left to
/// report it).
pub fn write_stderr(line: &str) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

/// `value` as pretty JSON (the raw API object).
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    serde_json::to_string_pretty(value).context("cannot encode JSON")
}

/// `value` as a YAML document.
pub fn yaml<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    serde_norway::to_string(value).context("cannot encode YAML")
}

/// Print `value` in the chosen format; `table` renders it for table mode.
pub fn emit<T: Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    table: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    let text = match format {
        OutputFormat::Table => table(value),
        OutputFormat::Json => json(value)?,
        OutputFormat::Yaml => yaml(value)?,
    };
    write_stdout(&text)?;
    Ok(())
}

/// An empty table in labctl's style: no borders, no lines, left-aligned, two spaces
/// between columns, so each row is one greppable line.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    t.set_header(header.to_vec());
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
        column.set_cell_alignment(CellAlignment::Left);
    }
    t
}

/// A two-column table of keys and values, without a header.
pub fn key_values<'a>(rows: impl IntoIterator<Item = (&'a str, String)>) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    for (k, v) in rows {
        t.add_row(vec![k.to_owned(), v]);
    }
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t
}

/// A table as text, without trailing spaces.
pub fn render(t: &Table) -> String {
    t.trim_fmt()
}

/// Bytes the way `zfs list` shows them: `512B`, `120K`, `1.50G`, `12.3T`, `123M` (three
/// significant digits, powers of 1024, exact multiples without decimals).
pub fn size(bytes: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut unit = 0;
    let mut divisor: u64 = 1024;
    while unit + 1 < UNITS.len() && bytes / divisor >= 1024 {
        unit += 1;
        divisor *= 1024;
    }
    if bytes.is_multiple_of(divisor) {
        return format!("{}{}", bytes / divisor, UNITS[unit]);
    }
    let value = bytes as f64 / divisor as f64;
    // "1.50", "12.3", "123"; rounding may carry into one more digit ("9.999" -> "10.00").
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).count();
    let mut s = format!("{value:.2}");
    if digits(&s) > 3 {
        s = format!("{value:.1}");
    }
    if digits(&s) > 3 {
        s = format!("{value:.0}");
    }
    if s == "1024" && unit + 1 < UNITS.len() {
        return format!("1.00{}", UNITS[unit + 1]);
    }
    format!("{s}{}", UNITS[unit])
}

/// A time in UTC to the second: `2026-11-25T19:00:00Z`.
pub fn time(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A job state as the API spells it (`succeeded`).
pub fn job_state(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// `yes` or `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sizes_below_a_kilobyte_are_bytes() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(512), "512B");
        assert_eq!(size(1023), "1023B");
    }

    #[test]
    fn exact_multiples_have_no_decimals() {
        assert_eq!(size(1024), "1K");
        assert_eq!(size(120 * 1024), "120K");
        assert_eq!(size(1024 * 1024), "1M");
        assert_eq!(size(256 << 20), "256M");
        assert_eq!(size(10 << 40), "10T");
        assert_eq!(size(1 << 50), "1P");
    }

    #[test]
    fn sizes_keep_three_significant_digits() {
        assert_eq!(size(1536), "1.50K");
        assert_eq!(size((1 << 30) + (1 << 29)), "1.50G");
        assert_eq!(size(12_900_000), "12.3M");
        assert_eq!(size(123 * 1024 * 1024 + 1), "123M");
        assert_eq!(size(1_288_490_189), "1.20G");
    }

    #[test]
    fn rounding_carries_into_the_next_digit_or_unit() {
        // 9.999K -> "10.0K", not "10.00K".
        assert_eq!(size(10_238), "10.0K");
        // 1023.9K -> "1.00M", not "1024K".
        assert_eq!(size(1024 * 1024 - 100), "1.00M");
        assert_eq!(size(u64::MAX), "16.0E");
    }

    #[test]
    fn job_states_are_spelled_like_the_api() {
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), job_state(state));
        }
    }

    #[test]
    fn times_are_utc_to_the_second() {
        let t: Timestamp = "2026-11-25T19:00:00.123456Z".parse().unwrap();
        assert_eq!(time(t), "2026-11-25T19:00:00Z");
    }

    #[test]
    fn tables_have_no_borders_and_no_trailing_spaces() {
        let mut t = table(&["NAME", "USED"]);
        t.add_row(vec!["photos", "1K"]);
        t.add_row(vec!["a-much-longer-name", "12.3G"]);
        let text = render(&t);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME                USED",
                "photos              1K",
                "a-much-longer-name  12.3G"
            ]
        );
    }

    #[test]
    fn key_value_tables_align_values() {
        let t = key_values([("version", "0.1.0".to_owned()), ("api", "v1".to_owned())]);
        assert_eq!(render(&t), "version  0.1.0\napi      v1");
    }
}
