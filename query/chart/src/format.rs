//! Number and time text the way Atlas prints it: unit prefixes (`UnitPrefix.scala`), Java's
//! `%.Nf` / `%.Ne` conventions, `Strings.toString(Duration)` and `ZonedDateTime.toString`.

/// A unit prefix: the symbol appended to the scaled value and its factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Prefix {
    pub symbol: &'static str,
    pub factor: f64,
}

const fn p(symbol: &'static str, factor: f64) -> Prefix {
    Prefix { symbol, factor }
}

pub(super) const ONE: Prefix = p("", 1.0);
const YOCTO: Prefix = p("y", 1e-24);
pub(super) const SEC: Prefix = p("s", 1.0);
const NANOS: Prefix = p("ns", 1e-9);
pub(super) const YEAR: Prefix = p("y", 86400.0 * 365.0);

/// Largest first, as Atlas searches them.
const DECIMAL_BIG: [Prefix; 8] = [
    p("Y", 1e24),
    p("Z", 1e21),
    p("E", 1e18),
    p("P", 1e15),
    p("T", 1e12),
    p("G", 1e9),
    p("M", 1e6),
    p("k", 1e3),
];
const DECIMAL_SMALL: [Prefix; 8] = [
    p("m", 1e-3),
    p("\u{3bc}", 1e-6),
    p("n", 1e-9),
    p("p", 1e-12),
    p("f", 1e-15),
    p("a", 1e-18),
    p("z", 1e-21),
    YOCTO,
];
/// Largest first.
pub(super) const BINARY: [Prefix; 8] = [
    p("Yi", 1_208_925_819_614_629_174_706_176.0),
    p("Zi", 1_180_591_620_717_411_303_424.0),
    p("Ei", 1_152_921_504_606_846_976.0),
    p("Pi", 1_125_899_906_842_624.0),
    p("Ti", 1_099_511_627_776.0),
    p("Gi", 1_073_741_824.0),
    p("Mi", 1_048_576.0),
    p("Ki", 1024.0),
];
pub(super) const DURATION_SMALL: [Prefix; 4] =
    [p("ms", 1e-3), p("\u{3bc}s", 1e-6), NANOS, p("ps", 1e-12)];
/// Largest first (`UnitPrefix.durationBigPrefixes`).
pub(super) const DURATION_BIG: [Prefix; 6] = [
    YEAR,
    p("w", 86400.0 * 7.0),
    p("d", 86400.0),
    p("h", 3600.0),
    p("m", 60.0),
    SEC,
];

fn nearly_zero(v: f64) -> bool {
    v.is_nan() || v.abs() < 1e-12
}

/// `UnitPrefix.decimal` / `binary`: the largest of `big` (largest first) not above `|v|`, the
/// small decimal prefixes below 1, none in between or for NaN, infinities and ~0.
fn pick(v: f64, big: &[Prefix]) -> Prefix {
    let a = v.abs();
    let find = |list: &[Prefix]| {
        *list
            .iter()
            .find(|p| p.factor <= a)
            .unwrap_or(&list[list.len() - 1])
    };
    if nearly_zero(a) || !a.is_finite() {
        ONE
    } else if a >= big[big.len() - 1].factor {
        find(big)
    } else if a < 1.0 {
        find(&DECIMAL_SMALL)
    } else {
        ONE
    }
}

pub(super) fn decimal(v: f64) -> Prefix {
    pick(v, &DECIMAL_BIG)
}

pub(super) fn binary(v: f64) -> Prefix {
    pick(v, &BINARY)
}

/// `UnitPrefix.duration` (values are seconds).
pub(super) fn duration(v: f64) -> Prefix {
    let a = v.abs();
    let find = |list: &[Prefix]| {
        *list
            .iter()
            .find(|p| p.factor <= a)
            .unwrap_or(&list[list.len() - 1])
    };
    if nearly_zero(a) || !a.is_finite() {
        SEC
    } else if a >= 1.0 {
        find(&DURATION_BIG)
    } else {
        find(&DURATION_SMALL)
    }
}

