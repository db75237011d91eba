//! HTTP/JSON client of labd's API over its Unix socket, or over TCP with mutual TLS.
//!
//! One [`reqwest::Client`] is bound to the socket with `ClientBuilder::unix_socket` (URLs use
//! the placeholder host `labd`), or talks to `https://host:port` trusting only the given CA
//! and presenting the given client certificate (rustls with ring). Every answer is decoded into a `labd::wire` type or turned
//! into a [`ClientError`]: labd's own error body becomes [`ClientError::Api`] so the caller
//! prints labd's message, field and code as they are.

use std::error::Error as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use labd::wire::{ErrorBody, ErrorInfo};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Base URL of every request on the socket; the host is a placeholder since the socket is
/// fixed.
const SOCKET_URL: &str = "http://labd";

/// Where labd's API is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The Unix socket at this path.
    Socket(PathBuf),
    /// `https://host:port`, mutual TLS.
    Tls {
        /// The base URL.
        url: String,
        /// PEM file of the CA that signed labd's certificate.
        ca: PathBuf,
        /// PEM file of this client's certificate.
        cert: PathBuf,
        /// PEM file of this client's private key.
        key: PathBuf,
    },
}

/// Longest wait for an ordinary answer. labd answers `?wait=1` polls within about a second
/// and runs long work as jobs, so only a stuck daemon hits this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket or the URL, or the TLS handshake failed.
    #[error("cannot reach labd at {target}: {cause}")]
    Connect {
        /// The socket path or the URL.
        target: String,
        /// The innermost cause (`No such file or directory`, `Connection refused`, …).
        cause: String,
    },
    /// The TLS handshake with labd failed (certificate refused by either side).
    #[error("TLS with labd at {target} failed: {cause}")]
    Tls {
        /// The URL.
        target: String,
        /// rustls' reason (`received fatal alert: UnknownCA`, `invalid peer certificate`, …).
        cause: String,
    },
    /// labd answered with its error body.
    #[error("{}", api_message(.0))]
    Api(ErrorInfo),
    /// labd (or something on the socket) answered an error without labd's error body.
    #[error("labd answered {status}{}", body_suffix(body))]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The body as text (possibly empty).
        body: String,
    },
    /// A successful answer that is not the expected JSON.
    #[error("unexpected answer to {method} {path}")]
    Decode {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Any other transport failure (timeout, connection reset, …).
    #[error("request {method} {path} failed: {cause}")]
    Transport {
        /// Request method.
        method: Method,
        /// Request path.
        path: String,
        /// The innermost cause.
        cause: String,
    },
}

fn api_message(info: &ErrorInfo) -> String {
    let mut s = info.message.clone();
    if let Some(field) = &info.field {
        s.push_str(&format!(" (field: {field})"));
    }
    s.push_str(&format!(" [{}]", info.code));
    s
}

fn body_suffix(body: &str) -> String {
    let body = body.trim();
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

/// The innermost message of an error chain: reqwest wraps the interesting `io::Error` in
/// several layers whose messages only repeat the URL.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The TLS error under a transport error, if any: rustls' error sits inside an `io::Error`,
/// whose `source` skips it.
fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        cur = err.source();
    }
    None
}

/// Whether a transport error means nobody accepted the connection.
fn is_connect_error(e: &reqwest::Error) -> bool {
    if e.is_connect() {
        return true;
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::PermissionDenied
            );
        }
        cur = err.source();
    }
    false
}

/// Percent-encode one path segment: everything but `A-Z a-z 0-9 - . _ ~ :` is encoded, so a
/// dataset name's '/' becomes `%2F` and stays inside its segment.
pub fn encode_segment(segment: &str) -> String {
    percent_encode(segment, |b| b == b':')
}

/// Percent-encode one query value: everything but the unreserved `A-Z a-z 0-9 - . _ ~` is
/// encoded, so an RFC 3339 time keeps its ':' and '+' as `%3A` and `%2B` (a raw '+' would
/// read as a space).
pub fn encode_query_value(value: &str) -> String {
    percent_encode(value, |_| false)
}

