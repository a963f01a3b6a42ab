//! The routes that read: the graph API, tags, the expression debugger, and the operator
//! views (cardinality, storage). Queries run on blocking threads, each under its limits
//! and a slot among the concurrent queries.

use std::collections::BTreeMap;
use std::time::Duration;

use argus_query::graph::{GraphRequest, evaluate_with_fanout};
use argus_tsdb::Matcher;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::response::ApiError;
use crate::cluster::tags::TagsRequest;
use crate::query_guard::{Cancel, Guarded};
use crate::state::AppState;

/// Parameters shared by the two tags routes.
struct TagsParams {
    q: Option<Matcher>,
    limit: usize,
    offset: Option<String>,
    verbose: bool,
    txt: bool,
}

const MAX_TAGS_LIMIT: usize = 1000;

fn tags_params(params: &[(String, String)]) -> Result<TagsParams, ApiError> {
    let mut out = TagsParams {
        q: None,
        limit: MAX_TAGS_LIMIT,
        offset: None,
        verbose: false,
        txt: false,
    };
    for (k, v) in params {
        match k.as_str() {
            "q" if !v.trim().is_empty() => out.q = Some(argus_query::tag_query(v)?),
            "q" => {}
            "limit" => {
                let n: i64 = v.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid limit {v:?}: expected an integer"))
                })?;
                if n <= 0 {
                    return Err(ApiError::bad_request(format!(
                        "invalid limit {n}: must be greater than 0"
                    )));
                }
                out.limit = (n as usize).min(MAX_TAGS_LIMIT);
            }
            "offset" => out.offset = Some(v.clone()),
            "verbose" => out.verbose = matches!(v.as_str(), "1" | "true"),
            "format" => match v.as_str() {
                "json" => out.txt = false,
                "txt" => out.txt = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid format {other:?}: expected json or txt"
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(out)
}

fn query_params(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
}

/// Pages a sorted list: items after `offset`, at most `limit`; the next offset goes in Atlas's
/// `x-nflx-atlas-next-offset` header when the page is full.
fn page<T>(items: Vec<(String, T)>, p: &TagsParams) -> (Vec<(String, T)>, Option<String>) {
    let start = match &p.offset {
        Some(off) => items.partition_point(|(k, _)| k.as_str() <= off.as_str()),
        None => 0,
    };
    let page: Vec<(String, T)> = items.into_iter().skip(start).take(p.limit).collect();
    let next = (page.len() == p.limit)
        .then(|| page.last().map(|l| l.0.clone()))
        .flatten();
    (page, next)
}

fn tags_response(body: Response, next: Option<String>) -> Response {
    let mut resp = body;
    if let Some(n) = next
        && let Ok(v) = HeaderValue::from_str(&n)
    {
        resp.headers_mut().insert("x-nflx-atlas-next-offset", v);
    }
    resp
}

pub async fn tag_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let p = tags_params(&params)?;
    let ask = TagsRequest {
        q: raw_q(&params),
        key: None,
        keys_only: !p.verbose,
        ..TagsRequest::default()
    };
    let cluster = cluster_tags_of(&state, &headers, &params, ask).await?;
    if p.verbose {
        // Every key=value pair with its series count, keyed "key=value" for paging.
        let mut pairs: Vec<(String, (String, String, u64))> = Vec::new();
        match &cluster {
            Some((_, tags, _)) => {
                for ((key, value), count) in tags {
                    let pair = (key.clone(), value.clone(), *count);
                    pairs.push((format!("{key}={value}"), pair));
                }
            }
            None => {
                for (key, _) in state.store.tag_keys(p.q.as_ref()) {
                    for (value, count) in state.store.tag_values(&key, p.q.as_ref()) {
                        pairs.push((format!("{key}={value}"), (key.clone(), value, count)));
                    }
                }
            }
        }
        let (page, next) = page(pairs, &p);
        let out: Vec<_> = page
            .into_iter()
            .map(|(_, (k, v, n))| json!({"key": k, "value": v, "count": n}))
            .collect();
        let response = tags_response(axum::Json(out).into_response(), next);
        return Ok(with_partial(response, cluster.as_ref()));
    }
    let keys = match &cluster {
        Some((_, tags, _)) => tags.iter().map(|((k, _), n)| (k.clone(), *n)).collect(),
        None => state.store.tag_keys(p.q.as_ref()),
    };
    let (page, next) = page(keys, &p);
    let response = tags_response(
        list_body(page.into_iter().map(|(k, _)| k).collect(), p.txt),
        next,
    );
    Ok(with_partial(response, cluster.as_ref()))
}

