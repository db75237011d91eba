//! `labctl switch create|list|destroy`: labd's virtual switches. Switch changes answer at
//! once (no job): the switch created, or nothing for a destroy.

use labd::wire::{CreateSwitch, Switch};

use super::Ctx;
use crate::args::SwitchCommand;
use crate::client::encode_segment;
use crate::output;

/// Run `labctl switch <cmd>`.
pub async fn run(ctx: &Ctx, cmd: SwitchCommand) -> anyhow::Result<()> {
    let client = &ctx.client;
    match cmd {
        SwitchCommand::List => {
            let switches: Vec<Switch> = client.get("/v1/switches").await?;
            output::emit(ctx.format, &switches, |s| render_list(s))
        }
        SwitchCommand::Create {
            name,
            uplink,
            mtu,
            bridge,
        } => {
            let req = CreateSwitch {
                name,
                uplink,
                mtu,
                bridge,
            };
            let switch: Switch = client.post("/v1/switches", &req).await?;
            if ctx.quiet {
                return Ok(());
            }
            output::emit(ctx.format, &switch, |s| {
                render_list(std::slice::from_ref(s))
            })
        }
        SwitchCommand::Destroy { name } => {
            let path = format!("/v1/switches/{}", encode_segment(&name));
            client.delete_no_content(&path).await?;
            if !ctx.quiet {
                output::write_stderr(&format!("switch {name} destroyed"));
            }
            Ok(())
        }
    }
}

fn render_list(switches: &[Switch]) -> String {
    let mut t = output::table(&[
        "NAME", "BRIDGE", "UPLINK", "MTU", "STATE", "MANAGED", "PORTS",
    ]);
    for s in switches {
        t.add_row(vec![
            s.name.clone(),
            s.bridge.clone(),
            s.uplink.clone().unwrap_or_else(|| "-".to_owned()),
            s.mtu.map_or_else(|| "-".to_owned(), |m| m.to_string()),
            s.state.clone(),
            output::yes_no(s.managed).to_owned(),
            if s.ports.is_empty() {
                "-".to_owned()
            } else {
                s.ports.join(",")
            },
        ]);
    }
    output::render(&t)
}