/// Percent-encode every byte but the unreserved ones and those `also_keep` accepts.
fn percent_encode(text: &str, also_keep: impl Fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') || also_keep(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of one labd.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The base URL of every request.
    base: String,
    /// The socket path or URL, for errors.
    target: String,
}

impl Client {
    /// A client of labd at `endpoint` (nothing is connected yet; TLS files are read now).
    pub fn new(endpoint: &Endpoint) -> anyhow::Result<Self> {
        // reqwest's rustls needs a process-wide provider; ring, as labd (no C crypto).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder =
            reqwest::Client::builder().user_agent(concat!("labctl/", env!("CARGO_PKG_VERSION")));
        let (builder, base, target) = match endpoint {
            Endpoint::Socket(socket) => (
                builder.unix_socket(socket.as_path()),
                SOCKET_URL.to_owned(),
                socket.display().to_string(),
            ),
            Endpoint::Tls { url, ca, cert, key } => {
                let read = |flag: &str, path: &Path| {
                    std::fs::read(path)
                        .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
                };
                let cas = reqwest::Certificate::from_pem_bundle(&read("--ca", ca)?)
                    .map_err(|e| anyhow::anyhow!("--ca {}: {}", ca.display(), root_cause(&e)))?;
                if cas.is_empty() {
                    anyhow::bail!("--ca {}: no certificate in the file", ca.display());
                }
                let mut pem = read("--cert", cert)?;
                pem.push(b'\n');
                pem.extend(read("--key", key)?);
                let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!(
                        "--cert {} / --key {}: {}",
                        cert.display(),
                        key.display(),
                        root_cause(&e)
                    )
                })?;
                let builder = builder
                    .tls_certs_only(cas)
                    .identity(identity)
                    .https_only(true);
                let base = url.trim_end_matches('/').to_owned();
                (builder, base, url.clone())
            }
        };
        let http = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {}", root_cause(&e)))?;
        Ok(Self { http, base, target })
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(self.request(Method::GET, path), Method::GET, path)
            .await?;
        decode(resp, Method::GET, path).await
    }

    /// `POST path` with a JSON body, decoded.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self.request(Method::POST, path).json(body);
        let resp = self.send(req, Method::POST, path).await?;
        decode(resp, Method::POST, path).await
    }

    /// `PATCH path` with a JSON body, decoded.
    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self.request(Method::PATCH, path).json(body);
        let resp = self.send(req, Method::PATCH, path).await?;
        decode(resp, Method::PATCH, path).await
    }

    /// `POST path` without a body, decoded.
    pub async fn post_empty<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(self.request(Method::POST, path), Method::POST, path)
            .await?;
        decode(resp, Method::POST, path).await
    }

    /// `PUT path` with a JSON body, decoded.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let req = self.request(Method::PUT, path).json(body);
        let resp = self.send(req, Method::PUT, path).await?;
        decode(resp, Method::PUT, path).await
    }

    /// `GET path` of a `text/plain` answer, as text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self
            .send(self.request(Method::GET, path), Method::GET, path)
            .await?;
        resp.text().await.map_err(|e| ClientError::Transport {
            method: Method::GET,
            path: path.to_owned(),
            cause: root_cause(&e),
        })
    }

    /// `DELETE path` answered without a body (`204 No Content`); whatever body comes is
    /// ignored.
    pub async fn delete_no_content(&self, path: &str) -> Result<(), ClientError> {
        self.send(self.request(Method::DELETE, path), Method::DELETE, path)
            .await?;
        Ok(())
    }

    /// `DELETE path` (the query is part of `path`), decoded.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(self.request(Method::DELETE, path), Method::DELETE, path)
            .await?;
        decode(resp, Method::DELETE, path).await
    }

    /// `GET path` without a timeout, for a streaming answer (server-sent events). Error
    /// statuses are turned into errors; the caller reads the body with `Response::chunk`.
    pub async fn stream(&self, path: &str) -> Result<Response, ClientError> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        self.send(req, Method::GET, path).await
    }

    /// `GET path` asking to switch the connection to `protocol` (HTTP/1.1 upgrade); the
    /// switched connection, or labd's error.
    pub async fn upgrade(
        &self,
        path: &str,
        protocol: &'static str,
    ) -> Result<reqwest::Upgraded, ClientError> {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::CONNECTION, "upgrade")
            .header(reqwest::header::UPGRADE, protocol);
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(Method::GET, path, &e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.status_error(resp, Method::GET, path).await);
        }
        resp.upgrade()
            .await
            .map_err(|e| self.transport_error(Method::GET, path, &e))
    }

    /// The error of a failed read from a streaming answer.
    pub fn stream_error(&self, path: &str, e: &reqwest::Error) -> ClientError {
        self.transport_error(Method::GET, path, e)
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .timeout(REQUEST_TIMEOUT)
    }

    /// Send, and turn error statuses into [`ClientError::Api`] or [`ClientError::Status`].
    async fn send(
        &self,
        req: RequestBuilder,
        method: Method,
        path: &str,
    ) -> Result<Response, ClientError> {
        let resp = req
            .send()
            .await
            .map_err(|e| self.transport_error(method.clone(), path, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(self.status_error(resp, method, path).await)
    }

    /// The error an unsuccessful answer stands for: labd's error body, or the status.
    async fn status_error(&self, resp: Response, method: Method, path: &str) -> ClientError {
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return self.transport_error(method, path, &e),
        };
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ClientError::Api(b.error),
            Err(_) => ClientError::Status {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
        }
    }

    fn transport_error(&self, method: Method, path: &str, e: &reqwest::Error) -> ClientError {
        if let Some(tls) = tls_error(e) {
            ClientError::Tls {
                target: self.target.clone(),
                cause: tls.to_string(),
            }
        } else if is_connect_error(e) {
            ClientError::Connect {
                target: self.target.clone(),
                cause: root_cause(e),
            }
        } else {
            let cause = if e.is_timeout() {
                "timed out".to_owned()
            } else {
                root_cause(e)
            };
            ClientError::Transport {
                method,
                path: path.to_owned(),
                cause,
            }
        }
    }
}

