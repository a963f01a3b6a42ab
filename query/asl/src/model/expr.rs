//! Time-series expressions: data (`model/data.rs`), math, stateful and filter expressions.
//! Each prints back as canonical Stack Language, knows the keys its lines are grouped by
//! (the grouping rule of binary operations), and can be rewritten by `:cq`, `:by`, `:cg`,
//! `:offset` and `:cf-*`.

use std::fmt;

use argus_tsdb::Consolidation;

use super::data::{AggrOp, DataExpr, DataKind, write_list};
use super::query::Query;
use crate::numfmt::java_double;
use crate::parser::write_escaped;
use crate::time::{format_duration, format_java_duration};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UnaryOp {
    Abs,
    Neg,
    Sqrt,
    Sin,
    /// Multiplies a per-second rate by the step in seconds.
    PerStep,
}

impl UnaryOp {
    pub(crate) fn word(self) -> &'static str {
        match self {
            UnaryOp::Abs => "abs",
            UnaryOp::Neg => "neg",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Sin => "sin",
            UnaryOp::PerStep => "per-step",
        }
    }

    pub(crate) fn apply(self, v: f64, step_ms: i64) -> f64 {
        match self {
            UnaryOp::Abs => v.abs(),
            UnaryOp::Neg => -v,
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Sin => v.sin(),
            UnaryOp::PerStep => v * (step_ms as f64 / 1000.0),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    FAdd,
    FSub,
    FMul,
    FDiv,
    Pow,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
}

/// Atlas's truthiness: not NaN and not within 1e-12 of zero.
pub(crate) fn truthy(v: f64) -> bool {
    !(v.is_nan() || v.abs() < 1e-12)
}

/// Addition where NaN counts as 0 unless both sides are NaN (Atlas's `addNaN`).
pub(crate) fn add_nan(a: f64, b: f64) -> f64 {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => f64::NAN,
        (true, false) => b,
        (false, true) => a,
        (false, false) => a + b,
    }
}

/// Java's `Math.pow`: differs from IEEE `pow` in that `1^NaN` and `(±1)^±∞` are NaN.
fn java_pow(a: f64, b: f64) -> f64 {
    if b.is_nan() && b != 0.0 {
        return f64::NAN;
    }
    if b.is_infinite() && a.abs() == 1.0 {
        return f64::NAN;
    }
    a.powf(b)
}

impl BinaryOp {
    pub(crate) fn word(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::FAdd => "fadd",
            BinaryOp::FSub => "fsub",
            BinaryOp::FMul => "fmul",
            BinaryOp::FDiv => "fdiv",
            BinaryOp::Pow => "pow",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
        }
    }

    #[inline]
    pub(crate) fn apply(self, a: f64, b: f64) -> f64 {
        let flag = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            BinaryOp::Add => add_nan(a, b),
            BinaryOp::Sub => add_nan(a, -b),
            BinaryOp::Mul | BinaryOp::FMul => a * b,
            BinaryOp::Div => {
                if b == 0.0 {
                    if a == 0.0 { 0.0 } else { f64::NAN }
                } else {
                    a / b
                }
            }
            BinaryOp::FAdd => a + b,
            BinaryOp::FSub => a - b,
            BinaryOp::FDiv => a / b,
            BinaryOp::Pow => java_pow(a, b),
            BinaryOp::Gt => flag(a > b),
            BinaryOp::Ge => flag(a >= b),
            BinaryOp::Lt => flag(a < b),
            BinaryOp::Le => flag(a <= b),
            BinaryOp::And => flag(truthy(a) && truthy(b)),
            BinaryOp::Or => flag(truthy(a) || truthy(b)),
        }
    }
}

/// Math-level aggregation across the lines of an expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MathAggr {
    Sum,
    Count,
    Min,
    Max,
}

impl MathAggr {
    pub(crate) fn word(self) -> &'static str {
        match self {
            MathAggr::Sum => "sum",
            MathAggr::Count => "count",
            MathAggr::Min => "min",
            MathAggr::Max => "max",
        }
    }
}

/// Statistics of a line over the graph window (Atlas's `SummaryStats`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StatKind {
    Avg,
    Max,
    Min,
    Last,
    Total,
    Count,
}

