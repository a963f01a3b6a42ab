//! The web UI in a real browser: Debian's Chromium and ChromeDriver driven by PyPI's
//! Selenium (`tests/ui/browser.py`), headless, against a real server. The script asks this
//! test (on its standard input) for what only the test can do: post events, read an
//! agent's subscription count. One browser at a time: the timing budgets are the page's,
//! not the machine's contention.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argus_tests::{Agent, Server, debian_packages, enc, eventually, now_ms, python_with};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn subscriptions(agent: &Agent) -> u64 {
    agent.health()["live.subscriptions"]
        .as_u64()
        .unwrap_or(u64::MAX)
}

fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/ui-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot directory");
    dir
}

/// Runs the browser script in `mode` over the window `start..end`, answering each of its
/// `NEED ...` lines with `answer` (which returns what to write back); fails the test when
/// the script fails.
fn run_browser(
    server: &Server,
    start: i64,
    end: i64,
    mode: &[&str],
    mut answer: impl FnMut(&str) -> String,
) {
    assert!(
        debian_packages(CHROMIUM, &["chromium", "chromium-driver"])
            && debian_packages(CHROMEDRIVER, &["chromium-driver"]),
        "Debian's chromium and chromium-driver are needed (apt-get as root or with sudo -n)"
    );
    let python = python_with(&["selenium==4.27.1"]);
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("ui/browser.py");
    let mut child = Command::new(&python)
        .arg(&script)
        .args([&server.base, &start.to_string(), &end.to_string()])
        .arg(screenshots())
        .args(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("running the browser script");
    let mut to_script = child.stdin.take().expect("stdin");
    let from_script = BufReader::new(child.stdout.take().expect("stdout"));
    let mut done = false;
    for line in from_script.lines() {
        let line = line.expect("the script's output");
        eprintln!("browser: {line}");
        if line == "DONE" {
            done = true;
        } else if let Some(what) = line.strip_prefix("NEED ") {
            let reply = answer(what);
            to_script
                .write_all(reply.as_bytes())
                .and_then(|()| to_script.flush())
                .expect("answering the script");
        }
    }
    let status = child.wait().expect("the script's exit");
    assert!(
        status.success() && done,
        "the browser script failed: {status:?}"
    );
}

/// A minute of three gauges, `ui.requests` by `nf.app`, through `post` (an agent's publish
/// route or the server's backfill); returns the window.
fn three_gauges(post: impl Fn(&[u8]) -> (u16, String)) -> (i64, i64) {
    let end = now_ms() / 1000 * 1000 - 2000;
    let start = end - 60_000;
    for (k, app) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let metrics: Vec<Value> = (0..=60)
            .map(|i| json!({"timestamp": start + i * 1000, "value": (k as i64 + 1) * 10 + i % 7}))
            .collect();
        let payload = json!({
            "tags": {"name": "ui.requests", "nf.app": app, "atlas.dstype": "gauge"},
            "metrics": metrics,
        });
        let (status, body) = post(payload.to_string().as_bytes());
        assert_eq!(status, 200, "{body}");
    }
    (start, end)
}

fn wait_for_gauges(server: &Server, start: i64, end: i64, auth: Option<&str>) {
    eventually(10, "the gauges at the server", || {
        let mut req = Server::agent().get(&format!(
            "{}/api/v1/graph?q={}&s={start}&e={end}&step=1s&format=std.json",
            server.base,
            enc("name,ui.requests,:eq,:count")
        ));
        if let Some(token) = auth {
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        let text = req.call().ok()?.body_mut().read_to_string().ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["values"].as_array()?.last()?[0] == json!(3.0)).then_some(())
    });
}

