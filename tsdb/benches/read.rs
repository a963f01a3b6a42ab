//! Reading values out of the store, as every query's scan does: 20,000 series of 3 hours at
//! 60 s, each read on the query's step (`SeriesSource::visit_values`). Two cases: the last
//! hour still in the heads (a store minutes after its writes, as the peer benchmark queries
//! it), and every block sealed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use argus_tsdb::{
    Consolidation, Postings, ReadRequest, Sample, SeriesSource, Store, StoreConfig, TagMap,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const STEP: i64 = 60_000;
const N_SERIES: usize = 20_000;
/// Steps written: the third hour's block holds 59 of its 60 steps.
const STEPS: i64 = 179;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;

fn value(series: usize, step: i64) -> f64 {
    if series.is_multiple_of(2) {
        // A counter's rate: an integer per step over 60 s.
        ((series as i64 * 13 + step * 7) % 600) as f64 / 60.0
    } else {
        // A gauge in hundredths.
        ((series as i64 * 31 + step * 7) % 10_000) as f64 / 100.0
    }
}

fn loaded() -> (Store, Arc<AtomicI64>, Postings) {
    let now = Arc::new(AtomicI64::new(T0));
    let clock_now = now.clone();
    let clock: argus_tsdb::Clock = Arc::new(move || clock_now.load(Ordering::Relaxed));
    let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), clock);
    let ids: Vec<_> = (0..N_SERIES)
        .map(|i| {
            store.writer().resolve(&TagMap::from_pairs([
                ("name", "bench.read".to_string()),
                ("nf.node", format!("i-{:05}", i / 10)),
                ("series", format!("{}", i % 10)),
                ("atlas.dstype", "gauge".to_string()),
            ]))
        })
        .collect();
    let mut batch = Vec::with_capacity(N_SERIES);
    for step in 0..STEPS {
        let ts = T0 + step * STEP;
        now.store(ts, Ordering::Relaxed);
        batch.clear();
        batch.extend(ids.iter().enumerate().map(|(i, &id)| Sample {
            id,
            ts_ms: ts,
            value: value(i, step),
        }));
        assert_eq!(store.writer().append_batch(&batch).stored, N_SERIES);
    }
    let postings = ids.into_iter().collect();
    (store, now, postings)
}

fn bench_read(c: &mut Criterion) {
    let (store, now, ids) = loaded();
    let req = ReadRequest {
        start_ms: T0,
        end_ms: T0 + (STEPS - 1) * STEP,
        step_ms: STEP,
        cf: Consolidation::Avg,
    };
    let read_all = |store: &Store| {
        let mut values = 0usize;
        store
            .visit_values(&ids, &req, &mut |_, v| {
                values += v.iter().filter(|x| !x.is_nan()).count()
            })
            .expect("reading the store");
        assert_eq!(values, N_SERIES * STEPS as usize);
    };
    let mut group = c.benchmark_group("store_read_all_series");
    group.throughput(Throughput::Elements(N_SERIES as u64 * STEPS as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("last_hour_in_heads", |b| b.iter(|| read_all(&store)));
    // Past the block's end and its grace: maintenance seals every head.
    now.store(T0 + 4 * 3_600_000, Ordering::Relaxed);
    store.maintain();
    store.maintain();
    group.bench_function("all_sealed", |b| b.iter(|| read_all(&store)));
    group.finish();
}

criterion_group!(benches, bench_read);
criterion_main!(benches);
