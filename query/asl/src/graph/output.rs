//! The text output formats of the graph API, in Atlas's exact shapes: `json` / `std.json`,
//! `stats.json`, `csv` and `txt`. Numbers print as Java does (`42.0`, `1.0E7`), non-finite
//! numbers as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` in JSON.

use std::fmt::Write as _;

use jiff::tz::TimeZone;

use super::{GraphResult, ResultSeries};
use crate::numfmt::{write_fixed6, write_java_double};
use crate::time::format_duration;

/// Appends a JSON string.
fn json_str(out: &mut String, s: &str) {
    // serde_json escapes exactly what JSON needs; writing into a String cannot fail.
    if let Ok(text) = serde_json::to_string(s) {
        out.push_str(&text);
    }
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

/// A line's tags as Atlas lists them: sorted, with `atlas.offset`.
fn metrics(out: &mut String, s: &ResultSeries) {
    let mut tags = s.tags.clone();
    tags.insert("atlas.offset".to_string(), format_duration(s.offset_ms));
    out.push('{');
    for (i, (k, v)) in tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        json_str(out, k);
        out.push(':');
        json_str(out, v);
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

impl GraphResult {
    /// The response body in the request's format.
    pub fn render(&self, req: &super::GraphRequest) -> Vec<u8> {
        let tz = req.timezones.first().cloned().unwrap_or(TimeZone::UTC);
        match req.format {
            super::Format::Json | super::Format::StdJson => self.to_atlas_json().into_bytes(),
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
        let mut whole = String::new();
        self.write_atlas_json(usize::MAX, &mut |part| {
            whole = part;
            Some(String::new())
        });
        whole
    }

    /// Atlas's `json` handed to `emit` in parts of about `part_bytes` (the last may be
    /// shorter), so a server can send a large answer while it is still being written, from
    /// a few buffers instead of one of several megabytes. `emit` gives back the buffer to
    /// write the next part into (a part already sent, for one, so that its pages are reused),
    /// or `None` to stop early (the client went away).
    pub fn write_atlas_json(
        &self,
        part_bytes: usize,
        emit: &mut dyn FnMut(String) -> Option<String>,
    ) {
        let rows = self.rows();
        // Rates and averages print 15 to 18 characters; sized for that, a part is written
        // once instead of growing and being copied.
        let whole = 256 + rows * self.series.len() * 18;
        let capacity = whole.min(part_bytes.saturating_add(256));
        let mut out = String::with_capacity(capacity);
        let _ = write!(
            out,
            "{{\"start\":{},\"step\":{},",
            self.start_ms, self.step_ms
        );
        header(&mut out, self);
        out.push_str(",\"values\":[");
        // A part ends before the row that would take it past `part_bytes`.
        let row_bytes = self.series.len() * 18;
        let columns: Vec<&[f64]> = self.series.iter().map(|s| s.values.as_slice()).collect();
        let mut digits = zmij::Buffer::new();
        for row in 0..rows {
            if !out.is_empty() && out.len().saturating_add(row_bytes) > part_bytes {
                let Some(next) = emit(std::mem::take(&mut out)) else {
                    return;
                };
                out = next;
                out.clear();
                out.reserve(capacity);
            }
            if row > 0 {
                out.push(',');
            }
            out.push('[');
            for (i, column) in columns.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let v = column.get(row).copied().unwrap_or(f64::NAN);
                // The plain range, where Java and zmij print the same digits, inline; the
                // rest (and non-finite values) through `json_number`.
                if (1e-3..1e7).contains(&v.abs()) {
                    out.push_str(digits.format_finite(v));
                } else {
                    json_number(&mut out, v);
                }
            }
            out.push(']');
        }
        out.push(']');
        notices(&mut out, self);
        emit(out);
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
