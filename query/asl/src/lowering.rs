//! Lowering a [`Predicate`] to the store's index [`Matcher`], for selecting series.
//!
//! A series' tags are a flat map of strings, so a predicate lowers when every test reads a
//! top-level key (`e['k']`, or the bare word `k`) against string literals (or `null`, which
//! is "the tag is absent"). Tests the index cannot answer (nested paths, `[*]`, numbers and
//! booleans, one tag against another) are an error naming the test. Literal-only tests are
//! constants, and fold to `True` or `False`.
//!
//! The matcher agrees with [`Predicate::matches`] on the JSON object of a series' tags
//! (each key mapped to its string value): the index and the event evaluator are one
//! semantics.

use std::sync::Arc;

use argus_tsdb::{CmpOp as IndexOp, Matcher, ValuePredicate};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use serde_json::Value;

use argus_mql::predicate::{CmpOp, Operand, Path, Pattern, Predicate, Segment};

/// A predicate's store-side form (the predicate core lives in `argus-mql`, which knows
/// nothing of the store).
pub(crate) trait ToMatcher {
    /// The store-side form of the predicate; an error names the first test the index cannot
    /// answer. `:re`-style regexes keep their literal prefix, so the index scans only the
    /// slice of values that can match.
    fn to_matcher(&self) -> Result<Matcher, String>;
}

impl ToMatcher for Predicate {
    fn to_matcher(&self) -> Result<Matcher, String> {
        Ok(match self {
            Predicate::True => Matcher::True,
            Predicate::False => Matcher::False,
            Predicate::And(ps) => fold(ps, Matcher::True, Matcher::and)?,
            Predicate::Or(ps) => fold(ps, Matcher::False, Matcher::or)?,
            Predicate::Not(p) => p.to_matcher()?.not(),
            leaf => leaf_matcher(leaf)
                .map_err(|reason| format!("cannot select series by `{leaf}`: {reason}"))?,
        })
    }
}

/// A test (anything but `and`, `or`, `not` and the constants).
fn leaf_matcher(leaf: &Predicate) -> Result<Matcher, String> {
    let mut paths = Vec::new();
    leaf.paths(&mut paths);
    if paths.is_empty() {
        // Literals only: the same answer for every series.
        return Ok(constant(leaf.matches(&Value::Null)));
    }
    Ok(match leaf {
        Predicate::Compare { left, op, right } => match (left, right) {
            (Operand::Path(p), Operand::Literal(v)) => compare(tag_key(p)?, *op, v)?,
            (Operand::Literal(v), Operand::Path(p)) => compare(tag_key(p)?, op.flip(), v)?,
            _ => {
                return Err("the index compares a tag with a literal, not with another tag".into());
            }
        },
        Predicate::Regex {
            operand: Operand::Path(p),
            pattern,
        } => {
            let re = pattern.clone();
            Matcher::Values {
                key: tag_key(p)?,
                pred: ValuePredicate {
                    prefix: index_prefix(pattern).to_string(),
                    test: Arc::new(move |v: &str| re.is_match(v)),
                    description: leaf.to_string(),
                },
            }
        }
        Predicate::Contains {
            operand: Operand::Path(p),
            needle,
        } => {
            let needle = needle.clone();
            Matcher::Values {
                key: tag_key(p)?,
                pred: ValuePredicate {
                    prefix: String::new(),
                    test: Arc::new(move |v: &str| v.contains(needle.as_str())),
                    description: leaf.to_string(),
                },
            }
        }
        Predicate::In {
            operand: Operand::Path(p),
            values,
        } => {
            let key = tag_key(p)?;
            let mut strings = Vec::with_capacity(values.len());
            let mut absent = false;
            for v in values {
                match v {
                    Value::String(s) => strings.push(s.clone()),
                    Value::Null => absent = true,
                    other => return Err(not_a_string(other)),
                }
            }
            let has_not = || Matcher::Has { key: key.clone() }.not();
            match (strings.is_empty(), absent) {
                (true, true) => has_not(),
                (false, true) => Matcher::In {
                    key: key.clone(),
                    values: strings,
                }
                .or(has_not()),
                _ => Matcher::In {
                    key: key.clone(),
                    values: strings,
                },
            }
        }
        Predicate::Present(p) => Matcher::Has { key: tag_key(p)? },
        // A literal operand with a path elsewhere cannot happen; and the rest are not
        // tests.
        _ => return Err("not a test on a tag".into()),
    })
}

