//! Value → pixel mappings (Atlas's `Scales.scala`, `LogLinear.scala`) and the y-axis bounds of a
//! plot (`PlotDef.bounds` / `finalBounds`).

use super::{Bound, LineStyle, Plot, Scale};

/// Pixel coordinates are clamped to this magnitude so that far-off values stay cheap to clip
/// and integer maths cannot overflow.
const PX_LIMIT: f64 = 1_000_000.0;

/// Java's `double.toInt` (truncating, saturating, NaN → 0), kept within [`PX_LIMIT`].
fn to_px(v: f64) -> i32 {
    if v.is_nan() {
        0
    } else {
        v.clamp(-PX_LIMIT, PX_LIMIT) as i32
    }
}

/// Maps a value to a screen row: `min` lands on `y2` (bottom), `max` on `y1`.
#[derive(Clone, Debug)]
pub(super) struct YScale {
    scale: Scale,
    /// Domain after the scale's transform (the raw domain for linear and log-linear).
    d1: f64,
    d2: f64,
    y1: i32,
    y2: i32,
    /// Log-linear: first bucket and pixels per bucket (`None` falls back to linear).
    buckets: Option<(i32, f64)>,
}

fn signed_log10(v: f64) -> f64 {
    if v > 0.0 {
        (v + 1.0).log10()
    } else if v < 0.0 {
        -(1.0 - v).log10()
    } else {
        0.0
    }
}

fn signed_pow(v: f64, e: f64) -> f64 {
    if v > 0.0 {
        v.powf(e)
    } else if v < 0.0 {
        -(-v).powf(e)
    } else {
        0.0
    }
}

impl YScale {
    pub fn new(scale: Scale, min: f64, max: f64, y1: i32, y2: i32) -> YScale {
        let mut s = YScale {
            scale,
            d1: min,
            d2: max,
            y1,
            y2,
            buckets: None,
        };
        match scale {
            Scale::Linear => {}
            Scale::Log => (s.d1, s.d2) = (signed_log10(min), signed_log10(max)),
            Scale::Pow2 => (s.d1, s.d2) = (signed_pow(min, 2.0), signed_pow(max, 2.0)),
            Scale::Sqrt => (s.d1, s.d2) = (signed_pow(min, 0.5), signed_pow(max, 0.5)),
            Scale::LogLinear => {
                let b1 = bucket_index(min) - 1;
                let b2 = bucket_index(max);
                if b1 != b2 {
                    let ppb = f64::from(y2 - y1) / f64::from(b2 - b1).abs();
                    s.buckets = Some((b1, ppb));
                }
            }
        }
        s
    }

    /// Offset from the bottom in pixels, as Atlas's un-inverted scale computes it.
    fn offset(&self, v: f64) -> f64 {
        let t = match self.scale {
            Scale::Linear | Scale::LogLinear => v,
            Scale::Log => signed_log10(v),
            Scale::Pow2 => signed_pow(v, 2.0),
            Scale::Sqrt => signed_pow(v, 0.5),
        };
        let o = match self.buckets {
            Some((b1, ppb)) => position(v, b1, ppb),
            None => (t - self.d1) / ((self.d2 - self.d1) / f64::from(self.y2 - self.y1)),
        };
        // Java's `toInt`: NaN becomes 0.
        if o.is_nan() { 0.0 } else { o.trunc() }
    }

    pub fn y(&self, v: f64) -> i32 {
        to_px(f64::from(self.y2) - self.offset(v))
    }
}

/// Maps a timestamp to a column: `t1` (the start of the first step) lands on `x1`.
#[derive(Clone, Copy, Debug)]
pub(super) struct TimeScale {
    t1: f64,
    step: f64,
    px_per_step: f64,
    x1: i32,
}

impl TimeScale {
    /// `n` steps of `step` ms starting at `t1` spread over `x1..x2`.
    pub fn new(t1: i64, step: i64, n: usize, x1: i32, x2: i32) -> TimeScale {
        let n = n.max(1) as f64;
        TimeScale {
            t1: t1 as f64,
            step: step as f64,
            px_per_step: f64::from(x2 - x1) / n,
            x1,
        }
    }

    pub fn x(&self, t: i64) -> i32 {
        to_px((t as f64 - self.t1) / self.step * self.px_per_step + f64::from(self.x1))
    }
}

// ---- log-linear buckets (LogLinear.scala): 9 linear buckets per power of 10 from 1e-9 ----

pub(super) fn bucket_span(i: i32) -> f64 {
    let idx = if i < 0 { -i - 1 } else { i };
    10f64.powi(idx / 9 - 9)
}

pub(super) fn bucket(i: i32) -> f64 {
    if i < 0 {
        -bucket(-i - 1)
    } else {
        bucket_span(i) * f64::from(i % 9 + 1)
    }
}

pub(super) fn bucket_index(v: f64) -> i32 {
    if v.is_nan() || v == 0.0 {
        0
    } else if v < 0.0 {
        bucket_index(-v).saturating_neg().saturating_sub(1)
    } else {
        let lg = v.log10().floor().clamp(-9.0, 400.0);
        let prev = (lg as i32 + 9) * 9;
        let e = 6.0 - lg;
        if e >= 0.0 {
            // Integer maths as Atlas does, to dodge floating point noise at bucket edges.
            let n = (v * 10f64.powf(e)) as i64;
            let p10 = 10i64.pow((lg as i32 + e as i32).clamp(0, 18) as u32);
            ((n - 1) / p10) as i32 + prev
        } else {
            let p10 = 10f64.powf(lg);
            ((v - p10) / p10).ceil().min(1e6) as i32 + prev
        }
    }
}

