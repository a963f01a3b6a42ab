//! The math vocabulary: constants and generators, unary and binary operations with Atlas's
//! NaN rules, aggregation across lines (`:sum`, `:count`, `:min`, `:max`, `:by`, `:avg`,
//! `:stddev`, `:pct`), tag renaming (`:as`), common grouping (`:cg`), and distribution
//! summaries (`:dist-avg`, `:dist-max`, `:dist-stddev`, `:percentiles`, `:median`).

use super::{Failure, Param, Word, args, take_doubles, take_query, take_str, take_strs, take_ts};
use crate::interpreter::Context;
use crate::model::{
    BinaryOp, DataExpr, DataKind, Item, MathAggr, NamedRewrite, Percentiles, RewriteDisplay,
    RewriteName, TimeMode, TimeSeriesExpr, TimeSpan, UnaryOp, binary, math_aggregate, write_list,
};

type R = Result<(), Failure>;

const TS: &[Param] = &[Param::TimeSeries];
const TS2: &[Param] = &[Param::TimeSeries, Param::TimeSeries];
const UNARY_SIG: &str = "TimeSeriesExpr -- TimeSeriesExpr";
const BINARY_SIG: &str = "a:TimeSeriesExpr b:TimeSeriesExpr -- TimeSeriesExpr";

macro_rules! unary {
    ($name:literal, $op:expr, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: TS,
            signature: UNARY_SIG,
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| unary(ctx, a, $op),
        }
    };
}

macro_rules! binary_word {
    ($name:literal, $op:expr, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: TS2,
            signature: BINARY_SIG,
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| binary_op(ctx, a, $op),
        }
    };
}

macro_rules! aggr_word {
    ($name:literal, $op:expr, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: TS,
            signature: UNARY_SIG,
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| aggregate(ctx, a, $op),
        }
    };
}

