//! The agent protocol's service (`argus.v1.Ingest`): metric and event streams, each batch
//! stored on a blocking thread (which builds its [`Outcome`]) and answered with an [`Ack`]
//! ([`ack`], the one place an outcome becomes one); and the control stream that carries the
//! step and the live subscriptions to agents. Flow control does the rest: a stream is read
//! only as fast as its batches are stored.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argus_proto::v1::ingest_server::Ingest;
use argus_proto::v1::{
    Ack, AgentMessage, EventBatch, MetricBatch, ServerMessage, Welcome, agent_message,
    server_message,
};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::status;
use crate::convert::{StreamSeries, agent_events};
use crate::outcome::{Kind, Outcome};
use crate::state::AppState;
use crate::validation::{RejectReason, Rejection};

type AckStream = Pin<Box<dyn Stream<Item = Result<Ack, Status>> + Send + 'static>>;
type ControlStream = Pin<Box<dyn Stream<Item = Result<ServerMessage, Status>> + Send + 'static>>;

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
            .map_err(|_| status::shutting_down())?;
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
        return Err(status::invalid_agent_id());
    }
    Ok(id)
}

/// A batch's outcome as its ack: what was stored, refused (with the first reasons) or a
/// duplicate, and a backpressure notice when the batch waited `waited_ms` for the store.
/// Retry later is an UNAVAILABLE status, which ends the stream: the agent reconnects and
/// resends.
pub fn ack(seq: u64, outcome: Outcome, waited_ms: Option<u32>) -> Result<Ack, Status> {
    let mut ack = Ack {
        seq,
        ..Ack::default()
    };
    match outcome {
        Outcome::RetryLater(why) => return Err(status::retry_later(why)),
        Outcome::Duplicate => ack.duplicate = true,
        taken @ Outcome::Taken { .. } => {
            ack.stored = u32::try_from(taken.stored()).unwrap_or(u32::MAX);
            ack.rejected = u32::try_from(taken.refused()).unwrap_or(u32::MAX);
            ack.reasons = taken.reasons();
        }
    }
    if let Some(ms) = waited_ms {
        ack.retry_after_ms = ms;
        ack.notice = format!("server busy: this batch waited {ms} ms for the store");
    }
    Ok(ack)
}

/// Serves one batch stream: each batch, in order, gets the reply `take` makes of it (its
/// ack, or the status that ends the stream); the stream ends at the first failure, or when
/// either side goes. The next batch is read only once the last one is answered, so a slow
/// store slows the agent through flow control.
fn ack_stream<B, F, Fut>(mut inbound: Streaming<B>, mut take: F) -> Response<AckStream>
where
    B: Send + 'static,
    F: FnMut(B) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Ack, Status>> + Send,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let batch = match inbound.message().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(status::inbound_error(e))).await;
                    break;
                }
            };
            let reply = take(batch).await;
            let failed = reply.is_err();
            if tx.send(reply).await.is_err() || failed {
                break;
            }
        }
    });
    Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
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
        let svc = self.clone();
        let series = Arc::new(Mutex::new(StreamSeries::new(svc.state.store.clone())));
        Ok(ack_stream(request.into_inner(), move |batch| {
            let (svc, series, agent) = (svc.clone(), series.clone(), agent.clone());
            async move {
                let seq = batch.seq;
                let (permit, waited) = svc.permit().await?;
                let st = svc.state.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    // Definitions are applied even for a resend: later batches of this
                    // stream may use them.
                    let writer = st.store.writer();
                    let mut conv = series.lock().convert(&writer, &batch);
                    let _gate = st.agents.snapshot_gate.read();
                    if let Some(report) = batch.accounting.clone() {
                        st.agents.note_report(&agent, false, report);
                    }
                    let Some(mut claim) = st.agents.claim_metrics(&agent, seq) else {
                        return Outcome::Duplicate;
                    };
                    // Retry later releases the claim: the agent keeps the batch and
                    // resends it once the store can take it again.
                    let outcome = conv.commit_agent_batch(
                        writer,
                        (&agent, seq),
                        batch.accounting.as_ref(),
                        &st.metrics,
                        st.cluster.as_deref(),
                    );
                    if let Outcome::Taken {
                        stored, refusals, ..
                    } = &outcome
                    {
                        claim.stored();
                        let refused: Vec<_> = refusals.by_reason().collect();
                        st.agents
                            .book_metrics(&agent, seq, *stored as u64, &refused);
                    }
                    drop(claim);
                    series.lock().recycle(std::mem::take(&mut conv.samples));
                    crate::memory::note_churn();
                    outcome
                })
                .await
                .map_err(|_| status::task_failed("storing the batch"))?;
                ack(seq, outcome, waited)
            }
        }))
    }

    async fn push_events(
        &self,
        request: Request<Streaming<EventBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let agent = agent_id(&request)?;
        let svc = self.clone();
        Ok(ack_stream(request.into_inner(), move |batch| {
            let (svc, agent) = (svc.clone(), agent.clone());
            async move {
                let seq = batch.seq;
                // Parsing the events and running the live engines is CPU work: on a
                // blocking thread, never on the reactor, and not on every core at once.
                let permit = svc
                    .event_permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| status::shutting_down())?;
                let st = svc.state.clone();
                let outcome = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    if let Some(report) = batch.accounting.clone() {
                        st.agents.note_report(&agent, true, report);
                    }
                    let Some(mut claim) = st.agents.claim_events(&agent, seq) else {
                        return Outcome::Duplicate;
                    };
                    let (events, mut refusals) = agent_events(&batch);
                    let taken = match st.events.publish(&batch.stream, &events) {
                        Ok(n) => {
                            claim.stored();
                            n
                        }
                        Err(e) => {
                            refusals.add_n(
                                Rejection::new(RejectReason::InvalidValue, e.to_string()),
                                events.len() as u64,
                            );
                            0
                        }
                    };
                    let refused: Vec<_> = refusals.by_reason().collect();
                    st.agents
                        .book_events(&agent, seq, &batch.stream, taken as u64, &refused);
                    Outcome::taken(Kind::Events, taken, refusals, &st.metrics)
                })
                .await
                .map_err(|_| status::task_failed("taking the events"))?;
                ack(seq, outcome, None)
            }
        }))
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
                let current = crate::convert::agent_subscriptions(&live.snapshot(), &streams);
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
