//! The MQL semantic cases (`query/mql/tests/mql/*.test`), run through the real binaries: the
//! `argus mql` command, and the live path (events posted to an agent's intake, the query
//! pushed down to it, rows read by `argus live`). The query crate runs the same files
//! through the engine (`query/mql/tests/mql.rs`).
//!
//! A live stream never ends, so where the offline run's last rows come from the end of its
//! input (aggregates or order without a window, a partial count window), the live path must
//! give exactly the rows before the end, and nothing more, as MQL does on an unbounded
//! stream. Time windows on the offline run's virtual clock are replayed live in event-time
//! mode, the virtual time travelling in a field of each event (`__t`, removed from rows);
//! open windows then close when the stream goes idle, as the end of a file closes them.
//! Cases that read the clock itself (`tick()`) or sample by rate cannot be replayed on a
//! wall clock, and run through `argus mql` only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use argus_mql::ast::Window;
use argus_mql::cases::{Case, Clock, Expect, Input, Offline, load_dir, values_match};
use argus_tests::{Agent, LiveClient, Server, binary, scratch_dir};
use serde_json::Value;

/// The field that names an event's stream in `argus mql`'s input.
const STREAM_FIELD: &str = "__stream";

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query/mql/tests/mql");
    let cases = load_dir(&dir).unwrap_or_else(|e| panic!("loading the MQL cases: {e}"));
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    cases
}

