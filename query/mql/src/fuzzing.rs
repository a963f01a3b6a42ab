//! The checks the MQL fuzz target (`query/fuzz/fuzz_targets/mql.rs`) runs on each input,
//! shared with the test that replays its corpus on stable Rust
//! (`query/tests/mql_fuzz_corpus.rs`). Public for those two callers only.

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::cases::{Clock, Input, run_offline};
use super::eval::Engine;
use super::parser::{parse, parse_condition, parse_path};
use super::partial::Fields;
use crate::predicate::{Path, Predicate};

/// A few events of every shape a query may meet: nested maps and lists, nulls, integers and
/// doubles, strings that look like numbers, out-of-order and extreme times.
fn events() -> &'static [Value] {
    static EVENTS: OnceLock<Vec<Value>> = OnceLock::new();
    EVENTS.get_or_init(|| {
        vec![
            json!({"ts": 1000, "a": 1, "b": "x", "status": 500, "path": "/api/v1",
                   "e": {"a": [1, 2, {"b": null}]}, "tags": [{"k": "env", "v": "prod"}]}),
            json!({"ts": 2500, "a": 2.5, "b": "y", "status": "503", "nested": {"x": {"y": 1}}}),
            json!({"ts": 1500, "a": null, "b": "x", "list": [], "map": {}}),
            json!({"ts": -5, "a": -1, "b": true, "status": 200, "path": "/é/\n"}),
            json!({"ts": 9_007_199_254_740_993_i64, "a": 1e300, "b": ["x", "y"], "COUNT(a)": 3}),
            json!({"a": "1", "user": "u1", "n": 0}),
            json!({"ts": 3000, "a": 3, "b": {"c": [1, 2, 3]}, "user": "u2", "n": 1.5}),
            json!({"ts": i64::MAX, "a": i64::MIN, "b": "x", "tags": {"k": "env"}}),
            json!([1, 2, 3]),
            json!("not an object"),
        ]
    })
}

/// A printed condition must parse back to one that prints the same: that text is how a
/// predicate travels to agents.
fn check_round_trip(p: &Predicate, text: &str) {
    let printed = p.to_string();
    match parse_condition(&printed) {
        Ok(back) => assert_eq!(
            back.to_string(),
            printed,
            "condition {printed:?} (from {text:?}) does not print back the same"
        ),
        Err(e) => panic!("condition {printed:?} (from {text:?}) does not parse back: {e}"),
    }
}

/// Runs one input as a JSON event through the partial parse: it must accept exactly what
/// serde_json accepts, and keep exactly the wanted fields of it.
fn check_partial(input: &[u8]) {
    let fields = Fields::of_paths(&[Path::key("a"), Path::key("status"), Path::key("é")]);
    let keys = fields.keys().unwrap_or_default();
    // Reusing a value left by an earlier event must end the same as a fresh parse.
    let mut reused = serde_json::json!({"a": "earlier", "status": 1, "other": [1]});
    let into = fields.parse_into(input, &mut reused);
    match (&into, fields.parse(input)) {
        (Ok(()), Ok(fresh)) => assert_eq!(reused, fresh, "parse_into of {input:?}"),
        (Err(_), Err(_)) => {}
        (into, fresh) => panic!("parse_into of {input:?}: {into:?}, parse {fresh:?}"),
    }
    match (serde_json::from_slice::<Value>(input), fields.parse(input)) {
        (Ok(whole), Ok(partial)) => {
            let kept = match whole {
                Value::Object(m) => Value::Object(
                    m.into_iter()
                        .filter(|(k, _)| keys.iter().any(|w| w == k))
                        .collect(),
                ),
                _ => Value::Null,
            };
            assert_eq!(kept, partial, "partial parse of {input:?}");
        }
        (Err(_), Err(_)) => {}
        (whole, partial) => {
            panic!("partial parse of {input:?} disagrees: whole {whole:?}, partial {partial:?}")
        }
    }
}

/// Runs one input as an MQL query (and as a JSON event for the partial parse): it must
/// never panic or hang. When it parses, its
/// conditions must print as MQL that parses back to themselves, and it runs over
/// [`events`] every way the engine is driven: the offline run on the interval clock and on
/// event time, then live-style `push_matched`, `tick`, `flush` and `finish`.
pub fn check_query(input: &[u8]) {
    check_partial(input);
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // The same text as a condition or a field alone must not panic either.
    let _ = parse_condition(text);
    let _ = parse_path(text);
    let Ok(q) = parse(text) else {
        return;
    };
    check_round_trip(&q.filter, text);
    if let Some(h) = &q.having {
        check_round_trip(h, text);
    }
    let _ = q.needed_paths();
    let events = events();
    let inputs: Vec<Input> = events.iter().cloned().map(Input::primary).collect();
    for (i, clock) in [
        Clock::Interval { ms: 10 },
        Clock::Interval { ms: 700 },
        Clock::EventTime {
            field: Path::key("ts"),
        },
    ]
    .into_iter()
    .enumerate()
    {
        let rows = run_offline(&q, &inputs, clock, i as u64);
        for row in &rows {
            // Every row serializes (no NaN or infinity sneaks in).
            assert!(
                serde_json::to_string(row).is_ok(),
                "row {row:?} of {text:?} does not serialize"
            );
        }
    }
    let mut engine = Engine::new(q, 7);
    let mut now = 1_000;
    for (i, event) in events.iter().enumerate() {
        now += 300;
        let t = event.get("ts").and_then(Value::as_i64).unwrap_or(now);
        let _ = engine.push_matched(event.clone(), t);
        if i % 3 == 2 {
            let _ = engine.flush(now);
        }
        let _ = engine.tick(now);
        let _ = engine.push(event, now);
    }
    let _ = engine.flush(now);
    let _ = engine.finish(now);
    let _ = engine.finish(now);
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostile_inputs_do_not_panic() {
        for input in [
            &b""[..],
            b"\xff\xfe",
            b"select",
            b"select * from s window 0.001 where ts > 0",
            b"select p995(a), list(distinct b), count(*) from s window 604800 604.8 group by b",
            b"select e['a'][-9223372036854775808] from s where e['a'][9223372036854775807] == 1",
            b"select a from s where a ==~ /(?i)x|y/ or b ==~ 'a\\/b' and not (c ==+ '\\'')",
            br#"{"a": [1, {"status": 2}], "status": 1e5, "b": "\u00e9", "\u00e9": 0}"#,
            b"{\"a\": 1, \"a\": 2}",
        ] {
            super::check_query(input);
        }
    }
}
