//! `labctl status`: labd's version, API, root and drivers, then the pools.

use labd::wire::{Pool, SystemInfo};
use serde::Serialize;

use super::Ctx;
use crate::output;

/// What `status` prints in json/yaml mode: the two API objects side by side.
#[derive(Debug, Serialize)]
struct Status {
    system: SystemInfo,
    pools: Vec<Pool>,
}

/// Run `labctl status`.
pub async fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let system: SystemInfo = ctx.client.get("/v1").await?;
    let pools: Vec<Pool> = ctx.client.get("/v1/pools").await?;
    output::emit(ctx.format, &Status { system, pools }, render)
}

fn render(s: &Status) -> String {
    let mut rows = vec![
        ("version", s.system.version.clone()),
        ("api", s.system.api_version.clone()),
        ("root", s.system.root.clone()),
    ];
    for d in &s.system.drivers {
        let mut line = format!("{}: {}", d.subsystem, d.name);
        if !d.capabilities.is_empty() {
            line.push_str(&format!(" ({})", d.capabilities.join(", ")));
        }
        rows.push(("driver", line));
    }
    let mut pools = output::table(&["NAME", "HEALTH", "SIZE", "ALLOC", "FREE", "CAP"]);
    for p in &s.pools {
        pools.add_row(vec![
            p.name.clone(),
            p.health.clone(),
            output::size(p.size),
            output::size(p.allocated),
            output::size(p.free),
            format!("{}%", p.capacity_percent),
        ]);
    }
    format!(
        "{}\n\n{}",
        output::render(&output::key_values(rows)),
        output::render(&pools)
    )
}

#[cfg(test)]
mod tests {
    use labd::wire::DriverInfo;

    use super::*;

    #[test]
    fn status_shows_info_then_pools() {
        let s = Status {
            system: SystemInfo {
                version: "0.1.0".into(),
                api_version: "v1".into(),
                root: "tank/labd".into(),
                drivers: vec![DriverInfo {
                    subsystem: "zfs".into(),
                    name: "zfs-fuse".into(),
                    capabilities: vec!["a".into(), "b".into()],
                }],
            },
            pools: vec![Pool {
                name: "tank".into(),
                health: "ONLINE".into(),
                size: 256 << 20,
                allocated: 1536,
                free: (256 << 20) - 1536,
                capacity_percent: 0,
            }],
        };
        let text = render(&s);
        assert!(
            text.starts_with("version  0.1.0\napi      v1\nroot     tank/labd\n"),
            "{text}"
        );
        assert!(
            text.contains("driver   zfs: zfs-fuse (a, b)\n\nNAME  HEALTH"),
            "{text}"
        );
        assert!(
            text.ends_with("tank  ONLINE  256M  1.50K  256M  0%"),
            "{text}"
        );
    }
}