pub async fn tag_values(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let p = tags_params(&params)?;
    let ask = TagsRequest {
        q: raw_q(&params),
        key: Some(key.clone()),
        keys_only: false,
        ..TagsRequest::default()
    };
    let cluster = cluster_tags_of(&state, &headers, &params, ask).await?;
    let values = match &cluster {
        Some((_, tags, _)) => tags.iter().map(|((_, v), n)| (v.clone(), *n)).collect(),
        None => state.store.tag_values(&key, p.q.as_ref()),
    };
    let (page, next) = page(values, &p);
    let response = if p.verbose {
        let out: Vec<_> = page
            .into_iter()
            .map(|(v, n)| json!({"key": key, "value": v, "count": n}))
            .collect();
        tags_response(axum::Json(out).into_response(), next)
    } else {
        tags_response(
            list_body(page.into_iter().map(|(v, _)| v).collect(), p.txt),
            next,
        )
    };
    Ok(with_partial(response, cluster.as_ref()))
}

/// The tags query as the client wrote it, for the store nodes to parse again.
fn raw_q(params: &[(String, String)]) -> Option<String> {
    params
        .iter()
        .find(|(k, v)| k == "q" && !v.trim().is_empty())
        .map(|(_, v)| v.clone())
}

/// Tag counts of the whole cluster: total series, the count per (key, value), and the
/// partitions no store node answered for.
pub(crate) type ClusterTags = (u64, BTreeMap<(String, String), u64>, Vec<u32>);

/// In a cluster, every store node counts the tags of its share of the partitions and this
/// node adds them up; `None` on a single node (or one that has not joined yet), whose own
/// store answers. With `deny_partial=1`, a partition nobody answered for is a 503.
pub(crate) async fn cluster_tags_of(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
    ask: TagsRequest,
) -> Result<Option<ClusterTags>, ApiError> {
    let Some(cluster) = &state.cluster else {
        return Ok(None);
    };
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let Some(fanout) = cluster.fanout(
        authorization(headers),
        deny_partial(params),
        state.cfg.query_limits(),
        timeout,
    ) else {
        return Ok(None);
    };
    let (parts, missing) = tokio::task::spawn_blocking(move || {
        let parts = fanout.gather(&ask);
        (parts, fanout.missing())
    })
    .await
    .map_err(|e| ApiError::task_failed("the tags task", e))?;
    let (series, tags) = crate::cluster::tags::merge(parts.map_err(ApiError::unavailable)?);
    Ok(Some((series, tags, missing)))
}

/// Names the partitions a cluster answer lacks in its `x-argus-partial` header.
fn with_partial(mut response: Response, cluster: Option<&ClusterTags>) -> Response {
    if let Some((_, _, missing)) = cluster
        && !missing.is_empty()
    {
        let list: Vec<String> = missing.iter().map(u32::to_string).collect();
        if let Ok(value) = HeaderValue::from_str(&list.join(",")) {
            response.headers_mut().insert(PARTIAL_HEADER, value);
        }
    }
    response
}

