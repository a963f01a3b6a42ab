//! Bad input never panics the server and loses nothing already accepted: malformed
//! protobuf, oversized messages, a snappy header that claims gigabytes, invalid tags (refused
//! with reasons while the rest of the batch is stored), a resent batch (stored once).
//!
//! The gRPC side is driven by real clients: Python's `grpcio` with stubs that `grpcio-tools`
//! generates from our own `.proto` (what a third-party agent would do), and raw bytes on the
//! same channel for what no generated client would send.

use argus_proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use argus_tests::{Server, enc, now_ms, python_with};
use prost::Message;
use serde_json::Value;

const LIMIT: usize = 1 << 20;

fn value_at(server: &Server, q: &str) -> Option<f64> {
    let g = server.get_json(&format!(
        "/api/v1/graph?q={}&s=e-10m&e=now%2B1m&step=1s&format=stats.json",
        enc(q)
    ));
    g["stats"][0]["max"].as_f64()
}

fn series(labels: &[(&str, &str)], value: f64, ts: i64) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: vec![Sample {
            value,
            timestamp: ts,
        }],
    }
}

fn snappy(raw: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(raw)
        .expect("snappy compresses")
}

#[test]
fn remote_write_refuses_bad_bodies_and_keeps_the_good_series() {
    let server = Server::start(&["--step", "1s"]);
    let now = now_ms();
    let post = |body: &[u8]| server.post("/api/v1/write", body, Some("snappy"));

    // Accepted first: must survive everything after.
    let first = WriteRequest {
        timeseries: vec![series(&[("__name__", "rw_before")], 3.25, now)],
        metadata: vec![],
    };
    assert_eq!(post(&snappy(&first.encode_to_vec())).0, 204);

    // A snappy header claiming 4 GiB: refused before any allocation, as too large.
    let mut liar = vec![0xf0, 0xff, 0xff, 0xff, 0x0f];
    liar.extend_from_slice(&[0; 16]);
    let (status, body) = post(&liar);
    assert_eq!(status, 413, "{body}");
    assert!(
        body.contains("4294967280 bytes") && body.contains("limit"),
        "{body}"
    );

    // Not snappy at all; snappy of bytes that are not a WriteRequest.
    let (status, body) = post(b"\xff\xfe definitely not snappy");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("snappy"), "{body}");
    let (status, body) = post(&snappy(&[0x0a, 0x20, 0x0a, 0x05, 0x0a]));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("malformed WriteRequest") && body.contains("byte"),
        "{body}"
    );

    // Bytes that parse as protobuf but are no WriteRequest: a known field of the wrong
    // wire type (field 1 as a varint), and 60 MB of zero bytes (field number 0). Both
    // used to be answered 204, as if an empty request.
    let (status, body) = post(&snappy(&[0x08, 0x01]));
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("WriteRequest.timeseries (field 1)") && body.contains("wire type 0"),
        "{body}"
    );
    let (status, body) = post(&snappy(&vec![0u8; 60_000_000]));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("field number 0 before byte 1"), "{body}");

    // Invalid series are refused with reasons (400: retrying would not help); the valid
    // one in the same request is stored.
    let long = "v".repeat(5_000);
    let mixed = WriteRequest {
        timeseries: vec![
            series(&[("__name__", "rw_good"), ("job", "a")], 7.0, now),
            series(&[("__name__", "rw_long"), ("job", &long)], 1.0, now),
            series(&[("job", "nameless")], 1.0, now),
            series(&[("__name__", "rw_nan")], f64::NAN, now),
        ],
        metadata: vec![],
    };
    let (status, body) = post(&snappy(&mixed.encode_to_vec()));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("2 samples refused, 2 stored"), "{body}");
    assert!(body.contains("name"), "{body}");
    assert_eq!(value_at(&server, "name,rw_good,:eq"), Some(7.0));
    assert_eq!(value_at(&server, "name,rw_before,:eq"), Some(3.25));
    // An unknown encoding is named.
    let (status, body) = server.post("/api/v1/write", b"x", Some("zstd"));
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("zstd"), "{body}");
}

