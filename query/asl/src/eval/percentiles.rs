//! `:percentiles`: estimates from percentile-bucket counters, the way Atlas and Spectator do.
//! A percentile timer or distribution summary publishes one counter per bucket, tagged
//! `percentile=T00xx` (timers, nanoseconds) or `D00xx` (distributions), the hex index of a
//! fixed bucket table; the estimate interpolates linearly inside the bucket that holds the
//! requested rank.

use std::sync::OnceLock;

use ahash::AHashMap;
use argus_tsdb::{SeriesSource, TagMap};

use super::{EvalContext, Label, Line, data, key_string};
use crate::error::{Error, Result};
use crate::model::{AggrOp, DataExpr, DataKind, Percentiles};
use crate::numfmt::java_double;

/// Upper bounds of Spectator's 276 percentile buckets: 1, 2, 3, then each power of 4 split
/// in thirds' steps, up to `i64::MAX`.
pub(crate) fn bucket_bounds() -> &'static [i64] {
    static BOUNDS: OnceLock<Vec<i64>> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        let mut b: Vec<i64> = vec![1, 2, 3];
        let mut exp = 2;
        while exp < 64 {
            let mut current: i64 = 1i64.wrapping_shl(exp);
            let delta = current / 3;
            let next = current.wrapping_shl(2).wrapping_sub(delta);
            while current < next {
                b.push(current);
                current += delta;
            }
            exp += 2;
        }
        b.push(i64::MAX);
        b
    })
}

/// The estimates for sorted `pcts` from per-bucket counts (Spectator's algorithm).
pub(crate) fn estimate(counts: &[f64], pcts: &[f64], out: &mut [f64]) {
    let bounds = bucket_bounds();
    let mut total = 0.0;
    let mut last_nonzero = 0usize;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0.0 && c.is_finite() {
            total += c;
            last_nonzero = i;
        }
    }
    let mut idx = 0;
    let (mut prev, mut prev_p, mut prev_b) = (0.0, 0.0, 0i64);
    for i in 0..=last_nonzero.min(counts.len().saturating_sub(1)) {
        let next = prev + counts[i];
        let next_p = 100.0 * next / total;
        let next_b = bounds[i];
        while idx < pcts.len() && next_p >= pcts[idx] {
            let f = (pcts[idx] - prev_p) / (next_p - prev_p);
            out[idx] = if f.is_nan() {
                0.0
            } else {
                f * next_b.wrapping_sub(prev_b) as f64 + prev_b as f64
            };
            idx += 1;
        }
        if idx >= pcts.len() {
            break;
        }
        prev = next;
        prev_p = next_p;
        prev_b = next_b;
    }
    let next_b = bounds[last_nonzero];
    while idx < pcts.len() {
        let f = (pcts[idx] - prev_p) / (100.0 - prev_p);
        out[idx] = f * next_b.wrapping_sub(prev_b) as f64 + prev_b as f64;
        idx += 1;
    }
}

/// `percentile` tag value for p: right-aligned to five characters before the point, as
/// Atlas writes it (`  9.0`, ` 50.0`, `100.0`).
pub(crate) fn format_pct(p: f64) -> String {
    let s = java_double(p);
    if p < 10.0 {
        format!("  {s}")
    } else if p < 100.0 {
        format!(" {s}")
    } else {
        s
    }
}

