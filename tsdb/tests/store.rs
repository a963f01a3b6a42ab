//! Store behaviour through its public API: dstypes, reads with consolidation, retention,
//! the tags listing, and the index agreeing with a naive model under random tag sets.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use argus_tsdb::{
    CmpOp, Consolidation, Matcher, ReadRequest, SeriesSource, Store, StoreConfig, TagMap, Tags,
    ValuePredicate,
};
use proptest::prelude::*;

const MIN: i64 = 60_000;
const T0: i64 = 1_700_000_000_000 / 3_600_000 * 3_600_000; // an hour boundary

fn store_at(now: Arc<AtomicI64>) -> Store {
    let clock = Arc::new(move || now.load(Ordering::Relaxed));
    Store::with_clock(StoreConfig::new(MIN, 6 * 3_600_000), clock)
}

fn tags(pairs: &[(&str, &str)]) -> TagMap {
    TagMap::from_pairs(pairs.iter().copied())
}

fn read(
    store: &Store,
    m: &Matcher,
    start: i64,
    end: i64,
    step: i64,
    cf: Consolidation,
) -> Vec<(TagMap, Vec<f64>)> {
    let ids = store.select(m);
    let req = ReadRequest {
        start_ms: start,
        end_ms: end,
        step_ms: step,
        cf,
    };
    let mut out = Vec::new();
    store
        .visit_values(&ids, &req, &mut |id, vals| {
            out.push((store.tags(id).unwrap(), vals.to_vec()))
        })
        .unwrap();
    out
}

fn bits_eq(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
}

#[test]
fn dstypes_normalize_like_atlas() {
    let now = Arc::new(AtomicI64::new(T0 + 10 * MIN));
    let store = store_at(now);
    let g = store
        .writer()
        .resolve(&tags(&[("name", "g"), ("atlas.dstype", "gauge")]));
    let s = store
        .writer()
        .resolve(&tags(&[("name", "s"), ("atlas.dstype", "sum")]));
    let c = store
        .writer()
        .resolve(&tags(&[("name", "c"), ("atlas.dstype", "counter")]));
    let r = store.writer().resolve(&tags(&[("name", "r")]));
    // gauge: rounds up, max within a step
    store.writer().append(g, T0 + MIN + 1, 5.0).unwrap();
    store.writer().append(g, T0 + MIN + 30_000, 7.0).unwrap();
    store.writer().append(g, T0 + 2 * MIN, 3.0).unwrap();
    // sum: rounds up, adds
    store.writer().append(s, T0 + MIN + 1, 5.0).unwrap();
    store.writer().append(s, T0 + 2 * MIN, 7.0).unwrap();
    // counter: per-second rate, first sample gives nothing
    store.writer().append(c, T0 + MIN, 100.0).unwrap();
    store.writer().append(c, T0 + 2 * MIN, 160.0).unwrap();
    // rate on the boundary: as is
    store.writer().append(r, T0 + 2 * MIN, 4.5).unwrap();
    let n = f64::NAN;
    let got = read(
        &store,
        &Matcher::True,
        T0 + MIN,
        T0 + 3 * MIN,
        MIN,
        Consolidation::Avg,
    );
    let by_name = |name: &str| {
        got.iter()
            .find(|(t, _)| t.get("name") == Some(name))
            .unwrap()
            .1
            .clone()
    };
    assert!(bits_eq(&by_name("g"), &[n, 7.0, n]), "{:?}", by_name("g"));
    assert!(bits_eq(&by_name("s"), &[n, 12.0, n]), "{:?}", by_name("s"));
    assert!(bits_eq(&by_name("c"), &[n, 1.0, n]), "{:?}", by_name("c"));
    assert!(bits_eq(&by_name("r"), &[n, 4.5, n]), "{:?}", by_name("r"));
}

