//! `server.tls_cert` / `server.tls_key`: the listener's certificate chain and key, read once at
//! start-up into a rustls acceptor that offers HTTP/2 and HTTP/1.1 through ALPN.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read server.{key} {path:?}: {source}")]
    Read {
        key: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("server.tls_cert {0:?} holds no PEM certificate")]
    NoCertificate(String),
    #[error("server.tls_key {0:?} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(String),
    #[error("server.tls_cert and server.tls_key do not make a usable pair: {0}")]
    Rejected(#[from] rustls::Error),
}

/// The acceptor for a certificate chain and key in PEM files.
pub fn acceptor(cert_path: &str, key_path: &str) -> Result<TlsAcceptor, TlsError> {
    let chain = read("tls_cert", cert_path)?;
    let certificates = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .ok()
        .filter(|certificates| !certificates.is_empty())
        .ok_or_else(|| TlsError::NoCertificate(cert_path.to_owned()))?;
    let key = PrivateKeyDer::from_pem_slice(&read("tls_key", key_path)?)
        .map_err(|_| TlsError::NoKey(key_path.to_owned()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certificates, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(Path::new(path)).map_err(|source| TlsError::Read {
        key,
        path: path.to_owned(),
        source,
    })
}
