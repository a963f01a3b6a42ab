//! The stateful vocabulary: operations whose value at a step depends on earlier steps
//! (`:delay`, `:rolling-*`, `:trend`, `:integral`, `:derivative`, `:cumulative-max`, and
//! double exponential smoothing `:des` / `:sdes` with their presets). State starts empty at
//! the first step of the graph window.

use super::{Failure, Param, Word, args, take_double, take_duration, take_int, take_ts};
use crate::interpreter::Context;
use crate::model::{BinaryOp, Item, MAX_WINDOW, StatefulOp, TimeSeriesExpr, binary};

type R = Result<(), Failure>;

const TS_N: &[Param] = &[Param::TimeSeries, Param::Int];
const TS_N_SIG: &str = "TimeSeriesExpr n:Int -- TimeSeriesExpr";
const DES: &[Param] = &[Param::TimeSeries, Param::Int, Param::Double, Param::Double];
const DES_SIG: &str = "TimeSeriesExpr training:Int alpha:Double beta:Double -- TimeSeriesExpr";

macro_rules! window_word {
    ($name:literal, $make:expr, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: TS_N,
            signature: TS_N_SIG,
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| window(ctx, a, $make),
        }
    };
}

macro_rules! plain_word {
    ($name:literal, $op:expr, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: &[Param::TimeSeries],
            signature: "TimeSeriesExpr -- TimeSeriesExpr",
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| {
                let [e] = args(a)?;
                push(ctx, $op, take_ts(e)?)
            },
        }
    };
}

macro_rules! preset_word {
    ($name:literal, $sliding:expr, $training:expr, $alpha:expr, $beta:expr, $example:expr) => {
        Word {
            name: $name,
            params: &[Param::TimeSeries],
            signature: "TimeSeriesExpr -- TimeSeriesExpr",
            summary: concat!(
                "DES preset (sliding: ",
                stringify!($sliding),
                "): training ",
                stringify!($training),
                ", alpha ",
                stringify!($alpha),
                ", beta ",
                stringify!($beta),
                "."
            ),
            examples: &[$example],
            exec: |ctx, a| {
                let [e] = args(a)?;
                let op = des_op($sliding, $training, $alpha, $beta, Some($name))?;
                push(ctx, op, take_ts(e)?)
            },
        }
    };
}

