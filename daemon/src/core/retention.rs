//! The retention planner: which policy snapshot to take now and which to prune.
//!
//! [`plan`] is a pure function of a dataset's snapshots, its [`Policy`] and the current
//! time. It does no I/O and never looks at a clock: the scheduler asks it for a [`Plan`]
//! and carries the plan out (or shows it, for a dry run). Every decision comes with
//! human-readable reasons, so "why is this snapshot still here?" and "why did this one
//! go?" always have an answer.
//!
//! # Naming
//!
//! A policy snapshot is named `labd_<YYYY>-<MM>-<DD>T<HH><MM>Z_<bucket>`, for example
//! `labd_2026-11-25T1900Z_hourly`: the UTC time it was taken, to the minute, and the
//! largest bucket it was taken for (`frequently`, `hourly`, `daily`, `weekly`, `monthly`,
//! `yearly`). [`snapshot_name`] builds such a name and [`parse_name`] is its strict inverse
//! (exact format, valid calendar date, years 0000 to 9999). The bucket in a name is only a
//! label for humans: the planner decides which buckets a snapshot serves from its time.
//! Names carry the time because names are what labd controls: the `creation` property
//! comes from the kernel's clock, while the daemon may run against a test clock.
//!
//! # Why calendar-aligned UTC buckets
//!
//! Buckets are calendar periods in UTC: an hour starts at `:00`, a day at 00:00, a week on
//! Monday 00:00 (ISO weeks), a month on the 1st and a year on January 1st. Months have their
//! real lengths and leap days exist. Calendar periods make a plan explainable ("the first
//! snapshot of 2026-11") and deterministic: the same snapshots and the same time always give
//! the same plan, whatever happened before. Retention anchored at the newest snapshot (as
//! in zrepl's grid) shifts every time a snapshot is taken; sanoid's `count x period` ages
//! treat every month as 31 days. UTC has no daylight-saving gaps or repeated hours, so a
//! day is always 24 hours and nothing depends on the host's time zone.
//!
//! # Why the first snapshot of a period
//!
//! Each bucket keeps the *oldest* policy snapshot of each of its periods. The oldest
//! snapshot of a period never changes once it exists, so a snapshot that a bucket keeps
//! stays kept until its period ages out of the bucket; keeping the newest instead would
//! replace the kept snapshot with every new one and destroy the previous one each run. A
//! daily snapshot then also covers the whole day before it was taken, which is what a
//! restore from "yesterday" expects.
//!
//! # Rules of [`plan`]
//!
//! 1. Times: a policy snapshot's time is the timestamp in its name, not its `created`
//!    property; other snapshots use `created`. The decisions are listed oldest first by
//!    these times (ties by name). A snapshot counts as a policy snapshot when the caller
//!    marked it `ours` *and* its name parses with [`parse_name`].
//! 2. Take: when `autosnap` is on, a bucket with a count above 0 is due when no policy
//!    snapshot has a time in `[period_start(bucket, now), now]`. If any bucket is due, one
//!    snapshot is taken, named `snapshot_name(now, largest due bucket)`, and [`Take::due`]
//!    lists every due bucket. One snapshot per run covers all due buckets: after downtime
//!    labd catches up with a single snapshot and never backfills. No snapshot is planned
//!    when a snapshot with that name already exists. The planned snapshot takes part in
//!    rules 4 and 5 as if it existed (so a run leaves exactly what the policy says), but
//!    gets no decision; the caller must not prune a dataset whose take failed.
//! 3. A snapshot that is not a policy snapshot is kept: "not a policy snapshot: never
//!    pruned". A held snapshot is kept: "held".
//! 4. Buckets: for each bucket with count `n > 0`, the `n` most recent periods of that
//!    bucket (the one containing `now` and the `n - 1` before it) each keep their oldest
//!    policy snapshot, e.g. "daily: first snapshot of 2026-11-25 (period 3 of 30)"; period 1
//!    is the current one. When `max_age` is set, a snapshot older than `now - max_age` is not
//!    kept by bucket rules (the reason then says so). The representative of a period is
//!    chosen before `max_age` applies, so it never shifts to a younger snapshot.
//! 5. Floor: the newest policy snapshot is always kept ("newest policy snapshot"), and so
//!    are the newest `min_keep` policy snapshots ("minimum: one of the newest N").
//! 6. Every other policy snapshot would be destroyed: "kept by no rule".
//! 7. Safety: when a policy snapshot is dated after `now` (the clock went backwards) or the
//!    scheduler saw the wall clock jump ([`PlanOptions::clock_jumped`]), pruning is paused:
//!    [`Plan::pruning_paused`] says why, and every would-be destroy is kept with "pruning
//!    paused: <why>". Taking still happens (rule 2). When `autoprune` is off, every
//!    would-be destroy is kept with "autoprune is off".
//! 8. Cap: when [`PlanOptions::max_destroy`] is above 0 and more snapshots would be
//!    destroyed, the oldest `max_destroy` go and the rest are kept with "deferred: at most
//!    N deletions per run"; they go in later runs.
//! 9. A snapshot keeps all of its reasons, in rule order (a snapshot can be kept by the
//!    hourly and the daily bucket and be the newest). A kept would-be destroy lists "kept
//!    by no rule" followed by what saved it this run.

use std::fmt;
use std::ops::Range;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Prefix of every policy snapshot name.
const PREFIX: &str = "labd_";
/// Length of the time part of a name, `YYYY-MM-DDTHHMMZ`.
const STAMP_LEN: usize = 16;
/// The accepted periods of the frequent bucket, in minutes: the divisors of 60 below 60.
const FREQUENT_MINUTES: [u32; 11] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30];
/// Seconds in an hour, a UTC day and a week.
const HOUR_SECS: i64 = 3_600;
/// Seconds in a UTC day (UTC as jiff models it has no leap seconds).
const DAY_SECS: i64 = 86_400;
/// Seconds in a week.
const WEEK_SECS: i64 = 604_800;

/// Retention buckets, smallest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// Every `frequent_minutes` minutes, aligned within the hour.
    Frequent,
    /// Every hour, at `:00`.
    Hourly,
    /// Every UTC day, at 00:00.
    Daily,
    /// Every ISO week, on Monday 00:00.
    Weekly,
    /// Every month, on the 1st at 00:00.
    Monthly,
    /// Every year, on January 1st at 00:00.
    Yearly,
}

impl Bucket {
    /// Every bucket, smallest first.
    pub const ALL: [Bucket; 6] = [
        Bucket::Frequent,
        Bucket::Hourly,
        Bucket::Daily,
        Bucket::Weekly,
        Bucket::Monthly,
        Bucket::Yearly,
    ];

    /// The bucket's name in configuration keys, snapshot names and reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Frequent => "frequently",
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }

    /// The bucket named `s` (exactly as [`Bucket::as_str`] spells it), if any.
    pub fn parse(s: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.as_str() == s)
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A named policy (validated by the config layer; the planner trusts it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name, as referenced by the `labd:policy` property.
    pub name: String,
    /// Period of the frequent bucket, in minutes; divides 60 (1, 2, 3, 4, 5, 6, 10, 12, 15,
    /// 20, 30).
    pub frequent_minutes: u32,
    /// How many frequent periods keep a snapshot.
    pub frequently: u32,
    /// How many hours keep a snapshot.
    pub hourly: u32,
    /// How many days keep a snapshot.
    pub daily: u32,
    /// How many ISO weeks keep a snapshot.
    pub weekly: u32,
    /// How many months keep a snapshot.
    pub monthly: u32,
    /// How many years keep a snapshot.
    pub yearly: u32,
    /// Never prune below this many policy snapshots of a dataset: the newest `min_keep` stay.
    pub min_keep: u32,
    /// Bucket rules do not keep snapshots older than `now - max_age`.
    pub max_age: Option<SignedDuration>,
    /// Take snapshots when a bucket is due.
    pub autosnap: bool,
    /// Destroy snapshots that no rule keeps.
    pub autoprune: bool,
}

impl Policy {
    /// The count of bucket `b`: how many of its most recent periods keep a snapshot.
    pub fn count(&self, b: Bucket) -> u32 {
        match b {
            Bucket::Frequent => self.frequently,
            Bucket::Hourly => self.hourly,
            Bucket::Daily => self.daily,
            Bucket::Weekly => self.weekly,
            Bucket::Monthly => self.monthly,
            Bucket::Yearly => self.yearly,
        }
    }