impl StatKind {
    pub(crate) fn parse(s: &str) -> Option<StatKind> {
        Some(match s {
            "avg" => StatKind::Avg,
            "max" => StatKind::Max,
            "min" => StatKind::Min,
            "last" => StatKind::Last,
            "total" => StatKind::Total,
            "count" => StatKind::Count,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            StatKind::Avg => "avg",
            StatKind::Max => "max",
            StatKind::Min => "min",
            StatKind::Last => "last",
            StatKind::Total => "total",
            StatKind::Count => "count",
        }
    }
}

/// Atlas's bound on the steps a stateful window spans (a day of 1 s steps): rolling
/// windows, delays, training periods and `:trend` (whose window is a duration, checked in
/// steps once the step is known).
pub(crate) const MAX_WINDOW: usize = 86_400;

/// Stateful operations, evaluated over the window from its first step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum StatefulOp {
    Delay(usize),
    RollingCount(usize),
    RollingMin(usize),
    RollingMax(usize),
    RollingMean {
        n: usize,
        min: usize,
    },
    RollingSum(usize),
    /// Moving average over a window duration.
    Trend(i64),
    Integral,
    Derivative,
    CumulativeMax,
    /// `preset` is the short word (`des-fast`, ...) the expression was written with.
    Des {
        training: usize,
        alpha: f64,
        beta: f64,
        preset: Option<&'static str>,
    },
    SlidingDes {
        training: usize,
        alpha: f64,
        beta: f64,
        preset: Option<&'static str>,
    },
}

impl StatefulOp {
    pub(crate) fn word(&self) -> &'static str {
        match self {
            StatefulOp::Delay(_) => "delay",
            StatefulOp::RollingCount(_) => "rolling-count",
            StatefulOp::RollingMin(_) => "rolling-min",
            StatefulOp::RollingMax(_) => "rolling-max",
            StatefulOp::RollingMean { .. } => "rolling-mean",
            StatefulOp::RollingSum(_) => "rolling-sum",
            StatefulOp::Trend(_) => "trend",
            StatefulOp::Integral => "integral",
            StatefulOp::Derivative => "derivative",
            StatefulOp::CumulativeMax => "cumulative-max",
            StatefulOp::Des { .. } => "des",
            StatefulOp::SlidingDes { .. } => "sdes",
        }
    }

    /// The word the expression prints with: a DES preset keeps its short name.
    pub(crate) fn print_word(&self) -> &'static str {
        match self {
            StatefulOp::Des {
                preset: Some(p), ..
            }
            | StatefulOp::SlidingDes {
                preset: Some(p), ..
            } => p,
            other => other.word(),
        }
    }

    /// The parameters as printed between the expression and the word.
    fn write_params(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StatefulOp::Delay(n)
            | StatefulOp::RollingCount(n)
            | StatefulOp::RollingMin(n)
            | StatefulOp::RollingMax(n)
            | StatefulOp::RollingSum(n) => write!(f, ",{n}"),
            StatefulOp::RollingMean { n, min } => write!(f, ",{n},{min}"),
            StatefulOp::Trend(ms) => write!(f, ",{}", format_java_duration(ms)),
            StatefulOp::Integral | StatefulOp::Derivative | StatefulOp::CumulativeMax => Ok(()),
            StatefulOp::Des {
                preset: Some(_), ..
            }
            | StatefulOp::SlidingDes {
                preset: Some(_), ..
            } => Ok(()),
            StatefulOp::Des {
                training,
                alpha,
                beta,
                ..
            }
            | StatefulOp::SlidingDes {
                training,
                alpha,
                beta,
                ..
            } => write!(
                f,
                ",{training},{},{}",
                java_double(alpha),
                java_double(beta)
            ),
        }
    }
}

/// How `:topk-others-*` combines the lines it did not keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OthersAggr {
    Min,
    Max,
    Sum,
    Avg,
}

