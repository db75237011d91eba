//! Validated ZFS dataset, snapshot and hold-tag names.
//!
//! Every name that labd hands to `zfs(8)` goes through this module first, so
//! a bad name is refused with a clear message before any command runs. The
//! rules follow OpenZFS's `zfs_namecheck.c` (`entity_namecheck`,
//! `zfs_component_namecheck`, `pool_namecheck`, `dataset_nestcheck`), the
//! extra reserved pool names of libzfs's `zpool_name_valid`, and the naming
//! section of `zfs(8)`, with a few deliberate tightenings for a CLI-driven
//! appliance:
//!
//! * A name is at most 255 bytes (`ZFS_MAX_DATASET_NAME_LEN` is 256 including
//!   the NUL); for a snapshot that includes the `@snap` part.
//! * Components are separated by `/`; none may be empty (no leading or
//!   trailing `/`, no `//`), and none may be `.` or `..`.
//! * A component holds only ASCII letters, digits, `_`, `-`, `.` and `:`.
//!   ZFS also accepts a space (and `%` for internal temporary clones); labd
//!   refuses those and every other character, including non-ASCII and
//!   control characters, so names survive shell quoting and `zfs -H` output.
//! * No component (nor a snapshot name) may begin with `-`, which the zfs CLI
//!   would read as an option.
//! * A dataset is nested at most 49 levels deep (ZFS's default
//!   `zfs_max_dataset_nesting` is 50 and the depth must stay below it).
//! * The pool name (first component) must begin with a letter, is at most
//!   239 bytes (room for `<pool>/$ORIGIN@$ORIGIN`), must not be a vdev
//!   keyword (`mirror`, `raidz`, `draid`, `spare`, `log`, `cache`, `special`,
//!   `dedup`), must not begin with `mirror`, `raidz`, `draid` or `spare`, and
//!   must not look like a disk (`c` followed by a digit).
//! * A snapshot name is `dataset@snap` with exactly one `@`; the `snap` part
//!   follows the component rules above.
//! * A hold tag (`zfs hold`) is 1 to 255 bytes of printable ASCII without
//!   whitespace and does not begin with `-`.
//!
//! [`resolve_dataset`] and [`resolve_snapshot`] turn what a user typed into a
//! full name below labd's configured root dataset, refusing full names that
//! point elsewhere in the same pool.

use std::fmt;

/// Longest dataset or snapshot name, in bytes (`ZFS_MAX_DATASET_NAME_LEN` - 1).
const MAX_NAME_LEN: usize = 255;
/// Longest pool name, in bytes (`ZFS_MAX_DATASET_NAME_LEN` - 2 - 2 * strlen("$ORIGIN") - 1).
const MAX_POOL_LEN: usize = 239;
/// Deepest nesting (number of '/'), one below ZFS's `zfs_max_dataset_nesting` of 50.
const MAX_DEPTH: usize = 49;
/// Longest hold tag, in bytes (`MAXNAMELEN` - 1).
const MAX_HOLD_TAG_LEN: usize = 255;
/// The characters allowed in a component, as shown in error messages.
const ALLOWED: &str = "letters, digits, '_', '-', '.', ':'";
/// Pool names that are vdev keywords of `zpool create`.
const RESERVED_POOLS: &[&str] = &[
    "mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup",
];
/// Pool name prefixes refused by `zpool_name_valid`.
const RESERVED_POOL_PREFIXES: &[&str] = &["mirror", "raidz", "draid", "spare"];

/// Which naming rule a refused name broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// The name is empty.
    Empty,
    /// The name (or its pool, or a tag) is longer than ZFS allows.
    TooLong,
    /// The dataset is nested deeper than ZFS allows by default.
    TooDeep,
    /// A character outside the allowed set was found.
    BadCharacter,
    /// A component is empty: leading or trailing '/', "//", or nothing around '@'.
    EmptyComponent,
    /// A component is "." or "..".
    DotComponent,
    /// A component, snapshot name or tag begins with '-'.
    LeadingDash,
    /// The pool name does not begin with a letter.
    PoolName,
    /// The pool name is a vdev keyword, begins with one, or looks like a disk.
    ReservedPoolName,
    /// A snapshot name has no '@'.
    MissingAt,
    /// A snapshot name has more than one '@'.
    TooManyAt,
    /// A dataset name contains '@'.
    UnexpectedAt,
    /// A full name lies in the root's pool but outside labd's root dataset.
    OutsideRoot,
}

impl NameRule {
    /// Stable snake_case code for this rule, for API responses and logs.
    pub fn code(self) -> &'static str {
        match self {
            NameRule::Empty => "empty",
            NameRule::TooLong => "too_long",
            NameRule::TooDeep => "too_deep",
            NameRule::BadCharacter => "bad_character",
            NameRule::EmptyComponent => "empty_component",
            NameRule::DotComponent => "dot_component",
            NameRule::LeadingDash => "leading_dash",
            NameRule::PoolName => "pool_name",
            NameRule::ReservedPoolName => "reserved_pool_name",
            NameRule::MissingAt => "missing_at",
            NameRule::TooManyAt => "too_many_at",
            NameRule::UnexpectedAt => "unexpected_at",
            NameRule::OutsideRoot => "outside_root",
        }
    }
}

/// A refused name: what was given, which rule it broke, and a readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name '{}': {detail}", .input.escape_debug())]
pub struct NameError {
    /// The text as the caller gave it (before any resolution against a root).
    pub input: String,
    /// The rule that was broken.
    pub rule: NameRule,
    /// A lower-case phrase naming the problem, readable after "invalid name 'x': ".
    pub detail: String,
}

