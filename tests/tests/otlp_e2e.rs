//! End-to-end: the OpenTelemetry Python SDK (from PyPI, unmodified) exports counters, an
//! up-down counter, a gauge, a histogram and log records over OTLP/gRPC to the real server;
//! the values are read back through the graph API. Once with cumulative temporality (the
//! SDK's default) and once with delta temporality and gzip.

use argus_tests::{Server, enc, eventually, python_with};
use serde_json::Value;

const OTEL: &[&str] = &[
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-grpc==1.45.2",
];

/// The sender: four exports one second apart, each a little after a step boundary, so the
/// counters and histograms give rates on consecutive steps.
const SCRIPT: &str = r#"
import sys, time
from grpc import Compression
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.metrics import MeterProvider, Counter, Histogram
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader, AggregationTemporality
from opentelemetry.metrics import Observation
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry._logs import SeverityNumber

endpoint, mode = sys.argv[1], sys.argv[2]
delta = mode == "delta"
compression = Compression.Gzip if delta else None
resource = Resource.create({"service.name": "otlp-" + mode, "host.name": "test-host"})
temporality = {Counter: AggregationTemporality.DELTA, Histogram: AggregationTemporality.DELTA} if delta else None
exporter = OTLPMetricExporter(endpoint=endpoint, insecure=True, compression=compression,
                              preferred_temporality=temporality)
mp = MeterProvider(resource=resource,
                   metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)])
meter = mp.get_meter("e2e.meter", "1.0")
requests = meter.create_counter("requests")
inflight = meter.create_up_down_counter("inflight")
latency = meter.create_histogram("latency", unit="ms", explicit_bucket_boundaries_advisory=[10, 50, 100, 500])
meter.create_observable_gauge("temperature", callbacks=[lambda options: [Observation(21.5, {"room": "a"})]])

inflight.add(3)
latency.record(700, {"route": "/y"})
for round in range(5):
    time.sleep(1.2 - time.time() % 1.0 if time.time() % 1.0 > 0.2 else 0.2 - time.time() % 1.0)
    requests.add(10, {"code": "200"})
    requests.add(2, {"code": "500"})
    for v in (5, 20):
        latency.record(v, {"route": "/x"})
    if round == 4:
        inflight.add(-1)
    assert mp.force_flush(timeout_millis=10_000)

lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=endpoint, insecure=True, compression=compression)))
logger = lp.get_logger("e2e.logger")
for i, sev in enumerate([SeverityNumber.INFO, SeverityNumber.WARN, SeverityNumber.ERROR]):
    logger.emit(timestamp=time.time_ns(), severity_number=sev, severity_text=sev.name, body="log line %d" % i, attributes={"i": i})
assert lp.force_flush(timeout_millis=10_000)
"#;

fn graph(server: &Server, q: &str, format: &str) -> Value {
    server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-2m&e=now%2B5s&step=1s&format={format}&tz=UTC",
        enc(q)
    ))
}

fn total(server: &Server, q: &str) -> Option<f64> {
    graph(server, q, "stats.json")["stats"][0]["total"].as_f64()
}

