//! The graph API (`/api/v1/graph`) minus HTTP: request parameters to a time window and step,
//! evaluation of the expression's lines, and Atlas's `json` output.

use std::io::Write;

use argus_tsdb::{SeriesSource, TagMap};

use crate::error::{Error, Result};
use crate::eval::{self, EvalContext};
use crate::interpreter;
use crate::model::{AggrOp, AggregateFunction, DataExpr, Item, TimeSeriesExpr};
use crate::time::{self, Anchor, TimeRef};

/// Atlas's limit on points per line; also what the automatic step aims for.
const MAX_POINTS_PER_LINE: usize = 1440;

/// How much one graph request may produce (Atlas's defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Lines over all expressions of a request (`atlas.core.db.max-lines`).
    pub max_lines: usize,
    /// Lines times points per line (`atlas.core.db.max-datapoints`).
    pub max_datapoints: usize,
    /// Points per line (`atlas.webapi.graph.max-datapoints`).
    pub max_points_per_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_lines: 1024,
            max_datapoints: 500_000,
            max_points_per_line: MAX_POINTS_PER_LINE,
        }
    }
}

/// A graph request with its window resolved: values for `start_ms, start_ms + step_ms, ...,
/// end_ms`, both ends included and multiples of `step_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphRequest {
    pub expr: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    /// Output format; `json` (and its alias `std.json`) for now.
    pub format: String,
}

impl GraphRequest {
    /// From URL query params (`q`, `s`, `e`, `step`, `format`; `tz` is ignored for now).
    /// `now_ms` is the current time, `stored_step_ms` the store's step.
    ///
    /// `s` defaults to `e-3h`, `e` to `now`. A `step` that is smaller than the stored step or
    /// not a multiple of it is ignored, as Atlas does; without one the step is the smallest
    /// allowed step giving at most 1440 points.
    pub fn from_params(
        params: &[(String, String)],
        now_ms: i64,
        stored_step_ms: i64,
    ) -> Result<GraphRequest> {
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let expr = param("q").ok_or_else(|| invalid("q", "", "required"))?;
        let format = param("format").unwrap_or("json");
        if !matches!(format, "json" | "std.json") {
            return Err(invalid(
                "format",
                format,
                "supported formats are json, std.json",
            ));
        }
        let s_text = param("s").unwrap_or("e-3h");
        let e_text = param("e").unwrap_or("now");
        let s_ref = time::parse_time(s_text).ok_or_else(|| invalid("s", s_text, TIME_HELP))?;
        let e_ref = time::parse_time(e_text).ok_or_else(|| invalid("e", e_text, TIME_HELP))?;
        let (s_ms, e_ms) = resolve_window(s_ref, e_ref, now_ms).map_err(|(name, reason)| {
            invalid(name, if name == "s" { s_text } else { e_text }, reason)
        })?;
        if s_ms > e_ms {
            return Err(invalid("s", s_text, "start is after end"));
        }
        let stored = stored_step_ms.max(1);
        let explicit = match param("step") {
            Some(text) => {
                let step = time::parse_duration(text).ok_or_else(|| {
                    invalid("step", text, "expected a duration such as 60s, 5m or PT1M")
                })?;
                (step >= stored && step % stored == 0).then_some(step)
            }
            None => None,
        };
        let max_points = MAX_POINTS_PER_LINE as i64;
        let step_ms = match explicit {
            Some(step) => {
                let n = time::points(s_ms, e_ms, step);
                if n > max_points {
                    return Err(Error::TooMany {
                        what: "datapoints per line",
                        requested: usize::try_from(n).unwrap_or(usize::MAX),
                        limit: MAX_POINTS_PER_LINE,
                    });
                }
                step
            }
            None => time::auto_step(s_ms, e_ms, stored, max_points)
                .ok_or_else(|| invalid("s", s_text, "no step fits this time range"))?,
        };
        Ok(GraphRequest {
            expr: expr.to_string(),
            start_ms: time::floor_to(s_ms, step_ms)
                .ok_or_else(|| invalid("s", s_text, "time out of range"))?,
            end_ms: time::floor_to(e_ms, step_ms)
                .ok_or_else(|| invalid("e", e_text, "time out of range"))?,
            step_ms,
            format: format.to_string(),
        })
    }
}

