//! Evaluation of time-series expressions over a window: data expressions read the store
//! (`data.rs`, streaming aggregation); math, stateful (`online.rs`), filter and percentile
//! (`percentiles.rs`) expressions combine the resulting lines with Atlas's semantics for
//! values, tags and labels.

mod data;
mod online;

pub use data::{Partial, PartialParts};

/// Where a query node gets the parts of a data expression: one per node asked (see
/// `crate::split`). An `Err` says why the expression cannot be answered (the request fails
/// with it).
pub trait Fanout: Send + Sync {
    fn partials(
        &self,
        expr: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> std::result::Result<Vec<Partial>, String>;
}

/// Shared so a request's evaluation can hand it to every expression.
pub type SharedFanout = Arc<dyn Fanout>;

/// A data expression evaluated up to its partial result (see `crate::split`).
pub(crate) fn partial(
    expr: &crate::model::DataExpr,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
) -> Result<Partial> {
    data::eval_partial(expr, ctx, src)
}
mod percentiles;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ahash::AHashMap;
use argus_tsdb::{SeriesSource, TagMap};

use crate::error::{Error, Result};
use crate::model::{
    MathAggr, OthersAggr, Query, StatKind, TimeMode, TimeSeriesExpr, TimeSpan, TopK, add_nan,
    truthy,
};
use crate::time::{self, Anchor};

/// Atlas's limit on points per line; also what the automatic step aims for.
pub(crate) const MAX_POINTS_PER_LINE: usize = 1440;
/// Memory one query may hold by default: ten times the largest result the default line and
/// datapoint limits allow, with room for read buffers.
pub const DEFAULT_MAX_MEMORY_BYTES: usize = 256 << 20;

/// How much one graph request may produce (Atlas's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lines over all expressions of a request (`atlas.core.db.max-lines`).
    pub max_lines: usize,
    /// Lines times points per line (`atlas.core.db.max-datapoints`).
    pub max_datapoints: usize,
    /// Points per line (`atlas.webapi.graph.max-datapoints`).
    pub max_points_per_line: usize,
    /// Bytes the evaluation may hold at once: the lines of every expression it is working
    /// on, read buffers and accumulators (`usize::MAX` for none).
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_lines: 1024,
            max_datapoints: 500_000,
            max_points_per_line: MAX_POINTS_PER_LINE,
            max_memory_bytes: DEFAULT_MAX_MEMORY_BYTES,
        }
    }
}

pub(crate) use data::no_data;

/// The output grid, the time zone for absolute times, and the request's line budget.
/// Values are at `start_ms, start_ms + step_ms, ..., end_ms` (both included).
#[derive(Clone)]
pub(crate) struct EvalContext {
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    /// Lines earlier expressions of the request produced.
    pub lines_used: usize,
    pub limits: Limits,
    pub tz: jiff::tz::TimeZone,
    pub now_ms: i64,
    /// Memory the request holds now, against `limits.max_memory_bytes`.
    pub memory: Arc<Budget>,
    /// In a cluster: where data expressions are evaluated (the nodes holding the series).
    pub fanout: Option<SharedFanout>,
}

/// Memory one request holds, kept as evaluation goes: what a node needs while it works is
/// charged before it is allocated, and once the node is done its charges (and those of the
/// nodes below it, whose lines it consumed) are replaced by the size of its own lines.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    limit: usize,
}

