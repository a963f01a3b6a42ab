//! Replays the fuzz corpora of the server's decoders (`ingest/fuzz/corpus/{publish,
//! aggregator, remote_write}`) as ordinary tests, so every input the fuzzer kept is checked on stable
//! Rust in CI. `make_seeds` (ignored) writes the seeds: valid and hostile payloads.

use std::io::Write;
use std::path::{Path, PathBuf};

use argus_proto::remote_write::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use prost::Message;

fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name)
}

fn replay(name: &str, entry: fn(&[u8]), at_least: usize) {
    argus_tests::replay_corpus(&corpus_dir(name), entry, at_least);
}

#[test]
fn publish_corpus_replays() {
    replay("publish", argus_ingest::fuzzing::publish_json, 10);
}

#[test]
fn aggregator_corpus_replays() {
    replay("aggregator", argus_ingest::fuzzing::aggregator_update, 10);
}

#[test]
fn remote_write_corpus_replays() {
    replay("remote_write", argus_ingest::fuzzing::remote_write, 5);
}

fn publish_seeds(now: i64) -> Vec<String> {
    vec![
        format!(
            r#"{{"tags":{{"nf.app":"www"}},"metrics":[{{"tags":{{"name":"cpu","atlas.dstype":"gauge"}},"timestamp":{now},"value":1.5}}]}}"#
        ),
        format!(r#"{{"metrics":[{{"tags":{{"name":"a1"}},"start":{now},"values":[2.0,"NaN"]}}]}}"#),
        format!(
            r#"{{"metrics":[{{"tags":{{"name":"c","atlas.dstype":"counter"}},"timestamp":{now},"value":"Infinity"}},{{"tags":{{"name":"c","atlas.dstype":"counter"}},"timestamp":{},"value":3}}]}}"#,
            now + 60_000
        ),
        format!(
            r#"{{"metrics":[{{"tags":{{"name":"{}"}},"timestamp":{now},"value":1}}]}}"#,
            "x".repeat(300)
        ),
        r#"{"metrics":[{"tags":{},"timestamp":1,"value":1}]}"#.to_string(),
        r#"{"tags":{"name":"x"},"metrics":[]}"#.to_string(),
        "[]".to_string(),
        "{".to_string(),
        r#"{"metrics":[{"tags":{"name":"s","atlas.dstype":"sum","a":"1","b":"2","c":"3"},"timestamp":1700000000000,"value":-0.0}]}"#.to_string(),
        r#"{"metrics":[{"tags":{"name":"bad key!","atlas.dstype":"percentile"},"timestamp":1700000000000,"value":1e308}]}"#.to_string(),
    ]
}

fn remote_write_seeds(now: i64) -> Vec<WriteRequest> {
    let label = |n: &str, v: &str| Label {
        name: n.into(),
        value: v.into(),
    };
    let series = |name: &str, extra: &[(&str, &str)], values: &[f64]| TimeSeries {
        labels: std::iter::once(label("__name__", name))
            .chain(extra.iter().map(|(k, v)| label(k, v)))
            .collect(),
        samples: values
            .iter()
            .enumerate()
            .map(|(i, &value)| Sample {
                value,
                timestamp: now + i as i64 * 15_000,
            })
            .collect(),
    };
    vec![
        WriteRequest {
            timeseries: vec![
                series(
                    "http_requests_total",
                    &[("job", "api"), ("code", "200")],
                    &[1.0, 5.0, 9.0],
                ),
                series(
                    "node_memory_MemFree_bytes",
                    &[("instance", "a:9100")],
                    &[1e9],
                ),
                series("up", &[], &[f64::from_bits(0x7ff0000000000002)]),
            ],
            metadata: vec![MetricMetadata {
                r#type: 1,
                metric_family_name: "http_requests_total".into(),
                help: "requests".into(),
                unit: String::new(),
            }],
        },
        WriteRequest {
            timeseries: vec![series("latency_seconds_bucket", &[("le", "+Inf")], &[3.0])],
            metadata: vec![],
        },
        WriteRequest {
            timeseries: vec![series("", &[("bad label", "x")], &[1.0])],
            metadata: vec![],
        },
    ]
}

#[test]
#[ignore]
fn make_seeds() {
    let now = 1_700_000_000_000i64;
    let publish = publish_seeds(now);
    for (i, p) in publish.iter().enumerate() {
        std::fs::write(corpus_dir("publish").join(format!("seed-{i}.json")), p).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(publish[0].as_bytes()).unwrap();
    std::fs::write(
        corpus_dir("publish").join("seed-gzip"),
        gz.finish().unwrap(),
    )
    .unwrap();
    for (i, r) in remote_write_seeds(now).iter().enumerate() {
        let raw = r.encode_to_vec();
        let framed = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        std::fs::write(
            corpus_dir("remote_write").join(format!("seed-{i}.pb")),
            &raw,
        )
        .unwrap();
        std::fs::write(
            corpus_dir("remote_write").join(format!("seed-{i}.snappy")),
            &framed,
        )
        .unwrap();
    }
}
