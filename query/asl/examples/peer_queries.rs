//! Loads the peer dataset (`../shared/bench/peers/gen.py` output) straight into a store and
//! times the six peer questions in process, without HTTP: for profiling the read path.
//!
//!     cargo run --release -p argus-query --example peer_queries -- DATASET_DIR [REPEATS] [ONLY]
//!
//! `ONLY` (1 to 6) runs one question, for a profiler.

use std::sync::Arc;
use std::time::Instant;

use argus_query::{GraphRequest, Limits, evaluate_with_limits};
use argus_tsdb::{Sample, Store, StoreConfig, TagMap};

const QUERIES: [&str; 6] = [
    "name,sys.cpu.utilization,:eq,:sum,(,nf.app,),:by",
    "name,http.requests,:eq,:sum,(,nf.app,status,),:by",
    "name,http.latency,:eq,nf.cluster,app00[0-3].*,:re,:and,method,GET,:eq,:and,:sum,(,nf.cluster,),:by",
    "name,http.requests,:eq,:sum,(,nf.node,),:by",
    "name,http.latency,:eq,:max",
    "name,(,http.requests,http.latency,sys.cpu.utilization,jvm.threads,),:in,:count",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: peer_queries DATASET_DIR [REPEATS]");
    let repeats: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(50);
    let only: Option<usize> = args.next().and_then(|r| r.parse().ok());
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/manifest.json")).unwrap())
            .unwrap();
    let points = manifest["points_per_series"].as_i64().unwrap();
    let start_ms = manifest["start_s"].as_i64().unwrap() * 1000;
    let step_ms = manifest["step_s"].as_i64().unwrap() * 1000;
    let raw = std::fs::read(format!("{dir}/values.f64")).unwrap();
    let values: Vec<f64> = raw
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let end_ms = start_ms + (points - 1) * step_ms;
    let now = end_ms + 10 * 60_000;
    let store = Store::with_clock(
        StoreConfig::new(step_ms, 6 * 3_600_000),
        Arc::new(move || now),
    );
    let text = std::fs::read_to_string(format!("{dir}/series.jsonl")).unwrap();
    let mut batch = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let s: serde_json::Value = serde_json::from_str(line).unwrap();
        let mut tags: TagMap = s["tags"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        let dstype = if s["kind"] == "counter" {
            "counter"
        } else {
            "gauge"
        };
        tags.insert("atlas.dstype".into(), dstype.into());
        let id = store.writer().resolve(&tags);
        batch.clear();
        for p in 0..points as usize {
            batch.push(Sample {
                id,
                ts_ms: start_ms + p as i64 * step_ms,
                value: values[i * points as usize + p],
            });
        }
        store.writer().append_batch(&batch);
    }
    store.maintain();
    let limits = Limits {
        max_lines: 10_000,
        ..Limits::default()
    };
    for (n, q) in QUERIES.iter().enumerate() {
        if only.is_some_and(|o| o != n + 1) {
            continue;
        }
        let params: Vec<(String, String)> = [
            ("q", q.to_string()),
            ("s", (start_ms - step_ms).to_string()),
            ("e", end_ms.to_string()),
            ("format", "json".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let req = GraphRequest::from_params(&params, now, step_ms).unwrap();
        let mut eval_ms = Vec::new();
        let mut json_ms = Vec::new();
        for _ in 0..repeats {
            let t = Instant::now();
            let r = evaluate_with_limits(&req, &store, &limits).unwrap();
            eval_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            std::hint::black_box(r.to_atlas_json());
            json_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        eval_ms.sort_by(f64::total_cmp);
        json_ms.sort_by(f64::total_cmp);
        println!(
            "eval p50 {:7.2} ms  json p50 {:7.2} ms  {q}",
            eval_ms[repeats / 2],
            json_ms[repeats / 2]
        );
    }
}
