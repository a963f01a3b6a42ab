//! Aggregations pushed down to a cluster's store nodes. A node the query reaches sends each
//! aggregation the streamed path takes (`sum`, `avg`, `min`, `max`, `count`, `group`, by or
//! without, of a selector or of a window function of one) to the store nodes; each
//! evaluates it over its partitions up to its accumulators per group ([`Partial`]: sums and
//! counts, or extremes), and the parts merge into the answer one store holding every series
//! would give. Only the groups travel, never the series.

use crate::Error;
use crate::eval::{Labels, QueryRange, Series};

/// One store node's share of an aggregation: per group (its labels), for each evaluation
/// time, the sum (or extreme) of its series' values and how many there were; and how many
/// series it selected (the query's series limit holds for the total).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partial {
    pub series: u64,
    /// Evaluation times.
    pub len: usize,
    pub groups: Vec<Labels>,
    /// `groups.len() * len` cells, group by group.
    pub values: Vec<f64>,
    pub counts: Vec<u32>,
}

/// What an aggregation's parts are asked for: its text and the query's times.
#[derive(Clone, Debug, PartialEq)]
pub struct PushedAggregate {
    /// The aggregation as PromQL prints it (`sum by (a) (rate(x[5m]))`).
    pub expr: String,
    pub range: QueryRange,
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("a partial aggregate cut short at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("a label in a partial aggregate is not UTF-8 (byte {at})"))
    }
}

impl Partial {
    /// Bytes the part travels as between nodes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.values.len() * 12);
        out.extend_from_slice(&self.series.to_le_bytes());
        put_u32(&mut out, self.len as u32);
        put_u32(&mut out, self.groups.len() as u32);
        for labels in &self.groups {
            put_u32(&mut out, labels.len() as u32);
            for (k, v) in labels {
                put_str(&mut out, k);
                put_str(&mut out, v);
            }
        }
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for c in &self.counts {
            put_u32(&mut out, *c);
        }
        out
    }

    /// The part `encode` wrote; anything else is an error saying where it went wrong.
    pub fn decode(bytes: &[u8]) -> Result<Partial, String> {
        let mut r = Reader { bytes, at: 0 };
        let series = r.u64()?;
        let len = r.u32()? as usize;
        let n = r.u32()? as usize;
        let mut groups = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let pairs = r.u32()? as usize;
            let mut labels = Labels::new();
            for _ in 0..pairs {
                let k = r.string()?;
                labels.insert(k, r.string()?);
            }
            groups.push(labels);
        }
        let cells = n
            .checked_mul(len)
            .filter(|&c| c.checked_mul(12) == Some(bytes.len() - r.at))
            .ok_or_else(|| {
                format!(
                    "a partial aggregate of {n} groups of {len} times has {} bytes of cells",
                    bytes.len() - r.at
                )
            })?;
        let values = (0..cells)
            .map(|_| {
                r.take(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            })
            .collect::<Result<Vec<f64>, String>>()?;
        let counts = (0..cells)
            .map(|_| r.u32())
            .collect::<Result<Vec<u32>, String>>()?;
        Ok(Partial {
            series,
            len,
            groups,
            values,
            counts,
        })
    }
}

/// Series as they travel between nodes: labels, and a value or none at each time.
pub fn encode_series(series: &[Series]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, series.len() as u32);
    for s in series {
        put_u32(&mut out, s.labels.len() as u32);
        for (k, v) in &s.labels {
            put_str(&mut out, k);
            put_str(&mut out, v);
        }
        put_u32(&mut out, s.points.len() as u32);
        for p in &s.points {
            match p {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                None => out.push(0),
            }
        }
    }
    out
}

/// The series `encode_series` wrote; anything else is an error saying where it went wrong.
pub fn decode_series(bytes: &[u8]) -> Result<Vec<Series>, String> {
    let mut r = Reader { bytes, at: 0 };
    let n = r.u32()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let pairs = r.u32()? as usize;
        let mut labels = Labels::new();
        for _ in 0..pairs {
            let k = r.string()?;
            labels.insert(k, r.string()?);
        }
        let len = r.u32()? as usize;
        let mut points = Vec::with_capacity(len.min(1 << 20));
        for _ in 0..len {
            points.push(match r.take(1)?[0] {
                0 => None,
                1 => Some(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
                other => return Err(format!("a point marked {other} at byte {}", r.at - 1)),
            });
        }
        out.push(Series { labels, points });
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the series", bytes.len() - r.at));
    }
    Ok(out)
}

