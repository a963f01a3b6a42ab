//! End-to-end protection against a cardinality explosion: a client creating a million
//! distinct series is capped, the server's memory stays bounded, other metrics keep
//! ingesting, and `/api/v1/cardinality` names the culprit.

use argus_tests::{Server, now_ms, peak_rss_kib, reset_peak_rss, rss_kib};
use serde_json::{Value, json};

/// Publishes one datapoint for each of `users` (a `user_id` series each) of metric `name`.
fn publish_users(server: &Server, name: &str, users: std::ops::Range<u64>) -> (u16, String) {
    let ts = now_ms() - 1_000;
    let metrics: Vec<Value> = users
        .map(|u| json!({"tags": {"user_id": u.to_string()}, "timestamp": ts, "value": 1.0}))
        .collect();
    let payload = json!({"tags": {"name": name, "atlas.dstype": "gauge"}, "metrics": metrics});
    server.post("/api/v1/publish", payload.to_string().as_bytes(), None)
}

fn steady_ok(server: &Server) {
    let (status, body) = publish_users(server, "steady", 0..10);
    assert_eq!(status, 200, "the steady metric must keep ingesting: {body}");
}

#[test]
fn a_million_new_series_are_capped_and_the_culprit_named() {
    let per_metric = 50_000u64;
    let total = 80_000u64;
    let server = Server::start(&[
        "--ephemeral",
        "--max-series-per-metric",
        &per_metric.to_string(),
        "--max-series",
        &total.to_string(),
    ]);
    steady_ok(&server);
    let batch = 25_000u64;
    let mut rss_at_cap = 0;
    let mut refused = String::new();
    for start in (0..1_000_000u64).step_by(batch as usize) {
        let (status, body) = publish_users(&server, "explode", start..start + batch);
        if start < per_metric {
            assert_eq!(status, 200, "under the cap: {body}");
        } else {
            assert_eq!(
                status, 400,
                "every new series over the cap is refused: {body}"
            );
            refused = body;
        }
        if start + batch == per_metric * 2 {
            rss_at_cap = rss_kib(server.pid());
        }
        if start % 200_000 == 0 {
            steady_ok(&server);
        }
    }
    assert!(
        refused.contains("series limit reached") && refused.contains("--max-series-per-metric"),
        "{refused}"
    );
    // Memory stays bounded: 900,000 refused series cost (next to) nothing.
    let rss_end = rss_kib(server.pid());
    assert!(
        rss_end < rss_at_cap + 32 * 1024,
        "RSS grew from {rss_at_cap} KiB at the cap to {rss_end} KiB"
    );
    eprintln!(
        "cardinality: 1,000,000 new series offered, RSS {rss_at_cap} KiB at the cap, \
         {rss_end} KiB after the rest were refused"
    );
    // The total cap, for a second exploding metric.
    let (status, body) = publish_users(&server, "explode.other", 0..40_000);
    assert_eq!(status, 202, "part over the total cap: {body}");
    assert!(body.contains("--max-series)"), "{body}");
    steady_ok(&server);

    let c = server.get_json("/api/v1/cardinality?top=3");
    assert_eq!(c["series"], total, "{c}");
    assert_eq!(
        c["names"][0],
        json!({"name": "explode", "series": per_metric}),
        "{c}"
    );
    let user_id = c["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["key"] == "user_id")
        .cloned()
        .unwrap_or_default();
    assert_eq!(user_id["values"], per_metric, "{c}");
    let refused = c["refusedNewSeries"].as_u64().unwrap();
    assert_eq!(
        refused,
        1_000_000 - per_metric + 40_000 - (total - per_metric - 10),
        "{c}"
    );
    let metrics = server.get("/metrics").1;
    assert!(
        metrics.contains(&format!(
            "argus_samples_rejected_total{{reason=\"series_limit\"}} {refused}"
        )),
        "{metrics}"
    );
    let (status, body) = server.get("/api/v1/cardinality?top=0");
    assert_eq!(status, 400, "{body}");
}

fn graph_status(server: &Server, q: &str) -> (u16, String) {
    server.get(&format!(
        "/api/v1/graph?q={}&s=e-10m&format=json",
        argus_tests::enc(q)
    ))
}

#[test]
fn a_query_over_its_series_or_time_limit_is_stopped_with_the_limit_named() {
    let server = Server::start(&["--ephemeral", "--query-max-series", "1000"]);
    publish_users(&server, "wide", 0..5_000);
    let (status, body) = graph_status(&server, "name,wide,:eq,:sum");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("--query-max-series"), "{body}");
    let (status, body) = graph_status(&server, "name,wide,:eq,user_id,12,:re,:and,:sum");
    assert_eq!(status, 200, "a narrower query runs: {body}");

    let server = Server::start(&["--ephemeral", "--query-timeout", "1ms"]);
    publish_users(&server, "wide", 0..5_000);
    let (status, body) = graph_status(&server, "name,wide,:eq,:sum");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("--query-timeout"), "{body}");
}

