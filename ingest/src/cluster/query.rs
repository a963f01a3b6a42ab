//! Queries across the cluster, Atlas's way. The node a graph request reaches hands each
//! data expression to [`ClusterFanout`], which deals the partitions out over the live store
//! nodes, asks each (`GET /api/v1/cluster/partial`, or in process for its own store) for
//! its partial aggregate over the partitions it was given, and returns the parts to the
//! evaluation to merge (`argus_query::split`). A node that fails or has not caught up with
//! the log is skipped and its partitions go to the next node; partitions no node answered
//! for make the answer partial, and the graph says which (`deny_partial=1`: an error).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use argus_proto::http_client::{self, Endpoint};
use argus_query::Limits;
use argus_query::split::{Fanout, Partial, evaluate_partial};
use argus_tsdb::{Matcher, Postings, ReadRequest, SeriesId, SeriesSource, Store, Tags};
use parking_lot::Mutex;

pub use super::placement::PartitionCache;
use super::placement::partition_of;

/// The partitions a store node was asked for but does not serve (any more), which the
/// asking node gets from another.
pub const UNSERVED_HEADER: &str = "x-argus-unserved";

/// A partial answer may be this large (a `:by` over many groups, or `:all`).
const MAX_PARTIAL_BYTES: usize = 512 << 20;

/// An open HTTP/1.1 connection to another node.
type Connection = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// Connections to other nodes kept open between fan-outs (at most this many idle per node):
/// a query would otherwise open one per node it asks, a connect and a connection task each
/// time, which is much of what a small query costs on three nodes.
const IDLE_PER_NODE: usize = 8;

static IDLE: std::sync::LazyLock<Mutex<HashMap<String, Vec<Connection>>>> =
    std::sync::LazyLock::new(Default::default);

/// An idle connection to `endpoint` if one is open (true), or a new one (false), over TLS
/// with `tls` for `https://`.
async fn connection_to(
    endpoint: &Endpoint,
    tls: Option<&Arc<tokio_rustls::rustls::ClientConfig>>,
) -> Result<(Connection, bool), String> {
    loop {
        let idle = IDLE
            .lock()
            .get_mut(&pool_key(endpoint))
            .and_then(|open| open.pop());
        match idle {
            Some(c) if c.is_ready() => return Ok((c, true)),
            Some(_) => continue,
            None => break,
        }
    }
    let fresh = http_client::connect(endpoint, tls)
        .await
        .map_err(|e| format!("{e:#}"))?;
    Ok((fresh, false))
}

/// Connections are kept apart by scheme and address.
fn pool_key(endpoint: &Endpoint) -> String {
    let scheme = if endpoint.tls { "https" } else { "http" };
    format!("{scheme}://{}", endpoint.authority)
}

/// Keeps a connection whose response was read whole for the next request to its node.
fn keep_open(endpoint: &Endpoint, connection: Connection) {
    if !connection.is_closed() {
        let mut idle = IDLE.lock();
        let open = idle.entry(pool_key(endpoint)).or_default();
        if open.len() < IDLE_PER_NODE {
            open.push(connection);
        }
    }
}

/// The series of `inner` in the given partitions only.
pub struct PartitionSource<'a> {
    pub inner: &'a dyn SeriesSource,
    /// Per partition, whether it is asked for; `None`: all of them.
    pub keep: Option<Vec<bool>>,
    pub partitions: u32,
    /// The partitions of the store's series as far as known (the store `inner` reads).
    pub cache: Option<(&'a Store, &'a PartitionCache)>,
}

impl<'a> PartitionSource<'a> {
    /// The series of `inner` in `partitions` (of `of`); all of them when every partition is
    /// asked for.
    pub fn of(
        inner: &'a dyn SeriesSource,
        partitions: &[u32],
        of: u32,
        cache: (&'a Store, &'a PartitionCache),
    ) -> Self {
        let mut keep = vec![false; of as usize];
        for &p in partitions {
            if let Some(slot) = keep.get_mut(p as usize) {
                *slot = true;
            }
        }
        let all = keep.iter().all(|&k| k);
        PartitionSource {
            inner,
            keep: (!all).then_some(keep),
            partitions: of,
            cache: Some(cache),
        }
    }
}

