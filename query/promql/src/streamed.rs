//! Aggregations read straight into their groups: `sum`, `avg`, `min`, `max`, `count` and
//! `group`, by or without labels, of a selector or of `rate`, `increase`, `sum_over_time`,
//! `count_over_time` or `avg_over_time` of one. The general path builds every series' label
//! set and values before aggregating; here each series' group is found once from its tags
//! (only the grouping labels are built), and its values stream into per-group accumulators as
//! the store reads them, as the Stack Language aggregates. The answers are the general
//! path's.

use std::collections::HashMap;
use std::hash::Hasher as _;

use argus_tsdb::{Postings, SeriesId, SeriesSource, Tags};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier, VectorSelector};

use crate::Error;
use crate::eval::{Evaluation, Labels, Series, Value, step_floor};
use crate::partial::{Partial, PushedAggregate};
use crate::select::{NAME_LABEL, shown_value};

/// What each series gives at an evaluation time.
#[derive(Clone, Copy, PartialEq)]
enum PerSeries {
    /// The selector's value (the last step at or before the time, or the one before it).
    Instant,
    /// A function of the stored steps ending in `(t - range, t]`.
    Window(WindowFn, i64),
}

#[derive(Clone, Copy, PartialEq)]
enum WindowFn {
    Rate,
    Increase,
    Sum,
    Count,
    Avg,
    /// `irate` and `last_over_time`: the window's last value (the last stored rate).
    Last,
    Max,
    Min,
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
}

