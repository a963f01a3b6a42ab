//! Queries: predicates over a series' tags, as built by the query vocabulary, printed back as
//! canonical Stack Language. They compile to the predicate core ([`Predicate`]), the one
//! representation MQL's `where` compiles to too, and reach the store through it.

use std::fmt;

use argus_tsdb::{CmpOp, Matcher, TagMap};

use crate::lowering::ToMatcher;
use crate::parser::write_escaped;
use crate::predicate::{self, Operand, Path, Pattern, Predicate, RegexMode};

/// A tag predicate. Every key-value query is false for a series that lacks the key; `Not`
/// is true for it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Query {
    True,
    False,
    Equal {
        key: String,
        value: String,
    },
    In {
        key: String,
        values: Vec<String>,
    },
    HasKey {
        key: String,
    },
    Cmp {
        key: String,
        op: CmpOp,
        value: String,
    },
    Regex(RegexQuery),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
    Not(Box<Query>),
}

/// A regex match anchored at the start of the value (`:re`, `:reic`), compiled once.
#[derive(Clone)]
pub(crate) struct RegexQuery {
    pub key: String,
    pub pattern: String,
    pub ignore_case: bool,
    compiled: Pattern,
}

impl PartialEq for RegexQuery {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
            && self.pattern == other.pattern
            && self.ignore_case == other.ignore_case
    }
}

impl fmt::Debug for RegexQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Regex({:?}, {:?}, ic={})",
            self.key, self.pattern, self.ignore_case
        )
    }
}

impl RegexQuery {
    pub(crate) fn new(key: String, pattern: String, ignore_case: bool) -> Result<Self, String> {
        let compiled = Pattern::new(&pattern, RegexMode::Start, ignore_case)?;
        Ok(RegexQuery {
            key,
            pattern,
            ignore_case,
            compiled,
        })
    }

    #[cfg(test)]
    pub(crate) fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }

    #[cfg(test)]
    pub(crate) fn prefix(&self) -> &str {
        crate::lowering::index_prefix(&self.compiled)
    }
}

fn core_op(op: CmpOp) -> predicate::CmpOp {
    match op {
        CmpOp::Lt => predicate::CmpOp::Lt,
        CmpOp::Le => predicate::CmpOp::Le,
        CmpOp::Gt => predicate::CmpOp::Gt,
        CmpOp::Ge => predicate::CmpOp::Ge,
    }
}

impl Query {
    /// `self AND other`, simplified for the constants as Atlas does.
    pub(crate) fn and(self, other: Query) -> Query {
        match (self, other) {
            (Query::True, q) | (q, Query::True) => q,
            (Query::False, _) | (_, Query::False) => Query::False,
            (a, b) => Query::And(Box::new(a), Box::new(b)),
        }
    }

    /// `self OR other`, simplified for the constants as Atlas does.
    pub(crate) fn or(self, other: Query) -> Query {
        match (self, other) {
            (Query::True, _) | (_, Query::True) => Query::True,
            (Query::False, q) | (q, Query::False) => q,
            (a, b) => Query::Or(Box::new(a), Box::new(b)),
        }
    }

    #[allow(clippy::should_implement_trait)]
    pub(crate) fn not(self) -> Query {
        match self {
            Query::True => Query::False,
            Query::False => Query::True,
            q => Query::Not(Box::new(q)),
        }
    }

    /// Nesting depth (a leaf is 1).
    pub(crate) fn depth(&self) -> usize {
        match self {
            Query::And(a, b) | Query::Or(a, b) => 1 + a.depth().max(b.depth()),
            Query::Not(q) => 1 + q.depth(),
            _ => 1,
        }
    }