/// A validated full dataset name such as `tank/labd/photos`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName(String);

impl DatasetName {
    /// Validates `s` as a full dataset name (pool first, no '@').
    pub fn parse(s: &str) -> Result<Self, NameError> {
        parse_dataset(s, Ctx::direct(s))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool: the first component.
    pub fn pool(&self) -> &str {
        match self.0.find('/') {
            Some(i) => &self.0[..i],
            None => &self.0,
        }
    }

    /// The parent dataset, or `None` for a pool.
    pub fn parent(&self) -> Option<DatasetName> {
        self.0
            .rfind('/')
            .map(|i| DatasetName(self.0[..i].to_owned()))
    }

    /// True if `self` is `other` or lies below it (`tank/ab` is not below `tank/a`).
    pub fn is_same_or_descendant_of(&self, other: &DatasetName) -> bool {
        self.relative_to(other).is_some()
    }

    /// The part of `self` below `root`: `Some("")` when equal, `Some("a/b")` below, else `None`.
    pub fn relative_to(&self, root: &DatasetName) -> Option<&str> {
        let rest = self.0.strip_prefix(root.as_str())?;
        if rest.is_empty() {
            Some(rest)
        } else {
            rest.strip_prefix('/')
        }
    }

    /// The nesting depth: the number of '/' in the name (0 for a pool).
    pub fn depth(&self) -> usize {
        self.0.matches('/').count()
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated snapshot name such as `tank/labd/photos@daily-2024-01-01`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotName {
    dataset: DatasetName,
    snapshot: String,
}

impl SnapshotName {
    /// Validates `s` as a full snapshot name `pool/a@snap`.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ctx = Ctx::direct(s);
        let (dataset, snapshot) = split_snapshot(s, ctx)?;
        let dataset = parse_dataset(dataset, ctx)?;
        snapshot_from_parts(dataset, snapshot, ctx)
    }

    /// Builds a snapshot name of `dataset`, validating the `snapshot` part and the total length.
    pub fn new(dataset: DatasetName, snapshot: &str) -> Result<Self, NameError> {
        let input = format!("{dataset}@{snapshot}");
        snapshot_from_parts(dataset, snapshot, Ctx::direct(&input))
    }

    /// The dataset the snapshot belongs to.
    pub fn dataset(&self) -> &DatasetName {
        &self.dataset
    }

    /// The snapshot part, after the '@'.
    pub fn snapshot(&self) -> &str {
        &self.snapshot
    }
}

impl fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.dataset, self.snapshot)
    }
}

/// Validates a snapshot name on its own (the part after '@').
pub fn validate_snapshot_component(s: &str) -> Result<(), NameError> {
    let ctx = Ctx::direct(s);
    if s.is_empty() {
        return Err(ctx.err(NameRule::Empty, "snapshot name is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(ctx.err(
            NameRule::TooLong,
            format!("is {} bytes long (limit: {MAX_NAME_LEN} bytes)", s.len()),
        ));
    }
    check_component(s, "snapshot name", ctx)
}

/// Validates a `zfs hold` tag: 1 to 255 bytes of printable ASCII, no whitespace, no leading '-'.
pub fn validate_hold_tag(s: &str) -> Result<(), NameError> {
    let ctx = Ctx::direct(s);
    if s.is_empty() {
        return Err(ctx.err(NameRule::Empty, "hold tag is empty"));
    }
    if s.len() > MAX_HOLD_TAG_LEN {
        return Err(ctx.err(
            NameRule::TooLong,
            format!(
                "hold tag is {} bytes long (limit: {MAX_HOLD_TAG_LEN} bytes)",
                s.len()
            ),
        ));
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(ctx.err(
            NameRule::BadCharacter,
            format!(
                "hold tag contains '{}' (allowed: printable ASCII except space)",
                c.escape_debug()
            ),
        ));
    }
    if s.starts_with('-') {
        return Err(ctx.err(
            NameRule::LeadingDash,
            "hold tag begins with '-' (it would be read as a command-line option)",
        ));
    }
    Ok(())
}

/// Resolve what a user typed against the configured root dataset (e.g. root "tank/labd"):
///  - input equal to the root, or starting with "<root>/" -> that full name;
///  - input whose first component is the root's pool (e.g. "tank" or "tank/other") ->
///    [`NameRule::OutsideRoot`]: a full name outside the root is refused;
///  - otherwise a short name: "<root>/<input>" ("photos/2024" -> "tank/labd/photos/2024").
///
/// The resolved name must validate as a [`DatasetName`], so the length rule applies to it.
pub fn resolve_dataset(root: &DatasetName, input: &str) -> Result<DatasetName, NameError> {
    resolve_dataset_part(root, input, input).map(|(dataset, _)| dataset)
}

/// Same as [`resolve_dataset`] for "dataset@snap": the dataset part is resolved, the snapshot part validated.
pub fn resolve_snapshot(root: &DatasetName, input: &str) -> Result<SnapshotName, NameError> {
    let ctx = Ctx::direct(input);
    let (dataset, snapshot) = split_snapshot(input, ctx)?;
    let (dataset, was_short) = resolve_dataset_part(root, dataset, input)?;
    let ctx = if was_short {
        Ctx::resolved(input, root)
    } else {
        ctx
    };
    snapshot_from_parts(dataset, snapshot, ctx)
}

