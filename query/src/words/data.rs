//! The data vocabulary: aggregates of the series a query matches (`:sum`, `:count`, `:min`,
//! `:max`, `:avg`), grouping (`:by`) and raw series (`:all`).

use super::{Failure, Param, Word, args, take_query, take_strs};
use crate::interpreter::Context;
use crate::model::{AggrOp, AggregateFunction, DataExpr, Item, TimeSeriesExpr};

type R = Result<(), Failure>;

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "sum",
        params: &[Param::Query],
        signature: "Query -- AggregateFunction",
        summary: "Sum of the matching series per step; NaN is ignored (NaN only if all are NaN).",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:sum")), ("a", None)],
        exec: |ctx, a| aggregate(ctx, a, AggrOp::Sum),
    },
    Word {
        name: "count",
        params: &[Param::Query],
        signature: "Query -- AggregateFunction",
        summary: "Number of matching series with a value per step.",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:count")), ("a", None)],
        exec: |ctx, a| aggregate(ctx, a, AggrOp::Count),
    },
    Word {
        name: "min",
        params: &[Param::Query],
        signature: "Query -- AggregateFunction",
        summary: "Minimum of the matching series per step; NaN is ignored.",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:min")), ("a", None)],
        exec: |ctx, a| aggregate(ctx, a, AggrOp::Min),
    },
    Word {
        name: "max",
        params: &[Param::Query],
        signature: "Query -- AggregateFunction",
        summary: "Maximum of the matching series per step; NaN is ignored.",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:max")), ("a", None)],
        exec: |ctx, a| aggregate(ctx, a, AggrOp::Max),
    },
    Word {
        name: "avg",
        params: &[Param::Query],
        signature: "Query -- AggregateFunction",
        summary: "Average of the matching series per step: `:sum` divided by `:count`.",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:avg")), ("a", None)],
        exec: |ctx, a| aggregate(ctx, a, AggrOp::Avg),
    },
    Word {
        name: "by",
        params: &[Param::AggrFn, Param::StrList],
        signature: "af:AggregateFunction keys:List -- DataExpr",
        summary: "Group by the keys' values and aggregate each group; series missing a key are \
                  dropped, groups sort by their `(k=v ...)` label.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,nf.app,)",
                Some("name,sps,:eq,:sum,(,nf.app,),:by"),
            ),
            (
                "name,sps,:eq,:max,(,a,b,)",
                Some("name,sps,:eq,:max,(,a,b,),:by"),
            ),
            ("name,sps,:eq,(,nf.app,)", None),
            ("name,sps,:eq,:sum,nf.app", None),
        ],
        exec: by,
    },
    Word {
        name: "all",
        params: &[Param::Query],
        signature: "Query -- DataExpr",
        summary: "Every matching series as it is, with all its tags (can be a lot of lines).",
        examples: &[("name,sps,:eq", Some("name,sps,:eq,:all")), ("a", None)],
        exec: all,
    },
];

fn push(ctx: &mut Context<'_>, e: DataExpr) -> R {
    ctx.stack.push(Item::Expr(TimeSeriesExpr::Data(e)));
    Ok(())
}

fn aggregate(ctx: &mut Context<'_>, a: Vec<Item>, op: AggrOp) -> R {
    let [q] = args(a)?;
    let query = take_query(q)?;
    push(ctx, DataExpr::Aggregate(AggregateFunction { op, query }))
}

fn by(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [af, keys] = args(a)?;
    let Item::Expr(TimeSeriesExpr::Data(DataExpr::Aggregate(af))) = af else {
        return Err(super::mismatch("AggregateFunction", &af));
    };
    let keys = take_strs(keys)?;
    push(ctx, DataExpr::GroupBy { af, keys })
}

fn all(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [q] = args(a)?;
    push(ctx, DataExpr::All(take_query(q)?))
}
