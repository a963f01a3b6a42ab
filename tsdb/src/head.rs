//! The head block, the steps of the block a series is writing, kept compact while it fills.
//!
//! Plain `f64` slots cost 8 bytes a step in every series, more than the sealed history of
//! the same steps. Most values are small integers over a decimal or time divisor (rates are
//! `delta / 60`, gauges `round(x * 100) / 100`), so the head keeps one varint token per
//! step: the change of that integer since the previous value. The divisor is the codec's
//! scale table's (see `codec.rs`), chosen from the values as they come: the first scale
//! under which every value so far is exact; when a value does not fit, the head picks
//! again from all its values and re-codes itself (a few times a block at most, then the odd
//! value is kept raw). Values no divisor reproduces are coded as the change of their
//! order-preserving bit pattern, so a random walk still costs less than 8 bytes.
//!
//! # Layout (one allocation, nothing allocated for an empty head)
//!
//! ```text
//! [0]      scale: 0 = bit patterns, i + 1 = codec scale i, UNSET = none chosen yet
//! [1]      times the head re-coded itself this block
//! [2..4]   bytes in use (u16 LE, header included)
//! [4..6]   where the last token starts (u16 LE)
//! [6..14]  base: the integer of the last value coded as a change (i64 LE)
//! [14..]   tokens, one per step: varint t
//!            t even: the integer changed by unzigzag(t >> 1) (the new base)
//!            t = 1:  the canonical NaN (a step not written)
//!            t = 3:  8 bytes LE of raw bits follow (base unchanged)
//!            t = 5:  8 bytes LE of raw bits follow, and their integer is the new base
//!                    (a change too large for a token: the first bit pattern of a block)
//! ```
//!
//! The buffer is only ever built here, in memory (snapshots hold the head's plain values),
//! yet decoding does not trust it: a token it cannot read yields NaN, never a panic.

use std::ops::{Deref, DerefMut};

use crate::bytes::{get_varint, unzigzag, zigzag};
use crate::codec;

const HEADER: usize = 14;
const BITS: u8 = 0;
const UNSET: u8 = 0xff;
const NAN_TOKEN: u8 = 1;
const RAW_TOKEN: u8 = 3;
const RESTART_TOKEN: u8 = 5;
const CANONICAL_NAN: u64 = 0x7ff8_0000_0000_0000;
/// Re-codings allowed a block before misfits are kept raw: each costs a pass over the
/// head, and values built to misfit every scale in turn must not make writes quadratic.
const MAX_RECODES: u8 = 4;
/// A fresh head's room: a header and about a dozen small tokens.
const FIRST_ALLOCATION: usize = HEADER + 18;

/// One token: its bytes, and the base after it (`None`: unchanged).
struct Token {
    bytes: [u8; 10],
    len: usize,
    base: Option<i64>,
}

impl Token {
    fn nan() -> Token {
        let mut bytes = [0; 10];
        bytes[0] = NAN_TOKEN;
        Token {
            bytes,
            len: 1,
            base: None,
        }
    }

    fn raw(kind: u8, bits: u64, base: Option<i64>) -> Token {
        let mut bytes = [0; 10];
        bytes[0] = kind;
        bytes[1..9].copy_from_slice(&bits.to_le_bytes());
        Token {
            bytes,
            len: 9,
            base,
        }
    }

    /// The change from `base` to `k`, or a restart at `k` when the change needs all 64 bits
    /// (`z << 1` would lose one).
    #[inline(always)]
    fn change(k: i64, v: f64, base: i64) -> Token {
        let z = zigzag(k.wrapping_sub(base));
        if z >> 63 != 0 {
            return Token::raw(RESTART_TOKEN, v.to_bits(), Some(k));
        }
        let mut v_bits = z << 1;
        let mut bytes = [0; 10];
        let mut len = 0;
        while v_bits >= 0x80 {
            bytes[len] = (v_bits as u8) | 0x80;
            v_bits >>= 7;
            len += 1;
        }
        bytes[len] = v_bits as u8;
        Token {
            bytes,
            len: len + 1,
            base: Some(k),
        }
    }
}

/// The integer standing for `v` under `scale`, if `v` is exact there.
#[inline]
fn integer(scale: u8, v: f64) -> Option<i64> {
    match scale {
        BITS => Some(codec::fold(v.to_bits())),
        UNSET => None,
        s => codec::fit_scale(usize::from(s - 1), v),
    }
}

