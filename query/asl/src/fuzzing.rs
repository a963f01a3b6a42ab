//! The checks the parser fuzz target runs on each input, shared with the test that replays
//! the fuzz corpus on stable Rust. Public for those two callers only.

use std::sync::{Arc, OnceLock};

use argus_tsdb::{DsType, Store, StoreConfig, TagMap};

use crate::graph::{Format, GraphRequest, Limits, evaluate_with_limits};

const STEP: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

/// A small store with a few series of each kind, shared by all inputs.
fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let now = T0 + 30 * STEP;
        let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), Arc::new(move || now));
        for (i, app) in ["a", "b", "c"].iter().enumerate() {
            for stat in ["count", "totalTime", "max"] {
                let tags = TagMap::from_pairs([
                    ("name", "sps"),
                    ("nf.app", app),
                    ("statistic", stat),
                    ("percentile", &format!("T00{:02X}", 40 + i)),
                ]);
                let id = store.writer().resolve_as(&tags, DsType::Gauge);
                for t in 0..30 {
                    let v = if t % 7 == 3 {
                        f64::NAN
                    } else {
                        (t * (i + 1)) as f64
                    };
                    let _ = store.writer().append(id, T0 + t as i64 * STEP, v);
                }
            }
        }
        store
    })
}

/// Runs one input as an expression: it must never panic or hang; when it parses, its
/// canonical form must parse back to itself; when it evaluates, every output format must
/// render.
pub fn check_expression(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(printed) = crate::normalize(text) {
        match crate::normalize(&printed) {
            Ok(again) => assert_eq!(again, printed, "canonical form of {text:?} is not stable"),
            Err(e) => panic!("canonical form {printed:?} of {text:?} does not parse: {e}"),
        }
    }
    let _ = crate::debug(text);
    check_over_events(text);
    let mut req = GraphRequest::new(text, T0, T0 + 29 * STEP, STEP, Format::Json);
    let limits = Limits {
        max_lines: 64,
        max_datapoints: 10_000,
        ..Limits::default()
    };
    if let Ok(result) = evaluate_with_limits(&req, store(), &limits) {
        for format in [Format::Json, Format::Csv, Format::StatsJson, Format::Png] {
            req.format = format;
            let body = result.render(&req);
            assert!(!body.is_empty(), "empty {format:?} output for {text:?}");
        }
    }
}

/// Events with every kind of field value, some of them hostile.
fn events() -> &'static [argus_mql::cases::Input] {
    static EVENTS: OnceLock<Vec<argus_mql::cases::Input>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        let values = [
            serde_json::json!(1),
            serde_json::json!(-2.5),
            serde_json::json!("sps"),
            serde_json::json!("500"),
            serde_json::json!(true),
            serde_json::json!(null),
            serde_json::json!([1, "a"]),
            serde_json::json!({"k": "v"}),
            serde_json::json!(1e308),
            serde_json::json!(u64::MAX),
        ];
        let keys = [
            "name",
            "nf.app",
            "status",
            "value",
            "a",
            "b",
            "k",
            "statistic",
        ];
        (0..40i64)
            .map(|i| {
                let mut m = serde_json::Map::new();
                for (j, k) in keys.iter().enumerate() {
                    if (i + j as i64) % 3 != 0 {
                        m.insert(
                            k.to_string(),
                            values[(i as usize * 7 + j) % values.len()].clone(),
                        );
                    }
                }
                let t =
                    [0, 999, 1_000, i64::MAX, i64::MIN, -5][i as usize % 6].saturating_add(i * 700);
                m.insert("t".into(), t.into());
                argus_mql::cases::Input::primary(serde_json::Value::Object(m))
            })
            .collect()
    })
}

/// Runs an input as an expression over events: compiling must not panic; a compiled
/// expression's predicate must travel to agents (print as an MQL condition that reads back
/// to a predicate deciding every event the same), and running it over events on both
/// clocks, at the shortest and longest steps, must not panic.
fn check_over_events(text: &str) {
    let Ok(q) = crate::events::parse(text) else {
        return;
    };
    let printed = q.predicate.to_string();
    let read = argus_mql::parse_condition(&printed).unwrap_or_else(|e| {
        panic!("the predicate of {text:?} prints as {printed:?}, which MQL refuses: {e}")
    });
    for e in events() {
        assert_eq!(
            read.matches(&e.event),
            q.predicate.matches(&e.event),
            "{text:?}: {printed:?} decides {} differently once read back",
            e.event
        );
    }
    let _ = (q.fields(), q.describe(60_000), q.to_mql());
    for step in [crate::events::MIN_STEP_MS, crate::events::MAX_STEP_MS] {
        let clocks = [
            argus_mql::cases::Clock::Interval { ms: 250 },
            argus_mql::cases::Clock::EventTime {
                field: argus_mql::predicate::Path::key("t"),
            },
        ];
        for clock in &clocks {
            let rows = crate::events::run_offline(&q, events(), clock, step);
            for row in rows {
                assert!(!row.to_string().is_empty());
            }
        }
    }
}