    /// Node count, the cost of copying the query.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Query::And(a, b) | Query::Or(a, b) => 1 + a.weight() + b.weight(),
            Query::Not(q) => 1 + q.weight(),
            Query::In { values, .. } => 1 + values.len(),
            _ => 1,
        }
    }

    /// Tags fixed by `:eq` clauses reachable through `:and` only (Atlas's `Query.tags`): the
    /// tags every matching series shares, which aggregates keep.
    pub(crate) fn exact_tags(&self) -> TagMap {
        let mut tags = TagMap::new();
        self.collect_exact(&mut tags);
        tags
    }

    fn collect_exact(&self, tags: &mut TagMap) {
        match self {
            Query::And(a, b) => {
                a.collect_exact(tags);
                b.collect_exact(tags);
            }
            Query::Equal { key, value } => tags.insert(key.clone(), value.clone()),
            _ => {}
        }
    }

    /// Atlas's `labelString`: `k=v`, `k<v`, `k~/^re/`, `k in (a,b)`, `has(k)`,
    /// `(q1) and (q2)`, `not(q)`, `true`.
    pub(crate) fn label_string(&self) -> String {
        match self {
            Query::True => "true".into(),
            Query::False => "false".into(),
            Query::Equal { key, value } => format!("{key}={value}"),
            Query::In { key, values } => format!("{key} in ({})", values.join(",")),
            Query::HasKey { key } => format!("has({key})"),
            Query::Cmp { key, op, value } => {
                let sym = match op {
                    CmpOp::Lt => "<",
                    CmpOp::Le => "<=",
                    CmpOp::Gt => ">",
                    CmpOp::Ge => ">=",
                };
                format!("{key}{sym}{value}")
            }
            Query::Regex(r) => format!(
                "{}~/^{}/{}",
                r.key,
                r.pattern,
                if r.ignore_case { "i" } else { "" }
            ),
            Query::And(a, b) => format!("({}) and ({})", a.label_string(), b.label_string()),
            Query::Or(a, b) => format!("({}) or ({})", a.label_string(), b.label_string()),
            Query::Not(q) => format!("not({})", q.label_string()),
        }
    }

    /// The predicate core's form: what the store, the agents and MQL evaluate. A tag key `k`
    /// is the path `e['k']`; tag values compare as strings (lexicographically, as Atlas's
    /// `:lt` family does); `:re` and `:reic` match from the value's start.
    pub(crate) fn to_predicate(&self) -> Predicate {
        let key = |k: &str| Operand::Path(Path::key(k));
        let string = |v: &str| Operand::Literal(serde_json::Value::String(v.to_string()));
        match self {
            Query::True => Predicate::True,
            Query::False => Predicate::False,
            Query::Equal { key: k, value } => Predicate::Compare {
                left: key(k),
                op: predicate::CmpOp::Eq,
                right: string(value),
            },
            Query::In { key: k, values } => Predicate::In {
                operand: key(k),
                values: values
                    .iter()
                    .map(|v| serde_json::Value::String(v.clone()))
                    .collect(),
            },
            Query::HasKey { key: k } => Predicate::Present(Path::key(k.as_str())),
            Query::Cmp { key: k, op, value } => Predicate::Compare {
                left: key(k),
                op: core_op(*op),
                right: string(value),
            },
            Query::Regex(r) => Predicate::Regex {
                operand: key(&r.key),
                pattern: r.compiled.clone(),
            },
            // Binary, as the words build them, so the matcher keeps the same tree.
            Query::And(a, b) => Predicate::And(vec![a.to_predicate(), b.to_predicate()]),
            Query::Or(a, b) => Predicate::Or(vec![a.to_predicate(), b.to_predicate()]),
            Query::Not(q) => Predicate::Not(Box::new(q.to_predicate())),
        }
    }

    /// The predicate core's form over events, where fields have types: a value that reads
    /// as a number (`500`, `-1.5`) or a boolean also compares as one, so `status,500,:ge`
    /// is `status >= 500` for a numeric field and `status >= '500'` (string order) for a
    /// string field. Each comparison is true when either form holds; a field compares only
    /// with the form of its own kind, so the two never both apply. Regexes read a number's
    /// text. Tag queries over stored series keep [`Query::to_predicate`]'s string order.
    pub(crate) fn to_event_predicate(&self) -> Predicate {
        let key = |k: &str| Operand::Path(Path::key(k));
        let typed = |k: &str, op: predicate::CmpOp, v: &str| {
            typed_literals(v)
                .into_iter()
                .map(|lit| Predicate::Compare {
                    left: key(k),
                    op,
                    right: Operand::Literal(lit),
                })
                .reduce(Predicate::or)
                .unwrap_or(Predicate::False)
        };
        match self {
            Query::Equal { key: k, value } => typed(k, predicate::CmpOp::Eq, value),
            Query::Cmp { key: k, op, value } => typed(k, core_op(*op), value),
            Query::In { key: k, values } => Predicate::In {
                operand: key(k),
                values: values.iter().flat_map(|v| typed_literals(v)).collect(),
            },
            Query::And(a, b) => {
                Predicate::And(vec![a.to_event_predicate(), b.to_event_predicate()])
            }
            Query::Or(a, b) => Predicate::Or(vec![a.to_event_predicate(), b.to_event_predicate()]),
            Query::Not(q) => Predicate::Not(Box::new(q.to_event_predicate())),
            Query::True | Query::False | Query::HasKey { .. } | Query::Regex(_) => {
                self.to_predicate()
            }
        }
    }

    /// Whether any clause reads `key`.
    pub(crate) fn reads_key(&self, key: &str) -> bool {
        match self {
            Query::True | Query::False => false,
            Query::Equal { key: k, .. }
            | Query::In { key: k, .. }
            | Query::HasKey { key: k }
            | Query::Cmp { key: k, .. } => k == key,
            Query::Regex(r) => r.key == key,
            Query::And(a, b) | Query::Or(a, b) => a.reads_key(key) || b.reads_key(key),
            Query::Not(q) => q.reads_key(key),
        }
    }

    /// The clauses joined by the top-level `:and`s, in order.
    pub(crate) fn conjuncts(&self) -> Vec<&Query> {
        match self {
            Query::And(a, b) => {
                let mut out = a.conjuncts();
                out.extend(b.conjuncts());
                out
            }
            q => vec![q],
        }
    }

    /// The store-side form, through the predicate core.
    pub(crate) fn to_matcher(&self) -> Matcher {
        self.to_predicate()
            .to_matcher()
            .expect("a Stack Language query reads top-level tags against strings")
    }
}

