//! The API on TCP (`[api] tcp_listen`), mutual TLS only.
//!
//! A client must present a certificate signed by `tls_client_ca_file`: without one, or with
//! one from another CA, the TLS handshake fails and no HTTP is spoken. A verified client
//! whose subject CN is not in `tls_allowed_clients` gets `403 forbidden` (labd's JSON error
//! body, naming the CN) on every request, so labctl can say why; nothing it sends reaches a
//! handler. The actor of a TCP request is the certificate's CN and the remote address.
//!
//! Handshakes run in tasks of their own (bounded by [`HANDSHAKE_TIMEOUT`]) so a slow client
//! cannot hold up the others; finished connections reach axum through [`TlsListener`], so
//! routes, handlers, upgrades (the VM console) and graceful shutdown are the socket's.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::{ApiError, BindError, Peer};
use crate::config::ApiTcpConfig;
use crate::wire::{Actor, CommonName};

/// Longest time a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound TCP listener and its TLS settings, before serving.
pub struct TlsBound {
    tcp: std::net::TcpListener,
    acceptor: TlsAcceptor,
    allowed: Option<Arc<[String]>>,
}

impl std::fmt::Debug for TlsBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsBound")
            .field("tcp", &self.tcp)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish()
    }
}

/// Read the TLS files (errors name their key) and bind `tcp_listen`.
pub fn bind(cfg: &ApiTcpConfig) -> Result<TlsBound, BindError> {
    let tls_err = |key: &'static str, path: &Path, message: String| BindError::Tls {
        key,
        path: path.to_owned(),
        message,
    };
    let certs =
        read_certs(&cfg.cert_file).map_err(|m| tls_err("api.tls_cert_file", &cfg.cert_file, m))?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file)
        .map_err(|e| tls_err("api.tls_key_file", &cfg.key_file, e.to_string()))?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&cfg.client_ca_file)
        .map_err(|m| tls_err("api.tls_client_ca_file", &cfg.client_ca_file, m))?
    {
        roots
            .add(ca)
            .map_err(|e| tls_err("api.tls_client_ca_file", &cfg.client_ca_file, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| tls_err("api.tls_client_ca_file", &cfg.client_ca_file, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
        })
        .map_err(|e| tls_err("api.tls_key_file", &cfg.key_file, e.to_string()))?;
    // HTTP/1.1 only: the API server speaks nothing else, and the console is an h1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = std::net::TcpListener::bind(cfg.listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| BindError::Tcp {
            addr: cfg.listen,
            source,
        })?;
    Ok(TlsBound {
        tcp,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        allowed: cfg.allowed_clients.clone().map(Arc::from),
    })
}

/// Every certificate of a PEM file; an error when there is none.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no certificate in the file".into());
    }
    Ok(certs)
}

impl TlsBound {
    /// The bound address (the port when `tcp_listen` asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Start accepting: TCP accepts and handshakes go on until `stop` turns true.
    pub(super) fn listen(self, stop: watch::Receiver<bool>) -> io::Result<TlsListener> {
        let local = self.tcp.local_addr()?;
        let tcp = TcpListener::from_std(self.tcp)?;
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(tcp, self.acceptor, self.allowed, tx, stop));
        Ok(TlsListener { rx, local })
    }
}

/// What a TCP connection is known by: its address and its certificate's CN.
#[derive(Debug, Clone, Copy)]
pub struct TlsAddr {
    remote: SocketAddr,
    cn: Option<CommonName>,
    /// The CN is present and let in by `tls_allowed_clients`.
    allowed: bool,
}

/// Connections whose handshake succeeded, for `axum::serve`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, TlsAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = TlsAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept loop ended (stop): nothing more comes; axum stops asking on stop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TlsAddr {
            remote: self.local,
            cn: None,
            allowed: false,
        })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    allowed: Option<Arc<[String]>>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, TlsAddr)>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, remote) = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = tcp.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "api tcp accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let allowed = allowed.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%remote, error = %e, "api tls handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(%remote, "api tls handshake timed out");
                    return;
                }
            };
            let cn = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(subject_cn);
            let allowed = match (&cn, &allowed) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(cn), Some(names)) => names.iter().any(|n| n == cn.as_str()),
            };
            if !allowed {
                tracing::warn!(%remote, cn = ?cn, "api client certificate not allowed");
            }
            let _ = tx
                .send((
                    tls,
                    TlsAddr {
                        remote,
                        cn,
                        allowed,
                    },
                ))
                .await;
        });
    }
}

/// Until `stop` turns true (the guard `wait_for` returns is not `Send`: dropped here).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// The subject CN of a DER certificate, when it has exactly one usable CN.
fn subject_cn(der: &CertificateDer<'_>) -> Option<CommonName> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let mut cns = cert.subject().iter_common_name();
    let first = cns.next()?.as_str().ok()?;
    if cns.next().is_some() {
        return None;
    }
    CommonName::new(first)
}

/// The connection info of a TCP request.
#[derive(Debug, Clone, Copy)]
pub(super) struct TlsPeer(TlsAddr);

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// Let a request through only from an allowed certificate, with the CN and address as its
/// actor (the [`Peer`] handlers read).
pub(super) async fn admit(
    ConnectInfo(TlsPeer(addr)): ConnectInfo<TlsPeer>,
    mut request: Request,
    next: Next,
) -> Response {
    if !addr.allowed {
        let message = match addr.cn {
            Some(cn) => format!("client certificate CN '{cn}' is not in api.tls_allowed_clients"),
            None => "the client certificate has no usable subject CN (one, 1 to 64 bytes)".into(),
        };
        return ApiError::forbidden(message).into_response();
    }
    request
        .extensions_mut()
        .insert(ConnectInfo(Peer(Some(Actor {
            uid: None,
            gid: None,
            pid: None,
            cn: addr.cn,
            addr: Some(addr.remote),
        }))));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_tls_files_name_their_key() {
        let dir = std::env::temp_dir().join(format!("labd-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").expect("write");
        let cfg = |cert: &Path, key: &Path, ca: &Path| ApiTcpConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            cert_file: cert.to_owned(),
            key_file: key.to_owned(),
            client_ca_file: ca.to_owned(),
            allowed_clients: None,
        };
        let missing = dir.join("missing.pem");
        for (cfg, key) in [
            (cfg(&missing, &missing, &missing), "api.tls_cert_file"),
            (cfg(&not_pem, &missing, &missing), "api.tls_cert_file"),
        ] {
            let e = bind(&cfg).expect_err(key).to_string();
            assert!(e.starts_with(key), "{key}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
