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
//!   scale 0      integers are f64 bit patterns, sign-folded so that order is kept
//!   scale 1..=14 integer k stands for SCALES[scale - 1].apply(k)
//!   scale 15     one more byte follows: index into SCALES
//! mode 0  NAN    every value is the canonical NaN (tag only; scale 0, no EXC)
//! mode 1  CONST  scale 0: 8 bytes LE bits; else varint zigzag(k)
//! mode 2  FOR    varint zigzag(min k), u8 width, n values (k - min) packed
//! mode 3  DELTA  varint zigzag(k0), varint zigzag(min delta), u8 width,
//!                n-1 values (delta - min delta) packed
//! mode 4  XOR    Chimp bit stream: 64-bit first value, then per value a 2-bit flag,
//!                3-bit leading-zero code, 6-bit length where needed (scale 0, no EXC)
//! packed: width-bit unsigned fields, LSB-first, ceil(count * width / 8) bytes.
//! Integers are i64 and all arithmetic on them wraps, so a 64-bit range still round-trips.
//! EXC section (after the body; overwrites the placeholder values there):
//!   varint (n_nan << 1 | bitmap); canonical-NaN positions: bitmap ceil(n/8) bytes, or
//!   n_nan varint gaps (position - previous position - 1)
//!   varint n_raw; n_raw times: varint gap, 8 bytes LE bits
//! ```
//! Decoding never trusts the bytes: every count, width and position is checked against the
//! block length, so garbage yields an error (or garbage values), not a panic.

use crate::error::{Error, Result};

const MODE_NAN: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_FOR: u8 = 2;
const MODE_DELTA: u8 = 3;
const MODE_XOR: u8 = 4;
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
        let k = (v * self.d).round();
        // Also rejects NaN and infinities.
        if !(k.abs() <= MAX_K) {
            return None;
        }
        let k = k as i64;
        (self.apply(k).to_bits() == v.to_bits()).then_some(k)
    }
}

/// Sign-folds an f64 bit pattern so that integer order follows numeric order (and nearby
/// values of either sign are nearby integers). It is its own inverse.
#[inline(always)]
fn fold(bits: u64) -> i64 {
    let s = bits as i64;
    if s < 0 { s ^ i64::MAX } else { s }
}

