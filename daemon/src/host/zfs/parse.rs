//! Parsers of `zfs` and `zpool` output, and of their usage text (capability probing).
//!
//! Only the forms OpenZFS 2.x and zfs-fuse 0.7 both print are relied on: `zfs get -Hp -o
//! name,property,value,source` (tab-separated, exact numbers) and `zpool list -H` (exact with
//! `-p` where supported, humanized otherwise).

use super::ZfsError;

/// One row of `zfs get -Hp -o name,property,value,source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropRow {
    /// Dataset or snapshot name.
    pub name: String,
    /// Property name.
    pub property: String,
    /// Value (`-` when not applicable).
    pub value: String,
    /// Source column (`local`, `default`, `inherited from x`, `-`, …).
    pub source: String,
}

#[cfg(test)]
impl PropRow {
    /// A row, for tests.
    pub fn new(name: &str, property: &str, value: &str, source: &str) -> Self {
        Self {
            name: name.into(),
            property: property.into(),
            value: value.into(),
            source: source.into(),
        }
    }
}

/// Parse `zfs get -H -o name,property,value,source` output.
///
/// A user property value may itself contain tabs, so the name and property are split from
/// the left and the source from the right.
pub fn get_rows(stdout: &str) -> Result<Vec<PropRow>, ZfsError> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| !l.is_empty()) {
        let mut left = line.splitn(3, '\t');
        let (Some(name), Some(property), Some(rest)) = (left.next(), left.next(), left.next())
        else {
            return Err(ZfsError::Parse(format!("short `zfs get` line: {line:?}")));
        };
        let Some((value, source)) = rest.rsplit_once('\t') else {
            return Err(ZfsError::Parse(format!("short `zfs get` line: {line:?}")));
        };
        rows.push(PropRow {
            name: name.to_owned(),
            property: property.to_owned(),
            value: value.to_owned(),
            source: source.to_owned(),
        });
    }
    Ok(rows)
}

/// Parse an exact number as printed by `-p`; `-` and `none` (and the `-p` spelling of none,
/// `u64::MAX`) mean absent.
pub fn number(value: &str) -> Option<u64> {
    match value {
        "-" | "none" | "" => None,
        v => v.parse().ok().filter(|n| *n != u64::MAX),
    }
}

/// Parse a humanized size as `zpool list` prints without `-p` (`504M`, `1.23G`, `0`, `736K`).
pub fn human_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (num, unit) = value.split_at(split);
    let num: f64 = num.parse().ok()?;
    let shift = match unit.trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        "E" => 60,
        _ => return None,
    };
    let bytes = num * 2f64.powi(shift);
    if !(0.0..1.8e19).contains(&bytes) {
        return None;
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(bytes.round() as u64)
}

/// One row of `zpool list -H -o name,size,allocated,free,capacity,health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRow {
    /// Pool name.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Allocated bytes.
    pub allocated: u64,
    /// Free bytes.
    pub free: u64,
    /// Capacity in percent.
    pub capacity: u8,
    /// Health.
    pub health: String,
}

/// Parse `zpool list -H -o name,size,allocated,free,capacity,health`, exact (`-p`) or humanized.
pub fn pool_rows(stdout: &str) -> Result<Vec<PoolRow>, ZfsError> {
    let mut rows = Vec::new();
    for line in stdout.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [name, size, alloc, free, cap, health] = f[..] else {
            return Err(ZfsError::Parse(format!("bad `zpool list` line: {line:?}")));
        };
        let size_of = |s: &str| {
            human_size(s).ok_or_else(|| ZfsError::Parse(format!("bad size {s:?} in {line:?}")))
        };
        rows.push(PoolRow {
            name: name.to_owned(),
            size: size_of(size)?,
            allocated: size_of(alloc)?,
            free: size_of(free)?,
            capacity: cap.trim_end_matches('%').parse().unwrap_or(0),
            health: health.to_owned(),
        });
    }
    Ok(rows)
}

