//! Connections that are opened and never used: 5,000 of them do not slow health checks or
//! publishes, and are closed at the header timeout (they used to stay open forever, and
//! 1,100 of them under a 1,024-descriptor limit stopped the server answering). Past
//! `--max-connections` new connections are refused at once and counted, on both listeners.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use argus_tests::{Server, closed_within, now_ms, raise_fd_limit, still_open};
use serde_json::json;

const HEADER_TIMEOUT_S: u64 = 3;

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

fn metric(server: &Server, line_prefix: &str) -> f64 {
    let (_, text) = server.get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_prefix} missing from /metrics"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn five_thousand_idle_connections_are_closed_at_the_header_timeout_and_slow_no_one() {
    let fds = raise_fd_limit();
    assert!(
        fds > 6_000,
        "the test needs 6,000 descriptors; the hard limit is {fds}"
    );
    let timeout = format!("{HEADER_TIMEOUT_S}s");
    let server = Server::start(&["--ephemeral", "--http-header-timeout", &timeout]);
    let (http, grpc) = (host_port(&server.base), host_port(&server.grpc));
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..5_000)
        .map(|i| {
            // Four in five on the HTTP port, the rest on gRPC's.
            let target = if i % 5 == 4 { &grpc } else { &http };
            TcpStream::connect(target).unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let opened_in = opened.elapsed();
    eprintln!("5,000 idle connections opened in {opened_in:?}");

    // Until they are closed, health checks and publishes beside them stay fast. Each round
    // trip opens a new connection, as a careless client would.
    let client = || -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into()
    };
    let mut latencies = Vec::new();
    let mut open_at_half = None;
    while opened.elapsed() < Duration::from_secs(HEADER_TIMEOUT_S + 2) {
        let t = Instant::now();
        let status = client()
            .get(&format!("{}/healthz", server.base))
            .call()
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200));
        latencies.push(t.elapsed());
        let t = Instant::now();
        let payload = json!({"tags": {"name": "idle.ok", "atlas.dstype": "gauge"},
            "metrics": [{"timestamp": now_ms() - 1000, "value": latencies.len() as f64}]});
        let status = client()
            .post(&format!("{}/api/v1/publish", server.base))
            .header("Content-Type", "application/json")
            .send(payload.to_string().as_bytes())
            .map(|r| r.status().as_u16());
        assert_eq!(status.ok(), Some(200));
        latencies.push(t.elapsed());
        if open_at_half.is_none() && opened.elapsed() > Duration::from_secs(HEADER_TIMEOUT_S) / 2 {
            open_at_half = Some(metric(&server, "argus_connections_open{listener=\"http\"}"));
        }
    }
    latencies.sort();
    let (p50, p99, worst) = (
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        *latencies.last().unwrap(),
    );
    eprintln!(
        "5,000 idle connections opened in {opened_in:?}; {} round trips beside them: p50 \
         {p50:?}, p99 {p99:?}, worst {worst:?}; {open_at_half:?} open on HTTP half way",
        latencies.len()
    );
    assert!(
        p99 < Duration::from_millis(50),
        "health checks and publishes took {p99:?} at p99"
    );
    // Half way through the timeout the idle connections were still there (held, not yet
    // timed out): 4,000 on HTTP.
    assert!(
        open_at_half.is_some_and(|n| n >= 4_000.0),
        "{open_at_half:?}"
    );

    // By the header timeout (and a little), the server has closed every one.
    let deadline = opened + Duration::from_secs(HEADER_TIMEOUT_S + 3);
    assert_eq!(
        still_open(&mut idle, deadline),
        0,
        "idle connections left open past the header timeout"
    );
    assert_eq!(
        metric(&server, "argus_connections_open{listener=\"grpc\"}"),
        0.0
    );
}

#[test]
fn past_the_cap_new_connections_are_refused_and_counted_on_both_listeners() {
    raise_fd_limit();
    // The header timeout is longer than the test: with 2 s, a loaded machine that took
    // longer than that to count the connections over the cap saw the server time out the
    // held ones, take the next connection under the cap and hold it (a CI failure).
    let server = Server::start(&[
        "--ephemeral",
        "--http-header-timeout",
        "60s",
        "--max-connections",
        "100",
    ]);
    let (http, grpc) = (host_port(&server.base), host_port(&server.grpc));
    let held: Vec<TcpStream> = (0..100)
        .flat_map(|_| [TcpStream::connect(&http), TcpStream::connect(&grpc)])
        .map(|s| s.expect("a connection under the cap"))
        .collect();
    // The server takes connections in its own time (the kernel queued them): the first
    // connection over the cap on each listener is closed once the server has taken the
    // 100 before it, which a loaded machine may take a while to do; every later one at once.
    let counted = Instant::now();
    let mut extra = Vec::new();
    for (target, listener) in [(&http, "http"), (&grpc, "grpc")] {
        for i in 0..25 {
            let mut s = TcpStream::connect(target).expect("the kernel accepts the connection");
            let wait = Duration::from_secs(if i == 0 { 30 } else { 2 });
            assert!(
                closed_within(&mut s, wait),
                "a {listener} connection over the cap was not closed within {wait:?}"
            );
            extra.push(s);
        }
    }
    eprintln!(
        "50 connections over the cap refused in {:?}",
        counted.elapsed()
    );
    // An HTTP client over the cap is told why before the close.
    let mut s = TcpStream::connect(&http).unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut refusal = String::new();
    let _ = s.read_to_string(&mut refusal);
    assert!(refusal.starts_with("HTTP/1.1 503"), "{refusal}");
    assert!(refusal.contains("--max-connections"), "{refusal}");

    // Once the held connections are closed, the server answers again and shows the count.
    drop(held);
    let started = Instant::now();
    // Until the server has seen the held connections close, a request of ours is itself over
    // the cap: refused and counted. Count those too.
    let mut refused_while_waiting = 0.0;
    let metrics = loop {
        let (status, text) = server.get("/metrics");
        if status == 200 {
            break text;
        }
        refused_while_waiting += 1.0;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never answered again"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let refused = |listener: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "argus_connections_refused_total{{listener=\"{listener}\"}}"
                ))?
                .trim()
                .parse()
                .ok()
            })
            .unwrap_or(-1.0)
    };
    assert_eq!(refused("http"), 26.0 + refused_while_waiting, "{metrics}");
    assert_eq!(refused("grpc"), 25.0, "{metrics}");
}
