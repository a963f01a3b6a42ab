//! The Prometheus HTTP query API, for Grafana's Prometheus data source and Prometheus's tools:
//! `query`, `query_range` (GET, or POST with a form body, as Grafana sends them), `labels`,
//! `label/<name>/values`, `series`, `metadata`, `status/buildinfo`, and the probes Grafana
//! makes at start (`query_exemplars`, `rules`), plus `format_query` and `parse_query`.
//! Bodies are Prometheus's envelope: `{"status":"success","data":…}` or
//! `{"status":"error","errorType":…,"error":…}` with 400 (bad_data), 422 (execution) or 503
//! (timeout, overload). PromQL itself is `argus-promql`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use argus_promql::{Error as PromError, ErrorKind, Evaluation, QueryRange, Value as PromValue};
use argus_tsdb::{Matcher, Postings, SeriesSource};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::cluster::tags::TagsRequest;
use crate::query_guard::{Cancel, Guarded};
use crate::state::AppState;

/// The Prometheus API version Argus answers like, reported by `status/buildinfo` (Grafana
/// turns features on by it); Argus's own version is beside it.
const PROMETHEUS_API_VERSION: &str = "2.42.0";

/// Most points a range query may have per series (Prometheus's own limit).
const MAX_POINTS: i64 = 11_000;

/// A refusal in Prometheus's words.
struct PromFailure {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromFailure {
    fn bad_data(message: impl Into<String>) -> Self {
        PromFailure {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }

    fn unavailable(kind: &'static str, message: impl Into<String>) -> Self {
        PromFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind,
            message: message.into(),
        }
    }
}

impl From<PromError> for PromFailure {
    fn from(e: PromError) -> Self {
        let status = match e.kind {
            ErrorKind::BadData => StatusCode::BAD_REQUEST,
            ErrorKind::Execution => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
        };
        PromFailure {
            status,
            kind: e.kind.name(),
            message: e.message,
        }
    }
}

impl IntoResponse for PromFailure {
    fn into_response(self) -> Response {
        let body = json!({"status": "error", "errorType": self.kind, "error": self.message});
        (self.status, axum::Json(body)).into_response()
    }
}

/// A sample value as Prometheus prints it: the shortest decimal that reads back the same,
/// with no exponent (`argus_promql::format_value`), written in place and fast (zmij's digits
/// when they need no exponent; where two shortest decimals are equally near, either may be
/// printed, and both read back the same).
fn push_value(out: &mut String, v: f64) {
    if v.is_finite() {
        let mut buffer = zmij::Buffer::new();
        let text = buffer.format_finite(v);
        if !text.contains('e') {
            out.push_str(text.strip_suffix(".0").unwrap_or(text));
            return;
        }
    }
    out.push_str(&argus_promql::format_value(v));
}

/// A timestamp as [`seconds`] writes it, in place.
fn push_seconds(out: &mut String, ms: i64) {
    if ms % 1000 == 0 {
        out.push_str(itoa::Buffer::new().format(ms / 1000));
    } else {
        push_value(out, ms as f64 / 1000.0);
    }
}

/// `[t,"v"]`.
fn push_sample(out: &mut String, ms: i64, v: f64) {
    out.push('[');
    push_seconds(out, ms);
    out.push_str(",\"");
    push_value(out, v);
    out.push_str("\"]");
}

/// `{"k":"v",...}`, JSON-escaped.
fn push_metric(out: &mut String, labels: &std::collections::BTreeMap<String, String>) {
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        out.push_str(&Value::String(v.clone()).to_string());
    }
    out.push('}');
}