async fn decode<T: DeserializeOwned>(
    resp: Response,
    method: Method,
    path: &str,
) -> Result<T, ClientError> {
    let body = resp.bytes().await.map_err(|e| ClientError::Transport {
        method: method.clone(),
        path: path.to_owned(),
        cause: root_cause(&e),
    })?;
    serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
        method,
        path: path.to_owned(),
        source,
    })
}

/// Path of a dataset: `/v1/datasets/{name}` with the name encoded.
pub fn dataset_path(name: &str) -> String {
    format!("/v1/datasets/{}", encode_segment(name))
}

/// Path of a snapshot: `/v1/datasets/{name}/snapshots/{snap}`.
pub fn snapshot_path(dataset: &str, snapshot: &str) -> String {
    format!(
        "{}/snapshots/{}",
        dataset_path(dataset),
        encode_segment(snapshot)
    )
}

/// Path of an export: `/v1/exports/{name}` with the name encoded like a dataset's. The
/// names `render` and `apply` get their first letter percent-encoded so that they reach the
/// export of that dataset rather than the routes `/v1/exports/render` and `/v1/exports/apply`
/// (labd routes on the raw path and decodes the name afterwards).
pub fn export_path(name: &str) -> String {
    let segment = encode_segment(name);
    let segment = match segment.as_str() {
        "render" | "apply" => format!("%{:02X}{}", segment.as_bytes()[0], &segment[1..]),
        _ => segment,
    };
    format!("/v1/exports/{segment}")
}

/// Whether labd answered "not found" (its error code `not_found`, or a bare 404).
pub fn is_not_found(e: &ClientError) -> bool {
    match e {
        ClientError::Api(info) => info.code == "not_found",
        ClientError::Status { status, .. } => *status == StatusCode::NOT_FOUND,
        _ => false,
    }
}

