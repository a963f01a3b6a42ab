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

use super::log::partition_of;

/// The partitions a store node was asked for but does not serve (any more), which the
/// asking node gets from another.
pub const UNSERVED_HEADER: &str = "x-argus-unserved";

/// A partial answer may be this large (a `:by` over many groups, or `:all`).
const MAX_PARTIAL_BYTES: usize = 512 << 20;

/// The series of `inner` in the given partitions only.
pub struct PartitionSource<'a> {
    pub inner: &'a dyn SeriesSource,
    /// Per partition, whether it is asked for; `None`: all of them.
    pub keep: Option<Vec<bool>>,
    pub partitions: u32,
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
        let get = |k: &str| {
            params
                .iter()
                .find(|(pk, _)| pk == k)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| format!("missing parameter {k:?}"))
        };
        let number = |k: &str| -> Result<i64, String> {
            get(k)?
                .parse()
                .map_err(|_| format!("parameter {k:?} is not an integer"))
        };
        let of: u32 = get("of")?
            .parse()
            .map_err(|_| "parameter \"of\" is not a partition count".to_string())?;
        let partitions = get("partitions")?
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<u32>()
                    .ok()
                    .filter(|&p| p < of)
                    .ok_or_else(|| format!("partition {p:?} is not one of 0..{of}"))
            })
            .collect::<Result<Vec<u32>, String>>()?;
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

/// Evaluates a partial request over this node's series (`source`: the store, guarded).
pub fn answer(
    req: &PartialRequest,
    source: &dyn SeriesSource,
    limits: &Limits,
) -> Result<Vec<u8>, String> {
    let mut keep = vec![false; req.of as usize];
    for &p in &req.partitions {
        keep[p as usize] = true;
    }
    let all = keep.iter().all(|&k| k);
    let source = PartitionSource {
        inner: source,
        keep: (!all).then_some(keep),
        partitions: req.of,
    };

    evaluate_partial(
        &req.expr,
        req.start_ms,
        req.end_ms,
        req.step_ms,
        limits,
        &source,
    )
    .map(|p| p.encode())
    .map_err(|e| e.to_string())
}

/// A store node's answer: its part, and the partitions it does not serve; or why it could
/// not answer.
type Answer = Result<(Partial, Vec<u32>), String>;

/// A store node a query can ask.
#[derive(Clone, Debug)]
pub struct Peer {
    pub id: String,
    /// `host:port` of its HTTP API.
    pub http: String,
    /// Per partition, whether the node has caught up with it (as it said last).
    pub serving: Vec<bool>,
}

/// One graph request's view of the cluster: who to ask, and which partitions nobody
/// answered for.
pub struct ClusterFanout {
    pub peers: Vec<Peer>,
    /// This node's id, and its store when it is a store node that has caught up: asked in
    /// process.
    pub own: String,
    pub local: Option<Arc<Store>>,
    pub partitions: u32,
    pub runtime: tokio::runtime::Handle,
    /// The client's `Authorization`, passed on (the same read role).
    pub authorization: Option<String>,
    pub deny_partial: bool,
    pub timeout: Duration,
    pub limits: Limits,
    pub missing: Mutex<BTreeSet<u32>>,
}

impl ClusterFanout {
    /// Partitions no node answered for, in any data expression of the request.
    pub fn missing(&self) -> Vec<u32> {
        self.missing.lock().iter().copied().collect()
    }

    fn ask_local(&self, req: &PartialRequest) -> Answer {
        let store = self.local.as_ref().ok_or("no local store")?;
        let bytes = answer(req, &**store, &self.limits)?;
        Ok((Partial::decode(&bytes)?, Vec::new()))
    }

    async fn ask_remote(
        peer: Peer,
        query: String,
        authorization: Option<String>,
        timeout: Duration,
    ) -> Answer {
        let url = format!("http://{}/api/v1/cluster/partial?{query}", peer.http);
        let endpoint = Endpoint::parse(&url).map_err(|e| format!("{e:#}"))?;
        let call = async {
            let mut sender = http_client::connect(&endpoint, None)
                .await
                .map_err(|e| format!("{e:#}"))?;
            let mut headers = Vec::new();
            if let Some(a) = &authorization {
                headers.push((hyper::header::AUTHORIZATION, a.as_str()));
            }
            let request = http_client::get(&endpoint, &endpoint.path, &headers)
                .map_err(|e| format!("{e:#}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
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
            if !status.is_success() {
                return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Ok((Partial::decode(&body)?, unserved))
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e| format!("node {} ({}): {e}", peer.id, peer.http))
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
            let requests: Vec<(usize, PartialRequest)> = asks
                .into_iter()
                .map(|(node, partitions)| {
                    (
                        node,
                        PartialRequest {
                            expr: expr.to_string(),
                            start_ms,
                            end_ms,
                            step_ms,
                            partitions,
                            of: self.partitions,
                        },
                    )
                })
                .collect();
            let mut local = None;
            let mut remote = tokio::task::JoinSet::new();
            for (node, req) in &requests {
                let peer = self.peers[*node].clone();
                if peer.id == self.own && self.local.is_some() {
                    local = Some(*node);
                    continue;
                }
                let (query, auth, timeout, node) = (
                    req.to_query(),
                    self.authorization.clone(),
                    self.timeout,
                    *node,
                );
                remote.spawn_on(
                    async move { (node, Self::ask_remote(peer, query, auth, timeout).await) },
                    &self.runtime,
                );
            }
            let mut results: Vec<(usize, Answer)> = Vec::new();
            if let Some(node) = local {
                let req = &requests.iter().find(|(n, _)| *n == node).expect("asked").1;
                results.push((node, self.ask_local(req)));
            }
            results.extend(self.runtime.block_on(async {
                let mut out = Vec::new();
                while let Some(done) = remote.join_next().await {
                    if let Ok(result) = done {
                        out.push(result);
                    }
                }
                out
            }));
            let mut next = nobody;
            for (node, req) in &requests {
                match results.iter_mut().find(|(n, _)| n == node) {
                    Some((_, Ok(_))) => {
                        let (_, result) = results
                            .remove(results.iter().position(|(n, _)| n == node).expect("found"));
                        let (part, unserved) = result.expect("checked");
                        parts.push(part);
                        for p in unserved {
                            declined.insert((*node, p));
                            next.push(p);
                        }
                    }
                    Some((_, Err(e))) => {
                        tracing::debug!(node = %self.peers[*node].id, error = %e, "a store node did not answer its partitions");
                        failed.insert(*node);
                        next.extend(&req.partitions);
                    }
                    None => {
                        failed.insert(*node);
                        next.extend(&req.partitions);
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

/// What a partial answer says about itself.
pub fn partial_message(missing: &[u32], partitions: u32) -> String {
    let list: Vec<String> = missing.iter().map(u32::to_string).collect();
    format!(
        "partial result: no live, caught-up store node answered for partitions {} (of {partitions})",
        list.join(", ")
    )
}
