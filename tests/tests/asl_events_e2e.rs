//! The Stack Language over live events, end to end: real servers, real agents, `argus live`
//! and raw SSE clients; and the two languages against each other over one recorded event
//! file (`query/asl/tests/events/`), offline through the binaries and live through a server.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argus_query::events::{EventKind, EventOp};
use argus_tests::{Agent, LiveClient, Server, binary, enc, eventually, now_ms};
use serde_json::{Map, Value, json};

const STEP_MS: i64 = 10_000;

fn counter(health: &Value, key: &str) -> u64 {
    health[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key} in {health}"))
}

fn ndjson(events: &[Value]) -> Vec<u8> {
    let mut body = Vec::new();
    for e in events {
        body.extend_from_slice(e.to_string().as_bytes());
        body.push(b'\n');
    }
    body
}

fn agents_see(agents: &[&Agent], n: u64) {
    eventually(10, &format!("agents to see {n} live subscriptions"), || {
        agents
            .iter()
            .all(|a| a.health()["live.subscriptions"].as_u64() == Some(n))
            .then_some(())
    });
}

/// A raw SSE subscription (no timeout: it lives as long as the test wants), collecting the
/// data of every message of the kinds asked for.
struct Sse {
    messages: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Sse {
    fn open(server: &Server, path_and_query: &str) -> Sse {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let resp = agent
            .get(&format!("{}{path_and_query}", server.base))
            .call()
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"));
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if status != 200 {
            panic!(
                "GET {path_and_query}: {status} {}",
                body.read_to_string().unwrap_or_default()
            );
        }
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut kind = String::new();
            for line in BufReader::new(body.into_reader()).lines() {
                let Ok(line) = line else { return };
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k.to_string();
                } else if let Some(data) = line.strip_prefix("data: ") {
                    let v: Value = serde_json::from_str(data).expect("SSE data is JSON");
                    sink.lock().expect("messages").push((kind.clone(), v));
                }
            }
        });
        Sse { messages }
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.messages
            .lock()
            .expect("messages")
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// A request event; every 7th writes its status as text, as some services do.
fn request_event(agent: u64, seq: u64) -> Value {
    let status = match seq % 50 {
        3 | 17 => 503,
        29 => 500,
        _ if seq.is_multiple_of(10) => 404,
        _ => 200,
    };
    let mut e = json!({
        "seq": seq,
        "agent": agent,
        "path": format!("/api/{}", seq % 7),
        "status": if seq % 7 == 3 { json!(status.to_string()) } else { json!(status) },
        "region": if seq.is_multiple_of(3) { "us-east-1" } else { "eu-west-1" },
        "headers": {"user-agent": "x".repeat(200), "accept": "*/*"},
    });
    if !seq.is_multiple_of(11) {
        e["latency"] = json!((seq % 97) as f64 * 1.5);
    }
    e
}

