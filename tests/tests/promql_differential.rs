//! PromQL against the real thing: Debian's Prometheus 2.42 (remote-write receiver on) and
//! Argus are sent the same remote-write bytes (a smaller dataset of the peer benchmark's
//! shape), then asked the same queries; every answer is compared and the report lists each
//! query, both answers and the verdict.
//!
//! The data is step-aligned (one sample a minute on the minute, as the peer dataset), which
//! is where Argus's fixed-step store and Prometheus's raw samples mean the same thing. Two
//! edges are kept away from on purpose, and the queries that touch them are listed as
//! differing by design: Prometheus 2.x's range windows are closed at the left (Argus's, as
//! Prometheus 3's, are open), and a bare counter is a per-second rate in Argus.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use argus_proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use argus_tests::{
    Nats, Running, Server, debian_packages, enc, eventually, free_port, scratch_dir,
};
use prost::Message;
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const STEP_S: i64 = 60;
/// Minutes of data: two and a half hours, one sample a minute.
const POINTS: i64 = 150;
const NODES: usize = 40;
/// Nodes that also report a classic latency histogram.
const HISTOGRAM_NODES: usize = 12;
const BUCKETS: [&str; 6] = ["0.05", "0.1", "0.25", "0.5", "1", "+Inf"];
/// Points per series per remote-write request.
const POINTS_PER_REQUEST: usize = 10;

/// How closely two answers must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    /// Gauges, aggregations, binary operators, `*_over_time`, labels, time: 1e-9 relative.
    Exact,
    /// Counter functions over Argus's stored rates: 1 % relative.
    Counter,
    /// Differs by design, for the reason given: reported, not asserted.
    ByDesign(&'static str),
}

impl Class {
    fn tolerance(self) -> f64 {
        match self {
            Class::Exact | Class::ByDesign(_) => 1e-9,
            Class::Counter => 1e-2,
        }
    }
}

struct Case {
    class: Class,
    query: String,
    /// Instant queries are asked at this offset from the data's end (ms); range queries
    /// over the last 110 minutes of data at the data's step.
    instant_at: Option<i64>,
}

fn range(class: Class, query: impl Into<String>) -> Case {
    Case {
        class,
        query: query.into(),
        instant_at: None,
    }
}

fn instant(class: Class, query: impl Into<String>, before_end_ms: i64) -> Case {
    Case {
        class,
        query: query.into(),
        instant_at: Some(before_end_ms),
    }
}

const LEFT_EDGE: &str = "a window whose left edge falls on a sample: Prometheus 2.x includes \
                         it, Argus (as Prometheus 3) does not";
const BARE_COUNTER: &str = "a bare counter is its per-second rate in Argus (with an infos note)";
const EXTRAPOLATION: &str = "Prometheus extrapolates to the window's edges, Argus does not";

