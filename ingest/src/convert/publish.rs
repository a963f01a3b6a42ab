//! Atlas's publish payload (`POST /api/v1/publish` and `/api/v1/backfill`): decoding, per
//! datapoint validation, and storing exactly the datapoints that passed.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use argus_tsdb::{Sample, SeriesId, TagMap, Writer};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Converted;
use crate::cluster::Membership;
use crate::metrics::ServerMetrics;
use crate::outcome::{Kind, Outcome};
use crate::validation::{Refusals, RejectReason, Rejection, clip, validate_tags};

/// Which accept window applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Live data: within `max_age` of now, either way (Atlas's publish).
    Publish,
    /// History: anything inside the retention window, up to `max_age` into the future.
    Backfill,
}

/// Why a whole request was refused before any datapoint was looked at.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("request body is larger than the limit of {limit} bytes{}", if *.decompressed { " after decompression" } else { "" })]
    TooLarge { limit: usize, decompressed: bool },
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error("unsupported Content-Encoding {0:?}: use gzip or none")]
    Encoding(String),
    #[error("malformed JSON payload: {0}")]
    Json(String),
    /// Well-formed JSON that is not the format the route takes (its own words).
    #[error("{0}")]
    Format(String),
    #[error("empty payload")]
    Empty,
}

/// Returns the request body, gunzipped when `content_encoding` says gzip, never holding more
/// than `limit` decompressed bytes (a small body that claims gigabytes is cut off early).
pub fn decode_body<'a>(
    body: &'a [u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<std::borrow::Cow<'a, [u8]>, PayloadError> {
    match content_encoding.map(|s| s.trim().to_ascii_lowercase()) {
        None => Ok(body.into()),
        Some(e) if e.is_empty() || e == "identity" => Ok(body.into()),
        Some(e) if e == "gzip" || e == "x-gzip" => {
            let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            let mut reader = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
            reader
                .read_to_end(&mut out)
                .map_err(|e| PayloadError::Gzip(e.to_string()))?;
            if out.len() > limit {
                return Err(PayloadError::TooLarge {
                    limit,
                    decompressed: true,
                });
            }
            Ok(out.into())
        }
        Some(e) => Err(PayloadError::Encoding(e)),
    }
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow, default)]
    tags: Option<TagPairs<'a>>,
    #[serde(borrow, default)]
    metrics: Option<Vec<Metric<'a>>>,
}

#[derive(Deserialize)]
struct Metric<'a> {
    #[serde(borrow, default)]
    tags: Option<TagPairs<'a>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    /// Legacy name for `timestamp`.
    #[serde(borrow, default)]
    start: Option<&'a RawValue>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
    /// Legacy form: an array whose first element is the value.
    #[serde(borrow, default)]
    values: Option<Vec<&'a RawValue>>,
}

/// A JSON string borrowed from the body when it has no escapes (most tags have none), so
/// decoding a payload allocates per distinct series, not per datapoint.
#[derive(Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// A tag object as it came: keys decoded, values still raw so a non-string value becomes a
/// per-datapoint refusal instead of failing the whole payload.
struct TagPairs<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for TagPairs<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = TagPairs<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of tag keys to string values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((Text(k), v)) = map.next_entry::<Text<'de>, &'de RawValue>()? {
                    pairs.push((k as Cow<'a, str>, v as &'a RawValue));
                }
                Ok(TagPairs(pairs))
            }
        }
        d.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// Decodes tag values; the first non-string value is a refusal of the datapoint.
fn decode_tags<'a>(pairs: &'a TagPairs<'a>) -> Result<Vec<(&'a str, Cow<'a, str>)>, Rejection> {
    let mut out = Vec::with_capacity(pairs.0.len());
    for (k, raw) in &pairs.0 {
        let text = raw.get();
        if text.starts_with('"') {
            let Text(v) = serde_json::from_str::<Text<'a>>(text).map_err(|e| {
                Rejection::new(
                    RejectReason::InvalidTagValue,
                    format!("value of tag key '{}': {e}", clip(k)),
                )
            })?;
            out.push((k.as_ref(), v));
        } else if text == "null" {
            return Err(Rejection::new(
                RejectReason::InvalidTagValue,
                format!("null value for tag key '{}'", clip(k)),
            ));
        } else {
            return Err(Rejection::new(
                RejectReason::InvalidTagValue,
                format!(
                    "value of tag key '{}' must be a string, got {}",
                    clip(k),
                    clip(text)
                ),
            ));
        }
    }
    Ok(out)
}

