//! End-to-end: the real `argus-agent` beside the real `argus server`, over gRPC. A real
//! StatsD client (the `statsd` package from PyPI) sends to the agent; a server killed and
//! restarted while the agent buffers loses nothing the agent held, stored exactly once; a
//! full buffer drops the oldest batches and counts them.

use argus_tests::{Agent, Server, enc, eventually, free_port, now_ms, peak_rss_kib, python_with};
use serde_json::{Value, json};

/// Window statistics of one expression over the last `secs` seconds (tz UTC, 1 s step).
fn stats(server: &Server, q: &str, secs: i64) -> Value {
    server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-{secs}s&step=1s&format=stats.json&tz=UTC",
        enc(q)
    ))
}

/// The `total` of the only line, if the expression has data.
fn total(server: &Server, q: &str, secs: i64) -> Option<f64> {
    stats(server, q, secs)["stats"][0]["total"].as_f64()
}

#[test]
fn statsd_client_through_the_agent() {
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(
        &server.grpc,
        &["--step", "1s", "--no-host-metrics", "--tag", "nf.app=e2e"],
    );
    let python = python_with(&["statsd==4.0.1"]);
    let (host, port) = agent.statsd.rsplit_once(':').expect("host:port");
    let script = format!(
        r#"
import socket, statsd
c = statsd.StatsClient("{host}", {port}, prefix="e2e")
for _ in range(50):
    c.incr("hits")
c.gauge("temp", 21.5)
c.gauge("temp", 2, delta=True)
c.timing("lat", 100)
c.timing("lat", 300)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
    s.sendto(b"e2e.sampled:1|c|@0.5", ("{host}", {port}))
s.sendto(b"e2e.broken:oops|c", ("{host}", {port}))
"#
    );
    let status = std::process::Command::new(&python)
        .args(["-c", &script])
        .status()
        .expect("running python");
    assert!(status.success());

    // Counters arrive as per-second rates; over the window, rate x step adds up to the count.
    let hits = eventually(30, "50 hits", || {
        total(&server, "name,e2e.hits,:eq,:sum,:per-step", 60).filter(|t| *t >= 50.0)
    });
    assert_eq!(hits, 50.0);
    let sampled = eventually(10, "sampled counter", || {
        total(&server, "name,e2e.sampled,:eq,:sum,:per-step", 60).filter(|t| *t >= 20.0)
    });
    assert_eq!(sampled, 20.0, "each line at @0.5 counts for 2");
    let temp = stats(
        &server,
        "name,e2e.temp,:eq,statistic,gauge,:eq,:and,:max",
        60,
    );
    assert_eq!(temp["stats"][0]["last"], 23.5);
    assert_eq!(temp["metrics"][0]["statistic"], "gauge");
    let count = total(
        &server,
        "name,e2e.lat,:eq,statistic,count,:eq,:and,:sum,:per-step",
        60,
    );
    assert_eq!(count, Some(2.0));
    let time = total(
        &server,
        "name,e2e.lat,:eq,statistic,totalTime,:eq,:and,:sum,:per-step",
        60,
    )
    .expect("totalTime");
    assert!((time - 0.4).abs() < 1e-9, "{time}");
    let max = stats(&server, "name,e2e.lat,:eq,statistic,max,:eq,:and,:max", 60);
    assert_eq!(max["stats"][0]["max"], 0.3);
    // every series carries the agent's tags
    let apps = server.get_json(&format!(
        "/api/v1/tags/nf.app?q={}",
        enc("name,e2e.hits,:eq")
    ));
    assert_eq!(apps, json!(["e2e"]));
    let health = agent.health();
    assert_eq!(
        health["statsd.packets"], 65,
        "one packet per client call, ten raw, one broken"
    );
    assert_eq!(health["dropped.id=input.reason=invalid"], 1);
}

/// Publishes `n` datapoints of `e2e.<name>` (dstype sum, value 1) at one-second steps from
/// `t0` through the agent's intake.
fn publish_through(agent: &Agent, name: &str, t0: i64, from: i64, to: i64) {
    let metrics: Vec<Value> = (from..to)
        .map(|i| json!({"timestamp": t0 + i * 1000, "value": 1.0}))
        .collect();
    let payload = json!({
        "tags": {"name": format!("e2e.{name}"), "atlas.dstype": "sum"},
        "metrics": metrics
    });
    let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
}

