//! Writers creating series while maintenance removes empty ones, on real threads, against
//! a model of what was acknowledged: every acknowledged sample is in its own series exactly
//! once, and no series holds anything it was not sent. Maintenance used to remove a series
//! between a writer creating it and writing to it, then give its id to another series, so
//! an acknowledged sample was refused as "unknown series" or written into a stranger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use argus_tsdb::{
    Consolidation, Matcher, ReadRequest, Sample, SeriesSource, Store, StoreConfig, TagMap,
};
use proptest::prelude::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;
const RETENTION: i64 = 6 * 3_600_000;

/// What a run does: writers each send `requests` requests of `per_request` new series; one
/// request in `bad_every` has timestamps outside retention (its series are created and stay
/// empty, so maintenance removes them and their ids are reused); a stream defines
/// `stream_series` series up front, pins them, and writes to each only now and then.
#[derive(Clone, Debug)]
struct Run {
    writers: usize,
    requests: usize,
    per_request: usize,
    bad_every: usize,
    stream_series: usize,
    stream_rounds: usize,
}

fn tags(writer: usize, request: usize, k: usize) -> TagMap {
    TagMap::from_pairs([
        ("name".to_string(), "race".to_string()),
        ("w".to_string(), writer.to_string()),
        ("req".to_string(), request.to_string()),
        ("k".to_string(), k.to_string()),
        ("atlas.dstype".to_string(), "sum".to_string()),
    ])
}

fn stream_tags(k: usize) -> TagMap {
    TagMap::from_pairs([
        ("name".to_string(), "stream".to_string()),
        ("k".to_string(), k.to_string()),
        ("atlas.dstype".to_string(), "sum".to_string()),
    ])
}

/// Acknowledged value per series: sums add, so a sample applied twice or to the wrong
/// series shows up as a different total.
type Model = HashMap<TagMap, f64>;

fn writer_thread(store: &Store, run: &Run, w: usize) -> Model {
    let mut acked = Model::new();
    for n in 0..run.requests {
        let bad = n % run.bad_every == run.bad_every - 1;
        let ts_ms = if bad { T0 - 2 * RETENTION } else { T0 };
        let value = (w * 1_000_000 + n + 1) as f64;
        let writer = store.writer();
        let series: Vec<TagMap> = (0..run.per_request).map(|k| tags(w, n, k)).collect();
        let samples: Vec<Sample> = series
            .iter()
            .map(|t| Sample {
                id: writer.resolve(t),
                ts_ms,
                value,
            })
            .collect();
        let outcome = writer.append_batch(&samples);
        drop(writer);
        let refused: Vec<usize> = outcome.rejected.iter().map(|r| r.0).collect();
        for (i, t) in series.into_iter().enumerate() {
            if !refused.contains(&i) {
                *acked.entry(t).or_default() += value;
            }
        }
        assert_eq!(outcome.stored + refused.len(), run.per_request);
        assert!(bad || refused.is_empty(), "{:?}", outcome.rejected);
    }
    acked
}

/// An agent stream: ids resolved once, kept across many holds (pinned), written a few at a
/// time, so most of them sit empty while maintenance runs.
fn stream_thread(store: &Store, run: &Run) -> Model {
    let mut acked = Model::new();
    let writer = store.writer();
    let ids: Vec<_> = (0..run.stream_series)
        .map(|k| writer.resolve(&stream_tags(k)))
        .collect();
    writer.pin(&ids);
    drop(writer);
    for round in 0..run.stream_rounds {
        let k = round % run.stream_series;
        let value = (round + 1) as f64;
        let outcome = store.writer().append_batch(&[Sample {
            id: ids[k],
            ts_ms: T0,
            value,
        }]);
        assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
        *acked.entry(stream_tags(k)).or_default() += value;
        std::thread::yield_now();
    }
    store.unpin(&ids);
    acked
}

/// Every series with a value around `T0`, by tags, with the sum of its values.
fn contents(store: &Store) -> Model {
    let req = ReadRequest {
        start_ms: T0 - 10 * MIN,
        end_ms: T0 + 10 * MIN,
        step_ms: MIN,
        cf: Consolidation::Sum,
    };
    let ids = store.select(&Matcher::True);
    let mut out = Model::new();
    store
        .visit_values(&ids, &req, &mut |id, values| {
            let present: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
            if !present.is_empty() {
                let tags = store.tags(id).expect("a selected series has tags");
                assert!(
                    out.insert(tags.clone(), present.iter().sum()).is_none(),
                    "two series with the tags {tags:?}"
                );
            }
        })
        .unwrap();
    out
}

/// Runs `run` and checks the store against the model; returns the maintenance passes made
/// and the series they removed.
fn check(run: &Run) -> (u64, usize) {
    let store = Arc::new(Store::with_clock(
        StoreConfig::new(MIN, RETENTION),
        Arc::new(|| T0),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let passes = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(run.writers + 2));
    let maintenance = {
        let (store, done, passes, start) =
            (store.clone(), done.clone(), passes.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut dropped = 0;
            while !done.load(Ordering::Acquire) {
                dropped += store.maintain().series_dropped;
                passes.fetch_add(1, Ordering::Relaxed);
            }
            dropped
        })
    };
    let mut threads = Vec::new();
    for w in 0..run.writers {
        let (store, run, start) = (store.clone(), run.clone(), start.clone());
        threads.push(std::thread::spawn(move || {
            start.wait();
            writer_thread(&store, &run, w)
        }));
    }
    let stream = {
        let (store, run, start) = (store.clone(), run.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            stream_thread(&store, &run)
        })
    };
    let mut model = stream.join().unwrap();
    for t in threads {
        model.extend(t.join().unwrap());
    }
    done.store(true, Ordering::Release);
    let dropped = maintenance.join().unwrap();
    let got = contents(&store);
    for (tags, want) in &model {
        match got.get(tags) {
            None => panic!("acknowledged {want} for {tags:?}, which holds nothing"),
            Some(v) => assert_eq!(v, want, "{tags:?}"),
        }
    }
    for (tags, v) in &got {
        assert!(
            model.contains_key(tags),
            "{tags:?} holds {v}, though nothing acknowledged was sent to it"
        );
    }
    (passes.load(Ordering::Relaxed), dropped)
}

#[test]
fn writers_creating_series_while_maintenance_removes_lose_nothing() {
    let (passes, dropped) = check(&Run {
        writers: 3,
        requests: 3_000,
        per_request: 20,
        bad_every: 3,
        stream_series: 500,
        stream_rounds: 3_000,
    });
    // The run must have raced: many maintenance passes during the writes, removing empty
    // series (so ids were freed and reused under the writers).
    assert!(passes > 100, "maintenance made only {passes} passes");
    assert!(dropped > 1_000, "maintenance removed only {dropped} series");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn any_mix_of_concurrent_writers_matches_the_model(
        writers in 1usize..4,
        requests in 50usize..600,
        per_request in 1usize..40,
        bad_every in 2usize..6,
        stream_series in 1usize..200,
        stream_rounds in 1usize..800,
    ) {
        check(&Run { writers, requests, per_request, bad_every, stream_series, stream_rounds });
    }
}
