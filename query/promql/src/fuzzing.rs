//! The checks the PromQL fuzz target (`query/fuzz`, target `promql`) runs on each input,
//! shared with the test that replays its corpus on stable Rust. Public for those two callers
//! only.

use std::sync::{Arc, OnceLock};

use argus_tsdb::{DsType, Store, StoreConfig, TagMap};

use crate::{Evaluation, QueryRange, Value, format_value};

const STEP: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;
const POINTS: i64 = 30;

/// A small store shared by all inputs: gauges and counters over a few apps, with gaps, a
/// histogram's buckets and a dotted name.
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let now = T0 + POINTS * STEP;
        let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), Arc::new(move || now));
        let add = |pairs: &[(&str, &str)], dstype: DsType, value: &dyn Fn(i64) -> f64| {
            let writer = store.writer();
            let id = writer.resolve_as(&TagMap::from_pairs(pairs.iter().copied()), dstype);
            for t in 0..POINTS {
                let _ = writer.append(id, T0 + t * STEP, value(t));
            }
        };
        for (i, app) in ["a1", "b2", "c3"].iter().enumerate() {
            let k = (i + 1) as f64;
            add(&[("name", "cpu"), ("nf.app", app)], DsType::Gauge, &|t| {
                if t % 7 == 3 { f64::NAN } else { k * t as f64 }
            });
            add(
                &[("name", "requests_total"), ("nf.app", app), ("code", "200")],
                DsType::Counter,
                &|t| k * 100.0 * t as f64,
            );
            add(
                &[("name", "sys.load"), ("nf.app", app)],
                DsType::Gauge,
                &|t| (t as f64 * k).sin(),
            );
            for le in ["0.1", "1", "_Inf"] {
                let share = le.parse::<f64>().unwrap_or(2.0);
                add(
                    &[("name", "latency_bucket"), ("nf.app", app), ("le", le)],
                    DsType::Counter,
                    &|t| (share * 10.0 + k) * t as f64,
                );
            }
        }
        store
    })
}

/// Runs one input as a query: it must never panic or hang; when it parses, its printed form
/// must parse too; when it evaluates, every series has one value per evaluation time and
/// every value prints.
pub fn check_query(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(expr) = crate::parse(text) else {
        return;
    };
    let printed = expr.to_string();
    if let Err(e) = crate::parse(&printed) {
        panic!("the printed form {printed:?} of {text:?} does not parse: {e}");
    }
    let store = store();
    for range in [
        QueryRange::instant(T0 + 20 * STEP),
        QueryRange {
            start_ms: T0,
            end_ms: T0 + (POINTS - 1) * STEP,
            step_ms: STEP,
        },
        QueryRange {
            start_ms: T0 + 17_000,
            end_ms: T0 + 21 * STEP,
            step_ms: 45_000,
        },
    ] {
        let mut evaluation =
            Evaluation::new(store, range, 64).with_data_bounds(T0 - STEP, T0 + POINTS * STEP);
        match evaluation.eval(&expr) {
            Ok(Value::Vector(series)) => {
                for s in series {
                    assert_eq!(s.points.len(), range.len(), "{text:?}: {:?}", s.labels);
                    s.points.iter().flatten().for_each(|v| {
                        format_value(*v);
                    });
                }
            }
            Ok(Value::Scalar(values)) => assert_eq!(values.len(), range.len(), "{text:?}"),
            Ok(Value::String(_)) | Err(_) => {}
        }
    }
}