/// One datapoint that passed validation. Consecutive datapoints of one series share their
/// tag map.
#[derive(Clone, Debug, PartialEq)]
pub struct Datapoint {
    pub tags: Arc<TagMap>,
    pub ts_ms: i64,
    pub value: f64,
}

fn render_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let inner: Vec<String> = pairs
        .map(|(k, v)| format!("{}={}", clip(k), clip(v)))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

pub(crate) fn render_tags(tags: &TagMap) -> String {
    render_pairs(tags.iter())
}

fn json_value(raw: &RawValue) -> Option<f64> {
    let text = raw.get();
    if text.starts_with('"') {
        let Text(s) = serde_json::from_str::<Text>(text).ok()?;
        return match s.trim() {
            "NaN" | "nan" => Some(f64::NAN),
            "Infinity" | "+Infinity" | "inf" => Some(f64::INFINITY),
            "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        };
    }
    // A JSON number's text is valid input to Rust's float parser; anything else is not. A
    // number too large for a double (`1e400`) is refused, not stored as infinity: only the
    // explicit "Infinity" strings above mean that.
    if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.parse::<f64>().ok().filter(|v| v.is_finite())
    } else {
        None
    }
}

fn json_timestamp(raw: &RawValue) -> Option<i64> {
    let text = raw.get();
    let text = if text.starts_with('"') {
        text.trim_matches('"')
    } else {
        text
    };
    text.trim().parse::<i64>().ok().or_else(|| {
        text.parse::<f64>()
            .ok()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    })
}

/// Parses a payload into datapoints, each either valid or refused with a reason. Only a
/// malformed or empty document fails as a whole.
pub fn parse_payload(
    body: &[u8],
    mode: Mode,
    now_ms: i64,
    max_age_ms: i64,
    retention_ms: i64,
) -> Result<Vec<Result<Datapoint, Rejection>>, PayloadError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| PayloadError::Json(e.to_string()))?;
    let metrics = payload.metrics.as_deref().unwrap_or_default();
    if metrics.is_empty() {
        return Err(PayloadError::Empty);
    }
    let oldest = match mode {
        Mode::Publish => now_ms - max_age_ms,
        Mode::Backfill => now_ms - retention_ms,
    };
    let newest = now_ms + max_age_ms;
    let common = match &payload.tags {
        Some(t) => decode_tags(t),
        None => Ok(Vec::new()),
    };
    // The previous datapoint's merged tags and whether they passed the tag rules: payloads
    // repeat one series many times, so each distinct series is built and checked once.
    let mut previous: Option<(Arc<TagMap>, Result<(), Rejection>)> = None;
    let mut out = Vec::with_capacity(metrics.len());
    for m in metrics {
        out.push((|| {
            let common = common.as_ref().map_err(|r| r.clone())?;
            let own = match &m.tags {
                Some(t) => decode_tags(t)?,
                None => Vec::new(),
            };
            let mut merged: Vec<(&str, &str)> = Vec::with_capacity(own.len() + common.len());
            // own tags override common ones; within one object the last duplicate wins
            for (k, v) in own.iter().rev() {
                if !merged.iter().any(|(mk, _)| mk == k) {
                    merged.push((k, v.as_ref()));
                }
            }
            for (k, v) in common.iter().rev() {
                if !merged.iter().any(|(mk, _)| mk == k) {
                    merged.push((k, v.as_ref()));
                }
            }
            merged.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let same = previous.as_ref().is_some_and(|(t, _)| {
                t.len() == merged.len() && t.iter().zip(merged.iter()).all(|(a, b)| a == *b)
            });
            if !same {
                let tags = Arc::new(TagMap::from_pairs(merged.iter().copied()));
                let checked = validate_tags(&tags).map_err(|r| {
                    Rejection::new(r.reason, format!("{} (tags={})", r.message, render_tags(&tags)))
                });
                previous = Some((tags, checked));
            }
            let Some((tags, checked)) = &previous else {
                unreachable!("previous was just set");
            };
            let ts = m.timestamp.or(m.start);
            let ts_ms = match ts {
                None => {
                    return Err(Rejection::new(
                        RejectReason::MissingTimestamp,
                        format!("missing timestamp (tags={})", render_tags(tags)),
                    ));
                }
                Some(v) => json_timestamp(v).ok_or_else(|| {
                    Rejection::new(
                        RejectReason::MissingTimestamp,
                        format!("invalid timestamp {} (tags={})", clip(v.get()), render_tags(tags)),
                    )
                })?,
            };
            let raw_value = m.value.or_else(|| m.values.as_ref().and_then(|vs| vs.first().copied()));
            let value = raw_value.and_then(json_value).ok_or_else(|| {
                Rejection::new(
                    RejectReason::InvalidValue,
                    format!(
                        "invalid or missing value {} (tags={})",
                        raw_value.map(|v| clip(v.get())).unwrap_or_else(|| "null".into()),
                        render_tags(tags)
                    ),
                )
            })?;
            // Age first, as Atlas does, then the tag rules.
            if ts_ms < oldest {
                let what = match mode {
                    Mode::Publish => format!("more than {max_age_ms} ms before now"),
                    Mode::Backfill => format!("older than the retention window of {retention_ms} ms"),
                };
                return Err(Rejection::new(
                    RejectReason::DataTooOld,
                    format!("data too old: timestamp {ts_ms} is {what} (now={now_ms}) (tags={})", render_tags(tags)),
                ));
            }
            if ts_ms > newest {
                return Err(Rejection::new(
                    RejectReason::DataFromFuture,
                    format!(
                        "data from the future: timestamp {ts_ms} is more than {max_age_ms} ms after now (now={now_ms}) (tags={})",
                        render_tags(tags)
                    ),
                ));
            }
            checked.clone()?;
            Ok(Datapoint { tags: tags.clone(), ts_ms, value })
        })());
    }
    Ok(out)
}

