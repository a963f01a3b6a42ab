//! The gRPC services on the server's gRPC port: the agent protocol (`argus.v1.Ingest`) and
//! OTLP's `MetricsService` and `LogsService`. Handlers decode, hand the conversion to
//! `convert.rs` on a blocking thread, and answer; flow control does the rest (a stream is
//! read only as fast as its batches are stored).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_proto::otlp::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use argus_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use argus_proto::otlp::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use argus_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use argus_proto::v1::ingest_server::{Ingest, IngestServer};
use argus_proto::v1::{
    Ack, AgentMessage, EventBatch, MetricBatch, ServerMessage, Welcome, agent_message,
    server_message,
};
use parking_lot::Mutex;
use prost::bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::convert::{self, StreamSeries};
use crate::http::AppState;
use crate::validation::RejectReason;

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send + 'static>>;
type ControlStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send + 'static>>;

/// Sequence numbers of one agent already stored: all up to `floor`, and those above it in
/// `above`. Bounded: the window keeps the newest `MAX_ABOVE`.
#[derive(Default)]
struct SeenSeqs {
    floor: u64,
    above: BTreeSet<u64>,
    /// Being stored right now (by a stream that may have lost its connection meanwhile).
    pending: HashSet<u64>,
    last_used: Option<Instant>,
}

const MAX_ABOVE: usize = 100_000;
/// Agents unheard of for this long are forgotten.
const AGENT_IDLE: Duration = Duration::from_secs(6 * 3600);

impl SeenSeqs {
    fn contains(&self, seq: u64) -> bool {
        seq <= self.floor && self.floor > 0 || self.above.contains(&seq)
    }

    /// Marks every sequence number up to `floor` as seen.
    fn raise_floor(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.above.retain(|&x| x > floor);
            while self.above.first() == Some(&(self.floor + 1)) {
                self.floor += 1;
                self.above.pop_first();
            }
        }
    }

    fn insert(&mut self, seq: u64) {
        if seq <= self.floor && self.floor > 0 {
            return;
        }
        self.above.insert(seq);
        // Advance the floor over the contiguous run.
        while self.above.first() == Some(&(self.floor + 1)) {
            self.floor += 1;
            self.above.pop_first();
        }
        while self.above.len() > MAX_ABOVE {
            if let Some(first) = self.above.pop_first() {
                self.floor = self.floor.max(first);
            }
        }
    }
}

/// What the server remembers of agents, so a resent batch is recognised.
#[derive(Default)]
pub struct AgentRegistry {
    metrics: Mutex<HashMap<String, SeenSeqs>>,
    events: Mutex<HashMap<String, SeenSeqs>>,
    /// Held (shared) from claiming a metrics batch until its claim is finished, and
    /// (exclusive) while a snapshot begins and [`AgentRegistry::encode_stored`] runs: so
    /// every batch the log holds before the snapshot's first segment is in what the
    /// snapshot keeps, and every later one is in the log after it.
    pub snapshot_gate: parking_lot::RwLock<()>,
}

/// Tags an origin in the log as an agent's metrics batch.
const ORIGIN_AGENT_METRICS: u8 = b'm';

impl AgentRegistry {
    /// The origin logged with an agent's metrics batch: what recovery needs to recognise
    /// its resend after a restart.
    fn origin(agent: &str, seq: u64) -> Vec<u8> {
        let mut o = Vec::with_capacity(agent.len() + 9);
        o.push(ORIGIN_AGENT_METRICS);
        o.extend_from_slice(&seq.to_le_bytes());
        o.extend_from_slice(agent.as_bytes());
        o
    }

    /// Remembers a batch found in the log at recovery as stored.
    pub fn restore_origin(&self, origin: &[u8]) {
        if origin.len() < 9 || origin[0] != ORIGIN_AGENT_METRICS {
            return;
        }
        let seq = u64::from_le_bytes(origin[1..9].try_into().unwrap_or_default());
        let Ok(agent) = std::str::from_utf8(&origin[9..]) else {
            return;
        };
        let mut m = self.metrics.lock();
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(Instant::now());
        s.insert(seq);
    }

