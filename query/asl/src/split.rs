//! Atlas's split of a query across the nodes of a cluster. The node a query reaches runs
//! the expression as usual, except that each data expression (matcher, aggregate, `:by`
//! keys, consolidation, offset) is sent, as canonical ASL, to the nodes holding the series
//! ([`Fanout`]); each evaluates it over its share up to a [`Partial`] (sums with counts,
//! counts, running extremes, per group; or the lines of `:all`), and the parts merge into
//! the lines one evaluation over every series would give. Math, stateful, filter and style
//! words then run on the merged lines, on the node the query reached.

use argus_tsdb::{SeriesSource, TagMap};

use crate::error::{Error, Result};
use crate::eval::{EvalContext, Limits, PartialParts};
pub use crate::eval::{Fanout, Partial, SharedFanout};
use crate::model::{Item, TimeSeriesExpr};

/// Evaluates the data expression `expr` (canonical ASL, as a query node sends it) over this
/// node's share of the series, `src`, up to its partial result.
pub fn evaluate_partial(
    expr: &str,
    start_ms: i64,
    end_ms: i64,
    step_ms: i64,
    limits: &Limits,
    src: &dyn SeriesSource,
) -> Result<Partial> {
    let stack = crate::run(expr)?;
    let [Item::Expr(TimeSeriesExpr::Data(data))] = stack.as_slice() else {
        return Err(Error::InvalidParam {
            name: "expr",
            value: expr.to_string(),
            reason: "not one data expression".into(),
        });
    };
    if step_ms <= 0 || start_ms > end_ms || (end_ms - start_ms) / step_ms > 1 << 20 {
        return Err(Error::InvalidParam {
            name: "step",
            value: format!("{start_ms}..{end_ms} by {step_ms}"),
            reason: "not a window of at most 2^20 steps".into(),
        });
    }
    let ctx = EvalContext::new(start_ms, end_ms, step_ms, *limits);
    crate::eval::partial(data, &ctx, src)
}

/// Bytes a [`Partial`] travels as, and back.
impl Partial {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.parts() {
            PartialParts::Groups {
                op,
                len,
                groups,
                values,
                counts,
            } => {
                out.push(0);
                out.push(op);
                put_u32(&mut out, len as u32);
                put_u32(&mut out, groups.len() as u32);
                for (key, keys) in groups {
                    put_str(&mut out, key);
                    put_u32(&mut out, keys.len() as u32);
                    for k in keys {
                        put_str(&mut out, k);
                    }
                }
                put_u32(&mut out, values.len() as u32);
                for v in values {
                    out.extend_from_slice(&v.to_le_bytes());
                }
                put_u32(&mut out, counts.len() as u32);
                for c in counts {
                    out.extend_from_slice(&c.to_le_bytes());
                }
            }
            PartialParts::Lines(lines) => {
                out.push(1);
                put_u32(&mut out, lines.len() as u32);
                for (tags, values) in lines {
                    put_u32(&mut out, tags.len() as u32);
                    for (k, v) in tags.iter() {
                        put_str(&mut out, k);
                        put_str(&mut out, v);
                    }
                    put_u32(&mut out, values.len() as u32);
                    for v in values {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// The partial `encode` wrote; anything else is an error saying where it went wrong.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Partial, String> {
        let mut r = Reader { bytes, at: 0 };
        let partial = match r.u8()? {
            0 => {
                let op = r.u8()?;
                let len = r.u32()? as usize;
                let n = r.u32()? as usize;
                let mut groups = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let key = r.string()?;
                    let k = r.u32()? as usize;
                    let mut keys = Vec::with_capacity(k.min(64));
                    for _ in 0..k {
                        keys.push(r.string()?);
                    }
                    groups.push((key, keys));
                }
                let nv = r.u32()? as usize;
                let mut values = Vec::with_capacity(nv.min(1 << 20));
                for _ in 0..nv {
                    values.push(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")));
                }
                let nc = r.u32()? as usize;
                let mut counts = Vec::with_capacity(nc.min(1 << 20));
                for _ in 0..nc {
                    counts.push(u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")));
                }
                Partial::from_groups(op, len, groups, values, counts)?
            }
            1 => {
                let n = r.u32()? as usize;
                let mut lines = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let k = r.u32()? as usize;
                    let mut tags = TagMap::new();
                    for _ in 0..k {
                        let key = r.string()?;
                        tags.insert(key, r.string()?);
                    }
                    let nv = r.u32()? as usize;
                    let mut values = Vec::with_capacity(nv.min(1 << 20));
                    for _ in 0..nv {
                        values.push(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes")));
                    }
                    lines.push((tags, values));
                }
                Partial::from_lines(lines)
            }
            kind => return Err(format!("unknown partial kind {kind} at byte 0")),
        };
        if r.at != bytes.len() {
            return Err(format!(
                "{} bytes left over after a partial of {}",
                bytes.len() - r.at,
                r.at
            ));
        }
        Ok(partial)
    }
}

fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len() as u32);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(format!(
                "a partial cut short: {n} bytes wanted at byte {} of {}",
                self.at,
                self.bytes.len()
            ));
        };
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> std::result::Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> std::result::Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        let n = self.u32()? as usize;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| format!("a string that is not UTF-8 at byte {at}"))
    }
}
