//! The agent's settings: defaults, then a TOML file (`--config`), then `ARGUS_AGENT_*`
//! environment variables, then flags. Everything is checked before the agent starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// A Prometheus endpoint the agent scrapes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTarget {
    /// `http[s]://host:port/path` (the path defaults to `/metrics`).
    pub url: String,
    /// Tags added to the target's series (e.g. `job`).
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// PEM file of the CA that signed an `https://` target's certificate [default: the
    /// system's, from `SSL_CERT_FILE` or Debian's bundle].
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

/// A JSON-lines file the agent follows into an event stream.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TailFile {
    pub path: PathBuf,
    pub stream: String,
}

/// PEM files of the agent's TLS client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: PathBuf,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A secret: shown as `[redacted]` by `Debug`, so a logged config does not leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The file layer: every key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub server: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_addr: Option<String>,
    pub statsd_addr: Option<String>,
    pub spectatord_addr: Option<String>,
    pub spectatord_socket: Option<String>,
    pub step: Option<String>,
    pub tags: Option<std::collections::BTreeMap<String, String>>,
    pub buffer_bytes: Option<usize>,
    pub memory_limit: Option<usize>,
    pub max_series_per_step: Option<usize>,
    pub node: Option<String>,
    pub app: Option<String>,
    pub cluster: Option<String>,
    pub host_metrics: Option<bool>,
    pub proc_root: Option<PathBuf>,
    #[serde(default)]
    pub scrape: Vec<ScrapeTarget>,
    pub scrape_interval: Option<String>,
    #[serde(default)]
    pub tail: Vec<TailFile>,
}

impl FileConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// The settings the agent runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// gRPC addresses of the servers, `http://host:port`, tried in turn: the nodes of a
    /// cluster, or one server.
    pub servers: Vec<String>,
    /// Bearer token for the server, if it asks for one.
    pub token: Option<Secret>,
    /// TLS to an `https://` server: the CA to trust, and a client certificate and key for
    /// mutual TLS.
    pub tls: Option<ClientTls>,
    pub http_addr: SocketAddr,
    pub statsd_addr: SocketAddr,
    /// SpectatorD's UDP listener.
    pub spectatord_addr: SocketAddr,
    /// SpectatorD's Unix datagram socket, and whether it was asked for explicitly (a
    /// default that cannot be bound, e.g. /run without root, is only warned about).
    pub spectatord_socket: Option<PathBuf>,
    pub spectatord_socket_explicit: bool,
    pub step: Duration,
    /// Added to every series sent (the `nf.*` tags and `--tag`s).
    pub tags: Vec<(String, String)>,
    /// Memory for batches not yet acknowledged; past it the oldest are dropped.
    pub buffer_bytes: usize,
    /// Memory the agent may use as a whole: the buffer, its series (past their share new
    /// series are dropped) and [`RESERVED_BYTES`] for everything else.
    pub memory_limit: usize,
    /// Series one step may hold; updates of further ones are dropped and counted.
    pub max_series_per_step: usize,
    pub host_metrics: bool,
    /// Where /proc and /sys are (tests point this at fixtures).
    pub proc_root: PathBuf,
    pub scrape: Vec<ScrapeTarget>,
    pub scrape_interval: Duration,
    pub tail: Vec<TailFile>,
}

/// Memory the agent keeps for itself within `--memory-limit`: the runtime, batches being
/// encoded and sent, request bodies at the intake.
pub const RESERVED_BYTES: usize = 48 << 20;
/// The least memory `--memory-limit` must leave for series.
const MIN_SERIES_BYTES: usize = 16 << 20;

impl AgentConfig {
    /// Memory the series catalog may hold.
    pub fn series_bytes(&self) -> usize {
        self.memory_limit
            .saturating_sub(self.buffer_bytes + RESERVED_BYTES)
    }
}

/// Parses a positive duration in Argus's one grammar (`argus_mql::duration`, the same as
/// the server's settings): `500ms`, `10s`, `1m`, `2h`, `1d`, `PT1M`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    argus_mql::duration::parse_positive_ms(s)
        .map(|ms| Duration::from_millis(ms as u64))
        .map_err(anyhow::Error::msg)
}

/// Makes a value fit Atlas's tag rules (the contract's, `argus_proto::rules`): other
/// characters become `_`.
/// SpectatorD's Unix datagram socket, where its clients' `unix` location points.
pub const DEFAULT_SPECTATORD_SOCKET: &str = "/run/spectatord/spectatord.unix";

pub fn sanitize(s: &str) -> String {
    argus_proto::rules::sanitize(s).into_owned()
}