/// The client: stubs generated from `proto/proto/argus/v1/ingest.proto` at run time, OTLP
/// messages from `opentelemetry-proto`. Prints one JSON object of outcomes.
const CLIENT: &str = r#"
import json, sys, time, tempfile
import grpc
from grpc_tools import protoc

endpoint, proto_root, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
out_dir = tempfile.mkdtemp()
assert protoc.main(["protoc", "-I" + proto_root, "--python_out=" + out_dir,
                    "--grpc_python_out=" + out_dir, "argus/v1/ingest.proto"]) == 0
sys.path.insert(0, out_dir)
from argus.v1 import ingest_pb2 as pb, ingest_pb2_grpc as rpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as otlp
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from opentelemetry.proto.common.v1 import common_pb2 as c

channel = grpc.insecure_channel(endpoint)
stub = rpc.IngestStub(channel)
meta = (("argus-agent-id", "bad-input-test"),)
now = int(time.time() * 1000)
result = {}

def status(call):
    try:
        call()
        return ["OK", ""]
    except grpc.RpcError as e:
        return [e.code().name, e.details()]

def tags(**kv):
    return [pb.Tag(key=k.replace("_", "."), value=v) for k, v in kv.items()]

def batch(seq, t):
    return pb.MetricBatch(seq=seq, definitions=[
        pb.SeriesDef(id=1, tags=tags(name="grpc_good", key="a", atlas_dstype="gauge")),
        pb.SeriesDef(id=2, tags=tags(name="grpc_long", key="x" * 5000, atlas_dstype="gauge")),
        pb.SeriesDef(id=3, tags=tags(key="nameless", atlas_dstype="gauge")),
        pb.SeriesDef(id=4, tags=tags(name="grpc_good", key="b", atlas_dstype="gauge")),
    ], groups=[pb.SampleGroup(timestamp_ms=t, series=[1, 2, 3, 4, 9], values=[1.5, 2, 3, 4.5, 5])])

def acks(batches):
    return [{"seq": a.seq, "stored": a.stored, "rejected": a.rejected, "reasons": list(a.reasons),
             "duplicate": a.duplicate} for a in stub.PushMetrics(iter(batches), metadata=meta)]

# Invalid tags and an undefined series id: refused with reasons, the rest stored.
result["first"] = acks([batch(1, now)])
# The same batch again on a new stream, as after a reconnect: recognised, not stored twice.
result["resend"] = acks([batch(1, now)])

# Bytes that are not a MetricBatch, on the agent stream and on OTLP.
raw_stream = channel.stream_stream("/argus.v1.Ingest/PushMetrics")
result["malformed_stream"] = status(lambda: list(raw_stream(iter([b"\x0a\xff\xff"]), metadata=meta)))
raw_export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
result["malformed_otlp"] = status(lambda: raw_export(b"\x0a\x05\x0a\x03\xff"))

