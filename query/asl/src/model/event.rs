//! Event expressions (Atlas's event vocabulary): `:table` and `:sample` over the events a
//! query matches. They run over live event streams only, never over stored series.

use std::fmt;

use super::data::write_list;
use super::query::Query;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EventExpr {
    /// One row per matching event: the columns' values in order (null when missing).
    Table { query: Query, columns: Vec<String> },
    /// Per step and group of `by`: the count of matching events, and the projection of
    /// the first event of the step.
    Sample {
        query: Query,
        by: Vec<String>,
        projection: Vec<String>,
    },
}

impl EventExpr {
    pub(crate) fn weight(&self) -> usize {
        match self {
            EventExpr::Table { query, columns } => 1 + query.weight() + columns.len(),
            EventExpr::Sample {
                query,
                by,
                projection,
            } => 1 + query.weight() + by.len() + projection.len(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            EventExpr::Table { .. } => "EventExpr.Table",
            EventExpr::Sample { .. } => "EventExpr.Sample",
        }
    }
}

impl fmt::Display for EventExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventExpr::Table { query, columns } => {
                write!(f, "{query},")?;
                write_list(f, columns)?;
                f.write_str(",:table")
            }
            EventExpr::Sample {
                query,
                by,
                projection,
            } => {
                write!(f, "{query},")?;
                write_list(f, by)?;
                f.write_str(",")?;
                write_list(f, projection)?;
                f.write_str(",:sample")
            }
        }
    }
}
