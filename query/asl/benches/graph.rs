//! Graph queries over a seeded synthetic dataset shaped like the peer benchmark
//! (`shared/bench/peers`): 20,000 series (2,000 nodes x 10 series over 80 apps with Zipf-like
//! sizes), 180 points at 60 s, the six peer questions in the Stack Language through
//! `graph::evaluate_with_limits` over the full 3 h window.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use argus_query::{GraphRequest, Limits, evaluate_with_limits};
use argus_tsdb::{Sample, Store, StoreConfig, TagMap};
use criterion::{Criterion, criterion_group, criterion_main};

const STEP: i64 = 60_000;
const POINTS: i64 = 180;
const NODES: usize = 2_000;
const APPS: usize = 80;
/// An hour boundary, so the 180 points fill three whole one-hour blocks.
const T0: i64 = 1_767_225_600_000;

const QUERIES: &[(&str, &str)] = &[
    (
        "q1_sum_by_app",
        "name,sys.cpu.utilization,:eq,:sum,(,nf.app,),:by",
    ),
    (
        "q2_by_app_status",
        "name,http.requests,:eq,:sum,(,nf.app,status,),:by",
    ),
    (
        "q3_regex_by_cluster",
        "name,http.latency,:eq,nf.cluster,app00[0-3].*,:re,:and,method,GET,:eq,:and,:sum,(,nf.cluster,),:by",
    ),
    ("q4_by_node", "name,http.requests,:eq,:sum,(,nf.node,),:by"),
    ("q5_max_latency", "name,http.latency,:eq,:max"),
    (
        "q6_count_all",
        "name,(,http.requests,http.latency,sys.cpu.utilization,jvm.threads,),:in,:count",
    ),
];

/// One series per node: its name, extra tags, and the kind of values (0 request rate,
/// 1 latency, 2 cpu percent, 3 thread count).
type Template = (&'static str, Vec<(&'static str, &'static str)>, u8);

fn templates() -> Vec<Template> {
    let mut t = Vec::new();
    for m in ["GET", "POST"] {
        for s in ["2xx", "4xx", "5xx"] {
            t.push(("http.requests", vec![("method", m), ("status", s)], 0));
        }
    }
    for m in ["GET", "POST"] {
        t.push(("http.latency", vec![("method", m)], 1));
    }
    t.push(("sys.cpu.utilization", vec![], 2));
    t.push(("jvm.threads", vec![], 3));
    t
}

fn build_store() -> Store {
    let now = T0 + POINTS * STEP;
    let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), Arc::new(move || now));
    // Seeded: the dataset is the same on every run.
    let mut rng = fastrand::Rng::with_seed(20151);
    let weights: Vec<f64> = (1..=APPS).map(|i| 1.0 / (i as f64).powf(0.9)).collect();
    let total: f64 = weights.iter().sum();
    let regions = ["us-east-1", "us-west-2", "eu-west-1"];
    let stacks = ["main", "canary", "batch"];
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    for node in 0..NODES {
        let mut pick = rng.f64() * total;
        let mut a = 0;
        while a + 1 < APPS && pick >= weights[a] {
            pick -= weights[a];
            a += 1;
        }
        let app = format!("app{a:03}");
        let cluster = format!("{app}-{}", stacks[(node * 7 + a) % (1 + a % 3)]);
        let region = regions[(a + node) % 3];
        let zone = format!("{region}{}", ["a", "b", "c"][(node / 3) % 3]);
        let inst = format!("i-{:012x}", rng.u64(..) >> 16);
        for (name, extra, kind) in templates() {
            let mut tags = TagMap::from_pairs([
                ("name", name.to_string()),
                ("nf.app", app.clone()),
                ("nf.cluster", cluster.clone()),
                ("nf.node", inst.clone()),
                ("nf.region", region.to_string()),
                ("nf.zone", zone.clone()),
                ("atlas.dstype", "gauge".to_string()),
            ]);
            for (k, v) in extra {
                tags.insert(k.to_string(), v.to_string());
            }
            ids.push(store.writer().resolve(&tags));
            kinds.push(kind);
        }
    }
    let mut level: Vec<f64> = kinds
        .iter()
        .map(|k| match k {
            0 => rng.f64() * 50.0,
            1 => 5.0 + rng.f64() * 100.0,
            2 => 5.0 + rng.f64() * 55.0,
            _ => (50.0 + rng.f64() * 350.0).floor(),
        })
        .collect();
    let mut batch = Vec::with_capacity(ids.len());
    for p in 0..POINTS {
        batch.clear();
        for (i, &id) in ids.iter().enumerate() {
            let step = rng.f64() - 0.5;
            let v = &mut level[i];
            *v = match kinds[i] {
                0 => (*v + step * 2.0).max(0.0),
                1 => (*v * (1.0 + step * 0.1)).max(0.1),
                2 => ((*v + step * 3.0).clamp(0.0, 100.0) * 100.0).round() / 100.0,
                _ => (*v + (step * 5.0).round()).max(1.0),
            };
            batch.push(Sample {
                id,
                ts_ms: T0 + p * STEP,
                value: *v,
            });
        }
        let out = store.writer().append_batch(&batch);
        assert!(
            out.rejected.is_empty(),
            "rejected samples: {:?}",
            out.rejected.first()
        );
    }
    // Seal the blocks a live store would have sealed by now (all but the current hour).
    store.maintain();
    store
}