#[inline]
fn value(scale: u8, k: i64) -> f64 {
    match scale {
        BITS => f64::from_bits(codec::fold(k as u64) as u64),
        UNSET => f64::NAN,
        s => codec::apply_scale(usize::from(s - 1), k),
    }
}

/// The first scale (smallest divisor first) under which every value that is not NaN is
/// exact; bit patterns when there is none, `UNSET` when every value is NaN.
fn choose_scale(values: &[f64]) -> u8 {
    if values.iter().all(|v| v.is_nan()) {
        return UNSET;
    }
    for &idx in codec::scale_search_order() {
        let exact = values
            .iter()
            .all(|&v| v.is_nan() || codec::fit_scale(usize::from(idx), v).is_some());
        if exact {
            return idx + 1;
        }
    }
    BITS
}

/// A head block's values (how many is kept by the series: `n` in the calls below). `B`
/// holds the bytes: a buffer of the head's own, or the head's region of a series' one
/// allocation (`series.rs`), which [`HeadBytes::resize`] grows.
#[derive(Default)]
pub(crate) struct Head<B = Box<[u8]>> {
    buf: B,
}

/// Bytes a head can grow and shrink.
pub(crate) trait HeadBytes: DerefMut<Target = [u8]> {
    /// Makes the head `len` bytes long (0: no head), keeping its first `keep` bytes; the
    /// bytes added are zero.
    fn resize(&mut self, len: usize, keep: usize);
}

impl HeadBytes for Box<[u8]> {
    fn resize(&mut self, len: usize, keep: usize) {
        let mut resized = Vec::with_capacity(len);
        resized.extend_from_slice(&self[..keep.min(len).min(self.len())]);
        resized.resize(len, 0);
        *self = resized.into_boxed_slice();
    }
}

impl<B> Head<B> {
    /// The head over `buf`, as it was left there.
    pub(crate) fn over(buf: B) -> Self {
        Head { buf }
    }
}

impl<B: Deref<Target = [u8]>> Head<B> {
    fn used(&self) -> usize {
        if self.buf.is_empty() {
            0
        } else {
            usize::from(u16::from_le_bytes([self.buf[2], self.buf[3]]))
        }
    }

    fn last_start(&self) -> usize {
        usize::from(u16::from_le_bytes([self.buf[4], self.buf[5]]))
    }

    fn base(&self) -> i64 {
        let mut b = [0; 8];
        b.copy_from_slice(&self.buf[6..14]);
        i64::from_le_bytes(b)
    }

    /// The `n` values held.
    pub(crate) fn iter(&self, n: usize) -> HeadIter<'_> {
        let used = self.used().min(self.buf.len());
        HeadIter {
            buf: &self.buf[..used],
            pos: HEADER.min(used),
            scale: self.buf.first().copied().unwrap_or(UNSET),
            base: 0,
            left: n,
        }
    }

    /// The `n` values pushed onto `values`, as [`Head::iter`] yields them; and when the
    /// head holds them as integers under one of the codec's scales (not bit patterns, no
    /// value kept raw), their integers pushed onto `ints` (`None` for NaN) and that scale's
    /// index in the codec's table. Each integer is the one its value was coded from, so
    /// `codec::fit_scale` gives it back for the value. The values are then made from the
    /// integers, in one pass over the tokens.
    pub(crate) fn decode_fitted(
        &self,
        n: usize,
        values: &mut Vec<f64>,
        ints: &mut Vec<Option<i64>>,
    ) -> Option<usize> {
        let from = ints.len();
        match self.ints(n, ints) {
            Some(idx) => {
                codec::apply_scale_to(idx, &ints[from..], values);
                Some(idx)
            }
            None => {
                ints.truncate(from);
                values.extend(self.iter(n));
                None
            }
        }
    }

    /// The integers of [`Head::decode_fitted`], or `None` (with some pushed) when there are
    /// none: bit patterns, no value yet, or a value kept raw.
    fn ints(&self, n: usize, ints: &mut Vec<Option<i64>>) -> Option<usize> {
        let scale = *self.buf.first()?;
        if scale == BITS || scale == UNSET {
            return None;
        }
        let used = self.used().min(self.buf.len());
        let buf = &self.buf[..used];
        let mut pos = HEADER.min(used);
        let mut base = 0i64;
        for _ in 0..n {
            let k = match get_varint(buf, &mut pos) {
                Some(t) if t & 1 == 0 => {
                    base = base.wrapping_add(unzigzag(t >> 1));
                    Some(base)
                }
                // A restart's value is exact under the scale: its integer is the new base.
                Some(t) if t == u64::from(RESTART_TOKEN) => {
                    let b = buf.get(pos..pos + 8)?;
                    pos += 8;
                    let mut raw = [0; 8];
                    raw.copy_from_slice(b);
                    base = integer(scale, f64::from_bits(u64::from_le_bytes(raw)))?;
                    Some(base)
                }
                // A raw value does not fit the scale (that is why it is raw).
                Some(t) if t == u64::from(RAW_TOKEN) => return None,
                // NaN, or a token `iter` cannot read either (it yields NaN).
                _ => None,
            };
            ints.push(k);
        }
        Some(usize::from(scale - 1))
    }

    /// The value of the last step (of `n > 0`).
    pub(crate) fn last(&self, n: usize) -> f64 {
        if n == 0 || self.buf.is_empty() {
            return f64::NAN;
        }
        let at = self.last_start();
        match self.buf.get(at) {
            // A change token's value is the base itself (a varint's low bit is in its
            // first byte).
            Some(t) if t & 1 == 0 => value(self.buf[0], self.base()),
            _ => HeadIter {
                buf: &self.buf[..self.used().min(self.buf.len())],
                pos: at,
                scale: self.buf[0],
                base: 0,
                left: 1,
            }
            .next()
            .unwrap_or(f64::NAN),
        }
    }
}

