//! `argus.v1.SampleGroup` with its packed fields decoded in a tight loop.
//!
//! Every sample an agent sends is one varint id and one double inside a `SampleGroup`.
//! Through prost's generated code each of them is a call through the `Buf` trait (about
//! 75 instructions an id and 50 a value: 13 % of the server's instructions on the agent
//! stream). Here a packed field that lies in one contiguous chunk, as a gRPC message does,
//! is read as a slice; anything else (a field split over chunks, an unpacked encoding, a
//! malformed field) goes through prost's own functions, which also give its errors. The
//! bytes written and the values read are prost's, and what prost refuses is refused: the
//! tests check all three against the generated message.

use prost::bytes::{Buf, BufMut};
use prost::encoding::{self, DecodeContext, WireType};
use prost::{DecodeError, Message};

/// Samples taken at one time: series `series[i]` has value `values[i]`.
#[derive(Clone, PartialEq, Default, Debug)]
pub struct SampleGroup {
    pub timestamp_ms: i64,
    pub series: Vec<u32>,
    pub values: Vec<f64>,
}

const TIMESTAMP_TAG: u32 = 1;
const SERIES_TAG: u32 = 2;
const VALUES_TAG: u32 = 3;

impl Message for SampleGroup {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.timestamp_ms != 0 {
            encoding::int64::encode(TIMESTAMP_TAG, &self.timestamp_ms, buf);
        }
        encoding::uint32::encode_packed(SERIES_TAG, &self.series, buf);
        encoding::double::encode_packed(VALUES_TAG, &self.values, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        let named = |mut e: DecodeError, field: &'static str| {
            e.push("SampleGroup", field);
            e
        };
        match tag {
            TIMESTAMP_TAG => encoding::int64::merge(wire_type, &mut self.timestamp_ms, buf, ctx)
                .map_err(|e| named(e, "timestamp_ms")),
            SERIES_TAG => merge_packed(
                wire_type,
                &mut self.series,
                buf,
                packed_varints,
                |out, b| encoding::uint32::merge_repeated(wire_type, out, b, ctx),
            )
            .map_err(|e| named(e, "series")),
            VALUES_TAG => merge_packed(
                wire_type,
                &mut self.values,
                buf,
                packed_doubles,
                |out, b| encoding::double::merge_repeated(wire_type, out, b, ctx),
            )
            .map_err(|e| named(e, "values")),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let timestamp = if self.timestamp_ms != 0 {
            encoding::int64::encoded_len(TIMESTAMP_TAG, &self.timestamp_ms)
        } else {
            0
        };
        timestamp
            + encoding::uint32::encoded_len_packed(SERIES_TAG, &self.series)
            + encoding::double::encoded_len_packed(VALUES_TAG, &self.values)
    }

    fn clear(&mut self) {
        self.timestamp_ms = 0;
        self.series.clear();
        self.values.clear();
    }
}

/// Merges a repeated field into `out`: read by `fast` when it is packed in one chunk, else
/// (split over chunks, unpacked, or malformed) by prost's `general`, from where the field
/// began, which also names the error.
fn merge_packed<T, B: Buf>(
    wire_type: WireType,
    out: &mut Vec<T>,
    buf: &mut B,
    fast: fn(&[u8], &mut Vec<T>) -> Option<usize>,
    general: impl FnOnce(&mut Vec<T>, &mut B) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let kept = out.len();
    if wire_type == WireType::LengthDelimited
        && let Some(read) = contiguous_field(buf).and_then(|f| fast(f, out))
    {
        buf.advance(read);
        return Ok(());
    }
    out.truncate(kept);
    general(out, buf)
}

/// A length-delimited field's length prefix and body, when both lie in `buf`'s current
/// chunk: the bytes after the prefix (the body and what follows). `None` leaves `buf`
/// untouched, for prost's general path.
fn contiguous_field(buf: &impl Buf) -> Option<&[u8]> {
    let chunk = buf.chunk();
    let (len, prefix) = slice_varint(chunk)?;
    let len = usize::try_from(len).ok()?;
    let body = chunk.get(prefix..)?;
    (len <= body.len()).then(|| &chunk[..prefix + len])
}

/// Reads the packed varints of `field` (its length prefix, then the body) onto `out`, as
/// prost's `uint32` does (each truncated to 32 bits); the bytes read, or `None` when a
/// varint is malformed or runs past the body.
fn packed_varints(field: &[u8], out: &mut Vec<u32>) -> Option<usize> {
    let (_, prefix) = slice_varint(field)?;
    let mut body = &field[prefix..];
    // Most ids are one to three bytes: at least a third of the body's length.
    out.reserve(body.len() / 3);
    while let Some(&first) = body.first() {
        if first < 0x80 {
            out.push(u32::from(first));
            body = &body[1..];
            continue;
        }
        // Ids below 16,384 take two bytes: read here, not in a call.
        if let Some(&second) = body.get(1)
            && second < 0x80
        {
            out.push(u32::from(first & 0x7f) | u32::from(second) << 7);
            body = &body[2..];
            continue;
        }
        let (v, n) = slice_varint(body)?;
        out.push(v as u32);
        body = &body[n..];
    }
    Some(field.len())
}