pub(crate) fn deny_partial(params: &[(String, String)]) -> bool {
    params
        .iter()
        .any(|(k, v)| k == "deny_partial" && matches!(v.as_str(), "1" | "true"))
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

fn list_body(items: Vec<String>, txt: bool) -> Response {
    if txt {
        let mut s = items.join("\n");
        s.push('\n');
        ([(header::CONTENT_TYPE, "text/plain")], s).into_response()
    } else {
        axum::Json(items).into_response()
    }
}

/// A slot among `--max-concurrent-queries`, waited for at most the query's own time limit;
/// `Err` says why there was none.
pub(super) async fn query_slot(
    state: &AppState,
    timeout: Duration,
) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
    tokio::time::timeout(timeout, state.query_permits.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            format!(
                "{} queries are running (--max-concurrent-queries) and none finished within \
                 {} ms; retry later",
                state.cfg.max_concurrent_queries,
                timeout.as_millis()
            )
        })
}

pub async fn graph(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    // Atlas answers a browser asking for a PNG with an image of the error, so that a broken
    // dashboard panel says what is wrong where the graph would be.
    let png = params
        .iter()
        .find(|(k, _)| k == "format")
        .is_none_or(|(_, v)| v == "png");
    let browser = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_browser);
    let size = |name: &str, default: u32| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<u32>().ok())
            .unwrap_or(default)
    };
    let (width, height) = (size("w", 700), size("h", 300));
    let store = state.store.clone();
    let limits = state.cfg.query_limits();
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let max_series = state.cfg.query_max_series;
    // A query waits for a slot at most its own time limit.
    let _permit = query_slot(&state, timeout)
        .await
        .map_err(ApiError::unavailable)?;
    let cancel = Cancel::default();
    // Dropped with this request: when the client goes away, the query stops.
    let _stop_when_dropped = cancel.on_drop();
    let metrics = state.metrics.clone();
    // In a cluster the store nodes answer the data expressions (`cluster/query.rs`).
    let deny_partial = deny_partial(&params);
    let fanout = state
        .cluster
        .as_ref()
        .and_then(|c| c.fanout(authorization(&headers), deny_partial, limits, timeout));
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let req = GraphRequest::from_params(&params, store.now_ms(), store.config().step_ms)?;
        let guarded = Guarded::new(&store, timeout, max_series, cancel.clone());
        let shared = fanout
            .clone()
            .map(|f| f as argus_query::split::SharedFanout);
        let result = evaluate_with_fanout(&req, &guarded, &limits, shared);
        if let Err(e) = &result
            && let Some(i) = crate::query_guard::stop_reason(e, &cancel)
        {
            metrics.queries_stopped[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let missing = fanout.as_ref().map(|f| f.missing()).unwrap_or_default();
        let partitions = fanout.as_ref().map_or(0, |f| f.partitions);
        let partial = (!missing.is_empty())
            .then(|| crate::cluster::query::partial_message(&missing, partitions));
        let mut result = match (result, &partial) {
            (Err(_), Some(why)) if deny_partial => return Err(ApiError::unavailable(why.clone())),
            (result, _) => result?,
        };
        if let Some(why) = &partial {
            result.notices.push(why.clone());
        }
        let missing: Vec<String> = missing.iter().map(u32::to_string).collect();
        let body = if streamed(&req, &result) {
            stream_atlas_json(&runtime, result)
        } else {
            axum::body::Body::from(result.render(&req))
        };
        Ok::<_, ApiError>((
            req.format.content_type(),
            body,
            (!missing.is_empty()).then(|| missing.join(",")),
        ))
    })
    .await
    .map_err(|e| ApiError::task_failed("the graph task", e))?;
    match outcome {
        Ok((content_type, body, partial)) => {
            let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
            if let Some(list) = partial
                && let Ok(value) = HeaderValue::from_str(&list)
            {
                response.headers_mut().insert(PARTIAL_HEADER, value);
            }
            Ok(response)
        }
        Err(e) if png && browser => {
            let user_error = e.status.is_client_error();
            let image = argus_chart::render_error_png(&e.message, width, height, user_error);
            Ok(([(header::CONTENT_TYPE, "image/png")], image).into_response())
        }
        Err(e) => Err(e),
    }
}