impl<B: HeadBytes> Head<B> {
    fn set_used(&mut self, used: usize, last: usize) {
        self.buf[2..4].copy_from_slice(&(used as u16).to_le_bytes());
        self.buf[4..6].copy_from_slice(&(last as u16).to_le_bytes());
    }

    fn set_base(&mut self, base: i64) {
        self.buf[6..14].copy_from_slice(&base.to_le_bytes());
    }

    /// Empties the head for the next block, keeping its allocation (a series writing on
    /// will need as much again) and its scale: the next block's values most likely fit it,
    /// and choosing again cost a re-coding at the second value of most blocks. Bit patterns
    /// fit every value, so that choice is not kept: a series may turn decimal again.
    pub(crate) fn clear(&mut self) {
        if !self.buf.is_empty() {
            if self.buf[0] == BITS {
                self.buf[0] = UNSET;
            }
            self.buf[1] = 0;
            self.set_used(HEADER, HEADER);
            self.set_base(0);
        }
    }

    /// Frees the allocation (the series may have gone quiet).
    pub(crate) fn free(&mut self) {
        if !self.buf.is_empty() {
            self.buf.resize(0, 0);
        }
    }

    /// Appends the value of step `n` (after `n` values).
    #[inline]
    pub(crate) fn push(&mut self, v: f64, n: usize) {
        if !self.push_change(v) {
            self.push_other(v, n);
        }
    }

    /// The common append, written straight into the buffer: a value exact under the scale
    /// already chosen, whose change fits a token, with room for it. Writes what
    /// [`Head::push_other`] would (a change token) and returns true, or does nothing and
    /// returns false.
    #[inline(always)]
    fn push_change(&mut self, v: f64) -> bool {
        let Some(&scale) = self.buf.first() else {
            return false;
        };
        if v.to_bits() == CANONICAL_NAN {
            return false;
        }
        let Some(k) = integer(scale, v) else {
            return false;
        };
        let z = zigzag(k.wrapping_sub(self.base()));
        if z >> 63 != 0 {
            return false;
        }
        let mut t = z << 1;
        let len = (64 - (t | 1).leading_zeros() as usize).div_ceil(7);
        let used = self.used();
        let room = self.buf.get_mut(used..used + len);
        let Some((last, rest)) = room.and_then(|r| r.split_last_mut()) else {
            return false;
        };
        for b in rest {
            *b = (t as u8) | 0x80;
            t >>= 7;
        }
        *last = t as u8;
        self.set_used(used + len, used);
        self.set_base(k);
        true
    }

