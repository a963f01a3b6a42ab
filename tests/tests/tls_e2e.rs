//! End-to-end TLS: the server's HTTP API and gRPC port over TLS (certificates made with
//! Debian's `openssl`), and mutual TLS between a real agent and the server: an agent with a
//! certificate from the client CA delivers; one without a certificate, or with one from
//! another CA, cannot connect.

use std::path::Path;
use std::process::Command;

use argus_tests::{Agent, Server, enc, eventually, issue_certificate, now_ms, scratch_dir};
use serde_json::{Value, json};

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).to_string_lossy().into_owned()
}

/// curl over TLS trusting `ca`: (HTTP status, body); status 0 when TLS or the connection
/// failed.
fn curl(url: &str, ca: Option<&str>) -> (u16, String) {
    argus_tests::curl(url, ca.map(Path::new), None)
}

fn max_of(base: &str, ca: &str, name: &str) -> Option<f64> {
    let q = enc(&format!("name,{name},:eq,:max"));
    let (status, body) = curl(
        &format!("{base}/api/v1/graph?q={q}&s=e-2m&step=1s&format=stats.json"),
        Some(ca),
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).ok()?["stats"][0]["max"].as_f64()
}

fn publish(agent: &Agent, name: &str) {
    let payload = json!({"tags": {"name": name, "atlas.dstype": "gauge"},
        "metrics": [{"timestamp": now_ms() - 2000, "value": 5.0}]});
    let (status, body) = agent.post("/api/v1/publish", payload.to_string().as_bytes());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tls_and_mutual_tls_between_a_real_agent_and_the_server() {
    let dir = scratch_dir("tls");
    issue_certificate(&dir, "argus", "server");
    issue_certificate(&dir, "agents", "agent");
    issue_certificate(&dir, "rogue", "rogue");
    let server = Server::start(&[
        "--ephemeral",
        "--step",
        "1s",
        "--tls-cert",
        &path(&dir, "server.pem"),
        "--tls-key",
        &path(&dir, "server.key"),
        "--tls-client-ca",
        &path(&dir, "agents-ca.pem"),
    ]);
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let ca = path(&dir, "argus-ca.pem");
    let health = format!("{}/healthz", server.base);
    eventually(10, "health over TLS", || {
        (curl(&health, Some(&ca)).0 == 200).then_some(())
    });
    // An untrusted server certificate, and plain HTTP on the TLS port, both fail.
    assert_eq!(
        curl(&health, None).0,
        0,
        "curl must not trust the private CA"
    );
    let plain = health.replacen("https://", "http://", 1);
    assert_ne!(curl(&plain, None).0, 200, "plain HTTP on the TLS port");

    let grpc = server.grpc.replacen("http://", "https://", 1);
    // An agent trusting the server's CA, with the client certificate `name` if any.
    let agent = |name: Option<&str>| {
        let mut args = vec!["--step", "1s", "--no-host-metrics", "--tls-ca", &ca];
        let files = name.map(|n| {
            (
                path(&dir, &format!("{n}.pem")),
                path(&dir, &format!("{n}.key")),
            )
        });
        if let Some((cert, key)) = &files {
            args.extend(["--tls-cert", cert.as_str(), "--tls-key", key.as_str()]);
        }
        Agent::start(&grpc, &args)
    };
    let with_cert = agent(Some("agent"));
    let without_cert = agent(None);
    let rogue = agent(Some("rogue"));
    publish(&with_cert, "tls.trusted");
    publish(&without_cert, "tls.nocert");
    publish(&rogue, "tls.rogue");
    eventually(
        20,
        "the agent with a client certificate delivered over mutual TLS",
        || (max_of(&server.base, &ca, "tls.trusted") == Some(5.0)).then_some(()),
    );
    for (agent, name) in [(&without_cert, "tls.nocert"), (&rogue, "tls.rogue")] {
        // It tried, and was turned away, with its data still held.
        let h = eventually(20, "the refused agent's attempts", || {
            let h = agent.health();
            (h["reconnects"].as_u64().unwrap_or(0) >= 2).then_some(h)
        });
        assert_eq!(
            max_of(&server.base, &ca, name),
            None,
            "{name} must not get through"
        );
        assert!(
            h["buffer.bytes"].as_u64().unwrap_or(0) > 0,
            "{name} keeps its batch: {h}"
        );
    }
}

/// `argus live` against a TLS server with access control: over https:// with the CA and a
/// read token it runs the query and prints the rows; over plain http:// it fails, saying the
/// server speaks HTTPS. (It spoke plain HTTP only, so a token went in clear.)
#[test]
fn argus_live_over_https_with_a_token() {
    let dir = scratch_dir("tls-live");
    issue_certificate(&dir, "argus", "server");
    const READ: &str = "live-read-token-0123456789";
    const WRITE: &str = "live-write-token-0123456789";
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[token]]\nname = \"terminal\"\nrole = \"read\"\nsecret = \"{READ}\"\n\n\
             [[token]]\nname = \"service\"\nrole = \"write\"\nsecret = \"{WRITE}\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(&[
        "--ephemeral",
        "--tls-cert",
        &path(&dir, "server.pem"),
        "--tls-key",
        &path(&dir, "server.key"),
        "--auth-file",
        tokens.to_str().unwrap(),
    ]);
    let ca = path(&dir, "argus-ca.pem");
    let live = argus_tests::LiveClient::start(
        &server,
        &["--ca", &ca, "--token", READ],
        "select path from requests where status >= 500",
    );
    live.wait_subscribed();
    let post = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert", &ca, "-H"])
        .arg(format!("Authorization: Bearer {WRITE}"))
        .args([
            "--data-binary",
            "{\"path\":\"/a\",\"status\":503}\n{\"path\":\"/b\",\"status\":200}\n",
        ])
        .arg(format!("{}/api/v1/events/requests", server.base))
        .output()
        .expect("running curl");
    assert!(post.status.success(), "{post:?}");
    let rows = eventually(10, "the row over TLS", || {
        let rows = live.rows();
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(rows, [json!({"path": "/a"})]);

    // Plain HTTP to the TLS server: a clear refusal, not a hang or a bare reset.
    let plain = server.base.replacen("https://", "http://", 1);
    let out = Command::new(argus_tests::binary("argus"))
        .args(["live", "--server", &plain, "--token", READ, "--for", "5s"])
        .arg("select * from requests")
        .output()
        .expect("running argus live");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("this port speaks HTTPS"), "{stderr}");
}