/// The longest literal prefix every match of `pattern` has (empty if none, and always empty
/// for a case-insensitive pattern, which the case-sensitive index cannot narrow). Worked out
/// once per compiled pattern.
pub(crate) fn index_prefix(pattern: &Pattern) -> &str {
    pattern.index_prefix(|p| {
        if p.ignore_case {
            String::new()
        } else {
            literal_prefix(p.anchored())
        }
    })
}

fn fold(
    ps: &[Predicate],
    empty: Matcher,
    join: fn(Matcher, Matcher) -> Matcher,
) -> Result<Matcher, String> {
    let mut parts = ps.iter().map(ToMatcher::to_matcher);
    let Some(first) = parts.next() else {
        return Ok(empty);
    };
    parts.try_fold(first?, |acc, m| Ok(join(acc, m?)))
}

fn constant(b: bool) -> Matcher {
    if b { Matcher::True } else { Matcher::False }
}

/// The tag key a path names: a path of one key only.
fn tag_key(p: &Path) -> Result<String, String> {
    match p.0.as_slice() {
        [Segment::Key(k)] => Ok(k.clone()),
        segs if segs.contains(&Segment::Any) => Err(format!(
            "{p} uses [*], and a series' tags are a flat map of strings"
        )),
        _ => Err(format!(
            "{p} is a nested path, and a series' tags are a flat map of strings"
        )),
    }
}

fn not_a_string(v: &Value) -> String {
    format!("{v} is not a string, and tag values are strings (quote it: '{v}')")
}

/// `key op literal` with the predicate core's nil rules: `null` is an absent tag.
fn compare(key: String, op: CmpOp, v: &Value) -> Result<Matcher, String> {
    let index_op = |op| match op {
        CmpOp::Lt => IndexOp::Lt,
        CmpOp::Le => IndexOp::Le,
        CmpOp::Gt => IndexOp::Gt,
        _ => IndexOp::Ge,
    };
    Ok(match (op, v) {
        (CmpOp::Eq, Value::String(s)) => Matcher::eq(key, s.clone()),
        (CmpOp::Ne, Value::String(s)) => Matcher::eq(key, s.clone()).not(),
        (op, Value::String(s)) => Matcher::Cmp {
            key,
            op: index_op(op),
            value: s.clone(),
        },
        (CmpOp::Eq, Value::Null) => Matcher::Has { key }.not(),
        (CmpOp::Ne, Value::Null) => Matcher::Has { key },
        // Nothing orders against nil.
        (_, Value::Null) => Matcher::False,
        (_, other) => return Err(not_a_string(other)),
    })
}

