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