const TIME_HELP: &str = "expected now, epoch, s, e, an ISO date-time or epoch seconds/ms, \
                         optionally followed by +/- a duration (e.g. e-3h, now-1w, s+PT6H)";

fn invalid(name: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidParam {
        name,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Resolves `s` and `e`, either of which may be relative to the other (not both).
fn resolve_window(
    s: TimeRef,
    e: TimeRef,
    now_ms: i64,
) -> std::result::Result<(i64, i64), (&'static str, &'static str)> {
    const CIRCULAR: &str = "s and e are defined in terms of each other";
    let base = |r: TimeRef, other: Option<i64>, name: &'static str| {
        let anchor_ms = match r.anchor {
            Anchor::Now => now_ms,
            Anchor::Absolute(ms) => ms,
            Anchor::Start | Anchor::End => other.ok_or((name, CIRCULAR))?,
        };
        anchor_ms
            .checked_add(r.offset_ms)
            .ok_or((name, "time out of range"))
    };
    if e.anchor == Anchor::End || s.anchor == Anchor::Start {
        return Err(if e.anchor == Anchor::End {
            ("e", CIRCULAR)
        } else {
            ("s", CIRCULAR)
        });
    }
    if e.anchor == Anchor::Start {
        let s_ms = base(s, None, "s")?;
        Ok((s_ms, base(e, Some(s_ms), "e")?))
    } else {
        let e_ms = base(e, None, "e")?;
        Ok((base(s, Some(e_ms), "s")?, e_ms))
    }
}

/// The lines of a graph, on the request's grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphResult {
    pub start_ms: i64,
    pub step_ms: i64,
    pub series: Vec<ResultSeries>,
}

/// One line: its tags (Atlas's `metrics` entry), legend label and one value per step.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSeries {
    pub tags: TagMap,
    pub label: String,
    pub values: Vec<f64>,
}

/// Evaluates a request against a store with Atlas's default [`Limits`] (1024 lines).
pub fn evaluate(req: &GraphRequest, source: &dyn SeriesSource) -> Result<GraphResult> {
    evaluate_with_limits(req, source, &Limits::default())
}

/// Evaluates a request: every expression left on the stack, bottom first, gives its lines.
pub fn evaluate_with_limits(
    req: &GraphRequest,
    source: &dyn SeriesSource,
    limits: &Limits,
) -> Result<GraphResult> {
    let stored = source.step_ms();
    let step_ms = req.step_ms;
    if step_ms <= 0 || stored <= 0 || step_ms % stored != 0 {
        return Err(invalid(
            "step",
            &format!("{step_ms}ms"),
            "must be a positive multiple of the stored step",
        ));
    }
    if req.start_ms > req.end_ms {
        return Err(invalid(
            "s",
            &req.start_ms.to_string(),
            "start is after end",
        ));
    }
    let out_of_range = |t: i64| invalid("s", &t.to_string(), "time out of range");
    let start_ms =
        time::floor_to(req.start_ms, step_ms).ok_or_else(|| out_of_range(req.start_ms))?;
    let end_ms = time::floor_to(req.end_ms, step_ms).ok_or_else(|| out_of_range(req.end_ms))?;
    let len = time::points(start_ms, end_ms, step_ms);
    if len > limits.max_points_per_line as i64 {
        return Err(Error::TooMany {
            what: "datapoints per line",
            requested: usize::try_from(len).unwrap_or(usize::MAX),
            limit: limits.max_points_per_line,
        });
    }
    let exprs = lines(interpreter::execute(&req.expr)?)?;
    let mut series: Vec<ResultSeries> = Vec::new();
    for expr in &exprs {
        let ctx = EvalContext {
            start_ms,
            end_ms,
            step_ms,
            lines_used: series.len(),
            limits: *limits,
        };
        let mut out = eval::eval(expr, &ctx, source)?;
        let lines = series.len() + out.len();
        if lines > limits.max_lines {
            return Err(Error::TooMany {
                what: "lines",
                requested: lines,
                limit: limits.max_lines,
            });
        }
        series.append(&mut out);
    }
    Ok(GraphResult {
        start_ms,
        step_ms,
        series,
    })
}