fn request(expr: &str) -> GraphRequest {
    let end = T0 + (POINTS - 1) * STEP;
    let params: Vec<(String, String)> = [
        ("q", expr.to_string()),
        ("s", (end - 3 * 3_600_000).to_string()),
        ("e", end.to_string()),
        ("step", "60s".to_string()),
        ("format", "json".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    GraphRequest::from_params(&params, end + STEP, STEP).expect("valid request")
}

fn bench_graph(c: &mut Criterion) {
    let store = build_store();
    // q4 has 2,000 groups, over Atlas's default of 1024 lines per request.
    let limits = Limits {
        max_lines: 10_000,
        ..Limits::default()
    };
    let mut group = c.benchmark_group("graph_evaluate");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    for (id, expr) in QUERIES {
        let req = request(expr);
        let probe = evaluate_with_limits(&req, &store, &limits).expect("query runs");
        let total: f64 = probe
            .series
            .iter()
            .flat_map(|s| s.values.iter())
            .filter(|v| !v.is_nan())
            .sum();
        eprintln!(
            "{id}: {} lines, {} points each, sum {total:.6e}",
            probe.series.len(),
            probe.series[0].values.len()
        );
        group.bench_function(*id, |b| {
            b.iter(|| black_box(evaluate_with_limits(&req, &store, &limits).expect("query runs")))
        });
    }
    group.finish();

    // The text alone: q4's 2,000 lines of 180 rates, the largest answer of the six.
    let mut group = c.benchmark_group("graph_json");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    let q4 = evaluate_with_limits(&request(QUERIES[3].1), &store, &limits).expect("query runs");
    group.bench_function("q4_by_node", |b| b.iter(|| black_box(q4.to_atlas_json())));
    // As the server streams it: parts of 256 KiB, printed on two threads.
    group.bench_function("q4_by_node_in_parts", |b| {
        b.iter(|| {
            let mut bytes = 0;
            q4.write_atlas_json(256 * 1024, &mut |part| {
                bytes += part.len();
                Some(part)
            });
            black_box(bytes)
        })
    });
    group.finish();

    let mut group = c.benchmark_group("graph_evaluate_and_json");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    for (id, expr) in QUERIES {
        let req = request(expr);
        group.bench_function(*id, |b| {
            b.iter(|| {
                let r = evaluate_with_limits(&req, &store, &limits).expect("query runs");
                black_box(r.to_atlas_json())
            })
        });
    }
    group.finish();
}

/// Typical dashboard expressions beyond plain aggregates: the cost of the math, stateful and
/// filter layers on top of the data they read.
const DASHBOARD: &[(&str, &str)] = &[
    (
        "topk_others_by_app",
        "name,http.requests,:eq,:sum,(,nf.app,),:by,max,10,:topk-others-sum",
    ),
    (
        "hour_over_hour",
        "name,http.requests,:eq,:sum,:dup,1h,:offset,:sub",
    ),
    (
        "rolling_mean_by_app",
        "name,sys.cpu.utilization,:eq,:avg,(,nf.app,),:by,5,3,:rolling-mean",
    ),
    ("des_of_max", "name,http.latency,:eq,:max,10,0.1,0.5,:des"),
    (
        "error_ratio_by_cluster",
        "name,http.requests,:eq,status,5xx,:eq,:and,:sum,(,nf.cluster,),:by,\
         name,http.requests,:eq,:sum,(,nf.cluster,),:by,:div,100,:mul",
    ),
];

fn bench_dashboard(c: &mut Criterion) {
    let store = build_store();
    let limits = Limits {
        max_lines: 10_000,
        ..Limits::default()
    };
    let mut group = c.benchmark_group("graph_dashboard");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(4));
    for (id, expr) in DASHBOARD {
        let req = request(expr);
        group.bench_function(*id, |b| {
            b.iter(|| black_box(evaluate_with_limits(&req, &store, &limits).expect("query runs")))
        });
    }
    // A PNG of q1's 80 lines with legend and stats, as a dashboard panel asks for it.
    let mut req = request(QUERIES[0].1);
    req.format = argus_query::Format::Png;
    let result = evaluate_with_limits(&req, &store, &limits).expect("query runs");
    group.bench_function("png_q1_80_lines", |b| {
        b.iter(|| black_box(result.render(&req)))
    });
    group.finish();
}

criterion_group!(benches, bench_graph, bench_dashboard);
criterion_main!(benches);
