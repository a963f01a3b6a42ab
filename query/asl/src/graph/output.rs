//! The text output formats of the graph API, in Atlas's exact shapes: `json` / `std.json`,
//! `stats.json`, `csv` and `txt`. Numbers print as Java does (`42.0`, `1.0E7`), non-finite
//! numbers as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` in JSON.

use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::{GraphResult, ResultSeries};
use crate::numfmt::{write_fixed6, write_java_double};
use crate::time::format_duration;

/// Whether `text` holds a byte JSON escapes: a control character, `"` or `\\`.
fn needs_escape(text: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Some byte of `w` below 0x20 (or zero) leaves a high bit set here, and none is left
    // when no byte is: the classic test errs only in bytes above one that is.
    let below_space = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let special = |w: u64| below_space(w) | zero(w ^ (ONES * 0x22)) | zero(w ^ (ONES * 0x5c));
    let Some(last) = text.last_chunk::<8>() else {
        return text.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    };
    let (words, _) = text.as_chunks::<8>();
    words
        .iter()
        .chain(std::iter::once(last))
        .any(|w| special(u64::from_ne_bytes(*w)) != 0)
}

/// Appends a JSON string, escaped as serde_json escapes it: `"` and `\\`, the usual short
/// escapes for control characters and `\u00XX` for the others; everything else as it is.
fn json_str(out: &mut String, s: &str) {
    out.push('"');
    // Tag keys and values rarely need escaping: checked a word at a time (a q4 answer's
    // legend and tags are 220 KB, written before any value).
    if !needs_escape(s.as_bytes()) {
        out.push_str(s);
        out.push('"');
        return;
    }
    let mut plain = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..0x20 => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(short);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

/// Appends a JSON number as Java prints it, or a quoted non-finite value.
fn json_number(out: &mut String, v: f64) {
    if v.is_finite() {
        write_java_double(out, v);
    } else {
        out.push('"');
        write_java_double(out, v);
        out.push('"');
    }
}

/// A line's tags as Atlas lists them: sorted, with `atlas.offset` (in place of any tag of
/// that name).
fn metrics(out: &mut String, s: &ResultSeries) {
    const OFFSET: &str = "atlas.offset";
    let offset = format_duration(s.offset_ms);
    let mut pending = Some(offset.as_str());
    let mut first = true;
    let mut pair = |out: &mut String, k: &str, v: &str| {
        if !first {
            out.push(',');
        }
        first = false;
        json_str(out, k);
        out.push(':');
        json_str(out, v);
    };
    out.push('{');
    // The tags are sorted: the offset goes before the first key after it.
    for (k, v) in s.tags.iter().filter(|(k, _)| *k != OFFSET) {
        if k > OFFSET
            && let Some(o) = pending.take()
        {
            pair(out, OFFSET, o);
        }
        pair(out, k, v);
    }
    if let Some(o) = pending {
        pair(out, OFFSET, o);
    }
    out.push('}');
}

fn header(out: &mut String, r: &GraphResult) {
    out.push_str("\"legend\":[");
    for (i, s) in r.series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, &s.label);
    }
    out.push_str("],\"metrics\":[");
    for (i, s) in r.series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        metrics(out, s);
    }
    out.push(']');
}

fn notices(out: &mut String, r: &GraphResult) {
    out.push_str(",\"notices\":[");
    for (i, n) in r.notices.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, n);
    }
    out.push_str("]}");
}

/// Parts of a `json` answer from which a second thread prints every other part: a thread
/// costs tens of microseconds, a part of 256 KiB about half a millisecond.
const PARALLEL_JSON_PARTS: usize = 4;

/// A buffer handed back for the next part, emptied, with room for one.
fn reuse(mut buffer: Vec<u8>, capacity: usize) -> Vec<u8> {
    buffer.clear();
    buffer.reserve(capacity);
    buffer
}

/// Appends `text` of `W` to `2 * W` bytes as two copies of `W` bytes that overlap: fixed-size
/// loads and stores instead of a call to copy a length known only now (a number's digits).
/// `false`, appending nothing, for another length.
#[inline(always)]
fn push_overlapped<const W: usize>(out: &mut Vec<u8>, text: &[u8]) -> bool {
    let (Some(head), Some(tail)) = (text.first_chunk::<W>(), text.last_chunk::<W>()) else {
        return false;
    };
    if text.len() > 2 * W {
        return false;
    }
    let at = out.len();
    out.extend_from_slice(head);
    out.truncate(at + text.len() - W);
    out.extend_from_slice(tail);
    true
}

