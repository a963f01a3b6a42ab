//! The Stack Language's queries and MQL's `where` share one predicate core:
//! - the store's matcher (what the index answers) and the predicate's evaluator (what agents
//!   and the server run on events) agree on every series' tags;
//! - lowering through the core builds the same matcher the queries built directly before it;
//! - a predicate printed as an MQL condition (what travels to agents) parses back to one that
//!   selects the same tags.

use std::sync::Arc;

use argus_tsdb::{CmpOp, Matcher, TagMap, Tags, ValuePredicate};
use proptest::prelude::*;
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use serde_json::Value;

use super::{Query, RegexQuery};
use crate::lowering::ToMatcher;
use argus_mql::parse_condition;

/// A series' tags as the event the predicate core evaluates: a flat object of strings.
fn event(tags: &TagMap) -> Value {
    Value::Object(
        tags.iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect(),
    )
}

/// Few keys, so queries and tag maps meet; awkward characters for the printed forms.
fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "nf.app", "k'\\ /\n", ""]).prop_map(String::from)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "", "x", "xy", "X", "y", "a\nb", "x\ny", "é", "/", "\\", "'"
        ])
        .prop_map(String::from),
        "[xyXé/\n.\\\\']{0,4}",
    ]
}

/// Regexes built of pieces that stay valid in any order.
fn pattern() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "x", "y", ".", ".*", "[x-z]", "x|y", "(?i)x", "\\/", "/", "\\\\", "é", "(x|y)?", "\\n",
        "\\.", "$", "'", "(?s:.)", "[^x]", "\\w+",
    ]);
    prop::collection::vec(piece, 0..4).prop_map(|ps| ps.concat())
}

fn leaf() -> impl Strategy<Value = Query> {
    let op = prop::sample::select(vec![CmpOp::Lt, CmpOp::Le, CmpOp::Gt, CmpOp::Ge]);
    prop_oneof![
        Just(Query::True),
        Just(Query::False),
        (key(), value()).prop_map(|(key, value)| Query::Equal { key, value }),
        (key(), prop::collection::vec(value(), 0..4))
            .prop_map(|(key, values)| Query::In { key, values }),
        key().prop_map(|key| Query::HasKey { key }),
        (key(), op, value()).prop_map(|(key, op, value)| Query::Cmp { key, op, value }),
        (key(), pattern(), any::<bool>()).prop_map(|(key, pattern, ic)| {
            Query::Regex(RegexQuery::new(key, pattern, ic).expect("pieces compile"))
        }),
    ]
}

/// Queries as the words build them (with Atlas's simplifications) and as raw trees.
fn query() -> impl Strategy<Value = Query> {
    leaf().prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
            inner.clone().prop_map(Query::not),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Query::And(Box::new(a), Box::new(b))),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| Query::Or(Box::new(a), Box::new(b))),
            inner.prop_map(|q| Query::Not(Box::new(q))),
        ]
    })
}

fn tag_map() -> impl Strategy<Value = TagMap> {
    prop::collection::vec((key(), value()), 0..4).prop_map(TagMap::from_pairs)
}

/// How queries lowered to the store before the predicate core, kept as the reference the
/// lowering through the core must reproduce.
fn legacy_matcher(q: &Query) -> Matcher {
    match q {
        Query::True => Matcher::True,
        Query::False => Matcher::False,
        Query::Equal { key, value } => Matcher::eq(key.clone(), value.clone()),
        Query::In { key, values } => Matcher::In {
            key: key.clone(),
            values: values.clone(),
        },
        Query::HasKey { key } => Matcher::Has { key: key.clone() },
        Query::Cmp { key, op, value } => Matcher::Cmp {
            key: key.clone(),
            op: *op,
            value: value.clone(),
        },
        Query::Regex(r) => {
            let anchored = format!("^(?:{})", r.pattern);
            let prefix = if r.ignore_case {
                String::new()
            } else {
                legacy_prefix(&anchored)
            };
            let re = r.clone();
            Matcher::Values {
                key: r.key.clone(),
                pred: ValuePredicate {
                    prefix,
                    test: Arc::new(move |v: &str| re.is_match(v)),
                    description: r.to_string(),
                },
            }
        }
        Query::And(a, b) => legacy_matcher(a).and(legacy_matcher(b)),
        Query::Or(a, b) => legacy_matcher(a).or(legacy_matcher(b)),
        Query::Not(q) => legacy_matcher(q).not(),
    }
}

fn legacy_prefix(pattern: &str) -> String {
    let Ok(hir) = regex_syntax::Parser::new().parse(pattern) else {
        return String::new();
    };
    let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
    let Some(bytes) = seq.longest_common_prefix() else {
        return String::new();
    };
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(e) => String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned(),
    }
}