pub(crate) fn eval(
    p: &Percentiles,
    ctx: &EvalContext,
    src: &dyn SeriesSource,
) -> Result<Vec<Line>> {
    let mut keys = vec!["percentile".to_string()];
    keys.extend(p.keys.iter().cloned());
    let mut d = DataExpr::aggregate(AggrOp::Sum, p.query.clone());
    if let DataKind::Aggregate(af) = d.kind {
        d.kind = DataKind::GroupBy { af, keys };
    }
    d.offset_ms = p.offset_ms;
    let buckets = data::eval_data(&d, ctx, src)?;
    // Lines per group of the extra keys, in first-seen order, then sorted by group label.
    let mut groups: Vec<(Option<String>, Vec<&Line>)> = Vec::new();
    let mut index: AHashMap<Option<String>, usize> = AHashMap::new();
    for line in &buckets {
        let key = if p.keys.is_empty() {
            None
        } else {
            key_string(&p.keys, &line.tags)
        };
        match index.get(&key) {
            Some(&i) => groups[i].1.push(line),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![line]));
            }
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    let len = ctx.len();
    // Every group gives a line per percentile; one group's counts are held at a time.
    ctx.check_lines(groups.len().saturating_mul(p.pcts.len()), len)?;
    ctx.memory.charge(
        len.saturating_mul(bucket_bounds().len() + p.pcts.len())
            .saturating_mul(8),
    )?;
    let mut out = Vec::new();
    for (key, lines) in groups {
        let base = key.unwrap_or_else(|| p.query.label_string());
        let mut counts_by_step = vec![vec![0.0; bucket_bounds().len()]; len];
        let mut seen: AHashMap<usize, &str> = AHashMap::new();
        let mut timer = None;
        for line in &lines {
            let Some(tag) = line.tags.get("percentile") else {
                continue;
            };
            let (prefix, hex) = tag.split_at(tag.len().min(1));
            let Ok(idx) = usize::from_str_radix(hex, 16) else {
                continue;
            };
            if idx >= bucket_bounds().len() || !matches!(prefix, "T" | "D") {
                continue;
            }
            if let Some(other) = seen.insert(idx, tag) {
                return Err(Error::Evaluation(format!(
                    "invalid percentile encoding: [{other},{tag}]"
                )));
            }
            timer.get_or_insert(prefix == "T");
            for (step, &v) in line.values.iter().enumerate() {
                if let Some(counts) = counts_by_step.get_mut(step) {
                    counts[idx] = if v.is_finite() { v } else { 0.0 };
                }
            }
        }
        let Some(first) = lines.first() else { continue };
        let scale = if timer == Some(true) { 1e-9 } else { 1.0 };
        let mut per_pct = vec![vec![f64::NAN; len]; p.pcts.len()];
        let mut results = vec![0.0; p.pcts.len()];
        for (step, counts) in counts_by_step.iter().enumerate() {
            estimate(counts, &p.pcts, &mut results);
            for (i, r) in results.iter().enumerate() {
                per_pct[i][step] = r * scale;
            }
        }
        for (pct, values) in p.pcts.iter().zip(per_pct) {
            let mut tags: TagMap = first.tags.clone();
            let text = format_pct(*pct);
            tags.insert("percentile".to_string(), text.clone());
            out.push(Line {
                tags,
                label: Label::Text(format!("percentile({base}, {text})")),
                values,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_table() {
        let b = bucket_bounds();
        assert_eq!(b.len(), 276);
        assert_eq!(
            &b[..20],
            &[
                1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 21, 26, 31, 36, 41
            ]
        );
        assert_eq!(b[275], i64::MAX);
    }

    fn pct(counts: &[(usize, f64)], pcts: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; 276];
        for &(i, v) in counts {
            c[i] = v;
        }
        let mut out = vec![0.0; pcts.len()];
        estimate(&c, pcts, &mut out);
        out
    }

    #[test]
    fn estimates() {
        assert_eq!(
            pct(&[(10, 1.0)], &[0.0, 50.0, 100.0]),
            vec![0.0, 10.5, 11.0]
        );
        let got = pct(&[(1, 1.0), (5, 3.0)], &[10.0, 25.0, 50.0, 100.0]);
        let want = [1.4, 2.0, 5.333333333333333, 6.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?}");
        }
        assert!(pct(&[], &[50.0])[0].is_nan());
        assert_eq!(format_pct(9.0), "  9.0");
        assert_eq!(format_pct(50.0), " 50.0");
        assert_eq!(format_pct(100.0), "100.0");
    }
}
