//! Cluster mode, its first layer: a node joins a cluster that runs on NATS JetStream. It
//! connects (retrying for as long as NATS is unreachable, and saying so on `/healthz`),
//! checks what the cluster fixed at its creation (the partition count: a node started with
//! another count stops with an error naming both), and keeps a record of itself, renewed
//! every few seconds, in a key-value bucket whose entries expire: the cluster's membership
//! (`GET /api/v1/cluster`).
//!
//! Once joined, writes end at JetStream (`log.rs`): a gateway publishes each batch to the
//! partitions' replicated streams and acknowledges it when JetStream has, and every store
//! node applies every stream into its in-memory store, so each is a full replica that a
//! restart rebuilds from the log. Partition ownership (each partition on `--replicas`
//! nodes), snapshots and queries merged across nodes are the next layers (issue 13). NATS
//! gives the replication, leases and membership: Argus runs no consensus of its own.

pub mod books;
pub mod live;
pub mod log;
pub mod message;
pub mod placement;
pub mod query;
pub mod tags;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use argus_tsdb::{Store, StoreConfig};
use async_nats::jetstream::{self, kv};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::json;

use self::log::PartitionLog;

/// Partitions of a new cluster when `--partitions` is not given.
pub const DEFAULT_PARTITIONS: u32 = 64;
/// How often partitions are snapshotted when `--snapshot-interval` is not given (as a
/// single node's store): a new owner replays at most about this much of the log.
const DEFAULT_SNAPSHOT_EVERY: Duration = Duration::from_secs(15 * 60);

/// Store nodes per partition when `--replicas` is not given.
pub const DEFAULT_REPLICAS: u32 = 2;
/// Most partitions a cluster may have (each becomes a subject, a consumer and a snapshot).
pub const MAX_PARTITIONS: u32 = 4096;
/// The bucket of what is fixed when the cluster is created.
const CLUSTER_BUCKET: &str = "argus_cluster";
const CLUSTER_KEY: &str = "config";
/// The controller's lease, and the partition map it writes.
const CONTROLLER_KEY: &str = "controller";
const MAP_KEY: &str = "partition_map";
/// How long a controller's lease lasts unless renewed (every heartbeat).
const LEASE_MS: i64 = 10_000;
/// How long a request about buckets, streams and consumers may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a leaving node waits for its partitions' new owners.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(120);
/// The bucket of live nodes: a record not renewed within `NODE_TTL` expires.
const NODES_BUCKET: &str = "argus_nodes";
const NODE_TTL: Duration = Duration::from_secs(15);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);
/// How long one connection attempt may take before the next is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The cluster settings as configured (flags, `ARGUS_*`, TOML), before they are checked.
#[derive(Debug, Default)]
pub struct ClusterLayer {
    pub urls: Option<String>,
    pub node_id: Option<String>,
    pub roles: Option<String>,
    pub partitions: Option<u32>,
    pub replicas: Option<u32>,
    pub snapshot_interval: Option<String>,
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    pub nats_token: Option<String>,
    pub nats_ca: Option<PathBuf>,
    pub peer_ca: Option<PathBuf>,
    /// Whether this node serves its HTTP API over TLS (`--tls-cert`).
    pub serves_https: bool,
}

/// How a node joins its cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The NATS servers, tried in turn.
    pub urls: Vec<String>,
    /// Empty until the HTTP port is bound, when not given.
    pub node_id: String,
    pub roles: Roles,
    /// Partitions, if this node creates the cluster; checked against the cluster's otherwise.
    pub partitions: u32,
    pub replicas: u32,
    /// How often a store node snapshots the partitions it owns first.
    pub snapshot_every: Duration,
    pub auth: NatsAuth,
    /// CA of the NATS servers' certificates: TLS is then required.
    pub ca: Option<PathBuf>,
    /// CA of the other nodes' HTTPS certificates, for fanned-out queries.
    pub peer_ca: Option<PathBuf>,
    /// Whether this node serves its HTTP API over TLS, as its record tells the others.
    pub https: bool,
}

/// How a node proves itself to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
}

impl std::fmt::Debug for NatsAuth {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => f.write_str("None"),
            NatsAuth::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            NatsAuth::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// What a node does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Takes writes from agents and clients.
    pub gateway: bool,
    /// Owns partitions.
    pub store: bool,
    /// Answers the HTTP query APIs and live queries.
    pub query: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        gateway: true,
        store: true,
        query: true,
    };

    /// `gateway,store,query` or any non-empty subset.
    pub fn parse(s: &str) -> anyhow::Result<Roles> {
        let mut roles = Roles {
            gateway: false,
            store: false,
            query: false,
        };
        for name in s.split(',').map(str::trim) {
            match name {
                "gateway" => roles.gateway = true,
                "store" => roles.store = true,
                "query" => roles.query = true,
                other => {
                    bail!("invalid roles {s:?}: {other:?} is not a role (gateway, store, query)")
                }
            }
        }
        Ok(roles)
    }

    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.gateway, "gateway"),
            (self.store, "store"),
            (self.query, "query"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// A node id is a key of the membership bucket: letters, digits, `-` and `_`.
fn check_node_id(id: &str) -> anyhow::Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        bail!(
            "invalid node-id {id:?}: 1 to 64 letters, digits, '-' or '_' (it names the node \
             in the cluster's membership)"
        );
    }
    Ok(())
}

/// The host's name, for the default node id.
fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(48)
        .collect();
    if name.is_empty() {
        "argus".to_string()
    } else {
        name
    }
}

