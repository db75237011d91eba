//! The cloud-init NoCloud seed of a VM, as text: `meta-data`, `user-data` and
//! `network-config`, rendered from the VM's spec and its SSH host key by pure functions.
//!
//! # What the guest gets, and why
//!
//! cloud-init's NoCloud datasource looks for a filesystem labelled `cidata` (or `CIDATA`) on
//! any block device and reads three files from its root (reference/provisioning.md §3);
//! `host::seed` packs them into `seed.iso`. labd writes:
//!
//! * **`meta-data`**: `instance-id` and `local-hostname` (the VM's name, an RFC 1123 label
//!   by [`validate_vm_name`]).
//! * **`user-data`**, a `#cloud-config` document:
//!   - `users`: the login user (`cloud_init.user`) in group `sudo` with password-less sudo,
//!     `/bin/bash`, a locked password and the `ssh_authorized_keys` of the spec. No `default`
//!     entry: the image's own default user is not created besides it.
//!   - `ssh_pwauth: false`: password login over SSH stays off.
//!   - `ssh_keys` with the ed25519 host key pair labd generated (`host::seed`), plus
//!     `ssh_deletekeys: true` and `ssh_genkeytypes: ["ed25519"]`: cloud-init's `cc_ssh` first
//!     deletes every `/etc/ssh/ssh_host_*key*` the image shipped, then writes the given pair,
//!     and only generates keys when `ssh_keys` is absent (so the guest ends with exactly labd's
//!     key, and the `known_hosts` line labd hands out is right from the first boot, with no
//!     trust on first use). `ssh_genkeytypes` is a second lock for cloud-init versions that
//!     generate missing types even with `ssh_keys`: the one type it names already exists, so
//!     nothing is generated. (An empty list would be simpler but cloud-init 22.4's schema
//!     rejects it, reference/provisioning.md §3.)
//!   - `growpart` + `resize_rootfs`: on (`mode: "auto"`, `/`) or off (`mode: "off"`, quoted:
//!     a bare `off` is a boolean in YAML 1.1, which is what cloud-init's PyYAML reads).
//!   - `package_update: true` and `packages` when `cloud_init.packages` is not empty.
//!   - then the template's `cloud_init.user_data`, see below.
//! * **`network-config`**, version 2: one `ethernets` entry per NIC (`nic0`, `nic1`, … are
//!   only ids), matched by its MAC. There is no `set-name`: the guest keeps the name its kernel
//!   gives the NIC (vm-bhyve's forced `eth0` broke guests that name NICs otherwise, churchers
//!   #556/#559, reference/bhyve.md §6); cloud-init ≥ 22.3 looks the name up by MAC
//!   (LP #1855945, fixed for good in canonical/cloud-init PR #1552; read in cloud-init's
//!   source, not yet seen in a booted Debian guest). A NIC without an
//!   address gets `dhcp4: true`; a static one gets `addresses`, the gateway as `gateway4` /
//!   `gateway6` and `nameservers`. Why `gateway4` and not `routes`: Debian 12's cloud-init
//!   22.4.2 rejects `routes: [{to: default}]`, and `to: 0.0.0.0/0` renders to ifupdown as a
//!   `post-up route add … || true` that needs net-tools and hides failures, while `gateway4`
//!   renders a native `gateway` line (reference/provisioning.md §3, verified).
//!
//! # Quoting: no injection from input
//!
//! Every value that comes from input (user name, keys, hostname, addresses, packages) is
//! written as a YAML double-quoted scalar by [`quote`], which escapes `"` and `\` and writes
//! every character outside printable ASCII as `\uXXXX` / `\UXXXXXXXX`. The output is therefore
//! pure ASCII, a value can never end its scalar early, and YAML 1.1 can never read a string as
//! a boolean or a number (`"off"`, `"no"`, `"1:20"` stay strings). Values are also validated
//! where a rule exists (keys one line without control characters, addresses parsed and
//! written back canonically), with errors naming the field.
//!
//! # The template's extra `user_data`
//!
//! `cloud_init.user_data` (a `#cloud-config` document) is merged **under** labd's keys, by
//! appending its text, byte for byte, after labd's own: cloud-init then reads the user's
//! part exactly as written, with PyYAML's YAML 1.1 rules (a re-emitted copy could change
//! `yes` into `"yes"`). Before that it is parsed (serde_norway, the workspace's YAML crate)
//! and refused, with an error on `cloud_init.user_data`, when it:
//!
//! * is not valid YAML, holds more than one document, or holds characters PyYAML's reader
//!   refuses (control characters, U+FFFE…): cloud-init would drop the whole user-data, and the
//!   guest would come up without its user and keys;
//! * is not a mapping with string keys at the top level, or uses a merge key (`<<`) there
//!   (PyYAML would merge its content in, hiding keys from this check);
//! * sets a key labd writes ([`LABD_KEYS`]): labd's values are the ones the rest of labd
//!   relies on (the host key clients pin, no password login), so a conflict is an error rather
//!   than a silent override; the message says which `cloud_init` field to use instead;
//! * uses local YAML tags (`!…`) or `!!python/…` tags: cloud-init loads with PyYAML's
//!   `safe_load`, which refuses them (standard tags such as `!!binary` pass);
//! * cannot be appended: the concatenation is parsed again and must be exactly labd's keys
//!   plus the user's (this refuses flow style or indentation at the top level, and `---` or
//!   `...` markers).
//!
//! # `instance-id`: when cloud-init runs again
//!
//! cloud-init runs its per-instance modules (users, keys, growpart, packages, network) only
//! when the `instance-id` is new. labd rebuilds the seed whenever the spec changes, and a
//! rebuilt seed that the guest ignores is what vm-bhyve's users complained about
//! (reference/bhyve.md §10, item 10). So the id is `<uuid>-<digest>`, where the digest covers
//! every *input* of the seed ([`instance_id`]): the VM's name, the `cloud_init` table, the
//! host public key and each NIC's MAC, address, gateway and nameservers. It therefore changes
//! when, and only when, what the guest was asked to be changes: an added SSH key or a new
//! static address is applied at the next boot, while rebuilding an unchanged seed (or a new
//! labd that renders the same inputs differently) keeps the id and re-runs nothing. The host
//! key is stable (`host::seed` never regenerates it), so a re-run writes the same key again.
//! The digest is FNV-1a (64 bits): a change detector, not a security boundary.
//!
//! # Debugging a guest that ignored its seed
//!
//! On the guest console (`labctl vm console`): `cloud-init status --long` (done or error, and
//! the datasource found: `DataSourceNoCloud [seed=/dev/vdb]`); `/var/log/cloud-init.log`
//! (search `NoCloud`, `cidata`, `Failed loading yaml`, `schema`) and
//! `/var/log/cloud-init-output.log` (package installs, runcmd output); `cloud-init schema
//! --system` checks the user-data the guest received; `blkid -t LABEL=cidata` shows whether
//! the seed disk is visible at all (Debian's `genericcloud` kernel needs it on virtio-blk, not
//! AHCI). `/var/lib/cloud/instance/` holds what the current instance was given; `cloud-init
//! clean --reboot` starts over.

