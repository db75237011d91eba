//! `labctl template list|show|command`: the VM templates labd knows, and the exact commands a
//! VM made from one would run.

use labd::wire::{CommandPreview, Template};

use super::Ctx;
use crate::args::TemplateCommand;
use crate::client::{encode_query_value, encode_segment};
use crate::output;

/// Run `labctl template <cmd>`.
pub async fn run(ctx: &Ctx, cmd: TemplateCommand) -> anyhow::Result<()> {
    match cmd {
        TemplateCommand::List => {
            let templates: Vec<Template> = ctx.client.get("/v1/templates").await?;
            output::emit(ctx.format, &templates, |t| render_list(t))
        }
        TemplateCommand::Show { name } => {
            let path = format!("/v1/templates/{}", encode_segment(&name));
            let template: Template = ctx.client.get(&path).await?;
            output::emit(ctx.format, &template, render_one)
        }
        TemplateCommand::Command { name, driver, vm } => {
            let path = format!(
                "/v1/templates/{}/command?driver={}&vm={}",
                encode_segment(&name),
                encode_query_value(&driver),
                encode_query_value(&vm)
            );
            let preview: CommandPreview = ctx.client.get(&path).await?;
            output::emit(ctx.format, &preview, render_preview)
        }
    }
}

fn render_list(templates: &[Template]) -> String {
    let mut t = output::table(&[
        "NAME", "CPUS", "MEMORY", "LOADER", "DISKS", "NICS", "SOURCE",
    ]);
    for tpl in templates {
        t.add_row(vec![
            tpl.name.clone(),
            tpl.cpus.to_string(),
            output::size(tpl.memory),
            tpl.loader.clone(),
            tpl.disks.to_string(),
            tpl.nics.to_string(),
            tpl.source.clone(),
        ]);
    }
    output::render(&t)
}

fn render_one(t: &Template) -> String {
    let head = output::render(&output::key_values([
        ("name", t.name.clone()),
        ("description", t.description.clone()),
        ("source", t.source.clone()),
        ("cpus", t.cpus.to_string()),
        ("memory", output::size(t.memory)),
        ("loader", t.loader.clone()),
        ("disks", t.disks.to_string()),
        ("nics", t.nics.to_string()),
    ]));
    match &t.text {
        Some(text) => format!("{head}\n\n{}", text.trim_end()),
        None => head,
    }
}

/// Quote an argument the way a POSIX shell would need it (display only; labd never runs a
/// shell).
fn quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./_-".contains(c));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// One `# when` line and one quoted command line per command (also `labctl vm command`).
pub(super) fn render_preview(p: &CommandPreview) -> String {
    let mut out = Vec::new();
    for c in &p.commands {
        out.push(format!("# {}", c.when));
        out.push(
            c.argv
                .iter()
                .map(|a| quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use labd::wire::PreviewCommand;

    #[test]
    fn preview_is_one_quoted_line_per_command() {
        let p = CommandPreview {
            driver: "bhyve".into(),
            vm: "web".into(),
            commands: vec![PreviewCommand {
                when: "start".into(),
                argv: vec![
                    "bhyve".into(),
                    "-s".into(),
                    "0,hostbridge".into(),
                    "a b".into(),
                ],
            }],
        };
        assert_eq!(render_preview(&p), "# start\nbhyve -s 0,hostbridge 'a b'");
    }
}
