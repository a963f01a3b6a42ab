//! Several writers create new series over remote write, publish and the agent protocol
//! while maintenance runs every 100 ms, and the server is killed (`kill -9`) and restarted
//! in the middle: every acknowledged sample is present, in its own series, exactly once,
//! and no series holds a value it was not sent. Maintenance used to remove a series between
//! a request creating it and writing to it, and hand its id to another series.
//!
//! `ARGUS_RACE_REQUESTS` sets how many acknowledged requests the run waits for (100,000 by
//! default, split over the three paths).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use argus_proto::v1::ingest_client::IngestClient;
use argus_proto::v1::{MetricBatch, SampleGroup, SeriesDef, Tag};
use argus_tests::{Server, enc, free_port, now_ms, scratch_dir};
use prost::Message;
use serde_json::{Value, json};

/// New series each request creates.
const PER_REQUEST: u64 = 5;
/// Requests per `chunk` tag: the check reads one chunk per query.
const CHUNK: u64 = 2_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Path {
    RemoteWrite,
    Publish,
    Agent,
    /// A careless client's remote write with timestamps past the retention: its series are
    /// created, stay empty, and maintenance removes them and reuses their ids.
    Stale,
}

impl Path {
    fn tag(self) -> &'static str {
        match self {
            Path::RemoteWrite => "rw",
            Path::Publish => "pub",
            Path::Agent => "agent",
            Path::Stale => "stale",
        }
    }
}

/// The value every series of request `n` gets: unique per request, so a sample in a
/// stranger's series shows.
fn value_of(n: u64) -> f64 {
    (n + 1) as f64
}

/// What the writers share: the next request number per path, what was acknowledged, and
/// where the server is now.
struct Shared {
    next: HashMap<Path, AtomicU64>,
    acked: Mutex<HashMap<Path, Vec<u64>>>,
    acked_total: AtomicU64,
    target: u64,
    stop: AtomicBool,
    base: Mutex<String>,
    grpc: Mutex<String>,
}

impl Shared {
    fn take(&self, path: Path) -> u64 {
        self.next[&path].fetch_add(1, Ordering::Relaxed)
    }

    fn ack(&self, path: Path, n: u64) {
        self.acked.lock().unwrap().entry(path).or_default().push(n);
        if self.acked_total.fetch_add(1, Ordering::Relaxed) + 1 >= self.target {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }
}

fn labels(path: Path, n: u64, k: u64) -> Vec<(&'static str, String)> {
    vec![
        ("path", path.tag().to_string()),
        ("chunk", (n / CHUNK).to_string()),
        ("req", n.to_string()),
        ("kk", k.to_string()),
    ]
}

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into()
}

/// A failed request (the server is down) is not acknowledged; the writer waits a little
/// and goes on with a new request.
fn pause_after_failure() {
    std::thread::sleep(Duration::from_millis(20));
}

fn remote_writer(shared: &Shared, path: Path) {
    let http = client();
    while shared.running() {
        let n = shared.take(path);
        let ts = match path {
            Path::Stale => now_ms() - 7 * 3_600_000,
            _ => now_ms(),
        };
        let request = WriteRequest {
            timeseries: (0..PER_REQUEST)
                .map(|k| TimeSeries {
                    labels: std::iter::once(("__name__", "race".to_string()))
                        .chain(labels(path, n, k))
                        .map(|(name, value)| Label {
                            name: name.to_string(),
                            value,
                        })
                        .collect(),
                    samples: vec![Sample {
                        value: value_of(n),
                        timestamp: ts,
                    }],
                })
                .collect(),
            metadata: vec![],
        };
        let body = snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .expect("snappy compresses");
        let base = shared.base.lock().unwrap().clone();
        let status = http
            .post(&format!("{base}/api/v1/write"))
            .header("Content-Encoding", "snappy")
            .send(&body[..])
            .map(|r| r.status().as_u16());
        match (path, status) {
            (Path::RemoteWrite, Ok(204)) => shared.ack(path, n),
            (Path::Stale, Ok(400)) => {}
            (_, Ok(other)) => panic!("{path:?} remote write of request {n} answered {other}"),
            (_, Err(_)) => pause_after_failure(),
        }
    }
}