use std::net::IpAddr;

use super::vmspec::{CloudInit, Nic, SpecError, VmSpec, validate_vm_name};

/// The file names inside the seed, in the order cloud-init documents them.
pub const META_DATA: &str = "meta-data";
/// See [`META_DATA`].
pub const USER_DATA: &str = "user-data";
/// See [`META_DATA`].
pub const NETWORK_CONFIG: &str = "network-config";

/// Keys of `user-data` that labd writes; the template's `user_data` may not set them. Each
/// comes with what to use instead (the tail of the error message).
pub const LABD_KEYS: &[(&str, &str)] = &[
    (
        "users",
        "labd creates the login user from cloud_init.user and cloud_init.ssh_authorized_keys",
    ),
    ("ssh_pwauth", "labd keeps password login over SSH off"),
    (
        "ssh_keys",
        "labd installs the SSH host key it generated, the one clients pin",
    ),
    (
        "ssh_deletekeys",
        "labd makes the guest keep only the host key it generated",
    ),
    (
        "ssh_genkeytypes",
        "labd makes the guest keep only the host key it generated",
    ),
    ("growpart", "use cloud_init.growpart"),
    ("resize_rootfs", "use cloud_init.growpart"),
    ("packages", "list them in cloud_init.packages"),
    (
        "package_update",
        "labd sets it when cloud_init.packages is not empty",
    ),
];

/// Longest `cloud_init.user_data`, in bytes (the seed is a small ISO; a large payload belongs
/// on a disk or a share).
pub const MAX_USER_DATA: usize = 64 * 1024;

/// The ed25519 host key pair of a VM (OpenSSH formats), as `host::seed` reads it.
#[derive(Clone, PartialEq, Eq)]
pub struct HostKey {
    /// The private key file's text (`-----BEGIN OPENSSH PRIVATE KEY-----` …).
    pub private: String,
    /// The public key line (`ssh-ed25519 AAAA… <vm-name>`), without a newline: what labd
    /// reports and clients pin.
    pub public: String,
}

impl std::fmt::Debug for HostKey {
    /// Never prints the private key (it would end up in logs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("private", &"<redacted>")
            .field("public", &self.public)
            .finish()
    }
}

/// The three files of a NoCloud seed.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedFiles {
    /// `meta-data`.
    pub meta_data: String,
    /// `user-data` (holds the private host key).
    pub user_data: String,
    /// `network-config`.
    pub network_config: String,
}

impl std::fmt::Debug for SeedFiles {
    /// Shows meta-data only: user-data holds the private host key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedFiles")
            .field("meta_data", &self.meta_data)
            .field("user_data", &"<redacted>")
            .field("network_config", &self.network_config)
            .finish()
    }
}

impl SeedFiles {
    /// The files as (name, contents), in a fixed order.
    pub fn files(&self) -> [(&'static str, &str); 3] {
        [
            (META_DATA, &self.meta_data),
            (USER_DATA, &self.user_data),
            (NETWORK_CONFIG, &self.network_config),
        ]
    }
}

fn invalid(key: impl Into<String>, detail: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        key: key.into(),
        detail: detail.into(),
    }
}

