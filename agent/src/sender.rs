//! The connection to the server: a control stream (Hello, then instructions), a metric
//! stream and an event stream, all compressed. Batches go out oldest first, at most a few in
//! flight per stream; an acknowledgement frees its batch. When the connection breaks, every
//! unacknowledged batch is sent again on the next one (the server recognises resends by
//! their sequence number), after an exponential backoff with jitter.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use argus_proto::v1::ingest_client::IngestClient;
use argus_proto::v1::{
    AgentMessage, EventBatch, Hello, MetricBatch, SampleGroup, SeriesDef, Tag, agent_message,
    server_message,
};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::transport::{Channel, Endpoint};

use crate::health::Health;
use crate::outbox::{Catalog, Entry, Kind, Outbox, Payload};
use crate::pushdown::Pushdown;

/// Batches per stream sent and not yet acknowledged.
const WINDOW: usize = 8;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Sender {
    /// The servers to stream to, in turn: after a failure the next one is tried.
    pub servers: Vec<String>,
    /// The index of the server in use.
    pub current: std::sync::atomic::AtomicUsize,
    pub token: Option<crate::config::Secret>,
    pub tls: Option<crate::config::ClientTls>,
    pub agent_id: String,
    pub node: String,
    pub streams: Vec<String>,
    /// The step the agent aggregates over: the server's, once it has said (its Welcome).
    pub step_ms: tokio::sync::watch::Sender<i64>,
    pub catalog: Arc<Catalog>,
    pub outbox: Arc<Outbox>,
    pub health: Arc<Health>,
    pub pushdown: Arc<Pushdown>,
}

/// A random number for jitter and ids, without a dependency: the clock's nanoseconds mixed.
pub fn random_u64() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = nanos ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The series definitions a stream has received, so each is sent once per stream.
#[derive(Default)]
struct Defined(HashSet<u32>);

fn encode_metrics(entry: &Entry, defined: &mut Defined, catalog: &Catalog) -> MetricBatch {
    let Payload::Metrics(samples) = &entry.payload else {
        return MetricBatch::default();
    };
    let mut batch = MetricBatch {
        seq: entry.seq,
        ..MetricBatch::default()
    };
    let mut groups: Vec<SampleGroup> = Vec::new();
    for s in samples {
        if defined.0.insert(s.series)
            && let Some(tags) = catalog.tags(s.series)
        {
            batch.definitions.push(SeriesDef {
                id: s.series,
                tags: tags
                    .iter()
                    .map(|(k, v)| Tag {
                        key: k.clone(),
                        value: v.clone(),
                    })
                    .collect(),
            });
        }
        // Samples of one batch mostly share a timestamp: look from the last group back.
        let group = match groups.iter_mut().rev().find(|g| g.timestamp_ms == s.ts_ms) {
            Some(g) => g,
            None => {
                groups.push(SampleGroup {
                    timestamp_ms: s.ts_ms,
                    ..SampleGroup::default()
                });
                groups.last_mut().expect("just pushed")
            }
        };
        group.series.push(s.series);
        group.values.push(s.value);
    }
    batch.groups = groups;
    batch
}

fn encode_events(entry: &Entry, health: &Health) -> EventBatch {
    let Payload::Events { stream, events } = &entry.payload else {
        return EventBatch::default();
    };
    let bytes: usize = events.iter().map(|e| e.json.len()).sum();
    health
        .event_bytes_sent
        .fetch_add(bytes as u64, Ordering::Relaxed);
    EventBatch {
        seq: entry.seq,
        stream: stream.clone(),
        events: events
            .iter()
            .map(|e| argus_proto::v1::Event {
                timestamp_ms: e.ts_ms,
                json: e.json.clone(),
                subscriptions: e.subscriptions.clone(),
            })
            .collect(),
        accounting: None,
    }
}

