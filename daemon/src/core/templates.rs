//! VM templates: the built-in ones (compiled in from `vm-templates/`) and the files of
//! `[vms] templates_dir`, which override a built-in template of the same name or add new ones;
//! and the exact commands a VM made from one would run (`labctl template command`; the same
//! preview serves `labctl vm command` for a VM that exists).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::error::invalid;
use super::vmspec::{self, Loader, Template, VmSpec};
use super::{Core, Error};
use crate::host::bhyve::{self, Firmware, VmPaths};
use crate::host::qemu;
use crate::wire;

/// The templates shipped with labd.
const BUILTIN: &[(&str, &str)] = &[
    (
        "docker-host",
        include_str!("../../../vm-templates/docker-host.toml"),
    ),
    ("dev", include_str!("../../../vm-templates/dev.toml")),
    ("tiny", include_str!("../../../vm-templates/tiny.toml")),
];

/// A template with where it comes from and its text.
struct Loaded {
    source: String,
    text: String,
    template: Template,
}

/// Every template by name: built-in ones, then the directory's files over them. A file that
/// does not parse is an error naming the file and the key.
fn load(core: &Core) -> Result<BTreeMap<String, Loaded>, Error> {
    let mut out = BTreeMap::new();
    for (name, text) in BUILTIN {
        let template = Template::parse(text)
            .map_err(|e| Error::Internal(format!("built-in template {name}: {e}")))?;
        out.insert(
            (*name).to_owned(),
            Loaded {
                source: "builtin".to_owned(),
                text: (*text).to_owned(),
                template,
            },
        );
    }
    let dir = core.host().config.vms.templates_dir.clone();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(Error::Internal(format!(
                "cannot read {}: {e}",
                dir.display()
            )));
        }
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for path in files {
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
            .map(str::to_owned)
        else {
            continue;
        };
        let source = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::Internal(format!("cannot read {source}: {e}")))?;
        let template = Template::parse(&text)
            .map_err(|e| invalid("template", "invalid_template", format!("{source}: {e}")))?;
        out.insert(
            name,
            Loaded {
                source,
                text,
                template,
            },
        );
    }
    Ok(out)
}

fn info(name: &str, loaded: &Loaded, with_text: bool) -> wire::Template {
    let t = &loaded.template;
    wire::Template {
        name: name.to_owned(),
        source: loaded.source.clone(),
        description: t.description.clone(),
        cpus: t.cpu.count,
        memory: t.memory.bytes(),
        loader: t.loader.as_str().to_owned(),
        disks: t.disks.len(),
        nics: t.nics.len(),
        text: with_text.then(|| loaded.text.clone()),
    }
}

/// A stable example uuid for previews (a real VM gets a random one at create).
fn example_uuid(vm: &str) -> uuid::Uuid {
    // FNV-1a over the name, spread over 128 bits: deterministic, no extra dependency.
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in vm.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    uuid::Builder::from_u128(h)
        .with_version(uuid::Version::Random)
        .into_uuid()
}

impl Core {
    /// Every template.
    pub fn list_templates(&self) -> Result<Vec<wire::Template>, Error> {
        Ok(load(self)?
            .iter()
            .map(|(name, loaded)| info(name, loaded, false))
            .collect())
    }

    /// One template with its text.
    pub fn get_template(&self, name: &str) -> Result<wire::Template, Error> {
        let all = load(self)?;
        let loaded = all.get(name).ok_or_else(|| Error::NotFound {
            what: format!("template '{name}'"),
        })?;
        Ok(info(name, loaded, true))
    }