impl OthersAggr {
    pub(crate) fn name(self) -> &'static str {
        match self {
            OthersAggr::Min => "min",
            OthersAggr::Max => "max",
            OthersAggr::Sum => "sum",
            OthersAggr::Avg => "avg",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TopK {
    pub expr: TimeSeriesExpr,
    pub stat: StatKind,
    pub k: usize,
    pub bottom: bool,
    pub others: Option<OthersAggr>,
}

/// `:time` modes: calendar fields (UTC, as Atlas) and fractional epoch units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TimeMode {
    SecondOfMinute,
    SecondOfDay,
    MinuteOfHour,
    MinuteOfDay,
    HourOfDay,
    DayOfWeek,
    DayOfMonth,
    DayOfYear,
    MonthOfYear,
    YearOfCentury,
    YearOfEra,
    Seconds,
    Minutes,
    Hours,
    Days,
    Weeks,
}

impl TimeMode {
    const ALL: [(&'static str, TimeMode); 16] = [
        ("secondOfMinute", TimeMode::SecondOfMinute),
        ("secondOfDay", TimeMode::SecondOfDay),
        ("minuteOfHour", TimeMode::MinuteOfHour),
        ("minuteOfDay", TimeMode::MinuteOfDay),
        ("hourOfDay", TimeMode::HourOfDay),
        ("dayOfWeek", TimeMode::DayOfWeek),
        ("dayOfMonth", TimeMode::DayOfMonth),
        ("dayOfYear", TimeMode::DayOfYear),
        ("monthOfYear", TimeMode::MonthOfYear),
        ("yearOfCentury", TimeMode::YearOfCentury),
        ("yearOfEra", TimeMode::YearOfEra),
        ("seconds", TimeMode::Seconds),
        ("minutes", TimeMode::Minutes),
        ("hours", TimeMode::Hours),
        ("days", TimeMode::Days),
        ("weeks", TimeMode::Weeks),
    ];

    pub(crate) fn parse(s: &str) -> Option<TimeMode> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, m)| *m)
    }

    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("", |(n, _)| n)
    }

    pub(crate) fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().map(|(n, _)| *n)
    }
}

/// Macros that keep their short form for printing (Atlas's named rewrites).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RewriteName {
    Avg,
    Stddev,
    Pct,
    DistAvg,
    DistMax,
    DistStddev,
}

impl RewriteName {
    pub(crate) fn word(self) -> &'static str {
        match self {
            RewriteName::Avg => "avg",
            RewriteName::Stddev => "stddev",
            RewriteName::Pct => "pct",
            RewriteName::DistAvg => "dist-avg",
            RewriteName::DistMax => "dist-max",
            RewriteName::DistStddev => "dist-stddev",
        }
    }
}

/// What a named rewrite was applied to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Display {
    /// A query (`:dist-avg` and friends): the rewrite reads the store itself.
    Query {
        query: Query,
        keys: Option<Vec<String>>,
        offset_ms: i64,
    },
    /// An expression (`:avg`, `:stddev`, `:pct` over lines), optionally regrouped by `:by`.
    Expr {
        expr: TimeSeriesExpr,
        keys: Option<Vec<String>>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NamedRewrite {
    pub name: RewriteName,
    pub display: Display,
}

/// Percentile estimates from Atlas/Spectator percentile-bucket counters (tag `percentile`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Percentiles {
    pub query: Query,
    /// Group-by keys besides `percentile`.
    pub keys: Vec<String>,
    /// Sorted, distinct, each in [0, 100].
    pub pcts: Vec<f64>,
    pub offset_ms: i64,
}

/// A `:time-span` line: 1 inside `[start, end]`, 0 outside; the ends are time expressions
/// relative to the graph window, resolved at evaluation.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TimeSpan {
    pub start: String,
    pub end: String,
    /// The `tz` variable when the span was written (`tz,US/Eastern,:set`), as Atlas
    /// captures it; else the graph's time zone.
    pub zone: Option<String>,
}

/// An expression that evaluates to a set of lines.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum TimeSeriesExpr {
    Data(DataExpr),
    Constant(f64),
    Random,
    SeededRandom(i32),
    Time(TimeMode),
    TimeSpan(Box<TimeSpan>),
    Unary(UnaryOp, Box<TimeSeriesExpr>),
    /// `:clamp-min` (max = false) or `:clamp-max`.
    Clamp {
        max: bool,
        bound: f64,
        expr: Box<TimeSeriesExpr>,
    },
    Binary(BinaryOp, Box<TimeSeriesExpr>, Box<TimeSeriesExpr>),
    /// Math-level `:sum`, `:count`, `:min`, `:max` across the lines of an expression.
    Aggregate(MathAggr, Box<TimeSeriesExpr>),
    /// Math-level `:by`: the aggregate per group of the inner (grouped) expression's lines.
    GroupBy {
        op: MathAggr,
        expr: Box<TimeSeriesExpr>,
        keys: Vec<String>,
    },
    /// `:as`: renames a tag key.
    As {
        expr: Box<TimeSeriesExpr>,
        from: String,
        to: String,
    },
    Rewrite(Box<NamedRewrite>),
    Percentiles(Box<Percentiles>),
    Stateful(StatefulOp, Box<TimeSeriesExpr>),
    /// `:stat`: each line replaced by a window statistic. `placeholder` marks one that came
    /// from `:stat-max` & co. inside a `:filter` condition (printed back that way).
    Stat {
        stat: StatKind,
        expr: Box<TimeSeriesExpr>,
    },
    /// `:stat-max` & co. before `:filter` binds them to the filtered expression.
    StatPlaceholder(StatKind),
    /// Keeps the lines of `expr` whose condition is true at least once in the window.
    Filter {
        expr: Box<TimeSeriesExpr>,
        cond: Box<TimeSeriesExpr>,
    },
    TopK(Box<TopK>),
}

