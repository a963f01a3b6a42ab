//! Durability through the public API: a store dropped without warning (as `kill -9` leaves
//! it) and reopened from its directory holds exactly what it acknowledged, whatever mix of
//! snapshots, segments and id reuse came before; damaged files are reported and everything
//! good is kept.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use argus_tsdb::{
    Consolidation, Durability, Matcher, ReadRequest, Recovery, Sample, SeriesSource, Store,
    StoreConfig, TagMap, WalSync, Writer,
};
use proptest::prelude::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000;
const RETENTION: i64 = 6 * 3_600_000;

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "argus-durable-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg() -> StoreConfig {
    StoreConfig::new(MIN, RETENTION)
}

fn clock(now: &Arc<AtomicI64>) -> argus_tsdb::Clock {
    let now = now.clone();
    Arc::new(move || now.load(Ordering::Relaxed))
}

fn durability(dir: &Path, segment_bytes: u64) -> Durability {
    Durability {
        segment_bytes,
        ..Durability::new(dir)
    }
}

fn open(dir: &Path, now: &Arc<AtomicI64>, segment_bytes: u64) -> (Store, Recovery, Vec<Vec<u8>>) {
    let mut origins = Vec::new();
    let (store, rec) = Store::open(
        cfg(),
        clock(now),
        durability(dir, segment_bytes),
        &mut |o| origins.push(o.to_vec()),
    )
    .unwrap();
    (store, rec, origins)
}

fn series_tags(i: usize) -> TagMap {
    let dstype = ["gauge", "sum", "rate", "counter"][i % 4];
    TagMap::from_pairs([
        ("name".to_string(), format!("m{}", i % 3)),
        ("node".to_string(), format!("i-{i}")),
        ("atlas.dstype".to_string(), dstype.to_string()),
    ])
}

/// Every series with a value in the window, by tags, values as bits (NaN as one pattern).
fn dump(store: &Store, now_ms: i64) -> Vec<(TagMap, Vec<u64>)> {
    let end = now_ms / MIN * MIN + 10 * MIN;
    let req = ReadRequest {
        start_ms: end - RETENTION - 20 * MIN,
        end_ms: end,
        step_ms: MIN,
        cf: Consolidation::Avg,
    };
    let ids = store.select(&Matcher::True);
    let mut out = Vec::new();
    store
        .visit_values(&ids, &req, &mut |id, vals| {
            if vals.iter().any(|v| !v.is_nan()) {
                let bits = vals
                    .iter()
                    .map(|v| if v.is_nan() { u64::MAX } else { v.to_bits() })
                    .collect();
                out.push((store.tags(id).unwrap(), bits));
            }
        })
        .unwrap();
    out.sort();
    out
}

/// Compares two dumps, naming the first difference (the whole dumps are too long to read).
fn assert_same(got: &[(TagMap, Vec<u64>)], want: &[(TagMap, Vec<u64>)], ctx: &str) {
    let show = |d: &[(TagMap, Vec<u64>)]| -> Vec<String> {
        d.iter()
            .map(|(t, _)| t.get("node").unwrap_or("?").to_string())
            .collect()
    };
    assert_eq!(show(got), show(want), "series differ; {ctx}");
    for ((tags, a), (_, b)) in got.iter().zip(want) {
        let diff: Vec<(usize, f64, f64)> = a
            .iter()
            .zip(b)
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, (x, y))| (i, f64::from_bits(*x), f64::from_bits(*y)))
            .collect();
        assert!(
            diff.is_empty(),
            "{tags:?}: (step, got, want) {diff:?}; {ctx}"
        );
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Samples for (series, minutes after now, value).
    Write(Vec<(usize, i64, f64)>),
    Snapshot,
    /// Advance the clock by this many minutes and run maintenance.
    Maintain(i64),
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0usize..12, -30i64..2, -1e6f64..1e6), 1..20).prop_map(Op::Write),
        1 => Just(Op::Snapshot),
        1 => (1i64..40).prop_map(Op::Maintain),
        1 => Just(Op::Crash),
    ]
}