/// Stores the valid datapoints of a parsed payload. Series are resolved first and the samples
/// go to the store as one batch (in a cluster, to the log: [`Converted::commit`]), so no
/// datapoint is ever half written. Every refusal is counted in `metrics`.
pub fn store_datapoints(
    w: Writer<'_>,
    parsed: Vec<Result<Datapoint, Rejection>>,
    metrics: &ServerMetrics,
    cluster: Option<&Membership>,
) -> Outcome {
    let mut refused = Refusals::default();
    let mut samples = Vec::with_capacity(parsed.len());
    let mut sample_tags: Vec<Arc<TagMap>> = Vec::with_capacity(parsed.len());
    let mut last: Option<(Arc<TagMap>, SeriesId)> = None;
    for item in parsed {
        match item {
            Err(r) => refused.add(r),
            Ok(dp) => {
                let id = match &last {
                    Some((t, id)) if Arc::ptr_eq(t, &dp.tags) || **t == *dp.tags => *id,
                    _ => match w.try_resolve(&dp.tags, None) {
                        Ok(id) => {
                            last = Some((dp.tags.clone(), id));
                            id
                        }
                        Err(e) => {
                            refused.add(Rejection::from_store(e, &dp.tags));
                            continue;
                        }
                    },
                };
                samples.push(Sample {
                    id,
                    ts_ms: dp.ts_ms,
                    value: dp.value,
                });
                sample_tags.push(dp.tags);
            }
        }
    }
    if cluster.is_some() {
        let mut conv = Converted {
            samples,
            refusals: refused,
        };
        return conv.commit(w, &[], metrics, cluster);
    }
    let result = match w.try_append_batch(&samples, &[]) {
        Ok(r) => r,
        Err(e) => return Outcome::retry_later(e),
    };
    for (i, err) in result.rejected {
        refused.add(Rejection::new(
            RejectReason::OutOfRetention,
            format!("{err} (tags={})", render_tags(&sample_tags[i])),
        ));
    }
    Outcome::taken(Kind::Samples, result.stored, refused, metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn parse(json: &str) -> Vec<Result<Datapoint, Rejection>> {
        parse_payload(json.as_bytes(), Mode::Publish, NOW, 60_000, 6 * 3_600_000).unwrap()
    }

    #[test]
    fn common_tags_merge_and_metric_tags_win() {
        let got = parse(&format!(
            r#"{{"tags":{{"nf.app":"www","name":"x"}},"metrics":[{{"tags":{{"name":"cpu"}},"timestamp":{NOW},"value":1.5}}]}}"#
        ));
        let dp = got[0].as_ref().unwrap();
        assert_eq!(dp.tags.get("name"), Some("cpu"));
        assert_eq!(dp.tags.get("nf.app"), Some("www"));
        assert_eq!(dp.value, 1.5);
    }

    #[test]
    fn numbers_out_of_a_doubles_range_are_refused() {
        let got = parse(&format!(
            r#"{{"metrics":[{{"tags":{{"name":"big"}},"timestamp":{NOW},"value":1e400}},{{"tags":{{"name":"small"}},"timestamp":{NOW},"value":-1e400}},{{"tags":{{"name":"ok"}},"timestamp":{NOW},"value":1e300}}]}}"#
        ));
        for r in &got[..2] {
            let e = r.as_ref().unwrap_err();
            assert_eq!(e.reason, RejectReason::InvalidValue);
            assert!(e.message.contains("e400"), "{}", e.message);
        }
        assert_eq!(got[2].as_ref().unwrap().value, 1e300);
    }

    #[test]
    fn legacy_fields_and_string_values() {
        let got = parse(&format!(
            r#"{{"metrics":[{{"tags":{{"name":"a1"}},"start":{NOW},"values":[2.0]}},{{"tags":{{"name":"a2"}},"timestamp":{NOW},"value":"NaN"}}]}}"#
        ));
        assert_eq!(got[0].as_ref().unwrap().value, 2.0);
        assert!(got[1].as_ref().unwrap().value.is_nan());
    }

    #[test]
    fn each_datapoint_is_judged_alone() {
        let got = parse(&format!(
            r#"{{"metrics":[
              {{"tags":{{"name":"ok"}},"timestamp":{NOW},"value":1}},
              {{"tags":{{"name":"old"}},"timestamp":{},"value":1}},
              {{"tags":{{"name":"future"}},"timestamp":{},"value":1}},
              {{"tags":{{"nf.app":"x"}},"timestamp":{NOW},"value":1}},
              {{"tags":{{"name":"v"}},"timestamp":{NOW},"value":{{"a":1}}}},
              {{"tags":{{"name":"nullv","k2":null}},"timestamp":{NOW},"value":1}},
              {{"tags":{{"name":"nots"}},"value":1}}
            ]}}"#,
            NOW - 3_600_000,
            NOW + 3_600_000
        ));
        let reasons: Vec<Option<RejectReason>> = got
            .iter()
            .map(|r| r.as_ref().err().map(|e| e.reason))
            .collect();
        assert_eq!(
            reasons,
            vec![
                None,
                Some(RejectReason::DataTooOld),
                Some(RejectReason::DataFromFuture),
                Some(RejectReason::MissingName),
                Some(RejectReason::InvalidValue),
                Some(RejectReason::InvalidTagValue),
                Some(RejectReason::MissingTimestamp),
            ]
        );
        let msg = &got[1].as_ref().unwrap_err().message;
        assert!(msg.contains("too old") && msg.contains("name=old"), "{msg}");
    }

    #[test]
    fn whole_payload_errors() {
        for bad in ["", "{", "[1,2]", r#"{"metrics": 5}"#, "\u{0}\u{1}"] {
            let err = parse_payload(bad.as_bytes(), Mode::Publish, NOW, 60_000, 1).err();
            assert!(
                matches!(err, Some(PayloadError::Json(_))),
                "{bad:?}: {err:?}"
            );
        }
        assert!(matches!(
            parse_payload(b"{}", Mode::Publish, NOW, 1, 1),
            Err(PayloadError::Empty)
        ));
        assert!(matches!(
            parse_payload(br#"{"metrics":[]}"#, Mode::Publish, NOW, 1, 1),
            Err(PayloadError::Empty)
        ));
    }

    #[test]
    fn gzip_bodies_and_bombs() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 10_000);
        assert!(matches!(
            decode_body(&bomb, Some("gzip"), 1000),
            Err(PayloadError::TooLarge {
                decompressed: true,
                ..
            })
        ));
        assert_eq!(
            decode_body(&bomb, Some("gzip"), 2 << 20).unwrap().len(),
            1 << 20
        );
        assert!(matches!(
            decode_body(b"not gzip", Some("gzip"), 1000),
            Err(PayloadError::Gzip(_))
        ));
        assert!(matches!(
            decode_body(b"x", Some("br"), 1000),
            Err(PayloadError::Encoding(_))
        ));
    }
}
