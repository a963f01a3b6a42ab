//! One series' values: a head block being written (plain `f64` slots) and older blocks sealed
//! into one compact byte buffer. Blocks are `block_steps` consecutive steps, aligned to
//! multiples of the block duration since the epoch, so a block number names a time range.

use crate::codec;
use crate::error::Result;
use crate::normalize::{DsType, Merge, NormState};

const NO_BLOCK: u32 = u32::MAX;

/// Sealed blocks live back to back in one buffer, each as
/// `[varint gap: blocks skipped since the previous one][varint byte_len][encoded values]`,
/// so a series costs one allocation for all its history and skipping a block is cheap.
pub(crate) struct SeriesData {
    pub(crate) dstype: DsType,
    pub(crate) norm: NormState,
    /// Block number of the first sealed block (meaningless while `sealed` is empty).
    first_block: u32,
    head_block: u32,
    head: Vec<f64>,
    sealed: Vec<u8>,
}

/// A sealed block as found in the buffer.
struct SealedRef {
    block: u32,
    /// Range of the encoded values inside `sealed`.
    start: usize,
    end: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

impl SeriesData {
    pub(crate) fn new(dstype: DsType) -> Self {
        SeriesData {
            dstype,
            norm: NormState::default(),
            first_block: 0,
            head_block: NO_BLOCK,
            head: Vec::new(),
            sealed: Vec::new(),
        }
    }

    fn sealed_blocks(&self) -> impl Iterator<Item = SealedRef> + '_ {
        let mut pos = 0usize;
        let mut block = self.first_block;
        let mut first = true;
        std::iter::from_fn(move || {
            if pos >= self.sealed.len() {
                return None;
            }
            let gap = get_varint(&self.sealed, &mut pos)? as u32;
            let len = get_varint(&self.sealed, &mut pos)? as usize;
            block = if first { block } else { block + 1 + gap };
            first = false;
            let start = pos;
            let end = (pos + len).min(self.sealed.len());
            pos = end;
            Some(SealedRef { block, start, end })
        })
    }

    /// Writes one normalized value into step `step_index` (a multiple-of-step timestamp
    /// divided by the step), merging with what is there.
    pub(crate) fn write(&mut self, step_index: i64, value: f64, merge: Merge, block_steps: u32) {
        let block = (step_index / i64::from(block_steps)) as u32;
        let slot = (step_index % i64::from(block_steps)) as usize;
        if self.head_block == NO_BLOCK || block > self.head_block {
            self.seal_head(block_steps);
            self.head_block = block;
        }
        if block == self.head_block {
            if slot >= self.head.len() {
                let want = slot + 1;
                if want > self.head.capacity() {
                    // Grow in small exact steps: a head is the biggest per-series cost and
                    // doubling would leave up to half of it unused.
                    let target = want.next_multiple_of(16).min(block_steps as usize);
                    self.head.reserve_exact(target - self.head.len());
                }
                self.head.resize(want, f64::NAN);
            }
            self.head[slot] = merge.apply(self.head[slot], value);
        } else {
            self.write_sealed(block, slot, value, merge, block_steps);
        }
    }

    /// Seals the head block into the compressed buffer.
    pub(crate) fn seal_head(&mut self, block_steps: u32) {
        if self.head_block == NO_BLOCK {
            return;
        }
        if self.head.iter().all(|v| v.is_nan()) {
            // No data in the block (NaN means "no data" everywhere): keep no block at all.
            self.head_block = NO_BLOCK;
            self.head = Vec::new();
            return;
        }
        let mut values = std::mem::take(&mut self.head);
        values.resize(block_steps as usize, f64::NAN);
        let block = self.head_block;
        self.head_block = NO_BLOCK;
        self.insert_sealed(block, &values);
    }

