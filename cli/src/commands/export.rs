//! `labctl export …`: edit the NFS export definitions (`add`, `remove`), read them (`list`,
//! `show`), preview the server's file (`render`) and apply it (a job, see [`crate::jobs`]).
//!
//! `add` and `remove` read the definition, change its client list here and write it back
//! whole (`PUT`), so labd validates the result as one definition. Nothing reaches the NFS
//! server until `apply`, which the hint on stderr says.

use labd::wire::{Export, ExportClient, Job, PutExport};
use serde::Serialize;

use super::Ctx;
use crate::args::{ExportCommand, ExportFormat, OutputFormat};
use crate::client::{Client, encode_query_value, export_path, is_not_found};
use crate::{jobs, output};

/// Said on stderr after a definition changed.
const APPLY_HINT: &str = "not live until: labctl export apply";

/// Defaults labd applies to a client option that is not set.
const DEFAULT_ACCESS: &str = "rw";
const DEFAULT_MAPROOT: &str = "nobody";
const DEFAULT_SEC: &str = "sys";

/// Run `labctl export <cmd>`.
pub async fn run(ctx: &Ctx, cmd: ExportCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match cmd {
        ExportCommand::List => {
            let exports: Vec<Export> = client.get("/v1/exports").await?;
            output::emit(ctx.format, &exports, |e| render_list(e))
        }
        ExportCommand::Show { name } => {
            let export: Export = client.get(&export_path(&name)).await?;
            output::emit(ctx.format, &export, render_export)
        }
        ExportCommand::Add {
            name,
            clients,
            ro,
            maproot,
            mapall,
            sec,
        } => {
            let options = ExportClient {
                address: String::new(),
                access: ro.then(|| "ro".to_owned()),
                maproot,
                mapall,
                sec: (!sec.is_empty()).then_some(sec),
            };
            let current = existing_clients(client, &name).await?;
            let merged = add_clients(current, &clients, &options);
            let export = put(client, &name, merged).await?;
            output::emit(ctx.format, &export, render_export)?;
            hint(ctx);
            Ok(())
        }
        ExportCommand::Remove { name, clients } if clients.is_empty() => {
            client.delete_no_content(&export_path(&name)).await?;
            hint(ctx);
            Ok(())
        }
        ExportCommand::Remove { name, clients } => {
            let export: Export = client.get(&export_path(&name)).await?;
            let remaining = remove_clients(export.clients, &clients)
                .map_err(|absent| anyhow::anyhow!("export {name} has no client {absent}"))?;
            if remaining.is_empty() {
                client.delete_no_content(&export_path(&name)).await?;
            } else {
                let export = put(client, &name, remaining).await?;
                output::emit(ctx.format, &export, render_export)?;
            }
            hint(ctx);
            Ok(())
        }
        ExportCommand::Render { format } => {
            let text = client.get_text(&render_path(format)).await?;
            match ctx.format {
                OutputFormat::Table => Ok(output::write_stdout_raw(&text)?),
                OutputFormat::Json | OutputFormat::Yaml => {
                    let rendered = Rendered {
                        format: format.map(ExportFormat::as_str),
                        text,
                    };
                    output::emit(ctx.format, &rendered, |_| String::new())
                }
            }
        }
        ExportCommand::Apply => {
            let job: Job = client.post_empty("/v1/exports/apply").await?;
            jobs::run(client, ctx.report(), job).await
        }
    }
}

/// What `export render` prints in json/yaml mode; `format` is null when labd chose (its
/// configured server).
#[derive(Debug, Serialize)]
struct Rendered {
    format: Option<&'static str>,
    text: String,
}

/// `/v1/exports/render[?format=…]`.
fn render_path(format: Option<ExportFormat>) -> String {
    match format {
        Some(f) => format!(
            "/v1/exports/render?format={}",
            encode_query_value(f.as_str())
        ),
        None => "/v1/exports/render".to_owned(),
    }
}