/// The forms an event field may hold a Stack Language value in: always the string; a
/// number too when the value is written as a plain decimal (`500`, `-0.25`); a boolean too
/// for `true` and `false`.
fn typed_literals(v: &str) -> Vec<serde_json::Value> {
    let mut out = vec![serde_json::Value::String(v.to_string())];
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = v.strip_prefix('-').unwrap_or(v);
    let decimal = match unsigned.split_once('.') {
        Some((int, frac)) => digits(int) && digits(frac),
        None => digits(unsigned),
    };
    if decimal {
        if let Ok(i) = v.parse::<i64>() {
            out.push(serde_json::Value::from(i));
        } else if let Some(n) = v.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            out.push(serde_json::Value::Number(n));
        }
    }
    match v {
        "true" => out.push(serde_json::Value::Bool(true)),
        "false" => out.push(serde_json::Value::Bool(false)),
        _ => {}
    }
    out
}

fn cmp_word(op: CmpOp) -> &'static str {
    match op {
        CmpOp::Lt => "lt",
        CmpOp::Le => "le",
        CmpOp::Gt => "gt",
        CmpOp::Ge => "ge",
    }
}

impl fmt::Display for RegexQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, &self.key)?;
        f.write_str(",")?;
        write_escaped(f, &self.pattern)?;
        f.write_str(if self.ignore_case { ",:reic" } else { ",:re" })
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Query::True => f.write_str(":true"),
            Query::False => f.write_str(":false"),
            Query::Equal { key, value } => {
                write_escaped(f, key)?;
                f.write_str(",")?;
                write_escaped(f, value)?;
                f.write_str(",:eq")
            }
            Query::In { key, values } => {
                write_escaped(f, key)?;
                f.write_str(",(")?;
                for v in values {
                    f.write_str(",")?;
                    write_escaped(f, v)?;
                }
                f.write_str(",),:in")
            }
            Query::HasKey { key } => {
                write_escaped(f, key)?;
                f.write_str(",:has")
            }
            Query::Cmp { key, op, value } => {
                write_escaped(f, key)?;
                f.write_str(",")?;
                write_escaped(f, value)?;
                write!(f, ",:{}", cmp_word(*op))
            }
            Query::Regex(r) => r.fmt(f),
            Query::And(a, b) => write!(f, "{a},{b},:and"),
            Query::Or(a, b) => write!(f, "{a},{b},:or"),
            Query::Not(q) => write!(f, "{q},:not"),
        }
    }
}

#[cfg(test)]
mod predicate_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(pattern: &str) -> String {
        RegexQuery::new("k".into(), pattern.into(), false)
            .unwrap()
            .prefix()
            .to_string()
    }

    #[test]
    fn literal_prefixes() {
        assert_eq!(prefix("app00[0-3].*"), "app00");
        assert_eq!(prefix("abc|abd"), "ab");
        assert_eq!(prefix("a|b"), "");
        assert_eq!(prefix("foo\\.bar.*"), "foo.bar");
    }

    #[test]
    fn anchored_at_start_only() {
        let r = RegexQuery::new("k".into(), "b.*".into(), false).unwrap();
        assert!(r.is_match("bcd"));
        assert!(!r.is_match("abc"));
        let r = RegexQuery::new("k".into(), "a|b".into(), false).unwrap();
        assert!(r.is_match("bx") && r.is_match("ax") && !r.is_match("xb"));
        let r = RegexQuery::new("k".into(), "abc".into(), true).unwrap();
        assert!(r.is_match("ABCd"));
    }

    #[test]
    fn exact_tags_follow_and_only() {
        let eq = |k: &str, v: &str| Query::Equal {
            key: k.into(),
            value: v.into(),
        };
        let q = eq("name", "a")
            .and(eq("x", "1").or(eq("x", "2")))
            .and(eq("y", "3").not());
        assert_eq!(q.exact_tags(), TagMap::from_pairs([("name", "a")]));
        assert_eq!(
            eq("a", "1").and(eq("b", "2")).exact_tags(),
            TagMap::from_pairs([("a", "1"), ("b", "2")])
        );
    }
}