/// The longest literal prefix every match of `pattern` starts with, cut to a char boundary;
/// empty when there is none (or the pattern cannot be analysed).
fn literal_prefix(pattern: &str) -> String {
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

#[cfg(test)]
mod tests {
    use argus_tsdb::TagMap;
    use serde_json::json;

    use super::*;
    use argus_mql::parse_condition;
    use argus_mql::predicate::RegexMode;

    fn lower(condition: &str) -> Result<Matcher, String> {
        parse_condition(condition)
            .unwrap_or_else(|e| panic!("{condition}: {e}"))
            .to_matcher()
    }

    fn prefix(pattern: &str, mode: RegexMode) -> String {
        index_prefix(&Pattern::new(pattern, mode, false).unwrap()).to_string()
    }

    #[test]
    fn literal_prefixes() {
        for mode in [RegexMode::Start, RegexMode::Full] {
            assert_eq!(prefix("app00[0-3].*", mode), "app00");
            assert_eq!(prefix("abc", mode), "abc");
            assert_eq!(prefix("abc|abd", mode), "ab");
            assert_eq!(prefix("a|b", mode), "");
            assert_eq!(prefix(".*abc", mode), "");
            assert_eq!(prefix("ab?c", mode), "a");
            assert_eq!(prefix("(?i)abc", mode), "");
            assert_eq!(prefix("é|è", mode), "");
            assert_eq!(prefix("foo\\.bar.*", mode), "foo.bar");
        }
        let ic = Pattern::new("abc", RegexMode::Start, true).unwrap();
        assert_eq!(index_prefix(&ic), "");
    }

    #[test]
    fn untranslatable_tests_are_errors_naming_them() {
        for (condition, names) in [
            ("e['a']['b'] == 'x'", "nested path"),
            ("e['a'][0] == 'x'", "nested path"),
            ("e['a'][*] == 'x'", "[*]"),
            ("e['a'][*] ==~ /x/", "[*]"),
            ("status == 200", "200 is not a string"),
            ("status >= 2.5", "2.5 is not a string"),
            ("ok == true", "true is not a string"),
            ("a == b", "not with another tag"),
            ("a < b", "not with another tag"),
            ("e['a']['b'] != null", "nested path"),
            ("e['a']['b'] ==+ 'x'", "nested path"),
        ] {
            let err = lower(condition).map(|_| ()).unwrap_err();
            assert!(err.contains(names), "{condition}: {err}");
            assert!(err.starts_with("cannot select series by `"), "{err}");
        }
        // The error names the failing part of a larger predicate, not the whole.
        let err = lower("name == 'cpu' and (app == 'www' or e['x'][*] == 'y')")
            .map(|_| ())
            .unwrap_err();
        assert!(err.contains("`e['x'][*] == 'y'`"), "{err}");
        assert!(!err.contains("name"), "{err}");
        let in_number = Predicate::In {
            operand: Operand::Path(Path::key("a")),
            values: vec![json!("x"), json!(1)],
        };
        assert!(
            in_number
                .to_matcher()
                .unwrap_err()
                .contains("1 is not a string")
        );
    }

    #[test]
    fn lowered_tests_agree_with_the_evaluator() {
        let tags = [
            TagMap::new(),
            TagMap::from_pairs([("a", "x")]),
            TagMap::from_pairs([("a", "xyz"), ("b", "1")]),
            TagMap::from_pairs([("a", "w"), ("b", "")]),
            TagMap::from_pairs([("b", "x\ny")]),
        ];
        for condition in [
            "a == 'x'",
            "'x' == a",
            "a != 'x'",
            "a < 'x'",
            "'x' < a",
            "a >= 'x'",
            "'x' >= a",
            "a == null",
            "a != null",
            "a < null",
            "a ==~ /x.*/",
            "b ==~ /x.y/",
            "a ==+ 'y'",
            "not (a == 'x' or b == '1')",
            "(a == 'x' and b != null) or b == ''",
            "1 == 1",
            "1 == 2 or a == 'w'",
            "'x' ==~ /x/",
            "true and not (false)",
        ] {
            let p = parse_condition(condition).unwrap();
            let m = p
                .to_matcher()
                .unwrap_or_else(|e| panic!("{condition}: {e}"));
            for t in &tags {
                let event = Value::Object(
                    t.iter()
                        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
                        .collect(),
                );
                assert_eq!(
                    m.matches(t as &dyn argus_tsdb::Tags),
                    p.matches(&event),
                    "{condition} on {t:?}"
                );
            }
        }
        let in_null = Predicate::In {
            operand: Operand::Path(Path::key("a")),
            values: vec![json!("x"), Value::Null],
        };
        let m = in_null.to_matcher().unwrap();
        assert!(m.matches(&TagMap::new() as &dyn argus_tsdb::Tags));
        assert!(m.matches(&TagMap::from_pairs([("a", "x")]) as &dyn argus_tsdb::Tags));
        assert!(!m.matches(&TagMap::from_pairs([("a", "y")]) as &dyn argus_tsdb::Tags));
        assert!(matches!(
            Predicate::And(vec![]).to_matcher().unwrap(),
            Matcher::True
        ));
        assert!(matches!(
            Predicate::Or(vec![]).to_matcher().unwrap(),
            Matcher::False
        ));
    }
}
