//! One series' values: a head block being written (compact tokens: `head.rs`) and older
//! blocks sealed into one compact byte buffer. Blocks are `block_steps` consecutive steps, aligned to
//! multiples of the block duration since the epoch, so a block number names a time range.
//! Sealed blocks that follow each other are merged into encoded *units* of up to
//! `unit_blocks` blocks, so a small head (cheap in memory) does not mean small, poorly
//! compressed blocks.

use crate::bytes::{Reader, get_varint, put_varint};
use crate::codec;
use crate::error::{Error, Result};
use crate::head::{Head, HeadBytes};
use crate::normalize::{DsType, Merge, NormState};

const NO_BLOCK: u32 = u32::MAX;

/// Sealed blocks are merged into their unit in runs of this many: each value is encoded
/// about 3.5 times on its way into a full 16-block unit (8.5 when every seal re-encoded the
/// unit), and at most three blocks at the end of a series wait outside a unit.
const MERGE_RUN: u32 = 4;

/// Cache lines a write fetches ahead: a head of 15 steps is about 50 bytes.
const HEAD_PREFETCH_LINES: usize = 2;

/// Cache lines of sealed units a scan fetches ahead of reading a series.
const READ_PREFETCH_LINES: usize = 12;

/// The block geometry of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) block_steps: u32,
    /// Most blocks one encoded unit may hold.
    pub(crate) unit_blocks: u32,
}

impl Layout {
    pub(crate) fn max_unit_steps(self) -> usize {
        (self.block_steps * self.unit_blocks) as usize
    }
}

/// A series' head and its sealed units share one allocation (see [`SeriesData::data`]).
/// Sealed units lie back to back, each as
/// `[varint gap: blocks since the previous unit's end][varint n_blocks][varint byte_len][values]`,
/// so skipping a unit is cheap.
pub(crate) struct SeriesData {
    pub(crate) dstype: DsType,
    /// Steps of the head block written so far (at most `block_steps`, so at most 60).
    head_len: u8,
    /// Holders that keep the series' id for longer than one write (an agent stream that
    /// defined it): maintenance never removes a pinned series, so the id cannot come to
    /// mean another series under them. Saturates, and a saturated count never drops.
    pub(crate) pins: u16,
    /// The store's maintenance pass during which the series was last written (this and
    /// `pins` fit in what was padding).
    pub(crate) written_in_pass: u32,
    pub(crate) norm: NormState,
    /// First block of the first sealed unit (meaningless while `sealed` is empty).
    first_block: u32,
    head_block: u32,
    /// `[head room: u16 LE][head: the room's bytes][sealed units]`, empty while the series
    /// holds neither. The head keeps its `head_len` values in about two bytes each (see
    /// `head.rs`); the sealed units are rewritten whole at each seal. One allocation, not
    /// one for each, saves a pointer in the slot, a malloc header and its rounding, and the
    /// small holes that growing heads left in the heap.
    data: Box<[u8]>,
}

/// Where the head begins in [`SeriesData::data`]: after its room.
const HEAD_AT: usize = 2;

/// The head's room in a series' data (0: no head).
#[inline]
fn head_room(data: &[u8]) -> usize {
    match data {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    }
}

/// The head's region of a series' data: what a [`Head`] writes through. It knows the
/// room, read once: a write derefs the region several times.
struct HeadRegion<'a> {
    data: &'a mut Box<[u8]>,
    room: usize,
}

impl std::ops::Deref for HeadRegion<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.data.get(HEAD_AT..HEAD_AT + self.room).unwrap_or(&[])
    }
}

impl std::ops::DerefMut for HeadRegion<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.data
            .get_mut(HEAD_AT..HEAD_AT + self.room)
            .unwrap_or(&mut [])
    }
}

impl HeadBytes for HeadRegion<'_> {
    /// Moves the sealed units after a head of the new room (a new allocation of exactly
    /// the new size).
    fn resize(&mut self, len: usize, keep: usize) {
        let room = self.room;
        let sealed = self.data.get(HEAD_AT + room..).unwrap_or(&[]);
        if len == 0 && sealed.is_empty() {
            *self.data = Box::default();
            self.room = 0;
            return;
        }
        // A head holds at most 60 steps of at most 9 bytes, and its own offsets are u16.
        let len = len.min(usize::from(u16::MAX));
        let mut data = Vec::with_capacity(HEAD_AT + len + sealed.len());
        data.extend_from_slice(&(len as u16).to_le_bytes());
        let kept = self.data.get(HEAD_AT..HEAD_AT + keep.min(len).min(room));
        data.extend_from_slice(kept.unwrap_or(&[]));
        data.resize(HEAD_AT + len, 0);
        data.extend_from_slice(sealed);
        *self.data = data.into_boxed_slice();
        self.room = len;
    }
}

/// Buffers a thread reuses for sealing: sealing happens for every series every block, and
/// allocating these each time made the allocator a bottleneck under load.
#[derive(Default)]
struct SealScratch {
    head: Vec<f64>,
    units: Vec<Unit>,
    values: Vec<f64>,
    encoded: Vec<u8>,
    /// The integers of `head`, and of `values`, when they have them (see [`Fits`]).
    head_fits: Fits,
    fits: Fits,
}

