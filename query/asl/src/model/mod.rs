//! The typed values of the Stack Language: stack items and the expression trees words build.
//! Every value prints back as canonical Stack Language that parses to an equal value.

mod data;
mod event;
mod expr;
mod query;
mod style;

use std::fmt;

pub(crate) use data::{AggrOp, AggregateFunction, DataExpr, DataKind, write_list};
pub(crate) use event::EventExpr;
pub(crate) use expr::{
    BinaryOp, Display as RewriteDisplay, MAX_WINDOW, MathAggr, NamedRewrite, OthersAggr,
    Percentiles, RewriteName, StatKind, StatefulOp, TimeMode, TimeSeriesExpr, TimeSpan, TopK,
    UnaryOp, add_nan, binary, math_aggregate, truthy,
};
pub(crate) use query::{Query, RegexQuery};
pub(crate) use style::StyleExpr;

use crate::parser::write_escaped;

/// One value on the interpreter's stack.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Item {
    /// Any token that is not a word; numbers stay strings until a word reads them.
    Str(String),
    /// A `:word` token inside a list, kept unexecuted so the list can be run later.
    Word(String),
    List(Vec<Item>),
    Query(Query),
    Expr(TimeSeriesExpr),
    /// An expression with presentation settings.
    Style(StyleExpr),
    /// `:table` or `:sample`: runs over live events only.
    Event(EventExpr),
}

impl Item {
    /// The type name used in signatures and "no matches" errors.
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Item::Str(_) => "String",
            Item::Word(_) => "Word",
            Item::List(_) => "List",
            Item::Query(_) => "Query",
            Item::Expr(e) => e.type_name(),
            Item::Style(_) => "StyleExpr",
            Item::Event(e) => e.type_name(),
        }
    }

    /// Node count: what copying the item costs.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Item::Str(_) | Item::Word(_) => 1,
            Item::List(items) => 1 + items.iter().map(Item::weight).sum::<usize>(),
            Item::Query(q) => q.weight(),
            Item::Expr(e) => e.weight(),
            Item::Style(s) => s.expr.weight() + s.settings.len(),
            Item::Event(e) => e.weight(),
        }
    }

    /// List nesting depth (0 for anything that is not a list).
    pub(crate) fn list_depth(&self) -> usize {
        match self {
            Item::List(items) => 1 + items.iter().map(Item::list_depth).max().unwrap_or(0),
            _ => 0,
        }
    }
}

impl fmt::Display for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Str(s) => write_escaped(f, s),
            Item::Word(w) => write!(f, ":{w}"),
            Item::List(items) => {
                f.write_str("(")?;
                for item in items {
                    write!(f, ",{item}")?;
                }
                f.write_str(",)")
            }
            Item::Query(q) => q.fmt(f),
            Item::Expr(e) => e.fmt(f),
            Item::Style(s) => s.fmt(f),
            Item::Event(e) => e.fmt(f),
        }
    }
}

/// Prints a stack (bottom first) as a program that rebuilds it.
pub(crate) fn print_stack(items: &[Item]) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&item.to_string());
    }
    out
}