/// The matcher's tree, with what the index uses of a value predicate (its key and prefix).
fn shape(m: &Matcher) -> String {
    match m {
        Matcher::Values { key, pred } => format!("Values({key:?}, prefix {:?})", pred.prefix),
        Matcher::And(a, b) => format!("And({}, {})", shape(a), shape(b)),
        Matcher::Or(a, b) => format!("Or({}, {})", shape(a), shape(b)),
        Matcher::Not(a) => format!("Not({})", shape(a)),
        other => format!("{other:?}"),
    }
}

#[test]
fn lowering_through_the_core_keeps_the_matchers() {
    for (program, expected) in [
        (
            "name,cpu,:eq,nf.cluster,app00[0-3].*,:re,:and",
            r#"And(Eq { key: "name", value: "cpu" }, Values("nf.cluster", prefix "app00"))"#,
        ),
        (
            "a,(,x,y,),:in,b,:has,:not,:or,c,m,:le,:and",
            r#"And(Or(In { key: "a", values: ["x", "y"] }, Not(Has { key: "b" })), Cmp { key: "c", op: Le, value: "m" })"#,
        ),
        ("k,Abc,:reic", r#"Values("k", prefix "")"#),
        ("k,abc,:starts", r#"Values("k", prefix "abc")"#),
        (":true", "True"),
    ] {
        let stack = crate::run(program).unwrap();
        let [crate::model::Item::Query(q)] = stack.as_slice() else {
            panic!("{program}: {stack:?}");
        };
        assert_eq!(shape(&q.to_matcher()), expected, "{program}");
        assert_eq!(shape(&legacy_matcher(q)), expected, "{program}");
    }
}

#[test]
fn stack_language_semantics_in_the_core() {
    let q = |program: &str| crate::tag_predicate(program).unwrap();
    let tags = |pairs: &[(&str, &str)]| event(&TagMap::from_pairs(pairs.iter().copied()));
    // Tag values order as strings, not numbers.
    assert!(q("n,10,:lt").matches(&tags(&[("n", "1")])));
    assert!(!q("n,10,:lt").matches(&tags(&[("n", "9")])));
    // `:re` matches from the start, `.` not across a newline; `:reic` ignores case.
    assert!(q("k,b,:re").matches(&tags(&[("k", "bc")])));
    assert!(!q("k,b,:re").matches(&tags(&[("k", "ab")])));
    assert!(!q("k,a.b,:re").matches(&tags(&[("k", "a\nb")])));
    assert!(q("k,ab,:reic").matches(&tags(&[("k", "ABc")])));
    // A missing key fails every test but `:not`.
    assert!(!q("k,x,:lt").matches(&tags(&[])));
    assert!(q("k,x,:eq,:not").matches(&tags(&[])));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The index's reference semantics and the event evaluator agree on series' tags, and
    /// the lowering through the core builds the matcher the queries built before it.
    #[test]
    fn matcher_and_predicate_agree(q in query(), maps in prop::collection::vec(tag_map(), 1..6)) {
        let p = q.to_predicate();
        let m = q.to_matcher();
        let legacy = legacy_matcher(&q);
        prop_assert_eq!(shape(&m), shape(&legacy), "{}", q);
        for tags in &maps {
            let want = legacy.matches(tags as &dyn Tags);
            prop_assert_eq!(m.matches(tags as &dyn Tags), want, "matcher: {} on {:?}", q, tags);
            prop_assert_eq!(p.matches(&event(tags)), want, "predicate {} of {} on {:?}", p, q, tags);
        }
    }

    /// The MQL text of an ASL-derived predicate (what agents receive) parses back to a
    /// predicate that selects the same tags, and lowers to the store again.
    #[test]
    fn printed_predicates_parse_back(q in query(), maps in prop::collection::vec(tag_map(), 1..6)) {
        let p = q.to_predicate();
        let text = p.to_string();
        let back = parse_condition(&text);
        prop_assert!(back.is_ok(), "{} printed as {}: {:?}", q, text, back.err());
        let back = back.unwrap();
        let lowered = back.to_matcher();
        prop_assert!(lowered.is_ok(), "{}: {:?}", text, lowered.err());
        let lowered = lowered.unwrap();
        for tags in &maps {
            let e = event(tags);
            let want = p.matches(&e);
            prop_assert_eq!(back.matches(&e), want, "{} printed as {} on {:?}", q, text, tags);
            prop_assert_eq!(lowered.matches(tags as &dyn Tags), want, "{} on {:?}", text, tags);
        }
    }
}

/// The generated queries and tag maps meet: both outcomes are common, or the properties
/// above test little.
#[test]
fn generated_cases_hit_both_outcomes() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (queries, maps) = (leaf(), tag_map());
    let (mut yes, n) = (0, 1000);
    for _ in 0..n {
        let q = queries.new_tree(&mut runner).expect("tree").current();
        let tags = maps.new_tree(&mut runner).expect("tree").current();
        if q.to_predicate().matches(&event(&tags)) {
            yes += 1;
        }
    }
    assert!(yes * 5 >= n && yes * 5 <= n * 4, "{yes} of {n} matched");
}