pub(crate) static WORDS: &[Word] = &[
    window_word!(
        "delay",
        StatefulOp::Delay,
        "The value from n steps earlier (NaN for the first n steps of the window).",
        &[
            ("name,sps,:eq,:sum,5", Some("name,sps,:eq,:sum,5,:delay")),
            ("name,sps,:eq,:sum,a", None)
        ]
    ),
    window_word!(
        "rolling-count",
        StatefulOp::RollingCount,
        "Number of true values (not NaN, not 0) among the last n steps.",
        &[
            (
                "name,sps,:eq,:sum,5",
                Some("name,sps,:eq,:sum,5,:rolling-count")
            ),
            (
                "name,sps,:eq,:sum,3600,60,:div",
                Some("name,sps,:eq,:sum,60,:rolling-count")
            )
        ]
    ),
    window_word!(
        "rolling-min",
        StatefulOp::RollingMin,
        "Minimum of the last n steps, NaN ignored (NaN when all are NaN).",
        &[(
            "name,sps,:eq,:sum,5",
            Some("name,sps,:eq,:sum,5,:rolling-min")
        )]
    ),
    window_word!(
        "rolling-max",
        StatefulOp::RollingMax,
        "Maximum of the last n steps, NaN ignored (NaN when all are NaN).",
        &[(
            "name,sps,:eq,:sum,5",
            Some("name,sps,:eq,:sum,5,:rolling-max")
        )]
    ),
    window_word!(
        "rolling-sum",
        StatefulOp::RollingSum,
        "Sum of the last n steps, NaN ignored (NaN when all are NaN).",
        &[(
            "name,sps,:eq,:sum,5",
            Some("name,sps,:eq,:sum,5,:rolling-sum")
        )]
    ),
    Word {
        name: "rolling-mean",
        params: &[Param::TimeSeries, Param::Int, Param::Int],
        signature: "TimeSeriesExpr n:Int minNumValues:Int -- TimeSeriesExpr",
        summary: "Mean of the values among the last n steps when at least minNumValues of them \
                  are not NaN, else NaN (1 ≤ minNumValues ≤ n).",
        examples: &[
            (
                "name,sps,:eq,:sum,5,3",
                Some("name,sps,:eq,:sum,5,3,:rolling-mean"),
            ),
            ("name,sps,:eq,:sum,5,6", None),
            ("name,sps,:eq,:sum,5,0", None),
        ],
        exec: rolling_mean,
    },
    Word {
        name: "trend",
        params: &[Param::TimeSeries, Param::Duration],
        signature: "TimeSeriesExpr window:Duration -- TimeSeriesExpr",
        summary: "Moving average over a window: the sum of the non-NaN values of the last \
                  window/step steps divided by that number of steps (NaN until the window is \
                  full).",
        examples: &[
            (
                "name,sps,:eq,:sum,5m",
                Some("name,sps,:eq,:sum,PT5M,:trend"),
            ),
            (":random,20m", Some(":random,PT20M,:trend")),
            ("name,sps,:eq,:sum,5", None),
        ],
        exec: trend,
    },
    plain_word!(
        "integral",
        StatefulOp::Integral,
        "Running sum; NaN before the first value, later NaNs add nothing.",
        &[
            ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:integral")),
            ("1", Some("1.0,:const,:integral"))
        ]
    ),
    plain_word!(
        "derivative",
        StatefulOp::Derivative,
        "Change from the previous step; NaN on the first step and next to NaNs.",
        &[("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:derivative"))]
    ),
    plain_word!(
        "cumulative-max",
        StatefulOp::CumulativeMax,
        "Largest value seen so far in the window (NaN ignored).",
        &[(
            "name,sps,:eq,:sum",
            Some("name,sps,:eq,:sum,:cumulative-max")
        )]
    ),
    Word {
        name: "des",
        params: DES,
        signature: DES_SIG,
        summary: "Double exponential smoothing (Holt): each step shows the level predicted \
                  before seeing the step's value; NaN while training.",
        examples: &[
            (
                "name,sps,:eq,:sum,10,0.1,0.5",
                Some("name,sps,:eq,:sum,10,0.1,0.5,:des"),
            ),
            ("name,sps,:eq,:sum,10,a,0.5", None),
        ],
        exec: |ctx, a| des(ctx, a, false),
    },
    Word {
        name: "sdes",
        params: DES,
        signature: DES_SIG,
        summary: "Sliding DES: two smoothers alternate every training period, aligned to time, \
                  so the output does not depend on where the window starts.",
        examples: &[(
            "name,sps,:eq,:sum,10,0.1,0.5",
            Some("name,sps,:eq,:sum,10,0.1,0.5,:sdes"),
        )],
        exec: |ctx, a| des(ctx, a, true),
    },
    preset_word!(
        "des-simple",
        false,
        10,
        0.1,
        0.5,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:des-simple"))
    ),
    preset_word!(
        "des-fast",
        false,
        10,
        0.1,
        0.02,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:des-fast"))
    ),
    preset_word!(
        "des-slower",
        false,
        10,
        0.05,
        0.03,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:des-slower"))
    ),
    preset_word!(
        "des-slow",
        false,
        10,
        0.03,
        0.04,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:des-slow"))
    ),
    preset_word!(
        "sdes-simple",
        true,
        10,
        0.1,
        0.5,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sdes-simple"))
    ),
    preset_word!(
        "sdes-fast",
        true,
        10,
        0.1,
        0.02,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sdes-fast"))
    ),
    preset_word!(
        "sdes-slower",
        true,
        10,
        0.05,
        0.03,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sdes-slower"))
    ),
    preset_word!(
        "sdes-slow",
        true,
        10,
        0.03,
        0.04,
        ("name,sps,:eq,:sum", Some("name,sps,:eq,:sum,:sdes-slow"))
    ),
    Word {
        name: "des-epic-signal",
        params: &[
            Param::TimeSeries,
            Param::Int,
            Param::Double,
            Param::Double,
            Param::Double,
            Param::Double,
            Param::Double,
        ],
        signature: "line:TimeSeriesExpr training:Int alpha:Double beta:Double maxPercent:Double \
                    minPercent:Double noise:Double -- TimeSeriesExpr",
        summary: "Alert signal from DES (Atlas's legacy Epic macro): 1 where the line leaves the \
                  predicted band by more than both the noise and the percentage bounds.",
        examples: &[(
            "name,sps,:eq,:sum,10,0.1,0.5,0.2,0.2,4",
            Some(
                "name,sps,:eq,:sum,name,sps,:eq,:sum,10,0.1,0.5,:des,4.0,:const,:sub,:lt,\
                 name,sps,:eq,:sum,name,sps,:eq,:sum,10,0.1,0.5,:des,0.8,:const,:fmul,:lt,:and,\
                 name,sps,:eq,:sum,name,sps,:eq,:sum,10,0.1,0.5,:des,4.0,:const,:add,:gt,\
                 name,sps,:eq,:sum,name,sps,:eq,:sum,10,0.1,0.5,:des,1.2,:const,:fmul,:gt,:and,:or",
            ),
        )],
        exec: des_epic_signal,
    },
];

