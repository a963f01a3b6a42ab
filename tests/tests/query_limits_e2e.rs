//! Every query word and parameter whose value sizes work or memory, given an absurd value
//! by an unauthenticated GET: a 400 that names the limit, fast, and the server's memory
//! flat. `name,xx,:eq,:sum,100000000000d,:trend` used to abort the process allocating
//! 1.15e15 bytes. And a query over its memory budget (`--query-max-memory`) is refused
//! cleanly and counted.

use std::time::{Duration, Instant};

use argus_tests::{Server, enc, now_ms, rss_kib};
use serde_json::{Value, json};

/// Publishes `n` gauge series of metric `name` (tag `node`), one value each now.
fn publish(server: &Server, name: &str, n: usize) {
    let ts = now_ms() / 60_000 * 60_000;
    let metrics: Vec<Value> = (0..n)
        .map(|i| json!({"tags": {"node": format!("i-{i}")}, "timestamp": ts, "value": i as f64}))
        .collect();
    let payload = json!({"tags": {"name": name, "atlas.dstype": "gauge"}, "metrics": metrics});
    let (status, body) = server.post("/api/v1/publish", payload.to_string().as_bytes(), None);
    assert_eq!(status, 200, "{}", clip(&body));
}

/// The start of a response, for messages.
fn clip(body: &str) -> &str {
    &body[..body.floor_char_boundary(300)]
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("(,{},)", items.collect::<Vec<_>>().join(","))
}

/// GET `path`; returns (status, body, time taken).
fn timed_get(server: &Server, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = server.get(path);
    (status, body, started.elapsed())
}

