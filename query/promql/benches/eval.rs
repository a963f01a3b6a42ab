//! PromQL range queries over a seeded store shaped like the peer benchmark's questions:
//! 2,000 nodes in 80 apps, each with CPU, latency by method and requests by status (16,000
//! series), 180 points at 60 s, queried over the whole 3 h at a 60 s step.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use argus_promql::{Evaluation, QueryRange};
use argus_tsdb::{Sample, Store, StoreConfig, TagMap};
use criterion::{Criterion, criterion_group, criterion_main};

const STEP: i64 = 60_000;
const POINTS: i64 = 180;
const NODES: usize = 2_000;
const T0: i64 = 1_767_225_600_000;

const QUERIES: &[(&str, &str)] = &[
    (
        "q1_sum_by_app",
        r#"sum by ("nf.app") ({"sys.cpu.utilization"})"#,
    ),
    (
        "q2_rate_by_app_status",
        r#"sum by ("nf.app", status) (rate({"http.requests"}[5m]))"#,
    ),
    (
        "q3_regex_by_cluster",
        r#"sum by ("nf.cluster") ({"http.latency", "nf.cluster"=~"app00[0-3].*", method="GET"})"#,
    ),
    ("q5_max_latency", r#"max({"http.latency"})"#),
    (
        "q6_count_all",
        r#"count({__name__=~"http.requests|http.latency|sys.cpu.utilization"})"#,
    ),
];

fn build_store() -> Store {
    let now = T0 + POINTS * STEP;
    let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), Arc::new(move || now));
    let mut rng = fastrand::Rng::with_seed(20151);
    let mut ids = Vec::new();
    for node in 0..NODES {
        let app = format!("app{:03}", (node * node) % 80);
        let cluster = format!("{app}-{}", ["main", "canary"][node % 2]);
        let base = [
            ("nf.app", app.clone()),
            ("nf.cluster", cluster),
            ("nf.node", format!("i-{node:06}")),
            ("atlas.dstype", "gauge".to_string()),
        ];
        let mut series: Vec<Vec<(&str, String)>> =
            vec![vec![("name", "sys.cpu.utilization".into())]];
        for method in ["GET", "POST"] {
            series.push(vec![
                ("name", "http.latency".into()),
                ("method", method.into()),
            ]);
        }
        for status in ["2xx", "3xx", "4xx", "5xx", "other"] {
            series.push(vec![
                ("name", "http.requests".into()),
                ("status", status.into()),
            ]);
        }
        for extra in series {
            let tags = TagMap::from_pairs(
                base.iter()
                    .cloned()
                    .chain(extra)
                    .map(|(k, v)| (k.to_string(), v)),
            );
            ids.push(store.writer().resolve(&tags));
        }
    }
    let mut batch = Vec::with_capacity(ids.len());
    for p in 0..POINTS {
        batch.clear();
        for &id in &ids {
            batch.push(Sample {
                id,
                ts_ms: T0 + p * STEP,
                value: (rng.f64() * 1000.0).round() / 10.0,
            });
        }
        let out = store.writer().append_batch(&batch);
        assert!(out.rejected.is_empty(), "rejected samples");
    }
    store.maintain();
    store
}

fn bench_promql(c: &mut Criterion) {
    let store = build_store();
    let range = QueryRange {
        start_ms: T0 + 4 * STEP,
        end_ms: T0 + (POINTS - 1) * STEP,
        step_ms: STEP,
    };
    let mut group = c.benchmark_group("promql_range");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for (id, query) in QUERIES {
        let expr = argus_promql::parse(query).expect("a valid query");
        let probe = Evaluation::new(&store, range, 1_000_000)
            .eval(&expr)
            .expect("query runs");
        if let argus_promql::Value::Vector(v) = &probe {
            eprintln!("{id}: {} series", v.len());
        }
        group.bench_function(*id, |b| {
            b.iter(|| {
                black_box(
                    Evaluation::new(&store, range, 1_000_000)
                        .eval(&expr)
                        .expect("query runs"),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_promql);
criterion_main!(benches);