/// Appends a number's text (at most 24 bytes as zmij prints it; q4's rates print 15 to 18).
#[inline(always)]
fn push_digits(out: &mut Vec<u8>, text: &str) {
    let text = text.as_bytes();
    if !(push_overlapped::<16>(out, text)
        || push_overlapped::<8>(out, text)
        || push_overlapped::<4>(out, text))
    {
        out.extend_from_slice(text);
    }
}

/// Numbers printed before the first of them is copied into the text. A number's digits
/// read right after zmij stored them wait for those stores (they cannot be forwarded to one
/// wide load): two fifths of the time of `graph_json/q4_by_node`, where zmij is inlined,
/// and a tenth of q4's printing in the server. Seven numbers later they are in the cache.
const PRINTED_AHEAD: usize = 8;

/// Batches of [`PRINTED_AHEAD`] lines whose values of a row are fetched ahead of printing.
const VALUES_FETCHED_AHEAD: usize = 2;

/// Rows `rows` of `values`, each `[v,v,...]`, a comma before every row but the first.
fn write_rows(out: &mut Vec<u8>, columns: &[&[f64]], rows: std::ops::Range<usize>) {
    let mut buffers: [zmij::Buffer; PRINTED_AHEAD] = std::array::from_fn(|_| zmij::Buffer::new());
    let mut other = String::new();
    for row in rows {
        if row > 0 {
            out.push(b',');
        }
        out.push(b'[');
        for (batch_no, batch) in columns.chunks(PRINTED_AHEAD).enumerate() {
            // A row reads one value of each line, each on its own page: the values of lines
            // further on are fetched while these print (at 10,000 lines, 14 MB of rows,
            // waiting for each load was half of this function's time).
            let ahead = (batch_no + VALUES_FETCHED_AHEAD) * PRINTED_AHEAD;
            for column in columns.iter().skip(ahead).take(PRINTED_AHEAD) {
                argus_tsdb::prefetch::line(column.as_ptr().wrapping_add(row));
            }
            let value = |column: &[f64]| column.get(row).copied().unwrap_or(f64::NAN);
            // The plain range, where Java and zmij print the same digits, printed here; the
            // rest (and non-finite values) through `json_number` below.
            let mut texts = [""; PRINTED_AHEAD];
            for ((text, buffer), column) in texts.iter_mut().zip(&mut buffers).zip(batch) {
                let v = value(column);
                if (1e-3..1e7).contains(&v.abs()) {
                    *text = buffer.format_finite(v);
                }
            }
            for (i, (text, column)) in texts.iter().zip(batch).enumerate() {
                if batch_no + i > 0 {
                    out.push(b',');
                }
                if text.is_empty() {
                    other.clear();
                    json_number(&mut other, value(column));
                    out.extend_from_slice(other.as_bytes());
                } else {
                    push_digits(out, text);
                }
            }
        }
        out.push(b']');
    }
}

