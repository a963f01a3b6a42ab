//! Block value codec: turns a sealed block's fixed-step `f64` values into bytes and back,
//! bit-exactly (every NaN payload, -0.0, infinities and subnormals survive).
//!
//! Each block picks the smallest of a few modes. Most monitoring values are integers divided
//! by a small constant (rates are `delta / 60.0`, gauges are `round(x * 100) / 100`), so the
//! workhorse is a *scaled integer* mode: find a divisor `d` from a fixed table such that
//! `(k as f64) / d` reproduces each value's exact bits, then bit-pack the integers `k`.
//! Values that do not fit (NaN, -0.0, the odd outlier) become exceptions instead of forcing a
//! fallback. Full-precision noise uses the same packing on the bit patterns themselves
//! (ordered as integers), whose deltas are close to the entropy of a random walk; a Chimp
//! style XOR stream covers what neither fits well (e.g. long runs of repeats among noise).
//!
//! # Layout
//!
//! ```text
//! tag: u8 = mode (bits 0..3) | EXC (bit 3) | scale (bits 4..8)
//!   scale 0      integers are f64 bit patterns, sign-folded so integer order is value order
//!   scale 1..=14 integer k stands for SCALES[scale - 1] applied to k (k / d or k * m)
//!   scale 15     one more byte follows: an index into SCALES
//! mode 0 NAN    every value is the canonical NaN; nothing follows
//! mode 1 CONST  every value equal: scale 0: 8 bytes LE bits; else varint zigzag(k)
//! mode 2 FOR    u8 width, varint zigzag(offset >> s), n fields: k - offset
//! mode 3 DELTA  u8 width, k0 (scale 0: 8 bytes LE; else varint zigzag),
//!               varint zigzag(offset >> s), n-1 fields: (k[i] - k[i-1]) - offset
//! mode 4 XOR    Chimp bit stream (LSB-first): 64-bit first value, then per value a
//!               2-bit flag, and a 3-bit leading-zero class and 6-bit length where needed
//! mode 5 RAW    n x 8 bytes LE bits: the ceiling, so a block never exceeds 1 + 8n bytes
//! fields:  width-bit unsigned, packed LSB-first into ceil(count * width / 8) bytes.
//!          s = max(0, width - 6): offsets are stored without low bits they do not need.
//!          All integer arithmetic wraps, so even a 64-bit range round-trips.
//! EXC (FOR and DELTA only; after the fields; overwrites placeholders there):
//!   varint (n_nan << 1 | bitmap), then the canonical-NaN positions as a bitmap of
//!   ceil(n / 8) bytes or as n_nan varint gaps (position - previous position - 1);
//!   varint n_raw, then n_raw times: varint gap, 8 bytes LE bits.
//! ```
//!
//! A 60-value block of per-second rates costs 3-4 header bytes plus 60 fields of 6-9 bits.
//! Decoding never trusts the bytes: every count, width and position is checked against the
//! block length, so garbage yields an error (or garbage values), not a panic, and nothing is
//! allocated but the error message.

use crate::bytes::{put_varint, unzigzag, zigzag};
use crate::error::{Error, Result};

const MODE_NAN: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_FOR: u8 = 2;
const MODE_DELTA: u8 = 3;
const MODE_XOR: u8 = 4;
const MODE_RAW: u8 = 5;
const EXC_FLAG: u8 = 8;
const SCALE_EXT: u8 = 15;
const SCALE_SHORT: usize = 14;

/// `f64::NAN`, which needs no payload in the exception list.
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;
/// Beyond 2^53 not every integer is an f64, so `k as f64` would stop being exact.
const MAX_K: f64 = 9_007_199_254_740_992.0;

/// One entry of the scale table: the value is `k / d`, or `k * m` with `m = 1 / d` for
/// producers that multiply by a decimal step (`k * 0.01` and `k / 100.0` differ in the last
/// bit for some `k`).
#[derive(Clone, Copy, Debug)]
struct Scale {
    d: f64,
    m: f64,
    mul: bool,
}

const fn div(d: f64) -> Scale {
    Scale {
        d,
        m: 1.0 / d,
        mul: false,
    }
}

const fn mul(d: f64) -> Scale {
    Scale {
        d,
        m: 1.0 / d,
        mul: true,
    }
}

/// The first `SCALE_SHORT` entries fit in the tag byte, so they are the common ones. The
/// order is part of the format: append only.
const SCALES: [Scale; 48] = [
    div(1.0),
    div(10.0),
    div(100.0),
    div(1e3),
    div(60.0),
    mul(10.0),
    mul(100.0),
    mul(1e3),
    div(1e4),
    div(1e5),
    div(1e6),
    div(30.0),
    div(3600.0),
    div(600.0),
    // Extended: one extra byte.
    div(2.0),
    div(4.0),
    div(8.0),
    div(120.0),
    div(300.0),
    div(1200.0),
    div(3000.0),
    div(6000.0),
    div(36000.0),
    div(60000.0),
    div(360000.0),
    div(600000.0),
    div(6e6),
    div(1e7),
    div(1e8),
    div(1e9),
    div(1e10),
    div(1e11),
    div(1e12),
    div(1e13),
    div(1e14),
    div(1e15),
    mul(1e4),
    mul(1e5),
    mul(1e6),
    mul(1e7),
    mul(1e8),
    mul(1e9),
    mul(1e10),
    mul(1e11),
    mul(1e12),
    mul(1e13),
    mul(1e14),
    mul(1e15),
];

/// Indexes into `SCALES` by growing divisor: when several divisors reproduce every value the
/// smallest gives the smallest integers, so the search stops at the first exact one.
const SEARCH: [u8; 48] = [
    0, 14, 15, 16, 1, 5, 11, 4, 2, 6, 17, 18, 13, 3, 7, 19, 20, 12, 21, 8, 36, 22, 23, 9, 37, 24,
    25, 10, 38, 26, 27, 39, 28, 40, 29, 41, 30, 42, 31, 43, 32, 44, 33, 45, 34, 46, 35, 47,
];

impl Scale {
    #[inline(always)]
    fn apply(self, k: i64) -> f64 {
        if self.mul {
            k as f64 * self.m
        } else {
            k as f64 / self.d
        }
    }

    /// The integer that reproduces `v` exactly under this scale, if there is one.
    #[inline]
    fn fit(self, v: f64) -> Option<i64> {
        let x = v * self.d;
        // Also rejects NaN and infinities.
        if x.is_nan() || x.abs() > MAX_K {
            return None;
        }
        // `f64::round` is a libm call on baseline x86-64; this is two instructions, and a
        // value it rounds the wrong way (only possible near 2^52) just fails the check.
        let k = (x + 0.5f64.copysign(x)) as i64;
        // A true fit is within a few ulps of k; most misfits are rejected here without the
        // division of the exact check.
        if (x - k as f64).abs() > x.abs() * 1e-12 {
            return None;
        }
        (self.apply(k).to_bits() == v.to_bits()).then_some(k)
    }
}

/// The integer that reproduces `v` exactly under scale `idx` (the head codes values with
/// the same table: `head.rs`).
#[inline]
pub(crate) fn fit_scale(idx: usize, v: f64) -> Option<i64> {
    SCALES.get(idx)?.fit(v)
}

/// The value integer `k` stands for under scale `idx` (NaN for an index out of the table).
#[inline]
pub(crate) fn apply_scale(idx: usize, k: i64) -> f64 {
    SCALES.get(idx).map_or(f64::NAN, |s| s.apply(k))
}

/// The values of integers under scale `idx` (NaN for `None`, and for an index out of the
/// table), appended to `out`: [`apply_scale`] of each, with the scale looked up once.
pub(crate) fn apply_scale_to(idx: usize, ints: &[Option<i64>], out: &mut Vec<f64>) {
    match SCALES.get(idx) {
        Some(&s) => out.extend(ints.iter().map(|k| k.map_or(f64::NAN, |k| s.apply(k)))),
        None => out.resize(out.len() + ints.len(), f64::NAN),
    }
}

/// Scale indexes by growing divisor.
pub(crate) fn scale_search_order() -> &'static [u8] {
    &SEARCH
}

