//! Validation of ZFS property assignments (`name=value`) before any command runs.
//!
//! labd passes properties to `zfs create -o name=value` and `zfs set`. This
//! module checks each assignment against the rules of `zfsprops(7)` and
//! OpenZFS's `zfs_prop.c` / `zfs_prop_user()` so that a bad value is refused
//! with a clear message instead of a half-finished command, and normalises
//! the value (sizes become exact byte counts).
//!
//! * **User properties** (the name contains ':'): at most 255 bytes
//!   (`ZAP_MAXNAMELEN` is 256 including the NUL), only lowercase letters,
//!   digits, ':', '_', '-' and '.', and (stricter than ZFS) beginning with a
//!   lowercase letter. The value is 1 to 8191 bytes (`ZAP_MAXVALUELEN` is 8192
//!   including the NUL) without control characters, which would break
//!   `zfs get -H` parsing. Names in [`RESERVED`] belong to labd itself.
//! * **Native properties**: only the settable properties listed in
//!   `zfsprops(7)` that labd supports, each with its own value set. Short
//!   aliases (`compress`, `recsize`, `reserv`, `refreserv`, `rdonly`,
//!   `dnsize`) are accepted and the name is normalised to the full one.
//!   Read-only statistics are refused as "read-only property", a few
//!   settable properties labd does not manage (encryption, zvols, SELinux
//!   labels, per-user quotas) as "unsupported by labd", everything else as
//!   "unknown property". Values are case-sensitive, as in ZFS.
//! * **Sizes** ([`parse_size`]) follow `zfs_nicestrtonum`: bytes, or a number
//!   (possibly fractional) with a binary unit K, M, G, T, P or E, optionally
//!   followed by `B` or `iB`, case-insensitive. A fractional result is
//!   rounded down to whole bytes, as ZFS does.
//!
//! The create-time-only properties in [`CREATE_ONLY`] are accepted here; the
//! caller decides whether they may be used (they fail on `zfs set`).

/// Properties that labd itself owns and users may not set.
pub const RESERVED: &[&str] = &["labd:managed"];

/// Properties that ZFS accepts only at creation time (`zfs create -o`), never with `zfs set`.
pub const CREATE_ONLY: &[&str] = &["utf8only", "normalization", "casesensitivity"];

/// Longest user property name, in bytes (`ZAP_MAXNAMELEN` - 1).
const MAX_USER_NAME_LEN: usize = 255;
/// Longest user property value, in bytes (`ZAP_MAXVALUELEN` - 1).
const MAX_USER_VALUE_LEN: usize = 8191;
/// Longest native string value (mountpoint, share options), in bytes (`ZFS_MAXPROPLEN` - 1).
const MAX_NATIVE_VALUE_LEN: usize = 1023;
/// Longest mountpoint component, in bytes (`mountpoint_namecheck`).
const MAX_MOUNT_COMPONENT_LEN: usize = 255;
/// Smallest and largest record size (`SPA_MINBLOCKSIZE`, `SPA_MAXBLOCKSIZE`).
const MIN_BLOCK: u64 = 512;
/// Largest record size: 16M (`SPA_MAXBLOCKSIZE`).
const MAX_BLOCK: u64 = 16 * 1024 * 1024;
/// Most decimal places accepted in a fractional size (keeps the arithmetic exact in u128).
const MAX_FRACTION_DIGITS: usize = 18;

/// Read-only native properties (statistics and identifiers); `version` is refused too.
const READ_ONLY: &[&str] = &[
    "type",
    "creation",
    "used",
    "available",
    "avail",
    "referenced",
    "refer",
    "compressratio",
    "ratio",
    "refcompressratio",
    "mounted",
    "origin",
    "usedbysnapshots",
    "usedsnap",
    "usedbydataset",
    "usedds",
    "usedbychildren",
    "usedchild",
    "usedbyrefreservation",
    "usedrefreserv",
    "userrefs",
    "defer_destroy",
    "createtxg",
    "guid",
    "written",
    "logicalused",
    "lused",
    "logicalreferenced",
    "lrefer",
    "objsetid",
    "version",
    "clones",
    "filesystem_count",
    "snapshot_count",
    "receive_resume_token",
    "redact_snaps",
    "encryptionroot",
    "keystatus",
    "snapshots_changed",
];

/// Settable native properties that labd does not let users manage.
const UNSUPPORTED: &[&str] = &[
    "encryption",
    "keylocation",
    "keyformat",
    "pbkdf2iters",
    "volsize",
    "volblocksize",
    "volmode",
    "snapdev",
    "mlslabel",
    "context",
    "fscontext",
    "defcontext",
    "rootcontext",
    "filesystem_limit",
    "snapshot_limit",
];