/// `UnitPrefix.forRange` / `binaryRange`: the smallest prefix showing `v` with fewer than
/// `digits` digits on either side of the point.
fn range_pick(v: f64, digits: f64, big: &[Prefix]) -> Prefix {
    let f = 10f64.powf(digits);
    let a = v.abs();
    let within = |p: &&Prefix| a >= p.factor / f && a < p.factor * f;
    if nearly_zero(a) || !a.is_finite() || within(&&ONE) {
        ONE
    } else if a >= big[big.len() - 1].factor / f {
        *big.iter().rev().find(within).unwrap_or(&big[0])
    } else if a < 1.0 / f {
        *DECIMAL_SMALL.iter().find(within).unwrap_or(&YOCTO)
    } else {
        ONE
    }
}

pub(super) fn for_range(v: f64, digits: f64) -> Prefix {
    range_pick(v, digits, &DECIMAL_BIG)
}

pub(super) fn binary_range(v: f64, digits: f64) -> Prefix {
    range_pick(v, digits, &BINARY)
}

/// `UnitPrefix.durationRange`.
pub(super) fn duration_range(v: f64) -> Prefix {
    let a = v.abs();
    if nearly_zero(a) || !a.is_finite() {
        SEC
    } else if a >= 1.0 {
        // The largest prefix not above the value (seconds up to years).
        *DURATION_BIG.iter().find(|p| a >= p.factor).unwrap_or(&SEC)
    } else {
        *DURATION_SMALL
            .iter()
            .find(|p| a > p.factor)
            .unwrap_or(&NANOS)
    }
}

/// Java's `%.{prec}f` right-aligned to `width` (NaN and infinities spelled the Java way).
pub(super) fn jf(v: f64, prec: usize, width: usize) -> String {
    let s = if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string()
    } else {
        format!("{v:.prec$}")
    };
    format!("{s:>width$}")
}

/// Java's `%.{prec}e` right-aligned to `width`: the exponent has a sign and two digits or more.
pub(super) fn je(v: f64, prec: usize, width: usize) -> String {
    let s = if !v.is_finite() {
        jf(v, 0, 0)
    } else {
        let r = format!("{v:.prec$e}");
        match r.split_once('e') {
            Some((m, e)) => {
                let e: i32 = e.parse().unwrap_or(0);
                let sign = if e < 0 { '-' } else { '+' };
                format!("{m}e{sign}{:02}", e.abs())
            }
            None => r,
        }
    };
    format!("{s:>width$}")
}

/// Extreme magnitudes that Atlas prints in scientific notation instead of with a prefix.
fn extreme(v: f64) -> bool {
    let a = v.abs();
    // Scala's `Double.MinPositiveValue` is the smallest subnormal.
    v.is_finite() && (a >= 1e27 || (f64::from_bits(1)..=1e-27).contains(&a))
}

impl Prefix {
    /// `prefix.format(v, "%{width}.{prec}f%{sym_width}s")`.
    pub fn fixed(&self, v: f64, prec: usize, width: usize, sym_width: usize) -> String {
        format!(
            "{}{:>sym_width$}",
            jf(v / self.factor, prec, width),
            self.symbol
        )
    }

    /// `prefix.format(v, fmt, scifmt)`: like [`Prefix::fixed`], but extreme values switch to
    /// scientific notation with `sci_prec` / `sci_width` and a trailing `sci_suffix`.
    pub fn fixed_or_sci(
        &self,
        v: f64,
        fixed: (usize, usize, usize),
        sci: (usize, usize, &str),
    ) -> String {
        if extreme(v) {
            let lead = if v >= 0.0 { " " } else { "" };
            format!("{lead}{}{}", je(v, sci.0, sci.1), sci.2)
        } else {
            self.fixed(v, fixed.0, fixed.1, fixed.2)
        }
    }
}

/// `UnitPrefix.format(v)`: `%.1f%s` with a decimal prefix, `%.0e` for extreme values.
pub(super) fn short(v: f64) -> String {
    decimal(v).fixed_or_sci(v, (1, 0, 0), (0, 0, ""))
}