#[test]
fn consolidation_groups_stored_steps_from_the_bucket_start() {
    let now = Arc::new(AtomicI64::new(T0 + 3 * 3_600_000));
    let store = store_at(now);
    let id = store
        .writer()
        .resolve(&tags(&[("name", "g"), ("atlas.dstype", "gauge")]));
    for i in 0..130 {
        store.writer().append(id, T0 + i * MIN, i as f64).unwrap();
    }
    let five = 5 * MIN;
    let got = read(
        &store,
        &Matcher::True,
        T0,
        T0 + 2 * five,
        five,
        Consolidation::Avg,
    );
    assert_eq!(got[0].1, vec![2.0, 7.0, 12.0]);
    let got = read(
        &store,
        &Matcher::True,
        T0,
        T0 + 2 * five,
        five,
        Consolidation::Max,
    );
    assert_eq!(got[0].1, vec![4.0, 9.0, 14.0]);
    // across a sealed block boundary (blocks are one hour)
    let got = read(
        &store,
        &Matcher::True,
        T0 + 55 * MIN,
        T0 + 65 * MIN,
        MIN,
        Consolidation::Avg,
    );
    assert_eq!(got[0].1, (55..=65).map(|i| i as f64).collect::<Vec<_>>());
}

#[test]
fn retention_rejects_old_samples_and_drops_expired_series() {
    let now = Arc::new(AtomicI64::new(T0));
    let store = store_at(now.clone());
    let old = store
        .writer()
        .resolve(&tags(&[("name", "old"), ("atlas.dstype", "gauge")]));
    let live = store
        .writer()
        .resolve(&tags(&[("name", "live"), ("atlas.dstype", "gauge")]));
    assert!(store.writer().append(old, T0 - 7 * 3_600_000, 1.0).is_err());
    store.writer().append(old, T0 - MIN, 1.0).unwrap();
    now.store(T0 + 3 * 3_600_000, Ordering::Relaxed);
    store
        .writer()
        .append(live, T0 + 3 * 3_600_000, 2.0)
        .unwrap();
    store.maintain();
    assert_eq!(store.series_count(), 2);
    now.store(T0 + 8 * 3_600_000, Ordering::Relaxed);
    let report = store.maintain();
    assert_eq!(report.series_dropped, 1);
    assert_eq!(store.series_count(), 1);
    assert_eq!(
        store.lookup(&tags(&[("name", "old"), ("atlas.dstype", "gauge")])),
        None
    );
    assert!(
        store
            .tag_values("name", None)
            .iter()
            .all(|(v, _)| v != "old")
    );
    // the freed id is not reused before the next pass (a query that selected the old
    // series would read the new one's values under the old tags)...
    let early = store
        .writer()
        .resolve(&tags(&[("name", "early"), ("atlas.dstype", "gauge")]));
    assert_ne!(early, old);
    // ...and then by the next new series, with fresh data
    store.maintain();
    let again = store
        .writer()
        .resolve(&tags(&[("name", "new"), ("atlas.dstype", "gauge")]));
    assert_eq!(again, old);
    store
        .writer()
        .append(again, T0 + 8 * 3_600_000, 3.0)
        .unwrap();
    let got = read(
        &store,
        &Matcher::eq("name", "new"),
        T0 + 8 * 3_600_000,
        T0 + 8 * 3_600_000,
        MIN,
        Consolidation::Avg,
    );
    assert_eq!(got[0].1, vec![3.0]);
}

#[test]
fn tag_listing_is_sorted_and_filtered() {
    let store = store_at(Arc::new(AtomicI64::new(T0)));
    for (app, node) in [("b", "n1"), ("a", "n2"), ("a", "n3")] {
        store.writer().resolve(&tags(&[
            ("name", "cpu"),
            ("nf.app", app),
            ("nf.node", node),
        ]));
    }
    store.writer().resolve(&tags(&[("name", "mem")]));
    assert_eq!(
        store
            .tag_keys(None)
            .iter()
            .map(|k| k.0.as_str())
            .collect::<Vec<_>>(),
        ["name", "nf.app", "nf.node"]
    );
    assert_eq!(
        store.tag_values("nf.app", None),
        vec![("a".into(), 2), ("b".into(), 1)]
    );
    let q = Matcher::eq("nf.app", "a");
    assert_eq!(store.tag_values("nf.node", Some(&q)).len(), 2);
    assert_eq!(
        store.tag_keys(Some(&Matcher::eq("name", "mem"))),
        vec![("name".into(), 1)]
    );
}

// ---- index algebra against a naive model ----