/// The host's name, as the kernel knows it.
pub fn hostname(proc_root: &Path) -> String {
    std::fs::read_to_string(proc_root.join("sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// What the command line and environment give (clap fills both).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub server: Option<String>,
    pub token: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http_addr: Option<String>,
    pub statsd_addr: Option<String>,
    pub spectatord_addr: Option<String>,
    pub spectatord_socket: Option<String>,
    pub step: Option<String>,
    pub tags: Vec<String>,
    pub buffer_bytes: Option<usize>,
    pub memory_limit: Option<usize>,
    pub max_series_per_step: Option<usize>,
    pub node: Option<String>,
    pub app: Option<String>,
    pub cluster: Option<String>,
    pub no_host_metrics: bool,
    pub proc_root: Option<PathBuf>,
    pub scrape: Vec<String>,
    pub scrape_interval: Option<String>,
    pub tail: Vec<String>,
}

impl Overrides {
    /// Merges flags and environment over the file and the defaults, and checks the result.
    pub fn resolve(self, file: FileConfig) -> anyhow::Result<AgentConfig> {
        let server = self
            .server
            .or(file.server)
            .unwrap_or_else(|| "http://127.0.0.1:4317".to_string());
        let servers: Vec<String> = server
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            bail!("invalid --server {server:?}: expected http://HOST:PORT[,http://HOST:PORT…]");
        }
        for one in &servers {
            if !(one.starts_with("http://") || one.starts_with("https://")) {
                bail!("invalid --server {one:?}: expected http://HOST:PORT");
            }
        }
        if servers
            .iter()
            .any(|s| s.starts_with("https://") != servers[0].starts_with("https://"))
        {
            bail!("invalid --server {server:?}: mixes http:// and https:// addresses");
        }
        let tls = match (
            self.tls_ca.or(file.tls_ca),
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (None, None, None) => None,
            (Some(ca), None, None) => Some(ClientTls { ca, identity: None }),
            (Some(ca), Some(cert), Some(key)) => Some(ClientTls {
                ca,
                identity: Some((cert, key)),
            }),
            _ => {
                bail!("TLS needs --tls-ca, and --tls-cert with --tls-key for a client certificate")
            }
        };
        if servers[0].starts_with("https://") != tls.is_some() {
            bail!("an https:// --server needs --tls-ca (and --tls-ca needs an https:// server)");
        }
        let addr = |v: Option<String>, default: &str, what: &str| -> anyhow::Result<SocketAddr> {
            let s = v.unwrap_or_else(|| default.to_string());
            s.parse()
                .with_context(|| format!("invalid {what} {s:?}: expected HOST:PORT"))
        };
        let proc_root = self
            .proc_root
            .or(file.proc_root)
            .unwrap_or_else(|| PathBuf::from("/proc"));
        let step = parse_duration(&self.step.or(file.step).unwrap_or_else(|| "60s".into()))
            .context("invalid --step")?;
        if 86_400_000 % step.as_millis() != 0 {
            bail!("invalid --step: {step:?} does not divide a day evenly (e.g. 10s, 1m)");
        }
        let mut tags: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| {
            tags.retain(|(key, _)| key != k);
            tags.push((k.to_string(), v));
        };
        let node = self
            .node
            .or(file.node)
            .unwrap_or_else(|| hostname(&proc_root));
        set("nf.node", sanitize(&node));
        if let Some(app) = self.app.or(file.app) {
            set("nf.app", sanitize(&app));
        }
        if let Some(cluster) = self.cluster.or(file.cluster) {
            set("nf.cluster", sanitize(&cluster));
        }
        for (k, v) in file.tags.unwrap_or_default() {
            set(&k, v);
        }
        for t in &self.tags {
            let (k, v) = t
                .split_once('=')
                .with_context(|| format!("invalid --tag {t:?}: expected KEY=VALUE"))?;
            if k.is_empty() || v.is_empty() {
                bail!("invalid --tag {t:?}: key and value must not be empty");
            }
            set(k, v.to_string());
        }
        tags.sort();
        for (k, v) in &tags {
            if !k.chars().all(argus_proto::rules::valid_char)
                || !v.chars().all(argus_proto::rules::valid_char)
            {
                bail!("invalid tag {k}={v}: Atlas allows only -._A-Za-z0-9^~ in keys and values");
            }
        }
        let mut scrape = file.scrape;
        for url in self.scrape {
            scrape.push(ScrapeTarget {
                url,
                tags: Vec::new(),
                ca: None,
            });
        }
        for t in &scrape {
            let endpoint = argus_proto::http_client::Endpoint::parse(&t.url)
                .with_context(|| format!("invalid scrape target {:?}", t.url))?;
            if endpoint.tls {
                argus_proto::http_client::tls_config(t.ca.as_deref())
                    .with_context(|| format!("scrape target {:?}", t.url))?;
            } else if t.ca.is_some() {
                bail!("scrape target {:?}: a CA is for https:// targets", t.url);
            }
        }
        let mut tail = file.tail;
        for t in self.tail {
            let (path, stream) = t
                .rsplit_once('=')
                .map(|(p, s)| (PathBuf::from(p), s.to_string()))
                .unwrap_or_else(|| (PathBuf::from(&t), "logs".to_string()));
            tail.push(TailFile { path, stream });
        }
        let buffer_bytes = self.buffer_bytes.or(file.buffer_bytes).unwrap_or(8 << 20);
        if buffer_bytes < 4096 {
            bail!("invalid --buffer-bytes {buffer_bytes}: at least 4096");
        }
        let memory_limit = self.memory_limit.or(file.memory_limit).unwrap_or(256 << 20);
        let least = buffer_bytes + RESERVED_BYTES + MIN_SERIES_BYTES;
        if memory_limit < least {
            bail!(
                "invalid --memory-limit {memory_limit}: at least {least} (the buffer of \
                 {buffer_bytes}, {RESERVED_BYTES} for the agent itself, {MIN_SERIES_BYTES} \
                 for series)"
            );
        }
        let max_series_per_step = self
            .max_series_per_step
            .or(file.max_series_per_step)
            .unwrap_or(100_000);
        if max_series_per_step == 0 {
            bail!("invalid --max-series-per-step 0: at least 1");
        }
        Ok(AgentConfig {
            servers,
            token: self.token.or(file.token).map(Secret),
            tls,
            http_addr: addr(
                self.http_addr.or(file.http_addr),
                "127.0.0.1:7102",
                "--http-addr",
            )?,
            statsd_addr: addr(
                self.statsd_addr.or(file.statsd_addr),
                "127.0.0.1:8125",
                "--statsd-addr",
            )?,
            spectatord_addr: addr(
                self.spectatord_addr.or(file.spectatord_addr),
                "127.0.0.1:1234",
                "--spectatord-addr",
            )?,
            spectatord_socket_explicit: self.spectatord_socket.is_some()
                || file.spectatord_socket.is_some(),
            spectatord_socket: match self.spectatord_socket.or(file.spectatord_socket) {
                None => Some(PathBuf::from(DEFAULT_SPECTATORD_SOCKET)),
                Some(path) if path.is_empty() || path == "none" => None,
                Some(path) => Some(PathBuf::from(path)),
            },
            step,
            tags,
            buffer_bytes,
            memory_limit,
            max_series_per_step,
            host_metrics: !self.no_host_metrics && file.host_metrics.unwrap_or(true),
            proc_root,
            scrape,
            scrape_interval: parse_duration(
                &self
                    .scrape_interval
                    .or(file.scrape_interval)
                    .unwrap_or_else(|| "10s".into()),
            )
            .context("invalid --scrape-interval")?,
            tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_and_checks() {
        let file: FileConfig = toml::from_str(
            r#"
            server = "http://10.0.0.1:4317"
            step = "10s"
            app = "www"
            tags = { "nf.region" = "us-east-1" }
            [[scrape]]
            url = "http://127.0.0.1:9100/metrics"
            "#,
        )
        .unwrap();
        let cfg = Overrides {
            tags: vec!["team=core".into(), "nf.region=eu-west-1".into()],
            node: Some("i-123".into()),
            ..Overrides::default()
        }
        .resolve(file)
        .unwrap();
        assert_eq!(cfg.servers, ["http://10.0.0.1:4317"]);
        assert_eq!(cfg.step, Duration::from_secs(10));
        assert_eq!(
            cfg.tags,
            [
                ("nf.app".to_string(), "www".to_string()),
                ("nf.node".to_string(), "i-123".to_string()),
                ("nf.region".to_string(), "eu-west-1".to_string()),
                ("team".to_string(), "core".to_string()),
            ]
        );
        assert_eq!(cfg.scrape.len(), 1);
        for bad in [
            Overrides {
                step: Some("7s".into()),
                ..Overrides::default()
            },
            Overrides {
                tags: vec!["x".into()],
                ..Overrides::default()
            },
            Overrides {
                tags: vec!["a=b c".into()],
                ..Overrides::default()
            },
            Overrides {
                server: Some("127.0.0.1:4317".into()),
                ..Overrides::default()
            },
            Overrides {
                server: Some("http://a:4317,b:4317".into()),
                ..Overrides::default()
            },
            Overrides {
                server: Some(" , ".into()),
                ..Overrides::default()
            },
        ] {
            assert!(bad.resolve(FileConfig::default()).is_err());
        }
    }
}