/// The partitions a partial graph lacks, comma-separated.
const PARTIAL_HEADER: &str = "x-argus-partial";

/// Numbers above which a `json` answer is sent while it is written (about 1 MB of text).
const STREAMED_NUMBERS: usize = 60_000;
/// Parts of a streamed answer, four in flight at most.
const STREAMED_PART_BYTES: usize = 256 * 1024;
const STREAMED_PARTS_IN_FLIGHT: usize = 4;

/// Whether the answer is Atlas `json` large enough to stream.
fn streamed(req: &GraphRequest, result: &argus_query::graph::GraphResult) -> bool {
    use argus_query::graph::Format;
    matches!(req.format, Format::Json | Format::StdJson)
        && result.rows().saturating_mul(result.series.len()) > STREAMED_NUMBERS
}

/// A part of a streamed answer that goes back to its writer once it has been sent, so that
/// an answer reuses a few part buffers instead of faulting in fresh pages for every part.
/// When the writer is gone, the buffer is simply freed.
struct SentPart {
    text: Vec<u8>,
    back: std::sync::mpsc::SyncSender<Vec<u8>>,
}

impl AsRef<[u8]> for SentPart {
    fn as_ref(&self) -> &[u8] {
        &self.text
    }
}

impl Drop for SentPart {
    fn drop(&mut self) {
        let _ = self.back.try_send(std::mem::take(&mut self.text));
    }
}

/// The body of a large `json` answer, written on a blocking thread while it is sent: the
/// client reads the first lines while the last are being printed, and the server holds a
/// few parts of 256 KiB instead of the whole text (5.7 MB for 2,000 lines of 3 h). The
/// writing stops when the client goes away.
fn stream_atlas_json(
    runtime: &tokio::runtime::Handle,
    result: argus_query::graph::GraphResult,
) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAMED_PARTS_IN_FLIGHT);
    runtime.spawn_blocking(move || {
        // Room for every buffer that can be out at once: in the channel, being written by
        // the connection, and just emitted.
        let (back, sent) = std::sync::mpsc::sync_channel(STREAMED_PARTS_IN_FLIGHT + 2);
        result.write_atlas_json(STREAMED_PART_BYTES, &mut |text| {
            let part = SentPart {
                text,
                back: back.clone(),
            };
            tx.blocking_send(Ok::<_, std::convert::Infallible>(bytes::Bytes::from_owner(
                part,
            )))
            .ok()?;
            Some(sent.try_recv().unwrap_or_default())
        });
        // The answer ends when its sender goes: let it go before the lines are freed. For q4
        // of the peer set (2,000 lines) the freeing was about 5 % of the answer's time, and
        // the client waited for it.
        drop(tx);
        drop(result);
    });
    axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// `GET /api/v1/cluster/partial`: one data expression over this store node's share of the
/// partitions, as a query node asks for it; the body is the encoded partial. It takes no
/// query slot: the asking node holds one, and two nodes asking each other must not wait on
/// each other's slots.
pub async fn cluster_partial(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("not a cluster node"));
    };
    let req = crate::cluster::query::PartialRequest::from_params(&params)
        .map_err(ApiError::bad_request)?;
    let (store, cache, unserved) = cluster
        .can_answer(req.of, &req.partitions)
        .map_err(ApiError::unavailable)?;
    let mut req = req;
    req.partitions.retain(|p| !unserved.contains(p));
    let limits = state.cfg.query_limits();
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let max_series = state.cfg.query_max_series;
    let cancel = Cancel::default();
    let _stop_when_dropped = cancel.on_drop();
    let body = tokio::task::spawn_blocking(move || {
        let guarded = Guarded::new(&store, timeout, max_series, cancel);
        crate::cluster::query::answer(&req, &guarded, (&store, &cache), &limits)
    })
    .await
    .map_err(|e| ApiError::task_failed("the partial task", e))?
    .map_err(ApiError::bad_request)?;
    let response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    Ok(with_unserved(response, &unserved))
}