/// What one line costs besides its values: tags, label and the line itself.
const LINE_OVERHEAD_BYTES: usize = 256;

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    /// What is held now: hand it to [`Budget::settle`] when the work started now is done.
    pub(crate) fn mark(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Charges `bytes` about to be allocated, refusing past the limit.
    pub(crate) fn charge(&self, bytes: usize) -> Result<()> {
        let used = self
            .used
            .fetch_add(bytes, Ordering::Relaxed)
            .saturating_add(bytes);
        self.check(used)
    }

    /// The work started at `mark` is done and holds `lines`: everything charged since is
    /// let go, and the lines are held.
    pub(crate) fn settle(&self, mark: usize, lines: &[Line]) -> Result<()> {
        let used = mark.saturating_add(lines_bytes(lines));
        self.used.store(used, Ordering::Relaxed);
        self.check(used)
    }

    fn check(&self, used: usize) -> Result<()> {
        if used > self.limit {
            return Err(Error::MemoryLimit {
                requested: used,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

/// Bytes `lines` hold, as the budget counts them.
pub(crate) fn lines_bytes(lines: &[Line]) -> usize {
    lines
        .iter()
        .map(|l| l.values.len() * 8 + LINE_OVERHEAD_BYTES)
        .sum()
}

impl EvalContext {
    pub(crate) fn new(start_ms: i64, end_ms: i64, step_ms: i64, limits: Limits) -> Self {
        EvalContext {
            start_ms,
            end_ms,
            step_ms,
            lines_used: 0,
            limits,
            tz: jiff::tz::TimeZone::UTC,
            now_ms: end_ms,
            memory: Arc::new(Budget::new(limits.max_memory_bytes)),
            fanout: None,
        }
    }

    #[cfg(test)]
    pub(crate) fn with_lines_used(mut self, n: usize) -> Self {
        self.lines_used = n;
        self
    }

    /// Points per line.
    pub(crate) fn len(&self) -> usize {
        ((self.end_ms - self.start_ms) / self.step_ms + 1).max(0) as usize
    }

    fn timestamps(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len() as i64).map(|i| self.start_ms + i * self.step_ms)
    }

    /// Lines this expression may still produce.
    pub(crate) fn lines_left(&self) -> usize {
        self.limits.max_lines.saturating_sub(self.lines_used)
    }

    /// Checks that `n` more lines of `len` points fit, before they are allocated.
    pub(crate) fn check_lines(&self, n: usize, len: usize) -> Result<()> {
        let lines = self.lines_used.saturating_add(n);
        if lines > self.limits.max_lines {
            return Err(Error::TooMany {
                what: "lines",
                requested: lines,
                limit: self.limits.max_lines,
            });
        }
        let points = lines.saturating_mul(len);
        if points > self.limits.max_datapoints {
            return Err(Error::TooMany {
                what: "datapoints",
                requested: points,
                limit: self.limits.max_datapoints,
            });
        }
        Ok(())
    }
}

/// A line's legend before styling: an explicit text, or derived from its tags (so renaming a
/// tag re-derives it, as in Atlas).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Label {
    FromTags,
    Text(String),
}

/// One evaluated line.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Line {
    pub tags: TagMap,
    pub label: Label,
    pub values: Vec<f64>,
}

impl Line {
    /// The tags, the label (made from the tags when the line has none of its own) and the
    /// values, taken apart without copies.
    pub(crate) fn into_parts(self) -> (TagMap, String, Vec<f64>) {
        let label = match self.label {
            Label::FromTags => tags_label(&self.tags),
            Label::Text(t) => t,
        };
        (self.tags, label, self.values)
    }

    pub(crate) fn label(&self) -> String {
        match &self.label {
            Label::FromTags => tags_label(&self.tags),
            Label::Text(t) => t.clone(),
        }
    }

    fn derived(tags: TagMap, values: Vec<f64>) -> Line {
        Line {
            tags,
            label: Label::FromTags,
            values,
        }
    }
}

/// `k=v, k2=v2` over sorted keys (`NO TAGS` when there are none): Atlas's default legend.
pub(crate) fn tags_label(tags: &TagMap) -> String {
    if tags.is_empty() {
        return "NO TAGS".to_string();
    }
    let mut label = String::new();
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            label.push_str(", ");
        }
        label.push_str(k);
        label.push('=');
        label.push_str(v);
    }
    label
}

