//! The HTTP API (axum): publish and backfill, tags, graph, health and the server's metrics.
//! Handlers are thin: decode the request, call the store or the query crate on a blocking
//! thread when the work is CPU-bound, and turn the outcome into Atlas's response shapes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use argus_proto::v1::Hello;
use parking_lot::Mutex;

use argus_query::graph::{GraphRequest, evaluate_with_limits};

use crate::query_guard::{Cancel, Guarded};
use argus_tsdb::{Matcher, Store};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::config::ServerConfig;
use crate::convert::RemoteWriteState;
use crate::error::ApiError;
use crate::events::{EventHub, IntakeError, IntakeOutcome, NdjsonIntake};
use crate::grpc::AgentRegistry;
use crate::metrics::ServerMetrics;
use crate::publish::{Mode, PayloadError, decode_body, parse_payload, store_datapoints};

/// Everything a handler may touch.
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
    pub tokens: Arc<crate::auth::TokenStore>,
    /// Graph queries running at once (`--max-concurrent-queries`).
    pub query_permits: Arc<tokio::sync::Semaphore>,
    /// Open connections per listener (`--max-connections`).
    pub connections: Arc<crate::connections::Connections>,
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
                Arc::new(crate::live::LiveHub::new(
                    store.clock(),
                    cfg.live_max_per_client,
                )),
            )),
            store,
            cfg: Arc::new(cfg),
            metrics: Arc::new(ServerMetrics::default()),
            agents: Arc::new(agents),
            connected: Arc::new(Mutex::new(HashMap::new())),
            remote_write: Arc::new(RemoteWriteState::default()),
            tokens: Arc::new(crate::auth::TokenStore::default()),
            query_permits,
            connections: Arc::new(crate::connections::Connections::new(cfg_max_connections)),
        }
    }
}

/// Every route template, as counted in `argus_http_requests_total{route}`.
const ROUTES: [&str; 17] = [
    "/api/v1/cardinality",
    "/api/v1/live",
    "/api/v1/live/subscriptions",
    "/api/v1/stream",
    "/api/v1/publish",
    "/api/v1/write",
    "/api/v1/events/{stream}",
    "/api/v1/publish-fast",
    "/api/v1/backfill",
    "/api/v1/tags",
    "/api/v1/tags/{key}",
    "/api/v1/graph",
    "/api/v1/expr",
    "/api/v1/expr/debug",
    "/api/v1/debug/storage",
    "/healthz",
    "/metrics",
];

pub fn router(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/api/v1/publish", post(publish))
        .route("/api/v1/publish-fast", post(publish))
        .route("/api/v1/backfill", post(backfill))
        .route("/api/v1/write", post(remote_write))
        .route("/api/v1/events/{stream}", post(events))
        .route("/api/v1/live", get(crate::live_http::live))
        .route(
            "/api/v1/live/subscriptions",
            get(crate::live_http::subscriptions),
        )
        .route("/api/v1/stream", get(crate::live_http::stream))
        .route("/api/v1/tags", get(tag_keys))
        .route("/api/v1/tags/{key}", get(tag_values))
        .route("/api/v1/graph", get(graph))
        .route("/api/v1/expr", get(expr_debug))
        .route("/api/v1/expr/debug", get(expr_debug))
        .route("/api/v1/debug/storage", get(debug_storage))
        .route("/api/v1/cardinality", get(cardinality))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::http_serve::guard_body,
        ))
        // Before the body is read: an unauthenticated client costs no body.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Route templates are a fixed set (metric labels must be bounded); anything else,
    // including unmatched paths, is counted as "other".
    let matched = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    let route = ROUTES
        .iter()
        .copied()
        .find(|r| Some(*r) == matched)
        .unwrap_or("other");
    let resp = next.run(req).await;
    state.metrics.http_request(route, resp.status().as_u16());
    resp
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the README for the API")
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = state.metrics.render(&state.store, &state.connections);
    text.push_str(&state.tokens.render_metrics());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(state, headers, body, Mode::Publish).await
}

