//! No input makes the query path panic: random strings and soups of real tokens go through
//! parameter parsing, the interpreter and evaluation against a small store, and all that may
//! come back is `Ok` or `Err`.

use std::sync::{Arc, OnceLock};

use argus_query::{GraphRequest, Limits, evaluate_with_limits, normalize};
use argus_tsdb::{Store, StoreConfig, TagMap};
use proptest::prelude::*;

const STEP: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let now = T0 + 3_600_000;
        let store = Store::with_clock(StoreConfig::new(STEP, 6 * 3_600_000), Arc::new(move || now));
        for i in 0..40 {
            let tags = TagMap::from_pairs([
                ("name", ["cpu", "mem", "req"][i % 3].to_string()),
                ("nf.app", format!("app{}", i % 4)),
                ("status", format!("{}", 200 + 100 * (i % 4))),
                ("atlas.dstype", "gauge".to_string()),
            ]);
            let id = store.writer().resolve(&tags);
            for p in 0..30 {
                let v = if (i + p) % 7 == 0 {
                    f64::NAN
                } else {
                    (i * p) as f64
                };
                let _ = store.writer().append(id, T0 + p as i64 * STEP, v);
            }
        }
        store
    })
}

/// Token pool: every word, plus strings, lists, comments and escapes that stress the parser.
fn token() -> impl Strategy<Value = String> {
    let words: Vec<String> = argus_query::words()
        .iter()
        .map(|w| format!(":{}", w.name))
        .chain([":foo", ":", ":-", ":2"].map(String::from))
        .collect();
    let words = prop::sample::select(words);
    let fixed = prop::sample::select(vec![
        "name",
        "cpu",
        "nf.app",
        "app1",
        "status",
        "200",
        "0",
        "1",
        "3",
        "-1",
        "99999999999999999999",
        "(",
        ")",
        "/*",
        "*/",
        "(,",
        ",)",
        "\\u0028",
        "\\u002c",
        "\\ud800",
        "\\u",
        "[",
        "a.*",
        "(?i)app",
        ".*",
        "*",
        "a{99999}",
        "\t",
        " ",
        "é",
        "\u{0}",
    ]);
    prop_oneof![
        4 => words,
        4 => fixed.prop_map(String::from),
        1 => "\\PC{0,6}",
    ]
}

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..24).prop_map(|t| t.join(","))
}

/// One query clause over the store's keys and values.
fn clause() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec!["name", "nf.app", "status", "missing"]);
    let value = prop::sample::select(vec!["cpu", "mem", "req", "app1", "app2", "200", "400", "x"]);
    let pattern = prop::sample::select(vec!["app", "c.*", ".*", "(?i)APP", "a|m", "[0-9]+", "m"]);
    prop_oneof![
        (
            key.clone(),
            value.clone(),
            prop::sample::select(vec![":eq", ":lt", ":ge", ":contains"])
        )
            .prop_map(|(k, v, w)| format!("{k},{v},{w}")),
        (
            key.clone(),
            pattern,
            prop::sample::select(vec![":re", ":reic"])
        )
            .prop_map(|(k, p, w)| format!("{k},{p},{w}")),
        (key.clone(), prop::collection::vec(value, 0..3))
            .prop_map(|(k, vs)| format!("{k},(,{},),:in", vs.join(","))),
        key.prop_map(|k| format!("{k},:has")),
        Just(":true".to_string()),
        Just(":false".to_string()),
    ]
}

/// Mostly valid expressions: clauses joined by :and/:or/:not, an aggregate, maybe :by.
fn expression() -> impl Strategy<Value = String> {
    let joiner = prop::sample::select(vec![":and", ":or", ":and,:not", ":or,:not"]);
    let aggr = prop::sample::select(vec![
        "", ",:sum", ",:count", ",:min", ",:max", ",:avg", ",:all",
    ]);
    let keys = prop::collection::vec(
        prop::sample::select(vec!["nf.app", "status", "name", "missing"]),
        0..3,
    );
    (
        clause(),
        prop::collection::vec((clause(), joiner), 0..3),
        aggr,
        prop::option::of(keys),
    )
        .prop_map(|(first, rest, aggr, keys)| {
            let mut q = first;
            for (c, j) in rest {
                q = format!("{q},{c},{j}");
            }
            let by = match (aggr, keys) {
                (a, Some(keys)) if !a.is_empty() && a != ",:all" => {
                    format!(",(,{},),:by", keys.join(","))
                }
                _ => String::new(),
            };
            format!("{q}{aggr}{by}")
        })
}

