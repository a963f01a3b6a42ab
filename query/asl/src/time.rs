//! Atlas's time and duration syntax for graph parameters (`s`, `e`, `step`) and the choice
//! of output step. All arithmetic is checked: any input gives a value or an error.

pub(crate) use crate::duration::{DAY, HOUR, MINUTE, SECOND, WEEK, fractional_seconds};

/// Epoch numbers up to this are seconds, larger ones milliseconds (Atlas's rule).
const MAX_EPOCH_SECONDS: i64 = 1 << 31;

/// A duration in Argus's one grammar (see [`crate::duration`]), in milliseconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    crate::duration::parse_ms(s)
}

/// Atlas's short duration form (`Strings.toString(Duration)`): the largest of w, d, h, m, s
/// that divides it exactly (`1w`, `90m`, `0w` for zero), else Java's ISO form.
pub(crate) fn format_duration(ms: i64) -> String {
    if ms == 0 {
        return "0w".to_string();
    }
    for (unit_ms, unit) in [
        (WEEK, "w"),
        (DAY, "d"),
        (HOUR, "h"),
        (MINUTE, "m"),
        (SECOND, "s"),
    ] {
        if ms % unit_ms == 0 {
            return format!("{}{unit}", ms / unit_ms);
        }
    }
    format_java_duration(ms)
}

/// Java's `Duration.toString`: `PT20M`, `PT1H30M`, `PT24H` (days as hours), `PT0.5S`, `PT0S`.
pub(crate) fn format_java_duration(ms: i64) -> String {
    if ms == 0 {
        return "PT0S".to_string();
    }
    let neg = ms < 0;
    let abs = ms.unsigned_abs();
    let (hours, rest) = (abs / HOUR as u64, abs % HOUR as u64);
    let (minutes, rest) = (rest / MINUTE as u64, rest % MINUTE as u64);
    let (secs, millis) = (rest / SECOND as u64, rest % SECOND as u64);
    let sign = if neg { "-" } else { "" };
    let mut out = String::from("PT");
    if hours > 0 {
        out.push_str(&format!("{sign}{hours}H"));
    }
    if minutes > 0 {
        out.push_str(&format!("{sign}{minutes}M"));
    }
    if secs > 0 || millis > 0 {
        out.push_str(sign);
        out.push_str(&secs.to_string());
        if millis > 0 {
            let frac = format!("{millis:03}");
            out.push('.');
            out.push_str(frac.trim_end_matches('0'));
        }
        out.push('S');
    }
    out
}

/// What a time is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Now,
    Start,
    End,
    /// An absolute time (epoch ms); `epoch` is `Absolute(0)`.
    Absolute(i64),
}

/// A parsed time: an anchor plus an offset in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeRef {
    pub anchor: Anchor,
    pub offset_ms: i64,
}

/// Parses `now`, `epoch`, `s`, `e`, epoch seconds or ms, ISO dates and date-times (in `tz`
/// when no zone is given, as Atlas), each optionally followed by `+duration` or `-duration`.
pub(crate) fn parse_time(s: &str, tz: &jiff::tz::TimeZone) -> Option<TimeRef> {
    let s = s.trim();
    if let Some(anchor) = parse_anchor(s, tz) {
        return Some(TimeRef {
            anchor,
            offset_ms: 0,
        });
    }
    // Try each sign from the right: ISO dates and zones contain '-' and '+' themselves.
    for (i, c) in s.char_indices().rev() {
        if c != '+' && c != '-' {
            continue;
        }
        let (Some(anchor), Some(d)) = (parse_anchor(&s[..i], tz), parse_duration(&s[i + 1..]))
        else {
            continue;
        };
        let offset_ms = if c == '-' { d.checked_neg()? } else { d };
        return Some(TimeRef { anchor, offset_ms });
    }
    None
}

fn parse_anchor(s: &str, tz: &jiff::tz::TimeZone) -> Option<Anchor> {
    match s {
        "now" => return Some(Anchor::Now),
        "epoch" => return Some(Anchor::Absolute(0)),
        "s" | "start" => return Some(Anchor::Start),
        "e" | "end" => return Some(Anchor::End),
        _ => {}
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().ok()?;
        let ms = if n <= MAX_EPOCH_SECONDS {
            n.checked_mul(SECOND)?
        } else {
            n
        };
        return Some(Anchor::Absolute(ms));
    }
    parse_iso_datetime(s, tz).map(Anchor::Absolute)
}