fn arb_tags() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((0..4usize, 0..5usize), 1..4).prop_map(|kv| {
        let mut v: Vec<(String, String)> = kv
            .into_iter()
            .map(|(k, v)| (format!("k{k}"), format!("v{v}")))
            .collect();
        v.push(("name".into(), "m".into()));
        v
    })
}

fn arb_matcher() -> impl Strategy<Value = Matcher> {
    let key = (0..5usize).prop_map(|k| format!("k{k}"));
    let val = (0..6usize).prop_map(|v| format!("v{v}"));
    let leaf = prop_oneof![
        Just(Matcher::True),
        Just(Matcher::False),
        (key.clone(), val.clone()).prop_map(|(k, v)| Matcher::eq(k, v)),
        (key.clone(), prop::collection::vec(val.clone(), 0..3))
            .prop_map(|(key, values)| Matcher::In { key, values }),
        key.clone().prop_map(|key| Matcher::Has { key }),
        (key.clone(), val.clone(), 0..4usize).prop_map(|(key, value, op)| Matcher::Cmp {
            key,
            op: [CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge][op],
            value
        }),
        (key, 0..3u32).prop_map(|(key, parity)| Matcher::Values {
            key,
            pred: ValuePredicate {
                prefix: "v".into(),
                test: Arc::new(move |s: &str| s.len() as u32 % 3 != parity),
                description: "test".into(),
            }
        }),
    ];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            inner.prop_map(|a| a.not()),
        ]
    })
}

proptest! {
    #[test]
    fn index_agrees_with_naive_model(series in prop::collection::vec(arb_tags(), 1..40), m in arb_matcher()) {
        let store = store_at(Arc::new(AtomicI64::new(T0)));
        let mut model: Vec<(u32, TagMap)> = Vec::new();
        for t in &series {
            let map = TagMap::from_pairs(t.iter().cloned());
            let id = store.writer().resolve(&map);
            if !model.iter().any(|(i, _)| *i == id) {
                model.push((id, map));
            }
        }
        let got: Vec<u32> = store.select(&m).iter().collect();
        let mut want: Vec<u32> = model.iter().filter(|(_, t)| m.matches(t as &dyn Tags)).map(|(i, _)| *i).collect();
        want.sort();
        prop_assert_eq!(got, want);
    }
}

// ---- values against a naive model: random, out-of-order and late gauge writes ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn values_agree_with_naive_model(
        writes in prop::collection::vec((0i64..600, -1000i32..1000), 1..400),
        expire_after in prop::option::of(0i64..600),
    ) {
        // 10 hours of minutes; gauges keep the max per step
        let now = Arc::new(AtomicI64::new(T0 + 600 * MIN));
        let clock_now = now.clone();
        let store = Store::with_clock(StoreConfig::new(MIN, 24 * 3_600_000), Arc::new(move || clock_now.load(Ordering::Relaxed)));
        let id = store.writer().resolve(&tags(&[("name", "p"), ("atlas.dstype", "gauge")]));
        let mut model = vec![f64::NAN; 600];
        for (i, (step, v)) in writes.iter().enumerate() {
            let v = *v as f64 / 4.0;
            store.writer().append(id, T0 + step * MIN, v).unwrap();
            let m = &mut model[*step as usize];
            *m = if m.is_nan() { v } else { m.max(v) };
            if i % 50 == 49 {
                store.maintain();
            }
        }
        if let Some(cut) = expire_after {
            // move the clock so everything before step `cut` falls out of retention
            now.store(T0 + cut * MIN + 24 * 3_600_000, Ordering::Relaxed);
            store.maintain();
            // blocks are dropped whole, so only steps before the cut's block are sure to go
            let block_start = cut / 15 * 15;
            for m in model.iter_mut().take(block_start as usize) {
                *m = f64::NAN;
            }
        }
        let got = read(&store, &Matcher::True, T0, T0 + 599 * MIN, MIN, Consolidation::Avg);
        let values = got.first().map(|g| g.1.clone()).unwrap_or_else(|| vec![f64::NAN; 600]);
        prop_assert!(bits_eq(&values, &model), "got {:?}\nwant {:?}", values, model);
    }
}

