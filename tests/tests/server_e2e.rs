//! End-to-end: the real `argus` binary on an ephemeral port; publish a mix of valid and
//! invalid datapoints for all four dstypes, then read exact values back through the graph
//! and tags APIs.

use argus_tests::{Server, enc, now_ms};
use serde_json::{Value, json};

const STEP: i64 = 10_000;

fn graph(server: &Server, q: &str, s: i64, e: i64) -> Value {
    server.get_json(&format!(
        "/api/v1/graph?q={}&s={s}&e={e}&step=10s&format=json",
        enc(q)
    ))
}

/// The values of the only line of a graph response, as f64 (NaN for "NaN").
fn line(v: &Value) -> Vec<f64> {
    v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| match &row[0] {
            Value::Number(n) => n.as_f64().unwrap(),
            Value::String(s) if s == "NaN" => f64::NAN,
            other => panic!("unexpected value {other}"),
        })
        .collect()
}

fn same(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
}

#[test]
fn publish_mixed_dstypes_and_read_back_exactly() {
    let server = Server::start(&["--step", "10s"]);
    // Four whole steps in the past, inside Atlas's one-minute publish window.
    let t0 = (now_ms() / STEP) * STEP - 4 * STEP;
    let t = |i: i64| t0 + i * STEP;
    let payload = json!({
        "tags": {"nf.app": "e2e", "nf.node": "i-1"},
        "metrics": [
            // gauge: rounds up to the step end; max wins within a step
            {"tags": {"name": "e2e.gauge", "atlas.dstype": "gauge"}, "timestamp": t(0) + 1, "value": 5.0},
            {"tags": {"name": "e2e.gauge", "atlas.dstype": "gauge"}, "timestamp": t(1), "value": 7.25},
            {"tags": {"name": "e2e.gauge", "atlas.dstype": "gauge"}, "timestamp": t(1), "value": 3.0},
            // sum: values in one step add up
            {"tags": {"name": "e2e.sum", "atlas.dstype": "sum"}, "timestamp": t(2), "value": 1.5},
            {"tags": {"name": "e2e.sum", "atlas.dstype": "sum"}, "timestamp": t(2) - 1, "value": 2.0},
            // counter: a per-second rate from the second sample on
            {"tags": {"name": "e2e.counter", "atlas.dstype": "counter"}, "timestamp": t(1), "value": 100},
            {"tags": {"name": "e2e.counter", "atlas.dstype": "counter"}, "timestamp": t(2), "value": 160},
            {"tags": {"name": "e2e.counter", "atlas.dstype": "counter"}, "timestamp": t(3), "value": 190},
            // rate (the default): on a step boundary it is stored as is
            {"tags": {"name": "e2e.rate"}, "timestamp": t(3), "value": 0.125},
            // invalid: no name, a bad character, too old, from the future, a bad dstype
            {"tags": {"nf.cluster": "x"}, "timestamp": t(1), "value": 1},
            {"tags": {"name": "e2e.bad", "path": "/a b"}, "timestamp": t(1), "value": 1},
            {"tags": {"name": "e2e.old"}, "timestamp": t(0) - 3_600_000, "value": 1},
            {"tags": {"name": "e2e.future"}, "timestamp": t(0) + 3_600_000, "value": 1},
            {"tags": {"name": "e2e.ds", "atlas.dstype": "histogram"}, "timestamp": t(1), "value": 1},
            {"tags": {"name": "e2e.val"}, "timestamp": t(1), "value": "lots"}
        ]
    });
    let (status, body) = server.post("/api/v1/publish", payload.to_string().as_bytes(), None);
    assert_eq!(status, 202, "{body}");
    let resp: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(resp["type"], "partial");
    assert_eq!(resp["errorCount"], 6);
    let msgs = resp["message"].as_array().unwrap();
    assert_eq!(msgs.len(), 5, "at most five reasons: {msgs:?}");
    assert!(
        msgs[0].as_str().unwrap().contains("missing key 'name'"),
        "{msgs:?}"
    );
    assert!(
        msgs[1].as_str().unwrap().contains("invalid character"),
        "{msgs:?}"
    );
    assert!(msgs[2].as_str().unwrap().contains("too old"), "{msgs:?}");

    let n = f64::NAN;
    // As in Atlas, the first point is one step after `s`.
    let (s, e) = (t(0) - STEP, t(4));
    let gauge = graph(&server, "name,e2e.gauge,:eq,:sum", s, e);
    assert!(same(&line(&gauge), &[n, 7.25, n, n, n]), "{gauge}");
    assert_eq!(gauge["start"], t(0));
    assert_eq!(gauge["step"], STEP);
    assert_eq!(gauge["legend"][0], "name=e2e.gauge");
    assert_eq!(gauge["metrics"][0]["name"], "e2e.gauge");
    let sum = graph(&server, "name,e2e.sum,:eq,:sum", s, e);
    assert!(same(&line(&sum), &[n, n, 3.5, n, n]), "{sum}");
    let counter = graph(&server, "name,e2e.counter,:eq,:sum", s, e);
    assert!(same(&line(&counter), &[n, n, 6.0, 3.0, n]), "{counter}");
    let rate = graph(&server, "name,e2e.rate,:eq,:max", s, e);
    assert!(same(&line(&rate), &[n, n, n, 0.125, n]), "{rate}");

    // group by over everything published, with the exact key kept on the result
    let by = graph(&server, "nf.app,e2e,:eq,:count,(,name,),:by", s, e);
    let legend: Vec<&str> = by["legend"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        legend,
        [
            "(name=e2e.counter)",
            "(name=e2e.gauge)",
            "(name=e2e.rate)",
            "(name=e2e.sum)"
        ]
    );
    assert_eq!(by["metrics"][0]["nf.app"], "e2e");

    // nothing matches: Atlas's NO DATA line
    let none = graph(&server, "name,nothing,:eq,:sum", s, e);
    assert_eq!(none["legend"][0], "NO DATA");

    // tags API
    let keys = server.get_json("/api/v1/tags");
    assert_eq!(keys, json!(["atlas.dstype", "name", "nf.app", "nf.node"]));
    let names = server.get_json("/api/v1/tags/name");
    assert_eq!(
        names,
        json!(["e2e.counter", "e2e.gauge", "e2e.rate", "e2e.sum"])
    );
    let filtered = server.get_json(&format!(
        "/api/v1/tags/atlas.dstype?q={}",
        enc("name,e2e.g,:re")
    ));
    assert_eq!(filtered, json!(["gauge"]));
    let (status, _, headers) = server.get_full("/api/v1/tags/name?limit=2");
    assert_eq!(status, 200);
    let next = headers
        .iter()
        .find(|(k, _)| k == "x-nflx-atlas-next-offset")
        .map(|(_, v)| v.clone());
    assert_eq!(next.as_deref(), Some("e2e.gauge"));
    let page2 = server.get_json("/api/v1/tags/name?limit=2&offset=e2e.gauge");
    assert_eq!(page2, json!(["e2e.rate", "e2e.sum"]));
    let verbose = server.get_json("/api/v1/tags/name?verbose=1&limit=1");
    assert_eq!(
        verbose,
        json!([{"key": "name", "value": "e2e.counter", "count": 1}])
    );

    // the server's own counters saw the rejections
    let (_, metrics) = server.get("/metrics");
    assert!(
        metrics.contains("argus_samples_rejected_total{reason=\"missing_name\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("argus_samples_rejected_total{reason=\"data_too_old\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("argus_series 4"), "{metrics}");
    assert!(
        metrics.contains("argus_http_requests_total{route=\"/api/v1/publish\",status=\"202\"} 1"),
        "{metrics}"
    );
}

#[test]
fn bad_requests_get_clear_errors_and_keep_accepted_data() {
    let server = Server::start(&["--step", "10s"]);
    let ts = (now_ms() / STEP) * STEP;
    let ok = json!({"metrics": [{"tags": {"name": "kept"}, "timestamp": ts, "value": 42.0}]});
    assert_eq!(
        server
            .post("/api/v1/publish", ok.to_string().as_bytes(), None)
            .0,
        200
    );

    let check_error = |status: u16, body: &str, want_status: u16, needle: &str| {
        assert_eq!(status, want_status, "{body}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["type"], "error", "{body}");
        assert!(
            v["message"].to_string().contains(needle),
            "{needle:?} not in {body}"
        );
    };
    let (s, b) = server.post("/api/v1/publish", b"{\"metrics\": [", None);
    check_error(s, &b, 400, "malformed JSON");
    let (s, b) = server.post("/api/v1/publish", b"{}", None);
    check_error(s, &b, 400, "empty payload");
    let all_bad = json!({"metrics": [{"tags": {"name": "x"}, "timestamp": ts, "value": 1}]});
    let (s, b) = server.post("/api/v1/publish", all_bad.to_string().as_bytes(), None);
    check_error(s, &b, 400, "value length");
    let (s, b) = server.post("/api/v1/publish", b"\x1f\x8b garbage", Some("gzip"));
    check_error(s, &b, 400, "gzip");
    let (s, b) = server.get(&format!(
        "/api/v1/graph?q={}&format=json",
        enc("name,a,:foo")
    ));
    check_error(s, &b, 400, ":foo");
    let (s, b) = server.get("/api/v1/graph?q=name,a,:eq,(&format=json");
    assert_eq!(s, 400, "{b}");
    let (s, b) = server.get("/api/v1/tags/name?limit=0");
    check_error(s, &b, 400, "limit");
    let (s, b) = server.get("/no/such/route");
    check_error(s, &b, 404, "no such route");

    // gzip bodies are accepted, and a small body that inflates past the limit is refused
    let gz = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let p = json!({"metrics": [{"tags": {"name": "zipped"}, "timestamp": ts, "value": 2.5}]});
        enc.write_all(p.to_string().as_bytes()).unwrap();
        enc.finish().unwrap()
    };
    assert_eq!(server.post("/api/v1/publish", &gz, Some("gzip")).0, 200);
    let bomb = {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 80 << 20]).unwrap();
        enc.finish().unwrap()
    };
    let (s, b) = server.post("/api/v1/publish", &bomb, Some("gzip"));
    check_error(s, &b, 413, "larger than the limit");

    // the accepted datapoints are all still there
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s={ts}&e={ts}&step=10s&format=json",
        enc("name,(,kept,zipped,),:in,:sum,(,name,),:by")
    ));
    assert_eq!(v["values"], json!([[42.0, 2.5]]), "{v}");
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn backfill_accepts_history_inside_retention() {
    let server = Server::start(&["--retention", "2h"]);
    let step = 60_000;
    let t0 = (now_ms() / step) * step - 90 * step;
    let metrics: Vec<Value> = (0..60)
        .map(|i| json!({"timestamp": t0 + i * step, "value": i as f64 * 0.5}))
        .collect();
    let payload = json!({"tags": {"name": "history", "atlas.dstype": "gauge"}, "metrics": metrics});
    // publish refuses data this old; backfill takes it
    assert_eq!(
        server
            .post("/api/v1/publish", payload.to_string().as_bytes(), None)
            .0,
        400
    );
    let (s, b) = server.post("/api/v1/backfill", payload.to_string().as_bytes(), None);
    assert_eq!(s, 200, "{b}");
    let too_old = json!({"metrics": [{"tags": {"name": "ancient"}, "timestamp": t0 - 3 * 3_600_000, "value": 1}]});
    let (s, b) = server.post("/api/v1/backfill", too_old.to_string().as_bytes(), None);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("retention"), "{b}");
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s={}&e={}&step=1m&format=json",
        enc("name,history,:eq,:max"),
        t0 - step,
        t0 + 59 * step
    ));
    let got: Vec<f64> = v["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_f64().unwrap())
        .collect();
    assert_eq!(got, (0..60).map(|i| i as f64 * 0.5).collect::<Vec<_>>());
    // consolidation to 5m with :max takes the max of each five stored steps
    let v = server.get_json(&format!(
        "/api/v1/graph?q={}&s={}&e={}&step=5m&format=json",
        enc("name,history,:eq,:max"),
        t0 / 300_000 * 300_000 + 300_000,
        t0 / 300_000 * 300_000 + 300_000
    ));
    assert_eq!(v["values"].as_array().unwrap().len(), 1);
}
