//! Netflix's own instrumentation through the agent, unchanged: PyPI's `netflix-spectator-py`
//! writes every meter type to the agent's SpectatorD listener, over UDP at the clients'
//! default address (127.0.0.1:1234) and over a Unix datagram socket, and every value reads
//! back exactly through the graph API; a percentile timer answers `:percentiles` within
//! Spectator's bucket error.

use std::path::{Path, PathBuf};
use std::process::Command;

use argus_tests::{Agent, Server, enc, eventually, now_ms, python_with, scratch_dir};
use serde_json::Value;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spectator/spectator_py.py")
}

/// Runs the client script; returns what it printed.
fn run_client(python: &Path, location: &str, via: &str, mode: &str) -> Value {
    let out = Command::new(python)
        .arg(script())
        .args([location, via, mode])
        .output()
        .expect("running the spectator-py script");
    assert!(
        out.status.success(),
        "spectator-py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the script's JSON")
}

/// The window's statistics of `q` (one line) at 1 s steps.
fn stats(server: &Server, q: &str, start: i64) -> Option<Value> {
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s={}&e={}&step=1s&format=stats.json",
        enc(q),
        start - 2000,
        now_ms() + 2000
    ));
    let line = v["stats"].as_array()?.first()?.clone();
    (line["count"].as_u64()? > 0).then_some(line)
}

/// Spectator's percentile bucket values (1, 2, 3, then each power of 4 in thirds).
fn bucket_values() -> Vec<i64> {
    let mut values = vec![1i64, 2, 3];
    for exp in (2..64).step_by(2) {
        let mut current = 1i64 << exp;
        let delta = current / 3;
        let next = current.wrapping_shl(2).wrapping_sub(delta);
        while current < next {
            values.push(current);
            current += delta;
        }
    }
    values.push(i64::MAX);
    values
}

/// The width of the bucket `v` falls in: how far an estimate may be from `v`.
fn bucket_width(v: i64) -> i64 {
    let values = bucket_values();
    let i = values.partition_point(|&b| b <= v).min(values.len() - 1);
    values[i] - if i == 0 { 0 } else { values[i - 1] }
}

fn check_meters(server: &Server, via: &str, start: i64, one_datagram: bool) {
    let q = |name: &str, statistic: &str, aggr: &str| {
        format!("name,{name},:eq,via,{via},:eq,:and,statistic,{statistic},:eq,:and,{aggr}")
    };
    let total = |name: &str, statistic: &str| {
        eventually(30, &format!("{name} {statistic} via {via}"), || {
            stats(server, &q(name, statistic, ":sum"), start)
        })["total"]
            .as_f64()
            .expect("a total")
    };
    let close = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() < 1e-9,
            "{what} via {via}: {got} != {want}"
        );
    };
    // Counters and timers' rates, at 1 s steps, add up to what was recorded.
    close(total("sp.requests", "count"), 5.5, "counter");
    close(total("sp.latency", "count"), 2.0, "timer count");
    close(total("sp.latency", "totalTime"), 0.4, "timer totalTime");
    close(
        total("sp.latency", "totalOfSquares"),
        0.1,
        "timer totalOfSquares",
    );
    close(total("sp.size", "count"), 2.0, "summary count");
    close(
        total("sp.size", "totalAmount"),
        400.0,
        "summary totalAmount",
    );
    close(
        total("sp.size", "totalOfSquares"),
        100_000.0,
        "summary totalOfSquares",
    );
    close(total("sp.bytes", "count"), 750.0, "monotonic counter");
    close(
        total("sp.packets", "count"),
        25.0,
        "monotonic counter (uint)",
    );
    close(total("sp.plat", "count"), 1000.0, "percentile timer count");
    close(
        total("sp.plat", "totalTime"),
        500.5,
        "percentile timer totalTime",
    );
    close(
        total("sp.psize", "count"),
        100.0,
        "percentile summary count",
    );
    // The percentile buckets hold every recorded value.
    close(total("sp.plat", "percentile"), 1000.0, "percentile buckets");
    let stat = |name: &str, statistic: &str, aggr: &str, field: &str| {
        eventually(30, &format!("{name} {statistic} via {via}"), || {
            stats(server, &q(name, statistic, aggr), start)
        })[field]
            .as_f64()
            .expect("a value")
    };
    close(stat("sp.latency", "max", ":max", "max"), 0.3, "timer max");
    close(stat("sp.size", "max", ":max", "max"), 300.0, "summary max");
    close(stat("sp.queue", "gauge", ":max", "last"), 9.0, "gauge");
    close(stat("sp.conn.max", "max", ":max", "max"), 99.0, "max gauge");
    let age = stat("sp.since", "gauge", ":max", "min");
    let elapsed = (now_ms() - start) as f64 / 1000.0;
    assert!(
        (100.0..=100.0 + elapsed + 2.0).contains(&age),
        "age gauge via {via}: {age} s, expected 100 to {}",
        100.0 + elapsed + 2.0
    );
    let distinct = stat("sp.users", "gauge", ":max", "max");
    if one_datagram {
        close(distinct, 2.0, "distinct values");
    } else {
        // One datagram per call: the three values may fall in two steps.
        assert!(
            (1.0..=2.0).contains(&distinct),
            "distinct via {via}: {distinct}"
        );
    }
}