/// The clients of the export of `name`, none when it has no definition yet.
async fn existing_clients(client: &Client, name: &str) -> anyhow::Result<Vec<ExportClient>> {
    match client.get::<Export>(&export_path(name)).await {
        Ok(export) => Ok(export.clients),
        Err(e) if is_not_found(&e) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Write the whole definition of `name`.
async fn put(client: &Client, name: &str, clients: Vec<ExportClient>) -> anyhow::Result<Export> {
    let req = PutExport { clients };
    Ok(client.put(&export_path(name), &req).await?)
}

/// The hint that a changed definition is not served yet (not with `-q`).
fn hint(ctx: &Ctx) {
    if !ctx.quiet {
        output::write_stderr(APPLY_HINT);
    }
}

/// `current` with one client per address of `addresses`, each with `options`: a client
/// already there is replaced where it stands, a new one is appended (an address given twice
/// is added once).
fn add_clients(
    mut current: Vec<ExportClient>,
    addresses: &[String],
    options: &ExportClient,
) -> Vec<ExportClient> {
    for address in addresses {
        let new = ExportClient {
            address: address.clone(),
            ..options.clone()
        };
        match current.iter_mut().find(|c| c.address == *address) {
            Some(existing) => *existing = new,
            None => current.push(new),
        }
    }
    current
}

/// `current` without the clients at `addresses`; the first address it does not have is the
/// error (nothing is removed then).
fn remove_clients(
    current: Vec<ExportClient>,
    addresses: &[String],
) -> Result<Vec<ExportClient>, String> {
    if let Some(absent) = addresses
        .iter()
        .find(|a| !current.iter().any(|c| c.address == **a))
    {
        return Err(absent.clone());
    }
    Ok(current
        .into_iter()
        .filter(|c| !addresses.contains(&c.address))
        .collect())
}

/// The security flavors of a client, defaults filled in.
fn sec_flavors(c: &ExportClient) -> Vec<&str> {
    match &c.sec {
        Some(sec) if !sec.is_empty() => sec.iter().map(String::as_str).collect(),
        _ => vec![DEFAULT_SEC],
    }
}

/// The options of a client with the defaults filled in: access, then `maproot=` (or
/// `mapall=` when set; both when labd has both), then `sec=` when `with_default_sec` or
/// not the default.
fn client_options(c: &ExportClient, with_default_sec: bool, sec_separator: &str) -> Vec<String> {
    let mut options = vec![c.access.as_deref().unwrap_or(DEFAULT_ACCESS).to_owned()];
    match (&c.maproot, &c.mapall) {
        (maproot, Some(mapall)) => {
            if let Some(maproot) = maproot {
                options.push(format!("maproot={maproot}"));
            }
            options.push(format!("mapall={mapall}"));
        }
        (maproot, None) => options.push(format!(
            "maproot={}",
            maproot.as_deref().unwrap_or(DEFAULT_MAPROOT)
        )),
    }
    let sec = sec_flavors(c);
    if with_default_sec || sec != [DEFAULT_SEC] {
        options.push(format!("sec={}", sec.join(sec_separator)));
    }
    options
}

/// The CLIENTS column: `192.168.1.20(rw,maproot=root) 192.168.1.0/24(ro,mapall=1000:1000)`,
/// with `sec=krb5:krb5i` when the flavors are not the default; `-` when there is none.
fn clients_summary(clients: &[ExportClient]) -> String {
    if clients.is_empty() {
        return "-".to_owned();
    }
    clients
        .iter()
        .map(|c| format!("{}({})", c.address, client_options(c, false, ":").join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `client:` line of `export show`: `ADDR access=rw maproot=root sec=sys`.
fn client_line(c: &ExportClient) -> String {
    let mut options = client_options(c, true, ",");
    options[0] = format!("access={}", options[0]);
    format!("client: {} {}", c.address, options.join(" "))
}

fn mountpoint(e: &Export) -> &str {
    e.mountpoint.as_deref().unwrap_or("-")
}

fn render_list(exports: &[Export]) -> String {
    let mut t = output::table(&["NAME", "DATASET", "MOUNTPOINT", "CLIENTS"]);
    for e in exports {
        t.add_row(vec![
            e.name.clone(),
            e.dataset.clone(),
            mountpoint(e).to_owned(),
            clients_summary(&e.clients),
        ]);
    }
    output::render(&t)
}

fn render_export(e: &Export) -> String {
    let mut lines = vec![
        format!("name: {}", e.name),
        format!("dataset: {}", e.dataset),
        format!("mountpoint: {}", mountpoint(e)),
    ];
    lines.extend(e.clients.iter().map(client_line));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn client(address: &str) -> ExportClient {
        ExportClient {
            address: address.into(),
            access: None,
            maproot: None,
            mapall: None,
            sec: None,
        }
    }

    fn options(access: Option<&str>, maproot: Option<&str>, mapall: Option<&str>) -> ExportClient {
        ExportClient {
            address: String::new(),
            access: access.map(str::to_owned),
            maproot: maproot.map(str::to_owned),
            mapall: mapall.map(str::to_owned),
            sec: None,
        }
    }

    fn addresses(clients: &[ExportClient]) -> Vec<&str> {
        clients.iter().map(|c| c.address.as_str()).collect()
    }

    fn export(clients: Vec<ExportClient>) -> Export {
        Export {
            name: "photos".into(),
            dataset: "tank/labd/photos".into(),
            mountpoint: Some("/tank/labd/photos".into()),
            clients,
        }
    }

    #[test]
    fn add_appends_new_clients_in_order() {
        let current = vec![client("192.168.1.20")];
        let ro = options(Some("ro"), None, Some("1000:1000"));
        let merged = add_clients(current, &["192.168.1.0/24".into(), "fd00::/64".into()], &ro);
        assert_eq!(
            addresses(&merged),
            ["192.168.1.20", "192.168.1.0/24", "fd00::/64"]
        );
        assert_eq!(merged[0], client("192.168.1.20"));
        for c in &merged[1..] {
            assert_eq!(c.access.as_deref(), Some("ro"));
            assert_eq!(c.mapall.as_deref(), Some("1000:1000"));
            assert_eq!(c.maproot, None);
        }
    }

    #[test]
    fn add_replaces_a_client_with_the_same_address_in_place() {
        let mut first = client("192.168.1.20");
        first.access = Some("ro".into());
        first.sec = Some(vec!["krb5".into()]);
        let current = vec![first, client("192.168.1.21")];
        let merged = add_clients(
            current,
            &["192.168.1.20".into()],
            &options(None, Some("root"), None),
        );
        assert_eq!(addresses(&merged), ["192.168.1.20", "192.168.1.21"]);
        // The new options replace the old ones as a whole: no access, no sec left over.
        let mut expected = client("192.168.1.20");
        expected.maproot = Some("root".into());
        assert_eq!(merged[0], expected);
        assert_eq!(merged[1], client("192.168.1.21"));
    }

    #[test]
    fn add_to_nothing_and_twice_the_same_address() {
        let merged = add_clients(
            Vec::new(),
            &["10.0.0.1".into(), "10.0.0.1".into()],
            &options(None, None, None),
        );
        assert_eq!(merged, [client("10.0.0.1")]);
    }

    #[test]
    fn remove_drops_the_named_clients() {
        let current = vec![client("a"), client("b"), client("c")];
        let left = remove_clients(current.clone(), &["a".into(), "c".into()]).unwrap();
        assert_eq!(left, [client("b")]);
        let left = remove_clients(current, &["a".into(), "b".into(), "c".into()]).unwrap();
        assert!(left.is_empty());
    }

    #[test]
    fn remove_refuses_an_address_the_export_does_not_have() {
        let current = vec![client("a"), client("b")];
        assert_eq!(
            remove_clients(current, &["a".into(), "x".into()]).unwrap_err(),
            "x"
        );
    }

    #[test]
    fn clients_column_shows_access_and_identity_with_defaults() {
        let mut docker = client("192.168.1.20");
        docker.access = Some("rw".into());
        docker.maproot = Some("root".into());
        let lan = ExportClient {
            address: "192.168.1.0/24".into(),
            ..options(Some("ro"), None, Some("1000:1000"))
        };
        assert_eq!(
            clients_summary(&[docker, lan]),
            "192.168.1.20(rw,maproot=root) 192.168.1.0/24(ro,mapall=1000:1000)"
        );
        assert_eq!(
            clients_summary(&[client("10.0.0.1")]),
            "10.0.0.1(rw,maproot=nobody)"
        );
        assert_eq!(clients_summary(&[]), "-");
    }

    #[test]
    fn clients_column_shows_sec_only_when_not_the_default() {
        let mut c = client("10.0.0.1");
        c.sec = Some(vec!["sys".into()]);
        assert_eq!(clients_summary(&[c.clone()]), "10.0.0.1(rw,maproot=nobody)");
        c.sec = Some(vec!["krb5".into(), "krb5i".into()]);
        assert_eq!(
            clients_summary(&[c]),
            "10.0.0.1(rw,maproot=nobody,sec=krb5:krb5i)"
        );
    }

    #[test]
    fn list_has_one_row_per_export() {
        let mut docker = client("192.168.1.20");
        docker.maproot = Some("root".into());
        let mut unmounted = export(vec![client("10.0.0.1")]);
        unmounted.name = "media/music".into();
        unmounted.dataset = "tank/labd/media/music".into();
        unmounted.mountpoint = None;
        let text = render_list(&[export(vec![docker]), unmounted]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME         DATASET                MOUNTPOINT         CLIENTS",
                "photos       tank/labd/photos       /tank/labd/photos  192.168.1.20(rw,maproot=root)",
                "media/music  tank/labd/media/music  -                  10.0.0.1(rw,maproot=nobody)",
            ]
        );
    }

    #[test]
    fn show_has_one_line_per_client_with_every_option() {
        let mut docker = client("192.168.1.20");
        docker.maproot = Some("root".into());
        let lan = ExportClient {
            address: "192.168.1.0/24".into(),
            sec: Some(vec!["krb5p".into(), "sys".into()]),
            ..options(Some("ro"), None, Some("1000:1000"))
        };
        assert_eq!(
            render_export(&export(vec![docker, lan])),
            "name: photos\n\
             dataset: tank/labd/photos\n\
             mountpoint: /tank/labd/photos\n\
             client: 192.168.1.20 access=rw maproot=root sec=sys\n\
             client: 192.168.1.0/24 access=ro mapall=1000:1000 sec=krb5p,sys"
        );
    }

    #[test]
    fn render_path_takes_the_format() {
        assert_eq!(render_path(None), "/v1/exports/render");
        assert_eq!(
            render_path(Some(ExportFormat::Ganesha)),
            "/v1/exports/render?format=ganesha"
        );
    }

    #[test]
    fn rendered_json_has_format_and_text() {
        let r = Rendered {
            format: Some("linux"),
            text: "/x 10.0.0.1(rw)\n".into(),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"format": "linux", "text": "/x 10.0.0.1(rw)\n"})
        );
    }
}