impl SeriesSource for PartitionSource<'_> {
    fn step_ms(&self) -> i64 {
        self.inner.step_ms()
    }

    fn select(&self, m: &Matcher) -> Postings {
        let ids = self.inner.select(m);
        let Some(keep) = &self.keep else {
            return ids;
        };
        if let Some((store, cache)) = self.cache {
            return cache.keep(store, self.inner, &ids, keep);
        }
        let mut kept = Vec::new();
        self.inner.visit_tags(&ids, &mut |id, tags| {
            if keep[partition_of(tags, self.partitions) as usize] {
                kept.push(id);
            }
        });
        Postings::from_sorted_iter(kept.iter().copied())
            .unwrap_or_else(|_| kept.into_iter().collect())
    }

    fn visit_tags(&self, ids: &Postings, f: &mut dyn FnMut(SeriesId, &dyn Tags)) {
        self.inner.visit_tags(ids, f)
    }

    fn visit_values(
        &self,
        ids: &Postings,
        req: &ReadRequest,
        f: &mut dyn FnMut(SeriesId, &[f64]),
    ) -> argus_tsdb::Result<()> {
        self.inner.visit_values(ids, req, f)
    }

    fn keep_going(&self) -> argus_tsdb::Result<()> {
        self.inner.keep_going()
    }

    fn partition(&self, ids: &Postings, n: usize) -> Vec<Postings> {
        self.inner.partition(ids, n)
    }
}

/// What a query node asks a store node for.
#[derive(Debug)]
pub struct PartialRequest {
    /// One data expression, canonical ASL.
    pub expr: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    /// The partitions to answer for.
    pub partitions: Vec<u32>,
    /// The cluster's partition count, as the asking node knows it.
    pub of: u32,
}

impl PartialRequest {
    pub fn to_query(&self) -> String {
        let parts: Vec<String> = self.partitions.iter().map(u32::to_string).collect();
        format!(
            "expr={}&s={}&e={}&step={}&partitions={}&of={}",
            crate::live_client::encode_component(&self.expr),
            self.start_ms,
            self.end_ms,
            self.step_ms,
            parts.join(","),
            self.of
        )
    }

    /// From the query string's parameters; what is wrong, named.
    pub fn from_params(params: &[(String, String)]) -> Result<PartialRequest, String> {
        let (of, partitions) = partitions_param(params)?;
        let get = |k: &str| param(params, k);
        let number = |k: &str| -> Result<i64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("parameter {k:?} is not an integer"))
        };
        Ok(PartialRequest {
            expr: get("expr")?.to_string(),
            start_ms: number("s")?,
            end_ms: number("e")?,
            step_ms: number("step")?,
            partitions,
            of,
        })
    }
}

fn param<'a>(params: &'a [(String, String)], k: &str) -> Result<&'a str, String> {
    params
        .iter()
        .find(|(pk, _)| pk == k)
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("missing parameter {k:?}"))
}