/// Outcome 1: a `:table` over two agents' events gives exactly the matching events' two
/// fields, once each, and only those fields leave the hosts; nothing leaves with no
/// subscriber.
#[test]
fn a_table_sends_only_its_columns_from_both_agents_and_nothing_without_a_subscriber() {
    let server = Server::start(&["--step", "1s"]);
    let agents = [
        Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]),
        Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]),
    ];
    let both: Vec<&Agent> = agents.iter().collect();
    agents_see(&both, 0);
    for (k, agent) in agents.iter().enumerate() {
        let events: Vec<Value> = (0..300).map(|i| request_event(k as u64, i)).collect();
        let (status, body) = agent.post("/v1/events/requests", &ndjson(&events));
        assert_eq!(status, 200, "{body}");
    }
    for agent in &agents {
        let h = eventually(5, "the agent to count its events", || {
            let h = agent.health();
            (counter(&h, "events.id=received") == 300).then_some(h)
        });
        assert_eq!(counter(&h, "events.id=unwanted"), 300, "{h}");
        assert_eq!(counter(&h, "event.bytes.id=sent"), 0, "nothing sent: {h}");
    }

    let expr = "name,requests,:eq,status,500,:ge,:and,(,path,latency,),:table";
    let live = LiveClient::start(&server, &[], expr);
    live.wait_subscribed();
    agents_see(&both, 1);
    let listed = server.get_json("/api/v1/live/subscriptions");
    assert_eq!(listed[0]["language"], "asl", "{listed}");
    assert_eq!(listed[0]["streams"], json!(["requests"]), "{listed}");

    let mut expected = Vec::new();
    let mut projected_bytes = [0u64; 2];
    for (k, agent) in agents.iter().enumerate() {
        let events: Vec<Value> = (0..1000).map(|i| request_event(k as u64, i)).collect();
        for e in &events {
            let status = match &e["status"] {
                Value::String(s) => s.parse::<i64>().unwrap_or(0),
                v => v.as_i64().unwrap_or(0),
            };
            // String statuses compare as strings: "503" >= "500", "404" < "500".
            if status >= 500 {
                expected.push(json!([e["path"], e.get("latency")]).to_string());
                let mut sent = Map::new();
                for f in ["path", "latency"] {
                    if let Some(v) = e.get(f) {
                        sent.insert(f.to_string(), v.clone());
                    }
                }
                projected_bytes[k] += Value::Object(sent).to_string().len() as u64;
            }
        }
        let (status, text) = agent.post("/v1/events/requests", &ndjson(&events));
        assert_eq!(status, 200, "{text}");
    }
    expected.sort();
    assert_eq!(expected.len(), 2 * 60, "the test's own arithmetic");
    let rows = eventually(10, "every matching row", || {
        let rows = live.rows();
        (rows.len() >= expected.len()).then_some(rows)
    });
    let mut got: Vec<String> = rows.iter().map(Value::to_string).collect();
    got.sort();
    assert_eq!(
        got, expected,
        "exactly the matching events' columns, once each"
    );
    for (k, agent) in agents.iter().enumerate() {
        let h = eventually(5, "the events to be acknowledged", || {
            let h = agent.health();
            (counter(&h, "event.bytes.id=sent") == counter(&h, "event.bytes.id=selected"))
                .then_some(h)
        });
        assert_eq!(counter(&h, "events.id=selected"), 60, "{h}");
        // Byte for byte: the two columns of the matching events, nothing else.
        assert_eq!(
            counter(&h, "event.bytes.id=sent"),
            projected_bytes[k],
            "agent {k}: {h}"
        );
    }
    assert_eq!(live.rows().len(), expected.len(), "no row twice");

    // Ctrl-C: the subscription ends everywhere, and nothing more leaves the hosts.
    live.interrupt();
    agents_see(&both, 0);
    let before: Vec<u64> = agents
        .iter()
        .map(|a| counter(&a.health(), "event.bytes.id=sent"))
        .collect();
    for (k, agent) in agents.iter().enumerate() {
        let events: Vec<Value> = (0..1000).map(|i| request_event(k as u64, i)).collect();
        agent.post("/v1/events/requests", &ndjson(&events));
    }
    for (agent, before) in agents.iter().zip(before) {
        let h = eventually(5, "the agent to count its events", || {
            let h = agent.health();
            (counter(&h, "events.id=received") == 2300).then_some(h)
        });
        assert_eq!(counter(&h, "event.bytes.id=sent"), before, "{h}");
    }
}

/// Waits until the wall clock is between 1 s and 6 s into a 10 s step; returns the step's
/// start.
fn early_in_a_step() -> i64 {
    loop {
        let now = now_ms();
        let into = now.rem_euclid(STEP_MS);
        if (1_000..6_000).contains(&into) {
            return now - into;
        }
        let wait = if into < 1_000 {
            1_000 - into
        } else {
            STEP_MS - into + 1_000
        };
        std::thread::sleep(Duration::from_millis(wait as u64));
    }
}