/// The final stack as lines: a query on its own is summed, as in Atlas.
fn lines(items: Vec<Item>) -> Result<Vec<TimeSeriesExpr>> {
    items
        .into_iter()
        .map(|item| match item {
            Item::Expr(e) => Ok(e),
            Item::Query(query) => Ok(TimeSeriesExpr::Data(DataExpr::Aggregate(
                AggregateFunction {
                    op: AggrOp::Sum,
                    query,
                },
            ))),
            other => Err(Error::NotTimeSeries {
                kind: other.type_name(),
                item: other.to_string(),
            }),
        })
        .collect()
}

impl GraphResult {
    /// Atlas's `json` format: `{"start", "step", "legend", "metrics", "values", "notices"}`,
    /// `values` holding one row per timestamp with one value per line. Non-finite values are
    /// written as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
    pub fn to_atlas_json(&self) -> String {
        let rows = self
            .series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0);
        let mut out: Vec<u8> = Vec::with_capacity(256 + rows * self.series.len() * 12);
        // Writing into a Vec cannot fail; results are ignored on purpose.
        let _ = write!(
            out,
            "{{\"start\":{},\"step\":{},\"legend\":[",
            self.start_ms, self.step_ms
        );
        for (i, s) in self.series.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, &s.label);
        }
        out.extend_from_slice(b"],\"metrics\":[");
        for (i, s) in self.series.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'{');
            for (j, (k, v)) in s.tags.iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                let _ = serde_json::to_writer(&mut out, k);
                out.push(b':');
                let _ = serde_json::to_writer(&mut out, v);
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"],\"values\":[");
        for row in 0..rows {
            if row > 0 {
                out.push(b',');
            }
            out.push(b'[');
            for (i, s) in self.series.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_number(&mut out, s.values.get(row).copied().unwrap_or(f64::NAN));
            }
            out.push(b']');
        }
        out.extend_from_slice(b"],\"notices\":[]}");
        // Only valid UTF-8 was written (serde_json escapes strings).
        String::from_utf8(out).unwrap_or_default()
    }
}