    /// The stored metrics batches of every agent, for a snapshot:
    /// `[varint agents]` then per agent `[varint len][id][varint floor][varint n][varint seq]*`.
    pub fn encode_stored(&self) -> Vec<u8> {
        let m = self.metrics.lock();
        let mut out = Vec::new();
        encode_varint(m.len() as u64, &mut out);
        for (agent, s) in m.iter() {
            encode_varint(agent.len() as u64, &mut out);
            out.extend_from_slice(agent.as_bytes());
            encode_varint(s.floor, &mut out);
            encode_varint(s.above.len() as u64, &mut out);
            for &seq in &s.above {
                encode_varint(seq, &mut out);
            }
        }
        out
    }

    /// Adds what [`AgentRegistry::encode_stored`] wrote (from a snapshot) to what is known.
    /// Damaged bytes end the reading; what was read stays.
    pub fn restore_stored(&self, mut bytes: &[u8]) {
        let mut m = self.metrics.lock();
        let Ok(agents) = decode_varint(&mut bytes) else {
            return;
        };
        for _ in 0..agents {
            let Ok(len) = decode_varint(&mut bytes) else {
                return;
            };
            let Some(id) = bytes
                .get(..len as usize)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_string)
            else {
                return;
            };
            bytes.advance(len as usize);
            let (Ok(floor), Ok(n)) = (decode_varint(&mut bytes), decode_varint(&mut bytes)) else {
                return;
            };
            let s = m.entry(id).or_default();
            s.last_used = Some(Instant::now());
            s.raise_floor(floor);
            for _ in 0..n {
                let Ok(seq) = decode_varint(&mut bytes) else {
                    return;
                };
                s.insert(seq);
            }
        }
    }

    /// Claims a batch for storing: false when it was stored already or another stream is
    /// storing it now (a resend that overtook the original after a reconnect). Checking and
    /// claiming under one lock is what makes a resend never stored twice.
    fn claim(map: &Mutex<HashMap<String, SeenSeqs>>, agent: &str, seq: u64) -> bool {
        let mut m = map.lock();
        let now = Instant::now();
        if m.len() > 10_000 {
            m.retain(|_, s| {
                !s.pending.is_empty() || s.last_used.is_some_and(|t| now - t < AGENT_IDLE)
            });
        }
        let s = m.entry(agent.to_string()).or_default();
        s.last_used = Some(now);
        !s.contains(seq) && s.pending.insert(seq)
    }

    /// Ends a claim: the batch is remembered as stored, or released for a resend.
    fn finish(map: &Mutex<HashMap<String, SeenSeqs>>, agent: &str, seq: u64, stored: bool) {
        if let Some(s) = map.lock().get_mut(agent) {
            s.pending.remove(&seq);
            if stored {
                s.insert(seq);
            }
        }
    }
}

/// A claimed batch, released unless it was stored (a panic while storing must not leave
/// its resends refused forever).
struct Claim<'a> {
    map: &'a Mutex<HashMap<String, SeenSeqs>>,
    agent: &'a str,
    seq: u64,
    stored: bool,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        AgentRegistry::finish(self.map, self.agent, self.seq, self.stored);
    }
}

impl<'a> Claim<'a> {
    fn take(map: &'a Mutex<HashMap<String, SeenSeqs>>, agent: &'a str, seq: u64) -> Option<Self> {
        AgentRegistry::claim(map, agent, seq).then_some(Claim {
            map,
            agent,
            seq,
            stored: false,
        })
    }
}

/// Concurrent batch stores across all streams: more would only queue inside the store.
fn store_permits() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()) * 2
}

/// A batch that waited this long for a permit gets a backpressure notice in its ack.
const BUSY_AFTER: Duration = Duration::from_millis(200);

/// Event batches parsed and delivered at once: all cores but one, so that a flood of
/// events always leaves a core to the reactor (health checks, queries, acks).
fn event_permits() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

