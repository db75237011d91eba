//! The steps of a provisioning run and the shell scripts of the remote ones.
//!
//! Every remote step is one `sh` script run in one SSH exec: it probes, and when the probe
//! finds a difference it applies the change and probes again, all on the guest, so a step
//! costs one round trip and the probe sees the state the previous steps left (pyinfra reads
//! its facts before any change and plans interdependent steps wrong).
//!
//! A script is fixed text: [`PRELUDE`], the step's `probe` and `apply` functions, and
//! [`EPILOGUE`]. Its inputs are positional parameters (`$1` is the dry-run flag, then the
//! step's own) or stdin, never text pasted into the script. The protocol back is the exit
//! status (see [`Status`]) and the last line of stdout, a short detail; every command's own
//! output goes to stderr, the tail of which is the reason of a failure.

use labd::wire::ExportClient;

/// Exit status of a step script: in sync.
pub const EXIT_UNCHANGED: i32 = 0;
/// Exit status of a step script: it changed the guest.
pub const EXIT_CHANGED: i32 = 3;
/// Exit status of a step script in dry-run mode: it would change the guest.
pub const EXIT_WOULD_CHANGE: i32 = 4;

/// Shared head of every script: `$1` is `1` for a dry run, helpers.
pub const PRELUDE: &str = r#"set -u
DRY=$1
shift
export DEBIAN_FRONTEND=noninteractive LC_ALL=C
WHY=
say() { printf '%s\n' "$*"; }
fail() { printf '%s\n' "$*" >&2; exit 1; }
installed() {
    for p; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
    done
}
missing_of() {
    m=
    for p; do installed "$p" || m="$m $p"; done
    printf '%s' "${m# }"
}
wait_cloud_init() {
    command -v cloud-init >/dev/null 2>&1 || return 0
    timeout 1800 cloud-init status --wait >/dev/null 2>&1
    rc=$?
    case $rc in
        0|2) return 0 ;;
        124) fail "cloud-init did not finish within 30 minutes" ;;
        *) fail "cloud-init finished with errors (exit $rc; see: cloud-init status --long)" ;;
    esac
}
sum() {
    if command -v sha256sum >/dev/null 2>&1; then
        sha256sum "$1" 2>/dev/null | cut -d ' ' -f 1
    else
        sha256 -q "$1" 2>/dev/null
    fi
}
apt_parts_dir() {
    eval "$(apt-config shell D Dir::Etc::parts/d)"
    printf '%s' "${D:-/etc/apt/apt.conf.d/}"
}
write_file() {
    wf_dir=$(dirname "$1")
    mkdir -p "$wf_dir" || fail "cannot create $wf_dir"
    wf_tmp=$(mktemp "$wf_dir/.labctl.XXXXXX") || fail "cannot write in $wf_dir"
    printf '%s\n' "$2" >"$wf_tmp" && chmod 644 "$wf_tmp" && mv -f "$wf_tmp" "$1" \
        || { rm -f "$wf_tmp"; fail "cannot write $1"; }
}
"#;

/// Shared tail of every script: probe, apply when needed, probe again.
pub const EPILOGUE: &str = r#"
if probe; then
    say "${IN_SYNC:-in sync}"
    exit 0
fi
if [ "$DRY" = 1 ]; then
    say "$WHY"
    exit 4
fi
BEFORE=$WHY
apply
WHY=
probe || fail "still not as planned after applying: $WHY"
say "$BEFORE"
exit 3
"#;

/// `system.update`: no inputs.
const SYSTEM_UPDATE: &str = r#"
UPDATED=
probe() {
    wait_cloud_init
    if [ -z "$UPDATED" ]; then
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || fail "apt-get update failed"
        UPDATED=1
    fi
    sim=$(apt-get -s -o Debug::NoLocking=1 dist-upgrade 2>&1) || fail "apt-get -s dist-upgrade failed: $sim"
    n=$(printf '%s\n' "$sim" | grep -c '^Inst ')
    IN_SYNC="all packages up to date"
    [ "$n" -eq 0 ] && return 0
    WHY="packages to upgrade: $n"
    return 1
}
apply() {
    apt-get -y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef \
        -o Dpkg::Options::=--force-confold dist-upgrade >&2 || fail "apt-get dist-upgrade failed"
}
"#;

