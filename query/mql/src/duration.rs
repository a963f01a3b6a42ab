//! Durations, in the one grammar every part of Argus reads them in: the server's and the
//! agent's settings, the command line, and the Stack Language's time parameters (Atlas's
//! syntax). `500ms`, `10s`, `1m`, `6h`, `1d`, `1w` and `PT1M` mean the same everywhere.
//! All arithmetic is checked: any input gives a value or `None`.

pub const SECOND: i64 = 1_000;
pub const MINUTE: i64 = 60 * SECOND;
pub const HOUR: i64 = 60 * MINUTE;
pub const DAY: i64 = 24 * HOUR;
pub const WEEK: i64 = 7 * DAY;
/// Atlas's fixed-length month and year.
pub const MONTH: i64 = 30 * DAY;
pub const YEAR: i64 = 365 * DAY;

/// A duration: `<n><unit>` (units ms, s, m/min, h, d, w, month, y and their long forms) or
/// an ISO-8601 duration up to days (`PT1H`, `P2DT6H5M`, `PT0.5S`, `P1W`).
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Some(iso) = s.strip_prefix(['P', 'p']) {
        return parse_iso_duration(iso);
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits.parse().ok()?;
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => SECOND,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hrs" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => DAY,
        "w" | "wk" | "wks" | "week" | "weeks" => WEEK,
        "month" | "months" => MONTH,
        "y" | "year" | "years" => YEAR,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The part of an ISO duration after `P`: `[nW][nD][T[nH][nM][n[.f]S]]`.
fn parse_iso_duration(s: &str) -> Option<i64> {
    let (date, time) = match s.find(['T', 't']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut total: i64 = 0;
    let mut any = false;
    let mut add = |n: i64| -> Option<()> {
        total = total.checked_add(n)?;
        any = true;
        Some(())
    };
    for (n, unit) in iso_parts(date)? {
        let ms = match unit {
            'W' => WEEK,
            'D' => DAY,
            _ => return None,
        };
        add(whole(n)?.checked_mul(ms)?)?;
    }
    if let Some(time) = time {
        let parts = iso_parts(time)?;
        if parts.is_empty() {
            return None;
        }
        for (n, unit) in parts {
            let ms = match unit {
                'H' => whole(n)?.checked_mul(HOUR)?,
                'M' => whole(n)?.checked_mul(MINUTE)?,
                'S' => fractional_seconds(n)?,
                _ => return None,
            };
            add(ms)?;
        }
    }
    any.then_some(total)
}

/// Splits `12H30M` into `[("12", 'H'), ("30", 'M')]`; units uppercased.
fn iso_parts(s: &str) -> Option<Vec<(&str, char)>> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_alphabetic() {
            let n = &s[start..i];
            if n.is_empty() {
                return None;
            }
            parts.push((n, c.to_ascii_uppercase()));
            start = i + 1;
        } else if !(c.is_ascii_digit() || c == '.') {
            return None;
        }
    }
    (start == s.len()).then_some(parts)
}

fn whole(n: &str) -> Option<i64> {
    n.parse().ok()
}

/// `12.345` seconds in milliseconds (finer digits are dropped).
pub fn fractional_seconds(n: &str) -> Option<i64> {
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    if !frac.bytes().all(|b| b.is_ascii_digit()) || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let mut ms = 0i64;
    for (i, b) in frac.bytes().take(3).enumerate() {
        ms += i64::from(b - b'0') * [100, 10, 1][i];
    }
    secs.checked_mul(SECOND)?.checked_add(ms)
}

/// A duration that must be positive, in milliseconds, or why it is not one: for settings.
pub fn parse_positive_ms(s: &str) -> Result<i64, String> {
    match parse_ms(s) {
        Some(ms) if ms > 0 => Ok(ms),
        Some(_) => Err(format!("invalid duration {s:?}: must be positive")),
        None => Err(format!(
            "invalid duration {s:?}: expected a number and a unit (ms, s, m, h, d, w, month, \
             y, e.g. 10s or 1d) or an ISO-8601 duration such as PT1M"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The strings the server's settings, the agent's and the command line all take.
    #[test]
    fn one_grammar_for_every_setting() {
        for (s, ms) in [
            ("500ms", 500),
            ("10s", 10_000),
            ("1m", 60_000),
            ("6h", 6 * HOUR),
            ("1d", DAY),
            ("1w", WEEK),
            ("PT1M", 60_000),
        ] {
            assert_eq!(parse_positive_ms(s), Ok(ms), "{s}");
        }
        for bad in ["", "10", "1x", "-1s", "0s", "PT", "1.5h"] {
            assert!(parse_positive_ms(bad).is_err(), "{bad}");
        }
    }
}
