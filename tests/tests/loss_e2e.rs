//! Loss accounting end to end, under faults, in one test per mode: an agent streams through
//! a proxy that the test cuts (long enough for the agent's buffer to overflow), a batch of
//! samples the server refuses goes through, and the server is killed with SIGKILL and
//! restarted on its data (in a cluster: a store node killed and restarted, and the NATS
//! server leading a stream killed). Afterwards, for the agent, `GET /api/v1/loss` accounts
//! for every sample: sent = applied + dropped with reason exactly, nothing unexplained, no
//! batch missing, and the buffer-full and refused drops named with their counts, as the
//! `argus.loss.*` series say.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use argus_tests::{Agent, Nats, Proxy, Server, enc, eventually, free_port, now_ms, scratch_dir};
use serde_json::{Value, json};

/// A publish payload of `n` fresh datapoints of `loss.test`.
fn payload(batch: u64, n: u64) -> String {
    let now = now_ms();
    let metrics: Vec<Value> = (0..n)
        .map(|i| {
            json!({"tags": {"name": "loss.test", "ix": format!("{}", i % 50)},
                   "timestamp": now, "value": (batch * 1000 + i) as f64})
        })
        .collect();
    json!({"tags": {"atlas.dstype": "gauge"}, "metrics": metrics}).to_string()
}

/// `n` fresh datapoints of `loss.test` through the agent's publish route.
fn publish(agent: &Agent, batch: u64, n: u64) {
    let (status, body) = agent.post("/api/v1/publish", payload(batch, n).as_bytes());
    assert_eq!(status, 200, "{body}");
}

/// The agent's metrics row of the loss report, when every partition answered.
fn metrics_loss(server: &Server) -> Option<Value> {
    let report = server.get_json("/api/v1/loss");
    if report.get("missingPartitions").is_some() {
        return None;
    }
    report["agents"]
        .as_array()?
        .iter()
        .find(|a| a["kind"] == "metrics")
        .cloned()
}