/// Outcomes 2 and 3: per-step counts by path (over SSE, through `argus live`), sums of a
/// numeric field (through `/api/v1/stream?source=events`) and samples, at a 10 s step on the
/// wall clock, with a known number of events per path per step from two agents.
#[test]
fn counts_sums_and_samples_per_path_per_ten_second_step() {
    let server = Server::start(&["--step", "1s"]);
    let agents = [
        Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]),
        Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]),
    ];
    let both: Vec<&Agent> = agents.iter().collect();
    agents_see(&both, 0);
    let counts = LiveClient::start(
        &server,
        &["--step", "10s"],
        "name,requests,:eq,:count,(,path,),:by",
    );
    counts.wait_subscribed();
    let sums = Sse::open(
        &server,
        &format!(
            "/api/v1/stream?source=events&step=10s&q={}",
            enc("name,requests,:eq,value,latency,:eq,:and,:sum,(,path,),:by")
        ),
    );
    let samples = LiveClient::start(
        &server,
        &["--step", "10s", "--lang", "asl"],
        "name,requests,:eq,agent,0,:eq,:and,(,path,),(,seq,latency,),:sample",
    );
    samples.wait_subscribed();
    agents_see(&both, 3);

    // Two steps of events: per step, per agent, a known number per path.
    let plan: [[&[(&str, usize)]; 2]; 2] = [
        [&[("/a", 3), ("/b", 2)], &[("/a", 1), ("/c", 4)]],
        [&[("/b", 5)], &[("/a", 2), ("/b", 1), ("/c", 1)]],
    ];
    let mut want_counts: Vec<(i64, String, u64)> = Vec::new();
    let mut want_sums: Vec<(i64, String, f64)> = Vec::new();
    let mut want_samples: Vec<(i64, String, u64, Value)> = Vec::new();
    let mut seq = 0u64;
    for step in plan {
        let start = early_in_a_step();
        let mut per_path: std::collections::BTreeMap<String, (u64, f64)> = Default::default();
        for (k, batch) in step.iter().enumerate() {
            let mut events = Vec::new();
            for (path, n) in batch.iter() {
                for _ in 0..*n {
                    seq += 1;
                    let latency = (seq * 37 % 101) as f64 + 0.25;
                    events.push(json!({"agent": k, "seq": seq, "path": path, "latency": latency}));
                    let slot = per_path.entry(path.to_string()).or_default();
                    slot.0 += 1;
                    slot.1 += latency;
                    if k == 0 && !want_samples.iter().any(|w| w.0 == start && w.1 == *path) {
                        want_samples.push((
                            start,
                            path.to_string(),
                            *n as u64,
                            json!([seq, latency]),
                        ));
                    }
                }
            }
            let (status, text) = agents[k].post("/v1/events/requests", &ndjson(&events));
            assert_eq!(status, 200, "{text}");
        }
        for (path, (n, sum)) in per_path {
            want_counts.push((start, path.clone(), n));
            want_sums.push((start, path, sum / 10.0));
        }
        // The next batch goes into the next step.
        std::thread::sleep(Duration::from_millis(
            (start + STEP_MS - now_ms()).max(0) as u64
        ));
    }
    let last_start = want_counts.last().map(|w| w.0).expect("two steps");
    let steps_of = |rows: Vec<Value>| -> Vec<Value> {
        rows.into_iter()
            .filter(|r| r["timestamp"].as_i64().is_some_and(|t| t <= last_start))
            .collect()
    };
    let count_rows = eventually(25, "both steps' counts", || {
        let rows = steps_of(counts.rows());
        (rows.len() >= 2).then_some(rows)
    });
    let got_counts: Vec<(i64, String, u64)> = count_rows
        .iter()
        .flat_map(|r| {
            let t = r["timestamp"].as_i64().expect("timestamp");
            assert_eq!(r["step"], STEP_MS, "{r}");
            r["series"]
                .as_array()
                .expect("series")
                .iter()
                .map(move |s| {
                    assert_eq!(
                        s["label"],
                        format!("(path={})", s["tags"]["path"].as_str().unwrap_or(""))
                    );
                    (
                        t,
                        s["tags"]["path"].as_str().expect("path").to_string(),
                        s["value"].as_u64().expect("a count"),
                    )
                })
        })
        .collect();
    assert_eq!(got_counts, want_counts, "exact counts per path per step");

    let sum_rows = eventually(10, "both steps' sums", || {
        let rows = steps_of(sums.of_kind("step"));
        (rows.len() >= 2).then_some(rows)
    });
    let got_sums: Vec<(i64, String, f64)> = sum_rows
        .iter()
        .flat_map(|r| {
            let t = r["timestamp"].as_i64().expect("timestamp");
            r["series"]
                .as_array()
                .expect("series")
                .iter()
                .map(move |s| {
                    assert_eq!(s["tags"]["value"], "latency", "{s}");
                    (
                        t,
                        s["tags"]["path"].as_str().expect("path").to_string(),
                        s["value"].as_f64().expect("a rate"),
                    )
                })
        })
        .collect();
    assert_eq!(got_sums.len(), want_sums.len(), "{got_sums:?}");
    for (g, w) in got_sums.iter().zip(&want_sums) {
        assert_eq!((g.0, &g.1), (w.0, &w.1));
        // The step's exact sum, as a rate per second over its 10 s.
        assert!((g.2 - w.2).abs() <= 1e-9 * w.2.abs(), "{g:?} vs {w:?}");
    }

    let sample_rows = eventually(10, "both steps' samples", || {
        let rows = steps_of(samples.rows());
        (rows.len() >= 2).then_some(rows)
    });
    let got_samples: Vec<(i64, String, u64, Value)> = sample_rows
        .iter()
        .flat_map(|r| {
            let t = r["timestamp"].as_i64().expect("timestamp");
            r["series"]
                .as_array()
                .expect("series")
                .iter()
                .map(move |s| {
                    (
                        t,
                        s["tags"]["path"].as_str().expect("path").to_string(),
                        s["value"].as_u64().expect("a count"),
                        s["samples"][0].clone(),
                    )
                })
        })
        .collect();
    want_samples.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    assert_eq!(
        got_samples, want_samples,
        "per step and path: agent 0's count and its first event's projection"
    );
}