/// Sign-folds an f64 bit pattern so that integer order follows numeric order (and nearby
/// values of either sign are nearby integers). It is its own inverse.
#[inline(always)]
pub(crate) fn fold(bits: u64) -> i64 {
    let s = bits as i64;
    if s < 0 { s ^ i64::MAX } else { s }
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn bit_width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

// ---------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------

/// Appends the encoding of `values` to `out`. The encoding is self-delimiting given
/// `values.len()`, so several blocks can be concatenated in one buffer.
pub fn encode(values: &[f64], out: &mut Vec<u8>) {
    encode_with(values, None, out);
}

/// [`encode`] of values whose integers under scale `idx` the caller already holds (a head
/// codes its values under a scale, a sealed block decodes to its integers): `fits[i]` is
/// `Some(k)` when `values[i]` is `k` under the scale, `None` for NaN. The output is the
/// same bytes `encode` writes; the caller's integers only spare it dividing every value
/// again. Integers that do not pass the checks below are ignored.
pub(crate) fn encode_fitted(values: &[f64], idx: usize, fits: &[Option<i64>], out: &mut Vec<u8>) {
    encode_with(values, Some((idx, fits)), out);
}

/// The buffers an encode plans in, kept by each thread between encodes: a seal encodes a
/// block of every series, and allocating them each time cost 7 % of its instructions.
#[derive(Default)]
struct PlanBuffers {
    /// Fits and integers of the plan under a scale, and of the bit-pattern plan.
    scaled: (Vec<Option<i64>>, Vec<i64>),
    bits: (Vec<Option<i64>>, Vec<i64>),
}

thread_local! {
    static PLAN_BUFFERS: std::cell::Cell<PlanBuffers> =
        std::cell::Cell::new(PlanBuffers::default());
}

fn encode_with(values: &[f64], known: Option<(usize, &[Option<i64>])>, out: &mut Vec<u8>) {
    // Taken for this encode (an empty set is left, allocating nothing) and put back after.
    let mut buffers = PLAN_BUFFERS.take();
    encode_in(values, known, &mut buffers, out);
    PLAN_BUFFERS.set(buffers);
}

fn encode_in(
    values: &[f64],
    known: Option<(usize, &[Option<i64>])>,
    buffers: &mut PlanBuffers,
    out: &mut Vec<u8>,
) {
    let Some(first) = values.first() else {
        out.push(MODE_NAN);
        return;
    };
    let first = first.to_bits();
    // Counted once here for the XOR bound below; none means a constant block.
    let changes = changes(values);
    if changes == 0 {
        encode_const(first, out);
        return;
    }

    // The ceiling: random bits with a few NaNs would otherwise pay headers on top of this.
    let raw_cost = 1 + 8 * values.len();
    let PlanBuffers {
        scaled: (fits, ks),
        bits: (bit_fits, bit_ks),
    } = buffers;
    let scale = match known {
        Some((idx, known)) if is_first_fit(values, idx, known) => {
            fits.clear();
            fits.extend_from_slice(known);
            Some(idx)
        }
        _ => find_scale(values, fits),
    };
    let scaled = scale.map(|idx| IntPlan::build(values, Some(idx), fits, ks));
    let best = match scaled {
        // Bit patterns of values that differ by k steps of 1/d differ by about k * 2^52 / |v|
        // steps, so they cannot pack narrower than small integers do: skip building them.
        Some(s) if s.body.width <= 16 => s,
        Some(s) => {
            let bits = IntPlan::build(values, None, bit_fits, bit_ks);
            // On a tie keep the bit-pattern plan: its decode needs no division.
            if s.cost < bits.cost { s } else { bits }
        }
        None => IntPlan::build(values, None, bit_fits, bit_ks),
    };
    if best.cost > chimp_lower_bound(values.len(), changes) {
        let xor_cost = chimp_len(values);
        if xor_cost < best.cost && xor_cost <= raw_cost {
            out.push(MODE_XOR);
            chimp_encode(values, out);
            return;
        }
    }
    if best.cost > raw_cost {
        out.push(MODE_RAW);
        for v in values {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        return;
    }
    let start = out.len();
    best.write(out);
    debug_assert_eq!(
        out.len() - start,
        best.cost,
        "size estimate of the chosen plan"
    );
}

fn encode_const(bits: u64, out: &mut Vec<u8>) {
    if bits == CANONICAL_NAN {
        out.push(MODE_NAN);
        return;
    }
    let v = f64::from_bits(bits);
    for &idx in &SEARCH {
        if let Some(k) = SCALES[idx as usize].fit(v) {
            let ext = usize::from(idx as usize >= SCALE_SHORT);
            if ext + varint_len(zigzag(k)) < 8 {
                push_tag(out, MODE_CONST, false, Some(idx as usize));
                put_varint(out, zigzag(k));
                return;
            }
            break;
        }
    }
    out.push(MODE_CONST);
    out.extend_from_slice(&bits.to_le_bytes());
}

fn push_tag(out: &mut Vec<u8>, mode: u8, exc: bool, scale: Option<usize>) {
    let exc = if exc { EXC_FLAG } else { 0 };
    match scale {
        None => out.push(mode | exc),
        Some(i) if i < SCALE_SHORT => out.push(mode | exc | ((i as u8 + 1) << 4)),
        Some(i) => {
            out.push(mode | exc | (SCALE_EXT << 4));
            out.push(i as u8);
        }
    }
}

/// Picks the scale with the fewest non-NaN values that do not fit, if that is few enough to
/// be worth storing them as exceptions. When it fits every value, `fits` is left holding
/// each value's integer under it (`None` for NaN), which [`IntPlan::build`] takes instead
/// of dividing every value again; otherwise `fits` is left empty.
fn find_scale(values: &[f64], fits: &mut Vec<Option<i64>>) -> Option<usize> {
    // When some scale fits every value, the search below ends at the first such scale in
    // `SEARCH` order: it keeps a scale only with fewer misfits than the one kept, and stops
    // at none. That scale is found here at a misfit per scale that fails, where the search
    // reads on to a block's eighth (30 values of a merged unit) before it gives a scale up.
    fits.clear();
    fits.resize(values.len(), None);
    for &idx in &SEARCH {
        let scale = SCALES[usize::from(idx)];
        let fits_all = fits.iter_mut().zip(values).all(|(slot, &v)| {
            *slot = scale.fit(v);
            v.is_nan() || slot.is_some()
        });
        if fits_all {
            return Some(usize::from(idx));
        }
    }
    fits.clear();
    find_scale_with_misfits(values)
}

/// Whether [`find_scale`] would pick scale `idx` for `values` and leave `fits`: every value
/// is NaN exactly where its fit is `None`, and every scale before `idx` in `SEARCH` order
/// misfits some value (found at a misfit each, as `find_scale` does). That `fits[i]` is the
/// fit of `values[i]` is the caller's word: it holds for integers the values were made from
/// (a scale's `apply` is exact on the integers `fit` returns).
fn is_first_fit(values: &[f64], idx: usize, fits: &[Option<i64>]) -> bool {
    idx < SCALES.len()
        && fits.len() == values.len()
        && fits
            .iter()
            .zip(values)
            .all(|(f, v)| f.is_some() != v.is_nan())
        && SEARCH
            .iter()
            .map(|&i| usize::from(i))
            .take_while(|&i| i != idx)
            .all(|i| {
                let scale = SCALES[i];
                !values.iter().all(|&v| v.is_nan() || scale.fit(v).is_some())
            })
}

/// [`find_scale`] when no scale fits every value.
fn find_scale_with_misfits(values: &[f64]) -> Option<usize> {
    let limit = (values.len() / 8).max(1);
    let mut best: Option<(usize, usize)> = None;
    for &idx in &SEARCH {
        let scale = SCALES[idx as usize];
        let budget = best.map_or(limit, |(_, fails)| fails - 1);
        let (mut checked, mut fails) = (0usize, 0usize);
        for &v in values {
            if v.is_nan() {
                continue;
            }
            checked += 1;
            if scale.fit(v).is_none() {
                fails += 1;
                // Noise fails everywhere; giving up after the first few keeps the search
                // over ~48 scales cheap.
                if fails > budget || (fails == checked && checked >= 4) {
                    break;
                }
            }
        }
        if fails <= budget && (fails < checked || checked == 0) {
            best = Some((idx as usize, fails));
            if fails == 0 {
                break;
            }
        }
    }
    best.map(|(idx, _)| idx)
}

/// Values that become exceptions, from a block's conversion (`None` = does not fit).
#[derive(Default)]
struct Exceptions {
    nans: Vec<usize>,
    raws: Vec<(usize, u64)>,
}

impl Exceptions {
    fn collect(values: &[f64], fits: &[Option<i64>]) -> Exceptions {
        let mut exc = Exceptions::default();
        for (i, (v, f)) in values.iter().zip(fits).enumerate() {
            match (f, v.to_bits()) {
                (Some(_), _) => {}
                (None, CANONICAL_NAN) => exc.nans.push(i),
                (None, bits) => exc.raws.push((i, bits)),
            }
        }
        exc
    }

    fn is_empty(&self) -> bool {
        self.nans.is_empty() && self.raws.is_empty()
    }

    fn write(&self, n: usize, out: &mut Vec<u8>) {
        let list_len: usize = gaps(self.nans.iter().copied())
            .map(|g| varint_len(g as u64))
            .sum();
        let bitmap = use_bitmap(n, self.nans.len(), list_len);
        put_varint(out, self.nans.len() as u64 * 2 + u64::from(bitmap));
        if bitmap {
            let at = out.len();
            out.resize(at + n.div_ceil(8), 0);
            for &p in &self.nans {
                out[at + p / 8] |= 1 << (p % 8);
            }
        } else {
            for g in gaps(self.nans.iter().copied()) {
                put_varint(out, g as u64);
            }
        }
        put_varint(out, self.raws.len() as u64);
        for (g, &(_, bits)) in gaps(self.raws.iter().map(|r| r.0)).zip(&self.raws) {
            put_varint(out, g as u64);
            out.extend_from_slice(&bits.to_le_bytes());
        }
    }
}

fn use_bitmap(n: usize, n_nan: usize, list_len: usize) -> bool {
    n_nan > 0 && n.div_ceil(8) < list_len
}

/// Size of the EXC section `Exceptions::collect(values, fits).write` would produce, without
/// building it (the outlier search asks this often).
fn exc_cost(values: &[f64], fits: &[Option<i64>]) -> usize {
    let (mut n_nan, mut nan_list, mut next_nan) = (0usize, 0usize, 0usize);
    let (mut n_raw, mut raw_list, mut next_raw) = (0usize, 0usize, 0usize);
    for (i, (v, f)) in values.iter().zip(fits).enumerate() {
        if f.is_some() {
            continue;
        }
        if v.to_bits() == CANONICAL_NAN {
            n_nan += 1;
            nan_list += varint_len((i - next_nan) as u64);
            next_nan = i + 1;
        } else {
            n_raw += 1;
            raw_list += varint_len((i - next_raw) as u64) + 8;
            next_raw = i + 1;
        }
    }
    if n_nan + n_raw == 0 {
        return 0;
    }
    let nan_body = if use_bitmap(values.len(), n_nan, nan_list) {
        values.len().div_ceil(8)
    } else {
        nan_list
    };
    varint_len(n_nan as u64 * 2) + nan_body + varint_len(n_raw as u64) + raw_list
}

/// Ascending positions as gaps: the number of positions skipped since the previous one.
fn gaps(positions: impl Iterator<Item = usize>) -> impl Iterator<Item = usize> {
    let mut next = 0;
    positions.map(move |p| {
        let g = p - next;
        next = p + 1;
        g
    })
}

/// How the integer sequence is laid out. `offset` is what every packed field is added to
/// (the minimum for FOR, the minimum delta for DELTA), rounded down by `offset_shift`.
struct Body {
    delta: bool,
    first: i64,
    offset: i64,
    width: u32,
}

/// Offsets are stored without their low bits: a width-w field only needs an offset good to
/// about w - 6 bits, and a full-precision delta offset would otherwise cost 8 varint bytes.
/// Rounding down can cost one extra width bit, rarely (about 1 block in 100 for noise).
#[inline]
fn offset_shift(width: u32) -> u32 {
    width.saturating_sub(6)
}

/// The rounded offset and field width that cover `lo..=hi`.
fn fit_offset(lo: i64, hi: i64) -> (i64, u32) {
    let mut width = bit_width(hi.wrapping_sub(lo) as u64);
    loop {
        let t = offset_shift(width);
        let offset = (lo >> t) << t;
        if width == 64 || (hi.wrapping_sub(offset) as u64) >> width == 0 {
            return (offset, width);
        }
        width += 1;
    }
}

fn offset_len(offset: i64, width: u32) -> usize {
    varint_len(zigzag(offset >> offset_shift(width)))
}

/// The first value of a DELTA body: a bit pattern has no small magnitude to exploit, so it
/// takes 8 fixed bytes instead of a 9-10 byte varint.
fn first_len(first: i64, scaled: bool) -> usize {
    if scaled { varint_len(zigzag(first)) } else { 8 }
}

/// A complete integer-mode encoding of one block, with its exact size.
struct IntPlan<'a> {
    scale: Option<usize>,
    ks: &'a [i64],
    exc: Exceptions,
    body: Body,
    cost: usize,
}

/// At most this many outliers are moved out of the packed range per block.
const MAX_OUTLIERS: usize = 3;

impl<'a> IntPlan<'a> {
    /// The plan for `values` under `scale`, or as bit patterns. `fits` holds each value's
    /// fit under `scale` when the caller has it already (as [`find_scale`] leaves it), and
    /// is refilled otherwise; `ks` is a buffer for the integers, which the plan keeps.
    fn build(
        values: &[f64],
        scale: Option<usize>,
        fits: &mut Vec<Option<i64>>,
        ks: &'a mut Vec<i64>,
    ) -> IntPlan<'a> {
        match scale {
            None => {
                fits.clear();
                fits.extend(
                    values
                        .iter()
                        .map(|v| (!v.is_nan()).then(|| fold(v.to_bits()))),
                );
            }
            Some(_) if fits.len() == values.len() => {}
            Some(i) => {
                let s = SCALES[i];
                fits.clear();
                fits.extend(values.iter().map(|&v| s.fit(v)));
            }
        }
        let scaled = scale.is_some();
        let tag_cost = 1 + usize::from(scale.is_some_and(|i| i >= SCALE_SHORT));
        let plan = |fits: &[Option<i64>], ks: &mut Vec<i64>| {
            fill_placeholders(fits, ks);
            let (body, body_cost) = plan_body(ks, scaled);
            (body, tag_cost + body_cost + exc_cost(values, fits))
        };
        // A spike or a counter reset widens every field of the block; storing it as an
        // exception (about 9 bytes) pays once it saves a bit or two per field. Narrow or
        // short blocks cannot gain enough to pay for the search.
        let searchable = |body: &Body| values.len() >= 16 && body.width >= 3;
        // Most blocks have no exceptions: one pass over them gives everything the plan and
        // the outlier check need, where the general path takes five.
        let (mut body, mut cost, search, all_fit) = match FitStats::gather(fits, ks) {
            Some(stats) => {
                let (body, body_cost) = stats.body(ks, scaled);
                let search = searchable(&body) && stats.outliers_could_pay(ks.len(), &body);
                (body, tag_cost + body_cost, search, true)
            }
            None => {
                let (body, cost) = plan(fits, ks);
                let search = searchable(&body) && outliers_could_pay(ks, fits, &body);
                (body, cost, search, false)
            }
        };
        if search {
            for _ in 0..MAX_OUTLIERS {
                let mut best: Option<(usize, Body, usize)> = None;
                for p in outlier_candidates(ks, fits, &body).into_iter().flatten() {
                    let saved = fits[p].take();
                    let (b, c) = plan(fits, ks);
                    fits[p] = saved;
                    if c < best.as_ref().map_or(cost, |x| x.2) {
                        best = Some((p, b, c));
                    }
                }
                let Some((p, b, c)) = best else { break };
                fits[p] = None;
                (body, cost) = (b, c);
                // Candidates for the next round come from the current placeholders.
                fill_placeholders(fits, ks);
            }
            fill_placeholders(fits, ks);
        }
        let exc = if all_fit && !search {
            Exceptions::default()
        } else {
            Exceptions::collect(values, fits)
        };
        IntPlan {
            scale,
            ks,
            exc,
            body,
            cost,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let b = &self.body;
        let mode = if b.delta { MODE_DELTA } else { MODE_FOR };
        push_tag(out, mode, !self.exc.is_empty(), self.scale);
        out.push(b.width as u8);
        if b.delta {
            if self.scale.is_some() {
                put_varint(out, zigzag(b.first));
            } else {
                out.extend_from_slice(&b.first.to_le_bytes());
            }
        }
        put_varint(out, zigzag(b.offset >> offset_shift(b.width)));
        if b.delta {
            let deltas = self
                .ks
                .windows(2)
                .map(|w| w[1].wrapping_sub(w[0]).wrapping_sub(b.offset) as u64);
            pack(deltas, b.width, out);
        } else {
            let fields = self.ks.iter().map(|&k| k.wrapping_sub(b.offset) as u64);
            pack(fields, b.width, out);
        }
        if !self.exc.is_empty() {
            self.exc.write(self.ks.len(), out);
        }
    }
}

/// The integers to pack: exceptions take the previous integer as a placeholder, which costs
/// nothing in either FOR or DELTA.
fn fill_placeholders(fits: &[Option<i64>], ks: &mut Vec<i64>) {
    ks.clear();
    let mut prev = fits.iter().find_map(|&f| f).unwrap_or(0);
    for f in fits {
        if let Some(k) = *f {
            prev = k;
        }
        ks.push(prev);
    }
}

/// The three largest and three smallest of a sequence with their positions: enough to know
/// its range with any two positions left out.
struct Extremes {
    hi: [(i64, usize); 3],
    lo: [(i64, usize); 3],
}

impl Extremes {
    fn new() -> Self {
        Extremes {
            hi: [(i64::MIN, usize::MAX); 3],
            lo: [(i64::MAX, usize::MAX); 3],
        }
    }

    #[inline]
    fn push(&mut self, v: i64, at: usize) {
        if v > self.hi[2].0 {
            self.hi[2] = (v, at);
            if v > self.hi[1].0 {
                self.hi.swap(1, 2);
                if v > self.hi[0].0 {
                    self.hi.swap(0, 1);
                }
            }
        }
        if v < self.lo[2].0 {
            self.lo[2] = (v, at);
            if v < self.lo[1].0 {
                self.lo.swap(1, 2);
                if v < self.lo[0].0 {
                    self.lo.swap(0, 1);
                }
            }
        }
    }

    /// `(min, max)` without positions `a` and `b`; `min > max` when nothing is left.
    fn without(&self, a: usize, b: usize) -> (i64, i64) {
        let keep = |e: &&(i64, usize)| e.1 != a && e.1 != b;
        let lo = self.lo.iter().find(keep).map_or(i64::MAX, |e| e.0);
        let hi = self.hi.iter().find(keep).map_or(i64::MIN, |e| e.0);
        (lo, hi)
    }
}

fn range_width(lo: i64, hi: i64) -> usize {
    if lo > hi {
        0
    } else {
        bit_width(hi.wrapping_sub(lo) as u64) as usize
    }
}

/// Positions worth trying as exceptions: the smallest and largest integer (they set the
/// FOR range) and either side of the smallest and largest step (a spike is a step out and
/// a step back), kept only if taking them out narrows the fields by about the 9 bytes an
/// exception costs. The estimate ignores offset rounding, so the caller still prices each
/// candidate exactly; it only spares the search on ordinary blocks.
fn outlier_candidates(ks: &[i64], fits: &[Option<i64>], body: &Body) -> [Option<usize>; 6] {
    let n = ks.len();
    let mut vals = Extremes::new();
    for (i, (&k, f)) in ks.iter().zip(fits).enumerate() {
        if f.is_some() {
            vals.push(k, i);
        }
    }
    let step = |i: usize| ks[i].wrapping_sub(ks[i - 1]);
    let mut steps = Extremes::new();
    for i in 1..n {
        steps.push(step(i), i);
    }
    let bits_now = body.width as usize * if body.delta { n - 1 } else { n };
    let bits_without = |p: usize| {
        let (lo, hi) = vals.without(p, p);
        let for_bits = n * range_width(lo, hi);
        // Without p, the step into p becomes 0 and the step out of it spans both.
        let (mut lo, mut hi) = steps.without(p, p + 1);
        (lo, hi) = (lo.min(0), hi.max(0));
        if p >= 1 && p + 1 < n {
            let both = step(p).wrapping_add(step(p + 1));
            (lo, hi) = (lo.min(both), hi.max(both));
        }
        for_bits.min((n - 1) * range_width(lo, hi))
    };
    let worth = |p: Option<usize>| {
        p.filter(|&p| p < n && fits[p].is_some() && bits_without(p) + 64 < bits_now)
    };
    let (dlo, dhi) = (steps.lo[0].1, steps.hi[0].1);
    [
        worth(Some(vals.lo[0].1)),
        worth(Some(vals.hi[0].1)),
        worth(Some(dlo)),
        worth(dlo.checked_sub(1)),
        worth(Some(dhi)),
        worth(dhi.checked_sub(1)),
    ]
}

/// The three largest and three smallest of some integers (repeats count), without
/// positions: cheap enough to run on every block.
struct Top3 {
    hi: [i64; 3],
    lo: [i64; 3],
}

impl Top3 {
    fn new() -> Self {
        Top3 {
            hi: [i64::MIN; 3],
            lo: [i64::MAX; 3],
        }
    }

    #[inline]
    fn push(&mut self, v: i64) {
        if v > self.hi[2] {
            let [a, b, _] = self.hi;
            self.hi = if v > a {
                [v, a, b]
            } else if v > b {
                [a, v, b]
            } else {
                [a, b, v]
            };
        }
        if v < self.lo[2] {
            let [a, b, _] = self.lo;
            self.lo = if v < a {
                [v, a, b]
            } else if v < b {
                [a, v, b]
            } else {
                [a, b, v]
            };
        }
    }
}

/// A block whose values all fit, in one pass: the three largest and smallest of its
/// integers and of its steps, which hold the ranges [`plan_body`] needs and the extremes
/// [`outliers_could_pay`] looks at. Exactly what those compute in their own passes.
struct FitStats {
    vals: Top3,
    steps: Top3,
}

impl FitStats {
    /// Fills `ks` with the integers, or returns `None` (and leaves `ks` to be refilled) at
    /// the first value that is an exception.
    fn gather(fits: &[Option<i64>], ks: &mut Vec<i64>) -> Option<FitStats> {
        ks.clear();
        let mut stats = FitStats {
            vals: Top3::new(),
            steps: Top3::new(),
        };
        let (first, rest) = fits.split_first()?;
        let mut prev = (*first)?;
        stats.vals.push(prev);
        ks.push(prev);
        for f in rest {
            let k = (*f)?;
            stats.vals.push(k);
            stats.steps.push(k.wrapping_sub(prev));
            ks.push(k);
            prev = k;
        }
        Some(stats)
    }

    fn body(&self, ks: &[i64], scaled: bool) -> (Body, usize) {
        let ranges = |t: &Top3| (t.lo[0], t.hi[0]);
        plan_body_given(ks, ranges(&self.vals), ranges(&self.steps), scaled)
    }

    fn outliers_could_pay(&self, n: usize, body: &Body) -> bool {
        outliers_could_pay_given(&self.vals, &self.steps, n, body)
    }
}

/// Whether taking any one value out as an exception could narrow the body by the ~64 bits
/// an exception costs: a lower bound on the body without one value (FOR loses one extreme
/// value, DELTA at most two steps) against what it costs now. When this says no, so would
/// [`outlier_candidates`] for every candidate, and the search is skipped.
fn outliers_could_pay(ks: &[i64], fits: &[Option<i64>], body: &Body) -> bool {
    let mut vals = Top3::new();
    for (&k, f) in ks.iter().zip(fits) {
        if f.is_some() {
            vals.push(k);
        }
    }
    let mut steps = Top3::new();
    for w in ks.windows(2) {
        steps.push(w[1].wrapping_sub(w[0]));
    }
    outliers_could_pay_given(&vals, &steps, ks.len(), body)
}

/// [`outliers_could_pay`] from the extremes of a block's values and steps.
fn outliers_could_pay_given(vals: &Top3, steps: &Top3, n: usize, body: &Body) -> bool {
    let width = |lo: i64, hi: i64| range_width(lo, hi);
    let for_lb = width(vals.lo[1], vals.hi[0]).min(width(vals.lo[0], vals.hi[1]));
    let (lo, hi) = (steps.lo, steps.hi);
    let delta_lb = width(lo[0], hi[2])
        .min(width(lo[2], hi[0]))
        .min(width(lo[1], hi[1]));
    let bits_now = body.width as usize * if body.delta { n - 1 } else { n };
    (n * for_lb).min((n - 1) * delta_lb) + 64 < bits_now
}

/// Chooses FOR or DELTA for `ks`, whichever is smaller (FOR on a tie: no prefix sum).
fn plan_body(ks: &[i64], scaled: bool) -> (Body, usize) {
    let (mut lo, mut hi) = (ks[0], ks[0]);
    for &k in ks {
        lo = lo.min(k);
        hi = hi.max(k);
    }
    let (mut dlo, mut dhi) = (i64::MAX, i64::MIN);
    for w in ks.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        dlo = dlo.min(d);
        dhi = dhi.max(d);
    }
    plan_body_given(ks, (lo, hi), (dlo, dhi), scaled)
}