/// Render the seed of `spec` with its host key. Fails (naming the field) when the spec has
/// no enabled `[cloud_init]`, breaks a spec rule, or its `user_data` cannot be merged.
pub fn render(spec: &VmSpec, key: &HostKey) -> Result<SeedFiles, SpecError> {
    spec.validate()?;
    let ci = spec
        .cloud_init
        .as_ref()
        .filter(|c| c.enabled)
        .ok_or_else(|| invalid("cloud_init", "the VM has no enabled cloud-init seed"))?;
    Ok(SeedFiles {
        meta_data: meta_data(spec, key)?,
        user_data: user_data(ci, key)?,
        network_config: network_config(&spec.nics)?,
    })
}

/// Check that `spec`'s seed can be rendered, before labd makes anything for the VM (its host
/// key does not exist yet: a well-formed placeholder stands in for it). A spec without an
/// enabled seed passes.
pub fn check(spec: &VmSpec) -> Result<(), SpecError> {
    if spec.seed().is_none() {
        return Ok(());
    }
    let placeholder = HostKey {
        private: "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
            .to_owned(),
        public: "ssh-ed25519 AAAAplaceholder".to_owned(),
    };
    render(spec, &placeholder).map(|_| ())
}

/// `meta-data`: the instance id and the hostname.
fn meta_data(spec: &VmSpec, key: &HostKey) -> Result<String, SpecError> {
    validate_vm_name(&spec.name)?;
    Ok(format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quote(&instance_id(spec, key)),
        quote(&spec.name)
    ))
}

/// The `instance-id`: the VM's UUID and a digest of every input of the seed (see the module
/// docs). The leading `v1` of the digested data names this encoding; changing the encoding
/// changes every id, which re-runs cloud-init on every guest, so it is pinned by a test.
pub fn instance_id(spec: &VmSpec, key: &HostKey) -> String {
    let mut h = Fnv::new();
    h.field(b"labd-seed-v1");
    h.field(spec.name.as_bytes());
    if let Some(ci) = &spec.cloud_init {
        h.field(ci.user.as_bytes());
        h.list(ci.ssh_authorized_keys.iter().map(String::as_bytes));
        h.field(if ci.growpart { b"1" } else { b"0" });
        h.list(ci.packages.iter().map(String::as_bytes));
        h.field(ci.user_data.as_deref().unwrap_or("").as_bytes());
    }
    h.field(key.public.as_bytes());
    h.count(spec.nics.len());
    for n in &spec.nics {
        h.field(n.mac.to_string().as_bytes());
        h.field(n.address.as_deref().unwrap_or("").as_bytes());
        h.field(
            n.gateway
                .map(|g| g.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        h.list(n.nameservers.iter().map(|a| a.to_string().into_bytes()));
    }
    format!("{}-{:016x}", spec.uuid, h.0)
}

/// FNV-1a over length-prefixed fields (so `["ab"]` and `["a", "b"]` differ).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn bytes(&mut self, data: &[u8]) {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn count(&mut self, n: usize) {
        self.bytes(&u64::try_from(n).unwrap_or(u64::MAX).to_le_bytes());
    }

    fn field(&mut self, data: &[u8]) {
        self.count(data.len());
        self.bytes(data);
    }

    fn list<I, B>(&mut self, items: I)
    where
        I: ExactSizeIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        self.count(items.len());
        for i in items {
            self.field(i.as_ref());
        }
    }
}