/// `(k1=v1 k2=v2)` in key order, or `None` when a key is missing (Atlas's `keyString`).
pub(crate) fn key_string(keys: &[String], tags: &TagMap) -> Option<String> {
    let mut out = String::from("(");
    for (i, k) in keys.iter().enumerate() {
        let v = tags.get(k)?;
        if i > 0 {
            out.push(' ');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out.push(')');
    Some(out)
}

/// Evaluates an expression to its lines.
pub(crate) fn eval(
    expr: &TimeSeriesExpr,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
) -> Result<Vec<Line>> {
    Evaluator {
        ctx,
        src,
        bound: None,
    }
    .eval(expr)
}

struct Evaluator<'a> {
    ctx: &'a EvalContext,
    src: &'a dyn SeriesSource,
    /// The line `:stat-*` placeholders refer to, inside a `:filter` condition.
    bound: Option<&'a Line>,
}

impl Evaluator<'_> {
    /// Evaluates one node: the source may stop the work (a deadline, a client gone) between
    /// any two nodes, and the node's memory is settled when it is done.
    fn eval(&self, expr: &TimeSeriesExpr) -> Result<Vec<Line>> {
        self.src.keep_going()?;
        let mark = self.ctx.memory.mark();
        let lines = self.eval_node(expr)?;
        self.ctx.memory.settle(mark, &lines)?;
        Ok(lines)
    }

    fn eval_node(&self, expr: &TimeSeriesExpr) -> Result<Vec<Line>> {
        use TimeSeriesExpr as E;
        let ctx = self.ctx;
        let len = ctx.len();
        Ok(match expr {
            E::Data(d) => data::eval_data(d, ctx, self.src)?,
            E::Constant(v) => vec![Line {
                tags: TagMap::from_pairs([("name", crate::numfmt::java_double(*v))]),
                label: Label::Text(crate::numfmt::java_double(*v)),
                values: vec![*v; len],
            }],
            E::Random => vec![generated("random", ctx.timestamps().map(random).collect())],
            E::SeededRandom(seed) => vec![generated(
                &format!("seeded-random({seed})"),
                ctx.timestamps()
                    .map(|t| random(t ^ i64::from(*seed)))
                    .collect(),
            )],
            E::Time(mode) => vec![generated(
                mode.name(),
                ctx.timestamps().map(|t| time_value(*mode, t)).collect(),
            )],
            E::TimeSpan(span) => {
                let (s, e) =
                    resolve_time_span(span, ctx).map_err(|reason| Error::InvalidParam {
                        name: "q",
                        value: format!("{},{},:time-span", span.start, span.end),
                        reason,
                    })?;
                vec![generated(
                    &format!("{} to {}", span.start, span.end),
                    ctx.timestamps()
                        .map(|t| if s <= t && t <= e { 1.0 } else { 0.0 })
                        .collect(),
                )]
            }
            E::Unary(op, inner) => map_lines(self.eval(inner)?, |v| op.apply(v, ctx.step_ms)),
            E::Clamp { max, bound, expr } => {
                let (max, bound) = (*max, *bound);
                map_lines(self.eval(expr)?, |v| {
                    if max && v > bound || !max && v < bound {
                        bound
                    } else {
                        v
                    }
                })
            }
            E::Binary(op, a, b) => self.binary(*op, a, b)?,
            E::Aggregate(op, inner) => {
                let lines = self.eval(inner)?;
                if lines.is_empty() {
                    return Ok(vec![no_data(None, len)]);
                }
                let keys = exact_keys(inner, false);
                let tags = filter_tags(&lines[0].tags, keys.as_deref(), &[]);
                let values = aggregate_values(*op, lines.iter().map(|l| &l.values[..]), len);
                vec![Line {
                    label: Label::Text(format!("{}({})", op.word(), tags_label(&tags))),
                    tags,
                    values,
                }]
            }
            E::GroupBy { op, expr, keys } => {
                let lines = self.eval(expr)?;
                let query_keys = exact_keys(expr, true);
                let mut groups: Vec<(String, Vec<&Line>)> = Vec::new();
                let mut index: AHashMap<String, usize> = AHashMap::new();
                for line in &lines {
                    let Some(k) = key_string(keys, &line.tags) else {
                        continue;
                    };
                    match index.get(&k) {
                        Some(&i) => groups[i].1.push(line),
                        None => {
                            index.insert(k.clone(), groups.len());
                            groups.push((k, vec![line]));
                        }
                    }
                }
                groups.sort_by(|a, b| a.0.cmp(&b.0));
                groups
                    .into_iter()
                    .map(|(k, members)| Line {
                        tags: filter_tags(&members[0].tags, query_keys.as_deref(), keys),
                        label: Label::Text(k),
                        values: aggregate_values(*op, members.iter().map(|l| &l.values[..]), len),
                    })
                    .collect()
            }
            E::As { expr, from, to } => {
                let mut lines = self.eval(expr)?;
                for line in &mut lines {
                    if let Some(v) = line.tags.remove(from) {
                        line.tags.insert(to.clone(), v);
                    }
                }
                lines
            }
            E::Rewrite(nr) => self.eval(&nr.expand())?,
            E::Percentiles(p) => percentiles::eval(p, ctx, self.src)?,
            E::Stateful(op, inner) => {
                if let crate::model::StatefulOp::Trend(window_ms) = op {
                    let steps = window_ms / ctx.step_ms.max(1);
                    if steps > crate::model::MAX_WINDOW as i64 {
                        return Err(Error::Evaluation(format!(
                            "invalid parameters for word ':trend': its window of {window_ms} ms \
                             is {steps} steps of {} ms, over the limit of {} steps",
                            ctx.step_ms,
                            crate::model::MAX_WINDOW
                        )));
                    }
                }
                let start_ms = ctx.start_ms;
                self.eval(inner)?
                    .into_iter()
                    .map(|line| {
                        let label = Label::Text(format!("{}({})", op.word(), line.label()));
                        let values = online::apply(op, &line.values, start_ms, ctx.step_ms);
                        Line {
                            tags: line.tags,
                            label,
                            values,
                        }
                    })
                    .collect()
            }
            E::Stat { stat, expr } => self
                .eval(expr)?
                .into_iter()
                .map(|line| stat_line(*stat, &line))
                .collect(),
            E::StatPlaceholder(stat) => match self.bound {
                Some(line) => vec![stat_line(*stat, line)],
                None => Vec::new(),
            },
            E::Filter { expr, cond } => self.filter(expr, cond)?,
            E::TopK(t) => self.topk(t)?,
        })
    }

    /// A binary operation, joining grouped lines on the group keys (Atlas's rule: the side
    /// with fewer keys is looked up by the other side's lines; the result keeps the tags of
    /// the side with more keys).
    fn binary(
        &self,
        op: crate::model::BinaryOp,
        a: &TimeSeriesExpr,
        b: &TimeSeriesExpr,
    ) -> Result<Vec<Line>> {
        let (lhs, rhs) = (self.eval(a)?, self.eval(b)?);
        let (ga, gb) = (a.grouping(), b.grouping());
        let rhs_subset = gb.iter().all(|k| ga.contains(k));
        // (outer side, its lines, looked-up side's lines, lookup keys)
        let (outer, inner, keys, outer_is_lhs) = if rhs_subset {
            (lhs, rhs, gb, true)
        } else {
            (rhs, lhs, ga, false)
        };
        let key = |tags: &TagMap| -> Option<Option<String>> {
            if keys.is_empty() {
                Some(None)
            } else {
                key_string(&keys, tags).map(Some)
            }
        };
        let mut index: AHashMap<Option<String>, Vec<usize>> = AHashMap::new();
        for (i, line) in inner.iter().enumerate() {
            if let Some(k) = key(&line.tags) {
                index.entry(k).or_default().push(i);
            }
        }
        let mut out = Vec::with_capacity(outer.len());
        for line in outer {
            let Some(k) = key(&line.tags) else { continue };
            let Some(matches) = index.get(&k) else {
                continue;
            };
            let [m] = matches.as_slice() else {
                return Err(Error::Evaluation(format!(
                    "too many values for key: binary operation :{} matched {} lines to one line \
                     (group {})",
                    op.word(),
                    matches.len(),
                    k.as_deref().unwrap_or("(no grouping)")
                )));
            };
            let other = &inner[*m];
            let values = line
                .values
                .iter()
                .zip(&other.values)
                .map(|(&x, &y)| {
                    if outer_is_lhs {
                        op.apply(x, y)
                    } else {
                        op.apply(y, x)
                    }
                })
                .collect();
            out.push(Line::derived(line.tags, values));
        }
        Ok(out)
    }

    fn filter(&self, expr: &TimeSeriesExpr, cond: &TimeSeriesExpr) -> Result<Vec<Line>> {
        let lines = self.eval(expr)?;
        if cond.has_placeholder() {
            // `:stat-*` stand for each line's own statistics: evaluate the condition per line.
            let mut kept = Vec::new();
            for line in lines {
                let per_line = Evaluator {
                    ctx: self.ctx,
                    src: self.src,
                    bound: Some(&line),
                };
                let c = per_line.eval(cond)?;
                if c.iter().any(|l| l.values.iter().any(|&v| truthy(v))) {
                    kept.push(line);
                }
            }
            return Ok(kept);
        }
        let conds = self.eval(cond)?;
        if expr.is_grouped() && cond.is_grouped() {
            let keys = expr.grouping();
            let mut by_key: AHashMap<String, Vec<&Line>> = AHashMap::new();
            for c in &conds {
                if let Some(k) = key_string(&keys, &c.tags) {
                    by_key.entry(k).or_default().push(c);
                }
            }
            return Ok(lines
                .into_iter()
                .filter(|line| {
                    key_string(&keys, &line.tags)
                        .and_then(|k| by_key.get(&k))
                        .is_some_and(|cs| cs.len() == 1 && cs[0].values.iter().any(|&v| truthy(v)))
                })
                .collect());
        }
        if conds.len() != 1 {
            return Err(Error::Evaluation(format!(
                "the condition of :filter must give exactly one line, it gave {}",
                conds.len()
            )));
        }
        Ok(if conds[0].values.iter().any(|&v| truthy(v)) {
            lines
        } else {
            Vec::new()
        })
    }

    fn topk(&self, t: &TopK) -> Result<Vec<Line>> {
        let lines = self.eval(&t.expr)?;
        let keys = t.expr.grouping();
        let mut heap = JavaHeap::new(t.bottom);
        let mut others: Vec<Line> = Vec::new();
        for line in lines {
            let stat = stats(&line.values).get(t.stat);
            let entry = (stat, line);
            if heap.items.len() < t.k {
                heap.offer(entry);
            } else if heap.higher_priority(&entry, &heap.items[0]) {
                if let Some(evicted) = heap.poll() {
                    others.push(evicted.1);
                }
                heap.offer(entry);
            } else {
                others.push(entry.1);
            }
        }
        let mut out = Vec::with_capacity(heap.items.len() + 1);
        if let (Some(aggr), Some(first)) = (t.others, others.first()) {
            let mut tags = first.tags.clone();
            for k in &keys {
                tags.insert(k.clone(), "--others--".to_string());
            }
            out.push(Line::derived(
                tags,
                others_values(aggr, &others, self.ctx.len()),
            ));
        }
        out.extend(heap.items.into_iter().map(|(_, l)| l));
        Ok(out)
    }
}