/// The legend statistic cell, `%9.3f%1s` (or `%9.2f%1s` for binary and duration axes).
pub(super) fn stat(v: f64, mode: super::TickLabels, special_prefix: bool) -> String {
    use super::TickLabels::*;
    let (prefix, prec) = match mode {
        Binary if special_prefix => (binary(v), 2),
        Duration if special_prefix => (duration(v), 2),
        Binary | Duration => (decimal(v), 2),
        Off | Decimal => (decimal(v), 3),
    };
    prefix.fixed_or_sci(v, (prec, 9, 1), (1, 8, " "))
}

/// `Strings.toString(Duration)`: `3h`, `1m`, `2w`, ... or ISO-8601 for odd amounts.
pub(super) fn duration_str(ms: i64) -> String {
    const UNITS: [(i64, &str); 5] = [
        (604_800_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    for (u, s) in UNITS {
        if ms % u == 0 {
            return format!("{}{s}", ms / u);
        }
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let mut out = "PT".to_string();
    if h != 0 {
        out += &format!("{h}H");
    }
    if m != 0 {
        out += &format!("{m}M");
    }
    let secs = format!("{:.3}", rest as f64 / 1000.0);
    out + secs.trim_end_matches('0').trim_end_matches('.') + "S"
}

/// Java's `ZonedDateTime.toString`, e.g. `2012-01-01T00:01-08:00[US/Pacific]`.
pub(super) fn zoned_str(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(ms) else {
        return ms.to_string();
    };
    let z = ts.to_zoned_datetime(tz.clone());
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        z.year(),
        z.month(),
        z.day(),
        z.hour(),
        z.minute()
    );
    if z.second() != 0 || z.millisecond() != 0 {
        s += &format!(":{:02}", z.second());
        if z.millisecond() != 0 {
            s += &format!(".{:03}", z.millisecond());
        }
    }
    let off = z.offset().seconds();
    if off == 0 {
        s.push('Z');
    } else {
        let sign = if off < 0 { '-' } else { '+' };
        let a = off.abs();
        s += &format!("{sign}{:02}:{:02}", a / 3600, a % 3600 / 60);
        if a % 60 != 0 {
            s += &format!(":{:02}", a % 60);
        }
    }
    if let Some(name) = tz.iana_name() {
        s += &format!("[{name}]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::TickLabels;
    use super::*;

    #[test]
    fn legend_stats_like_atlas() {
        assert_eq!(stat(27_610.0, TickLabels::Decimal, true), "   27.610k");
        assert_eq!(stat(702.432, TickLabels::Decimal, true), "  702.432 ");
        assert_eq!(stat(f64::NAN, TickLabels::Decimal, true), "      NaN ");
        assert_eq!(stat(1440.0, TickLabels::Decimal, false), "    1.440k");
        assert_eq!(stat(0.5, TickLabels::Decimal, true), "  500.000m");
        assert_eq!(stat(2048.0, TickLabels::Binary, true), "     2.00Ki");
        assert_eq!(stat(1e30, TickLabels::Decimal, true), "  1.0e+30 ");
        assert_eq!(short(1234.0), "1.2k");
        assert_eq!(short(0.5), "500.0m");
    }

    #[test]
    fn durations_and_dates() {
        assert_eq!(duration_str(3 * 3_600_000), "3h");
        assert_eq!(duration_str(60_000), "1m");
        assert_eq!(duration_str(1_500), "PT1.5S");
        let tz = jiff::tz::TimeZone::get("US/Pacific").unwrap();
        assert_eq!(
            zoned_str(1_325_404_860_000, &tz),
            "2012-01-01T00:01-08:00[US/Pacific]"
        );
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(zoned_str(1_325_462_400_000, &utc), "2012-01-02T00:00Z[UTC]");
        let fixed = jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(-8 * 3600).unwrap());
        assert_eq!(
            zoned_str(1_325_462_400_000, &fixed),
            "2012-01-01T16:00-08:00"
        );
    }
}