// ---- The two languages against each other ----

fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query/asl/tests/events")
}

/// The (Stack Language, MQL) pairs of `pairs.txt`.
fn pairs() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(events_dir().join("pairs.txt")).expect("pairs.txt");
    let mut out = Vec::new();
    let mut asl: Option<String> = None;
    for line in text.lines() {
        if let Some(a) = line.strip_prefix("asl ") {
            assert!(
                asl.replace(a.trim().to_string()).is_none(),
                "asl without mql: {line}"
            );
        } else if let Some(m) = line.strip_prefix("mql ") {
            let a = asl
                .take()
                .unwrap_or_else(|| panic!("mql without asl: {line}"));
            out.push((a, m.trim().to_string()));
        }
    }
    assert!(out.len() >= 30, "only {} pairs", out.len());
    out
}

/// A group value as tag text, as the Stack Language writes it.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Both answers of a pair in one comparable form: for per-event results, each row as JSON
/// (a `:table` row against the MQL row's columns in order); for per-step results,
/// `(step start, group, value)` sorted.
fn comparable(asl: &str, asl_rows: &[Value], mql_rows: &[Value]) -> (Vec<String>, Vec<String>) {
    let q = argus_query::events::parse(asl).unwrap_or_else(|e| panic!("{asl}: {e}"));
    match &q.kind {
        EventKind::Raw => (
            asl_rows.iter().map(Value::to_string).collect(),
            mql_rows.iter().map(Value::to_string).collect(),
        ),
        EventKind::Table { columns } => (
            asl_rows.iter().map(Value::to_string).collect(),
            mql_rows
                .iter()
                .map(|r| {
                    Value::Array(
                        columns
                            .iter()
                            .map(|c| r.get(c).cloned().unwrap_or(Value::Null))
                            .collect(),
                    )
                    .to_string()
                })
                .collect(),
        ),
        EventKind::Series { op, by, .. } => {
            let rate = *op == EventOp::Sum;
            let mut a: Vec<String> = asl_rows
                .iter()
                .flat_map(|r| {
                    let t = r["timestamp"].as_i64().expect("timestamp");
                    r["series"]
                        .as_array()
                        .expect("series")
                        .iter()
                        .map(move |s| {
                            let group: Vec<String> = by
                                .iter()
                                .map(|k| format!("{k}={}", text_of(&s["tags"][k])))
                                .collect();
                            let v = s["value"].as_f64().expect("value");
                            format!("{t} {} {v:.9e}", group.join(","))
                        })
                })
                .collect();
            let mut m: Vec<String> = mql_rows
                .iter()
                .map(|r| {
                    let t = r["end"].as_i64().expect("end") - STEP_MS;
                    let group: Vec<String> = by
                        .iter()
                        .map(|k| format!("{k}={}", text_of(&r[k])))
                        .collect();
                    let mut v = r["value"].as_f64().expect("value");
                    if rate {
                        v /= STEP_MS as f64 / 1000.0;
                    }
                    format!("{t} {} {v:.9e}", group.join(","))
                })
                .collect();
            a.sort();
            m.sort();
            (a, m)
        }
        EventKind::Sample { .. } => panic!("{asl}: no MQL twin for :sample"),
    }
}

