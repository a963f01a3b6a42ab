//! TLS for the server's listeners, from PEM files: the certificate chain and key serve both
//! HTTP and gRPC; a client CA makes the gRPC port require client certificates signed by it
//! (mutual TLS for agents).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// The PEM files TLS is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients of the gRPC port must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the TLS {what} {}", path.display()))
}

impl TlsFiles {
    /// The acceptor for the HTTP listener (server authentication only).
    pub fn http_acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .with_context(|| format!("reading the TLS certificate {}", self.cert.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing the TLS certificate {}", self.cert.display()))?;
        if certs.is_empty() {
            bail!("no certificate in {}", self.cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .with_context(|| format!("reading the TLS key {}", self.key.display()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not match")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    /// The gRPC server's TLS settings.
    pub fn grpc_config(&self) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(
            read(&self.cert, "certificate")?,
            read(&self.key, "key")?,
        );
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(read(
                ca,
                "client CA",
            )?));
        }
        Ok(config)
    }
}
