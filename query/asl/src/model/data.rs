//! Data expressions: what to fetch from the store and how to combine it (`:sum`, `:count`,
//! `:min`, `:max`, `:avg`, `:by`, `:all`), with an optional consolidation override (`:cf-*`)
//! and time shift (`:offset`).

use std::fmt;

use argus_tsdb::Consolidation;

use super::query::Query;
use crate::parser::write_escaped;
use crate::time::format_duration;

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

/// What a data expression reads and combines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum DataKind {
    Aggregate(AggregateFunction),
    /// One aggregate per distinct combination of the keys' values; series lacking a key drop.
    GroupBy {
        af: AggregateFunction,
        keys: Vec<String>,
    },
    /// Every matching series as it is.
    All(Query),
}

/// Expressions that read the store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DataExpr {
    pub kind: DataKind,
    /// Consolidation chosen with `:cf-*`; `None` is the aggregate's default.
    pub cf: Option<Consolidation>,
    /// How far back the data is read (`:offset`); lines are shifted forward to the window.
    pub offset_ms: i64,
}

impl DataExpr {
    pub(crate) fn new(kind: DataKind) -> Self {
        DataExpr {
            kind,
            cf: None,
            offset_ms: 0,
        }
    }

    pub(crate) fn aggregate(op: AggrOp, query: Query) -> Self {
        Self::new(DataKind::Aggregate(AggregateFunction { op, query }))
    }

    pub(crate) fn query(&self) -> &Query {
        match &self.kind {
            DataKind::Aggregate(af) | DataKind::GroupBy { af, .. } => &af.query,
            DataKind::All(q) => q,
        }
    }

    pub(crate) fn query_mut(&mut self) -> &mut Query {
        match &mut self.kind {
            DataKind::Aggregate(af) | DataKind::GroupBy { af, .. } => &mut af.query,
            DataKind::All(q) => q,
        }
    }

    /// Consolidation the store applies per series (Atlas: `:all` sums).
    pub(crate) fn consolidation(&self) -> Consolidation {
        self.cf.unwrap_or(match &self.kind {
            DataKind::Aggregate(af) | DataKind::GroupBy { af, .. } => af.op.consolidation(),
            DataKind::All(_) => Consolidation::Sum,
        })
    }

    /// Keys the result is grouped by (empty when not grouped).
    pub(crate) fn grouping(&self) -> &[String] {
        match &self.kind {
            DataKind::GroupBy { keys, .. } => keys,
            _ => &[],
        }
    }

    pub(crate) fn weight(&self) -> usize {
        match &self.kind {
            DataKind::GroupBy { keys, .. } => 1 + keys.len() + self.query().weight(),
            _ => 1 + self.query().weight(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match &self.kind {
            DataKind::Aggregate(_) => "AggregateFunction",
            DataKind::GroupBy { .. } => "GroupBy",
            DataKind::All(_) => "All",
        }
    }

    /// Writes the expression without its offset (Atlas's `exprString` for debug output).
    pub(crate) fn fmt_without_offset(&self, f: &mut impl fmt::Write) -> fmt::Result {
        match &self.kind {
            DataKind::Aggregate(af) => write!(f, "{af}")?,
            DataKind::GroupBy { af, keys } => {
                write!(f, "{af},")?;
                write_list(f, keys)?;
                f.write_str(",:by")?;
            }
            DataKind::All(q) => write!(f, "{q},:all")?,
        }
        if let Some(cf) = self.cf {
            write!(f, ",:cf-{}", cf.name())?;
        }
        Ok(())
    }
}

/// Writes `(,a,b,)`.
pub(crate) fn write_list(f: &mut impl fmt::Write, items: &[String]) -> fmt::Result {
    f.write_str("(")?;
    for k in items {
        f.write_str(",")?;
        write_escaped(f, k)?;
    }
    f.write_str(",)")
}

impl fmt::Display for AggregateFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},:{}", self.query, self.op.word())
    }
}

impl fmt::Display for DataExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_without_offset(f)?;
        if self.offset_ms != 0 {
            write!(f, ",{},:offset", format_duration(self.offset_ms))?;
        }
        Ok(())
    }
}
