//! Queries: predicates over a series' tags, as built by the query vocabulary, printed back as
//! canonical Stack Language and lowered to the store's [`Matcher`].

use std::fmt;
use std::sync::Arc;

use argus_tsdb::{CmpOp, Matcher, TagMap, ValuePredicate};
use regex::{Regex, RegexBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::parser::write_escaped;

/// Compiled-size cap for one regex, so one pattern cannot take unbounded memory or time to
/// build.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
    compiled: Arc<Regex>,
    /// Literal prefix every match has; lets the index scan only that slice of values.
    prefix: String,
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
        let anchored = format!("^(?:{pattern})");
        let compiled = RegexBuilder::new(&anchored)
            .case_insensitive(ignore_case)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| e.to_string())?;
        // A case-insensitive match has no usable byte prefix for a case-sensitive index.
        let prefix = if ignore_case {
            String::new()
        } else {
            literal_prefix(&anchored)
        };
        Ok(RegexQuery {
            key,
            pattern,
            ignore_case,
            compiled: Arc::new(compiled),
            prefix,
        })
    }

    pub(crate) fn is_match(&self, value: &str) -> bool {
        self.compiled.is_match(value)
    }

    #[cfg(test)]
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }
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

    /// The store-side form.
    pub(crate) fn to_matcher(&self) -> Matcher {
        match self {
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
                let re = r.clone();
                Matcher::Values {
                    key: r.key.clone(),
                    pred: ValuePredicate {
                        prefix: r.prefix.clone(),
                        test: Arc::new(move |v: &str| re.is_match(v)),
                        description: r.to_string(),
                    },
                }
            }
            Query::And(a, b) => a.to_matcher().and(b.to_matcher()),
            Query::Or(a, b) => a.to_matcher().or(b.to_matcher()),
            Query::Not(q) => q.to_matcher().not(),
        }
    }
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
        assert_eq!(prefix("abc"), "abc");
        assert_eq!(prefix("abc|abd"), "ab");
        assert_eq!(prefix("a|b"), "");
        assert_eq!(prefix(".*abc"), "");
        assert_eq!(prefix("ab?c"), "a");
        assert_eq!(prefix("(?i)abc"), "");
        assert_eq!(prefix("é|è"), "");
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
