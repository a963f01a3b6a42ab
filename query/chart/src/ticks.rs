//! Tick marks for the value axes (decimal, log, log-linear, binary, duration) and the time axis,
//! ported from Atlas's `Ticks.scala`.

use super::format::{self, Prefix};
use super::scales::{bucket, bucket_index};
use super::{Scale, TickLabels};

/// A value tick. With a non-zero `offset` the axis prints the offset once and `+delta` labels.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct ValueTick {
    pub v: f64,
    pub offset: f64,
    pub major: bool,
    label: Option<String>,
}

impl ValueTick {
    fn new(v: f64, major: bool, label: Option<String>) -> ValueTick {
        ValueTick {
            v,
            offset: 0.0,
            major,
            label,
        }
    }

    pub fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format::short(self.v - self.offset))
    }
}

/// (major, minor, minor ticks per major)
type TickSize = (f64, f64, i64);

/// Upper limit on generated ticks: guards against precision loss on huge, narrow ranges.
const MAX_TICKS: i64 = 10_000;

const BASE_SIZES: [(f64, f64); 5] = [(10., 2.), (20., 5.), (30., 10.), (40., 10.), (50., 10.)];

fn base_sizes(exps: std::ops::RangeInclusive<i32>) -> impl Iterator<Item = TickSize> {
    exps.flat_map(|i| {
        let f = 10f64.powi(i);
        BASE_SIZES
            .iter()
            .map(move |&(ma, mi)| (ma * f, mi * f, (ma / mi) as i64))
    })
}

fn binary_sizes() -> impl Iterator<Item = TickSize> {
    const MULTIPLES: [f64; 15] = [
        1., 2., 3., 4., 5., 10., 20., 30., 40., 50., 100., 200., 300., 400., 500.,
    ];
    base_sizes(-1..=1).chain(format::BINARY.iter().rev().flat_map(|p| {
        MULTIPLES
            .iter()
            .map(move |m| (p.factor * m, p.factor / 4.0 * m, 4))
    }))
}

fn duration_sizes() -> Vec<TickSize> {
    let mut ticks: Vec<TickSize> = base_sizes(-25..=-2).collect();
    let multiples: [&[f64]; 5] = [
        &[1., 2., 3., 4., 5., 6., 10., 15., 30., 60.],
        &[4., 5., 6., 10., 15., 30., 3600.],
        &[1., 2., 3., 4., 6., 12., 3600. * 24.],
        &[1., 2., 4., 6., 12., 24., 86400. * 7.],
        &[1., 2., 3., 4., 6., 86400. * 365.],
    ];
    // From minutes up to years: fractions of the next bigger unit.
    for (i, mults) in multiples.iter().enumerate() {
        let next = format::DURATION_BIG[format::DURATION_BIG.len() - 2 - i];
        ticks.extend(
            mults
                .iter()
                .rev()
                .map(|m| (next.factor / m, next.factor / m / 4.0, 4)),
        );
    }
    let y = format::YEAR.factor;
    let mm = [
        1., 2., 3., 4., 5., 10., 20., 30., 40., 50., 100., 200., 300., 400., 500.,
    ];
    ticks.extend(mm.iter().map(|m| (y * m, y / 4.0 * m, 4)));
    ticks.extend(base_sizes(10..=25));
    ticks
}

fn range(v1: f64, v2: f64) -> f64 {
    let r = v2 - v1;
    if r < 1e-12 { 1.0 } else { r }
}

fn sci_ticks(v1: f64, v2: f64) -> Vec<ValueTick> {
    vec![
        ValueTick::new(v1, true, None),
        ValueTick::new(v2, true, None),
    ]
}