/// Where an error is reported: the caller's text, and the root it was resolved under, if any.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    input: &'a str,
    root: Option<&'a DatasetName>,
}

impl<'a> Ctx<'a> {
    fn direct(input: &'a str) -> Self {
        Ctx { input, root: None }
    }

    fn resolved(input: &'a str, root: &'a DatasetName) -> Self {
        Ctx {
            input,
            root: Some(root),
        }
    }

    fn err(&self, rule: NameRule, detail: impl Into<String>) -> NameError {
        NameError {
            input: self.input.to_owned(),
            rule,
            detail: detail.into(),
        }
    }

    /// "is N bytes long" or, for a resolved short name, "resolves to a name of N bytes under 'root'".
    fn length_phrase(&self, len: usize) -> String {
        match self.root {
            None => format!("is {len} bytes long (limit: {MAX_NAME_LEN} bytes)"),
            Some(root) => format!(
                "resolves to a name of {len} bytes under '{root}' (limit: {MAX_NAME_LEN} bytes)"
            ),
        }
    }
}

/// Full validation of a dataset name; errors are reported against `ctx`.
fn parse_dataset(name: &str, ctx: Ctx<'_>) -> Result<DatasetName, NameError> {
    if name.is_empty() {
        return Err(ctx.err(NameRule::Empty, "name is empty"));
    }
    if name.contains('@') {
        return Err(ctx.err(
            NameRule::UnexpectedAt,
            "dataset names cannot contain '@' (it introduces a snapshot name)",
        ));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ctx.err(NameRule::TooLong, ctx.length_phrase(name.len())));
    }
    check_path(name, ctx)?;
    check_pool(pool_of(name), ctx)?;
    let depth = name.matches('/').count();
    if depth > MAX_DEPTH {
        let detail = match ctx.root {
            None => format!("is nested {depth} levels deep (limit: {MAX_DEPTH})"),
            Some(root) => format!(
                "resolves to a name nested {depth} levels deep under '{root}' (limit: {MAX_DEPTH})"
            ),
        };
        return Err(ctx.err(NameRule::TooDeep, detail));
    }
    Ok(DatasetName(name.to_owned()))
}

/// The first component of a '/'-separated path.
fn pool_of(name: &str) -> &str {
    match name.find('/') {
        Some(i) => &name[..i],
        None => name,
    }
}

/// Checks every '/'-separated component of `path` (no pool rules, no length rule).
fn check_path(path: &str, ctx: Ctx<'_>) -> Result<(), NameError> {
    let last = path.matches('/').count();
    for (i, component) in path.split('/').enumerate() {
        if component.is_empty() {
            let detail = if i == 0 {
                "begins with '/'"
            } else if i == last {
                "ends with '/'"
            } else {
                "contains an empty component ('//')"
            };
            return Err(ctx.err(NameRule::EmptyComponent, detail));
        }
        check_component(component, "component", ctx)?;
    }
    Ok(())
}

/// Checks one non-empty component or snapshot name; `kind` names it in messages.
fn check_component(component: &str, kind: &str, ctx: Ctx<'_>) -> Result<(), NameError> {
    let shown = component.escape_debug();
    if let Some(c) = component.chars().find(|&c| !is_name_char(c)) {
        return Err(ctx.err(
            NameRule::BadCharacter,
            format!(
                "{kind} '{shown}' contains '{}' (allowed: {ALLOWED})",
                c.escape_debug()
            ),
        ));
    }
    if component == "." || component == ".." {
        return Err(ctx.err(
            NameRule::DotComponent,
            format!("{kind} '{component}' is not allowed ('.' and '..' are reserved)"),
        ));
    }
    if component.starts_with('-') {
        return Err(ctx.err(
            NameRule::LeadingDash,
            format!("{kind} '{shown}' begins with '-' (it would be read as a command-line option)"),
        ));
    }
    Ok(())
}

/// The characters labd allows in a component: ZFS's set minus ' ' and '%'.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

/// The extra rules for the first component (`pool_namecheck`, `zpool_name_valid`).
fn check_pool(pool: &str, ctx: Ctx<'_>) -> Result<(), NameError> {
    if pool.len() > MAX_POOL_LEN {
        return Err(ctx.err(
            NameRule::TooLong,
            format!(
                "pool name is {} bytes long (limit: {MAX_POOL_LEN} bytes)",
                pool.len()
            ),
        ));
    }
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(ctx.err(
            NameRule::PoolName,
            format!("pool name '{pool}' must begin with a letter"),
        ));
    }
    if RESERVED_POOLS.contains(&pool) {
        return Err(ctx.err(
            NameRule::ReservedPoolName,
            format!("pool name '{pool}' is reserved (a zpool vdev keyword)"),
        ));
    }
    if let Some(prefix) = RESERVED_POOL_PREFIXES
        .iter()
        .find(|prefix| pool.starts_with(**prefix))
    {
        return Err(ctx.err(
            NameRule::ReservedPoolName,
            format!("pool name '{pool}' begins with the reserved word '{prefix}'"),
        ));
    }
    let mut bytes = pool.bytes();
    if bytes.next() == Some(b'c') && bytes.next().is_some_and(|b| b.is_ascii_digit()) {
        return Err(ctx.err(
            NameRule::ReservedPoolName,
            format!("pool name '{pool}' looks like a disk device ('c' followed by a digit)"),
        ));
    }
    Ok(())
}