/// `GET /api/v1/cluster/loss`: this store node's loss books of the partitions asked
/// (`cluster/books.rs`), as a node reporting the cluster's loss asks for them.
pub async fn cluster_loss(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("not a cluster node"));
    };
    let (of, mut partitions) =
        crate::cluster::query::partitions_param(&params).map_err(ApiError::bad_request)?;
    let (_, _, unserved) = cluster
        .can_answer(of, &partitions)
        .map_err(ApiError::unavailable)?;
    let log = cluster.log().map_err(ApiError::unavailable)?;
    partitions.retain(|p| !unserved.contains(p));
    let body = log.books_of(&partitions);
    let response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    Ok(with_unserved(response, &unserved))
}

/// `GET /api/v1/cluster/series`: one PromQL selector's series over a window, from this store
/// node's share of the partitions, as a query node evaluating PromQL asks for them (the
/// encoded lines). Like `cluster/partial`, it takes no query slot.
pub async fn cluster_series(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("not a cluster node"));
    };
    let mut req = crate::cluster::query::SeriesRequest::from_params(&params)
        .map_err(ApiError::bad_request)?;
    let (store, cache, unserved) = cluster
        .can_answer(req.of, &req.partitions)
        .map_err(ApiError::unavailable)?;
    req.partitions.retain(|p| !unserved.contains(p));
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let max_series = state.cfg.query_max_series;
    let cancel = Cancel::default();
    let _stop_when_dropped = cancel.on_drop();
    let body = tokio::task::spawn_blocking(move || {
        let guarded = Guarded::new(&store, timeout, max_series, cancel);
        crate::cluster::query::answer_series(
            &req,
            &guarded,
            (&store, &cache),
            usize::try_from(max_series).unwrap_or(usize::MAX),
        )
    })
    .await
    .map_err(|e| ApiError::task_failed("the series task", e))?
    .map_err(ApiError::bad_request)?;
    let response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    Ok(with_unserved(response, &unserved))
}

/// `GET /api/v1/cluster/aggregate`: this store node's part of a PromQL aggregation over its
/// share of the partitions (per group, accumulators), as a query node asks for it. Like
/// `cluster/partial`, it takes no query slot.
pub async fn cluster_aggregate(
    state: State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    pushed_promql(state, q, crate::cluster::query::answer_aggregate).await
}

/// `GET /api/v1/cluster/top`: this store node's own top (or bottom) k series of a PromQL
/// `topk`/`bottomk` over its share of the partitions, as a query node asks for them.
pub async fn cluster_top(
    state: State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    pushed_promql(state, q, crate::cluster::query::answer_top).await
}

/// What a store node answers for PromQL pushed down to it.
type PushedAnswer = fn(
    &crate::cluster::query::AggregateRequest,
    &dyn argus_tsdb::SeriesSource,
    (&argus_tsdb::Store, &crate::cluster::query::PartitionCache),
    ((i64, i64), usize),
) -> Result<Vec<u8>, String>;

/// A store node's answer to PromQL pushed down to it, over the partitions it serves.
async fn pushed_promql(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
    answer: PushedAnswer,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("not a cluster node"));
    };
    let mut req = crate::cluster::query::AggregateRequest::from_params(&params)
        .map_err(ApiError::bad_request)?;
    let (store, cache, unserved) = cluster
        .can_answer(req.of, &req.partitions)
        .map_err(ApiError::unavailable)?;
    req.partitions.retain(|p| !unserved.contains(p));
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let max_series = state.cfg.query_max_series;
    let bounds = crate::cluster::query::data_bounds(&store, state.cfg.retention_ms);
    let cancel = Cancel::default();
    let _stop_when_dropped = cancel.on_drop();
    let body = tokio::task::spawn_blocking(move || {
        let guarded = Guarded::new(&store, timeout, max_series, cancel);
        answer(
            &req,
            &guarded,
            (&store, &cache),
            (bounds, usize::try_from(max_series).unwrap_or(usize::MAX)),
        )
    })
    .await
    .map_err(|e| ApiError::task_failed("the pushed-down PromQL task", e))?
    .map_err(ApiError::bad_request)?;
    let response = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    Ok(with_unserved(response, &unserved))
}