/// The values of the only line of `q` over the minute before now.
fn values(server: &Server, q: &str) -> Vec<f64> {
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-2m&step=1s&format=json",
        enc(q)
    ));
    v["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r[0].as_f64().unwrap_or(f64::NAN))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn server_restart_loses_nothing_the_agent_buffered() {
    let (http, grpc) = (free_port(), free_port());
    let http_addr = format!("127.0.0.1:{http}");
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let server = Server::start_on(&http_addr, &grpc_addr, &["--step", "1s"]);
    let agent = Agent::start(
        &format!("http://{grpc_addr}"),
        &["--step", "1s", "--no-host-metrics"],
    );
    let t0 = (now_ms() / 1000) * 1000 - 60_000;
    publish_through(&agent, "restart", t0, 0, 10);
    eventually(20, "the first ten datapoints", || {
        let v = values(&server, "name,e2e.restart,:eq,:sum");
        (v.iter().filter(|x| **x == 1.0).count() == 10).then_some(())
    });

    // kill -9; the agent keeps what arrives meanwhile
    let dir = server.kill();
    publish_through(&agent, "restart", t0, 10, 30);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let server = Server::start_in(dir, &http_addr, &grpc_addr, &["--step", "1s"]);
    let got = eventually(30, "the buffered datapoints after the restart", || {
        let v = values(&server, "name,e2e.restart,:eq,:sum");
        let ones = v.iter().filter(|x| **x == 1.0).count();
        (ones >= 30).then_some(v)
    });
    // Exactly once: thirty steps of 1, none doubled: the first ten come back from the
    // killed server's write-ahead log, the rest from the agent's buffer.
    assert_eq!(got.iter().filter(|x| **x == 1.0).count(), 30, "{got:?}");
    assert!(got.iter().all(|x| x.is_nan() || *x == 1.0), "{got:?}");
    let health = agent.health();
    assert!(health["reconnects"].as_u64().unwrap_or(0) >= 1, "{health}");
    assert_eq!(health["dropped.id=samples.reason=buffer_full"], 0);
}

#[test]
fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let grpc = free_port();
    let agent = Agent::start(
        &format!("http://127.0.0.1:{grpc}"),
        &[
            "--step",
            "1s",
            "--no-host-metrics",
            "--buffer-bytes",
            "8192",
        ],
    );
    // No server yet: 100 batches of 10 datapoints cannot all fit in 8 KiB.
    let t0 = (now_ms() / 1000) * 1000 - 110_000;
    for batch in 0..100 {
        let metrics: Vec<Value> = (0..10)
            .map(|i| json!({"timestamp": t0 + batch * 1000, "value": f64::from(i as u8)}))
            .collect();
        let payload = json!({
            "tags": {"name": "e2e.buffer", "atlas.dstype": "gauge"},
            "metrics": metrics
        });
        let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    let health = agent.health();
    let dropped = health["dropped.id=samples.reason=buffer_full"]
        .as_u64()
        .unwrap_or(0);
    assert!(dropped >= 500, "dropped {dropped}: {health}");
    assert!(health["buffer.bytes"].as_u64().unwrap_or(u64::MAX) <= 8192);

    let server = Server::start_on(
        "127.0.0.1:0",
        &format!("127.0.0.1:{grpc}"),
        &["--step", "1s"],
    );
    // The agent sends its buffer oldest first, so once the newest batch (the last second)
    // is stored, every batch it kept has been delivered. Start and values come from one
    // response, so a step boundary between two requests cannot shift the timestamps.
    let present: Vec<i64> = eventually(30, "the newest batch", || {
        let graph = server.get_json(&format!(
            "/api/v1/graph?q={}&s=e-3m&step=1s&format=json",
            enc("name,e2e.buffer,:eq,:max")
        ));
        let start = graph["start"].as_i64()?;
        let present: Vec<i64> = graph["values"]
            .as_array()?
            .iter()
            .enumerate()
            .filter(|(_, row)| row[0].as_f64().is_some_and(|x| !x.is_nan()))
            .map(|(i, _)| start + i as i64 * 1000)
            .collect();
        present.contains(&(t0 + 99_000)).then_some(present)
    });
    assert!(!present.contains(&t0), "oldest dropped: {present:?}");
    // Every batch is either delivered or counted as dropped (the agent's own per-step
    // batches, dropped too while the server was away, only add to the count).
    let dropped_now = agent.health()["dropped.id=samples.reason=buffer_full"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        present.len() < 100 && present.len() as u64 + dropped_now / 10 >= 100,
        "kept {} batches, dropped {dropped_now} samples",
        present.len()
    );
    // The agent reports its drops as a series too.
    eventually(20, "the agent's drop counter", || {
        total(
            &server,
            "name,argus.agent.dropped,:eq,reason,buffer_full,:eq,:and,id,samples,:eq,:and,:sum,:per-step",
            120,
        )
        .filter(|t| *t > 0.0)
    });
}