    /// Inserts a whole block into the sealed buffer, keeping blocks ordered; replaces the
    /// block if it is already there.
    fn insert_sealed(&mut self, block: u32, values: &[f64]) {
        let mut encoded = Vec::with_capacity(values.len());
        codec::encode(values, &mut encoded);
        let blocks: Vec<SealedRef> = self.sealed_blocks().collect();
        if blocks.last().is_none_or(|b| b.block < block) {
            // The common case: append at the end.
            let gap = match blocks.last() {
                Some(last) => block - last.block - 1,
                None => {
                    self.first_block = block;
                    0
                }
            };
            put_varint(&mut self.sealed, u64::from(gap));
            put_varint(&mut self.sealed, encoded.len() as u64);
            self.sealed.extend_from_slice(&encoded);
            self.sealed.shrink_to_fit();
            return;
        }
        // Rare: rebuild the buffer with the block in its place.
        let mut entries: Vec<(u32, Vec<u8>)> = blocks
            .iter()
            .filter(|b| b.block != block)
            .map(|b| (b.block, self.sealed[b.start..b.end].to_vec()))
            .collect();
        entries.push((block, encoded));
        entries.sort_by_key(|e| e.0);
        self.rebuild_sealed(&entries);
    }

    fn rebuild_sealed(&mut self, entries: &[(u32, Vec<u8>)]) {
        let mut buf = Vec::new();
        let mut prev: Option<u32> = None;
        for (block, bytes) in entries {
            let gap = match prev {
                Some(p) => block - p - 1,
                None => {
                    self.first_block = *block;
                    0
                }
            };
            put_varint(&mut buf, u64::from(gap));
            put_varint(&mut buf, bytes.len() as u64);
            buf.extend_from_slice(bytes);
            prev = Some(*block);
        }
        buf.shrink_to_fit();
        self.sealed = buf;
    }

    /// A late write into a block that is no longer the head: decode, merge, re-encode.
    fn write_sealed(
        &mut self,
        block: u32,
        slot: usize,
        value: f64,
        merge: Merge,
        block_steps: u32,
    ) {
        let mut values = vec![f64::NAN; block_steps as usize];
        if let Some(b) = self.sealed_blocks().find(|b| b.block == block) {
            // A block we wrote ourselves always decodes; if it somehow does not, the merge
            // starts from an empty block rather than failing the write.
            let _ = codec::decode(&self.sealed[b.start..b.end], &mut values);
        }
        values[slot] = merge.apply(values[slot], value);
        self.insert_sealed(block, &values);
    }

    /// Drops every block that ends at or before `min_block` (exclusive bound: blocks with a
    /// number below it). Returns true when the series holds no data any more.
    pub(crate) fn expire_before(&mut self, min_block: u32) -> bool {
        let blocks: Vec<SealedRef> = self.sealed_blocks().collect();
        if blocks.first().is_some_and(|b| b.block < min_block) {
            let keep: Vec<(u32, Vec<u8>)> = blocks
                .iter()
                .filter(|b| b.block >= min_block)
                .map(|b| (b.block, self.sealed[b.start..b.end].to_vec()))
                .collect();
            if keep.is_empty() {
                self.sealed = Vec::new();
            } else {
                self.rebuild_sealed(&keep);
            }
        }
        if self.head_block != NO_BLOCK && self.head_block < min_block {
            self.head_block = NO_BLOCK;
            self.head = Vec::new();
        }
        self.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.head_block == NO_BLOCK
    }

    /// The head's block number, if there is a head.
    pub(crate) fn head_block(&self) -> Option<u32> {
        (self.head_block != NO_BLOCK).then_some(self.head_block)
    }