/// `YYYY-MM-DD[THH:MM[:SS[.fff]]][Z|±HH[:MM]]` to epoch ms; without a zone, the wall clock
/// time in `tz`.
fn parse_iso_datetime(s: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.is_empty() || !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let mut ms = days_from_civil(year, month, day)? * DAY;
    let mut rest = &s[10..];
    if let Some(t) = rest.strip_prefix(['T', 't', ' ']) {
        let tb = t.as_bytes();
        if tb.len() < 5 || tb[2] != b':' {
            return None;
        }
        let (h, m) = (num(11..13)?, num(14..16)?);
        if h > 23 || m > 59 {
            return None;
        }
        ms += h * HOUR + m * MINUTE;
        rest = &t[5..];
        if let Some(sec) = rest.strip_prefix(':') {
            let end = sec
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(sec.len());
            let (secs, after) = sec.split_at(end);
            if secs.len() < 2 || !secs.as_bytes()[..2].iter().all(u8::is_ascii_digit) {
                return None;
            }
            let sec_ms = fractional_seconds(secs)?;
            if sec_ms >= 60 * SECOND {
                return None;
            }
            ms += sec_ms;
            rest = after;
        }
    }
    let zone_ms = match rest {
        "" => return local_to_utc(ms, tz),
        "Z" | "z" => 0,
        _ => parse_zone(rest)?,
    };
    ms.checked_sub(zone_ms)
}

/// A wall-clock time (as ms since the epoch as if it were UTC) in `tz`, to epoch ms. In a
/// gap or overlap at a daylight-saving change, the earlier offset is used.
fn local_to_utc(wall_ms: i64, tz: &jiff::tz::TimeZone) -> Option<i64> {
    let ts = jiff::Timestamp::from_millisecond(wall_ms).ok()?;
    let civil = jiff::tz::TimeZone::UTC.to_datetime(ts);
    let zoned = tz.to_ambiguous_zoned_datetime(civil).compatible().ok()?;
    Some(zoned.timestamp().as_millisecond())
}

/// Days since 1970-01-01 to (year, month, day), by jiff's proleptic Gregorian calendar;
/// days outside its years (±9999) are clamped to them.
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let date = date_of_day(days);
    (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    )
}

/// The date `days` after 1970-01-01, clamped to jiff's range.
pub(crate) fn date_of_day(days: i64) -> jiff::civil::Date {
    let epoch = jiff::civil::date(1970, 1, 1);
    let first = epoch
        .until(jiff::civil::Date::MIN)
        .map_or(0, |s| i64::from(s.get_days()));
    let last = epoch
        .until(jiff::civil::Date::MAX)
        .map_or(0, |s| i64::from(s.get_days()));
    jiff::Span::new()
        .try_days(days.clamp(first, last))
        .and_then(|span| epoch.checked_add(span))
        .unwrap_or(if days < 0 {
            jiff::civil::Date::MIN
        } else {
            jiff::civil::Date::MAX
        })
}