fn generated(name: &str, values: Vec<f64>) -> Line {
    Line {
        tags: TagMap::from_pairs([("name", name)]),
        label: Label::Text(name.to_string()),
        values,
    }
}

fn map_lines(lines: Vec<Line>, f: impl Fn(f64) -> f64) -> Vec<Line> {
    lines
        .into_iter()
        .map(|l| Line::derived(l.tags, l.values.into_iter().map(&f).collect()))
        .collect()
}

/// Keys fixed by `:eq` in the data expressions' queries: of the first one, or (`all`) those
/// common to every one. `None` when the expression reads no data (constants), meaning the
/// line's tags are kept as they are.
fn exact_keys(expr: &TimeSeriesExpr, all: bool) -> Option<Vec<String>> {
    let mut queries: Vec<Query> = Vec::new();
    collect_queries(expr, &mut queries);
    let mut sets = queries.iter().map(|q| {
        q.exact_tags()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
    });
    let first = sets.next()?;
    if !all {
        return Some(first);
    }
    Some(sets.fold(first, |acc, s| {
        acc.into_iter().filter(|k| s.contains(k)).collect()
    }))
}

fn collect_queries(expr: &TimeSeriesExpr, out: &mut Vec<Query>) {
    match expr {
        TimeSeriesExpr::Data(d) => out.push(d.query().clone()),
        TimeSeriesExpr::Percentiles(p) => out.push(p.query.clone()),
        TimeSeriesExpr::Rewrite(nr) => collect_queries(&nr.expand(), out),
        other => {
            for c in other.children() {
                collect_queries(c, out);
            }
        }
    }
}