pub(crate) static WORDS: &[Word] = &[
    Word {
        name: "as",
        params: &[Param::TimeSeries, Param::Str, Param::Str],
        signature: "TimeSeriesExpr original:String replacement:String -- TimeSeriesExpr",
        summary: "Rename the tag key `original` to `replacement` in the result lines.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,nf.app,),:by,nf.app,app",
                Some("name,sps,:eq,:sum,(,nf.app,),:by,nf.app,app,:as"),
            ),
            ("name,sps,:eq,a", None),
        ],
        exec: rename,
    },
    Word {
        name: "by",
        params: &[Param::TimeSeries, Param::StrList],
        signature: "TimeSeriesExpr keys:List -- TimeSeriesExpr",
        summary: "Group an expression: an aggregate of grouped lines is computed per group of \
                  the keys (a subset of the inner grouping); grouped lines are summed per group; \
                  otherwise every aggregate inside is grouped.",
        examples: &[
            (
                "name,sps,:eq,:sum,(,a,b,),:by,:max,(,a,)",
                Some("name,sps,:eq,:sum,(,a,b,),:by,:max,(,a,),:by"),
            ),
            (
                "name,sps,:eq,:sum,(,a,b,),:by,(,a,)",
                Some("name,sps,:eq,:sum,(,a,b,),:by,:sum,(,a,),:by"),
            ),
            (
                "name,sps,:eq,:sum,:abs,(,nf.cluster,)",
                Some("name,sps,:eq,:sum,(,nf.cluster,),:by,:abs"),
            ),
            ("name,sps,:eq,:sum,(,a,),:by,:max,(,b,)", None),
            ("0,:const,:sum,(,foo,)", Some("0.0,:const,:sum")),
        ],
        exec: by,
    },
    Word {
        name: "const",
        params: &[Param::Double],
        signature: "v:Double -- TimeSeriesExpr",
        summary: "A line with the same value at every step, named by the value.",
        examples: &[
            ("42", Some("42.0,:const")),
            ("NaN", Some("NaN,:const")),
            ("1e-4", Some("1.0E-4,:const")),
            ("abc", None),
        ],
        exec: constant,
    },
    Word {
        name: "pi",
        params: &[],
        signature: " -- TimeSeriesExpr",
        summary: "A constant line with the value of π.",
        examples: &[("", Some("3.141592653589793,:const"))],
        exec: |ctx, _| push(ctx, TimeSeriesExpr::Constant(std::f64::consts::PI)),
    },
    Word {
        name: "random",
        params: &[],
        signature: " -- TimeSeriesExpr",
        summary: "A line of pseudo-random values in [0, 1), a function of each step's time.",
        examples: &[("", Some(":random"))],
        exec: |ctx, _| push(ctx, TimeSeriesExpr::Random),
    },
    Word {
        name: "srandom",
        params: &[Param::Str],
        signature: "seed:Int -- TimeSeriesExpr",
        summary: "Like `:random`, with values that also depend on an integer seed.",
        examples: &[
            ("42", Some("42,:srandom")),
            ("-7", Some("-7,:srandom")),
            ("x", None),
        ],
        exec: seeded_random,
    },
    Word {
        name: "time",
        params: &[Param::Str],
        signature: "mode:String -- TimeSeriesExpr",
        summary: "A line of each step's time as a calendar field in UTC (secondOfMinute, \
                  minuteOfHour, minuteOfDay, hourOfDay, dayOfWeek, dayOfMonth, dayOfYear, \
                  monthOfYear, ...) or in fractional epoch units (seconds, minutes, hours, days, \
                  weeks).",
        examples: &[
            ("hourOfDay", Some("hourOfDay,:time")),
            ("minutes", Some("minutes,:time")),
            ("fortnights", None),
        ],
        exec: time,
    },
    Word {
        name: "time-span",
        params: &[Param::Str, Param::Str],
        signature: "s:String e:String -- TimeSeriesExpr",
        summary: "A line that is 1 between two times (both included) and 0 elsewhere. Times \
                  take the graph syntax; `gs`/`ge` are the graph's start and end, `s`/`e` the \
                  other end of the span (the start may be relative to the end or the other \
                  way round, never to itself). Dates without a zone are in the `tz` variable's \
                  zone when one is set (`tz,UTC,:set`), else the graph's.",
        examples: &[
            ("e-30m,ge", Some("e-30m,ge,:time-span")),
            (
                "2026-01-01T00:00,s+1h",
                Some("2026-01-01T00\\u003a00,s+1h,:time-span"),
            ),
            ("s+1h,e-1h", None),
            ("yesterday-,ge", None),
        ],
        exec: time_span,
    },
    Word {
        name: "cg",
        params: &[Param::TimeSeries, Param::StrList],
        signature: "TimeSeriesExpr keys:List -- TimeSeriesExpr",
        summary: "Add common group-by keys to every aggregate inside the expression.",
        examples: &[
            (
                "foo,1,:eq,(,b,a,),:by,(,b,c,)",
                Some("foo,1,:eq,:sum,(,b,a,c,),:by"),
            ),
            (
                "name,foo,:eq,:sum,(,a,),:by,5,:mul,:sum,(,b,)",
                Some("name,foo,:eq,:sum,(,a,b,),:by,5.0,:const,:mul,:sum,(,b,),:by"),
            ),
            (
                "name,foo,:eq,:sum,(,a,)",
                Some("name,foo,:eq,:sum,(,a,),:by"),
            ),
        ],
        exec: common_group,
    },
    Word {
        name: "clamp-min",
        params: &[Param::TimeSeries, Param::Double],
        signature: "TimeSeriesExpr min:Double -- TimeSeriesExpr",
        summary: "Values below `min` become `min`; NaN stays NaN.",
        examples: &[
            (
                "name,sps,:eq,:sum,200000",
                Some("name,sps,:eq,:sum,200000.0,:clamp-min"),
            ),
            ("name,sps,:eq,:sum,a", None),
        ],
        exec: |ctx, a| clamp(ctx, a, false),
    },
    Word {
        name: "clamp-max",
        params: &[Param::TimeSeries, Param::Double],
        signature: "TimeSeriesExpr max:Double -- TimeSeriesExpr",
        summary: "Values above `max` become `max`; NaN stays NaN.",
        examples: &[(
            "name,sps,:eq,:sum,5",
            Some("name,sps,:eq,:sum,5.0,:clamp-max"),
        )],
        exec: |ctx, a| clamp(ctx, a, true),
    },
    unary!(
        "abs",
        UnaryOp::Abs,
        "Absolute value of each point.",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:abs")),
            ("-10", Some("10.0,:const"))
        ]
    ),
    unary!(
        "neg",
        UnaryOp::Neg,
        "Negate each point.",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:neg")),
            ("10", Some("-10.0,:const"))
        ]
    ),
    unary!(
        "sqrt",
        UnaryOp::Sqrt,
        "Square root of each point (NaN below 0).",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sqrt")),
            ("4", Some("2.0,:const"))
        ]
    ),
    unary!(
        "sin",
        UnaryOp::Sin,
        "Sine of each point, in radians.",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sin")),
            ("0", Some("0.0,:const"))
        ]
    ),
    unary!(
        "per-step",
        UnaryOp::PerStep,
        "Multiply a per-second rate by the step in seconds: events per step.",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:per-step")),
            ("1", Some("1.0,:const,:per-step"))
        ]
    ),
    binary_word!(
        "add",
        BinaryOp::Add,
        "a + b; NaN counts as 0 when the other side has a value.",
        &[
            (
                "name,a,:eq,name,b,:eq",
                Some("name,a,:eq,:sum,name,b,:eq,:sum,:add")
            ),
            ("1,2", Some("3.0,:const")),
            ("NaN,1", Some("1.0,:const")),
            ("a,b", None)
        ]
    ),
    binary_word!(
        "sub",
        BinaryOp::Sub,
        "a - b; NaN counts as 0 when the other side has a value.",
        &[
            ("NaN,1", Some("-1.0,:const")),
            ("name,a,:eq,1", Some("name,a,:eq,:sum,1.0,:const,:sub"))
        ]
    ),
    binary_word!(
        "mul",
        BinaryOp::Mul,
        "a × b; NaN gives NaN.",
        &[
            ("5,4", Some("20.0,:const")),
            ("5,4,:mul,2", Some("40.0,:const"))
        ]
    ),
    binary_word!(
        "div",
        BinaryOp::Div,
        "a ÷ b; x ÷ 0 is NaN but 0 ÷ 0 is 0; NaN gives NaN.",
        &[
            ("0,0", Some("0.0,:const")),
            ("2,0", Some("NaN,:const")),
            ("9,3", Some("3.0,:const"))
        ]
    ),
    binary_word!(
        "fadd",
        BinaryOp::FAdd,
        "a + b with plain floating-point rules (NaN poisons).",
        &[("NaN,1", Some("NaN,:const"))]
    ),
    binary_word!(
        "fsub",
        BinaryOp::FSub,
        "a - b with plain floating-point rules.",
        &[("1,NaN", Some("NaN,:const"))]
    ),
    binary_word!(
        "fmul",
        BinaryOp::FMul,
        "a × b with plain floating-point rules.",
        &[("2,3", Some("6.0,:const"))]
    ),
    binary_word!(
        "fdiv",
        BinaryOp::FDiv,
        "a ÷ b with plain floating-point rules (2 ÷ 0 is Infinity, 0 ÷ 0 NaN).",
        &[
            ("2,0", Some("Infinity,:const")),
            ("0,0", Some("NaN,:const"))
        ]
    ),
    binary_word!(
        "pow",
        BinaryOp::Pow,
        "a to the power b.",
        &[
            ("2,10", Some("1024.0,:const")),
            ("name,a,:eq,2", Some("name,a,:eq,:sum,2.0,:const,:pow"))
        ]
    ),
    binary_word!(
        "gt",
        BinaryOp::Gt,
        "1 where a > b, else 0 (0 if either is NaN). Two plain strings make a tag query instead.",
        &[
            ("name,a,:eq,:sum,5", Some("name,a,:eq,:sum,5.0,:const,:gt")),
            ("2,:const,1", Some("1.0,:const"))
        ]
    ),
    binary_word!(
        "ge",
        BinaryOp::Ge,
        "1 where a ≥ b, else 0 (0 if either is NaN).",
        &[("1,:const,NaN", Some("0.0,:const"))]
    ),
    binary_word!(
        "lt",
        BinaryOp::Lt,
        "1 where a < b, else 0 (0 if either is NaN).",
        &[("1,:const,2", Some("1.0,:const"))]
    ),
    binary_word!(
        "le",
        BinaryOp::Le,
        "1 where a ≤ b, else 0 (0 if either is NaN).",
        &[("2,:const,2", Some("1.0,:const"))]
    ),
    binary_word!(
        "and",
        BinaryOp::And,
        "1 where both are true (not NaN and not 0), else 0.",
        &[
            ("1,:const,0", Some("0.0,:const")),
            ("name,a,:eq,:sum,1", Some("name,a,:eq,:sum,1.0,:const,:and"))
        ]
    ),
    binary_word!(
        "or",
        BinaryOp::Or,
        "1 where either is true (not NaN and not 0), else 0.",
        &[
            ("0,:const,0", Some("0.0,:const")),
            ("0,:const,NaN,:const,:or,1", Some("1.0,:const"))
        ]
    ),
    aggr_word!(
        "sum",
        MathAggr::Sum,
        "Sum across the lines of an expression per step (NaN ignored).",
        &[
            (
                "name,a,:eq,:sum,(,b,),:by",
                Some("name,a,:eq,:sum,(,b,),:by,:sum")
            ),
            ("name,a,:eq,:max", Some("name,a,:eq,:max")),
            ("1", Some("1.0,:const,:sum"))
        ]
    ),
    aggr_word!(
        "count",
        MathAggr::Count,
        "Number of lines of an expression with a value per step.",
        &[
            (
                "name,a,:eq,:sum,(,b,),:by",
                Some("name,a,:eq,:sum,(,b,),:by,:count")
            ),
            ("name,a,:eq,:sum", Some("name,a,:eq,:sum,:count"))
        ]
    ),
    aggr_word!(
        "min",
        MathAggr::Min,
        "Minimum across the lines of an expression per step (NaN ignored).",
        &[(
            "name,a,:eq,:sum,(,b,),:by",
            Some("name,a,:eq,:sum,(,b,),:by,:min")
        )]
    ),
    aggr_word!(
        "max",
        MathAggr::Max,
        "Maximum across the lines of an expression per step (NaN ignored).",
        &[(
            "name,a,:eq,:sum,(,b,),:by",
            Some("name,a,:eq,:sum,(,b,),:by,:max")
        )]
    ),
    Word {
        name: "avg",
        params: TS,
        signature: UNARY_SIG,
        summary: "Average across the lines of an expression per step: `:sum` ÷ `:count`.",
        examples: &[
            (
                "name,a,:eq,:sum,(,b,),:by",
                Some("name,a,:eq,:sum,(,b,),:by,:avg"),
            ),
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:avg")),
        ],
        exec: |ctx, a| rewrite_expr(ctx, a, RewriteName::Avg),
    },
    Word {
        name: "stddev",
        params: TS,
        signature: UNARY_SIG,
        summary: "Population standard deviation across the lines of an expression per step.",
        examples: &[
            (
                "name,a,:eq,:sum,(,b,),:by",
                Some("name,a,:eq,:sum,(,b,),:by,:stddev"),
            ),
            ("name,a,:eq", Some("name,a,:eq,:sum,:stddev")),
        ],
        exec: |ctx, a| rewrite_expr(ctx, a, RewriteName::Stddev),
    },
    Word {
        name: "pct",
        params: TS,
        signature: UNARY_SIG,
        summary: "Each line as a percentage of the sum of all lines.",
        examples: &[
            (
                "name,sps,:eq,(,nf.cluster,),:by",
                Some("name,sps,:eq,:sum,(,nf.cluster,),:by,:pct"),
            ),
            ("app,foo,:eq,:avg", Some("app,foo,:eq,:avg,:pct")),
        ],
        exec: |ctx, a| rewrite_expr(ctx, a, RewriteName::Pct),
    },
    Word {
        name: "dist-avg",
        params: &[Param::Query],
        signature: "Query -- TimeSeriesExpr",
        summary: "Average of a timer or distribution summary: (totalTime or totalAmount) ÷ count \
                  over its `statistic` series.",
        examples: &[
            (
                "name,playback.startLatency,:eq",
                Some("name,playback.startLatency,:eq,:dist-avg"),
            ),
            ("1", None),
        ],
        exec: |ctx, a| rewrite_query(ctx, a, RewriteName::DistAvg),
    },
    Word {
        name: "dist-max",
        params: &[Param::Query],
        signature: "Query -- TimeSeriesExpr",
        summary: "Maximum of a timer or distribution summary (its `statistic=max` series).",
        examples: &[(
            "name,requestLatency,:eq",
            Some("name,requestLatency,:eq,:dist-max"),
        )],
        exec: |ctx, a| rewrite_query(ctx, a, RewriteName::DistMax),
    },
    Word {
        name: "dist-stddev",
        params: &[Param::Query],
        signature: "Query -- TimeSeriesExpr",
        summary: "Standard deviation of a timer or distribution summary, from its count, \
                  total and totalOfSquares statistics.",
        examples: &[(
            "name,requestLatency,:eq",
            Some("name,requestLatency,:eq,:dist-stddev"),
        )],
        exec: |ctx, a| rewrite_query(ctx, a, RewriteName::DistStddev),
    },
    Word {
        name: "percentiles",
        params: &[Param::DataExpr, Param::DoubleList],
        signature: "DataExpr pcts:List -- TimeSeriesExpr",
        summary: "Estimate percentiles (0 to 100) from percentile-bucket counters (tag \
                  `percentile` = `T00xx` for timers in ns, `D00xx` for distributions): one line \
                  per percentile.",
        examples: &[
            (
                "name,requestLatency,:eq,(,25,50,90,)",
                Some("name,requestLatency,:eq,(,25.0,50.0,90.0,),:percentiles"),
            ),
            (
                "name,requestLatency,:eq,(,nf.cluster,),:by,(,99,90,99,)",
                Some("name,requestLatency,:eq,(,nf.cluster,),:by,(,90.0,99.0,),:percentiles"),
            ),
            ("name,requestLatency,:eq,(,101,)", None),
            ("name,requestLatency,:eq,(,a,)", None),
            ("name,requestLatency,:eq,:all,(,50,)", None),
        ],
        exec: percentiles,
    },
    Word {
        name: "median",
        params: &[Param::DataExpr],
        signature: "DataExpr -- TimeSeriesExpr",
        summary: "Estimate the 50th percentile (`(,50,),:percentiles`).",
        examples: &[(
            "name,requestLatency,:eq",
            Some("name,requestLatency,:eq,(,50.0,),:percentiles"),
        )],
        exec: median,
    },
    Word {
        name: "cos",
        params: TS,
        signature: UNARY_SIG,
        summary: "Cosine of each point, as sin(π/2 − x).",
        examples: &[(
            "name,a,:eq",
            Some("1.5707963267948966,:const,name,a,:eq,:sum,:sub,:sin"),
        )],
        exec: |ctx, a| trig(ctx, a, Trig::Cos),
    },
    Word {
        name: "tan",
        params: TS,
        signature: UNARY_SIG,
        summary: "Tangent of each point, as sin(x) ÷ cos(x).",
        examples: &[(
            "name,a,:eq",
            Some("name,a,:eq,:sum,:sin,1.5707963267948966,:const,name,a,:eq,:sum,:sub,:sin,:div"),
        )],
        exec: |ctx, a| trig(ctx, a, Trig::Tan),
    },
    Word {
        name: "cot",
        params: TS,
        signature: UNARY_SIG,
        summary: "Cotangent of each point, as cos(x) ÷ sin(x).",
        examples: &[(
            "name,a,:eq",
            Some("1.5707963267948966,:const,name,a,:eq,:sum,:sub,:sin,name,a,:eq,:sum,:sin,:div"),
        )],
        exec: |ctx, a| trig(ctx, a, Trig::Cot),
    },
    Word {
        name: "sec",
        params: TS,
        signature: UNARY_SIG,
        summary: "Secant of each point, as 1 ÷ cos(x).",
        examples: &[(
            "name,a,:eq",
            Some("1.0,:const,1.5707963267948966,:const,name,a,:eq,:sum,:sub,:sin,:div"),
        )],
        exec: |ctx, a| trig(ctx, a, Trig::Sec),
    },
    Word {
        name: "csc",
        params: TS,
        signature: UNARY_SIG,
        summary: "Cosecant of each point, as 1 ÷ sin(x).",
        examples: &[("name,a,:eq", Some("1.0,:const,name,a,:eq,:sum,:sin,:div"))],
        exec: |ctx, a| trig(ctx, a, Trig::Csc),
    },
];