#[test]
fn maintenance_leaves_heads_being_filled_and_seals_idle_ones() {
    let now = Arc::new(AtomicI64::new(T0 + 3 * 3_600_000));
    let store = store_at(now.clone());
    let id = store
        .writer()
        .resolve(&tags(&[("name", "replayed"), ("atlas.dstype", "gauge")]));
    let heads = |store: &Store| store.storage_stats(None).head_slots;
    // A backlog from two hours ago is being replayed: its block ended long ago.
    let old = T0 + 3_600_000;
    store.writer().append(id, old, 1.0).unwrap();
    store.maintain();
    assert!(
        heads(&store) > 0,
        "a head written since the last pass is kept"
    );
    store.writer().append(id, old + MIN, 2.0).unwrap();
    store.maintain();
    assert!(heads(&store) > 0, "still being filled");
    store.maintain();
    assert_eq!(heads(&store), 0, "idle for a whole pass: sealed");
    let got = read(
        &store,
        &Matcher::True,
        old,
        old + MIN,
        MIN,
        Consolidation::Max,
    );
    assert_eq!(got[0].1, vec![1.0, 2.0]);
}

#[test]
fn series_caps_refuse_only_new_series_and_cardinality_names_the_biggest() {
    let now = Arc::new(AtomicI64::new(T0));
    let store = store_at(now);
    store.set_limits(argus_tsdb::SeriesLimits {
        max_series: 5,
        max_series_per_name: 3,
    });
    let series = |name: &str, i: usize| tags(&[("name", name), ("user", &i.to_string())]);
    for i in 0..3 {
        store.writer().try_resolve(&series("hot", i), None).unwrap();
    }
    let err = store
        .writer()
        .try_resolve(&series("hot", 3), None)
        .unwrap_err();
    assert!(err.to_string().contains("--max-series-per-metric"), "{err}");
    // Existing series resolve (and ingest) as before.
    let id = store.writer().try_resolve(&series("hot", 0), None).unwrap();
    store.writer().append(id, T0, 1.0).unwrap();
    store
        .writer()
        .try_resolve(&series("cold", 0), None)
        .unwrap();
    store
        .writer()
        .try_resolve(&series("cold", 1), None)
        .unwrap();
    let err = store
        .writer()
        .try_resolve(&series("other", 0), None)
        .unwrap_err();
    assert!(err.to_string().contains("--max-series)"), "{err}");
    assert_eq!(store.series_count(), 5);

    let c = store.cardinality(2);
    assert_eq!(c.series, 5);
    assert_eq!(
        c.names,
        vec![("hot".to_string(), 3), ("cold".to_string(), 2)]
    );
    // Equal series counts: the key with more distinct values (the likelier culprit) first.
    assert_eq!(c.keys[0], ("user".to_string(), 5, 3));
    assert_eq!(c.keys[1], ("name".to_string(), 5, 2));
}

#[test]
fn borrowed_sorted_tags_find_the_series_their_map_names() {
    let store = store_at(Arc::new(AtomicI64::new(T0)));
    let w = store.writer();
    let id = w.resolve(&tags(&[("name", "cpu"), ("node", "i-1")]));
    let dstype = argus_tsdb::DsType::Gauge;
    assert_eq!(
        w.resolve_sorted(&[("name", "cpu"), ("node", "i-1")], dstype),
        id
    );
    // Another value, one tag fewer or more: other series, created once.
    let other = w.resolve_sorted(&[("name", "cpu"), ("node", "i-2")], dstype);
    assert_ne!(other, id);
    assert_eq!(w.resolve(&tags(&[("name", "cpu"), ("node", "i-2")])), other);
    let fewer = w.resolve_sorted(&[("name", "cpu")], dstype);
    assert!(fewer != id && fewer != other);
    // Pairs out of key order name the same series as their map.
    assert_eq!(
        w.resolve_sorted(&[("node", "i-1"), ("name", "cpu")], dstype),
        id
    );
    assert_eq!(store.series_count(), 3);
}