/// `+HH:MM`, `-HHMM`, `+HH` to an offset in ms.
fn parse_zone(z: &str) -> Option<i64> {
    let sign = match z.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = z[1..].chars().filter(|&c| c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits[..2].parse().ok()?;
    let m: i64 = if digits.len() == 4 {
        digits[2..].parse().ok()?
    } else {
        0
    };
    if h > 23 || m > 59 {
        return None;
    }
    Some(sign * (h * HOUR + m * MINUTE))
}

/// The date (year, month 1-12, day), if it is one jiff knows (years ±9999).
fn civil_date(y: i64, m: i64, d: i64) -> Option<jiff::civil::Date> {
    jiff::civil::Date::new(
        i16::try_from(y).ok()?,
        i8::try_from(m).ok()?,
        i8::try_from(d).ok()?,
    )
    .ok()
}

/// Days since 1970-01-01 of a date that [`civil_date`] knows.
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> Option<i64> {
    let span = jiff::civil::date(1970, 1, 1)
        .until(civil_date(y, m, d)?)
        .ok()?;
    Some(i64::from(span.get_days()))
}

/// Steps Atlas allows, below a day (Step.scala); from a day up, any number of days.
const ALLOWED_STEPS_MS: &[i64] = &[
    1,
    5,
    10,
    50,
    100,
    500,
    SECOND,
    2 * SECOND,
    3 * SECOND,
    4 * SECOND,
    5 * SECOND,
    6 * SECOND,
    10 * SECOND,
    12 * SECOND,
    15 * SECOND,
    20 * SECOND,
    30 * SECOND,
    MINUTE,
    2 * MINUTE,
    3 * MINUTE,
    4 * MINUTE,
    5 * MINUTE,
    6 * MINUTE,
    10 * MINUTE,
    12 * MINUTE,
    15 * MINUTE,
    20 * MINUTE,
    30 * MINUTE,
    HOUR,
    2 * HOUR,
    3 * HOUR,
    4 * HOUR,
    6 * HOUR,
    8 * HOUR,
    12 * HOUR,
];

/// `t_ms` floored to a multiple of `step_ms`; `None` if that is below `i64::MIN`.
pub(crate) fn floor_to(t_ms: i64, step_ms: i64) -> Option<i64> {
    t_ms.div_euclid(step_ms).checked_mul(step_ms)
}

/// Atlas's `Step.round`: the first allowed step at least `step` (and at least the stored
/// step) that the store can produce (a multiple of its step); past 12 hours, whole days.
pub(crate) fn round_step(stored_ms: i64, step_ms: i64) -> Option<i64> {
    let want = step_ms.max(stored_ms);
    if let Some(&s) = ALLOWED_STEPS_MS
        .iter()
        .find(|&&s| s >= want && s % stored_ms == 0)
    {
        return Some(s);
    }
    let days = want.checked_add(DAY - 1)? / DAY;
    (days..days.saturating_add(10_000))
        .filter_map(|d| d.checked_mul(DAY))
        .find(|&s| s % stored_ms == 0)
}

/// The graph's step (Atlas's `GraphConfig`): the requested step (rounded up to an allowed
/// one) or the stored step, grown so that a line has at most one point per pixel of
/// `width` (itself at most 1440).
pub(crate) fn graph_step(
    stored_ms: i64,
    requested_ms: Option<i64>,
    width: i64,
    start_ms: i64,
    end_ms: i64,
) -> Option<i64> {
    let primary = match requested_ms {
        Some(step) => round_step(stored_ms, step)?,
        None => stored_ms,
    };
    let width = width.clamp(1, 1440);
    let datapoints = end_ms.checked_sub(start_ms)? / primary;
    let min_step = ((datapoints + width - 1) / width)
        .max(1)
        .checked_mul(primary)?;
    round_step(stored_ms, min_step.max(primary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::{MONTH, YEAR};

    fn check_duration(s: &str, expected: Option<i64>) {
        assert_eq!(parse_duration(s), expected, "{s}");
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration(0), "0w");
        assert_eq!(format_duration(WEEK), "1w");
        assert_eq!(format_duration(90 * MINUTE), "90m");
        assert_eq!(format_duration(DAY), "1d");
        assert_eq!(format_duration(1500), "PT1.5S");
        assert_eq!(format_java_duration(20 * MINUTE), "PT20M");
        assert_eq!(format_java_duration(DAY + 90 * MINUTE), "PT25H30M");
        assert_eq!(format_java_duration(500), "PT0.5S");
    }

    #[test]
    fn durations() {
        check_duration("60s", Some(60_000));
        check_duration("1m", Some(60_000));
        check_duration("5min", Some(300_000));
        check_duration("3h", Some(3 * HOUR));
        check_duration("1w", Some(WEEK));
        check_duration("2months", Some(2 * MONTH));
        check_duration("1y", Some(YEAR));
        check_duration("250ms", Some(250));
        check_duration("PT1M", Some(60_000));
        check_duration("PT1H", Some(HOUR));
        check_duration("P2DT6H5M", Some(2 * DAY + 6 * HOUR + 5 * MINUTE));
        check_duration("PT0.5S", Some(500));
        check_duration("P1W", Some(WEEK));
        check_duration("P", None);
        check_duration("PT", None);
        check_duration("P1M", None);
        check_duration("1", None);
        check_duration("m", None);
        check_duration("1x", None);
        check_duration("99999999999999999999y", None);
        check_duration("9999999999999999y", None);
    }

    fn check_time(s: &str, anchor: Anchor, offset_ms: i64) {
        assert_eq!(
            parse_time(s, &jiff::tz::TimeZone::UTC),
            Some(TimeRef { anchor, offset_ms }),
            "{s}"
        );
    }

    #[test]
    fn times() {
        use Anchor::*;
        check_time("now", Now, 0);
        check_time("now-3h", Now, -3 * HOUR);
        check_time("e-1w", End, -WEEK);
        check_time("s+6h", Start, 6 * HOUR);
        check_time("s+P2DT6H5M", Start, 2 * DAY + 6 * HOUR + 5 * MINUTE);
        check_time("epoch", Absolute(0), 0);
        check_time("1700000000", Absolute(1_700_000_000_000), 0);
        check_time("1700000000000", Absolute(1_700_000_000_000), 0);
        check_time("2147483648", Absolute(2_147_483_648_000), 0);
        check_time("2147483649", Absolute(2_147_483_649), 0);
        check_time("2026-01-01", Absolute(1_767_225_600_000), 0);
        check_time("2026-01-01T00:00Z", Absolute(1_767_225_600_000), 0);
        check_time(
            "2026-01-01T01:02:03",
            Absolute(1_767_225_600_000 + 3_723_000),
            0,
        );
        check_time(
            "2026-01-01T01:02:03.5Z",
            Absolute(1_767_225_600_000 + 3_723_500),
            0,
        );
        check_time(
            "2026-01-01T00:00-05:00",
            Absolute(1_767_225_600_000 + 5 * HOUR),
            0,
        );
        check_time(
            "2026-01-01T00:00+0130",
            Absolute(1_767_225_600_000 - 90 * MINUTE),
            0,
        );
        check_time("2026-01-01T00:00Z-1d", Absolute(1_767_225_600_000), -DAY);
        check_time("2026-01-01-1d", Absolute(1_767_225_600_000), -DAY);
        check_time("2024-02-29", Absolute(1_709_164_800_000), 0);
        check_time("1969-12-31", Absolute(-DAY), 0);
        for bad in [
            "",
            "nowx",
            "now-",
            "now-3",
            "2026-13-01",
            "2023-02-29",
            "2026-01-01T25:00",
            "2026-01-01T00:00+99:00",
            "s+-1h",
            "-1h",
            "2026-1-1",
            "e-99999999999999999y",
        ] {
            assert_eq!(parse_time(bad, &jiff::tz::TimeZone::UTC), None, "{bad}");
        }
    }

    #[test]
    fn graph_steps() {
        let step = |requested: Option<i64>, width: i64, span: i64| {
            graph_step(MINUTE, requested, width, 0, span)
        };
        assert_eq!(step(None, 700, 3 * HOUR), Some(MINUTE));
        assert_eq!(step(None, 700, DAY), Some(3 * MINUTE));
        assert_eq!(step(None, 700, 2 * DAY), Some(5 * MINUTE));
        assert_eq!(step(None, 700, WEEK), Some(15 * MINUTE));
        assert_eq!(step(None, 700, 30 * DAY), Some(2 * HOUR));
        assert_eq!(step(None, 430, 360 * DAY), Some(DAY));
        assert_eq!(step(Some(7 * MINUTE), 700, HOUR), Some(10 * MINUTE));
        assert_eq!(step(Some(13 * HOUR), 700, HOUR), Some(DAY));
        assert_eq!(step(Some(25 * HOUR), 700, HOUR), Some(2 * DAY));
        assert_eq!(step(Some(10 * SECOND), 700, HOUR), Some(MINUTE));
        assert_eq!(
            graph_step(10 * SECOND, None, 700, 0, 3 * HOUR),
            Some(20 * SECOND)
        );
        assert_eq!(round_step(7 * MINUTE, MINUTE), Some(7 * DAY));
    }
}