fn push(ctx: &mut Context<'_>, e: TimeSeriesExpr) -> R {
    ctx.stack.push(Item::Expr(e));
    Ok(())
}

fn rename(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, from, to] = args(a)?;
    push(
        ctx,
        TimeSeriesExpr::As {
            expr: Box::new(take_ts(e)?),
            from: take_str(from)?,
            to: take_str(to)?,
        },
    )
}

fn keys_text(keys: &[String]) -> String {
    let mut s = String::new();
    let _ = write_list(&mut s, keys);
    s
}

/// Checks that `keys` are among the grouping of the expression being regrouped.
fn check_subset(keys: &[String], inner: &[String]) -> R {
    if keys.iter().all(|k| inner.contains(k)) {
        Ok(())
    } else {
        Err(Failure::Invalid(format!(
            "{} is not a subset of {}",
            keys_text(keys),
            keys_text(inner)
        )))
    }
}

fn by(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, keys] = args(a)?;
    let expr = take_ts(e)?;
    let keys = take_strs(keys)?;
    let out = match expr {
        TimeSeriesExpr::Aggregate(op, inner) if inner.is_grouped() => {
            check_subset(&keys, &inner.grouping())?;
            TimeSeriesExpr::GroupBy {
                op,
                expr: inner,
                keys,
            }
        }
        grouped if grouped.is_grouped() => {
            check_subset(&keys, &grouped.grouping())?;
            TimeSeriesExpr::GroupBy {
                op: MathAggr::Sum,
                expr: Box::new(grouped),
                keys,
            }
        }
        mut other => {
            other.group_aggregates(&keys);
            check_groupings(&other)?;
            other
        }
    };
    push(ctx, out)
}