/// Ticks for a value axis with about `n` majors over `[v1, v2]` (finite, `v1 <= v2`).
pub(super) fn value_ticks(
    v1: f64,
    v2: f64,
    n: i32,
    scale: Scale,
    mode: TickLabels,
) -> Vec<ValueTick> {
    if !(v1.is_finite() && v2.is_finite() && v1 <= v2) {
        return Vec::new();
    }
    let r = range(v1, v2);
    let n = f64::from(n);
    match mode {
        TickLabels::Binary => match binary_sizes().find(|t| r / t.0 <= n) {
            Some(t) => binary_ticks(v1, v2, t),
            None => sci_ticks(v1, v2),
        },
        TickLabels::Duration => match duration_sizes().into_iter().find(|t| r / t.0 <= n) {
            Some(t) => duration_ticks(v1, v2, t, None),
            None => sci_ticks(v1, v2),
        },
        _ if scale == Scale::LogLinear => log_linear_ticks(v1, v2, n as i32),
        _ => match base_sizes(-25..=25).find(|t| r / t.0 <= n) {
            Some(t) if scale == Scale::Log => log_ticks(v1, v2, n as i32, t),
            Some(t) => normal_ticks(v1, v2, t),
            None => sci_ticks(v1, v2),
        },
    }
}

/// Walks the minor grid from `round(v1, major)` and labels each tick within `[v1, v2]`.
fn walk(v1: f64, v2: f64, t: TickSize, label: impl Fn(f64) -> String) -> (f64, Vec<ValueTick>) {
    let (major, minor, per_major) = t;
    let base = major * (v1 / major).floor();
    let end = ((v2 - base) / minor).min(MAX_TICKS as f64) as i64 + 1;
    let ticks = (0..=end)
        .map(|pos| (pos, base + pos as f64 * minor))
        .filter(|&(_, v)| v >= v1 && v <= v2)
        .map(|(pos, v)| ValueTick::new(v, pos % per_major == 0, Some(label(v))))
        .collect();
    (base, ticks)
}

fn labels_repeat(ticks: &[ValueTick]) -> bool {
    let mut labels: Vec<_> = ticks
        .iter()
        .filter(|t| t.major)
        .map(|t| t.label())
        .collect();
    let n = labels.len();
    labels.sort();
    labels.dedup();
    labels.len() < n
}

fn with_offset(
    ticks: Vec<ValueTick>,
    base: f64,
    label: impl Fn(f64) -> Option<String>,
) -> Vec<ValueTick> {
    ticks
        .into_iter()
        .map(|t| ValueTick {
            offset: base,
            label: label(t.v - base),
            ..t
        })
        .collect()
}

/// Digits after the decimal point so that all labels line up (`Ticks.labelFormat`).
fn label_prec(prefix: Prefix, v: f64) -> usize {
    let i = (v / prefix.factor * 1000.0) as i64;
    if i % 10 > 0 {
        3
    } else if i % 100 > 0 {
        2
    } else {
        1
    }
}

fn normal_ticks(v1: f64, v2: f64, t: TickSize) -> Vec<ValueTick> {
    let m = format::for_range(t.0, 3.0);
    let prefix = if v2.abs() <= 10.0 * m.factor {
        m
    } else {
        format::for_range(v2.abs(), 3.0)
    };
    let prec = label_prec(prefix, t.0);
    let (base, ticks) = walk(v1, v2, t, |v| prefix.fixed(v, prec, 0, 0));
    if labels_repeat(&ticks) {
        with_offset(ticks, base, |_| None)
    } else {
        ticks
    }
}

fn log_floor(v: f64) -> i32 {
    if v <= 1.0 {
        0
    } else {
        v.log10().floor() as i32
    }
}

fn log_ceil(v: f64) -> i32 {
    v.log10().ceil().max(-400.0) as i32
}

