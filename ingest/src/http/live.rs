//! The live HTTP API: `GET /api/v1/live?q=MQL` (Server-Sent Events, or a WebSocket when the
//! request asks to upgrade), `GET /api/v1/live/subscriptions`, and `GET /api/v1/stream?q=ASL`
//! (each step's values of a Stack Language expression, as the step closes).
//!
//! A live consumer receives, in order: `subscribed` (its id, the query, the streams), then
//! `row` for each result row, `stats` every second (events matched, rows sent, rows
//! dropped), `diagnostic` when rows were dropped because it read too slowly, and `end` when
//! nothing more can come (a `limit` reached). Over a WebSocket each message is a JSON object
//! with a `type` field naming the same kinds.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::response::ApiError;
use crate::live::{Language, LiveHandle, LiveSpec};
use crate::query_guard::{Cancel, Guarded};
use crate::state::AppState;

/// Longest wait after a step's end before `/api/v1/stream` reads it.
const MAX_LAG_MS: u64 = 3_600_000;
/// How often a consumer hears the counts.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Messages between the subscription and the connection: small, so that a slow reader is
/// found out by the subscription's bounded queue (where drops are counted), not hidden in
/// a buffer here.
const OUTPUT_BUFFER: usize = 8;

/// One message to a live consumer.
#[derive(Debug)]
pub enum LiveMessage {
    Subscribed(Value),
    Row(Value),
    Stats(Value),
    Diagnostic(Value),
    End(Value),
}

impl LiveMessage {
    fn kind(&self) -> &'static str {
        match self {
            LiveMessage::Subscribed(_) => "subscribed",
            LiveMessage::Row(_) => "row",
            LiveMessage::Stats(_) => "stats",
            LiveMessage::Diagnostic(_) => "diagnostic",
            LiveMessage::End(_) => "end",
        }
    }

    fn data(&self) -> &Value {
        match self {
            LiveMessage::Subscribed(v)
            | LiveMessage::Row(v)
            | LiveMessage::Stats(v)
            | LiveMessage::Diagnostic(v)
            | LiveMessage::End(v) => v,
        }
    }

    fn to_sse(&self) -> SseEvent {
        SseEvent::default()
            .event(self.kind())
            .data(self.data().to_string())
    }

    /// Over a WebSocket: `{"type": "row", "row": {...}}`, the others flattened.
    fn to_ws_text(&self) -> String {
        match self {
            LiveMessage::Row(row) => json!({"type": "row", "row": row}).to_string(),
            other => {
                let mut obj = match other.data() {
                    Value::Object(m) => m.clone(),
                    v => {
                        let mut m = serde_json::Map::new();
                        m.insert("value".into(), v.clone());
                        m
                    }
                };
                obj.insert("type".into(), other.kind().into());
                Value::Object(obj).to_string()
            }
        }
    }
}

fn counts(handle: &LiveHandle) -> Value {
    let sub = &handle.sub;
    let (window_dropped, late) = sub.engine_dropped();
    json!({
        "matched": sub.matched.load(Ordering::Relaxed),
        "rows": sub.rows.load(Ordering::Relaxed),
        "dropped": sub.dropped.load(Ordering::Relaxed),
        "droppedInWindows": window_dropped,
        "late": late,
    })
}