/// `system.auto_updates`: no inputs.
const AUTO_UPDATES: &str = r#"
CONF='APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";'
probe() {
    FILE="$(apt_parts_dir)20auto-upgrades"
    if ! installed unattended-upgrades; then
        WHY="unattended-upgrades is not installed"
        return 1
    fi
    if [ "$(cat "$FILE" 2>/dev/null)" != "$CONF" ]; then
        WHY="$FILE does not enable the daily upgrade"
        return 1
    fi
    dump=$(apt-config dump APT::Periodic)
    for line in 'APT::Periodic::Update-Package-Lists "1";' 'APT::Periodic::Unattended-Upgrade "1";'; do
        if ! printf '%s\n' "$dump" | grep -qxF "$line"; then
            WHY="apt does not read $line (another apt.conf.d file overrides $FILE)"
            return 1
        fi
    done
    IN_SYNC="unattended-upgrades enabled"
}
apply() {
    installed unattended-upgrades || apt-get install -y -q -o DPkg::Lock::Timeout=600 \
        unattended-upgrades >&2 || fail "apt-get install unattended-upgrades failed"
    write_file "$FILE" "$CONF"
}
"#;

/// `docker.engine`: `$1` = auto|debian|docker.
const DOCKER_ENGINE: &str = r#"
SRC=$1
DOCKER_GPG_URL=https://download.docker.com/linux/debian/gpg
DOCKER_KEYRING=/etc/apt/keyrings/docker.asc
if [ "$SRC" = auto ]; then
    [ -r /etc/os-release ] || fail "no /etc/os-release: not Debian? set docker.engine_source"
    rel=$(. /etc/os-release && printf '%s %s' "${ID:-}" "${VERSION_ID:-}")
    case $rel in
        "debian "1[3-9]*|"debian "[2-9][0-9]*) SRC=debian ;;
        "debian "*) SRC=docker ;;
        *) fail "not Debian ($rel): set docker.engine_source = \"debian\" or \"docker\"" ;;
    esac
fi
case $SRC in
    debian) PKGS="docker.io docker-compose" ;;
    docker) PKGS="docker-ce docker-ce-cli containerd.io docker-buildx-plugin docker-compose-plugin" ;;
    *) fail "unknown engine source $SRC" ;;
esac
repo_line() {
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || fail "no VERSION_CODENAME in /etc/os-release"
    printf 'deb [arch=%s signed-by=%s] https://download.docker.com/linux/debian %s stable' \
        "$(dpkg --print-architecture)" "$DOCKER_KEYRING" "$codename"
}
repo_file() {
    eval "$(apt-config shell S Dir::Etc::sourceparts/d)"
    printf '%sdocker.list' "${S:-/etc/apt/sources.list.d/}"
}
probe() {
    if [ "$SRC" = docker ] && [ "$(cat "$(repo_file)" 2>/dev/null)" != "$(repo_line)" ]; then
        WHY="Docker's apt repository is not configured"
        return 1
    fi
    m=$(missing_of $PKGS)
    if [ -n "$m" ]; then
        WHY="not installed: $m"
        return 1
    fi
    if ! v=$(docker compose version --short 2>&1); then
        WHY="docker compose does not answer: $v"
        return 1
    fi
    if ! out=$(docker info --format '{{.ServerVersion}}' 2>&1); then
        WHY="the Docker daemon does not answer: $out"
        return 1
    fi
    IN_SYNC="docker $out, compose $v ($SRC packages)"
}
apply() {
    wait_cloud_init
    if [ "$SRC" = docker ]; then
        apt-get install -y -q -o DPkg::Lock::Timeout=600 ca-certificates curl >&2 \
            || fail "apt-get install ca-certificates curl failed"
        install -d -m 0755 "$(dirname "$DOCKER_KEYRING")" || fail "cannot create the keyring dir"
        curl -fsSL "$DOCKER_GPG_URL" -o "$DOCKER_KEYRING.tmp" && chmod a+r "$DOCKER_KEYRING.tmp" \
            && mv -f "$DOCKER_KEYRING.tmp" "$DOCKER_KEYRING" || fail "cannot fetch $DOCKER_GPG_URL"
        write_file "$(repo_file)" "$(repo_line)"
        apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || fail "apt-get update failed"
        old=
        for p in docker.io docker-doc docker-compose podman-docker containerd runc; do
            installed "$p" && old="$old $p"
        done
        if [ -n "$old" ]; then
            apt-get remove -y -q -o DPkg::Lock::Timeout=600 $old >&2 || fail "apt-get remove$old failed"
        fi
    fi
    m=$(missing_of $PKGS)
    if [ -n "$m" ]; then
        apt-get install -y -q -o DPkg::Lock::Timeout=600 $m >&2 || fail "apt-get install $m failed"
    fi
    if ! out=$(docker info --format '{{.ServerVersion}}' 2>&1); then
        command -v systemctl >/dev/null 2>&1 || fail "the Docker daemon does not answer: $out"
        systemctl enable --now docker >&2 \
            || fail "the Docker daemon does not answer, and systemctl enable --now docker failed"
    fi
}
"#;

