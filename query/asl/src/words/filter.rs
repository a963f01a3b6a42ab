//! The filter vocabulary: window statistics (`:stat`, and the `:stat-*` placeholders used in
//! `:filter` conditions), `:filter`, and keeping the top or bottom k lines by a statistic,
//! optionally folding the rest into one `--others--` line.

use super::{Failure, Param, Word, args, take_int, take_str, take_ts};
use crate::interpreter::Context;
use crate::model::{Item, OthersAggr, StatKind, TimeSeriesExpr, TopK};

type R = Result<(), Failure>;

const TOPK: &[Param] = &[Param::TimeSeries, Param::Str, Param::Int];
const TOPK_SIG: &str = "TimeSeriesExpr stat:String k:Int -- TimeSeriesExpr";

macro_rules! placeholder {
    ($name:literal, $stat:expr) => {
        Word {
            name: $name,
            params: &[],
            signature: " -- TimeSeriesExpr",
            summary: concat!(
                "In a `:filter` condition, the filtered line's window ",
                $name,
                " (see `:stat`)."
            ),
            examples: &[(
                "name,sps,:eq,:sum,(,nf.app,),:by",
                Some(concat!("name,sps,:eq,:sum,(,nf.app,),:by,:", $name)),
            )],
            exec: |ctx, _| {
                ctx.stack
                    .push(Item::Expr(TimeSeriesExpr::StatPlaceholder($stat)));
                Ok(())
            },
        }
    };
}

/// Atlas's legacy `:stat-*-mf` words: `min,:stat` and the like, written as one word.
macro_rules! legacy_stat {
    ($name:literal, $stat:literal, $kind:expr) => {
        Word {
            name: $name,
            params: &[Param::TimeSeries],
            signature: "TimeSeriesExpr -- TimeSeriesExpr",
            summary: concat!(
                "Legacy form of `",
                $stat,
                ",:stat`: the line's window ",
                $stat,
                " as a constant line."
            ),
            examples: &[(
                "name,sps,:eq,:sum",
                Some(concat!("name,sps,:eq,:sum,", $stat, ",:stat")),
            )],
            exec: |ctx, a| {
                let [e] = args(a)?;
                ctx.stack.push(Item::Expr(TimeSeriesExpr::Stat {
                    stat: $kind,
                    expr: Box::new(take_ts(e)?),
                }));
                Ok(())
            },
        }
    };
}