#[derive(Clone)]
pub struct IngestService {
    state: AppState,
    permits: Arc<Semaphore>,
    event_permits: Arc<Semaphore>,
}

impl IngestService {
    pub fn new(state: AppState) -> Self {
        IngestService {
            state,
            permits: Arc::new(Semaphore::new(store_permits())),
            event_permits: Arc::new(Semaphore::new(event_permits())),
        }
    }

    /// Waits for a store permit; says how long that took when it was long.
    async fn permit(&self) -> Result<(tokio::sync::OwnedSemaphorePermit, Option<u32>), Status> {
        let started = Instant::now();
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let waited = started.elapsed();
        Ok((
            permit,
            (waited > BUSY_AFTER).then(|| waited.as_millis().min(10_000) as u32),
        ))
    }
}

fn agent_id<T>(req: &Request<T>) -> Result<String, Status> {
    let id = req
        .metadata()
        .get(argus_proto::AGENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if id.is_empty() || id.len() > 256 {
        return Err(Status::invalid_argument(format!(
            "missing or invalid '{}' metadata: one id per agent process, up to 256 characters",
            argus_proto::AGENT_ID_HEADER
        )));
    }
    Ok(id)
}

fn busy_notice(ack: &mut Ack, waited_ms: Option<u32>) {
    if let Some(ms) = waited_ms {
        ack.retry_after_ms = ms;
        ack.notice = format!("server busy: this batch waited {ms} ms for the store");
    }
}

#[tonic::async_trait]
impl Ingest for IngestService {
    type PushMetricsStream = AckStream;
    type PushEventsStream = AckStream;
    type ControlStream = ControlStream;

    async fn push_metrics(
        &self,
        request: Request<Streaming<MetricBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let agent = agent_id(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let svc = self.clone();
        tokio::spawn(async move {
            let series = Arc::new(Mutex::new(StreamSeries::new(svc.state.store.clone())));
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(inbound_error(status))).await;
                        break;
                    }
                };
                let seq = batch.seq;
                let (permit, waited) = match svc.permit().await {
                    Ok(p) => p,
                    Err(s) => {
                        let _ = tx.send(Err(s)).await;
                        break;
                    }
                };
                let st = svc.state.clone();
                let series = series.clone();
                let agent_key = agent.clone();
                let stored = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    // Definitions are applied even for a resend: later batches of this
                    // stream may use them.
                    let writer = st.store.writer();
                    let mut conv = series.lock().convert(&writer, &batch);
                    let _gate = st.agents.snapshot_gate.read();
                    let Some(mut claim) = Claim::take(&st.agents.metrics, &agent_key, seq) else {
                        return Ok((0, conv, true));
                    };
                    let origin = AgentRegistry::origin(&agent_key, seq);
                    // On an error the claim is released: the agent keeps the batch and
                    // resends it once the store can take it again.
                    let n = conv.store(&writer, &origin)?;
                    drop(writer);
                    claim.stored = true;
                    drop(claim);
                    series.lock().recycle(std::mem::take(&mut conv.samples));
                    crate::memory::note_churn();
                    Ok((n, conv, false))
                })
                .await;
                let (stored, conv, duplicate) = match stored {
                    Ok(Ok(v)) => v,
                    Ok(Err(e)) => {
                        let e: argus_tsdb::Error = e;
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        break;
                    }
                    Err(_) => {
                        let _ = tx
                            .send(Err(Status::internal("storing the batch failed")))
                            .await;
                        break;
                    }
                };
                svc.state.metrics.count(&conv.refusals);
                let mut ack = Ack {
                    seq,
                    stored: stored as u32,
                    rejected: if duplicate {
                        0
                    } else {
                        conv.rejected_count() as u32
                    },
                    reasons: if duplicate {
                        Vec::new()
                    } else {
                        conv.reasons()
                    },
                    duplicate,
                    ..Ack::default()
                };
                busy_notice(&mut ack, waited);
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn push_events(
        &self,
        request: Request<Streaming<EventBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let agent = agent_id(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let svc = self.clone();
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(inbound_error(status))).await;
                        break;
                    }
                };
                let seq = batch.seq;
                let mut ack = Ack {
                    seq,
                    ..Ack::default()
                };
                // Parsing the events and running the live engines is CPU work: on a
                // blocking thread, never on the reactor, and not on every core at once.
                let Ok(permit) = svc.event_permits.clone().acquire_owned().await else {
                    let _ = tx
                        .send(Err(Status::unavailable("the server is shutting down")))
                        .await;
                    break;
                };
                let st = svc.state.clone();
                let agent_key = agent.clone();
                let taken = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let mut claim = Claim::take(&st.agents.events, &agent_key, seq)?;
                    let (events, refusals) = convert::agent_events(&batch);
                    Some(match st.events.publish(&batch.stream, &events) {
                        Ok(n) => {
                            claim.stored = true;
                            (n, refusals.total(), refusals.reasons())
                        }
                        Err(e) => (0, batch.events.len() as u64, vec![e.to_string()]),
                    })
                })
                .await;
                match taken {
                    Ok(Some((stored, rejected, reasons))) => {
                        ack.stored = stored as u32;
                        ack.rejected = rejected as u32;
                        ack.reasons = reasons;
                    }
                    Ok(None) => ack.duplicate = true,
                    Err(_) => {
                        let _ = tx
                            .send(Err(Status::internal("taking the events failed")))
                            .await;
                        break;
                    }
                }
                if tx.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn control(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ControlStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let step_ms = self.state.cfg.step_ms;
        let max_message_bytes = self.state.cfg.grpc_max_message_bytes;
        let agents = self.state.connected.clone();
        let live = self.state.events.live.clone();
        tokio::spawn(async move {
            let mut me: Option<String> = None;
            let mut streams: Vec<String> = Vec::new();
            let mut changes = live.watch();
            // The set last sent, so an unrelated change sends nothing.
            let mut sent: Option<argus_proto::v1::Subscriptions> = None;
            loop {
                tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(AgentMessage {
                            kind: Some(agent_message::Kind::Hello(hello)),
                        })) => {
                            tracing::info!(agent = %hello.agent_id, node = %hello.node, streams = ?hello.streams, "agent connected");
                            agents.lock().insert(hello.agent_id.clone(), hello.clone());
                            me = Some(hello.agent_id);
                            streams = hello.streams;
                            let welcome = ServerMessage {
                                kind: Some(server_message::Kind::Welcome(Welcome {
                                    server_version: env!("CARGO_PKG_VERSION").to_string(),
                                    step_ms,
                                    max_message_bytes: max_message_bytes as u64,
                                })),
                            };
                            if tx.send(Ok(welcome)).await.is_err() {
                                break;
                            }
                            sent = None;
                        }
                        Ok(Some(_)) => continue,
                        Ok(None) | Err(_) => break,
                    },
                    changed = changes.changed() => {
                        if changed.is_err() {
                            break;
                        }
                    }
                }
                if me.is_none() {
                    continue;
                }
                // Push-down: the live subscriptions on this agent's streams, whole.
                let current = convert::agent_subscriptions(&live.snapshot(), &streams);
                if sent.as_ref() != Some(&current) {
                    let msg = ServerMessage {
                        kind: Some(server_message::Kind::Subscriptions(current.clone())),
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        break;
                    }
                    sent = Some(current);
                }
            }
            if let Some(id) = me {
                agents.lock().remove(&id);
                tracing::info!(agent = %id, "agent disconnected");
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

#[derive(Clone)]
pub struct OtlpService {
    state: AppState,
}

#[tonic::async_trait]
impl MetricsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let req = request.into_inner();
        let st = self.state.clone();
        let conv = tokio::task::spawn_blocking(move || {
            let writer = st.store.writer();
            let mut conv = convert::otlp_metrics(&writer, &req);
            conv.store(&writer, &[]).map(|_| conv)
        })
        .await
        .map_err(|e| Status::internal(format!("storing the export failed: {e}")))?
        // UNAVAILABLE is what OTLP exporters retry.
        .map_err(|e| Status::unavailable(e.to_string()))?;
        self.state.metrics.count(&conv.refusals);
        let n = conv.rejected_count();
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: (n > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: n as i64,
                error_message: conv.reasons().join("; "),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for OtlpService {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let req = request.into_inner();
        let st = self.state.clone();
        // Turning records into events and running the live engines: a blocking thread's
        // work, not the reactor's.
        let (rejected, reasons) = tokio::task::spawn_blocking(move || {
            let now = st.store.now_ms();
            let mut rejected = 0i64;
            let mut reasons = Vec::new();
            for (stream, events) in convert::otlp_logs(&req, now) {
                if let Err(e) = st.events.publish(&stream, &events) {
                    rejected += events.len() as i64;
                    st.metrics
                        .reject(RejectReason::InvalidTagValue, events.len() as u64);
                    reasons.push(e.to_string());
                }
            }
            (rejected, reasons)
        })
        .await
        .map_err(|e| Status::internal(format!("taking the export failed: {e}")))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: reasons.join("; "),
            }),
        }))
    }
}