/// `user-data`: labd's keys, then the template's extra `user_data`.
fn user_data(ci: &CloudInit, key: &HostKey) -> Result<String, SpecError> {
    let mut y = String::from("#cloud-config\n");
    y.push_str("# Written by labd from the VM's spec; labd rewrites it when the spec changes.\n");
    y.push_str("users:\n");
    y.push_str(&format!("  - name: {}\n", quote(&ci.user)));
    y.push_str("    groups: [\"sudo\"]\n");
    y.push_str("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
    y.push_str("    shell: \"/bin/bash\"\n");
    y.push_str("    lock_passwd: true\n");
    if !ci.ssh_authorized_keys.is_empty() {
        y.push_str("    ssh_authorized_keys:\n");
        for (i, k) in ci.ssh_authorized_keys.iter().enumerate() {
            check_one_line(k)
                .map_err(|d| invalid(format!("cloud_init.ssh_authorized_keys[{i}]"), d))?;
            y.push_str(&format!("      - {}\n", quote(k.trim())));
        }
    }
    y.push_str("ssh_pwauth: false\n");
    y.push_str("ssh_deletekeys: true\n");
    y.push_str("ssh_genkeytypes: [\"ed25519\"]\n");
    y.push_str("ssh_keys:\n");
    y.push_str("  ed25519_private: |\n");
    for line in private_key_lines(&key.private)? {
        y.push_str("    ");
        y.push_str(line);
        y.push('\n');
    }
    check_public_key(&key.public)?;
    y.push_str(&format!("  ed25519_public: {}\n", quote(&key.public)));
    if ci.growpart {
        y.push_str("growpart:\n  mode: \"auto\"\n  devices: [\"/\"]\nresize_rootfs: true\n");
    } else {
        y.push_str("growpart:\n  mode: \"off\"\nresize_rootfs: false\n");
    }
    if !ci.packages.is_empty() {
        y.push_str("package_update: true\npackages:\n");
        for p in &ci.packages {
            y.push_str(&format!("  - {}\n", quote(p)));
        }
    }
    if let Some(extra) = &ci.user_data {
        y = merge_user_data(y, extra)?;
    }
    // Never reached with a correct renderer; it keeps a bug from shipping a seed that
    // cloud-init would drop as a whole.
    if let Err(e) = serde_norway::from_str::<serde_norway::Value>(&y) {
        return Err(invalid(
            "cloud_init",
            format!("labd rendered invalid user-data (a bug): {e}"),
        ));
    }
    Ok(y)
}

/// A key line: one line, no control characters (quoting would keep it safe, but sshd would
/// not read such a line as a key).
fn check_one_line(k: &str) -> Result<(), String> {
    if k.trim().is_empty() {
        return Err("empty".to_owned());
    }
    if let Some(c) = k.chars().find(|c| c.is_control()) {
        return Err(format!(
            "control character '{}' in a key; one key per entry, on one line",
            c.escape_debug()
        ));
    }
    Ok(())
}

/// The lines of an OpenSSH private key, checked so that they can go into a literal block
/// scalar unquoted: the armour lines and base64 in between, nothing else.
fn private_key_lines(private: &str) -> Result<Vec<&str>, SpecError> {
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    const END: &str = "-----END OPENSSH PRIVATE KEY-----";
    let bad = |d: &str| invalid("ssh_host_key", format!("the private host key {d}"));
    let lines: Vec<&str> = private.trim_end().lines().collect();
    if lines.first() != Some(&BEGIN) || lines.last() != Some(&END) || lines.len() < 3 {
        return Err(bad("is not an OpenSSH private key"));
    }
    let body_ok = lines[1..lines.len() - 1].iter().all(|l| {
        !l.is_empty()
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c))
    });
    if !body_ok {
        return Err(bad("has lines that are not base64"));
    }
    Ok(lines)
}

fn check_public_key(public: &str) -> Result<(), SpecError> {
    let ok = public.starts_with("ssh-ed25519 AAAA") && !public.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "ssh_host_key",
            "the public host key is not one 'ssh-ed25519 AAAA…' line",
        ))
    }
}

/// Append the template's `user_data` to labd's `user-data` text (see the module docs).
fn merge_user_data(labd: String, extra: &str) -> Result<String, SpecError> {
    use serde_norway::Value;
    let bad = |d: String| invalid("cloud_init.user_data", d);
    if extra.len() > MAX_USER_DATA {
        return Err(bad(format!(
            "{} bytes; at most {MAX_USER_DATA} are allowed",
            extra.len()
        )));
    }
    let (first, body) = extra.split_once('\n').unwrap_or((extra, ""));
    if first.trim_end() != "#cloud-config" {
        return Err(bad(
            "must be a cloud-config document: its first line is '#cloud-config'".to_owned(),
        ));
    }
    if let Some((line, c)) = extra
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.chars().find(|c| !yaml_printable(*c)).map(|c| (i + 1, c)))
    {
        return Err(bad(format!(
            "line {line}: character U+{:04X} is not allowed in YAML (cloud-init would ignore the whole user-data)",
            u32::from(c)
        )));
    }
    // libyaml resolves `!!` shorthands to `tag:yaml.org,2002:…` and serde_norway keeps only
    // local tags, so the one family of standard-prefixed tags PyYAML's safe loader refuses is
    // looked for in the text (a literal "!!python/" inside a string is refused too).
    if extra.contains("!!python/") {
        return Err(bad(
            "uses a '!!python/' tag; cloud-init's safe YAML loader refuses it".to_owned(),
        ));
    }
    let user: Value = serde_norway::from_str(body).map_err(|e| {
        bad(format!(
            "is not valid YAML (line numbers count after the header): {e}"
        ))
    })?;
    let user = match user {
        Value::Null => serde_norway::Mapping::new(),
        Value::Mapping(m) => m,
        _ => {
            return Err(bad(
                "must be a mapping of cloud-config keys (key: value lines) at the top level"
                    .to_owned(),
            ));
        }
    };
    for (k, v) in &user {
        let Some(name) = k.as_str() else {
            return Err(bad(format!(
                "top-level key {} is not a string",
                serde_norway::to_string(k)
                    .unwrap_or_default()
                    .trim_end()
                    .escape_debug()
            )));
        };
        if name == "<<" {
            return Err(bad(
                "merge keys ('<<') are not allowed at the top level".to_owned()
            ));
        }
        if let Some((_, instead)) = LABD_KEYS.iter().find(|(owned, _)| *owned == name) {
            return Err(bad(format!("'{name}' is set by labd: {instead}")));
        }
        if has_tag(v) {
            return Err(bad(format!(
                "'{name}' uses a local YAML tag ('!…'); cloud-init's safe loader refuses them"
            )));
        }
    }
    // The concatenation must mean exactly labd's keys plus the user's.
    let mut expected = match serde_norway::from_str::<Value>(&labd) {
        Ok(Value::Mapping(m)) => m,
        _ => return Err(bad("cannot be merged with labd's keys".to_owned())),
    };
    expected.extend(user);
    let mut out = labd;
    out.push_str("# From the template's cloud_init.user_data:\n");
    out.push_str(body);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let merged = serde_norway::from_str::<Value>(&out);
    match merged {
        Ok(Value::Mapping(m)) if m == expected => Ok(out),
        _ => Err(bad(
            "cannot be appended to labd's keys: write it as a block mapping starting at column 0 \
             (no '{…}' flow style or indentation at the top level, no '---' or '...' markers)"
                .to_owned(),
        )),
    }
}