    /// Checks the policy; the error message starts with the offending key, e.g.
    /// "frequent_minutes: 7 does not divide 60 ...".
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("name: a policy needs a name".to_owned());
        }
        check_frequent_minutes(self.frequent_minutes)?;
        if let Some(max_age) = self.max_age
            && !max_age.is_positive()
        {
            return Err(format!("max_age: must be positive, not {max_age:#}"));
        }
        if self.autosnap && Bucket::ALL.into_iter().all(|b| self.count(b) == 0) {
            return Err(
                "autosnap: on, but every count (frequently, hourly, daily, weekly, \
                 monthly, yearly) is 0, so nothing would ever be taken"
                    .to_owned(),
            );
        }
        Ok(())
    }

    /// The frequent period in minutes, clamped to 1..=60 for an unvalidated policy.
    fn frequent_step(&self) -> i8 {
        i8::try_from(self.frequent_minutes.clamp(1, 60)).unwrap_or(60)
    }
}

/// Refuses a frequent period that is not one of [`FREQUENT_MINUTES`].
fn check_frequent_minutes(minutes: u32) -> Result<(), String> {
    if FREQUENT_MINUTES.contains(&minutes) {
        return Ok(());
    }
    let allowed = FREQUENT_MINUTES.map(|m| m.to_string()).join(", ");
    if minutes == 0 || minutes >= 60 {
        Err(format!(
            "frequent_minutes: {minutes} is out of range (use one of {allowed})"
        ))
    } else {
        Err(format!(
            "frequent_minutes: {minutes} does not divide 60 (use one of {allowed})"
        ))
    }
}

/// One snapshot of one dataset as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snap {
    /// The part after '@'.
    pub name: String,
    /// A labd policy snapshot: its name parses with [`parse_name`] and it carries a local
    /// `labd:policy` property (the caller decides). A snapshot marked `ours` whose name does
    /// not parse is treated as foreign and never pruned.
    pub ours: bool,
    /// Has user holds.
    pub held: bool,
    /// ZFS creation time (used only for snapshots that are not ours, for display and order).
    pub created: Timestamp,
}

/// Per-run options from the scheduler.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// At most this many snapshots are destroyed per run (0 = no cap).
    pub max_destroy: usize,
    /// The scheduler saw wall time diverge from monotonic time: pruning is paused.
    pub clock_jumped: bool,
}

/// What to do with one dataset this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot to take, if any bucket is due.
    pub take: Option<Take>,
    /// One decision per input snapshot, oldest first.
    pub decisions: Vec<Decision>,
    /// Why pruning is paused this run, if it is.
    pub pruning_paused: Option<String>,
}

/// A snapshot to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Take {
    /// The snapshot name (the part after '@').
    pub name: String,
    /// Every bucket this snapshot is taken for, smallest first.
    pub due: Vec<Bucket>,
}

/// The fate of one existing snapshot, with every reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot name (the part after '@').
    pub snapshot: String,
    /// Keep or destroy.
    pub action: Action,
    /// Human-readable reasons, in rule order.
    pub reasons: Vec<String>,
}

/// What happens to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The snapshot stays.
    Keep,
    /// The snapshot is destroyed this run.
    Destroy,
}

/// The policy snapshot name for time `t` (minute precision, UTC) and `bucket`, e.g.
/// "labd_2026-11-25T1900Z_hourly". Seconds are dropped, not rounded.
pub fn snapshot_name(t: Timestamp, bucket: Bucket) -> String {
    let dt = utc(t);
    format!(
        "{PREFIX}{:04}-{:02}-{:02}T{:02}{:02}Z_{}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        bucket.as_str()
    )
}

/// The time and bucket of a policy snapshot name; `None` for anything that is not exactly
/// what [`snapshot_name`] produces (other prefixes, a missing `Z`, an invalid date such as
/// 2026-02-29, an unknown or differently cased bucket, extra characters).
pub fn parse_name(s: &str) -> Option<(Timestamp, Bucket)> {
    let rest = s.strip_prefix(PREFIX)?;
    let (stamp, tail) = rest.split_at_checked(STAMP_LEN)?;
    let bucket = Bucket::parse(tail.strip_prefix('_')?)?;
    let t = parse_stamp(stamp.as_bytes())?;
    (snapshot_name(t, bucket) == s).then_some((t, bucket))
}

/// Parses `YYYY-MM-DDTHHMMZ` (exactly 16 ASCII bytes) as a UTC time.
fn parse_stamp(b: &[u8]) -> Option<Timestamp> {
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let shaped = at(4, b'-') && at(7, b'-') && at(10, b'T') && at(15, b'Z');
    if b.len() != STAMP_LEN || !shaped {
        return None;
    }
    let field = |range: Range<usize>| i8::try_from(digits(b.get(range)?)?).ok();
    let year = digits(b.get(0..4)?)?;
    let (month, day) = (field(5..7)?, field(8..10)?);
    let (hour, minute) = (field(11..13)?, field(13..15)?);
    instant(DateTime::new(year, month, day, hour, minute, 0, 0).ok()?)
}

/// The value of up to four ASCII decimal digits (no sign, no spaces).
fn digits(b: &[u8]) -> Option<i16> {
    b.iter().try_fold(0i16, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i16::from(c - b'0'))
    })
}

/// The start of the `bucket` period containing `t`, calendar-aligned in UTC: frequent =
/// floor to `frequent_minutes` within the hour, hourly = `:00`, daily = 00:00, weekly =
/// Monday 00:00 (ISO week), monthly = the 1st 00:00, yearly = January 1st 00:00.
/// Saturates at [`Timestamp::MIN`] at the edge of jiff's range.
pub fn period_start(policy: &Policy, bucket: Bucket, t: Timestamp) -> Timestamp {
    let dt = utc(t);
    let date = dt.date();
    let start = match bucket {
        Bucket::Frequent => {
            let step = policy.frequent_step();
            date.at(dt.hour(), dt.minute() - dt.minute() % step, 0, 0)
        }
        Bucket::Hourly => date.at(dt.hour(), 0, 0, 0),
        Bucket::Daily => date.at(0, 0, 0, 0),
        Bucket::Weekly => monday_of(date).at(0, 0, 0, 0),
        Bucket::Monthly => date.first_of_month().at(0, 0, 0, 0),
        Bucket::Yearly => date.first_of_year().at(0, 0, 0, 0),
    };
    instant(start).unwrap_or(Timestamp::MIN)
}

/// The next period boundary after `now` of any bucket with a count above 0; `None` when
/// autosnap is off or every count is 0.
pub fn next_due(policy: &Policy, now: Timestamp) -> Option<Timestamp> {
    if !policy.autosnap {
        return None;
    }
    Bucket::ALL
        .into_iter()
        .filter(|&b| policy.count(b) > 0)
        .filter_map(|b| next_boundary(policy, b, now))
        .min()
}

/// Plans one run for one dataset: what to take and what to keep or destroy, with reasons
/// (see the module documentation for the rules).
pub fn plan(policy: &Policy, snaps: &[Snap], now: Timestamp, opts: PlanOptions) -> Plan {
    let take = plan_take(policy, &sorted_entries(snaps), now);
    // The snapshot this run takes counts for the keep rules, so that a run leaves exactly
    // what the policy says (24 hourlies, not 24 plus the new one). It has no decision.
    let mut with_take = snaps.to_vec();
    if let Some(t) = &take {
        with_take.push(Snap {
            name: t.name.clone(),
            ours: true,
            held: false,
            created: now,
        });
    }
    let entries = sorted_entries(&with_take);
    let ours: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].policy_time.is_some())
        .collect();
    let pruning_paused = pause_reason(&entries, now, opts);

    let mut verdicts: Vec<Verdict> = entries.iter().map(first_verdict).collect();
    for bucket in Bucket::ALL {
        apply_bucket(policy, bucket, &entries, &ours, now, &mut verdicts);
    }
    apply_floor(policy, &ours, &mut verdicts);
    apply_overrides(
        policy,
        &ours,
        pruning_paused.as_deref(),
        opts,
        &mut verdicts,
    );

    let taken = take.as_ref().map(|t| t.name.as_str());
    let decisions = entries
        .iter()
        .zip(verdicts)
        .filter(|(entry, _)| Some(entry.snap.name.as_str()) != taken)
        .map(|(entry, verdict)| Decision {
            snapshot: entry.snap.name.clone(),
            action: if verdict.keep {
                Action::Keep
            } else {
                Action::Destroy
            },
            reasons: verdict.reasons,
        })
        .collect();
    Plan {
        take,
        decisions,
        pruning_paused,
    }
}

/// A snapshot with the time the planner orders it by.
#[derive(Debug)]
struct Entry<'a> {
    /// The input snapshot.
    snap: &'a Snap,
    /// The time in its name for a policy snapshot, else `None`.
    policy_time: Option<Timestamp>,
}

impl Entry<'_> {
    /// The time used for ordering: the name's time for policy snapshots, else `created`.
    fn time(&self) -> Timestamp {
        self.policy_time.unwrap_or(self.snap.created)
    }
}