fn log_scale_ticks(v1: f64, v2: f64, step: i32) -> Vec<ValueTick> {
    let min = log_floor(v1);
    (min..=log_ceil(v2))
        .map(|c| {
            // At a lower bound of 0 show 0 rather than 1, they are too close on a log scale.
            let v = if v1 == 0.0 && c == 0 {
                0.0
            } else {
                10f64.powi(c)
            };
            let label = format::decimal(v).fixed_or_sci(v, (0, 0, 0), (0, 0, ""));
            ValueTick::new(v, (c - min) % step.max(1) == 0, Some(label))
        })
        .collect()
}

fn neg_ticks(ticks: Vec<ValueTick>) -> Vec<ValueTick> {
    ticks
        .into_iter()
        .rev()
        .map(|t| ValueTick {
            v: -t.v,
            label: t.label.map(|l| format!("-{l}")),
            ..t
        })
        .collect()
}

fn log_ticks(v1: f64, v2: f64, n: i32, t: TickSize) -> Vec<ValueTick> {
    let diff = |a: f64, b: f64| log_ceil(b).saturating_sub(log_floor(a));
    let step = |d: i32| {
        if d <= n {
            1
        } else {
            (f64::from(d) / f64::from(n.max(1))).ceil() as i32
        }
    };
    let mut ticks = if v1 >= 0.0 {
        let d = diff(v1, v2);
        if d <= 2 {
            return normal_ticks(v1, v2, t);
        }
        log_scale_ticks(v1, v2, step(d))
    } else if v2 <= 0.0 {
        let d = diff(-v2, -v1);
        if d <= 2 {
            return normal_ticks(v1, v2, t);
        }
        neg_ticks(log_scale_ticks(-v2, -v1, step(d)))
    } else {
        let (pd, nd) = (diff(0.0, v2), diff(0.0, -v1));
        if pd <= 2 && nd <= 2 {
            return normal_ticks(v1, v2, t);
        }
        let s = step(pd + nd);
        let mut neg = neg_ticks(log_scale_ticks(0.0, -v1, s));
        neg.pop(); // the shared 0 tick
        neg.extend(log_scale_ticks(0.0, v2, s));
        neg
    };
    if ticks.first().is_some_and(|t| t.v < v1) {
        ticks.remove(0);
    }
    if ticks.last().is_some_and(|t| t.v > v2) {
        ticks.pop();
    }
    ticks
}

fn log_linear_ticks(v1: f64, v2: f64, n: i32) -> Vec<ValueTick> {
    let (s, e) = (bucket_index(v1), bucket_index(v2));
    let pos_and_neg = s < 0 && e > 0;
    let num = e.saturating_sub(s);
    let n = n.max(1);
    let major_mod = ((num / 9 + n - 1) / n * 9).max(1);
    let idx = |i: i32| if i < 0 { -i - 1 } else { i };
    let max_ticks = n.saturating_mul(9);
    (s..=e)
        .filter_map(|i| {
            let b = bucket(i);
            let include =
                num < max_ticks || (num / 3 < max_ticks && idx(i) % 3 == 0) || idx(i) % 9 == 0;
            if b < v1 || b > v2 || (pos_and_neg && i == -1) {
                None
            } else if pos_and_neg && i == 0 {
                Some(ValueTick::new(0.0, true, None))
            } else if include {
                Some(ValueTick::new(b, num <= n || idx(i) % major_mod == 0, None))
            } else {
                None
            }
        })
        .collect()
}

fn binary_prec(prefix: Prefix, v: f64) -> usize {
    let i = (v / prefix.factor * 1000.0) as i64;
    if i % 10 > 0 {
        2
    } else if i % 100 > 0 {
        1
    } else {
        0
    }
}