fn constant(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [v] = args(a)?;
    push(ctx, TimeSeriesExpr::Constant(super::take_double(v)?))
}

fn seeded_random(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [seed] = args(a)?;
    let text = take_str(seed)?;
    let seed: i32 = text
        .trim()
        .parse()
        .map_err(|_| Failure::Invalid(format!("seed must be a 32-bit integer, got '{text}'")))?;
    push(ctx, TimeSeriesExpr::SeededRandom(seed))
}

fn time(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [mode] = args(a)?;
    let text = take_str(mode)?;
    let mode = TimeMode::parse(&text).ok_or_else(|| {
        Failure::Invalid(format!(
            "unknown time mode '{text}', expected one of: {}",
            TimeMode::names().collect::<Vec<_>>().join(", ")
        ))
    })?;
    push(ctx, TimeSeriesExpr::Time(mode))
}

fn time_span(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [s, e] = args(a)?;
    // The zone in force is the `tz` variable's, when one was set, checked now as Atlas does.
    let zone = match ctx.vars.get("tz") {
        Some(Item::Str(zone)) => {
            if jiff::tz::TimeZone::get(zone).is_err() {
                return Err(Failure::Invalid(format!("Unknown time-zone ID: {zone}")));
            }
            Some(zone.clone())
        }
        _ => None,
    };
    let span = TimeSpan {
        start: take_str(s)?,
        end: take_str(e)?,
        zone,
    };
    crate::eval::check_time_span(&span).map_err(Failure::Invalid)?;
    push(ctx, TimeSeriesExpr::TimeSpan(Box::new(span)))
}