/// What a ZFS implementation's CLI accepts, read from its usage text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// `zfs snapshot a@x b@x` (several names, one transaction).
    pub multi_snapshot: bool,
    /// `zfs destroy ds@a,b` (one `lzc_destroy_snaps`).
    pub comma_destroy: bool,
    /// `zfs set a=1 b=2 ds` in one command.
    pub multi_set: bool,
    /// `zfs get -t filesystem,volume`.
    pub get_type_filter: bool,
    /// `zfs holds -H` that works (zfs-fuse's is broken).
    pub holds_listing: bool,
    /// `zpool list -p` (exact numbers).
    pub zpool_parsable: bool,
    /// ZFS volumes labd can use as VM disks: `zfs create … -V <size> <volume>` and the
    /// `volmode` property (see [`capabilities`]).
    pub zvols: bool,
}

impl Capabilities {
    /// Names of the capabilities present, for `GET /v1`.
    pub fn names(&self) -> Vec<String> {
        [
            (self.multi_snapshot, "multi_snapshot"),
            (self.comma_destroy, "comma_destroy"),
            (self.multi_set, "multi_set"),
            (self.get_type_filter, "get_type_filter"),
            (self.holds_listing, "holds_listing"),
            (self.zpool_parsable, "zpool_parsable"),
            (self.zvols, "zvols"),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| n.to_owned())
        .collect()
    }
}

/// The usage block of one subcommand (its lines joined), from `zfs`'s usage text.
fn usage_block(usage: &str, command: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in usage.lines() {
        let trimmed = line.trim_start();
        let continuation = line.starts_with("\t    ") || line.starts_with("        ");
        if !continuation {
            inside = trimmed
                .split_whitespace()
                .next()
                .is_some_and(|w| w == command);
        }
        if inside {
            out.push_str(trimmed);
            out.push('\n');
        }
    }
    out
}

/// First bracketed option group of a usage block, e.g. `-Hp` of `list [-Hp] [-r|-d max]`.
fn first_flags(block: &str) -> &str {
    block
        .split_once("[-")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map_or("", |(flags, _)| flags)
}

/// Whether the property table `zfs get` prints with its usage lists `property`.
fn lists_property(get_usage: &str, property: &str) -> bool {
    get_usage
        .lines()
        .any(|l| l.split_whitespace().next() == Some(property))
}

