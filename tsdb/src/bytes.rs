//! Little helpers for the store's byte formats: LEB128 varints, zigzag, and a bounds-checked
//! reader whose every failure names what it was reading and where.

use crate::error::{Error, Result};

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it; `None` when truncated or longer than 64 bits.
#[inline]
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
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

#[inline(always)]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline(always)]
pub(crate) fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a record or section payload; `what` names the structure in errors.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn corrupt(&self, field: &str) -> Error {
        Error::Corrupt(format!(
            "{}: truncated or invalid {field} at byte {}",
            self.what, self.pos
        ))
    }

    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.corrupt(field))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub(crate) fn i64(&mut self, field: &str) -> Result<i64> {
        Ok(self.u64(field)? as i64)
    }

    pub(crate) fn f64(&mut self, field: &str) -> Result<f64> {
        Ok(f64::from_bits(self.u64(field)?))
    }

    pub(crate) fn varint(&mut self, field: &str) -> Result<u64> {
        get_varint(self.buf, &mut self.pos).ok_or_else(|| self.corrupt(field))
    }

    /// A varint used as a count or length: refused when larger than the bytes left, so a
    /// corrupt count cannot make a caller allocate without limit.
    pub(crate) fn len(&mut self, field: &str) -> Result<usize> {
        let n = self.varint(field)?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(self.corrupt(field));
        }
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<&'a [u8]> {
        let n = self.len(field)?;
        self.take(n, field)
    }

    pub(crate) fn str(&mut self, field: &str) -> Result<&'a str> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map_err(|_| self.corrupt(field))
    }
}