/// A Docker network: `$1` name, `$2` driver, `$3` subnet (empty: any).
const NETWORK: &str = r#"
NAME=$1
DRIVER=$2
SUBNET=$3
EXISTS=
probe() {
    cur=$(docker network inspect -f '{{.Driver}}|{{range .IPAM.Config}}{{.Subnet}} {{end}}' "$NAME" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        case $cur in
            *"No such network"*|*"not found"*) WHY="does not exist"; EXISTS=; return 1 ;;
            *) fail "docker network inspect $NAME failed: $cur" ;;
        esac
    fi
    EXISTS=1
    drv=${cur%%|*}
    subs=${cur#*|}
    subs=${subs% }
    IN_SYNC="$drv network, subnet $subs"
    if [ "$drv" != "$DRIVER" ]; then
        WHY="driver is $drv, the plan says $DRIVER"
        return 1
    fi
    if [ -n "$SUBNET" ] && [ "$subs" != "$SUBNET" ]; then
        WHY="subnet is ${subs:-none}, the plan says $SUBNET"
        return 1
    fi
}
apply() {
    if [ -n "$EXISTS" ]; then
        n=$(docker network inspect -f '{{len .Containers}}' "$NAME") || fail "docker network inspect $NAME failed"
        [ "$n" = 0 ] || fail "$WHY; $n containers are attached to it, so labctl does not recreate it (stop them, then run again)"
        docker network rm "$NAME" >&2 || fail "docker network rm $NAME failed"
    fi
    if [ -n "$SUBNET" ]; then
        docker network create --driver "$DRIVER" --subnet "$SUBNET" "$NAME" >&2
    else
        docker network create --driver "$DRIVER" "$NAME" >&2
    fi || fail "docker network create $NAME failed"
}
"#;

/// A file: `$1` path, `$2` mode (octal), `$3` SHA-256 of the content, which comes on stdin.
const FILE: &str = r#"
DEST=$1
MODE=$2
SUM=$3
probe() {
    if [ ! -f "$DEST" ]; then
        WHY="does not exist"
        return 1
    fi
    if [ "$(sum "$DEST")" != "$SUM" ]; then
        WHY="content differs"
        return 1
    fi
    if [ -z "$(find "$DEST" -prune -perm "$MODE")" ]; then
        WHY="not mode $MODE"
        return 1
    fi
    IN_SYNC="up to date"
}
apply() {
    dir=$(dirname "$DEST")
    mkdir -p "$dir" || fail "cannot create $dir"
    tmp=$(mktemp "$dir/.labctl.XXXXXX") || fail "cannot write in $dir"
    cat >"$tmp" || { rm -f "$tmp"; fail "cannot write $tmp"; }
    [ "$(sum "$tmp")" = "$SUM" ] || { rm -f "$tmp"; fail "the upload of $DEST arrived incomplete"; }
    chmod "$MODE" "$tmp" && mv -f "$tmp" "$DEST" || { rm -f "$tmp"; fail "cannot replace $DEST"; }
}
"#;

/// An NFS volume: `$1` project, `$2` key, `$3` Docker name, `$4` `o` option, `$5` device.
const NFS_VOLUME: &str = r#"
PROJECT=$1
KEY=$2
VOL=$3
OPTS=$4
DEV=$5
WANT="local|nfs|$OPTS|$DEV"
EXISTS=
probe() {
    cur=$(docker volume inspect -f '{{.Driver}}|{{index .Options "type"}}|{{index .Options "o"}}|{{index .Options "device"}}' "$VOL" 2>&1)
    rc=$?
    if [ $rc -ne 0 ]; then
        case $cur in
            *"No such volume"*|*"no such volume"*) WHY="does not exist"; EXISTS=; return 1 ;;
            *) fail "docker volume inspect $VOL failed: $cur" ;;
        esac
    fi
    EXISTS=1
    IN_SYNC="nfs $DEV ($OPTS)"
    [ "$cur" = "$WANT" ] && return 0
    users=$(docker ps -aq --filter "volume=$VOL" | wc -l)
    WHY="is $cur, the plan says $WANT: recreate it ($users containers using it stopped and removed first; compose recreates them)"
    return 1
}
apply() {
    if [ -n "$EXISTS" ]; then
        ids=$(docker ps -aq --filter "volume=$VOL") || fail "docker ps failed"
        if [ -n "$ids" ]; then
            # Container ids (hex) from docker itself: split on purpose.
            docker stop $ids >&2 || fail "cannot stop the containers using $VOL"
            docker rm $ids >&2 || fail "cannot remove the containers using $VOL"
        fi
        docker volume rm "$VOL" >&2 || fail "docker volume rm $VOL failed"
    fi
    docker volume create --driver local --opt type=nfs --opt "o=$OPTS" --opt "device=$DEV" \
        --label "com.docker.compose.project=$PROJECT" --label "com.docker.compose.volume=$KEY" \
        "$VOL" >&2 || fail "docker volume create $VOL failed"
}
"#;