/// [`plan_body`] from the range of `ks` and of its steps (the latter unused below 2 values).
fn plan_body_given(
    ks: &[i64],
    (lo, hi): (i64, i64),
    (dlo, dhi): (i64, i64),
    scaled: bool,
) -> (Body, usize) {
    let (offset, width) = fit_offset(lo, hi);
    let for_cost = 1 + offset_len(offset, width) + packed_len(ks.len(), width);
    let for_body = Body {
        delta: false,
        first: 0,
        offset,
        width,
    };
    if ks.len() < 2 {
        return (for_body, for_cost);
    }
    let (doffset, dwidth) = fit_offset(dlo, dhi);
    let delta_cost = 1
        + first_len(ks[0], scaled)
        + offset_len(doffset, dwidth)
        + packed_len(ks.len() - 1, dwidth);
    if delta_cost < for_cost {
        let body = Body {
            delta: true,
            first: ks[0],
            offset: doffset,
            width: dwidth,
        };
        (body, delta_cost)
    } else {
        (for_body, for_cost)
    }
}

/// LSB-first bit sink over a 128-bit accumulator, so any width up to 64 is one shift.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u128,
    have: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter {
            out,
            acc: 0,
            have: 0,
        }
    }

    #[inline(always)]
    fn write(&mut self, v: u64, bits: u32) {
        debug_assert!(bits <= 64 && (bits == 64 || v >> bits == 0));
        self.acc |= u128::from(v) << self.have;
        self.have += bits;
        if self.have >= 64 {
            self.out.extend_from_slice(&(self.acc as u64).to_le_bytes());
            self.acc >>= 64;
            self.have -= 64;
        }
    }

    fn finish(self) {
        let tail = (self.acc as u64).to_le_bytes();
        self.out
            .extend_from_slice(&tail[..self.have.div_ceil(8) as usize]);
    }
}

