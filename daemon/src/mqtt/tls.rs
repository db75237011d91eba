//! TLS to the MQTT broker (`mqtts://`): the broker's CA (`[mqtt] ca_file`, else the system's
//! trusted roots) and, for mutual TLS, a client certificate and key, read from PEM files into
//! a rustls client configuration on the ring provider.
//!
//! The files are read with the rest of the configuration (at start, and again at each SIGHUP,
//! which checks them), and every error names the `[mqtt]` key of the file at fault: a missing
//! or unreadable file, a file holding no PEM certificate or key, one of the client pair
//! without the other, a key that does not belong to the certificate.
//!
//! The system's roots come from `rustls-native-certs` rather than the compiled-in
//! `webpki-roots`: it reads the host's own store (FreeBSD's `/etc/ssl/cert.pem`, kept by
//! `certctl`, or `SSL_CERT_FILE`), so a local CA the administrator trusts is trusted here too
//! and the list does not age with the binary; it is pure Rust and already in the tree (the
//! MQTT client depends on it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

/// The keys of the files, as errors name them.
const CA_FILE: &str = "mqtt.ca_file";
const CERT_FILE: &str = "mqtt.client_cert_file";
const KEY_FILE: &str = "mqtt.client_key_file";

/// The TLS side of `[mqtt]`: the files it came from and the client configuration built from
/// them. Two are equal when they came from the same files with the same contents.
#[derive(Clone)]
pub struct BrokerTls {
    /// `ca_file`; `None`: the system's roots.
    ca_file: Option<PathBuf>,
    /// `client_cert_file` and `client_key_file`.
    client_files: Option<(PathBuf, PathBuf)>,
    /// What the files held when read.
    contents: Vec<Vec<u8>>,
    config: Arc<ClientConfig>,
}

impl BrokerTls {
    /// Read the files and build the client configuration. `client_cert` and `client_key`
    /// go together: both or neither.
    pub fn load(
        ca_file: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<Self, TlsFileError> {
        match (client_cert, client_key) {
            (Some(_), None) => {
                return Err(TlsFileError::Unpaired {
                    key: KEY_FILE,
                    other: CERT_FILE,
                });
            }
            (None, Some(_)) => {
                return Err(TlsFileError::Unpaired {
                    key: CERT_FILE,
                    other: KEY_FILE,
                });
            }
            _ => {}
        }
        let mut contents = Vec::new();
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = read(CA_FILE, path)?;
                for cert in certificates(CA_FILE, path, &pem)? {
                    roots.add(cert).map_err(|e| TlsFileError::Rejected {
                        key: CA_FILE,
                        path: path.to_owned(),
                        message: e.to_string(),
                    })?;
                }
                contents.push(pem);
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let errors: Vec<String> =
                        found.errors.iter().map(ToString::to_string).collect();
                    return Err(TlsFileError::NoSystemRoots {
                        detail: if errors.is_empty() {
                            "none found".to_owned()
                        } else {
                            errors.join("; ")
                        },
                    });
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsFileError::Rejected {
                key: CA_FILE,
                path: ca_file.map(Path::to_owned).unwrap_or_default(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots);
        let (config, client_files) = match (client_cert, client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert_pem = read(CERT_FILE, cert_path)?;
                let chain = certificates(CERT_FILE, cert_path, &cert_pem)?;
                let key_pem = read(KEY_FILE, key_path)?;
                let key = private_key(key_path, &key_pem)?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
                    TlsFileError::Rejected {
                        key: KEY_FILE,
                        path: key_path.to_owned(),
                        message: e.to_string(),
                    }
                })?;
                contents.push(cert_pem);
                contents.push(key_pem);
                (config, Some((cert_path.to_owned(), key_path.to_owned())))
            }
            _ => (builder.with_no_client_auth(), None),
        };
        Ok(Self {
            ca_file: ca_file.map(Path::to_owned),
            client_files,
            contents,
            config: Arc::new(config),
        })
    }

    /// The rustls client configuration (the server name checked is the URL's host).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// Whether a client certificate is presented (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.client_files.is_some()
    }
}

impl PartialEq for BrokerTls {
    fn eq(&self, other: &Self) -> bool {
        self.ca_file == other.ca_file
            && self.client_files == other.client_files
            && self.contents == other.contents
    }
}

impl Eq for BrokerTls {}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key's contents stay out of logs.
        f.debug_struct("BrokerTls")
            .field("ca_file", &self.ca_file)
            .field("client_files", &self.client_files)
            .finish_non_exhaustive()
    }
}