/// What the protocol calls a bad inbound message, where tonic's codec says otherwise: a
/// message over the size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE when it was
/// not compressed) and one that does not decode is INVALID_ARGUMENT (tonic says INTERNAL,
/// which clients would retry). Handlers return neither OUT_OF_RANGE nor a decode INTERNAL.
fn inbound_code(code: tonic::Code, message: &[u8]) -> tonic::Code {
    match code {
        tonic::Code::OutOfRange => tonic::Code::ResourceExhausted,
        tonic::Code::Internal
            if message.starts_with(b"failed to decode")
                || message.starts_with(b"failed%20to%20decode") =>
        {
            tonic::Code::InvalidArgument
        }
        other => other,
    }
}

/// An error from a stream's inbound side, as the client should see it.
fn inbound_error(status: Status) -> Status {
    let code = inbound_code(status.code(), status.message().as_bytes());
    Status::new(code, status.message().to_string())
}

/// The same for a unary call refused before its handler ran (a trailers-only response).
fn inbound_error_response(
    mut resp: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let Some(code) = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
    else {
        return resp;
    };
    let message = resp
        .headers()
        .get("grpc-message")
        .map_or(&b""[..], |v| v.as_bytes());
    let mapped = inbound_code(tonic::Code::from_i32(code), message) as i32;
    if mapped != code {
        resp.headers_mut()
            .insert("grpc-status", http::HeaderValue::from(mapped));
    }
    resp
}

