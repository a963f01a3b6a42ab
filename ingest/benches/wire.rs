//! Ingest paths from the wire to the store, in process (the network and the HTTP/gRPC
//! machinery are measured end to end by `examples/grpc_load.rs` and the peer benchmark):
//! an `argus.v1` metric batch, a Prometheus remote-write request, an Atlas publish payload.
//! Each writes 2,000 existing series one step further per iteration, so sealing is included.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use argus_ingest::convert::publish::{Mode, parse_payload, store_datapoints};
use argus_ingest::convert::{RemoteWriteState, StreamSeries};
use argus_ingest::metrics::ServerMetrics;
use argus_proto::remote_write::{Label, Sample, TimeSeries, WriteRequest};
use argus_proto::v1::{MetricBatch, SampleGroup, SeriesDef, Tag};
use argus_tsdb::{Store, StoreConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;

const SERIES: u32 = 2_000;
const STEP_MS: i64 = 60_000;
const START_MS: i64 = 1_767_225_600_000;

/// Moves the store's clock to `step` and, every hour of steps, runs its maintenance (outside
/// the measurement) so that retention keeps the store at its steady-state size.
fn advance(store: &Store, clock: &AtomicI64, step: i64) -> i64 {
    let ts = START_MS + step * STEP_MS;
    clock.store(ts, Ordering::Relaxed);
    if step % 60 == 0 {
        store.maintain();
    }
    ts
}

/// A store whose clock follows the benchmark's timestamps, so every step is accepted.
fn store(clock: Arc<AtomicI64>) -> Arc<Store> {
    Arc::new(Store::with_clock(
        StoreConfig::new(STEP_MS, 6 * 3_600_000),
        Arc::new(move || clock.load(Ordering::Relaxed)),
    ))
}

fn tags(i: u32) -> Vec<(String, String)> {
    vec![
        ("name".into(), format!("bench.metric{}", i % 10)),
        ("nf.app".into(), format!("app{:02}", i % 80)),
        ("nf.node".into(), format!("node{:05}", i / 10)),
    ]
}

fn value(i: u32, step: i64) -> f64 {
    f64::from(i % 100) + (step % 17) as f64 * 0.25
}

fn argus_v1(c: &mut Criterion) {
    let clock = Arc::new(AtomicI64::new(START_MS));
    let store = store(clock.clone());
    let mut series = StreamSeries::new(store.clone());
    let metrics = ServerMetrics::default();
    let definitions = (0..SERIES)
        .map(|i| SeriesDef {
            id: i,
            tags: tags(i)
                .into_iter()
                .chain([("atlas.dstype".into(), "gauge".into())])
                .map(|(key, value)| Tag { key, value })
                .collect(),
        })
        .collect();
    let first = MetricBatch {
        accounting: None,
        seq: 0,
        definitions,
        groups: vec![],
    };
    series.convert(&store.writer(), &first);
    let mut step = 0i64;
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(u64::from(SERIES)));
    g.bench_function("argus_v1_batch_decode_convert_store", |b| {
        b.iter_batched(
            || {
                step += 1;
                let ts = advance(&store, &clock, step);
                MetricBatch {
                    accounting: None,
                    seq: step as u64,
                    definitions: vec![],
                    groups: vec![SampleGroup {
                        timestamp_ms: ts,
                        series: (0..SERIES).collect(),
                        values: (0..SERIES).map(|i| value(i, step)).collect(),
                    }],
                }
                .encode_to_vec()
            },
            |bytes| {
                let decoded = MetricBatch::decode(bytes.as_slice()).expect("decodes");
                let writer = store.writer();
                let mut conv = series.convert(&writer, &decoded);
                black_box(conv.store(&writer, &[], &metrics).stored());
                drop(writer);
                series.recycle(std::mem::take(&mut conv.samples));
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn remote_write(c: &mut Criterion) {
    let clock = Arc::new(AtomicI64::new(START_MS));
    let store = store(clock.clone());
    let state = RemoteWriteState::default();
    let metrics = ServerMetrics::default();
    let request = |step: i64| {
        let ts = START_MS + step * STEP_MS;
        WriteRequest {
            timeseries: (0..SERIES)
                .map(|i| TimeSeries {
                    labels: [("__name__".to_string(), format!("bench_metric{}", i % 10))]
                        .into_iter()
                        .chain(
                            tags(i)
                                .into_iter()
                                .skip(1)
                                .map(|(k, v)| (k.replace('.', "_"), v)),
                        )
                        .chain([
                            ("job".into(), "node".into()),
                            ("instance".into(), "host:9100".into()),
                        ])
                        .map(|(name, value)| Label { name, value })
                        .collect(),
                    samples: vec![Sample {
                        value: value(i, step),
                        timestamp: ts,
                    }],
                })
                .collect(),
            metadata: vec![],
        }
    };
    let mut step = 0i64;
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(u64::from(SERIES)));
    g.bench_function("remote_write_request_snappy_parse_store", |b| {
        b.iter_batched(
            // The body is built outside the measurement: the loader's work is not the
            // server's.
            || {
                step += 1;
                advance(&store, &clock, step);
                snap::raw::Encoder::new()
                    .compress_vec(&request(step).encode_to_vec())
                    .expect("compresses")
            },
            |body| {
                let raw = snap::raw::Decoder::new()
                    .decompress_vec(&body)
                    .expect("decompresses");
                let writer = store.writer();
                let mut conv = state.convert(&writer, &raw).expect("parses");
                black_box(conv.store(&writer, &[], &metrics).stored());
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn publish(c: &mut Criterion) {
    let clock = Arc::new(AtomicI64::new(START_MS));
    let store = store(clock.clone());
    let payload = |step: i64| {
        let ts = START_MS + step * STEP_MS;
        let metrics: Vec<serde_json::Value> = (0..SERIES)
            .map(|i| {
                let mut t: serde_json::Map<String, serde_json::Value> = tags(i)
                    .into_iter()
                    .map(|(k, v)| (k, serde_json::Value::String(v)))
                    .collect();
                t.insert("atlas.dstype".into(), "gauge".into());
                serde_json::json!({"tags": t, "timestamp": ts, "value": value(i, step)})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "metrics": metrics })).expect("serializes")
    };
    let metrics = ServerMetrics::default();
    let mut step = 0i64;
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(u64::from(SERIES)));
    g.bench_function("atlas_publish_json_parse_store", |b| {
        b.iter_batched(
            || {
                step += 1;
                let ts = advance(&store, &clock, step);
                (payload(step), ts)
            },
            |(body, now)| {
                let parsed = parse_payload(&body, Mode::Publish, now, 60_000, 6 * 3_600_000)
                    .expect("parses");
                black_box(store_datapoints(store.writer(), parsed, &metrics, None).stored())
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

/// The cluster's write path without the network: a gateway splits a batch of 2,000 series
/// into one message per partition (64), and a store node applies every message.
fn cluster_log(c: &mut Criterion) {
    use argus_ingest::cluster::log::{Applier, decode_into, split};
    let clock = Arc::new(AtomicI64::new(START_MS));
    let gateway = store(clock.clone());
    let applier = store(clock.clone());
    let ids: Vec<u32> = {
        let w = gateway.writer();
        (0..SERIES)
            .map(|i| w.resolve(&argus_tsdb::TagMap::from_pairs(tags(i))))
            .collect()
    };
    let mut group = c.benchmark_group("cluster_log");
    group.throughput(Throughput::Elements(u64::from(SERIES)));
    let mut step = 0;
    // The gateway's store only names the series (its maintenance would drop them, holding
    // no values); the clock moves on for the applier's window.
    let batch = |step: i64| -> Vec<argus_tsdb::Sample> {
        let ts = START_MS + step * STEP_MS;
        clock.store(ts, Ordering::Relaxed);
        ids.iter()
            .zip(0..)
            .map(|(&id, i)| argus_tsdb::Sample {
                id,
                ts_ms: ts,
                value: value(i, step),
            })
            .collect()
    };
    group.bench_function("split_2000_series_64_partitions", |b| {
        b.iter(|| {
            step += 1;
            let samples = batch(step);
            let _hold = gateway.writer();
            black_box(split(&gateway, &samples, b"", 64))
        })
    });
    let mut scratch = Applier::default();
    group.bench_function("apply_2000_series_64_partitions", |b| {
        b.iter_batched(
            || {
                step += 1;
                let samples = batch(step);
                if step % 60 == 0 {
                    applier.maintain();
                }
                let _hold = gateway.writer();
                split(&gateway, &samples, b"", 64)
            },
            |messages| {
                for m in &messages {
                    black_box(decode_into(&applier, &m.payload, &mut scratch).expect("applied"));
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, argus_v1, remote_write, publish, cluster_log);
criterion_main!(benches);
