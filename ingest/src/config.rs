//! Server configuration: defaults, then a TOML file (`--config`), then `ARGUS_*` environment
//! variables, then command-line flags, each overriding the one before.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Deserialize;

/// Parses a positive duration such as `60s`, `1m`, `6h`, `500ms`, `2d`, `1w`, or ISO 8601
/// `PT1M`: Argus's one duration grammar (`argus_mql::duration`), which the agent and the
/// command line read too.
pub fn parse_duration_ms(s: &str) -> anyhow::Result<i64> {
    argus_mql::duration::parse_positive_ms(s).map_err(anyhow::Error::msg)
}

/// The server's settings, after merging every source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub step_ms: i64,
    pub retention_ms: i64,
    /// How far a published datapoint may be from now, either way (Atlas's `max-age`).
    pub publish_max_age_ms: i64,
    /// Largest request body accepted, after decompression.
    pub max_body_bytes: usize,
    /// Most lines one graph request may return (Atlas's `max-lines`).
    pub graph_max_lines: usize,
    /// Most datapoints one graph request may return, over all lines.
    pub graph_max_datapoints: usize,
    /// Largest gRPC message accepted (decompressed); larger ones get RESOURCE_EXHAUSTED.
    pub grpc_max_message_bytes: usize,
    /// Keep nothing on disk: no write-ahead log, no snapshots (tests, throwaway use).
    pub ephemeral: bool,
    /// When the write-ahead log is forced to disk.
    pub wal_fsync: WalFsync,
    /// How often the store is snapshotted (and the log behind it removed).
    pub snapshot_interval_ms: i64,
    /// How often maintenance seals old heads, drops expired data and removes empty series.
    pub maintenance_interval_ms: i64,
    /// Most series in the store; new series over it are refused.
    pub max_series: u64,
    /// Most series sharing one `name`; new series over it are refused.
    pub max_series_per_metric: u64,
    /// A request's headers must arrive within this (also how long an idle kept-alive
    /// connection stays open).
    pub http_header_timeout_ms: i64,
    /// A request's body must arrive within this.
    pub http_body_timeout_ms: i64,
    /// Bearer tokens with roles (TOML); `None` leaves the API open.
    pub auth_file: Option<PathBuf>,
    /// TLS on both listeners, when set.
    pub tls: Option<crate::tls::TlsFiles>,
    /// A graph query stops after this long.
    pub query_timeout_ms: i64,
    /// Most series one graph query may read.
    pub query_max_series: u64,
    /// Most memory one query may hold at once (its lines, read buffers, accumulators).
    pub query_max_memory: usize,
    /// Graph queries running at once; more wait (up to their time limit) for a slot.
    pub max_concurrent_queries: usize,
    /// Live queries one client address may run at once.
    pub live_max_per_client: usize,
    /// Connections each listener (HTTP, gRPC) holds at once; more are refused.
    pub max_connections: usize,
    /// Cluster mode (`--cluster`); `None` is a single node.
    pub cluster: Option<crate::cluster::ClusterSettings>,
}

impl ServerConfig {
    /// What one graph or stream query may produce and hold.
    pub fn query_limits(&self) -> argus_query::graph::Limits {
        argus_query::graph::Limits {
            max_lines: self.graph_max_lines,
            max_datapoints: self.graph_max_datapoints,
            max_memory_bytes: self.query_max_memory,
            ..argus_query::graph::Limits::default()
        }
    }
}

/// When the write-ahead log is forced to disk: the recovery-point promise on power loss.
/// After `kill -9` nothing acknowledged is lost either way (the kernel holds the pages).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalFsync {
    /// Before every acknowledgement.
    Always,
    /// Every this many milliseconds: power loss may lose up to this much.
    Every(i64),
}