#[test]
fn every_case_through_argus_mql() {
    let dir = scratch_dir("mql-cases");
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let input = dir.join(format!("case-{i}.ndjson"));
        // Events of other streams (for joins) name theirs in a field the command removes.
        let mut body = String::new();
        for input in &case.events {
            let mut e = input.event.clone();
            if let (Some(stream), Value::Object(m)) = (&input.stream, &mut e) {
                m.insert(STREAM_FIELD.into(), Value::from(stream.as_str()));
            }
            body.push_str(&e.to_string());
            body.push('\n');
        }
        std::fs::write(&input, body).expect("writing the input");
        let mut cmd = std::process::Command::new(binary("argus"));
        cmd.arg("mql")
            .arg("--input")
            .arg(&input)
            .args(["--stream-field", STREAM_FIELD]);
        match &case.clock {
            Clock::Interval { ms } => cmd.args(["--interval-ms", &ms.to_string()]),
            Clock::EventTime { field } => cmd.args(["--time-field", &field.to_string()]),
        };
        cmd.args(["--seed", &case.seed.to_string()])
            .arg(&case.query);
        let out = cmd.output().expect("running argus mql");
        let outcome = if out.status.success() {
            let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| serde_json::from_str(l).expect("argus mql prints JSON rows"))
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

/// What a live subscription must deliver for a case, and how to replay it.
struct LivePlan {
    events: Vec<Input>,
    time_field: Option<String>,
    /// `None`: the case's own expectation holds; `Some`: exactly these rows.
    rows: Option<Vec<Value>>,
}

fn plan(case: &Case) -> Option<LivePlan> {
    let query = argus_mql::parse(&case.query).ok()?;
    // Time windows and join windows on the virtual clock replay in event time.
    let time_window = matches!(
        query.window,
        Some(Window::Tumbling { .. } | Window::Sliding { .. })
    ) || !query.joins.is_empty();
    let (events, clock, time_field) = match &case.clock {
        Clock::Interval { ms } if time_window => {
            // The virtual clock travels with each event.
            let events = case
                .events
                .iter()
                .enumerate()
                .map(|(i, input)| {
                    let mut input = input.clone();
                    if let Value::Object(m) = &mut input.event {
                        m.insert("__t".into(), Value::from((i as i64 + 1) * ms));
                    }
                    input
                })
                .collect();
            let field = argus_mql::parse_path("__t").ok()?;
            (events, Clock::EventTime { field }, Some("__t".to_string()))
        }
        Clock::Interval { .. } => (case.events.clone(), case.clock.clone(), None),
        Clock::EventTime { field } => (
            case.events.clone(),
            case.clock.clone(),
            Some(field.to_string()),
        ),
    };
    // The offline run as the live path sees it: no end of input, but (in event-time mode)
    // the open windows close once the stream is idle.
    let mut run = Offline::new(query.clone(), clock, case.seed);
    let mut live_rows = Vec::new();
    for e in &events {
        if run.done() {
            break;
        }
        live_rows.extend(run.push_from(e.stream.as_deref(), &e.event));
    }
    if time_field.is_some() {
        live_rows.extend(run.flush());
    }
    let converted = matches!(case.clock, Clock::Interval { .. }) && time_field.is_some();
    let full = argus_mql::cases::run_offline(&query, &case.events, case.clock.clone(), case.seed);
    let same_as_file = !converted
        && full.len() == live_rows.len()
        && full.iter().zip(&live_rows).all(|(a, b)| values_match(a, b));
    // Where the live rows are the whole offline run, the case's own expectation holds
    // (random sampling included); otherwise exactly the rows before the end.
    let rows = (!same_as_file).then_some(live_rows);
    Some(LivePlan {
        events,
        time_field,
        rows,
    })
}

/// `tick()` or sampling by rate: the rows depend on the clock itself.
fn reads_the_clock(case: &Case) -> bool {
    use argus_mql::ast::{Select, SelectExpr, Strategy};
    let Ok(q) = argus_mql::parse(&case.query) else {
        return false;
    };
    let tick = matches!(&q.select, Select::Items(items) if items.iter().any(|i| i.expr == SelectExpr::Tick));
    tick || q
        .sample
        .as_ref()
        .is_some_and(|s| s.strategy == Strategy::Rps)
}

fn wait_agent_subscriptions(agent: &Agent, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent.health()["live.subscriptions"].as_u64() != Some(n) {
        assert!(
            Instant::now() < deadline,
            "the agent never had {n} subscriptions"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn strip_clock(row: &Value) -> Value {
    match row {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "__t")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// What one lane of the live replay saw.
#[derive(Default)]
struct LaneReport {
    replayed: usize,
    failures: Vec<String>,
    offline_only: Vec<String>,
}

/// Replays cases one after the other through a server and an agent of their own. Most of a
/// case's time is spent making sure no row too many arrives, so lanes run side by side.
fn replay_live(cases: Vec<Case>) -> LaneReport {
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    wait_agent_subscriptions(&agent, 0);
    let mut failures = Vec::new();
    let mut replayed = 0;
    let mut offline_only = Vec::new();
    for case in cases {
        if let Expect::Error(want) = &case.expect {
            // Refused at subscribe time, with the parser's message; never reaches an agent.
            let (status, body) =
                server.get(&format!("/api/v1/live?q={}", argus_tests::enc(&case.query)));
            if status != 400 || !body.contains(want.as_str()) {
                failures.push(format!(
                    "{}: expected 400 containing {want:?}, got {status} {body}",
                    case.location()
                ));
            }
            continue;
        }
        if reads_the_clock(&case) {
            offline_only.push(case.location());
            continue;
        }
        let Some(plan) = plan(&case) else {
            failures.push(format!("{}: the query does not parse", case.location()));
            continue;
        };
        let query = argus_mql::parse(&case.query).expect("parsed above");
        let primary = query.from[0].clone();
        let mut flags = Vec::new();
        if let Some(f) = &plan.time_field {
            flags.push("--time-field".to_string());
            flags.push(f.clone());
        }
        let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
        let live = LiveClient::start(&server, &flag_refs, &case.query);
        live.wait_subscribed();
        wait_agent_subscriptions(&agent, 1);
        // Each run of events of one stream in one request, in order.
        let mut at = 0;
        while at < plan.events.len() {
            let stream = plan.events[at].stream.clone();
            let mut body = Vec::new();
            while at < plan.events.len() && plan.events[at].stream == stream {
                body.extend_from_slice(plan.events[at].event.to_string().as_bytes());
                body.push(b'\n');
                at += 1;
            }
            let stream = stream.unwrap_or_else(|| primary.clone());
            let (status, text) = agent.post(&format!("/v1/events/{stream}"), &body);
            assert_eq!(status, 200, "{}: {text}", case.location());
        }
        let expected_count = match (&plan.rows, &case.expect) {
            (Some(rows), _) => Some(rows.len()),
            (None, Expect::Rows { rows, .. }) => Some(rows.len()),
            _ => None,
        };
        // Wait for the expected rows (open event-time windows close after a second idle),
        // then a little longer for any row too many.
        let deadline = Instant::now() + Duration::from_secs(10);
        match expected_count {
            Some(n) if n > 0 => {
                while live.rows().len() < n && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            _ => std::thread::sleep(Duration::from_millis(1600)),
        }
        let rows: Vec<Value> = live.rows().iter().map(strip_clock).collect();
        let outcome = match &plan.rows {
            None => case.check(Ok(&rows)),
            Some(want) => {
                // Exactly the rows before the end, in the case's order or any order.
                let ordered = !matches!(case.expect, Expect::Rows { ordered: false, .. });
                let mut exact = case.clone();
                exact.expect = Expect::Rows {
                    rows: want.iter().map(strip_clock).collect(),
                    ordered,
                };
                exact
                    .check(Ok(&rows))
                    .map_err(|e| format!("{e}\n(live: the stream never ends)"))
            }
        };
        if let Err(e) = outcome {
            failures.push(e);
        }
        drop(live);
        wait_agent_subscriptions(&agent, 0);
        replayed += 1;
    }
    LaneReport {
        replayed,
        failures,
        offline_only,
    }
}

/// Lanes of the live replay: each a server, an agent and a client of its own.
const LIVE_LANES: usize = 4;

#[test]
fn every_case_through_the_live_path() {
    let mut lanes: Vec<Vec<Case>> = vec![Vec::new(); LIVE_LANES];
    for (i, case) in cases().into_iter().enumerate() {
        lanes[i % LIVE_LANES].push(case);
    }
    let reports: Vec<LaneReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = lanes
            .into_iter()
            .map(|cases| scope.spawn(move || replay_live(cases)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a lane of the live replay panicked"))
            .collect()
    });
    let replayed: usize = reports.iter().map(|r| r.replayed).sum();
    let failures: Vec<String> = reports.iter().flat_map(|r| r.failures.clone()).collect();
    let offline_only: Vec<String> = reports
        .iter()
        .flat_map(|r| r.offline_only.clone())
        .collect();
    eprintln!(
        "{replayed} cases replayed live; through argus mql only: {}",
        offline_only.join(", ")
    );
    assert!(replayed >= 40, "only {replayed} cases replayed live");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn argus_mql_names_a_bad_input_line() {
    let dir = scratch_dir("mql-bad-input");
    let input = dir.join("events.ndjson");
    std::fs::write(&input, "{\"a\": 1}\n{\"a\": \n[1]\n").expect("writing the input");
    for (query, want) in [
        ("select a from s", "input line 2: invalid JSON"),
        ("select a from s where", "invalid MQL query"),
    ] {
        let out = std::process::Command::new(binary("argus"))
            .args(["mql", "--input"])
            .arg(&input)
            .arg(query)
            .output()
            .expect("running argus mql");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want),
            "{query}: {stderr}"
        );
    }
}