/// The partition count (`of`) and the partitions asked for (`partitions`, comma-separated)
/// of a store node's internal request; what is wrong, named.
pub fn partitions_param(params: &[(String, String)]) -> Result<(u32, Vec<u32>), String> {
    let of: u32 = param(params, "of")?
        .parse()
        .ok()
        .filter(|&of| of > 0)
        .ok_or_else(|| "parameter \"of\" is not a partition count".to_string())?;
    let partitions = param(params, "partitions")?
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u32>()
                .ok()
                .filter(|&p| p < of)
                .ok_or_else(|| format!("partition {p:?} is not one of 0..{of}"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    Ok((of, partitions))
}

/// Evaluates a partial request over this node's series (`source`: `store`, guarded).
pub fn answer(
    req: &PartialRequest,
    source: &dyn SeriesSource,
    (store, cache): (&Store, &PartitionCache),
    limits: &Limits,
) -> Result<Vec<u8>, String> {
    let source = PartitionSource::of(source, &req.partitions, req.of, (store, cache));

    evaluate_partial(
        &req.expr,
        req.start_ms,
        req.end_ms,
        req.step_ms,
        limits,
        &source,
    )
    .map(|p| p.encode())
    .map_err(|e| crate::query_guard::with_limit_setting(&e))
}

/// A store node's answer: its bytes, and the partitions it does not serve; or why it could
/// not answer.
type Answer = Result<(Vec<u8>, Vec<u32>), Failure>;

/// A store node's answer read: its part, and the partitions it does not serve.
type Decoded<P> = Result<(P, Vec<u32>), Failure>;

/// Why a store node gave no answer.
#[derive(Debug)]
enum Failure {
    /// It could not (gone, not caught up, broken): its partitions go to another node.
    Unavailable(String),
    /// The request itself is refused (a limit, a bad expression): another node would say
    /// the same, so the whole request fails with this, as it would on a single node.
    Refused(String),
}

/// A store node a query can ask.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: String,
    /// `host:port` of its HTTP API.
    pub http: String,
    /// Whether that API is served over TLS.
    pub https: bool,
    /// Per partition, whether the node has caught up with it (as it said last).
    pub serving: Vec<bool>,
}

/// How this node reaches others that serve HTTPS: trusting `--peer-ca`, or why it cannot.
pub type PeerTls = Result<Arc<tokio_rustls::rustls::ClientConfig>, String>;

/// One request's view of the cluster: who to ask, and which partitions nobody answered
/// for.
pub struct ClusterFanout {
    pub peers: Vec<Peer>,
    /// This node's id, and its store when it is a store node that has caught up: asked in
    /// process.
    pub own: String,
    pub local: Option<(Arc<Store>, Arc<PartitionCache>)>,
    pub partitions: u32,
    pub runtime: tokio::runtime::Handle,
    /// The client's `Authorization`, passed on (the same read role).
    pub authorization: Option<String>,
    pub peer_tls: PeerTls,
    pub deny_partial: bool,
    pub timeout: Duration,
    pub limits: Limits,
    pub missing: Mutex<BTreeSet<u32>>,
}

/// What one request asks each store node, for the partitions dealt to it.
pub trait Ask {
    type Part;
    /// The path and query string of the store node's route.
    fn path(&self, partitions: &[u32], of: u32) -> String;
    /// The same answer from this node's own store, in process.
    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<Self::Part, String>;
    fn decode(&self, body: &[u8]) -> Result<Self::Part, String>;
}

/// One data expression over a window: a partial aggregate.
struct AskPartial<'a> {
    expr: &'a str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    limits: &'a Limits,
}

impl AskPartial<'_> {
    fn request(&self, partitions: &[u32], of: u32) -> PartialRequest {
        PartialRequest {
            expr: self.expr.to_string(),
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            step_ms: self.step_ms,
            partitions: partitions.to_vec(),
            of,
        }
    }
}

impl Ask for AskPartial<'_> {
    type Part = Partial;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        format!(
            "/api/v1/cluster/partial?{}",
            self.request(partitions, of).to_query()
        )
    }

    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<Partial, String> {
        let req = self.request(partitions, of);
        Partial::decode(&answer(&req, store.0, store, self.limits)?)
    }

    fn decode(&self, body: &[u8]) -> Result<Partial, String> {
        Partial::decode(body)
    }
}

/// What a query node asks a store node for to evaluate PromQL: one selector's series, with
/// their stored values over a window.
#[derive(Debug)]
pub struct SeriesRequest {
    /// A PromQL vector selector, without offset or `@`.
    pub selector: String,
    /// The first and last stored steps (their end times).
    pub first_ms: i64,
    pub last_ms: i64,
    /// Whether the values are asked for, or only the series' tags.
    pub values: bool,
    pub partitions: Vec<u32>,
    pub of: u32,
}

impl SeriesRequest {
    pub fn to_query(&self) -> String {
        let parts: Vec<String> = self.partitions.iter().map(u32::to_string).collect();
        format!(
            "selector={}&s={}&e={}&values={}&partitions={}&of={}",
            crate::live_client::encode_component(&self.selector),
            self.first_ms,
            self.last_ms,
            u8::from(self.values),
            parts.join(","),
            self.of
        )
    }