/// `tags` limited to `keys ∪ extra` (all of `tags` when `keys` is `None`).
fn filter_tags(tags: &TagMap, keys: Option<&[String]>, extra: &[String]) -> TagMap {
    match keys {
        None => tags.clone(),
        Some(keys) => tags
            .iter()
            .filter(|(k, _)| keys.iter().any(|x| x == k) || extra.iter().any(|x| x == k))
            .collect(),
    }
}

/// Per-step aggregate over lines: NaN ignored; the result is NaN where every input is NaN
/// (also for `:count`, as Atlas's math-level count).
fn aggregate_values<'a>(
    op: MathAggr,
    lines: impl Iterator<Item = &'a [f64]>,
    len: usize,
) -> Vec<f64> {
    let mut acc = vec![f64::NAN; len];
    for values in lines {
        for (a, &v) in acc.iter_mut().zip(values) {
            *a = match op {
                MathAggr::Sum => add_nan(*a, v),
                MathAggr::Count => {
                    if v.is_nan() {
                        *a
                    } else {
                        add_nan(*a, 1.0)
                    }
                }
                MathAggr::Min => a.min(v),
                MathAggr::Max => a.max(v),
            };
        }
    }
    acc
}

/// Window statistics of a line (Atlas's `SummaryStats`): NaN ignored.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub count: usize,
    pub total: f64,
    pub max: f64,
    pub min: f64,
    pub last: f64,
}