impl Sender {
    /// Runs until the process ends: connect, stream, and after a failure, wait and again.
    pub async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        let mut failed_in_a_row = 0;
        loop {
            let started = Instant::now();
            match self.session().await {
                Ok(()) => tracing::info!("server closed the connection"),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "connection to the server lost")
                }
            }
            self.outbox.connection_lost();
            self.health.reconnects.fetch_add(1, Ordering::Relaxed);
            if started.elapsed() > Duration::from_secs(30) {
                backoff = BACKOFF_MIN;
                failed_in_a_row = 0;
            }
            // The next server at once, while some have not failed in this round (a
            // cluster's other nodes take the resends); after a whole round, the backoff.
            failed_in_a_row += 1;
            let next = (self.current.load(Ordering::Relaxed) + 1) % self.servers.len();
            self.current.store(next, Ordering::Relaxed);
            if failed_in_a_row < self.servers.len() {
                continue;
            }
            failed_in_a_row = 0;
            // Full jitter: a fleet of agents does not come back at the same instant.
            let wait = backoff.mul_f64(0.5 + (random_u64() % 1000) as f64 / 2000.0);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// The server in use.
    fn server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    async fn connect(&self) -> anyhow::Result<Channel> {
        let mut endpoint =
            Endpoint::from_shared(self.server().to_string()).context("invalid server address")?;
        if let Some(tls) = &self.tls {
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))
            };
            let mut config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(read(&tls.ca)?));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(tonic::transport::Identity::from_pem(
                    read(cert)?,
                    read(key)?,
                ));
            }
            endpoint = endpoint.tls_config(config).context("configuring TLS")?;
        }
        endpoint
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .connect()
            .await
            .with_context(|| format!("connecting to {}", self.server()))
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        if let Ok(v) = self.agent_id.parse() {
            req.metadata_mut().insert(argus_proto::AGENT_ID_HEADER, v);
        }
        if let Some(token) = &self.token
            && let Ok(v) = format!("Bearer {}", token.0).parse()
        {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// Whether a message of `bytes` fits the server's `limit`; records the largest sent.
    fn fits(&self, bytes: usize, limit: usize) -> bool {
        if bytes > limit {
            tracing::warn!(
                bytes,
                limit,
                "a batch over the server's message limit is dropped"
            );
            return false;
        }
        self.health
            .batch_bytes_max
            .fetch_max(bytes as u64, Ordering::Relaxed);
        true
    }

    /// A stream failed with `status`. A message the server found too large is never
    /// resent: the oldest batch in flight (the one it refused) is dropped and counted, so
    /// the agent does not send it again forever.
    fn stream_failed(&self, kind: Kind, status: tonic::Status) -> tonic::Status {
        if status.code() == tonic::Code::ResourceExhausted
            && let Some(seq) = self.outbox.oldest_in_flight(kind)
        {
            tracing::warn!(seq, message = %status.message(), "the server refused a batch as too large; it is dropped");
            self.outbox.drop_too_large(kind, seq);
        }
        status
    }

    /// One connection's life: returns when a stream ends or fails.
    async fn session(&self) -> anyhow::Result<()> {
        let channel = self.connect().await?;
        let mut client = IngestClient::new(channel)
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(16 << 20);

        let hello = AgentMessage {
            kind: Some(agent_message::Kind::Hello(Hello {
                agent_id: self.agent_id.clone(),
                node: self.node.clone(),
                streams: self.streams.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                step_ms: *self.step_ms.borrow(),
            })),
        };
        // The control stream stays open: the agent's half by keeping the sender alive.
        let (control_tx, control_rx) = mpsc::channel::<AgentMessage>(4);
        control_tx
            .send(hello)
            .await
            .map_err(|_| anyhow!("control stream closed"))?;
        let mut control = client
            .control(self.request(ReceiverStream::new(control_rx)))
            .await
            .context("opening the control stream")?
            .into_inner();

        let (metrics_tx, metrics_rx) = mpsc::channel::<MetricBatch>(WINDOW);
        let mut metric_acks = client
            .push_metrics(self.request(ReceiverStream::new(metrics_rx)))
            .await
            .context("opening the metric stream")?
            .into_inner();
        let (events_tx, events_rx) = mpsc::channel::<EventBatch>(WINDOW);
        let mut event_acks = client
            .push_events(self.request(ReceiverStream::new(events_rx)))
            .await
            .context("opening the event stream")?
            .into_inner();
        tracing::info!(server = %self.server(), "connected");

        let mut defined = Defined::default();
        let mut pause_until: Option<tokio::time::Instant> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            // Send what fits in the windows, unless the server asked for a pause.
            if pause_until.is_none_or(|t| tokio::time::Instant::now() >= t) {
                let room = WINDOW.saturating_sub(self.outbox.in_flight(Kind::Metrics));
                let limit = self.outbox.max_message_bytes();
                // Each batch carries the agent's account of its batches, as of now.
                let report = self.outbox.report(Kind::Metrics);
                let batches = self.outbox.take_unsent(Kind::Metrics, room, |e| {
                    let mut batch = encode_metrics(e, &mut defined, &self.catalog);
                    batch.accounting = Some(report.clone());
                    let fits = self.fits(batch.encoded_len(), limit);
                    if !fits {
                        // Its definitions were not sent after all.
                        for d in &batch.definitions {
                            defined.0.remove(&d.id);
                        }
                    }
                    fits.then_some(batch)
                });
                for b in batches {
                    metrics_tx
                        .send(b)
                        .await
                        .map_err(|_| anyhow!("metric stream closed"))?;
                }
                let room = WINDOW.saturating_sub(self.outbox.in_flight(Kind::Events));
                let report = self.outbox.report(Kind::Events);
                let batches = self.outbox.take_unsent(Kind::Events, room, |e| {
                    let mut batch = encode_events(e, &self.health);
                    batch.accounting = Some(report.clone());
                    self.fits(batch.encoded_len(), limit).then_some(batch)
                });
                for b in batches {
                    events_tx
                        .send(b)
                        .await
                        .map_err(|_| anyhow!("event stream closed"))?;
                }
            }
            tokio::select! {
                _ = self.outbox.ready.notified() => {}
                _ = tick.tick() => {}
                ack = metric_acks.next() => {
                    let ack = ack.ok_or_else(|| anyhow!("metric stream ended"))?
                        .map_err(|status| self.stream_failed(Kind::Metrics, status))
                        .context("metric stream failed")?;
                    let items = self.outbox.ack(Kind::Metrics, ack.seq);
                    if !ack.duplicate {
                        self.health
                            .samples_sent
                            .fetch_add(u64::from(ack.stored), Ordering::Relaxed);
                    }
                    if ack.rejected > 0 {
                        self.health
                            .rejected_by_server
                            .fetch_add(u64::from(ack.rejected), Ordering::Relaxed);
                        tracing::warn!(seq = ack.seq, rejected = ack.rejected, reasons = ?ack.reasons, "server refused samples");
                    }
                    if ack.retry_after_ms > 0 {
                        tracing::info!(notice = %ack.notice, "server asks to slow down");
                        pause_until = Some(tokio::time::Instant::now() + Duration::from_millis(u64::from(ack.retry_after_ms)));
                    }
                    let _ = items;
                }
                ack = event_acks.next() => {
                    let ack = ack.ok_or_else(|| anyhow!("event stream ended"))?
                        .map_err(|status| self.stream_failed(Kind::Events, status))
                        .context("event stream failed")?;
                    self.outbox.ack(Kind::Events, ack.seq);
                    if !ack.duplicate {
                        self.health
                            .events_sent
                            .fetch_add(u64::from(ack.stored), Ordering::Relaxed);
                    }
                    if ack.rejected > 0 {
                        tracing::warn!(seq = ack.seq, rejected = ack.rejected, reasons = ?ack.reasons, "server refused events");
                    }
                }
                msg = control.next() => {
                    match msg {
                        Some(Ok(m)) => match m.kind {
                            Some(server_message::Kind::Welcome(w)) => {
                                self.outbox.set_max_message_bytes(w.max_message_bytes as usize);
                                let ours = *self.step_ms.borrow();
                                if w.step_ms > 0 && w.step_ms != ours {
                                    // The server stores on its step: aggregating on another
                                    // would make rates and gauges land between its steps.
                                    tracing::info!(agent_step_ms = ours, server_step_ms = w.step_ms,
                                        "taking the server's step");
                                    self.step_ms.send_replace(w.step_ms);
                                }
                                tracing::info!(server_version = %w.server_version, "welcomed by the server");
                            }
                            Some(server_message::Kind::Subscriptions(set)) => {
                                let problems = self.pushdown.replace(&set, random_u64());
                                for p in &problems {
                                    tracing::warn!(problem = %p, "live subscription skipped");
                                }
                                let n = self.pushdown.count();
                                self.health.live_subscriptions.store(n as u64, Ordering::Relaxed);
                                tracing::info!(subscriptions = n, "live subscriptions updated");
                            }
                            None => {}
                        },
                        Some(Err(e)) => return Err(anyhow!(e).context("control stream failed")),
                        None => return Err(anyhow!("control stream ended")),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Sample;

    #[test]
    fn definitions_once_per_stream_and_groups_by_time() {
        let catalog = Catalog::default();
        let a = catalog.intern(vec![("name".into(), "aa".into())]).unwrap();
        let b = catalog.intern(vec![("name".into(), "bb".into())]).unwrap();
        let health = Arc::new(Health::default());
        let catalog = Arc::new(catalog);
        let outbox = Outbox::new(1 << 20, health, catalog.clone());
        let s = |series, ts_ms, value| Sample {
            series,
            ts_ms,
            value,
        };
        outbox.push(
            "step",
            Payload::Metrics(vec![s(a, 60, 1.0), s(b, 60, 2.0), s(a, 120, 3.0)]),
        );
        outbox.push("step", Payload::Metrics(vec![s(b, 180, 4.0)]));
        let mut defined = Defined::default();
        let batches = outbox.take_unsent(Kind::Metrics, 10, |e| {
            Some(encode_metrics(e, &mut defined, &catalog))
        });
        assert_eq!(batches[0].definitions.len(), 2);
        assert_eq!(batches[0].groups.len(), 2);
        assert_eq!(batches[0].groups[0].series, [a, b]);
        assert_eq!(batches[0].groups[1].values, [3.0]);
        assert!(
            batches[1].definitions.is_empty(),
            "b was defined on this stream already"
        );
        // a new connection defines everything again
        outbox.connection_lost();
        let mut fresh = Defined::default();
        let again = outbox.take_unsent(Kind::Metrics, 10, |e| {
            Some(encode_metrics(e, &mut fresh, &catalog))
        });
        assert_eq!(again[0].seq, 1);
        assert_eq!(again[0].definitions.len(), 2);
    }

    #[test]
    fn every_batch_fits_the_servers_limit_with_every_definition() {
        let catalog = Arc::new(Catalog::default());
        let health = Arc::new(Health::default());
        let outbox = Outbox::new(256 << 20, health, catalog.clone());
        let limit = 64 * 1024;
        outbox.set_max_message_bytes(limit);
        let samples: Vec<Sample> = (0..20_000)
            .map(|i| Sample {
                series: catalog
                    .intern(vec![
                        ("name".into(), format!("flood.{i}")),
                        ("nf.node".into(), "i-0abc".into()),
                        ("statistic".into(), "count".into()),
                        ("atlas.dstype".into(), "rate".into()),
                    ])
                    .unwrap(),
                ts_ms: 60_000,
                value: f64::from(i),
            })
            .collect();
        outbox.push("step", Payload::Metrics(samples));
        let mut defined = Defined::default();
        let batches = outbox.take_unsent(Kind::Metrics, usize::MAX, |e| {
            Some(encode_metrics(e, &mut defined, &catalog))
        });
        let sizes: Vec<usize> = batches.iter().map(|b| b.encoded_len()).collect();
        assert!(sizes.len() > 20, "{}", sizes.len());
        assert!(sizes.iter().all(|&b| b <= limit), "{sizes:?}");
        let samples: usize = batches.iter().map(|b| b.groups[0].values.len()).sum();
        assert_eq!(samples, 20_000);
    }
}