impl ClusterSettings {
    /// Checks the configured settings; `None` without `--cluster` (a single node), and an
    /// error if a cluster-only setting is given without it.
    pub fn resolve(layer: ClusterLayer) -> anyhow::Result<Option<Self>> {
        let Some(urls) = layer.urls else {
            let stray = [
                ("node-id", layer.node_id.is_some()),
                ("roles", layer.roles.is_some()),
                ("partitions", layer.partitions.is_some()),
                ("replicas", layer.replicas.is_some()),
                ("nats-user", layer.nats_user.is_some()),
                ("nats-password", layer.nats_password.is_some()),
                ("nats-token", layer.nats_token.is_some()),
                ("nats-ca", layer.nats_ca.is_some()),
                ("peer-ca", layer.peer_ca.is_some()),
            ];
            if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                bail!("{name} is a cluster setting: it needs cluster (--cluster nats://…)");
            }
            return Ok(None);
        };
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
            .collect();
        if urls.is_empty() {
            bail!("invalid cluster \"\": expected NATS URLs such as nats://127.0.0.1:4222");
        }
        for url in &urls {
            url.parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| {
                    format!("invalid cluster URL {url:?}: expected nats://HOST:PORT")
                })?;
        }
        // Without --node-id: the host name and the HTTP port, filled in once the port is
        // bound (it may be 0 here).
        let node_id = layer.node_id.unwrap_or_default();
        if !node_id.is_empty() {
            check_node_id(&node_id)?;
        }
        let roles = match layer.roles {
            Some(s) => Roles::parse(&s)?,
            None => Roles::ALL,
        };
        let partitions = layer.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if partitions == 0 || partitions > MAX_PARTITIONS {
            bail!("invalid partitions {partitions}: from 1 to {MAX_PARTITIONS}");
        }
        let replicas = layer.replicas.unwrap_or(DEFAULT_REPLICAS);
        if replicas == 0 {
            bail!("invalid replicas 0: each partition needs at least one store node");
        }
        let snapshot_every = match &layer.snapshot_interval {
            Some(s) => argus_mql::duration::parse_positive_ms(s)
                .map(|ms| Duration::from_millis(ms as u64))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("invalid snapshot-interval {s:?}"))?,
            None => DEFAULT_SNAPSHOT_EVERY,
        };
        let auth = match (layer.nats_user, layer.nats_password, layer.nats_token) {
            (None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None) => NatsAuth::UserPassword { user, password },
            (None, None, Some(token)) => NatsAuth::Token(token),
            (_, _, Some(_)) => bail!("nats-token and nats-user/nats-password exclude each other"),
            _ => bail!("nats-user and nats-password go together"),
        };
        if let Some(ca) = &layer.peer_ca {
            argus_proto::http_client::tls_config(Some(ca))
                .with_context(|| format!("invalid peer-ca {}", ca.display()))?;
        }
        if layer.serves_https && layer.peer_ca.is_none() {
            bail!(
                "a cluster node serving HTTPS (tls-cert) asks the other nodes over HTTPS: \
                 give peer-ca, the PEM CA that signed their certificates"
            );
        }
        Ok(Some(ClusterSettings {
            urls,
            node_id,
            roles,
            partitions,
            replicas,
            snapshot_every,
            auth,
            ca: layer.nats_ca,
            peer_ca: layer.peer_ca,
            https: layer.serves_https,
        }))
    }

    fn connect_options(&self) -> async_nats::ConnectOptions {
        let mut options = async_nats::ConnectOptions::new()
            .name(format!("argus {}", self.node_id))
            .connection_timeout(CONNECT_TIMEOUT)
            // A dead server or client is noticed in seconds, not NATS's default minutes.
            .ping_interval(Duration::from_secs(5));
        options = match &self.auth {
            NatsAuth::None => options,
            NatsAuth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            NatsAuth::Token(token) => options.token(token.clone()),
        };
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        options
    }
}

/// What a cluster fixes when it is created.
#[derive(Debug, Serialize, Deserialize)]
struct ClusterRecord {
    partitions: u32,
    /// The streams the partitions are spread over. (None: a record written before the
    /// count was fixed, whose cluster has the count that code gave it.)
    #[serde(default)]
    streams: Option<u32>,
    /// The store's step and retention: every node applies the log alike. (0: a record
    /// written before they were fixed, not checked.)
    #[serde(default)]
    step_ms: i64,
    #[serde(default)]
    retention_ms: i64,
    created_by: String,
    created_at_ms: i64,
}

/// A live node, as it describes itself in the membership bucket.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NodeRecord {
    id: String,
    roles: Vec<String>,
    http: String,
    /// Whether `http` serves HTTPS (a record without it: plain HTTP).
    #[serde(default)]
    https: bool,
    grpc: String,
    started_at_ms: i64,
    heartbeat_at_ms: i64,
    /// The partitions this node applies and has caught up with: it answers for them.
    #[serde(default)]
    serving: Vec<u32>,
}

/// The controller's lease: the node that computes the partition map until `until_ms`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Lease {
    node: String,
    until_ms: i64,
}

/// Which store nodes own each partition, as the controller last wrote it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct PartitionMap {
    version: u64,
    controller: String,
    /// Per partition, its owners' ids.
    owners: Vec<Vec<String>>,
}

/// Where the node stands with its cluster.
#[derive(Clone, Debug)]
enum Readiness {
    Connecting {
        attempts: u64,
        last_error: String,
    },
    /// The bucket handle is large (1.5 kB); boxed, the state stays small.
    Ready {
        partitions: u32,
        nodes: Box<kv::Store>,
        log: Arc<PartitionLog>,
        /// The bucket of the cluster's settings, the controller's lease and the map.
        cluster: Box<kv::Store>,
    },
}

/// Why joining did not work.
enum JoinError {
    /// NATS could not be reached or did not answer: try again.
    Unreachable(String),
    /// The cluster refuses this node as configured: retrying cannot help.
    Refused(anyhow::Error),
}

/// What a store node answers from: its store, the partitions of its series as known, and
/// the partitions asked for that it does not serve.
pub type Answering = (Arc<Store>, Arc<query::PartitionCache>, Vec<u32>);