/// The gRPC services by name: requests go to the service their path names. (Tonic's own
/// router would do this through axum, and cargo would then build tonic with axum for the
/// agent too, in the workspace build.)
#[derive(Clone)]
struct Services<I, M, L> {
    ingest: I,
    metrics: M,
    logs: L,
}

type GrpcRequest = http::Request<tonic::body::Body>;
type GrpcResponse = http::Response<tonic::body::Body>;

type GrpcFuture = Pin<
    Box<dyn std::future::Future<Output = Result<GrpcResponse, std::convert::Infallible>> + Send>,
>;

/// Calls a clone of `svc` (each is ready whenever asked) and boxes its response body.
fn route<S, B>(svc: &S, req: GrpcRequest) -> GrpcFuture
where
    S: tower::Service<GrpcRequest, Response = http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let mut svc = svc.clone();
    Box::pin(async move {
        let response = svc.call(req).await?;
        Ok(response.map(tonic::body::Body::new))
    })
}

impl<I, M, L, IB, MB, LB> tower::Service<GrpcRequest> for Services<I, M, L>
where
    I: tower::Service<GrpcRequest, Response = http::Response<IB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    I::Future: Send,
    IB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    IB::Error: Into<tonic::codegen::StdError>,
    M: tower::Service<GrpcRequest, Response = http::Response<MB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    M::Future: Send,
    MB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    MB::Error: Into<tonic::codegen::StdError>,
    L: tower::Service<GrpcRequest, Response = http::Response<LB>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    L::Future: Send,
    LB: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    LB::Error: Into<tonic::codegen::StdError>,
{
    type Response = GrpcResponse;
    type Error = std::convert::Infallible;
    type Future = GrpcFuture;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // Each service is cloned for its call, and is ready whenever asked.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: GrpcRequest) -> Self::Future {
        use tonic::server::NamedService;
        let path = req.uri().path().trim_start_matches('/');
        let service = path.split_once('/').map_or(path, |(s, _)| s).to_string();
        if service == <IngestServer<IngestService> as NamedService>::NAME {
            route(&self.ingest, req)
        } else if service == <MetricsServiceServer<OtlpService> as NamedService>::NAME {
            route(&self.metrics, req)
        } else if service == <LogsServiceServer<OtlpService> as NamedService>::NAME {
            route(&self.logs, req)
        } else {
            let status = Status::unimplemented(format!("no gRPC service {service:?} here"));
            Box::pin(async move { Ok(status.into_http()) })
        }
    }
}