fn pack(vals: impl Iterator<Item = u64>, width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    let mut w = BitWriter::new(out);
    for v in vals {
        w.write(v, width);
    }
    w.finish();
}

/// At least 2 bits per repeat and 12 per change: rules the stream out for most blocks
/// without working out its size.
fn chimp_lower_bound(n: usize, changes: usize) -> usize {
    1 + (64 + 2 * (n - 1) + 10 * changes).div_ceil(8)
}

/// How many values differ (bit for bit) from the one before.
fn changes(values: &[f64]) -> usize {
    values
        .windows(2)
        .filter(|w| w[0].to_bits() != w[1].to_bits())
        .count()
}

/// Size in bytes (with the tag) of the Chimp stream `chimp_encode` would write; much
/// cheaper than writing it.
fn chimp_len(values: &[f64]) -> usize {
    let mut bits = 64;
    let mut prev_lead = u32::MAX;
    for w in values.windows(2) {
        let x = w[0].to_bits() ^ w[1].to_bits();
        if x == 0 {
            bits += 2;
            prev_lead = u32::MAX;
            continue;
        }
        let lead = LEAD_VALUE[lead_code(x.leading_zeros()) as usize];
        let trail = x.trailing_zeros();
        if trail > 6 {
            bits += 11 + 64 - lead - trail;
            prev_lead = u32::MAX;
        } else if lead == prev_lead {
            bits += 2 + 64 - lead;
        } else {
            bits += 5 + 64 - lead;
            prev_lead = lead;
        }
    }
    1 + (bits as usize).div_ceil(8)
}

