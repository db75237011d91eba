//! `GET /v1/vms/{name}/console`: attach to a VM's serial console over the API connection.
//!
//! The client asks for an HTTP/1.1 upgrade (`Connection: Upgrade`, `Upgrade: labd-console`);
//! labd answers `101 Switching Protocols` and the connection becomes the raw console: bytes
//! from the guest one way, keystrokes the other. Any number of clients may attach at once
//! ([`crate::core::console::Console`]). Errors (no such VM, not running, no upgrade asked
//! for) are ordinary JSON error answers before the switch.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;

use super::{AppState, error::ApiError};

/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "labd-console";

/// The handler.
pub(super) async fn vm_console(
    State(st): State<AppState>,
    Path(name): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asked {
        return Err(ApiError::bad_request(
            "upgrade",
            "upgrade_required",
            format!(
                "the console is a connection upgrade: send `Connection: Upgrade` and `Upgrade: {PROTOCOL}`"
            ),
        ));
    }
    let (console, ended) = st.core.vm_console(&name).await?;
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => console.serve_client(TokioIo::new(upgraded), ended).await,
            Err(e) => tracing::warn!(vm = %name, error = %e, "console upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(resp)
}