/// 200,000 distinct StatsD names in a step, against a server that takes messages of at most
/// 600 kB: the agent learns the limit and cuts its batches under it, keeps 100,000 series a
/// step and counts the rest, stays within its memory limit, and its other metrics keep
/// arriving. It used to build one batch over the server's limit and resend it forever.
#[test]
fn a_flood_of_statsd_names_is_cut_to_the_servers_limit_and_counted() {
    const LIMIT: u64 = 600_000;
    const MEMORY_LIMIT: u64 = 160 << 20;
    let server = Server::start(&[
        "--ephemeral",
        "--step",
        "2s",
        "--grpc-max-message-bytes",
        &LIMIT.to_string(),
    ]);
    let agent = Agent::start(
        &server.grpc,
        &[
            "--step",
            "2s",
            "--no-host-metrics",
            "--memory-limit",
            &MEMORY_LIMIT.to_string(),
        ],
    );
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sent = 0u64;
    let mut send = |lines: &[String]| {
        socket
            .send_to(lines.join("\n").as_bytes(), &agent.statsd)
            .unwrap();
        sent += 1;
        // Keep ahead of the agent by at most a thousand packets, as a fleet of services
        // would over a minute: the kernel's buffer is not what is tested here.
        if sent.is_multiple_of(200) {
            eventually(30, "the agent reading its StatsD packets", || {
                let read = agent.health()["statsd.packets"].as_u64().unwrap_or(0);
                (read + 1_000 >= sent).then_some(())
            });
        }
    };
    let flood_started = std::time::Instant::now();
    // Three rounds of the 200,000 names, the canary among them.
    for round in 0..3 {
        for chunk in (0..200_000).collect::<Vec<u32>>().chunks(40) {
            let lines: Vec<String> = chunk
                .iter()
                .map(|i| format!("flood.name.{i:06}:1|c"))
                .collect();
            send(&lines);
            if chunk[0] % 4_000 == 0 {
                send(&["canary:1|c".to_string()]);
            }
        }
        eprintln!(
            "flood round {round} sent after {:?}",
            flood_started.elapsed()
        );
    }
    // The canary arrived, every one, beside the flood.
    let canary = eventually(60, "the canary beside the flood", || {
        total(&server, "name,canary,:eq,:sum,:per-step", 120).filter(|t| *t >= 150.0)
    });
    let flood_series = eventually(60, "the flood's series at the server", || {
        let v = server.get_json(&format!(
            "/api/v1/graph?q={}&s=e-2m&step=2s&format=stats.json&tz=UTC",
            enc("name,flood\\.name\\.,:re,:count")
        ));
        v["stats"][0]["max"].as_f64().filter(|n| *n >= 90_000.0)
    });
    let health = agent.health();
    let get = |k: &str| {
        health[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {health}"))
    };
    let per_step = get("dropped.id=samples.reason=series_per_step");
    let too_large = get("dropped.id=samples.reason=too_large");
    let biggest = get("batch.bytes.max");
    let reconnects = get("reconnects");
    let peak = peak_rss_kib(agent.pid()) * 1024;
    eprintln!(
        "flood: {flood_series} series a step at the server, {per_step} updates dropped for \
         the per-step cap, {too_large} samples too large, largest batch {biggest} B (limit \
         {LIMIT}), {reconnects} reconnects, canary {canary}, agent peak RSS {} MiB (limit {} \
         MiB)",
        peak >> 20,
        MEMORY_LIMIT >> 20
    );
    assert!(per_step > 0, "the per-step cap dropped nothing");
    assert_eq!(too_large, 0, "a batch was over the server's limit");
    assert!(biggest > 0 && biggest <= LIMIT, "largest batch {biggest} B");
    assert_eq!(reconnects, 0, "the connection broke under the flood");
    assert!(flood_series <= 100_000.0, "{flood_series}");
    assert_eq!(canary, 150.0);
    assert!(peak <= MEMORY_LIMIT, "agent peak RSS {peak} B");
}

/// StatsD packets sent faster than the agent reads them: the kernel drops some, and the
/// agent counts every one it dropped (it used to lose them without trace), so what was sent
/// is exactly what the agent read plus what the kernel dropped.
#[test]
fn statsd_packets_the_kernel_drops_are_counted() {
    let server = Server::start(&["--ephemeral", "--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    // 64 KB packets, as many lines each as fit, and then a burst of small ones.
    let mut big = String::new();
    while big.len() < 65_000 {
        big.push_str("big.packet:1|c\n");
    }
    let mut sent = 0u64;
    for _ in 0..1_000 {
        socket.send_to(big.as_bytes(), &agent.statsd).unwrap();
        sent += 1;
    }
    for _ in 0..50_000 {
        socket.send_to(b"small.packet:1|c", &agent.statsd).unwrap();
        sent += 1;
    }
    let (read, dropped) = eventually(30, "every packet read or counted as dropped", || {
        let h = agent.health();
        let read = h["statsd.packets"].as_u64().unwrap_or(0);
        let dropped = h["dropped.id=statsd_packets.reason=receive_buffer_full"]
            .as_u64()
            .unwrap_or(0);
        (read + dropped == sent).then_some((read, dropped))
    });
    eprintln!("{sent} packets sent: {read} read, {dropped} dropped by the kernel and counted");
    // The drops reach the server too, as the agent's own series.
    eventually(30, "the drop count at the server", || {
        let t = total(
            &server,
            "name,argus.agent.dropped,:eq,reason,receive_buffer_full,:eq,:and,:sum,:per-step",
            60,
        )
        .unwrap_or(0.0);
        (t == dropped as f64).then_some(())
    });
}

/// The agent's intake refuses what the server would, with the server's reasons: it used to
/// answer 200 and let the server drop the data out of the service's sight.
#[test]
fn the_intake_refuses_what_the_server_would() {
    let server = Server::start(&["--ephemeral"]);
    let agent = Agent::start(&server.grpc, &["--no-host-metrics"]);
    let now = now_ms();
    let payload = json!({
        "tags": {"name": "intake.checked"},
        "metrics": [
            {"tags": {"k": "v"}, "timestamp": now, "value": 1.0},
            {"tags": {"kind": "ok"}, "timestamp": now, "value": 2.0},
        ]
    });
    let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
    assert_eq!(status, 202, "{body}");
    assert!(
        body.contains("key length 1 out of range [2, 60]: key 'k'"),
        "{body}"
    );

    let mut big = b"{\"blob\":\"".to_vec();
    big.resize(10_000_000, b'x');
    big.extend_from_slice(b"\"}\n{\"small\":1}\n");
    let (status, body) = agent.post("/v1/events/requests", &big);
    assert_eq!(status, 202, "{body}");
    assert!(
        body.contains("line 1: event of 10000002 bytes is over the 262144-byte limit"),
        "{body}"
    );
    let health = agent.health();
    assert_eq!(
        health["dropped.id=input.reason=invalid"].as_u64(),
        Some(2),
        "{health}"
    );
}

/// An agent started with another step takes the server's when it connects (it used to only
/// warn): its meters land on the server's steps, and data arrives a step after it is sent.
#[test]
fn the_agent_takes_the_servers_step() {
    let server = Server::start(&["--ephemeral", "--step", "2s"]);
    // The agent's own step would be a minute.
    let agent = Agent::start(&server.grpc, &["--step", "60s", "--no-host-metrics"]);
    eventually(10, "the agent on the server's step", || {
        (agent.health()["step.ms"].as_u64() == Some(2_000)).then_some(())
    });
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(b"stepped.hits:10|c", &agent.statsd).unwrap();
    // Ten hits over a 2 s step: a rate of 5 per second, well before a minute passes.
    let rate = eventually(20, "the counter at the server's step", || {
        let v = stats(&server, "name,stepped.hits,:eq,:sum", 60);
        v["stats"][0]["max"].as_f64().filter(|m| !m.is_nan())
    });
    assert_eq!(rate, 5.0);
}