impl WalFsync {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if s.trim() == "always" {
            return Ok(WalFsync::Always);
        }
        parse_duration_ms(s).map(WalFsync::Every).with_context(|| {
            format!("invalid wal-fsync {s:?}: expected \"always\" or a duration such as 1s")
        })
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http_addr: "127.0.0.1:7101".parse().expect("valid literal address"),
            grpc_addr: "127.0.0.1:4317".parse().expect("valid literal address"),
            data_dir: PathBuf::from("argus-data"),
            step_ms: 60_000,
            retention_ms: 6 * 3_600_000,
            publish_max_age_ms: 60_000,
            max_body_bytes: 64 << 20,
            graph_max_lines: 1024,
            graph_max_datapoints: 500_000,
            grpc_max_message_bytes: 16 << 20,
            ephemeral: false,
            wal_fsync: WalFsync::Every(1_000),
            snapshot_interval_ms: 15 * 60_000,
            maintenance_interval_ms: 10_000,
            max_series: 5_000_000,
            max_series_per_metric: 1_000_000,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 60_000,
            auth_file: None,
            tls: None,
            query_timeout_ms: 30_000,
            query_max_series: 1_000_000,
            query_max_memory: argus_query::graph::DEFAULT_MAX_MEMORY_BYTES,
            max_concurrent_queries: 16,
            live_max_per_client: 16,
            max_connections: 8_192,
            cluster: None,
        }
    }
}