/// Moves a subscription's rows and counts to a connection until either ends. Dropping the
/// handle at the end cancels the subscription (and, through the agents' control streams,
/// stops their traffic for it).
async fn pump(mut handle: LiveHandle, out: mpsc::Sender<LiveMessage>) {
    let mut hello = json!({
        "id": handle.sub.id,
        "query": handle.sub.query.text,
        "streams": handle.sub.query.from,
        "queue": crate::live::QUEUE_ROWS,
    });
    // The language, and for a Stack Language expression what its rows are (kind, columns,
    // step).
    if let (Value::Object(h), Value::Object(shape)) = (&mut hello, &handle.sub.shape) {
        h.extend(shape.clone());
    }
    if out.send(LiveMessage::Subscribed(hello)).await.is_err() {
        return;
    }
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    stats.tick().await;
    let mut reported_dropped = 0;
    loop {
        tokio::select! {
            row = handle.rows.recv() => match row {
                Some(row) => {
                    if out.send(LiveMessage::Row(row)).await.is_err() {
                        return;
                    }
                }
                None => return,
            },
            _ = stats.tick() => {
                let dropped = handle.sub.dropped.load(Ordering::Relaxed);
                if dropped > reported_dropped {
                    let note = json!({
                        "dropped": dropped,
                        "new": dropped - reported_dropped,
                        "message": format!(
                            "{} rows dropped since the last report ({dropped} in all): this consumer reads slower than the query produces; the queue holds {} rows",
                            dropped - reported_dropped,
                            crate::live::QUEUE_ROWS
                        ),
                    });
                    reported_dropped = dropped;
                    if out.send(LiveMessage::Diagnostic(note)).await.is_err() {
                        return;
                    }
                }
                if out.send(LiveMessage::Stats(counts(&handle))).await.is_err() {
                    return;
                }
                if handle.sub.ended.load(Ordering::Relaxed) && handle.rows.is_empty() {
                    let _ = out.send(LiveMessage::End(counts(&handle))).await;
                    return;
                }
            }
            _ = out.closed() => return,
        }
    }
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn subscribe(
    state: &AppState,
    params: &[(String, String)],
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<LiveHandle, ApiError> {
    let q = param(params, "q").ok_or_else(|| {
        ApiError::bad_request("missing required parameter 'q' (an MQL query, e.g. select * from requests where status >= 500, or a Stack Language expression over events, e.g. name,requests,:eq,status,500,:ge,:and,(,path,),:table)")
    })?;
    let spec = live_spec(state, params, q)?;
    // Who asked, for the listing: as the client names itself, else its user agent, else its
    // address.
    let client = param(params, "client")
        .filter(|c| !c.trim().is_empty())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .filter(|ua| !ua.trim().is_empty())
                .map(str::to_string)
        })
        .or_else(|| peer.map(|p| p.to_string()))
        .unwrap_or_else(|| "unknown".to_string());
    Ok(state.events.live.subscribe_spec(&spec, &client, peer)?)
}

/// The query of a live request: its text, its language (`lang=mql|asl`, else recognised:
/// MQL starts with `select`), the step of a stepped Stack Language expression (`step`,
/// default the server's step) and the event-time field (`time-field`).
fn live_spec(state: &AppState, params: &[(String, String)], q: &str) -> Result<LiveSpec, ApiError> {
    let language = match param(params, "lang") {
        None | Some("") => Language::detect(q),
        Some(name) => Language::named(name).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid parameter 'lang' = {name:?}: expected mql or asl"
            ))
        })?,
    };
    let step_ms = match param(params, "step") {
        None => state.store.config().step_ms.clamp(
            argus_query::events::MIN_STEP_MS,
            argus_query::events::MAX_STEP_MS,
        ),
        Some(_) if language == Language::Mql => {
            return Err(ApiError::bad_request(
                "parameter 'step' applies to Stack Language expressions over events; an MQL query sets its windows with window",
            ));
        }
        Some(v) => crate::config::parse_duration_ms(v)
            .map_err(|e| ApiError::bad_request(format!("invalid parameter 'step' = {v:?}: {e}")))?,
    };
    let step_ms = argus_query::events::check_step(step_ms)
        .map_err(|e| ApiError::bad_request(format!("invalid parameter 'step': {e}")))?;
    Ok(LiveSpec {
        text: q.to_string(),
        language,
        step_ms,
        time_field: param(params, "time-field").map(str::to_string),
    })
}