/// Normal running, then samples the server refuses (older than its retention), then a
/// network cut long enough for the agent's buffer to overflow, healed.
fn batches_refusals_and_a_cut(server: &Server, agent: &Agent, proxy: &Proxy) {
    for b in 0..5 {
        publish(agent, b, 100);
    }
    eventually(60, "the first batches applied", || {
        let l = metrics_loss(server)?;
        (l["streams"][0]["applied"].as_u64()? >= 500).then_some(())
    });
    let old = now_ms() - 30 * 24 * 3_600_000;
    let metrics: Vec<Value> = (0..7)
        .map(|i| json!({"tags": {"name": "loss.old", "ix": i.to_string()}, "timestamp": old, "value": 1.0}))
        .collect();
    let (status, body) = agent.post(
        "/api/v1/publish",
        json!({"tags": {"atlas.dstype": "gauge"}, "metrics": metrics})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    eventually(60, "the old samples refused by the server", || {
        let l = metrics_loss(server)?;
        (l["streams"][0]["dropped"]["server:out_of_retention"] == 7).then_some(())
    });
    proxy.cut();
    let mut batch = 100;
    while agent.health()["dropped.id=samples.reason=buffer_full"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        publish(agent, batch, 500);
        batch += 1;
        assert!(batch < 400, "the agent's buffer never overflowed");
    }
    proxy.heal();
}

/// A service posting 50 samples every 20 ms to the agent's intake until dropped, counting
/// what the agent took.
struct Feeder {
    stop: Arc<AtomicBool>,
    posted: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Feeder {
    fn start(agent: &Agent) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let posted = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, posted, intake) = (stop.clone(), posted.clone(), agent.intake.clone());
            std::thread::spawn(move || {
                let mut b = 1000;
                while !stop.load(Ordering::SeqCst) {
                    let body = payload(b, 50);
                    if let Ok(r) = Server::agent()
                        .post(&format!("{intake}/api/v1/publish"))
                        .send(body.as_bytes())
                        && r.status().as_u16() == 200
                    {
                        posted.fetch_add(50, Ordering::SeqCst);
                    }
                    b += 1;
                    // A service's pace, not a wait for anything.
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        Feeder {
            stop,
            posted,
            thread: Some(thread),
        }
    }

    /// Waits until the agent has taken `more` samples beyond what it had.
    fn wait_for(&self, more: u64, what: &str) {
        let from = self.posted.load(Ordering::SeqCst);
        eventually(60, what, || {
            (self.posted.load(Ordering::SeqCst) >= from + more).then_some(())
        });
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until nothing is waiting at the agent and every partition answers, then checks
/// that every sample is accounted for; returns the agent's metrics row.
fn assert_every_sample_accounted_for(server: &Server, agent: &Agent) -> Value {
    // Settled as of the agent's latest account: its buffer-full drops as it counts them
    // now, less those the server had all the same.
    // What was last seen goes into the failure: which of the conditions never held.
    let deadline = Instant::now() + Duration::from_secs(90);
    let loss = loop {
        let report = server.get_json("/api/v1/loss");
        let health = agent.health();
        let settled = metrics_loss(server).filter(|l| {
            let s = &l["streams"][0];
            let dropped_now = health["dropped.id=samples.reason=buffer_full"].as_u64();
            l["settled"] == true
                && s["pending"] == 0
                && s["unapplied"] == 0
                && s["unexplained"] == 0
                && s["dropped_but_applied"].as_u64().is_some()
                && Some(
                    s["dropped"]["agent:buffer_full"].as_u64().unwrap_or(0)
                        + s["dropped_but_applied"].as_u64().unwrap_or(0),
                ) == dropped_now
        });
        if let Some(l) = settled {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after 90 s waiting for the agent's batches settled and applied; \
             last seen:\nthe server's loss report: {report:#}\nthe agent's health: {health:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("{loss:#}");
    let stream = &loss["streams"][0];
    assert_eq!(stream["stream"], "metrics", "{loss}");
    let sent = stream["sent"].as_u64().expect("sent");
    let applied = stream["applied"].as_u64().expect("applied");
    let dropped: u64 = stream["dropped"]
        .as_object()
        .expect("dropped")
        .values()
        .map(|v| v.as_u64().expect("a count"))
        .sum();
    assert_eq!(sent, applied + dropped, "{loss}");
    assert_eq!(stream["unexplained"], 0, "{loss}");
    assert_eq!(loss["gaps"], 0, "{loss}");
    // The agent's own counter, less what it dropped after sending that the server had.
    let health = agent.health();
    assert_eq!(
        stream["dropped"]["agent:buffer_full"].as_u64().unwrap_or(0)
            + stream["dropped_but_applied"]
                .as_u64()
                .expect("dropped_but_applied"),
        health["dropped.id=samples.reason=buffer_full"]
            .as_u64()
            .expect("the agent's count"),
        "{loss}\n{health}"
    );
    assert!(stream["dropped"]["agent:buffer_full"].as_u64().unwrap_or(0) > 0);
    assert_eq!(stream["dropped"]["server:out_of_retention"], 7, "{loss}");
    assert!(
        stream["inputs"]["publish"].as_u64().unwrap_or(0) > 0,
        "{loss}"
    );
    loss
}

/// The same as series, and over a window from those series: per step and in all, with the
/// loss ratio; the drops exactly as the cumulative report has them.
fn assert_loss_series(server: &Server, loss: &Value) {
    let q = |name: &str| {
        server.get_json(&format!(
            "/api/v1/graph?q={}&s=e-2m&e=now&step=1s&format=stats.json",
            enc(&format!("name,{name},:eq,kind,metrics,:eq,:and,:max"))
        ))
    };
    eventually(30, "argus.loss.unexplained written", || {
        let v = q("argus.loss.unexplained");
        (v["stats"][0]["count"].as_u64()? > 0 && v["stats"][0]["last"] == 0.0).then_some(())
    });
    let stream = &loss["streams"][0];
    let buffer_full = stream["dropped"]["agent:buffer_full"]
        .as_f64()
        .expect("a count");
    let window = eventually(30, "the windowed report", || {
        let v = server.get_json("/api/v1/loss?s=e-5m&e=now&step=1s");
        let row = v["agents"]
            .as_array()?
            .iter()
            .find(|a| a["stream"] == "metrics")?
            .clone();
        (row["dropped"]["agent:buffer_full"].as_f64()? == buffer_full
            && row["dropped"]["server:out_of_retention"] == 7.0)
            .then_some(row)
    });
    let ratio = window["lossRatio"].as_f64().expect("a ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "{window}");
    assert!(window["steps"]["sent"].as_array().expect("per step").len() >= 60);
    eprintln!(
        "window: sent {}, applied {}, dropped {}, ratio {ratio:.4}",
        window["sent"], window["applied"], window["dropped"]
    );
    eventually(30, "argus.loss.dropped written", || {
        let v = server.get_json(&format!(
            "/api/v1/graph?q={}&s=e-2m&e=now&step=1s&format=json",
            enc("name,argus.loss.dropped,:eq,(,reason,),:by")
        ));
        let legend = v["legend"].to_string();
        (legend.contains("buffer_full") && legend.contains("out_of_retention")).then_some(())
    });
}

/// An agent with a small buffer (a short cut overflows it), sending through `proxy`.
fn agent_through(proxy: &Proxy) -> Agent {
    Agent::start(
        &format!("http://{}", proxy.addr),
        &[
            "--step",
            "1s",
            "--no-host-metrics",
            "--buffer-bytes",
            "65536",
        ],
    )
}

#[test]
fn every_sample_is_accounted_for_through_a_cut_an_invalid_batch_and_a_sigkill() {
    let (http, grpc) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    // Snapshots every second: the restart reads the books from a snapshot and the log.
    let flags = ["--step", "1s", "--snapshot-interval", "1s"];
    let mut server = Server::start_in(scratch_dir("loss").hand_over(), &http, &grpc, &flags);
    let proxy = Proxy::start(&grpc);
    let agent = agent_through(&proxy);
    batches_refusals_and_a_cut(&server, &agent, &proxy);

    // SIGKILL in the middle of a stream of batches, and a restart on the same data.
    let feeder = Feeder::start(&agent);
    feeder.wait_for(500, "batches flowing again");
    let dir = server.kill();
    server = Server::start_in(dir, &http, &grpc, &flags);
    feeder.wait_for(2000, "more batches after the restart");
    drop(feeder);

    let loss = assert_every_sample_accounted_for(&server, &agent);
    assert_loss_series(&server, &loss);
}

/// A cluster node on `nats` (not waiting for it to join).
fn cluster_node(nats: &str, id: &str, roles: &str) -> Server {
    Server::start_listening(&[
        "--ephemeral",
        "--cluster",
        nats,
        "--node-id",
        id,
        "--roles",
        roles,
        "--partitions",
        "8",
        "--replicas",
        "2",
        "--step",
        "1s",
        // Snapshots every second: the restarted store node reads the books from
        // snapshots and the log.
        "--snapshot-interval",
        "1s",
    ])
}

fn wait_joined(node: &Server, what: &str) {
    eventually(60, what, || (node.get("/healthz").0 == 200).then_some(()));
}

#[test]
fn in_a_cluster_every_sample_is_accounted_for_through_a_store_node_and_a_stream_leader_killed() {
    let mut nats = Nats::start(3);
    let url = nats.url();
    let gateway = cluster_node(&url, "gw", "gateway,query");
    let mut stores: Vec<Server> = ["s1", "s2", "s3"]
        .iter()
        .map(|id| cluster_node(&url, id, "store"))
        .collect();
    wait_joined(&gateway, "the gateway joining");
    for s in &stores {
        wait_joined(s, "a store node joining");
    }
    let proxy = Proxy::start(gateway.grpc.trim_start_matches("http://"));
    let agent = agent_through(&proxy);
    batches_refusals_and_a_cut(&gateway, &agent, &proxy);

    let feeder = Feeder::start(&agent);
    feeder.wait_for(500, "batches flowing again");
    // A store node killed mid-stream and started again: it rebuilds its partitions, and
    // their books, from their snapshots and the log.
    let _ = stores.remove(0).kill();
    feeder.wait_for(500, "batches flowing with a store node down");
    stores.insert(0, cluster_node(&url, "s1", "store"));
    wait_joined(&stores[0], "the store node rejoining");
    // The NATS server leading the first stream killed: writes stall through the election.
    let leader = eventually(30, "a leader for ARGUS_IN_0", || {
        gateway.get_json("/api/v1/cluster")["log"]["streams"][0]["leader"]
            .as_str()
            .map(String::from)
    });
    let index: usize = leader
        .trim_start_matches('n')
        .parse()
        .expect("NATS servers named n0, n1, n2");
    nats.kill(index);
    eventually(60, "another leader for ARGUS_IN_0", || {
        gateway.get_json("/api/v1/cluster")["log"]["streams"][0]["leader"]
            .as_str()
            .filter(|l| *l != leader)
            .map(|_| ())
    });
    feeder.wait_for(2000, "more batches after the election");
    drop(feeder);

    let loss = assert_every_sample_accounted_for(&gateway, &agent);
    assert_loss_series(&gateway, &loss);
}

/// Event streams are accounted for the same way, per stream: every event a live query
/// selected at the agent is sent and applied, nothing unexplained, no batch missing.
#[test]
fn event_batches_are_accounted_for_per_stream() {
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let live = argus_tests::LiveClient::start(&server, &[], "select n from clicks where n >= 0");
    live.wait_subscribed();
    eventually(10, "the agent taking the subscription", || {
        (agent.health()["live.subscriptions"] == 1).then_some(())
    });
    for part in 0..3 {
        let body: String = (part * 100..(part + 1) * 100)
            .map(|n| format!("{{\"n\": {n}}}\n"))
            .collect();
        let (status, text) = agent.post("/v1/events/clicks", body.as_bytes());
        assert_eq!(status, 200, "{text}");
    }
    let (account, stream) = eventually(30, "the events accounted for", || {
        let report = server.get_json("/api/v1/loss");
        let account = report["agents"]
            .as_array()?
            .iter()
            .find(|a| a["kind"] == "events")?
            .clone();
        let stream = account["streams"]
            .as_array()?
            .iter()
            .find(|s| s["stream"] == "clicks")?
            .clone();
        (stream["applied"] == 300 && account["settled"] == true).then_some((account, stream))
    });
    eprintln!("{account:#}");
    assert_eq!(stream["sent"], 300, "{account}");
    assert_eq!(stream["inputs"]["events"], 300, "{account}");
    assert_eq!(stream["unexplained"], 0, "{account}");
    assert_eq!(account["gaps"], 0, "{account}");
    assert_eq!(live.rows().len(), 300);
    live.interrupt();
}