/// Chimp leading-zero classes: a count is rounded down to one of these 8 values.
const LEAD_VALUE: [u32; 8] = [0, 8, 12, 16, 18, 20, 22, 24];

const LEAD_CODE: [u8; 65] = {
    let mut t = [0u8; 65];
    let mut lz = 0;
    while lz < 65 {
        let mut code = 7;
        while LEAD_VALUE[code] > lz as u32 {
            code -= 1;
        }
        t[lz] = code as u8;
        lz += 1;
    }
    t
};

#[inline(always)]
fn lead_code(lz: u32) -> u32 {
    u32::from(LEAD_CODE[lz as usize])
}

/// Chimp (Liakos et al., VLDB 2022) without the 128-value window. Flags: 0 = repeat,
/// 1 = code + length + centre bits (many trailing zeros), 2 = same leading class as the
/// previous value, 3 = new leading class.
fn chimp_encode(values: &[f64], out: &mut Vec<u8>) {
    let mut w = BitWriter::new(out);
    let mut prev = values[0].to_bits();
    w.write(prev, 64);
    let mut prev_lead = u32::MAX;
    for v in &values[1..] {
        let bits = v.to_bits();
        let x = bits ^ prev;
        prev = bits;
        if x == 0 {
            w.write(0, 2);
            prev_lead = u32::MAX;
            continue;
        }
        let code = lead_code(x.leading_zeros());
        let lead = LEAD_VALUE[code as usize];
        let trail = x.trailing_zeros();
        if trail > 6 {
            let sig = 64 - lead - trail;
            w.write(u64::from(1 | code << 2 | sig << 5), 11);
            w.write(x >> trail, sig);
            prev_lead = u32::MAX;
        } else if lead == prev_lead {
            w.write(2, 2);
            w.write(x, 64 - lead);
        } else {
            w.write(u64::from(3 | code << 2), 5);
            w.write(x, 64 - lead);
            prev_lead = lead;
        }
    }
    w.finish();
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

/// Decodes exactly `out.len()` values from the front of `bytes` into `out` and returns how
/// many bytes were consumed. Corrupt or short input is an error, never a panic.
pub fn decode(bytes: &[u8], out: &mut [f64]) -> Result<usize> {
    decode_inner(bytes, out, None).map(|(used, _)| used)
}

/// [`decode`], and into `ints` (when given) the integers of a scaled block without
/// exceptions, returning the scale's index with them.
fn decode_inner(
    bytes: &[u8],
    out: &mut [f64],
    mut ints: Option<&mut Vec<Option<i64>>>,
) -> Result<(usize, Option<usize>)> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let tag = r.u8()?;
    let mode = tag & 7;
    let exc = tag & EXC_FLAG != 0;
    let idx = match tag >> 4 {
        0 => None,
        SCALE_EXT => {
            let i = r.u8()? as usize;
            if i >= SCALES.len() {
                return Err(corrupt(format!("block scale index {i} out of range")));
            }
            Some(i)
        }
        s => Some(s as usize - 1),
    };
    let scale = idx.map(|i| SCALES[i]);
    let mut fitted = None;
    match mode {
        MODE_NAN | MODE_XOR | MODE_RAW if exc || scale.is_some() => {
            return Err(corrupt(format!(
                "block tag {tag:#04x} has flags its mode forbids"
            )));
        }
        MODE_NAN => out.fill(f64::NAN),
        MODE_CONST if exc => {
            return Err(corrupt(format!(
                "block tag {tag:#04x} has flags its mode forbids"
            )));
        }
        MODE_CONST => {
            let v = match scale {
                None => f64::from_bits(r.u64()?),
                Some(s) => {
                    let k = unzigzag(r.varint()?);
                    if let Some(ints) = ints.as_deref_mut() {
                        ints.resize(ints.len() + out.len(), Some(k));
                        fitted = idx;
                    }
                    s.apply(k)
                }
            };
            out.fill(v);
        }
        MODE_FOR | MODE_DELTA => {
            let delta = mode == MODE_DELTA;
            match scale {
                None => decode_ints(&mut r, delta, false, out, |k| {
                    f64::from_bits(fold(k as u64) as u64)
                })?,
                Some(s) => {
                    decode_ints(&mut r, delta, true, out, |k| k as f64)?;
                    // `out` holds the integers here, before they are scaled.
                    if let Some(ints) = ints.filter(|_| !exc) {
                        // Exact: a valid block's integers have at most 53 bits.
                        let mut exact = true;
                        ints.extend(out.iter().map(|&k| {
                            exact &= k.abs() <= MAX_K;
                            Some(k as i64)
                        }));
                        fitted = idx.filter(|_| exact);
                    }
                    // A separate pass so that the compiler can use packed divides.
                    if s.mul {
                        out.iter_mut().for_each(|v| *v *= s.m);
                    } else if s.d != 1.0 {
                        out.iter_mut().for_each(|v| *v /= s.d);
                    }
                }
            }
            if exc {
                decode_exceptions(&mut r, out)?;
            }
        }
        MODE_XOR => {
            let used = chimp_decode(&bytes[r.pos..], out)?;
            r.pos += used;
        }
        MODE_RAW => {
            let raw = r.take_region(8 * out.len(), "raw values")?;
            for (o, b) in out.iter_mut().zip(raw.chunks_exact(8)) {
                let mut w = [0u8; 8];
                w.copy_from_slice(b);
                *o = f64::from_le_bytes(w);
            }
        }
        _ => return Err(corrupt(format!("unknown block mode in tag {tag:#04x}"))),
    }
    Ok((r.pos, fitted))
}

/// [`decode`], and when the block holds integers under one of the scales with no
/// exceptions, also those integers (appended to `ints`, one per value) and the scale's
/// index: what [`encode_fitted`] takes when the values are encoded again in a larger
/// block. The integers come from the unpacking itself, before the values are scaled; when
/// the scale comes back `None`, what was appended means nothing.
pub(crate) fn decode_fitted(
    bytes: &[u8],
    out: &mut [f64],
    ints: &mut Vec<Option<i64>>,
) -> Result<(usize, Option<usize>)> {
    decode_inner(bytes, out, Some(ints))
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn short(&self, what: &str) -> Error {
        corrupt(format!(
            "block truncated reading {what} at byte {} of {}",
            self.pos,
            self.buf.len()
        ))
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or_else(|| self.short("a byte"))?;
        self.pos += 1;
        Ok(b)
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self
            .buf
            .get(self.pos..)
            .and_then(|s| s.first_chunk::<8>())
            .ok_or_else(|| self.short("a 64-bit value"))?;
        self.pos += 8;
        Ok(u64::from_le_bytes(*b))
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(corrupt(format!(
                    "varint overflows 64 bits at byte {}",
                    self.pos
                )));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt(format!(
            "varint longer than 10 bytes at byte {}",
            self.pos
        )))
    }

    fn width(&mut self) -> Result<u32> {
        let w = self.u8()?;
        if w > 64 {
            return Err(corrupt(format!("bit width {w} exceeds 64")));
        }
        Ok(u32::from(w))
    }

    /// Skips `len` bytes and returns everything from where they start: unpacking may read
    /// (and mask off) bytes past the region, which saves it a bounds branch per value.
    fn take_region(&mut self, len: usize, what: &str) -> Result<&[u8]> {
        if self.buf.len() - self.pos < len {
            return Err(corrupt(format!(
                "{what} needs {len} bytes at byte {}, block has {}",
                self.pos,
                self.buf.len()
            )));
        }
        let region = &self.buf[self.pos..];
        self.pos += len;
        Ok(region)
    }
}