impl Stats {
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.total / self.count as f64
        }
    }

    pub(crate) fn get(&self, stat: StatKind) -> f64 {
        match stat {
            StatKind::Avg => self.avg(),
            StatKind::Max => self.max,
            StatKind::Min => self.min,
            StatKind::Last => self.last,
            StatKind::Total => self.total,
            StatKind::Count => self.count as f64,
        }
    }
}

pub(crate) fn stats(values: &[f64]) -> Stats {
    let mut s = Stats {
        count: 0,
        total: 0.0,
        max: f64::NEG_INFINITY,
        min: f64::INFINITY,
        last: f64::NAN,
    };
    for &v in values.iter().filter(|v| !v.is_nan()) {
        s.count += 1;
        s.total += v;
        s.max = s.max.max(v);
        s.min = s.min.min(v);
        s.last = v;
    }
    if s.count == 0 {
        s.total = f64::NAN;
        s.max = f64::NAN;
        s.min = f64::NAN;
    }
    s
}

fn stat_line(stat: StatKind, line: &Line) -> Line {
    let v = stats(&line.values).get(stat);
    Line {
        tags: line.tags.clone(),
        label: Label::Text(format!("stat-{}({})", stat.name(), line.label())),
        values: vec![v; line.values.len()],
    }
}

fn others_values(aggr: OthersAggr, lines: &[Line], len: usize) -> Vec<f64> {
    let values = lines.iter().map(|l| &l.values[..]);
    match aggr {
        OthersAggr::Min => aggregate_values(MathAggr::Min, values, len),
        OthersAggr::Max => aggregate_values(MathAggr::Max, values, len),
        OthersAggr::Sum => aggregate_values(MathAggr::Sum, values, len),
        OthersAggr::Avg => {
            let sum = aggregate_values(MathAggr::Sum, values.clone(), len);
            let count = aggregate_values(MathAggr::Count, values, len);
            sum.iter().zip(&count).map(|(s, c)| s / c).collect()
        }
    }
}

/// Java's `Double.compare`: NaN above everything, -0.0 below 0.0.
fn java_compare(a: f64, b: f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (false, false) => a.total_cmp(&b),
        (x, y) => x.cmp(&y),
    }
}

/// Atlas's bounded priority buffer for `:topk` is a `java.util.PriorityQueue` whose head is
/// the lowest-priority item; its iteration (heap) order is the output order, so the same
/// sift-up and sift-down are used here to give the same lines in the same order.
struct JavaHeap {
    items: Vec<(f64, Line)>,
    bottom: bool,
}

impl JavaHeap {
    fn new(bottom: bool) -> Self {
        JavaHeap {
            items: Vec::new(),
            bottom,
        }
    }

    /// Atlas's comparator: negative when `a` has higher priority than `b`.
    fn cmp(&self, a: &(f64, Line), b: &(f64, Line)) -> std::cmp::Ordering {
        if self.bottom {
            java_compare(a.0, b.0)
        } else {
            java_compare(b.0, a.0)
        }
    }

    fn higher_priority(&self, a: &(f64, Line), b: &(f64, Line)) -> bool {
        self.cmp(a, b).is_lt()
    }

    /// The queue's comparator (the reverse of Atlas's).
    fn qcmp(&self, x: &(f64, Line), y: &(f64, Line)) -> std::cmp::Ordering {
        self.cmp(y, x)
    }

    fn offer(&mut self, x: (f64, Line)) {
        self.items.push(x);
        let mut k = self.items.len() - 1;
        while k > 0 {
            let parent = (k - 1) / 2;
            if self.qcmp(&self.items[k], &self.items[parent]).is_ge() {
                break;
            }
            self.items.swap(k, parent);
            k = parent;
        }
    }