/// Prefixes of the per-user/group/project quota properties (`userquota@bob`): settable.
const QUOTA_PREFIXES: &[&str] = &[
    "userquota@",
    "groupquota@",
    "projectquota@",
    "userobjquota@",
    "groupobjquota@",
    "projectobjquota@",
];

/// Prefixes of the per-user/group/project usage properties (`userused@bob`): read-only.
const USED_PREFIXES: &[&str] = &[
    "userused@",
    "groupused@",
    "projectused@",
    "userobjused@",
    "groupobjused@",
    "projectobjused@",
];

const ON_OFF: &[&str] = &["on", "off"];

/// A validated `name=value` ready for `zfs create -o` / `zfs set`.
///
/// The name is the full property name (aliases expanded); the value is normalised
/// (sizes as exact byte counts, e.g. "500G" -> "536870912000"; "none" stays "none").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The property name.
    pub name: String,
    /// The normalised value.
    pub value: String,
}

impl Assignment {
    /// The `name=value` argument for `zfs create -o` / `zfs set`.
    pub fn to_arg(&self) -> String {
        format!("{}={}", self.name, self.value)
    }
}

/// A refused assignment: the property as given and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("property '{}': {rule}", .property.escape_debug())]
pub struct PropertyError {
    /// The property name as the caller gave it.
    pub property: String,
    /// A lower-case phrase naming the broken rule, e.g. "read-only property".
    pub rule: String,
}

/// Validates `name=value` and returns it normalised, or the rule it breaks.
pub fn validate(name: &str, value: &str) -> Result<Assignment, PropertyError> {
    let refuse = |rule: String| PropertyError {
        property: name.to_owned(),
        rule,
    };
    if name.is_empty() {
        return Err(refuse("property name is empty".to_owned()));
    }
    if name.contains(':') {
        validate_user(name, value).map_err(refuse)?;
        return Ok(Assignment {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }
    if USED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(refuse("read-only property".to_owned()));
    }
    if QUOTA_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Err(refuse("unsupported by labd".to_owned()));
    }
    let canonical = canonical_name(name);
    if READ_ONLY.contains(&canonical) {
        return Err(refuse("read-only property".to_owned()));
    }
    if UNSUPPORTED.contains(&canonical) {
        return Err(refuse("unsupported by labd".to_owned()));
    }
    let Some(kind) = kind_of(canonical) else {
        return Err(refuse("unknown property".to_owned()));
    };
    let value = check_value(kind, value).map_err(refuse)?;
    Ok(Assignment {
        name: canonical.to_owned(),
        value,
    })
}

/// Parse a size: plain bytes "1024", or a number (may be fractional: "1.5") followed by a unit
/// K, M, G, T, P or E, optionally followed by 'B' or 'iB' (case-insensitive; all units are
/// powers of 1024 as in ZFS). A bare 'B' suffix means bytes. Overflow, negative, empty and
/// garbage input are errors; a fractional result is rounded down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Err("size is empty".to_owned());
    }
    let shown = shown(s);
    if s.starts_with('-') {
        return Err(format!("'{shown}' is negative (sizes cannot be negative)"));
    }
    let not_a_size = || {
        format!(
            "'{shown}' is not a size (expected bytes, or a number followed by K, M, G, T, P or E)"
        )
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(number_end);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    if whole.is_empty()
        || fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(not_a_size());
    }
    let shift = unit_shift(unit).ok_or_else(|| {
        format!(
            "'{shown}' has an unknown unit '{}' (allowed: K, M, G, T, P, E, optionally followed by B or iB)",
            unit.escape_debug()
        )
    })?;
    let too_large = || format!("'{shown}' is too large (limit: {} bytes)", u64::MAX);
    let multiplier: u128 = 1 << shift;
    // `whole` is all digits, so a parse failure can only mean it is too large.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    if let Some(fraction) = fraction {
        if shift == 0 {
            return Err(format!(
                "'{shown}' has a fraction of a byte (fractions need a unit such as K or M)"
            ));
        }
        if fraction.len() > MAX_FRACTION_DIGITS {
            return Err(format!(
                "'{shown}' has too many decimal places (limit: {MAX_FRACTION_DIGITS})"
            ));
        }
        let numerator: u128 = fraction.parse().map_err(|_| not_a_size())?;
        let mut denominator: u128 = 1;
        for _ in 0..fraction.len() {
            denominator *= 10;
        }
        // numerator < 10^18 < 2^60 and multiplier <= 2^60, so this cannot overflow u128.
        bytes = bytes
            .checked_add(numerator * multiplier / denominator)
            .ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// The shift for a unit suffix ("" and "B" are bytes), or `None` if it is not a unit.