/// This node's membership: created at start, shared with the HTTP routes.
pub struct Membership {
    settings: ClusterSettings,
    http: String,
    grpc: String,
    started_at_ms: i64,
    state: Mutex<Readiness>,
    /// The store a store node applies the log into; `None` on other nodes.
    store: Option<Arc<Store>>,
    /// The partitions of the store's series, as queries learn them.
    partition_cache: Arc<query::PartitionCache>,
    /// How fanned-out queries reach nodes serving HTTPS (`--peer-ca`).
    peer_tls: query::PeerTls,
    /// When this node last started snapshotting its partitions, and whether it still is.
    last_snapshot: Mutex<Option<Instant>>,
    snapshotting: Arc<std::sync::atomic::AtomicBool>,
    /// The store's step and retention, which the cluster fixes at its creation.
    store_config: StoreConfig,
    /// Live queries, shared with the other nodes once joined.
    live: Arc<crate::live::LiveHub>,
    live_started: std::sync::atomic::AtomicBool,
    pub live_stats: Arc<live::LiveBridgeStats>,
    /// The live nodes as last read from the membership bucket (every heartbeat).
    peers: Mutex<Vec<NodeRecord>>,
    /// The partition map as last read, and who holds the controller's lease.
    map: Mutex<Option<PartitionMap>>,
    controller: Mutex<Option<String>>,
    /// Set when the node is leaving: its record is no longer renewed.
    leaving: std::sync::atomic::AtomicBool,
    /// Partitions this node holds but no longer owns, since when their owners all serve
    /// them: let go only after query nodes have had time to see that.
    handed: Mutex<std::collections::HashMap<u32, Instant>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("node_id", &self.settings.node_id)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Membership {
    /// `http` and `grpc` are the bound addresses; the default node id takes the HTTP port.
    /// A store node applies the log into `store`; its step and retention must be the
    /// cluster's.
    pub fn new(
        mut settings: ClusterSettings,
        http: SocketAddr,
        grpc: SocketAddr,
        store: Arc<Store>,
        live: Arc<crate::live::LiveHub>,
    ) -> Arc<Self> {
        if settings.node_id.is_empty() {
            settings.node_id = format!("{}-{}", host_name(), http.port());
        }
        let (http, grpc) = (http.to_string(), grpc.to_string());
        Arc::new(Membership {
            http,
            grpc,
            started_at_ms: now_ms(),
            state: Mutex::new(Readiness::Connecting {
                attempts: 0,
                last_error: "not tried yet".into(),
            }),
            store_config: store.config(),
            live,
            live_started: Default::default(),
            live_stats: Default::default(),
            peers: Mutex::new(Vec::new()),
            map: Mutex::new(None),
            controller: Mutex::new(None),
            leaving: Default::default(),
            handed: Default::default(),
            store: settings.roles.store.then_some(store),
            partition_cache: Default::default(),
            peer_tls: match &settings.peer_ca {
                Some(ca) => argus_proto::http_client::tls_config(Some(ca))
                    .map_err(|e| format!("the CA in peer-ca {}: {e:#}", ca.display())),
                None => Err("give it peer-ca, the CA that signed the nodes' certificates".into()),
            },
            last_snapshot: Mutex::new(None),
            snapshotting: Default::default(),
            settings,
        })
    }

    /// Whether this node holds the controller's lease (as of its last heartbeat).
    pub fn is_controller(&self) -> bool {
        self.controller.lock().as_deref() == Some(self.settings.node_id.as_str())
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// The log, once the node has joined; otherwise why a write cannot be taken now.
    pub fn log(&self) -> Result<Arc<PartitionLog>, String> {
        match &*self.state.lock() {
            Readiness::Ready { log, .. } => Ok(log.clone()),
            Readiness::Connecting { .. } => Err(self
                .readiness()
                .err()
                .unwrap_or_else(|| "not joined to the cluster".into())),
        }
    }

    /// A graph request's fan-out over the store nodes, once the node has joined (`None`
    /// before: the query runs on this node's own store).
    pub fn fanout(
        &self,
        authorization: Option<String>,
        deny_partial: bool,
        limits: argus_query::Limits,
        timeout: Duration,
    ) -> Option<Arc<query::ClusterFanout>> {
        let (partitions, log) = match &*self.state.lock() {
            Readiness::Ready {
                partitions, log, ..
            } => (*partitions, log.clone()),
            Readiness::Connecting { .. } => return None,
        };
        let serving = |list: &[u32]| {
            let mut out = vec![false; partitions as usize];
            for &p in list {
                if let Some(slot) = out.get_mut(p as usize) {
                    *slot = true;
                }
            }
            out
        };
        let own = &self.settings.node_id;
        let mut peers: Vec<query::Peer> = self
            .peers
            .lock()
            .iter()
            .filter(|n| n.roles.iter().any(|r| r == "store") && n.id != *own)
            .map(|n| query::Peer {
                id: n.id.clone(),
                http: n.http.clone(),
                https: n.https,
                serving: serving(&n.serving),
            })
            .collect();
        // This node's own partitions as they are now, not as its last record said.
        if self.store.is_some() {
            peers.push(query::Peer {
                id: own.clone(),
                http: self.http.clone(),
                https: self.settings.https,
                serving: serving(&log.serving()),
            });
        }
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Some(Arc::new(query::ClusterFanout {
            peers,
            own: own.clone(),
            local: self
                .store
                .clone()
                .map(|store| (store, self.partition_cache.clone())),
            partitions,
            runtime: tokio::runtime::Handle::try_current().ok()?,
            authorization,
            peer_tls: self.peer_tls.clone(),
            deny_partial,
            timeout,
            limits,
            missing: Default::default(),
        }))
    }

    /// Whether this node can answer a partial request now: a store node, joined, of the
    /// same partition count; with the asked partitions it does not serve (not held, or
    /// still replaying), which the asking node gets elsewhere. `Err` says why not at all.
    pub fn can_answer(&self, of: u32, asked: &[u32]) -> Result<Answering, String> {
        let Some(store) = &self.store else {
            return Err(format!("{} is not a store node", self.settings.node_id));
        };
        match &*self.state.lock() {
            Readiness::Ready {
                partitions, log, ..
            } => {
                if *partitions != of {
                    return Err(format!(
                        "asked about {of} partitions; this cluster has {partitions}"
                    ));
                }
                let serving = log.serving();
                let unserved: Vec<u32> = asked
                    .iter()
                    .copied()
                    .filter(|p| !serving.contains(p))
                    .collect();
                if !asked.is_empty() && unserved.len() == asked.len() {
                    return Err(format!(
                        "{} serves none of the partitions asked (not held, or still replaying)",
                        self.settings.node_id
                    ));
                }
                Ok((store.clone(), self.partition_cache.clone(), unserved))
            }
            Readiness::Connecting { .. } => Err(format!(
                "{} has not joined its cluster",
                self.settings.node_id
            )),
        }
    }

    /// `Ok` when the node has joined; otherwise why not, for `/healthz`.
    pub fn readiness(&self) -> Result<(), String> {
        match &*self.state.lock() {
            Readiness::Ready { .. } => Ok(()),
            Readiness::Connecting {
                attempts,
                last_error,
            } => Err(format!(
                "not joined to the cluster at {}: {last_error} (attempt {attempts}, retrying)",
                self.settings.urls.join(",")
            )),
        }
    }

    /// One attempt to join, before the node serves: a cluster that refuses this node stops
    /// it here, before it listens; an unreachable NATS leaves it to `run`'s retries.
    pub async fn first_attempt(&self) -> anyhow::Result<()> {
        match self.join().await {
            Ok(()) => Ok(()),
            Err(JoinError::Refused(e)) => Err(e),
            Err(JoinError::Unreachable(why)) => {
                tracing::warn!(reason = %why, "NATS unreachable at start; retrying");
                Ok(())
            }
        }
    }

    /// Joins (retrying while NATS is unreachable), then renews this node's record for as
    /// long as the server runs. Returns only when the cluster refuses the node.
    pub async fn run(self: Arc<Self>) -> anyhow::Error {
        let mut backoff = Duration::from_millis(250);
        loop {
            let nodes = match &*self.state.lock() {
                Readiness::Ready {
                    nodes,
                    cluster,
                    log,
                    ..
                } => Some((nodes.clone(), cluster.clone(), log.clone())),
                Readiness::Connecting { .. } => None,
            };
            let pause = match nodes {
                None => match self.join().await {
                    Ok(()) => {
                        backoff = Duration::from_millis(250);
                        // Right away: the first queries need the other nodes.
                        Duration::ZERO
                    }
                    Err(JoinError::Refused(e)) => return e,
                    Err(JoinError::Unreachable(why)) => {
                        tracing::warn!(reason = %why, "NATS unreachable; retrying");
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        backoff
                    }
                },
                Some(_) if self.leaving.load(std::sync::atomic::Ordering::Acquire) => {
                    HEARTBEAT_EVERY
                }
                Some((nodes, cluster, log)) => {
                    // The client reconnects by itself; a failed renewal only says so.
                    if let Err(e) = self.heartbeat(&nodes).await {
                        tracing::warn!(error = %e, "cluster heartbeat failed");
                    }
                    let peers = live_nodes(&nodes).await;
                    *self.peers.lock() = peers.clone();
                    if let Err(e) = self.control(&cluster, &peers).await {
                        tracing::warn!(error = %format!("{e:#}"), "the partition map could not be kept");
                    }
                    self.hold_partitions(&log, &peers);
                    self.snapshot_when_due(&log);
                    HEARTBEAT_EVERY
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// Starts snapshotting, in the background, the partitions this node owns first and
    /// serves, once `snapshot_every` has passed since the last round began (and it ended).
    fn snapshot_when_due(&self, log: &Arc<PartitionLog>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let mut last = self.last_snapshot.lock();
        if last.is_some_and(|t| t.elapsed() < self.settings.snapshot_every)
            || self
                .snapshotting
                .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        *last = Some(Instant::now());
        let me = &self.settings.node_id;
        let firsts: Vec<u32> = match &*self.map.lock() {
            Some(map) => map
                .owners
                .iter()
                .enumerate()
                .filter(|(_, owners)| owners.first() == Some(me))
                .map(|(p, _)| p as u32)
                .collect(),
            None => Vec::new(),
        };
        let (log, cache, busy) = (
            log.clone(),
            self.partition_cache.clone(),
            self.snapshotting.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let (mut written, mut bytes) = (0, 0);
            for p in firsts {
                match log.snapshot(p, &store, &cache).await {
                    Ok(Some((_, _, size))) => {
                        written += 1;
                        bytes += size;
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(partition = p, error = %format!("{e:#}"), "snapshot failed")
                    }
                }
            }
            if written > 0 {
                tracing::info!(
                    partitions = written,
                    bytes,
                    ms = started.elapsed().as_millis() as u64,
                    "partitions snapshotted"
                );
            }
            busy.store(false, std::sync::atomic::Ordering::Release);
        });
    }

    /// Leaves the cluster gracefully: drops this node's record, so the controller gives its
    /// partitions to others, and waits (at most `HANDOVER_TIMEOUT`) until their new owners
    /// serve every partition this node holds, applying and answering meanwhile.
    pub async fn leave(&self) {
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let Some((nodes, cluster, log)) = (match &*self.state.lock() {
            Readiness::Ready {
                nodes,
                cluster,
                log,
                ..
            } => Some((nodes.clone(), cluster.clone(), log.clone())),
            Readiness::Connecting { .. } => None,
        }) else {
            return;
        };
        let me = self.settings.node_id.clone();
        if let Err(e) = nodes.delete(&me).await {
            tracing::warn!(error = %e, "removing this node's record failed");
        }
        if self.store.is_none() {
            return;
        }
        let started = Instant::now();
        tracing::info!("leaving: handing this node's partitions over");
        loop {
            let peers: Vec<NodeRecord> = live_nodes(&nodes)
                .await
                .into_iter()
                .filter(|n| n.id != me)
                .collect();
            *self.peers.lock() = peers.clone();
            if let Err(e) = self.control(&cluster, &peers).await {
                tracing::warn!(error = %format!("{e:#}"), "the partition map could not be kept");
            }
            let map = self.map.lock().clone();
            let handed_over = map.is_some_and(|map| {
                log.held().iter().all(|&p| {
                    let owners = map.owners.get(p as usize).cloned().unwrap_or_default();
                    !owners.is_empty()
                        && owners.iter().all(|o| {
                            *o != me && peers.iter().any(|n| n.id == *o && n.serving.contains(&p))
                        })
                })
            });
            if handed_over {
                tracing::info!(
                    took_ms = started.elapsed().as_millis() as u64,
                    "partitions handed over"
                );
                return;
            }
            if started.elapsed() > HANDOVER_TIMEOUT {
                tracing::warn!("leaving before every partition was handed over");
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Takes or renews the controller's lease; as the controller, writes the partition map
    /// for the live store nodes when it changed. Every node then reads the map.
    async fn control(&self, cluster: &kv::Store, peers: &[NodeRecord]) -> anyhow::Result<()> {
        let me = &self.settings.node_id;
        let now = now_ms();
        let lease = Lease {
            node: me.clone(),
            until_ms: now + LEASE_MS,
        };
        let bytes = serde_json::to_vec(&lease).context("encoding the lease")?;
        let held = match cluster.entry(CONTROLLER_KEY).await? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let current: Option<Lease> = serde_json::from_slice(&entry.value).ok();
                match current {
                    Some(l) if l.node != *me && l.until_ms >= now => {
                        *self.controller.lock() = Some(l.node);
                        false
                    }
                    _ => cluster
                        .update(CONTROLLER_KEY, bytes.into(), entry.revision)
                        .await
                        .is_ok(),
                }
            }
            _ => cluster.create(CONTROLLER_KEY, bytes.into()).await.is_ok(),
        };
        if held {
            *self.controller.lock() = Some(me.clone());
            let stores: Vec<&str> = peers
                .iter()
                .filter(|n| n.roles.iter().any(|r| r == "store"))
                .map(|n| n.id.as_str())
                .collect();
            let owners = assign(&stores, self.partitions(), self.settings.replicas as usize);
            let current = cluster.entry(MAP_KEY).await?;
            let old: Option<PartitionMap> = current
                .as_ref()
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice(&e.value).ok());
            if old.as_ref().map(|m| &m.owners) != Some(&owners) && !stores.is_empty() {
                let map = PartitionMap {
                    version: old.as_ref().map_or(1, |m| m.version + 1),
                    controller: me.clone(),
                    owners,
                };
                let bytes = serde_json::to_vec(&map).context("encoding the partition map")?;
                match current {
                    Some(e) => cluster
                        .update(MAP_KEY, bytes.into(), e.revision)
                        .await
                        .map(|_| ())?,
                    None => cluster.create(MAP_KEY, bytes.into()).await.map(|_| ())?,
                }
                tracing::info!(
                    version = map.version,
                    stores = stores.len(),
                    "partition map written"
                );
            }
        }
        let map = cluster
            .get(MAP_KEY)
            .await?
            .and_then(|b| serde_json::from_slice::<PartitionMap>(&b).ok());
        *self.map.lock() = map;
        Ok(())
    }

    /// The partitions this store node applies: those the map gives it, and those it held
    /// whose new owners do not all serve them yet (a handover leaves no gap).
    fn hold_partitions(&self, log: &PartitionLog, peers: &[NodeRecord]) {
        let Some(store) = &self.store else {
            return;
        };
        let Some(map) = self.map.lock().clone() else {
            return;
        };
        let me = &self.settings.node_id;
        let serving =
            |node: &str, p: u32| peers.iter().any(|n| n.id == node && n.serving.contains(&p));
        let held_now: std::collections::BTreeSet<u32> = log.held().into_iter().collect();
        let mut hold = std::collections::BTreeSet::new();
        let mut handed = self.handed.lock();
        for (p, owners) in map.owners.iter().enumerate() {
            let p = p as u32;
            if owners.iter().any(|o| o == me) {
                handed.remove(&p);
                hold.insert(p);
                continue;
            }
            if !held_now.contains(&p) {
                continue;
            }
            // Held, no longer owned: kept until every owner serves it, and then for two
            // more heartbeats, so that every query node has seen them serve it.
            if !owners.iter().all(|o| serving(o, p)) {
                handed.remove(&p);
                hold.insert(p);
            } else if handed.entry(p).or_insert_with(Instant::now).elapsed() < 2 * HEARTBEAT_EVERY {
                hold.insert(p);
            } else {
                handed.remove(&p);
            }
        }
        drop(handed);
        log.hold(&hold, store, &self.partition_cache);
    }

    /// The cluster's partition count (as configured, until the node has joined).
    pub fn partitions(&self) -> u32 {
        match &*self.state.lock() {
            Readiness::Ready { partitions, .. } => *partitions,
            Readiness::Connecting { .. } => self.settings.partitions,
        }
    }

    fn record(&self) -> NodeRecord {
        NodeRecord {
            id: self.settings.node_id.clone(),
            roles: self
                .settings
                .roles
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            http: self.http.clone(),
            https: self.settings.https,
            grpc: self.grpc.clone(),
            started_at_ms: self.started_at_ms,
            heartbeat_at_ms: now_ms(),
            serving: match &*self.state.lock() {
                Readiness::Ready { log, .. } if self.store.is_some() => log.serving(),
                _ => Vec::new(),
            },
        }
    }

    async fn heartbeat(&self, nodes: &kv::Store) -> anyhow::Result<()> {
        let record = serde_json::to_vec(&self.record()).context("encoding the node record")?;
        nodes
            .put(&self.settings.node_id, record.into())
            .await
            .context("renewing this node's record")?;
        Ok(())
    }

    /// Connects, checks the cluster's fixed settings (creating them if this node is the
    /// first) and records this node.
    async fn join(&self) -> Result<(), JoinError> {
        let result = self.try_join().await;
        let mut state = self.state.lock();
        match &result {
            Ok((partitions, nodes, log, live_bucket, cluster)) => {
                // What the partition map gives this node (a restart: its partitions; a
                // new node: none until the controller adds it); with no map yet, every
                // partition.
                if let Some(store) = &self.store {
                    let me = &self.settings.node_id;
                    let held = match &*self.map.lock() {
                        Some(map) => map
                            .owners
                            .iter()
                            .enumerate()
                            .filter(|(_, o)| o.contains(me))
                            .map(|(p, _)| p as u32)
                            .collect(),
                        None => (0..*partitions).collect(),
                    };
                    log.hold(&held, store, &self.partition_cache);
                }
                if !self
                    .live_started
                    .swap(true, std::sync::atomic::Ordering::AcqRel)
                {
                    tokio::spawn(live::start(
                        self.settings.node_id.clone(),
                        self.live.clone(),
                        log.client(),
                        live_bucket.clone(),
                        self.live_stats.clone(),
                    ));
                }
                *state = Readiness::Ready {
                    partitions: *partitions,
                    nodes: Box::new(nodes.clone()),
                    log: log.clone(),
                    cluster: Box::new(cluster.clone()),
                };
            }
            Err(JoinError::Unreachable(why)) => {
                let attempts = match &*state {
                    Readiness::Connecting { attempts, .. } => attempts + 1,
                    Readiness::Ready { .. } => 1,
                };
                *state = Readiness::Connecting {
                    attempts,
                    last_error: why.clone(),
                };
            }
            Err(JoinError::Refused(_)) => {}
        }
        result.map(|_| ())
    }

    #[allow(clippy::type_complexity)]
    async fn try_join(
        &self,
    ) -> Result<(u32, kv::Store, Arc<PartitionLog>, kv::Store, kv::Store), JoinError> {
        let s = &self.settings;
        let unreachable =
            |what: &str, e: &dyn std::fmt::Display| JoinError::Unreachable(format!("{what}: {e}"));
        let client = s
            .connect_options()
            .connect(s.urls.as_slice())
            .await
            .map_err(|e| unreachable("connecting", &e))?;
        // Buckets are replicated like the data: three copies when the NATS cluster has
        // three servers or more.
        let servers = client.server_info().connect_urls.len().max(s.urls.len());
        let replicas = servers.clamp(1, 3);
        // Buckets, streams and consumers get a few seconds (a busy or electing cluster);
        // publishes get their own, shorter, timeout (see `log.rs`).
        let js = jetstream::ContextBuilder::new()
            .timeout(ADMIN_TIMEOUT)
            .build(client);
        let cluster = bucket(&js, CLUSTER_BUCKET, replicas, None)
            .await
            .map_err(|e| unreachable("opening the cluster bucket", &e))?;
        let (partitions, streams) = self.agree_on_partitions(&cluster).await?;
        if let Ok(Some(bytes)) = cluster.get(MAP_KEY).await {
            *self.map.lock() = serde_json::from_slice::<PartitionMap>(&bytes).ok();
        }
        let nodes = bucket(&js, NODES_BUCKET, replicas, Some(NODE_TTL))
            .await
            .map_err(|e| unreachable("opening the membership bucket", &e))?;
        // The log keeps an hour past the retention, so a replaying node finds all it holds.
        let log = PartitionLog::open(
            js.clone(),
            (partitions, streams),
            replicas,
            Duration::from_millis(self.store_config.retention_ms.max(0) as u64)
                + Duration::from_secs(3600),
        )
        .await
        .map_err(|e| unreachable("opening the partitions' streams", &format!("{e:#}")))?;
        let live_bucket = bucket(
            &js,
            live::LIVE_BUCKET,
            replicas,
            Some(live::ANNOUNCEMENT_TTL),
        )
        .await
        .map_err(|e| unreachable("opening the live queries' bucket", &e))?;
        self.heartbeat(&nodes)
            .await
            .map_err(|e| unreachable("recording this node", &format!("{e:#}")))?;
        tracing::info!(
            node = %s.node_id,
            partitions,
            "joined the cluster"
        );
        Ok((partitions, nodes, Arc::new(log), live_bucket, cluster))
    }

    /// The first node fixes the partition count; every later one must have the same.
    /// Returns it with the cluster's stream count.
    async fn agree_on_partitions(&self, cluster: &kv::Store) -> Result<(u32, u32), JoinError> {
        let s = &self.settings;
        let mine = ClusterRecord {
            partitions: s.partitions,
            streams: Some(log::stream_count(s.partitions)),
            step_ms: self.store_config.step_ms,
            retention_ms: self.store_config.retention_ms,
            created_by: s.node_id.clone(),
            created_at_ms: now_ms(),
        };
        let bytes = serde_json::to_vec(&mine).expect("a plain struct encodes");
        match cluster.create(CLUSTER_KEY, bytes.into()).await {
            Ok(_) => {
                tracing::info!(partitions = s.partitions, "created the cluster");
                return Ok((s.partitions, log::stream_count(s.partitions)));
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(JoinError::Unreachable(format!(
                    "recording the cluster's settings: {e}"
                )));
            }
        }
        let stored = cluster
            .get(CLUSTER_KEY)
            .await
            .map_err(|e| JoinError::Unreachable(format!("reading the cluster's settings: {e}")))?
            .ok_or_else(|| {
                JoinError::Unreachable("the cluster's settings vanished while read".into())
            })?;
        let theirs: ClusterRecord = serde_json::from_slice(&stored).map_err(|e| {
            JoinError::Refused(anyhow::anyhow!(
                "the cluster's settings in NATS (bucket {CLUSTER_BUCKET}, key {CLUSTER_KEY}) \
                 are not Argus's: {e}"
            ))
        })?;
        if theirs.partitions != s.partitions {
            return Err(JoinError::Refused(anyhow::anyhow!(
                "this node is set to {} partitions (--partitions, default \
                 {DEFAULT_PARTITIONS}), but the cluster at {} has {} partitions, fixed when {} \
                 created it; start the node with --partitions {}",
                s.partitions,
                s.urls.join(","),
                theirs.partitions,
                theirs.created_by,
                theirs.partitions
            )));
        }
        let fixed = [
            ("step", "--step", self.store_config.step_ms, theirs.step_ms),
            (
                "retention",
                "--retention",
                self.store_config.retention_ms,
                theirs.retention_ms,
            ),
        ];
        for (what, flag, mine, cluster) in fixed {
            if cluster != 0 && mine != cluster {
                return Err(JoinError::Refused(anyhow::anyhow!(
                    "this node's {what} is {} ({flag}), but the cluster at {} stores with a \
                     {what} of {}, fixed when {} created it; start the node with {flag} {}",
                    duration_text(mine),
                    s.urls.join(","),
                    duration_text(cluster),
                    theirs.created_by,
                    duration_text(cluster),
                )));
            }
        }
        let streams = theirs
            .streams
            .unwrap_or_else(|| log::streams_before_recorded(theirs.partitions));
        Ok((theirs.partitions, streams))
    }

    /// `GET /api/v1/cluster`: this node's view of the cluster.
    pub async fn describe(&self) -> serde_json::Value {
        let s = &self.settings;
        let (ready, partitions, nodes, log) = match &*self.state.lock() {
            Readiness::Ready {
                partitions,
                nodes,
                log,
                ..
            } => (
                true,
                Some(*partitions),
                Some(nodes.clone()),
                Some(log.clone()),
            ),
            Readiness::Connecting { .. } => (false, None, None, None),
        };
        let mut members = Vec::new();
        if let Some(nodes) = nodes {
            members = live_nodes(&nodes).await;
        }
        let map = self.map.lock().clone();
        let streams = match &log {
            Some(log) => log.describe_streams().await,
            None => Vec::new(),
        };
        let now = now_ms();
        json!({
            "mode": "cluster",
            "node": s.node_id,
            "roles": s.roles.names(),
            "ready": ready,
            "status": self.readiness().err(),
            "nats": s.urls,
            "partitions": partitions,
            "replicas": s.replicas,
            "nodes": members.iter().map(|n| json!({
                "id": n.id,
                "roles": n.roles,
                "http": n.http,
                "grpc": n.grpc,
                "started_at_ms": n.started_at_ms,
                "heartbeat_age_ms": now - n.heartbeat_at_ms,
            })).collect::<Vec<_>>(),
            "log": log.map(|log| log_json(&log, &streams, map.as_ref(), self.store.is_some())),
            "controller": self.controller.lock().clone(),
            "live": {
                "forwarded_events": self.live_stats.forwarded.load(std::sync::atomic::Ordering::Relaxed),
                "dropped_events": self.live_stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
                "received_events": self.live_stats.received.load(std::sync::atomic::Ordering::Relaxed),
            },
        })
    }

    /// `/metrics` lines: whether the node has joined, and where it stands in the log.
    pub fn render_metrics(&self) -> String {
        let (ready, attempts, log) = match &*self.state.lock() {
            Readiness::Ready { log, .. } => (1, 0, Some(log.clone())),
            Readiness::Connecting { attempts, .. } => (0, *attempts, None),
        };
        let mut out = format!(
            "# HELP argus_cluster_ready Whether this node has joined its cluster (1) or is still \
             connecting (0).\n# TYPE argus_cluster_ready gauge\nargus_cluster_ready{{node=\"{node}\"}} {ready}\n\
             # HELP argus_cluster_join_attempts Failed attempts to join since the last success.\n\
             # TYPE argus_cluster_join_attempts gauge\nargus_cluster_join_attempts{{node=\"{node}\"}} {attempts}\n",
            node = self.settings.node_id
        );
        if let Some(log) = log {
            log_metrics(&mut out, &self.settings.node_id, &log, self.store.is_some());
        }
        let live = &self.live_stats;
        out.push_str(
            "# HELP argus_cluster_live_events_total Live-query events this node forwarded to \
             other nodes' queries, dropped on the way (queue full), or received for its own.\n\
             # TYPE argus_cluster_live_events_total counter\n",
        );
        for (what, n) in [
            ("forwarded", &live.forwarded),
            ("dropped", &live.dropped),
            ("received", &live.received),
        ] {
            use std::fmt::Write;
            let _ = writeln!(
                out,
                "argus_cluster_live_events_total{{node=\"{}\",outcome=\"{what}\"}} {}",
                self.settings.node_id,
                n.load(std::sync::atomic::Ordering::Relaxed)
            );
        }
        out
    }
}

/// The log as `/api/v1/cluster` shows it: messages this node published; what NATS says of
/// each stream; and per partition its owners in the map and, on a store node, how far this
/// node has applied it.
fn log_json(
    log: &PartitionLog,
    states: &[Option<log::StreamState>],
    map: Option<&PartitionMap>,
    applies: bool,
) -> serde_json::Value {
    use std::sync::atomic::Ordering::Relaxed;
    json!({
        "published_messages": log.published.load(Relaxed),
        "duplicate_messages": log.duplicates.load(Relaxed),
        "caught_up": applies.then(|| log.caught_up()),
        "map_version": map.map(|m| m.version),
        "streams": (0..log.streams).map(|k| {
            let state = states.get(k as usize).cloned().flatten();
            json!({
                "stream": log::stream_name(k),
                "leader": state.as_ref().and_then(|t| t.leader.clone()),
                "last_sequence": state.as_ref().map(|t| t.last_sequence),
                "messages": state.as_ref().map(|t| t.messages),
                "bytes": state.as_ref().map(|t| t.bytes),
            })
        }).collect::<Vec<_>>(),
        "partitions": log.progress.iter().enumerate().map(|(p, s)| {
            let applying = s.applying.load(Relaxed);
            json!({
                "partition": p,
                "owners": map.and_then(|m| m.owners.get(p)),
                "applying": applies.then_some(applying),
                "applied_sequence": (applies && applying).then(|| s.applied.load(Relaxed)),
                "lag": (applies && applying).then(|| s.pending.load(Relaxed)),
                "caught_up": (applies && applying).then(|| s.caught_up.load(Relaxed)),
                "applied_messages": applies.then(|| s.messages.load(Relaxed)),
                "applied_samples": applies.then(|| s.samples.load(Relaxed)),
                "catch_up_ms": (applies && applying).then(|| s.catch_up_ms.load(Relaxed)),
                // The snapshot this node restored the partition from, and the last it wrote.
                "restored_sequence": applies.then(|| s.restored_sequence.load(Relaxed)),
                "restored_series": applies.then(|| s.restored_series.load(Relaxed)),
                "restore_ms": applies.then(|| s.restore_ms.load(Relaxed)),
                "snapshot_sequence": applies.then(|| s.snapshot_sequence.load(Relaxed)),
            })
        }).collect::<Vec<_>>(),
    })
}

fn log_metrics(out: &mut String, node: &str, log: &PartitionLog, applies: bool) {
    use std::fmt::Write;
    use std::sync::atomic::Ordering::Relaxed;
    let _ = write!(
        out,
        "# HELP argus_cluster_published_messages_total Partition messages this node published \
         and JetStream acknowledged.\n\
         # TYPE argus_cluster_published_messages_total counter\n\
         argus_cluster_published_messages_total{{node=\"{node}\"}} {}\n\
         # HELP argus_cluster_duplicate_messages_total Published messages JetStream already had \
         (resends).\n\
         # TYPE argus_cluster_duplicate_messages_total counter\n\
         argus_cluster_duplicate_messages_total{{node=\"{node}\"}} {}\n",
        log.published.load(Relaxed),
        log.duplicates.load(Relaxed),
    );
    if !applies {
        return;
    }
    let held: Vec<(usize, &log::PartitionProgress)> = log
        .progress
        .iter()
        .enumerate()
        .filter(|(_, p)| p.applying.load(Relaxed))
        .map(|(i, p)| (i, &**p))
        .collect();
    out.push_str(
        "# HELP argus_cluster_applied_sequence The last stream sequence of each partition this \
         node holds that it applied.\n\
         # TYPE argus_cluster_applied_sequence gauge\n",
    );
    for (p, s) in &held {
        let _ = writeln!(
            out,
            "argus_cluster_applied_sequence{{node=\"{node}\",partition=\"{p}\"}} {}",
            s.applied.load(Relaxed)
        );
    }
    out.push_str(
        "# HELP argus_cluster_pending_messages Messages of each partition this node holds not \
         yet applied.\n\
         # TYPE argus_cluster_pending_messages gauge\n",
    );
    for (p, s) in &held {
        let _ = writeln!(
            out,
            "argus_cluster_pending_messages{{node=\"{node}\",partition=\"{p}\"}} {}",
            s.pending.load(Relaxed)
        );
    }
    let _ = write!(
        out,
        "# HELP argus_cluster_partitions_held Partitions this node applies, and those it has \
         caught up with (it answers queries for them).\n\
         # TYPE argus_cluster_partitions_held gauge\n\
         argus_cluster_partitions_held{{node=\"{node}\",state=\"applying\"}} {}\n\
         argus_cluster_partitions_held{{node=\"{node}\",state=\"serving\"}} {}\n",
        held.len(),
        log.serving().len()
    );
}

/// A duration as the flags take it: `1s`, `6h`, `90s`, `250ms`.
fn duration_text(ms: i64) -> String {
    match ms {
        0 => "0s".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// Owners per partition: the `replicas` store nodes that rank highest for it (rendezvous
/// hashing), so a node joining or leaving moves only the partitions it gains or held.
fn assign(stores: &[&str], partitions: u32, replicas: usize) -> Vec<Vec<String>> {
    let node_hash = |id: &str| {
        id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let hashes: Vec<u64> = stores.iter().map(|s| node_hash(s)).collect();
    (0..partitions)
        .map(|p| {
            let mut ranked: Vec<(u64, &str)> = stores
                .iter()
                .zip(&hashes)
                .map(|(s, h)| {
                    let salt = u64::from(p).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    (log::mix(h ^ salt), *s)
                })
                .collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            ranked
                .into_iter()
                .take(replicas.max(1))
                .map(|(_, s)| s.to_string())
                .collect()
        })
        .collect()
}

/// Opens a key-value bucket, creating it if missing.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    ttl: Option<Duration>,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js
        .create_key_value(kv::Config {
            bucket: name.to_string(),
            history: 1,
            max_age: ttl.unwrap_or_default(),
            num_replicas: replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(store) => Ok(store),
        // Another node created it meanwhile.
        Err(e) => js
            .get_key_value(name)
            .await
            .with_context(|| format!("creating the bucket {name}: {e}")),
    }
}

/// The nodes whose records have not expired, by id.
async fn live_nodes(nodes: &kv::Store) -> Vec<NodeRecord> {
    use tokio_stream::StreamExt;
    let started = Instant::now();
    let mut out = Vec::new();
    let Ok(mut keys) = nodes.keys().await else {
        return out;
    };
    while let Some(Ok(key)) = keys.next().await {
        if let Ok(Some(bytes)) = nodes.get(key).await
            && let Ok(record) = serde_json::from_slice::<NodeRecord>(&bytes)
        {
            out.push(record);
        }
        if started.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_keeps_the_stream_count_it_was_created_with() {
        // Written before the count was recorded: six streams, as the code then gave it.
        let old: ClusterRecord = serde_json::from_str(
            r#"{"partitions":64,"step_ms":60000,"retention_ms":21600000,"created_by":"a","created_at_ms":1}"#,
        )
        .unwrap();
        assert_eq!(old.streams, None);
        assert_eq!(log::streams_before_recorded(old.partitions), 6);
        assert_eq!(log::streams_before_recorded(4), 4);
        // New clusters record theirs: one stream per server of a three-server NATS cluster.
        assert_eq!(log::stream_count(64), 3);
        assert_eq!(log::stream_count(2), 2);
        let new = ClusterRecord {
            partitions: 64,
            streams: Some(log::stream_count(64)),
            step_ms: 60_000,
            retention_ms: 0,
            created_by: "a".into(),
            created_at_ms: 1,
        };
        let back: ClusterRecord =
            serde_json::from_slice(&serde_json::to_vec(&new).unwrap()).unwrap();
        assert_eq!(back.streams, Some(3));
    }

    fn layer(urls: &str) -> ClusterLayer {
        ClusterLayer {
            urls: Some(urls.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_node_serving_https_needs_the_peers_ca() {
        let serving = ClusterLayer {
            serves_https: true,
            ..layer("nats://127.0.0.1:4222")
        };
        let e = ClusterSettings::resolve(serving).unwrap_err().to_string();
        assert!(e.contains("give peer-ca"), "{e}");
        let missing = ClusterLayer {
            serves_https: true,
            peer_ca: Some("/nonexistent/ca.pem".into()),
            ..layer("nats://127.0.0.1:4222")
        };
        let e = format!("{:#}", ClusterSettings::resolve(missing).unwrap_err());
        assert!(e.contains("invalid peer-ca /nonexistent/ca.pem"), "{e}");
        let single = ClusterLayer {
            peer_ca: Some("/tmp/ca.pem".into()),
            ..Default::default()
        };
        let e = ClusterSettings::resolve(single).unwrap_err().to_string();
        assert!(e.contains("peer-ca is a cluster setting"), "{e}");
    }

    #[test]
    fn settings_default_and_check() {
        let s = ClusterSettings::resolve(layer("nats://127.0.0.1:4222, nats://127.0.0.1:4223"))
            .unwrap()
            .unwrap();
        assert_eq!(s.urls.len(), 2);
        assert_eq!(s.partitions, DEFAULT_PARTITIONS);
        assert_eq!(s.replicas, DEFAULT_REPLICAS);
        assert_eq!(s.roles, Roles::ALL);
        let m = Membership::new(
            s,
            "127.0.0.1:7101".parse().unwrap(),
            "127.0.0.1:4317".parse().unwrap(),
            Arc::new(Store::new(StoreConfig::default())),
            Arc::new(crate::live::LiveHub::default()),
        );
        assert!(m.node_id().ends_with("-7101"), "{}", m.node_id());
        assert!(
            ClusterSettings::resolve(ClusterLayer::default())
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_settings_say_what() {
        let err = |l: ClusterLayer| format!("{:#}", ClusterSettings::resolve(l).unwrap_err());
        let msg = err(ClusterLayer {
            partitions: Some(8),
            ..Default::default()
        });
        assert!(msg.contains("partitions is a cluster setting"), "{msg}");
        let msg = err(ClusterLayer {
            partitions: Some(0),
            ..layer("nats://127.0.0.1:4222")
        });
        assert!(msg.contains("invalid partitions 0"), "{msg}");
        let msg = err(ClusterLayer {
            roles: Some("gateway,cache".into()),
            ..layer("nats://127.0.0.1:4222")
        });
        assert!(msg.contains("\"cache\" is not a role"), "{msg}");
        let msg = err(ClusterLayer {
            node_id: Some("a.b".into()),
            ..layer("nats://127.0.0.1:4222")
        });
        assert!(msg.contains("invalid node-id"), "{msg}");
        let msg = err(ClusterLayer {
            nats_user: Some("u".into()),
            ..layer("nats://127.0.0.1:4222")
        });
        assert!(msg.contains("go together"), "{msg}");
        let msg = err(layer(" , "));
        assert!(msg.contains("invalid cluster"), "{msg}");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let auth = NatsAuth::UserPassword {
            user: "argus".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(!format!("{:?}", NatsAuth::Token("s3cret".into())).contains("s3cret"));
    }
}