/// Serves the gRPC services on `listener` until `shutdown` completes.
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let max = state.cfg.grpc_max_message_bytes;
    let first_bytes_within = Duration::from_millis(state.cfg.http_header_timeout_ms.max(1) as u64);
    let mut builder = tonic::transport::Server::builder();
    if let Some(files) = &state.cfg.tls {
        builder = builder
            .tls_config(files.grpc_config()?)
            .map_err(|e| anyhow::anyhow!("configuring gRPC TLS: {e}"))?;
    }
    let auth = crate::auth::grpc_interceptor(state.tokens.clone());
    let ingest = InterceptedService::new(
        IngestServer::new(IngestService::new(state.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth.clone(),
    );
    let connections = state.connections.clone();
    let otlp = OtlpService { state };
    let metrics = InterceptedService::new(
        MetricsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth.clone(),
    );
    let logs = InterceptedService::new(
        LogsServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max),
        auth,
    );
    builder
        .layer(tower::util::MapResponseLayer::new(inbound_error_response))
        // Bounds per connection: a client cannot open streams without limit.
        .max_concurrent_streams(Some(64))
        .concurrency_limit_per_connection(64)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .serve_with_incoming_shutdown(
            Services {
                ingest,
                metrics,
                logs,
            },
            crate::grpc_io::incoming(listener, first_bytes_within, connections),
            shutdown,
        )
        .await
        .map_err(|e| anyhow::anyhow!("serving gRPC: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_inbound_messages_get_the_protocol_codes() {
        use tonic::Code;
        assert_eq!(
            inbound_code(Code::OutOfRange, b"message length too large"),
            Code::ResourceExhausted
        );
        assert_eq!(
            inbound_code(Code::Internal, b"failed%20to%20decode%20Protobuf"),
            Code::InvalidArgument
        );
        assert_eq!(
            inbound_code(Code::Internal, b"storing the batch failed"),
            Code::Internal
        );
    }

    #[test]
    fn a_batch_is_claimed_once_until_released() {
        let map = Mutex::new(HashMap::new());
        let first = Claim::take(&map, "a", 7).expect("free");
        // A resend overtaking the original while it is being stored is refused.
        assert!(Claim::take(&map, "a", 7).is_none());
        assert!(
            Claim::take(&map, "b", 7).is_some(),
            "sequences are per agent"
        );
        drop(first); // not stored: released for the resend
        let mut again = Claim::take(&map, "a", 7).expect("released");
        again.stored = true;
        drop(again);
        assert!(Claim::take(&map, "a", 7).is_none(), "stored once");
    }

    #[test]
    fn sequence_window() {
        let mut s = SeenSeqs::default();
        assert!(!s.contains(1));
        s.insert(1);
        s.insert(2);
        s.insert(5);
        assert!(s.contains(1) && s.contains(2) && s.contains(5));
        assert!(!s.contains(3) && !s.contains(4) && !s.contains(6));
        assert_eq!(s.floor, 2);
        s.insert(3);
        s.insert(4);
        assert_eq!(s.floor, 5);
        assert!(s.above.is_empty());
    }
}