    /// Every other append: the first value, NaN, a value that needs another scale (or is
    /// kept raw), a change too large for a token, or a full buffer.
    fn push_other(&mut self, v: f64, n: usize) {
        if self.buf.is_empty() {
            self.buf.resize(FIRST_ALLOCATION, 0);
            self.clear();
        }
        let bits = v.to_bits();
        if bits == CANONICAL_NAN {
            self.append(&Token::nan());
            return;
        }
        let mut scale = self.buf[0];
        if scale == UNSET && !v.is_nan() {
            scale = choose_scale(&[v]);
            self.buf[0] = scale;
        }
        if let Some(k) = integer(scale, v) {
            let t = Token::change(k, v, self.base());
            self.append(&t);
            return;
        } else if !v.is_nan() && self.buf[1] < MAX_RECODES {
            // The values on the stack: blocks hold at most 60 steps.
            let mut stack = [0f64; 64];
            let heap: Vec<f64>;
            let values = if n < stack.len() {
                for (slot, x) in stack.iter_mut().zip(self.iter(n).chain([v])) {
                    *slot = x;
                }
                &stack[..=n]
            } else {
                heap = self.iter(n).chain([v]).collect();
                &heap[..]
            };
            let better = choose_scale(values);
            if better != scale {
                self.buf[1] += 1;
                self.recode(values, better);
                return;
            }
        }
        self.append(&Token::raw(RAW_TOKEN, bits, None));
    }

    /// Replaces the last of `n > 0` values (a merge into the step being written).
    pub(crate) fn replace_last(&mut self, v: f64, n: usize) {
        let at = self.last_start();
        let mut pos = at;
        match get_varint(&self.buf, &mut pos) {
            // Back to the base before that token.
            Some(t) if t & 1 == 0 => {
                let base = self.base().wrapping_sub(unzigzag(t >> 1));
                self.set_base(base);
            }
            Some(t) if t == u64::from(RESTART_TOKEN) => {
                // The base before a restart is not kept: code the values afresh.
                let values: Vec<f64> = self.iter(n - 1).chain(std::iter::once(v)).collect();
                self.rebuild(&values);
                return;
            }
            _ => {}
        }
        self.set_used(at, at);
        self.push(v, n - 1);
    }

    /// Codes `values` afresh (a merge into an earlier step, a better scale, a snapshot's
    /// head).
    pub(crate) fn rebuild(&mut self, values: &[f64]) {
        self.recode(values, choose_scale(values));
    }

    fn recode(&mut self, values: &[f64], scale: u8) {
        let recodes = self.buf.get(1).copied().unwrap_or(0);
        self.clear();
        if self.buf.is_empty() {
            if values.is_empty() {
                return;
            }
            // Room for two bytes a value: most heads need no more.
            let room = FIRST_ALLOCATION.max(HEADER + 2 * values.len());
            self.buf.resize(room, 0);
            self.clear();
        }
        self.buf[0] = scale;
        self.buf[1] = recodes;
        for &v in values {
            let bits = v.to_bits();
            let t = if bits == CANONICAL_NAN {
                Token::nan()
            } else if let Some(k) = integer(scale, v) {
                Token::change(k, v, self.base())
            } else {
                Token::raw(RAW_TOKEN, bits, None)
            };
            self.append(&t);
        }
    }

    #[cold]
    fn grow(&mut self, used: usize, need: usize) {
        // A quarter more than needed: few reallocations while a block fills, little room
        // left over when it is full.
        let room = (need + need / 4).next_multiple_of(8);
        self.buf.resize(room, used);
    }

    #[inline(always)]
    fn append(&mut self, t: &Token) {
        let used = self.used();
        let need = used + t.len;
        if need > self.buf.len() {
            self.grow(used, need);
        }
        match self.buf.get_mut(used..used + t.bytes.len()) {
            // The whole token buffer where there is room (a fixed-size copy, not a call to
            // memcpy); what lies past `need` is unused room.
            Some(room) => room.copy_from_slice(&t.bytes),
            None => self.buf[used..need].copy_from_slice(&t.bytes[..t.len]),
        }
        self.set_used(need, used);
        if let Some(base) = t.base {
            self.set_base(base);
        }
    }
}

/// The head's values in step order; what it cannot read comes out as NaN.
pub(crate) struct HeadIter<'a> {
    buf: &'a [u8],
    pos: usize,
    scale: u8,
    base: i64,
    left: usize,
}