/// Splits "dataset@snap" at its single '@' after the empty, length and '@'-count rules.
fn split_snapshot<'s>(s: &'s str, ctx: Ctx<'_>) -> Result<(&'s str, &'s str), NameError> {
    if s.is_empty() {
        return Err(ctx.err(NameRule::Empty, "name is empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(ctx.err(NameRule::TooLong, ctx.length_phrase(s.len())));
    }
    let ats = s.matches('@').count();
    if ats == 0 {
        return Err(ctx.err(
            NameRule::MissingAt,
            "snapshot names need '@' between dataset and snapshot (e.g. 'tank/a@snap')",
        ));
    }
    if ats > 1 {
        return Err(ctx.err(
            NameRule::TooManyAt,
            format!("contains {ats} '@' characters (exactly one is allowed)"),
        ));
    }
    match s.split_once('@') {
        Some(("", _)) => Err(ctx.err(NameRule::EmptyComponent, "dataset name before '@' is empty")),
        Some(parts) => Ok(parts),
        None => Err(ctx.err(NameRule::MissingAt, "snapshot names need '@'")),
    }
}

/// Validates the snapshot part and the total length of "dataset@snapshot".
fn snapshot_from_parts(
    dataset: DatasetName,
    snapshot: &str,
    ctx: Ctx<'_>,
) -> Result<SnapshotName, NameError> {
    if snapshot.is_empty() {
        return Err(ctx.err(NameRule::EmptyComponent, "snapshot name after '@' is empty"));
    }
    check_component(snapshot, "snapshot name", ctx)?;
    let len = dataset.as_str().len() + 1 + snapshot.len();
    if len > MAX_NAME_LEN {
        return Err(ctx.err(NameRule::TooLong, ctx.length_phrase(len)));
    }
    Ok(SnapshotName {
        dataset,
        snapshot: snapshot.to_owned(),
    })
}

/// [`resolve_dataset`] with errors reported against the whole `input` (which may hold "@snap").
///
/// Also tells whether `part` was a short name that had to be put under `root`.
fn resolve_dataset_part(
    root: &DatasetName,
    part: &str,
    input: &str,
) -> Result<(DatasetName, bool), NameError> {
    let ctx = Ctx::direct(input);
    if part.is_empty() {
        return Err(ctx.err(NameRule::Empty, "name is empty"));
    }
    if part.contains('@') {
        return Err(ctx.err(
            NameRule::UnexpectedAt,
            "dataset names cannot contain '@' (it introduces a snapshot name)",
        ));
    }
    let under_root = part
        .strip_prefix(root.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    if under_root {
        return parse_dataset(part, ctx).map(|dataset| (dataset, false));
    }
    if pool_of(part) == root.pool() {
        return Err(ctx.err(
            NameRule::OutsideRoot,
            format!(
                "'{}' is outside the root dataset '{root}' (give a name below it, or a short name relative to it)",
                part.escape_debug()
            ),
        ));
    }
    // Check the user's own text first so that messages about slashes and
    // components point at what was typed, not at the resolved name.
    check_path(part, ctx)?;
    let full = format!("{root}/{part}");
    parse_dataset(&full, Ctx::resolved(input, root)).map(|dataset| (dataset, true))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ds(s: &str) -> DatasetName {
        DatasetName::parse(s).unwrap()
    }

    fn ds_rule(s: &str) -> NameRule {
        DatasetName::parse(s).unwrap_err().rule
    }

    fn snap_rule(s: &str) -> NameRule {
        SnapshotName::parse(s).unwrap_err().rule
    }

    fn root() -> DatasetName {
        ds("tank/labd")
    }

    /// A valid dataset name of exactly `len` bytes.
    fn name_of_len(len: usize) -> String {
        let mut s = String::from("tank");
        while s.len() + 2 <= len {
            let room = (len - s.len() - 1).min(200);
            s.push('/');
            s.push_str(&"a".repeat(room));
        }
        assert_eq!(s.len(), len, "helper cannot build length {len}");
        s
    }

    // ---- accepted dataset names ----

    #[test]
    fn accepts_pool() {
        let d = ds("tank");
        assert_eq!(d.as_str(), "tank");
        assert_eq!(d.pool(), "tank");
        assert_eq!(d.depth(), 0);
        assert_eq!(d.parent(), None);
    }

    #[test]
    fn accepts_nested() {
        let d = ds("tank/a/b");
        assert_eq!(d.pool(), "tank");
        assert_eq!(d.depth(), 2);
        assert_eq!(d.parent(), Some(ds("tank/a")));
        assert_eq!(d.parent().unwrap().parent(), Some(ds("tank")));
        assert_eq!(d.to_string(), "tank/a/b");
    }

    #[test]
    fn accepts_all_allowed_characters() {
        ds("tank/a.b:c-d_e");
        ds("Tank2/A.B/x:y/z_9-");
        ds("c/x"); // 'c' alone is not disk-like
        ds("Mirror"); // the reserved words are case-sensitive in ZFS
        ds("cachepool");
        ds("tank/...a"); // dots are fine unless the whole component is "." or ".."
    }

    #[test]
    fn accepts_255_bytes_refuses_256() {
        let ok = name_of_len(255);
        assert_eq!(ds(&ok).as_str().len(), 255);
        let long = name_of_len(256);
        let err = DatasetName::parse(&long).unwrap_err();
        assert_eq!(err.rule, NameRule::TooLong);
        assert_eq!(err.detail, "is 256 bytes long (limit: 255 bytes)");
    }

    // ---- refused dataset names ----

    #[test]
    fn refuses_empty() {
        let err = DatasetName::parse("").unwrap_err();
        assert_eq!(err.rule, NameRule::Empty);
        assert_eq!(err.to_string(), "invalid name '': name is empty");
    }

    #[test]
    fn refuses_empty_components() {
        let err = DatasetName::parse("/tank").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "begins with '/'");
        let err = DatasetName::parse("tank/").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "ends with '/'");
        let err = DatasetName::parse("tank//a").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "contains an empty component ('//')");
        assert_eq!(ds_rule("/"), NameRule::EmptyComponent);
    }

    #[test]
    fn refuses_dot_components() {
        assert_eq!(ds_rule("tank/./a"), NameRule::DotComponent);
        assert_eq!(ds_rule("tank/.."), NameRule::DotComponent);
        assert_eq!(ds_rule("tank/a/.."), NameRule::DotComponent);
        assert_eq!(
            DatasetName::parse("tank/..").unwrap_err().detail,
            "component '..' is not allowed ('.' and '..' are reserved)"
        );
    }

    #[test]
    fn refuses_leading_dash() {
        assert_eq!(ds_rule("tank/-a"), NameRule::LeadingDash);
        assert_eq!(ds_rule("-tank"), NameRule::LeadingDash);
        assert_eq!(ds_rule("tank/a/-rf"), NameRule::LeadingDash);
        ds("tank/a-"); // a dash elsewhere is fine
    }

    #[test]
    fn refuses_pool_not_starting_with_letter() {
        let err = DatasetName::parse("1tank").unwrap_err();
        assert_eq!(err.rule, NameRule::PoolName);
        assert_eq!(err.detail, "pool name '1tank' must begin with a letter");
        assert_eq!(ds_rule("_tank/a"), NameRule::PoolName);
        assert_eq!(ds_rule(".tank"), NameRule::PoolName);
        assert_eq!(ds_rule(":tank"), NameRule::PoolName);
    }

    #[test]
    fn refuses_reserved_pool_names() {
        for name in [
            "mirror", "raidz", "draid", "spare", "log", "cache", "special", "dedup",
        ] {
            assert_eq!(ds_rule(name), NameRule::ReservedPoolName, "{name}");
            assert_eq!(
                ds_rule(&format!("{name}/a")),
                NameRule::ReservedPoolName,
                "{name}/a"
            );
        }
        for name in ["raidz1", "raidz3", "mirror-0", "draid2", "spares"] {
            assert_eq!(ds_rule(name), NameRule::ReservedPoolName, "{name}");
        }
        // Exact-only keywords are fine as prefixes.
        ds("logs");
        ds("specialpool");
        ds("dedupe");
    }

    #[test]
    fn refuses_disk_like_pool_names() {
        let err = DatasetName::parse("c0").unwrap_err();
        assert_eq!(err.rule, NameRule::ReservedPoolName);
        assert!(err.detail.contains("disk device"), "{}", err.detail);
        assert_eq!(ds_rule("c1t0d0/a"), NameRule::ReservedPoolName);
        ds("C0"); // ZFS checks a lower-case 'c' only
    }

    #[test]
    fn refuses_long_pool_name() {
        let ok = format!("p{}", "a".repeat(238));
        assert_eq!(ds(&ok).pool().len(), 239);
        let err = DatasetName::parse(&format!("p{}", "a".repeat(239))).unwrap_err();
        assert_eq!(err.rule, NameRule::TooLong);
        assert_eq!(err.detail, "pool name is 240 bytes long (limit: 239 bytes)");
    }

    #[test]
    fn refuses_space_with_documented_message() {
        let err = DatasetName::parse("tank/a b").unwrap_err();
        assert_eq!(err.rule, NameRule::BadCharacter);
        assert_eq!(
            err.detail,
            "component 'a b' contains ' ' (allowed: letters, digits, '_', '-', '.', ':')"
        );
        assert_eq!(
            err.to_string(),
            "invalid name 'tank/a b': component 'a b' contains ' ' (allowed: letters, digits, '_', '-', '.', ':')"
        );
    }

    #[test]
    fn refuses_other_characters() {
        for name in [
            "tank/a%b",
            "tank/ä",
            "tank/a#b",
            "tank/a*",
            "tank/a\\b",
            "tank/a\"b",
            "tank/a'b",
            "ta nk",
            "tank/a\tb",
            "tank/a\u{0}",
            "tank/é",
            "tank/a+b",
            "tank/a,b",
        ] {
            assert_eq!(ds_rule(name), NameRule::BadCharacter, "{name:?}");
        }
        let err = DatasetName::parse("tank/ä").unwrap_err();
        assert_eq!(
            err.detail,
            "component 'ä' contains 'ä' (allowed: letters, digits, '_', '-', '.', ':')"
        );
    }

    #[test]
    fn control_characters_are_escaped_in_messages() {
        let err = DatasetName::parse("tank/a\nb").unwrap_err();
        assert_eq!(err.rule, NameRule::BadCharacter);
        assert_eq!(
            err.to_string(),
            "invalid name 'tank/a\\nb': component 'a\\nb' contains '\\n' (allowed: letters, digits, '_', '-', '.', ':')"
        );
        assert_eq!(err.input, "tank/a\nb", "the raw input is kept");
    }

    #[test]
    fn refuses_at_in_dataset_name() {
        let err = DatasetName::parse("tank/a@s").unwrap_err();
        assert_eq!(err.rule, NameRule::UnexpectedAt);
        assert_eq!(ds_rule("tank@"), NameRule::UnexpectedAt);
    }

    #[test]
    fn nesting_limit() {
        let ok = format!("tank{}", "/a".repeat(49));
        assert_eq!(ds(&ok).depth(), 49);
        let deep = format!("tank{}", "/a".repeat(50));
        let err = DatasetName::parse(&deep).unwrap_err();
        assert_eq!(err.rule, NameRule::TooDeep);
        assert_eq!(err.detail, "is nested 50 levels deep (limit: 49)");
    }

    // ---- relations between datasets ----

    #[test]
    fn descendant_is_component_wise() {
        let a = ds("tank/a");
        assert!(ds("tank/a").is_same_or_descendant_of(&a));
        assert!(ds("tank/a/b").is_same_or_descendant_of(&a));
        assert!(ds("tank/a/b/c").is_same_or_descendant_of(&a));
        assert!(!ds("tank/ab").is_same_or_descendant_of(&a));
        assert!(!ds("tank").is_same_or_descendant_of(&a));
        assert!(!ds("other/a").is_same_or_descendant_of(&a));
        assert!(ds("tank/a").is_same_or_descendant_of(&ds("tank")));
    }

    #[test]
    fn relative_to_root() {
        let r = root();
        assert_eq!(ds("tank/labd").relative_to(&r), Some(""));
        assert_eq!(ds("tank/labd/photos").relative_to(&r), Some("photos"));
        assert_eq!(ds("tank/labd/photos/x").relative_to(&r), Some("photos/x"));
        assert_eq!(ds("tank/labdx").relative_to(&r), None);
        assert_eq!(ds("tank/labdx/photos").relative_to(&r), None);
        assert_eq!(ds("tank").relative_to(&r), None);
        assert_eq!(ds("tank/other").relative_to(&r), None);
    }

    #[test]
    fn ordering_and_hash_derive() {
        let mut v = vec![ds("tank/b"), ds("tank/a"), ds("tank")];
        v.sort();
        assert_eq!(v, vec![ds("tank"), ds("tank/a"), ds("tank/b")]);
        let set: std::collections::HashSet<_> = [ds("tank/a"), ds("tank/a")].into_iter().collect();
        assert_eq!(set.len(), 1);
    }

    // ---- snapshots ----

    #[test]
    fn accepts_snapshot() {
        let s = SnapshotName::parse("tank/a@s1").unwrap();
        assert_eq!(s.dataset(), &ds("tank/a"));
        assert_eq!(s.snapshot(), "s1");
        assert_eq!(s.to_string(), "tank/a@s1");
        let s = SnapshotName::parse("tank@auto-2024-01-01_00:00.x").unwrap();
        assert_eq!(s.dataset().as_str(), "tank");
    }

    #[test]
    fn snapshot_at_rules() {
        let err = SnapshotName::parse("tank/a").unwrap_err();
        assert_eq!(err.rule, NameRule::MissingAt);
        let err = SnapshotName::parse("tank/a@b@c").unwrap_err();
        assert_eq!(err.rule, NameRule::TooManyAt);
        assert_eq!(
            err.detail,
            "contains 2 '@' characters (exactly one is allowed)"
        );
        assert_eq!(snap_rule("tank/a@@b"), NameRule::TooManyAt);
    }

    #[test]
    fn snapshot_empty_parts() {
        let err = SnapshotName::parse("tank/a@").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "snapshot name after '@' is empty");
        let err = SnapshotName::parse("@s").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "dataset name before '@' is empty");
        assert_eq!(snap_rule(""), NameRule::Empty);
    }

    #[test]
    fn snapshot_part_rules() {
        assert_eq!(snap_rule("tank/a@-x"), NameRule::LeadingDash);
        let err = SnapshotName::parse("tank/a@x y").unwrap_err();
        assert_eq!(err.rule, NameRule::BadCharacter);
        assert_eq!(
            err.detail,
            "snapshot name 'x y' contains ' ' (allowed: letters, digits, '_', '-', '.', ':')"
        );
        assert_eq!(snap_rule("tank/a@x/y"), NameRule::BadCharacter);
        assert_eq!(snap_rule("tank/a@x#y"), NameRule::BadCharacter);
        assert_eq!(snap_rule("tank/a@."), NameRule::DotComponent);
        assert_eq!(snap_rule("tank/a@.."), NameRule::DotComponent);
    }

    #[test]
    fn snapshot_dataset_part_rules() {
        assert_eq!(snap_rule("tank/a b@s"), NameRule::BadCharacter);
        assert_eq!(snap_rule("tank/@s"), NameRule::EmptyComponent);
        assert_eq!(snap_rule("1tank@s"), NameRule::PoolName);
        assert_eq!(snap_rule("mirror@s"), NameRule::ReservedPoolName);
        let err = SnapshotName::parse("tank/-a@s").unwrap_err();
        assert_eq!(err.rule, NameRule::LeadingDash);
        assert_eq!(err.input, "tank/-a@s", "errors name the whole input");
    }

    #[test]
    fn snapshot_length_counts_the_snapshot_part() {
        let base = name_of_len(250);
        let ok = format!("{base}@abcd"); // 255 bytes
        assert_eq!(SnapshotName::parse(&ok).unwrap().to_string(), ok);
        let long = format!("{base}@abcde"); // 256 bytes
        let err = SnapshotName::parse(&long).unwrap_err();
        assert_eq!(err.rule, NameRule::TooLong);
        assert_eq!(err.detail, "is 256 bytes long (limit: 255 bytes)");
    }

    #[test]
    fn snapshot_new() {
        let s = SnapshotName::new(ds("tank/a"), "s1").unwrap();
        assert_eq!(s, SnapshotName::parse("tank/a@s1").unwrap());
        let err = SnapshotName::new(ds("tank/a"), "").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.input, "tank/a@");
        assert_eq!(
            SnapshotName::new(ds("tank/a"), "x@y").unwrap_err().rule,
            NameRule::BadCharacter
        );
        assert_eq!(
            SnapshotName::new(ds("tank/a"), "-x").unwrap_err().rule,
            NameRule::LeadingDash
        );
        let base = ds(&name_of_len(250));
        assert!(SnapshotName::new(base.clone(), "abcd").is_ok());
        assert_eq!(
            SnapshotName::new(base, "abcde").unwrap_err().rule,
            NameRule::TooLong
        );
    }

    #[test]
    fn snapshot_component_alone() {
        assert!(validate_snapshot_component("daily-2024-01-01").is_ok());
        assert!(validate_snapshot_component("a:b.c_d").is_ok());
        assert_eq!(
            validate_snapshot_component("").unwrap_err().rule,
            NameRule::Empty
        );
        assert_eq!(
            validate_snapshot_component("-x").unwrap_err().rule,
            NameRule::LeadingDash
        );
        assert_eq!(
            validate_snapshot_component("a@b").unwrap_err().rule,
            NameRule::BadCharacter
        );
        assert_eq!(
            validate_snapshot_component("a/b").unwrap_err().rule,
            NameRule::BadCharacter
        );
        assert_eq!(
            validate_snapshot_component("..").unwrap_err().rule,
            NameRule::DotComponent
        );
        assert!(validate_snapshot_component(&"s".repeat(255)).is_ok());
        assert_eq!(
            validate_snapshot_component(&"s".repeat(256))
                .unwrap_err()
                .rule,
            NameRule::TooLong
        );
    }

    // ---- hold tags ----

    #[test]
    fn hold_tags() {
        for ok in ["labd", "labd-send", "labd:send:2024-01-01", "a@b/c%d", "~x"] {
            assert!(validate_hold_tag(ok).is_ok(), "{ok}");
        }
        assert!(validate_hold_tag(&"t".repeat(255)).is_ok());
        let rule = |s: &str| validate_hold_tag(s).unwrap_err().rule;
        assert_eq!(rule(""), NameRule::Empty);
        assert_eq!(rule(&"t".repeat(256)), NameRule::TooLong);
        assert_eq!(rule("-x"), NameRule::LeadingDash);
        assert_eq!(rule("a b"), NameRule::BadCharacter);
        assert_eq!(rule("a\tb"), NameRule::BadCharacter);
        assert_eq!(rule("a\nb"), NameRule::BadCharacter);
        assert_eq!(rule("ä"), NameRule::BadCharacter);
        assert_eq!(rule("\u{7f}"), NameRule::BadCharacter);
        assert_eq!(
            validate_hold_tag("a b").unwrap_err().to_string(),
            "invalid name 'a b': hold tag contains ' ' (allowed: printable ASCII except space)"
        );
    }

    // ---- resolution against the root ----

    #[test]
    fn resolve_short_names() {
        let r = root();
        assert_eq!(
            resolve_dataset(&r, "photos").unwrap(),
            ds("tank/labd/photos")
        );
        assert_eq!(
            resolve_dataset(&r, "photos/2024").unwrap(),
            ds("tank/labd/photos/2024")
        );
        // A short name that happens to look like the root's last component.
        assert_eq!(
            resolve_dataset(&r, "labd/x").unwrap(),
            ds("tank/labd/labd/x")
        );
        // A short name may start with a word that is a reserved pool name: it is not a pool here.
        assert_eq!(
            resolve_dataset(&r, "mirror").unwrap(),
            ds("tank/labd/mirror")
        );
    }

    #[test]
    fn resolve_full_names_under_root() {
        let r = root();
        assert_eq!(resolve_dataset(&r, "tank/labd").unwrap(), r);
        assert_eq!(
            resolve_dataset(&r, "tank/labd/photos").unwrap(),
            ds("tank/labd/photos")
        );
    }

    #[test]
    fn resolve_refuses_names_outside_root() {
        let r = root();
        for input in ["tank", "tank/other", "tank/labdx", "tank/labdx/photos"] {
            let err = resolve_dataset(&r, input).unwrap_err();
            assert_eq!(err.rule, NameRule::OutsideRoot, "{input}");
            assert_eq!(err.input, input);
        }
        assert_eq!(
            resolve_dataset(&r, "tank/other").unwrap_err().to_string(),
            "invalid name 'tank/other': 'tank/other' is outside the root dataset 'tank/labd' (give a name below it, or a short name relative to it)"
        );
    }

    #[test]
    fn resolve_refuses_bad_short_names() {
        let r = root();
        let err = resolve_dataset(&r, "/photos").unwrap_err();
        assert_eq!(err.rule, NameRule::EmptyComponent);
        assert_eq!(err.detail, "begins with '/'");
        assert_eq!(err.input, "/photos");
        assert_eq!(
            resolve_dataset(&r, "photos/").unwrap_err().rule,
            NameRule::EmptyComponent
        );
        assert_eq!(resolve_dataset(&r, "").unwrap_err().rule, NameRule::Empty);
        assert_eq!(
            resolve_dataset(&r, "..").unwrap_err().rule,
            NameRule::DotComponent
        );
        assert_eq!(
            resolve_dataset(&r, "-rf").unwrap_err().rule,
            NameRule::LeadingDash
        );
        assert_eq!(
            resolve_dataset(&r, "a b").unwrap_err().rule,
            NameRule::BadCharacter
        );
        assert_eq!(
            resolve_dataset(&r, "photos@s1").unwrap_err().rule,
            NameRule::UnexpectedAt
        );
        assert_eq!(
            resolve_dataset(&r, "tank/labd/").unwrap_err().rule,
            NameRule::EmptyComponent
        );
        assert_eq!(
            resolve_dataset(&r, "tank/labd/../x").unwrap_err().rule,
            NameRule::DotComponent
        );
    }

    #[test]
    fn resolve_applies_length_to_resolved_name() {
        let r = root(); // "tank/labd/" is 10 bytes
        let ok = "a".repeat(245);
        assert_eq!(resolve_dataset(&r, &ok).unwrap().as_str().len(), 255);
        let long = "a".repeat(246);
        let err = resolve_dataset(&r, &long).unwrap_err();
        assert_eq!(err.rule, NameRule::TooLong);
        assert_eq!(
            err.detail,
            "resolves to a name of 256 bytes under 'tank/labd' (limit: 255 bytes)"
        );
        assert_eq!(err.input, long);
        // Depth too: tank/labd is depth 1, so 48 more levels are allowed.
        let deep_ok = vec!["a"; 48].join("/");
        assert_eq!(resolve_dataset(&r, &deep_ok).unwrap().depth(), 49);
        let too_deep = vec!["a"; 49].join("/");
        assert_eq!(
            resolve_dataset(&r, &too_deep).unwrap_err().rule,
            NameRule::TooDeep
        );
    }

    #[test]
    fn resolve_with_pool_as_root() {
        let r = ds("tank");
        assert_eq!(resolve_dataset(&r, "tank").unwrap(), r);
        assert_eq!(resolve_dataset(&r, "tank/a").unwrap(), ds("tank/a"));
        assert_eq!(resolve_dataset(&r, "a").unwrap(), ds("tank/a"));
    }

    #[test]
    fn resolve_snapshots() {
        let r = root();
        let s = resolve_snapshot(&r, "photos@s1").unwrap();
        assert_eq!(s.to_string(), "tank/labd/photos@s1");
        let s = resolve_snapshot(&r, "tank/labd/photos@s1").unwrap();
        assert_eq!(s.dataset(), &ds("tank/labd/photos"));
        assert_eq!(s.snapshot(), "s1");
        assert_eq!(
            resolve_snapshot(&r, "tank/labd@s1").unwrap().to_string(),
            "tank/labd@s1"
        );
        let rule = |s: &str| resolve_snapshot(&r, s).unwrap_err().rule;
        assert_eq!(rule("photos"), NameRule::MissingAt);
        assert_eq!(rule("photos@"), NameRule::EmptyComponent);
        assert_eq!(rule("@s1"), NameRule::EmptyComponent);
        assert_eq!(rule("photos@a@b"), NameRule::TooManyAt);
        assert_eq!(rule("photos@-x"), NameRule::LeadingDash);
        assert_eq!(rule("photos@x y"), NameRule::BadCharacter);
        assert_eq!(rule("tank/other@s1"), NameRule::OutsideRoot);
        assert_eq!(rule("tank@s1"), NameRule::OutsideRoot);
        let err = resolve_snapshot(&r, "tank/other@s1").unwrap_err();
        assert_eq!(err.input, "tank/other@s1");
    }

    #[test]
    fn resolve_snapshot_length_counts_root_and_snapshot() {
        let r = root(); // "tank/labd/" is 10 bytes, "@s" is 2
        let ok = format!("{}@s", "a".repeat(243));
        assert_eq!(resolve_snapshot(&r, &ok).unwrap().to_string().len(), 255);
        let long = format!("{}@s", "a".repeat(244));
        let err = resolve_snapshot(&r, &long).unwrap_err();
        assert_eq!(err.rule, NameRule::TooLong);
        assert_eq!(
            err.detail,
            "resolves to a name of 256 bytes under 'tank/labd' (limit: 255 bytes)"
        );
    }

    // ---- codes ----

    #[test]
    fn rule_codes_are_stable_and_unique() {
        let all = [
            (NameRule::Empty, "empty"),
            (NameRule::TooLong, "too_long"),
            (NameRule::TooDeep, "too_deep"),
            (NameRule::BadCharacter, "bad_character"),
            (NameRule::EmptyComponent, "empty_component"),
            (NameRule::DotComponent, "dot_component"),
            (NameRule::LeadingDash, "leading_dash"),
            (NameRule::PoolName, "pool_name"),
            (NameRule::ReservedPoolName, "reserved_pool_name"),
            (NameRule::MissingAt, "missing_at"),
            (NameRule::TooManyAt, "too_many_at"),
            (NameRule::UnexpectedAt, "unexpected_at"),
            (NameRule::OutsideRoot, "outside_root"),
        ];
        let mut seen = std::collections::HashSet::new();
        for (rule, code) in all {
            assert_eq!(rule.code(), code);
            assert!(seen.insert(code), "duplicate code {code}");
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        }
    }
}
