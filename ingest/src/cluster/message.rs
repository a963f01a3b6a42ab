//! The bytes of one partition message. Every message names its series by their tags, so no
//! reader depends on an earlier one, and is read without an allocation per tag: a store node
//! applies every message of its partitions, and a gateway writes one per partition per
//! request, so both ends are on the ingest path.
//!
//! A message is the format byte 3 followed by the body compressed with Snappy (block
//! format): series tags repeat in every message, and compressed they cost JetStream's
//! servers a third of the bytes to replicate, store and fsync. Format 2 is the body as it
//! is, which readers also take.
//!
//! ```text
//! format byte (2: the body follows; 3: the body follows, Snappy-compressed)
//! varint series count, then per series:
//!     dstype byte, then per tag (sorted by key): varint key length + 1, key, varint value
//!     length, value; then varint 0
//! varint sample count, then per sample:
//!     varint series index, zigzag varint timestamp minus the previous sample's (the first:
//!     minus 0), value as 8 bytes little-endian
//! ```

use argus_tsdb::{DsType, Tags};

/// The first byte of a message whose body follows as it is. Protocol Buffers never starts a
/// message with 2 or 3 (field 0 is invalid), so the earlier format is told apart.
pub const FORMAT: u8 = 2;
/// The first byte of a message whose body follows compressed (Snappy, block format).
pub const FORMAT_SNAPPY: u8 = 3;

/// The largest body a message may have uncompressed: gateways cut theirs at 768 KiB.
const MAX_BODY: usize = 4 << 20;

/// A message's body as a [`Reader`] reads it: `payload` itself, or decompressed into
/// `scratch` (kept for the next message).
pub fn body<'a>(payload: &'a [u8], scratch: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
    match payload.first() {
        Some(&FORMAT_SNAPPY) => {
            let compressed = &payload[1..];
            let n = snap::raw::decompress_len(compressed)
                .map_err(|e| format!("a compressed partition message: {e}"))?;
            // Gateways cut messages well under this: a forged length is refused.
            if n > MAX_BODY {
                return Err(format!(
                    "a compressed partition message claims {n} bytes from {} (at most {MAX_BODY})",
                    compressed.len()
                ));
            }
            scratch.clear();
            scratch.resize(n + 1, 0);
            scratch[0] = FORMAT;
            snap::raw::Decoder::new()
                .decompress(compressed, &mut scratch[1..])
                .map_err(|e| format!("a compressed partition message: {e}"))?;
            Ok(scratch)
        }
        _ => Ok(payload),
    }
}

fn dstype_code(d: DsType) -> u8 {
    match d {
        DsType::Rate => 0,
        DsType::Counter => 1,
        DsType::Gauge => 2,
        DsType::Sum => 3,
    }
}

fn dstype_of(code: u8) -> Option<DsType> {
    Some(match code {
        0 => DsType::Rate,
        1 => DsType::Counter,
        2 => DsType::Gauge,
        3 => DsType::Sum,
        _ => return None,
    })
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// One series as a message names it: appended to `out`.
pub fn put_series(out: &mut Vec<u8>, tags: &dyn Tags, dstype: DsType) {
    out.push(dstype_code(dstype));
    tags.for_each(&mut |k, v| {
        put_varint(out, k.len() as u64 + 1);
        out.extend_from_slice(k.as_bytes());
        put_varint(out, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    });
    put_varint(out, 0);
}

/// One partition's message as it is built: its series (already encoded) and its samples.
#[derive(Default)]
pub struct MessageBuilder {
    series: Vec<u8>,
    series_count: u32,
    samples: Vec<u8>,
    sample_count: u32,
    previous_ts: i64,
}

impl MessageBuilder {
    /// Adds a series (as [`put_series`] wrote it); returns its index in this message.
    pub fn add_series(&mut self, encoded: &[u8]) -> u32 {
        self.series.extend_from_slice(encoded);
        self.series_count += 1;
        self.series_count - 1
    }

    pub fn add_sample(&mut self, series: u32, ts_ms: i64, value: f64) {
        put_varint(&mut self.samples, u64::from(series));
        put_varint(
            &mut self.samples,
            zigzag(ts_ms.wrapping_sub(self.previous_ts)),
        );
        self.previous_ts = ts_ms;
        self.samples.extend_from_slice(&value.to_le_bytes());
        self.sample_count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.sample_count == 0
    }

    /// Bytes the message will have, within a few.
    pub fn len(&self) -> usize {
        self.series.len() + self.samples.len() + 11
    }

    /// The message, uncompressed (format 2).
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len());
        out.push(FORMAT);
        self.put_body(&mut out);
        out
    }

    /// The message, its body compressed (format 3).
    pub fn finish_compressed(self, scratch: &mut Vec<u8>) -> Vec<u8> {
        scratch.clear();
        self.put_body(scratch);
        let mut out = vec![0; 1 + snap::raw::max_compress_len(scratch.len())];
        out[0] = FORMAT_SNAPPY;
        let n = snap::raw::Encoder::new()
            .compress(scratch, &mut out[1..])
            .unwrap_or_else(|_| unreachable!("the output has max_compress_len bytes"));
        out.truncate(1 + n);
        out
    }

    fn put_body(&self, out: &mut Vec<u8>) {
        put_varint(out, u64::from(self.series_count));
        out.extend_from_slice(&self.series);
        put_varint(out, u64::from(self.sample_count));
        out.extend_from_slice(&self.samples);
    }
}

