//! The HTTP/JSON API (routes in docs/api.md): axum on a Unix socket that is private to its
//! group before the first connection is accepted, and optionally on TCP with mutual TLS
//! ([`tls`]).
//!
//! Handlers only parse requests into wire types and call the core; every error leaves as the
//! one JSON error body. The caller (peer credentials on the socket, certificate CN and address
//! on TCP) goes with every mutation into its job and events.

mod console;
mod error;
mod handlers;
mod switches;
mod tls;

use std::future::IntoFuture;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::connect_info::Connected;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;
use tokio::sync::watch;

pub use error::ApiError;
pub use tls::TlsBound;

use crate::config::ApiConfig;
use crate::core::Core;
use crate::wire::Actor;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
struct AppState {
    core: Arc<Core>,
}

/// The peer credentials of a connection.
#[derive(Debug, Clone, Copy)]
struct Peer(Option<Actor>);

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Self(cred.map(|c| Actor {
            uid: Some(c.uid()),
            gid: Some(c.gid()),
            pid: c.pid(),
            cn: None,
            addr: None,
        }))
    }
}

/// Why the socket cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the socket.
    #[error("another labd is serving {0}")]
    InUse(PathBuf),
    /// The socket group does not exist.
    #[error("api.socket_group: no group named '{0}'")]
    NoGroup(String),
    /// A TLS file of `[api]` cannot be used.
    #[error("{key}: {}: {message}", path.display())]
    Tls {
        /// The configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// `api.tcp_listen` cannot be bound.
    #[error("api.tcp_listen: cannot listen on {addr}")]
    Tcp {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file system error.
    #[error("cannot create socket {path}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The API's listeners, bound and not yet serving.
#[derive(Debug)]
pub struct Listeners {
    /// The Unix socket.
    pub unix: UnixListener,
    /// The TCP listener with its TLS settings (`[api] tcp_listen`).
    pub tcp: Option<TlsBound>,
}

/// Bind the socket and, when configured, the TCP listener (its TLS files read first).
pub fn bind(api: &ApiConfig) -> Result<Listeners, BindError> {
    let tcp = api.tcp.as_ref().map(tls::bind).transpose()?;
    Ok(Listeners {
        unix: bind_socket(api)?,
        tcp,
    })
}

/// Create the socket with mode 0660 (and the configured group) before anything can connect.
fn bind_socket(api: &ApiConfig) -> Result<UnixListener, BindError> {
    let path = &api.socket;
    let io_err = |source| BindError::Io {
        path: path.clone(),
        source,
    };
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.clone()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let gid = match &api.socket_group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| BindError::NoGroup(name.clone()))?
                .gid
                .as_raw(),
        ),
        None => None,
    };
    // The umask makes the socket 0660 at creation, so no connection is ever accepted on a
    // more open socket; chmod below states the mode explicitly.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let listener = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(io_err)?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    Ok(listener)
}

/// Serve the API. When `stop_accepting` turns true, no new connection is accepted and the call
/// returns once open requests are answered (event streams end with `daemon.stopped`).
pub async fn serve(
    listeners: Listeners,
    core: Arc<Core>,
    stop_accepting: watch::Receiver<bool>,
) -> io::Result<()> {
    let app = router(AppState { core });
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let unix = axum::serve(
        listeners.unix,
        app.clone().into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(stopped(stop_accepting.clone()))
    .into_future();
    let Some(tcp) = listeners.tcp else {
        return unix.await;
    };
    // The same router behind the certificate check, which sets the actor.
    let tls_app = app.layer(axum::middleware::from_fn(tls::admit));
    let tcp = axum::serve(
        tcp.listen(stop_accepting.clone())?,
        tls_app.into_make_service_with_connect_info::<tls::TlsPeer>(),
    )
    .with_graceful_shutdown(stopped(stop_accepting))
    .into_future();
    let (unix, tcp) = tokio::join!(unix, tcp);
    unix.and(tcp)
}

/// Remove the socket file (at exit).
pub fn unlink(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove socket");
    }
}

