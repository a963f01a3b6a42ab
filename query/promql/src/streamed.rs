//! Aggregations read straight into their groups: `sum`, `avg`, `min`, `max`, `count` and
//! `group`, by or without labels, of a selector or of `rate`, `increase`, `sum_over_time`,
//! `count_over_time` or `avg_over_time` of one. The general path builds every series' label
//! set and values before aggregating; here each series' group is found once from its tags
//! (only the grouping labels are built), and its values stream into per-group accumulators as
//! the store reads them, as the Stack Language aggregates. The answers are the general
//! path's.

use std::collections::HashMap;

use argus_tsdb::{SeriesId, Tags};
use promql_parser::parser::{AggregateExpr, Expr, LabelModifier, VectorSelector};

use crate::Error;
use crate::eval::{Evaluation, Labels, Series, Value, step_floor};
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
    fn grow(&mut self) {
        let init = match self.op {
            Op::Min | Op::Max => f64::NAN,
            _ => 0.0,
        };
        self.values.extend(std::iter::repeat_n(init, self.n));
        self.counts.extend(std::iter::repeat_n(0, self.n));
    }

    #[inline]
    fn add(&mut self, cell: usize, v: f64) {
        self.counts[cell] += 1;
        let acc = &mut self.values[cell];
        match self.op {
            Op::Sum | Op::Avg => *acc += v,
            // NaN never stored (a step without a value reads as NaN and is skipped), so the
            // first value replaces the initial NaN.
            Op::Min => {
                if acc.is_nan() || v < *acc {
                    *acc = v
                }
            }
            Op::Max => {
                if acc.is_nan() || v > *acc {
                    *acc = v
                }
            }
            Op::Count | Op::Group => {}
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
        Some(self.stream(a, op, vs, per_series))
    }

    fn stream(
        &mut self,
        a: &AggregateExpr,
        op: Op,
        vs: &VectorSelector,
        per_series: PerSeries,
    ) -> Result<Value, Error> {
        let stored = self.source.step_ms().max(1);
        let times: Vec<i64> = self
            .range
            .times()
            .map(|t| self.selector_time(t, &vs.offset, &vs.at))
            .collect();
        let n = times.len();
        let (Some(&lo), Some(&hi)) = (times.iter().min(), times.iter().max()) else {
            return Ok(Value::Vector(Vec::new()));
        };
        let reach = match per_series {
            PerSeries::Instant => stored,
            PerSeries::Window(f, range) => {
                if matches!(f, WindowFn::Rate | WindowFn::Increase) {
                    self.note_rates();
                }
                range
            }
        };
        let (ids, req) = self.selection(
            vs,
            step_floor(lo, stored).saturating_sub(reach),
            step_floor(hi, stored),
        )?;

        // Each series' group, from its tags: only the grouping labels are built.
        let mut group_of: HashMap<SeriesId, u32> = HashMap::with_capacity(ids.len() as usize);
        let mut groups: Vec<Labels> = Vec::new();
        let mut index: HashMap<Labels, u32> = HashMap::new();
        let mut acc = Accumulator {
            op,
            n,
            values: Vec::new(),
            counts: Vec::new(),
        };
        self.source.visit_tags(&ids, &mut |id, tags| {
            let labels = group_labels(&a.modifier, tags, per_series == PerSeries::Instant);
            let g = match index.get(&labels) {
                Some(&g) => g,
                None => {
                    let g = groups.len() as u32;
                    index.insert(labels.clone(), g);
                    groups.push(labels);
                    acc.grow();
                    g
                }
            };
            group_of.insert(id, g);
        });
        if !req.is_empty() {
            let first = req.start_ms;
            let len = req.len() as i64;
            // The index of the step ending at `ts`, if the read holds it.
            let step_index = move |ts: i64| {
                let i = ts.saturating_sub(first).div_euclid(stored);
                (0..len).contains(&i).then_some(i as usize)
            };
            // Per evaluation time: the step index an instant reads, or the window's steps.
            let spans: Vec<(i64, i64)> = times
                .iter()
                .map(|&t| {
                    let last = step_floor(t, stored)
                        .saturating_sub(first)
                        .div_euclid(stored);
                    match per_series {
                        PerSeries::Instant => (last, last),
                        PerSeries::Window(_, range) => {
                            let from = t.saturating_sub(range);
                            // Steps ending after `t - range`.
                            let lo = from.saturating_sub(first).div_euclid(stored) + 1;
                            (lo.max(0), last.min(len - 1))
                        }
                    }
                })
                .collect();
            let step_s = stored as f64 / 1000.0;
            let mut prefix: Vec<(f64, u32)> = Vec::new();
            self.source
                .visit_values(&ids, &req, &mut |id, values| {
                    let Some(&g) = group_of.get(&id) else {
                        return;
                    };
                    let base = g as usize * n;
                    match per_series {
                        PerSeries::Instant => {
                            for (ti, &t) in times.iter().enumerate() {
                                let end = step_floor(t, stored);
                                let at = |ts: i64| {
                                    step_index(ts).map(|i| values[i]).filter(|v| !v.is_nan())
                                };
                                if let Some(v) = at(end).or_else(|| at(end - stored)) {
                                    acc.add(base + ti, v);
                                }
                            }
                        }
                        PerSeries::Window(f, range) => {
                            // Sums and counts of the values before each step, so that each
                            // window is two lookups however long it is.
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
                            for (ti, &(lo, hi)) in spans.iter().enumerate() {
                                if hi < lo {
                                    continue;
                                }
                                let (s0, c0) = prefix[lo as usize];
                                let (s1, c1) = prefix[hi as usize + 1];
                                let count = c1 - c0;
                                if count == 0 {
                                    continue;
                                }
                                let sum = s1 - s0;
                                acc.add(
                                    base + ti,
                                    match f {
                                        WindowFn::Rate => sum * step_s / range_s,
                                        WindowFn::Increase => sum * step_s,
                                        WindowFn::Sum => sum,
                                        WindowFn::Count => f64::from(count),
                                        WindowFn::Avg => sum / f64::from(count),
                                    },
                                );
                            }
                        }
                    }
                })
                .map_err(|e| Error::execution(e.to_string()))?;
        }
        let mut out: Vec<Series> = groups
            .into_iter()
            .enumerate()
            .map(|(g, labels)| Series {
                labels,
                points: (0..n).map(|ti| acc.value(g * n + ti)).collect(),
            })
            .filter(|s| s.points.iter().any(Option::is_some))
            .collect();
        // In label order, as the general path (which reads series in that order) gives them.
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(Value::Vector(out))
    }
}

