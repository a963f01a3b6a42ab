//! The Prometheus query API as its real clients call it: the calls Grafana's Prometheus data
//! source makes (replayed as it sends them, form POSTs included), and Debian's `promtool
//! query` against a real server holding real data.

use std::process::Command;

use argus_tests::{Server, debian_packages, eventually, now_ms};
use serde_json::{Value, json};

/// curl with a form body (Grafana's default) or a plain GET: (status, JSON body).
fn call(server: &Server, method: &str, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"]);
    if method == "GET" {
        cmd.arg("-G");
    }
    for (k, v) in form {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd
        .arg(format!("{}{path}", server.base))
        .output()
        .expect("running curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code.trim().parse().unwrap_or(0), body)
}

/// Two gauges and a third series, backfilled at the last three whole minutes.
fn load(server: &Server) -> i64 {
    let minute = (now_ms() / 60_000) * 60_000;
    let mut metrics = Vec::new();
    for (i, t) in [minute - 120_000, minute - 60_000, minute]
        .iter()
        .enumerate()
    {
        let i = i as f64;
        for (app, base) in [("www", 10.0), ("api", 1.0)] {
            metrics.push(
                json!({"tags": {"name": "sys.cpu.utilization", "nf.app": app,
                "atlas.dstype": "gauge"}, "timestamp": t, "value": base + i}),
            );
        }
        metrics.push(json!({"tags": {"name": "http_requests", "job": "web",
            "atlas.dstype": "gauge"}, "timestamp": t, "value": 5.0}));
    }
    let (status, body) = server.post(
        "/api/v1/backfill",
        json!({"metrics": metrics}).to_string().as_bytes(),
        None,
    );
    assert_eq!(status, 200, "{body}");
    minute
}

#[test]
fn grafanas_calls_get_prometheus_answers() {
    let server = Server::start(&["--ephemeral"]);
    let minute = load(&server);

    // Save & test: exactly Prometheus's answer.
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/query",
        &[("query", "1+1"), ("time", "4")],
    );
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}})
    );

    // Version detection: a Prometheus version, no features (which would mean Mimir).
    let (status, body) = call(&server, "GET", "/api/v1/status/buildinfo", &[]);
    assert_eq!(status, 200);
    assert_eq!(body["status"], "success");
    assert!(
        body["data"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("2.")),
        "{body}"
    );
    assert!(
        body["data"].get("features").is_none_or(|f| f == &json!({})),
        "{body}"
    );

    // The label and metric pickers.
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/labels",
        &[("match[]", r#"{__name__=~".+"}"#)],
    );
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"status": "success", "data": ["__name__", "job", "nf.app"]})
    );
    let (status, body) = call(
        &server,
        "GET",
        "/api/v1/label/__name__/values",
        &[("match[]", r#"{__name__=~".+"}"#), ("limit", "40000")],
    );
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!(["http_requests", "sys.cpu.utilization"])
    );
    // A dotted label name, escaped as Prometheus 3 escapes it.
    let (_, body) = call(&server, "GET", "/api/v1/label/U__nf_2e_app/values", &[]);
    assert_eq!(body["data"], json!(["api", "www"]));
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/series",
        &[("match[]", r#"{"sys.cpu.utilization","nf.app"="www"}"#)],
    );
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"__name__": "sys.cpu.utilization", "nf.app": "www"}])
    );

    // A time-series panel: float-second start, end and step.
    let start = format!("{:.3}", (minute - 120_000) as f64 / 1000.0);
    let end = format!("{:.3}", minute as f64 / 1000.0);
    let (status, body) = call(
        &server,
        "POST",
        "/api/v1/query_range",
        &[
            ("query", r#"sum by ("nf.app") ({"sys.cpu.utilization"})"#),
            ("start", &start),
            ("end", &end),
            ("step", "60"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    let t = |ms: i64| json!(ms / 1000);
    assert_eq!(
        body["data"]["result"],
        json!([
            {"metric": {"nf.app": "api"}, "values": [[t(minute - 120_000), "1"], [t(minute - 60_000), "2"], [t(minute), "3"]]},
            {"metric": {"nf.app": "www"}, "values": [[t(minute - 120_000), "10"], [t(minute - 60_000), "11"], [t(minute), "12"]]},
        ])
    );
    // An instant panel.
    let (_, body) = call(
        &server,
        "GET",
        "/api/v1/query",
        &[
            ("query", r#"max({__name__="sys.cpu.utilization"})"#),
            ("time", &end),
        ],
    );
    assert_eq!(
        body["data"],
        json!({"resultType": "vector", "result": [{"metric": {}, "value": [t(minute), "12"]}]})
    );
    // The probes Grafana makes at start.
    let (_, body) = call(&server, "GET", "/api/v1/query_exemplars", &[("query", "x")]);
    assert_eq!(body, json!({"status": "success", "data": []}));
    let (_, body) = call(&server, "GET", "/api/v1/rules", &[]);
    assert_eq!(body, json!({"status": "success", "data": {"groups": []}}));
    let (_, body) = call(
        &server,
        "GET",
        "/api/v1/metadata",
        &[("metric", "sys.cpu.utilization")],
    );
    assert_eq!(body["data"]["sys.cpu.utilization"][0]["type"], "gauge");
    let (_, body) = call(
        &server,
        "GET",
        "/api/v1/format_query",
        &[("query", "sum(rate(x[5m]))by(a)")],
    );
    assert_eq!(body["data"], "sum by (a) (rate(x[5m]))");

    // Errors in Prometheus's words and codes.
    let (status, body) = call(
        &server,
        "GET",
        "/api/v1/query",
        &[("query", "sum(rate(x[5m])")],
    );
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    let (status, body) = call(
        &server,
        "GET",
        "/api/v1/query_range",
        &[("query", "1"), ("start", "10"), ("end", "0"), ("step", "1")],
    );
    assert_eq!(
        (status, body["errorType"].clone()),
        (400, json!("bad_data")),
        "{body}"
    );
    let (status, body) = call(&server, "GET", "/api/v1/series", &[]);
    assert_eq!(
        (status, body["errorType"].clone()),
        (400, json!("bad_data")),
        "{body}"
    );
}

#[test]
fn promtool_queries_argus() {
    assert!(
        debian_packages("/usr/bin/promtool", &["prometheus"]),
        "installing Debian's prometheus (promtool)"
    );
    let server = Server::start(&["--ephemeral"]);
    let minute = load(&server);
    let promtool = |args: &[&str]| {
        let out = Command::new("/usr/bin/promtool")
            .arg("query")
            .args(args)
            .output()
            .expect("running promtool");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "promtool query {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let base = server.base.clone();
    let instant = eventually(10, "promtool's instant query", || {
        let text = promtool(&["instant", &base, r#"sum by (job) (http_requests)"#]);
        text.contains("=> 5").then_some(text)
    });
    assert!(instant.contains(r#"{job="web"} => 5"#), "{instant}");
    let (start, end) = (
        ((minute - 120_000) / 1000).to_string(),
        (minute / 1000).to_string(),
    );
    let range = promtool(&[
        "range",
        "--start",
        &start,
        "--end",
        &end,
        "--step",
        "1m",
        &base,
        r#"max({"sys.cpu.utilization"})"#,
    ]);
    for v in ["10", "11", "12"] {
        assert!(range.contains(&format!("{v} @[")), "{range}");
    }
    let series = promtool(&["series", "--match", r#"{__name__="http_requests"}"#, &base]);
    assert!(
        series.contains(r#"{__name__="http_requests", job="web"}"#),
        "{series}"
    );
    let labels = promtool(&["labels", &base, "job"]);
    assert_eq!(labels.trim(), "web", "{labels}");
}

/// A form POST of one query, however long (past what a command line takes).
fn post_query(server: &Server, path: &str, query: &str) -> (u16, Value) {
    let mut resp = Server::agent()
        .post(&format!("{}{path}", server.base))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(format!("query={}", argus_tests::enc(query)).as_bytes())
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, body)
}

/// `n` gauge series named `wide`, one per user, at the last whole minute.
fn load_wide(server: &Server, n: usize) -> i64 {
    let minute = (now_ms() / 60_000) * 60_000;
    let metrics: Vec<Value> = (0..n)
        .map(|i| {
            json!({"tags": {"name": "wide", "user_id": format!("u{i}"), "atlas.dstype": "gauge"},
                   "timestamp": minute, "value": 1.0})
        })
        .collect();
    let (status, body) = server.post(
        "/api/v1/backfill",
        json!({"metrics": metrics}).to_string().as_bytes(),
        None,
    );
    assert_eq!(status, 200, "{body}");
    minute
}

#[test]
fn bad_queries_get_prometheus_errors_and_never_take_the_server_down() {
    let server = Server::start(&["--ephemeral", "--query-max-series", "1000"]);
    let minute = load_wide(&server, 2_000);
    let time = (minute / 1000).to_string();

    // Unparseable: 400 bad_data saying where, as Prometheus does (line:column).
    let (status, body) = call(&server, "GET", "/api/v1/query", &[("query", "x{a=}")]);
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("bad_data"))
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("1:5: parse error"),
        "{body}"
    );

    // Over the series limit: 422 naming the limit.
    let (status, body) = call(
        &server,
        "GET",
        "/api/v1/query",
        &[("query", "sum(wide)"), ("time", &time)],
    );
    assert_eq!(
        (status, body["errorType"].as_str()),
        (422, Some("execution"))
    );
    let error = body["error"].as_str().unwrap_or("");
    assert!(
        error.contains("--query-max-series") && error.contains("1000"),
        "{body}"
    );
    let (status, body) = call(
        &server,
        "GET",
        "/api/v1/query",
        &[
            ("query", r#"count(wide{user_id=~"u1.."})"#),
            ("time", &time),
        ],
    );
    assert_eq!(status, 200, "a narrower query runs: {body}");
    assert_eq!(body["data"]["result"][0]["value"][1], "100");

    // Nesting: as deep as the limit allows is answered; deeper is refused before parsing;
    // neither overflows a stack. (A 1,000-term sum once took the server down.)
    let deep = format!("1{}", "+1".repeat(1_000));
    let (status, body) = post_query(&server, "/api/v1/query", &deep);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["result"][1], "1001");
    for hostile in [
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("1{}", "+1".repeat(100_000)),
        format!("{}vector(1){}", "abs(".repeat(50_000), ")".repeat(50_000)),
    ] {
        for path in [
            "/api/v1/query",
            "/api/v1/format_query",
            "/api/v1/parse_query",
        ] {
            let (status, body) = post_query(&server, path, &hostile);
            assert_eq!(
                (status, body["errorType"].as_str()),
                (400, Some("bad_data"))
            );
            assert!(
                body["error"]
                    .as_str()
                    .unwrap_or("")
                    .contains("nests too deeply"),
                "{body}"
            );
        }
    }
    let (status, body) = call(&server, "POST", "/api/v1/query", &[("query", "1+1")]);
    assert_eq!(
        (status, body["data"]["result"][1].as_str()),
        (200, Some("2"))
    );

    // Past the deadline: 503 timeout naming the flag.
    let slow = Server::start(&["--ephemeral", "--query-timeout", "1ms"]);
    let minute = load_wide(&slow, 5_000);
    let (status, body) = call(
        &slow,
        "GET",
        "/api/v1/query_range",
        &[
            ("query", "sum by (user_id) (wide)"),
            ("start", &((minute - 3_600_000) / 1000).to_string()),
            ("end", &(minute / 1000).to_string()),
            ("step", "15"),
        ],
    );
    assert_eq!((status, body["errorType"].as_str()), (503, Some("timeout")));
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("--query-timeout"),
        "{body}"
    );
}

/// `argus query` and `argus tags` against a real server: both languages, every output, and
/// an error in the API's words with a failing exit status.
#[test]
fn the_cli_asks_in_both_languages_and_browses_tags() {
    let server = Server::start(&["--ephemeral"]);
    let minute = load(&server);
    let argus = |args: &[&str]| {
        let out = Command::new(argus_tests::binary("argus"))
            .args(args)
            .arg(format!("--server={}", server.base))
            .output()
            .expect("running argus");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // The Stack Language: a time column and a column per line.
    let (ok, table, err) = argus(&[
        "query",
        "name,sys.cpu.utilization,:eq,(,nf.app,),:by",
        "--from",
        "e-3m",
    ]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("time") && lines[0].contains("(nf.app=api)"),
        "{table}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("3.0") && l.contains("12.0")),
        "{table}"
    );
    // PromQL, instant: a row per series.
    let (ok, table, err) = argus(&[
        "query",
        "--promql",
        r#"sum by ("nf.app") ({"sys.cpu.utilization"})"#,
        "--to",
        &(minute / 1000).to_string(),
    ]);
    assert!(ok, "{err}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("{nf.app=www}") && l.ends_with("12")),
        "{table}"
    );
    // PromQL, range, as CSV: a row per time, a column per series.
    let (ok, csv, err) = argus(&[
        "query",
        "--promql",
        r#"max({"sys.cpu.utilization"})"#,
        "--from",
        &((minute - 120_000) / 1000).to_string(),
        "--to",
        &(minute / 1000).to_string(),
        "-o",
        "csv",
    ]);
    assert!(ok, "{err}");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows[0].starts_with("time,"), "{csv}");
    assert!(rows[3].ends_with(",12"), "{csv}");
    // JSON: the API's answer as it came.
    let (ok, json_text, err) = argus(&["query", "--promql", "1+1", "-o", "json"]);
    assert!(ok, "{err}");
    let answer: Value = serde_json::from_str(&json_text).expect("JSON");
    assert_eq!(answer["data"]["result"][1], "2");
    // The tag browser.
    let (ok, keys, err) = argus(&["tags"]);
    assert!(ok, "{err}");
    assert!(keys.lines().any(|l| l == "nf.app"), "{keys}");
    let (ok, values, err) = argus(&["tags", "nf.app", "--counts"]);
    assert!(ok, "{err}");
    assert!(values.lines().any(|l| l == "www\t1"), "{values}");
    // An error: the API's words, and a failing status.
    let (ok, _, err) = argus(&["query", "--promql", "sum("]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("parse error"), "{err}");
}