/// Evaluates a pushed-down `topk`/`bottomk` over a store node's share of the series
/// (`source`): its own top (or bottom) k series per group and time.
pub fn evaluate_top(
    source: &dyn argus_tsdb::SeriesSource,
    pushed: &PushedAggregate,
    (oldest_ms, newest_ms): (i64, i64),
    max_series: usize,
) -> Result<Vec<Series>, Error> {
    let expr = crate::parse(&pushed.expr)?;
    let top = match &expr {
        promql_parser::parser::Expr::Aggregate(a) => pushable_top(a),
        _ => false,
    };
    if !top {
        return Err(Error::bad_data(format!(
            "{} is not a topk or bottomk to push down",
            pushed.expr
        )));
    }
    if pushed.range.len() > 1 << 20 || pushed.range.step_ms <= 0 {
        return Err(Error::bad_data("a pushed-down topk of too many times"));
    }
    let mut evaluation = crate::Evaluation::new(source, pushed.range, max_series)
        .with_data_bounds(oldest_ms, newest_ms);
    match evaluation.eval(&expr)? {
        crate::Value::Vector(series) => Ok(series),
        _ => Err(Error::bad_data("a topk that is not a vector")),
    }
}

/// Whether `topk`/`bottomk` can run on the store nodes first: a constant k, over an
/// expression each of whose series comes from one stored series (selectors, range and
/// per-series functions, no matching or aggregation across series), so that each group's
/// top k overall is among the store nodes' own top k.
pub(crate) fn pushable_top(a: &promql_parser::parser::AggregateExpr) -> bool {
    use promql_parser::parser::Expr;
    let op = a.op.to_string();
    (op == "topk" || op == "bottomk")
        && matches!(a.param.as_deref(), Some(Expr::NumberLiteral(_)))
        && series_local(&a.expr)
}

/// Whether each series of `expr` is computed from one stored series alone.
fn series_local(expr: &promql_parser::parser::Expr) -> bool {
    use promql_parser::parser::Expr;
    match expr {
        Expr::VectorSelector(_) | Expr::MatrixSelector(_) => true,
        Expr::Paren(p) => series_local(&p.expr),
        Expr::Unary(u) => series_local(&u.expr),
        Expr::Subquery(s) => series_local(&s.expr),
        Expr::Call(c) => {
            !matches!(
                c.func.name,
                "absent"
                    | "absent_over_time"
                    | "scalar"
                    | "vector"
                    | "histogram_quantile"
                    | "time"
                    | "pi"
            ) && c.args.args.iter().all(|arg| match arg.as_ref() {
                Expr::NumberLiteral(_) | Expr::StringLiteral(_) => true,
                other => series_local(other),
            }) && c.args.args.iter().any(|arg| {
                !matches!(
                    arg.as_ref(),
                    Expr::NumberLiteral(_) | Expr::StringLiteral(_)
                )
            })
        }
        _ => false,
    }
}

/// Evaluates a pushed-down aggregation over a store node's share of the series (`source`):
/// its part. `expr` must be an aggregation the streamed path takes.
pub fn evaluate_partial(
    source: &dyn argus_tsdb::SeriesSource,
    pushed: &PushedAggregate,
    (oldest_ms, newest_ms): (i64, i64),
    max_series: usize,
) -> Result<Partial, Error> {
    let expr = crate::parse(&pushed.expr)?;
    let mut inner = &expr;
    while let promql_parser::parser::Expr::Paren(p) = inner {
        inner = &p.expr;
    }
    let promql_parser::parser::Expr::Aggregate(a) = inner else {
        return Err(Error::bad_data(format!(
            "{} is not an aggregation to push down",
            pushed.expr
        )));
    };
    if pushed.range.len() > 1 << 20 || pushed.range.step_ms <= 0 {
        return Err(Error::bad_data(
            "a pushed-down aggregation of too many times",
        ));
    }
    let mut evaluation = crate::Evaluation::new(source, pushed.range, max_series)
        .with_data_bounds(oldest_ms, newest_ms);
    evaluation.partial_aggregate(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_travel_and_damage_is_named() {
        let part = Partial {
            series: 7,
            len: 2,
            groups: vec![
                Labels::from([("a".to_string(), "x".to_string())]),
                Labels::new(),
            ],
            values: vec![1.5, f64::NAN, -0.0, 4.0],
            counts: vec![1, 0, 2, 3],
        };
        let bytes = part.encode();
        let back = Partial::decode(&bytes).unwrap();
        assert_eq!(back.series, 7);
        assert_eq!(back.groups, part.groups);
        assert_eq!(back.counts, part.counts);
        assert!(back.values[1].is_nan() && back.values[3] == 4.0);
        for cut in 0..bytes.len() {
            assert!(Partial::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Partial::decode(&longer).is_err());
        // Series travel too, a missing point kept apart from a NaN one.
        let series = vec![crate::Series {
            labels: Labels::from([("__name__".to_string(), "x".to_string())]),
            points: vec![Some(1.0), None, Some(f64::NAN)],
        }];
        let bytes_of_series = encode_series(&series);
        let back = decode_series(&bytes_of_series).unwrap();
        assert_eq!(back[0].labels, series[0].labels);
        assert_eq!(back[0].points[..2], series[0].points[..2]);
        assert!(back[0].points[2].is_some_and(f64::is_nan));
        for cut in 0..bytes_of_series.len() {
            assert!(
                decode_series(&bytes_of_series[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        // A count of groups far past the bytes is refused without allocating for it.
        let mut huge = bytes[..12].to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Partial::decode(&huge).is_err());
    }
}
