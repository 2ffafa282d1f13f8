//! HTTPS on the listener: the certificate chain and key from PEM files (rustls, ring),
//! ALPN h2 and http/1.1, and reloading the pair on SIGHUP.
//!
//! Invariant: a reload that fails keeps the pair in use. A connection keeps the config it
//! was accepted with, so a reload never disturbs an open connection.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use crate::config::Tls;

/// Why `[server.tls]` could not be used; the text names the key and the file.
#[derive(Debug)]
pub enum TlsError {
    /// `server.tls.cert` could not be read or parsed.
    Cert {
        path: PathBuf,
        error: pem::Error,
    },
    NoCertificate {
        path: PathBuf,
    },
    /// `server.tls.key` could not be read or parsed.
    Key {
        path: PathBuf,
        error: pem::Error,
    },
    NoKey {
        path: PathBuf,
    },
    /// The key is not the first certificate's.
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        error: rustls::Error,
    },
    /// rustls refused the server configuration.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Cert { path, error } => {
                write!(f, "server.tls.cert: {}: {}", path.display(), PemProblem(error))
            }
            TlsError::NoCertificate { path } => write!(
                f,
                "server.tls.cert: {}: no PEM certificate (-----BEGIN CERTIFICATE-----) found",
                path.display()
            ),
            TlsError::Key { path, error } => {
                write!(f, "server.tls.key: {}: {}", path.display(), PemProblem(error))
            }
            TlsError::NoKey { path } => write!(
                f,
                "server.tls.key: {}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found",
                path.display()
            ),
            TlsError::Mismatch { cert, key, error } => write!(
                f,
                "server.tls: {} and {} do not form a usable pair ({error}); the key must be the \
                 private key of the first certificate in the cert file",
                cert.display(),
                key.display()
            ),
            TlsError::Rustls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// A PEM file's problem in the words of the message: unreadable or not PEM.
struct PemProblem<'a>(&'a pem::Error);

impl fmt::Display for PemProblem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            pem::Error::Io(io) => write!(f, "cannot read: {io}"),
            other => write!(f, "not valid PEM: {other}"),
        }
    }
}

/// The listener's TLS config, swappable while connections are served.
pub struct ListenerTls {
    // A std lock: held only to clone or replace, never across an `.await`.
    current: RwLock<(Tls, Arc<ServerConfig>)>,
}

impl ListenerTls {
    /// Loads `cert` and `key`; errors name the file and the key in proxy.toml.
    pub fn load(files: &Tls) -> Result<ListenerTls, TlsError> {
        Ok(ListenerTls {
            current: RwLock::new((files.clone(), server_config(files)?)),
        })
    }

    /// An acceptor over the pair in use now, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        TlsAcceptor::from(Arc::clone(&current.1))
    }

    /// Re-reads both files; on error the pair in use stays and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let files = self.files();
        let fresh = server_config(&files)?;
        self.install(files, fresh);
        Ok(())
    }

    /// Serves `config`, made by [`server_config`] from `files`, to new connections (a
    /// configuration reload, which loads it first to validate the new config).
    pub fn install(&self, files: Tls, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (files, config);
    }

    /// The files in use.
    pub fn files(&self) -> Tls {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }
}

/// Builds the rustls server config from the PEM files named in `[server.tls]`.
pub fn server_config(files: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| TlsError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
            error,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<_, _>>())
        .map_err(|error| TlsError::Cert {
            path: path.to_owned(),
            error,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        error => TlsError::Key {
            path: path.to_owned(),
            error,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn files(cert: &str, key: &str) -> Tls {
        Tls {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }
    }

    #[test]
    fn a_missing_cert_file_is_an_error_naming_it() {
        let err = server_config(&files("/nonexistent/patchgate/c.pem", "/nonexistent/k.pem"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("server.tls.cert: /nonexistent/patchgate/c.pem: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_pem_blocks_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("patchgate-unit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not pem at all\n").unwrap();
        let err = load_certs(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("server.tls.cert") && err.contains("empty.pem"),
            "{err}"
        );
        let err = load_key(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("server.tls.key") && err.contains("empty.pem"),
            "{err}"
        );
    }
}