fn binary_ticks(v1: f64, v2: f64, t: TickSize) -> Vec<ValueTick> {
    let m = format::binary_range(t.0, 4.0);
    let prefix = if v2.abs() < 10.0 * m.factor {
        m
    } else {
        format::binary_range(v2.abs(), 4.0)
    };
    let prec = binary_prec(prefix, t.0);
    let (base, ticks) = walk(v1, v2, t, |v| prefix.fixed(v, prec, 0, 0));
    if ticks.is_empty() {
        let mut t = sci_ticks(v1, v2);
        t.iter_mut().for_each(|t| t.offset = v1);
        t
    } else if t.0 < v1.abs() / 1e2 {
        let max = ticks.iter().map(|t| t.v - base).fold(0.0, f64::max);
        let p = format::binary_range(max, 4.0);
        let prec = binary_prec(p, max);
        with_offset(ticks, base, |d| Some(p.fixed(d, prec, 0, 0)))
    } else {
        ticks
    }
}

fn duration_fmt(prefix: Prefix, v: f64) -> (usize, bool) {
    let f = if v < 1.0 { v / prefix.factor } else { v };
    let i = (f * 1000.0).round() as i64;
    if v >= 3.1536e10 {
        (1, true)
    } else if v >= 60.0 {
        (0, false)
    } else if i % 10 > 0 {
        (3, false)
    } else if i % 100 > 0 {
        (2, false)
    } else {
        (1, false)
    }
}

fn fmt_duration(prefix: Prefix, v: f64, f: (usize, bool)) -> String {
    if f.1 {
        format!("{}{}", format::je(v / prefix.factor, f.0, 0), prefix.symbol)
    } else {
        prefix.fixed(v, f.0, 0, 0)
    }
}

fn duration_ticks(v1: f64, v2: f64, t: TickSize, prev: Option<Prefix>) -> Vec<ValueTick> {
    let prefix = prev.unwrap_or_else(|| {
        let m = format::duration_range(t.0);
        if v2.abs() <= m.factor {
            m
        } else {
            format::duration_range(v2.abs())
        }
    });
    let f = duration_fmt(prefix, v2);
    let (base, ticks) = walk(v1, v2, t, |v| fmt_duration(prefix, v, f));
    if !labels_repeat(&ticks) {
        return ticks;
    }
    if prev.is_none() && v2 < format::YEAR.factor * 2.0 && v2 > 1e-3 {
        // Retry one unit smaller (`Ticks.prevDurationPrefix`).
        let smaller = if prefix == format::SEC {
            format::DURATION_SMALL
                .iter()
                .find(|p| p.factor < prefix.factor)
        } else {
            format::DURATION_BIG
                .iter()
                .find(|p| p.factor < prefix.factor)
        };
        return duration_ticks(v1, v2, t, Some(*smaller.unwrap_or(&prefix)));
    }
    let offset_prefix = format::duration_range(v2 - v1);
    let f = duration_fmt(prefix, t.0);
    with_offset(ticks, base, |d| Some(fmt_duration(offset_prefix, d, f)))
}

/// `Ticks.simple`: `n + 1` evenly spaced (on the scale) ticks, for the heatmap color legend.
pub(super) fn simple(min: f64, max: f64, n: usize) -> Vec<ValueTick> {
    (0..=n)
        .map(|i| ValueTick::new(min + (max - min) * i as f64 / n.max(1) as f64, true, None))
        .collect()
}

/// A time tick: epoch ms, major flag and its label.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TimeTick {
    pub t: i64,
    pub major: bool,
    pub label: String,
}

const SEC_MS: i64 = 1_000;
const MIN_MS: i64 = 60 * SEC_MS;
const HOUR_MS: i64 = 60 * MIN_MS;
const DAY_MS: i64 = 24 * HOUR_MS;

