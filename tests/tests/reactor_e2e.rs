//! The gRPC event path parses JSON and runs the live engines on blocking threads, never on
//! the async reactor: while four agent-protocol clients flood events as fast as the server
//! acknowledges them, with a live query reading the stream, 1,000 health checks from 20
//! clients at once stay fast.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argus_proto::v1::ingest_client::IngestClient;
use argus_proto::v1::{Event, EventBatch};
use argus_tests::{LiveClient, Server, now_ms};

/// Events per batch and batches in flight: what an agent sends at full speed.
const EVENTS_PER_BATCH: usize = 1_000;
const WINDOW: usize = 8;

/// Agents flooding at once: more than the reactor's threads, so that work on the reactor
/// would leave none for anyone else.
const AGENTS: usize = 4;

async fn flood(grpc: String, agent: usize, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let channel = tonic::transport::Endpoint::from_shared(grpc)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = IngestClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<EventBatch>(WINDOW);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert(
        argus_proto::AGENT_ID_HEADER,
        format!("flood-{agent}").parse().unwrap(),
    );
    let mut acks = client.push_events(request).await.unwrap().into_inner();
    let batch = |seq: u64| EventBatch {
        accounting: None,
        seq,
        stream: "flood".into(),
        events: (0..EVENTS_PER_BATCH)
            .map(|i| Event {
                timestamp_ms: now_ms(),
                json: format!(
                    r#"{{"path":"/api/items/{i}","status":{},"latency_ms":{i}.5,"user":"u{seq}"}}"#,
                    if i % 100 == 0 { 503 } else { 200 }
                )
                .into_bytes(),
                subscriptions: vec![],
            })
            .collect(),
    };
    let mut seq = 0;
    for _ in 0..WINDOW {
        seq += 1;
        tx.send(batch(seq)).await.unwrap();
    }
    while let Ok(Some(ack)) = acks.message().await {
        acked.fetch_add(u64::from(ack.stored), Ordering::Relaxed);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        seq += 1;
        if tx.send(batch(seq)).await.is_err() {
            break;
        }
    }
}

/// `clients` clients at once, each making `each` health checks on new connections (raw
/// HTTP/1.1, so the measure is the server's and not a client library's); the latencies.
fn health_checks(server: &Server, clients: usize, each: usize) -> Vec<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://").to_string();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let addr = addr.clone();
                tokio::spawn(async move {
                    let mut took = Vec::with_capacity(each);
                    for _ in 0..each {
                        let t = Instant::now();
                        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
                        s.write_all(
                            b"GET /healthz HTTP/1.1\r\nHost: argus\r\nConnection: close\r\n\r\n",
                        )
                        .await
                        .unwrap();
                        let mut response = Vec::new();
                        s.read_to_end(&mut response).await.unwrap();
                        assert!(response.starts_with(b"HTTP/1.1 200"));
                        took.push(t.elapsed());
                    }
                    took
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    })
}

#[test]
fn health_checks_stay_fast_while_events_flood_in_over_grpc() {
    let server = Server::start(&["--ephemeral"]);
    let mut quiet = health_checks(&server, 20, 50);
    quiet.sort();
    let quiet_p99 = quiet[quiet.len() * 99 / 100];
    let live = LiveClient::start(
        &server,
        &[],
        "select path, status from flood where status >= 500",
    );
    live.wait_subscribed();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let flooding = {
        let (grpc, stop, acked) = (server.grpc.clone(), stop.clone(), acked.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async move {
                    let agents: Vec<_> = (0..AGENTS)
                        .map(|a| tokio::spawn(flood(grpc.clone(), a, stop.clone(), acked.clone())))
                        .collect();
                    for a in agents {
                        a.await.unwrap();
                    }
                });
        })
    };
    // Wait until the flood runs at full speed.
    let started = Instant::now();
    while acked.load(Ordering::Relaxed) < 50_000 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the flood never got going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // 1,000 health checks: 20 clients at once, 50 each, each on a new connection.
    let flood_before = acked.load(Ordering::Relaxed);
    let checking = Instant::now();
    let mut latencies = health_checks(&server, 20, 50);
    let checked_in = checking.elapsed();
    let flood_during = acked.load(Ordering::Relaxed) - flood_before;
    stop.store(true, Ordering::Relaxed);
    flooding.join().unwrap();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    eprintln!(
        "1,000 health checks in {checked_in:?} beside {flood_during} events acknowledged \
         ({:.0} events/s): p50 {:?}, p99 {:?}, worst {:?} (p99 {quiet_p99:?} without the \
         flood); {} rows to the live query",
        flood_during as f64 / checked_in.as_secs_f64(),
        p(0.5),
        p(0.99),
        latencies[latencies.len() - 1],
        live.rows().len()
    );
    assert!(flood_during > 0, "the flood stopped while the checks ran");
    assert!(
        p(0.99) < Duration::from_millis(20),
        "health checks took {:?} at p99",
        p(0.99)
    );
}