/// Integers for the values about to be encoded, gathered from the head and the decoded
/// units they come from, so the encoder need not divide every value again to find them.
/// They hold while every piece brought integers under the same scale.
#[derive(Default)]
struct Fits {
    scale: Option<usize>,
    broken: bool,
    ints: Vec<Option<i64>>,
}

impl Fits {
    fn reset(&mut self) {
        self.scale = None;
        self.broken = false;
        self.ints.clear();
    }

    /// A piece whose integers were pushed onto `ints` is under `scale` (`None`: all NaN).
    fn agree(&mut self, scale: Option<usize>) {
        match (self.scale, scale) {
            (_, None) => {}
            (None, Some(s)) => self.scale = Some(s),
            (Some(a), Some(b)) if a == b => {}
            _ => self.broken = true,
        }
    }

    /// A piece without integers: the encoder finds them itself.
    fn give_up(&mut self) {
        self.broken = true;
    }

    /// The scale and the integers of all `len` values added, if they hold.
    fn get(&self, len: usize) -> Option<(usize, &[Option<i64>])> {
        match self.scale {
            Some(s) if !self.broken && self.ints.len() == len => Some((s, &self.ints)),
            _ => None,
        }
    }
}

thread_local! {
    static SEAL_SCRATCH: std::cell::RefCell<SealScratch> =
        std::cell::RefCell::new(SealScratch::default());
}

/// A sealed unit as found in the buffer.
struct Unit {
    first_block: u32,
    n_blocks: u32,
    /// Where the unit's header starts, and the range of its encoded values.
    header: usize,
    start: usize,
    end: usize,
}

/// A unit's header: blocks since the previous unit's end, its blocks, its bytes.
fn put_unit_header(out: &mut Vec<u8>, gap: u32, n_blocks: u32, byte_len: usize) {
    put_varint(out, u64::from(gap));
    put_varint(out, u64::from(n_blocks));
    put_varint(out, byte_len as u64);
}

/// A unit's values as `[varint leading NaNs][varint trailing NaNs][codec block of the rest]`.
/// Series start and stop in the middle of blocks; trimming those runs keeps the codec off its
/// exception path, which on full-precision data meant a slower mode and 5% more bytes.
///
/// `fits`, when given, is the values' integers under a scale (see [`Fits`]).
fn encode_values(values: &[f64], fits: Option<(usize, &[Option<i64>])>, out: &mut Vec<u8>) {
    let lead = values.iter().take_while(|v| v.is_nan()).count();
    let trail = values[lead..]
        .iter()
        .rev()
        .take_while(|v| v.is_nan())
        .count();
    put_varint(out, lead as u64);
    put_varint(out, trail as u64);
    let kept = lead..values.len() - trail;
    match fits {
        Some((scale, ints)) if ints.len() == values.len() && !kept.is_empty() => {
            codec::encode_fitted(&values[kept.clone()], scale, &ints[kept], out);
        }
        _ => codec::encode(&values[kept], out),
    }
}

/// Decodes what [`encode_values`] wrote into `out` (the unit's whole length).
fn decode_values(bytes: &[u8], out: &mut [f64]) -> Result<()> {
    decode_values_fitted(bytes, out, None).map(|_| ())
}

/// [`decode_values`], adding the unit's integers to `fits` when it is given.
fn decode_values_fitted(bytes: &[u8], out: &mut [f64], fits: Option<&mut Fits>) -> Result<()> {
    let mut pos = 0;
    let corrupt = |what: &str| crate::error::Error::Corrupt(format!("sealed unit: {what}"));
    let lead = get_varint(bytes, &mut pos).ok_or_else(|| corrupt("truncated NaN run"))? as usize;
    let trail = get_varint(bytes, &mut pos).ok_or_else(|| corrupt("truncated NaN run"))? as usize;
    if lead.saturating_add(trail) > out.len() {
        return Err(corrupt("NaN runs longer than the unit"));
    }
    let end = out.len() - trail;
    out[..lead].fill(f64::NAN);
    out[end..].fill(f64::NAN);
    let Some(fits) = fits else {
        if lead < end {
            codec::decode(&bytes[pos..], &mut out[lead..end])?;
        }
        return Ok(());
    };
    let mut scale = None;
    fits.ints.resize(fits.ints.len() + lead, None);
    if lead < end {
        (_, scale) = codec::decode_fitted(&bytes[pos..], &mut out[lead..end], &mut fits.ints)?;
        if scale.is_none() {
            fits.give_up();
            return Ok(());
        }
    }
    fits.ints.resize(fits.ints.len() + trail, None);
    fits.agree(scale);
    Ok(())
}

impl SeriesData {
    pub(crate) fn new(dstype: DsType) -> Self {
        SeriesData {
            dstype,
            pins: 0,
            written_in_pass: 0,
            norm: NormState::default(),
            first_block: 0,
            head_len: 0,
            head_block: NO_BLOCK,
            data: Box::default(),
        }
    }

    /// The sealed units.
    #[inline]
    fn sealed(&self) -> &[u8] {
        let room = head_room(&self.data);
        self.data.get(HEAD_AT + room..).unwrap_or(&[])
    }