#[test]
fn exported_series_rebuild_their_values_in_another_store_once() {
    let now = Arc::new(AtomicI64::new(T0 + 30 * MIN));
    let from = store_at(now.clone());
    let w = from.writer();
    let mut samples = Vec::new();
    for node in 0..20 {
        let dstype = if node % 2 == 0 { "gauge" } else { "sum" };
        let id = w.resolve(&tags(&[
            ("name", "cpu"),
            ("node", &format!("i-{node}")),
            ("atlas.dstype", dstype),
        ]));
        for m in 0..30 {
            samples.push(argus_tsdb::Sample {
                id,
                ts_ms: T0 + m * MIN,
                value: f64::from(node * 100 + m as i32),
            });
        }
    }
    w.append_batch(&samples);
    drop(w);
    // Half of the series, as one partition's share.
    let q = Matcher::In {
        key: "node".into(),
        values: (0..10).map(|n| format!("i-{n}")).collect(),
    };
    let half = from.select(&q);
    let bytes = from.export_series(&half);
    let to = store_at(now.clone());
    // A series the importer names already, with no values (a gateway's), takes them.
    let pre = to.writer().resolve(&tags(&[
        ("name", "cpu"),
        ("node", "i-1"),
        ("atlas.dstype", "sum"),
    ]));
    assert_eq!(to.import_series(&bytes).unwrap(), half.len() as usize);
    // Taken twice: the values are replaced, never added.
    assert_eq!(to.import_series(&bytes).unwrap(), half.len() as usize);
    assert_eq!(to.series_count(), half.len() as usize);
    let window = |s: &Store| read(s, &q, T0, T0 + 30 * MIN, MIN, Consolidation::Avg);
    let (mut want, mut got) = (window(&from), window(&to));
    want.sort_by(|a, b| a.0.cmp(&b.0));
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(want.len(), got.len());
    for ((wt, wv), (gt, gv)) in want.iter().zip(&got) {
        assert_eq!(wt, gt);
        assert!(bits_eq(wv, gv), "{wt:?}");
    }
    assert!(to.select(&q).contains(pre));
    // Damage anywhere is an error, never a panic; another layout is refused by name.
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            store_at(now.clone()).import_series(&bytes[..cut]).is_err(),
            "cut {cut}"
        );
    }
    let mut flipped = bytes.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    assert!(store_at(now.clone()).import_series(&flipped).is_err());
    let other = Store::new(StoreConfig::new(10_000, 6 * 3_600_000));
    let err = other.import_series(&bytes).unwrap_err().to_string();
    assert!(err.contains("step 60000 ms"), "{err}");
}

#[test]
fn removed_series_leave_the_index_and_their_ids_wait_a_maintenance_pass() {
    let store = store_at(Arc::new(AtomicI64::new(T0 + 30 * MIN)));
    let w = store.writer();
    let ids: Vec<u32> = (0..10)
        .map(|n| {
            let id = w.resolve(&tags(&[("name", "cpu"), ("node", &format!("i-{n}"))]));
            w.append(id, T0, f64::from(n)).unwrap();
            id
        })
        .collect();
    drop(w);
    let gone: argus_tsdb::Postings = ids[..4].iter().copied().collect();
    let before = store.series_dropped();
    assert_eq!(store.remove_series(&gone).unwrap(), 4);
    assert_eq!(store.remove_series(&gone).unwrap(), 0, "removed once");
    assert_eq!(store.series_dropped(), before + 4);
    assert_eq!(store.series_count(), 6);
    assert_eq!(store.select(&Matcher::eq("name", "cpu")).len(), 6);
    // A new series does not take a removed id before the next maintenance pass.
    let fresh = store
        .writer()
        .resolve(&tags(&[("name", "cpu"), ("node", "i-new")]));
    assert!(!gone.contains(fresh));
}

#[test]
fn series_without_values_are_kept_the_passes_asked_for() {
    let store = store_at(Arc::new(AtomicI64::new(T0 + 30 * MIN)));
    let named = |node: &str| {
        store
            .writer()
            .resolve(&tags(&[("name", "cpu"), ("node", node)]))
    };
    // By default a series that holds nothing goes at the next maintenance pass.
    named("i-0");
    assert_eq!(store.maintain().series_dropped, 1);
    // Kept two passes, as a cluster gateway's names are.
    store.keep_unwritten_series(2);
    named("i-1");
    assert_eq!(store.maintain().series_dropped, 0);
    assert_eq!(store.maintain().series_dropped, 0);
    assert_eq!(store.maintain().series_dropped, 1);
    assert_eq!(store.series_count(), 0);
}