/// Read capabilities from the usage text of `zfs` and `zpool` (printed when run without
/// arguments) and of `zfs get` (which adds the table of properties), the way zrepl probes
/// `zfs destroy` for comma lists.
///
/// Volumes need two things: the `-V <size> <volume>` form of `create` and the `volmode`
/// property. The form alone is not enough: zfs-fuse 0.7 prints it too, but its `zfs create -V`
/// aborts with `internal error: Function not implemented` (reference/zfs.md §2); it has no
/// `volmode` either, and labd creates every volume with `volmode=dev` (so that the host never
/// reads the guest's partition table), which only OpenZFS (FreeBSD and Linux) has.
pub fn capabilities(zfs_usage: &str, zpool_usage: &str, zfs_get_usage: &str) -> Capabilities {
    let snapshot = usage_block(zfs_usage, "snapshot");
    let destroy = usage_block(zfs_usage, "destroy");
    let set = usage_block(zfs_usage, "set");
    let get = usage_block(zfs_usage, "get");
    let holds = usage_block(zfs_usage, "holds");
    let zpool_list = usage_block(zpool_usage, "list");
    let create = usage_block(zfs_usage, "create");
    Capabilities {
        multi_snapshot: snapshot.contains("@<snap> ..."),
        comma_destroy: destroy.contains("[,...]"),
        multi_set: set.contains("<property=value> ..."),
        get_type_filter: get.contains("[-t type"),
        holds_listing: first_flags(&holds).contains('H'),
        zpool_parsable: first_flags(&zpool_list).contains('p'),
        zvols: create.contains("-V <size> <volume>") && lists_property(zfs_get_usage, "volmode"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FUSE_ZFS: &str = include_str!("fixtures/zfs-fuse-0.7.zfs-usage.txt");
    const FUSE_ZPOOL: &str = include_str!("fixtures/zfs-fuse-0.7.zpool-usage.txt");
    const OZFS_ZFS: &str = include_str!("fixtures/openzfs-2.2.zfs-usage.txt");
    const OZFS_ZPOOL: &str = include_str!("fixtures/openzfs-2.2.zpool-usage.txt");
    const FUSE_GET: &str = include_str!("fixtures/zfs-fuse-0.7.zfs-get-usage.txt");
    const OZFS_GET: &str = include_str!("fixtures/openzfs-2.2.zfs-get-usage.txt");

    #[test]
    fn zfs_fuse_has_none_of_the_batch_forms() {
        assert_eq!(
            capabilities(FUSE_ZFS, FUSE_ZPOOL, FUSE_GET),
            Capabilities::default()
        );
    }

    #[test]
    fn openzfs_has_them_all() {
        let c = capabilities(OZFS_ZFS, OZFS_ZPOOL, OZFS_GET);
        assert!(c.multi_snapshot && c.comma_destroy && c.multi_set, "{c:?}");
        assert!(
            c.get_type_filter && c.holds_listing && c.zpool_parsable && c.zvols,
            "{c:?}"
        );
        assert!(c.names().contains(&"zvols".to_owned()));
    }

    #[test]
    fn zvols_need_the_volume_form_and_volmode() {
        // zfs-fuse prints `create … -V <size> <volume>` but has no volmode (and its -V aborts).
        assert!(usage_block(FUSE_ZFS, "create").contains("-V <size> <volume>"));
        assert!(lists_property(FUSE_GET, "volsize") && !lists_property(FUSE_GET, "volmode"));
        assert!(!capabilities(FUSE_ZFS, FUSE_ZPOOL, FUSE_GET).zvols);
        // volmode alone is not enough either, nor is a probe whose `zfs get` printed nothing.
        let fs_only = OZFS_ZFS.replace("-V <size> <volume>", "<filesystem>");
        assert!(!capabilities(&fs_only, OZFS_ZPOOL, OZFS_GET).zvols);
        assert!(!capabilities(OZFS_ZFS, OZFS_ZPOOL, "").zvols);
        // The header and the values column never count as the property.
        assert!(!lists_property(
            "\tPROPERTY  EDIT\n\tfoo  YES  volmode\n",
            "volmode"
        ));
    }

    #[test]
    fn get_rows_from_real_zfs_fuse_output() {
        let text = include_str!("fixtures/zfsfuse07_get_Hp_fs_child_snap.tsv");
        let rows = get_rows(text).expect("parses");
        assert_eq!(rows.len(), 18);
        assert_eq!(rows[3].value, "/mnt/tank/research-fx");
        assert_eq!(rows[3].source, "inherited from tank");
        assert_eq!(rows[13].name, "tank/research-fx/child@fx1");
        assert_eq!(number(&rows[13].value), None);
        assert_eq!(number(&rows[0].value), Some(507_904));
    }

    #[test]
    fn tab_inside_a_user_value_is_kept() {
        let rows = get_rows("tank/a\tcom.x:note\tone\ttwo\tlocal\n").expect("parses");
        assert_eq!(rows[0].value, "one\ttwo");
        assert_eq!(rows[0].source, "local");
        assert!(get_rows("tank/a\tused\n").is_err());
    }

    #[test]
    fn none_under_p_is_absent() {
        assert_eq!(number("18446744073709551615"), None);
        assert_eq!(number("0"), Some(0));
    }

    #[test]
    fn pools_exact_and_humanized() {
        let fuse = pool_rows("p1\t504M\t736K\t503M\t0%\tONLINE\n").expect("fuse");
        assert_eq!(fuse[0].size, 504 << 20);
        assert_eq!(fuse[0].allocated, 736 << 10);
        assert_eq!(fuse[0].health, "ONLINE");
        let exact = pool_rows("zroot\t1000\t250\t750\t25\tDEGRADED\n").expect("exact");
        assert_eq!((exact[0].free, exact[0].capacity), (750, 25));
        assert_eq!(human_size("1.5G"), Some(1_610_612_736));
        assert_eq!(human_size("x"), None);
        assert!(pool_rows("p1\t504M\n").is_err());
    }
}
