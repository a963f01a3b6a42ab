//! Every refusal is counted: 5,000 invalid series in one request over remote write, the
//! agent protocol and OTLP each raise `argus_samples_rejected_total` by exactly 5,000, and
//! the answer names the first reasons. Requests used to keep the first 1,000 refusals and
//! count no more.

use argus_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use argus_proto::otlp::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use argus_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use argus_proto::otlp::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use argus_proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use argus_proto::v1::ingest_client::IngestClient;
use argus_proto::v1::{MetricBatch, SampleGroup, SeriesDef, Tag};
use argus_tests::{Server, now_ms};
use prost::Message;

const INVALID: usize = 5_000;

/// A tag value one character over Atlas's limit of 120: the reason is `value_length`.
fn too_long(i: usize) -> String {
    format!("{i:0>121}")
}

fn value_length_refusals(server: &Server) -> u64 {
    let (_, text) = server.get("/metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("argus_samples_rejected_total{reason=\"value_length\"}")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

#[test]
fn five_thousand_invalid_series_are_five_thousand_counted_refusals_on_every_path() {
    let server = Server::start(&["--ephemeral"]);
    let now = now_ms();

    // Remote write: one request of 5,000 invalid series and one good one.
    let before = value_length_refusals(&server);
    let mut timeseries: Vec<TimeSeries> = (0..INVALID)
        .map(|i| TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "rw_refused".into(),
                },
                Label {
                    name: "long".into(),
                    value: too_long(i),
                },
            ],
            samples: vec![Sample {
                value: 1.0,
                timestamp: now,
            }],
        })
        .collect();
    timeseries.push(TimeSeries {
        labels: vec![Label {
            name: "__name__".into(),
            value: "rw_kept".into(),
        }],
        samples: vec![Sample {
            value: 2.0,
            timestamp: now,
        }],
    });
    let body = snap::raw::Encoder::new()
        .compress_vec(
            &WriteRequest {
                timeseries,
                metadata: vec![],
            }
            .encode_to_vec(),
        )
        .unwrap();
    let (status, text) = server.post("/api/v1/write", &body, Some("snappy"));
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("5000 samples refused, 1 stored"), "{text}");
    assert!(text.contains("value length 121 out of range"), "{text}");
    assert_eq!(value_length_refusals(&server) - before, INVALID as u64);

    // The agent protocol: one batch defining 5,000 invalid series, a sample each.
    let before = value_length_refusals(&server);
    let ack = runtime().block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = IngestClient::new(channel);
        let batch = MetricBatch {
            accounting: None,
            seq: 1,
            definitions: (0..INVALID as u32)
                .map(|i| SeriesDef {
                    id: i,
                    tags: vec![
                        Tag {
                            key: "name".into(),
                            value: "agent_refused".into(),
                        },
                        Tag {
                            key: "long".into(),
                            value: too_long(i as usize),
                        },
                    ],
                })
                .collect(),
            groups: vec![SampleGroup {
                timestamp_ms: now,
                series: (0..INVALID as u32).collect(),
                values: vec![1.0; INVALID],
            }],
        };
        let mut request = tonic::Request::new(tokio_stream::iter([batch]));
        request.metadata_mut().insert(
            argus_proto::AGENT_ID_HEADER,
            "refusals-test".parse().unwrap(),
        );
        let mut acks = client.push_metrics(request).await.unwrap().into_inner();
        acks.message().await.unwrap().expect("an ack")
    });
    assert_eq!((ack.stored, ack.rejected), (0, INVALID as u32), "{ack:?}");
    assert_eq!(ack.reasons.len(), 5, "{ack:?}");
    assert!(ack.reasons[0].contains("value length 121"), "{ack:?}");
    assert_eq!(value_length_refusals(&server) - before, INVALID as u64);

    // OTLP: 5,000 gauge points, each with an attribute too long.
    let before = value_length_refusals(&server);
    let response = runtime().block_on(async {
        let mut client = MetricsServiceClient::connect(server.grpc.clone())
            .await
            .unwrap();
        let points = (0..INVALID)
            .map(|i| NumberDataPoint {
                attributes: vec![KeyValue {
                    key: "long".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(too_long(i))),
                    }),
                    ..Default::default()
                }],
                time_unix_nano: now as u64 * 1_000_000,
                value: Some(number_data_point::Value::AsDouble(1.0)),
                ..Default::default()
            })
            .collect();
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: "otlp_refused".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: points,
                        })),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        client.export(request).await.unwrap().into_inner()
    });
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, INVALID as i64);
    assert!(
        partial.error_message.contains("value length 121"),
        "{}",
        partial.error_message
    );
    assert_eq!(value_length_refusals(&server) - before, INVALID as u64);
}

fn events_refused(server: &Server) -> u64 {
    let (_, text) = server.get("/metrics");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("argus_events_rejected_total ")?
                .trim()
                .parse()
                .ok()
        })
        .expect("argus_events_rejected_total is exported")
}

/// Raw events are counted apart from samples: 5,000 lines that are not JSON objects in one
/// request raise `argus_events_rejected_total` by exactly 5,000, and no sample counter.
#[test]
fn five_thousand_invalid_events_are_five_thousand_counted_refusals() {
    let server = Server::start(&["--ephemeral"]);
    let (events_before, samples_before) = (events_refused(&server), value_length_refusals(&server));
    let mut body = String::new();
    for i in 0..INVALID {
        body.push_str(&format!("[{i}]\n"));
    }
    body.push_str("{\"ok\":true}\n");
    let (status, text) = server.post("/api/v1/events/refusals", body.as_bytes(), None);
    assert_eq!(status, 202, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["errorCount"], INVALID);
    assert!(
        answer["message"][0]
            .as_str()
            .is_some_and(|m| m.contains("line 1")),
        "{answer}"
    );
    assert_eq!(events_refused(&server) - events_before, INVALID as u64);
    assert_eq!(value_length_refusals(&server), samples_before);
}