fn push(ctx: &mut Context<'_>, op: StatefulOp, e: TimeSeriesExpr) -> R {
    ctx.stack
        .push(Item::Expr(TimeSeriesExpr::Stateful(op, Box::new(e))));
    Ok(())
}

fn window(ctx: &mut Context<'_>, a: Vec<Item>, make: fn(usize) -> StatefulOp) -> R {
    let [e, n] = args(a)?;
    let n = take_int(n)?;
    let min = usize::from(!matches!(make(1), StatefulOp::Delay(_)));
    if n < min || n > MAX_WINDOW {
        return Err(Failure::Invalid(format!(
            "window size must be between {min} and {MAX_WINDOW}: {n}"
        )));
    }
    push(ctx, make(n), take_ts(e)?)
}

fn rolling_mean(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, n, min] = args(a)?;
    let (n, min) = (take_int(n)?, take_int(min)?);
    if !(1..=MAX_WINDOW).contains(&n) {
        return Err(Failure::Invalid(format!(
            "window size must be between 1 and {MAX_WINDOW}: {n}"
        )));
    }
    if min < 1 || min > n {
        return Err(Failure::Invalid(format!(
            "minNumValues must be between 1 and n ({min} not in 1..={n})"
        )));
    }
    push(ctx, StatefulOp::RollingMean { n, min }, take_ts(e)?)
}

fn trend(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, d] = args(a)?;
    let ms = take_duration(d)?;
    if ms <= 0 {
        return Err(Failure::Invalid("the trend window must be positive".into()));
    }
    push(ctx, StatefulOp::Trend(ms), take_ts(e)?)
}

fn des_op(
    sliding: bool,
    training: usize,
    alpha: f64,
    beta: f64,
    preset: Option<&'static str>,
) -> Result<StatefulOp, Failure> {
    if training > MAX_WINDOW || !alpha.is_finite() || !beta.is_finite() {
        return Err(Failure::Invalid(format!(
            "training must be at most {MAX_WINDOW} steps ({training}) and alpha, beta finite"
        )));
    }
    Ok(if sliding {
        StatefulOp::SlidingDes {
            training,
            alpha,
            beta,
            preset,
        }
    } else {
        StatefulOp::Des {
            training,
            alpha,
            beta,
            preset,
        }
    })
}

fn des(ctx: &mut Context<'_>, a: Vec<Item>, sliding: bool) -> R {
    let [e, training, alpha, beta] = args(a)?;
    let op = des_op(
        sliding,
        take_int(training)?,
        take_double(alpha)?,
        take_double(beta)?,
        None,
    )?;
    push(ctx, op, take_ts(e)?)
}

fn des_epic_signal(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [line, training, alpha, beta, max_pct, min_pct, noise] = args(a)?;
    let line = take_ts(line)?;
    let op = des_op(
        false,
        take_int(training)?,
        take_double(alpha)?,
        take_double(beta)?,
        None,
    )?;
    let (max_pct, min_pct, noise) = (
        take_double(max_pct)?,
        take_double(min_pct)?,
        take_double(noise)?,
    );
    let pred = || TimeSeriesExpr::Stateful(op, Box::new(line.clone()));
    let c = TimeSeriesExpr::Constant;
    let min_noise = binary(BinaryOp::Sub, pred(), c(noise));
    let min_pct = binary(BinaryOp::FMul, pred(), c(1.0 - min_pct));
    let max_noise = binary(BinaryOp::Add, pred(), c(noise));
    let max_pct = binary(BinaryOp::FMul, pred(), c(1.0 + max_pct));
    let below = binary(
        BinaryOp::And,
        binary(BinaryOp::Lt, line.clone(), min_noise),
        binary(BinaryOp::Lt, line.clone(), min_pct),
    );
    let above = binary(
        BinaryOp::And,
        binary(BinaryOp::Gt, line.clone(), max_noise),
        binary(BinaryOp::Gt, line, max_pct),
    );
    ctx.stack
        .push(Item::Expr(binary(BinaryOp::Or, below, above)));
    Ok(())
}