/// Outcomes 1 and 4: a Stack Language graph with its legend, hover values checked against
/// the JSON API, a legend toggle, the table view, PromQL; the same link in a fresh browser;
/// a live MQL tail of an agent's events (exactly the matching rows, pause, a cancel that
/// reaches the agent); the tag browser and cardinality. Screenshots for the README.
#[test]
fn query_live_and_explore_pages_work_in_a_real_browser() {
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let (start, end) = three_gauges(|body| agent.post("/api/v1/publish", body));
    wait_for_gauges(&server, start, end, None);
    run_browser(&server, start, end, &[], |what| match what {
        "see the agent take the subscription" => {
            eventually(10, "the agent taking the UI's subscription", || {
                (subscriptions(&agent) == 1).then_some(())
            });
            "ok\n".into()
        }
        "post events to the agent" => {
            let events: Vec<Value> = (0..200)
                .map(|i| {
                    json!({"path": format!("/p{}", i % 5), "status": if i % 40 == 7 { 503 } else { 200 },
                           "bulk": "x".repeat(100)})
                })
                .collect();
            let body: String = events.iter().map(|e| format!("{e}\n")).collect();
            let (status, text) = agent.post("/v1/events/requests", body.as_bytes());
            assert_eq!(status, 200, "{text}");
            let expected: Vec<String> = events
                .iter()
                .filter(|e| e["status"] == 503)
                .map(|e| json!({"path": e["path"], "status": e["status"]}).to_string())
                .collect();
            format!("ok\n{}\n", Value::from(expected))
        }
        "the agent's id and host" => {
            let listed = server.get_json("/api/v1/agents");
            let agents = listed.as_array().expect("a list");
            assert_eq!(agents.len(), 1, "{listed}");
            format!(
                "ok\n{} {}\n",
                agents[0]["agent"].as_str().expect("id"),
                agents[0]["node"].as_str().expect("node")
            )
        }
        "see the agent drop the subscription" => {
            eventually(10, "the cancel to reach the agent", || {
                (subscriptions(&agent) == 0).then_some(())
            });
            "ok\n".into()
        }
        other => panic!("the script needs {other:?}"),
    });
    for name in ["query-graph", "query-table", "live", "explore"] {
        let png = std::fs::read(screenshots().join(format!("{name}.png"))).expect("a screenshot");
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name}.png looks empty"
        );
    }
}

/// Outcome 3: with `--auth-file` the UI asks for a token, works with a read token, and shows
/// the API's 403 for a page that needs admin.
#[test]
fn with_an_auth_file_the_ui_asks_for_a_token_and_shows_refusals() {
    const READ: &str = "ui-read-0123456789abcdef";
    const WRITE: &str = "ui-write-0123456789abcdef";
    let dir = argus_tests::scratch_dir("ui-auth");
    let file = dir.join("tokens.toml");
    std::fs::write(
        &file,
        format!(
            "[[token]]\nname = \"dashboards\"\nrole = \"read\"\nsecret = \"{READ}\"\n\n\
             [[token]]\nname = \"agents\"\nrole = \"write\"\nsecret = \"{WRITE}\"\n"
        ),
    )
    .expect("the token file");
    let server = Server::start(&["--step", "1s", "--auth-file", file.to_str().expect("path")]);
    let (start, end) = three_gauges(|body| {
        let mut resp = Server::agent()
            .post(&format!("{}/api/v1/backfill", server.base))
            .header("Authorization", &format!("Bearer {WRITE}"))
            .send(body)
            .expect("publishing");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    });
    wait_for_gauges(&server, start, end, Some(READ));
    run_browser(&server, start, end, &["auth", READ], |what| {
        panic!("the script needs {what:?}")
    });
}