#[test]
fn live_queries_per_client_are_capped() {
    use std::io::{Read, Write};
    let server = Server::start(&["--ephemeral", "--live-max-per-client", "2"]);
    let target = server.base.trim_start_matches("http://").to_string();
    let open = || {
        let mut s = std::net::TcpStream::connect(&target).unwrap();
        s.write_all(
            b"GET /api/v1/live?q=select%20*%20from%20requests HTTP/1.1\r\nHost: argus\r\n\r\n",
        )
        .unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut head = vec![0u8; 512];
        let n = s.read(&mut head).unwrap();
        (s, String::from_utf8_lossy(&head[..n]).to_string())
    };
    let (_a, first) = open();
    let (_b, second) = open();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    let (_c, third) = open();
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    assert!(third.contains("--live-max-per-client"), "{third}");
    // Closing one frees its place.
    drop(_a);
    argus_tests::eventually(10, "a freed place", || {
        let (s, resp) = open();
        resp.starts_with("HTTP/1.1 200").then_some(s)
    });
}

/// A query's value in `argus_queries_stopped_total{reason}`.
fn stopped(server: &Server, reason: &str) -> u64 {
    let metrics = server.get("/metrics").1;
    let prefix = format!("argus_queries_stopped_total{{reason=\"{reason}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn a_query_stops_when_its_client_goes_away() {
    use std::io::Write;
    let server = Server::start(&["--ephemeral"]);
    for start in (0..100_000u64).step_by(25_000) {
        publish_users(&server, "heavy", start..start + 25_000);
    }
    assert_eq!(stopped(&server, "client_gone"), 0);
    // The whole query (eight passes over 100,000 series) takes far longer than the client
    // waits.
    let q = argus_tests::enc(&["name,heavy,:eq,:sum"; 8].join(","));
    let target = server.base.trim_start_matches("http://").to_string();
    let mut s = std::net::TcpStream::connect(&target).unwrap();
    write!(
        s,
        "GET /api/v1/graph?q={q}&s=e-6h&format=json HTTP/1.1\r\nHost: argus\r\n\r\n"
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    drop(s);
    argus_tests::eventually(30, "the query stopped for its vanished client", || {
        (stopped(&server, "client_gone") == 1).then_some(())
    });
}

#[test]
fn queries_beyond_the_concurrency_limit_wait_then_are_refused() {
    let server = Server::start(&[
        "--ephemeral",
        "--max-concurrent-queries",
        "1",
        "--query-timeout",
        "300ms",
    ]);
    for start in (0..100_000u64).step_by(25_000) {
        publish_users(&server, "busy", start..start + 25_000);
    }
    // Six heavy queries at once: one runs, the others wait for its slot at most 300 ms each,
    // so the later ones cannot get it in time.
    let q = argus_tests::enc(&["name,busy,:eq,:sum"; 8].join(","));
    let base = server.base.clone();
    let answers: Vec<(u16, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let url = format!("{base}/api/v1/graph?q={q}&s=e-6h&format=json");
                scope.spawn(move || {
                    let mut resp = Server::agent().get(&url).call().unwrap();
                    let status = resp.status().as_u16();
                    let retry = resp.headers().contains_key("retry-after");
                    let body = resp.body_mut().read_to_string().unwrap_or_default();
                    (status, format!("{body} retry-after={retry}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let refused: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(_, b)| b.contains("--max-concurrent-queries"))
        .collect();
    assert!(!refused.is_empty(), "{answers:?}");
    for (status, body) in refused {
        assert_eq!(*status, 503, "{body}");
        assert!(body.ends_with("retry-after=true"), "{body}");
    }
}

/// About 60 MB of NDJSON request events, one in a hundred a server error.
fn sixty_mb_of_events() -> (Vec<u8>, usize) {
    let mut body = Vec::with_capacity(61 << 20);
    let mut n = 0;
    while body.len() < 60_000_000 {
        let status = if n % 100 == 0 { 503 } else { 200 };
        body.extend_from_slice(
            format!(
                "{{\"path\":\"/api/items/{n}\",\"status\":{status},\"latency_ms\":{}.5,\"user\":\"u{}\",\"region\":\"us-east-1\",\"tags\":[\"a\",\"b\"]}}\n",
                n % 997,
                n % 10_007
            )
            .as_bytes(),
        );
        n += 1;
    }
    (body, n)
}

#[test]
fn a_60_mb_event_body_costs_at_most_64_mb_with_and_without_a_subscriber() {
    let server = Server::start(&["--ephemeral"]);
    let pid = server.pid();
    let (body, events) = sixty_mb_of_events();
    let post = || {
        let (status, text) = server.post("/api/v1/events/requests", &body, None);
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["accepted"].as_u64(), Some(events as u64));
    };
    // Idle, after one small request has warmed the server up.
    let (status, _) = server.post("/api/v1/events/requests", b"{\"a\":1}\n", None);
    assert_eq!(status, 200);
    let idle = rss_kib(pid);

    reset_peak_rss(pid);
    post();
    let unwanted = peak_rss_kib(pid).saturating_sub(idle);

    let live = argus_tests::LiveClient::start(
        &server,
        &[],
        "select path, status from requests where status >= 500",
    );
    live.wait_subscribed();
    let idle = rss_kib(pid);
    reset_peak_rss(pid);
    post();
    let wanted = peak_rss_kib(pid).saturating_sub(idle);
    let matched = argus_tests::eventually(30, "the matching events as rows", || {
        let rows = live.rows().len();
        (rows >= events / 100 * 9 / 10).then_some(rows)
    });
    eprintln!(
        "{} MB of {events} events: peak RSS +{} MiB with no subscriber, +{} MiB with one \
         ({matched} rows)",
        body.len() / 1_000_000,
        unwanted / 1024,
        wanted / 1024
    );
    assert!(unwanted <= 64 * 1024, "+{unwanted} KiB with no subscriber");
    assert!(wanted <= 64 * 1024, "+{wanted} KiB with a subscriber");
}