fn publisher(shared: &Shared) {
    let http = client();
    while shared.running() {
        let n = shared.take(Path::Publish);
        let mut common: serde_json::Map<String, Value> = labels(Path::Publish, n, 0)
            .into_iter()
            .filter(|(k, _)| *k != "kk")
            .map(|(k, v)| (k.to_string(), Value::String(v)))
            .collect();
        common.insert("name".into(), "race".into());
        common.insert("atlas.dstype".into(), "sum".into());
        let ts = now_ms();
        let metrics: Vec<Value> = (0..PER_REQUEST)
            .map(|k| json!({"tags": {"kk": k.to_string()}, "timestamp": ts, "value": value_of(n)}))
            .collect();
        let payload = json!({"tags": common, "metrics": metrics}).to_string();
        let base = shared.base.lock().unwrap().clone();
        let status = http
            .post(&format!("{base}/api/v1/publish"))
            .header("Content-Type", "application/json")
            .send(payload.as_bytes())
            .map(|r| r.status().as_u16());
        match status {
            Ok(200) => shared.ack(Path::Publish, n),
            Ok(other) => panic!("publish of request {n} answered {other}"),
            Err(_) => pause_after_failure(),
        }
    }
}

/// One agent process speaking `argus.v1`: each batch defines its request's new series and
/// carries their samples; a batch counts once the server's `Ack` says all were stored. A
/// broken stream (the server was killed) is opened again; unacknowledged batches are not
/// resent (each batch is its own request).
async fn agent_writer(shared: Arc<Shared>, agent_id: String) {
    let mut seq = 0u64;
    let mut local = 0u32;
    while shared.running() {
        let grpc = shared.grpc.lock().unwrap().clone();
        let endpoint = tonic::transport::Endpoint::from_shared(grpc).expect("a gRPC address");
        let Ok(channel) = endpoint.connect().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut client = IngestClient::new(channel);
        let (tx, rx) = tokio::sync::mpsc::channel::<MetricBatch>(4);
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert(
            argus_proto::AGENT_ID_HEADER,
            agent_id.parse().expect("an ASCII agent id"),
        );
        let Ok(response) = client.push_metrics(request).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut acks = response.into_inner();
        while shared.running() {
            let n = shared.take(Path::Agent);
            seq += 1;
            let first = local;
            local += PER_REQUEST as u32;
            let definitions = (0..PER_REQUEST)
                .map(|k| SeriesDef {
                    id: first + k as u32,
                    tags: [("name", "race".to_string()), ("atlas.dstype", "sum".into())]
                        .into_iter()
                        .chain(labels(Path::Agent, n, k))
                        .map(|(key, value)| Tag {
                            key: key.to_string(),
                            value,
                        })
                        .collect(),
                })
                .collect();
            let batch = MetricBatch {
                accounting: None,
                seq,
                definitions,
                groups: vec![SampleGroup {
                    timestamp_ms: now_ms(),
                    series: (first..local).collect(),
                    values: vec![value_of(n); PER_REQUEST as usize],
                }],
            };
            if tx.send(batch).await.is_err() {
                break;
            }
            match acks.message().await {
                Ok(Some(ack)) => {
                    assert_eq!(ack.seq, seq, "acks come in order");
                    assert!(!ack.duplicate, "batch {seq} was never sent before");
                    assert_eq!(
                        (ack.stored, ack.rejected),
                        (PER_REQUEST as u32, 0),
                        "batch {seq}: {:?}",
                        ack.reasons
                    );
                    shared.ack(Path::Agent, n);
                }
                _ => break,
            }
        }
    }
}

/// Every series of `path`'s chunk `c` with a value: (request, k) → the sum of its values in
/// the window.
fn chunk_contents(server: &Server, path: Path, c: u64) -> HashMap<(u64, u64), f64> {
    let q = format!(
        "name,race,:eq,path,{},:eq,:and,chunk,{c},:eq,:and,:sum,(,req,kk,),:by,:cf-sum",
        path.tag()
    );
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-20m&e=now%2B2m&step=1m&format=stats.json&tz=UTC",
        enc(&q)
    ));
    let (Some(metrics), Some(stats)) = (v["metrics"].as_array(), v["stats"].as_array()) else {
        panic!("graph for chunk {c} of {path:?}: {v}");
    };
    let mut out = HashMap::new();
    for (m, s) in metrics.iter().zip(stats) {
        let n: u64 = m["req"].as_str().and_then(|r| r.parse().ok()).expect("req");
        let k: u64 = m["kk"].as_str().and_then(|r| r.parse().ok()).expect("kk");
        // A series with no value in the window (created, its samples refused) has none.
        let Some(total) = s["total"].as_f64().filter(|t| !t.is_nan()) else {
            continue;
        };
        assert!(out.insert((n, k), total).is_none(), "two lines for {n}/{k}");
    }
    out
}