    /// The commands `driver` would run to start VM `vm` made from template `name`.
    pub async fn template_command(
        &self,
        name: &str,
        driver: Option<&str>,
        vm: Option<&str>,
    ) -> Result<wire::CommandPreview, Error> {
        let driver = check_driver(driver)?;
        let vm = vm.unwrap_or("example");
        vmspec::validate_vm_name(vm).map_err(|e| invalid("vm", "invalid_name", e.to_string()))?;
        let template = find_template(self, name)?;
        let mut spec = vmspec::instantiate(&template, name, vm, example_uuid(vm))
            .map_err(|e| invalid("name", "invalid_template", e.to_string()))?;
        let host = self.host();
        spec.place_volumes(super::vms::vm_dataset(&host, vm)?.as_str());
        let dir = super::vms::vm_root_mountpoint(&host).await?.join(vm);
        preview(&spec, driver, dir, "name")
    }
}

/// One template by name (a file in `[vms] templates_dir` overrides the built-in one).
pub(super) fn find_template(core: &Core, name: &str) -> Result<Template, Error> {
    load(core)?
        .remove(name)
        .map(|l| l.template)
        .ok_or_else(|| Error::NotFound {
            what: format!("template '{name}'"),
        })
}

/// `bhyve` (the default) or `qemu`; anything else is refused naming the field `driver`.
pub(super) fn check_driver(driver: Option<&str>) -> Result<&str, Error> {
    let driver = driver.unwrap_or("bhyve");
    if driver != "bhyve" && driver != "qemu" {
        return Err(invalid(
            "driver",
            "unsupported_driver",
            format!("'{driver}' is not one of bhyve, qemu"),
        ));
    }
    Ok(driver)
}

/// The commands `driver` (checked by [`check_driver`]) runs to start the VM of `spec` whose
/// directory (its dataset's mountpoint) is `dir`: the preview of `labctl template command`
/// and `labctl vm command`. Errors name `field` (what the caller chose the spec by).
pub(super) fn preview(
    spec: &VmSpec,
    driver: &str,
    dir: PathBuf,
    field: &str,
) -> Result<wire::CommandPreview, Error> {
    let vm = spec.name.as_str();
    if driver == "bhyve" && spec.loader == Loader::Kernel {
        return Err(invalid(
            field,
            "unsupported_loader",
            format!(
                "template '{}' boots a kernel directly: that is for QEMU, not bhyve",
                spec.template
            ),
        ));
    }
    let taps: Vec<String> = (0..spec.nics.len()).map(|i| format!("tap{i}")).collect();
    let bad = |e: String| invalid(field, "invalid_template", e);
    let commands = if driver == "qemu" {
        let paths = qemu::QemuPaths { dir: dir.clone() };
        let accel = qemu::Accel::Auto.resolve(qemu::kvm_usable());
        let ovmf = qemu::Ovmf::default();
        let argv = qemu::qemu_argv(spec, &paths, &taps, accel, &ovmf, Some(&dir))
            .map_err(|e| bad(e.to_string()))?;
        vec![argv]
    } else {
        bhyve::sequence(spec, &VmPaths { dir }, &taps, &Firmware::default())
            .map_err(|e| bad(e.to_string()))?
    };
    let when = |argv: &crate::host::runner::Argv| match argv.to_vec().first().map(String::as_str) {
        Some("bhyvectl") => format!(
            "only if {} exists (a stale instance)",
            bhyve::vmm_device(vm)
        ),
        Some("bhyveload") => "load the FreeBSD kernel".to_owned(),
        Some(qemu::QEMU) => "run the VM (labd supervises it; console and QMP on Unix \
                             sockets in its directory)"
            .to_owned(),
        _ => "run the VM (labd supervises this process)".to_owned(),
    };
    Ok(wire::CommandPreview {
        driver: driver.to_owned(),
        vm: vm.to_owned(),
        commands: commands
            .iter()
            .map(|argv| wire::PreviewCommand {
                when: when(argv),
                argv: argv.to_vec(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_uuid_is_stable_and_distinct() {
        assert_eq!(example_uuid("web"), example_uuid("web"));
        assert_ne!(example_uuid("web"), example_uuid("db"));
    }
}