#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
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
    let Some(first) = values.first() else {
        out.push(MODE_NAN);
        return;
    };
    let first = first.to_bits();
    if values.iter().all(|v| v.to_bits() == first) {
        encode_const(first, out);
        return;
    }

    let mut best = IntPlan::build(values, None);
    if let Some(idx) = find_scale(values) {
        let scaled = IntPlan::build(values, Some(idx));
        // On a tie keep the bit-pattern plan: its decode needs no division.
        if scaled.cost < best.cost {
            best = scaled;
        }
    }
    // A Chimp stream costs at least 2 bits per value, so skip it when packing is that good.
    if best.cost > 9 + (values.len() - 1) / 4 {
        let mut xor = Vec::with_capacity(best.cost);
        xor.push(MODE_XOR);
        chimp_encode(values, &mut xor);
        if xor.len() < best.cost {
            out.extend_from_slice(&xor);
            return;
        }
    }
    best.write(out);
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
/// be worth storing them as exceptions.
fn find_scale(values: &[f64]) -> Option<usize> {
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

#[derive(Default)]
struct Exceptions {
    nans: Vec<usize>,
    raws: Vec<(usize, u64)>,
}

impl Exceptions {
    fn is_empty(&self) -> bool {
        self.nans.is_empty() && self.raws.is_empty()
    }

    fn nan_list_len(&self) -> usize {
        gaps(self.nans.iter().copied())
            .map(|g| varint_len(g as u64))
            .sum()
    }

    fn use_bitmap(&self, n: usize) -> bool {
        !self.nans.is_empty() && n.div_ceil(8) < self.nan_list_len()
    }

    fn cost(&self, n: usize) -> usize {
        if self.is_empty() {
            return 0;
        }
        let nan_body = if self.use_bitmap(n) {
            n.div_ceil(8)
        } else {
            self.nan_list_len()
        };
        let raw_body: usize = gaps(self.raws.iter().map(|r| r.0))
            .map(|g| varint_len(g as u64) + 8)
            .sum();
        varint_len(self.nans.len() as u64 * 2) + nan_body + varint_len(self.raws.len() as u64) + raw_body
    }

    fn write(&self, n: usize, out: &mut Vec<u8>) {
        let bitmap = self.use_bitmap(n);
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

/// Ascending positions as gaps: the number of positions skipped since the previous one.
fn gaps(positions: impl Iterator<Item = usize>) -> impl Iterator<Item = usize> {
    let mut next = 0;
    positions.map(move |p| {
        let g = p - next;
        next = p + 1;
        g
    })
}

/// How the integer sequence is laid out: `base` is the minimum (FOR) or the first value
/// (DELTA), `dmin` the minimum delta.
struct Body {
    delta: bool,
    base: i64,
    dmin: i64,
    width: u32,
}

/// A complete integer-mode encoding of one block, with its exact size.
struct IntPlan {
    scale: Option<usize>,
    ks: Vec<i64>,
    exc: Exceptions,
    body: Body,
    cost: usize,
}

impl IntPlan {
    fn build(values: &[f64], scale: Option<usize>) -> IntPlan {
        let mut ks = Vec::with_capacity(values.len());
        let mut exc = Exceptions::default();
        match scale {
            None => to_ints(values, |v| (!v.is_nan()).then(|| fold(v.to_bits())), &mut ks, &mut exc),
            Some(i) => {
                let s = SCALES[i];
                to_ints(values, |v| s.fit(v), &mut ks, &mut exc)
            }
        }
        let (body, body_cost) = plan_body(&ks);
        let tag_cost = 1 + usize::from(scale.is_some_and(|i| i >= SCALE_SHORT));
        let cost = tag_cost + body_cost + exc.cost(values.len());
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
        put_varint(out, zigzag(b.base));
        if b.delta {
            put_varint(out, zigzag(b.dmin));
            out.push(b.width as u8);
            let deltas = self.ks.windows(2).map(|w| {
                w[1].wrapping_sub(w[0]).wrapping_sub(b.dmin) as u64
            });
            pack(deltas, b.width, out);
        } else {
            out.push(b.width as u8);
            pack(self.ks.iter().map(|&k| k.wrapping_sub(b.base) as u64), b.width, out);
        }
        if !self.exc.is_empty() {
            self.exc.write(self.ks.len(), out);
        }
    }
}

/// Converts values to integers; values `conv` rejects become exceptions and take the
/// previous integer as a placeholder, which costs nothing in either FOR or DELTA.
fn to_ints(
    values: &[f64],
    conv: impl Fn(f64) -> Option<i64>,
    ks: &mut Vec<i64>,
    exc: &mut Exceptions,
) {
    let mut prev = values.iter().find_map(|&v| conv(v)).unwrap_or(0);
    for (i, &v) in values.iter().enumerate() {
        match conv(v) {
            Some(k) => prev = k,
            None if v.to_bits() == CANONICAL_NAN => exc.nans.push(i),
            None => exc.raws.push((i, v.to_bits())),
        }
        ks.push(prev);
    }
}

/// Chooses FOR or DELTA for `ks`, whichever is smaller (FOR on a tie: no prefix sum).
fn plan_body(ks: &[i64]) -> (Body, usize) {
    let (mut lo, mut hi) = (ks[0], ks[0]);
    for &k in ks {
        lo = lo.min(k);
        hi = hi.max(k);
    }
    let width = bit_width(hi.wrapping_sub(lo) as u64);
    let for_cost = varint_len(zigzag(lo)) + 1 + packed_len(ks.len(), width);
    let for_body = Body {
        delta: false,
        base: lo,
        dmin: 0,
        width,
    };
    if ks.len() < 2 {
        return (for_body, for_cost);
    }
    let (mut dlo, mut dhi) = (i64::MAX, i64::MIN);
    for w in ks.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        dlo = dlo.min(d);
        dhi = dhi.max(d);
    }
    let dwidth = bit_width(dhi.wrapping_sub(dlo) as u64);
    let delta_cost = varint_len(zigzag(ks[0]))
        + varint_len(zigzag(dlo))
        + 1
        + packed_len(ks.len() - 1, dwidth);
    if delta_cost < for_cost {
        let body = Body {
            delta: true,
            base: ks[0],
            dmin: dlo,
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
        BitWriter { out, acc: 0, have: 0 }
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
        self.out.extend_from_slice(&tail[..self.have.div_ceil(8) as usize]);
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

/// Chimp leading-zero classes: a count is rounded down to one of these 8 values.
const LEAD_VALUE: [u32; 8] = [0, 8, 12, 16, 18, 20, 22, 24];

fn lead_code(lz: u32) -> u32 {
    match lz {
        0..=7 => 0,
        8..=11 => 1,
        12..=15 => 2,
        16..=17 => 3,
        18..=19 => 4,
        20..=21 => 5,
        22..=23 => 6,
        _ => 7,
    }
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
    let mut r = Reader { buf: bytes, pos: 0 };
    let tag = r.u8()?;
    let mode = tag & 7;
    let exc = tag & EXC_FLAG != 0;
    let scale = match tag >> 4 {
        0 => None,
        SCALE_EXT => {
            let i = r.u8()? as usize;
            if i >= SCALES.len() {
                return Err(corrupt(format!("block scale index {i} out of range")));
            }
            Some(SCALES[i])
        }
        s => Some(SCALES[s as usize - 1]),
    };
    match mode {
        MODE_NAN | MODE_XOR if exc || scale.is_some() => {
            return Err(corrupt(format!("block tag {tag:#04x} has flags its mode forbids")));
        }
        MODE_NAN => out.fill(f64::NAN),
        MODE_CONST if exc => {
            return Err(corrupt(format!("block tag {tag:#04x} has flags its mode forbids")));
        }
        MODE_CONST => {
            let v = match scale {
                None => f64::from_bits(r.u64()?),
                Some(s) => s.apply(unzigzag(r.varint()?)),
            };
            out.fill(v);
        }
        MODE_FOR | MODE_DELTA => {
            let delta = mode == MODE_DELTA;
            match scale {
                None => decode_ints(&mut r, delta, out, |k| f64::from_bits(fold(k as u64) as u64))?,
                Some(s) if s.mul => decode_ints(&mut r, delta, out, |k| k as f64 * s.m)?,
                Some(s) if s.d == 1.0 => decode_ints(&mut r, delta, out, |k| k as f64)?,
                Some(s) => decode_ints(&mut r, delta, out, |k| k as f64 / s.d)?,
            }
            if exc {
                decode_exceptions(&mut r, out)?;
            }
        }
        MODE_XOR => {
            let used = chimp_decode(&bytes[r.pos..], out)?;
            r.pos += used;
        }
        _ => return Err(corrupt(format!("unknown block mode in tag {tag:#04x}"))),
    }
    Ok(r.pos)
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
                return Err(corrupt(format!("varint overflows 64 bits at byte {}", self.pos)));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(corrupt(format!("varint longer than 10 bytes at byte {}", self.pos)))
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

/// Values are unpacked through a small stack buffer so the unpack loop and the conversion
/// loop each stay simple enough to be tight.
const CHUNK: usize = 256;

fn decode_ints(
    r: &mut Reader<'_>,
    delta: bool,
    out: &mut [f64],
    conv: impl Fn(i64) -> f64,
) -> Result<()> {
    let base = unzigzag(r.varint()?);
    let mut buf = [0u64; CHUNK];
    if !delta {
        let width = r.width()?;
        let packed = r.take_region(packed_len(out.len(), width), "packed values")?;
        for (c, dst) in out.chunks_mut(CHUNK).enumerate() {
            let buf = &mut buf[..dst.len()];
            unpack(packed, width, c * CHUNK, buf);
            for (o, &u) in dst.iter_mut().zip(buf.iter()) {
                *o = conv(base.wrapping_add(u as i64));
            }
        }
        return Ok(());
    }
    let dmin = unzigzag(r.varint()?);
    let width = r.width()?;
    let Some((first, rest)) = out.split_first_mut() else {
        return Ok(());
    };
    let packed = r.take_region(packed_len(rest.len(), width), "packed deltas")?;
    *first = conv(base);
    let mut acc = base;
    for (c, dst) in rest.chunks_mut(CHUNK).enumerate() {
        let buf = &mut buf[..dst.len()];
        unpack(packed, width, c * CHUNK, buf);
        for (o, &u) in dst.iter_mut().zip(buf.iter()) {
            acc = acc.wrapping_add(dmin.wrapping_add(u as i64));
            *o = conv(acc);
        }
    }
    Ok(())
}

/// Reads fields `first..first + dst.len()` of `width` bits from `packed`. Each field is one
/// unaligned word load and a shift; only the last few fields of a buffer take the padded
/// path.
#[inline]
fn unpack(packed: &[u8], width: u32, first: usize, dst: &mut [u64]) {
    if width == 0 {
        dst.fill(0);
        return;
    }
    let w = width as usize;
    let mask = u64::MAX >> (64 - width);
    if width <= 56 {
        for (j, d) in dst.iter_mut().enumerate() {
            let bit = (first + j) * w;
            *d = (load_u64(packed, bit >> 3) >> (bit & 7)) & mask;
        }
    } else {
        for (j, d) in dst.iter_mut().enumerate() {
            let bit = (first + j) * w;
            let lo = load_u64(packed, bit >> 3);
            let hi = packed.get((bit >> 3) + 8).copied().unwrap_or(0);
            let word = u128::from(lo) | u128::from(hi) << 64;
            *d = ((word >> (bit & 7)) as u64) & mask;
        }
    }
}

#[inline(always)]
fn load_u64(b: &[u8], at: usize) -> u64 {
    match b.get(at..).and_then(|s| s.first_chunk::<8>()) {
        Some(w) => u64::from_le_bytes(*w),
        None => {
            let mut w = [0u8; 8];
            let rest = b.get(at..).unwrap_or(&[]);
            w[..rest.len()].copy_from_slice(rest);
            u64::from_le_bytes(w)
        }
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
        return Err(corrupt(format!("block of {n} values claims {n_raw} raw exceptions")));
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
