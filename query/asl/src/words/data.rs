//! The data vocabulary: aggregates of the series a query matches (`:sum`, `:count`, `:min`,
//! `:max`, `:avg`), grouping (`:by`), raw series (`:all`), time shift (`:offset`) and the
//! consolidation of stored steps into coarser ones (`:cf-*`).

use argus_tsdb::Consolidation;

use super::{Failure, Param, Word, args, take_duration, take_query, take_strs, take_ts};
use crate::interpreter::Context;
use crate::model::{AggrOp, DataExpr, DataKind, Item, TimeSeriesExpr};

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
        summary: "Group by the keys' values and aggregate each group (a query is summed); series \
                  missing a key are dropped, groups sort by their `(k=v ...)` label.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,nf.app,)",
                Some("name,sps,:eq,:sum,(,nf.app,),:by"),
            ),
            (
                "name,sps,:eq,:max,(,a,b,)",
                Some("name,sps,:eq,:max,(,a,b,),:by"),
            ),
            (
                "name,sps,:eq,(,nf.app,)",
                Some("name,sps,:eq,:sum,(,nf.app,),:by"),
            ),
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
    Word {
        name: "offset",
        params: &[Param::TimeSeries, Param::Duration],
        signature: "TimeSeriesExpr d:Duration -- TimeSeriesExpr",
        summary: "Read the data `d` earlier and shift it forward, to compare with the past \
                  (e.g. week over week); lines get ` (offset=1w)` in their legend.",
        examples: &[
            ("name,sps,:eq,:sum,1w", Some("name,sps,:eq,:sum,1w,:offset")),
            ("name,sps,:eq,PT1H", Some("name,sps,:eq,:sum,1h,:offset")),
            (
                "name,sps,:eq,:sum,(,nf.app,),:by,5m",
                Some("name,sps,:eq,:sum,(,nf.app,),:by,5m,:offset"),
            ),
            (
                "name,a,:eq,:sum,name,b,:eq,:max,:add,1d",
                Some("name,a,:eq,:sum,1d,:offset,name,b,:eq,:max,1d,:offset,:add"),
            ),
            ("name,sps,:eq,:sum,1x", None),
        ],
        exec: offset,
    },
    Word {
        name: "cf-avg",
        params: &[Param::TimeSeries],
        signature: "TimeSeriesExpr -- TimeSeriesExpr",
        summary: "Consolidate stored steps into a coarser step by their average (the default \
                  for `:sum` and `:count`).",
        examples: &[
            ("name,sps,:eq,:max", Some("name,sps,:eq,:max,:cf-avg")),
            ("a", None),
        ],
        exec: |ctx, a| consolidate(ctx, a, Consolidation::Avg),
    },
    Word {
        name: "cf-sum",
        params: &[Param::TimeSeries],
        signature: "TimeSeriesExpr -- TimeSeriesExpr",
        summary: "Consolidate stored steps into a coarser step by their sum.",
        examples: &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:cf-sum")),
            ("a", None),
        ],
        exec: |ctx, a| consolidate(ctx, a, Consolidation::Sum),
    },
    Word {
        name: "cf-min",
        params: &[Param::TimeSeries],
        signature: "TimeSeriesExpr -- TimeSeriesExpr",
        summary: "Consolidate stored steps into a coarser step by their minimum.",
        examples: &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:cf-min")),
            ("a", None),
        ],
        exec: |ctx, a| consolidate(ctx, a, Consolidation::Min),
    },
    Word {
        name: "cf-max",
        params: &[Param::TimeSeries],
        signature: "TimeSeriesExpr -- TimeSeriesExpr",
        summary: "Consolidate stored steps into a coarser step by their maximum.",
        examples: &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:cf-max")),
            (
                "name,sps,:eq,:sum,(,a,),:by",
                Some("name,sps,:eq,:sum,(,a,),:by,:cf-max"),
            ),
            ("a", None),
        ],
        exec: |ctx, a| consolidate(ctx, a, Consolidation::Max),
    },
];

fn push(ctx: &mut Context<'_>, e: DataExpr) -> R {
    ctx.stack.push(Item::Expr(TimeSeriesExpr::Data(e)));
    Ok(())
}

fn aggregate(ctx: &mut Context<'_>, a: Vec<Item>, op: AggrOp) -> R {
    let [q] = args(a)?;
    push(ctx, DataExpr::aggregate(op, take_query(q)?))
}

fn by(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [af, keys] = args(a)?;
    let keys = take_strs(keys)?;
    let data = match af {
        Item::Query(q) => DataExpr::aggregate(AggrOp::Sum, q),
        Item::Expr(TimeSeriesExpr::Data(d)) => d,
        other => return Err(super::mismatch("AggregateFunction", &other)),
    };
    let DataKind::Aggregate(af) = data.kind else {
        return Err(Failure::Invalid("internal: expected an aggregate".into()));
    };
    push(
        ctx,
        DataExpr {
            kind: DataKind::GroupBy { af, keys },
            ..data
        },
    )
}

fn all(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [q] = args(a)?;
    push(ctx, DataExpr::new(DataKind::All(take_query(q)?)))
}

fn offset(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, d] = args(a)?;
    let mut expr = take_ts(e)?;
    let ms = take_duration(d)?;
    if ms < 0 {
        return Err(Failure::Invalid("an offset cannot be negative".into()));
    }
    expr.set_offset(ms);
    ctx.stack.push(Item::Expr(expr));
    Ok(())
}

fn consolidate(ctx: &mut Context<'_>, a: Vec<Item>, cf: Consolidation) -> R {
    let [e] = args(a)?;
    let mut expr = take_ts(e)?;
    expr.set_consolidation(cf);
    ctx.stack.push(Item::Expr(expr));
    Ok(())
}