fn router(state: AppState) -> Router {
    use handlers as h;
    let snap = "/v1/datasets/{name}/snapshots/{snap}";
    Router::new()
        .route("/v1", get(h::system_info))
        .route("/v1/health", get(h::health))
        .route("/v1/pools", get(h::pools))
        .route(
            "/v1/datasets",
            get(h::list_datasets).post(h::create_dataset),
        )
        .route(
            "/v1/datasets/{name}",
            get(h::get_dataset)
                .patch(h::set_properties)
                .delete(h::destroy_dataset),
        )
        .route(
            "/v1/datasets/{name}/snapshots",
            get(h::list_snapshots).post(h::create_snapshot),
        )
        .route(snap, axum::routing::delete(h::destroy_snapshot))
        .route(&format!("{snap}/explain"), get(h::explain))
        .route("/v1/datasets/{name}/plan", get(h::plan))
        .route("/v1/exports", get(h::list_exports))
        .route("/v1/exports/render", get(h::render_exports))
        .route("/v1/exports/apply", post(h::apply_exports))
        .route(
            "/v1/exports/{name}",
            get(h::get_export)
                .put(h::put_export)
                .delete(h::remove_export),
        )
        .route("/v1/templates", get(h::list_templates))
        .route("/v1/templates/{name}", get(h::get_template))
        .route("/v1/templates/{name}/command", get(h::template_command))
        .route("/v1/vms", get(h::list_vms).post(h::create_vm))
        .route("/v1/vms/{name}", get(h::get_vm).delete(h::destroy_vm))
        .route("/v1/vms/{name}/command", get(h::vm_command))
        .route("/v1/vms/{name}/start", post(h::start_vm))
        .route("/v1/vms/{name}/stop", post(h::stop_vm))
        .route("/v1/vms/{name}/restart", post(h::restart_vm))
        .route("/v1/vms/{name}/snapshots", post(h::snapshot_vm))
        .route("/v1/vms/{name}/clone", post(h::clone_vm))
        .route("/v1/vms/{name}/console", get(console::vm_console))
        .route("/v1/switches", get(switches::list).post(switches::create))
        .route(
            "/v1/switches/{name}",
            axum::routing::delete(switches::destroy),
        )
        .route("/v1/policies", get(h::list_policies))
        .route("/v1/policies/run", post(h::run_policies))
        .route("/v1/policies/{name}", get(h::get_policy))
        .route(&format!("{snap}/rollback"), post(h::rollback))
        .route(&format!("{snap}/clone"), post(h::clone_snapshot))
        .route(&format!("{snap}/hold"), post(h::hold))
        .route(&format!("{snap}/release"), post(h::release))
        .route("/v1/jobs", get(h::list_jobs))
        .route("/v1/jobs/{id}", get(h::get_job))
        .route("/v1/events", get(h::events))
        .route("/metrics", get(h::metrics))
        .fallback(h::no_route)
        .method_not_allowed_fallback(h::no_method)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .with_state(state)
}

/// Count every request by method, route pattern and status, with its latency.
async fn count_request(
    State(state): State<AppState>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.core.metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Serve only `GET /metrics` on a TCP listener (`[metrics] listen`) until `stop`.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    core: Arc<Core>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(handlers::metrics))
        .with_state(AppState { core });
    let mut stop = stop;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
}

/// A JSON body whose rejections are API errors naming the body.
#[derive(Debug)]
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request("body", "invalid_body", e.body_text())),
        }
    }
}

/// A query string whose rejections are API errors naming the query.
#[derive(Debug)]
struct Query<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Self(v)),
            Err(e) => Err(ApiError::bad_request(
                "query",
                "invalid_query",
                e.body_text(),
            )),
        }
    }
}
