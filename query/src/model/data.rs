//! Data expressions: what to fetch from the store and how to combine it (`:sum`, `:count`,
//! `:min`, `:max`, `:avg`, `:by`, `:all`).

use std::fmt;

use argus_tsdb::Consolidation;

use super::query::Query;
use crate::parser::write_escaped;

/// How the series matched by a query combine into one line per step. All ignore NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AggrOp {
    Sum,
    Count,
    Min,
    Max,
    /// `:sum` / `:count`, computed in one pass (Atlas writes it as a macro over the two).
    Avg,
}

impl AggrOp {
    pub(crate) fn word(self) -> &'static str {
        match self {
            AggrOp::Sum => "sum",
            AggrOp::Count => "count",
            AggrOp::Min => "min",
            AggrOp::Max => "max",
            AggrOp::Avg => "avg",
        }
    }

    /// How the store combines stored steps into one output step before aggregating (Atlas's
    /// default consolidation per aggregate).
    pub(crate) fn consolidation(self) -> Consolidation {
        match self {
            AggrOp::Sum | AggrOp::Count | AggrOp::Avg => Consolidation::Avg,
            AggrOp::Min => Consolidation::Min,
            AggrOp::Max => Consolidation::Max,
        }
    }
}

/// An aggregate of every series a query matches.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AggregateFunction {
    pub op: AggrOp,
    pub query: Query,
}

/// Expressions that read the store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DataExpr {
    Aggregate(AggregateFunction),
    /// One aggregate per distinct combination of the keys' values; series lacking a key drop.
    GroupBy {
        af: AggregateFunction,
        keys: Vec<String>,
    },
    /// Every matching series as it is.
    All(Query),
}

impl DataExpr {
    pub(crate) fn query(&self) -> &Query {
        match self {
            DataExpr::Aggregate(af) | DataExpr::GroupBy { af, .. } => &af.query,
            DataExpr::All(q) => q,
        }
    }

    /// Consolidation the store applies per series (Atlas: `:all` sums).
    pub(crate) fn consolidation(&self) -> Consolidation {
        match self {
            DataExpr::Aggregate(af) | DataExpr::GroupBy { af, .. } => af.op.consolidation(),
            DataExpr::All(_) => Consolidation::Sum,
        }
    }

    pub(crate) fn weight(&self) -> usize {
        match self {
            DataExpr::GroupBy { keys, .. } => 1 + keys.len() + self.query().weight(),
            _ => 1 + self.query().weight(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            DataExpr::Aggregate(_) => "AggregateFunction",
            DataExpr::GroupBy { .. } => "GroupBy",
            DataExpr::All(_) => "All",
        }
    }
}

impl fmt::Display for AggregateFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},:{}", self.query, self.op.word())
    }
}

impl fmt::Display for DataExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataExpr::Aggregate(af) => af.fmt(f),
            DataExpr::GroupBy { af, keys } => {
                write!(f, "{af},(")?;
                for k in keys {
                    f.write_str(",")?;
                    write_escaped(f, k)?;
                }
                f.write_str(",),:by")
            }
            DataExpr::All(q) => write!(f, "{q},:all"),
        }
    }
}