/// A series' group: its values of the `by` labels, or all its labels but the `without` ones
/// and the name (as PromQL shows them). A series read through a function has lost its name.
fn group_labels(modifier: &Option<LabelModifier>, tags: &dyn Tags, has_name: bool) -> Labels {
    let mut labels = Labels::new();
    match modifier {
        Some(LabelModifier::Include(keep)) => {
            for label in &keep.labels {
                if label == NAME_LABEL && !has_name {
                    continue;
                }
                let key = if label == NAME_LABEL { "name" } else { label };
                if let Some(v) = tags.get(key)
                    && !v.is_empty()
                {
                    labels.insert(label.clone(), shown_value(key, v).to_string());
                }
            }
        }
        Some(LabelModifier::Exclude(drop)) => {
            tags.for_each(&mut |k, v| {
                if k == "name" || crate::select::HIDDEN_TAGS.contains(&k) {
                    return;
                }
                if !drop.labels.iter().any(|l| l == k) {
                    labels.insert(k.to_string(), shown_value(k, v).to_string());
                }
            });
        }
        None => {}
    }
    labels
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use argus_tsdb::{DsType, Store, StoreConfig, TagMap};

    use crate::{Evaluation, QueryRange, Value};

    const T0: i64 = 1_767_225_600_000;
    const STEP: i64 = 60_000;

    /// Gauges and counters with gaps, over apps, zones and a label only some series have.
    fn store() -> Store {
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
                let id = store.writer().resolve_as(&tags, dstype);
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
                    store.writer().append(id, T0 + t * STEP, v).unwrap();
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
                ] {
                    for range in ranges {
                        // `* 1` takes the general path (and drops the name, as the
                        // functions and aggregations do).
                        let streamed = eval(&store, &format!("{op}{grouping} ({inner})"), range);
                        let general = eval(&store, &format!("{op}{grouping} ({inner} * 1)"), range);
                        let name_kept = grouping.contains("__name__") && inner.starts_with("lat");
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
}