impl Iterator for HeadIter<'_> {
    type Item = f64;

    #[inline]
    fn next(&mut self) -> Option<f64> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let Some(t) = get_varint(self.buf, &mut self.pos) else {
            return Some(f64::NAN);
        };
        Some(if t & 1 == 0 {
            self.base = self.base.wrapping_add(unzigzag(t >> 1));
            value(self.scale, self.base)
        } else if t == u64::from(RAW_TOKEN) || t == u64::from(RESTART_TOKEN) {
            match self.buf.get(self.pos..self.pos + 8) {
                Some(b) => {
                    self.pos += 8;
                    let mut raw = [0; 8];
                    raw.copy_from_slice(b);
                    let v = f64::from_bits(u64::from_le_bytes(raw));
                    if t == u64::from(RESTART_TOKEN) {
                        self.base = integer(self.scale, v).unwrap_or(self.base);
                    }
                    v
                }
                None => f64::NAN,
            }
        } else {
            f64::NAN
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for HeadIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn filled(values: &[f64]) -> Head {
        let mut h = Head::default();
        for (n, &v) in values.iter().enumerate() {
            h.push(v, n);
        }
        h
    }

    #[test]
    fn values_come_back_bit_for_bit() {
        let cases: Vec<Vec<f64>> = vec![
            (0..15).map(|i| f64::from(700 + i * 3) / 60.0).collect(),
            (0..15).map(|i| f64::from(i % 4) * 0.01 + 12.34).collect(),
            (0..15).map(|i| (f64::from(i) * 0.37).exp()).collect(),
            vec![
                12.5,
                743.0 / 60.0,
                12.4,
                f64::NAN,
                1e300,
                -0.0,
                0.0,
                -1e-310,
            ],
            vec![
                f64::from_bits(0x7ff8_0000_0000_0001),
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NAN,
                3.0,
                f64::from_bits(0xfff8_0000_0000_0000),
            ],
            vec![f64::NAN; 7],
            vec![
                i64::MAX as f64,
                i64::MIN as f64,
                0.5,
                -(2f64.powi(60)),
                2f64.powi(62),
            ],
            vec![f64::MAX, f64::MIN, f64::MIN_POSITIVE, f64::EPSILON],
        ];
        for values in cases {
            let h = filled(&values);
            let back: Vec<f64> = h.iter(values.len()).collect();
            assert!(same(&back, &values), "{values:?} came back as {back:?}");
            check_fitted(&h, &values);
        }
    }

    /// `decode_fitted` yields what `iter` does, and integers only as the scale's fits.
    fn check_fitted(head: &Head, model: &[f64]) -> bool {
        let (mut values, mut ints) = (vec![1.0], vec![Some(7)]);
        let scale = head.decode_fitted(model.len(), &mut values, &mut ints);
        assert!(
            same(&values[1..], model),
            "{model:?} came back as {values:?}"
        );
        match scale {
            Some(idx) => {
                assert_eq!(ints.len(), model.len() + 1);
                for (v, k) in model.iter().zip(&ints[1..]) {
                    assert_eq!(codec::fit_scale(idx, *v), *k, "{v} in {model:?}");
                }
            }
            None => assert_eq!(ints, [Some(7)]),
        }
        scale.is_some()
    }

    #[test]
    fn heads_of_decimals_give_their_integers() {
        let rates: Vec<f64> = (0..15)
            .map(|i| f64::from(700 + i * 37 % 11) / 60.0)
            .collect();
        let mut gaps = rates.clone();
        gaps[4] = f64::NAN;
        for values in [rates, gaps] {
            assert!(check_fitted(&filled(&values), &values), "{values:?}");
        }
        // One value no scale reproduces (too small for any): no integers.
        let tiny = [0.5, 1.5e-300];
        assert!(!check_fitted(&filled(&tiny), &tiny));
    }

    #[test]
    fn decimal_values_cost_a_byte_or_two_each() {
        // Rates of a counter (k / 60) and a gauge in hundredths: what the head mostly holds.
        let rates: Vec<f64> = (0..15)
            .map(|i| f64::from(900 + (i * 7) % 23) / 60.0)
            .collect();
        let h = filled(&rates);
        assert!(h.used() <= HEADER + 2 * 15, "{} bytes", h.used());
        let gauge: Vec<f64> = (0..15)
            .map(|i| f64::from(4000 + (i * 13) % 40) / 100.0)
            .collect();
        let h = filled(&gauge);
        assert!(h.used() <= HEADER + 2 * 15, "{} bytes", h.used());
        // Full-precision noise: the change of the bit pattern, still under 8 bytes a value.
        let noise: Vec<f64> = (0..15)
            .map(|i| 40.0 * (f64::from(i) * 0.013).exp())
            .collect();
        let h = filled(&noise);
        assert!(h.used() < HEADER + 8 * 15, "{} bytes", h.used());
        assert!(same(&h.iter(15).collect::<Vec<_>>(), &noise));
    }

    #[test]
    fn the_last_value_is_replaced_and_earlier_ones_rebuilt() {
        let mut values: Vec<f64> = vec![1.5, 2.0, f64::NAN, 7.25];
        let mut h = filled(&values);
        assert_eq!(h.last(4), 7.25);
        h.replace_last(7.0 / 60.0, 4);
        values[3] = 7.0 / 60.0;
        assert!(same(&h.iter(4).collect::<Vec<_>>(), &values));
        assert_eq!(h.last(4).to_bits(), values[3].to_bits());
        h.replace_last(f64::NAN, 4);
        assert!(h.last(4).is_nan());
        values[3] = f64::NAN;
        h.push(8.0, 4);
        values.push(8.0);
        values[1] = -3.0;
        let mut rebuilt: Head = Head::default();
        rebuilt.rebuild(&values);
        assert!(same(&rebuilt.iter(5).collect::<Vec<_>>(), &values));
        h.rebuild(&values);
        assert!(same(&h.iter(5).collect::<Vec<_>>(), &values));
        h.clear();
        assert_eq!(h.iter(0).count(), 0);
        h.push(4.0, 0);
        assert_eq!(h.iter(1).collect::<Vec<_>>(), vec![4.0]);
    }

    #[test]
    fn random_writes_match_plain_slots() {
        // Pushes, merges into the last step and rewrites of earlier steps, against a plain
        // vector, over values of every kind the head codes differently.
        let mut rng = fastrand::Rng::with_seed(18);
        let pick = |rng: &mut fastrand::Rng| match rng.u8(..8) {
            0 => f64::NAN,
            1 => f64::from(rng.i32(-5000..5000)) / 60.0,
            2 => f64::from(rng.i32(..)) / 100.0,
            3 => f64::from_bits(rng.u64(..)),
            4 => (rng.f64() * 30.0).exp(),
            5 => f64::from(rng.i32(..)),
            6 => [0.0, -0.0, f64::INFINITY, 1e308, -5e-324][rng.usize(..5)],
            _ => f64::from(rng.u16(..)) * 0.01,
        };
        for _ in 0..2000 {
            let mut head: Head = Head::default();
            let mut model: Vec<f64> = Vec::new();
            for _ in 0..rng.usize(1..40) {
                let v = pick(&mut rng);
                match rng.u8(..4) {
                    0 if !model.is_empty() => {
                        let n = model.len();
                        head.replace_last(v, n);
                        model[n - 1] = v;
                        assert_eq!(head.last(n).to_bits(), v.to_bits());
                    }
                    1 if !model.is_empty() => {
                        let at = rng.usize(..model.len());
                        model[at] = v;
                        head.rebuild(&model);
                    }
                    _ => {
                        head.push(v, model.len());
                        model.push(v);
                    }
                }
                let back: Vec<f64> = head.iter(model.len()).collect();
                assert!(same(&back, &model), "{model:?} came back as {back:?}");
                check_fitted(&head, &model);
            }
            head.clear();
            assert_eq!(head.iter(0).count(), 0);
        }
    }

    #[test]
    fn values_that_misfit_every_scale_in_turn_stay_exact_and_cheap() {
        // Each value needs a finer divisor than the one before: the head re-codes a few
        // times, then keeps the misfits raw.
        let values: Vec<f64> = (0..15).map(|i| 1.0 / 10f64.powi(i % 12)).collect();
        let h = filled(&values);
        assert!(h.buf[1] <= MAX_RECODES);
        assert!(same(&h.iter(15).collect::<Vec<_>>(), &values));
    }

    #[test]
    fn a_damaged_buffer_reads_as_nan_without_panicking() {
        let mut h = filled(&[1.0, 2.0, 3.0]);
        let used = h.used();
        h.buf[HEADER] = 0x80; // a varint that runs on into the next tokens
        h.buf[used - 1] = 0x83;
        let _ = h.iter(10).collect::<Vec<_>>();
        h.buf[2] = 0xff;
        h.buf[3] = 0xff; // more in use than allocated
        assert_eq!(h.iter(3).count(), 3);
        let _ = h.last(3);
    }
}