/// A TLS file of `[mqtt]` that cannot be used; [`TlsFileError::key`] names its key.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why (in the message: configuration errors are reported as one line).
        source: std::io::Error,
    },
    /// The file holds no PEM block of the kind wanted, or a broken one.
    #[error("{} holds no usable PEM {what}: {detail}", path.display())]
    NotPem {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The PEM parser's word.
        detail: String,
    },
    /// rustls refused the material (a CA that is no certificate, a key that does not match
    /// the certificate).
    #[error("{}: {message}", path.display())]
    Rejected {
        /// The key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// rustls's word.
        message: String,
    },
    /// Only one of the client certificate and key is set.
    #[error("must be set together with {other} (mutual TLS needs both, or neither)")]
    Unpaired {
        /// The key that is missing.
        key: &'static str,
        /// The key that is set.
        other: &'static str,
    },
    /// No `ca_file`, and the system's trusted roots could not be read.
    #[error("not set, and the system's trusted roots could not be read ({detail})")]
    NoSystemRoots {
        /// What was wrong.
        detail: String,
    },
}

impl TlsFileError {
    /// The `[mqtt]` key at fault, dotted (`mqtt.ca_file`).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Read { key, .. }
            | Self::NotPem { key, .. }
            | Self::Rejected { key, .. }
            | Self::Unpaired { key, .. } => key,
            Self::NoSystemRoots { .. } => CA_FILE,
        }
    }
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate of a PEM file; at least one.
fn certificates(
    key: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let not_pem = |detail: String| TlsFileError::NotPem {
        key,
        path: path.to_owned(),
        what: "certificate",
        detail,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(not_pem("no CERTIFICATE block".to_owned()));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsFileError::NotPem {
        key: KEY_FILE,
        path: path.to_owned(),
        what: "private key",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a client certificate (with its key) signed by it, as PEM.
    fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA");
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec!["labd".to_owned()]).expect("params");
        let cert = params.signed_by(&key, &issuer).expect("cert");
        let paths = (
            dir.join("ca.pem"),
            dir.join("cert.pem"),
            dir.join("key.pem"),
        );
        std::fs::write(&paths.0, ca.pem()).expect("write");
        std::fs::write(&paths.1, cert.pem()).expect("write");
        std::fs::write(&paths.2, key.serialize_pem()).expect("write");
        (paths.0, paths.1, paths.2)
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("labd-mqtt-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_ca_and_a_client_pair_make_a_mutual_config() {
        let dir = tempdir("good");
        let (ca, cert, key) = pki(&dir);
        let tls = BrokerTls::load(Some(&ca), Some(&cert), Some(&key)).expect("loads");
        assert!(tls.mutual());
        assert!(tls.client_config().client_auth_cert_resolver.has_certs());
        let again = BrokerTls::load(Some(&ca), Some(&cert), Some(&key)).expect("loads");
        assert_eq!(tls, again);
        let server_only = BrokerTls::load(Some(&ca), None, None).expect("loads");
        assert!(!server_only.mutual());
        assert_ne!(tls, server_only);
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn errors_name_the_key_at_fault() {
        let dir = tempdir("bad");
        let (ca, cert, key) = pki(&dir);
        let missing = dir.join("missing.pem");
        let text = dir.join("text.pem");
        std::fs::write(&text, "not a certificate\n").expect("write");

        let e = BrokerTls::load(Some(&missing), None, None).expect_err("missing CA");
        assert_eq!(e.key(), "mqtt.ca_file");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let e = BrokerTls::load(Some(&text), None, None).expect_err("CA not PEM");
        assert_eq!(e.key(), "mqtt.ca_file");
        assert!(e.to_string().contains("no usable PEM certificate"), "{e}");

        let e = BrokerTls::load(Some(&ca), Some(&cert), None).expect_err("no key");
        assert_eq!(e.key(), "mqtt.client_key_file");
        assert!(e.to_string().contains("mqtt.client_cert_file"), "{e}");
        let e = BrokerTls::load(Some(&ca), None, Some(&key)).expect_err("no cert");
        assert_eq!(e.key(), "mqtt.client_cert_file");

        let e = BrokerTls::load(Some(&ca), Some(&text), Some(&key)).expect_err("cert not PEM");
        assert_eq!(e.key(), "mqtt.client_cert_file");
        let e = BrokerTls::load(Some(&ca), Some(&cert), Some(&cert)).expect_err("key not PEM");
        assert_eq!(e.key(), "mqtt.client_key_file");
        assert!(e.to_string().contains("private key"), "{e}");

        // A key of another certificate.
        let other = tempdir("other");
        let (_, _, other_key) = pki(&other);
        let e = BrokerTls::load(Some(&ca), Some(&cert), Some(&other_key)).expect_err("mismatch");
        assert_eq!(e.key(), "mqtt.client_key_file");
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