/// Names the partitions a store node was asked for but does not serve.
fn with_unserved(mut response: Response, unserved: &[u32]) -> Response {
    if !unserved.is_empty() {
        let list: Vec<String> = unserved.iter().map(u32::to_string).collect();
        if let Ok(value) = HeaderValue::from_str(&list.join(",")) {
            response
                .headers_mut()
                .insert(crate::cluster::query::UNSERVED_HEADER, value);
        }
    }
    response
}

/// `GET /api/v1/cluster/tags`: the series counts per tag key and value over this store
/// node's share of the partitions, as a query node asks for them (JSON).
pub async fn cluster_tags(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let Some(cluster) = state.cluster.clone() else {
        return Err(ApiError::not_found("not a cluster node"));
    };
    let (of, partitions) =
        crate::cluster::query::partitions_param(&params).map_err(ApiError::bad_request)?;
    let ask = TagsRequest::from_params(&params).map_err(ApiError::bad_request)?;
    let (store, cache, unserved) = cluster
        .can_answer(of, &partitions)
        .map_err(ApiError::unavailable)?;
    let served: Vec<u32> = partitions
        .into_iter()
        .filter(|p| !unserved.contains(p))
        .collect();
    let counts = tokio::task::spawn_blocking(move || ask.count((&store, &cache), &served, of))
        .await
        .map_err(|e| ApiError::task_failed("the tags task", e))?
        .map_err(ApiError::bad_request)?;
    Ok(with_unserved(axum::Json(counts).into_response(), &unserved))
}

/// Atlas's test for a browser's user agent.
fn is_browser(agent: &str) -> bool {
    let agent = agent.to_ascii_lowercase();
    ["mozilla", "msie", "gecko", "chrome", "opera", "webkit"]
        .iter()
        .any(|b| agent.contains(b))
}

/// `GET /api/v1/expr?q=…`: the stack after each step of the expression, as Atlas's expr
/// debug API; an invalid expression gets the graph API's error.
pub async fn expr_debug(
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let expr = params
        .iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| ApiError::bad_request("missing required parameter 'q'"))?;
    let steps = tokio::task::spawn_blocking(move || argus_query::debug(&expr))
        .await
        .map_err(|e| ApiError::task_failed("the expr task", e))??;
    let body: Vec<serde_json::Value> = steps
        .into_iter()
        .map(|s| {
            let vars: serde_json::Map<String, serde_json::Value> = s
                .variables
                .into_iter()
                .map(|(k, v)| (k, serde_json::Value::String(v)))
                .collect();
            json!({"program": s.program, "context": {"stack": s.stack, "variables": vars}})
        })
        .collect();
    Ok(axum::Json(body).into_response())
}

/// Where the series are, for an operator finding what exploded: the `top` (default 10, at
/// most 1,000) metric names and tag keys by series count, the caps, and how many new series
/// the caps refused.
/// `GET /api/v1/agents`: the agents connected to this node now, as they introduced
/// themselves (id, host, the event streams they serve, version, step), by host. Their own
/// counters are series like any other (`argus.agent.*`, tagged with their `nf.node`).
pub async fn agents(State(state): State<AppState>) -> impl IntoResponse {
    let mut list: Vec<(String, String, serde_json::Value)> = state
        .connected
        .lock()
        .values()
        .map(|h| {
            (
                h.node.clone(),
                h.agent_id.clone(),
                json!({
                    "agent": h.agent_id,
                    "node": h.node,
                    "streams": h.streams,
                    "version": h.version,
                    "stepMs": h.step_ms,
                }),
            )
        })
        .collect();
    list.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    axum::Json(serde_json::Value::Array(
        list.into_iter().map(|(_, _, v)| v).collect(),
    ))
}

