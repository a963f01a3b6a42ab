//! The server's shared state: what every HTTP route and gRPC service reaches through one
//! cloneable handle. It knows no protocol; the `http` and `grpc` shells take it.

use std::collections::HashMap;
use std::sync::Arc;

use argus_proto::v1::Hello;
use argus_tsdb::Store;
use parking_lot::Mutex;

use crate::auth::TokenStore;
use crate::cluster::Membership;
use crate::config::ServerConfig;
use crate::connections::Connections;
use crate::convert::RemoteWriteState;
use crate::events::EventHub;
use crate::live::LiveHub;
use crate::metrics::ServerMetrics;
use crate::resend::AgentRegistry;

/// Everything a request handler or a service may touch.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub cfg: Arc<ServerConfig>,
    pub metrics: Arc<ServerMetrics>,
    pub events: Arc<EventHub>,
    /// Batches already stored, per agent (resends are recognised).
    pub agents: Arc<AgentRegistry>,
    /// Agents with an open control stream, by id.
    pub connected: Arc<Mutex<HashMap<String, Hello>>>,
    pub remote_write: Arc<RemoteWriteState>,
    /// Bearer tokens, when `--auth-file` is set (see `auth.rs`).
    pub tokens: Arc<TokenStore>,
    /// Graph queries running at once (`--max-concurrent-queries`).
    pub query_permits: Arc<tokio::sync::Semaphore>,
    /// Open connections per listener (`--max-connections`).
    pub connections: Arc<Connections>,
    /// This node's membership of its cluster; `None` on a single node.
    pub cluster: Option<Arc<Membership>>,
}

impl AppState {
    pub fn new(cfg: ServerConfig, store: Arc<Store>, agents: AgentRegistry) -> Self {
        let query_permits = Arc::new(tokio::sync::Semaphore::new(
            cfg.max_concurrent_queries.max(1),
        ));
        let cfg_max_connections = cfg.max_connections;
        store.set_limits(argus_tsdb::SeriesLimits {
            max_series: cfg.max_series,
            max_series_per_name: cfg.max_series_per_metric,
        });
        AppState {
            events: Arc::new(EventHub::new(
                store.clone(),
                Arc::new(LiveHub::new(store.clock(), cfg.live_max_per_client)),
            )),
            store,
            cfg: Arc::new(cfg),
            metrics: Arc::new(ServerMetrics::default()),
            agents: Arc::new(agents),
            connected: Arc::new(Mutex::new(HashMap::new())),
            remote_write: Arc::new(RemoteWriteState::default()),
            tokens: Arc::new(TokenStore::default()),
            query_permits,
            connections: Arc::new(Connections::new(cfg_max_connections)),
            cluster: None,
        }
    }
}