    fn poll(&mut self) -> Option<(f64, Line)> {
        if self.items.is_empty() {
            return None;
        }
        let last = self.items.len() - 1;
        self.items.swap(0, last);
        let result = self.items.pop();
        let n = self.items.len();
        let mut k = 0;
        while k < n / 2 {
            let mut child = 2 * k + 1;
            let right = child + 1;
            if right < n && self.qcmp(&self.items[child], &self.items[right]).is_gt() {
                child = right;
            }
            if self.qcmp(&self.items[k], &self.items[child]).is_le() {
                break;
            }
            self.items.swap(k, child);
            k = child;
        }
        result
    }
}

/// Atlas's `:random`: a hash of the step's timestamp to [0, 1) in thousandths.
fn random(t: i64) -> f64 {
    fn lowbias32(mut h: i32) -> i32 {
        h ^= ((h as u32) >> 16) as i32;
        h = h.wrapping_mul(0x7FEB_352D);
        h ^= ((h as u32) >> 15) as i32;
        h = h.wrapping_mul(0x846C_A68B_u32 as i32);
        h ^= ((h as u32) >> 16) as i32;
        h
    }
    let h = lowbias32(((t as u64) >> 32) as i32) ^ lowbias32(t as i32);
    // Java's Math.abs leaves i32::MIN negative, and `%` keeps the sign.
    let abs = if h == i32::MIN { h } else { h.abs() };
    f64::from(abs % 1000) / 1000.0
}

/// `:time` values: calendar fields in UTC, or fractional epoch units.
fn time_value(mode: TimeMode, t: i64) -> f64 {
    let secs = t.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = time::civil_from_days(days);
    let day_of_year = days - time::days_from_civil(y, 1, 1).unwrap_or(days) + 1;
    match mode {
        TimeMode::SecondOfMinute => (sod % 60) as f64,
        TimeMode::SecondOfDay => sod as f64,
        TimeMode::MinuteOfHour => (sod / 60 % 60) as f64,
        TimeMode::MinuteOfDay => (sod / 60) as f64,
        TimeMode::HourOfDay => (sod / 3600) as f64,
        // 1970-01-01 was a Thursday (4); Monday is 1, Sunday 7.
        TimeMode::DayOfWeek => ((days + 3).rem_euclid(7) + 1) as f64,
        TimeMode::DayOfMonth => d as f64,
        TimeMode::DayOfYear => day_of_year as f64,
        TimeMode::MonthOfYear => m as f64,
        // Atlas maps yearOfCentury to the year field, so it gives the full year.
        TimeMode::YearOfCentury | TimeMode::YearOfEra => y as f64,
        TimeMode::Seconds => t as f64 / 1_000.0,
        TimeMode::Minutes => t as f64 / 60_000.0,
        TimeMode::Hours => t as f64 / 3_600_000.0,
        TimeMode::Days => t as f64 / 86_400_000.0,
        TimeMode::Weeks => t as f64 / 604_800_000.0,
    }
}

/// A `:time-span` end: `gs`/`ge` (graph start/end), `s`/`e` (the span's other end), or the
/// graph time syntax.
enum SpanRef {
    GraphStart,
    GraphEnd,
    /// `s`: the span's start.
    SpanStart,
    /// `e`: the span's end.
    SpanEnd,
    Time(time::TimeRef),
}

fn span_ref(text: &str, tz: &jiff::tz::TimeZone) -> Option<(SpanRef, i64)> {
    let (base, offset) = match text.find(['+', '-']) {
        Some(i) if matches!(&text[..i], "gs" | "ge" | "s" | "e") => {
            let d = time::parse_duration(&text[i + 1..])?;
            (&text[..i], if &text[i..=i] == "-" { -d } else { d })
        }
        _ => (text, 0),
    };
    match base {
        "gs" => Some((SpanRef::GraphStart, offset)),
        "ge" => Some((SpanRef::GraphEnd, offset)),
        "s" => Some((SpanRef::SpanStart, offset)),
        "e" => Some((SpanRef::SpanEnd, offset)),
        _ => time::parse_time(text, tz).map(|r| (SpanRef::Time(r), 0)),
    }
}

/// Checks a `:time-span` when it is written: both ends parse, and they are not defined in
/// terms of each other.
pub(crate) fn check_time_span(span: &TimeSpan) -> std::result::Result<(), String> {
    resolve_span_refs(span, 0, 0, 0, &jiff::tz::TimeZone::UTC).map(|_| ())
}