impl TimeSeriesExpr {
    /// The keys lines are grouped by after this expression (Atlas's `finalGrouping`).
    pub(crate) fn grouping(&self) -> Vec<String> {
        use TimeSeriesExpr as E;
        match self {
            E::Data(d) => d.grouping().to_vec(),
            E::Constant(_)
            | E::Random
            | E::SeededRandom(_)
            | E::Time(_)
            | E::TimeSpan(_)
            | E::StatPlaceholder(_)
            | E::Aggregate(..) => Vec::new(),
            E::Unary(_, e) | E::Clamp { expr: e, .. } | E::Stateful(_, e) => e.grouping(),
            E::Stat { expr, .. } | E::Filter { expr, .. } => expr.grouping(),
            E::TopK(t) => t.expr.grouping(),
            E::Binary(_, a, b) => {
                let (ga, gb) = (a.grouping(), b.grouping());
                if gb.len() > ga.len() { gb } else { ga }
            }
            E::GroupBy { keys, .. } => keys.clone(),
            E::As { expr, from, to } => expr
                .grouping()
                .into_iter()
                .map(|k| if &k == from { to.clone() } else { k })
                .collect(),
            E::Rewrite(nr) => nr.expand().grouping(),
            E::Percentiles(p) => {
                let mut keys = vec!["percentile".to_string()];
                keys.extend(p.keys.iter().cloned());
                keys
            }
        }
    }

    pub(crate) fn is_grouped(&self) -> bool {
        !self.grouping().is_empty()
    }