async fn backfill(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(state, headers, body, Mode::Backfill).await
}

async fn ingest(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    mode: Mode,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from(PayloadError::TooLarge {
                limit: state.cfg.max_body_bytes,
                decompressed: false,
            })
        } else {
            ApiError {
                status: e.status(),
                message: format!("reading request body: {}", e.body_text()),
            }
        }
    })?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("invalid").to_string());
    let st = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let decoded = decode_body(&body, encoding.as_deref(), st.cfg.max_body_bytes)?;
        let now = st.store.now_ms();
        let parsed = parse_payload(
            &decoded,
            mode,
            now,
            st.cfg.publish_max_age_ms,
            st.cfg.retention_ms,
        )?;
        let outcome = store_datapoints(&st.store.writer(), parsed)?;
        drop(decoded);
        crate::memory::note_churn();
        Ok::<_, PayloadError>(outcome)
    })
    .await
    .map_err(|e| ApiError::internal(format!("publish task failed: {e}")))??;
    state.metrics.count(&outcome.rejected);
    let errors = outcome.rejected.total();
    if errors == 0 {
        return Ok(StatusCode::OK.into_response());
    }
    let messages = outcome.rejected.reasons();
    let (status, kind) = if outcome.stored == 0 {
        (StatusCode::BAD_REQUEST, "error")
    } else {
        (StatusCode::ACCEPTED, "partial")
    };
    let body = json!({"type": kind, "errorCount": errors, "message": messages});
    Ok((status, axum::Json(body)).into_response())
}

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

/// Prometheus remote write 1.0: a snappy-compressed `WriteRequest`. 204 when everything was
/// stored; 400 (not retried by Prometheus) for a malformed body or refused series, the
/// valid samples of the request stored; 413 for a body whose decompressed size is over the
/// limit, found from the snappy header before anything is decompressed.
async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|e| ApiError {
        status: e.status(),
        message: format!("reading request body: {}", e.body_text()),
    })?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc.as_bytes() != b"snappy"
    {
        return Err(ApiError::bad_request(format!(
            "unsupported Content-Encoding {:?}: remote write bodies are snappy (block format)",
            String::from_utf8_lossy(enc.as_bytes())
        )));
    }
    let limit = state.cfg.max_body_bytes;
    let st = state.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let len = snap::raw::decompress_len(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid snappy body: {e}")))?;
        if len > limit {
            return Err(ApiError {
                status: StatusCode::PAYLOAD_TOO_LARGE,
                message: format!(
                    "snappy body would decompress to {len} bytes, over the limit of {limit}"
                ),
            });
        }
        let writer = st.store.writer();
        let mut conv = with_scratch(len, |raw| {
            snap::raw::Decoder::new()
                .decompress(&body, raw)
                .map_err(|e| ApiError::bad_request(format!("invalid snappy body: {e}")))?;
            st.remote_write
                .convert(&writer, raw)
                .map_err(|e| ApiError::bad_request(format!("malformed WriteRequest: {}", e.0)))
        })?;
        let stored = conv.store(&writer, &[])?;
        drop(writer);
        crate::memory::note_churn();
        Ok::<_, ApiError>((stored, conv))
    })
    .await
    .map_err(|e| ApiError::internal(format!("remote write task failed: {e}")))??;
    let (stored, conv) = outcome;
    state.metrics.count(&conv.refusals);
    if conv.rejected_count() == 0 {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Err(ApiError::bad_request(format!(
        "{} samples refused, {stored} stored; first reasons: {}",
        conv.rejected_count(),
        conv.reasons().join("; ")
    )))
}