/// The keep/destroy verdict being built for one snapshot.
#[derive(Debug)]
struct Verdict {
    /// Some rule keeps the snapshot.
    keep: bool,
    /// Reasons so far, in rule order.
    reasons: Vec<String>,
}

impl Verdict {
    /// Records a reason that keeps the snapshot.
    fn keep(&mut self, reason: String) {
        self.keep = true;
        self.reasons.push(reason);
    }
}

/// The snapshots with their times, oldest first (ties by name).
fn sorted_entries(snaps: &[Snap]) -> Vec<Entry<'_>> {
    let mut entries: Vec<Entry<'_>> = snaps
        .iter()
        .map(|snap| Entry {
            snap,
            policy_time: snap
                .ours
                .then(|| parse_name(&snap.name))
                .flatten()
                .map(|(t, _)| t),
        })
        .collect();
    entries.sort_by(|a, b| {
        a.time()
            .cmp(&b.time())
            .then_with(|| a.snap.name.cmp(&b.snap.name))
    });
    entries
}

/// Rule 2: the snapshot to take now, if any bucket is due and the name is free.
fn plan_take(policy: &Policy, entries: &[Entry<'_>], now: Timestamp) -> Option<Take> {
    if !policy.autosnap {
        return None;
    }
    let due: Vec<Bucket> = Bucket::ALL
        .into_iter()
        .filter(|&b| policy.count(b) > 0 && is_due(policy, b, entries, now))
        .collect();
    let largest = *due.last()?;
    let name = snapshot_name(now, largest);
    if entries.iter().any(|e| e.snap.name == name) {
        return None;
    }
    Some(Take { name, due })
}

/// A bucket is due when no policy snapshot falls in its current period up to `now`.
fn is_due(policy: &Policy, bucket: Bucket, entries: &[Entry<'_>], now: Timestamp) -> bool {
    let start = period_start(policy, bucket, now);
    !entries
        .iter()
        .filter_map(|e| e.policy_time)
        .any(|t| start <= t && t <= now)
}

/// Rule 7: why pruning is paused this run, if it is.
fn pause_reason(entries: &[Entry<'_>], now: Timestamp, opts: PlanOptions) -> Option<String> {
    let mut why = Vec::new();
    if opts.clock_jumped {
        why.push("the wall clock jumped (it diverged from the monotonic clock)".to_owned());
    }
    let future: Vec<&str> = entries
        .iter()
        .filter(|e| e.policy_time.is_some_and(|t| t > now))
        .map(|e| e.snap.name.as_str())
        .collect();
    match future.as_slice() {
        [] => {}
        [one] => why.push(format!(
            "the clock went backwards: {one} is dated after now ({now})"
        )),
        [.., newest] => why.push(format!(
            "the clock went backwards: {} policy snapshots, the newest {newest}, are dated \
             after now ({now})",
            future.len()
        )),
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Rule 1 and 3: the verdict before bucket rules.
fn first_verdict(entry: &Entry<'_>) -> Verdict {
    let mut verdict = Verdict {
        keep: false,
        reasons: Vec::new(),
    };
    if entry.policy_time.is_none() {
        let reason = if entry.snap.ours {
            "not a policy snapshot (the name is not labd_YYYY-MM-DDTHHMMZ_<bucket>): never pruned"
        } else {
            "not a policy snapshot: never pruned"
        };
        verdict.keep(reason.to_owned());
    }
    if entry.snap.held {
        verdict.keep("held".to_owned());
    }
    verdict
}

/// Rule 4: `bucket` keeps the oldest policy snapshot of each of its `count` most recent
/// periods, unless `max_age` excludes it.
fn apply_bucket(
    policy: &Policy,
    bucket: Bucket,
    entries: &[Entry<'_>],
    ours: &[usize],
    now: Timestamp,
    verdicts: &mut [Verdict],
) {
    let count = policy.count(bucket);
    if count == 0 {
        return;
    }
    let current = period_start(policy, bucket, now);
    let cutoff = policy.max_age.and_then(|age| now.checked_sub(age).ok());
    let mut previous = None;
    for &i in ours {
        let Some(t) = entries[i].policy_time else {
            continue;
        };
        let start = period_start(policy, bucket, t);
        if previous == Some(start) {
            continue;
        }
        previous = Some(start);
        let back = periods_back(policy, bucket, start, current);
        if back < 0 || back >= i64::from(count) {
            continue;
        }
        let reason = format!(
            "{bucket}: first snapshot of {} (period {} of {count})",
            period_label(bucket, start),
            back + 1
        );
        match (cutoff, policy.max_age) {
            (Some(cutoff), Some(age)) if t < cutoff => verdicts[i].reasons.push(format!(
                "{reason}, but older than max_age ({age:#}): this rule does not keep it"
            )),
            _ => verdicts[i].keep(reason),
        }
    }
}

/// Rule 5: the newest policy snapshot and the newest `min_keep` are always kept.
fn apply_floor(policy: &Policy, ours: &[usize], verdicts: &mut [Verdict]) {
    if let Some(&newest) = ours.last() {
        verdicts[newest].keep("newest policy snapshot".to_owned());
    }
    let floor = usize::try_from(policy.min_keep).unwrap_or(usize::MAX);
    for &i in ours.iter().rev().take(floor) {
        verdicts[i].keep(format!("minimum: one of the newest {}", policy.min_keep));
    }
}

/// Rules 6 to 8: what no rule keeps is destroyed, unless pruning is paused or off, and
/// only the oldest `max_destroy` of it this run.
fn apply_overrides(
    policy: &Policy,
    ours: &[usize],
    paused: Option<&str>,
    opts: PlanOptions,
    verdicts: &mut [Verdict],
) {
    let doomed: Vec<usize> = ours
        .iter()
        .copied()
        .filter(|&i| !verdicts[i].keep)
        .collect();
    for &i in &doomed {
        verdicts[i].reasons.push("kept by no rule".to_owned());
    }
    let mut spared = false;
    if let Some(why) = paused {
        spared = true;
        for &i in &doomed {
            verdicts[i].keep(format!("pruning paused: {why}"));
        }
    }
    if !policy.autoprune {
        spared = true;
        for &i in &doomed {
            verdicts[i].keep("autoprune is off".to_owned());
        }
    }
    if spared || opts.max_destroy == 0 {
        return;
    }
    for &i in doomed.iter().skip(opts.max_destroy) {
        verdicts[i].keep(format!(
            "deferred: at most {} deletions per run",
            opts.max_destroy
        ));
    }
}

/// How many `bucket` periods lie between the period starting at `start` and the one
/// starting at `current` (0 = the same period, negative = `start` is later).
fn periods_back(policy: &Policy, bucket: Bucket, start: Timestamp, current: Timestamp) -> i64 {
    let (then, now) = (utc(start), utc(current));
    match bucket {
        Bucket::Frequent => {
            let step = i64::from(policy.frequent_step());
            let per_hour = (60 + step - 1) / step;
            let hours = whole_periods(
                period_start(policy, Bucket::Hourly, start),
                period_start(policy, Bucket::Hourly, current),
                HOUR_SECS,
            );
            let slot = |dt: DateTime| i64::from(dt.minute()) / step;
            hours * per_hour + slot(now) - slot(then)
        }
        Bucket::Hourly => whole_periods(start, current, HOUR_SECS),
        Bucket::Daily => whole_periods(start, current, DAY_SECS),
        Bucket::Weekly => whole_periods(start, current, WEEK_SECS),
        Bucket::Monthly => month_number(now) - month_number(then),
        Bucket::Yearly => i64::from(now.year()) - i64::from(then.year()),
    }
}

/// Whole periods of `secs` seconds from `from` to `to` (floored).
fn whole_periods(from: Timestamp, to: Timestamp, secs: i64) -> i64 {
    to.duration_since(from).as_secs().div_euclid(secs)
}

/// Months since year 0 of `dt`'s month.
fn month_number(dt: DateTime) -> i64 {
    i64::from(dt.year()) * 12 + i64::from(dt.month()) - 1
}

/// The first boundary of a `bucket` period after `t`.
fn next_boundary(policy: &Policy, bucket: Bucket, t: Timestamp) -> Option<Timestamp> {
    let start = period_start(policy, bucket, t);
    let date = utc(start).date();
    match bucket {
        Bucket::Frequent => {
            let step = SignedDuration::from_mins(i64::from(policy.frequent_step()));
            let hour_end = next_boundary(policy, Bucket::Hourly, t)?;
            let next = start.checked_add(step).ok()?;
            Some(next.min(hour_end))
        }
        Bucket::Hourly => start.checked_add(SignedDuration::from_hours(1)).ok(),
        Bucket::Daily => start.checked_add(SignedDuration::from_hours(24)).ok(),
        Bucket::Weekly => start.checked_add(SignedDuration::from_hours(24 * 7)).ok(),
        Bucket::Monthly => {
            let (year, month) = match date.month() {
                12 => (date.year().checked_add(1)?, 1),
                m => (date.year(), m + 1),
            };
            instant(Date::new(year, month, 1).ok()?.at(0, 0, 0, 0))
        }
        Bucket::Yearly => instant(
            Date::new(date.year().checked_add(1)?, 1, 1)
                .ok()?
                .at(0, 0, 0, 0),
        ),
    }
}

/// How a period is named in reasons.
fn period_label(bucket: Bucket, start: Timestamp) -> String {
    let dt = utc(start);
    let (y, m, d) = (dt.year(), dt.month(), dt.day());
    match bucket {
        Bucket::Frequent | Bucket::Hourly => {
            format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}Z", dt.hour(), dt.minute())
        }
        Bucket::Daily => format!("{y:04}-{m:02}-{d:02}"),
        Bucket::Weekly => {
            let week = dt.date().iso_week_date();
            format!(
                "week {:04}-W{:02} starting {y:04}-{m:02}-{d:02}",
                week.year(),
                week.week()
            )
        }
        Bucket::Monthly => format!("{y:04}-{m:02}"),
        Bucket::Yearly => format!("{y:04}"),
    }
}

/// The Monday starting `date`'s ISO week (saturating at [`Date::MIN`]).
fn monday_of(date: Date) -> Date {
    let back = i64::from(date.weekday().to_monday_zero_offset());
    date.checked_sub(back.days()).unwrap_or(Date::MIN)
}

/// `t` as a civil date and time in UTC.
fn utc(t: Timestamp) -> DateTime {
    TimeZone::UTC.to_datetime(t)
}

/// The UTC instant of a civil date and time, if jiff can represent it.
fn instant(dt: DateTime) -> Option<Timestamp> {
    TimeZone::UTC.to_timestamp(dt).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn policy() -> Policy {
        Policy {
            name: "test".to_owned(),
            frequent_minutes: 15,
            frequently: 0,
            hourly: 24,
            daily: 30,
            weekly: 0,
            monthly: 0,
            yearly: 0,
            min_keep: 0,
            max_age: None,
            autosnap: true,
            autoprune: true,
        }
    }

    fn only(bucket: Bucket, count: u32) -> Policy {
        let mut p = policy();
        p.hourly = 0;
        p.daily = 0;
        match bucket {
            Bucket::Frequent => p.frequently = count,
            Bucket::Hourly => p.hourly = count,
            Bucket::Daily => p.daily = count,
            Bucket::Weekly => p.weekly = count,
            Bucket::Monthly => p.monthly = count,
            Bucket::Yearly => p.yearly = count,
        }
        p
    }

    fn ours_at(t: Timestamp, bucket: Bucket) -> Snap {
        Snap {
            name: snapshot_name(t, bucket),
            ours: true,
            held: false,
            created: t,
        }
    }

    fn ours(t: &str) -> Snap {
        ours_at(ts(t), Bucket::Hourly)
    }

    fn foreign(name: &str, created: &str) -> Snap {
        Snap {
            name: name.to_owned(),
            ours: false,
            held: false,
            created: ts(created),
        }
    }

    /// Policy snapshots every `step` from `from`, `n` of them.
    fn series(from: &str, step: SignedDuration, n: i32, bucket: Bucket) -> Vec<Snap> {
        let start = ts(from);
        (0..n)
            .map(|i| ours_at(start.checked_add(step * i).unwrap(), bucket))
            .collect()
    }

    fn hours(n: i64) -> SignedDuration {
        SignedDuration::from_hours(n)
    }

    fn days(n: i64) -> SignedDuration {
        SignedDuration::from_hours(24 * n)
    }

    fn run(p: &Policy, snaps: &[Snap], now: &str) -> Plan {
        plan(p, snaps, ts(now), PlanOptions::default())
    }

    fn decision<'a>(plan: &'a Plan, name: &str) -> &'a Decision {
        plan.decisions.iter().find(|d| d.snapshot == name).unwrap()
    }

    fn with(plan: &Plan, action: Action) -> Vec<&str> {
        plan.decisions
            .iter()
            .filter(|d| d.action == action)
            .map(|d| d.snapshot.as_str())
            .collect()
    }

    fn name(t: &str, bucket: Bucket) -> String {
        snapshot_name(ts(t), bucket)
    }

    // --- buckets and policies -------------------------------------------------------------

    #[test]
    fn bucket_names_round_trip_and_order() {
        for b in Bucket::ALL {
            assert_eq!(Bucket::parse(b.as_str()), Some(b));
            assert_eq!(b.to_string(), b.as_str());
        }
        assert_eq!(Bucket::Frequent.as_str(), "frequently");
        assert_eq!(Bucket::parse("Hourly"), None);
        assert_eq!(Bucket::parse("frequent"), None);
        assert!(Bucket::ALL.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn count_reads_each_bucket() {
        let p = Policy {
            frequently: 1,
            hourly: 2,
            daily: 3,
            weekly: 4,
            monthly: 5,
            yearly: 6,
            ..policy()
        };
        let counts: Vec<u32> = Bucket::ALL.into_iter().map(|b| p.count(b)).collect();
        assert_eq!(counts, [1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn validate_accepts_a_sane_policy() {
        assert_eq!(policy().validate(), Ok(()));
        for m in FREQUENT_MINUTES {
            let p = Policy {
                frequent_minutes: m,
                ..policy()
            };
            assert_eq!(p.validate(), Ok(()), "{m}");
        }
        let off = Policy {
            hourly: 0,
            daily: 0,
            autosnap: false,
            ..policy()
        };
        assert_eq!(off.validate(), Ok(()));
    }

    #[test]
    fn validate_errors_name_the_key() {
        let err = |p: Policy| p.validate().unwrap_err();
        let e = err(Policy {
            frequent_minutes: 7,
            ..policy()
        });
        assert!(
            e.starts_with("frequent_minutes: 7 does not divide 60"),
            "{e}"
        );
        for bad in [0, 60, 90] {
            let e = err(Policy {
                frequent_minutes: bad,
                ..policy()
            });
            assert!(e.starts_with(&format!("frequent_minutes: {bad} ")), "{e}");
        }
        let e = err(Policy {
            hourly: 0,
            daily: 0,
            ..policy()
        });
        assert!(e.starts_with("autosnap: "), "{e}");
        let e = err(Policy {
            max_age: Some(SignedDuration::ZERO),
            ..policy()
        });
        assert!(e.starts_with("max_age: "), "{e}");
        let e = err(Policy {
            max_age: Some(-hours(1)),
            ..policy()
        });
        assert!(e.starts_with("max_age: "), "{e}");
        let e = err(Policy {
            name: String::new(),
            ..policy()
        });
        assert!(e.starts_with("name: "), "{e}");
    }

    // --- names ----------------------------------------------------------------------------

    #[test]
    fn names_have_minute_precision_in_utc() {
        assert_eq!(
            name("2026-11-25T19:00:59.999Z", Bucket::Hourly),
            "labd_2026-11-25T1900Z_hourly"
        );
        assert_eq!(
            snapshot_name(ts("2026-11-25T20:07:00+01:00"), Bucket::Frequent),
            "labd_2026-11-25T1907Z_frequently"
        );
        assert_eq!(
            name("0001-01-01T00:00Z", Bucket::Yearly),
            "labd_0001-01-01T0000Z_yearly"
        );
    }

    #[test]
    fn names_round_trip() {
        let start = ts("2024-02-28T22:59:00Z");
        for i in 0..500 {
            let t = start
                .checked_add(SignedDuration::from_mins(i * 37))
                .unwrap();
            for b in Bucket::ALL {
                let n = snapshot_name(t, b);
                assert_eq!(parse_name(&n), Some((t, b)), "{n}");
            }
        }
        // The end of jiff's range (9999-12-30T22:00Z) is the end of names.
        assert_eq!(
            parse_name("labd_9999-12-30T2159Z_daily"),
            Some((ts("9999-12-30T21:59:00Z"), Bucket::Daily))
        );
        assert_eq!(parse_name("labd_9999-12-31T0000Z_daily"), None);
    }

    #[test]
    fn parse_name_is_strict() {
        assert_eq!(
            parse_name("labd_2028-02-29T0000Z_daily"),
            Some((ts("2028-02-29T00:00:00Z"), Bucket::Daily))
        );
        for bad in [
            "",
            "labd_",
            "labd_2026-13-01T0000Z_monthly",  // bad month
            "labd_2026-00-01T0000Z_monthly",  // month 0
            "labd_2026-02-29T0000Z_daily",    // not a leap year
            "labd_2026-04-31T0000Z_daily",    // April has 30 days
            "labd_2026-11-25T2400Z_hourly",   // hour 24
            "labd_2026-11-25T1960Z_hourly",   // minute 60
            "labd_2026-11-25T1900_hourly",    // missing Z
            "labd_2026-11-25T1900z_hourly",   // lowercase z
            "labd_2026-11-25t1900Z_hourly",   // lowercase t
            "labd_2026-11-25T19:00Z_hourly",  // colon
            "labd_2026-11-25T190000Z_hourly", // seconds
            "labd_2026-11-25_1900Z_hourly",
            "labd_2026-1-25T1900Z_hourly",
            "labd_+026-11-25T1900Z_hourly",
            "labd_2026-+1-25T1900Z_hourly",
            "labd_2026-11-25T1900Z_minutely", // wrong bucket
            "labd_2026-11-25T1900Z_Hourly",
            "labd_2026-11-25T1900Z_frequent",
            "labd_2026-11-25T1900Z_hourly_x",
            "labd_2026-11-25T1900Z_hourly ",
            "labd_2026-11-25T1900Zhourly",
            "labd_2026-11-25T1900Z",
            "LABD_2026-11-25T1900Z_hourly",
            "xlabd_2026-11-25T1900Z_hourly",
            "labd_2026-11-25T19é0Z_hourly",
            "labd_２026-11-25T1900Z_hourly",
            "autosnap_2026-11-25_19:00:00_hourly",
            "zfs-auto-snap_hourly-2026-11-25-1900",
            "auto-2026-11-25_19-00",
            "before-upgrade",
            "manual",
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
    }

    // --- periods --------------------------------------------------------------------------

    fn start(p: &Policy, b: Bucket, t: &str) -> Timestamp {
        period_start(p, b, ts(t))
    }

    #[test]
    fn period_start_of_every_bucket() {
        let p = policy();
        let t = "2026-11-25T19:44:31.5Z"; // a Wednesday
        assert_eq!(start(&p, Bucket::Frequent, t), ts("2026-11-25T19:30Z"));
        assert_eq!(start(&p, Bucket::Hourly, t), ts("2026-11-25T19:00Z"));
        assert_eq!(start(&p, Bucket::Daily, t), ts("2026-11-25T00:00Z"));
        assert_eq!(start(&p, Bucket::Weekly, t), ts("2026-11-23T00:00Z"));
        assert_eq!(start(&p, Bucket::Monthly, t), ts("2026-11-01T00:00Z"));
        assert_eq!(start(&p, Bucket::Yearly, t), ts("2026-01-01T00:00Z"));
    }

    #[test]
    fn period_start_of_frequent_follows_frequent_minutes() {
        let at = |m: u32, t: &str| {
            let p = Policy {
                frequent_minutes: m,
                ..policy()
            };
            start(&p, Bucket::Frequent, t)
        };
        assert_eq!(at(15, "2026-11-25T19:44Z"), ts("2026-11-25T19:30Z"));
        assert_eq!(at(15, "2026-11-25T19:45Z"), ts("2026-11-25T19:45Z"));
        assert_eq!(at(1, "2026-11-25T19:44:59Z"), ts("2026-11-25T19:44Z"));
        assert_eq!(at(20, "2026-11-25T19:59Z"), ts("2026-11-25T19:40Z"));
        assert_eq!(at(30, "2026-11-25T19:29Z"), ts("2026-11-25T19:00Z"));
    }

    #[test]
    fn period_start_of_weeks_follows_iso_weeks() {
        let p = policy();
        // Sunday 23:59 belongs to the week that started on the Monday before.
        assert_eq!(
            start(&p, Bucket::Weekly, "2026-11-29T23:59:59Z"),
            ts("2026-11-23T00:00Z")
        );
        assert_eq!(
            start(&p, Bucket::Weekly, "2026-11-30T00:00Z"),
            ts("2026-11-30T00:00Z")
        );
        // 2023-01-01 is a Sunday: its week started on Monday 2022-12-26.
        assert_eq!(
            start(&p, Bucket::Weekly, "2023-01-01T12:00Z"),
            ts("2022-12-26T00:00Z")
        );
        assert_eq!(
            start(&p, Bucket::Yearly, "2023-01-01T12:00Z"),
            ts("2023-01-01T00:00Z")
        );
    }

    #[test]
    fn period_start_and_next_boundary_at_month_ends() {
        let p = policy();
        let next = |b: Bucket, t: &str| next_boundary(&p, b, ts(t)).unwrap();
        assert_eq!(
            start(&p, Bucket::Monthly, "2027-01-31T23:59Z"),
            ts("2027-01-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Monthly, "2027-01-31T12:00Z"),
            ts("2027-02-01T00:00Z")
        );
        assert_eq!(
            start(&p, Bucket::Monthly, "2028-02-29T23:59Z"),
            ts("2028-02-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Monthly, "2028-02-29T23:59Z"),
            ts("2028-03-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Monthly, "2027-02-28T23:59Z"),
            ts("2027-03-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Daily, "2027-02-28T23:59Z"),
            ts("2027-03-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Daily, "2028-02-28T23:59Z"),
            ts("2028-02-29T00:00Z")
        );
        assert_eq!(
            next(Bucket::Monthly, "2026-12-15T00:00Z"),
            ts("2027-01-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Yearly, "2026-12-31T23:59Z"),
            ts("2027-01-01T00:00Z")
        );
        assert_eq!(
            next(Bucket::Weekly, "2026-12-31T23:59Z"),
            ts("2027-01-04T00:00Z")
        );
    }

    #[test]
    fn periods_back_counts_calendar_periods() {
        let p = policy();
        let back = |b: Bucket, from: &str, to: &str| {
            periods_back(
                &p,
                b,
                period_start(&p, b, ts(from)),
                period_start(&p, b, ts(to)),
            )
        };
        assert_eq!(
            back(Bucket::Monthly, "2027-12-31T00:00Z", "2028-03-01T00:00Z"),
            3
        );
        assert_eq!(
            back(Bucket::Yearly, "2020-06-01T00:00Z", "2028-01-01T00:00Z"),
            8
        );
        assert_eq!(
            back(Bucket::Weekly, "2026-12-27T23:59Z", "2027-01-04T00:00Z"),
            2
        );
        assert_eq!(
            back(Bucket::Daily, "2028-02-28T10:00Z", "2028-03-01T00:00Z"),
            2
        );
        assert_eq!(
            back(Bucket::Frequent, "2026-11-25T18:50Z", "2026-11-25T19:14Z"),
            1
        );
        assert_eq!(
            back(Bucket::Frequent, "2026-11-24T19:00Z", "2026-11-25T19:00Z"),
            96
        );
        assert_eq!(
            back(Bucket::Hourly, "2026-11-25T20:00Z", "2026-11-25T19:59Z"),
            -1
        );
    }

    // --- next_due -------------------------------------------------------------------------

    #[test]
    fn next_due_crosses_hour_day_month_and_year() {
        let due = |p: &Policy, t: &str| next_due(p, ts(t));
        assert_eq!(
            due(&policy(), "2026-11-25T19:44:10Z"),
            Some(ts("2026-11-25T20:00Z"))
        );
        // Strictly after now.
        assert_eq!(
            due(&policy(), "2026-11-25T19:00:00Z"),
            Some(ts("2026-11-25T20:00Z"))
        );
        assert_eq!(
            due(&only(Bucket::Daily, 7), "2026-11-25T23:59:59Z"),
            Some(ts("2026-11-26T00:00Z"))
        );
        assert_eq!(
            due(&only(Bucket::Monthly, 6), "2026-11-30T23:00Z"),
            Some(ts("2026-12-01T00:00Z"))
        );
        assert_eq!(
            due(&only(Bucket::Monthly, 6), "2026-12-31T10:00Z"),
            Some(ts("2027-01-01T00:00Z"))
        );
        assert_eq!(
            due(&only(Bucket::Yearly, 3), "2026-03-01T00:00Z"),
            Some(ts("2027-01-01T00:00Z"))
        );
        assert_eq!(
            due(&only(Bucket::Weekly, 3), "2026-11-25T19:00Z"),
            Some(ts("2026-11-30T00:00Z"))
        );
        let mut frequent = only(Bucket::Frequent, 4);
        assert_eq!(
            due(&frequent, "2026-11-25T19:44Z"),
            Some(ts("2026-11-25T19:45Z"))
        );
        assert_eq!(
            due(&frequent, "2026-11-25T23:59Z"),
            Some(ts("2026-11-26T00:00Z"))
        );
        frequent.autosnap = false;
        assert_eq!(due(&frequent, "2026-11-25T19:44Z"), None);
        let nothing = Policy {
            hourly: 0,
            daily: 0,
            ..policy()
        };
        assert_eq!(due(&nothing, "2026-11-25T19:44Z"), None);
    }

    // --- take -----------------------------------------------------------------------------

    #[test]
    fn empty_dataset_takes_for_every_bucket_named_by_the_largest() {
        let mut p = Policy {
            frequently: 4,
            hourly: 24,
            daily: 30,
            weekly: 8,
            monthly: 12,
            yearly: 5,
            ..policy()
        };
        let plan = run(&p, &[], "2027-01-01T00:00:30Z");
        assert_eq!(
            plan.take,
            Some(Take {
                name: "labd_2027-01-01T0000Z_yearly".to_owned(),
                due: Bucket::ALL.to_vec(),
            })
        );
        assert!(plan.decisions.is_empty());
        assert_eq!(plan.pruning_paused, None);
        p.yearly = 0;
        let take = run(&p, &[], "2027-01-01T00:00Z").take.unwrap();
        assert_eq!(take.name, "labd_2027-01-01T0000Z_monthly");
        assert_eq!(take.due.last(), Some(&Bucket::Monthly));
        let take = run(&policy(), &[], "2026-11-25T19:44Z").take.unwrap();
        assert_eq!(take.name, "labd_2026-11-25T1944Z_daily");
        assert_eq!(take.due, [Bucket::Hourly, Bucket::Daily]);
    }

    #[test]
    fn not_due_again_within_the_same_hour() {
        let snaps = [ours("2026-11-25T00:00Z"), ours("2026-11-25T19:00Z")];
        for now in [
            "2026-11-25T19:00:40Z",
            "2026-11-25T19:44Z",
            "2026-11-25T19:59:59Z",
        ] {
            assert_eq!(run(&policy(), &snaps, now).take, None, "{now}");
        }
        let take = run(&policy(), &snaps, "2026-11-25T20:00Z").take.unwrap();
        assert_eq!(take.name, "labd_2026-11-25T2000Z_hourly");
        assert_eq!(take.due, [Bucket::Hourly]);
    }

    #[test]
    fn frequent_bucket_is_due_each_period() {
        let p = Policy {
            frequently: 4,
            ..policy()
        };
        let snaps = [ours("2026-11-25T19:00Z")];
        assert_eq!(run(&p, &snaps, "2026-11-25T19:14Z").take, None);
        let take = run(&p, &snaps, "2026-11-25T19:15Z").take.unwrap();
        assert_eq!(take.name, "labd_2026-11-25T1915Z_frequently");
        assert_eq!(take.due, [Bucket::Frequent]);
    }

    #[test]
    fn autosnap_off_takes_nothing() {
        let p = Policy {
            autosnap: false,
            ..policy()
        };
        assert_eq!(run(&p, &[], "2026-11-25T19:44Z").take, None);
    }

    #[test]
    fn catch_up_after_downtime_takes_exactly_one_snapshot() {
        let p = Policy {
            weekly: 4,
            ..policy()
        };
        let mut snaps = series("2026-11-21T00:00Z", hours(1), 35, Bucket::Hourly);
        assert_eq!(snaps.last().unwrap().name, "labd_2026-11-22T1000Z_hourly");
        let plan = run(&p, &snaps, "2026-11-25T19:07:33Z");
        let take = plan.take.clone().unwrap();
        assert_eq!(take.name, "labd_2026-11-25T1907Z_weekly");
        assert_eq!(take.due, [Bucket::Hourly, Bucket::Daily, Bucket::Weekly]);
        // The old snapshots still stand for their days.
        assert!(with(&plan, Action::Keep).contains(&"labd_2026-11-21T0000Z_hourly"));
        snaps.push(ours_at(ts("2026-11-25T19:07Z"), Bucket::Weekly));
        for now in [
            "2026-11-25T19:07:59Z",
            "2026-11-25T19:08Z",
            "2026-11-25T19:59Z",
        ] {
            assert_eq!(run(&p, &snaps, now).take, None, "{now}");
        }
    }

    // --- keep and destroy -----------------------------------------------------------------

    /// Hourly snapshots over three days, named the way labd takes them.
    fn three_days() -> Vec<Snap> {
        let start = ts("2026-11-23T00:00Z");
        (0..72)
            .map(|h| {
                let t = start.checked_add(hours(h)).unwrap();
                let bucket = if h % 24 == 0 {
                    Bucket::Daily
                } else {
                    Bucket::Hourly
                };
                ours_at(t, bucket)
            })
            .collect()
    }

    #[test]
    fn three_days_of_hourly_snapshots() {
        let plan = run(&policy(), &three_days(), "2026-11-25T23:30Z");
        assert_eq!(plan.take, None);
        assert_eq!(plan.decisions.len(), 72);
        let kept = with(&plan, Action::Keep);
        assert_eq!(kept.len(), 26);
        assert_eq!(with(&plan, Action::Destroy).len(), 46);
        assert_eq!(kept[0], "labd_2026-11-23T0000Z_daily");
        assert_eq!(kept[1], "labd_2026-11-24T0000Z_daily");
        assert_eq!(kept[2], "labd_2026-11-25T0000Z_daily");
        assert!(kept[3..].iter().all(|n| n.starts_with("labd_2026-11-25T")));
        assert_eq!(
            decision(&plan, "labd_2026-11-23T0000Z_daily").reasons,
            ["daily: first snapshot of 2026-11-23 (period 3 of 30)"]
        );
        assert_eq!(
            decision(&plan, "labd_2026-11-25T0000Z_daily").reasons,
            [
                "hourly: first snapshot of 2026-11-25T00:00Z (period 24 of 24)",
                "daily: first snapshot of 2026-11-25 (period 1 of 30)",
            ]
        );
        assert_eq!(
            decision(&plan, "labd_2026-11-25T2300Z_hourly").reasons,
            [
                "hourly: first snapshot of 2026-11-25T23:00Z (period 1 of 24)",
                "newest policy snapshot",
            ]
        );
        let gone = decision(&plan, "labd_2026-11-24T2300Z_hourly");
        assert_eq!(gone.action, Action::Destroy);
        assert_eq!(gone.reasons, ["kept by no rule"]);
    }

    #[test]
    fn decisions_are_oldest_first_by_name_time_for_ours() {
        let mut late_created = ours("2026-11-25T10:00Z");
        late_created.created = ts("2030-01-01T00:00Z");
        let snaps = [
            foreign("manual", "2026-11-25T12:00Z"),
            late_created,
            foreign("early", "2026-11-25T09:00Z"),
            ours("2026-11-25T11:00Z"),
        ];
        let plan = run(&policy(), &snaps, "2026-11-25T12:30Z");
        let order: Vec<&str> = plan.decisions.iter().map(|d| d.snapshot.as_str()).collect();
        assert_eq!(
            order,
            [
                "early",
                "labd_2026-11-25T1000Z_hourly",
                "labd_2026-11-25T1100Z_hourly",
                "manual",
            ]
        );
    }

    #[test]
    fn first_snapshot_of_a_period_is_kept_not_the_latest() {
        let p = only(Bucket::Daily, 7);
        let snaps = [
            ours("2026-11-24T06:00Z"),
            ours("2026-11-24T12:00Z"),
            ours("2026-11-24T18:00Z"),
            ours("2026-11-25T06:00Z"),
        ];
        let plan = run(&p, &snaps, "2026-11-25T07:00Z");
        assert_eq!(
            with(&plan, Action::Keep),
            [
                "labd_2026-11-24T0600Z_hourly",
                "labd_2026-11-25T0600Z_hourly"
            ]
        );
    }

    #[test]
    fn monthly_across_february_of_a_leap_year() {
        let p = only(Bucket::Monthly, 3);
        let snaps = series("2027-12-30T00:00Z", days(1), 77, Bucket::Daily);
        assert_eq!(snaps.last().unwrap().name, "labd_2028-03-15T0000Z_daily");
        assert!(
            snaps
                .iter()
                .any(|s| s.name == "labd_2028-02-29T0000Z_daily")
        );
        let plan = run(&p, &snaps, "2028-03-15T12:00Z");
        assert_eq!(
            with(&plan, Action::Keep),
            [
                "labd_2028-01-01T0000Z_daily",
                "labd_2028-02-01T0000Z_daily",
                "labd_2028-03-01T0000Z_daily",
                "labd_2028-03-15T0000Z_daily",
            ]
        );
        assert_eq!(
            decision(&plan, "labd_2028-02-01T0000Z_daily").reasons,
            ["monthly: first snapshot of 2028-02 (period 2 of 3)"]
        );
        assert_eq!(
            decision(&plan, "labd_2028-02-29T0000Z_daily").action,
            Action::Destroy
        );
        assert_eq!(
            decision(&plan, "labd_2027-12-30T0000Z_daily").action,
            Action::Destroy
        );
    }

    #[test]
    fn weekly_across_a_year_boundary() {
        let p = only(Bucket::Weekly, 2);
        // 2026-12-28 is a Monday; 2027-01-01 is in ISO week 2026-W53.
        let snaps = series("2026-12-20T12:00Z", days(1), 15, Bucket::Daily);
        let plan = run(&p, &snaps, "2027-01-03T20:00Z");
        assert_eq!(
            with(&plan, Action::Keep),
            [
                "labd_2026-12-21T1200Z_daily",
                "labd_2026-12-28T1200Z_daily",
                "labd_2027-01-03T1200Z_daily",
            ]
        );
        assert_eq!(
            decision(&plan, "labd_2026-12-28T1200Z_daily").reasons,
            ["weekly: first snapshot of week 2026-W53 starting 2026-12-28 (period 1 of 2)"]
        );
        assert_eq!(
            decision(&plan, "labd_2027-01-01T1200Z_daily").action,
            Action::Destroy
        );
        // On Monday a new week starts and the week of 2026-12-21 ages out.
        let plan = run(&p, &snaps, "2027-01-04T00:00Z");
        assert_eq!(
            decision(&plan, "labd_2026-12-21T1200Z_daily").action,
            Action::Destroy
        );
        assert_eq!(plan.take.unwrap().name, "labd_2027-01-04T0000Z_weekly");
    }

    #[test]
    fn yearly_and_frequent_buckets_keep_their_periods() {
        let p = Policy {
            frequently: 2,
            yearly: 2,
            ..only(Bucket::Frequent, 2)
        };
        let snaps = [
            ours("2025-06-01T00:00Z"),
            ours("2026-03-01T00:00Z"),
            ours("2027-02-01T00:00Z"),
            ours("2027-02-01T10:10Z"),
            ours("2027-02-01T10:20Z"),
            ours("2027-02-01T10:25Z"),
            ours("2027-02-01T10:31Z"),
        ];
        let plan = run(&p, &snaps, "2027-02-01T10:31Z");
        assert_eq!(
            with(&plan, Action::Keep),
            [
                "labd_2026-03-01T0000Z_hourly",
                "labd_2027-02-01T0000Z_hourly",
                "labd_2027-02-01T1020Z_hourly",
                "labd_2027-02-01T1031Z_hourly",
            ]
        );
        assert_eq!(
            decision(&plan, "labd_2027-02-01T1020Z_hourly").reasons,
            ["frequently: first snapshot of 2027-02-01T10:15Z (period 2 of 2)"]
        );
        assert_eq!(
            decision(&plan, "labd_2026-03-01T0000Z_hourly").reasons,
            ["yearly: first snapshot of 2026 (period 2 of 2)"]
        );
    }

    #[test]
    fn the_snapshot_taken_counts_for_the_rules() {
        // hourly 1 + min_keep 3: after the run, exactly 3 remain, the new one included.
        let p = Policy {
            hourly: 1,
            daily: 0,
            monthly: 0,
            min_keep: 3,
            ..policy()
        };
        let snaps = series("2026-11-25T19:00Z", hours(1), 4, Bucket::Hourly);
        let plan = run(&p, &snaps, "2026-11-25T23:00Z");
        assert_eq!(
            plan.take.as_ref().map(|t| t.name.as_str()),
            Some("labd_2026-11-25T2300Z_hourly")
        );
        assert_eq!(
            with(&plan, Action::Destroy),
            [
                "labd_2026-11-25T1900Z_hourly",
                "labd_2026-11-25T2000Z_hourly"
            ]
        );
        assert_eq!(plan.decisions.len(), 4, "the new snapshot has no decision");
    }

    #[test]
    fn min_keep_floor_when_everything_is_old() {
        // No take this run, so that only existing snapshots count.
        let p = Policy {
            min_keep: 5,
            autosnap: false,
            ..policy()
        };
        let snaps = series("2025-01-01T00:00Z", hours(1), 10, Bucket::Hourly);
        let plan = run(&p, &snaps, "2026-11-25T19:00Z");
        let kept = with(&plan, Action::Keep);
        assert_eq!(kept.len(), 5);
        assert_eq!(kept[0], "labd_2025-01-01T0500Z_hourly");
        assert_eq!(
            decision(&plan, "labd_2025-01-01T0900Z_hourly").reasons,
            ["newest policy snapshot", "minimum: one of the newest 5"]
        );
        assert_eq!(
            decision(&plan, "labd_2025-01-01T0500Z_hourly").reasons,
            ["minimum: one of the newest 5"]
        );
        assert_eq!(with(&plan, Action::Destroy).len(), 5);
        // A floor above the number of snapshots keeps them all.
        let p = Policy {
            min_keep: 50,
            ..policy()
        };
        assert!(with(&run(&p, &snaps, "2026-11-25T19:00Z"), Action::Destroy).is_empty());
    }

    #[test]
    fn newest_is_never_destroyed_even_with_all_counts_zero() {
        let p = Policy {
            hourly: 0,
            daily: 0,
            autosnap: false,
            ..policy()
        };
        let snaps = series("2026-11-25T10:00Z", hours(1), 3, Bucket::Hourly);
        let plan = run(&p, &snaps, "2026-11-25T19:00Z");
        assert_eq!(plan.take, None);
        assert_eq!(with(&plan, Action::Keep), ["labd_2026-11-25T1200Z_hourly"]);
        assert_eq!(
            decision(&plan, "labd_2026-11-25T1200Z_hourly").reasons,
            ["newest policy snapshot"]
        );
        assert_eq!(with(&plan, Action::Destroy).len(), 2);
    }

    #[test]
    fn held_snapshots_are_never_destroyed() {
        let p = Policy {
            hourly: 0,
            daily: 0,
            autosnap: false,
            ..policy()
        };
        let mut snaps = series("2026-11-25T10:00Z", hours(1), 3, Bucket::Hourly);
        snaps[0].held = true;
        let plan = run(&p, &snaps, "2026-11-25T19:00Z");
        assert_eq!(
            with(&plan, Action::Destroy),
            ["labd_2026-11-25T1100Z_hourly"]
        );
        assert_eq!(decision(&plan, &snaps[0].name).reasons, ["held"]);
        // Held reasons come first and the others stay.
        snaps[2].held = true;
        let plan = run(&p, &snaps, "2026-11-25T19:00Z");
        assert_eq!(
            decision(&plan, &snaps[2].name).reasons,
            ["held", "newest policy snapshot"]
        );
    }

    #[test]
    fn foreign_snapshots_are_never_destroyed() {
        let p = Policy {
            hourly: 0,
            daily: 0,
            autosnap: false,
            ..policy()
        };
        let mut unmarked = ours("2026-01-01T00:00Z");
        unmarked.ours = false; // a labd-looking name without the labd:policy property
        let mut bad_name = foreign("labd_2026-02-30T0000Z_daily", "2026-01-02T00:00Z");
        bad_name.ours = true; // marked ours by the caller but the name does not parse
        let mut held = foreign("before-upgrade", "2026-01-03T00:00Z");
        held.held = true;
        let snaps = [
            foreign("autosnap_2026-01-01_00:00:00_hourly", "2026-01-01T00:00Z"),
            foreign("zfs-auto-snap_hourly-2026-01-01-0000", "2026-01-01T00:00Z"),
            unmarked,
            bad_name,
            held,
            ours("2026-01-04T00:00Z"),
            ours("2026-01-05T00:00Z"),
        ];
        let plan = run(&p, &snaps, "2026-11-25T19:00Z");
        assert_eq!(
            with(&plan, Action::Destroy),
            ["labd_2026-01-04T0000Z_hourly"]
        );
        for n in [
            "autosnap_2026-01-01_00:00:00_hourly",
            "zfs-auto-snap_hourly-2026-01-01-0000",
            "labd_2026-01-01T0000Z_hourly",
        ] {
            assert_eq!(
                decision(&plan, n).reasons,
                ["not a policy snapshot: never pruned"]
            );
        }
        assert_eq!(
            decision(&plan, "before-upgrade").reasons,
            ["not a policy snapshot: never pruned", "held"]
        );
        let bad = decision(&plan, "labd_2026-02-30T0000Z_daily");
        assert_eq!(bad.action, Action::Keep);
        assert!(bad.reasons[0].ends_with("never pruned"));
    }

    #[test]
    fn foreign_snapshots_do_not_satisfy_a_due_bucket() {
        let snaps = [
            foreign("autosnap_2026-11-25_19:00:00_hourly", "2026-11-25T19:00Z"),
            ours("2026-11-25T00:00Z"),
        ];
        let take = run(&policy(), &snaps, "2026-11-25T19:30Z").take.unwrap();
        assert_eq!(take.name, "labd_2026-11-25T1930Z_hourly");
    }

    #[test]
    fn max_age_stops_bucket_rules_from_keeping_old_snapshots() {
        let p = Policy {
            max_age: Some(days(7)),
            ..only(Bucket::Daily, 30)
        };
        let snaps = series("2026-11-05T12:00Z", days(1), 21, Bucket::Daily);
        let plan = run(&p, &snaps, "2026-11-25T12:00Z");
        let kept = with(&plan, Action::Keep);
        // 11-18T12:00 is exactly max_age old: not older, so kept.
        assert_eq!(kept.first(), Some(&"labd_2026-11-18T1200Z_daily"));
        assert_eq!(kept.len(), 8);
        assert_eq!(with(&plan, Action::Destroy).len(), 13);
        assert_eq!(
            decision(&plan, "labd_2026-11-17T1200Z_daily").reasons,
            [
                "daily: first snapshot of 2026-11-17 (period 9 of 30), but older than max_age \
                 (168h): this rule does not keep it",
                "kept by no rule",
            ]
        );
        // The floor still applies beyond max_age.
        let p = Policy { min_keep: 10, ..p };
        assert_eq!(
            with(&run(&p, &snaps, "2026-11-25T12:00Z"), Action::Keep).len(),
            10
        );
    }

    // --- safety ---------------------------------------------------------------------------

    #[test]
    fn clock_going_backwards_pauses_pruning() {
        let snaps = [
            ours("2026-10-01T05:00Z"),
            ours("2026-10-01T06:00Z"),
            ours("2026-11-25T18:00Z"),
            ours("2026-11-25T19:00Z"),
            ours("2026-11-25T20:00Z"),
        ];
        let plan = run(&policy(), &snaps, "2026-11-25T19:30Z");
        let why = plan.pruning_paused.clone().unwrap();
        assert!(why.contains("clock went backwards"), "{why}");
        assert!(why.contains("labd_2026-11-25T2000Z_hourly"), "{why}");
        assert!(with(&plan, Action::Destroy).is_empty());
        assert_eq!(
            decision(&plan, "labd_2026-10-01T0600Z_hourly").reasons,
            [
                "kept by no rule".to_owned(),
                format!("pruning paused: {why}")
            ]
        );
        // 19:00 is in the current hour: nothing is due, nothing is re-taken.
        assert_eq!(plan.take, None);
        let mut more = snaps.to_vec();
        more.push(ours("2026-11-25T21:00Z"));
        let why = run(&policy(), &more, "2026-11-25T19:30Z")
            .pruning_paused
            .unwrap();
        assert_eq!(
            why,
            "the clock went backwards: 2 policy snapshots, the newest \
             labd_2026-11-25T2100Z_hourly, are dated after now (2026-11-25T19:30:00Z)"
        );
        // Without the future snapshot the same history is pruned.
        let plan = run(&policy(), &snaps[..4], "2026-11-25T19:30Z");
        assert_eq!(plan.pruning_paused, None);
        assert_eq!(
            with(&plan, Action::Destroy),
            [
                "labd_2026-10-01T0500Z_hourly",
                "labd_2026-10-01T0600Z_hourly"
            ]
        );
    }

    #[test]
    fn clock_going_backwards_still_takes_but_never_an_existing_name() {
        let future = ours("2026-11-25T20:00Z");
        let plan = run(
            &policy(),
            &[ours("2026-11-25T00:00Z"), future.clone()],
            "2026-11-25T18:30Z",
        );
        assert!(plan.pruning_paused.is_some());
        assert_eq!(plan.take.unwrap().name, "labd_2026-11-25T1830Z_hourly");
        // The name that would be taken already exists (without the labd:policy property).
        let mut existing = ours("2026-11-25T18:30Z");
        existing.ours = false;
        let snaps = [ours("2026-11-25T00:00Z"), existing, future];
        let plan = run(&policy(), &snaps, "2026-11-25T18:30:20Z");
        assert!(plan.pruning_paused.is_some());
        assert_eq!(plan.take, None);
    }

    #[test]
    fn clock_jump_pauses_pruning() {
        let snaps = series("2026-10-01T00:00Z", hours(1), 5, Bucket::Hourly);
        let opts = PlanOptions {
            clock_jumped: true,
            ..PlanOptions::default()
        };
        let plan = plan(&policy(), &snaps, ts("2026-11-25T19:30Z"), opts);
        let why = plan.pruning_paused.clone().unwrap();
        assert!(why.contains("clock jumped"), "{why}");
        assert!(with(&plan, Action::Destroy).is_empty());
        assert!(plan.decisions[0].reasons[1].starts_with("pruning paused: "));
        // Taking goes on.
        assert_eq!(plan.take.unwrap().name, "labd_2026-11-25T1930Z_daily");
    }

    #[test]
    fn autoprune_off_keeps_everything() {
        let p = Policy {
            autoprune: false,
            ..policy()
        };
        let snaps = series("2026-10-01T00:00Z", hours(1), 5, Bucket::Hourly);
        let plan = run(&p, &snaps, "2026-11-25T19:30Z");
        assert!(with(&plan, Action::Destroy).is_empty());
        assert_eq!(plan.pruning_paused, None);
        assert_eq!(
            plan.decisions[1].reasons,
            ["kept by no rule", "autoprune is off"]
        );
    }

    #[test]
    fn cap_destroys_the_oldest_and_defers_the_rest() {
        let snaps = series("2026-10-01T00:00Z", hours(1), 11, Bucket::Hourly);
        let opts = PlanOptions {
            max_destroy: 3,
            ..PlanOptions::default()
        };
        let no_take = Policy {
            autosnap: false,
            ..policy()
        };
        let plan = plan(&no_take, &snaps, ts("2026-11-25T19:30Z"), opts);
        assert_eq!(
            with(&plan, Action::Destroy),
            [
                "labd_2026-10-01T0000Z_hourly",
                "labd_2026-10-01T0100Z_hourly",
                "labd_2026-10-01T0200Z_hourly",
            ]
        );
        assert_eq!(with(&plan, Action::Keep).len(), 8);
        assert_eq!(
            decision(&plan, "labd_2026-10-01T0400Z_hourly").reasons,
            ["kept by no rule", "deferred: at most 3 deletions per run"]
        );
        let uncapped = run(&no_take, &snaps, "2026-11-25T19:30Z");
        assert_eq!(with(&uncapped, Action::Destroy).len(), 10);
    }

    // --- whole runs -----------------------------------------------------------------------

    /// Carries out a plan on `snaps` as the scheduler would.
    fn apply(plan: &Plan, snaps: &mut Vec<Snap>, now: Timestamp) {
        let doomed = with(plan, Action::Destroy);
        snaps.retain(|s| !doomed.contains(&s.name.as_str()));
        if let Some(take) = &plan.take {
            snaps.push(Snap {
                name: take.name.clone(),
                ours: true,
                held: false,
                created: now,
            });
        }
    }

    #[test]
    fn simulated_months_stay_bounded_and_idempotent() {
        let p = Policy {
            frequently: 4,
            hourly: 24,
            daily: 7,
            weekly: 4,
            monthly: 3,
            yearly: 1,
            min_keep: 3,
            ..policy()
        };
        let mut snaps = Vec::new();
        let mut now = ts("2027-12-28T00:03:17Z");
        let end = ts("2028-03-02T00:00Z");
        while now < end {
            let plan = plan(&p, &snaps, now, PlanOptions::default());
            assert_eq!(plan.pruning_paused, None);
            assert!(plan.decisions.iter().all(|d| !d.reasons.is_empty()));
            apply(&plan, &mut snaps, now);
            // The same run again changes nothing.
            let again = plan_again(&p, &snaps, now);
            assert_eq!(again.take, None);
            assert!(with(&again, Action::Destroy).is_empty());
            let bound = 4 + 24 + 7 + 4 + 3 + 1;
            assert!(snaps.len() <= bound, "{} snapshots at {now}", snaps.len());
            now = now.checked_add(SignedDuration::from_mins(15)).unwrap();
        }
        let names: Vec<&str> = snaps.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"labd_2028-01-01T0003Z_yearly"), "{names:?}");
        assert!(
            names.contains(&"labd_2028-02-01T0003Z_monthly"),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| n.starts_with("labd_2027")),
            "{names:?}"
        );
    }

    fn plan_again(p: &Policy, snaps: &[Snap], now: Timestamp) -> Plan {
        plan(p, snaps, now, PlanOptions::default())
    }
}