/// A success whose `data` is written directly (matrix and vector answers can hold hundreds
/// of thousands of samples: a JSON tree of them costs more than the query).
fn success_written(data: &str, notes: &Notes) -> Response {
    let mut body = String::with_capacity(data.len() + 64);
    body.push_str("{\"status\":\"success\",\"data\":");
    body.push_str(data);
    if !notes.infos.is_empty() {
        body.push_str(",\"infos\":");
        body.push_str(&json!(notes.infos).to_string());
    }
    if !notes.warnings.is_empty() {
        body.push_str(",\"warnings\":");
        body.push_str(&json!(notes.warnings).to_string());
    }
    body.push('}');
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn success(data: Value, notes: &Notes) -> Response {
    let mut body = json!({"status": "success", "data": data});
    if !notes.infos.is_empty() {
        body["infos"] = json!(notes.infos);
    }
    if !notes.warnings.is_empty() {
        body["warnings"] = json!(notes.warnings);
    }
    axum::Json(body).into_response()
}

/// What an answer says about itself besides its data: `infos` (what PromQL means here) and
/// `warnings` (a partial answer).
#[derive(Default)]
struct Notes {
    infos: Vec<String>,
    warnings: Vec<String>,
}

/// The parameters of a request: its query string, then (POST) its form body.
fn params(method: &Method, query: Option<String>, body: &Bytes) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |text: &str| {
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            out.push((form_decode(k), form_decode(v)));
        }
    };
    if let Some(q) = &query {
        add(q);
    }
    if method == Method::POST {
        add(&String::from_utf8_lossy(body));
    }
    out
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A time parameter: Unix seconds (fractions allowed) or RFC 3339.
fn time_param(params: &[(String, String)], name: &str) -> Result<Option<i64>, PromFailure> {
    let Some(text) = param(params, name) else {
        return Ok(None);
    };
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
    {
        // Within ±30,000 years, so time arithmetic stays exact.
        if seconds.abs() > 1e12 {
            return Err(PromFailure::bad_data(format!(
                "invalid parameter \"{name}\": {text} is out of range"
            )));
        }
        return Ok(Some((seconds * 1000.0).round() as i64));
    }
    argus_promql::parse_rfc3339(text).map(Some).ok_or_else(|| {
        PromFailure::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse {text:?} to a valid timestamp"
        ))
    })
}

