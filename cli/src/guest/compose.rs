//! The compose file labctl uploads: the user's file with the plan's volumes written in.
//!
//! A volume that names a dataset becomes an NFS volume of Docker's `local` driver
//! (`type: nfs`, `o: addr=HOST,nfsvers=4,rw,hard,…`, `device: ":/path"`), replacing whatever
//! the user's file said about it; a local volume is added as `{}` when the file does not
//! declare it. The rest of the file is kept as it is (key order included), so the rendered
//! text, and with it its hash, changes only when the plan or the file does.
//!
//! Docker names a project's volume `<project>_<key>`; labctl creates and checks NFS volumes
//! under that name itself before `docker compose up` (compose never applies changed
//! `driver_opts` to an existing volume), labelled as compose labels its own, so compose
//! adopts them.

use serde_norway::{Mapping, Value};
use sha2::{Digest as _, Sha256};

use super::plan::{NfsSection, Service};

/// What labctl writes at the top of every file it renders.
const HEADER: &str = "# Rendered by labctl from the provisioning plan: edit the plan's copy, \
                      not this one.\n";

/// An NFS volume as the guest's Docker should have it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsVolume {
    /// The volume's key in the compose file.
    pub key: String,
    /// Docker's name for it: `<project>_<key>`.
    pub docker_name: String,
    /// The `o` driver option.
    pub options: String,
    /// The `device` driver option (`:/tank/labd/photos`).
    pub device: String,
}

/// Docker's name of a project's volume.
pub fn docker_volume_name(project: &str, key: &str) -> String {
    format!("{project}_{key}")
}

/// The NFS volume of a plan volume: `export_path` is where the server exports its dataset.
pub fn nfs_volume(
    project: &str,
    key: &str,
    nfs: &NfsSection,
    read_only: bool,
    export_path: &str,
) -> NfsVolume {
    NfsVolume {
        key: key.to_owned(),
        docker_name: docker_volume_name(project, key),
        options: nfs.mount_options(read_only),
        device: format!(":{export_path}"),
    }
}

/// Check that `text` is a compose file labctl can render: a YAML mapping whose `services`
/// and `volumes`, if present, are mappings.
pub fn check(text: &str) -> Result<(), String> {
    parse(text).map(|_| ())
}

fn parse(text: &str) -> Result<Mapping, String> {
    let value: Value =
        serde_norway::from_str(text).map_err(|e| format!("not a YAML document: {e}"))?;
    let Value::Mapping(doc) = value else {
        return Err("a compose file is a YAML mapping (services:, volumes:, …)".to_owned());
    };
    for key in ["services", "volumes"] {
        if !matches!(doc.get(key), None | Some(Value::Mapping(_) | Value::Null)) {
            return Err(format!("its top-level `{key}` is not a mapping"));
        }
    }
    Ok(doc)
}

/// Render the file of `service` from the user's `text` with its NFS volumes `nfs`.
pub fn render(text: &str, service: &Service, nfs: &[NfsVolume]) -> Result<String, String> {
    let mut doc = parse(text)?;
    let volumes = doc
        .entry(Value::from("volumes"))
        .or_insert(Value::Mapping(Mapping::new()));
    if volumes.is_null() {
        *volumes = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(volumes) = volumes else {
        return Err("its top-level `volumes` is not a mapping".to_owned());
    };
    for v in &service.volumes {
        let key = Value::from(v.name.as_str());
        match nfs.iter().find(|n| n.key == v.name) {
            Some(n) => {
                volumes.insert(key, nfs_definition(n));
            }
            None => {
                volumes.entry(key).or_insert(Value::Mapping(Mapping::new()));
            }
        }
    }
    let body = serde_norway::to_string(&Value::Mapping(doc))
        .map_err(|e| format!("cannot render it: {e}"))?;
    Ok(format!("{HEADER}{body}"))
}

fn nfs_definition(n: &NfsVolume) -> Value {
    let mut opts = Mapping::new();
    opts.insert("type".into(), "nfs".into());
    opts.insert("o".into(), n.options.as_str().into());
    opts.insert("device".into(), n.device.as_str().into());
    let mut def = Mapping::new();
    def.insert("driver".into(), "local".into());
    def.insert("driver_opts".into(), Value::Mapping(opts));
    Value::Mapping(def)
}

/// Lower-case hex SHA-256 of `data` (what `sha256sum` prints).
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::guest::plan::Volume;

    fn service() -> Service {
        let vol = |name: &str, dataset: Option<&str>| Volume {
            name: name.into(),
            dataset: dataset.map(str::to_owned),
            access: None,
            maproot: None,
            mapall: None,
        };
        Service {
            name: "photos".into(),
            compose: "compose.yaml".into(),
            env: None,
            volumes: vec![vol("library", Some("photos")), vol("config", None)],
        }
    }

    fn nfs() -> NfsSection {
        toml::from_str("server = \"192.168.1.10\"").unwrap()
    }

    #[test]
    fn nfs_volumes_are_written_and_local_ones_added() {
        let text = "services:\n  app:\n    image: busybox\n    volumes:\n      - library:/photos\n      - config:/config\n\
                    volumes:\n  library:\n    driver: local\n";
        let n = nfs_volume("photos", "library", &nfs(), false, "/tank/labd/photos");
        assert_eq!(n.docker_name, "photos_library");
        let out = render(text, &service(), &[n]).unwrap();
        assert_eq!(
            out,
            "# Rendered by labctl from the provisioning plan: edit the plan's copy, not this one.\n\
             services:\n  app:\n    image: busybox\n    volumes:\n    - library:/photos\n    - config:/config\n\
             volumes:\n  library:\n    driver: local\n    driver_opts:\n      type: nfs\n      \
             o: addr=192.168.1.10,nfsvers=4,rw,hard,timeo=600,retrans=2,noatime\n      \
             device: :/tank/labd/photos\n  config: {}\n"
        );
        // Rendering is stable: the same input gives the same bytes.
        let again = render(
            text,
            &service(),
            &[nfs_volume(
                "photos",
                "library",
                &nfs(),
                false,
                "/tank/labd/photos",
            )],
        )
        .unwrap();
        assert_eq!(sha256_hex(out.as_bytes()), sha256_hex(again.as_bytes()));
    }

    #[test]
    fn a_declared_local_volume_is_kept() {
        let text = "services: {}\nvolumes:\n  config:\n    labels: {a: b}\n";
        let out = render(text, &service(), &[]).unwrap();
        assert!(out.contains("config:\n    labels:\n      a: b\n"), "{out}");
        assert!(out.contains("library: {}"), "{out}");
        let out = render("services: {}\nvolumes:\n", &service(), &[]).unwrap();
        assert!(out.contains("config: {}"), "{out}");
    }

    #[test]
    fn non_mappings_are_refused() {
        assert!(check("- a\n- b\n").is_err());
        assert!(check("volumes: [a]\n").is_err());
        assert!(check("services: {\n").is_err());
        assert!(check("services: {}\n").is_ok());
    }

    #[test]
    fn sha256_is_sha256sum() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