fn decode_ints(
    r: &mut Reader<'_>,
    delta: bool,
    scaled: bool,
    out: &mut [f64],
    conv: impl Fn(i64) -> f64,
) -> Result<()> {
    let width = r.width()?;
    let first = match (delta, scaled) {
        (false, _) => 0,
        (true, true) => unzigzag(r.varint()?),
        (true, false) => r.u64()? as i64,
    };
    let offset = unzigzag(r.varint()?).wrapping_shl(offset_shift(width));
    if !delta {
        let packed = r.take_region(packed_len(out.len(), width), "packed values")?;
        unpack(packed, width, out, |u| conv(offset.wrapping_add(u as i64)));
        return Ok(());
    }
    let Some((head, rest)) = out.split_first_mut() else {
        return Ok(());
    };
    let packed = r.take_region(packed_len(rest.len(), width), "packed deltas")?;
    *head = conv(first);
    let mut acc = first;
    unpack(packed, width, rest, |u| {
        acc = acc.wrapping_add(offset.wrapping_add(u as i64));
        conv(acc)
    });
    Ok(())
}

/// Feeds the `dst.len()` fields of `width` bits at the front of `packed` through `f` into
/// `dst`. Each field is one unaligned word load, a shift and a mask.
#[inline(always)]
fn unpack(packed: &[u8], width: u32, dst: &mut [f64], mut f: impl FnMut(u64) -> f64) {
    if width == 0 {
        dst.fill_with(|| f(0));
        return;
    }
    let w = width as usize;
    let mask = u64::MAX >> (64 - width);
    if width <= 56 {
        let done = unpack_groups(packed, width, dst, &mut f);
        for (j, d) in dst.iter_mut().enumerate().skip(done) {
            let bit = j * w;
            *d = f((load_u64(packed, bit >> 3) >> (bit & 7)) & mask);
        }
    } else {
        for (j, d) in dst.iter_mut().enumerate() {
            let bit = j * w;
            let lo = load_u64(packed, bit >> 3);
            let hi = packed.get((bit >> 3) + 8).copied().unwrap_or(0);
            let word = u128::from(lo) | u128::from(hi) << 64;
            *d = f(((word >> (bit & 7)) as u64) & mask);
        }
    }
}

/// Unpacks whole groups of eight fields of `width` (1–56) bits from the front of `packed`
/// while at least `N` bytes are left from the group's first byte, with the width a constant:
/// eight fields of `width` bits fill `width` bytes, so every load, shift and mask of a group
/// is known when compiling and no load is bounds-checked. Returns how many fields it wrote;
/// [`unpack`] writes the rest one by one. Against one field at a time with the width a
/// variable, `codec::decode` over the codec bench's kinds ran 41 % fewer instructions.
#[inline(always)]
fn unpack_groups(
    packed: &[u8],
    width: u32,
    dst: &mut [f64],
    f: &mut impl FnMut(u64) -> f64,
) -> usize {
    macro_rules! by_width {
        ($($w:literal => $n:literal),* $(,)?) => {
            match width {
                $($w => unpack_groups_of::<$w, $n>(packed, dst, f),)*
                _ => 0,
            }
        };
    }
    // N: the bytes a group's last load reaches, `(7 * W) / 8 + 8`, rounded up.
    by_width!(
        1 => 16, 2 => 16, 3 => 16, 4 => 16, 5 => 16, 6 => 16, 7 => 16, 8 => 16,
        9 => 24, 10 => 24, 11 => 24, 12 => 24, 13 => 24, 14 => 24, 15 => 24, 16 => 24,
        17 => 32, 18 => 32, 19 => 32, 20 => 32, 21 => 32, 22 => 32, 23 => 32, 24 => 32,
        25 => 40, 26 => 40, 27 => 40, 28 => 40, 29 => 40, 30 => 40, 31 => 40, 32 => 40,
        33 => 48, 34 => 48, 35 => 48, 36 => 48, 37 => 48, 38 => 48, 39 => 48, 40 => 48,
        41 => 56, 42 => 56, 43 => 56, 44 => 56, 45 => 56, 46 => 56, 47 => 56, 48 => 56,
        49 => 64, 50 => 64, 51 => 64, 52 => 64, 53 => 64, 54 => 64, 55 => 64, 56 => 64,
    )
}

#[inline(always)]
fn unpack_groups_of<const W: usize, const N: usize>(
    packed: &[u8],
    dst: &mut [f64],
    f: &mut impl FnMut(u64) -> f64,
) -> usize {
    let mask = u64::MAX >> (64 - W);
    let (groups, _) = dst.as_chunks_mut::<8>();
    let mut done = 0;
    for (g, out) in groups.iter_mut().enumerate() {
        let Some(bytes) = packed.get(g * W..).and_then(|b| b.first_chunk::<N>()) else {
            break;
        };
        for (j, d) in out.iter_mut().enumerate() {
            let bit = j * W;
            let at = bit >> 3;
            let word = bytes[at..at + 8]
                .first_chunk::<8>()
                .map_or(0, |w| u64::from_le_bytes(*w));
            *d = f((word >> (bit & 7)) & mask);
        }
        done += 8;
    }
    done
}

/// The 8 bytes of `b` from `at` as a little-endian word, zero past the end of `b`.
#[inline(always)]
fn load_u64(b: &[u8], at: usize) -> u64 {
    match b.get(at..).and_then(|s| s.first_chunk::<8>()) {
        Some(w) => u64::from_le_bytes(*w),
        // The last fields of every packed region end here: the region's last word shifted
        // down, not a copy of the few bytes left (a call, and a load from bytes stored one
        // by one that the CPU cannot forward): integer gauges decode 12 % faster.
        None => match b.last_chunk::<8>() {
            Some(last) if at < b.len() => u64::from_le_bytes(*last) >> ((at + 8 - b.len()) * 8),
            _ => {
                let mut w = [0u8; 8];
                let rest = b.get(at..).unwrap_or(&[]);
                w[..rest.len()].copy_from_slice(rest);
                u64::from_le_bytes(w)
            }
        },
    }
}

fn decode_exceptions(r: &mut Reader<'_>, out: &mut [f64]) -> Result<()> {
    let n = out.len();
    let head = r.varint()?;
    let (n_nan, bitmap) = (head >> 1, head & 1 == 1);
    if n_nan > n as u64 || (bitmap && n_nan == 0) {
        return Err(corrupt(format!(
            "block of {n} values claims {n_nan} NaN exceptions (bitmap: {bitmap})"
        )));
    }
    if bitmap {
        let bm = r.take_region(n.div_ceil(8), "NaN bitmap")?;
        let mut seen = 0u64;
        for (i, o) in out.iter_mut().enumerate() {
            if bm[i / 8] >> (i % 8) & 1 == 1 {
                *o = f64::NAN;
                seen += 1;
            }
        }
        if seen != n_nan {
            return Err(corrupt(format!(
                "NaN bitmap has {seen} bits set, header says {n_nan}"
            )));
        }
    } else {
        let mut next = 0usize;
        for _ in 0..n_nan {
            let p = exception_pos(r, &mut next, n)?;
            out[p] = f64::NAN;
        }
    }
    let n_raw = r.varint()?;
    if n_raw > n as u64 {
        return Err(corrupt(format!(
            "block of {n} values claims {n_raw} raw exceptions"
        )));
    }
    let mut next = 0usize;
    for _ in 0..n_raw {
        let p = exception_pos(r, &mut next, n)?;
        out[p] = f64::from_bits(r.u64()?);
    }
    Ok(())
}

fn exception_pos(r: &mut Reader<'_>, next: &mut usize, n: usize) -> Result<usize> {
    let gap = r.varint()?;
    if gap >= (n - *next) as u64 {
        return Err(corrupt(format!(
            "exception gap {gap} after position {next} runs past {n} values"
        )));
    }
    let p = *next + gap as usize;
    *next = p + 1;
    Ok(p)
}

/// LSB-first bit source for the Chimp stream; running dry is corruption.
struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u128,
    have: u32,
    consumed: usize,
}