/// Runs `ops` on a durable store and on an in-memory twin; after every crash and at the
/// end, the reopened store must hold exactly what the twin holds.
fn check_against_twin(ops: &[Op], segment_bytes: u64) {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0));
    let twin = Store::with_clock(cfg(), clock(&now));
    let (mut store, rec, _) = open(&dir.0, &now, segment_bytes);
    assert!(rec.is_clean(), "{rec}");
    let mut snapshots = 0;
    for op in ops {
        match op {
            Op::Write(samples) => {
                let t = now.load(Ordering::Relaxed);
                let mk = |w: &Writer<'_>| -> Vec<Sample> {
                    samples
                        .iter()
                        .map(|&(i, dt, value)| Sample {
                            id: w.resolve(&series_tags(i)),
                            ts_ms: t + dt * MIN,
                            value,
                        })
                        .collect()
                };
                let w = store.writer();
                let a = w.try_append_batch(&mk(&w), b"").unwrap();
                drop(w);
                let w = twin.writer();
                let b = w.append_batch(&mk(&w));
                drop(w);
                assert_eq!(a.stored, b.stored);
            }
            Op::Snapshot => {
                let start = store.begin_snapshot().unwrap();
                store.write_snapshot(start, b"extra").unwrap();
                snapshots += 1;
            }
            Op::Maintain(minutes) => {
                now.fetch_add(minutes * MIN, Ordering::Relaxed);
                store.maintain();
                twin.maintain();
            }
            Op::Crash => {
                drop(store);
                let (reopened, rec, _) = open(&dir.0, &now, segment_bytes);
                assert!(rec.is_clean(), "{rec}");
                assert_eq!(rec.extra.is_some(), snapshots > 0);
                let t = now.load(Ordering::Relaxed);
                assert_same(
                    &dump(&reopened, t),
                    &dump(&twin, t),
                    &format!("after {rec}"),
                );
                store = reopened;
            }
        }
    }
    drop(store);
    let (reopened, rec, _) = open(&dir.0, &now, segment_bytes);
    let t = now.load(Ordering::Relaxed);
    assert_same(
        &dump(&reopened, t),
        &dump(&twin, t),
        &format!("at the end, after {rec}"),
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_reopened_store_holds_exactly_what_was_acknowledged(
        ops in prop::collection::vec(op(), 1..40),
        small_segments in any::<bool>(),
    ) {
        check_against_twin(&ops, if small_segments { 2048 } else { 64 << 20 });
    }
}

#[test]
fn an_id_reused_after_a_drop_is_recovered_as_the_new_series() {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0));
    let (store, _, _) = open(&dir.0, &now, 64 << 20);
    let a = TagMap::from_pairs([("name", "a"), ("atlas.dstype", "gauge")]);
    let b = TagMap::from_pairs([("name", "b"), ("atlas.dstype", "gauge")]);
    let id_a = store.writer().resolve(&a);
    store.writer().append(id_a, T0, 1.0).unwrap();
    let start = store.begin_snapshot().unwrap();
    store.write_snapshot(start, b"").unwrap();
    now.fetch_add(RETENTION + 60 * MIN, Ordering::Relaxed);
    assert_eq!(store.maintain().series_dropped, 1);
    // A removed series' id is free from the next pass on.
    store.maintain();
    let id_b = store.writer().resolve(&b);
    assert_eq!(id_a, id_b, "the freed id is reused");
    let t = now.load(Ordering::Relaxed);
    store.writer().append(id_b, t, 2.0).unwrap();
    drop(store);

    let (store, rec, _) = open(&dir.0, &now, 64 << 20);
    assert!(rec.is_clean(), "{rec}");
    assert_eq!(store.lookup(&b), Some(id_b));
    assert_eq!(store.lookup(&a), None);
    let d = dump(&store, t);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].0, b);
}

#[test]
fn origins_come_back_from_the_log_and_extra_from_the_snapshot() {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0));
    let (store, _, _) = open(&dir.0, &now, 64 << 20);
    let id = store.writer().resolve(&series_tags(0));
    let one = [Sample {
        id,
        ts_ms: T0,
        value: 1.0,
    }];
    store.writer().try_append_batch(&one, b"agent-1:7").unwrap();
    let start = store.begin_snapshot().unwrap();
    store.write_snapshot(start, b"seen: agent-1:7").unwrap();
    store.writer().try_append_batch(&one, b"agent-1:8").unwrap();
    drop(store);
    let (_, rec, origins) = open(&dir.0, &now, 64 << 20);
    assert_eq!(rec.extra.as_deref(), Some(&b"seen: agent-1:7"[..]));
    assert_eq!(origins, vec![b"agent-1:8".to_vec()]);
}