/// Reads the packed doubles of `field` (its length prefix, then the body) onto `out`; the
/// bytes read, or `None` when the body is not whole doubles.
fn packed_doubles(field: &[u8], out: &mut Vec<f64>) -> Option<usize> {
    let (_, prefix) = slice_varint(field)?;
    let body = &field[prefix..];
    if !body.len().is_multiple_of(8) {
        return None;
    }
    out.extend(
        body.chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
    );
    Some(field.len())
}

/// A varint at the start of `bytes` and its length, as prost reads one: at most ten bytes,
/// the tenth at most 1. `None` when it is cut short or too long.
#[inline]
fn slice_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        if i == 9 && b > 1 {
            return None;
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The message as prost generates it: the reference.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Generated {
        #[prost(int64, tag = "1")]
        timestamp_ms: i64,
        #[prost(uint32, repeated, tag = "2")]
        series: Vec<u32>,
        #[prost(double, repeated, tag = "3")]
        values: Vec<f64>,
    }

    /// The same fields, unpacked (as a proto2 encoder or an older one may send them).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Unpacked {
        #[prost(int64, tag = "1")]
        timestamp_ms: i64,
        #[prost(uint32, repeated, packed = "false", tag = "2")]
        series: Vec<u32>,
        #[prost(double, repeated, packed = "false", tag = "3")]
        values: Vec<f64>,
        #[prost(string, tag = "9")]
        unknown: String,
    }

    fn random_group(rng: &mut fastrand::Rng) -> Generated {
        let n = rng.usize(0..40);
        Generated {
            timestamp_ms: rng.i64(..) >> rng.u32(0..64),
            series: (0..n)
                .map(|_| (rng.u64(..) >> rng.u32(0..64)) as u32)
                .collect(),
            values: (0..n).map(|_| f64::from_bits(rng.u64(..))).collect(),
        }
    }

    fn same(a: &SampleGroup, b: &Generated) -> bool {
        a.timestamp_ms == b.timestamp_ms
            && a.series == b.series
            && a.values.len() == b.values.len()
            && a.values
                .iter()
                .zip(&b.values)
                .all(|(x, y)| x.to_bits() == y.to_bits())
    }

    #[test]
    fn writes_and_reads_what_the_generated_message_does() {
        let mut rng = fastrand::Rng::with_seed(18);
        for round in 0..2_000 {
            let reference = random_group(&mut rng);
            let ours = SampleGroup {
                timestamp_ms: reference.timestamp_ms,
                series: reference.series.clone(),
                values: reference.values.clone(),
            };
            let bytes = reference.encode_to_vec();
            assert_eq!(ours.encode_to_vec(), bytes, "round {round}");
            assert_eq!(ours.encoded_len(), bytes.len(), "round {round}");
            let read = SampleGroup::decode(bytes.as_slice()).expect("decodes");
            assert!(same(&read, &reference), "round {round}");
            // Split over chunks, the general path reads the same.
            let (a, b) = bytes.split_at(bytes.len() / 2);
            let split = SampleGroup::decode(a.chain(b)).expect("decodes in two chunks");
            assert!(same(&split, &reference), "round {round}, two chunks");
            // Unpacked fields and unknown ones.
            let unpacked = Unpacked {
                timestamp_ms: reference.timestamp_ms,
                series: reference.series.clone(),
                values: reference.values.clone(),
                unknown: "skipped".into(),
            };
            let read = SampleGroup::decode(unpacked.encode_to_vec().as_slice()).expect("decodes");
            assert!(same(&read, &reference), "round {round}, unpacked");
        }
    }

    #[test]
    fn bad_bytes_fail_where_the_generated_message_fails() {
        let mut rng = fastrand::Rng::with_seed(19);
        let mut failures = 0;
        for round in 0..3_000 {
            let mut bytes = random_group(&mut rng).encode_to_vec();
            if bytes.is_empty() {
                continue;
            }
            // Cut short, or a byte changed, or overlong varints among the ids.
            match round % 3 {
                0 => bytes.truncate(rng.usize(..bytes.len())),
                1 => {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = rng.u8(..);
                }
                _ => bytes.extend_from_slice(&[
                    0x12, 0x0b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x05,
                ]),
            }
            let want = Generated::decode(bytes.as_slice());
            let got = SampleGroup::decode(bytes.as_slice());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert!(same(g, w), "round {round}: {bytes:?}"),
                (Err(_), Err(_)) => failures += 1,
                _ => panic!("round {round}: ours {got:?}, prost's {want:?} for {bytes:?}"),
            }
        }
        assert!(
            failures > 500,
            "the damaged inputs exercise errors: {failures}"
        );
    }

    #[test]
    fn ids_past_32_bits_are_truncated_as_prost_does() {
        let mut bytes = Vec::new();
        encoding::uint64::encode_packed(2, &[u64::MAX, 1 << 32 | 7, 300], &mut bytes);
        let read = SampleGroup::decode(bytes.as_slice()).expect("decodes");
        let want = Generated::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(read.series, want.series);
        assert_eq!(read.series, vec![u32::MAX, 7, 300]);
    }
}
