//! Number formatting as Atlas prints numbers: Java's `Double.toString` (canonical expressions,
//! constant names, JSON outputs), `%f` (CSV) and SI unit prefixes (legend stats).

use std::fmt::Write;

/// Java's `Double.toString` (JDK 19+, shortest round-trip digits): `42.0`, `0.001`, `1.0E7`,
/// `1.0E-4`, `NaN`, `Infinity`, `-0.0`. Plain notation for 1e-3 ≤ |v| < 1e7, else scientific.
pub(crate) fn java_double(v: f64) -> String {
    let mut out = String::new();
    write_java_double(&mut out, v);
    out
}

pub(crate) fn write_java_double(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
        return;
    }
    if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    let abs = v.abs();
    if v == 0.0 || (1e-3..1e7).contains(&abs) {
        // ryu gives the same shortest digits as Java, in plain notation in this range
        // (`42.0`, `0.001`), several times faster than `Display`: JSON outputs print
        // hundreds of thousands of these.
        out.push_str(zmij::Buffer::new().format_finite(v));
        return;
    }
    // Rust's `{:e}` gives the same shortest digits: `1e7`, `1.5e-4`.
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    out.push_str(mantissa);
    if !mantissa.contains('.') {
        out.push_str(".0");
    }
    out.push('E');
    out.push_str(exp);
}

/// Java's `String.format("%f", v)`: six decimals; `NaN`, `Infinity`, `-Infinity` spelled out.
pub(crate) fn write_fixed6(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "Infinity" } else { "-Infinity" });
    } else {
        let _ = write!(out, "{v:.6}");
    }
}

/// A decimal SI prefix for `v` (Atlas's `UnitPrefix.decimal`): none for |v| in [1, 1000) or
/// tiny, non-finite values.
pub(crate) fn decimal_prefix(v: f64) -> (&'static str, f64) {
    const BIG: [(&str, f64); 8] = [
        ("Y", 1e24),
        ("Z", 1e21),
        ("E", 1e18),
        ("P", 1e15),
        ("T", 1e12),
        ("G", 1e9),
        ("M", 1e6),
        ("k", 1e3),
    ];
    const SMALL: [(&str, f64); 8] = [
        ("m", 1e-3),
        ("μ", 1e-6),
        ("n", 1e-9),
        ("p", 1e-12),
        ("f", 1e-15),
        ("a", 1e-18),
        ("z", 1e-21),
        ("y", 1e-24),
    ];
    let abs = v.abs();
    if !v.is_finite() || abs < 1e-12 {
        return ("", 1.0);
    }
    if abs >= 1000.0 {
        return BIG
            .iter()
            .find(|(_, f)| *f <= abs)
            .copied()
            .unwrap_or(("", 1.0));
    }
    if abs < 1.0 {
        return SMALL
            .iter()
            .find(|(_, f)| *f <= abs)
            .copied()
            .unwrap_or(("", 1.0));
    }
    ("", 1.0)
}

/// `%.1f` with a decimal prefix, as Atlas's legend variables `$atlas.avg` etc.: `27.6k`.
pub(crate) fn prefixed(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    let (symbol, factor) = decimal_prefix(v);
    format!("{:.1}{symbol}", v / factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// zmij prints what ryu printed (the same shortest digits, plain notation) over the
    /// whole range it is used for: random bit patterns, and the values monitoring makes.
    #[test]
    fn zmij_matches_ryu_in_the_plain_range() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut checked = 0;
        let mut check = |v: f64| {
            let abs = v.abs();
            if !(v == 0.0 || (1e-3..1e7).contains(&abs)) {
                return;
            }
            let mut out = String::new();
            write_java_double(&mut out, v);
            assert_eq!(out, ryu::Buffer::new().format_finite(v), "{v:e}");
            checked += 1;
        };
        for _ in 0..1_000_000 {
            check(f64::from_bits(rng.u64(..)));
            let scaled = rng.f64() * 10f64.powi(rng.i32(-3..7));
            check(scaled);
            check(-scaled);
            check(rng.u32(..10_000_000) as f64);
            check(rng.u32(..1_000_000) as f64 / 60.0);
            check((rng.u32(..100_000) as f64) / 100.0);
        }
        for v in [
            0.0,
            -0.0,
            1e-3,
            9_999_999.999_999_998,
            1.0,
            0.1,
            0.2,
            0.3,
            1.0 / 3.0,
        ] {
            check(v);
        }
        assert!(checked > 4_500_000, "{checked}");
    }

    #[test]
    fn java_doubles() {
        let cases = [
            (42.0, "42.0"),
            (0.1, "0.1"),
            (0.001, "0.001"),
            (1e-4, "1.0E-4"),
            (1e7, "1.0E7"),
            (1.2345678e7, "1.2345678E7"),
            (1234567.5, "1234567.5"),
            (-10.0, "-10.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (std::f64::consts::PI, "3.141592653589793"),
            (1.5e-10, "1.5E-10"),
            (3e10, "3.0E10"),
        ];
        for (v, want) in cases {
            assert_eq!(java_double(v), want, "{v}");
        }
    }

    proptest::proptest! {
        /// Every finite value prints in Java's shape and reads back to the same bits.
        #[test]
        fn java_doubles_round_trip(v in proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL) {
            let s = java_double(v);
            let back: f64 = s.replace('E', "e").parse().expect("parses");
            proptest::prop_assert_eq!(back.to_bits(), v.to_bits(), "{}", s);
            let plain = (1e-3..1e7).contains(&v.abs());
            proptest::prop_assert_eq!(s.contains('E'), !plain, "{}", s);
            let mantissa = s.split('E').next().unwrap_or_default();
            proptest::prop_assert!(mantissa.contains('.'), "{}", s);
        }
    }

    #[test]
    fn fixed_and_prefixes() {
        let mut s = String::new();
        write_fixed6(&mut s, 8.0);
        s.push(' ');
        write_fixed6(&mut s, f64::NAN);
        assert_eq!(s, "8.000000 NaN");
        assert_eq!(prefixed(27_600.0), "27.6k");
        assert_eq!(prefixed(0.5), "500.0m");
        assert_eq!(prefixed(3.0e6), "3.0M");
        assert_eq!(prefixed(12.0), "12.0");
        assert_eq!(prefixed(0.0), "0.0");
    }
}