    /// From the query string's parameters; what is wrong, named.
    pub fn from_params(params: &[(String, String)]) -> Result<SeriesRequest, String> {
        let (of, partitions) = partitions_param(params)?;
        let number = |k: &str| -> Result<i64, String> {
            param(params, k)?
                .parse()
                .map_err(|_| format!("parameter {k:?} is not an integer"))
        };
        Ok(SeriesRequest {
            selector: param(params, "selector")?.to_string(),
            first_ms: number("s")?,
            last_ms: number("e")?,
            values: param(params, "values") != Ok("0"),
            partitions,
            of,
        })
    }
}

/// A window of at most this many stored steps is read per series (as PromQL allows).
const MAX_SERIES_STEPS: i64 = 1 << 20;

/// The series of a selector in this node's share of the partitions, encoded as lines (the
/// Stack Language's `:all` partial, which carries tags and values).
pub fn answer_series(
    req: &SeriesRequest,
    source: &dyn SeriesSource,
    (store, cache): (&Store, &PartitionCache),
    max_series: usize,
) -> Result<Vec<u8>, String> {
    let step = store.config().step_ms.max(1);
    if req.values
        && (req.first_ms % step != 0
            || req.last_ms % step != 0
            || req.last_ms < req.first_ms
            || (req.last_ms - req.first_ms) / step >= MAX_SERIES_STEPS)
    {
        return Err(format!(
            "the window {}..{} is not at most {MAX_SERIES_STEPS} steps of {step} ms",
            req.first_ms, req.last_ms
        ));
    }
    let matcher = argus_promql::series_matcher(&req.selector).map_err(|e| e.message)?;
    let source = PartitionSource::of(source, &req.partitions, req.of, (store, cache));
    let ids = source.select(&matcher);
    if ids.len() as usize > max_series {
        return Err(format!(
            "the selector {} matches {} series, more than the limit of {max_series} \
             (--query-max-series)",
            req.selector,
            ids.len()
        ));
    }
    let mut tags: HashMap<SeriesId, argus_tsdb::TagMap> = HashMap::new();
    source.visit_tags(&ids, &mut |id, t| {
        tags.insert(id, t.to_map());
    });
    let read = ReadRequest {
        start_ms: req.first_ms,
        end_ms: req.last_ms,
        step_ms: step,
        cf: argus_tsdb::Consolidation::Avg,
    };
    let mut lines = Vec::with_capacity(ids.len() as usize);
    if !req.values {
        lines.extend(tags.into_values().map(|t| (t, Vec::new())));
        return Ok(Partial::from_lines(lines).encode());
    }
    source
        .visit_values(&ids, &read, &mut |id, values| {
            if let Some(t) = tags.remove(&id) {
                lines.push((t, values.to_vec()));
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(Partial::from_lines(lines).encode())
}

/// One PromQL selector's series over a window. Each store node holds its share to its own
/// series limit; the query node holds the total to its own.
struct AskSeries<'a> {
    selector: &'a str,
    first_ms: i64,
    last_ms: i64,
    values: bool,
}

impl AskSeries<'_> {
    fn request(&self, partitions: &[u32], of: u32) -> SeriesRequest {
        SeriesRequest {
            selector: self.selector.to_string(),
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            values: self.values,
            partitions: partitions.to_vec(),
            of,
        }
    }
}

type Lines = Vec<(argus_tsdb::TagMap, Vec<f64>)>;

fn lines_of(body: &[u8]) -> Result<Lines, String> {
    Partial::decode(body)?
        .into_lines()
        .ok_or_else(|| "a store node sent groups, not series".to_string())
}

impl Ask for AskSeries<'_> {
    type Part = Lines;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        format!(
            "/api/v1/cluster/series?{}",
            self.request(partitions, of).to_query()
        )
    }

    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<Lines, String> {
        let req = self.request(partitions, of);
        lines_of(&answer_series(&req, store.0, store, usize::MAX)?)
    }

    fn decode(&self, body: &[u8]) -> Result<Lines, String> {
        lines_of(body)
    }
}

/// A PromQL aggregation the store nodes evaluate over their partitions (`argus_promql`'s
/// pushed-down aggregations): its text and the query's times.
#[derive(Debug)]
pub struct AggregateRequest {
    pub pushed: argus_promql::PushedAggregate,
    pub partitions: Vec<u32>,
    pub of: u32,
}