fn has_tag(v: &serde_norway::Value) -> bool {
    use serde_norway::Value;
    match v {
        Value::Tagged(_) => true,
        Value::Sequence(s) => s.iter().any(has_tag),
        Value::Mapping(m) => m.iter().any(|(k, v)| has_tag(k) || has_tag(v)),
        _ => false,
    }
}

/// Characters PyYAML's reader accepts (its `NON_PRINTABLE` complement), minus the byte-order
/// mark, which is only allowed at the very start.
fn yaml_printable(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fefe}' | '\u{ff00}'..='\u{fffd}' | '\u{10000}'..)
}

/// `network-config` (version 2).
fn network_config(nics: &[Nic]) -> Result<String, SpecError> {
    let mut y = String::from("version: 2\n");
    if nics.is_empty() {
        y.push_str("ethernets: {}\n");
        return Ok(y);
    }
    y.push_str("ethernets:\n");
    for (i, n) in nics.iter().enumerate() {
        y.push_str(&format!("  nic{i}:\n    match:\n"));
        y.push_str(&format!(
            "      macaddress: {}\n",
            quote(&n.mac.to_string())
        ));
        match &n.address {
            None => y.push_str("    dhcp4: true\n"),
            Some(a) => {
                let (ip, prefix) = parse_cidr(a)
                    .ok_or_else(|| invalid(format!("nic[{i}].address"), "not an address/prefix"))?;
                y.push_str(&format!(
                    "    addresses: [{}]\n",
                    quote(&format!("{ip}/{prefix}"))
                ));
                if let Some(gw) = n.gateway {
                    let k = if gw.is_ipv4() { "gateway4" } else { "gateway6" };
                    y.push_str(&format!("    {k}: {}\n", quote(&gw.to_string())));
                }
            }
        }
        if !n.nameservers.is_empty() {
            let list: Vec<String> = n
                .nameservers
                .iter()
                .map(|a| quote(&a.to_string()))
                .collect();
            y.push_str(&format!(
                "    nameservers:\n      addresses: [{}]\n",
                list.join(", ")
            ));
        }
    }
    Ok(y)
}

fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = s.split_once('/')?;
    Some((a.parse().ok()?, p.parse().ok()?))
}