fn common_group(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, keys] = args(a)?;
    let mut expr = take_ts(e)?;
    expr.add_common_keys(&take_strs(keys)?);
    check_groupings(&expr)?;
    push(ctx, expr)
}

fn clamp(ctx: &mut Context<'_>, a: Vec<Item>, max: bool) -> R {
    let [e, v] = args(a)?;
    push(
        ctx,
        TimeSeriesExpr::Clamp {
            max,
            bound: super::take_double(v)?,
            expr: Box::new(take_ts(e)?),
        },
    )
}

fn unary(ctx: &mut Context<'_>, a: Vec<Item>, op: UnaryOp) -> R {
    let [e] = args(a)?;
    push(ctx, unary_expr(op, take_ts(e)?))
}

/// Constants fold at parse time, as in Atlas (except `:per-step`, which needs the step).
fn unary_expr(op: UnaryOp, expr: TimeSeriesExpr) -> TimeSeriesExpr {
    match expr {
        TimeSeriesExpr::Constant(v) if op != UnaryOp::PerStep => {
            TimeSeriesExpr::Constant(op.apply(v, 0))
        }
        other => TimeSeriesExpr::Unary(op, Box::new(other)),
    }
}

/// The two sides of a binary operation must group compatibly.
fn check_binary_grouping(x: &TimeSeriesExpr, y: &TimeSeriesExpr) -> R {
    let (gx, gy) = (x.grouping(), y.grouping());
    if !gx.is_empty()
        && !gy.is_empty()
        && !gx.iter().all(|k| gy.contains(k))
        && !gy.iter().all(|k| gx.contains(k))
    {
        return Err(Failure::Invalid(format!(
            "both sides of binary operation must have the same grouping or one side must be a \
             subset of the other [{} ⊈ {}]",
            keys_text(&gx),
            keys_text(&gy)
        )));
    }
    Ok(())
}

