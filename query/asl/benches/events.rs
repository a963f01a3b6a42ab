//! The Stack Language over events, per event on the server's side of the live path: 100,000
//! request events (7 paths, a numeric or textual status, a latency) through the
//! `EventEngine` of per-step expressions, against MQL's engine answering the same question
//! (its window keeps the events and aggregates at the close; the Stack Language's keeps
//! per-group accumulators). `push` evaluates the typed predicate too, as for events the
//! server takes in itself; `push_matched` is what an agent-evaluated event costs.

use std::hint::black_box;

use argus_query::events::{EventEngine, parse};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};

const EVENTS: usize = 100_000;
const STEP_MS: i64 = 10_000;

fn events() -> Vec<(i64, Value)> {
    (0..EVENTS)
        .map(|i| {
            let status = if i % 50 == 3 { 503 } else { 200 };
            let e = json!({
                "path": format!("/api/{}", i % 7),
                "status": if i % 7 == 3 { json!(status.to_string()) } else { json!(status) },
                "latency": (i % 97) as f64 * 1.5,
            });
            // An event a millisecond: 10,000 events a step, ten steps.
            (i as i64, e)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let events = events();
    let mut g = c.benchmark_group("events");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.sample_size(20);
    for (name, expr) in [
        ("count_by_path", "name,requests,:eq,:count,(,path,),:by"),
        (
            "sum_latency_by_path",
            "name,requests,:eq,value,latency,:eq,:and,:sum,(,path,),:by",
        ),
    ] {
        let q = parse(expr).expect("the expression compiles");
        g.bench_function(format!("asl_{name}_matched"), |b| {
            b.iter(|| {
                let mut engine = EventEngine::new(q.clone(), STEP_MS);
                let mut rows = 0;
                for (t, e) in &events {
                    rows += engine.push_matched(e, *t).len();
                }
                rows += engine.finish(EVENTS as i64).len();
                black_box(rows)
            })
        });
    }
    let filtered = parse("name,requests,:eq,status,500,:ge,:and,:count,(,path,),:by")
        .expect("the expression compiles");
    g.bench_function("asl_5xx_count_by_path_with_predicate", |b| {
        b.iter(|| {
            let mut engine = EventEngine::new(filtered.clone(), STEP_MS);
            let mut rows = 0;
            for (t, e) in &events {
                rows += engine.push(e, *t).len();
            }
            rows += engine.finish(EVENTS as i64).len();
            black_box(rows)
        })
    });
    let mql = argus_mql::parse(
        "select count(*), path from requests where path != null window 10 group by path",
    )
    .expect("the query parses");
    g.bench_function("mql_count_by_path_matched", |b| {
        b.iter(|| {
            let mut engine = argus_mql::Engine::new(mql.clone(), 1);
            engine.start_at(0);
            let mut rows = 0;
            for (t, e) in &events {
                rows += engine.push_matched(e.clone(), *t).len();
            }
            rows += engine.finish(EVENTS as i64).len();
            black_box(rows)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
