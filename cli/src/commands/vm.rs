//! `labctl vm create|list|info|start|stop|restart|snapshot|clone|console|destroy|command`: VMs as labd keeps them, one dataset
//! each with its `vm.toml`. Creating, starting, stopping and destroying are jobs.

use labd::wire::{self, CommandPreview, Job, Vm};

use super::Ctx;
use crate::args::VmCommand;
use crate::client::{encode_query_value, encode_segment};
use crate::{jobs, output};

/// Path of a VM: `/v1/vms/{name}`.
fn vm_path(name: &str) -> String {
    format!("/v1/vms/{}", encode_segment(name))
}

/// The public keys in `files`: every line that is not empty or a comment.
fn read_keys(files: &[std::path::PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("--ssh-key {}: {e}", f.display()))?;
        let before = keys.len();
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        if keys.len() == before {
            anyhow::bail!("--ssh-key {}: no key in the file", f.display());
        }
    }
    Ok(keys)
}

/// Run `labctl vm <cmd>`.
pub async fn run(ctx: &Ctx, cmd: VmCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    let job: Job = match cmd {
        VmCommand::List => {
            let vms: Vec<Vm> = client.get("/v1/vms").await?;
            return output::emit(ctx.format, &vms, |v| render_list(v));
        }
        VmCommand::Info { name } => {
            let vm: Vm = client.get(&vm_path(&name)).await?;
            return output::emit(ctx.format, &vm, render_one);
        }
        VmCommand::Command { name, driver } => {
            let path = format!(
                "{}/command?driver={}",
                vm_path(&name),
                encode_query_value(&driver)
            );
            let preview: CommandPreview = client.get(&path).await?;
            return output::emit(ctx.format, &preview, super::template::render_preview);
        }
        VmCommand::Create {
            name,
            template,
            cpus,
            memory,
            image,
            ssh_keys,
            ip,
            gateway,
            nameservers,
        } => {
            let req = wire::CreateVm {
                name,
                template,
                cpus,
                memory,
                image,
                ssh_keys: read_keys(&ssh_keys)?,
                ip,
                gateway,
                nameservers,
            };
            client.post("/v1/vms", &req).await?
        }
        VmCommand::Destroy { name } => client.delete(&vm_path(&name)).await?,
        VmCommand::Start { name } => {
            client
                .post_empty(&format!("{}/start", vm_path(&name)))
                .await?
        }
        VmCommand::Snapshot { name, snapshot } => {
            let req = wire::SnapshotVm { name: snapshot };
            client
                .post(&format!("{}/snapshots", vm_path(&name)), &req)
                .await?
        }
        VmCommand::Clone {
            name,
            target,
            snapshot,
        } => {
            let req = wire::CloneVm { target, snapshot };
            client
                .post(&format!("{}/clone", vm_path(&name)), &req)
                .await?
        }
        VmCommand::Console { name } => return crate::console::attach(client, &name).await,
        VmCommand::Restart { name, force } => {
            let q = if force { "?force=true" } else { "" };
            client
                .post_empty(&format!("{}/restart{q}", vm_path(&name)))
                .await?
        }
        VmCommand::Stop { name, force } => {
            let q = if force { "?force=true" } else { "" };
            client
                .post_empty(&format!("{}/stop{q}", vm_path(&name)))
                .await?
        }
    };
    jobs::run(client, ctx.report(), job).await
}

fn render_list(vms: &[Vm]) -> String {
    let mut t = output::table(&["NAME", "STATE", "CPUS", "MEMORY", "TEMPLATE"]);
    for vm in vms {
        t.add_row(vec![
            vm.name.clone(),
            vm.state.clone(),
            vm.cpus.to_string(),
            output::size(vm.memory),
            vm.template.clone(),
        ]);
    }
    output::render(&t)
}

fn render_one(vm: &Vm) -> String {
    let mut rows: Vec<(String, String)> = [
        ("name", vm.name.clone()),
        ("state", vm.state.clone()),
        (
            "pid",
            vm.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        ),
        (
            "last exit",
            vm.last_exit.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        (
            "uuid",
            vm.uuid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        ),
        ("template", vm.template.clone()),
        ("cpus", vm.cpus.to_string()),
        ("memory", output::size(vm.memory)),
        ("loader", vm.loader.clone()),
        ("dataset", vm.dataset.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (i, d) in vm.disks.iter().enumerate() {
        let mut desc = match &d.volume {
            Some(volume) => format!("zvol {volume} {}", d.bus),
            None => format!("{} {}", d.file, d.bus),
        };
        if let Some(size) = d.size {
            desc.push_str(&format!(" {}", output::size(size)));
        }
        if let Some(image) = &d.image {
            desc.push_str(&format!(" (from image {image})"));
        }
        rows.push((format!("disk{i}"), desc));
    }
    for (i, n) in vm.nics.iter().enumerate() {
        let address = n.address.as_deref().unwrap_or("dhcp");
        rows.push((
            format!("nic{i}"),
            format!("{} {} on {}, {address}", n.mac, n.model, n.switch),
        ));
    }
    if vm.restarts > 0 {
        rows.push(("restarts".to_owned(), vm.restarts.to_string()));
    }
    if let Some(message) = &vm.message {
        rows.push(("message".to_owned(), message.clone()));
    }
    if let Some(key) = &vm.ssh_host_key {
        rows.push(("ssh host key".to_owned(), key.clone()));
    }
    if let Some(error) = &vm.error {
        rows.push(("error".to_owned(), error.clone()));
    }
    let head = output::render(&output::key_values(
        rows.iter().map(|(k, v)| (k.as_str(), v.clone())),
    ));
    match &vm.text {
        Some(text) => format!("{head}\n\n{}", text.trim_end()),
        None => head,
    }
}