/// `GET /api/v1/loss`: every agent's batches accounted for, per stream, since the agents
/// started; with `s` (and `e`, `step`), over that window from the `argus.loss.*` series, per
/// step and in all (`s=e-1d`: the daily ratio). See `loss.rs`.
pub async fn loss(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    if !params.iter().any(|(k, _)| k == "s") {
        let st = state.clone();
        let auth = authorization(&headers);
        let (agents, missing) = tokio::task::spawn_blocking(move || crate::loss::agents(&st, auth))
            .await
            .map_err(|e| ApiError::task_failed("the loss report", e))?
            .map_err(ApiError::unavailable)?;
        let mut body = crate::loss::report(&agents);
        if !missing.is_empty() {
            // Partitions no store node answered for: their agents' counts are missing.
            body["missingPartitions"] = json!(missing);
        }
        return Ok(axum::Json(body).into_response());
    }
    let store = state.store.clone();
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let fanout = state
        .cluster
        .as_ref()
        .and_then(|c| {
            c.fanout(
                authorization(&headers),
                false,
                state.cfg.query_limits(),
                timeout,
            )
        })
        .map(|f| f as argus_query::split::SharedFanout);
    let body = tokio::task::spawn_blocking(move || crate::loss::window(&store, &params, fanout))
        .await
        .map_err(|e| ApiError::task_failed("the loss report", e))??;
    Ok(axum::Json(body).into_response())
}

pub async fn cardinality(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let top = match params.iter().find(|(k, _)| k == "top") {
        Some((_, v)) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("invalid top {v:?}: expected 1 to 1000"))
            })?,
        None => 10,
    };
    // In a cluster: every (key, value) of every store node's share, counted here.
    let cluster = cluster_tags_of(&state, &headers, &params, TagsRequest::default()).await?;
    let c = match &cluster {
        Some((series, tags, _)) => crate::cluster::tags::cardinality(*series, tags, top),
        None => {
            let store = state.store.clone();
            tokio::task::spawn_blocking(move || store.cardinality(top))
                .await
                .map_err(|e| ApiError::task_failed("the cardinality task", e))?
        }
    };
    let body = axum::Json(json!({
        "series": c.series,
        "limits": {
            "maxSeries": state.cfg.max_series,
            "maxSeriesPerMetric": state.cfg.max_series_per_metric,
        },
        "refusedNewSeries": state.metrics.rejected(crate::validation::RejectReason::SeriesLimit),
        "names": c.names.iter().map(|(n, k)| json!({"name": n, "series": k})).collect::<Vec<_>>(),
        "keys": c.keys.iter().map(|(key, n, v)| json!({"key": key, "series": n, "values": v})).collect::<Vec<_>>(),
    }));
    Ok(with_partial(body.into_response(), cluster.as_ref()))
}

/// How the series matching `q` (all if absent) are stored: sealed bytes, values, and bytes
/// per value, for operators and for the memory benchmark.
pub async fn debug_storage(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query_params(q)?;
    let matcher = match params.iter().find(|(k, _)| k == "q") {
        Some((_, v)) if !v.trim().is_empty() => Some(argus_query::tag_query(v)?),
        _ => None,
    };
    let store = state.store.clone();
    let st = tokio::task::spawn_blocking(move || {
        let ids = matcher
            .as_ref()
            .map(|m| argus_tsdb::SeriesSource::select(&*store, m));
        store.storage_stats(ids.as_ref())
    })
    .await
    .map_err(|e| ApiError::task_failed("the storage task", e))?;
    let per_value = if st.sealed_values > 0 {
        st.sealed_bytes as f64 / st.sealed_values as f64
    } else {
        0.0
    };
    Ok(axum::Json(json!({
        "series": st.n_series,
        "sealedBlocks": st.sealed_blocks,
        "sealedBytes": st.sealed_bytes,
        "sealedSlots": st.sealed_slots,
        "sealedValues": st.sealed_values,
        "sealedBytesPerValue": per_value,
        "headSlots": st.head_slots,
    }))
    .into_response())
}