impl AggregateRequest {
    pub fn to_query(&self) -> String {
        let parts: Vec<String> = self.partitions.iter().map(u32::to_string).collect();
        let range = &self.pushed.range;
        format!(
            "expr={}&start={}&end={}&step={}&partitions={}&of={}",
            crate::live_client::encode_component(&self.pushed.expr),
            range.start_ms,
            range.end_ms,
            range.step_ms,
            parts.join(","),
            self.of
        )
    }

    /// From the query string's parameters; what is wrong, named.
    pub fn from_params(params: &[(String, String)]) -> Result<AggregateRequest, String> {
        let (of, partitions) = partitions_param(params)?;
        let number = |k: &str| -> Result<i64, String> {
            param(params, k)?
                .parse()
                .map_err(|_| format!("parameter {k:?} is not an integer"))
        };
        Ok(AggregateRequest {
            pushed: argus_promql::PushedAggregate {
                expr: param(params, "expr")?.to_string(),
                range: argus_promql::QueryRange {
                    start_ms: number("start")?,
                    end_ms: number("end")?,
                    step_ms: number("step")?,
                },
            },
            partitions,
            of,
        })
    }
}

/// This node's part of a pushed-down PromQL aggregation over the asked partitions.
pub fn answer_aggregate(
    req: &AggregateRequest,
    source: &dyn SeriesSource,
    (store, cache): (&Store, &PartitionCache),
    (bounds, max_series): ((i64, i64), usize),
) -> Result<Vec<u8>, String> {
    let source = PartitionSource::of(source, &req.partitions, req.of, (store, cache));
    argus_promql::evaluate_partial(&source, &req.pushed, bounds, max_series)
        .map(|part| part.encode())
        .map_err(|e| e.message)
}

/// This node's own top (or bottom) k series of a pushed-down PromQL `topk`/`bottomk`, over
/// the asked partitions.
pub fn answer_top(
    req: &AggregateRequest,
    source: &dyn SeriesSource,
    (store, cache): (&Store, &PartitionCache),
    (bounds, max_series): ((i64, i64), usize),
) -> Result<Vec<u8>, String> {
    let source = PartitionSource::of(source, &req.partitions, req.of, (store, cache));
    argus_promql::evaluate_top(&source, &req.pushed, bounds, max_series)
        .map(|series| argus_promql::encode_series(&series))
        .map_err(|e| e.message)
}

/// One pushed-down `topk`/`bottomk`: each store node's own top (or bottom) k series.
struct AskTop<'a> {
    pushed: &'a argus_promql::PushedAggregate,
}

impl Ask for AskTop<'_> {
    type Part = Vec<argus_promql::Series>;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        let req = AggregateRequest {
            pushed: self.pushed.clone(),
            partitions: partitions.to_vec(),
            of,
        };
        format!("/api/v1/cluster/top?{}", req.to_query())
    }

    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<Vec<argus_promql::Series>, String> {
        let req = AggregateRequest {
            pushed: self.pushed.clone(),
            partitions: partitions.to_vec(),
            of,
        };
        let bounds = data_bounds(store.0, store.0.config().retention_ms);
        argus_promql::decode_series(&answer_top(&req, store.0, store, (bounds, usize::MAX))?)
    }

    fn decode(&self, body: &[u8]) -> Result<Vec<argus_promql::Series>, String> {
        argus_promql::decode_series(body)
    }
}

/// One pushed-down aggregation: each store node's part.
struct AskAggregate<'a> {
    pushed: &'a argus_promql::PushedAggregate,
}

impl AskAggregate<'_> {
    fn request(&self, partitions: &[u32], of: u32) -> AggregateRequest {
        AggregateRequest {
            pushed: self.pushed.clone(),
            partitions: partitions.to_vec(),
            of,
        }
    }
}

/// What a store's series may hold: from its retention to a little past now.
pub fn data_bounds(store: &Store, retention_ms: i64) -> (i64, i64) {
    let (now, step) = (store.now_ms(), store.config().step_ms);
    (now - retention_ms - step, now + 2 * step)
}