/// Runs `f` on a zeroed buffer of `len` bytes that the thread keeps for its next request:
/// remote-write bodies decompress to hundreds of kilobytes each, which a fresh allocation
/// would map and fault in page by page every time.
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    /// A buffer larger than this is not kept after the request.
    const KEEP: usize = 8 << 20;
    SCRATCH.with(|cell| {
        let mut buf = cell.take();
        buf.clear();
        buf.resize(len, 0);
        let out = f(&mut buf);
        if buf.capacity() <= KEEP {
            cell.replace(buf);
        }
        out
    })
}

/// Raw events as NDJSON, one JSON object per line, into an event stream. 200 when every line
/// was taken, 202 with the reasons when some were refused, 400 when none was. The body is
/// taken as it arrives (see [`NdjsonIntake`]), under `--http-body-timeout` and
/// `--max-body-bytes` (after gzip decoding); events taken before a body fails stay taken,
/// and the error says how many.
async fn events(
    State(state): State<AppState>,
    Path(stream): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    use http_body_util::BodyExt;
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("invalid").trim().to_ascii_lowercase())
    {
        None => false,
        Some(e) if e.is_empty() || e == "identity" => false,
        Some(e) if e == "gzip" || e == "x-gzip" => true,
        Some(e) => return Err(PayloadError::Encoding(e).into()),
    };
    let limit = state.cfg.max_body_bytes;
    let mut intake = NdjsonIntake::new(
        state.events.clone(),
        &stream,
        state.store.now_ms(),
        gzip,
        limit,
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let timeout = Duration::from_millis(state.cfg.http_body_timeout_ms.max(1) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    let mut piece: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError {
                    status: StatusCode::REQUEST_TIMEOUT,
                    message: format!(
                        "the request body did not arrive within {} ms (--http-body-timeout); \
                         {} events before it were taken",
                        timeout.as_millis(),
                        intake.accepted()
                    ),
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "reading the request body: {e}; {} events before it were taken",
                    intake.accepted()
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        piece.extend_from_slice(&data);
        if piece.len() >= EVENT_PIECE_BYTES {
            let taken = std::mem::take(&mut piece);
            intake = tokio::task::spawn_blocking(move || {
                let r = intake.push(&taken);
                (intake, r)
            })
            .await
            .map_err(|e| ApiError::internal(format!("events task failed: {e}")))
            .and_then(|(intake, r)| match r {
                Ok(()) => Ok(intake),
                Err(e) => Err(intake_error(e, intake.accepted())),
            })?;
        }
    }
    let outcome = tokio::task::spawn_blocking(move || {
        let accepted_before = intake.accepted();
        intake
            .push(&piece)
            .and_then(|()| intake.finish())
            .map_err(|e| intake_error(e, accepted_before))
    })
    .await
    .map_err(|e| ApiError::internal(format!("events task failed: {e}")))??;
    let IntakeOutcome {
        accepted,
        refused,
        reasons,
    } = outcome;
    if refused == 0 {
        return Ok(axum::Json(json!({"accepted": accepted})).into_response());
    }
    let status = if accepted == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::ACCEPTED
    };
    let body = json!({
        "type": if accepted == 0 { "error" } else { "partial" },
        "accepted": accepted,
        "errorCount": refused,
        "message": reasons,
    });
    Ok((status, axum::Json(body)).into_response())
}

/// Body bytes gathered before they are handed to the intake on a blocking thread.
const EVENT_PIECE_BYTES: usize = 1 << 20;

fn intake_error(e: IntakeError, accepted: usize) -> ApiError {
    let status = match e {
        IntakeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        IntakeError::Gzip(_) | IntakeError::Stream(_) => StatusCode::BAD_REQUEST,
    };
    ApiError {
        status,
        message: format!("{e}; {accepted} events before it were taken"),
    }
}

