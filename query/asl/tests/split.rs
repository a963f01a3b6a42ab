//! Atlas's split, checked on every Stack Language case: the series of each load dealt out
//! to three stores (as a cluster's nodes hold their partitions), each data expression
//! evaluated on every store up to its partial result, sent through its byte encoding, and
//! merged; the graph must be the one a single store holding everything gives.

use std::path::Path;
use std::sync::Arc;

use argus_query::cases::{Group, STEP, T0, load_dir};
use argus_query::split::{Fanout, Partial, evaluate_partial};
use argus_query::{GraphRequest, Limits, evaluate, evaluate_with_fanout};
use argus_tsdb::{Store, StoreConfig};

/// Three stores, each with the series whose tags hash to it.
struct Nodes(Vec<Store>);

impl Fanout for Nodes {
    fn partials(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Partial>, String> {
        self.0
            .iter()
            .map(|store| {
                let part =
                    evaluate_partial(expr, start_ms, end_ms, step_ms, &Limits::default(), store)
                        .map_err(|e| e.to_string())?;
                Partial::decode(&part.encode())
            })
            .collect()
    }
}

fn split(group: &Group, parts: usize) -> Vec<Store> {
    let clock_now = T0 + 3 * 3_600_000;
    let stores: Vec<Store> = (0..parts)
        .map(|_| {
            Store::with_clock(
                StoreConfig::new(STEP, 6 * 3_600_000),
                Arc::new(move || clock_now),
            )
        })
        .collect();
    for s in &group.series {
        let mut tags = s.tags.clone();
        tags.insert("atlas.dstype".into(), "gauge".into());
        let text: String = tags.iter().map(|(k, v)| format!("{k}={v},")).collect();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let store = &stores[(hash % parts as u64) as usize];
        let id = store.writer().resolve(&tags);
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                store.writer().append(id, T0 + i as i64 * STEP, *v).unwrap();
            }
        }
    }
    stores
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

#[test]
fn every_case_gives_the_same_graph_split_over_three_stores() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let files = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    let (mut n_cases, mut n_lines) = (0, 0);
    for (name, groups) in &files {
        for group in groups {
            let whole = group.store().unwrap();
            let nodes: Arc<dyn Fanout> = Arc::new(Nodes(split(group, 3)));
            for case in &group.cases {
                n_cases += 1;
                let Ok(req) =
                    GraphRequest::from_params(&case.graph_params(group), group.last(), STEP)
                else {
                    continue;
                };
                let alone = evaluate(&req, &whole);
                let split =
                    evaluate_with_fanout(&req, &whole, &Limits::default(), Some(nodes.clone()));
                match (alone, split) {
                    (Ok(a), Ok(b)) => {
                        let lines = |r: &argus_query::GraphResult| {
                            r.series
                                .iter()
                                .map(|s| (s.label.clone(), s.tags.clone()))
                                .collect::<Vec<_>>()
                        };
                        if lines(&a) != lines(&b) {
                            failures.push(format!(
                                "{name}: {}: lines {:?} alone, {:?} split",
                                case.expr,
                                lines(&a),
                                lines(&b)
                            ));
                            continue;
                        }
                        for (x, y) in a.series.iter().zip(&b.series) {
                            n_lines += 1;
                            if x.values.len() != y.values.len()
                                || !x.values.iter().zip(&y.values).all(|(p, q)| same(*p, *q))
                            {
                                failures.push(format!(
                                    "{name}: {}: {} is {:?} alone, {:?} split",
                                    case.expr, x.label, x.values, y.values
                                ));
                            }
                        }
                    }
                    (Err(_), Err(_)) => {}
                    (a, b) => failures.push(format!(
                        "{name}: {}: {:?} alone, {:?} split",
                        case.expr,
                        a.map(|r| r.series.len()),
                        b.map(|r| r.series.len())
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(n_cases >= 200, "only {n_cases} cases");
    eprintln!("{n_cases} cases, {n_lines} lines: the same split over three stores");
}

#[test]
fn partials_refuse_garbage_with_a_reason() {
    for (bytes, want) in [
        (&b""[..], "cut short"),
        (&[7u8][..], "unknown partial kind 7"),
        (
            &[0u8, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            "unknown aggregate 9",
        ),
        (&[0u8, 0, 2, 0, 0, 0, 1, 0, 0, 0][..], "cut short"),
        (&[1u8, 0, 0, 0, 0, 1][..], "bytes left over"),
    ] {
        let err = Partial::decode(bytes).err().unwrap_or_default();
        assert!(err.contains(want), "{bytes:?}: {err}");
    }
    // A sum's accumulator must be as long as its groups and steps.
    let err = Partial::from_groups(0, 3, vec![("".into(), vec![])], vec![1.0], vec![1])
        .err()
        .unwrap();
    assert!(err.contains("need 3 values and 3 counts"), "{err}");
}
