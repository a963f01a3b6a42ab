//! Store ingest for existing series: batches of one sample per series per step, moving
//! forward in time, so block sealing and retention run as they do in the server. Each case
//! runs in memory and with the write-ahead log (periodic sync, as the server's default), so
//! the log's cost reads off the two.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use argus_tsdb::{Durability, Sample, SeriesId, Store, StoreConfig, TagMap};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const STEP: i64 = 60_000;
const N_SERIES: usize = 20_000;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;

/// A directory removed on drop.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup(dstype: &str, durable: bool) -> (Store, Arc<AtomicI64>, Vec<SeriesId>, Option<Scratch>) {
    let now = Arc::new(AtomicI64::new(T0));
    let clock_now = now.clone();
    let cfg = StoreConfig::new(STEP, 6 * 3_600_000);
    let clock: argus_tsdb::Clock = Arc::new(move || clock_now.load(Ordering::Relaxed));
    let (store, scratch) = if durable {
        let dir = std::env::temp_dir().join(format!("argus-bench-wal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = Store::open(cfg, clock, Durability::new(&dir), &mut |_| {})
            .expect("opening a durable store in the temporary directory");
        (store, Some(Scratch(dir)))
    } else {
        (Store::with_clock(cfg, clock), None)
    };
    let ids = (0..N_SERIES)
        .map(|i| {
            store.writer().resolve(&TagMap::from_pairs([
                ("name", "bench.metric".to_string()),
                ("nf.node", format!("i-{:05}", i / 10)),
                ("series", format!("{}", i % 10)),
                ("atlas.dstype", dstype.to_string()),
            ]))
        })
        .collect();
    (store, now, ids, scratch)
}

fn value(kind: &str, series: usize, step: i64) -> f64 {
    match kind {
        // a cumulative counter growing by a series-dependent integer each step
        "counter" => (step * (series as i64 % 97 + 1)) as f64,
        // a gauge rounded to 0.01
        _ => ((series as i64 * 31 + step * 7) % 10_000) as f64 / 100.0,
    }
}

fn bench_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_append_existing_series");
    group.throughput(Throughput::Elements(N_SERIES as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (case, durable) in [("one_core", false), ("one_core_wal", true)] {
        for kind in ["gauge", "counter"] {
            group.bench_function(BenchmarkId::new(case, kind), |b| {
                let (store, now, ids, _scratch) = setup(kind, durable);
                let mut step: i64 = 0;
                let mut batch: Vec<Sample> = Vec::with_capacity(N_SERIES);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        step += 1;
                        let ts = T0 + step * STEP;
                        now.store(ts, Ordering::Relaxed);
                        batch.clear();
                        batch.extend(ids.iter().enumerate().map(|(i, &id)| Sample {
                            id,
                            ts_ms: ts,
                            value: value(kind, i, step),
                        }));
                        let start = Instant::now();
                        let out = store.writer().append_batch(&batch);
                        total += start.elapsed();
                        assert_eq!(out.stored, N_SERIES);
                        if step % 60 == 0 {
                            // retention and sealing happen off the measured path, as in the server
                            store.maintain();
                            store.sync_wal().expect("syncing the log");
                        }
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let (store, _now, _ids, _scratch) = setup("gauge", false);
    let tags: Vec<TagMap> = (0..N_SERIES)
        .map(|i| {
            TagMap::from_pairs([
                ("name", "bench.metric".to_string()),
                ("nf.node", format!("i-{:05}", i / 10)),
                ("series", format!("{}", i % 10)),
                ("atlas.dstype", "gauge".to_string()),
            ])
        })
        .collect();
    let mut group = c.benchmark_group("store_lookup_by_tags");
    group.throughput(Throughput::Elements(N_SERIES as u64));
    group.sample_size(20);
    group.bench_function("existing_series", |b| {
        b.iter(|| {
            let mut found = 0;
            for t in &tags {
                found += store.lookup(t).is_some() as usize;
            }
            assert_eq!(found, N_SERIES);
        })
    });
    group.finish();
}

criterion_group!(benches, bench_append, bench_lookup);
criterion_main!(benches);