/// A compose project: `$1` project, `$2` compose file.
const COMPOSE_UP: &str = r#"
PROJECT=$1
FILE=$2
probe() {
    [ -f "$FILE" ] || fail "$FILE does not exist"
    want=$(docker compose -p "$PROJECT" -f "$FILE" config --hash '*' 2>&1) \
        || fail "docker compose config failed: $want"
    have=$(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
        --format '{{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.config-hash"}} {{.State}}' 2>&1) \
        || fail "docker ps failed: $have"
    WHY=$({ printf '%s\n' "$want" | sed 's/^/W /'; printf '%s\n' "$have" | sed 's/^/H /'; } | awk '
        $1 == "W" && NF == 3 { hash[$2] = $3; next }
        $1 == "H" && NF >= 2 {
            seen[$2] = 1
            if (!($2 in hash)) { print "orphan container of " $2; next }
            if ($3 != hash[$2]) { print $2 " configuration changed"; next }
            if ($4 != "running") { print $2 " is " $4 }
        }
        END { for (s in hash) if (!(s in seen)) print s " has no container" }' | sort -u | paste -s -d ';' -)
    n=$(printf '%s\n' "$want" | grep -c .)
    IN_SYNC="$n services running as configured"
    [ -z "$WHY" ]
}
apply() {
    docker compose -p "$PROJECT" -f "$FILE" up -d --remove-orphans >&2 \
        || fail "docker compose up failed"
}
"#;

/// The full text of a remote step's script.
pub fn script(body: &str) -> String {
    format!("{PRELUDE}{body}{EPILOGUE}")
}

/// What a step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// A script run on the guest.
    Remote {
        /// The step body (see [`script`]).
        body: &'static str,
        /// Its positional parameters after the dry-run flag.
        args: Vec<String>,
        /// Its stdin (applied only; a dry run sends none).
        stdin: Option<Vec<u8>>,
        /// In a dry run, report "would change" without probing when an earlier step of the
        /// same group would change (the probe would read the state before that change).
        after_group: bool,
    },
    /// Make sure labd exports `export` to the guest's client entry `client`.
    Export {
        /// Export (dataset) name.
        export: String,
        /// The guest's client entry.
        client: ExportClient,
    },
    /// Apply labd's export definitions to the NFS server.
    ExportsApply,
}

/// One step of a run.
#[derive(Debug, Clone)]
pub struct Step {
    /// What the report calls it.
    pub name: String,
    /// A group (the service it belongs to), for [`Action::Remote::after_group`].
    pub group: Option<String>,
    /// What it does.
    pub action: Action,
}

impl Step {
    fn remote(name: String, body: &'static str, args: Vec<String>) -> Self {
        Self {
            name,
            group: None,
            action: Action::Remote {
                body,
                args,
                stdin: None,
                after_group: false,
            },
        }
    }

    /// `system update`.
    pub fn system_update() -> Self {
        Self::remote("system update".into(), SYSTEM_UPDATE, Vec::new())
    }

    /// `system auto-updates`.
    pub fn auto_updates() -> Self {
        Self::remote("system auto-updates".into(), AUTO_UPDATES, Vec::new())
    }

    /// `docker engine`.
    pub fn docker_engine(source: &str) -> Self {
        Self::remote(
            "docker engine".into(),
            DOCKER_ENGINE,
            vec![source.to_owned()],
        )
    }

    /// `network NAME`.
    pub fn network(name: &str, driver: &str, subnet: Option<&str>) -> Self {
        Self::remote(
            format!("network {name}"),
            NETWORK,
            vec![
                name.to_owned(),
                driver.to_owned(),
                subnet.unwrap_or_default().to_owned(),
            ],
        )
    }