    /// Node count: what copying the expression costs.
    pub(crate) fn weight(&self) -> usize {
        use TimeSeriesExpr as E;
        match self {
            E::Data(d) => d.weight(),
            E::Constant(_)
            | E::Random
            | E::SeededRandom(_)
            | E::Time(_)
            | E::TimeSpan(_)
            | E::StatPlaceholder(_) => 1,
            E::Unary(_, e)
            | E::Clamp { expr: e, .. }
            | E::Stateful(_, e)
            | E::Aggregate(_, e)
            | E::Stat { expr: e, .. }
            | E::As { expr: e, .. } => 1 + e.weight(),
            E::GroupBy { expr, keys, .. } => 1 + keys.len() + expr.weight(),
            E::Binary(_, a, b)
            | E::Filter {
                expr: a, cond: b, ..
            } => 1 + a.weight() + b.weight(),
            E::TopK(t) => 1 + t.expr.weight(),
            E::Rewrite(nr) => match &nr.display {
                Display::Query { query, keys, .. } => {
                    1 + query.weight() + keys.as_ref().map_or(0, Vec::len)
                }
                Display::Expr { expr, keys } => {
                    1 + expr.weight() + keys.as_ref().map_or(0, Vec::len)
                }
            },
            E::Percentiles(p) => 1 + p.query.weight() + p.keys.len() + p.pcts.len(),
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        use TimeSeriesExpr as E;
        match self {
            E::Data(d) => d.type_name(),
            E::Constant(_) => "Constant",
            E::StatPlaceholder(_) => "StatPlaceholder",
            E::Stateful(..) => "StatefulExpr",
            E::Stat { .. } | E::Filter { .. } | E::TopK(_) => "FilterExpr",
            _ => "MathExpr",
        }
    }

    /// Applies `f` to every direct child expression (not into named-rewrite displays'
    /// queries; callers that need those handle `Rewrite` themselves).
    pub(crate) fn children_mut(&mut self, f: &mut dyn FnMut(&mut TimeSeriesExpr)) {
        use TimeSeriesExpr as E;
        match self {
            E::Unary(_, e)
            | E::Clamp { expr: e, .. }
            | E::Stateful(_, e)
            | E::Aggregate(_, e)
            | E::GroupBy { expr: e, .. }
            | E::Stat { expr: e, .. }
            | E::As { expr: e, .. } => f(e),
            E::Binary(_, a, b)
            | E::Filter {
                expr: a, cond: b, ..
            } => {
                f(a);
                f(b);
            }
            E::TopK(t) => f(&mut t.expr),
            E::Rewrite(nr) => {
                if let Display::Expr { expr, .. } = &mut nr.display {
                    f(expr);
                }
            }
            _ => {}
        }
    }

    pub(crate) fn children(&self) -> Vec<&TimeSeriesExpr> {
        use TimeSeriesExpr as E;
        match self {
            E::Unary(_, e)
            | E::Clamp { expr: e, .. }
            | E::Stateful(_, e)
            | E::Aggregate(_, e)
            | E::GroupBy { expr: e, .. }
            | E::Stat { expr: e, .. }
            | E::As { expr: e, .. } => vec![e],
            E::Binary(_, a, b) | E::Filter { expr: a, cond: b } => vec![a, b],
            E::TopK(t) => vec![&t.expr],
            E::Rewrite(nr) => match &nr.display {
                Display::Expr { expr, .. } => vec![expr],
                Display::Query { .. } => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Whether any data expression inside reads with an offset, and the smallest such
    /// offset (Atlas labels offset lines with it).
    pub(crate) fn min_offset_ms(&self) -> i64 {
        let mut offsets = Vec::new();
        self.visit_offsets(&mut offsets);
        offsets.into_iter().min().unwrap_or(0)
    }

    fn visit_offsets(&self, out: &mut Vec<i64>) {
        match self {
            TimeSeriesExpr::Data(d) => out.push(d.offset_ms),
            TimeSeriesExpr::Percentiles(p) => out.push(p.offset_ms),
            TimeSeriesExpr::Rewrite(nr) => match &nr.display {
                Display::Query { offset_ms, .. } => out.push(*offset_ms),
                Display::Expr { expr, .. } => expr.visit_offsets(out),
            },
            other => {
                for c in other.children() {
                    c.visit_offsets(out);
                }
            }
        }
    }

    /// Whether a `:stat-*` placeholder is inside (it binds to a `:filter`'s expression).
    pub(crate) fn has_placeholder(&self) -> bool {
        matches!(self, TimeSeriesExpr::StatPlaceholder(_))
            || self.children().iter().any(|c| c.has_placeholder())
    }

    /// `:cq`: ANDs `q` into every query inside.
    pub(crate) fn add_query(&mut self, q: &Query) {
        match self {
            TimeSeriesExpr::Data(d) => {
                let old = std::mem::replace(d.query_mut(), Query::True);
                *d.query_mut() = old.and(q.clone());
            }
            TimeSeriesExpr::Percentiles(p) => {
                p.query = std::mem::replace(&mut p.query, Query::True).and(q.clone());
            }
            TimeSeriesExpr::Rewrite(nr) => match &mut nr.display {
                Display::Query { query, .. } => {
                    *query = std::mem::replace(query, Query::True).and(q.clone());
                }
                Display::Expr { expr, .. } => expr.add_query(q),
            },
            other => other.children_mut(&mut |c| c.add_query(q)),
        }
    }

    /// `:offset`: reads every data expression inside `offset_ms` earlier.
    pub(crate) fn set_offset(&mut self, offset_ms: i64) {
        match self {
            TimeSeriesExpr::Data(d) => d.offset_ms = offset_ms,
            TimeSeriesExpr::Percentiles(p) => p.offset_ms = offset_ms,
            TimeSeriesExpr::Rewrite(nr) => match &mut nr.display {
                Display::Query { offset_ms: o, .. } => *o = offset_ms,
                Display::Expr { expr, .. } => expr.set_offset(offset_ms),
            },
            other => other.children_mut(&mut |c| c.set_offset(offset_ms)),
        }
    }

    /// `:cf-*`: the consolidation every data expression inside uses.
    pub(crate) fn set_consolidation(&mut self, cf: Consolidation) {
        match self {
            TimeSeriesExpr::Data(d) => d.cf = Some(cf),
            other => other.children_mut(&mut |c| c.set_consolidation(cf)),
        }
    }

    /// `:by` over an expression that is not itself an aggregate (Atlas's third case):
    /// every aggregate inside becomes grouped by `keys`.
    pub(crate) fn group_aggregates(&mut self, keys: &[String]) {
        match self {
            TimeSeriesExpr::Data(d) => {
                if let DataKind::Aggregate(af) = &d.kind {
                    d.kind = DataKind::GroupBy {
                        af: af.clone(),
                        keys: keys.to_vec(),
                    };
                }
            }
            TimeSeriesExpr::Rewrite(nr) => match &mut nr.display {
                Display::Query { keys: k, .. } => *k = Some(keys.to_vec()),
                Display::Expr { keys: k, .. } => *k = Some(keys.to_vec()),
            },
            TimeSeriesExpr::Aggregate(op, inner) if inner.is_grouped() => {
                *self = TimeSeriesExpr::GroupBy {
                    op: *op,
                    expr: inner.clone(),
                    keys: keys.to_vec(),
                };
            }
            TimeSeriesExpr::Aggregate(..) => {}
            // Regrouping what was grouped may leave nothing to group by: then the math
            // grouping is the plain aggregate it prints back as.
            TimeSeriesExpr::GroupBy { op, expr, keys: k } => {
                expr.group_aggregates(keys);
                if k.is_empty() && !expr.is_grouped() {
                    *self = TimeSeriesExpr::Aggregate(*op, expr.clone());
                }
            }
            other => other.children_mut(&mut |c| c.group_aggregates(keys)),
        }
    }

    /// `:cg`: adds `keys` to the grouping of every aggregate inside.
    pub(crate) fn add_common_keys(&mut self, keys: &[String]) {
        let merge = |existing: &mut Vec<String>| {
            for k in keys {
                if !existing.contains(k) {
                    existing.push(k.clone());
                }
            }
        };
        match self {
            TimeSeriesExpr::Data(d) => match &mut d.kind {
                DataKind::Aggregate(af) => {
                    d.kind = DataKind::GroupBy {
                        af: af.clone(),
                        keys: keys.to_vec(),
                    };
                }
                DataKind::GroupBy { keys: k, .. } => merge(k),
                DataKind::All(_) => {}
            },
            TimeSeriesExpr::Percentiles(p) => merge(&mut p.keys),
            TimeSeriesExpr::Rewrite(nr) => match &mut nr.display {
                Display::Query { keys: k, .. } => merge(k.get_or_insert_with(Vec::new)),
                Display::Expr { expr, keys: k } => match k {
                    None => expr.add_common_keys(keys),
                    // Regrouped by its own keys: the aggregates inside take those and the
                    // new ones, as Atlas applies `:by` on a rewrite to what it rewrites.
                    // Once the inside is grouped by all of them, regrouping the result
                    // changes nothing, and the form without prints back unambiguously.
                    Some(own) => {
                        merge(own);
                        expr.add_common_keys(own);
                        let inner = expr.grouping();
                        if own.iter().all(|x| inner.contains(x)) {
                            *k = None;
                        }
                    }
                },
            },
            // A math aggregate becomes grouped only when what it aggregates now is (with
            // no keys, or over constants, it stays the single line it prints back as).
            TimeSeriesExpr::Aggregate(op, inner) => {
                inner.add_common_keys(keys);
                if !keys.is_empty() && inner.is_grouped() {
                    *self = TimeSeriesExpr::GroupBy {
                        op: *op,
                        expr: inner.clone(),
                        keys: keys.to_vec(),
                    };
                }
            }
            TimeSeriesExpr::GroupBy { expr, keys: k, .. } => {
                expr.add_common_keys(keys);
                merge(k);
            }
            other => other.children_mut(&mut |c| c.add_common_keys(keys)),
        }
    }
}

/// Builds `expr,:<op>` at math level with Atlas's rule: `:sum`, `:min` and `:max` of a data
/// aggregate are that aggregate unchanged; `:count` of one counts its line.
pub(crate) fn math_aggregate(op: MathAggr, expr: TimeSeriesExpr) -> TimeSeriesExpr {
    if op != MathAggr::Count
        && let TimeSeriesExpr::Data(DataExpr {
            kind: DataKind::Aggregate(af),
            ..
        }) = &expr
        && af.op != AggrOp::Avg
    {
        return expr;
    }
    TimeSeriesExpr::Aggregate(op, Box::new(expr))
}

/// Constant folding of a binary operation, as Atlas does when both sides are constants.
pub(crate) fn binary(op: BinaryOp, a: TimeSeriesExpr, b: TimeSeriesExpr) -> TimeSeriesExpr {
    match (&a, &b) {
        (TimeSeriesExpr::Constant(x), TimeSeriesExpr::Constant(y)) => {
            TimeSeriesExpr::Constant(op.apply(*x, *y))
        }
        _ => TimeSeriesExpr::Binary(op, Box::new(a), Box::new(b)),
    }
}

impl NamedRewrite {
    /// The expression evaluated in place of the short form.
    pub(crate) fn expand(&self) -> TimeSeriesExpr {
        use TimeSeriesExpr as E;
        match &self.display {
            Display::Query {
                query,
                keys,
                offset_ms,
            } => {
                let sum = |extra: Query, op: AggrOp| {
                    let q = extra.and(query.clone());
                    let mut d = DataExpr::aggregate(op, q);
                    if let Some(keys) = keys {
                        d.kind = match d.kind {
                            DataKind::Aggregate(af) => DataKind::GroupBy {
                                af,
                                keys: keys.clone(),
                            },
                            other => other,
                        };
                    }
                    d.offset_ms = *offset_ms;
                    E::Data(d)
                };
                let stat = |v: &str| Query::Equal {
                    key: "statistic".into(),
                    value: v.into(),
                };
                let stats = |vs: &[&str]| Query::In {
                    key: "statistic".into(),
                    values: vs.iter().map(|s| s.to_string()).collect(),
                };
                match self.name {
                    RewriteName::DistAvg => binary(
                        BinaryOp::Div,
                        sum(stats(&["totalAmount", "totalTime"]), AggrOp::Sum),
                        sum(stat("count"), AggrOp::Sum),
                    ),
                    RewriteName::DistMax => sum(stat("max"), AggrOp::Max),
                    RewriteName::DistStddev => {
                        let n = || sum(stat("count"), AggrOp::Sum);
                        let s2 = sum(stat("totalOfSquares"), AggrOp::Sum);
                        let s1 = || sum(stats(&["totalAmount", "totalTime"]), AggrOp::Sum);
                        let num = binary(
                            BinaryOp::Sub,
                            binary(BinaryOp::Mul, n(), s2),
                            binary(BinaryOp::Mul, s1(), s1()),
                        );
                        E::Unary(
                            UnaryOp::Sqrt,
                            Box::new(binary(BinaryOp::Div, num, binary(BinaryOp::Mul, n(), n()))),
                        )
                    }
                    // Applied to a query these are data expressions, never rewrites; keep a
                    // sensible meaning anyway.
                    RewriteName::Avg | RewriteName::Stddev | RewriteName::Pct => {
                        sum(Query::True, AggrOp::Avg)
                    }
                }
            }
            Display::Expr { expr, keys } => {
                let aggr = |op: MathAggr, e: TimeSeriesExpr| match keys {
                    Some(keys) if e.is_grouped() => E::GroupBy {
                        op,
                        expr: Box::new(e),
                        keys: keys.clone(),
                    },
                    _ => math_aggregate(op, e),
                };
                let x = expr.clone();
                match self.name {
                    RewriteName::Avg => binary(
                        BinaryOp::Div,
                        aggr(MathAggr::Sum, x.clone()),
                        aggr(MathAggr::Count, x),
                    ),
                    RewriteName::Stddev => {
                        let f = binary(BinaryOp::FAdd, x, E::Constant(0.0));
                        let count = || aggr(MathAggr::Count, f.clone());
                        let sum = || aggr(MathAggr::Sum, f.clone());
                        let sum_sq =
                            aggr(MathAggr::Sum, binary(BinaryOp::Mul, f.clone(), f.clone()));
                        let num = binary(
                            BinaryOp::Sub,
                            binary(BinaryOp::Mul, count(), sum_sq),
                            binary(BinaryOp::Mul, sum(), sum()),
                        );
                        E::Unary(
                            UnaryOp::Sqrt,
                            Box::new(binary(
                                BinaryOp::Div,
                                num,
                                binary(BinaryOp::Mul, count(), count()),
                            )),
                        )
                    }
                    RewriteName::Pct => binary(
                        BinaryOp::Mul,
                        binary(BinaryOp::Div, x.clone(), aggr(MathAggr::Sum, x)),
                        E::Constant(100.0),
                    ),
                    // Distribution rewrites always apply to queries.
                    RewriteName::DistAvg | RewriteName::DistMax | RewriteName::DistStddev => x,
                }
            }
        }
    }
}

fn write_keys_by(f: &mut fmt::Formatter<'_>, keys: &Option<Vec<String>>) -> fmt::Result {
    if let Some(keys) = keys {
        f.write_str(",")?;
        write_list(f, keys)?;
        f.write_str(",:by")?;
    }
    Ok(())
}

impl fmt::Display for NamedRewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.display {
            Display::Query {
                query,
                keys,
                offset_ms,
            } => {
                write!(f, "{query},:{}", self.name.word())?;
                if *offset_ms != 0 {
                    write!(f, ",{},:offset", format_duration(*offset_ms))?;
                }
                write_keys_by(f, keys)
            }
            Display::Expr { expr, keys } => {
                write!(f, "{expr},:{}", self.name.word())?;
                write_keys_by(f, keys)
            }
        }
    }
}

impl fmt::Display for TimeSeriesExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TimeSeriesExpr as E;
        match self {
            E::Data(d) => d.fmt(f),
            E::Constant(v) => write!(f, "{},:const", java_double(*v)),
            E::Random => f.write_str(":random"),
            E::SeededRandom(seed) => write!(f, "{seed},:srandom"),
            E::Time(mode) => write!(f, "{},:time", mode.name()),
            E::TimeSpan(ts) => {
                if let Some(zone) = &ts.zone {
                    f.write_str("tz,")?;
                    write_escaped(f, zone)?;
                    f.write_str(",:set,")?;
                }
                write_escaped(f, &ts.start)?;
                f.write_str(",")?;
                write_escaped(f, &ts.end)?;
                f.write_str(",:time-span")
            }
            E::Unary(op, e) => write!(f, "{e},:{}", op.word()),
            E::Clamp { max, bound, expr } => write!(
                f,
                "{expr},{},:clamp-{}",
                java_double(*bound),
                if *max { "max" } else { "min" }
            ),
            E::Binary(op, a, b) => write!(f, "{a},{b},:{}", op.word()),
            E::Aggregate(op, e) => write!(f, "{e},:{}", op.word()),
            E::GroupBy { op, expr, keys } => {
                write!(f, "{expr},:{},", op.word())?;
                write_list(f, keys)?;
                f.write_str(",:by")
            }
            E::As { expr, from, to } => {
                write!(f, "{expr},")?;
                write_escaped(f, from)?;
                f.write_str(",")?;
                write_escaped(f, to)?;
                f.write_str(",:as")
            }
            E::Rewrite(nr) => nr.fmt(f),
            E::Percentiles(p) => {
                write!(f, "{}", p.query)?;
                if !p.keys.is_empty() {
                    f.write_str(",")?;
                    write_list(f, &p.keys)?;
                    f.write_str(",:by")?;
                }
                f.write_str(",(")?;
                for v in &p.pcts {
                    write!(f, ",{}", java_double(*v))?;
                }
                f.write_str(",),:percentiles")?;
                if p.offset_ms != 0 {
                    write!(f, ",{},:offset", format_duration(p.offset_ms))?;
                }
                Ok(())
            }
            E::Stateful(op, e) => {
                write!(f, "{e}")?;
                op.write_params(f)?;
                write!(f, ",:{}", op.print_word())
            }
            E::Stat { stat, expr } => write!(f, "{expr},{},:stat", stat.name()),
            E::StatPlaceholder(stat) => write!(f, ":stat-{}", stat.name()),
            E::Filter { expr, cond } => write!(f, "{expr},{cond},:filter"),
            E::TopK(t) => {
                let word = if t.bottom { "bottomk" } else { "topk" };
                write!(f, "{},{},{},:{word}", t.expr, t.stat.name(), t.k)?;
                if let Some(o) = t.others {
                    write!(f, "-others-{}", o.name())?;
                }
                Ok(())
            }
        }
    }
}
