//! Tag predicates the index can answer: the store-side form that query languages compile to.

use std::fmt;
use std::sync::Arc;

/// A predicate over one tag value, for matches the index cannot do by lookup (regex,
/// substring). `prefix` is a literal prefix every matching value has, so the index scans only
/// that slice of the sorted values; empty means "scan every value of the key".
#[derive(Clone)]
pub struct ValuePredicate {
    pub prefix: String,
    pub test: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    /// How the predicate prints, for errors and debugging.
    pub description: String,
}

impl fmt::Debug for ValuePredicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

/// String comparison operators, lexicographic on the tag value (as Atlas's `:lt` family).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A tag predicate. Every key-value matcher is false for a series that lacks the key;
/// `Not` is true for such a series.
#[derive(Clone, Debug)]
pub enum Matcher {
    True,
    False,
    Eq {
        key: String,
        value: String,
    },
    In {
        key: String,
        values: Vec<String>,
    },
    Has {
        key: String,
    },
    Cmp {
        key: String,
        op: CmpOp,
        value: String,
    },
    Values {
        key: String,
        pred: ValuePredicate,
    },
    And(Box<Matcher>, Box<Matcher>),
    Or(Box<Matcher>, Box<Matcher>),
    Not(Box<Matcher>),
}

impl Matcher {
    pub fn eq(key: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher::Eq {
            key: key.into(),
            value: value.into(),
        }
    }

    pub fn and(self, other: Matcher) -> Self {
        Matcher::And(Box::new(self), Box::new(other))
    }

    pub fn or(self, other: Matcher) -> Self {
        Matcher::Or(Box::new(self), Box::new(other))
    }

    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Self {
        Matcher::Not(Box::new(self))
    }

    /// Evaluates the predicate against one tag map: the reference semantics the index must
    /// agree with (and what property tests compare it to).
    pub fn matches(&self, tags: &dyn crate::Tags) -> bool {
        match self {
            Matcher::True => true,
            Matcher::False => false,
            Matcher::Eq { key, value } => tags.get(key) == Some(value.as_str()),
            Matcher::In { key, values } => {
                tags.get(key).is_some_and(|v| values.iter().any(|x| x == v))
            }
            Matcher::Has { key } => tags.get(key).is_some(),
            Matcher::Cmp { key, op, value } => tags.get(key).is_some_and(|v| match op {
                CmpOp::Lt => v < value.as_str(),
                CmpOp::Le => v <= value.as_str(),
                CmpOp::Gt => v > value.as_str(),
                CmpOp::Ge => v >= value.as_str(),
            }),
            Matcher::Values { key, pred } => tags
                .get(key)
                .is_some_and(|v| v.starts_with(pred.prefix.as_str()) && (pred.test)(v)),
            Matcher::And(a, b) => a.matches(tags) && b.matches(tags),
            Matcher::Or(a, b) => a.matches(tags) || b.matches(tags),
            Matcher::Not(a) => !a.matches(tags),
        }
    }
}