/// What `:by` and `:binary` check when they build a node, checked everywhere inside an
/// expression whose aggregates were regrouped after the fact (`:by` on an ungrouped
/// expression, `:cg`): each math grouping's keys come from what it groups, and both sides
/// of each binary operation group compatibly.
fn check_groupings(expr: &TimeSeriesExpr) -> R {
    match expr {
        TimeSeriesExpr::Binary(_, x, y) => check_binary_grouping(x, y)?,
        TimeSeriesExpr::GroupBy { expr, keys, .. } => check_subset(keys, &expr.grouping())?,
        _ => {}
    }
    expr.children().into_iter().try_for_each(check_groupings)
}

fn binary_op(ctx: &mut Context<'_>, a: Vec<Item>, op: BinaryOp) -> R {
    let [x, y] = args(a)?;
    let (x, y) = (take_ts(x)?, take_ts(y)?);
    check_binary_grouping(&x, &y)?;
    push(ctx, binary(op, x, y))
}

fn aggregate(ctx: &mut Context<'_>, a: Vec<Item>, op: MathAggr) -> R {
    let [e] = args(a)?;
    push(ctx, math_aggregate(op, take_ts(e)?))
}

fn rewrite_expr(ctx: &mut Context<'_>, a: Vec<Item>, name: RewriteName) -> R {
    let [e] = args(a)?;
    let display = RewriteDisplay::Expr {
        expr: take_ts(e)?,
        keys: None,
    };
    push(
        ctx,
        TimeSeriesExpr::Rewrite(Box::new(NamedRewrite { name, display })),
    )
}