#[test]
fn spectator_py_unchanged_over_udp_and_a_unix_socket_reads_back_exactly() {
    let python = python_with(&["netflix-spectator-py==1.2.1"]);
    let dir = scratch_dir("spectatord");
    let socket = dir.join("spectatord.unix");
    let server = Server::start(&["--step", "1s"]);
    // The clients' default UDP address, as a service's sidecar has it.
    let agent = Agent::start(
        &server.grpc,
        &[
            "--step",
            "1s",
            "--no-host-metrics",
            "--spectatord-addr",
            "127.0.0.1:1234",
            "--spectatord-socket",
            socket.to_str().expect("a path"),
        ],
    );
    assert_eq!(agent.spectatord, "127.0.0.1:1234");
    let start = now_ms();

    // The default location, one datagram per call.
    let udp = run_client(&python, "udp", "udp", "single");
    // The Unix socket, every line in one datagram (the client's buffer).
    let unix = run_client(
        &python,
        &format!("unix://{}", socket.display()),
        "unix",
        "buffered",
    );
    assert!(udp["since"].as_i64().is_some() && unix["since"].as_i64().is_some());
    check_meters(&server, "udp", start, false);
    check_meters(&server, "unix", start, true);

    // :percentiles of the timer sent in one datagram (one step), against the true
    // percentiles of its 1,000 values, within the width of the true value's bucket.
    let values: Vec<f64> = unix["plat"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    let q = "name,sp.plat,:eq,via,unix,:eq,:and,(,50,90,99,),:percentiles";
    let graph = eventually(30, "the percentiles", || {
        let v = server.get_json(&format!(
            "/api/v1/graph?q={}&s={}&e={}&step=1s&format=json",
            enc(q),
            start - 2000,
            now_ms() + 2000
        ));
        let row = v["values"]
            .as_array()?
            .iter()
            .find(|row| row[0].is_number())?
            .clone();
        Some((v["legend"].clone(), row))
    });
    let (legend, row) = graph;
    for (i, pct) in [50.0, 90.0, 99.0].iter().enumerate() {
        let estimate_s = row[i].as_f64().expect("an estimate");
        let rank = ((pct / 100.0) * values.len() as f64).ceil() as usize - 1;
        let truth_ns = (values[rank] * 1e9).round() as i64;
        let error_ns = (estimate_s * 1e9 - truth_ns as f64).abs();
        eprintln!(
            "{}: estimate {estimate_s:.6} s, true {:.6} s, off by {:.2}% (bucket width {:.2}%)",
            legend[i],
            truth_ns as f64 / 1e9,
            100.0 * error_ns / truth_ns as f64,
            100.0 * bucket_width(truth_ns) as f64 / truth_ns as f64
        );
        assert!(
            error_ns <= bucket_width(truth_ns) as f64,
            "p{pct}: {estimate_s} s vs {} s",
            truth_ns as f64 / 1e9
        );
    }

    // Malformed lines are counted by reason; the good line of the same datagram counts.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("a socket");
    sock.send_to(
        b"c:sp.good,via=raw:1\nq:x:1\nc:x:abc\nc:1\n",
        "127.0.0.1:1234",
    )
    .expect("sending");
    let health = eventually(10, "the malformed lines counted", || {
        let h = agent.health();
        (h["dropped.id=spectatord_lines.reason=bad_value"] == 1).then_some(h)
    });
    assert_eq!(
        health["dropped.id=spectatord_lines.reason=unknown_type"], 1,
        "{health}"
    );
    assert_eq!(
        health["dropped.id=spectatord_lines.reason=missing_name"], 1,
        "{health}"
    );
    let good = eventually(30, "the good line", || {
        stats(&server, "name,sp.good,:eq,:sum", start)
    });
    assert_eq!(good["total"], 1.0);
}

/// npm's `nflx-spectator` in a scratch project (Debian's Node and npm, the package from
/// npm's registry; its install script is not needed and not run).
fn nflx_spectator() -> PathBuf {
    assert!(
        argus_tests::debian_packages("/usr/bin/npm", &["nodejs", "npm"]),
        "Debian's nodejs and npm are needed (apt-get as root or with sudo -n)"
    );
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe
        .ancestors()
        .nth(3)
        .expect("the target directory")
        .join("e2e-npm-nflx-spectator-1.0.0");
    if !dir
        .join("node_modules/nflx-spectator/package.json")
        .exists()
    {
        std::fs::create_dir_all(&dir).expect("the npm project");
        let status = Command::new("npm")
            .args([
                "install",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--silent",
                "--prefix",
            ])
            .arg(&dir)
            .arg("nflx-spectator@1.0.0")
            .status()
            .expect("running npm");
        assert!(status.success(), "npm install nflx-spectator@1.0.0 failed");
    }
    dir
}

/// Runs two client instances and a third with a refused measurement against `uri`;
/// returns the client's log lines.
fn run_node(project: &Path, uri: &str, via: &str) -> Vec<String> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spectator/nflx_spectator.js");
    let out = Command::new("node")
        .arg(script)
        .args([uri, via])
        .env("NODE_PATH", project.join("node_modules"))
        .output()
        .expect("running node");
    assert!(
        out.status.success(),
        "nflx-spectator: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    v["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .map(|l| l.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The aggregator's payload from npm's nflx-spectator, unchanged, at the server and at the
/// agent's intake: two instances' counters add up, gauges keep the max, timers' statistics
/// add up; a refused measurement gives the counts and reasons the client logs, and the rest
/// of its payload is kept.
#[test]
fn nflx_spectator_unchanged_at_the_server_and_the_agent() {
    let project = nflx_spectator();
    let server = Server::start(&["--step", "1s"]);
    let agent = Agent::start(&server.grpc, &["--step", "1s", "--no-host-metrics"]);
    let start = now_ms();
    for (uri, via) in [
        (format!("{}/api/v4/update", server.base), "server"),
        (format!("{}/api/v4/update", agent.intake), "agent"),
    ] {
        let logs = run_node(&project, &uri, via);
        let refused: Vec<&String> = logs
            .iter()
            .filter(|l| l.contains("dropped due to validation errors"))
            .collect();
        assert_eq!(refused.len(), 1, "via {via}: {logs:?}");
        assert!(
            refused[0].starts_with("info: 1 measurement(s) dropped due to validation errors: "),
            "via {via}: {}",
            refused[0]
        );
        assert!(refused[0].contains("name"), "via {via}: {}", refused[0]);
        eprintln!("via {via}, the client logged: {}", refused[0]);

        let q = |name: &str, statistic: &str, aggr: &str| {
            format!("name,{name},:eq,via,{via},:eq,:and,statistic,{statistic},:eq,:and,{aggr}")
        };
        let value = |q: String, field: &str, want: f64| {
            let got = eventually(30, &format!("{q} = {want}"), || {
                let line = stats(&server, &q, start)?;
                let got = line[field].as_f64()?;
                ((got - want).abs() < 1e-9).then_some(got)
            });
            eprintln!("via {via}: {q} {field} = {got}");
        };
        value(q("nflx.requests", "count", ":sum"), "total", 7.0);
        value(q("nflx.queue", "gauge", ":max"), "max", 9.0);
        value(q("nflx.latency", "count", ":sum"), "total", 2.0);
        value(q("nflx.latency", "totalTime", ":sum"), "total", 1.0);
        value(q("nflx.latency", "max", ":max"), "max", 0.75);
        // The refused measurement's payload kept its other measurement.
        value(q("nflx.valid", "count", ":sum"), "total", 2.0);
    }
}