# Messages over the server's limit.
big = b"\x0a" + bytes([0x80, 0x80, 0x80, 0x01]) + b"\x00" * (2 * limit)
result["oversized_otlp"] = status(lambda: raw_export(big))
huge_batch = pb.MetricBatch(seq=2, definitions=[
    pb.SeriesDef(id=i, tags=tags(name="grpc_flood", i=str(i) * 40)) for i in range(limit // 40)])
result["oversized_stream"] = status(lambda: acks([huge_batch]))

# OTLP with one bad point among good ones: partial success with the reason.
def gauge(name, attrs, v):
    return m.Metric(name=name, gauge=m.Gauge(data_points=[m.NumberDataPoint(
        time_unix_nano=now * 1_000_000, as_double=v,
        attributes=[c.KeyValue(key=k, value=c.AnyValue(string_value=s)) for k, s in attrs.items()])]))
request = otlp.ExportMetricsServiceRequest(resource_metrics=[m.ResourceMetrics(scope_metrics=[
    m.ScopeMetrics(metrics=[gauge("otlp_good", {"k": "a"}, 8.0), gauge("otlp_long", {"k": "y" * 5000}, 1.0)])])])
export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                             request_serializer=otlp.ExportMetricsServiceRequest.SerializeToString,
                             response_deserializer=otlp.ExportMetricsServiceResponse.FromString)
response = export(request)
result["otlp_partial"] = {"rejected": response.partial_success.rejected_data_points,
                          "message": response.partial_success.error_message}

# Still serving: a later batch is stored.
result["after"] = acks([pb.MetricBatch(seq=3, definitions=[
    pb.SeriesDef(id=1, tags=tags(name="grpc_after", atlas_dstype="gauge"))],
    groups=[pb.SampleGroup(timestamp_ms=now, series=[1], values=[9.0])])])
print(json.dumps(result))
"#;

/// A number too large for a double is refused by publish and backfill alike; it used to be
/// stored as infinity.
#[test]
fn publish_and_backfill_refuse_numbers_out_of_range() {
    let server = Server::start(&["--ephemeral"]);
    let now = now_ms() / 60_000 * 60_000;
    for (route, ts) in [
        ("/api/v1/publish", now),
        ("/api/v1/backfill", now - 3_600_000),
    ] {
        let payload = format!(
            r#"{{"tags":{{"name":"huge","atlas.dstype":"gauge"}},"metrics":[{{"timestamp":{ts},"value":1e400}},{{"tags":{{"name":"fine"}},"timestamp":{ts},"value":2.5}}]}}"#
        );
        let (status, body) = server.post(route, payload.as_bytes(), None);
        assert_eq!(status, 202, "{route}: {body}");
        assert!(
            body.contains("invalid or missing value 1e400"),
            "{route}: {body}"
        );
    }
    let q = "/api/v1/graph?q=name,huge,:eq,:max&s=e-2h&format=stats.json";
    let stats = server.get_json(q);
    assert!(
        stats["stats"][0]["max"].as_f64().is_none_or(f64::is_nan),
        "huge was stored: {stats}"
    );
}

#[test]
fn grpc_refuses_bad_messages_and_keeps_what_it_accepted() {
    let limit = LIMIT.to_string();
    let server = Server::start(&["--step", "1s", "--grpc-max-message-bytes", &limit]);
    let python = python_with(&["grpcio-tools==1.85.1", "opentelemetry-proto==1.45.2"]);
    let proto_root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto/proto");
    let endpoint = server.grpc.trim_start_matches("http://").to_string();
    let out = std::process::Command::new(&python)
        .args(["-c", CLIENT, &endpoint, proto_root, &limit])
        .output()
        .expect("running the Python gRPC client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the client's JSON");

    let first = &r["first"][0];
    assert_eq!(first["seq"], 1, "{r}");
    assert_eq!(first["stored"], 2, "{r}");
    assert_eq!(first["rejected"], 3, "{r}");
    let reasons = first["reasons"].to_string();
    for words in ["length", "name", "series 9"] {
        assert!(reasons.contains(words), "{words}: {reasons}");
    }
    assert_eq!(r["resend"][0]["duplicate"], true, "{r}");
    assert_eq!(r["resend"][0]["stored"], 0, "{r}");
    // Stored once: the two good series' max and their sum are the values sent, not doubled.
    assert_eq!(value_at(&server, "name,grpc_good,:eq,:sum"), Some(6.0));

    for (case, code) in [
        ("malformed_stream", "INVALID_ARGUMENT"),
        ("malformed_otlp", "INVALID_ARGUMENT"),
        ("oversized_otlp", "RESOURCE_EXHAUSTED"),
        ("oversized_stream", "RESOURCE_EXHAUSTED"),
    ] {
        assert_eq!(r[case][0], code, "{case}: {r}");
        assert!(!r[case][1].as_str().unwrap_or("").is_empty(), "{case}: {r}");
    }
    assert!(
        r["oversized_otlp"][1]
            .as_str()
            .is_some_and(|m| m.contains(&limit)),
        "{r}"
    );
    assert_eq!(r["otlp_partial"]["rejected"], 1, "{r}");
    assert!(
        r["otlp_partial"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("length")),
        "{r}"
    );
    assert_eq!(value_at(&server, "name,otlp_good,:eq"), Some(8.0));
    assert_eq!(r["after"][0]["stored"], 1, "{r}");
    assert_eq!(value_at(&server, "name,grpc_after,:eq"), Some(9.0));
    assert_eq!(value_at(&server, "name,grpc_good,:eq,:sum"), Some(6.0));
}