/// The values of a single-line expression, step by step (NaN where there is no data).
fn values(server: &Server, q: &str) -> Vec<f64> {
    let g = graph(server, q, "json");
    g["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|row| row[0].as_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Steps where both expressions have data, as (a, b) pairs.
fn paired(server: &Server, a: &str, b: &str) -> Vec<(f64, f64)> {
    values(server, a)
        .into_iter()
        .zip(values(server, b))
        .filter(|(x, y)| !x.is_nan() && !y.is_nan())
        .collect()
}

fn run_sdk(server: &Server, mode: &str) {
    let python = python_with(OTEL);
    let endpoint = server.grpc.trim_start_matches("http://").to_string();
    let out = std::process::Command::new(&python)
        .args(["-c", SCRIPT, &endpoint, mode])
        .output()
        .expect("running the OpenTelemetry SDK");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(server: &Server, mode: &str) {
    let app = format!("nf.app,otlp-{mode},:eq");
    // Counters become per-second rates. Every export adds 10 to code=200 and 2 to code=500
    // at the same timestamps, so on every step both rates stand exactly 5 to 1, whatever
    // the exact export times; their size is near 10/s (one export per second).
    let requests = |code: &str| format!("name,requests,:eq,code,{code},:eq,:and,{app},:and,:sum");
    let steps = eventually(20, "request rates on three steps", || {
        let p = paired(server, &requests("200"), &requests("500"));
        (p.len() >= 3).then_some(p)
    });
    for &(ok, err) in &steps {
        assert!((ok / err - 5.0).abs() < 1e-9, "{steps:?}");
    }
    let peak = steps.iter().map(|p| p.0).fold(0.0, f64::max);
    assert!(
        (6.0..=14.0).contains(&peak),
        "rate of code=200 {peak}/s: {steps:?}"
    );
    // The resource became nf.app and nf.node; the point's attribute is a tag.
    let lines = graph(
        server,
        &format!("name,requests,:eq,{app},:and,:all"),
        "json",
    );
    let tags = &lines["metrics"][0];
    assert_eq!(tags["nf.node"], "test-host", "{lines}");
    assert!(tags.get("service.instance.id").is_none());
    // Up-down counter: a gauge of its current value (cumulative in both modes).
    let inflight = graph(
        server,
        &format!("name,inflight,:eq,{app},:and,:max"),
        "stats.json",
    );
    assert_eq!(inflight["stats"][0]["last"], 2.0, "{inflight}");
    // Observable gauge.
    let temp = graph(
        server,
        &format!("name,temperature,:eq,room,a,:eq,:and,{app},:and,:max"),
        "stats.json",
    );
    assert_eq!(temp["stats"][0]["max"], 21.5, "{temp}");
    // Histogram: Atlas's distribution statistics. Each export records 5 and 20 on /x, so
    // totalAmount runs at exactly 12.5 times count on every step.
    let hist = |route: &str, stat: &str| {
        format!("name,latency,:eq,statistic,{stat},:eq,:and,{app},:and,route,{route},:eq,:and")
    };
    let steps = paired(
        server,
        &format!("{},:sum", hist("_x", "totalAmount")),
        &format!("{},:sum", hist("_x", "count")),
    );
    assert!(steps.len() >= 3, "{steps:?}");
    for &(amount, count) in &steps {
        assert!((amount / count - 12.5).abs() < 1e-9, "{steps:?}");
    }
    let max = graph(server, &format!("{},:max", hist("_y", "max")), "stats.json");
    assert_eq!(max["stats"][0]["max"], 700.0, "{max}");
    let buckets = graph(
        server,
        &format!("{},:sum,(,le,),:by", hist("_x", "bucket")),
        "json",
    );
    let les: Vec<&str> = buckets["metrics"]
        .as_array()
        .expect("bucket lines")
        .iter()
        .filter_map(|m| m["le"].as_str())
        .collect();
    assert_eq!(les, ["10", "100", "50", "500", "Inf"], "{buckets}");
    // Cumulative, as Prometheus's `le`: 5 is under every bound, 20 under all but 10, so on
    // every step le=10 runs at half the rate of each of the others.
    let rows = buckets["values"].as_array().expect("bucket values");
    let mut complete = 0;
    for row in rows.iter().filter(|r| r[0].as_f64().is_some()) {
        let v: Vec<f64> = (0..5)
            .map(|i| row[i].as_f64().unwrap_or(f64::NAN))
            .collect();
        for &other in &v[1..] {
            assert!((other - 2.0 * v[0]).abs() < 1e-9, "{rows:?}");
        }
        complete += 1;
    }
    assert!(complete >= 3, "{buckets}");
    // Log records became events of the `logs` stream.
    let logs = eventually(20, "three log records", || {
        total(
            server,
            "name,argus.events.received,:eq,stream,logs,:eq,:and,:sum",
        )
        .filter(|t| *t >= 3.0)
    });
    assert_eq!(logs, 3.0);
}

#[test]
fn python_sdk_cumulative() {
    let server = Server::start(&["--step", "1s"]);
    run_sdk(&server, "cumulative");
    check(&server, "cumulative");
}

#[test]
fn python_sdk_delta_and_gzip() {
    let server = Server::start(&["--step", "1s"]);
    run_sdk(&server, "delta");
    check(&server, "delta");
}