impl Ask for AskAggregate<'_> {
    type Part = argus_promql::Partial;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        format!(
            "/api/v1/cluster/aggregate?{}",
            self.request(partitions, of).to_query()
        )
    }

    fn local(
        &self,
        store: (&Store, &PartitionCache),
        partitions: &[u32],
        of: u32,
    ) -> Result<argus_promql::Partial, String> {
        let req = self.request(partitions, of);
        // The asking node holds the total to its own series limit.
        let bounds = data_bounds(store.0, store.0.config().retention_ms);
        argus_promql::Partial::decode(&answer_aggregate(
            &req,
            store.0,
            store,
            (bounds, usize::MAX),
        )?)
    }

    fn decode(&self, body: &[u8]) -> Result<argus_promql::Partial, String> {
        argus_promql::Partial::decode(body)
    }
}

impl argus_promql::Gather for ClusterFanout {
    fn series(&self, selector: &str, first_ms: i64, last_ms: i64) -> Result<Lines, String> {
        let parts = self.gather(&AskSeries {
            selector,
            first_ms,
            last_ms,
            values: true,
        })?;
        Ok(parts.into_iter().flatten().collect())
    }

    fn aggregate(
        &self,
        pushed: &argus_promql::PushedAggregate,
    ) -> Option<Result<Vec<argus_promql::Partial>, String>> {
        Some(self.gather(&AskAggregate { pushed }))
    }

    fn top(
        &self,
        pushed: &argus_promql::PushedAggregate,
    ) -> Option<Result<Vec<argus_promql::Series>, String>> {
        Some(
            self.gather(&AskTop { pushed })
                .map(|parts| parts.into_iter().flatten().collect()),
        )
    }
}

impl ClusterFanout {
    /// The tags of the series a PromQL selector matches, from every partition's owners.
    pub fn series_tags(&self, selector: &str) -> Result<Vec<argus_tsdb::TagMap>, String> {
        let parts = self.gather(&AskSeries {
            selector,
            first_ms: 0,
            last_ms: 0,
            values: false,
        })?;
        Ok(parts.into_iter().flatten().map(|(tags, _)| tags).collect())
    }

    /// Partitions no node answered for, in any data expression of the request.
    pub fn missing(&self) -> Vec<u32> {
        self.missing.lock().iter().copied().collect()
    }