/// A store with history across several segments and two snapshots, and its twin.
fn busy_store(dir: &Path, now: &Arc<AtomicI64>) -> Store {
    let twin_writes = |store: &Store, round: i64| {
        let t = now.load(Ordering::Relaxed);
        let batch: Vec<Sample> = (0..12)
            .map(|i| Sample {
                id: store.writer().resolve(&series_tags(i)),
                ts_ms: t - round % 5 * MIN,
                value: (round * 100 + i as i64) as f64,
            })
            .collect();
        store.writer().try_append_batch(&batch, b"").unwrap();
    };
    let (store, _, _) = open(dir, now, 4096);
    for round in 0..60 {
        twin_writes(&store, round);
        if round == 20 || round == 40 {
            let start = store.begin_snapshot().unwrap();
            store.write_snapshot(start, b"").unwrap();
        }
        now.fetch_add(MIN / 2, Ordering::Relaxed);
    }
    store
}

fn files(dir: &Path, sub: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(ext))
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_snapshot_falls_back_to_the_previous_one_and_the_log() {
    for flip_at in [0.05, 0.5, 0.95] {
        let dir = TempDir::new();
        let now = Arc::new(AtomicI64::new(T0));
        let store = busy_store(&dir.0, &now);
        let t = now.load(Ordering::Relaxed);
        let expected = dump(&store, t);
        drop(store);
        let snaps = files(&dir.0, "snapshots", ".snap");
        assert_eq!(snaps.len(), 2);
        let newest = snaps.last().unwrap();
        let mut bytes = std::fs::read(newest).unwrap();
        let at = (bytes.len() as f64 * flip_at) as usize;
        bytes[at] ^= 0x10;
        std::fs::write(newest, &bytes).unwrap();

        let (store, rec, _) = open(&dir.0, &now, 4096);
        assert_eq!(rec.snapshots_rejected.len(), 1, "{rec}");
        assert!(rec.damage.is_empty(), "{:?}", rec.damage);
        assert_eq!(dump(&store, t), expected);
        assert_eq!(files(&dir.0, "snapshots", ".corrupt").len(), 1);
    }
}

#[test]
fn a_torn_log_tail_is_cut_and_everything_before_it_kept() {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0));
    let store = busy_store(&dir.0, &now);
    let t = now.load(Ordering::Relaxed);
    let id = store.writer().resolve(&series_tags(1));
    let before_last = dump(&store, t);
    store
        .writer()
        .try_append_batch(
            &[Sample {
                id,
                ts_ms: t,
                value: 1e9,
            }],
            b"",
        )
        .unwrap();
    drop(store);
    let segments = files(&dir.0, "wal", ".wal");
    let last = segments.last().unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 3)
        .unwrap();

    let (store, rec, _) = open(&dir.0, &now, 4096);
    assert_eq!(rec.damage.len(), 1, "{:?}", rec.damage);
    assert!(rec.damage[0].contains("torn"), "{}", rec.damage[0]);
    assert_eq!(dump(&store, t), before_last);
    drop(store);
    // Cut once, reported once.
    let (_, rec, _) = open(&dir.0, &now, 4096);
    assert!(rec.is_clean(), "{rec}");
}

#[test]
fn a_damaged_record_in_the_middle_costs_only_that_record() {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0));
    let (store, _, _) = open(&dir.0, &now, 64 << 20);
    let ids: Vec<u32> = (0..3)
        .map(|i| store.writer().resolve(&series_tags(4 * i)))
        .collect();
    for (k, &id) in ids.iter().enumerate() {
        let batch: Vec<Sample> = (0..50)
            .map(|j| Sample {
                id,
                ts_ms: T0 - j * MIN,
                value: (k * 1000 + j as usize) as f64,
            })
            .collect();
        store.writer().try_append_batch(&batch, b"").unwrap();
    }
    drop(store);
    let seg = files(&dir.0, "wal", ".wal")[0].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    // The series records come first; flip a byte in the middle of the second batch.
    let mid = bytes.len() / 2 + bytes.len() / 12;
    bytes[mid] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();

    let (store, rec, _) = open(&dir.0, &now, 64 << 20);
    assert_eq!(rec.damage.len(), 1, "{:?}", rec.damage);
    let d = dump(&store, T0);
    let names: Vec<&str> = d.iter().map(|(t, _)| t.get("node").unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(rec.samples_replayed, 100);
}