/// Settings as they appear in the TOML file, the environment (`ARGUS_*`) or on the command
/// line: all optional. Written once: clap reads the flags and variables from it, serde the
/// file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigLayer {
    /// Address of the HTTP API [default: 127.0.0.1:7101].
    #[arg(long, env = "ARGUS_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<String>,
    /// Address of the gRPC services: the agent protocol and OTLP [default: 127.0.0.1:4317].
    #[arg(long, env = "ARGUS_GRPC_ADDR", value_name = "HOST:PORT")]
    pub grpc_addr: Option<String>,
    /// Directory for the server's files (created if missing) [default: argus-data].
    #[arg(long, env = "ARGUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Step of stored series; timestamps are normalized to step ends [default: 60s].
    #[arg(long, env = "ARGUS_STEP", value_name = "DURATION")]
    pub step: Option<String>,
    /// How long data is kept in memory [default: 6h].
    #[arg(long, env = "ARGUS_RETENTION", value_name = "DURATION")]
    pub retention: Option<String>,
    /// How far from now a published datapoint may be, either way (backfill accepts
    /// anything inside the retention window) [default: 60s].
    #[arg(long, env = "ARGUS_PUBLISH_MAX_AGE", value_name = "DURATION")]
    pub publish_max_age: Option<String>,
    /// Largest request body accepted, after decompression [default: 67108864].
    #[arg(long, env = "ARGUS_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Most lines one graph request may return [default: 1024, as Atlas].
    #[arg(long, env = "ARGUS_GRAPH_MAX_LINES", value_name = "N")]
    pub graph_max_lines: Option<usize>,
    /// Most datapoints one graph request may return over all lines [default: 500000].
    #[arg(long, env = "ARGUS_GRAPH_MAX_DATAPOINTS", value_name = "N")]
    pub graph_max_datapoints: Option<usize>,
    /// Largest gRPC message accepted, after decompression; larger ones are refused with
    /// RESOURCE_EXHAUSTED [default: 16777216].
    #[arg(long, env = "ARGUS_GRPC_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub grpc_max_message_bytes: Option<usize>,
    /// Keep everything in memory only: no write-ahead log, no snapshots; a restart loses
    /// all data. By default data is kept in --data-dir.
    #[arg(
        long,
        env = "ARGUS_EPHEMERAL",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub ephemeral: Option<bool>,
    /// When the write-ahead log is forced to disk: "always" (before every acknowledgement)
    /// or an interval; power loss may lose up to one interval of acknowledged data, a
    /// crash of the process nothing [default: 1s].
    #[arg(long, env = "ARGUS_WAL_FSYNC", value_name = "always|DURATION")]
    pub wal_fsync: Option<String>,
    /// How often the store is snapshotted, and the log behind the snapshot removed; in a
    /// cluster, how often each partition is snapshotted into NATS's Object Store, so that a
    /// new owner restores it and replays only the log after [default: 15m].
    #[arg(long, env = "ARGUS_SNAPSHOT_INTERVAL", value_name = "DURATION")]
    pub snapshot_interval: Option<String>,
    /// How often maintenance seals finished blocks, drops data past the retention and
    /// removes series left empty [default: 10s].
    #[arg(long, env = "ARGUS_MAINTENANCE_INTERVAL", value_name = "DURATION")]
    pub maintenance_interval: Option<String>,
    /// Most series in the store: over it, new series are refused (existing ones keep
    /// ingesting), counted as series_limit [default: 5000000].
    #[arg(long, env = "ARGUS_MAX_SERIES", value_name = "N")]
    pub max_series: Option<u64>,
    /// Most series sharing one name tag: over it, that metric's new series are refused
    /// [default: 1000000].
    #[arg(long, env = "ARGUS_MAX_SERIES_PER_METRIC", value_name = "N")]
    pub max_series_per_metric: Option<u64>,
    /// A request's headers must arrive within this; also how long an idle kept-alive
    /// connection stays open [default: 10s].
    #[arg(long, env = "ARGUS_HTTP_HEADER_TIMEOUT", value_name = "DURATION")]
    pub http_header_timeout: Option<String>,
    /// A request's body must arrive within this, else 408 [default: 60s].
    #[arg(long, env = "ARGUS_HTTP_BODY_TIMEOUT", value_name = "DURATION")]
    pub http_body_timeout: Option<String>,
    /// TOML file of bearer tokens with roles (read, write, admin) for the HTTP API and gRPC;
    /// without it the server is open. See the README.
    #[arg(long, env = "ARGUS_AUTH_FILE", value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// PEM certificate chain: serve HTTP and gRPC over TLS (with --tls-key).
    #[arg(long, env = "ARGUS_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "ARGUS_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: gRPC clients (agents) must present a certificate it signed (mutual TLS).
    #[arg(long, env = "ARGUS_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// A graph query stops after this long (503) [default: 30s].
    #[arg(long, env = "ARGUS_QUERY_TIMEOUT", value_name = "DURATION")]
    pub query_timeout: Option<String>,
    /// Most series one graph query may read (400 past it) [default: 1000000].
    #[arg(long, env = "ARGUS_QUERY_MAX_SERIES", value_name = "N")]
    pub query_max_series: Option<u64>,
    /// Most memory one query may hold at once: its lines, read buffers and accumulators
    /// (400 past it) [default: 268435456].
    #[arg(long, env = "ARGUS_QUERY_MAX_MEMORY", value_name = "BYTES")]
    pub query_max_memory: Option<usize>,
    /// Graph queries running at once; more wait for a slot, up to their time limit
    /// [default: 16].
    #[arg(long, env = "ARGUS_MAX_CONCURRENT_QUERIES", value_name = "N")]
    pub max_concurrent_queries: Option<usize>,
    /// Live queries one client address may run at once [default: 16].
    #[arg(long, env = "ARGUS_LIVE_MAX_PER_CLIENT", value_name = "N")]
    pub live_max_per_client: Option<usize>,
    /// Connections each listener (HTTP, gRPC) holds at once; more are refused at once and
    /// counted. Lowered to what the open-file limit allows [default: 8192].
    #[arg(long, env = "ARGUS_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Join a cluster: the NATS servers it runs on, comma-separated
    /// (nats://host:4222,nats://host:4223). Without it the server is a single node.
    #[arg(long, env = "ARGUS_CLUSTER", value_name = "URL[,URL...]")]
    pub cluster: Option<String>,
    /// This node's name in the cluster: letters, digits, `-` and `_` [default: the host
    /// name and the HTTP port].
    #[arg(long, env = "ARGUS_NODE_ID", value_name = "NAME")]
    pub node_id: Option<String>,
    /// What this node does in the cluster, comma-separated: gateway, store, query
    /// [default: all three].
    #[arg(long, env = "ARGUS_ROLES", value_name = "ROLES")]
    pub roles: Option<String>,
    /// Partitions of a new cluster; fixed once the cluster exists, and a node started with
    /// another count refuses to start [default: 64].
    #[arg(long, env = "ARGUS_PARTITIONS", value_name = "N")]
    pub partitions: Option<u32>,
    /// Store nodes that hold each partition [default: 2].
    #[arg(long, env = "ARGUS_REPLICAS", value_name = "N")]
    pub replicas: Option<u32>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "ARGUS_NATS_USER", value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS password of --nats-user.
    #[arg(
        long,
        env = "ARGUS_NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub nats_password: Option<String>,
    /// NATS token (instead of a user and password).
    #[arg(
        long,
        env = "ARGUS_NATS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<String>,
    /// PEM CA that signed the NATS servers' certificates: connect over TLS only.
    #[arg(long, env = "ARGUS_NATS_CA", value_name = "FILE")]
    pub nats_ca: Option<PathBuf>,
    /// PEM CA that signed the other cluster nodes' HTTPS certificates (--tls-cert): queries
    /// fanned out to a node serving HTTPS go over HTTPS, trusting only this CA.
    #[arg(long, env = "ARGUS_PEER_CA", value_name = "FILE")]
    pub peer_ca: Option<PathBuf>,
}