fn rewrite_query(ctx: &mut Context<'_>, a: Vec<Item>, name: RewriteName) -> R {
    let [q] = args(a)?;
    let display = RewriteDisplay::Query {
        query: take_query(q)?,
        keys: None,
        offset_ms: 0,
    };
    push(
        ctx,
        TimeSeriesExpr::Rewrite(Box::new(NamedRewrite { name, display })),
    )
}

/// The query, extra group keys and offset of a `:percentiles` input.
fn percentile_source(item: Item) -> Result<(crate::model::Query, Vec<String>, i64), Failure> {
    match item {
        Item::Query(q) => Ok((q, Vec::new(), 0)),
        Item::Expr(TimeSeriesExpr::Data(DataExpr {
            kind, offset_ms, ..
        })) => match kind {
            DataKind::Aggregate(af) => Ok((af.query, Vec::new(), offset_ms)),
            DataKind::GroupBy { af, keys } => Ok((
                af.query,
                keys.into_iter().filter(|k| k != "percentile").collect(),
                offset_ms,
            )),
            DataKind::All(_) => Err(Failure::Invalid(
                "percentiles need an aggregate, not :all".into(),
            )),
        },
        other => Err(super::mismatch("DataExpr", &other)),
    }
}

/// Percentiles one `:percentiles` list may ask for: each is a line per group.
const MAX_PERCENTILES: usize = 100;