/// The aggregation's plan, when it has the shape this path takes.
fn plan(a: &AggregateExpr) -> Option<(Op, &VectorSelector, PerSeries)> {
    if a.param.is_some() {
        return None;
    }
    let op = match a.op.to_string().as_str() {
        "sum" => Op::Sum,
        "avg" => Op::Avg,
        "min" => Op::Min,
        "max" => Op::Max,
        "count" => Op::Count,
        "group" => Op::Group,
        _ => return None,
    };
    let mut inner = a.expr.as_ref();
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    match inner {
        Expr::VectorSelector(vs) => Some((op, vs, PerSeries::Instant)),
        Expr::Call(c) if c.args.args.len() == 1 => {
            let f = match c.func.name {
                "rate" => WindowFn::Rate,
                "increase" => WindowFn::Increase,
                "sum_over_time" => WindowFn::Sum,
                "count_over_time" => WindowFn::Count,
                "avg_over_time" => WindowFn::Avg,
                "irate" | "last_over_time" => WindowFn::Last,
                "max_over_time" => WindowFn::Max,
                "min_over_time" => WindowFn::Min,
                _ => return None,
            };
            let mut arg = c.args.args[0].as_ref();
            while let Expr::Paren(p) = arg {
                arg = &p.expr;
            }
            match arg {
                Expr::MatrixSelector(m) => Some((
                    op,
                    &m.vs,
                    PerSeries::Window(f, crate::eval::millis(m.range)),
                )),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Per group and evaluation time: the sum and count of the values (or their extremes).
struct Accumulator {
    op: Op,
    n: usize,
    values: Vec<f64>,
    counts: Vec<u32>,
}

impl Accumulator {
    fn new(op: Op, n: usize, groups: usize) -> Self {
        let mut acc = Accumulator {
            op,
            n,
            values: Vec::new(),
            counts: vec![0; groups * n],
        };
        acc.values = vec![acc.init(); groups * n];
        acc
    }

    /// A cell before any value: 0 for sums, NaN for extremes.
    fn init(&self) -> f64 {
        match self.op {
            Op::Min | Op::Max => f64::NAN,
            _ => 0.0,
        }
    }

    /// Adds another part's accumulators (the same groups and times) to these.
    fn merge(&mut self, other: &Accumulator) {
        self.merge_cells(0, other);
    }

    /// Adds one group's accumulators (`other` holds just its cells) to group `g`.
    fn merge_group(&mut self, g: usize, other: &Accumulator) {
        self.merge_cells(g * self.n, other);
    }

    fn merge_cells(&mut self, from: usize, other: &Accumulator) {
        let extreme = |pick: fn(f64, f64) -> f64| {
            move |(a, b): (&mut f64, &f64)| {
                if !b.is_nan() {
                    *a = if a.is_nan() { *b } else { pick(*a, *b) };
                }
            }
        };
        let pairs = self.values[from..].iter_mut().zip(&other.values);
        match self.op {
            Op::Sum | Op::Avg => pairs.for_each(|(a, b)| *a += b),
            Op::Min => pairs.for_each(extreme(f64::min)),
            Op::Max => pairs.for_each(extreme(f64::max)),
            Op::Count | Op::Group => {}
        }
        for (a, b) in self.counts[from..].iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Adds one series' values at each evaluation time (NaN: none) to group `g`.
    fn add_row(&mut self, g: usize, row: &[f64]) {
        let cells = g * self.n..(g + 1) * self.n;
        let values = &mut self.values[cells.clone()];
        let counts = &mut self.counts[cells];
        let each = values.iter_mut().zip(counts.iter_mut()).zip(row);
        // One loop per operation, so that no value pays for a branch on it. NaN is never
        // accumulated, so an extreme's initial NaN is replaced by the first value.
        match self.op {
            Op::Sum | Op::Avg => each.for_each(|((acc, count), &v)| {
                if !v.is_nan() {
                    *acc += v;
                    *count += 1;
                }
            }),
            Op::Min => each.for_each(|((acc, count), &v)| {
                if !v.is_nan() {
                    if acc.is_nan() || v < *acc {
                        *acc = v;
                    }
                    *count += 1;
                }
            }),
            Op::Max => each.for_each(|((acc, count), &v)| {
                if !v.is_nan() {
                    if acc.is_nan() || v > *acc {
                        *acc = v;
                    }
                    *count += 1;
                }
            }),
            Op::Count | Op::Group => each.for_each(|((_, count), &v)| {
                *count += u32::from(!v.is_nan());
            }),
        }
    }

    fn value(&self, cell: usize) -> Option<f64> {
        let count = self.counts[cell];
        (count > 0).then(|| match self.op {
            Op::Sum | Op::Min | Op::Max => self.values[cell],
            Op::Avg => self.values[cell] / f64::from(count),
            Op::Count => f64::from(count),
            Op::Group => 1.0,
        })
    }
}

impl Evaluation<'_> {
    /// The aggregation read straight into its groups, or `None` when it has another shape
    /// (the general path then answers it).
    pub(crate) fn streamed_aggregate(&mut self, a: &AggregateExpr) -> Option<Result<Value, Error>> {
        let (op, vs, per_series) = plan(a)?;
        if let PerSeries::Window(WindowFn::Rate | WindowFn::Increase, _) = per_series {
            self.note_rates();
        }
        // In a cluster the store nodes aggregate their partitions; only groups travel.
        if let Some(gather) = self.gather {
            let pushed = PushedAggregate {
                expr: a.to_string(),
                range: self.range,
            };
            if let Some(parts) = gather.aggregate(&pushed) {
                return Some(
                    parts
                        .map_err(Error::execution)
                        .and_then(|parts| self.merge_parts(op, vs, parts))
                        .map(|(groups, acc)| finish(groups, &acc)),
                );
            }
        }
        Some(
            self.stream(a, op, vs, per_series)
                .map(|(groups, acc, _)| finish(groups, &acc)),
        )
    }

    /// In a cluster, the series of a `topk`/`bottomk` that the store nodes can narrow down
    /// first: each sends its own top (or bottom) k per group and time, and the overall ones
    /// are among them. `None`: evaluate the input here.
    pub(crate) fn pushed_top(
        &mut self,
        a: &AggregateExpr,
        op: &str,
    ) -> Option<Result<Vec<Series>, Error>> {
        if !matches!(op, "topk" | "bottomk") || !crate::partial::pushable_top(a) {
            return None;
        }
        let gather = self.gather?;
        let pushed = PushedAggregate {
            expr: a.to_string(),
            range: self.range,
        };
        let series = gather.top(&pushed)?;
        Some(series.map_err(Error::execution).and_then(|series| {
            if series.len() > self.max_series {
                return Err(Error::execution(format!(
                    "{a} selects {} series, more than the limit of {} (--query-max-series)",
                    series.len(),
                    self.max_series
                )));
            }
            Ok(series)
        }))
    }

    /// This store's share of an aggregation the streamed path takes: its groups'
    /// accumulators, as a store node sends them to the node merging the parts.
    pub(crate) fn partial_aggregate(&mut self, a: &AggregateExpr) -> Result<Partial, Error> {
        let Some((op, vs, per_series)) = plan(a) else {
            return Err(Error::bad_data(format!(
                "{a} is not an aggregation to push down"
            )));
        };
        let (groups, acc, series) = self.stream(a, op, vs, per_series)?;
        Ok(Partial {
            series,
            len: acc.n,
            groups,
            values: acc.values,
            counts: acc.counts,
        })
    }

    /// The store nodes' parts merged, group by group, as one store's scan would have
    /// accumulated them; the query's series limit holds for their total.
    fn merge_parts(
        &self,
        op: Op,
        vs: &VectorSelector,
        parts: Vec<Partial>,
    ) -> Result<(Vec<Labels>, Accumulator), Error> {
        let n = self.range.len();
        let series: u64 = parts.iter().map(|p| p.series).sum();
        if series > self.max_series as u64 {
            return Err(Error::execution(format!(
                "the selector {vs} matches {series} series, more than the limit of {} \
                 (--query-max-series)",
                self.max_series
            )));
        }
        let mut groups: Vec<Labels> = Vec::new();
        let mut index: HashMap<Labels, usize> = HashMap::new();
        let mut acc = Accumulator::new(op, n, 0);
        for part in parts {
            let cells = part.groups.len() * n;
            if part.len != n || part.values.len() != cells || part.counts.len() != cells {
                return Err(Error::execution(format!(
                    "a store node's part has {} times, not {n}",
                    part.len
                )));
            }
            let mut one = Accumulator::new(op, n, 0);
            for (i, labels) in part.groups.into_iter().enumerate() {
                let g = match index.get(&labels) {
                    Some(&g) => g,
                    None => {
                        index.insert(labels.clone(), groups.len());
                        groups.push(labels);
                        acc.values.extend(std::iter::repeat_n(acc.init(), n));
                        acc.counts.extend(std::iter::repeat_n(0, n));
                        groups.len() - 1
                    }
                };
                // This part's group laid on the merged group's cells, then merged.
                one.values.clear();
                one.counts.clear();
                one.values
                    .extend_from_slice(&part.values[i * n..(i + 1) * n]);
                one.counts
                    .extend_from_slice(&part.counts[i * n..(i + 1) * n]);
                acc.merge_group(g, &one);
            }
        }
        Ok((groups, acc))
    }

    /// The groups and accumulators of an aggregation over the evaluation's store, and how
    /// many series it selected.
    fn stream(
        &mut self,
        a: &AggregateExpr,
        op: Op,
        vs: &VectorSelector,
        per_series: PerSeries,
    ) -> Result<(Vec<Labels>, Accumulator, u64), Error> {
        let stored = self.source.step_ms().max(1);
        let times: Vec<i64> = self
            .range
            .times()
            .map(|t| self.selector_time(t, &vs.offset, &vs.at))
            .collect();
        let n = times.len();
        let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
            return Ok((Vec::new(), Accumulator::new(op, n, 0), 0));
        };
        let reach = match per_series {
            PerSeries::Instant => stored,
            PerSeries::Window(_, range) => range,
        };
        let selection = self.selection(
            vs,
            step_floor(lo, stored).saturating_sub(reach),
            step_floor(hi, stored),
        )?;

        let (ids, req) = (&selection.ids, &selection.req);
        let source = selection.source(self.source);
        // Each series' group, from its tags: found by a hash of the grouping labels' values,
        // so that nothing is built per series, only per group.
        // A function drops the series' name, but for `last_over_time`.
        let has_name = per_series == PerSeries::Instant || keeps_name(a);
        let mut members: Vec<(SeriesId, u32)> = Vec::with_capacity(ids.len() as usize);
        let mut groups: Vec<Labels> = Vec::new();
        let mut by_hash: HashMap<u64, Vec<u32>> = HashMap::new();
        // Without a grouping every series is in the one group: no tags to read.
        let grouped = a.modifier.is_some();
        if !grouped {
            groups.push(Labels::new());
        }
        let none = Postings::new();
        source.visit_tags(if grouped { ids } else { &none }, &mut |id, tags| {
            let mut hasher = std::hash::DefaultHasher::new();
            let mut count = 0usize;
            group_view(&a.modifier, tags, has_name, &mut |label, value| {
                hasher.write(label.as_bytes());
                hasher.write_u8(0xff);
                hasher.write(value.as_bytes());
                hasher.write_u8(0xfe);
                count += 1;
            });
            let hash = hasher.finish();
            let is_group = |labels: &Labels| {
                let mut same = labels.len() == count;
                group_view(&a.modifier, tags, has_name, &mut |label, value| {
                    same &= labels.get(label).is_some_and(|v| v == value);
                });
                same
            };
            let candidates = by_hash.entry(hash).or_default();
            let g = match candidates
                .iter()
                .copied()
                .find(|&g| is_group(&groups[g as usize]))
            {
                Some(g) => g,
                None => {
                    let mut labels = Labels::new();
                    group_view(&a.modifier, tags, has_name, &mut |label, value| {
                        labels.insert(label.to_string(), value.to_string());
                    });
                    let g = groups.len() as u32;
                    groups.push(labels);
                    candidates.push(g);
                    g
                }
            };
            members.push((id, g));
        });
        let group_of = GroupOf::new(grouped, members);
        let mut acc = Accumulator::new(op, n, groups.len());
        if !req.is_empty() {
            let first = req.start_ms;
            let len = req.len() as i64;
            // The index into the read of the step ending at `ts`, or `usize::MAX` outside it.
            let step_index = move |ts: i64| {
                let i = ts.saturating_sub(first).div_euclid(stored);
                if (0..len).contains(&i) {
                    i as usize
                } else {
                    usize::MAX
                }
            };
            // Per evaluation time, once for all series: the step an instant reads and the one
            // before it (the lookback), or the window's steps.
            let spans: Vec<(usize, usize)> = times
                .iter()
                .map(|&t| {
                    let end = step_floor(t, stored);
                    match per_series {
                        PerSeries::Instant => (step_index(end), step_index(end - stored)),
                        PerSeries::Window(_, range) => {
                            let last = end.saturating_sub(first).div_euclid(stored);
                            // Steps ending after `t - range`.
                            let lo = t
                                .saturating_sub(range)
                                .saturating_sub(first)
                                .div_euclid(stored)
                                + 1;
                            let (lo, hi) = (lo.max(0), last.min(len - 1));
                            if hi < lo {
                                (usize::MAX, usize::MAX)
                            } else {
                                (lo as usize, hi as usize)
                            }
                        }
                    }
                })
                .collect();
            let step_s = stored as f64 / 1000.0;
            let (group_of, spans) = (&group_of, &spans);
            let groups_len = groups.len();
            // One part of the series into its own accumulators.
            let scan = |part: &Postings| -> Result<Accumulator, Error> {
                let mut acc = Accumulator::new(op, n, groups_len);
                let mut prefix: Vec<(f64, u32)> = Vec::new();
                let mut row = vec![f64::NAN; n];
                source
                    .visit_values(part, req, &mut |id, values| {
                        let Some(g) = group_of.get(id) else {
                            return;
                        };
                        per_series_row(per_series, values, spans, step_s, &mut prefix, &mut row);
                        acc.add_row(g as usize, &row);
                    })
                    .map_err(|e| Error::execution(e.to_string()))?;
                Ok(acc)
            };
            acc = scan_parallel(source, ids, scan)?;
        }
        Ok((groups, acc, ids.len()))
    }
}

/// The answer from the groups' accumulators: a series per group with a value, in label
/// order, as the general path (which reads series in that order) gives them.
fn finish(groups: Vec<Labels>, acc: &Accumulator) -> Value {
    let n = acc.n;
    let mut out: Vec<Series> = groups
        .into_iter()
        .enumerate()
        .map(|(g, labels)| Series {
            labels,
            points: (0..n).map(|ti| acc.value(g * n + ti)).collect(),
        })
        .filter(|s| s.points.iter().any(Option::is_some))
        .collect();
    out.sort_by(|a, b| a.labels.cmp(&b.labels));
    Value::Vector(out)
}

/// Each series' group, looked up by id as the store hands the values over: one group, a table
/// over the ids' span when they are dense, else a hash map.
enum GroupOf {
    One,
    Dense { min: SeriesId, groups: Vec<u32> },
    Sparse(ahash::AHashMap<SeriesId, u32>),
}

impl GroupOf {
    fn new(grouped: bool, members: Vec<(SeriesId, u32)>) -> GroupOf {
        if !grouped {
            return GroupOf::One;
        }
        let (Some(min), Some(max)) = (
            members.iter().map(|m| m.0).min(),
            members.iter().map(|m| m.0).max(),
        ) else {
            return GroupOf::Sparse(Default::default());
        };
        let span = (max - min) as usize + 1;
        if span <= 4 * members.len() {
            let mut groups = vec![u32::MAX; span];
            for (id, g) in members {
                groups[(id - min) as usize] = g;
            }
            GroupOf::Dense { min, groups }
        } else {
            GroupOf::Sparse(members.into_iter().collect())
        }
    }

    #[inline]
    fn get(&self, id: SeriesId) -> Option<u32> {
        match self {
            GroupOf::One => Some(0),
            GroupOf::Dense { min, groups } => id
                .checked_sub(*min)
                .and_then(|i| groups.get(i as usize))
                .copied()
                .filter(|&g| g != u32::MAX),
            GroupOf::Sparse(map) => map.get(&id).copied(),
        }
    }
}

/// Series over which a scan is split across threads, at the least per thread (as the Stack
/// Language splits its scans).
const PARALLEL_MIN_SERIES: u64 = 1_024;
const MAX_SCAN_THREADS: usize = 4;

/// Scans `ids` in parts on up to as many threads as there are cores, each part read where
/// it lies in the store (`SeriesSource::partition`), and merges the parts' accumulators.
fn scan_parallel(
    source: &dyn SeriesSource,
    ids: &Postings,
    scan: impl Fn(&Postings) -> Result<Accumulator, Error> + Sync,
) -> Result<Accumulator, Error> {
    let cores = argus_tsdb::scan_cores();
    let threads = (ids.len() / PARALLEL_MIN_SERIES).clamp(1, cores.min(MAX_SCAN_THREADS) as u64);
    if threads <= 1 {
        return scan(ids);
    }
    let parts = source.partition(ids, threads as usize);
    let results = argus_tsdb::scan_parts(&parts, &scan);
    let mut merged: Option<Accumulator> = None;
    for part in results {
        let part = part.unwrap_or_else(|| Err(Error::execution("a query worker thread failed")))?;
        match merged.as_mut() {
            None => merged = Some(part),
            Some(m) => m.merge(&part),
        }
    }
    merged.ok_or_else(|| Error::execution("a scan without parts"))
}

/// One series' value at each evaluation time into `row` (NaN: none): the instant's step or
/// the one before it, or the window function over the window's steps.
fn per_series_row(
    per_series: PerSeries,
    values: &[f64],
    spans: &[(usize, usize)],
    step_s: f64,
    prefix: &mut Vec<(f64, u32)>,
    row: &mut [f64],
) {
    let read = |i: usize| values.get(i).copied().unwrap_or(f64::NAN);
    match per_series {
        PerSeries::Instant => {
            for (out, &(at, before)) in row.iter_mut().zip(spans) {
                let v = read(at);
                *out = if v.is_nan() { read(before) } else { v };
            }
        }
        PerSeries::Window(f @ (WindowFn::Last | WindowFn::Max | WindowFn::Min), _) => {
            for (out, &(lo, hi)) in row.iter_mut().zip(spans) {
                *out = f64::NAN;
                if lo == usize::MAX {
                    continue;
                }
                let mut window = values[lo..=hi].iter().copied().filter(|v| !v.is_nan());
                *out = match f {
                    WindowFn::Last => window.next_back().unwrap_or(f64::NAN),
                    WindowFn::Max => {
                        window.fold(f64::NAN, |a, v| if a.is_nan() || v > a { v } else { a })
                    }
                    _ => window.fold(f64::NAN, |a, v| if a.is_nan() || v < a { v } else { a }),
                };
            }
        }
        PerSeries::Window(f, range) => {
            // Sums and counts of the values before each step, so that each window is two
            // lookups however long it is.
            prefix.clear();
            prefix.push((0.0, 0));
            let (mut sum, mut count) = (0.0, 0u32);
            for v in values {
                if !v.is_nan() {
                    sum += v;
                    count += 1;
                }
                prefix.push((sum, count));
            }
            let range_s = range as f64 / 1000.0;
            for (out, &(lo, hi)) in row.iter_mut().zip(spans) {
                *out = f64::NAN;
                if lo == usize::MAX {
                    continue;
                }
                let (s0, c0) = prefix[lo];
                let (s1, c1) = prefix[hi + 1];
                let count = c1 - c0;
                if count == 0 {
                    continue;
                }
                let sum = s1 - s0;
                *out = match f {
                    WindowFn::Rate => sum * step_s / range_s,
                    WindowFn::Increase => sum * step_s,
                    WindowFn::Sum => sum,
                    WindowFn::Count => f64::from(count),
                    WindowFn::Avg => sum / f64::from(count),
                    WindowFn::Last | WindowFn::Max | WindowFn::Min => f64::NAN,
                };
            }
        }
    }
}

/// Whether the aggregated expression keeps its series' names: `last_over_time` does, as in
/// Prometheus.
fn keeps_name(a: &AggregateExpr) -> bool {
    let mut inner = a.expr.as_ref();
    while let Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    matches!(inner, Expr::Call(c) if c.func.name == "last_over_time")
}

/// Calls `f` with each label of a series' group and its value, as PromQL shows them: the
/// `by` labels it has, or all its labels but the `without` ones and the name. A series read
/// through a function has lost its name.
fn group_view(
    modifier: &Option<LabelModifier>,
    tags: &dyn Tags,
    has_name: bool,
    f: &mut dyn FnMut(&str, &str),
) {
    match modifier {
        Some(LabelModifier::Include(keep)) => {
            for (i, label) in keep.labels.iter().enumerate() {
                // A label listed twice is one label of the group.
                if (label == NAME_LABEL && !has_name) || keep.labels[..i].contains(label) {
                    continue;
                }
                let key = if label == NAME_LABEL { "name" } else { label };
                if let Some(v) = tags.get(key)
                    && !v.is_empty()
                {
                    f(label, shown_value(key, v));
                }
            }
        }
        Some(LabelModifier::Exclude(drop)) => {
            tags.for_each(&mut |k, v| {
                if k == "name" || crate::select::HIDDEN_TAGS.contains(&k) {
                    return;
                }
                if !drop.labels.iter().any(|l| l == k) {
                    f(k, shown_value(k, v));
                }
            });
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use argus_tsdb::{DsType, Store, StoreConfig, TagMap};

    use crate::{Evaluation, QueryRange, Series, Value};

    const T0: i64 = 1_767_225_600_000;
    const STEP: i64 = 60_000;

    /// Gauges and counters with gaps, over apps, zones and a label only some series have.
    fn store() -> Store {
        store_of(|_| true)
    }

    /// The store's series whose number `keep` takes (the same values whatever is kept).
    fn store_of(keep: impl Fn(usize) -> bool) -> Store {
        let store = Store::with_clock(
            StoreConfig::new(STEP, 6 * 3_600_000),
            Arc::new(|| T0 + 3_600_000),
        );
        let mut rng = fastrand::Rng::with_seed(7);
        for i in 0..60 {
            let app = format!("app{}", i % 4);
            let zone = format!("z{}", i % 3);
            let mut pairs = vec![("app", app.as_str()), ("zone", zone.as_str())];
            if i % 5 == 0 {
                pairs.push(("canary", "yes"));
            }
            for (name, dstype) in [("lat", DsType::Gauge), ("hits_total", DsType::Counter)] {
                let mut tags = TagMap::from_pairs(pairs.iter().copied());
                tags.insert("name".into(), name.into());
                let id = keep(i).then(|| store.writer().resolve_as(&tags, dstype));
                let mut total = 0.0;
                for t in 0..50 {
                    total += rng.f64() * 100.0;
                    if rng.u32(..10) == 0 {
                        continue; // a gap
                    }
                    let v = if dstype == DsType::Gauge {
                        rng.f64() * 50.0
                    } else {
                        total
                    };
                    if let Some(id) = id {
                        store.writer().append(id, T0 + t * STEP, v).unwrap();
                    }
                }
            }
        }
        store
    }

    /// The answer, its series in label order.
    fn eval(store: &Store, q: &str, range: QueryRange) -> Value {
        let expr = crate::parse(q).unwrap();
        match Evaluation::new(store, range, 10_000).eval(&expr).unwrap() {
            Value::Vector(mut v) => {
                v.sort_by(|a, b| a.labels.cmp(&b.labels));
                Value::Vector(v)
            }
            other => other,
        }
    }

    /// Values equal to within float summation order.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Vector(a), Value::Vector(b)) => {
                a.len() == b.len()
                    && a.iter().zip(b).all(|(x, y)| {
                        x.labels == y.labels
                            && x.points.len() == y.points.len()
                            && x.points.iter().zip(&y.points).all(|(p, q)| match (p, q) {
                                (Some(p), Some(q)) => {
                                    (p - q).abs() <= 1e-9 * p.abs().max(q.abs()).max(1.0)
                                }
                                (None, None) => true,
                                _ => false,
                            })
                    })
            }
            _ => false,
        }
    }

    #[test]
    fn streamed_aggregations_answer_as_the_general_path() {
        let store = store();
        let ranges = [
            QueryRange {
                start_ms: T0,
                end_ms: T0 + 49 * STEP,
                step_ms: STEP,
            },
            QueryRange {
                start_ms: T0 + 17_000,
                end_ms: T0 + 55 * STEP,
                step_ms: 90_000,
            },
            QueryRange::instant(T0 + 20 * STEP + 5_000),
        ];
        let mut checked = 0;
        for op in ["sum", "avg", "min", "max", "count", "group"] {
            for grouping in [
                "",
                " by (app)",
                " by (canary)",
                " by (zone, canary, __name__)",
                " by (app, zone, app)",
                " without (zone)",
                " without (app, zone, canary)",
            ] {
                for inner in [
                    "lat",
                    "lat offset 3m",
                    "rate(hits_total[5m])",
                    "increase(hits_total[10m])",
                    "sum_over_time(lat[4m30s])",
                    "count_over_time(lat[7m])",
                    "avg_over_time(lat[2m])",
                    "irate(hits_total[5m])",
                    "last_over_time(lat[3m])",
                    "max_over_time(lat[4m30s])",
                    "min_over_time(lat[2m] offset 1m)",
                ] {
                    for range in ranges {
                        // `* 1` takes the general path (and drops the name, as the
                        // functions and aggregations do).
                        let streamed = eval(&store, &format!("{op}{grouping} ({inner})"), range);
                        let general = eval(&store, &format!("{op}{grouping} ({inner} * 1)"), range);
                        let name_kept = grouping.contains("__name__")
                            && (inner.starts_with("lat") || inner.starts_with("last_over_time"));
                        if !name_kept {
                            assert!(
                                same(&streamed, &general),
                                "{op}{grouping} ({inner}) over {range:?}:\n{streamed:?}\n{general:?}"
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 600, "{checked}");
    }

    /// Two stores, each with part of the series, as a cluster's store nodes: selectors
    /// gather from both, aggregations are pushed down to both and their parts merged.
    struct Split(Vec<Store>, std::sync::atomic::AtomicUsize);

    impl crate::Gather for Split {
        fn series(
            &self,
            selector: &str,
            first_ms: i64,
            last_ms: i64,
        ) -> Result<Vec<(TagMap, Vec<f64>)>, String> {
            use argus_tsdb::{Consolidation, ReadRequest, SeriesSource};
            let matcher = crate::series_matcher(selector).map_err(|e| e.message)?;
            let mut out = Vec::new();
            for store in &self.0 {
                let ids = store.select(&matcher);
                let mut tags = std::collections::HashMap::new();
                store.visit_tags(&ids, &mut |id, t| {
                    tags.insert(id, t.to_map());
                });
                let req = ReadRequest {
                    start_ms: first_ms,
                    end_ms: last_ms,
                    step_ms: STEP,
                    cf: Consolidation::Avg,
                };
                store
                    .visit_values(&ids, &req, &mut |id, v| {
                        out.push((tags.remove(&id).unwrap(), v.to_vec()));
                    })
                    .map_err(|e| e.to_string())?;
            }
            Ok(out)
        }

        fn top(&self, pushed: &crate::PushedAggregate) -> Option<Result<Vec<Series>, String>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut all = Vec::new();
            for store in &self.0 {
                match crate::evaluate_top(store, pushed, (i64::MIN / 4, i64::MAX / 4), 10_000) {
                    // As the series travel between nodes.
                    Ok(series) => match crate::decode_series(&crate::encode_series(&series)) {
                        Ok(series) => all.extend(series),
                        Err(e) => return Some(Err(e)),
                    },
                    Err(e) => return Some(Err(e.message)),
                }
            }
            Some(Ok(all))
        }

        fn aggregate(
            &self,
            pushed: &crate::PushedAggregate,
        ) -> Option<Result<Vec<crate::Partial>, String>> {
            Some(
                self.0
                    .iter()
                    .map(|store| {
                        let part = crate::evaluate_partial(
                            store,
                            pushed,
                            (i64::MIN / 4, i64::MAX / 4),
                            10_000,
                        )
                        .map_err(|e| e.message)?;
                        // As the part travels between nodes.
                        crate::Partial::decode(&part.encode())
                    })
                    .collect(),
            )
        }
    }

    #[test]
    fn aggregations_over_split_stores_answer_as_one_store() {
        let whole = store();
        let split = Split(
            vec![store_of(|i| i % 3 == 0), store_of(|i| i % 3 != 0)],
            Default::default(),
        );
        let range = QueryRange {
            start_ms: T0 + 17_000,
            end_ms: T0 + 55 * STEP,
            step_ms: 60_000,
        };
        let mut checked = 0;
        for q in [
            "sum(lat)",
            "avg by (app) (lat)",
            "min without (zone) (lat offset 2m)",
            "max by (canary) (rate(hits_total[5m]))",
            "count by (zone, app) (increase(hits_total[10m]))",
            "group by (__name__) (lat)",
            "sum by (app) (avg_over_time(lat[3m]))",
            "max by (app) (max_over_time(lat[4m30s]))",
            "sum(irate(hits_total[5m]))",
            "count by (__name__) (last_over_time(lat[2m]))",
            // Each store's own top k, then the top k of those.
            "topk(3, lat)",
            "bottomk by (app) (2, rate(hits_total[5m]))",
            "topk by (zone) (1, max_over_time(lat[4m]))",
            "bottomk(4, -lat offset 3m)",
            // Not pushed down: the series are gathered.
            "topk(scalar(count(lat)) / 10, lat)",
            "topk(2, sum by (app) (lat))",
            "quantile by (app) (0.5, lat)",
            "sum(lat * 2) + count(hits_total)",
            "histogram_quantile(0.5, sum by (le) (rate(hits_total[5m])))",
        ] {
            let expr = crate::parse(q).unwrap();
            let one = Evaluation::new(&whole, range, 10_000).eval(&expr).unwrap();
            let two = Evaluation::new(&whole, range, 10_000)
                .with_gather(&split)
                .eval(&expr)
                .unwrap();
            let sorted = |v: Value| match v {
                Value::Vector(mut v) => {
                    v.sort_by(|a, b| a.labels.cmp(&b.labels));
                    Value::Vector(v)
                }
                other => other,
            };
            let (one, two) = (sorted(one), sorted(two));
            assert!(same(&one, &two), "{q}:\n{one:?}\n{two:?}");
            checked += 1;
        }
        assert_eq!(checked, 19);
        // The four topk/bottomk of a per-series expression with a constant k went to the
        // stores; the other two were evaluated over gathered series.
        assert_eq!(split.1.load(std::sync::atomic::Ordering::Relaxed), 4);
        // The series limit holds for the parts' total, as on one store.
        let expr = crate::parse("sum(lat)").unwrap();
        let refused = Evaluation::new(&whole, range, 20)
            .with_gather(&split)
            .eval(&expr)
            .unwrap_err();
        assert!(refused.message.contains("--query-max-series"), "{refused}");
    }
}