fn unit_shift(unit: &str) -> Option<u32> {
    let upper = unit.to_ascii_uppercase();
    if upper.is_empty() || upper == "B" {
        return Some(0);
    }
    let mut chars = upper.chars();
    let shift = match chars.next()? {
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        'P' => 50,
        'E' => 60,
        _ => return None,
    };
    match chars.as_str() {
        "" | "B" | "IB" => Some(shift),
        _ => None,
    }
}

/// Expands ZFS's short aliases of settable properties.
fn canonical_name(name: &str) -> &str {
    match name {
        "compress" => "compression",
        "recsize" => "recordsize",
        "reserv" => "reservation",
        "refreserv" => "refreservation",
        "rdonly" => "readonly",
        "dnsize" => "dnodesize",
        other => other,
    }
}

/// How a native property's value is checked.
#[derive(Clone, Copy)]
enum Kind {
    /// One of a fixed list of words.
    OneOf(&'static [&'static str]),
    /// The `compression` algorithms and levels.
    Compression,
    /// A size or "none" (and "auto" when `auto` is set), normalised to bytes.
    Quota { auto: bool },
    /// A power of two from 512 to 16M.
    RecordSize,
    /// 0, or a power of two from 512 to 16M.
    SpecialSmallBlocks,
    /// An absolute path, "none" or "legacy".
    Mountpoint,
    /// "on", "off" or an option string.
    Share,
}

/// The value rules of each supported settable native property.
fn kind_of(name: &str) -> Option<Kind> {
    let kind = match name {
        "atime" | "relatime" | "devices" | "exec" | "setuid" | "readonly" | "zoned" | "nbmand"
        | "vscan" | "overlay" | "utf8only" | "jailed" => Kind::OneOf(ON_OFF),
        "xattr" => Kind::OneOf(&["on", "off", "sa", "dir"]),
        "compression" => Kind::Compression,
        "checksum" => Kind::OneOf(&[
            "on",
            "off",
            "fletcher2",
            "fletcher4",
            "sha256",
            "noparity",
            "sha512",
            "skein",
            "edonr",
            "blake3",
        ]),
        "dedup" => Kind::OneOf(&[
            "on",
            "off",
            "verify",
            "sha256",
            "sha256,verify",
            "sha512",
            "sha512,verify",
            "skein",
            "skein,verify",
            "edonr,verify",
            "blake3",
            "blake3,verify",
        ]),
        "quota" | "refquota" | "reservation" => Kind::Quota { auto: false },
        "refreservation" => Kind::Quota { auto: true },
        "recordsize" => Kind::RecordSize,
        "special_small_blocks" => Kind::SpecialSmallBlocks,
        "mountpoint" => Kind::Mountpoint,
        "sharenfs" | "sharesmb" => Kind::Share,
        "canmount" => Kind::OneOf(&["on", "off", "noauto"]),
        "snapdir" => Kind::OneOf(&["hidden", "visible"]),
        "aclmode" => Kind::OneOf(&["discard", "groupmask", "passthrough", "restricted"]),
        "aclinherit" => Kind::OneOf(&[
            "discard",
            "noallow",
            "restricted",
            "passthrough",
            "passthrough-x",
        ]),
        "acltype" => Kind::OneOf(&["off", "nfsv4", "posix", "posixacl", "noacl"]),
        "copies" => Kind::OneOf(&["1", "2", "3"]),
        "logbias" => Kind::OneOf(&["latency", "throughput"]),
        "primarycache" | "secondarycache" => Kind::OneOf(&["all", "none", "metadata"]),
        "sync" => Kind::OneOf(&["standard", "always", "disabled"]),
        "redundant_metadata" => Kind::OneOf(&["all", "most", "some", "none"]),
        "dnodesize" => Kind::OneOf(&["legacy", "auto", "1k", "2k", "4k", "8k", "16k"]),
        "normalization" => Kind::OneOf(&["none", "formC", "formD", "formKC", "formKD"]),
        "casesensitivity" => Kind::OneOf(&["sensitive", "insensitive", "mixed"]),
        _ => return None,
    };
    Some(kind)
}

