//! Loads the peer dataset (gen.py output) straight into a `Store`, in process, and reports
//! resident memory per series: the store's own cost, without the HTTP/JSON path around it.
//!
//!     cargo run --release -p argus-tsdb --example load_rss -- DATASET_DIR

use std::sync::Arc;

use argus_tsdb::{Sample, Store, StoreConfig, TagMap};

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
        * 1024
}

/// Pulls `"key": "value"` pairs out of one line of series.jsonl (flat string objects only).
fn parse_line(line: &str) -> (String, Vec<(String, String)>) {
    let kind = line
        .split("\"kind\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string();
    let tags_part = line
        .split("\"tags\": {")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(['}', '\n']);
    let mut tags = Vec::new();
    for pair in tags_part.split("\", \"") {
        let mut kv = pair.trim_matches('"').splitn(2, "\": \"");
        if let (Some(k), Some(v)) = (kv.next(), kv.next()) {
            tags.push((
                k.trim_matches('"').to_string(),
                v.trim_matches('"').to_string(),
            ));
        }
    }
    (kind, tags)
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: load_rss DATASET_DIR");
    let manifest = std::fs::read_to_string(format!("{dir}/manifest.json")).expect("manifest.json");
    let field = |name: &str| -> i64 {
        manifest
            .split(&format!("\"{name}\": "))
            .nth(1)
            .and_then(|r| r.split([',', '\n']).next())
            .and_then(|v| v.trim().parse().ok())
            .expect("manifest field")
    };
    let (points, start_ms, step_ms) = (
        field("points_per_series") as usize,
        field("start_s") * 1000,
        field("step_s") * 1000,
    );
    let lines = std::fs::read_to_string(format!("{dir}/series.jsonl")).expect("series.jsonl");
    let raw = std::fs::read(format!("{dir}/values.f64")).expect("values.f64");
    let values: Vec<f64> = raw
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let series: Vec<(String, Vec<(String, String)>)> = lines.lines().map(parse_line).collect();
    let end_ms = start_ms + (points as i64 - 1) * step_ms;
    let store = Store::with_clock(
        StoreConfig::new(step_ms, 6 * 3_600_000),
        Arc::new(move || end_ms + 60_000),
    );
    let before = rss();
    for (i, (kind, tags)) in series.iter().enumerate() {
        let mut map = TagMap::from_pairs(tags.iter().cloned());
        map.insert(
            "atlas.dstype".into(),
            if kind == "counter" {
                "counter"
            } else {
                "gauge"
            }
            .into(),
        );
        let id = store.writer().resolve(&map);
        let batch: Vec<Sample> = (0..points)
            .map(|j| Sample {
                id,
                ts_ms: start_ms + j as i64 * step_ms,
                value: values[i * points + j],
            })
            .collect();
        store.writer().append_batch(&batch);
    }
    let after = rss();
    let n = series.len();
    let m = store.memory();
    println!(
        "series={n} rss_delta={} B/series accounting={:?}",
        (after - before) / n,
        m
    );
    println!(
        "accounted B/series: {}",
        (m.head_and_sealed_bytes
            + m.series_struct_bytes
            + m.tag_bytes
            + m.index_bytes
            + m.interner_bytes)
            / n
    );
}
