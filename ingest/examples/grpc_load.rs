//! Load for the `argus.v1` agent stream, measured where it costs: the samples a real `argus
//! server` stores per second of its own CPU (utime + stime from /proc, until it goes quiet).
//!
//! ```text
//! cargo build --release -p argus-ingest --bin argus --example grpc_load
//! target/release/examples/grpc_load --server-bin target/release/argus \
//!     [--series 100000] [--steps 120] [--streams 2] [--group 5000] [--gzip] [--ephemeral]
//! ```
//!
//! Each stream sends its share of the series the way an agent does: definitions once, then
//! sample groups (one timestamp, packed ids and values), a window of batches in flight, and
//! checks every acknowledgement. Batches are built before the clock starts, so the loader
//! (which shares the machine) spends its CPU on gRPC only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use argus_proto::v1::ingest_client::IngestClient;
use argus_proto::v1::{MetricBatch, SampleGroup, SeriesDef, Tag};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;

struct Options {
    server_bin: String,
    series: u32,
    steps: u32,
    streams: u32,
    group: u32,
    window: usize,
    gzip: bool,
    /// Run the server with `--ephemeral` (no write-ahead log), to measure what the log costs.
    ephemeral: bool,
}

fn options() -> Options {
    let mut o = Options {
        server_bin: "target/release/argus".into(),
        series: 100_000,
        steps: 120,
        streams: 2,
        group: 5_000,
        window: 8,
        gzip: false,
        ephemeral: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u32 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} takes a number"))
        };
        match a.as_str() {
            "--series" => o.series = num("--series"),
            "--steps" => o.steps = num("--steps"),
            "--streams" => o.streams = num("--streams").max(1),
            "--group" => o.group = num("--group").max(1),
            "--window" => o.window = num("--window").max(1) as usize,
            "--gzip" => o.gzip = true,
            "--ephemeral" => o.ephemeral = true,
            "--server-bin" => o.server_bin = args.next().expect("--server-bin takes a path"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// The batches of one stream: its series are `stream, stream + streams, …`; local ids count
/// from 0 in each stream.
fn build_batches(o: &Options, stream: u32, start_ms: i64, step_ms: i64) -> (Vec<MetricBatch>, u64) {
    let mine: Vec<u32> = (stream..o.series).step_by(o.streams as usize).collect();
    let mut batches = Vec::new();
    let mut samples = 0u64;
    let mut seq = 0u64;
    let mut walk: Vec<f64> = mine.iter().map(|&s| f64::from(s % 1000)).collect();
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(stream);
    for step in 0..o.steps {
        let ts = start_ms + i64::from(step) * step_ms;
        for (chunk_no, chunk) in mine.chunks(o.group as usize).enumerate() {
            let first_local = chunk_no * o.group as usize;
            let definitions = if step == 0 {
                chunk
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| SeriesDef {
                        id: (first_local + i) as u32,
                        tags: vec![
                            tag("name", &format!("load.metric{}", s % 10)),
                            tag("nf.app", &format!("app{:02}", s % 80)),
                            tag("nf.node", &format!("node{:05}", s / 10)),
                            tag("atlas.dstype", "gauge"),
                        ],
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let values = (0..chunk.len())
                .map(|i| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let v = &mut walk[first_local + i];
                    *v = ((*v + (rng % 201) as f64 / 100.0 - 1.0) * 100.0).round() / 100.0;
                    *v
                })
                .collect::<Vec<f64>>();
            samples += values.len() as u64;
            seq += 1;
            batches.push(MetricBatch {
                accounting: None,
                seq,
                definitions,
                groups: vec![SampleGroup {
                    timestamp_ms: ts,
                    series: (first_local as u32..(first_local + chunk.len()) as u32).collect(),
                    values,
                }],
            });
        }
    }
    (batches, samples)
}

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the server's stat");
    let after = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The server and its data directory, both gone on drop.
struct ServerProcess(Child, std::path::PathBuf);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

fn start_server(bin: &str, ephemeral: bool) -> (ServerProcess, String) {
    let data_dir = std::env::temp_dir().join(format!("argus-grpc-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data_dir);
    let mode = if ephemeral {
        "--ephemeral"
    } else {
        "--wal-fsync=1s"
    };
    let mut child = Command::new(bin)
        .args([
            "server",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--step",
            "60s",
            "--retention",
            "6h",
            "--data-dir",
            data_dir.to_str().expect("a UTF-8 temporary directory"),
            mode,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let grpc = loop {
        let line = lines
            .next()
            .and_then(Result::ok)
            .expect("the server announces its gRPC address");
        if let Some(addr) = line.strip_prefix("argus: gRPC listening on ") {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (ServerProcess(child, data_dir), format!("http://{grpc}"))
}

async fn send_stream(
    endpoint: String,
    agent: String,
    batches: Vec<MetricBatch>,
    window: usize,
    gzip: bool,
) -> u64 {
    let channel = tonic::transport::Endpoint::from_shared(endpoint)
        .expect("a gRPC URL")
        .connect()
        .await
        .expect("connecting to the server");
    let mut client = IngestClient::new(channel);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<MetricBatch>(window);
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    request
        .metadata_mut()
        .insert("argus-agent-id", agent.parse().expect("ascii agent id"));
    let sender = tokio::spawn(async move {
        for b in batches {
            if tx.send(b).await.is_err() {
                break;
            }
        }
    });
    let mut acks = client
        .push_metrics(request)
        .await
        .expect("opening the stream")
        .into_inner();
    let mut stored = 0u64;
    while let Some(ack) = acks.next().await {
        let ack = ack.expect("an acknowledgement");
        assert_eq!(ack.rejected, 0, "rejected: {:?}", ack.reasons);
        stored += u64::from(ack.stored);
    }
    let _ = sender.await;
    stored
}

fn main() {
    let o = options();
    let step_ms = 60_000;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64;
    // The newest step is a few minutes old, the oldest inside the 6 h retention.
    let start_ms = (now / step_ms) * step_ms - i64::from(o.steps + 5) * step_ms;
    let built: Vec<(Vec<MetricBatch>, u64)> = (0..o.streams)
        .map(|s| build_batches(&o, s, start_ms, step_ms))
        .collect();
    let samples: u64 = built.iter().map(|b| b.1).sum();
    let (server, endpoint) = start_server(&o.server_bin, o.ephemeral);
    let pid = server.0.id();
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = rss_mib(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let stored: u64 = runtime.block_on(async {
        let tasks: Vec<_> = built
            .into_iter()
            .enumerate()
            .map(|(i, (batches, _))| {
                tokio::spawn(send_stream(
                    endpoint.clone(),
                    format!("load-{i}-{}", std::process::id()),
                    batches,
                    o.window,
                    o.gzip,
                ))
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("a stream task");
        }
        total
    });
    let wall = started.elapsed().as_secs_f64();
    // Settle: count the server's CPU until a quiet half second (background sealing).
    let mut cpu_after = cpu_seconds(pid);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = cpu_seconds(pid);
        if now - cpu_after < 0.02 {
            break;
        }
        cpu_after = now;
    }
    let cpu = cpu_after - cpu_before;
    assert_eq!(stored, samples, "every sample acknowledged as stored");
    println!(
        "argus.v1 gRPC ingest: {} series x {} steps = {samples} samples over {} streams, \
         groups of {}, gzip {}",
        o.series, o.steps, o.streams, o.group, o.gzip
    );
    println!(
        "wall {wall:.2} s ({:.0} samples/s); server CPU {cpu:.2} s ({:.0} samples per CPU-s); \
         RSS {idle_rss:.0} -> {:.0} MiB",
        samples as f64 / wall,
        samples as f64 / cpu,
        rss_mib(pid)
    );
}