/// The parts of `json`'s values, the even ones printed here (the first after what `start`
/// writes, while the second thread prints the second part) and the odd ones on a second
/// thread, emitted in order. Returns the last part, not yet emitted, or `None` when `emit`
/// stopped the writing.
fn write_parts_on_two_threads(
    columns: &[&[f64]],
    parts: usize,
    rows_of: &(dyn Fn(usize) -> std::ops::Range<usize> + Sync),
    capacity: usize,
    start: &dyn Fn(&mut Vec<u8>),
    mut out: Vec<u8>,
    emit: &mut dyn FnMut(Vec<u8>) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    std::thread::scope(|scope| {
        // One odd part printed ahead at most; sent buffers go back to the second thread.
        let (odd_tx, odd_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let (spare_tx, spare_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
        let second = scope.spawn(move || {
            for part in (1..parts).step_by(2) {
                let mut buffer = reuse(spare_rx.try_recv().unwrap_or_default(), capacity);
                write_rows(&mut buffer, columns, rows_of(part));
                // Fails when the writing stopped: nothing more to print.
                if odd_tx.send(buffer).is_err() {
                    return;
                }
            }
        });
        start(&mut out);
        let mut part = 0;
        let last = loop {
            write_rows(&mut out, columns, rows_of(part));
            if part + 1 == parts {
                break Some(out);
            }
            let Some(mine) = emit(std::mem::take(&mut out)) else {
                break None;
            };
            // An error here means the second thread failed: the answer stays unfinished.
            let Ok(odd) = odd_rx.recv() else {
                break None;
            };
            if part + 2 == parts {
                break Some(odd);
            }
            let Some(theirs) = emit(odd) else {
                break None;
            };
            let _ = spare_tx.try_send(theirs);
            out = reuse(mine, capacity);
            part += 2;
        };
        // Unblocks a second thread waiting to hand over a part, then waits for it; joined
        // here, its failure (a bug) ends this answer rather than the thread serving it.
        drop(odd_rx);
        let failed = second.join().is_err();
        if failed { None } else { last }
    })
}

impl GraphResult {
    /// The response body in the request's format.
    pub fn render(&self, req: &super::GraphRequest) -> Vec<u8> {
        let tz = req.timezones.first().cloned().unwrap_or(TimeZone::UTC);
        match req.format {
            super::Format::Json | super::Format::StdJson => self.atlas_json_bytes(),
            super::Format::StatsJson => self.to_stats_json().into_bytes(),
            super::Format::Csv => self.to_separated(',', &tz).into_bytes(),
            super::Format::Txt => self.to_separated('\t', &tz).into_bytes(),
            super::Format::Png => super::png::render(self, req),
            super::Format::V2Json => self.to_v2_json(req).into_bytes(),
        }
    }

    /// Atlas's `v2.json` (atlas-chart's JsonCodec): an array of typed objects, in order a
    /// `graph-image` (the PNG as a data URI, left out with the hint `no-image`), the
    /// `graph-metadata`, a `plot-metadata` per y-axis in use, then a `timeseries` per line
    /// with its plot, color (`AARRGGBB` in hex), style and width. What a browser needs to
    /// draw the graph as the PNG draws it.
    pub fn to_v2_json(&self, req: &super::GraphRequest) -> String {
        use super::{Bound, Layout, LineStyle, Scale, Theme, TickLabels};
        let image = &req.image;
        let rows = self.rows();
        let mut out = String::with_capacity(1024 + rows * self.series.len() * 12);
        out.push('[');
        if !image.hints.iter().any(|h| h == "no-image") {
            out.push_str("{\"type\":\"graph-image\",\"data\":\"data:image/png;base64,");
            base64_into(&mut out, &super::png::render(self, req));
            out.push_str("\"},");
        }
        let layout = match image.layout {
            Layout::Canvas => "CANVAS",
            Layout::Image => "IMAGE",
            Layout::ImageWidth => "FIXED_WIDTH",
            Layout::ImageHeight => "FIXED_HEIGHT",
        };
        let legend = if image.no_legend {
            "OFF"
        } else if image.no_legend_stats {
            "LABELS_ONLY"
        } else {
            "LABELS_WITH_STATS"
        };
        let _ = write!(
            out,
            "{{\"type\":\"graph-metadata\",\"startTime\":{},\"endTime\":{},\"timezones\":[",
            self.start_ms,
            self.start_ms + rows as i64 * self.step_ms
        );
        for (i, tz) in req.tz_names.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, tz);
        }
        let _ = write!(
            out,
            "],\"step\":{},\"width\":{},\"height\":{},\"layout\":\"{layout}\",\"zoom\":",
            self.step_ms, image.width, image.height
        );
        json_number(&mut out, image.zoom);
        if let Some(title) = &image.title {
            out.push_str(",\"title\":");
            json_str(&mut out, title);
        }
        let theme = match image.theme {
            Theme::Light => "light",
            Theme::Dark => "dark",
        };
        let _ = write!(
            out,
            ",\"legendType\":\"{legend}\",\"onlyGraph\":{},\"theme\":\"{theme}\",\"warnings\":[",
            image.only_graph
        );
        for (i, n) in self.notices.iter().chain(&image.notices).enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(&mut out, n);
        }
        out.push(']');
        if !image.hints.is_empty() {
            out.push_str(",\"renderingHints\":[");
            for (i, h) in image.hints.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(&mut out, h);
            }
            out.push(']');
        }
        out.push('}');
        // As Atlas does, a plot per y-axis in use, numbered in axis order.
        let mut axes: Vec<usize> = self.series.iter().map(|s| s.axis).collect();
        axes.sort_unstable();
        axes.dedup();
        if axes.is_empty() {
            axes.push(0);
        }
        let bound = |b: Bound| match b {
            Bound::AutoStyle => "auto-style".to_string(),
            Bound::AutoData => "auto-data".to_string(),
            Bound::Explicit(v) => {
                let mut s = String::new();
                write_java_double(&mut s, v);
                s
            }
        };
        for (id, axis) in axes.iter().enumerate() {
            let params = image.axes.get(*axis).cloned().unwrap_or_default();
            let _ = write!(out, ",{{\"type\":\"plot-metadata\",\"id\":{id}");
            if let Some(label) = &params.ylabel {
                out.push_str(",\"ylabel\":");
                json_str(&mut out, label);
            }
            let scale = match params.scale {
                Scale::Linear => "LINEAR",
                Scale::Log => "LOGARITHMIC",
                Scale::LogLinear => "LOG_LINEAR",
                Scale::Pow2 => "POWER_2",
                Scale::Sqrt => "SQUARE_ROOT",
            };
            let ticks = match params.tick_labels {
                TickLabels::Off => "OFF",
                TickLabels::Decimal => "DECIMAL",
                TickLabels::Binary => "BINARY",
                TickLabels::Duration => "DURATION",
            };
            let _ = write!(
                out,
                ",\"scale\":\"{scale}\",\"upper\":\"{}\",\"lower\":\"{}\",\"tickLabelMode\":\"{ticks}\"}}",
                bound(params.upper),
                bound(params.lower)
            );
        }
        for s in &self.series {
            let plot = axes.iter().position(|a| *a == s.axis).unwrap_or(0);
            let style = match s.style {
                LineStyle::Line => "LINE",
                LineStyle::Area => "AREA",
                LineStyle::Stack => "STACK",
                LineStyle::VSpan => "VSPAN",
                LineStyle::Heatmap => "HEATMAP",
            };
            let _ = write!(out, ",{{\"type\":\"timeseries\",\"plot\":{plot},\"label\":");
            json_str(&mut out, &s.label);
            let _ = write!(
                out,
                ",\"color\":\"{:08x}\",\"lineStyle\":\"{style}\",\"lineWidth\":",
                s.color
            );
            json_number(&mut out, f64::from(s.line_width));
            out.push_str(",\"query\":");
            json_str(&mut out, &s.query);
            if !s.group_by_keys.is_empty() {
                out.push_str(",\"groupByKeys\":[");
                for (i, k) in s.group_by_keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    json_str(&mut out, k);
                }
                out.push(']');
            }
            out.push_str(",\"tags\":");
            metrics(&mut out, s);
            out.push_str(",\"data\":{\"type\":\"array\",\"values\":[");
            for row in 0..rows {
                if row > 0 {
                    out.push(',');
                }
                json_number(&mut out, s.values.get(row).copied().unwrap_or(f64::NAN));
            }
            out.push_str("]}}");
        }
        out.push(']');
        out
    }

    /// Rows of the answer: the longest line's steps.
    pub fn rows(&self) -> usize {
        self.series
            .iter()
            .map(|s| s.values.len())
            .max()
            .unwrap_or(0)
    }

    /// Atlas's `json` (and `std.json`): `{"start", "step", "legend", "metrics", "values",
    /// "notices"}`, `values` holding one row per timestamp with one value per line.
    pub fn to_atlas_json(&self) -> String {
        // Only text was written into the bytes: the check cannot fail.
        String::from_utf8(self.atlas_json_bytes())
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// [`GraphResult::to_atlas_json`] as the bytes it is sent as.
    pub fn atlas_json_bytes(&self) -> Vec<u8> {
        let mut whole = Vec::new();
        self.write_atlas_json(usize::MAX, &mut |part| {
            whole = part;
            Some(Vec::new())
        });
        whole
    }

    /// Atlas's `json` handed to `emit` in parts of about `part_bytes` (the last may be
    /// shorter), so a server can send a large answer while it is still being written, from
    /// a few buffers instead of one of several megabytes. `emit` gives back the buffer to
    /// write the next part into (a part already sent, for one, so that its pages are reused),
    /// or `None` to stop early (the client went away). An answer of many parts is printed
    /// on two threads, the second printing every other part.
    pub fn write_atlas_json(
        &self,
        part_bytes: usize,
        emit: &mut dyn FnMut(Vec<u8>) -> Option<Vec<u8>>,
    ) {
        let rows = self.rows();
        // Rates and averages print 15 to 18 characters; sized for that, a part is written
        // once instead of growing and being copied.
        let row_bytes = (self.series.len() * 18).max(1);
        let whole = 256 + rows * row_bytes;
        let capacity = whole.min(part_bytes.saturating_add(256));
        let rows_per_part = (part_bytes / row_bytes).max(1);
        let parts = rows.div_ceil(rows_per_part).max(1);
        let rows_of = |part: usize| part * rows_per_part..((part + 1) * rows_per_part).min(rows);
        let columns: Vec<&[f64]> = self.series.iter().map(|s| s.values.as_slice()).collect();
        let start = |out: &mut Vec<u8>| {
            let mut text = String::new();
            let _ = write!(
                text,
                "{{\"start\":{},\"step\":{},",
                self.start_ms, self.step_ms
            );
            header(&mut text, self);
            text.push_str(",\"values\":[");
            out.extend_from_slice(text.as_bytes());
        };
        let mut out = Vec::with_capacity(capacity);
        let finished = if parts >= PARALLEL_JSON_PARTS {
            write_parts_on_two_threads(&columns, parts, &rows_of, capacity, &start, out, emit)
        } else {
            start(&mut out);
            let mut part = 0;
            loop {
                write_rows(&mut out, &columns, rows_of(part));
                part += 1;
                if part == parts {
                    break Some(out);
                }
                let Some(next) = emit(std::mem::take(&mut out)) else {
                    break None;
                };
                out = reuse(next, capacity);
            }
        };
        if let Some(mut last) = finished {
            let mut text = String::from("]");
            notices(&mut text, self);
            last.extend_from_slice(text.as_bytes());
            emit(last);
        }
    }

    /// Atlas's `stats.json`: the window and, per line, count, avg, total, max, min, last.
    pub fn to_stats_json(&self) -> String {
        let end = self.start_ms + self.rows() as i64 * self.step_ms;
        let mut out = String::with_capacity(256 + self.series.len() * 120);
        let _ = write!(
            out,
            "{{\"start\":{},\"end\":{end},\"step\":{},",
            self.start_ms, self.step_ms
        );
        header(&mut out, self);
        out.push_str(",\"stats\":[");
        for (i, s) in self.series.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let st = s.stats();
            let _ = write!(out, "{{\"count\":{},\"avg\":", st.count);
            json_number(&mut out, st.avg());
            out.push_str(",\"total\":");
            json_number(&mut out, st.total);
            out.push_str(",\"max\":");
            json_number(&mut out, st.max);
            out.push_str(",\"min\":");
            json_number(&mut out, st.min);
            out.push_str(",\"last\":");
            json_number(&mut out, st.last);
            out.push('}');
        }
        out.push(']');
        notices(&mut out, self);
        out
    }

    /// Atlas's `csv` (`sep = ','`) and `txt` (`sep = '\t'`): a quoted header, then one row per
    /// timestamp (ISO-8601 in `tz`) with `%f` values.
    pub fn to_separated(&self, sep: char, tz: &TimeZone) -> String {
        let rows = self.rows();
        let mut out = String::with_capacity(64 + rows * (26 + self.series.len() * 12));
        out.push_str("\"timestamp\"");
        for s in &self.series {
            out.push(sep);
            out.push('"');
            out.push_str(&s.label);
            out.push('"');
        }
        out.push('\n');
        for row in 0..rows {
            let t = self.start_ms + row as i64 * self.step_ms;
            out.push_str(&iso_timestamp(t, tz));
            for s in &self.series {
                out.push(sep);
                write_fixed6(&mut out, s.values.get(row).copied().unwrap_or(f64::NAN));
            }
            out.push('\n');
        }
        out
    }
}