    /// The head, to read.
    #[inline]
    fn head(&self) -> Head<&[u8]> {
        let room = head_room(&self.data);
        Head::over(self.data.get(HEAD_AT..HEAD_AT + room).unwrap_or(&[]))
    }

    /// The head, to write (it may move the sealed units, growing).
    #[inline]
    fn head_mut(&mut self) -> Head<HeadRegion<'_>> {
        let room = head_room(&self.data);
        Head::over(HeadRegion {
            data: &mut self.data,
            room,
        })
    }

    /// Replaces the sealed units by their first `keep` bytes followed by `parts`, in a
    /// buffer of exactly the new size; the head stays as it is.
    fn set_sealed(&mut self, keep: usize, parts: &[&[u8]]) {
        let room = head_room(&self.data);
        let added: usize = parts.iter().map(|p| p.len()).sum();
        let sealed = self.sealed();
        let keep = keep.min(sealed.len());
        if room == 0 && keep + added == 0 {
            self.data = Box::default();
            return;
        }
        let mut data = Vec::with_capacity(HEAD_AT + room + keep + added);
        data.extend_from_slice(&(room as u16).to_le_bytes());
        data.extend_from_slice(self.data.get(HEAD_AT..HEAD_AT + room).unwrap_or(&[]));
        data.extend_from_slice(&self.sealed()[..keep]);
        for part in parts {
            data.extend_from_slice(part);
        }
        self.data = data.into_boxed_slice();
    }

    /// Appends the series' whole state (snapshot layout in `docs/format/snapshot.md`).
    pub(crate) fn encode_state(&self, out: &mut Vec<u8>) {
        out.push(self.dstype.code());
        for w in self.norm.to_words() {
            out.extend_from_slice(&w.to_le_bytes());
        }
        put_varint(out, u64::from(self.first_block));
        // NO_BLOCK (no head) as 0, block b as b + 1.
        put_varint(out, (u64::from(self.head_block) + 1) & u64::from(u32::MAX));
        put_varint(out, self.head_len as u64);
        for v in self.head().iter(usize::from(self.head_len)) {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        let sealed = self.sealed();
        put_varint(out, sealed.len() as u64);
        out.extend_from_slice(sealed);
    }

    /// Reads what [`SeriesData::encode_state`] wrote, checking what a bad value would break.
    pub(crate) fn decode_state(r: &mut Reader<'_>, layout: Layout) -> Result<Self> {
        let code = r.u8("dstype")?;
        let dstype = DsType::from_code(code)
            .ok_or_else(|| Error::Corrupt(format!("unknown dstype code {code}")))?;
        let mut words = [0u64; 4];
        for w in &mut words {
            *w = r.u64("normalizer state")?;
        }
        let first_block = u32::try_from(r.varint("first block")?)
            .map_err(|_| Error::Corrupt("first block out of range".into()))?;
        let head_code = u32::try_from(r.varint("head block")?)
            .map_err(|_| Error::Corrupt("head block out of range".into()))?;
        let head_len = r.len("head length")?;
        if head_len > layout.block_steps as usize
            || head_len > usize::from(u8::MAX)
            || (head_code == 0 && head_len > 0)
        {
            return Err(Error::Corrupt(format!(
                "head of {head_len} steps (blocks hold {})",
                layout.block_steps
            )));
        }
        // Coded once, from all its values (pushed one by one, most heads re-coded at their
        // second value: a slower restart).
        let mut stack = [0f64; 64];
        let mut heap = Vec::new();
        let values = if head_len <= stack.len() {
            &mut stack[..head_len]
        } else {
            heap.resize(head_len, 0.0);
            &mut heap[..]
        };
        for v in values.iter_mut() {
            *v = r.f64("head value")?;
        }
        let sealed = r.bytes("sealed units")?;
        let mut data = SeriesData {
            dstype,
            head_len: head_len as u8,
            pins: 0,
            written_in_pass: 0,
            norm: NormState::from_words(words),
            first_block,
            head_block: head_code.wrapping_sub(1),
            data: Box::default(),
        };
        data.head_mut().rebuild(values);
        data.set_sealed(0, &[sealed]);
        data.check_units(layout)?;
        Ok(data)
    }

    /// Checks that the sealed units frame the buffer exactly, each within the unit size and
    /// ending before the head: reads size their buffers from these headers.
    fn check_units(&self, layout: Layout) -> Result<()> {
        let corrupt = |what: String| Error::Corrupt(format!("sealed units: {what}"));
        let mut end = 0usize;
        let mut last_block = None;
        for u in self.units() {
            if u.n_blocks == 0 || u.n_blocks > layout.unit_blocks {
                return Err(corrupt(format!("a unit of {} blocks", u.n_blocks)));
            }
            if u.start > u.end || u.header < end {
                return Err(corrupt("overlapping units".into()));
            }
            let unit_end = u.first_block.checked_add(u.n_blocks);
            if unit_end.is_none() || last_block.is_some_and(|b| u.first_block < b) {
                return Err(corrupt("units out of order".into()));
            }
            last_block = unit_end;
            end = u.end;
        }
        if end != self.sealed().len() {
            return Err(corrupt(format!(
                "{} bytes after the last unit",
                self.sealed().len() - end
            )));
        }
        if self.head_block != NO_BLOCK && last_block.is_some_and(|b| self.head_block < b) {
            return Err(corrupt("the head lies before sealed data".into()));
        }
        Ok(())
    }

    fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        let sealed = self.sealed();
        let mut pos = 0usize;
        let mut next_block = self.first_block;
        std::iter::from_fn(move || {
            if pos >= sealed.len() {
                return None;
            }
            let header = pos;
            let gap = get_varint(sealed, &mut pos)? as u32;
            let n_blocks = get_varint(sealed, &mut pos)? as u32;
            let len = get_varint(sealed, &mut pos)? as usize;
            let first_block = next_block.saturating_add(gap);
            next_block = first_block.saturating_add(n_blocks);
            let start = pos;
            let end = (pos + len).min(sealed.len());
            pos = end;
            Some(Unit {
                first_block,
                n_blocks,
                header,
                start,
                end,
            })
        })
    }

    /// Decodes one unit into a fresh vector.
    fn decode_unit(&self, u: &Unit, layout: Layout) -> Vec<f64> {
        let mut values = vec![f64::NAN; (u.n_blocks * layout.block_steps) as usize];
        self.decode_unit_into(u, &mut values);
        values
    }

    /// Decodes one unit into `out` (exactly the unit's length).
    fn decode_unit_into(&self, u: &Unit, out: &mut [f64]) {
        // Units are written only by this type; should one not decode, its steps read as
        // missing rather than failing the write that touches it.
        if decode_values(&self.sealed()[u.start..u.end], out).is_err() {
            out.fill(f64::NAN);
        }
    }

    /// Writes one normalized value into step `step_index` (a multiple-of-step timestamp
    /// divided by the step), merging with what is there.
    pub(crate) fn write(&mut self, step_index: i64, value: f64, merge: Merge, layout: Layout) {
        let bs = i64::from(layout.block_steps);
        // Most writes land in the head: no division for those.
        if self.head_block != NO_BLOCK {
            let offset = step_index - i64::from(self.head_block) * bs;
            if (0..bs).contains(&offset) {
                self.write_head(offset as usize, value, merge);
                return;
            }
        }
        let block = (step_index / bs) as u32;
        let slot = (step_index % bs) as usize;
        if self.head_block == NO_BLOCK {
            // Invariant: the head lies after every sealed unit. A block at or before the end
            // of sealed data (a late write after the head was sealed) goes to its unit.
            let sealed_end = self.units().last().map(|u| u.first_block + u.n_blocks);
            if sealed_end.is_some_and(|end| block < end) {
                self.write_sealed(block, slot, value, merge, layout);
                return;
            }
            self.head_block = block;
        } else if block > self.head_block {
            // The series is writing on: its next head reuses this one's allocation.
            self.seal(layout, true);
            self.head_block = block;
        }
        if block == self.head_block {
            self.write_head(slot, value, merge);
        } else {
            self.write_sealed(block, slot, value, merge, layout);
        }
    }

    /// Asks the CPU to fetch the head the next in-order write will touch. Batches touch
    /// many series once each, and that load missing the cache dominated the write. The
    /// head's room is not read here (that load would wait for the very line asked for):
    /// a head lies in the buffer's first two lines.
    #[inline]
    pub(crate) fn prefetch_head(&self) {
        crate::prefetch::lines(&self.data, HEAD_PREFETCH_LINES);
    }

    /// Asks the CPU to fetch what a read of the series touches: its sealed units, up to
    /// [`READ_PREFETCH_LINES`] cache lines of them (six hours of a typical series; the
    /// hardware's own prefetcher takes over along a longer one), and its head.
    #[inline]
    pub(crate) fn prefetch_values(&self) {
        crate::prefetch::lines(&self.data, READ_PREFETCH_LINES);
    }

    #[inline]
    fn write_head(&mut self, slot: usize, value: f64, merge: Merge) {
        let len = usize::from(self.head_len);
        if slot >= len {
            for n in len..slot {
                self.head_mut().push(f64::NAN, n);
            }
            self.head_mut().push(merge.apply(f64::NAN, value), slot);
            // `slot` is below `block_steps`, which is at most 60.
            self.head_len = (slot + 1) as u8;
        } else if slot + 1 == len {
            // Another sample for the step being written (a rate's parts, a sum).
            let old = self.head().last(len);
            let merged = merge.apply(old, value);
            if merged.to_bits() != old.to_bits() {
                self.head_mut().replace_last(merged, len);
            }
        } else {
            let mut values: Vec<f64> = self.head().iter(len).collect();
            values[slot] = merge.apply(values[slot], value);
            self.head_mut().rebuild(&values);
        }
    }

    /// Seals the head block and frees it (the series may have gone quiet). It becomes a
    /// unit of its own, unless it completes a run: when [`MERGE_RUN`] single-block units
    /// (the head included) follow a unit, or the blocks since the last gap fill a whole
    /// unit, they are all merged and re-encoded as one.
    pub(crate) fn seal_head(&mut self, layout: Layout) {
        self.seal(layout, false);
    }

    fn seal(&mut self, layout: Layout, keep_head: bool) {
        if self.head_block == NO_BLOCK {
            return;
        }
        let block = self.head_block;
        self.head_block = NO_BLOCK;
        SEAL_SCRATCH.with(|cell| {
            let mut scratch = cell.take();
            // Decoded once, for the check and the seal, with their integers.
            scratch.head.clear();
            let fits = &mut scratch.head_fits;
            fits.reset();
            let n = usize::from(self.head_len);
            match self
                .head()
                .decode_fitted(n, &mut scratch.head, &mut fits.ints)
            {
                Some(scale) => fits.agree(Some(scale)),
                None => fits.give_up(),
            }
            // The head's values are out: empty it before the units are rewritten, so that
            // a head given up is not copied into the new buffer first.
            self.head_len = 0;
            if keep_head {
                self.head_mut().clear();
            } else {
                self.head_mut().free();
            }
            // NaN means "no data": an empty block is not kept at all.
            if !scratch.head.iter().all(|v| v.is_nan()) {
                self.seal_into_units(block, layout, &mut scratch);
            }
            cell.replace(scratch);
        });
    }

    fn seal_into_units(&mut self, block: u32, layout: Layout, scratch: &mut SealScratch) {
        let bs = layout.block_steps as usize;
        let SealScratch {
            head,
            units,
            values,
            encoded,
            head_fits,
            fits,
        } = scratch;
        // The head's values and integers, decoded by the caller.
        head.resize(bs, f64::NAN);
        head_fits.ints.resize(bs, None);
        let head_fits = head_fits.get(bs);
        units.clear();
        units.extend(self.units());
        match units.last() {
            Some(u) if u.first_block + u.n_blocks == block => {
                // The contiguous units before the head that fit into one unit with it.
                let (mut start, mut blocks, mut singles, mut only_singles) =
                    (units.len(), 1, 1, true);
                while let Some(prev) = start.checked_sub(1).map(|i| &units[i]) {
                    let contiguous = units
                        .get(start)
                        .is_none_or(|next| prev.first_block + prev.n_blocks == next.first_block);
                    if !contiguous || blocks + prev.n_blocks > layout.unit_blocks {
                        break;
                    }
                    blocks += prev.n_blocks;
                    only_singles &= prev.n_blocks == 1;
                    if only_singles {
                        singles += 1;
                    }
                    start -= 1;
                }
                if start < units.len() && (singles >= MERGE_RUN || blocks == layout.unit_blocks) {
                    values.clear();
                    fits.reset();
                    for u in &units[start..] {
                        let at = values.len();
                        values.resize(at + (u.n_blocks as usize) * bs, f64::NAN);
                        let bytes = &self.sealed()[u.start..u.end];
                        let out = &mut values[at..];
                        // As `decode_unit_into`, and what cannot be decoded has no integers.
                        if decode_values_fitted(bytes, out, Some(fits)).is_err() {
                            out.fill(f64::NAN);
                            fits.give_up();
                        }
                    }
                    values.extend_from_slice(head);
                    match head_fits {
                        Some((scale, ints)) => {
                            fits.ints.extend_from_slice(ints);
                            fits.agree(Some(scale));
                        }
                        None => fits.give_up(),
                    }
                    let gap = self.gap_before(&units[start]);
                    let keep = units[start].header;
                    let fitted = fits.get(values.len());
                    self.replace_tail(keep, gap, blocks, values, fitted, encoded);
                } else {
                    self.push_unit_with(0, 1, head, head_fits, encoded);
                }
            }
            Some(u) if u.first_block + u.n_blocks <= block => {
                let gap = block - (u.first_block + u.n_blocks);
                self.push_unit_with(gap, 1, head, head_fits, encoded);
            }
            None => {
                self.first_block = block;
                self.push_unit_with(0, 1, head, head_fits, encoded);
            }
            // A head behind the last unit (only after a late write created a later unit):
            // put it in order.
            Some(_) => self.insert_unit(block, 1, head),
        }
    }

    /// The gap field of unit `u` (re-derived so the unit can be rewritten in place).
    fn gap_before(&self, u: &Unit) -> u32 {
        let mut pos = u.header;
        get_varint(self.sealed(), &mut pos).unwrap_or(0) as u32
    }

    /// Appends a unit, encoding it through `encoded` (a buffer the caller reuses).
    fn push_unit_with(
        &mut self,
        gap: u32,
        n_blocks: u32,
        values: &[f64],
        fits: Option<(usize, &[Option<i64>])>,
        encoded: &mut Vec<u8>,
    ) {
        self.replace_tail(self.sealed().len(), gap, n_blocks, values, fits, encoded);
    }

    /// Keeps the first `keep` bytes of the sealed units and appends a unit after them, in a
    /// buffer of exactly the new size.
    fn replace_tail(
        &mut self,
        keep: usize,
        gap: u32,
        n_blocks: u32,
        values: &[f64],
        fits: Option<(usize, &[Option<i64>])>,
        encoded: &mut Vec<u8>,
    ) {
        encoded.clear();
        encode_values(values, fits, encoded);
        // The unit's header goes after the values in the same scratch buffer (no
        // allocation), and before them in the series' buffer.
        let values_len = encoded.len();
        put_unit_header(encoded, gap, n_blocks, values_len);
        let (values, header) = encoded.split_at(values_len);
        self.set_sealed(keep, &[header, values]);
    }

    /// Rebuilds the buffer from `(first_block, n_blocks, values)` units in block order.
    fn rebuild(&mut self, units: Vec<(u32, u32, Vec<f64>)>) {
        let mut sealed = Vec::new();
        let mut encoded = Vec::new();
        let mut prev_end: Option<u32> = None;
        for (first, n, values) in units {
            let gap = match prev_end {
                Some(end) => first - end,
                None => {
                    self.first_block = first;
                    0
                }
            };
            encoded.clear();
            encode_values(&values, None, &mut encoded);
            put_unit_header(&mut sealed, gap, n, encoded.len());
            sealed.extend_from_slice(&encoded);
            prev_end = Some(first + n);
        }
        self.set_sealed(0, &[&sealed]);
    }

    fn all_units(&self, layout: Layout) -> Vec<(u32, u32, Vec<f64>)> {
        self.units()
            .map(|u| (u.first_block, u.n_blocks, self.decode_unit(&u, layout)))
            .collect()
    }

    /// Inserts a unit that overlaps no other, keeping units ordered (the rare path).
    fn insert_unit(&mut self, first: u32, n_blocks: u32, values: &[f64]) {
        let layout = Layout {
            block_steps: (values.len() / n_blocks.max(1) as usize) as u32,
            unit_blocks: u32::MAX,
        };
        let mut units = self.all_units(layout);
        units.push((first, n_blocks, values.to_vec()));
        units.sort_by_key(|u| u.0);
        self.rebuild(units);
    }

    /// A late write into a block that is no longer the head: decode, merge, re-encode.
    fn write_sealed(&mut self, block: u32, slot: usize, value: f64, merge: Merge, layout: Layout) {
        let bs = layout.block_steps as usize;
        let found = self
            .units()
            .find(|u| u.first_block <= block && block < u.first_block + u.n_blocks);
        match found {
            Some(u) => {
                let mut units = self.all_units(layout);
                if let Some(entry) = units.iter_mut().find(|e| e.0 == u.first_block) {
                    let at = (block - u.first_block) as usize * bs + slot;
                    entry.2[at] = merge.apply(entry.2[at], value);
                }
                self.rebuild(units);
            }
            None => {
                let mut values = vec![f64::NAN; bs];
                values[slot] = merge.apply(f64::NAN, value);
                if values[slot].is_nan() {
                    return;
                }
                let mut units = self.all_units(layout);
                units.push((block, 1, values));
                units.sort_by_key(|u| u.0);
                self.rebuild(units);
            }
        }
    }

    /// Drops every block numbered below `min_block`, trimming a unit that straddles it.
    /// Returns true when the series holds no data any more.
    pub(crate) fn expire_before(&mut self, min_block: u32, layout: Layout) -> bool {
        if self
            .units()
            .next()
            .is_some_and(|u| u.first_block < min_block)
        {
            let bs = layout.block_steps as usize;
            let kept: Vec<(u32, u32, Vec<f64>)> = self
                .all_units(layout)
                .into_iter()
                .filter_map(|(first, n, values)| {
                    if first + n <= min_block {
                        None
                    } else if first >= min_block {
                        Some((first, n, values))
                    } else {
                        let skip = min_block - first;
                        let rest = values[skip as usize * bs..].to_vec();
                        (!rest.iter().all(|v| v.is_nan())).then_some((min_block, n - skip, rest))
                    }
                })
                .collect();
            self.rebuild(kept);
        }
        if self.head_block != NO_BLOCK && self.head_block < min_block {
            self.head_block = NO_BLOCK;
            self.head_len = 0;
            self.head_mut().free();
        }
        self.is_empty()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sealed().is_empty() && self.head_block == NO_BLOCK
    }

    /// The head's block number, if there is a head.
    pub(crate) fn head_block(&self) -> Option<u32> {
        (self.head_block != NO_BLOCK).then_some(self.head_block)
    }

    /// Fills `out[i]` with the stored value of step `first_step + i` (NaN where nothing is
    /// stored). `scratch` must hold `layout.max_unit_steps()` values.
    pub(crate) fn read_steps(
        &self,
        first_step: i64,
        out: &mut [f64],
        layout: Layout,
        scratch: &mut [f64],
    ) -> Result<()> {
        out.fill(f64::NAN);
        let bs = i64::from(layout.block_steps);
        let last_step = first_step + out.len() as i64 - 1;
        let copy = |unit_first: i64, values: &[f64], out: &mut [f64]| {
            let lo = unit_first.max(first_step);
            let hi = (unit_first + values.len() as i64 - 1).min(last_step);
            if lo <= hi {
                let src = &values[(lo - unit_first) as usize..=(hi - unit_first) as usize];
                out[(lo - first_step) as usize..=(hi - first_step) as usize].copy_from_slice(src);
            }
        };
        for u in self.units() {
            let unit_first = i64::from(u.first_block) * bs;
            let n = (u.n_blocks as i64 * bs) as usize;
            let unit_last = unit_first + n as i64 - 1;
            if unit_first > last_step || unit_last < first_step {
                continue;
            }
            let bytes = &self.sealed()[u.start..u.end];
            if unit_first >= first_step && unit_last <= last_step {
                // Fully covered: decode straight into the output.
                let at = (unit_first - first_step) as usize;
                decode_values(bytes, &mut out[at..at + n])?;
            } else if n <= scratch.len() {
                decode_values(bytes, &mut scratch[..n])?;
                copy(unit_first, &scratch[..n], out);
            } else {
                let mut tmp = vec![f64::NAN; n];
                decode_values(bytes, &mut tmp)?;
                copy(unit_first, &tmp, out);
            }
        }
        if self.head_block != NO_BLOCK {
            let head_first = i64::from(self.head_block) * bs;
            for (step, v) in (head_first..).zip(self.head().iter(usize::from(self.head_len))) {
                if step > last_step {
                    break;
                }
                if step >= first_step {
                    out[(step - first_step) as usize] = v;
                }
            }
        }
        Ok(())
    }

    /// (sealed bytes, sealed blocks) held by this series.
    pub(crate) fn sealed_stats(&self) -> (usize, usize) {
        (
            self.sealed().len(),
            self.units().map(|u| u.n_blocks as usize).sum(),
        )
    }

    /// Non-NaN values in the sealed blocks (decodes them: for reports, not hot paths).
    pub(crate) fn sealed_values(&self, layout: Layout) -> usize {
        self.units()
            .map(|u| {
                self.decode_unit(&u, layout)
                    .iter()
                    .filter(|v| !v.is_nan())
                    .count()
            })
            .sum()
    }

    /// Slots written so far in the head block.
    pub(crate) fn head_len(&self) -> usize {
        usize::from(self.head_len)
    }

    /// Heap bytes held (capacity, not length, since that is what memory costs).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Layout = Layout {
        block_steps: 4,
        unit_blocks: 3,
    };

    fn read(s: &SeriesData, first: i64, n: usize) -> Vec<f64> {
        let mut out = vec![0.0; n];
        let mut scratch = vec![0.0; L.max_unit_steps()];
        s.read_steps(first, &mut out, L, &mut scratch).unwrap();
        out
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn per_series_state_stays_small() {
        // Every series pays this; the maintenance stamp and the head's length live in what
        // was padding, the head and the units in one boxed slice.
        assert!(
            std::mem::size_of::<Option<SeriesData>>() <= 64,
            "{}",
            std::mem::size_of::<Option<SeriesData>>()
        );
    }

    #[test]
    fn sealed_blocks_merge_in_runs_of_four_and_into_full_units() {
        let layout = Layout {
            block_steps: 2,
            unit_blocks: 16,
        };
        let mut s = SeriesData::new(DsType::Gauge);
        let mut shapes = Vec::new();
        for block in 0..18u32 {
            for slot in 0..2 {
                let step = i64::from(block * 2 + slot);
                s.write(step, step as f64 * 0.25, Merge::Max, layout);
            }
            // Writing the next block seals this one.
            s.write(i64::from(block * 2 + 2), 0.0, Merge::Max, layout);
            shapes.push(s.units().map(|u| u.n_blocks).collect::<Vec<_>>());
        }
        let want: [&[u32]; 18] = [
            &[1],
            &[1, 1],
            &[1, 1, 1],
            &[4],
            &[4, 1],
            &[4, 1, 1],
            &[4, 1, 1, 1],
            &[8],
            &[8, 1],
            &[8, 1, 1],
            &[8, 1, 1, 1],
            &[12],
            &[12, 1],
            &[12, 1, 1],
            &[12, 1, 1, 1],
            &[16],
            &[16, 1],
            &[16, 1, 1],
        ];
        for (got, want) in shapes.iter().zip(want) {
            assert_eq!(got, want, "{shapes:?}");
        }
        let mut out = vec![0.0; 36];
        let mut scratch = vec![0.0; layout.max_unit_steps()];
        s.read_steps(0, &mut out, layout, &mut scratch).unwrap();
        for (i, v) in out.iter().enumerate() {
            assert_eq!(*v, i as f64 * 0.25);
        }
    }

    #[test]
    fn seals_from_the_heads_integers_write_what_the_plain_encoder_writes() {
        // Merges take the integers of the head and of the units they re-encode; the bytes
        // must be those of encoding the values afresh, whatever the values are.
        let layout = Layout {
            block_steps: 15,
            unit_blocks: 16,
        };
        let kinds: [fn(i64) -> f64; 7] = [
            |i| ((i * 37 % 201) as f64 - 100.0) / 100.0 + 500.0,
            |i| (i / 3) as f64,
            |i| {
                if i % 50 == 7 {
                    1e9
                } else {
                    (i % 9) as f64 * 0.5
                }
            },
            |i| {
                if i % 17 == 3 {
                    f64::NAN
                } else {
                    i as f64 / 60.0
                }
            },
            |i| {
                if i < 100 {
                    0.25 * i as f64
                } else {
                    (i as f64).sqrt()
                }
            },
            |i| f64::from_bits(0x4000_0000_0000_0000 + (i as u64 * 0x9e37_79b9)),
            |i| {
                if i % 45 < 3 {
                    1.5
                } else {
                    (i * i % 1000) as f64 / 1000.0
                }
            },
        ];
        for (n, kind) in kinds.iter().enumerate() {
            let mut s = SeriesData::new(DsType::Gauge);
            for step in 0..20 * 15 {
                s.write(step, kind(step), Merge::Max, layout);
                if step % 15 == 14 {
                    s.write(step + 1, kind(step + 1), Merge::Max, layout);
                    let mut fresh = SeriesData::new(DsType::Gauge);
                    fresh.rebuild(s.all_units(layout));
                    assert_eq!(s.sealed(), fresh.sealed(), "kind {n}, step {step}");
                    assert_eq!(s.first_block, fresh.first_block);
                    // The next block's first step was written above; write it again.
                }
            }
        }
    }

    #[test]
    fn writes_across_blocks_read_back_and_merge_into_units() {
        let mut s = SeriesData::new(DsType::Gauge);
        for i in 0..30 {
            s.write(100 + i, i as f64, Merge::Max, L);
        }
        let got = read(&s, 98, 34);
        let mut want = vec![f64::NAN; 34];
        for i in 0..30 {
            want[2 + i] = i as f64;
        }
        assert!(same(&got, &want), "{got:?}");
        // blocks 25..=31 sealed (7 blocks) in units of at most 3 blocks, head is block 32
        assert_eq!(s.sealed_stats().1, 7);
        assert_eq!(s.units().count(), 3);
        assert_eq!(s.sealed_values(L), 28);
    }

    #[test]
    fn late_write_into_sealed_block_merges() {
        let mut s = SeriesData::new(DsType::Sum);
        s.write(0, 1.0, Merge::Add, L);
        s.write(9, 1.0, Merge::Add, L); // seals block 0
        s.write(0, 2.0, Merge::Add, L); // late, into the sealed unit
        s.write(5, 7.0, Merge::Add, L); // a block that was never written
        let n = f64::NAN;
        assert!(same(
            &read(&s, 0, 10),
            &[3.0, n, n, n, n, 7.0, n, n, n, 1.0]
        ));
        s.write(20, 1.0, Merge::Add, L); // seals block 2 behind the others
        assert!(same(&read(&s, 8, 4), &[n, 1.0, n, n]));
    }

    #[test]
    fn the_head_and_the_units_share_one_buffer_through_every_change() {
        // Random in-order, late and out-of-block writes, heads sealed away and expiry,
        // against a plain map: the head growing moves the units, a seal rewrites them
        // around the head, and nothing is held once nothing is left.
        let layout = Layout {
            block_steps: 15,
            unit_blocks: 16,
        };
        let mut rng = fastrand::Rng::with_seed(72);
        let pick = |rng: &mut fastrand::Rng| match rng.u8(..5) {
            0 => f64::from(rng.i32(-5000..5000)) / 60.0,
            1 => f64::from(rng.u16(..)) * 0.01,
            2 => f64::from_bits(rng.u64(..)),
            3 => f64::NAN,
            _ => f64::from(rng.i32(..)),
        };
        for _ in 0..300 {
            let mut s = SeriesData::new(DsType::Gauge);
            let mut model = std::collections::BTreeMap::new();
            let mut next = rng.i64(0..100);
            let mut expired = 0;
            for _ in 0..rng.usize(1..400) {
                let step = match rng.u8(..10) {
                    0 => next.saturating_sub(rng.i64(1..80)).max(expired),
                    1 => {
                        next += rng.i64(15..100);
                        next
                    }
                    _ => {
                        next += 1;
                        next
                    }
                };
                match rng.u8(..40) {
                    0 => s.seal_head(layout),
                    1 => {
                        let min_block = (next / 15 - rng.i64(0..6)).max(0) as u32;
                        expired = expired.max(i64::from(min_block) * 15);
                        model.retain(|&k, _| k >= expired);
                        let empty = s.expire_before(min_block, layout);
                        assert_eq!(empty, s.is_empty());
                    }
                    _ => {
                        let v = pick(&mut rng);
                        s.write(step, v, Merge::Max, layout);
                        let old = model.get(&step).copied().unwrap_or(f64::NAN);
                        model.insert(step, Merge::Max.apply(old, v));
                    }
                }
            }
            let mut want = vec![f64::NAN; (next + 1) as usize];
            for (&k, &v) in &model {
                want[k as usize] = v;
            }
            let mut got = vec![0.0; want.len()];
            let mut scratch = vec![0.0; layout.max_unit_steps()];
            s.read_steps(0, &mut got, layout, &mut scratch).unwrap();
            assert!(same(&got, &want));
            assert_eq!(s.heap_bytes(), s.data.len());
            s.expire_before((next / 15 + 1) as u32, layout);
            assert!(s.is_empty());
            assert_eq!(s.heap_bytes(), 0, "an empty series holds nothing");
        }
    }

    #[test]
    fn expiry_trims_units_then_drops_everything() {
        let mut s = SeriesData::new(DsType::Gauge);
        for i in 0..24 {
            s.write(i, 1.0, Merge::Max, L);
        }
        assert!(!s.expire_before(1, L));
        assert_eq!(read(&s, 0, 4).iter().filter(|v| !v.is_nan()).count(), 0);
        assert_eq!(read(&s, 4, 20).iter().filter(|v| !v.is_nan()).count(), 20);
        assert!(!s.expire_before(4, L));
        assert_eq!(read(&s, 0, 24).iter().filter(|v| !v.is_nan()).count(), 8);
        assert!(s.expire_before(7, L));
    }
}