/// Reads a message; every error says what is wrong and where.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Checks the format byte.
    pub fn new(buf: &'a [u8]) -> Result<Reader<'a>, String> {
        match buf.first() {
            Some(&FORMAT) => Ok(Reader { buf, pos: 1 }),
            Some(b) => Err(format!(
                "a partition message of an unknown format (first byte {b:#04x}, expected {FORMAT:#04x})"
            )),
            None => Err("an empty partition message".into()),
        }
    }

    fn truncated(&self, what: &str) -> String {
        format!(
            "a partition message ends inside {what} at byte {} of {}",
            self.pos,
            self.buf.len()
        )
    }

    pub fn varint(&mut self, what: &str) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.truncated(what));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!(
            "a partition message has an overlong number ({what}) at byte {}",
            self.pos
        ))
    }

    /// A count of items of at least `min_bytes` each: never more than the bytes left, so a
    /// forged count cannot make a reader reserve memory the message does not hold.
    pub fn count(&mut self, what: &str, min_bytes: usize) -> Result<usize, String> {
        let n = self.varint(what)?;
        let left = (self.buf.len() - self.pos) / min_bytes.max(1);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= left)
            .ok_or_else(|| format!("a partition message claims {n} {what} in {left} bytes"))
    }

    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(self.truncated(what));
        };
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn text(&mut self, n: usize, what: &str) -> Result<&'a str, String> {
        let at = self.pos;
        std::str::from_utf8(self.bytes(n, what)?)
            .map_err(|_| format!("a partition message has a {what} that is not UTF-8 at byte {at}"))
    }

    /// One series: its dstype, and its tags into `pairs` (cleared first).
    pub fn series(&mut self, pairs: &mut Vec<(&'a str, &'a str)>) -> Result<DsType, String> {
        pairs.clear();
        let at = self.pos;
        let code = *self.bytes(1, "a series")?.first().unwrap_or(&0);
        let dstype = dstype_of(code)
            .ok_or_else(|| format!("a partition message has dstype code {code} at byte {at}"))?;
        loop {
            let key_len = self.varint("a tag key length")?;
            if key_len == 0 {
                return Ok(dstype);
            }
            let key = self.text(key_len as usize - 1, "tag key")?;
            let value_len = self.varint("a tag value length")? as usize;
            let value = self.text(value_len, "tag value")?;
            pairs.push((key, value));
        }
    }

    /// One series' bytes, skipped without reading its tags as text: the key under which
    /// an applier remembers the series. [`Reader::series_of`] reads them when needed.
    pub fn series_bytes(&mut self) -> Result<&'a [u8], String> {
        let start = self.pos;
        self.bytes(1, "a series")?;
        loop {
            let key_len = self.varint("a tag key length")? as usize;
            if key_len == 0 {
                return Ok(&self.buf[start..self.pos]);
            }
            self.bytes(key_len - 1, "a tag key")?;
            let value_len = self.varint("a tag value length")? as usize;
            self.bytes(value_len, "a tag value")?;
        }
    }

    /// The dstype and tags of one series' bytes (as [`Reader::series_bytes`] gave them).
    pub fn series_of(
        bytes: &'a [u8],
        pairs: &mut Vec<(&'a str, &'a str)>,
    ) -> Result<DsType, String> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let dstype = r.series(pairs)?;
        r.end()?;
        Ok(dstype)
    }

    /// One sample: (series index, timestamp, value), given the previous timestamp.
    pub fn sample(&mut self, previous_ts: i64) -> Result<(u64, i64, f64), String> {
        let series = self.varint("a sample's series")?;
        let ts = previous_ts.wrapping_add(unzigzag(self.varint("a sample's timestamp")?));
        let raw = self.bytes(8, "a sample's value")?;
        let value = f64::from_le_bytes(raw.try_into().map_err(|_| self.truncated("a value"))?);
        Ok((series, ts, value))
    }

    /// `Err` unless every byte was read.
    pub fn end(&self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!(
                "a partition message has {} bytes after its last sample",
                self.buf.len() - self.pos
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use argus_tsdb::TagMap;

    #[test]
    fn numbers_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            60_000,
            -60_000,
            i64::MAX,
            i64::MIN,
            1_700_000_000_000,
        ] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        let mut b = MessageBuilder::default();
        let tags = TagMap::from_pairs([("name", "x"), ("node", "é")]);
        let mut encoded = Vec::new();
        put_series(&mut encoded, &tags, DsType::Gauge);
        let i = b.add_series(&encoded);
        b.add_sample(i, 1_700_000_000_000, 1.5);
        b.add_sample(i, 1_699_999_940_000, f64::NAN);
        let bytes = b.finish();
        let mut r = Reader::new(&bytes).unwrap();
        assert_eq!(r.count("series", 2).unwrap(), 1);
        let mut pairs = Vec::new();
        assert_eq!(r.series(&mut pairs).unwrap(), DsType::Gauge);
        assert_eq!(pairs, vec![("name", "x"), ("node", "é")]);
        assert_eq!(r.count("samples", 10).unwrap(), 2);
        let (s, ts, v) = r.sample(0).unwrap();
        assert_eq!((s, ts, v), (0, 1_700_000_000_000, 1.5));
        let (_, ts2, v2) = r.sample(ts).unwrap();
        assert_eq!(ts2, 1_699_999_940_000);
        assert!(v2.is_nan());
        r.end().unwrap();
    }

    #[test]
    fn a_forged_count_or_a_cut_message_is_an_error_not_an_allocation() {
        let mut forged = vec![FORMAT];
        put_varint(&mut forged, u64::MAX);
        let err = Reader::new(&forged)
            .unwrap()
            .count("series", 2)
            .unwrap_err();
        assert!(err.contains("claims"), "{err}");
        let mut b = MessageBuilder::default();
        let mut encoded = Vec::new();
        put_series(
            &mut encoded,
            &TagMap::from_pairs([("name", "x")]),
            DsType::Rate,
        );
        b.add_series(&encoded);
        let bytes = b.finish();
        for cut in 1..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]).unwrap();
            let mut pairs = Vec::new();
            let result = r
                .count("series", 2)
                .and_then(|_| r.series(&mut pairs).map(|_| ()))
                .and_then(|_| r.count("samples", 10).map(|_| ()));
            assert!(result.is_err(), "cut at {cut}");
        }
        assert!(
            Reader::new(b"\x0a\x00")
                .unwrap_err()
                .contains("unknown format")
        );
    }

    #[test]
    fn a_compressed_message_reads_as_the_plain_one() {
        let build = || {
            let mut b = MessageBuilder::default();
            for i in 0..100 {
                let tags = TagMap::from_pairs([
                    ("name", "requests".to_string()),
                    ("node", format!("i-{i}")),
                ]);
                let mut encoded = Vec::new();
                put_series(&mut encoded, &tags, DsType::Rate);
                let s = b.add_series(&encoded);
                b.add_sample(s, 1_700_000_000_000, f64::from(i));
            }
            b
        };
        let plain = build().finish();
        let compressed = build().finish_compressed(&mut Vec::new());
        assert!(
            compressed.len() * 2 < plain.len(),
            "{} vs {}",
            compressed.len(),
            plain.len()
        );
        let mut scratch = Vec::new();
        assert_eq!(body(&compressed, &mut scratch).unwrap(), &plain[..]);
        assert_eq!(body(&plain, &mut Vec::new()).unwrap(), &plain[..]);
        // Cut or forged, it is an error.
        let cut = &compressed[..compressed.len() / 2];
        assert!(body(cut, &mut scratch).is_err());
        let forged = [FORMAT_SNAPPY, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(body(&forged, &mut scratch).unwrap_err().contains("claims"));
    }
}