/// Appends `bytes` in standard base64 with padding (RFC 4648), for the PNG's data URI.
fn base64_into(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
}

/// Java's `ISO_OFFSET_DATE_TIME` of `t_ms` in `tz`: `2012-01-01T08:56:00Z`,
/// `2012-01-01T00:56:00-08:00`; seconds always, a fraction only when not zero.
pub(crate) fn iso_timestamp(t_ms: i64, tz: &TimeZone) -> String {
    let Ok(ts) = jiff::Timestamp::from_millisecond(t_ms) else {
        return t_ms.to_string();
    };
    let offset = tz.to_offset(ts);
    let dt = offset.to_datetime(ts);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        dt.month(),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    let ms = dt.millisecond();
    if ms != 0 {
        let _ = write!(out, ".{ms:03}");
    }
    let secs = offset.seconds();
    if secs == 0 {
        out.push('Z');
    } else {
        let sign = if secs < 0 { '-' } else { '+' };
        let abs = secs.unsigned_abs();
        let _ = write!(out, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60);
        if !abs.is_multiple_of(60) {
            let _ = write!(out, ":{:02}", abs % 60);
        }
    }
    out
}

#[cfg(test)]
mod base64_tests {
    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let mut out = String::new();
            super::base64_into(&mut out, plain.as_bytes());
            assert_eq!(out, encoded, "{plain:?}");
        }
    }
}