/// Reads every chunk of every path and checks it against what was acknowledged. Returns
/// the number of acknowledged samples found.
fn check(server: &Server, shared: &Shared) -> u64 {
    let acked = shared.acked.lock().unwrap().clone();
    let mut found = 0;
    for path in [Path::RemoteWrite, Path::Publish, Path::Agent, Path::Stale] {
        let sent = shared.next[&path].load(Ordering::Relaxed);
        let mut stored = HashMap::new();
        for c in 0..sent.div_ceil(CHUNK) {
            stored.extend(chunk_contents(server, path, c));
        }
        // Every series holds exactly its own request's value, acknowledged or not (a
        // request cut off by the kill may have been stored): anything else is a sample in
        // a stranger's series or one applied twice.
        if path == Path::Stale {
            assert!(stored.is_empty(), "refused samples were stored: {stored:?}");
            continue;
        }
        for (&(n, k), &total) in &stored {
            assert_eq!(
                total,
                value_of(n),
                "{path:?} request {n} series {k} holds {total}, not its own value {}",
                value_of(n)
            );
        }
        for &n in acked.get(&path).into_iter().flatten() {
            for k in 0..PER_REQUEST {
                assert!(
                    stored.contains_key(&(n, k)),
                    "{path:?} request {n} was acknowledged, but its series {k} holds nothing"
                );
                found += 1;
            }
        }
    }
    found
}

fn metric(server: &Server, name: &str) -> f64 {
    let (_, text) = server.get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[test]
fn acknowledged_samples_of_new_series_survive_maintenance_and_a_kill() {
    let target: u64 = std::env::var("ARGUS_RACE_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let http = format!("127.0.0.1:{}", free_port());
    let grpc = format!("127.0.0.1:{}", free_port());
    let flags = [
        "--maintenance-interval",
        "100ms",
        "--graph-max-lines",
        "100000",
        "--graph-max-datapoints",
        "100000000",
    ];
    let dir = scratch_dir("race");
    let server = Server::start_in(dir.hand_over(), &http, &grpc, &flags);
    let shared = Arc::new(Shared {
        next: [Path::RemoteWrite, Path::Publish, Path::Agent, Path::Stale]
            .into_iter()
            .map(|p| (p, AtomicU64::new(0)))
            .collect(),
        acked: Mutex::new(HashMap::new()),
        acked_total: AtomicU64::new(0),
        target,
        stop: AtomicBool::new(false),
        base: Mutex::new(server.base.clone()),
        grpc: Mutex::new(server.grpc.clone()),
    });
    let started = Instant::now();
    let mut threads = Vec::new();
    for i in 0..2 {
        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            remote_writer(&s, Path::RemoteWrite)
        }));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || remote_writer(&s, Path::Stale)));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || publisher(&s)));
        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(agent_writer(s, format!("race-agent-{i}")));
        }));
    }

    // Half way, kill -9 and restart on the same addresses and files.
    let half = target / 2;
    while shared.acked_total.load(Ordering::Relaxed) < half {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} requests acknowledged in 10 minutes",
            shared.acked_total.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dir = server.kill();
    let killed_at = shared.acked_total.load(Ordering::Relaxed);
    let server = Server::start_in(dir, &http, &grpc, &flags);
    let recovery = server.recovery_report();
    eprintln!("killed after {killed_at} acknowledged requests; {recovery:?}");

    for t in threads {
        t.join().expect("a writer failed");
    }
    let elapsed = started.elapsed();
    let acked = shared.acked_total.load(Ordering::Relaxed);
    let per_path: Vec<(Path, usize)> = shared
        .acked
        .lock()
        .unwrap()
        .iter()
        .map(|(p, v)| (*p, v.len()))
        .collect();
    eprintln!(
        "{acked} requests acknowledged in {:.1} s ({per_path:?})",
        elapsed.as_secs_f64()
    );
    assert!(acked >= target);
    for path in [Path::RemoteWrite, Path::Publish, Path::Agent] {
        assert!(
            per_path.iter().any(|&(p, n)| p == path && n > 0),
            "{path:?} acknowledged nothing"
        );
    }
    let removed = metric(&server, "argus_series_removed_total");
    eprintln!("maintenance removed {removed} empty series since the restart");
    assert!(removed > 0.0, "no series was removed: the run did not race");
    let found = check(&server, &shared);
    assert_eq!(found, acked * PER_REQUEST);
    eprintln!("all {found} acknowledged samples found, each in its own series, once");
}