fn percentiles(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [d, pcts] = args(a)?;
    let (query, keys, offset_ms) = percentile_source(d)?;
    let mut pcts = take_doubles(pcts)?;
    if let Some(bad) = pcts.iter().find(|p| !(0.0..=100.0).contains(*p)) {
        return Err(Failure::Invalid(format!(
            "invalid percentile {bad}, value must be 0.0 <= p <= 100.0"
        )));
    }
    pcts.sort_by(f64::total_cmp);
    pcts.dedup();
    if pcts.len() > MAX_PERCENTILES {
        return Err(Failure::Invalid(format!(
            "{} percentiles in one list, over the limit of {MAX_PERCENTILES}",
            pcts.len()
        )));
    }
    push(
        ctx,
        TimeSeriesExpr::Percentiles(Box::new(Percentiles {
            query,
            keys,
            pcts,
            offset_ms,
        })),
    )
}

fn median(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [d] = args(a)?;
    let (query, keys, offset_ms) = percentile_source(d)?;
    push(
        ctx,
        TimeSeriesExpr::Percentiles(Box::new(Percentiles {
            query,
            keys,
            pcts: vec![50.0],
            offset_ms,
        })),
    )
}

#[derive(Clone, Copy)]
enum Trig {
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
}

/// The trigonometric macros, built exactly as Atlas expands them (so NaN behaves the same:
/// cos(NaN) is sin(π/2) = 1, through `:sub`'s NaN rule).
fn trig(ctx: &mut Context<'_>, a: Vec<Item>, which: Trig) -> R {
    let [e] = args(a)?;
    let x = take_ts(e)?;
    let sin = |x: TimeSeriesExpr| unary_expr(UnaryOp::Sin, x);
    let cos = |x: TimeSeriesExpr| {
        sin(binary(
            BinaryOp::Sub,
            TimeSeriesExpr::Constant(std::f64::consts::FRAC_PI_2),
            x,
        ))
    };
    let one = TimeSeriesExpr::Constant(1.0);
    let out = match which {
        Trig::Cos => cos(x),
        Trig::Tan => binary(BinaryOp::Div, sin(x.clone()), cos(x)),
        Trig::Cot => binary(BinaryOp::Div, cos(x.clone()), sin(x)),
        Trig::Sec => binary(BinaryOp::Div, one, cos(x)),
        Trig::Csc => binary(BinaryOp::Div, one, sin(x)),
    };
    push(ctx, out)
}
