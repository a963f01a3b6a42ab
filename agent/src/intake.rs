//! The agent's HTTP intake (a bare hyper server, loopback by default): the service posts
//! its Atlas-publish payloads (`POST /api/v1/publish`), the aggregator's update payloads of
//! older Spectator clients (`POST /api/v4/update`) and its raw events as NDJSON (`POST
//! /v1/events/{stream}`); `GET /v1/health` shows the agent's own counters.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use crate::config::sanitize;
use crate::health::Health;
use crate::outbox::{Catalog, Event, Outbox, Payload, Sample};
use crate::pushdown::Pushdown;
use crate::registry::Registry;

/// Largest request body the intake reads.
const MAX_BODY: usize = 16 << 20;
/// Events per batch; a partial batch waits at most `EVENT_FLUSH`. Only events a live query
/// selected are batched, and someone is watching them: the wait is short (a few batches a
/// second per stream when traffic is light, full batches when it is heavy).
const EVENTS_PER_BATCH: usize = 500;
pub const EVENT_FLUSH: Duration = Duration::from_millis(25);

/// Events gathered per stream until a batch is full or old enough. Only events that a live
/// subscription selected get here.
pub struct EventBatcher {
    pending: Mutex<HashMap<String, Vec<Event>>>,
    outbox: Arc<Outbox>,
    pub pushdown: Arc<Pushdown>,
    health: Arc<Health>,
}

impl EventBatcher {
    pub fn new(outbox: Arc<Outbox>, pushdown: Arc<Pushdown>, health: Arc<Health>) -> Self {
        EventBatcher {
            pending: Mutex::new(HashMap::new()),
            outbox,
            pushdown,
            health,
        }
    }

    /// One raw event of `stream` (a JSON object's text): evaluated against the live
    /// subscriptions, queued only when one selects it. Returns an error when the line is
    /// not a JSON object (checked whether or not anyone subscribes).
    pub fn offer(&self, stream: &str, line: &[u8], now_ms: i64) -> Result<(), serde_json::Error> {
        match self.pushdown.select(stream, line, now_ms)? {
            Some(sel) => {
                crate::pushdown::count(&self.health, true, sel.json.len());
                self.add(
                    stream,
                    Event {
                        ts_ms: sel.ts_ms.unwrap_or(now_ms),
                        json: sel.json,
                        subscriptions: sel.subscriptions,
                    },
                );
            }
            None => crate::pushdown::count(&self.health, false, 0),
        }
        Ok(())
    }

    fn add(&self, stream: &str, event: Event) {
        let full = {
            let mut pending = self.pending.lock();
            let list = pending.entry(stream.to_string()).or_default();
            list.push(event);
            (list.len() >= EVENTS_PER_BATCH).then(|| std::mem::take(list))
        };
        if let Some(events) = full {
            self.outbox.push(
                "events",
                Payload::Events {
                    stream: stream.to_string(),
                    events,
                },
            );
        }
    }

    /// Moves every partial batch to the outbox.
    pub fn flush(&self) {
        let batches: Vec<(String, Vec<Event>)> = self
            .pending
            .lock()
            .iter_mut()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.clone(), std::mem::take(v)))
            .collect();
        for (stream, events) in batches {
            self.outbox
                .push("events", Payload::Events { stream, events });
        }
    }
}

/// What the intake needs.
pub struct Intake {
    pub catalog: Arc<Catalog>,
    pub outbox: Arc<Outbox>,
    pub events: Arc<EventBatcher>,
    pub health: Arc<Health>,
    /// The agent's tags, added to published datapoints that lack them.
    pub common: Vec<(String, String)>,
    /// The step's meters, where aggregator updates add up (as SpectatorD's do).
    pub registry: Arc<Registry>,
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({"type": "error", "message": message.into()}),
    )
}