    /// Fills `out[i]` with the stored value of step `first_step + i` (NaN where nothing is
    /// stored). `scratch` must hold `block_steps` values.
    pub(crate) fn read_steps(
        &self,
        first_step: i64,
        out: &mut [f64],
        block_steps: u32,
        scratch: &mut [f64],
    ) -> Result<()> {
        out.fill(f64::NAN);
        let bs = i64::from(block_steps);
        let last_step = first_step + out.len() as i64 - 1;
        let copy_block = |block: u32, values: &[f64], out: &mut [f64]| {
            let block_first = i64::from(block) * bs;
            let lo = block_first.max(first_step);
            let hi = (block_first + values.len() as i64 - 1).min(last_step);
            if lo <= hi {
                let src = &values[(lo - block_first) as usize..=(hi - block_first) as usize];
                out[(lo - first_step) as usize..=(hi - first_step) as usize].copy_from_slice(src);
            }
        };
        for b in self.sealed_blocks() {
            let block_first = i64::from(b.block) * bs;
            if block_first > last_step || block_first + bs - 1 < first_step {
                continue;
            }
            let bytes = &self.sealed[b.start..b.end];
            if block_first >= first_step && block_first + bs - 1 <= last_step {
                // Fully covered: decode straight into the output.
                let at = (block_first - first_step) as usize;
                codec::decode(bytes, &mut out[at..at + block_steps as usize])?;
            } else {
                codec::decode(bytes, &mut scratch[..block_steps as usize])?;
                copy_block(b.block, &scratch[..block_steps as usize], out);
            }
        }
        if self.head_block != NO_BLOCK {
            copy_block(self.head_block, &self.head, out);
        }
        Ok(())
    }

    /// (sealed bytes, sealed blocks) held by this series.
    pub(crate) fn sealed_stats(&self) -> (usize, usize) {
        (self.sealed.len(), self.sealed_blocks().count())
    }

    /// Non-NaN values in the sealed blocks (decodes them: for reports, not hot paths).
    pub(crate) fn sealed_values(&self, block_steps: u32) -> usize {
        let mut buf = vec![f64::NAN; block_steps as usize];
        self.sealed_blocks()
            .map(
                |b| match codec::decode(&self.sealed[b.start..b.end], &mut buf) {
                    Ok(_) => buf.iter().filter(|v| !v.is_nan()).count(),
                    Err(_) => 0,
                },
            )
            .sum()
    }

    /// Slots written so far in the head block.
    pub(crate) fn head_len(&self) -> usize {
        self.head.len()
    }

    /// Heap bytes held (capacity, not length, since that is what memory costs).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.head.capacity() * 8 + self.sealed.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u32 = 4;

    fn read(s: &SeriesData, first: i64, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        let mut scratch = vec![0.0; BS as usize];
        s.read_steps(first, &mut out, BS, &mut scratch).unwrap();
        out
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn writes_across_blocks_read_back() {
        let mut s = SeriesData::new(DsType::Gauge);
        for i in 0..10 {
            s.write(100 + i, i as f64, Merge::Max, BS);
        }
        let got = read(&s, 98, 14);
        let mut want = vec![f64::NAN; 14];
        for i in 0..10 {
            want[2 + i] = i as f64;
        }
        assert!(same(&got, &want), "{got:?}");
        assert_eq!(s.sealed_stats().1, 2);
    }

    #[test]
    fn late_write_into_sealed_block_merges() {
        let mut s = SeriesData::new(DsType::Sum);
        s.write(0, 1.0, Merge::Add, BS);
        s.write(9, 1.0, Merge::Add, BS); // seals block 0
        s.write(0, 2.0, Merge::Add, BS); // late, into sealed block 0
        s.write(5, 7.0, Merge::Add, BS); // a block that was never written
        assert!(same(
            &read(&s, 0, 10),
            &[
                3.0,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                7.0,
                f64::NAN,
                f64::NAN,
                f64::NAN,
                1.0
            ]
        ));
    }

    #[test]
    fn expiry_drops_old_blocks_then_everything() {
        let mut s = SeriesData::new(DsType::Gauge);
        for i in 0..12 {
            s.write(i, 1.0, Merge::Max, BS);
        }
        assert!(!s.expire_before(1));
        assert_eq!(read(&s, 0, 4).iter().filter(|v| !v.is_nan()).count(), 0);
        assert_eq!(read(&s, 4, 8).iter().filter(|v| !v.is_nan()).count(), 8);
        assert!(s.expire_before(3));
    }
}