/// A cluster whose nodes serve HTTPS: the node a query reaches asks the others over HTTPS,
/// trusting only `--peer-ca`, and the answer is complete (`deny_partial=1` would make a
/// missing partition a 503). A node serving HTTPS in a cluster without `--peer-ca` refuses
/// to start, saying what to give.
#[test]
fn a_cluster_of_nodes_serving_https_fans_queries_out_over_https() {
    let dir = scratch_dir("tls-cluster");
    issue_certificate(&dir, "nodes", "node");
    let (cert, key, ca) = (
        path(&dir, "node.pem"),
        path(&dir, "node.key"),
        path(&dir, "nodes-ca.pem"),
    );
    let nats = argus_tests::Nats::start(1);
    let url = nats.url();

    let refused = Command::new(argus_tests::binary("argus"))
        .args([
            "server",
            "--ephemeral",
            "--cluster",
            &url,
            "--tls-cert",
            &cert,
        ])
        .args([
            "--tls-key",
            &key,
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .output()
        .expect("running argus server");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "started without --peer-ca: {stderr}"
    );
    assert!(stderr.contains("give peer-ca"), "{stderr}");

    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            Server::start_listening(&[
                "--ephemeral",
                "--cluster",
                &url,
                "--node-id",
                id,
                "--partitions",
                "8",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--peer-ca",
                &ca,
            ])
        })
        .collect();
    for node in &nodes {
        assert!(node.base.starts_with("https://"), "{}", node.base);
        eventually(60, "a node serving HTTPS joining", || {
            (curl(&format!("{}/healthz", node.base), Some(&ca)).0 == 200).then_some(())
        });
    }
    // Forty series, spread over the partitions, written through node a.
    let now = now_ms();
    let metrics: Vec<Value> = (0..40)
        .map(|i| {
            json!({"tags": {"name": "tls.cluster", "atlas.dstype": "gauge",
                            "nf.node": format!("i-{i:03}")},
                   "timestamp": now, "value": 1})
        })
        .collect();
    let post = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            &ca,
            "-w",
            "\n%{http_code}",
        ])
        .args(["--data-binary", &json!({"metrics": metrics}).to_string()])
        .arg(format!("{}/api/v1/publish", nodes[0].base))
        .output()
        .expect("running curl");
    let out = String::from_utf8_lossy(&post.stdout);
    assert!(
        out.trim_end().ends_with("200"),
        "publishing through node a: {out}"
    );
    // Node b has some partitions itself and asks a and c, over HTTPS, for the rest.
    let graph = format!(
        "{}/api/v1/graph?q={}&s=e-5m&e=now%2B2m&step=1m&format=json&deny_partial=1",
        nodes[1].base,
        enc("name,tls.cluster,:eq,:count")
    );
    let counted = eventually(30, "all forty series counted through node b", || {
        let (status, body) = curl(&graph, Some(&ca));
        assert!(status == 200 || status == 503, "{status}: {body}");
        let body: Value = serde_json::from_str(&body).ok()?;
        let most = body["values"]
            .as_array()?
            .iter()
            .filter_map(|row| row[0].as_f64())
            .fold(0.0, f64::max);
        (status == 200 && most == 40.0).then_some(most)
    });
    assert_eq!(counted, 40.0);
    // Node b holds 2 replicas' worth of 8 partitions among three nodes: some partitions it
    // does not hold, and only the HTTPS fan-out can have counted their series.
    let view = curl(&format!("{}/api/v1/cluster", nodes[1].base), Some(&ca)).1;
    let view: Value = serde_json::from_str(&view).expect("the cluster view");
    let not_held = view["log"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .filter(|p| {
            !p["owners"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x == "b"))
        })
        .count();
    assert!(not_held > 0, "node b holds every partition: {view}");
}
