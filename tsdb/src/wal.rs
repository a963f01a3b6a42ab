//! Framed, checksummed files: the write-ahead log's segments and, with the same framing, the
//! snapshot's sections. The layouts are drawn in `docs/format/` and ARCHITECTURE.md.
//!
//! A segment is a 24-byte header (`ARGUSWAL`, version, segment number, CRC) followed by
//! records. A record is `mark u32 | len u32 | crc u32 | kind u8 | payload[len]`, the CRC
//! (CRC-32, IEEE) covering `len`, `kind` and the payload. The fixed mark lets a reader find
//! the next record after damaged bytes, so one bad record does not cost the good ones after
//! it; a torn tail (a crash mid-write) is cut at the last good record.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"ARGUSWAL";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: usize = 24;
/// "ARGr" read as a little-endian u32: starts every record.
pub(crate) const RECORD_MARK: u32 = u32::from_le_bytes(*b"ARGr");
pub(crate) const RECORD_HEADER_LEN: usize = 13;
/// Largest record a reader accepts: a bigger length is damage, not a record.
pub(crate) const MAX_RECORD: usize = 1 << 30;

pub(crate) fn crc_of(len: u32, kind: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(&[kind]);
    h.update(payload);
    h.finalize()
}

/// Appends one framed record to `out`, its payload written by `payload`.
pub(crate) fn frame(out: &mut Vec<u8>, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MARK.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.push(kind);
    payload(out);
    let len = (out.len() - start - RECORD_HEADER_LEN) as u32;
    let crc = crc_of(len, kind, &out[start + RECORD_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// A record framed ahead of its write, outside the log's lock, whose payload starts with a
/// u64 log sequence number that is only known under the lock: [`Prepared::stamp`] writes it
/// and completes the CRC from the rest of the payload's, which is computed here, so the work
/// under the lock does not grow with the record.
pub(crate) struct Prepared {
    pub(crate) buf: Vec<u8>,
    rest: crc32fast::Hasher,
}

impl Prepared {
    /// Frames a record of `kind` whose payload is a u64 sequence number (stamped later)
    /// followed by what `rest` writes; reuses `buf`.
    pub(crate) fn new(mut buf: Vec<u8>, kind: u8, rest: impl FnOnce(&mut Vec<u8>)) -> Self {
        buf.clear();
        buf.extend_from_slice(&RECORD_MARK.to_le_bytes());
        buf.extend_from_slice(&[0; 8]);
        buf.push(kind);
        buf.extend_from_slice(&[0; 8]);
        rest(&mut buf);
        let len = (buf.len() - RECORD_HEADER_LEN) as u32;
        buf[4..8].copy_from_slice(&len.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&buf[RECORD_HEADER_LEN + 8..]);
        Prepared { buf, rest: hasher }
    }

    fn stamp(&mut self, lsn: u64) {
        let at = RECORD_HEADER_LEN;
        self.buf[at..at + 8].copy_from_slice(&lsn.to_le_bytes());
        let mut h = crc32fast::Hasher::new();
        h.update(&self.buf[4..8]);
        h.update(&self.buf[12..at + 8]);
        h.combine(&self.rest);
        let crc = h.finalize();
        self.buf[8..12].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The record at `pos`, if a whole valid one starts there: (kind, payload, end).
pub(crate) fn record_at(buf: &[u8], pos: usize) -> Option<(u8, &[u8], usize)> {
    let head = buf.get(pos..pos.checked_add(RECORD_HEADER_LEN)?)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if word(0) != RECORD_MARK {
        return None;
    }
    let len = word(4);
    if len as usize > MAX_RECORD {
        return None;
    }
    let kind = head[12];
    let start = pos + RECORD_HEADER_LEN;
    let end = start.checked_add(len as usize)?;
    let payload = buf.get(start..end)?;
    (crc_of(len, kind, payload) == word(8)).then_some((kind, payload, end))
}

/// The next position after `from` where a whole valid record starts.
fn resync(buf: &[u8], from: usize) -> Option<usize> {
    let mark = RECORD_MARK.to_le_bytes();
    let mut pos = from;
    while pos + RECORD_HEADER_LEN <= buf.len() {
        let next = buf[pos..].windows(4).position(|w| w == mark)? + pos;
        if record_at(buf, next).is_some() {
            return Some(next);
        }
        pos = next + 1;
    }
    None
}

/// What reading a run of framed records found.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) records: u64,
    /// Where the good records end when the tail is damaged (the file should be cut there).
    pub(crate) torn_at: Option<usize>,
    /// Human-readable damage: what, and at which bytes.
    pub(crate) damage: Vec<String>,
}

/// Reads the records of `buf[from..]`, handing each good one to `f`. Damaged bytes between
/// good records are skipped and reported; damage at the end is reported as a torn tail.
/// An error from `f` (a record that frames correctly but does not decode) is reported as
/// damage, and reading goes on.
pub(crate) fn scan_records(
    buf: &[u8],
    from: usize,
    f: &mut dyn FnMut(u8, &[u8]) -> Result<()>,
) -> Scan {
    let mut scan = Scan::default();
    let mut pos = from;
    while pos < buf.len() {
        if let Some((kind, payload, end)) = record_at(buf, pos) {
            if let Err(e) = f(kind, payload) {
                scan.damage
                    .push(format!("record at byte {pos} skipped: {e}"));
            }
            scan.records += 1;
            pos = end;
            continue;
        }
        match resync(buf, pos + 1) {
            Some(next) => {
                scan.damage.push(format!(
                    "bytes {pos}..{next} are not valid records ({} bytes skipped)",
                    next - pos
                ));
                pos = next;
            }
            None => {
                scan.damage.push(format!(
                    "torn or damaged tail: bytes {pos}..{} dropped",
                    buf.len()
                ));
                scan.torn_at = Some(pos);
                break;
            }
        }
    }
    scan
}

pub(crate) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.wal"))
}

/// Files in `dir` named `<number><suffix>` (segments, snapshots), by number, ascending.
pub(crate) fn numbered_files(dir: &Path, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let number = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(suffix))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = number {
            out.push((n, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The segments in `dir`, by number.
pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    numbered_files(dir, ".wal")
}

pub(crate) fn segment_header(segment: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&segment.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a segment's header; the reason when it is not one this version wrote.
pub(crate) fn check_segment_header(buf: &[u8], segment: u64) -> std::result::Result<(), String> {
    let Some(h) = buf.get(..SEGMENT_HEADER_LEN) else {
        return Err(format!(
            "{} bytes, shorter than a segment header",
            buf.len()
        ));
    };
    if &h[..8] != SEGMENT_MAGIC {
        return Err("not a write-ahead log segment (bad magic)".into());
    }
    if h != segment_header(segment) {
        let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if version != FORMAT_VERSION {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            ));
        }
        return Err("header checksum or segment number does not match".into());
    }
    Ok(())
}

pub(crate) fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Unavailable(format!("{what} {}: {e}", path.display()))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// When the log is forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalSync {
    /// Before every acknowledgement: nothing acknowledged is lost even on power loss.
    EveryWrite,
    /// By [`crate::Store::sync_wal`], which the owner calls on a timer: a `kill -9` loses
    /// nothing (the kernel has the pages), power loss at most one interval.
    Periodic,
}

/// Counters of the log, for the server's metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub segment: u64,
    pub bytes_written: u64,
    pub records_written: u64,
    pub write_errors: u64,
    pub syncs: u64,
}

/// The most a log writer's buffers keep between writes.
const KEPT_BUFFER: usize = 64 << 10;

/// Appends records to the current segment. Lives behind the store's log lock.
pub(crate) struct WalWriter {
    dir: PathBuf,
    file: File,
    segment: u64,
    /// Bytes of the current segment that hold whole records (where the next one goes).
    len: u64,
    segment_limit: u64,
    next_lsn: u64,
    /// Framed records that must precede the next write (new series' definitions): written
    /// with it, in one system call, or not at all.
    pending: Vec<u8>,
    buf: Vec<u8>,
    unsynced: bool,
    sync: WalSync,
    pub(crate) stats: WalStats,
}

impl WalWriter {
    /// Starts segment `segment` (which must not exist) in `dir`.
    pub(crate) fn create(
        dir: &Path,
        segment: u64,
        next_lsn: u64,
        sync: WalSync,
        segment_limit: u64,
    ) -> Result<Self> {
        let file = new_segment(dir, segment)?;
        Ok(WalWriter {
            dir: dir.to_path_buf(),
            file,
            segment,
            len: SEGMENT_HEADER_LEN as u64,
            segment_limit,
            next_lsn,
            pending: Vec::new(),
            buf: Vec::new(),
            unsynced: false,
            sync,
            stats: WalStats {
                segment,
                ..WalStats::default()
            },
        })
    }

    /// Takes the next log sequence number.
    pub(crate) fn take_lsn(&mut self) -> u64 {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        lsn
    }

    pub(crate) fn peek_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Queues a record to go out with the next write.
    pub(crate) fn push_pending(&mut self, kind: u8, payload: impl FnOnce(&mut Vec<u8>)) {
        frame(&mut self.pending, kind, payload);
    }

    /// Stamps `record` with `lsn` and writes it after the pending records, all or nothing.
    pub(crate) fn write_prepared(&mut self, record: &mut Prepared, lsn: u64) -> Result<()> {
        record.stamp(lsn);
        if self.pending.is_empty() {
            return self.write_bytes(&record.buf);
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&self.pending);
        buf.extend_from_slice(&record.buf);
        let written = self.write_bytes(&buf);
        // Series definitions come in bursts (a new fleet's first requests) and are rare
        // after: their buffers are not kept at a burst's size (1.25 MB, 63 bytes per series,
        // on the peer load).
        if buf.capacity() > KEPT_BUFFER {
            buf = Vec::new();
        }
        if self.pending.is_empty() && self.pending.capacity() > KEPT_BUFFER {
            self.pending = Vec::new();
        }
        self.buf = buf;
        written
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let path = || segment_path(&self.dir, self.segment);
        let mut result = self.file.write_all(bytes);
        if result.is_ok() && self.sync == WalSync::EveryWrite {
            result = self.file.sync_data();
            self.stats.syncs += 1;
        }
        if let Err(e) = result {
            self.stats.write_errors += 1;
            // Cut back a partial write so the segment ends on a whole record; if even
            // that fails, the reader cuts the torn tail at the next start.
            let _ = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            return Err(io_error("appending to the write-ahead log", &path(), e));
        }
        self.len += bytes.len() as u64;
        self.pending.clear();
        self.unsynced = self.sync != WalSync::EveryWrite;
        self.stats.bytes_written += bytes.len() as u64;
        self.stats.records_written += 1;
        if self.len >= self.segment_limit {
            // A full segment that cannot be followed (no space for a new file) keeps
            // growing; the next write tries again.
            let _ = self.rotate();
        }
        Ok(())
    }

    /// Closes the current segment (synced) and starts the next; returns its number.
    pub(crate) fn rotate(&mut self) -> Result<u64> {
        let old = segment_path(&self.dir, self.segment);
        self.file
            .sync_data()
            .map_err(|e| io_error("syncing", &old, e))?;
        let next = self.segment + 1;
        self.file = new_segment(&self.dir, next)?;
        self.segment = next;
        self.len = SEGMENT_HEADER_LEN as u64;
        self.unsynced = false;
        self.stats.segment = next;
        Ok(next)
    }

    /// A handle to sync outside the lock, if anything was written since the last sync.
    pub(crate) fn take_unsynced(&mut self) -> Option<io::Result<File>> {
        if !self.unsynced {
            return None;
        }
        self.unsynced = false;
        self.stats.syncs += 1;
        Some(self.file.try_clone())
    }
}

fn new_segment(dir: &Path, segment: u64) -> Result<File> {
    let path = segment_path(dir, segment);
    let created = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        f.write_all(&segment_header(segment))?;
        f.sync_data()?;
        sync_dir(dir)?;
        Ok(f)
    })();
    created.map_err(|e: io::Error| {
        // Leave no header-less file behind for the next start to report.
        let _ = std::fs::remove_file(&path);
        io_error("starting write-ahead log segment", &path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(payloads: &[&[u8]]) -> Vec<u8> {
        let mut buf = segment_header(7).to_vec();
        for p in payloads {
            frame(&mut buf, 2, |out| out.extend_from_slice(p));
        }
        buf
    }

    fn read_all(buf: &[u8]) -> (Vec<Vec<u8>>, Scan) {
        let mut got = Vec::new();
        let scan = scan_records(buf, SEGMENT_HEADER_LEN, &mut |_, p| {
            got.push(p.to_vec());
            Ok(())
        });
        (got, scan)
    }

    #[test]
    fn a_prepared_record_reads_back_like_a_framed_one() {
        let mut framed = Vec::new();
        frame(&mut framed, 2, |p| {
            p.extend_from_slice(&77u64.to_le_bytes());
            p.extend_from_slice(b"payload after the lsn");
        });
        let mut prepared = Prepared::new(Vec::new(), 2, |p| {
            p.extend_from_slice(b"payload after the lsn")
        });
        prepared.stamp(77);
        assert_eq!(prepared.buf, framed);
        assert!(record_at(&prepared.buf, 0).is_some());
    }

    #[test]
    fn records_read_back() {
        let buf = records(&[b"one", b"", b"three"]);
        assert_eq!(check_segment_header(&buf, 7), Ok(()));
        assert!(check_segment_header(&buf, 8).is_err());
        let (got, scan) = read_all(&buf);
        assert_eq!(got, vec![b"one".to_vec(), vec![], b"three".to_vec()]);
        assert!(scan.damage.is_empty() && scan.torn_at.is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_good_record() {
        let buf = records(&[b"one", b"two"]);
        for cut in SEGMENT_HEADER_LEN + 1..buf.len() {
            let (got, scan) = read_all(&buf[..cut]);
            let first_end = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 3;
            let expect = usize::from(cut >= first_end);
            assert_eq!(got.len(), expect, "cut at {cut}");
            let torn = match cut {
                c if c == first_end => None,
                c if c > first_end => Some(first_end),
                _ => Some(SEGMENT_HEADER_LEN),
            };
            assert_eq!(scan.torn_at, torn, "cut at {cut}");
        }
    }

    #[test]
    fn damage_in_the_middle_skips_only_the_damaged_record() {
        let buf = records(&[b"first record", b"second record", b"third record"]);
        let second = SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 12;
        for offset in 0..RECORD_HEADER_LEN + 13 {
            let mut bad = buf.clone();
            bad[second + offset] ^= 0x40;
            let (got, scan) = read_all(&bad);
            assert_eq!(
                got,
                vec![b"first record".to_vec(), b"third record".to_vec()],
                "flip at {offset}"
            );
            assert_eq!(scan.damage.len(), 1);
            assert!(scan.torn_at.is_none());
        }
    }
}
