//! Property tests for the block value codec: bit-exact round trips of any values, blocks
//! concatenated in one buffer, and decoding of garbage that must never panic.

use argus_tsdb::codec::{decode, encode};
use proptest::prelude::*;

/// Values that stress the scaled-integer detection and the exception paths.
fn special() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(f64::EPSILON),
        Just(i64::MAX as f64),
        Just(i64::MIN as f64),
        Just(9_007_199_254_740_993.0),
        Just(1e308),
        Just(1e-308),
        // NaN with any payload and either sign.
        (any::<bool>(), 1u64..(1 << 52))
            .prop_map(|(neg, p)| f64::from_bits(u64::from(neg) << 63 | 0x7ff << 52 | p)),
        // Subnormals.
        (any::<bool>(), 1u64..(1 << 52))
            .prop_map(|(neg, p)| f64::from_bits(u64::from(neg) << 63 | p)),
        any::<i64>().prop_map(|i| i as f64),
    ]
}

/// Integers on a scale, the way monitoring values are produced: `k / d` or `k * (1 / d)`.
fn decimal_series() -> impl Strategy<Value = Vec<f64>> {
    let divisors = prop::sample::select(vec![
        1.0, 2.0, 10.0, 60.0, 100.0, 1e3, 3600.0, 1e6, 1e9, 1e15, 7.0,
    ]);
    (
        divisors,
        any::<bool>(),
        -1_000_000i64..1_000_000,
        0u32..40,
        prop::collection::vec(any::<i64>(), 1..300),
    )
        .prop_map(|(d, mul, start, step_bits, noise)| {
            let step = 1i64 << (step_bits % 40);
            let mut k = start;
            noise
                .iter()
                .map(|n| {
                    k = k.wrapping_add(n % step);
                    let k = k.clamp(-(1 << 53), 1 << 53);
                    if mul {
                        k as f64 * (1.0 / d)
                    } else {
                        k as f64 / d
                    }
                })
                .collect()
        })
}

fn any_bits_series() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(any::<u64>().prop_map(f64::from_bits), 1..300)
}

/// Mostly well-behaved values with specials sprinkled in, or specials only.
fn mixed_series() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(special(), 1..300),
        (
            decimal_series(),
            prop::collection::vec((any::<prop::sample::Index>(), special()), 0..20)
        )
            .prop_map(|(mut values, patches)| {
                for (at, v) in patches {
                    let i = at.index(values.len());
                    values[i] = v;
                }
                values
            }),
        (1usize..300).prop_map(|n| {
            (0..n)
                .map(|i| if i % 2 == 0 { 1e300 } else { -1e-300 })
                .collect()
        }),
        // Long runs of repeats among arbitrary bit patterns.
        (prop::collection::vec(any::<u64>(), 1..20), 1usize..30).prop_map(|(bits, run)| {
            bits.iter()
                .flat_map(|&b| std::iter::repeat_n(f64::from_bits(b), run))
                .take(299)
                .collect()
        }),
    ]
}

fn any_series() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![decimal_series(), any_bits_series(), mixed_series()]
}

fn assert_same(expect: &[f64], got: &[f64]) -> Result<(), TestCaseError> {
    for (i, (a, b)) in expect.iter().zip(got).enumerate() {
        prop_assert_eq!(
            a.to_bits(),
            b.to_bits(),
            "value {}: {:?} became {:?}",
            i,
            a,
            b
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn round_trip(values in any_series()) {
        let mut buf = Vec::new();
        encode(&values, &mut buf);
        let mut out = vec![0.0; values.len()];
        prop_assert_eq!(decode(&buf, &mut out).expect("decodes"), buf.len());
        assert_same(&values, &out)?;
        // Never worse than raw bits plus the tag byte.
        prop_assert!(buf.len() <= 8 * values.len() + 1, "{} bytes for {} values", buf.len(), values.len());
    }

    #[test]
    fn concatenated_blocks(blocks in prop::collection::vec(any_series(), 1..6)) {
        let mut buf = Vec::new();
        for b in &blocks {
            encode(b, &mut buf);
        }
        let mut pos = 0;
        for b in &blocks {
            let mut out = vec![0.0; b.len()];
            pos += decode(&buf[pos..], &mut out).expect("decodes");
            assert_same(b, &out)?;
        }
        prop_assert_eq!(pos, buf.len());
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400), n in 0usize..300) {
        let mut out = vec![0.0; n];
        if let Ok(used) = decode(&bytes, &mut out) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn damaged_blocks_never_panic(
        values in any_series(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        n in 0usize..320,
    ) {
        let mut buf = Vec::new();
        encode(&values, &mut buf);
        for (at, x) in flips {
            let i = at.index(buf.len());
            buf[i] ^= x;
        }
        let mut out = vec![0.0; n];
        if let Ok(used) = decode(&buf, &mut out) {
            prop_assert!(used <= buf.len());
        }
        let short = &buf[..cut.index(buf.len())];
        if let Ok(used) = decode(short, &mut out) {
            prop_assert!(used <= short.len());
        }
    }
}