fn write_number(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"\"NaN\"");
    } else if v == f64::INFINITY {
        out.extend_from_slice(b"\"Infinity\"");
    } else if v == f64::NEG_INFINITY {
        out.extend_from_slice(b"\"-Infinity\"");
    } else {
        // serde_json prints the shortest representation that parses back to the same f64.
        let _ = serde_json::to_writer(&mut *out, &v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const NOW: i64 = 1_767_225_600_000 + 3 * 3_600_000 + 30_000;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(pairs: &[(&str, &str)], expected: &str) {
        let got = match GraphRequest::from_params(&params(pairs), NOW, MIN) {
            Ok(r) => format!(
                "s={} e={} step={} n={}",
                r.start_ms - 1_767_225_600_000,
                r.end_ms - 1_767_225_600_000,
                r.step_ms,
                (r.end_ms - r.start_ms) / r.step_ms + 1
            ),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(got, expected, "{pairs:?}");
    }

    #[test]
    fn windows_and_steps() {
        let q = ("q", "name,a,:eq");
        check(&[q], "s=0 e=10800000 step=60000 n=181");
        check(&[q, ("step", "5m")], "s=0 e=10800000 step=300000 n=37");
        check(&[q, ("step", "PT1M")], "s=0 e=10800000 step=60000 n=181");
        check(&[q, ("step", "10s")], "s=0 e=10800000 step=60000 n=181");
        check(&[q, ("step", "90s")], "s=0 e=10800000 step=60000 n=181");
        check(
            &[q, ("s", "e-1d")],
            "s=-75600000 e=10800000 step=120000 n=721",
        );
        check(
            &[q, ("s", "e-1d"), ("step", "1m")],
            "error: too many datapoints per line: 1441 > limit 1440",
        );
        check(
            &[q, ("s", "2026-01-01T01:00Z"), ("e", "s+1h")],
            "s=3600000 e=7200000 step=60000 n=61",
        );
        check(
            &[q, ("s", "1767225600"), ("e", "1767229200000")],
            "s=0 e=3600000 step=60000 n=61",
        );
        check(
            &[q, ("s", "now"), ("e", "now-1h")],
            "error: invalid parameter s=\"now\": start is after end",
        );
        check(
            &[q, ("s", "e-1h"), ("e", "s+1h")],
            "error: invalid parameter s=\"e-1h\": s and e are defined in terms of each other",
        );
        check(
            &[q, ("s", "yesterday")],
            &format!("error: invalid parameter s=\"yesterday\": {TIME_HELP}"),
        );
        check(
            &[q, ("step", "fast")],
            "error: invalid parameter step=\"fast\": expected a duration such as 60s, 5m or PT1M",
        );
        check(
            &[q, ("format", "png")],
            "error: invalid parameter format=\"png\": supported formats are json, std.json",
        );
        check(
            &[("s", "e-1h")],
            "error: invalid parameter q=\"\": required",
        );
        check(
            &[q, ("s", "epoch")],
            "s=-1767225600000 e=-777600000 step=1296000000 n=1364",
        );
    }

    fn store() -> argus_tsdb::Store {
        let t0 = 1_767_225_600_000;
        let store = argus_tsdb::Store::with_clock(
            argus_tsdb::StoreConfig::new(MIN, 6 * 3_600_000),
            std::sync::Arc::new(move || t0),
        );
        for node in ["n1", "n2", "n3"] {
            let tags =
                TagMap::from_pairs([("name", "cpu"), ("node", node), ("atlas.dstype", "gauge")]);
            let id = store.resolve(&tags);
            store.append(id, t0, 1.0).unwrap();
        }
        store
    }

    fn run(expr: &str, step_ms: i64, max_lines: usize) -> String {
        let t0 = 1_767_225_600_000;
        let req = GraphRequest {
            expr: expr.to_string(),
            start_ms: t0,
            end_ms: t0 + 2 * MIN,
            step_ms,
            format: "json".to_string(),
        };
        let limits = Limits {
            max_lines,
            ..Limits::default()
        };
        match evaluate_with_limits(&req, &store(), &limits) {
            Ok(r) => r
                .series
                .iter()
                .map(|s| format!("{}={:?}", s.label, s.values))
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn evaluation_and_limits() {
        assert_eq!(
            run("name,cpu,:eq,:sum", MIN, 10),
            "name=cpu=[3.0, NaN, NaN]"
        );
        assert_eq!(run("name,cpu,:eq,:count", 3 * MIN, 10), "name=cpu=[3.0]");
        assert_eq!(
            run("name,cpu,:eq,:all,name,cpu,:eq,:all", MIN, 4),
            "error: too many lines: 6 > limit 4"
        );
        assert_eq!(
            run("name,cpu,:eq,:sum,(,node,),:by,name,cpu,:eq", MIN, 3),
            "error: too many lines: 4 > limit 3"
        );
        assert_eq!(
            run("name,cpu,:eq", 90_000, 3),
            "error: invalid parameter step=\"90000ms\": must be a positive multiple of the stored step"
        );
    }

    #[test]
    fn json_output() {
        let r = GraphResult {
            start_ms: 0,
            step_ms: 60_000,
            series: vec![
                ResultSeries {
                    tags: TagMap::from_pairs([("name", "a\"b")]),
                    label: "name=a\"b".into(),
                    values: vec![1.0, f64::NAN, 0.1],
                },
                ResultSeries {
                    tags: TagMap::from_pairs([("name", "x"), ("k", "v")]),
                    label: "(k=v)".into(),
                    values: vec![f64::INFINITY, f64::NEG_INFINITY, 1e300],
                },
            ],
        };
        assert_eq!(
            r.to_atlas_json(),
            r#"{"start":0,"step":60000,"legend":["name=a\"b","(k=v)"],"metrics":[{"name":"a\"b"},{"k":"v","name":"x"}],"values":[[1.0,"Infinity"],["NaN","-Infinity"],[0.1,1e+300]],"notices":[]}"#
        );
        let empty = GraphResult {
            start_ms: 0,
            step_ms: 1,
            series: vec![],
        };
        assert_eq!(
            empty.to_atlas_json(),
            r#"{"start":0,"step":60000,"legend":[],"metrics":[],"values":[],"notices":[]}"#
                .replace("60000", "1")
        );
    }
}