#[cfg(test)]
mod json_text_tests {
    use argus_tsdb::TagMap;

    use super::{ResultSeries, json_str, metrics, needs_escape, push_digits};

    /// Every byte value at every position of strings up to 24 bytes, among plain ASCII and
    /// among non-ASCII bytes: found exactly when JSON escapes it.
    #[test]
    fn bytes_to_escape_are_found_wherever_they_are() {
        for background in [b'a', 0xff] {
            for len in 1..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut text = vec![background; len];
                        text[at] = b;
                        let expected = b < 0x20 || b == b'"' || b == b'\\';
                        assert_eq!(needs_escape(&text), expected, "{b:#x} at {at} of {len}");
                    }
                }
            }
        }
        assert!(!needs_escape(b""));
    }

    /// A number's text of every length zmij prints, after text already there, is appended
    /// whole and nothing else, with the buffer full or with room to spare.
    #[test]
    fn digits_of_every_length_are_appended_exactly() {
        let all = "-1234567890.1234567890E-123";
        for len in 0..=all.len() {
            let text = &all[..len];
            for spare in [0, 64] {
                let mut out = b"[1,".to_vec();
                out.reserve_exact(spare);
                push_digits(&mut out, text);
                assert_eq!(out, format!("[1,{text}").as_bytes(), "length {len}");
            }
        }
    }

    /// Strings print exactly as serde_json prints them: every control character, quotes,
    /// backslashes, non-ASCII text and the empty string.
    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("a{}b", b as char)).collect();
        cases.extend(
            [
                "",
                "\"",
                "\\",
                "plain",
                "ünïcødé ✓ \u{7f}",
                "\u{2028}\u{2029}",
                "x\"y\\z\n",
            ]
            .map(String::from),
        );
        // Long strings, plain or with one byte to escape in a later 16-byte piece.
        for at in [15, 16, 17, 31, 33, 47] {
            for special in ["\"", "\\", "\n", "\u{1f}"] {
                cases.push(format!("{}{special}{}", "x".repeat(at), "y".repeat(9)));
            }
            cases.push("z".repeat(at + 9));
        }
        for case in cases {
            let mut out = String::new();
            json_str(&mut out, &case);
            assert_eq!(out, serde_json::to_string(&case).unwrap(), "{case:?}");
        }
    }

    /// `atlas.offset` takes its sorted place among the tags, replacing a tag of that name.
    #[test]
    fn the_offset_is_listed_in_tag_order() {
        let line = |pairs: &[(&str, &str)], offset_ms| ResultSeries {
            tags: TagMap::from_pairs(pairs.iter().copied()),
            label: String::new(),
            values: Vec::new(),
            axis: 0,
            color: 0,
            style: Default::default(),
            line_width: 1.0,
            offset_ms,
            query: "".into(),
            group_by_keys: Vec::new().into(),
        };
        let cases = [
            (line(&[], 0), r#"{"atlas.offset":"0w"}"#),
            (
                line(&[("a", "1"), ("name", "x")], 0),
                r#"{"a":"1","atlas.offset":"0w","name":"x"}"#,
            ),
            (
                line(&[("atlas.offset", "old"), ("name", "x")], 3_600_000),
                r#"{"atlas.offset":"1h","name":"x"}"#,
            ),
            (line(&[("a", "1")], 0), r#"{"a":"1","atlas.offset":"0w"}"#),
            (
                line(&[("b", "\"q\"")], 0),
                r#"{"atlas.offset":"0w","b":"\"q\""}"#,
            ),
        ];
        for (series, expected) in cases {
            let mut out = String::new();
            metrics(&mut out, &series);
            assert_eq!(out, expected);
        }
    }
}