const TIME_SIZES: [(i64, i64); 25] = [
    (5 * SEC_MS, SEC_MS),
    (10 * SEC_MS, 2 * SEC_MS),
    (15 * SEC_MS, 5 * SEC_MS),
    (20 * SEC_MS, 5 * SEC_MS),
    (30 * SEC_MS, 10 * SEC_MS),
    (MIN_MS, 10 * SEC_MS),
    (2 * MIN_MS, 30 * SEC_MS),
    (3 * MIN_MS, MIN_MS),
    (5 * MIN_MS, MIN_MS),
    (10 * MIN_MS, 2 * MIN_MS),
    (15 * MIN_MS, 5 * MIN_MS),
    (20 * MIN_MS, 5 * MIN_MS),
    (30 * MIN_MS, 10 * MIN_MS),
    (HOUR_MS, 10 * MIN_MS),
    (2 * HOUR_MS, 30 * MIN_MS),
    (3 * HOUR_MS, HOUR_MS),
    (4 * HOUR_MS, HOUR_MS),
    (6 * HOUR_MS, 2 * HOUR_MS),
    (8 * HOUR_MS, 2 * HOUR_MS),
    (12 * HOUR_MS, 3 * HOUR_MS),
    (DAY_MS, 4 * HOUR_MS),
    (2 * DAY_MS, 8 * HOUR_MS),
    (7 * DAY_MS, DAY_MS),
    (14 * DAY_MS, 2 * DAY_MS),
    (28 * DAY_MS, 7 * DAY_MS),
];

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The zone's UTC offset at `ms`, in ms (0 for instants jiff cannot represent).
pub(super) fn offset_ms(tz: &jiff::tz::TimeZone, ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(ms)
        .map(|ts| i64::from(tz.to_offset(ts).seconds()) * 1000)
        .unwrap_or(0)
}

/// The civil date of a day count since 1970-01-01 (jiff's calendar), at the ends of jiff's
/// years (±9999) for days beyond them.
fn day_to_date(days: i64) -> jiff::civil::Date {
    use jiff::civil::Date;
    jiff::Timestamp::from_second(days.saturating_mul(DAY_MS / 1000))
        .map(|t| jiff::tz::TimeZone::UTC.to_datetime(t).date())
        .unwrap_or(if days < 0 { Date::MIN } else { Date::MAX })
}

/// Days since 1970-01-01 of a civil date.
fn date_to_day(date: jiff::civil::Date) -> i64 {
    jiff::civil::date(1970, 1, 1)
        .until(date)
        .map_or(0, |span| i64::from(span.get_days()))
}

/// The default label: `:ss` off the minute, `HH:mm` off midnight, else `MMMdd`.
fn time_label(local_ms: i64) -> String {
    let ms_of_day = local_ms.rem_euclid(DAY_MS);
    let (h, m, s) = (
        ms_of_day / HOUR_MS,
        ms_of_day % HOUR_MS / MIN_MS,
        ms_of_day % MIN_MS / SEC_MS,
    );
    if s != 0 {
        format!(":{s:02}")
    } else if h != 0 || m != 0 {
        format!("{h:02}:{m:02}")
    } else {
        let date = day_to_date(local_ms.div_euclid(DAY_MS));
        format!("{}{:02}", MONTHS[(date.month() - 1) as usize], date.day())
    }
}