impl BitReader<'_> {
    /// `bits` is 1..=64: every Chimp field has at least one bit.
    #[inline]
    fn read(&mut self, bits: u32) -> Result<u64> {
        if self.have < bits {
            if let Some(w) = self.buf.get(self.pos..).and_then(|s| s.first_chunk::<8>()) {
                self.acc |= u128::from(u64::from_le_bytes(*w)) << self.have;
                self.have += 64;
                self.pos += 8;
            } else {
                while self.have < bits && self.pos < self.buf.len() {
                    self.acc |= u128::from(self.buf[self.pos]) << self.have;
                    self.have += 8;
                    self.pos += 1;
                }
                if self.have < bits {
                    return Err(corrupt(format!(
                        "XOR stream truncated after {} bits",
                        self.consumed
                    )));
                }
            }
        }
        let v = (self.acc as u64) & (u64::MAX >> (64 - bits));
        self.acc >>= bits;
        self.have -= bits;
        self.consumed += bits as usize;
        Ok(v)
    }
}

fn chimp_decode(bytes: &[u8], out: &mut [f64]) -> Result<usize> {
    let mut r = BitReader {
        buf: bytes,
        pos: 0,
        acc: 0,
        have: 0,
        consumed: 0,
    };
    let Some((first, rest)) = out.split_first_mut() else {
        return Ok(0);
    };
    let mut prev = r.read(64)?;
    *first = f64::from_bits(prev);
    let mut prev_lead: Option<u32> = None;
    for o in rest {
        match r.read(2)? {
            0 => prev_lead = None,
            1 => {
                let code = r.read(3)? as usize;
                let sig = r.read(6)? as u32;
                let lead = LEAD_VALUE[code];
                if sig == 0 || lead + sig > 64 {
                    return Err(corrupt(format!(
                        "XOR value with {sig} centre bits after {lead} leading zeros"
                    )));
                }
                prev ^= r.read(sig)? << (64 - lead - sig);
                prev_lead = None;
            }
            2 => {
                let lead = prev_lead.ok_or_else(|| {
                    corrupt("XOR value reuses a leading-zero class that was never set")
                })?;
                prev ^= r.read(64 - lead)?;
            }
            _ => {
                let lead = LEAD_VALUE[r.read(3)? as usize];
                prev ^= r.read(64 - lead)?;
                prev_lead = Some(lead);
            }
        }
        *o = f64::from_bits(prev);
    }
    Ok(r.consumed.div_ceil(8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_load_zero_extended_at_every_offset() {
        let bytes: Vec<u8> = (1..=20u8).map(|b| b.wrapping_mul(37)).collect();
        for len in 0..=bytes.len() {
            let b = &bytes[..len];
            for at in 0..len + 10 {
                let mut w = [0u8; 8];
                for (k, x) in w.iter_mut().enumerate() {
                    *x = b.get(at + k).copied().unwrap_or(0);
                }
                assert_eq!(load_u64(b, at), u64::from_le_bytes(w), "len {len} at {at}");
            }
        }
    }

    #[test]
    fn fields_unpack_as_read_bit_by_bit_at_every_width_and_length() {
        // Bytes without a pattern, so that a field read from the wrong bits shows.
        let mut r = fastrand::Rng::with_seed(23);
        let bytes: Vec<u8> = (0..2000).map(|_| r.u8(..)).collect();
        for width in 1..=64u32 {
            for n in (0..=70).chain([239, 240]) {
                // The region is exactly as long as the fields need, as the decoder takes it.
                let packed = &bytes[..packed_len(n, width)];
                let mut got = vec![f64::NAN; n];
                unpack(packed, width, &mut got, f64::from_bits);
                for (j, g) in got.iter().enumerate() {
                    let mut want = 0u64;
                    for b in 0..width as usize {
                        let bit = j * width as usize + b;
                        want |= u64::from(packed[bit / 8] >> (bit % 8) & 1) << b;
                    }
                    assert_eq!(g.to_bits(), want, "width {width}, {n} fields, field {j}");
                }
            }
        }
    }

    /// Round-trips `values` bit-exactly, between other bytes (so decode must not depend on
    /// where the buffer ends), and returns the encoded size.
    fn check(values: &[f64]) -> usize {
        let mut buf = vec![0xAA, 0x55];
        encode(values, &mut buf);
        let len = buf.len() - 2;
        if values.len() > 1 {
            // The size estimate that picks the XOR stream must be exact.
            let mut xor = Vec::new();
            chimp_encode(values, &mut xor);
            assert_eq!(chimp_len(values), 1 + xor.len());
        }
        buf.extend_from_slice(&[0xFF; 17]);
        let mut out = vec![1.5; values.len()];
        let used = decode(&buf[2..], &mut out).expect("decodes");
        assert_eq!(used, len, "consumed bytes for {values:?}");
        for (i, (a, b)) in values.iter().zip(&out).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "value {i}: {a:?} decoded as {b:?} (block {values:?})"
            );
        }
        // Exactly the encoded bytes are enough, too.
        let exact = buf[2..2 + len].to_vec();
        assert_eq!(decode(&exact, &mut out).expect("decodes"), len);
        // A scaled block gives back the integers the scale fits its values to, and encoding
        // from them writes the same bytes.
        let mut ints = Vec::new();
        let (used, scale) = decode_fitted(&exact, &mut out, &mut ints).expect("decodes");
        assert_eq!(used, len);
        assert!(
            out.iter()
                .zip(values)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        if let Some(idx) = scale {
            let fits: Vec<Option<i64>> = values.iter().map(|&v| SCALES[idx].fit(v)).collect();
            assert_eq!(fits, ints);
            let mut again = Vec::new();
            encode_fitted(values, idx, &fits, &mut again);
            assert_eq!(again, exact, "encode_fitted of {values:?}");
        }
        len
    }

    #[test]
    fn integers_under_a_later_scale_or_wrong_nans_change_nothing() {
        // Whole numbers fit 1/100 too, but the scale search stops at 1; values that are not
        // NaN where the integers say so are not taken either.
        let values: Vec<f64> = (0..60).map(|i| f64::from(i * 7 % 23)).collect();
        let mut plain = Vec::new();
        encode(&values, &mut plain);
        let hundredths = SEARCH
            .iter()
            .map(|&i| usize::from(i))
            .find(|&i| SCALES[i].fit(0.01) == Some(1))
            .expect("a scale of hundredths");
        let as_hundredths: Vec<Option<i64>> =
            values.iter().map(|&v| SCALES[hundredths].fit(v)).collect();
        let mut fitted = Vec::new();
        encode_fitted(&values, hundredths, &as_hundredths, &mut fitted);
        assert_eq!(fitted, plain);
        let mut gaps = values.iter().map(|&v| Some(v as i64)).collect::<Vec<_>>();
        gaps[5] = None;
        let mut fitted = Vec::new();
        encode_fitted(&values, usize::from(SEARCH[0]), &gaps, &mut fitted);
        assert_eq!(fitted, plain);
    }

    fn mode_of(values: &[f64]) -> u8 {
        let mut buf = Vec::new();
        encode(values, &mut buf);
        buf[0] & 7
    }

    fn per_sample(values: &[f64], blocks_of: usize) -> f64 {
        let bytes: usize = values.chunks(blocks_of).map(check).sum();
        bytes as f64 / values.len() as f64
    }

    /// Approximately standard normal (Irwin-Hall with 12 terms) from the seeded test
    /// generator.
    fn normal(r: &mut fastrand::Rng) -> f64 {
        (0..12).map(|_| r.f64()).sum::<f64>() - 6.0
    }

    /// The shortcut for a scale that fits every value picks what the full search picks, on
    /// blocks of every kind: integers, hundredths, rates, decimals under a multiplier, with
    /// NaNs, with a stray misfit (no scale fits all: the search runs) and noise.
    #[test]
    fn a_scale_that_fits_every_value_is_the_one_the_search_finds() {
        let mut r = fastrand::Rng::with_seed(18);
        for case in 0..20_000 {
            let len = [1, 2, 15, 60, 240][case % 5];
            let kind = (case / 5) % 7;
            let values: Vec<f64> = (0..len)
                .map(|_| match kind {
                    0 => r.i64(-1_000..1_000) as f64,
                    1 => r.i64(-100_000..100_000) as f64 / 100.0,
                    2 => r.i64(0..10_000) as f64 / 60.0,
                    3 => r.i64(0..1_000) as f64 * 0.001,
                    4 if r.u8(..) < 40 => f64::NAN,
                    4 => r.i64(0..5_000) as f64 / 8.0,
                    5 if r.u8(..) < 4 => normal(&mut r),
                    5 => r.i64(-300..300) as f64 / 20.0,
                    _ => normal(&mut r) * 1e3,
                })
                .collect();
            let mut fits = Vec::new();
            let found = find_scale(&values, &mut fits);
            assert_eq!(found, find_scale_with_misfits(&values), "block {values:?}");
            // The fits it leaves are the chosen scale's, value by value, or none.
            match found {
                Some(idx) if !fits.is_empty() => {
                    let s = SCALES[idx];
                    let expected: Vec<Option<i64>> = values.iter().map(|&v| s.fit(v)).collect();
                    assert_eq!(fits, expected, "block {values:?}");
                }
                _ => assert!(fits.is_empty(), "block {values:?}"),
            }
        }
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(check(&[]), 1);
        for v in [0.0, -0.0, 1.0, f64::NAN, f64::INFINITY, 1e-310, 0.1, -7.25] {
            assert!(check(&[v]) <= 9, "{v}");
        }
    }

    #[test]
    fn constants_are_tiny() {
        assert_eq!(check(&[f64::NAN; 60]), 1);
        assert_eq!(check(&[0.0; 60]), 2);
        assert_eq!(check(&[42.0; 60]), 2);
        assert_eq!(check(&[37.42; 60]), 3);
        assert_eq!(check(&[1.0 / 60.0; 60]), 2);
        assert_eq!(check(&[-0.0; 60]), 9);
        assert_eq!(check(&[f64::from_bits(0x7ff0_0000_0000_0002); 60]), 9);
        assert_eq!(check(&[std::f64::consts::PI; 60]), 9);
        assert_eq!(mode_of(&[3.0; 5]), MODE_CONST);
    }

    #[test]
    fn counters_as_rates() {
        let mut r = fastrand::Rng::with_seed(7);
        let mut values = Vec::new();
        for s in 0..50 {
            let lambda = (normal(&mut r) * 1.5 + 4.0).exp().min(20_000.0);
            for i in 0..180 {
                let k = (lambda + lambda.sqrt() * normal(&mut r)).round().max(0.0);
                let step = if s % 5 == 0 { 10.0 } else { 60.0 };
                values.push(if i == 0 { f64::NAN } else { k / step });
            }
        }
        let bps = per_sample(&values, 60);
        assert!(bps <= 1.25, "{bps} B/sample");
    }

    #[test]
    fn integer_gauges() {
        let mut r = fastrand::Rng::with_seed(11);
        let mut values = Vec::new();
        for _ in 0..50 {
            let mut x = 150.0;
            for _ in 0..180 {
                x += (r.u64(..) % 11) as f64 - 5.0;
                values.push(x);
            }
        }
        let bps = per_sample(&values, 60);
        assert!(bps <= 0.69, "{bps} B/sample");
    }

    #[test]
    fn gauges_rounded_to_hundredths() {
        let mut r = fastrand::Rng::with_seed(13);
        let mut values = Vec::new();
        for _ in 0..50 {
            let mut x = 37.42;
            for _ in 0..180 {
                x = (x + 1.5 * normal(&mut r)).clamp(0.0, 100.0);
                values.push((x * 100.0).round() / 100.0);
            }
        }
        let bps = per_sample(&values, 60);
        assert!(bps <= 1.84, "{bps} B/sample");
    }

    #[test]
    fn full_precision_noise() {
        let mut r = fastrand::Rng::with_seed(17);
        let mut values = Vec::new();
        for _ in 0..50 {
            let mut x = (3.0 + 0.8 * normal(&mut r)).exp();
            for _ in 0..180 {
                x *= (0.05 * normal(&mut r)).exp();
                values.push(x);
            }
        }
        let bps = per_sample(&values, 60);
        assert!(bps <= 7.3, "{bps} B/sample");
    }

    #[test]
    fn multiplied_decimals_use_a_multiplier() {
        let values: Vec<f64> = (0..60).map(|k| (1000 + k * 7) as f64 * 0.01).collect();
        assert!(check(&values) < 60);
    }

    #[test]
    fn exceptions_do_not_force_a_fallback() {
        let mut values: Vec<f64> = (0..60).map(|k| (k % 7) as f64 / 60.0).collect();
        values[0] = f64::NAN;
        values[9] = -0.0;
        values[30] = f64::from_bits(0x7ff0_0000_0000_0002);
        values[59] = std::f64::consts::E;
        let size = check(&values);
        assert!(size < 60, "{size} bytes");
        // Sparse series: NaN at every other step switches to the bitmap.
        let sparse: Vec<f64> = (0..60)
            .map(|i| if i % 2 == 0 { f64::NAN } else { i as f64 })
            .collect();
        assert!(check(&sparse) < 60);
    }

    #[test]
    fn spikes_become_exceptions() {
        let mut r = fastrand::Rng::with_seed(21);
        let rates: Vec<f64> = (0..60)
            .map(|_| (150 + r.u64(..) % 20) as f64 / 60.0)
            .collect();
        let plain = check(&rates);
        let mut reset = rates.clone();
        reset[17] = -1_234_567.0 / 60.0;
        assert!(check(&reset) <= plain + 11, "{} vs {plain}", check(&reset));

        let mut x = 40.0;
        let noise: Vec<f64> = (0..60)
            .map(|_| {
                x *= (0.05 * normal(&mut r)).exp();
                x
            })
            .collect();
        let plain = check(&noise);
        let mut spiky = noise.clone();
        spiky[30] *= 1000.0;
        spiky[31] = 0.0;
        assert!(check(&spiky) <= plain + 30, "{} vs {plain}", check(&spiky));
    }

    #[test]
    fn special_values_round_trip() {
        let specials = [
            0.0,
            -0.0,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
            f64::from_bits(0xfff0_dead_beef_0001),
            f64::from_bits(1),
            f64::from_bits(0x000f_ffff_ffff_ffff),
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            i64::MAX as f64,
            i64::MIN as f64,
            9_007_199_254_740_993.0,
            1e308,
            1e-308,
        ];
        check(&specials);
        for (i, &a) in specials.iter().enumerate() {
            for &b in &specials[i..] {
                check(&[a, b, a, b, 1.0, 2.0]);
                check(&[a, b]);
            }
        }
        let alternating: Vec<f64> = (0..100)
            .map(|i| if i % 2 == 0 { 1e300 } else { -1e-300 })
            .collect();
        check(&alternating);
    }

    #[test]
    fn every_mode_is_reachable() {
        let ramp: Vec<f64> = (0..60).map(|i| (i * 1000) as f64).collect();
        assert_eq!(mode_of(&ramp), MODE_DELTA);
        let noise: Vec<f64> = (0..60).map(|i| ((i * 37) % 11) as f64).collect();
        assert_eq!(mode_of(&noise), MODE_FOR);
        // Long runs of repeats among full-precision values suit the XOR stream.
        let mut r = fastrand::Rng::with_seed(3);
        let steps: Vec<f64> = (0..60)
            .map(|i| f64::from_bits(r.u64(..) >> 2 | (i / 20) as u64))
            .collect();
        let held: Vec<f64> = (0..60).map(|i| steps[i / 20 * 20]).collect();
        assert_eq!(mode_of(&held), MODE_XOR);
        check(&held);
        let random: Vec<f64> = (0..200).map(|_| f64::from_bits(r.u64(..))).collect();
        assert_eq!(mode_of(&random), MODE_RAW);
        assert_eq!(check(&random), 200 * 8 + 1);
    }

    #[test]
    fn longest_block() {
        let mut r = fastrand::Rng::with_seed(5);
        let values: Vec<f64> = (0..65535)
            .map(|_| (r.u64(..) % 1000) as f64 / 100.0)
            .collect();
        check(&values);
        let bits: Vec<f64> = (0..65535).map(|_| f64::from_bits(r.u64(..))).collect();
        check(&bits);
    }

    #[test]
    fn truncation_is_an_error() {
        let mut r = fastrand::Rng::with_seed(9);
        let blocks: Vec<Vec<f64>> = vec![
            (0..60).map(|i| i as f64 / 60.0).collect(),
            (0..60).map(|_| (r.u64(..) % 100) as f64 * 0.01).collect(),
            (0..60).map(|_| 1.0 + r.f64()).collect(),
            (0..60)
                .map(|i| if i % 3 == 0 { f64::NAN } else { -0.0 })
                .collect(),
            vec![1.0, 1.0, 1.0, 2.5, 2.5, 2.5, r.f64(), 7.0],
        ];
        for values in blocks {
            let mut buf = Vec::new();
            encode(&values, &mut buf);
            let mut out = vec![0.0; values.len()];
            for cut in 0..buf.len() {
                assert!(
                    decode(&buf[..cut], &mut out).is_err(),
                    "{cut} of {} bytes decoded",
                    buf.len()
                );
            }
        }
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let mut out = [0.0; 4];
        for bad in [
            &[0x06][..],
            &[0x07],
            &[0x08],
            &[0x10],
            &[0x14],
            &[0xF2, 48, 0, 0],
            &[0x02, 65, 0],
            &[
                0x0A, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F,
            ],
            &[0x0A, 0, 0, 2, 4],
            &[0x0A, 0, 0, 1, 0],
        ] {
            let err = decode(bad, &mut out).expect_err("corrupt");
            assert!(matches!(err, Error::Corrupt(_)), "{bad:?}: {err}");
        }
    }
}