/// A query string from the flags that are set, e.g. `?recursive=true&force=true`; empty when
/// none is.
pub fn flags_query(flags: &[(&str, bool)]) -> String {
    let set: Vec<String> = flags
        .iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| format!("{name}=true"))
        .collect();
    if set.is_empty() {
        String::new()
    } else {
        format!("?{}", set.join("&"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn slashes_are_encoded_inside_the_segment() {
        assert_eq!(encode_segment("photos"), "photos");
        assert_eq!(encode_segment("tank/labd/photos"), "tank%2Flabd%2Fphotos");
        assert_eq!(encode_segment("a-b_c.d:e"), "a-b_c.d:e");
        assert_eq!(encode_segment("a b@c%"), "a%20b%40c%25");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn query_values_encode_everything_but_unreserved() {
        assert_eq!(encode_query_value("abc-1.2_3~"), "abc-1.2_3~");
        assert_eq!(
            encode_query_value("2026-11-25T19:00:00+01:00"),
            "2026-11-25T19%3A00%3A00%2B01%3A00"
        );
        assert_eq!(encode_query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }

    #[test]
    fn paths_of_datasets_and_snapshots() {
        assert_eq!(dataset_path("tank/labd/a"), "/v1/datasets/tank%2Flabd%2Fa");
        assert_eq!(
            snapshot_path("tank/labd/a", "2026-11-25T190000Z"),
            "/v1/datasets/tank%2Flabd%2Fa/snapshots/2026-11-25T190000Z"
        );
    }

    #[test]
    fn export_paths_encode_the_name_and_avoid_the_fixed_routes() {
        assert_eq!(export_path("photos"), "/v1/exports/photos");
        assert_eq!(export_path("tank/labd/a"), "/v1/exports/tank%2Flabd%2Fa");
        assert_eq!(export_path("render"), "/v1/exports/%72ender");
        assert_eq!(export_path("apply"), "/v1/exports/%61pply");
        assert_eq!(export_path("apply/x"), "/v1/exports/apply%2Fx");
    }

    #[test]
    fn not_found_is_the_code_or_a_bare_404() {
        let api = |code: &str| {
            ClientError::Api(ErrorInfo {
                code: code.into(),
                message: "m".into(),
                field: None,
            })
        };
        assert!(is_not_found(&api("not_found")));
        assert!(!is_not_found(&api("invalid_name")));
        let status = |status| ClientError::Status {
            status,
            body: String::new(),
        };
        assert!(is_not_found(&status(StatusCode::NOT_FOUND)));
        assert!(!is_not_found(&status(StatusCode::METHOD_NOT_ALLOWED)));
    }

    #[test]
    fn query_holds_only_the_flags_set() {
        assert_eq!(flags_query(&[("recursive", false), ("force", false)]), "");
        assert_eq!(
            flags_query(&[("recursive", true), ("force", false)]),
            "?recursive=true"
        );
        assert_eq!(
            flags_query(&[("recursive", true), ("force", true)]),
            "?recursive=true&force=true"
        );
    }

    #[test]
    fn api_errors_read_like_labd_wrote_them() {
        let e = ClientError::Api(ErrorInfo {
            code: "invalid_name".into(),
            message: "bad name 'x y'".into(),
            field: Some("name".into()),
        });
        assert_eq!(e.to_string(), "bad name 'x y' (field: name) [invalid_name]");
        let e = ClientError::Api(ErrorInfo {
            code: "not_found".into(),
            message: "no job".into(),
            field: None,
        });
        assert_eq!(e.to_string(), "no job [not_found]");
        let e = ClientError::Status {
            status: StatusCode::BAD_GATEWAY,
            body: "oops\n".into(),
        };
        assert_eq!(e.to_string(), "labd answered 502 Bad Gateway: oops");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let client = Client::new(&Endpoint::Socket(PathBuf::from(
            "/nonexistent/labctl-test.sock",
        )))
        .unwrap();
        let err = client.get::<serde_json::Value>("/v1").await.unwrap_err();
        assert!(matches!(err, ClientError::Connect { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("cannot reach labd at /nonexistent/labctl-test.sock: ")
        );
    }
}