/// Outcome 2: 2,000 lines of 180 steps draw within a second; a live tail at 1,000 rows a
/// second keeps at most 1,000 rows on screen and counts the rest.
#[test]
fn two_thousand_lines_draw_within_a_second_and_a_fast_tail_stays_bounded() {
    let server =
        Server::start_listening_with_env(&["--step", "1s"], &[("ARGUS_GRAPH_MAX_LINES", "5000")]);
    let end = now_ms() / 1000 * 1000 - 2000;
    let start = end - 179_000;
    for chunk in 0..20 {
        let payloads: Vec<Value> = (chunk * 100..(chunk + 1) * 100)
            .flat_map(|i: i64| {
                (0..180).map(move |s| {
                    json!({"tags": {"name": "ui.many", "node": format!("i-{i:04}"), "atlas.dstype": "gauge"},
                           "timestamp": start + s * 1000, "value": (i % 50 + s % 13) as f64})
                })
            })
            .collect();
        let body = json!({"tags": {}, "metrics": payloads}).to_string();
        let (status, text) = server.post("/api/v1/backfill", body.as_bytes(), None);
        assert_eq!(status, 200, "{text}");
    }
    const FLOOD: i64 = 3_000;
    run_browser(&server, start, end, &["scale"], |what| {
        assert_eq!(what, "flood the stream");
        // 1,000 rows a second for three seconds, in batches of 100 every 100 ms.
        let began = Instant::now();
        for batch in 0..FLOOD / 100 {
            let body: String = (batch * 100..(batch + 1) * 100)
                .map(|seq| format!("{{\"seq\": {seq}}}\n"))
                .collect();
            let (status, text) = server.post("/api/v1/events/flood", body.as_bytes(), None);
            assert_eq!(status, 200, "{text}");
            let next = Duration::from_millis(100 * (batch as u64 + 1));
            if let Some(wait) = next.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        format!("ok\n{FLOOD}\n")
    });
}

fn curl(url: &str, ca: &Path, body: Option<&[u8]>) -> (u16, String) {
    argus_tests::curl(url, Some(ca), body)
}

/// Cluster mode and TLS: two nodes serving HTTPS over one NATS server. The browser, on one
/// node, graphs data written through the other, tails events posted to the other, and shows
/// the cluster's nodes, streams (with their leaders) and partitions (owners, lag).
#[test]
fn over_https_in_a_cluster_the_pages_show_the_cluster_and_reach_every_node() {
    let dir = argus_tests::scratch_dir("ui-cluster");
    argus_tests::issue_certificate(&dir, "nodes", "node");
    let file = |name: &str| dir.join(name).to_str().expect("a path").to_string();
    let (cert, key, ca) = (file("node.pem"), file("node.key"), dir.join("nodes-ca.pem"));
    let nats = argus_tests::Nats::start(1);
    let url = nats.url();
    let nodes: Vec<Server> = ["ui-a", "ui-b"]
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
                "--step",
                "1s",
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--peer-ca",
                ca.to_str().expect("a path"),
            ])
        })
        .collect();
    for node in &nodes {
        eventually(60, "a node serving HTTPS joining", || {
            (curl(&format!("{}/healthz", node.base), &ca, None).0 == 200).then_some(())
        });
    }
    let (writer, viewer) = (&nodes[0], &nodes[1]);
    let (start, end) =
        three_gauges(|body| curl(&format!("{}/api/v1/backfill", writer.base), &ca, Some(body)));
    eventually(30, "the gauges at the other node", || {
        let (_, text) = curl(
            &format!(
                "{}/api/v1/graph?q={}&s={start}&e={end}&step=1s&format=std.json",
                viewer.base,
                enc("name,ui.requests,:eq,:count")
            ),
            &ca,
            None,
        );
        let v: Value = serde_json::from_str(&text).ok()?;
        (v["values"].as_array()?.last()?[0] == json!(3.0)).then_some(())
    });
    run_browser(viewer, start, end, &["cluster"], |what| match what {
        "post events to the other node" => {
            let events: Vec<Value> = (0..100)
                .map(|i| json!({"path": format!("/c{}", i % 4), "status": if i % 9 == 0 { 500 } else { 200 }}))
                .collect();
            let body: String = events.iter().map(|e| format!("{e}\n")).collect();
            // The subscription reaches the other node through NATS; post until a first
            // matching row could be delivered, then the whole batch once.
            eventually(30, "the subscription known to the other node", || {
                let view: Value = serde_json::from_str(
                    &curl(
                        &format!("{}/api/v1/live/subscriptions", writer.base),
                        &ca,
                        None,
                    )
                    .1,
                )
                .ok()?;
                (view.to_string().contains("requests")).then_some(())
            });
            let (status, text) = curl(
                &format!("{}/api/v1/events/requests", writer.base),
                &ca,
                Some(body.as_bytes()),
            );
            assert_eq!(status, 200, "{text}");
            let expected: Vec<String> = events
                .iter()
                .filter(|e| e["status"] == 500)
                .map(|e| e.to_string())
                .collect();
            format!("ok\n{}\n", Value::from(expected))
        }
        "the cluster's shape" => "ok\n2 8\n".into(),
        other => panic!("the script needs {other:?}"),
    });
}
