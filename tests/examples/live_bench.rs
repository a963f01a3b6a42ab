//! Live-query benchmark on the real binaries: a server, one agent, an SSE client.
//!
//! 1. Latency: events enter the agent's intake carrying their entry time; a live query
//!    selects 1 % of them; the SSE client notes when each row arrives. Reports p50/p99/max
//!    of (arrival − entry).
//! 2. Bytes: what the agent sent for that query (1 % selected, three fields) against what
//!    it sends when a query takes every event whole (`select *`).
//!
//! Run: `cargo build --release --workspace --bins && cargo run --release -p argus-tests
//! --example live_bench [events_per_second] [seconds]`.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_tests::{Agent, Server, enc, now_ms};
use serde_json::{Value, json};

fn event(seq: u64, t: i64) -> Value {
    json!({
        "seq": seq,
        "t": t,
        "sel": if seq % 100 == 7 { 1 } else { 0 },
        "status": if seq.is_multiple_of(13) { 503 } else { 200 },
        "path": format!("/api/v1/items/{}", seq % 1000),
        "region": if seq.is_multiple_of(3) { "us-east-1" } else { "eu-west-1" },
        "latency_ms": (seq % 250) as f64 * 1.25,
        "device": {"type": "tv", "model": format!("m{}", seq % 40), "os": "linux"},
        "user": format!("user-{}", seq % 50_000),
        "trace": format!("{:032x}", seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    })
}

/// Subscribes over a raw socket and records (t, arrival) for each row.
fn subscribe(server: &Server, query: &str) -> Arc<Mutex<Vec<(i64, i64)>>> {
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut sock = std::net::TcpStream::connect(&addr).expect("connect");
    sock.set_nodelay(true).ok();
    write!(
        sock,
        "GET /api/v1/live?q={} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
        enc(query)
    )
    .expect("request");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut row = false;
        for line in BufReader::new(sock).lines().map_while(Result::ok) {
            if let Some(kind) = line.strip_prefix("event: ") {
                row = kind == "row";
            } else if let Some(data) = line.strip_prefix("data: ")
                && row
            {
                let arrived = now_ms();
                if let Ok(v) = serde_json::from_str::<Value>(data) {
                    out.lock()
                        .expect("rows")
                        .push((v["t"].as_i64().unwrap_or(0), arrived));
                }
            }
        }
    });
    seen
}

fn wait_subscriptions(agent: &Agent, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.health()["live.subscriptions"].as_u64() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "agent never saw the subscription"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Posts `rate` events/s for `secs` s in 10 ms batches; returns the bytes posted.
fn drive(agent: &Agent, rate: u64, secs: u64, seq: &mut u64) -> usize {
    let per_batch = (rate / 100).max(1);
    let start = Instant::now();
    let mut next = start;
    let mut posted = 0;
    while start.elapsed() < Duration::from_secs(secs) {
        let mut body = Vec::new();
        let t = now_ms();
        for _ in 0..per_batch {
            *seq += 1;
            body.extend_from_slice(event(*seq, t).to_string().as_bytes());
            body.push(b'\n');
        }
        posted += body.len();
        let (status, text) = agent.post("/v1/events/bench", &body);
        assert_eq!(status, 200, "{text}");
        next += Duration::from_millis(10);
        if let Some(w) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
    }
    posted
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    (ticks(11) + ticks(12)) / 100.0
}

fn counter(agent: &Agent, key: &str) -> u64 {
    agent.health()[key].as_u64().unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rate: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let secs: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let mut seq = 0;

    // 1 % selected, three fields.
    let rows = subscribe(&server, "select seq, t, path from bench where sel == 1");
    wait_subscriptions(&agent, 1);
    let bytes_before = counter(&agent, "event.bytes.id=sent");
    let cpu_before = cpu_seconds(agent.pid());
    let posted = drive(&agent, rate, secs, &mut seq);
    let agent_cpu = cpu_seconds(agent.pid()) - cpu_before;
    std::thread::sleep(Duration::from_millis(500));
    let selective_bytes = counter(&agent, "event.bytes.id=sent") - bytes_before;
    let mut lat: Vec<i64> = rows
        .lock()
        .expect("rows")
        .iter()
        .map(|(t, a)| a - t)
        .collect();
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    println!(
        "latency agent intake -> SSE row, {rate} events/s, 1% selected, {} rows: p50 {} ms, p99 {} ms, max {} ms",
        lat.len(),
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
    println!(
        "agent CPU for {} events (HTTP intake, partial read, predicate, batching, gRPC): {agent_cpu:.2} s, {:.0} events per CPU-second",
        rate * secs,
        (rate * secs) as f64 / agent_cpu.max(0.01)
    );
    drop(rows);

    // Every event, whole: what shipping everything would cost.
    let _all = subscribe(&server, "select * from bench");
    wait_subscriptions(&agent, 2);
    let before = counter(&agent, "event.bytes.id=sent");
    let posted_all = drive(&agent, rate, secs.min(5), &mut seq);
    std::thread::sleep(Duration::from_millis(500));
    let all_bytes = counter(&agent, "event.bytes.id=sent") - before;
    let per_event_selective = selective_bytes as f64 / (rate * secs) as f64;
    let per_event_all = all_bytes as f64 / (rate * secs.min(5)) as f64;
    println!(
        "bytes sent per event posted: 1% query {per_event_selective:.2} B, every event whole {per_event_all:.1} B (ratio {:.4}); posted {:.1} B/event",
        per_event_selective / per_event_all,
        posted as f64 / (rate * secs) as f64
    );
    let _ = posted_all;
}