fn ratio(v: f64, i: i32) -> f64 {
    if v < 0.0 {
        1.0 - ratio(-v, -i - 1)
    } else {
        let span = bucket_span(i);
        (v - (bucket(i) - span)) / span
    }
}

fn position(v: f64, min: i32, ppb: f64) -> f64 {
    let i = bucket_index(v);
    let offset = f64::from((i - min - 1).max(0)) * ppb;
    ratio(v, i) * ppb + offset
}

/// `PlotDef.bounds`: the y range of a plot over `n` steps, with Atlas's auto-style rules.
pub(super) fn bounds(plot: &Plot, n: usize) -> (f64, f64) {
    if plot.lines.is_empty() {
        return (0.0, 1.0);
    }
    let at = |l: &super::Line, i: usize| l.values.get(i).copied().unwrap_or(f64::NAN);
    let regular: Vec<_> = plot
        .lines
        .iter()
        .filter(|l| !matches!(l.style, LineStyle::VSpan | LineStyle::Stack))
        .collect();
    let stacked: Vec<_> = plot
        .lines
        .iter()
        .filter(|l| l.style == LineStyle::Stack)
        .collect();
    let (mut min, mut max) = (f64::MAX, -f64::MAX);
    let steps = n.min(plot.lines.iter().map(|l| l.values.len()).max().unwrap_or(0));
    for i in 0..steps {
        for v in regular.iter().map(|l| at(l, i)).filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
        }
        if let Some(first) = stacked.first() {
            let (mut pos, mut neg) = (0.0f64, 0.0f64);
            for v in stacked.iter().map(|l| at(l, i)).filter(|v| v.is_finite()) {
                if v >= 0.0 { pos += v } else { neg += v }
            }
            let v = at(first, i);
            if v.is_finite() {
                min = min.min(v);
                max = max.max(v);
            }
            if pos > 0.0 {
                max = max.max(pos);
            }
            if neg < 0.0 {
                min = min.min(neg);
            }
        }
    }
    let has_area = plot
        .lines
        .iter()
        .any(|l| matches!(l.style, LineStyle::Area | LineStyle::Stack));
    if min == f64::MAX {
        min = 0.0;
    }
    if max == -f64::MAX {
        max = 1.0;
    }
    final_bounds(plot.lower, plot.upper, has_area, min, max)
}

/// An explicit bound that is not a finite number is treated as automatic.
fn sane(b: Bound) -> Bound {
    match b {
        Bound::Explicit(v) if !v.is_finite() => Bound::AutoStyle,
        b => b,
    }
}

fn final_bounds(lower: Bound, upper: Bound, has_area: bool, min: f64, max: f64) -> (f64, f64) {
    let (lower, upper) = (sane(lower), sane(upper));
    let l = match lower {
        Bound::Explicit(v) => v,
        Bound::AutoStyle if has_area && min > 0.0 => 0.0,
        _ => min,
    };
    let u = match upper {
        Bound::Explicit(v) => v,
        Bound::AutoStyle if has_area && max < 0.0 => 0.0,
        _ => max,
    };
    let (l, u) = if l < u {
        (l, u)
    } else {
        match (lower, upper) {
            (_, Bound::Explicit(_)) if !matches!(lower, Bound::Explicit(_)) => (u - 1.0, u),
            (Bound::Explicit(_), Bound::Explicit(_)) => (l.min(u), l.max(u)),
            _ => (l, l + 1.0),
        }
    };
    // Atlas rejects a collapsed explicit range earlier; here it is widened so that the scales
    // keep a non-empty domain (also when +1 vanishes in the precision of a huge value).
    if l < u {
        (l, u)
    } else {
        (l, l + l.abs().max(1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_scale_like_atlas() {
        let s = YScale::new(Scale::Linear, 0.0, 100.0, 0, 300);
        assert_eq!(s.y(0.0), 300);
        assert_eq!(s.y(100.0), 0);
        assert_eq!(s.y(50.0), 150);
        assert_eq!(s.y(f64::NAN), 300);
    }

    #[test]
    fn log_linear_buckets() {
        assert_eq!(bucket(bucket_index(5.0)), 5.0);
        assert_eq!(bucket_index(-5.0), -bucket_index(5.0) - 1);
        assert!(bucket_index(1e300) > bucket_index(1e10));
    }

    #[test]
    fn auto_style_extends_to_zero_for_areas() {
        assert_eq!(
            final_bounds(Bound::AutoStyle, Bound::AutoStyle, true, 5.0, 10.0),
            (0.0, 10.0)
        );
        assert_eq!(
            final_bounds(Bound::AutoData, Bound::AutoStyle, true, 5.0, 10.0),
            (5.0, 10.0)
        );
        assert_eq!(
            final_bounds(Bound::AutoStyle, Bound::AutoStyle, false, 3.0, 3.0),
            (3.0, 4.0)
        );
        assert_eq!(
            final_bounds(Bound::AutoStyle, Bound::Explicit(2.0), false, 3.0, 3.0),
            (1.0, 2.0)
        );
    }
}
