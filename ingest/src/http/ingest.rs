//! The routes that take data: Atlas publish and backfill, Prometheus remote write, and raw
//! events. Each decodes and stores on a blocking thread, which builds the request's
//! [`Outcome`] (counting every refusal); `response.rs` renders it.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

use super::response::{self, ApiError, Dialect};
use crate::convert::publish::{
    Datapoint, Mode, PayloadError, decode_body, parse_payload, store_datapoints,
};
use crate::events::NdjsonIntake;
use crate::state::AppState;
use crate::validation::Rejection;

pub async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(state, headers, body, Mode::Publish).await
}

pub async fn backfill(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ingest(state, headers, body, Mode::Backfill).await
}

/// The request's body, or the error a body over the limit (or unreadable) gets.
fn read_body(state: &AppState, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::from(PayloadError::TooLarge {
                limit: state.cfg.max_body_bytes,
                decompressed: false,
            })
        } else {
            ApiError::body(e)
        }
    })
}

fn content_encoding(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("invalid").to_string())
}

/// The aggregator's update payload (npm `nflx-spectator` and other older Spectator
/// clients): adds summed per step across instances, maxima kept; answered as Atlas's
/// publish is.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    take_datapoints(state, headers, body, "the update task", |st, decoded| {
        crate::convert::aggregator::parse_update(decoded, st.store.now_ms(), st.cfg.step_ms)
    })
    .await
}

async fn ingest(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    mode: Mode,
) -> Result<Response, ApiError> {
    take_datapoints(
        state,
        headers,
        body,
        "the publish task",
        move |st, decoded| {
            parse_payload(
                decoded,
                mode,
                st.store.now_ms(),
                st.cfg.publish_max_age_ms,
                st.cfg.retention_ms,
            )
        },
    )
    .await
}

/// A JSON body of datapoints (gzip allowed), parsed by `parse` and stored on a blocking
/// thread; answered as Atlas's publish is.
async fn take_datapoints(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    what: &'static str,
    parse: impl FnOnce(&AppState, &[u8]) -> Result<Vec<Result<Datapoint, Rejection>>, PayloadError>
    + Send
    + 'static,
) -> Result<Response, ApiError> {
    let body = read_body(&state, body)?;
    let encoding = content_encoding(&headers);
    let outcome = tokio::task::spawn_blocking(move || {
        let st = state;
        let decoded = decode_body(&body, encoding.as_deref(), st.cfg.max_body_bytes)?;
        let parsed = parse(&st, &decoded)?;
        let outcome = store_datapoints(
            st.store.writer(),
            parsed,
            &st.metrics,
            st.cluster.as_deref(),
        );
        drop(decoded);
        crate::memory::note_churn();
        Ok::<_, PayloadError>(outcome)
    })
    .await
    .map_err(|e| ApiError::task_failed(what, e))??;
    response::outcome(outcome, Dialect::Atlas)
}

/// Prometheus remote write 1.0: a snappy-compressed `WriteRequest`. 204 when everything was
/// stored; 400 (not retried by Prometheus) for a malformed body or refused series, the
/// valid samples of the request stored; 413 for a body whose decompressed size is over the
/// limit, found from the snappy header before anything is decompressed.
pub async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::body)?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING)
        && enc.as_bytes() != b"snappy"
    {
        return Err(ApiError::bad_request(format!(
            "unsupported Content-Encoding {:?}: remote write bodies are snappy (block format)",
            String::from_utf8_lossy(enc.as_bytes())
        )));
    }
    let limit = state.cfg.max_body_bytes;
    let outcome = tokio::task::spawn_blocking(move || {
        let st = state;
        let len = snap::raw::decompress_len(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid snappy body: {e}")))?;
        if len > limit {
            return Err(ApiError::too_large(format!(
                "snappy body would decompress to {len} bytes, over the limit of {limit}"
            )));
        }
        let writer = st.store.writer();
        let mut conv = with_scratch(len, |raw| {
            let written = snap::raw::Decoder::new()
                .decompress(&body, raw)
                .map_err(|e| ApiError::bad_request(format!("invalid snappy body: {e}")))?;
            // The buffer is reused: a byte not written now would be an earlier request's.
            if written != raw.len() {
                return Err(ApiError::bad_request(format!(
                    "invalid snappy body: {written} bytes decompressed, its header says {}",
                    raw.len()
                )));
            }
            st.remote_write
                .convert(&writer, raw)
                .map_err(|e| ApiError::bad_request(format!("malformed WriteRequest: {}", e.0)))
        })?;
        let outcome = conv.commit(writer, &[], &st.metrics, st.cluster.as_deref());
        crate::memory::note_churn();
        Ok::<_, ApiError>(outcome)
    })
    .await
    .map_err(|e| ApiError::task_failed("the remote write task", e))??;
    response::outcome(outcome, Dialect::RemoteWrite)
}

/// Runs `f` on a buffer of `len` bytes kept for a later request (a few for the whole
/// server, `memory::Pool`): remote-write bodies decompress to hundreds of kilobytes each,
/// which a fresh allocation would map and fault in page by page every time. The buffer
/// holds what an earlier request left (zeroes where it never reached), so the caller
/// must write all of it before reading it, as a successful snappy decompression does.
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    static SCRATCH: crate::memory::Pool<Vec<u8>> = crate::memory::Pool::new();
    /// A buffer larger than this is not kept after the request.
    const KEEP: usize = 8 << 20;
    let mut buf = SCRATCH.take();
    if buf.len() < len {
        buf.resize(len, 0);
    }
    let out = f(&mut buf[..len]);
    if buf.capacity() <= KEEP {
        SCRATCH.give(buf);
    }
    out
}

/// Raw events as NDJSON, one JSON object per line, into an event stream. 200 when every line
/// was taken, 202 with the reasons when some were refused, 400 when none was. The body is
/// taken as it arrives (see [`NdjsonIntake`]), under `--http-body-timeout` and
/// `--max-body-bytes` (after gzip decoding); events taken before a body fails stay taken,
/// and the error says how many.
pub async fn events(
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
    )?;
    let timeout = Duration::from_millis(state.cfg.http_body_timeout_ms.max(1) as u64);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut body = body;
    let mut piece: Vec<u8> = Vec::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::body_timeout(format!(
                    "the request body did not arrive within {} ms (--http-body-timeout); \
                     {} events before it were taken",
                    timeout.as_millis(),
                    intake.accepted()
                )));
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
            .map_err(|e| ApiError::task_failed("the events task", e))
            .and_then(|(intake, r)| match r {
                Ok(()) => Ok(intake),
                Err(e) => Err(ApiError::intake(e, intake.accepted())),
            })?;
        }
    }
    let metrics = state.metrics.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let accepted_before = intake.accepted();
        intake
            .push(&piece)
            .and_then(|()| intake.finish())
            .map(|taken| taken.into_outcome(&metrics))
            .map_err(|e| ApiError::intake(e, accepted_before))
    })
    .await
    .map_err(|e| ApiError::task_failed("the events task", e))??;
    response::outcome(outcome, Dialect::Events)
}

/// Body bytes gathered before they are handed to the intake on a blocking thread.
const EVENT_PIECE_BYTES: usize = 1 << 20;