fn run_binary(args: &[&str]) -> Vec<Value> {
    let out = std::process::Command::new(binary("argus"))
        .args(args)
        .output()
        .expect("running argus");
    assert!(
        out.status.success(),
        "argus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON row"))
        .collect()
}

/// Outcome 4, offline: each pair gives the same answer through `argus eval --events` and
/// `argus mql` over the recorded file, and no pair is trivially empty.
#[test]
fn the_two_languages_agree_offline_over_a_recorded_file() {
    let file = events_dir().join("requests.ndjson");
    let file = file.to_str().expect("a UTF-8 path");
    let mut failures = Vec::new();
    let pairs = pairs();
    for (asl, mql) in &pairs {
        let a = run_binary(&[
            "eval",
            "--events",
            file,
            "--time-field",
            "t",
            "--step",
            "10s",
            asl,
        ]);
        let m = run_binary(&["mql", "--input", file, "--time-field", "t", mql]);
        let (a, m) = comparable(asl, &a, &m);
        if a.is_empty() {
            failures.push(format!(
                "{asl}: no result at all (a pair must test something)"
            ));
        } else if a != m {
            failures.push(format!("{asl}\n  vs {mql}\n  asl: {a:?}\n  mql: {m:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} pairs differ:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n\n")
    );
}

/// Outcome 4, live: every pair subscribed on one server in both languages (event time from
/// `t`, so steps and windows are the file's), the file posted to an agent: each pair's two
/// live answers agree, and equal the offline ones.
#[test]
fn the_two_languages_agree_live_through_a_server_and_an_agent() {
    let server = Server::start(&["--step", "1s", "--live-max-per-client", "200"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let file = events_dir().join("requests.ndjson");
    let body = std::fs::read(&file).expect("the recorded events");
    let file = file.to_str().expect("a UTF-8 path");
    let pairs = pairs();
    let mut subs = Vec::new();
    for (asl, mql) in &pairs {
        let a = Sse::open(
            &server,
            &format!("/api/v1/live?lang=asl&step=10s&time-field=t&q={}", enc(asl)),
        );
        let m = Sse::open(
            &server,
            &format!("/api/v1/live?time-field=t&q={}", enc(mql)),
        );
        let offline_a = run_binary(&[
            "eval",
            "--events",
            file,
            "--time-field",
            "t",
            "--step",
            "10s",
            asl,
        ]);
        let offline_m = run_binary(&["mql", "--input", file, "--time-field", "t", mql]);
        subs.push((a, m, offline_a, offline_m));
    }
    agents_see(&[&agent], 2 * pairs.len() as u64);
    let (status, text) = agent.post("/v1/events/requests", &body);
    assert_eq!(status, 200, "{text}");
    // Event-time steps close as later events pass them, the last once the stream is idle.
    let started = Instant::now();
    let mut failures = Vec::new();
    for ((asl, mql), (a, m, offline_a, offline_m)) in pairs.iter().zip(&subs) {
        let rows = |sse: &Sse, want: usize| {
            let deadline = started + Duration::from_secs(20);
            loop {
                let rows = sse.of_kind("row");
                if rows.len() >= want || Instant::now() > deadline {
                    return rows;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let live_a = rows(a, offline_a.len());
        let live_m = rows(m, offline_m.len());
        let (la, lm) = comparable(asl, &live_a, &live_m);
        let (oa, _) = comparable(asl, offline_a, offline_m);
        if la != lm || la != oa {
            failures.push(format!(
                "{asl}\n  vs {mql}\n  live asl: {la:?}\n  live mql: {lm:?}\n  offline:  {oa:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} pairs differ live:\n{}",
        failures.len(),
        pairs.len(),
        failures.join("\n\n")
    );
}

/// Outcome 5: the Stack Language's event cases (`query/asl/tests/events/*.test`, also run in
/// process) through `argus eval --events`.
#[test]
fn every_event_case_through_argus_eval() {
    use argus_mql::cases::{Clock, load_dir};
    let cases = load_dir(&events_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let dir = argus_tests::scratch_dir("asl-event-cases");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let input = dir.join(format!("case-{i}.ndjson"));
        let mut body = String::new();
        for e in &case.events {
            let mut event = e.event.clone();
            if let (Some(stream), Value::Object(m)) = (&e.stream, &mut event) {
                m.insert("__stream".into(), Value::from(stream.as_str()));
            }
            body.push_str(&event.to_string());
            body.push('\n');
        }
        std::fs::write(&input, body).expect("writing the input");
        let mut cmd = std::process::Command::new(binary("argus"));
        cmd.arg("eval")
            .arg("--events")
            .arg(&input)
            .args(["--stream-field", "__stream"])
            .args(["--step", &format!("{}ms", case.step_ms)]);
        match &case.clock {
            Clock::Interval { ms } => cmd.args(["--interval-ms", &ms.to_string()]),
            Clock::EventTime { field } => cmd.args(["--time-field", &field.to_string()]),
        };
        let out = cmd.arg(&case.query).output().expect("running argus eval");
        let outcome = if out.status.success() {
            let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("argus eval prints JSON rows"))
                .collect();
            case.check(Ok(&rows))
        } else {
            case.check(Err(&String::from_utf8_lossy(&out.stderr)))
        };
        if let Err(e) = outcome {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Bad live requests in the Stack Language are refused with what and where, and refuse
/// nothing else: the server goes on serving a good one.
#[test]
fn bad_stack_language_live_requests_say_what_is_wrong() {
    let server = Server::start(&["--step", "1s"]);
    for (query, want) in [
        (
            format!("/api/v1/live?lang=asl&q={}", enc("name,a,:eq,:nope")),
            "unknown word",
        ),
        (
            format!("/api/v1/live?q={}", enc("name,a,:eq,(,),:table")),
            "columns cannot be empty",
        ),
        (
            format!("/api/v1/live?q={}", enc("name,a,:eq,:count,2,:mul")),
            "over events an expression is",
        ),
        (
            format!("/api/v1/live?lang=klingon&q={}", enc("name,a,:eq")),
            "expected mql or asl",
        ),
        (
            format!("/api/v1/live?step=1ms&q={}", enc("name,a,:eq,:count")),
            "from 1s to 1d",
        ),
        (
            format!("/api/v1/live?step=soon&q={}", enc("name,a,:eq,:count")),
            "invalid parameter 'step'",
        ),
        (
            format!("/api/v1/live?step=10s&q={}", enc("select * from a")),
            "applies to Stack Language",
        ),
        (
            format!("/api/v1/live?lang=mql&q={}", enc("name,a,:eq")),
            "invalid MQL query",
        ),
        (
            format!(
                "/api/v1/stream?source=events&q={}",
                enc("name,a,:eq,(,b,),:table")
            ),
            "gives events, not series per step",
        ),
        (
            format!("/api/v1/stream?source=files&q={}", enc("name,a,:eq,:count")),
            "expected store",
        ),
        (
            format!("/api/v1/graph?q={}", enc("name,a,:eq,(,b,),:table")),
            "is an event expression",
        ),
    ] {
        let (status, body) = server.get(&query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(want), "{query}: {body}");
    }
    let out = std::process::Command::new(binary("argus"))
        .args(["live", "--server", &server.base, "name,a,:eq,:avg"])
        .output()
        .expect("running argus live");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(":avg does not apply"), "{stderr}");
    // Nothing was left running, and a good query still runs.
    assert_eq!(server.get_json("/api/v1/live/subscriptions"), json!([]));
    let live = LiveClient::start(&server, &[], "name,a,:eq,(,b,),:table");
    live.wait_subscribed();
    let (status, body) = server.post("/api/v1/events/a", b"{\"b\": 1}\n{\"c\": 2}\n", None);
    assert_eq!(status, 200, "{body}");
    let rows = eventually(5, "the rows", || {
        let rows = live.rows();
        (rows.len() >= 2).then_some(rows)
    });
    assert_eq!(rows, [json!([1]), json!([null])]);
}

/// Per-step values over a WebSocket (from the server's own intake, which evaluates the
/// typed predicate itself): the hello says what the rows are.
#[test]
fn per_step_values_over_a_websocket() {
    let server = Server::start(&["--step", "1s"]);
    let python = argus_tests::python_with(&["websocket-client==1.8.0"]);
    let url = format!(
        "{}/api/v1/live?step=1s&time-field=t&q={}",
        server.base.replacen("http://", "ws://", 1),
        enc("name,ws,:eq,status,500,:ge,:and,:count,(,path,),:by")
    );
    let script = r#"
import json, sys, websocket
ws = websocket.create_connection(sys.argv[1], timeout=20)
hello = json.loads(ws.recv())
print("HELLO " + json.dumps(hello), flush=True)
rows = []
while len(rows) < 2:
    m = json.loads(ws.recv())
    if m["type"] == "row":
        rows.append(m["row"])
ws.send(json.dumps({"type": "cancel"}))
print(json.dumps(rows), flush=True)
"#;
    let mut child = std::process::Command::new(&python)
        .args(["-c", script, &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("running the WebSocket client");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let hello = out.next().and_then(Result::ok).expect("hello");
    let hello: Value =
        serde_json::from_str(hello.strip_prefix("HELLO ").expect("HELLO")).expect("JSON");
    assert_eq!(hello["type"], "subscribed", "{hello}");
    assert_eq!(
        (&hello["language"], &hello["kind"], &hello["step"]),
        (&json!("asl"), &json!("series"), &json!(1000)),
        "{hello}"
    );
    let events = [
        json!({"t": 100, "path": "/a", "status": 503}),
        json!({"t": 200, "path": "/a", "status": "500"}),
        json!({"t": 300, "path": "/b", "status": 200}),
        json!({"t": 400, "path": "/b", "status": 502}),
        json!({"t": 1500, "path": "/a", "status": 500}),
    ];
    let (status, text) = server.post("/api/v1/events/ws", &ndjson(&events), None);
    assert_eq!(status, 200, "{text}");
    let rows: Value =
        serde_json::from_str(&out.next().and_then(Result::ok).expect("rows")).expect("rows JSON");
    assert_eq!(
        rows,
        json!([
            {"timestamp": 0, "step": 1000, "series": [
                {"label": "(path=/a)", "tags": {"name": "ws", "path": "/a"}, "value": 2},
                {"label": "(path=/b)", "tags": {"name": "ws", "path": "/b"}, "value": 1}]},
            {"timestamp": 1000, "step": 1000, "series": [
                {"label": "(path=/a)", "tags": {"name": "ws", "path": "/a"}, "value": 1}]}
        ])
    );
    assert!(child.wait().expect("client exit").success());
    eventually(5, "the cancelled subscription to go", || {
        (server.get_json("/api/v1/live/subscriptions") == json!([])).then_some(())
    });
}