    /// `file PATH` of service `group`.
    pub fn file(group: &str, path: &str, mode: &str, content: Vec<u8>) -> Self {
        let sum = super::compose::sha256_hex(&content);
        Self {
            name: format!("file {path}"),
            group: Some(group.to_owned()),
            action: Action::Remote {
                body: FILE,
                args: vec![path.to_owned(), mode.to_owned(), sum],
                stdin: Some(content),
                after_group: false,
            },
        }
    }

    /// `volume NAME` (NFS) of service `project`.
    pub fn nfs_volume(project: &str, v: &super::compose::NfsVolume) -> Self {
        Self {
            name: format!("volume {}", v.docker_name),
            group: Some(project.to_owned()),
            action: Action::Remote {
                body: NFS_VOLUME,
                args: vec![
                    project.to_owned(),
                    v.key.clone(),
                    v.docker_name.clone(),
                    v.options.clone(),
                    v.device.clone(),
                ],
                stdin: None,
                after_group: false,
            },
        }
    }

    /// `compose PROJECT`.
    pub fn compose_up(project: &str, file: &str) -> Self {
        Self {
            name: format!("compose {project}"),
            group: Some(project.to_owned()),
            action: Action::Remote {
                body: COMPOSE_UP,
                args: vec![project.to_owned(), file.to_owned()],
                stdin: None,
                after_group: true,
            },
        }
    }

    /// `export NAME -> ADDR`.
    pub fn export(export: &str, client: ExportClient) -> Self {
        Self {
            name: format!("export {export} to {}", client.address),
            group: Some("labd exports".to_owned()),
            action: Action::Export {
                export: export.to_owned(),
                client,
            },
        }
    }

    /// `exports apply`.
    pub fn exports_apply() -> Self {
        Self {
            name: "exports apply".into(),
            group: Some("labd exports".to_owned()),
            action: Action::ExportsApply,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const BODIES: [&str; 7] = [
        SYSTEM_UPDATE,
        AUTO_UPDATES,
        DOCKER_ENGINE,
        NETWORK,
        FILE,
        NFS_VOLUME,
        COMPOSE_UP,
    ];

    /// Every script is valid POSIX sh (`sh -n` parses without running).
    #[test]
    fn scripts_parse() {
        for body in BODIES {
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg("-c")
                .arg(script(body))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}\n{body}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Run a script locally with a fake probe/apply to check the protocol.
    fn run_protocol(body: &str, dry: bool) -> (i32, String, String) {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(body))
            .arg("labctl-step")
            .arg(if dry { "1" } else { "0" })
            .arg(std::env::temp_dir().join(format!("labctl-steps-{}", std::process::id())))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    const FAKE: &str = r#"
        F=$1
        probe() { [ -f "$F" ] && return 0; WHY="$F missing"; return 1; }
        apply() { echo applying >&2; : > "$F"; }
    "#;

    #[test]
    fn probe_apply_reprobe_protocol() {
        let flag = std::env::temp_dir().join(format!("labctl-steps-{}", std::process::id()));
        let _ = std::fs::remove_file(&flag);
        let (code, out, _) = run_protocol(FAKE, true);
        assert_eq!(
            (code, out.trim_end()),
            (EXIT_WOULD_CHANGE, &*format!("{} missing", flag.display()))
        );
        assert!(!flag.exists(), "a dry run applied");
        let (code, out, err) = run_protocol(FAKE, false);
        assert_eq!(code, EXIT_CHANGED, "{err}");
        assert!(out.ends_with("missing\n"), "{out}");
        assert!(err.contains("applying"));
        let (code, out, _) = run_protocol(FAKE, false);
        assert_eq!((code, out.as_str()), (EXIT_UNCHANGED, "in sync\n"));
        std::fs::remove_file(&flag).unwrap();
        // An apply that does not converge fails with the re-probe's reason.
        let (code, _, err) =
            run_protocol("probe() { WHY=never; return 1; }\napply() { :; }\n", false);
        assert_eq!(code, 1);
        assert!(
            err.contains("still not as planned after applying: never"),
            "{err}"
        );
    }

    #[test]
    fn steps_carry_inputs_as_arguments_only() {
        let nasty = "proxy'; rm -rf / #";
        let step = Step::network(nasty, "bridge", None);
        let Action::Remote { body, args, .. } = &step.action else {
            panic!();
        };
        assert!(!body.contains(nasty));
        assert_eq!(args[0], nasty);
        let step = Step::file("svc", "/srv/x", "600", b"abc".to_vec());
        let Action::Remote { args, stdin, .. } = &step.action else {
            panic!();
        };
        assert_eq!(
            args[2],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(stdin.as_deref(), Some(&b"abc"[..]));
    }
}