fn json_number(v: &serde_json::Value) -> Option<f64> {
    match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

impl Intake {
    /// An Atlas publish payload: common tags merged into each metric's, the agent's tags
    /// added, each datapoint queued with its own timestamp. Returns (queued, reasons).
    pub fn publish(&self, body: &[u8]) -> Result<(usize, Vec<String>), String> {
        let doc: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
        let common = doc
            .get("tags")
            .and_then(serde_json::Value::as_object)
            .cloned()
            .unwrap_or_default();
        let metrics = doc
            .get("metrics")
            .and_then(serde_json::Value::as_array)
            .ok_or("expected {\"tags\": {...}, \"metrics\": [...]}")?;
        let mut samples = Vec::with_capacity(metrics.len());
        let mut reasons = Vec::new();
        for (i, m) in metrics.iter().enumerate() {
            let mut tags: Vec<(String, String)> = self.common.clone();
            let mut set = |k: &str, v: &serde_json::Value| {
                if let Some(v) = v.as_str() {
                    tags.retain(|(key, _)| key != k);
                    tags.push((k.to_string(), v.to_string()));
                }
            };
            for (k, v) in &common {
                set(k, v);
            }
            if let Some(own) = m.get("tags").and_then(serde_json::Value::as_object) {
                for (k, v) in own {
                    set(k, v);
                }
            }
            let ts = m
                .get("timestamp")
                .or_else(|| m.get("start"))
                .and_then(serde_json::Value::as_i64);
            let value = m
                .get("value")
                .and_then(json_number)
                .or_else(|| m.get("values").and_then(|v| v.get(0)).and_then(json_number));
            let (Some(ts), Some(value)) = (ts, value) else {
                reasons.push(format!("metric {i}: needs a timestamp and a value"));
                continue;
            };
            if !tags.iter().any(|(k, _)| k == "name") {
                reasons.push(format!("metric {i}: missing key 'name'"));
                continue;
            }
            let series = match self.catalog.intern(tags) {
                Ok(series) => series,
                Err(refusal) => {
                    refusal.count(&self.health);
                    reasons.push(format!("metric {i}: {refusal}"));
                    continue;
                }
            };
            samples.push(Sample {
                series,
                ts_ms: ts,
                value,
            });
        }
        let n = samples.len();
        self.outbox.push("publish", Payload::Metrics(samples));
        Ok((n, reasons))
    }

    /// An aggregator update payload (`argus_proto::aggregator`): adds go to the step's
    /// counters (sent as per-second rates), maxima to its max gauges, every instance's
    /// updates adding up in the step as the aggregator's would. Returns (taken, reasons).
    pub fn update(&self, body: &[u8]) -> Result<(usize, Vec<String>), String> {
        let updates = argus_proto::aggregator::decode(body)?;
        let mut taken = 0;
        let mut reasons = Vec::new();
        for update in updates {
            let update = match update {
                Ok(u) => u,
                Err(refused) => {
                    self.health.invalid_input.fetch_add(1, Ordering::Relaxed);
                    reasons.push(refused.message().to_string());
                    continue;
                }
            };
            let name = update
                .tags
                .iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            let tags: Vec<(&str, &str)> = update
                .tags
                .iter()
                .filter(|(k, _)| k != "name" && k != "atlas.dstype")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            // The rules the server applies, checked here so the client hears the reason.
            let mut all = tags.clone();
            all.push(("name", name));
            if let Err(e) = argus_proto::rules::check_tags(&all) {
                self.health.invalid_input.fetch_add(1, Ordering::Relaxed);
                reasons.push(format!("{e} (name={name})"));
                continue;
            }
            let kept = match update.op {
                argus_proto::aggregator::Op::Add => self.registry.add(name, &tags, update.value),
                argus_proto::aggregator::Op::Max => self.registry.max(name, &tags, update.value),
            };
            if kept {
                taken += 1;
            } else {
                reasons.push(format!(
                    "no room for the series {name} (counted by the agent)"
                ));
            }
        }
        Ok((taken, reasons))
    }

    /// NDJSON events into `stream`. Returns (queued, reasons).
    pub fn events(&self, stream: &str, body: &[u8], now_ms: i64) -> (usize, Vec<String>) {
        let mut n = 0;
        let mut reasons = Vec::new();
        for (i, line) in body.split(|&b| b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            // The server's limit: a longer event would be refused there, after the trip.
            if let Err(e) = argus_proto::rules::check_event_size(line.len()) {
                self.health.invalid_input.fetch_add(1, Ordering::Relaxed);
                reasons.push(format!("line {}: {e}", i + 1));
                continue;
            }
            match self.events.offer(stream, line, now_ms) {
                Ok(()) => n += 1,
                Err(e) => {
                    self.health.invalid_input.fetch_add(1, Ordering::Relaxed);
                    reasons.push(format!("line {}: not a JSON object: {e}", i + 1));
                }
            }
        }
        (n, reasons)
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        if method == Method::GET && path == "/v1/health" {
            return reply(StatusCode::OK, self.health.to_json());
        }
        if method == Method::GET && path == "/healthz" {
            return reply(StatusCode::OK, serde_json::json!({"status": "ok"}));
        }
        if method != Method::POST {
            return error(StatusCode::NOT_FOUND, format!("no route {method} {path}"));
        }
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("reading the body (limit {MAX_BODY} bytes): {e}"),
                );
            }
        };
        let (n, reasons) = if path == "/api/v1/publish" {
            match self.publish(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            }
        } else if path == "/api/v4/update" {
            match self.update(&body) {
                Ok(r) => r,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            }
        } else if let Some(stream) = path.strip_prefix("/v1/events/") {
            if stream.is_empty() || sanitize(stream) != stream || stream.len() > 120 {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("invalid stream name {stream:?}: use -._A-Za-z0-9^~"),
                );
            }
            self.events(stream, &body, now_ms())
        } else {
            return error(StatusCode::NOT_FOUND, format!("no route POST {path}"));
        };
        if reasons.is_empty() {
            return reply(StatusCode::OK, serde_json::json!({"accepted": n}));
        }
        let status = if n == 0 {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::ACCEPTED
        };
        reply(
            status,
            serde_json::json!({
                "type": if n == 0 { "error" } else { "partial" },
                "accepted": n,
                "errorCount": reasons.len(),
                "message": reasons.iter().take(5).collect::<Vec<_>>(),
            }),
        )
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Serves the intake until the listener fails.
pub async fn serve(listener: TcpListener, intake: Arc<Intake>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "intake accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let intake = intake.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let intake = intake.clone();
                async move { Ok::<_, Infallible>(intake.handle(req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "intake connection ended");
            }
        });
    }
}