    async fn ask_remote(
        peer: Peer,
        path: String,
        (authorization, tls): (Option<String>, PeerTls),
        timeout: Duration,
    ) -> Answer {
        let scheme = if peer.https { "https" } else { "http" };
        let url = format!("{scheme}://{}{path}", peer.http);
        let endpoint = Endpoint::parse(&url).map_err(|e| Failure::Unavailable(format!("{e:#}")))?;
        let tls = match (peer.https, tls) {
            (false, _) => None,
            (true, Ok(config)) => Some(config),
            (true, Err(why)) => {
                return Err(Failure::Unavailable(format!(
                    "node {} serves HTTPS at {}, and this node cannot ask it: {why}",
                    peer.id, peer.http
                )));
            }
        };
        let call = async {
            let mut headers = Vec::new();
            if let Some(a) = &authorization {
                headers.push((hyper::header::AUTHORIZATION, a.as_str()));
            }
            let request = || {
                http_client::get(&endpoint, &endpoint.path, &headers).map_err(|e| format!("{e:#}"))
            };
            let (mut sender, reused) = connection_to(&endpoint, tls.as_ref()).await?;
            let response = match sender.send_request(request()?).await {
                Ok(response) => response,
                // A kept connection the node closed meanwhile: once more on a new one.
                Err(_) if reused => {
                    sender = http_client::connect(&endpoint, tls.as_ref())
                        .await
                        .map_err(|e| format!("{e:#}"))?;
                    sender
                        .send_request(request()?)
                        .await
                        .map_err(|e| e.to_string())?
                }
                Err(e) => return Err(e.to_string()),
            };
            let status = response.status();
            let unserved: Vec<u32> = response
                .headers()
                .get(UNSERVED_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').filter_map(|p| p.parse().ok()).collect())
                .unwrap_or_default();
            let (body, _) = http_client::read_body(response, MAX_PARTIAL_BYTES)
                .await
                .map_err(|e| format!("{e:#}"))?;
            keep_open(&endpoint, sender);
            if status.is_client_error() {
                // The store node's own error message, as a single node would give it.
                let message = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["message"].as_str().map(String::from))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Ok(Err(message));
            }
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok(Ok((body.to_vec(), unserved)))
        };
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(Failure::Unavailable(format!(
                "node {}: no answer within {timeout:?}",
                peer.id
            ))),
            Ok(Err(e)) => Err(Failure::Unavailable(format!(
                "node {} ({}): {e}",
                peer.id, peer.http
            ))),
            Ok(Ok(Err(refused))) => Err(Failure::Refused(refused)),
            Ok(Ok(Ok(answer))) => Ok(answer),
        }
    }

    /// Deals the partitions out over the store nodes serving them, asks each for its share
    /// (this node's own store in process), and deals again what a node failed or declined,
    /// until every partition is answered or nobody is left to ask. Must run on a blocking
    /// thread: it waits for the answers.
    pub fn gather<A: Ask>(&self, ask: &A) -> Result<Vec<A::Part>, String> {
        let mut unanswered: Vec<u32> = (0..self.partitions).collect();
        let mut failed: HashSet<usize> = HashSet::new();
        // (node, partition): the node said it does not serve it.
        let mut declined: HashSet<(usize, u32)> = HashSet::new();
        let mut parts = Vec::new();
        let mut round = 0usize;
        while !unanswered.is_empty() {
            // Each partition goes to one of the nodes serving it that has not failed; each
            // round shifts the deal, so a failed node's partitions land on others.
            let mut asks: HashMap<usize, Vec<u32>> = HashMap::new();
            let mut nobody = Vec::new();
            for &p in &unanswered {
                let candidates: Vec<usize> = (0..self.peers.len())
                    .filter(|i| {
                        !failed.contains(i)
                            && !declined.contains(&(*i, p))
                            && self.peers[*i]
                                .serving
                                .get(p as usize)
                                .copied()
                                .unwrap_or(false)
                    })
                    .collect();
                if candidates.is_empty() {
                    nobody.push(p);
                    continue;
                }
                let node = candidates[(p as usize + round) % candidates.len()];
                asks.entry(node).or_default().push(p);
            }
            if asks.is_empty() {
                unanswered = nobody;
                break;
            }
            let mut local = None;
            let mut remote = tokio::task::JoinSet::new();
            for (&node, partitions) in &asks {
                let peer = self.peers[node].clone();
                if peer.id == self.own && self.local.is_some() {
                    local = Some(node);
                    continue;
                }
                let path = ask.path(partitions, self.partitions);
                let (auth, timeout) = (self.authorization.clone(), self.timeout);
                let tls = self.peer_tls.clone();
                remote.spawn_on(
                    async move {
                        (
                            node,
                            Self::ask_remote(peer, path, (auth, tls), timeout).await,
                        )
                    },
                    &self.runtime,
                );
            }
            let mut results: HashMap<usize, Decoded<A::Part>> = HashMap::new();
            if let (Some(node), Some((store, cache))) = (local, &self.local) {
                let part = ask.local((store, cache), &asks[&node], self.partitions);
                results.insert(
                    node,
                    part.map(|p| (p, Vec::new())).map_err(Failure::Refused),
                );
            }
            let answers = self.runtime.block_on(async {
                let mut out = Vec::new();
                while let Some(done) = remote.join_next().await {
                    if let Ok(result) = done {
                        out.push(result);
                    }
                }
                out
            });
            for (node, answer) in answers {
                let decoded = answer.and_then(|(body, unserved)| {
                    let part = ask.decode(&body).map_err(Failure::Unavailable)?;
                    Ok((part, unserved))
                });
                results.insert(node, decoded);
            }
            let mut next = nobody;
            for (node, partitions) in asks {
                match results.remove(&node) {
                    Some(Ok((part, unserved))) => {
                        parts.push(part);
                        for p in unserved {
                            declined.insert((node, p));
                            next.push(p);
                        }
                    }
                    Some(Err(Failure::Refused(why))) => return Err(why),
                    Some(Err(Failure::Unavailable(e))) => {
                        tracing::debug!(node = %self.peers[node].id, error = %e, "a store node did not answer its partitions");
                        failed.insert(node);
                        next.extend(partitions);
                    }
                    None => {
                        failed.insert(node);
                        next.extend(partitions);
                    }
                }
            }
            next.sort_unstable();
            unanswered = next;
            round += 1;
        }
        if !unanswered.is_empty() {
            self.missing.lock().extend(&unanswered);
            if self.deny_partial {
                return Err(partial_message(&unanswered, self.partitions));
            }
        }
        Ok(parts)
    }
}

