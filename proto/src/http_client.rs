//! The client side of HTTP/1.1 that `argus live` and the agent's Prometheus scraper share:
//! `http[s]://` URLs, the certificates to trust, and a keep-alive connection over TCP or TLS
//! (hyper, and rustls with ring as tonic's TLS uses), with bodies read to a limit and
//! gzip-decoded. Nothing here knows what the bodies mean.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;

/// Where an `http://` or `https://` URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub tls: bool,
    /// `host:port` (the port defaults to 80 or 443).
    pub authority: String,
    /// The host alone, without brackets: the name its certificate must carry.
    pub host: String,
    /// The path and query, `""` when the URL has none.
    pub path: String,
}

impl Endpoint {
    /// Reads `http[s]://host[:port][/path]`; anything else is an error saying what.
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            bail!("{url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() {
            bail!("{url:?}: no host");
        }
        let (host, authority) = match authority.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() => (host, authority.to_string()),
            _ => (
                authority,
                format!("{authority}:{}", if tls { 443 } else { 80 }),
            ),
        };
        Ok(Endpoint {
            tls,
            authority,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            path: path.to_string(),
        })
    }
}

/// A TLS client configuration trusting `ca` (a PEM file), else the system's bundle
/// (`SSL_CERT_FILE`, else Debian's `/etc/ssl/certs/ca-certificates.crt`).
pub fn tls_config(ca: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let path = match ca {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into()),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading CA certificates from {}", path.display()))?;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("no CA certificate in {}", path.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a connection reads and writes: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Opens an HTTP/1.1 connection to `endpoint` (TLS with `tls` for `https://`); the
/// connection runs on its own task and stays open for further requests (keep-alive) until
/// the returned sender is dropped or the peer closes it.
pub async fn connect(
    endpoint: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(&endpoint.authority)
        .await
        .with_context(|| format!("connecting to {}", endpoint.authority))?;
    stream.set_nodelay(true).ok();
    let io: Box<dyn Io> = if endpoint.tls {
        let config = tls.context("an https:// address needs a TLS configuration")?;
        let name = rustls_pki_types::ServerName::try_from(endpoint.host.clone())
            .with_context(|| format!("{:?} is not a host name or address", endpoint.host))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, stream)
            .await
            .with_context(|| format!("TLS with {}", endpoint.authority))?;
        Box::new(stream)
    } else {
        Box::new(stream)
    };
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    tokio::spawn(async move {
        // The peer closing is how a connection ends; the next request reconnects.
        let _ = conn.await;
    });
    Ok(sender)
}

/// A GET request for `path` on `endpoint` with these extra headers.
pub fn get(
    endpoint: &Endpoint,
    path: &str,
    headers: &[(hyper::header::HeaderName, &str)],
) -> anyhow::Result<hyper::Request<Empty<Bytes>>> {
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, &endpoint.authority);
    for (name, value) in headers {
        req = req.header(name, *value);
    }
    req.body(Empty::new()).context("building the request")
}

/// Reads a whole response body, at most `limit` bytes after decoding `Content-Encoding:
/// gzip` (a body over the limit, or an encoding other than gzip or identity, is an error):
/// the decoded body and its length as it travelled.
pub async fn read_body(
    resp: hyper::Response<Incoming>,
    limit: usize,
) -> anyhow::Result<(Vec<u8>, usize)> {
    let gzip = match resp.headers().get(hyper::header::CONTENT_ENCODING) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(v) => bail!("unsupported Content-Encoding {v:?}"),
    };
    let raw = Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the body: {e}"))?
        .to_bytes();
    if !gzip {
        return Ok((raw.to_vec(), raw.len()));
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .context("decoding the gzip body")?;
    if out.len() > limit {
        bail!("body over {limit} bytes once decoded");
    }
    Ok((out, raw.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:7101/").unwrap(),
            Endpoint {
                tls: false,
                authority: "127.0.0.1:7101".into(),
                host: "127.0.0.1".into(),
                path: "/".into()
            }
        );
        let e = Endpoint::parse("https://argus.example/api?x=1").unwrap();
        assert_eq!(
            (e.tls, e.authority.as_str(), e.path.as_str()),
            (true, "argus.example:443", "/api?x=1")
        );
        assert_eq!(Endpoint::parse("http://[::1]:9/m").unwrap().host, "::1");
        for bad in ["ftp://x", "http://", "localhost:9090"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