async fn tag_keys(
    State(state): State<AppState>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = tags_params(&query_params(q)?)?;
    if p.verbose {
        // Every key=value pair with its series count, keyed "key=value" for paging.
        let mut pairs: Vec<(String, (String, String, u64))> = Vec::new();
        for (key, _) in state.store.tag_keys(p.q.as_ref()) {
            for (value, count) in state.store.tag_values(&key, p.q.as_ref()) {
                pairs.push((format!("{key}={value}"), (key.clone(), value, count)));
            }
        }
        let (page, next) = page(pairs, &p);
        let out: Vec<_> = page
            .into_iter()
            .map(|(_, (k, v, n))| json!({"key": k, "value": v, "count": n}))
            .collect();
        return Ok(tags_response(axum::Json(out).into_response(), next));
    }
    let (page, next) = page(state.store.tag_keys(p.q.as_ref()), &p);
    Ok(tags_response(
        list_body(page.into_iter().map(|(k, _)| k).collect(), p.txt),
        next,
    ))
}

async fn tag_values(
    State(state): State<AppState>,
    Path(key): Path<String>,
    q: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = tags_params(&query_params(q)?)?;
    let (page, next) = page(state.store.tag_values(&key, p.q.as_ref()), &p);
    if p.verbose {
        let out: Vec<_> = page
            .into_iter()
            .map(|(v, n)| json!({"key": key, "value": v, "count": n}))
            .collect();
        return Ok(tags_response(axum::Json(out).into_response(), next));
    }
    Ok(tags_response(
        list_body(page.into_iter().map(|(v, _)| v).collect(), p.txt),
        next,
    ))
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

async fn graph(
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
    let _permit = tokio::time::timeout(timeout, state.query_permits.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "{} queries are running (--max-concurrent-queries) and none finished within \
                 {} ms; retry later",
                state.cfg.max_concurrent_queries,
                timeout.as_millis()
            ))
        })?;
    let cancel = Cancel::default();
    // Dropped with this request: when the client goes away, the query stops.
    let _stop_when_dropped = cancel.on_drop();
    let metrics = state.metrics.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let req = GraphRequest::from_params(&params, store.now_ms(), store.config().step_ms)?;
        let guarded = Guarded::new(&store, timeout, max_series, cancel.clone());
        let result = evaluate_with_limits(&req, &guarded, &limits);
        if let Err(e) = &result
            && let Some(i) = crate::query_guard::stop_reason(e, &cancel)
        {
            metrics.queries_stopped[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let result = result?;
        Ok::<_, ApiError>((req.format.content_type(), result.render(&req)))
    })
    .await
    .map_err(|e| ApiError::internal(format!("graph task failed: {e}")))?;
    match outcome {
        Ok((content_type, body)) => {
            Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
        }
        Err(e) if png && browser => {
            let user_error = e.status.is_client_error();
            let image = argus_chart::render_error_png(&e.message, width, height, user_error);
            Ok(([(header::CONTENT_TYPE, "image/png")], image).into_response())
        }
        Err(e) => Err(e),
    }
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
async fn expr_debug(
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
        .map_err(|e| ApiError::internal(format!("expr task failed: {e}")))??;
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
async fn cardinality(
    State(state): State<AppState>,
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
    let store = state.store.clone();
    let c = tokio::task::spawn_blocking(move || store.cardinality(top))
        .await
        .map_err(|e| ApiError::internal(format!("cardinality task failed: {e}")))?;
    Ok(axum::Json(json!({
        "series": c.series,
        "limits": {
            "maxSeries": state.cfg.max_series,
            "maxSeriesPerMetric": state.cfg.max_series_per_metric,
        },
        "refusedNewSeries": state.metrics.rejected(crate::validation::RejectReason::SeriesLimit),
        "names": c.names.iter().map(|(n, k)| json!({"name": n, "series": k})).collect::<Vec<_>>(),
        "keys": c.keys.iter().map(|(key, n, v)| json!({"key": key, "series": n, "values": v})).collect::<Vec<_>>(),
    }))
    .into_response())
}

/// How the series matching `q` (all if absent) are stored: sealed bytes, values, and bytes
/// per value, for operators and for the memory benchmark.
async fn debug_storage(
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
    .map_err(|e| ApiError::internal(format!("storage task failed: {e}")))?;
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