/// Checks `value` against `kind` and returns it normalised.
fn check_value(kind: Kind, value: &str) -> Result<String, String> {
    match kind {
        Kind::OneOf(allowed) => {
            if allowed.contains(&value) {
                Ok(value.to_owned())
            } else {
                Err(format!(
                    "invalid value '{}' (allowed: {})",
                    shown(value),
                    allowed.join(", ")
                ))
            }
        }
        Kind::Compression => {
            if is_compression(value) {
                Ok(value.to_owned())
            } else {
                Err(format!(
                    "invalid value '{}' (allowed: on, off, lzjb, gzip, gzip-1..gzip-9, zle, lz4, \
                     zstd, zstd-1..zstd-19, zstd-fast, zstd-fast-1..zstd-fast-10, \
                     zstd-fast-20..zstd-fast-100 in steps of 10, zstd-fast-500, zstd-fast-1000)",
                    shown(value)
                ))
            }
        }
        Kind::Quota { auto } => {
            if value == "none" || (auto && value == "auto") {
                return Ok(value.to_owned());
            }
            let words = if auto { "'none' or 'auto'" } else { "'none'" };
            parse_size(value)
                .map(|bytes| bytes.to_string())
                .map_err(|e| format!("{e}; expected a size or {words}"))
        }
        Kind::RecordSize => {
            let bytes = parse_size(value)?;
            if is_block_size(bytes) {
                Ok(bytes.to_string())
            } else {
                Err(format!(
                    "invalid value '{}' ({bytes} bytes): must be a power of two from 512 to 16M",
                    shown(value)
                ))
            }
        }
        Kind::SpecialSmallBlocks => {
            let bytes = parse_size(value)?;
            if bytes == 0 || is_block_size(bytes) {
                Ok(bytes.to_string())
            } else {
                Err(format!(
                    "invalid value '{}' ({bytes} bytes): must be 0 or a power of two from 512 to 16M",
                    shown(value)
                ))
            }
        }
        Kind::Mountpoint => check_mountpoint(value).map(|()| value.to_owned()),
        Kind::Share => check_share(value).map(|()| value.to_owned()),
    }
}

/// True for a power of two from 512 to 16M.
fn is_block_size(bytes: u64) -> bool {
    bytes.is_power_of_two() && (MIN_BLOCK..=MAX_BLOCK).contains(&bytes)
}

/// The values of `compression` listed in `zfsprops(7)`.
fn is_compression(value: &str) -> bool {
    if matches!(
        value,
        "on" | "off" | "lzjb" | "gzip" | "zle" | "lz4" | "zstd" | "zstd-fast"
    ) {
        return true;
    }
    if let Some(level) = value.strip_prefix("zstd-fast-") {
        return level_of(level).is_some_and(|n| {
            (1..=10).contains(&n) || (n <= 100 && n % 10 == 0) || n == 500 || n == 1000
        });
    }
    if let Some(level) = value.strip_prefix("zstd-") {
        return level_of(level).is_some_and(|n| (1..=19).contains(&n));
    }
    if let Some(level) = value.strip_prefix("gzip-") {
        return level_of(level).is_some_and(|n| (1..=9).contains(&n));
    }
    false
}

/// A level written as plain decimal digits without a leading zero.
fn level_of(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `mountpoint`: "none", "legacy", or an absolute path without "..", whitespace or control characters.
fn check_mountpoint(value: &str) -> Result<(), String> {
    if value == "none" || value == "legacy" {
        return Ok(());
    }
    let shown = shown(value);
    if !value.starts_with('/') {
        return Err(format!(
            "invalid value '{shown}': must be an absolute path, 'none' or 'legacy'"
        ));
    }
    if value.len() > MAX_NATIVE_VALUE_LEN {
        return Err(format!(
            "mountpoint is {} bytes long (limit: {MAX_NATIVE_VALUE_LEN} bytes)",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "invalid value '{shown}': contains control character '{}'",
            c.escape_debug()
        ));
    }
    if value.chars().any(char::is_whitespace) {
        return Err(format!("invalid value '{shown}': contains whitespace"));
    }
    for component in value.split('/') {
        if component == ".." {
            return Err(format!(
                "invalid value '{shown}': must not contain '..' components"
            ));
        }
        if component.len() > MAX_MOUNT_COMPONENT_LEN {
            return Err(format!(
                "invalid value '{shown}': a path component is longer than {MAX_MOUNT_COMPONENT_LEN} bytes"
            ));
        }
    }
    Ok(())
}

/// `sharenfs` / `sharesmb`: "on", "off", or a non-empty option string without control characters.
fn check_share(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("invalid value '': expected 'on', 'off' or an option string".to_owned());
    }
    if value.len() > MAX_NATIVE_VALUE_LEN {
        return Err(format!(
            "value is {} bytes long (limit: {MAX_NATIVE_VALUE_LEN} bytes)",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "invalid value '{}': contains control character '{}'",
            shown(value),
            c.escape_debug()
        ));
    }
    Ok(())
}

/// User properties (`module:property`): name and value rules; `Err` holds the rule.
fn validate_user(name: &str, value: &str) -> Result<(), String> {
    if name.len() > MAX_USER_NAME_LEN {
        return Err(format!(
            "user property name is {} bytes long (limit: {MAX_USER_NAME_LEN} bytes)",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("user property names must begin with a lowercase letter".to_owned());
    }
    if let Some(c) = name.chars().find(|&c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '_' | '-' | '.'))
    }) {
        return Err(format!(
            "user property name contains '{}' (allowed: lowercase letters, digits, ':', '_', '-', '.')",
            c.escape_debug()
        ));
    }
    if RESERVED.contains(&name) {
        return Err("reserved for labd".to_owned());
    }
    if value.is_empty() {
        return Err("user property value is empty".to_owned());
    }
    if value.len() > MAX_USER_VALUE_LEN {
        return Err(format!(
            "user property value is {} bytes long (limit: {MAX_USER_VALUE_LEN} bytes)",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "user property value contains control character '{}'",
            c.escape_debug()
        ));
    }
    Ok(())
}