/// A YAML double-quoted scalar holding exactly `s`, in printable ASCII (see the module docs).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::core::vmspec::{Template, instantiate};
    use uuid::Uuid;

    const DOCKER_HOST: &str = include_str!("../../../vm-templates/docker-host.toml");

    fn key() -> HostKey {
        HostKey {
            private: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACBhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGZhc2RmYXNkZgAAAIhYZXhh\n-----END OPENSSH PRIVATE KEY-----\n".to_owned(),
            public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFzZGZhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGZhc2Rm docker-host".to_owned(),
        }
    }

    fn docker_host() -> VmSpec {
        let t = Template::parse(DOCKER_HOST).unwrap();
        let mut s = instantiate(
            &t,
            "docker-host",
            "docker-host",
            Uuid::from_u128(0x5f0c_1b2a_3c4d_4e5f_8a6b_7c8d_9e0f_1a2b),
        )
        .unwrap();
        s.cloud_init.as_mut().unwrap().ssh_authorized_keys = vec![
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJrZXl1c2Vya2V5dXNlcmtleXVzZXJrZXk me@laptop"
                .to_owned(),
        ];
        s
    }

    /// What cloud-init itself reads: PyYAML's `safe_load` (Debian's python3-yaml, the parser
    /// of Debian 12's cloud-init), as JSON.
    fn pyyaml(text: &str) -> serde_json::Value {
        use std::io::Write;
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sys, json, yaml; print(json.dumps(yaml.safe_load(sys.stdin.read())))",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 with python3-yaml (tests/env/install.sh installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "PyYAML refused:\n{text}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn user_data_of(extra: &str) -> Result<String, SpecError> {
        let mut s = docker_host();
        s.cloud_init.as_mut().unwrap().user_data = Some(extra.to_owned());
        render(&s, &key()).map(|f| f.user_data)
    }

    fn refused(extra: &str) -> String {
        match user_data_of(extra) {
            Err(e) => {
                assert_eq!(e.key(), Some("cloud_init.user_data"), "{e}");
                e.to_string()
            }
            Ok(y) => panic!("accepted {extra:?}:\n{y}"),
        }
    }

    const DOCKER_HOST_USER_DATA: &str = r##"#cloud-config
# Written by labd from the VM's spec; labd rewrites it when the spec changes.
users:
  - name: "debian"
    groups: ["sudo"]
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    shell: "/bin/bash"
    lock_passwd: true
    ssh_authorized_keys:
      - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZXJrZXl1c2Vya2V5dXNlcmtleXVzZXJrZXk me@laptop"
ssh_pwauth: false
ssh_deletekeys: true
ssh_genkeytypes: ["ed25519"]
ssh_keys:
  ed25519_private: |
    -----BEGIN OPENSSH PRIVATE KEY-----
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
    QyNTUxOQAAACBhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGZhc2RmYXNkZgAAAIhYZXhh
    -----END OPENSSH PRIVATE KEY-----
  ed25519_public: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGFzZGZhc2RmYXNkZmFzZGZhc2RmYXNkZmFzZGZhc2Rm docker-host"
growpart:
  mode: "auto"
  devices: ["/"]
resize_rootfs: true
package_update: true
packages:
  - "qemu-guest-agent"
  - "nfs-common"
# From the template's cloud_init.user_data:
timezone: UTC
"##;

    #[test]
    fn docker_host_defaults() {
        let f = render(&docker_host(), &key()).unwrap();
        assert_eq!(
            f.meta_data,
            "instance-id: \"5f0c1b2a-3c4d-4e5f-8a6b-7c8d9e0f1a2b-4583796cd850bfd0\"\n\
             local-hostname: \"docker-host\"\n"
        );
        assert_eq!(f.user_data, DOCKER_HOST_USER_DATA);
        assert_eq!(
            f.network_config,
            "version: 2\n\
             ethernets:\n  \
               nic0:\n    \
                 match:\n      \
                   macaddress: \"58:9c:fc:07:aa:8f\"\n    \
                 dhcp4: true\n"
        );
        let names: Vec<&str> = f.files().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["meta-data", "user-data", "network-config"]);
        // The private key never shows in Debug output (logs).
        assert!(!format!("{f:?} {:?}", key()).contains("b3BlbnNz"));
    }

    #[test]
    fn cloud_init_reads_what_labd_meant() {
        let f = render(&docker_host(), &key()).unwrap();
        let u = pyyaml(&f.user_data);
        assert_eq!(u["users"][0]["name"], "debian");
        assert_eq!(u["users"][0]["groups"], serde_json::json!(["sudo"]));
        assert_eq!(u["users"][0]["lock_passwd"], true);
        assert_eq!(
            u["users"][0]["ssh_authorized_keys"][0],
            docker_host().cloud_init.unwrap().ssh_authorized_keys[0]
        );
        assert_eq!(u["ssh_pwauth"], false);
        assert_eq!(u["ssh_deletekeys"], true);
        assert_eq!(u["ssh_genkeytypes"], serde_json::json!(["ed25519"]));
        assert_eq!(u["ssh_keys"]["ed25519_private"], key().private.as_str());
        assert_eq!(u["ssh_keys"]["ed25519_public"], key().public.as_str());
        assert_eq!(u["growpart"]["mode"], "auto");
        assert_eq!(u["resize_rootfs"], true);
        assert_eq!(u["package_update"], true);
        assert_eq!(
            u["packages"],
            serde_json::json!(["qemu-guest-agent", "nfs-common"])
        );
        assert_eq!(u["timezone"], "UTC");
        assert_eq!(u.as_object().unwrap().len(), 10, "{u}");
        let m = pyyaml(&f.meta_data);
        assert_eq!(m["local-hostname"], "docker-host");
        assert_eq!(
            m["instance-id"],
            "5f0c1b2a-3c4d-4e5f-8a6b-7c8d9e0f1a2b-4583796cd850bfd0"
        );
        let n = pyyaml(&f.network_config);
        assert_eq!(n["version"], 2);
        assert_eq!(
            n["ethernets"]["nic0"]["match"]["macaddress"],
            "58:9c:fc:07:aa:8f"
        );
        assert_eq!(n["ethernets"]["nic0"]["dhcp4"], true);
        // serde_norway (YAML 1.2) agrees on the structure.
        let v: serde_norway::Value = serde_norway::from_str(&f.user_data).unwrap();
        assert_eq!(
            v["ssh_keys"]["ed25519_private"].as_str(),
            Some(key().private.as_str())
        );
        assert_eq!(v["ssh_pwauth"].as_bool(), Some(false));
    }

    #[test]
    fn growpart_off_stays_the_string_off() {
        let mut s = docker_host();
        s.cloud_init.as_mut().unwrap().growpart = false;
        s.cloud_init.as_mut().unwrap().packages.clear();
        let f = render(&s, &key()).unwrap();
        assert!(
            f.user_data
                .contains("growpart:\n  mode: \"off\"\nresize_rootfs: false\n")
        );
        assert!(!f.user_data.contains("package"));
        let u = pyyaml(&f.user_data);
        // A bare `off` would be the boolean false in YAML 1.1.
        assert_eq!(u["growpart"]["mode"], "off");
        assert_eq!(u["resize_rootfs"], false);
    }

    #[test]
    fn static_ip() {
        let mut s = docker_host();
        let n = &mut s.nics[0];
        n.address = Some("192.168.1.20/24".to_owned());
        n.gateway = Some("192.168.1.1".parse().unwrap());
        n.nameservers = vec![
            "192.168.1.1".parse().unwrap(),
            "2606:4700:4700::1111".parse().unwrap(),
        ];
        let f = render(&s, &key()).unwrap();
        assert_eq!(
            f.network_config,
            "version: 2\n\
             ethernets:\n  \
               nic0:\n    \
                 match:\n      \
                   macaddress: \"58:9c:fc:07:aa:8f\"\n    \
                 addresses: [\"192.168.1.20/24\"]\n    \
                 gateway4: \"192.168.1.1\"\n    \
                 nameservers:\n      \
                   addresses: [\"192.168.1.1\", \"2606:4700:4700::1111\"]\n"
        );
        let n = pyyaml(&f.network_config);
        let e = &n["ethernets"]["nic0"];
        assert_eq!(e["addresses"], serde_json::json!(["192.168.1.20/24"]));
        assert_eq!(e["gateway4"], "192.168.1.1");
        assert_eq!(e["nameservers"]["addresses"][1], "2606:4700:4700::1111");
        assert!(e.get("dhcp4").is_none());
        // IPv6: the gateway is gateway6; the address is written back canonically.
        s.nics[0].address = Some("2001:0db8::0014/64".to_owned());
        s.nics[0].gateway = Some("2001:db8::1".parse().unwrap());
        s.nics[0].nameservers.clear();
        let f = render(&s, &key()).unwrap();
        assert!(
            f.network_config
                .ends_with("    addresses: [\"2001:db8::14/64\"]\n    gateway6: \"2001:db8::1\"\n"),
            "{}",
            f.network_config
        );
    }

    #[test]
    fn instance_id_follows_the_seed_inputs_only() {
        let base = docker_host();
        let id = |s: &VmSpec| instance_id(s, &key());
        let first = id(&base);
        assert_eq!(first, id(&base.clone()), "a rebuild keeps the id");
        let mut other = base.clone();
        other.memory = crate::core::vmspec::ByteSize::new(8 << 30);
        other.cpu.count = 4;
        assert_eq!(first, id(&other), "CPU and memory are not in the seed");
        let mut changes: Vec<VmSpec> = Vec::new();
        let mut s = base.clone();
        s.cloud_init
            .as_mut()
            .unwrap()
            .ssh_authorized_keys
            .push("ssh-ed25519 AAAAnew x".to_owned());
        changes.push(s);
        let mut s = base.clone();
        s.nics[0].address = Some("10.0.0.2/24".to_owned());
        changes.push(s);
        let mut s = base.clone();
        s.cloud_init.as_mut().unwrap().user_data = None;
        changes.push(s);
        let mut s = base.clone();
        s.name = "docker-host2".to_owned();
        changes.push(s);
        let mut s = base.clone();
        s.cloud_init.as_mut().unwrap().packages.pop();
        changes.push(s);
        for c in &changes {
            assert_ne!(first, id(c));
            assert!(id(c).starts_with("5f0c1b2a-3c4d-4e5f-8a6b-7c8d9e0f1a2b-"));
        }
        let mut k = key();
        k.public.push('x');
        assert_ne!(first, instance_id(&base, &k));
    }

    #[test]
    fn hostile_keys_stay_one_quoted_string() {
        let hostile =
            "ssh-ed25519 AAAAC3Nz x\" \\ #: {a: b} [c] &d *e !f |g >h 'i' %j @k `l` ü\u{2028}nï 🦀";
        let mut s = docker_host();
        s.cloud_init.as_mut().unwrap().ssh_authorized_keys = vec![hostile.to_owned()];
        let f = render(&s, &key()).unwrap();
        assert!(f.user_data.is_ascii());
        assert!(f.user_data.contains(
            r#"      - "ssh-ed25519 AAAAC3Nz x\" \\ #: {a: b} [c] &d *e !f |g >h 'i' %j @k `l` \u00fc\u2028n\u00ef \U0001f980"
"#
        ), "{}", f.user_data);
        let u = pyyaml(&f.user_data);
        assert_eq!(
            u["users"][0]["ssh_authorized_keys"],
            serde_json::json!([hostile])
        );
        assert_eq!(u["ssh_pwauth"], false);
        // Control characters and line breaks are refused, naming the entry.
        for bad in [
            "ssh-ed25519 AAAA x\u{1b}[31m",
            "ssh-ed25519 AAAA x\nssh_pwauth: true",
            "ssh-ed25519 AAAA x\u{85}ssh_pwauth: true",
        ] {
            s.cloud_init.as_mut().unwrap().ssh_authorized_keys =
                vec!["ssh-ed25519 AAAA ok".to_owned(), bad.to_owned()];
            let e = render(&s, &key()).unwrap_err();
            assert_eq!(e.key(), Some("cloud_init.ssh_authorized_keys[1]"), "{e}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            quote("\n\t\r\u{0}\u{7f}é\u{1F980}"),
            r#""\n\t\r\u0000\u007f\u00e9\U0001f980""#
        );
        for s in [
            "off", "no", "yes", "1:20", "0x1f", "~", "null", "- a", "*x", "&y", "!z", "",
        ] {
            let doc = format!("v: {}\n", quote(s));
            assert_eq!(pyyaml(&doc)["v"], s, "{s}");
        }
    }

    #[test]
    fn user_data_passes_through_verbatim() {
        // The user's text reaches cloud-init unchanged, so YAML 1.1 reads it as written:
        // `yes` is the boolean true for PyYAML (a re-emitted copy would have quoted it).
        let y = user_data_of(
            "#cloud-config\n# my comment\npackage_upgrade: yes\nruncmd:\n  - [sh, -c, 'echo \"hi\" > /x']\nwrite_files:\n  - path: /etc/motd\n    content: |\n      hello\n",
        )
        .unwrap();
        assert!(y.ends_with(
            "# From the template's cloud_init.user_data:\n# my comment\npackage_upgrade: yes\nruncmd:\n  - [sh, -c, 'echo \"hi\" > /x']\nwrite_files:\n  - path: /etc/motd\n    content: |\n      hello\n"
        ));
        let u = pyyaml(&y);
        assert_eq!(u["package_upgrade"], true);
        assert_eq!(u["runcmd"][0][2], "echo \"hi\" > /x");
        assert_eq!(u["write_files"][0]["content"], "hello\n");
        assert_eq!(u["ssh_pwauth"], false);
        // A header alone, or no trailing newline, is fine.
        assert!(
            user_data_of("#cloud-config")
                .unwrap()
                .ends_with("user_data:\n")
        );
        assert!(
            user_data_of("#cloud-config\nfqdn: a.b")
                .unwrap()
                .ends_with("fqdn: a.b\n")
        );
    }

    #[test]
    fn user_data_that_cannot_be_merged_is_refused() {
        let cases: &[(&str, &str)] = &[
            (
                "#cloud-config\nssh_pwauth: true\n",
                "'ssh_pwauth' is set by labd",
            ),
            (
                "#cloud-config\n\"ssh_keys\": {}\n",
                "'ssh_keys' is set by labd",
            ),
            (
                "#cloud-config\n\"ssh\\x5fpwauth\": true\n",
                "'ssh_pwauth' is set by labd",
            ),
            ("#cloud-config\npackages: [vim]\n", "cloud_init.packages"),
            ("#cloud-config\nusers: [default]\n", "cloud_init.user"),
            ("#cloud-config\n<<: {ssh_pwauth: true}\n", "merge keys"),
            ("#cloud-config\n{timezone: UTC}\n", "cannot be appended"),
            ("#cloud-config\n  timezone: UTC\n", "cannot be appended"),
            ("#cloud-config\n---\ntimezone: UTC\n", "cannot be appended"),
            (
                "#cloud-config\ntimezone: UTC\n...\nb: 2\n",
                "not valid YAML",
            ),
            ("#cloud-config\na: 1\n---\nb: 2\n", "not valid YAML"),
            ("#cloud-config\n- a\n- b\n", "must be a mapping"),
            ("#cloud-config\njust text\n", "must be a mapping"),
            ("#cloud-config\n1: x\n", "is not a string"),
            ("#cloud-config\na: [\n", "not valid YAML"),
            ("#cloud-config\na: *nowhere\n", "not valid YAML"),
            (
                "#cloud-config\nruncmd: !!python/object/apply:os.system [id]\n",
                "'!!python/' tag",
            ),
            ("#cloud-config\nbootcmd: [!shell id]\n", "local YAML tag"),
            ("#cloud-config\na: \"x\u{1}\"\n", "U+0001"),
            ("#cloud-config\na: \"\u{feff}\"\n", "U+FEFF"),
            ("#cloud-config\nb: x\nb: y\n", "not valid YAML"),
            ("timezone: UTC\n", "'#cloud-config'"),
            (
                "#cloud-configuration\ntimezone: UTC\n",
                "first line is '#cloud-config'",
            ),
        ];
        for (extra, want) in cases {
            let e = refused(extra);
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        let big = format!("#cloud-config\na: \"{}\"\n", "x".repeat(MAX_USER_DATA));
        assert!(refused(&big).contains("at most"));
    }

    #[test]
    fn refused_specs_name_the_field() {
        let mut s = docker_host();
        s.cloud_init.as_mut().unwrap().enabled = false;
        assert_eq!(render(&s, &key()).unwrap_err().key(), Some("cloud_init"));
        s.cloud_init = None;
        assert_eq!(render(&s, &key()).unwrap_err().key(), Some("cloud_init"));
        let mut s = docker_host();
        s.name = "Evil\nname".to_owned();
        assert_eq!(render(&s, &key()).unwrap_err().key(), Some("name"));
        let mut k = key();
        k.private = k.private.replace("QyNTUx", "Qy: |x");
        let e = render(&docker_host(), &k).unwrap_err();
        assert_eq!(e.key(), Some("ssh_host_key"), "{e}");
        let mut k = key();
        k.public = "ssh-rsa AAAA x".to_owned();
        assert_eq!(
            render(&docker_host(), &k).unwrap_err().key(),
            Some("ssh_host_key")
        );
    }
}