/// Time ticks for `[s, e]` with about `n` majors, aligned to `tz`'s offset at `s`.
pub(super) fn time_ticks(s: i64, e: i64, tz: &jiff::tz::TimeZone, n: i64) -> Vec<TimeTick> {
    let shift = offset_ms(tz, s);
    let dur = e.saturating_sub(s);
    let local = |t: i64| t.saturating_add(offset_ms(tz, t));
    if let Some(&(major, minor)) = TIME_SIZES.iter().find(|t| dur / t.0 <= n) {
        let (zs, ze) = (s.saturating_add(shift), e.saturating_add(shift));
        let mut ticks = Vec::new();
        let mut pos = zs.div_euclid(major) * major;
        while pos <= ze && ticks.len() < MAX_TICKS as usize {
            if pos >= zs {
                let t = pos - shift;
                ticks.push(TimeTick {
                    t,
                    major: pos % major == 0,
                    label: time_label(local(t)),
                });
            }
            pos = pos.saturating_add(minor);
        }
        return ticks;
    }
    // Long ranges: ticks at local midnight every day, month, quarter or some years.
    let n = n.max(1);
    let days = dur / DAY_MS;
    let (months, fmt) = match days {
        d if d <= n => (0, 0),
        d if d / 30 <= n => (1, 1),
        d if d / 90 <= n => (3, 1),
        d if d / 365 <= n => (12, 2),
        d => (12 * (d / (n * 365)).max(1), 2),
    };
    let mut date = day_to_date(s.saturating_add(shift).div_euclid(DAY_MS));
    let end_day = e.saturating_add(shift).div_euclid(DAY_MS);
    let mut ticks = Vec::new();
    loop {
        let day = date_to_day(date);
        if day > end_day || ticks.len() >= MAX_TICKS as usize {
            return ticks;
        }
        let month = MONTHS[(date.month() - 1) as usize];
        let label = match fmt {
            0 => format!("{month}{:02}", date.day()),
            1 => month.to_string(),
            _ => format!("{:04}", date.year()),
        };
        ticks.push(TimeTick {
            t: day.saturating_mul(DAY_MS).saturating_sub(shift),
            major: true,
            label,
        });
        // Adding months clamps the day to the target month, as `LocalDate.plusMonths` does.
        let next = if months == 0 {
            date.tomorrow()
        } else {
            jiff::Span::new()
                .try_months(months)
                .and_then(|span| date.checked_add(span))
        };
        match next {
            Ok(next) => date = next,
            Err(_) => return ticks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(t: &[ValueTick]) -> Vec<String> {
        t.iter().filter(|t| t.major).map(|t| t.label()).collect()
    }

    #[test]
    fn decimal_ticks() {
        let t = value_ticks(0.0, 400.0, 300 / 42, Scale::Linear, TickLabels::Decimal);
        assert_eq!(labels(&t), ["0.0", "100.0", "200.0", "300.0", "400.0"]);
        let t = value_ticks(0.0, 27_600.0, 7, Scale::Linear, TickLabels::Decimal);
        assert_eq!(labels(&t)[1], "4.0k");
        let t = value_ticks(1e9, 1e9 + 10.0, 4, Scale::Linear, TickLabels::Decimal);
        assert!(
            t.iter().all(|t| t.offset != 0.0),
            "offset mode for a narrow range: {t:?}"
        );
        let t = value_ticks(0.0, 1e6, 4, Scale::Log, TickLabels::Decimal);
        assert_eq!(labels(&t), ["0", "100", "10k", "1M"]);
        assert!(!value_ticks(0.0, 5000.0, 4, Scale::Linear, TickLabels::Binary).is_empty());
        assert!(!value_ticks(0.0, 86400.0, 4, Scale::Linear, TickLabels::Duration).is_empty());
        assert!(!value_ticks(0.0, 1e6, 4, Scale::LogLinear, TickLabels::Decimal).is_empty());
    }

    #[test]
    fn time_ticks_3h() {
        let s = 1_325_376_000_000; // 2012-01-01T00:00Z
        let t = time_ticks(
            s - MIN_MS,
            s + 3 * HOUR_MS,
            &jiff::tz::TimeZone::UTC,
            700 / 42,
        );
        let majors: Vec<_> = t
            .iter()
            .filter(|t| t.major)
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(
            majors,
            [
                "Jan01", "00:15", "00:30", "00:45", "01:00", "01:15", "01:30", "01:45", "02:00",
                "02:15", "02:30", "02:45", "03:00"
            ]
        );
        let long = time_ticks(s, s + 400 * DAY_MS, &jiff::tz::TimeZone::UTC, 10);
        assert_eq!(long[0].label, "Jan");
        let leap = jiff::civil::date(2024, 2, 29);
        assert_eq!(day_to_date(date_to_day(leap)), leap);
        assert_eq!(date_to_day(jiff::civil::date(1970, 1, 2)), 1);
        assert_eq!(day_to_date(i64::MAX), jiff::civil::Date::MAX);
    }
}
