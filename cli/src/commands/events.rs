//! `labctl events`: follow `GET /v1/events` (server-sent events) and print each event as it
//! arrives, until labd ends the stream.
//!
//! labd disconnects a subscriber that falls behind after sending it a `lagged` event; labctl
//! then fails (exit 1), since the events it printed are incomplete.

use labd::wire::Event;

use super::Ctx;
use crate::args::OutputFormat;
use crate::client::encode_query_value;
use crate::output;
use crate::sse::{SseMessage, SseParser};

const PATH: &str = "/v1/events";

/// Events were missed: labd said so with a `lagged` event.
#[derive(Debug, thiserror::Error)]
#[error("event stream lagged: {0}")]
struct Lagged(String);

/// The stream's path with the server-side filter.
fn path(kinds: &[String], resource: Option<&str>) -> String {
    let mut query = Vec::new();
    if !kinds.is_empty() {
        query.push(format!("kind={}", encode_query_value(&kinds.join(","))));
    }
    if let Some(r) = resource {
        query.push(format!("resource={}", encode_query_value(r)));
    }
    if query.is_empty() {
        PATH.to_owned()
    } else {
        format!("{PATH}?{}", query.join("&"))
    }
}

/// Run `labctl events`, optionally filtered by kinds and a resource (labd filters).
pub async fn run(ctx: &Ctx, kinds: &[String], resource: Option<&str>) -> anyhow::Result<()> {
    let path = path(kinds, resource);
    let mut resp = ctx.client.stream(&path).await?;
    let mut parser = SseParser::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return Ok(()),
            Err(e) => return Err(ctx.client.stream_error(&path, &e).into()),
        };
        for msg in parser.push(&chunk) {
            handle(ctx.format, &msg)?;
        }
    }
}

fn handle(format: OutputFormat, msg: &SseMessage) -> anyhow::Result<()> {
    if msg.event == "lagged" {
        return Err(Lagged(msg.data.clone()).into());
    }
    let event: Event = match serde_json::from_str(&msg.data) {
        Ok(event) => event,
        Err(e) => {
            output::write_stderr(&format!(
                "labctl: skipping an undecodable '{}' event: {e}",
                msg.event
            ));
            return Ok(());
        }
    };
    let text = match format {
        OutputFormat::Table => line(&event),
        OutputFormat::Json => serde_json::to_string(&event)?,
        OutputFormat::Yaml => format!("---\n{}", output::yaml(&event)?),
    };
    output::write_stdout(&text)?;
    Ok(())
}

/// `<time> <kind> <resource> [uid=N | cn=NAME] <data as compact JSON>`.
fn line(e: &Event) -> String {
    let mut s = format!("{} {} {}", output::time(e.time), e.kind, e.resource);
    if let Some(a) = &e.actor {
        match (a.uid, a.cn) {
            (Some(uid), _) => s.push_str(&format!(" uid={uid}")),
            (None, Some(cn)) => s.push_str(&format!(" cn={cn}")),
            (None, None) => {}
        }
    }
    s.push(' ');
    s.push_str(&e.data.to_string());
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[test]
    fn filters_go_in_the_query() {
        assert_eq!(super::path(&[], None), "/v1/events");
        let kinds = ["job.".to_owned(), "snapshot.created".to_owned()];
        assert_eq!(
            super::path(&kinds, Some("tank/labd/photos")),
            "/v1/events?kind=job.%2Csnapshot.created&resource=tank%2Flabd%2Fphotos"
        );
    }

    use super::*;

    fn event(actor: bool) -> Event {
        let mut v = serde_json::json!({
            "seq": 3,
            "time": "2026-11-25T19:00:00.25Z",
            "kind": "dataset.created",
            "resource": "tank/labd/photos",
            "data": {"properties": {"quota": "1G"}},
        });
        if actor {
            v["actor"] = serde_json::json!({"uid": 1001, "gid": 1001});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn table_line_has_time_kind_resource_uid_and_data() {
        assert_eq!(
            line(&event(true)),
            r#"2026-11-25T19:00:00Z dataset.created tank/labd/photos uid=1001 {"properties":{"quota":"1G"}}"#
        );
        assert_eq!(
            line(&event(false)),
            r#"2026-11-25T19:00:00Z dataset.created tank/labd/photos {"properties":{"quota":"1G"}}"#
        );
    }

    #[test]
    fn lagged_is_an_error() {
        let msg = SseMessage {
            event: "lagged".into(),
            id: None,
            data: "5 events missed; reconnect and re-read state".into(),
        };
        let err = handle(OutputFormat::Table, &msg).unwrap_err();
        assert_eq!(
            err.to_string(),
            "event stream lagged: 5 events missed; reconnect and re-read state"
        );
    }
}