/// `GET /api/v1/live?q=MQL[&time-field=F]`: results as they happen, over SSE or (when the
/// request upgrades) a WebSocket. A query that cannot run is a 400 with the parse error.
pub async fn live(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let (mut parts, _body) = req.into_parts();
    let params: Vec<(String, String)> = Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let handle = subscribe(&state, &params, &parts.headers, peer)?;
    let (tx, rx) = mpsc::channel(OUTPUT_BUFFER);
    if upgrade {
        let ws = WebSocketUpgrade::from_request_parts(&mut parts, &state)
            .await
            .map_err(|e| ApiError::bad_request(format!("WebSocket upgrade: {}", e.body_text())))?;
        return Ok(ws.on_upgrade(move |socket| async move {
            tokio::spawn(pump(handle, tx));
            websocket_session(socket, rx).await;
        }));
    }
    tokio::spawn(pump(handle, tx));
    let events = ReceiverStream::new(rx).map(|m| Ok::<_, Infallible>(m.to_sse()));
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// Writes the messages to the socket until either side ends; a message from the client
/// `{"type":"cancel"}` (or closing the socket) cancels.
async fn websocket_session(mut socket: WebSocket, mut rx: mpsc::Receiver<LiveMessage>) {
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => {
                    if socket.send(Message::Text(m.to_ws_text().into())).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(t))) if t.contains("cancel") => {
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `GET /api/v1/live/subscriptions`: every live query with its counts.
pub async fn subscriptions(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(state.events.live.list())
}

/// `GET /api/v1/stream?q=ASL`: each output series' value for every step, as Server-Sent
/// Events (`event: step`), as soon as the step closes (plus `lag`, default 500 ms, for the
/// last samples of the step to arrive). Parameters as the graph API's (`q`, `tz`, ...).
pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    parts: axum::http::request::Parts,
    q: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let params = q
        .map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    match param(&params, "source") {
        None | Some("store") => {}
        Some("events") => {
            let peer = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            return stream_events(&state, &params, &headers, peer);
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid parameter 'source' = {other:?}: expected store (stored series, the default) or events (live events)"
            )));
        }
    }
    let step_ms = state.store.config().step_ms;
    let lag_ms = match param(&params, "lag") {
        None => 500,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= MAX_LAG_MS)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "invalid parameter 'lag' = {v:?}: expected milliseconds, at most {MAX_LAG_MS}"
                ))
            })?,
    };
    // Checked once up front, so that a bad expression is a 400 and not a stream of errors.
    let base: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "s" | "e" | "step" | "format" | "lag"))
        .collect();
    let window = move |end: i64| {
        let mut p = base.clone();
        p.push(("s".into(), (end - step_ms).to_string()));
        p.push(("e".into(), end.to_string()));
        p.push(("step".into(), format!("{step_ms}ms")));
        p.push(("format".into(), "json".into()));
        p
    };
    let now = state.store.now_ms();
    let req = argus_query::GraphRequest::from_params(&window(now - now % step_ms), now, step_ms)?;
    argus_query::normalize(&req.expr)?;
    let (tx, rx) = mpsc::channel::<SseEvent>(OUTPUT_BUFFER);
    let store = state.store.clone();
    // Every step's evaluation is a graph query: the same limits, a slot among the graph
    // queries, and at most a step (or the query timeout) of time.
    let limits = state.cfg.query_limits();
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.min(step_ms).max(1) as u64);
    let max_series = state.cfg.query_max_series;
    let permits = state.query_permits.clone();
    let metrics = state.metrics.clone();
    // In a cluster each step fans out to the store nodes, as a graph request does.
    let cluster = state.cluster.clone();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    tokio::spawn(async move {
        loop {
            let now = store.now_ms();
            let next_end = now - now.rem_euclid(step_ms) + step_ms;
            let wake = (next_end - now) as u64 + lag_ms;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wake)) => {}
                _ = tx.closed() => return,
            }
            let params = window(next_end);
            let store = store.clone();
            let Ok(Ok(permit)) =
                tokio::time::timeout(timeout, permits.clone().acquire_owned()).await
            else {
                let busy = SseEvent::default().event("diagnostic").data(
                    json!({"message": "every query slot is busy (--max-concurrent-queries): this step is skipped"})
                        .to_string(),
                );
                if tx.send(busy).await.is_err() {
                    return;
                }
                continue;
            };
            let cancel = Cancel::default();
            let _stop_when_dropped = cancel.on_drop();
            let metrics = metrics.clone();
            let fanout = cluster
                .as_ref()
                .and_then(|c| c.fanout(authorization.clone(), false, limits, timeout));
            let outcome = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let req = argus_query::GraphRequest::from_params(&params, store.now_ms(), step_ms)?;
                let guarded = Guarded::new(&store, timeout, max_series, cancel.clone());
                let shared = fanout
                    .clone()
                    .map(|f| f as argus_query::split::SharedFanout);
                let result =
                    argus_query::graph::evaluate_with_fanout(&req, &guarded, &limits, shared);
                if let Err(e) = &result
                    && let Some(i) = crate::query_guard::stop_reason(e, &cancel)
                {
                    metrics.queries_stopped[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let missing = fanout.as_ref().map(|f| f.missing()).unwrap_or_default();
                result.map(|r| (r, missing))
            })
            .await;
            let event = match outcome {
                Ok(Ok((result, missing))) => {
                    let series: Vec<Value> = result
                        .series
                        .iter()
                        .map(|s| {
                            let value = s.values.first().copied().unwrap_or(f64::NAN);
                            json!({
                                "label": s.label,
                                "tags": s.tags.iter().collect::<std::collections::BTreeMap<_, _>>(),
                                "value": if value.is_finite() { json!(value) } else { json!(value.to_string()) },
                            })
                        })
                        .collect();
                    let mut step =
                        json!({"timestamp": next_end - step_ms, "step": step_ms, "series": series});
                    // Partitions without a live, caught-up store node: the step lacks them.
                    if !missing.is_empty() {
                        step["partial"] = json!(missing);
                    }
                    SseEvent::default().event("step").data(step.to_string())
                }
                Ok(Err(e)) => SseEvent::default()
                    .event("diagnostic")
                    .data(json!({"message": e.to_string()}).to_string()),
                Err(e) => SseEvent::default()
                    .event("diagnostic")
                    .data(json!({"message": format!("evaluation failed: {e}")}).to_string()),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /api/v1/stream?source=events&q=ASL[&step=..]`: a Stack Language data expression (or
/// `:sample`) over live events, drawn per step as stored series are: each step's series as
/// an `event: step` message (`{"timestamp", "step", "series": [{"label", "tags", "value"}]}`)
/// as the step closes. Steps with no events send nothing.
fn stream_events(
    state: &AppState,
    params: &[(String, String)],
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<Response, ApiError> {
    let q = param(params, "q").ok_or_else(|| {
        ApiError::bad_request(
            "missing required parameter 'q' (a Stack Language expression over events, e.g. name,requests,:eq,:count,(,path,),:by)",
        )
    })?;
    let mut spec = live_spec(state, params, q)?;
    spec.language = Language::Asl;
    let client = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("stream")
        .to_string();
    let mut handle = state.events.live.subscribe_spec(&spec, &client, peer)?;
    if handle.sub.step_ms.is_none() {
        return Err(ApiError::bad_request(format!(
            "{q:?} gives events, not series per step: ask /api/v1/live for it, or aggregate it (:count, :sum, :max, :min, :sample)"
        )));
    }
    let (tx, rx) = mpsc::channel::<SseEvent>(OUTPUT_BUFFER);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                row = handle.rows.recv() => match row {
                    Some(row) => {
                        let event = SseEvent::default().event("step").data(row.to_string());
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    None => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