/// `step`: seconds (fractions allowed) or a duration such as `15s` or `1m`.
fn step_param(params: &[(String, String)]) -> Result<i64, PromFailure> {
    let text = param(params, "step")
        .ok_or_else(|| PromFailure::bad_data("invalid parameter \"step\": missing"))?;
    let ms = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() => (seconds * 1000.0).round() as i64,
        _ => argus_mql::duration::parse_positive_ms(text).map_err(|e| {
            PromFailure::bad_data(format!("invalid parameter \"step\": {text:?}: {e}"))
        })?,
    };
    if ms <= 0 {
        return Err(PromFailure::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    Ok(ms)
}

/// A timestamp as Prometheus writes it: seconds, with a fraction only when there is one.
fn seconds(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

fn sample(ms: i64, v: f64) -> Value {
    json!([seconds(ms), argus_promql::format_value(v)])
}

fn metric(labels: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// In a cluster, the fan-out over the store nodes this request reads through (`None` on a
/// single node, or before the node has joined: its own store answers).
fn fanout_of(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
    timeout: Duration,
) -> Option<std::sync::Arc<crate::cluster::query::ClusterFanout>> {
    state.cluster.as_ref().and_then(|c| {
        c.fanout(
            super::query::authorization(headers),
            super::query::deny_partial(params),
            state.cfg.query_limits(),
            timeout,
        )
    })
}

/// Evaluates `query` over `range` with the Stack Language's limits: the query timeout, the
/// series limit, the concurrency limit, and cancellation when the client goes away.
///
/// In a cluster, every selector's series are gathered from the store nodes holding them
/// (`cluster/query.rs`); partitions no node answered for make the answer partial, and its
/// `warnings` say which (`deny_partial=1`: a 503 instead).
async fn evaluate(
    state: &AppState,
    query: String,
    range: QueryRange,
    (headers, params): (&HeaderMap, &[(String, String)]),
) -> Result<(PromValue, Notes), PromFailure> {
    let expr = argus_promql::parse(&query)?;
    let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let fanout = fanout_of(state, headers, params, timeout);
    let _permit = super::query::query_slot(state, timeout)
        .await
        .map_err(|why| PromFailure::unavailable("unavailable", why))?;
    let cancel = Cancel::default();
    let _stop_when_dropped = cancel.on_drop();
    let store = state.store.clone();
    let max_series = state.cfg.query_max_series;
    let started = std::time::Instant::now();
    // The store holds nothing older than its retention, nor past the step now filling.
    let bounds = crate::cluster::query::data_bounds(&store, state.cfg.retention_ms);
    tokio::task::spawn_blocking(move || {
        let guarded = Guarded::new(&store, timeout, max_series, cancel);
        let mut evaluation = Evaluation::new(
            &guarded,
            range,
            usize::try_from(max_series).unwrap_or(usize::MAX),
        )
        .with_data_bounds(bounds.0, bounds.1);
        if let Some(fanout) = &fanout {
            evaluation = evaluation.with_gather(fanout.as_ref());
        }
        match evaluation.eval(&expr) {
            Ok(value) => {
                let missing = fanout.as_ref().map(|f| f.missing()).unwrap_or_default();
                let warnings = if missing.is_empty() {
                    Vec::new()
                } else {
                    let partitions = fanout.as_ref().map_or(0, |f| f.partitions);
                    vec![crate::cluster::query::partial_message(&missing, partitions)]
                };
                Ok((
                    value,
                    Notes {
                        infos: evaluation.infos,
                        warnings,
                    },
                ))
            }
            // `deny_partial=1` and a partition nobody answered for.
            Err(e) if e.message.starts_with("partial result") => {
                Err(PromFailure::unavailable("unavailable", e.message))
            }
            Err(_) if started.elapsed() >= timeout => Err(PromFailure::unavailable(
                "timeout",
                format!(
                    "query timed out in expression evaluation after {} ms (--query-timeout)",
                    timeout.as_millis()
                ),
            )),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .map_err(|e| PromFailure {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        kind: "internal",
        message: format!("the query task failed: {e}"),
    })?
}

/// `GET|POST /api/v1/query`: an instant query at `time` (default now).
pub async fn query(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&method, raw, &body);
    let result = async {
        let query = param(&params, "query")
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"query\": missing"))?
            .to_string();
        let at = time_param(&params, "time")?.unwrap_or_else(|| state.store.now_ms());
        let (value, infos) =
            evaluate(&state, query, QueryRange::instant(at), (&headers, &params)).await?;
        let data = match value {
            PromValue::Scalar(v) => json!({"resultType": "scalar", "result": sample(at, v[0])}),
            PromValue::String(s) => json!({"resultType": "string", "result": [seconds(at), s]}),
            PromValue::Vector(series) => {
                let mut data = String::from("{\"resultType\":\"vector\",\"result\":[");
                let mut first = true;
                for s in &series {
                    let Some(v) = s.points[0] else {
                        continue;
                    };
                    if !std::mem::take(&mut first) {
                        data.push(',');
                    }
                    data.push_str("{\"metric\":");
                    push_metric(&mut data, &s.labels);
                    data.push_str(",\"value\":");
                    push_sample(&mut data, at, v);
                    data.push('}');
                }
                data.push_str("]}");
                return Ok::<_, PromFailure>(success_written(&data, &infos));
            }
        };
        Ok::<_, PromFailure>(success(data, &infos))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/query_range`: `query` from `start` to `end` every `step`.
pub async fn query_range(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&method, raw, &body);
    let result = async {
        let query = param(&params, "query")
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"query\": missing"))?
            .to_string();
        let start = time_param(&params, "start")?
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"start\": missing"))?;
        let end = time_param(&params, "end")?
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"end\": missing"))?;
        if end < start {
            return Err(PromFailure::bad_data(
                "invalid parameter \"end\": end timestamp must not be before start time",
            ));
        }
        let step = step_param(&params)?;
        if (end - start) / step > MAX_POINTS {
            return Err(PromFailure::bad_data(format!(
                "exceeded maximum resolution of {MAX_POINTS} points per timeseries. Try \
                 decreasing the query resolution (?step=XX)"
            )));
        }
        let range = QueryRange {
            start_ms: start,
            end_ms: end,
            step_ms: step,
        };
        let (value, infos) = evaluate(&state, query, range, (&headers, &params)).await?;
        let times: Vec<i64> = range.times().collect();
        let series = match value {
            PromValue::Vector(series) => series,
            PromValue::Scalar(v) => vec![argus_promql::Series {
                labels: Default::default(),
                points: v.into_iter().map(Some).collect(),
            }],
            PromValue::String(_) => {
                return Err(PromFailure::bad_data(
                    "invalid expression type \"string\" for range query, must be Scalar or instant Vector",
                ));
            }
        };
        let points: usize = series.iter().map(|s| s.points.len()).sum();
        let mut data = String::with_capacity(32 + 28 * points);
        data.push_str("{\"resultType\":\"matrix\",\"result\":[");
        for (i, s) in series.iter().enumerate() {
            if i > 0 {
                data.push(',');
            }
            data.push_str("{\"metric\":");
            push_metric(&mut data, &s.labels);
            data.push_str(",\"values\":[");
            let mut first = true;
            for (&t, p) in times.iter().zip(&s.points) {
                if let Some(v) = p {
                    if !std::mem::take(&mut first) {
                        data.push(',');
                    }
                    push_sample(&mut data, t, *v);
                }
            }
            data.push_str("]}");
        }
        data.push_str("]}");
        Ok(success_written(&data, &infos))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The series selected by the request's `match[]` parameters (all series without any).
fn matched(state: &AppState, params: &[(String, String)]) -> Result<Postings, PromFailure> {
    let selectors: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| v.as_str())
        .collect();
    let mut any: Option<Matcher> = None;
    for text in selectors {
        let m = argus_promql::series_matcher(text)?;
        any = Some(match any {
            None => m,
            Some(a) => a.or(m),
        });
    }
    Ok(state.store.select(&any.unwrap_or(Matcher::True)))
}

fn limit_param(params: &[(String, String)]) -> Result<Option<usize>, PromFailure> {
    match param(params, "limit") {
        None | Some("") | Some("0") => Ok(None),
        Some(text) => text.parse::<usize>().map(Some).map_err(|_| {
            PromFailure::bad_data(format!(
                "invalid parameter \"limit\": {text:?} is not a number"
            ))
        }),
    }
}

/// A label name as the store keeps it: `__name__` is `name`; Prometheus 3's `U__` escaping
/// (`U__nf_2e_app` for `nf.app`) is undone.
fn store_key(label: &str) -> Result<String, PromFailure> {
    let label = match label.strip_prefix("U__") {
        Some(escaped) => unescape_label(escaped).ok_or_else(|| {
            PromFailure::bad_data(format!("invalid label name {label:?}: bad U__ escaping"))
        })?,
        None => label.to_string(),
    };
    Ok(if label == argus_promql::NAME_LABEL {
        "name".into()
    } else {
        label
    })
}

/// Undoes Prometheus's underscore escaping: `__` is `_`, `_<hex>_` a code point.
fn unescape_label(s: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '_' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'_') {
            chars.next();
            out.push('_');
            continue;
        }
        let mut hex = String::new();
        loop {
            match chars.next()? {
                '_' => break,
                h => hex.push(h),
            }
        }
        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
    }
    Some(out)
}

/// The PromQL name of a stored key: `name` is `__name__`.
fn prom_key(key: &str) -> &str {
    if key == "name" {
        argus_promql::NAME_LABEL
    } else {
        key
    }
}

/// The `match[]` selectors of a request.
fn match_params(params: &[(String, String)]) -> Vec<String> {
    params
        .iter()
        .filter(|(k, _)| k == "match[]")
        .map(|(_, v)| v.clone())
        .collect()
}

/// In a cluster, tag counts over every store node's share of the series (`None` on a single
/// node, or one not yet joined, whose own store answers), with a warning when partitions
/// went unanswered (`deny_partial=1`: a 503).
async fn cluster_counts(
    state: &AppState,
    headers: &HeaderMap,
    params: &[(String, String)],
    ask: TagsRequest,
) -> Result<Option<(BTreeMap<(String, String), u64>, Notes)>, PromFailure> {
    let counted = super::query::cluster_tags_of(state, headers, params, ask)
        .await
        .map_err(|e| PromFailure {
            status: e.status,
            kind: if e.status == StatusCode::SERVICE_UNAVAILABLE {
                "unavailable"
            } else if e.status.is_client_error() {
                "bad_data"
            } else {
                "internal"
            },
            message: e.message,
        })?;
    Ok(counted.map(|(_, tags, missing)| (tags, partial_notes(state, &missing))))
}

/// The warning a cluster answer missing partitions carries.
fn partial_notes(state: &AppState, missing: &[u32]) -> Notes {
    let partitions = state.cluster.as_ref().map_or(0, |c| c.partitions());
    Notes {
        infos: Vec::new(),
        warnings: if missing.is_empty() {
            Vec::new()
        } else {
            vec![crate::cluster::query::partial_message(missing, partitions)]
        },
    }
}

/// `GET|POST /api/v1/labels`: the label names of the matched series.
pub async fn labels(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&method, raw, &body);
    let result = async {
        let limit = limit_param(&params)?;
        let ask = TagsRequest {
            keys_only: true,
            selectors: match_params(&params),
            ..TagsRequest::default()
        };
        let (keys, notes): (Vec<String>, Notes) =
            match cluster_counts(&state, &headers, &params, ask).await? {
                Some((tags, notes)) => (tags.into_keys().map(|(k, _)| k).collect(), notes),
                None => {
                    let ids = matched(&state, &params)?;
                    let keys = state.store.tag_keys_of(&ids).into_iter().map(|(k, _)| k);
                    (keys.collect(), Notes::default())
                }
            };
        let mut names: BTreeSet<String> = keys
            .into_iter()
            .filter(|k| k != "atlas.dstype")
            .map(|k| prom_key(&k).to_string())
            .collect();
        if let Some(limit) = limit {
            names = names.into_iter().take(limit).collect();
        }
        Ok::<_, PromFailure>(success(json!(names), &notes))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/label/<name>/values`: the values of one label over the matched series.
pub async fn label_values(
    State(state): State<AppState>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&method, raw, &body);
    let result = async {
        let key = store_key(&name)?;
        let limit = limit_param(&params)?;
        let ask = TagsRequest {
            key: Some(key.clone()),
            selectors: match_params(&params),
            ..TagsRequest::default()
        };
        let (stored, notes): (Vec<String>, Notes) =
            match cluster_counts(&state, &headers, &params, ask).await? {
                Some((tags, notes)) => (tags.into_keys().map(|(_, v)| v).collect(), notes),
                None => {
                    let ids = matched(&state, &params)?;
                    let values = state.store.tag_values_of(&key, &ids).into_iter();
                    (values.map(|(v, _)| v).collect(), Notes::default())
                }
            };
        let mut values: Vec<String> = stored
            .iter()
            .map(|v| argus_promql::shown_value(&key, v).to_string())
            .collect();
        values.sort();
        values.dedup();
        if let Some(limit) = limit {
            values.truncate(limit);
        }
        Ok::<_, PromFailure>(success(json!(values), &notes))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET|POST /api/v1/series`: the label sets of the series `match[]` selects.
pub async fn series(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Response {
    let params = params(&method, raw, &body);
    let result = async {
        let selectors = match_params(&params);
        if selectors.is_empty() {
            return Err(PromFailure::bad_data("no match[] parameter provided"));
        }
        let limit = limit_param(&params)?.unwrap_or(usize::MAX);
        let timeout = Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
        let fanout = fanout_of(&state, &headers, &params, timeout);
        let Some(fanout) = fanout else {
            let ids = matched(&state, &params)?;
            let mut out = Vec::new();
            state.store.visit_tags(&ids, &mut |_, tags| {
                if out.len() < limit {
                    out.push(metric(&argus_promql::labels_of(tags)));
                }
            });
            return Ok(success(Value::Array(out), &Notes::default()));
        };
        for selector in &selectors {
            argus_promql::series_matcher(selector)?;
        }
        // Each selector's series from the partitions' owners; a series two select, once.
        let (sets, missing) = tokio::task::spawn_blocking(move || {
            let mut sets = BTreeSet::new();
            for selector in &selectors {
                for tags in fanout.series_tags(selector)? {
                    sets.insert(argus_promql::labels_of(&tags));
                }
            }
            Ok::<_, String>((sets, fanout.missing()))
        })
        .await
        .map_err(|e| PromFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: format!("the series task failed: {e}"),
        })?
        .map_err(|e| PromFailure::unavailable("unavailable", e))?;
        let out: Vec<Value> = sets.iter().take(limit).map(metric).collect();
        Ok(success(Value::Array(out), &partial_notes(&state, &missing)))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The Prometheus type of how Argus stores a series (`atlas.dstype`).
fn metric_type(dstype: &str) -> &'static str {
    match dstype {
        "gauge" => "gauge",
        "rate" | "counter" | "sum" => "counter",
        _ => "unknown",
    }
}

/// `GET /api/v1/metadata`: each metric's type, from how Argus stores it.
pub async fn metadata(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let params = params(&Method::GET, raw, &Bytes::new());
    let result = async {
        let limit = limit_param(&params)?.unwrap_or(usize::MAX);
        let metric_param = param(&params, "metric").filter(|m| !m.is_empty());
        // (name, dstype) pairs.
        let ask = TagsRequest {
            name_types: true,
            selectors: metric_param
                .map(|m| vec![format!("{{__name__={}}}", Value::String(m.to_string()))])
                .unwrap_or_default(),
            ..TagsRequest::default()
        };
        let (pairs, notes): (Vec<(String, String)>, Notes) =
            match cluster_counts(&state, &headers, &params, ask).await? {
                Some((tags, notes)) => (tags.into_keys().collect(), notes),
                None => {
                    let ids = state.store.select(&match metric_param {
                        Some(m) => Matcher::eq("name", m),
                        None => Matcher::True,
                    });
                    let pairs = crate::cluster::tags::name_types(&state.store, &ids)
                        .into_iter()
                        .map(|(name, dstype, _)| (name, dstype))
                        .collect();
                    (pairs, Notes::default())
                }
            };
        let mut data = serde_json::Map::new();
        for (name, dstype) in pairs {
            if !data.contains_key(&name) && data.len() >= limit {
                continue;
            }
            if let Value::Array(types) = data.entry(name).or_insert_with(|| json!([])) {
                types.push(json!({"type": metric_type(&dstype), "help": "", "unit": ""}));
            }
        }
        Ok::<_, PromFailure>(success(Value::Object(data), &notes))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /api/v1/status/buildinfo`. `features` stays empty: Grafana takes a non-empty one
/// for Mimir.
pub async fn buildinfo() -> Response {
    success(
        json!({
            "version": PROMETHEUS_API_VERSION,
            "revision": "",
            "branch": "",
            "buildUser": "",
            "buildDate": "",
            "goVersion": "",
            "application": "argus",
            "argusVersion": env!("CARGO_PKG_VERSION"),
        }),
        &Notes::default(),
    )
}

/// `/api/v1/query_exemplars`: Argus keeps no exemplars.
pub async fn exemplars() -> Response {
    success(json!([]), &Notes::default())
}

/// `/api/v1/rules`: Argus evaluates no recording or alerting rules.
pub async fn rules() -> Response {
    success(json!({"groups": []}), &Notes::default())
}

/// `/api/v1/format_query`: the query, formatted as Prometheus prints it.
pub async fn format_query(method: Method, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    let params = params(&method, raw, &body);
    let result = (|| {
        let query = param(&params, "query")
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"query\": missing"))?;
        let expr = argus_promql::parse(query)?;
        Ok::<_, PromFailure>(success(json!(expr.prettify()), &Notes::default()))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

/// `/api/v1/parse_query`: the query's syntax tree as JSON.
pub async fn parse_query(method: Method, RawQuery(raw): RawQuery, body: Bytes) -> Response {
    let params = params(&method, raw, &body);
    let result = (|| {
        let query = param(&params, "query")
            .ok_or_else(|| PromFailure::bad_data("invalid parameter \"query\": missing"))?;
        let expr = argus_promql::parse(query)?;
        let tree = serde_json::to_value(&expr).map_err(|e| PromFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: format!("the syntax tree did not encode: {e}"),
        })?;
        Ok::<_, PromFailure>(success(tree, &Notes::default()))
    })();
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_label_names_are_undone() {
        assert_eq!(store_key("U__nf_2e_app").ok(), Some("nf.app".to_string()));
        assert_eq!(store_key("U__a__b").ok(), Some("a_b".to_string()));
        assert_eq!(store_key("__name__").ok(), Some("name".to_string()));
        assert_eq!(store_key("job").ok(), Some("job".to_string()));
        assert!(store_key("U__bad_zz_").is_err());
    }

    #[test]
    fn times_print_as_prometheus_prints_them() {
        assert_eq!(seconds(4000).to_string(), "4");
        assert_eq!(seconds(1_435_781_451_781).to_string(), "1435781451.781");
        assert_eq!(sample(4000, 2.0).to_string(), r#"[4,"2"]"#);
    }

    #[test]
    fn form_bodies_and_query_strings_are_read() {
        let p = params(
            &Method::POST,
            Some("match%5B%5D=up".into()),
            &Bytes::from_static(b"query=1%2B1&time=4&match[]=%7B__name__%3D~%22.%2B%22%7D"),
        );
        assert_eq!(param(&p, "query"), Some("1+1"));
        assert_eq!(param(&p, "time"), Some("4"));
        let matches: Vec<&str> = p
            .iter()
            .filter(|(k, _)| k == "match[]")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(matches, ["up", r#"{__name__=~".+"}"#]);
    }
}

#[cfg(test)]
mod printing_tests {
    use super::*;

    #[test]
    fn fast_value_printing_prints_as_prometheus() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            2.5,
            0.1,
            1e21,
            1e-7,
            123456789.0,
            1e15,
            1e16,
            1e17,
            -3.75,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ];
        values.extend((0..20_000).map(|_| f64::from_bits(rng.u64(..))));
        values.extend((0..20_000).map(|_| (rng.f64() - 0.5) * 10f64.powi(rng.i32(-12..22))));
        for v in values {
            let mut fast = String::new();
            push_value(&mut fast, v);
            let slow = argus_promql::format_value(v);
            if v.is_finite() {
                // The same value, as short, never an exponent.
                let back: f64 = fast.parse().unwrap();
                assert_eq!(back.to_bits(), v.to_bits(), "{v:e}: {fast}");
                assert_eq!(fast.len(), slow.len(), "{v:e}: {fast} vs {slow}");
                assert!(!fast.contains(['e', 'E']), "{v:e}: {fast}");
            } else {
                assert_eq!(fast, slow);
            }
        }
        for (v, text) in [
            (2.0, "2"),
            (0.1, "0.1"),
            (-1.5, "-1.5"),
            (1e21, "1000000000000000000000"),
        ] {
            let mut fast = String::new();
            push_value(&mut fast, v);
            assert_eq!(fast, text);
        }
        for ms in [
            0,
            1_000,
            1_796_509_140_000,
            1_796_509_140_500,
            4_250,
            -1_500,
        ] {
            let mut fast = String::new();
            push_seconds(&mut fast, ms);
            assert_eq!(fast, seconds(ms).to_string(), "{ms}");
        }
    }
}