macro_rules! topk_word {
    ($name:literal, $bottom:expr, $others:expr, $summary:literal, $example:expr) => {
        Word {
            name: $name,
            params: TOPK,
            signature: TOPK_SIG,
            summary: $summary,
            examples: &[
                $example,
                ("name,sps,:eq,:sum,max,0", None),
                ("name,sps,:eq,:sum,foo,2", None),
            ],
            exec: |ctx, a| topk(ctx, a, $bottom, $others),
        }
    };
}

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "stat",
        params: &[Param::TimeSeries, Param::Str],
        signature: "TimeSeriesExpr stat:String -- TimeSeriesExpr",
        summary: "Replace each line by one statistic of it over the window (avg, max, min, \
                  last, total, count; NaN ignored), drawn as a constant line.",
        examples: &[
            ("name,sps,:eq,:sum,max", Some("name,sps,:eq,:sum,max,:stat")),
            ("name,sps,:eq,:sum,median", None),
        ],
        exec: stat,
    },
    placeholder!("stat-avg", StatKind::Avg),
    placeholder!("stat-max", StatKind::Max),
    placeholder!("stat-min", StatKind::Min),
    placeholder!("stat-last", StatKind::Last),
    placeholder!("stat-count", StatKind::Count),
    placeholder!("stat-total", StatKind::Total),
    legacy_stat!("stat-min-mf", "min", StatKind::Min),
    legacy_stat!("stat-max-mf", "max", StatKind::Max),
    legacy_stat!("stat-avg-mf", "avg", StatKind::Avg),
    Word {
        name: "filter",
        params: &[Param::TimeSeries, Param::TimeSeries],
        signature: "TimeSeriesExpr condition:TimeSeriesExpr -- TimeSeriesExpr",
        summary: "Keep the lines whose condition is true (not NaN, not 0) at least once in the \
                  window. `:stat-*` words in the condition stand for the filtered line's own \
                  statistics; a grouped condition is matched to lines by group.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,nf.app,),:by,:stat-max,5,:gt",
                Some("name,sps,:eq,:sum,(,nf.app,),:by,:stat-max,5.0,:const,:gt,:filter"),
            ),
            (
                "name,sps,:eq,:sum,(,app,),:by,:stat-max,:stat-avg,5,:add,:div,:stat-min,:gt",
                Some(
                    "name,sps,:eq,:sum,(,app,),:by,:stat-max,:stat-avg,5.0,:const,:add,:div,\
                     :stat-min,:gt,:filter",
                ),
            ),
            ("name,sps,:eq,:sum,name,sps,:eq,:sum,(,a,),:by", None),
        ],
        exec: filter,
    },
    topk_word!(
        "topk",
        false,
        None,
        "Keep the k lines with the largest statistic (max, min, avg, last, total, count).",
        (
            "name,sps,:eq,:sum,(,nf.app,),:by,max,5",
            Some("name,sps,:eq,:sum,(,nf.app,),:by,max,5,:topk")
        )
    ),
    topk_word!(
        "bottomk",
        true,
        None,
        "Keep the k lines with the smallest statistic.",
        (
            "name,sps,:eq,:sum,(,nf.app,),:by,avg,2",
            Some("name,sps,:eq,:sum,(,nf.app,),:by,avg,2,:bottomk")
        )
    ),
    topk_word!(
        "topk-others-min",
        false,
        Some(OthersAggr::Min),
        "`:topk`, plus one `--others--` line: the minimum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:topk-others-min")
        )
    ),
    topk_word!(
        "topk-others-max",
        false,
        Some(OthersAggr::Max),
        "`:topk`, plus one `--others--` line: the maximum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:topk-others-max")
        )
    ),
    topk_word!(
        "topk-others-sum",
        false,
        Some(OthersAggr::Sum),
        "`:topk`, plus one `--others--` line: the sum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:topk-others-sum")
        )
    ),
    topk_word!(
        "topk-others-avg",
        false,
        Some(OthersAggr::Avg),
        "`:topk`, plus one `--others--` line: the average of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:topk-others-avg")
        )
    ),
    topk_word!(
        "bottomk-others-min",
        true,
        Some(OthersAggr::Min),
        "`:bottomk`, plus one `--others--` line: the minimum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:bottomk-others-min")
        )
    ),
    topk_word!(
        "bottomk-others-max",
        true,
        Some(OthersAggr::Max),
        "`:bottomk`, plus one `--others--` line: the maximum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:bottomk-others-max")
        )
    ),
    topk_word!(
        "bottomk-others-sum",
        true,
        Some(OthersAggr::Sum),
        "`:bottomk`, plus one `--others--` line: the sum of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:bottomk-others-sum")
        )
    ),
    topk_word!(
        "bottomk-others-avg",
        true,
        Some(OthersAggr::Avg),
        "`:bottomk`, plus one `--others--` line: the average of the lines not kept.",
        (
            "name,sps,:eq,:sum,(,a,),:by,max,5",
            Some("name,sps,:eq,:sum,(,a,),:by,max,5,:bottomk-others-avg")
        )
    ),
];

fn parse_stat(text: &str) -> Result<StatKind, Failure> {
    StatKind::parse(text).ok_or_else(|| {
        Failure::Invalid(format!(
            "unknown statistic: {text} (expected avg, max, min, last, total or count)"
        ))
    })
}

fn stat(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, s] = args(a)?;
    let stat = parse_stat(&take_str(s)?)?;
    ctx.stack.push(Item::Expr(TimeSeriesExpr::Stat {
        stat,
        expr: Box::new(take_ts(e)?),
    }));
    Ok(())
}

fn filter(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, c] = args(a)?;
    let (expr, cond) = (take_ts(e)?, take_ts(c)?);
    if !expr.is_grouped() && cond.is_grouped() {
        return Err(Failure::Invalid(
            "filter grouping must match expr grouping".into(),
        ));
    }
    ctx.stack.push(Item::Expr(TimeSeriesExpr::Filter {
        expr: Box::new(expr),
        cond: Box::new(cond),
    }));
    Ok(())
}

fn topk(ctx: &mut Context<'_>, a: Vec<Item>, bottom: bool, others: Option<OthersAggr>) -> R {
    let [e, s, k] = args(a)?;
    let stat = parse_stat(&take_str(s)?)?;
    let k = take_int(k)?;
    if k == 0 {
        return Err(Failure::Invalid("k must be positive (0 <= 0)".into()));
    }
    ctx.stack
        .push(Item::Expr(TimeSeriesExpr::TopK(Box::new(TopK {
            expr: take_ts(e)?,
            stat,
            k,
            bottom,
            others,
        }))));
    Ok(())
}