/// A value as shown in messages: control characters escaped, cut after 64 characters.
fn shown(value: &str) -> String {
    const LIMIT: usize = 64;
    let mut out: String = value
        .chars()
        .take(LIMIT)
        .flat_map(char::escape_debug)
        .collect();
    if value.chars().nth(LIMIT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ok(name: &str, value: &str) -> String {
        match validate(name, value) {
            Ok(a) => a.value,
            Err(e) => panic!("{name}={value:?} refused: {e}"),
        }
    }

    fn rule(name: &str, value: &str) -> String {
        match validate(name, value) {
            Ok(a) => panic!("{name}={value:?} accepted as {a:?}"),
            Err(e) => {
                assert_eq!(e.property, name);
                e.rule
            }
        }
    }

    fn refused(name: &str, value: &str) {
        rule(name, value);
    }

    // ---- parse_size ----

    #[test]
    fn size_units() {
        assert_eq!(parse_size("500G").unwrap(), 536_870_912_000);
        assert_eq!(parse_size("1.5K").unwrap(), 1536);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10MiB").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("10mib").unwrap(), 10 * 1024 * 1024);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1T").unwrap(), 1 << 40);
        assert_eq!(parse_size("1p").unwrap(), 1 << 50);
        assert_eq!(parse_size("1E").unwrap(), 1 << 60);
        assert_eq!(parse_size("0").unwrap(), 0);
        assert_eq!(parse_size("0K").unwrap(), 0);
        assert_eq!(parse_size("512B").unwrap(), 512);
        assert_eq!(parse_size("512b").unwrap(), 512);
    }

    #[test]
    fn size_fractions() {
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size("1.25M").unwrap(), 1_310_720);
        assert_eq!(parse_size("1.3K").unwrap(), 1331, "rounded down like ZFS");
        assert_eq!(parse_size("1.000000000000000001E").unwrap(), (1 << 60) + 1);
        assert!(
            parse_size("1.5")
                .unwrap_err()
                .contains("fraction of a byte")
        );
        assert!(parse_size("1.5B").is_err());
        assert!(
            parse_size("1.0000000000000000001K")
                .unwrap_err()
                .contains("too many decimal places")
        );
    }

    #[test]
    fn size_limits() {
        assert_eq!(parse_size("15E").unwrap(), 15 << 60);
        assert_eq!(parse_size("18446744073709551615").unwrap(), u64::MAX);
        assert!(
            parse_size("18446744073709551616")
                .unwrap_err()
                .contains("too large")
        );
        assert!(parse_size("16E").unwrap_err().contains("too large"));
        assert_eq!(
            parse_size("15.99999999999999999E").unwrap(),
            18_446_744_073_709_551_604
        );
        assert!(parse_size("16.5E").unwrap_err().contains("too large"));
        assert!(
            parse_size("99999999999E")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_size("999999999999999999999999999999999999999999")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn size_garbage() {
        assert_eq!(parse_size("").unwrap_err(), "size is empty");
        assert!(parse_size("abc").unwrap_err().contains("not a size"));
    }

    #[test]
    fn size_negative() {
        assert_eq!(
            parse_size("-1").unwrap_err(),
            "'-1' is negative (sizes cannot be negative)"
        );
        assert!(parse_size("-1K").unwrap_err().contains("negative"));
        assert!(parse_size("-0").unwrap_err().contains("negative"));
    }

    #[test]
    fn size_bad_units() {
        assert_eq!(
            parse_size("1Q").unwrap_err(),
            "'1Q' has an unknown unit 'Q' (allowed: K, M, G, T, P, E, optionally followed by B or iB)"
        );
        for bad in [
            "none", "K", ".5K", "1.", "1..5K", "1.2.3K", "1BB", "1BiB", "1iB", "1 K", " 1K", "1K ",
            "+1", "1e3", "0x10", "1Z", "1KiBB", "1KK", "١",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    // ---- sizes in properties ----

    #[test]
    fn quota_family() {
        assert_eq!(ok("quota", "500G"), "536870912000");
        assert_eq!(ok("quota", "none"), "none");
        assert_eq!(ok("refquota", "1.5K"), "1536");
        assert_eq!(ok("reservation", "0"), "0");
    }

    #[test]
    fn refreservation_auto() {
        assert_eq!(ok("refreservation", "auto"), "auto");
        assert_eq!(ok("refreservation", "none"), "none");
        assert!(rule("reservation", "auto").contains("expected a size or 'none'"));
        assert!(rule("quota", "auto").contains("expected a size or 'none'"));
        assert!(rule("refreservation", "x").contains("expected a size or 'none' or 'auto'"));
    }

    #[test]
    fn quota_refused() {
        assert!(rule("quota", "abc").contains("not a size"));
        assert!(rule("quota", "-1").contains("negative"));
        assert!(rule("quota", "").contains("empty"));
        assert!(rule("quota", "NONE").contains("not a size"));
        assert!(rule("quota", "99999999999E").contains("too large"));
    }

    #[test]
    fn size_property_aliases() {
        let a = validate("reserv", "1G").unwrap();
        assert_eq!(a.name, "reservation");
        assert_eq!(a.to_arg(), "reservation=1073741824");
        assert_eq!(
            validate("refreserv", "auto").unwrap().name,
            "refreservation"
        );
    }

    #[test]
    fn recordsize() {
        assert_eq!(ok("recordsize", "128K"), "131072");
        assert_eq!(ok("recordsize", "512"), "512");
        assert_eq!(ok("recordsize", "1M"), "1048576");
        assert_eq!(ok("recordsize", "16M"), "16777216");
        assert_eq!(
            rule("recordsize", "100K"),
            "invalid value '100K' (102400 bytes): must be a power of two from 512 to 16M"
        );
        assert!(rule("recordsize", "32M").contains("power of two"));
        assert!(rule("recordsize", "256").contains("power of two"));
        assert!(rule("recordsize", "0").contains("power of two"));
        assert!(rule("recordsize", "none").contains("not a size"));
        assert_eq!(
            validate("recsize", "64K").unwrap().to_arg(),
            "recordsize=65536"
        );
    }

    #[test]
    fn special_small_blocks() {
        assert_eq!(ok("special_small_blocks", "0"), "0");
        assert_eq!(ok("special_small_blocks", "64K"), "65536");
        assert_eq!(ok("special_small_blocks", "16M"), "16777216");
        refused("special_small_blocks", "100K");
        refused("special_small_blocks", "32M");
        refused("special_small_blocks", "256");
        refused("special_small_blocks", "none");
    }

    // ---- on/off family ----

    #[test]
    fn on_off_properties() {
        for name in [
            "atime", "relatime", "devices", "exec", "setuid", "readonly", "zoned", "nbmand",
            "vscan", "overlay", "utf8only", "jailed",
        ] {
            assert_eq!(ok(name, "on"), "on");
            assert_eq!(ok(name, "off"), "off");
            assert_eq!(rule(name, "yes"), "invalid value 'yes' (allowed: on, off)");
            refused(name, "ON");
            refused(name, "");
            refused(name, "sa");
        }
        assert_eq!(validate("rdonly", "on").unwrap().name, "readonly");
    }

    #[test]
    fn xattr() {
        for v in ["on", "off", "sa", "dir"] {
            assert_eq!(ok("xattr", v), v);
        }
        refused("xattr", "posix");
    }

    // ---- algorithms ----

    #[test]
    fn compression() {
        for v in [
            "on",
            "off",
            "lzjb",
            "gzip",
            "gzip-1",
            "gzip-9",
            "zle",
            "lz4",
            "zstd",
            "zstd-1",
            "zstd-19",
            "zstd-fast",
            "zstd-fast-1",
            "zstd-fast-10",
            "zstd-fast-20",
            "zstd-fast-90",
            "zstd-fast-100",
            "zstd-fast-500",
            "zstd-fast-1000",
        ] {
            assert_eq!(ok("compression", v), v);
        }
        let a = validate("compress", "lz4").unwrap();
        assert_eq!(a.to_arg(), "compression=lz4");
    }

    #[test]
    fn compression_refused() {
        for v in [
            "",
            "LZ4",
            "gzip-0",
            "gzip-10",
            "gzip-01",
            "zstd-0",
            "zstd-20",
            "zstd-fast-0",
            "zstd-fast-11",
            "zstd-fast-15",
            "zstd-fast-110",
            "zstd-fast-200",
            "zstd-fast-01",
            "zstd--1",
            "gzip-",
            "lz5",
            "zstd-fast-+1",
        ] {
            assert!(rule("compression", v).starts_with("invalid value"), "{v:?}");
        }
    }

    #[test]
    fn checksum() {
        for v in [
            "on",
            "off",
            "fletcher2",
            "fletcher4",
            "sha256",
            "noparity",
            "sha512",
            "skein",
            "edonr",
            "blake3",
        ] {
            assert_eq!(ok("checksum", v), v);
        }
        refused("checksum", "md5");
        refused("checksum", "sha256,verify");
    }

    #[test]
    fn dedup() {
        for v in [
            "on",
            "off",
            "verify",
            "sha256",
            "sha256,verify",
            "sha512",
            "sha512,verify",
            "skein",
            "skein,verify",
            "edonr,verify",
            "blake3",
            "blake3,verify",
        ] {
            assert_eq!(ok("dedup", v), v);
        }
        refused("dedup", "edonr"); // edonr dedup requires verify
        refused("dedup", "fletcher4");
        refused("dedup", "verify,sha256");
    }

    // ---- word lists ----

    #[test]
    fn word_list_properties() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("canmount", &["on", "off", "noauto"], &["auto", "yes"]),
            ("snapdir", &["hidden", "visible"], &["disabled", "on"]),
            (
                "aclmode",
                &["discard", "groupmask", "passthrough", "restricted"],
                &["passthrough-x"],
            ),
            (
                "aclinherit",
                &[
                    "discard",
                    "noallow",
                    "restricted",
                    "passthrough",
                    "passthrough-x",
                ],
                &["groupmask"],
            ),
            (
                "acltype",
                &["off", "nfsv4", "posix", "posixacl", "noacl"],
                &["on", "POSIX"],
            ),
            ("copies", &["1", "2", "3"], &["0", "4", "01"]),
            ("logbias", &["latency", "throughput"], &["fast"]),
            ("primarycache", &["all", "none", "metadata"], &["data"]),
            ("secondarycache", &["all", "none", "metadata"], &["off"]),
            ("sync", &["standard", "always", "disabled"], &["on"]),
            (
                "redundant_metadata",
                &["all", "most", "some", "none"],
                &["few"],
            ),
            (
                "dnodesize",
                &["legacy", "auto", "1k", "2k", "4k", "8k", "16k"],
                &["32k", "1K", "512"],
            ),
            (
                "normalization",
                &["none", "formC", "formD", "formKC", "formKD"],
                &["formc", "nfc"],
            ),
            (
                "casesensitivity",
                &["sensitive", "insensitive", "mixed"],
                &["on"],
            ),
        ];
        for (name, good, bad) in cases {
            for v in *good {
                assert_eq!(ok(name, v), *v);
            }
            for v in *bad {
                assert!(rule(name, v).starts_with("invalid value"), "{name}={v}");
            }
        }
        assert_eq!(validate("dnsize", "auto").unwrap().name, "dnodesize");
    }

    #[test]
    fn create_only_properties_are_accepted() {
        assert_eq!(ok("utf8only", "on"), "on");
        assert_eq!(ok("normalization", "formD"), "formD");
        assert_eq!(ok("casesensitivity", "insensitive"), "insensitive");
        for name in CREATE_ONLY {
            assert!(kind_of(name).is_some(), "{name}");
        }
    }

    // ---- mountpoint and shares ----

    #[test]
    fn mountpoint() {
        assert_eq!(ok("mountpoint", "/mnt/a"), "/mnt/a");
        assert_eq!(ok("mountpoint", "/"), "/");
        assert_eq!(ok("mountpoint", "/mnt/a.b/..c/"), "/mnt/a.b/..c/");
        assert_eq!(ok("mountpoint", "none"), "none");
        assert_eq!(ok("mountpoint", "legacy"), "legacy");
        assert_eq!(
            ok("mountpoint", &format!("/{}", "a".repeat(255))).len(),
            256
        );
    }

    #[test]
    fn mountpoint_refused() {
        assert_eq!(
            rule("mountpoint", "relative"),
            "invalid value 'relative': must be an absolute path, 'none' or 'legacy'"
        );
        assert!(rule("mountpoint", "/a/../b").contains("'..'"));
        assert!(rule("mountpoint", "/a/..").contains("'..'"));
        assert!(rule("mountpoint", "/a b").contains("whitespace"));
        assert!(rule("mountpoint", "/a\nb").contains("control character '\\n'"));
        assert!(rule("mountpoint", "/a\u{a0}b").contains("whitespace"));
        refused("mountpoint", "");
        refused("mountpoint", "None");
        refused("mountpoint", "./a");
        assert!(rule("mountpoint", &format!("/{}", "a".repeat(256))).contains("component"));
        assert_eq!(
            ok("mountpoint", &format!("/{}", "a".repeat(255))).len(),
            256
        );
        let long = "/aaaaaaa".repeat(128); // 1024 bytes
        assert!(rule("mountpoint", &long).contains("limit: 1023 bytes"));
    }

    #[test]
    fn shares() {
        assert_eq!(ok("sharenfs", "on"), "on");
        assert_eq!(ok("sharenfs", "off"), "off");
        assert_eq!(
            ok("sharenfs", "-maproot=root -network 10.0.0.0/8"),
            "-maproot=root -network 10.0.0.0/8"
        );
        assert_eq!(ok("sharesmb", "on"), "on");
        assert!(rule("sharenfs", "ro\nrw").contains("control character"));
        assert!(rule("sharesmb", "a\tb").contains("control character"));
        refused("sharenfs", "");
        refused("sharenfs", &"a".repeat(1024));
    }

    // ---- user properties ----

    #[test]
    fn user_properties_accepted() {
        let a = validate("com.example:note", "hello world").unwrap();
        assert_eq!(a.name, "com.example:note");
        assert_eq!(a.value, "hello world");
        assert_eq!(a.to_arg(), "com.example:note=hello world");
        assert_eq!(ok("labd:note", "x"), "x");
        assert_eq!(ok("a:", "x"), "x");
        assert_eq!(ok("org:a_b-c.d:e9", "ünïcode ok"), "ünïcode ok");
        assert_eq!(ok("x:y", "="), "=");
    }

    #[test]
    fn user_property_names_refused() {
        assert!(rule("Upper:x", "v").contains("lowercase letter"));
        assert!(rule("com:Upper", "v").contains("contains 'U'"));
        assert!(rule(":x", "v").contains("lowercase letter"));
        assert!(rule("-x:y", "v").contains("lowercase letter"));
        assert!(rule("1x:y", "v").contains("lowercase letter"));
        assert!(rule("a b:c", "v").contains("contains ' '"));
        assert!(rule("a:b=c", "v").contains("contains '='"));
        assert!(rule("a:ä", "v").contains("contains 'ä'"));
        let name_ok = format!("a:{}", "b".repeat(253));
        assert_eq!(validate(&name_ok, "v").unwrap().name.len(), 255);
        let name_long = format!("a:{}", "b".repeat(254));
        assert!(rule(&name_long, "v").contains("limit: 255 bytes"));
    }

    #[test]
    fn reserved_property() {
        assert_eq!(rule("labd:managed", "true"), "reserved for labd");
        assert_eq!(
            validate("labd:managed", "true").unwrap_err().to_string(),
            "property 'labd:managed': reserved for labd"
        );
    }

    #[test]
    fn user_property_values_refused() {
        assert!(rule("com.example:note", "a\nb").contains("control character '\\n'"));
        assert!(rule("com.example:note", "a\tb").contains("control character '\\t'"));
        assert!(rule("com.example:note", "\u{7f}").contains("control character"));
        assert_eq!(rule("com.example:note", ""), "user property value is empty");
        assert!(validate("com.example:note", &"v".repeat(8191)).is_ok());
        assert!(rule("com.example:note", &"v".repeat(8192)).contains("limit: 8191 bytes"));
    }

    // ---- names that are not settable ----

    #[test]
    fn unknown_properties() {
        assert_eq!(rule("foo", "bar"), "unknown property");
        assert_eq!(rule("Compression", "lz4"), "unknown property");
        assert_eq!(rule("compression ", "lz4"), "unknown property");
        assert_eq!(rule("", "x"), "property name is empty");
        assert_eq!(
            validate("foo", "bar").unwrap_err().to_string(),
            "property 'foo': unknown property"
        );
        assert_eq!(rule("a@b", "1"), "unknown property");
    }

    #[test]
    fn read_only_properties() {
        for name in [
            "type",
            "creation",
            "used",
            "available",
            "avail",
            "referenced",
            "compressratio",
            "mounted",
            "origin",
            "usedbysnapshots",
            "usedbydataset",
            "usedbychildren",
            "usedbyrefreservation",
            "userrefs",
            "defer_destroy",
            "createtxg",
            "guid",
            "written",
            "logicalused",
            "logicalreferenced",
            "objsetid",
            "version",
            "userused@bob",
            "groupobjused@staff",
        ] {
            assert_eq!(rule(name, "1"), "read-only property", "{name}");
        }
        assert_eq!(
            validate("used", "1").unwrap_err().to_string(),
            "property 'used': read-only property"
        );
    }

    #[test]
    fn unsupported_properties() {
        for name in [
            "encryption",
            "keylocation",
            "keyformat",
            "pbkdf2iters",
            "volsize",
            "userquota@bob",
            "projectquota@1",
        ] {
            assert_eq!(rule(name, "on"), "unsupported by labd", "{name}");
        }
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let value = "x".repeat(1000);
        let r = rule("atime", &value);
        assert!(r.len() < 120, "{r}");
        assert!(r.contains('…'));
        assert_eq!(shown("abc"), "abc");
        assert_eq!(shown("a\u{1b}b"), "a\\u{1b}b");
    }

    #[test]
    fn error_display_escapes_property_name() {
        let e = validate("a\nb", "x").unwrap_err();
        assert_eq!(e.property, "a\nb");
        assert_eq!(e.to_string(), "property 'a\\nb': unknown property");
    }
}