#[test]
fn the_periodic_sync_and_every_write_sync_both_keep_data() {
    for sync in [WalSync::Periodic, WalSync::EveryWrite] {
        let dir = TempDir::new();
        let now = Arc::new(AtomicI64::new(T0));
        let (store, _) = Store::open(
            cfg(),
            clock(&now),
            Durability {
                sync,
                ..Durability::new(&dir.0)
            },
            &mut |_| {},
        )
        .unwrap();
        let id = store.writer().resolve(&series_tags(0));
        store.writer().append(id, T0, 5.0).unwrap();
        store.sync_wal().unwrap();
        let stats = store.wal_stats().unwrap();
        assert_eq!(stats.records_written, 1);
        assert!(stats.syncs >= 1);
        drop(store);
        let (store, _, _) = open(&dir.0, &now, 64 << 20);
        assert_eq!(dump(&store, T0).len(), 1);
    }
}

/// A snapshot's index is built in one batch at load: every key, value and `:has` selects
/// the same series as the index built one series at a time before the crash, and tag values
/// count the same.
#[test]
fn the_index_loaded_from_a_snapshot_selects_what_the_live_one_did() {
    let dir = TempDir::new();
    let now = Arc::new(AtomicI64::new(T0 + 60 * MIN));
    let (store, _, _) = open(&dir.0, &now, 1 << 20);
    let tags = |i: usize| {
        TagMap::from_pairs([
            ("name".to_string(), format!("m{}", i % 7)),
            ("node".to_string(), format!("i-{}", i / 3)),
            ("zone".to_string(), format!("z{}", i % 5)),
            ("atlas.dstype".to_string(), "gauge".to_string()),
        ])
    };
    // Enough series for several snapshot sections per shard.
    let batch: Vec<Sample> = (0..20_000)
        .map(|i| Sample {
            id: store.writer().resolve(&tags(i)),
            ts_ms: now.load(Ordering::Relaxed) - MIN,
            value: i as f64,
        })
        .collect();
    store.writer().try_append_batch(&batch, b"").unwrap();
    let start = store.begin_snapshot().unwrap();
    store.write_snapshot(start, b"").unwrap();
    let matchers = |i: usize| {
        [
            Matcher::Eq {
                key: "name".into(),
                value: format!("m{}", i % 7),
            },
            Matcher::Eq {
                key: "node".into(),
                value: format!("i-{}", i / 3),
            },
            Matcher::Has { key: "zone".into() },
            Matcher::In {
                key: "zone".into(),
                values: vec![format!("z{}", i % 5), "z9".into()],
            },
            Matcher::True,
        ]
    };
    let probe: Vec<usize> = (0..20_000).step_by(997).collect();
    let before: Vec<Vec<u32>> = probe
        .iter()
        .flat_map(|&i| matchers(i))
        .map(|m| store.select(&m).iter().collect())
        .collect();
    let values_before = store.tag_values("zone", None);
    drop(store);
    let (store, recovery, _) = open(&dir.0, &now, 1 << 20);
    assert_eq!(recovery.snapshot.as_ref().map(|s| s.1), Some(20_000));
    let after: Vec<Vec<u32>> = probe
        .iter()
        .flat_map(|&i| matchers(i))
        .map(|m| store.select(&m).iter().collect())
        .collect();
    assert_eq!(after, before);
    assert_eq!(store.tag_values("zone", None), values_before);
    assert_eq!(store.series_count(), 20_000);
    // The table of ids by tag hash is built at the end of the load as well: every loaded
    // series is found again under its tags, not created anew.
    for i in (0..20_000).step_by(13) {
        assert_eq!(store.writer().resolve(&tags(i)), batch[i].id, "series {i}");
    }
    assert_eq!(store.series_count(), 20_000);
    // New series after the load go into the same index.
    let id = store.writer().resolve(&tags(20_000));
    assert!(
        store
            .select(&Matcher::Eq {
                key: "node".into(),
                value: "i-6666".into()
            })
            .contains(id)
    );
}