/// Valid expressions, soups, and valid expressions with soup spliced in.
fn program() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(expression(), 1..3).prop_map(|e| e.join(",")),
        2 => soup(),
        2 => (expression(), soup(), expression()).prop_map(|(a, s, b)| format!("{a},{s},{b}")),
    ]
}

fn time_param() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "now",
            "e-1h",
            "s+1h",
            "e-3h",
            "epoch",
            "now-1w",
            "2026-01-01T00:00Z",
            "e-PT1H",
            "s+P2DT6H5M",
            "1767225600",
            "1767225600000",
            "e-99999999999y",
            "",
            "s",
            "e",
            "9223372036854775807",
            "2026-02-30",
            "now+1d",
        ])
        .prop_map(String::from),
        "\\PC{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn step_param() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.3,
        prop_oneof![
            prop::sample::select(vec![
                "1m", "60s", "5m", "PT1M", "0s", "1ms", "7m", "1y", "P1W", "x"
            ])
            .prop_map(String::from),
            "\\PC{0,6}",
        ],
    )
}

fn run(q: &str, s: Option<String>, e: Option<String>, step: Option<String>) {
    let _ = normalize(q);
    let mut params = vec![("q".to_string(), q.to_string())];
    for (k, v) in [("s", s), ("e", e), ("step", step)] {
        if let Some(v) = v {
            params.push((k.to_string(), v));
        }
    }
    let limits = Limits::default();
    if let Ok(req) = GraphRequest::from_params(&params, T0 + 1_800_000, STEP)
        && let Ok(r) = evaluate_with_limits(&req, store(), &limits)
    {
        let json = r.to_atlas_json();
        assert!(json.starts_with("{\"start\":"));
        // Written in small parts (as a large answer is streamed), it is the same text.
        let mut parts = Vec::new();
        r.write_atlas_json(100, &mut |part| {
            parts.extend_from_slice(&part);
            // The part's own buffer back, as a server recycles sent parts: its old text
            // must not leak into the next part.
            Some(part)
        });
        assert_eq!(parts, json.as_bytes());
        // A client gone after the first part stops the writing.
        let mut calls = 0;
        r.write_atlas_json(100, &mut |_| {
            calls += 1;
            None
        });
        assert_eq!(calls, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn token_soups_do_not_panic(
        q in program(),
        s in prop::option::weighted(0.3, time_param()),
        e in prop::option::weighted(0.3, time_param()),
        step in step_param(),
    ) {
        run(&q, s, e, step);
    }

    #[test]
    fn random_strings_do_not_panic(q in "\\PC{0,64}", s in prop::option::of("\\PC{0,16}")) {
        run(&q, s, None, None);
    }
}

#[test]
fn hostile_inputs_do_not_panic() {
    let deep_list = "(,".repeat(10_000);
    let deep_comment = "/*".repeat(10_000);
    let not_chain = format!("a,b,:eq{}", ",:not".repeat(5_000));
    let dup_bomb = format!("a,b,:eq{}", ",:dup,:and".repeat(64));
    let list_bomb = format!("a{}", ",:dup,:list".repeat(64));
    let call_loop = "(,:dup,:call,),:dup,:call".to_string();
    let by_bomb = format!("name,cpu,:eq,:sum,(,{},),:by", "nf.app,".repeat(10_000));
    for q in [
        deep_list,
        deep_comment,
        not_chain,
        dup_bomb,
        list_bomb,
        call_loop,
        by_bomb,
    ] {
        run(&q, None, None, None);
    }
}