/// The queries: every feature of the issue, over gauges, counters and a histogram.
fn cases() -> Vec<Case> {
    use Class::*;
    let gauges = ["http_latency", "sys_cpu_utilization", "jvm_threads"];
    let mut c = Vec::new();

    // Selectors, matchers, offsets and `@`.
    for q in [
        "http_latency",
        r#"http_latency{method="GET"}"#,
        r#"sys_cpu_utilization{nf_app="app001"}"#,
        r#"http_latency{nf_cluster=~"app00[0-3].*", method="GET"}"#,
        r#"jvm_threads{nf_region!="us-east-1"}"#,
        r#"jvm_threads{nf_zone!~"us-.*a"}"#,
        r#"{__name__="jvm_threads", nf_app="app002"}"#,
        r#"{__name__=~"sys_cpu_utilization|jvm_threads", nf_app="app003"}"#,
        "sys_cpu_utilization offset 5m",
        "sys_cpu_utilization offset 1h",
        "jvm_threads @ end()",
        "jvm_threads @ start()",
        r#"nothing_by_this_name{nf_app="app001"}"#,
    ] {
        c.push(range(Exact, q));
    }

    // Every aggregation, without and with grouping.
    for op in [
        "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar",
    ] {
        for metric in gauges {
            for grouping in ["", " by (nf_app)", " without (nf_node, nf_asg, nf_zone)"] {
                c.push(range(Exact, format!("{op}{grouping} ({metric})")));
            }
        }
    }
    for q in [
        "sum by (nf_region, method) (http_latency)",
        "topk(3, http_latency)",
        "bottomk(2, http_latency)",
        "topk by (nf_app) (1, http_latency)",
        "bottomk by (method) (3, http_latency)",
        "quantile(0.9, sys_cpu_utilization)",
        "quantile by (nf_app) (0.5, http_latency)",
        "quantile(0, jvm_threads)",
        "quantile(1, jvm_threads)",
        r#"count_values("threads", jvm_threads{nf_app="app000"})"#,
        r#"count_values by (nf_region) ("threads", jvm_threads)"#,
        "sum(sum by (nf_app) (sys_cpu_utilization))",
        "max by (nf_region) (avg by (nf_region, nf_app) (http_latency))",
    ] {
        c.push(range(Exact, q));
    }

    // Binary operators: arithmetic, comparison (filter and bool), matching, set operators.
    for q in [
        "http_latency * 2",
        "2 * http_latency - 1",
        "http_latency / 1000",
        "-sys_cpu_utilization",
        "sys_cpu_utilization % 7",
        "sys_cpu_utilization ^ 2",
        "jvm_threads > 200",
        "jvm_threads > bool 200",
        "jvm_threads == bool 200",
        "sys_cpu_utilization < 30",
        "sys_cpu_utilization >= 30 <= 60",
        "200 < jvm_threads",
        r#"http_latency{method="GET"} / on (nf_node) http_latency{method="POST"}"#,
        r#"http_latency{method="GET"} - ignoring (method) http_latency{method="POST"}"#,
        "http_latency / ignoring (method) group_left sys_cpu_utilization",
        "sys_cpu_utilization / on (nf_node) group_right http_latency",
        "http_latency * on (nf_node) group_left (nf_region) sys_cpu_utilization",
        "sys_cpu_utilization + on (nf_node) jvm_threads",
        "sum by (nf_app) (http_latency) / on (nf_app) count by (nf_app) (http_latency)",
        "sum by (nf_app) (sys_cpu_utilization) / ignoring (nf_app) group_left sum(sys_cpu_utilization)",
        "sys_cpu_utilization > on (nf_node) (jvm_threads / 5)",
        "sys_cpu_utilization and on (nf_node) jvm_threads > 200",
        r#"sys_cpu_utilization{nf_app="app001"} or sys_cpu_utilization{nf_app="app002"}"#,
        "sys_cpu_utilization unless on (nf_node) jvm_threads > 200",
        "jvm_threads > 300 or jvm_threads < 100",
        "scalar(sum(jvm_threads)) / 100",
        "jvm_threads / scalar(count(jvm_threads))",
        "1 + 2 * 3",
        "2 ^ 10",
        "time() - 60",
        "count(http_latency) > bool 50",
        "sum(http_latency) == bool sum(http_latency)",
    ] {
        c.push(range(Exact, q));
    }

    // `*_over_time` and the other range functions over gauges. The windows are not whole
    // minutes, so no sample sits on a window's left edge.
    for metric in gauges {
        for f in [
            "avg_over_time",
            "min_over_time",
            "max_over_time",
            "sum_over_time",
            "count_over_time",
            "last_over_time",
            "stddev_over_time",
            "stdvar_over_time",
            "present_over_time",
            "changes",
            "deriv",
            "idelta",
        ] {
            c.push(range(Exact, format!("{f}({metric}[5m30s])")));
        }
        c.push(range(
            Exact,
            format!("quantile_over_time(0.9, {metric}[10m30s])"),
        ));
        c.push(range(
            Exact,
            format!("predict_linear({metric}[10m30s], 600)"),
        ));
    }
    for q in [
        "resets(jvm_threads[10m30s])",
        r#"absent_over_time(nothing_by_this_name[5m30s])"#,
        r#"absent_over_time(jvm_threads{nf_app="app000"}[5m30s])"#,
        "max_over_time(sum by (nf_app) (sys_cpu_utilization)[10m30s:1m])",
        "avg_over_time(max(http_latency)[20m30s:2m])",
        "min_over_time(jvm_threads[4m30s] offset 10m)",
        "sum by (nf_app) (avg_over_time(http_latency[5m30s]))",
    ] {
        c.push(range(Exact, q));
    }

    // Label functions.
    for q in [
        r#"label_replace(jvm_threads, "app_number", "$1", "nf_app", "app(.*)")"#,
        r#"label_replace(jvm_threads, "nf_app", "x-$1", "nf_app", "app00(.)")"#,
        r#"label_replace(jvm_threads, "nothing", "$1", "nf_app", "nomatch(.*)")"#,
        r#"label_replace(sum by (nf_app) (jvm_threads), "team", "t-$1", "nf_app", "app0(..)")"#,
        r#"label_join(jvm_threads, "place", "/", "nf_region", "nf_zone")"#,
        r#"label_join(sys_cpu_utilization, "nf_app", "", "nf_app", "nf_region")"#,
    ] {
        c.push(range(Exact, q));
    }

    // Time, `vector`, `scalar`, `absent`.
    for q in [
        "time()",
        "vector(1)",
        "vector(time())",
        "timestamp(jvm_threads)",
        r#"timestamp(jvm_threads{nf_app="app001"} offset 5m)"#,
        "hour()",
        "minute()",
        "day_of_week()",
        "day_of_month()",
        "day_of_year()",
        "month()",
        "year()",
        "days_in_month()",
        r#"hour(timestamp(jvm_threads{nf_app="app001"}))"#,
        "minute(vector(time()))",
        "scalar(count(jvm_threads))",
        r#"scalar(jvm_threads{nf_app="nothing"})"#,
        "absent(nothing_by_this_name)",
        r#"absent(nothing_by_this_name{job="x", nf_app=~"a.*"})"#,
        "absent(jvm_threads)",
    ] {
        c.push(range(Exact, q));
    }

    // Math, clamping, sorting.
    for q in [
        "abs(-http_latency)",
        "ceil(http_latency)",
        "floor(http_latency)",
        "round(http_latency)",
        "round(http_latency, 0.5)",
        "sqrt(sys_cpu_utilization)",
        "exp(sys_cpu_utilization / 100)",
        "ln(http_latency)",
        "log2(jvm_threads)",
        "log10(jvm_threads)",
        "clamp(sys_cpu_utilization, 20, 50)",
        "clamp_min(sys_cpu_utilization, 30)",
        "clamp_max(sys_cpu_utilization, 30)",
        "sgn(sys_cpu_utilization - 50)",
        "sin(sys_cpu_utilization)",
        "deg(sys_cpu_utilization)",
        "pi()",
        "sort(sys_cpu_utilization)",
        "sort_desc(http_latency)",
    ] {
        c.push(range(Exact, q));
    }

    // Counters: the rate family over steady, step-aligned counters, within 1 %.
    let counter = "http_requests_total";
    let histogram = "http_request_duration_seconds_bucket";
    for q in [
        format!("rate({counter}[5m])"),
        format!("rate({counter}[1m])"),
        format!("rate({counter}[10m])"),
        format!("irate({counter}[5m])"),
        format!("increase({counter}[5m])"),
        format!("increase({counter}[30m])"),
        format!("sum by (nf_app) (rate({counter}[5m]))"),
        format!("sum by (nf_app, status) (rate({counter}[5m]))"),
        format!("sum by (status) (increase({counter}[10m]))"),
        format!("max by (method) (rate({counter}[5m]))"),
        format!(r#"rate({counter}{{status="5xx"}}[10m])"#),
        format!(r#"sum(rate({counter}{{status=~"[45]xx"}}[5m])) / sum(rate({counter}[5m]))"#),
        format!("rate({counter}[5m] offset 10m)"),
        format!("sum(rate({counter}[5m])) by (nf_region)"),
        format!("avg_over_time(rate({counter}[5m])[10m30s:1m])"),
        format!("histogram_quantile(0.9, sum by (le) (rate({histogram}[5m])))"),
        format!("histogram_quantile(0.5, sum by (le, nf_app) (rate({histogram}[5m])))"),
        format!("histogram_quantile(0.99, rate({histogram}[10m]))"),
        format!("sum by (le) (increase({histogram}[10m]))"),
    ] {
        c.push(range(Counter, q));
    }

    // Instant queries: at the data's last minute, half a minute before it, and at an
    // unaligned time 47 minutes earlier.
    for before_end in [0, 30_000, 47 * 60_000 + 17_000] {
        for q in [
            "http_latency",
            "sum by (nf_app) (sys_cpu_utilization)",
            "topk(5, http_latency)",
            "sort_desc(sum by (nf_region) (jvm_threads))",
            "avg_over_time(sys_cpu_utilization[5m])",
            "max_over_time(jvm_threads[2m])",
            "timestamp(jvm_threads)",
            "count(jvm_threads)",
            "1 + 1",
            r#"label_join(jvm_threads{nf_app="app001"}, "x", "-", "nf_app", "nf_region")"#,
        ] {
            // At an unaligned time a window of whole minutes has no sample on its edge.
            let class = if before_end % 60_000 == 0 && q.contains("_over_time") {
                Class::ByDesign(LEFT_EDGE)
            } else {
                Exact
            };
            c.push(instant(class, q, before_end));
        }
        // At an unaligned time Prometheus extrapolates a window of whole minutes.
        let class = if before_end % 60_000 == 0 {
            Counter
        } else {
            ByDesign(EXTRAPOLATION)
        };
        c.push(instant(class, format!("rate({counter}[5m])"), before_end));
    }

    // What differs by design: reported, with the reason.
    for (q, why) in [
        (counter.to_string(), BARE_COUNTER),
        (format!("sum by (nf_app) ({counter})"), BARE_COUNTER),
        ("avg_over_time(jvm_threads[5m])".to_string(), LEFT_EDGE),
        ("count_over_time(http_latency[10m])".to_string(), LEFT_EDGE),
        (
            "delta(sys_cpu_utilization[5m30s])".to_string(),
            EXTRAPOLATION,
        ),
        // The first windows hold the series' first sample: Prometheus extrapolates towards
        // the window's start.
        (format!("increase({counter}[1h])"), EXTRAPOLATION),
        (format!("rate({counter}[5m30s])"), EXTRAPOLATION),
    ] {
        c.push(range(ByDesign(why), q));
    }
    c
}

// ---- the dataset ----------------------------------------------------------------------------

/// A small random generator, seeded, so that every run sends the same values.
struct Random(fastrand::Rng);

impl Random {
    fn normal(&mut self) -> f64 {
        let u = self.0.f64().max(1e-12);
        let v = self.0.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn lognormal(&mut self, mean: f64, sigma: f64) -> f64 {
        (mean + sigma * self.normal()).exp()
    }
}

type LabelPairs = Vec<(String, String)>;

struct Dataset {
    requests: Vec<Vec<u8>>,
    end_ms: i64,
    samples: usize,
}

/// The peer benchmark's shape (`../shared/bench/peers/gen.py`): nodes of apps with Zipf-like
/// sizes, per node six request counters (method × status), two latency gauges, a CPU
/// percentage and a thread count; plus a classic histogram on some nodes.
fn dataset(end_ms: i64) -> Dataset {
    let mut rng = Random(fastrand::Rng::with_seed(20151));
    let start_ms = end_ms - (POINTS - 1) * STEP_S * 1000;
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let mut series: Vec<(LabelPairs, Vec<f64>)> = Vec::new();
    let n = POINTS as usize;
    for node in 0..NODES {
        // App i has about 1/(i+1) of the nodes.
        let app = (0..8).find(|a| node % (a + 2) != 0).unwrap_or(7);
        let app = format!("app{app:03}");
        let stack = ["main", "canary", "batch"][node % 3];
        let cluster = format!("{app}-{stack}");
        let region = regions[node % 3];
        let base = vec![
            ("nf_app".to_string(), app.clone()),
            ("nf_asg".to_string(), format!("{cluster}-v{:03}", node % 4)),
            ("nf_cluster".to_string(), cluster.clone()),
            (
                "nf_node".to_string(),
                format!("i-{:012x}", rng.0.u64(..1 << 48)),
            ),
            ("nf_region".to_string(), region.to_string()),
            (
                "nf_zone".to_string(),
                format!("{region}{}", ["a", "b", "c"][(node / 3) % 3]),
            ),
        ];
        let with = |name: &str, extra: &[(&str, &str)]| {
            let mut labels = base.clone();
            labels.push(("__name__".to_string(), name.to_string()));
            labels.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            labels.sort();
            labels
        };
        for method in ["GET", "POST"] {
            for status in ["2xx", "4xx", "5xx"] {
                let scale = match status {
                    "2xx" => 1.0,
                    "4xx" => 0.05,
                    _ => 0.005,
                };
                let rate = rng.lognormal(1.0, 1.5) * scale + 0.01;
                let mut v = rng.0.u64(..1_000_000) as f64;
                let values = (0..n)
                    .map(|_| {
                        v += (rate * STEP_S as f64 * (0.5 + rng.0.f64())).round();
                        v
                    })
                    .collect();
                series.push((
                    with(
                        "http_requests_total",
                        &[("method", method), ("status", status)],
                    ),
                    values,
                ));
            }
        }
        for method in ["GET", "POST"] {
            let base = rng.lognormal(3.0, 0.8);
            let mut walk = 0.0;
            let values = (0..n)
                .map(|_| {
                    walk += 0.05 * rng.normal();
                    base * f64::exp(walk)
                })
                .collect();
            series.push((with("http_latency", &[("method", method)]), values));
        }
        let base = 5.0 + 55.0 * rng.0.f64();
        let mut walk = 0.0;
        let values = (0..n)
            .map(|_| {
                walk += 1.5 * rng.normal();
                ((base + walk).clamp(0.0, 100.0) * 100.0).round() / 100.0
            })
            .collect();
        series.push((with("sys_cpu_utilization", &[]), values));
        let mut threads = 50.0 + rng.0.u64(..350) as f64;
        let values = (0..n)
            .map(|_| {
                threads = (threads + rng.0.i64(-2..=2) as f64).max(1.0);
                threads
            })
            .collect();
        series.push((with("jvm_threads", &[]), values));
        if node < HISTOGRAM_NODES {
            // Cumulative bucket counters: each minute's observations spread over the buckets.
            let mut cumulative = [0.0; BUCKETS.len()];
            let mut values = vec![Vec::with_capacity(n); BUCKETS.len()];
            for _ in 0..n {
                let mut below = 0.0;
                for (i, counts) in values.iter_mut().enumerate() {
                    // Most observations below 1 s, a few above.
                    let weight = if i + 1 == BUCKETS.len() {
                        0.3
                    } else {
                        (i + 1) as f64
                    };
                    below += (10.0 * rng.0.f64() * weight).round();
                    cumulative[i] += below;
                    counts.push(cumulative[i]);
                }
            }
            for (le, values) in BUCKETS.iter().zip(values) {
                series.push((
                    with("http_request_duration_seconds_bucket", &[("le", le)]),
                    values,
                ));
            }
        }
    }
    let mut requests = Vec::new();
    let mut samples = 0;
    for first in (0..n).step_by(POINTS_PER_REQUEST) {
        let last = (first + POINTS_PER_REQUEST).min(n);
        let timeseries = series
            .iter()
            .map(|(labels, values)| TimeSeries {
                labels: labels
                    .iter()
                    .map(|(name, value)| Label {
                        name: name.clone(),
                        value: value.clone(),
                    })
                    .collect(),
                samples: (first..last)
                    .map(|i| Sample {
                        value: values[i],
                        timestamp: start_ms + i as i64 * STEP_S * 1000,
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        samples += timeseries.len() * (last - first);
        let body = WriteRequest {
            timeseries,
            metadata: Vec::new(),
        }
        .encode_to_vec();
        requests.push(
            snap::raw::Encoder::new()
                .compress_vec(&body)
                .expect("snappy compression"),
        );
    }
    Dataset {
        requests,
        end_ms,
        samples,
    }
}

fn remote_write(base: &str, body: &[u8]) -> (u16, String) {
    let mut resp = Server::agent()
        .post(&format!("{base}/api/v1/write"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "snappy")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .send(body)
        .unwrap_or_else(|e| panic!("remote write to {base}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn get_json(base: &str, path: &str) -> Value {
    let mut resp = Server::agent()
        .get(&format!("{base}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_string()
        .unwrap_or_default();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {base}{path}: {e}: {body}"))
}

// ---- comparing answers ----------------------------------------------------------------------

fn number(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("+Inf") => f64::INFINITY,
        Some("-Inf") => f64::NEG_INFINITY,
        Some(s) => s.parse().unwrap_or(f64::NAN),
        None => v.as_f64().unwrap_or(f64::NAN),
    }
}

type Points = Vec<(f64, f64)>;

/// An answer as series keyed by their labels (a scalar is the series with no labels).
fn series_of(answer: &Value) -> Result<BTreeMap<String, Points>, String> {
    if answer["status"] != "success" {
        return Err(format!(
            "{}: {}",
            answer["errorType"].as_str().unwrap_or("?"),
            answer["error"].as_str().unwrap_or("?")
        ));
    }
    let data = &answer["data"];
    let point = |p: &Value| (number(&p[0]), number(&p[1]));
    let mut out = BTreeMap::new();
    match data["resultType"].as_str() {
        Some("scalar") => {
            out.insert("scalar".to_string(), vec![point(&data["result"])]);
        }
        Some("vector" | "matrix") => {
            for s in data["result"].as_array().into_iter().flatten() {
                let labels: BTreeMap<&str, &str> = s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                    .collect();
                let key = format!("{labels:?}");
                let points = match s.get("values") {
                    Some(values) => values.as_array().into_iter().flatten().map(point).collect(),
                    None => vec![point(&s["value"])],
                };
                if out.insert(key.clone(), points).is_some() {
                    return Err(format!("two series labelled {key}"));
                }
            }
        }
        other => return Err(format!("result type {other:?}")),
    }
    Ok(out)
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    a == b
        || (a.is_nan() && b.is_nan())
        || (a - b).abs() <= tolerance * a.abs().max(b.abs())
        || (a - b).abs() < 1e-12
}

/// Agreement: the same series with the same points; returns the largest relative difference
/// and the points compared, or what differs.
fn agree(prom: &Value, argus: &Value, tolerance: f64) -> Result<(f64, usize), String> {
    let (p, a) = match (series_of(prom), series_of(argus)) {
        (Ok(p), Ok(a)) => (p, a),
        (Err(p), Err(a)) => return Err(format!("both refuse: Prometheus {p}; Argus {a}")),
        (Err(p), Ok(_)) => return Err(format!("Prometheus refuses ({p}), Argus answers")),
        (Ok(_), Err(a)) => return Err(format!("Argus refuses: {a}")),
    };
    if let Some(k) = p.keys().find(|k| !a.contains_key(*k)) {
        return Err(format!(
            "series {k} only in Prometheus ({} series vs Argus's {})",
            p.len(),
            a.len()
        ));
    }
    if let Some(k) = a.keys().find(|k| !p.contains_key(*k)) {
        return Err(format!(
            "series {k} only in Argus ({} series vs Prometheus's {})",
            a.len(),
            p.len()
        ));
    }
    let mut worst: f64 = 0.0;
    let mut compared = 0;
    for (k, pp) in &p {
        let ap = &a[k];
        let times = |s: &Points| s.iter().map(|x| x.0).collect::<Vec<_>>();
        if times(pp) != times(ap) {
            let first_missing = pp
                .iter()
                .find(|x| !ap.iter().any(|y| y.0 == x.0))
                .map(|x| format!("Prometheus has t={}", x.0))
                .or_else(|| {
                    ap.iter()
                        .find(|x| !pp.iter().any(|y| y.0 == x.0))
                        .map(|x| format!("Argus has t={}", x.0))
                })
                .unwrap_or_default();
            return Err(format!(
                "series {k}: {} points in Prometheus, {} in Argus ({first_missing})",
                pp.len(),
                ap.len()
            ));
        }
        for (x, y) in pp.iter().zip(ap) {
            if !close(x.1, y.1, tolerance) {
                return Err(format!(
                    "series {k} at t={}: Prometheus {}, Argus {}",
                    x.0, x.1, y.1
                ));
            }
            if x.1.is_finite() && y.1.is_finite() && x.1 != y.1 {
                worst = worst.max((x.1 - y.1).abs() / x.1.abs().max(y.1.abs()));
            }
            compared += 1;
        }
    }
    Ok((worst, compared))
}

/// A short view of an answer for the report: series count and the first series' first points.
fn glimpse(answer: &Value) -> String {
    match series_of(answer) {
        Err(e) => format!("error {e}"),
        Ok(s) => {
            let first = s.iter().next().map(|(k, p)| {
                let pts: Vec<String> = p.iter().take(3).map(|x| format!("{}", x.1)).collect();
                let k: String = if k.chars().count() > 60 {
                    k.chars().take(60).chain("…".chars()).collect()
                } else {
                    k.clone()
                };
                format!(
                    " first {k} = [{}{}]",
                    pts.join(", "),
                    if p.len() > 3 { ", …" } else { "" }
                )
            });
            format!("{} series{}", s.len(), first.unwrap_or_default())
        }
    }
}

/// The request of a case: a range query over the last 110 minutes of data at its step, or an
/// instant query.
fn case_path(case: &Case, end_ms: i64) -> String {
    match case.instant_at {
        None => format!(
            "/api/v1/query_range?query={}&start={}&end={}&step={STEP_S}",
            enc(&case.query),
            end_ms / 1000 - 110 * 60,
            end_ms / 1000
        ),
        Some(before) => format!(
            "/api/v1/query?query={}&time={}",
            enc(&case.query),
            (end_ms - before) as f64 / 1000.0
        ),
    }
}

/// Series in a store, as PromQL counts them at the data's end.
fn count_series(base: &str, end_ms: i64) -> String {
    get_json(
        base,
        &format!(
            "/api/v1/query?query={}&time={}",
            enc("count({__name__=~\".+\"})"),
            end_ms / 1000
        ),
    )["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .to_string()
}

#[test]
fn promql_agrees_with_a_real_prometheus_fed_the_same_remote_write_bytes() {
    assert!(
        debian_packages(PROMETHEUS, &["prometheus"]),
        "installing Debian's prometheus"
    );
    let dir = scratch_dir("promql-differential");
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1m\n",
    )
    .expect("writing the config");
    let port = free_port();
    let mut prometheus = Running::start(
        PROMETHEUS,
        &[
            &format!("--config.file={}", dir.join("prometheus.yml").display()),
            &format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-remote-write-receiver",
            "--storage.tsdb.retention.time=1d",
        ],
        dir.join("prometheus.log"),
    );
    let prom = format!("http://127.0.0.1:{port}");
    let server = Server::start(&["--ephemeral"]);

    // Ten minutes ago, on the minute: inside both stores' windows.
    let end_ms = (argus_tests::now_ms() / 60_000 - 10) * 60_000;
    let data = dataset(end_ms);
    eventually(60, "Prometheus ready", || {
        prometheus.assert_running("prometheus");
        let ok = Server::agent()
            .get(&format!("{prom}/-/ready"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200);
        ok.then_some(())
    });
    for body in &data.requests {
        let (status, text) = remote_write(&prom, body);
        assert_eq!(status, 204, "Prometheus refused a write: {text}");
        let (status, text) = remote_write(&server.base, body);
        assert!(
            (200..300).contains(&status),
            "Argus refused a write: {status} {text}"
        );
    }
    // Both hold every series before any question is asked.
    let series = (NODES * 10 + HISTOGRAM_NODES * BUCKETS.len()).to_string();
    assert_eq!(
        count_series(&prom, data.end_ms),
        series,
        "series in Prometheus"
    );
    assert_eq!(
        count_series(&server.base, data.end_ms),
        series,
        "series in Argus"
    );

    let cases = cases();
    let mut report = String::new();
    let mut full = String::new();
    let mut failures = Vec::new();
    let (mut passed, mut asserted, mut by_design_agreeing) = (0, 0, 0);
    for (i, case) in cases.iter().enumerate() {
        let path = case_path(case, data.end_ms);
        let p = get_json(&prom, &path);
        let a = get_json(&server.base, &path);
        let verdict = agree(&p, &a, case.class.tolerance());
        let kind = match case.instant_at {
            None => "range".to_string(),
            Some(before) => format!("instant at end-{}s", before as f64 / 1000.0),
        };
        let (mark, detail) = match (&verdict, case.class) {
            (Ok((worst, n)), Class::ByDesign(_)) => {
                by_design_agreeing += 1;
                (
                    "agrees (by design list)",
                    format!("{n} points, max rel diff {worst:.1e}"),
                )
            }
            (Ok((worst, n)), _) => {
                passed += 1;
                asserted += 1;
                ("pass", format!("{n} points, max rel diff {worst:.1e}"))
            }
            (Err(e), Class::ByDesign(why)) => ("differs by design", format!("{why}: {e}")),
            (Err(e), _) => {
                asserted += 1;
                failures.push(format!("{} ({kind}): {e}", case.query));
                ("FAIL", e.clone())
            }
        };
        let class = match case.class {
            Class::Exact => "1e-9",
            Class::Counter => "1 %",
            Class::ByDesign(_) => "by design",
        };
        let _ = writeln!(
            report,
            "| {} | `{}` | {kind} | {class} | {mark} | {} | {} | {} |",
            i + 1,
            case.query.replace('|', "\\|"),
            detail.replace('|', "\\|"),
            glimpse(&p).replace('|', "\\|"),
            glimpse(&a).replace('|', "\\|"),
        );
        let _ = writeln!(
            full,
            "{}",
            serde_json::json!({"query": case.query, "kind": kind, "verdict": mark,
                "detail": detail, "prometheus": p, "argus": a})
        );
    }
    let summary = format!(
        "{passed} of {asserted} queries agree ({:.1} %); {} more are listed as differing by \
         design, of which {by_design_agreeing} happen to agree on this data",
        100.0 * passed as f64 / asserted.max(1) as f64,
        cases.len() - asserted,
    );
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("promql-differential");
    std::fs::create_dir_all(&out).expect("creating the report directory");
    let header = format!(
        "# PromQL: Argus against Prometheus 2.42\n\n\
         Written by `cargo test -p argus-tests --test promql_differential`. Both stores were \
         sent the same {} remote-write requests ({} samples, {} series, one sample a minute \
         for {} minutes); range queries cover the last 110 minutes at a 60 s step.\n\n{summary}.\n\n\
         | # | query | kind | tolerance | verdict | detail | Prometheus | Argus |\n\
         |---|---|---|---|---|---|---|---|\n",
        data.requests.len(),
        data.samples,
        series,
        POINTS
    );
    std::fs::write(out.join("report.md"), format!("{header}{report}")).expect("writing");
    std::fs::write(out.join("answers.jsonl"), full).expect("writing");
    println!("{summary}\nreport: {}", out.join("report.md").display());
    assert!(cases.len() >= 200, "only {} queries", cases.len());
    assert!(
        failures.is_empty(),
        "{summary}; these differ:\n{}",
        failures.join("\n")
    );
}

/// The partitions of a node's `/api/v1/cluster` view.
fn partitions(node: &Server) -> Vec<Value> {
    node.get_json("/api/v1/cluster")["log"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Every query of the differential test, on a cluster of three nodes (one NATS server, 8
/// partitions, 2 replicas each) and on a single node, both sent the same remote-write bytes:
/// node b, asked, gathers each selector's series from the partitions' owners, and every
/// answer must be the single node's.
#[test]
fn a_three_node_cluster_answers_the_differential_queries_as_one_node() {
    let nats = Nats::start(1);
    let ids = ["a", "b", "c"];
    let nodes: Vec<Server> = ids
        .iter()
        .map(|id| {
            Server::start_listening(&[
                "--ephemeral",
                "--cluster",
                &nats.url(),
                "--node-id",
                id,
                "--partitions",
                "8",
            ])
        })
        .collect();
    let single = Server::start(&["--ephemeral"]);
    for (node, id) in nodes.iter().zip(ids) {
        eventually(90, &format!("node {id} holding its partitions"), || {
            let parts = partitions(node);
            (parts.len() == 8
                && parts.iter().all(|p| {
                    let owners = p["owners"].as_array().cloned().unwrap_or_default();
                    let mine = owners.iter().any(|x| x == id);
                    owners.len() == 2
                        && (!mine || (p["applying"] == true && p["caught_up"] == true))
                }))
            .then_some(())
        });
    }
    let end_ms = (argus_tests::now_ms() / 60_000 - 10) * 60_000;
    let data = dataset(end_ms);
    for body in &data.requests {
        for base in [&nodes[0].base, &single.base] {
            let (status, text) = remote_write(base, body);
            assert!((200..300).contains(&status), "{base}: {status} {text}");
        }
    }
    let series = (NODES * 10 + HISTOGRAM_NODES * BUCKETS.len()).to_string();
    eventually(60, "every series applied in the cluster", || {
        (count_series(&nodes[1].base, data.end_ms) == series).then_some(())
    });
    assert_eq!(count_series(&single.base, data.end_ms), series);
    // Every message applied by both owners, so the answers are final.
    let published = nodes[0].get_json("/api/v1/cluster")["log"]["published_messages"]
        .as_u64()
        .expect("the gateway's published messages");
    eventually(60, "every message applied twice", || {
        let applied: u64 = nodes
            .iter()
            .zip(ids)
            .flat_map(|(node, id)| {
                partitions(node).into_iter().filter(move |p| {
                    p["owners"]
                        .as_array()
                        .is_some_and(|o| o.iter().any(|x| x == id))
                })
            })
            .filter_map(|p| p["applied_messages"].as_u64())
            .sum();
        (applied == 2 * published).then_some(())
    });
    let cases = cases();
    let mut failures = Vec::new();
    let mut points = 0;
    for case in &cases {
        let path = case_path(case, data.end_ms);
        let one = get_json(&single.base, &path);
        let cluster = get_json(&nodes[1].base, &path);
        assert!(
            cluster.get("warnings").is_none(),
            "{}: a partial answer: {cluster}",
            case.query
        );
        match agree(&one, &cluster, 1e-9) {
            Ok((_, n)) => points += n,
            Err(e) => failures.push(format!("{}: {e}", case.query)),
        }
    }
    println!(
        "{} of {} queries answered by the cluster as by one node ({points} points)",
        cases.len() - failures.len(),
        cases.len()
    );
    // The metadata routes Grafana's editor calls answer across the cluster as on one node.
    for path in [
        "/api/v1/labels".to_string(),
        format!(
            "/api/v1/labels?match[]={}",
            enc(r#"{__name__="http_latency"}"#)
        ),
        "/api/v1/label/nf_app/values".to_string(),
        "/api/v1/label/le/values".to_string(),
        format!(
            "/api/v1/label/__name__/values?match[]={}",
            enc(r#"{nf_app="app001"}"#)
        ),
        format!(
            "/api/v1/series?match[]=jvm_threads&match[]={}",
            enc(r#"{nf_app="app001", method="GET"}"#)
        ),
        "/api/v1/metadata".to_string(),
        "/api/v1/metadata?metric=http_requests_total".to_string(),
    ] {
        let sorted = |v: &Value| {
            let mut data = v["data"].clone();
            if let Value::Array(items) = &mut data {
                items.sort_by_key(|i| i.to_string());
            }
            data
        };
        let (one, cluster) = (single.get_json(&path), nodes[1].get_json(&path));
        assert_eq!(cluster["status"], "success", "{path}: {cluster}");
        assert!(
            !sorted(&one).as_array().is_some_and(Vec::is_empty)
                && !sorted(&one).as_object().is_some_and(|o| o.is_empty()),
            "{path}: {one}"
        );
        assert_eq!(sorted(&one), sorted(&cluster), "{path}");
    }
    // Node b asked the others: aggregations pushed down (each of the 7 topk/bottomk asks at
    // least one of a and c), other selectors' series gathered.
    let asked = |route: &str| -> u64 {
        [&nodes[0], &nodes[2]]
            .iter()
            .map(|node| {
                let metrics = node.get("/metrics").1;
                metrics
                    .lines()
                    .filter(|l| {
                        l.starts_with("argus_http_requests_total{")
                            && l.contains(&format!("route=\"{route}\""))
                            && l.contains("status=\"200\"")
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    };
    let (aggregates, tops, series) = (
        asked("/api/v1/cluster/aggregate"),
        asked("/api/v1/cluster/top"),
        asked("/api/v1/cluster/series"),
    );
    println!(
        "asked of nodes a and c: {aggregates} aggregates, {tops} topk/bottomk, {series} \
         selectors' series"
    );
    assert!(
        aggregates > 50 && tops >= 7 && series > 50,
        "{aggregates} {tops} {series}"
    );
    assert!(
        failures.is_empty(),
        "these differ:\n{}",
        failures.join("\n")
    );
}