impl Fanout for ClusterFanout {
    fn partials(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Partial>, String> {
        self.gather(&AskPartial {
            expr,
            start_ms,
            end_ms,
            step_ms,
            limits: &self.limits,
        })
    }
}

/// What a partial answer says about itself.
pub fn partial_message(missing: &[u32], partitions: u32) -> String {
    let list: Vec<String> = missing.iter().map(u32::to_string).collect();
    format!(
        "partial result: no live, caught-up store node answered for partitions {} (of {partitions})",
        list.join(", ")
    )
}

/// The loss books of the partitions asked (`books.rs`), from the store nodes serving them.
struct AskBooks {
    /// This node's log, for the partitions it serves itself.
    log: Option<Arc<super::log::PartitionLog>>,
}

impl Ask for AskBooks {
    /// Each partition's encoded books.
    type Part = Vec<Vec<u8>>;

    fn path(&self, partitions: &[u32], of: u32) -> String {
        let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
        format!("/api/v1/cluster/loss?of={of}&partitions={}", list.join(","))
    }

    fn local(
        &self,
        _store: (&Store, &PartitionCache),
        partitions: &[u32],
        _of: u32,
    ) -> Result<Self::Part, String> {
        let log = self.log.as_ref().ok_or("this node has no log yet")?;
        super::books::decode_answer(&log.books_of(partitions))
    }

    fn decode(&self, body: &[u8]) -> Result<Self::Part, String> {
        super::books::decode_answer(body)
    }
}

/// The loss of every agent in the cluster, from every partition's books (`log` is this
/// node's own, when it is a store node). Must run on a blocking thread. `Err` when a store
/// node refused; the partitions nobody answered for are in the fan-out's `missing()`.
pub fn cluster_loss(
    fanout: &ClusterFanout,
    log: Option<Arc<super::log::PartitionLog>>,
) -> Result<Vec<crate::resend::AgentLoss>, String> {
    let parts: Vec<Vec<u8>> = fanout
        .gather(&AskBooks { log })?
        .into_iter()
        .flatten()
        .collect();
    super::books::merged_loss(&parts)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use argus_tsdb::{StoreConfig, TagMap};

    use super::*;

    #[test]
    fn a_store_node_over_a_limit_names_the_setting_as_one_node_does() {
        // On a step boundary, as a graph request's window is.
        let now = 1_699_999_980_000;
        let store = Store::with_clock(
            StoreConfig::new(60_000, 6 * 3_600_000),
            Arc::new(move || now),
        );
        {
            let w = store.writer();
            for k in 0..5 {
                let id = w.resolve(&TagMap::from_pairs([
                    ("name", "x".to_string()),
                    ("kk", k.to_string()),
                ]));
                w.append(id, now - 60_000, 1.0).unwrap();
            }
        }
        let req = PartialRequest {
            expr: "name,x,:eq,:sum,(,kk,),:by".into(),
            start_ms: now - 600_000,
            end_ms: now,
            step_ms: 60_000,
            partitions: vec![0],
            of: 1,
        };
        let cache = PartitionCache::default();
        let limits = Limits {
            max_lines: 2,
            ..Limits::default()
        };
        let err = answer(&req, &store, (&store, &cache), &limits).unwrap_err();
        assert!(err.ends_with("(--graph-max-lines)"), "{err}");
        let fine = answer(&req, &store, (&store, &cache), &Limits::default());
        assert!(fine.is_ok(), "{fine:?}");
    }
}