/// The zone a span's dates without a zone are in: the one it captured, else the graph's.
fn span_zone(span: &TimeSpan, graph: &jiff::tz::TimeZone) -> jiff::tz::TimeZone {
    span.zone
        .as_deref()
        .and_then(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or_else(|| graph.clone())
}

fn resolve_time_span(
    span: &TimeSpan,
    ctx: &EvalContext,
) -> std::result::Result<(i64, i64), String> {
    resolve_span_refs(
        span,
        ctx.start_ms,
        ctx.end_ms + ctx.step_ms,
        ctx.now_ms,
        &span_zone(span, &ctx.tz),
    )
}

fn resolve_span_refs(
    span: &TimeSpan,
    graph_start: i64,
    graph_end: i64,
    now_ms: i64,
    tz: &jiff::tz::TimeZone,
) -> std::result::Result<(i64, i64), String> {
    let parse = |text: &str| span_ref(text, tz).ok_or_else(|| format!("invalid date {text}"));
    let (s, s_off) = parse(&span.start)?;
    let (e, e_off) = parse(&span.end)?;
    // Atlas's checks, in its order.
    match (&s, &e) {
        (SpanRef::SpanEnd, SpanRef::SpanStart) => {
            return Err("start and end time are relative to each other".into());
        }
        (SpanRef::SpanStart, _) => return Err("start time is relative to itself".into()),
        (_, SpanRef::SpanEnd) => return Err("end time is relative to itself".into()),
        _ => {}
    }
    let fixed = |r: &SpanRef| -> Option<i64> {
        match r {
            SpanRef::GraphStart => Some(graph_start),
            SpanRef::GraphEnd => Some(graph_end),
            SpanRef::SpanStart | SpanRef::SpanEnd => None,
            SpanRef::Time(t) => match t.anchor {
                Anchor::Now => Some(now_ms + t.offset_ms),
                Anchor::Absolute(ms) => Some(ms + t.offset_ms),
                Anchor::Start => Some(graph_start + t.offset_ms),
                Anchor::End => Some(graph_end + t.offset_ms),
            },
        }
    };
    let (start, end) = match (fixed(&s), fixed(&e)) {
        (Some(a), Some(b)) => (a + s_off, b + e_off),
        (None, Some(b)) => (b + e_off + s_off, b + e_off),
        (Some(a), None) => (a + s_off, a + s_off + e_off),
        (None, None) => return Err("start and end time are relative to each other".into()),
    };
    if start > end {
        return Err("start must be <= end".into());
    }
    Ok((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of Atlas's `:random` / `:srandom` hash at given times (from a port of
    /// Atlas's `Hash.lowbias32`).
    #[test]
    fn random_matches_atlas() {
        let cases = [
            (0, 0.0),
            (60_000, 0.686),
            (120_000, 0.651),
            (180_000, 0.375),
            (1_700_000_000_000, 0.75),
        ];
        for (t, want) in cases {
            assert_eq!(random(t), want, "random({t})");
        }
        let seeded = [
            (0, 0.122),
            (60_000, 0.077),
            (120_000, 0.125),
            (180_000, 0.558),
        ];
        for (t, want) in seeded {
            assert_eq!(random(t ^ 42), want, "srandom 42 at {t}");
        }
    }

    #[test]
    fn calendar_fields() {
        // 2024-02-29T13:45:30Z, a Thursday.
        let t = 1_709_214_330_000;
        assert_eq!(time_value(TimeMode::SecondOfMinute, t), 30.0);
        assert_eq!(time_value(TimeMode::MinuteOfHour, t), 45.0);
        assert_eq!(time_value(TimeMode::HourOfDay, t), 13.0);
        assert_eq!(time_value(TimeMode::DayOfWeek, t), 4.0);
        assert_eq!(time_value(TimeMode::DayOfMonth, t), 29.0);
        assert_eq!(time_value(TimeMode::DayOfYear, t), 60.0);
        assert_eq!(time_value(TimeMode::MonthOfYear, t), 2.0);
        assert_eq!(time_value(TimeMode::YearOfEra, t), 2024.0);
        assert_eq!(time_value(TimeMode::Hours, 5_400_000), 1.5);
    }
}