impl ConfigLayer {
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// `self` over `lower`: a value set here wins.
    pub fn over(self, lower: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            http_addr: self.http_addr.or(lower.http_addr),
            grpc_addr: self.grpc_addr.or(lower.grpc_addr),
            data_dir: self.data_dir.or(lower.data_dir),
            step: self.step.or(lower.step),
            retention: self.retention.or(lower.retention),
            publish_max_age: self.publish_max_age.or(lower.publish_max_age),
            max_body_bytes: self.max_body_bytes.or(lower.max_body_bytes),
            graph_max_lines: self.graph_max_lines.or(lower.graph_max_lines),
            graph_max_datapoints: self.graph_max_datapoints.or(lower.graph_max_datapoints),
            grpc_max_message_bytes: self.grpc_max_message_bytes.or(lower.grpc_max_message_bytes),
            ephemeral: self.ephemeral.or(lower.ephemeral),
            wal_fsync: self.wal_fsync.or(lower.wal_fsync),
            snapshot_interval: self.snapshot_interval.or(lower.snapshot_interval),
            maintenance_interval: self.maintenance_interval.or(lower.maintenance_interval),
            max_series: self.max_series.or(lower.max_series),
            max_series_per_metric: self.max_series_per_metric.or(lower.max_series_per_metric),
            http_header_timeout: self.http_header_timeout.or(lower.http_header_timeout),
            http_body_timeout: self.http_body_timeout.or(lower.http_body_timeout),
            auth_file: self.auth_file.or(lower.auth_file),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            tls_client_ca: self.tls_client_ca.or(lower.tls_client_ca),
            query_timeout: self.query_timeout.or(lower.query_timeout),
            query_max_series: self.query_max_series.or(lower.query_max_series),
            query_max_memory: self.query_max_memory.or(lower.query_max_memory),
            max_concurrent_queries: self.max_concurrent_queries.or(lower.max_concurrent_queries),
            live_max_per_client: self.live_max_per_client.or(lower.live_max_per_client),
            max_connections: self.max_connections.or(lower.max_connections),
            cluster: self.cluster.or(lower.cluster),
            node_id: self.node_id.or(lower.node_id),
            roles: self.roles.or(lower.roles),
            partitions: self.partitions.or(lower.partitions),
            replicas: self.replicas.or(lower.replicas),
            nats_user: self.nats_user.or(lower.nats_user),
            nats_password: self.nats_password.or(lower.nats_password),
            nats_token: self.nats_token.or(lower.nats_token),
            nats_ca: self.nats_ca.or(lower.nats_ca),
            peer_ca: self.peer_ca.or(lower.peer_ca),
        }
    }

    /// Fills what is unset from the defaults and checks every value.
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let d = ServerConfig::default();
        let addr =
            |v: Option<String>, default: SocketAddr, what: &str| -> anyhow::Result<SocketAddr> {
                match v {
                    Some(s) => s.parse().with_context(|| {
                        format!("invalid {what} {s:?}: expected HOST:PORT such as 127.0.0.1:7101")
                    }),
                    None => Ok(default),
                }
            };
        let dur = |v: Option<String>, default: i64, what: &str| -> anyhow::Result<i64> {
            match v {
                Some(s) => parse_duration_ms(&s).with_context(|| format!("invalid {what}")),
                None => Ok(default),
            }
        };
        let http_addr = addr(self.http_addr, d.http_addr, "http-addr")?;
        let cluster = crate::cluster::ClusterSettings::resolve(crate::cluster::ClusterLayer {
            urls: self.cluster,
            node_id: self.node_id,
            roles: self.roles,
            partitions: self.partitions,
            replicas: self.replicas,
            snapshot_interval: self.snapshot_interval.clone(),
            nats_user: self.nats_user,
            nats_password: self.nats_password,
            nats_token: self.nats_token,
            nats_ca: self.nats_ca,
            peer_ca: self.peer_ca,
            serves_https: self.tls_cert.is_some(),
        })?;
        let cfg = ServerConfig {
            http_addr,
            grpc_addr: addr(self.grpc_addr, d.grpc_addr, "grpc-addr")?,
            data_dir: self.data_dir.unwrap_or(d.data_dir),
            step_ms: dur(self.step, d.step_ms, "step")?,
            retention_ms: dur(self.retention, d.retention_ms, "retention")?,
            publish_max_age_ms: dur(
                self.publish_max_age,
                d.publish_max_age_ms,
                "publish-max-age",
            )?,
            max_body_bytes: self.max_body_bytes.unwrap_or(d.max_body_bytes),
            graph_max_lines: self.graph_max_lines.unwrap_or(d.graph_max_lines),
            graph_max_datapoints: self.graph_max_datapoints.unwrap_or(d.graph_max_datapoints),
            grpc_max_message_bytes: self
                .grpc_max_message_bytes
                .unwrap_or(d.grpc_max_message_bytes),
            ephemeral: self.ephemeral.unwrap_or(d.ephemeral),
            wal_fsync: match self.wal_fsync {
                Some(s) => WalFsync::parse(&s)?,
                None => d.wal_fsync,
            },
            snapshot_interval_ms: dur(
                self.snapshot_interval,
                d.snapshot_interval_ms,
                "snapshot-interval",
            )?,
            maintenance_interval_ms: dur(
                self.maintenance_interval,
                d.maintenance_interval_ms,
                "maintenance-interval",
            )?,
            max_series: self.max_series.unwrap_or(d.max_series),
            max_series_per_metric: self
                .max_series_per_metric
                .unwrap_or(d.max_series_per_metric),
            http_header_timeout_ms: dur(
                self.http_header_timeout,
                d.http_header_timeout_ms,
                "http-header-timeout",
            )?,
            http_body_timeout_ms: dur(
                self.http_body_timeout,
                d.http_body_timeout_ms,
                "http-body-timeout",
            )?,
            auth_file: self.auth_file,
            tls: match (self.tls_cert, self.tls_key, self.tls_client_ca) {
                (None, None, None) => None,
                (Some(cert), Some(key), client_ca) => Some(crate::tls::TlsFiles {
                    cert,
                    key,
                    client_ca,
                }),
                _ => {
                    bail!("TLS needs both tls-cert and tls-key (and tls-client-ca only with them)")
                }
            },
            query_timeout_ms: dur(self.query_timeout, d.query_timeout_ms, "query-timeout")?,
            query_max_series: self.query_max_series.unwrap_or(d.query_max_series),
            query_max_memory: self.query_max_memory.unwrap_or(d.query_max_memory),
            max_concurrent_queries: self
                .max_concurrent_queries
                .unwrap_or(d.max_concurrent_queries),
            live_max_per_client: self.live_max_per_client.unwrap_or(d.live_max_per_client),
            max_connections: self.max_connections.unwrap_or(d.max_connections).max(1),
            cluster,
        };
        if 86_400_000 % cfg.step_ms != 0 {
            bail!(
                "invalid step {} ms: a step must divide one day evenly (e.g. 10s, 1m, 5m)",
                cfg.step_ms
            );
        }
        if cfg.retention_ms < cfg.step_ms {
            bail!(
                "invalid retention {} ms: shorter than one step ({} ms)",
                cfg.retention_ms,
                cfg.step_ms
            );
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [
            ("60s", 60_000),
            ("1m", 60_000),
            ("6h", 21_600_000),
            ("500ms", 500),
            ("PT1M", 60_000),
            ("PT1H30M", 5_400_000),
            ("1w", 604_800_000),
        ] {
            assert_eq!(parse_duration_ms(s).unwrap(), ms, "{s}");
        }
        for bad in [
            "",
            "60",
            "m",
            "1x",
            "-5s",
            "0s",
            "PT",
            "99999999999999999999s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn layers_override_in_order() {
        let file: ConfigLayer =
            toml::from_str("step = \"10s\"\nretention = \"2h\"\nhttp-addr = \"127.0.0.1:9000\"")
                .unwrap();
        let flags = ConfigLayer {
            http_addr: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        let cfg = flags.over(file).resolve().unwrap();
        assert_eq!(cfg.http_addr.port(), 9001);
        assert_eq!(cfg.step_ms, 10_000);
        assert_eq!(cfg.retention_ms, 7_200_000);
        assert_eq!(cfg.grpc_addr.port(), 4317);
    }

    #[test]
    fn bad_values_say_what() {
        let err = ConfigLayer {
            step: Some("7s".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("divide one day"), "{err:#}");
        let err = toml::from_str::<ConfigLayer>("stepp = \"1m\"").unwrap_err();
        assert!(err.to_string().contains("stepp"), "{err}");
    }
}