#[test]
fn absurd_values_of_every_sized_word_and_parameter_get_a_400_naming_the_limit() {
    let server = Server::start(&["--ephemeral"]);
    publish(&server, "xx", 20);
    // Warm up (first request, first query) so that the timings below are the refusals'.
    assert_eq!(
        server.get("/api/v1/graph?q=name,xx,:eq,:sum&format=json").0,
        200
    );
    let rss_before = rss_kib(server.pid());

    let graph = |q: &str| format!("/api/v1/graph?q={}&format=json", enc(q));
    let percentiles = list((0..5_000).map(|i| format!("{}", i as f64 / 50.0)));
    let offsets = list((1..=1_000).map(|i| format!("{i}m")));
    // (what, path, text the refusal must contain: the limit it hit)
    let cases: Vec<(&str, String, &str)> = vec![
        (
            ":trend of 100,000,000,000 days",
            graph("name,xx,:eq,:sum,100000000000d,:trend"),
            "limit of 86400 steps",
        ),
        (
            ":trend of 1,000,000 days",
            graph("name,xx,:eq,:sum,1000000d,:trend"),
            "limit of 86400 steps",
        ),
        (
            ":trend per node",
            graph("name,xx,:eq,:max,(,node,),:by,99999999d,:trend"),
            "limit of 86400 steps",
        ),
        (
            ":rolling-max",
            graph("name,xx,:eq,:sum,1000000000000,:rolling-max"),
            "86400",
        ),
        (
            ":rolling-min",
            graph("name,xx,:eq,:sum,1000000000000,:rolling-min"),
            "86400",
        ),
        (
            ":rolling-sum",
            graph("name,xx,:eq,:sum,1000000000000,:rolling-sum"),
            "86400",
        ),
        (
            ":rolling-count",
            graph("name,xx,:eq,:sum,1000000000000,:rolling-count"),
            "86400",
        ),
        (
            ":rolling-mean",
            graph("name,xx,:eq,:sum,1000000000000,1,:rolling-mean"),
            "86400",
        ),
        (
            ":delay",
            graph("name,xx,:eq,:sum,1000000000000,:delay"),
            "86400",
        ),
        (
            ":des training",
            graph("name,xx,:eq,:sum,1000000000000,0.1,0.02,:des"),
            "86400",
        ),
        (
            ":sdes training",
            graph("name,xx,:eq,:sum,1000000000000,0.1,0.02,:sdes"),
            "86400",
        ),
        (
            ":percentiles list",
            graph(&format!("name,xx,:eq,{percentiles},:percentiles")),
            "limit of 100",
        ),
        (
            "legacy :offset list",
            graph(&format!("name,xx,:eq,:sum,{offsets},:offset")),
            "limit of 32",
        ),
        (
            "a window of a million years at one step per minute",
            "/api/v1/graph?q=name,xx,:eq,:sum&s=e-1000000y&step=1m&format=json".into(),
            "limit",
        ),
        (
            "more lines than --graph-max-lines",
            graph(
                "name,xx,:eq,:max,(,node,),:by,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup,:dup",
            ),
            "--graph-max-lines",
        ),
        (
            "a stream lag of a trillion milliseconds",
            "/api/v1/stream?q=name,xx,:eq,:sum&lag=1000000000000".into(),
            "at most 3600000",
        ),
        (
            "a live query window of a billion seconds",
            format!(
                "/api/v1/live?q={}",
                enc("select count(*) from requests window 1000000000 seconds")
            ),
            "week",
        ),
    ];
    let mut slowest = Duration::ZERO;
    for (what, path, limit) in &cases {
        let (status, body, took) = timed_get(&server, path);
        assert_eq!(status, 400, "{what}: {}", clip(&body));
        assert!(
            body.contains(limit),
            "{what}: the refusal does not name the limit ({limit:?}): {}",
            clip(&body)
        );
        assert!(
            took < Duration::from_millis(100),
            "{what}: refused after {took:?}"
        );
        slowest = slowest.max(took);
        eprintln!("{what}: 400 in {took:?}: {}", clip(&body));
    }
    // Sizes that are clamped rather than refused, as Atlas does: answered, quickly.
    for path in [
        "/api/v1/graph?q=name,xx,:eq,:sum&w=1000000000&h=1000000000&format=png",
        // A step finer than the data grows to the stored step and to fit the width.
        "/api/v1/graph?q=name,xx,:eq,:sum&s=e-1d&step=1ms&format=json",
        "/api/v1/graph?q=name,xx,:eq,:sum,1000000000000,:limit&format=json",
        "/api/v1/graph?q=name,xx,:eq,(,node,),:by,1000000000000,:max,:topk&format=json",
        "/api/v1/tags/node?limit=1000000000000",
        "/api/v1/cardinality?top=1000000000000",
    ] {
        let (status, body, took) = timed_get(&server, path);
        assert!(
            status == 200 || status == 400,
            "{path}: {status} {}",
            clip(&body)
        );
        assert!(took < Duration::from_millis(500), "{path}: {took:?}");
    }
    let rss_after = rss_kib(server.pid());
    eprintln!(
        "{} refusals, the slowest in {slowest:?}; RSS {rss_before} KiB before, {rss_after} KiB after",
        cases.len()
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn a_query_over_its_memory_budget_is_refused_and_counted() {
    // 300 lines of a day (481 points of 3 minutes at the default width) need about 1.2 MB;
    // the budget is 500 kB.
    let server = Server::start(&["--ephemeral", "--query-max-memory", "500000"]);
    publish(&server, "wide", 300);
    let q = enc("name,wide,:eq,:max,(,node,),:by");
    let (status, body) = server.get(&format!("/api/v1/graph?q={q}&s=e-1d&step=1m&format=json"));
    assert_eq!(status, 400, "{}", clip(&body));
    assert!(body.contains("--query-max-memory"), "{}", clip(&body));
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("argus_queries_stopped_total{reason=\"max_memory\"} 1"),
        "{}",
        clip(&metrics)
    );
    // Within the budget, the same data answers.
    let (status, body) = server.get(&format!("/api/v1/graph?q={q}&s=e-1h&step=1m&format=json"));
    assert_eq!(status, 200, "{}", clip(&body));
}
