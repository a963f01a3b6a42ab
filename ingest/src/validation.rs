//! Atlas's publish-side tag rules, applied to every datapoint before anything is stored.
//! Each rejection has a typed reason (a metric label) and a message that says what and where.

use argus_tsdb::{DsType, TagMap};

/// Why a datapoint was refused. The label is used in `argus_samples_rejected_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    DataTooOld,
    DataFromFuture,
    OutOfRetention,
    MissingName,
    KeyLength,
    ValueLength,
    InvalidCharacters,
    TooManyUserTags,
    TooManyTags,
    ReservedKey,
    InvalidDsType,
    InvalidTagValue,
    InvalidValue,
    MissingTimestamp,
    /// A new series over `--max-series` or `--max-series-per-metric`.
    SeriesLimit,
}

impl RejectReason {
    pub const ALL: [RejectReason; 15] = [
        RejectReason::DataTooOld,
        RejectReason::DataFromFuture,
        RejectReason::OutOfRetention,
        RejectReason::MissingName,
        RejectReason::KeyLength,
        RejectReason::ValueLength,
        RejectReason::InvalidCharacters,
        RejectReason::TooManyUserTags,
        RejectReason::TooManyTags,
        RejectReason::ReservedKey,
        RejectReason::InvalidDsType,
        RejectReason::InvalidTagValue,
        RejectReason::InvalidValue,
        RejectReason::MissingTimestamp,
        RejectReason::SeriesLimit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RejectReason::DataTooOld => "data_too_old",
            RejectReason::DataFromFuture => "data_from_future",
            RejectReason::OutOfRetention => "out_of_retention",
            RejectReason::MissingName => "missing_name",
            RejectReason::KeyLength => "key_length",
            RejectReason::ValueLength => "value_length",
            RejectReason::InvalidCharacters => "invalid_characters",
            RejectReason::TooManyUserTags => "too_many_user_tags",
            RejectReason::TooManyTags => "too_many_tags",
            RejectReason::ReservedKey => "reserved_key",
            RejectReason::InvalidDsType => "invalid_dstype",
            RejectReason::InvalidTagValue => "invalid_tag_value",
            RejectReason::InvalidValue => "invalid_value",
            RejectReason::MissingTimestamp => "missing_timestamp",
            RejectReason::SeriesLimit => "series_limit",
        }
    }
}

/// A refused datapoint: the reason and a human message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub message: String,
}

impl Rejection {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            message: message.into(),
        }
    }

    /// A new series the store refused (over a series cap), naming the series.
    pub fn from_store(e: argus_tsdb::Error, tags: &argus_tsdb::TagMap) -> Self {
        let reason = match e {
            argus_tsdb::Error::SeriesLimit { .. } => RejectReason::SeriesLimit,
            _ => RejectReason::InvalidTagValue,
        };
        let rendered: Vec<String> = tags
            .iter()
            .take(8)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        Rejection::new(reason, format!("{e} (tags={{{}}})", rendered.join(", ")))
    }
}

/// Limits of the tag rules (Atlas's defaults).
pub const MAX_USER_TAGS: usize = 20;
pub const MAX_TAGS: usize = 30;
const KEY_LEN: (usize, usize) = (2, 60);
const NAME_LEN: (usize, usize) = (2, 255);
const VALUE_LEN: (usize, usize) = (1, 120);
const ATLAS_KEYS: [&str; 4] = ["atlas.aggr", "atlas.dstype", "atlas.offset", "atlas.legacy"];
const NF_KEYS: [&str; 20] = [
    "nf.account",
    "nf.ami",
    "nf.app",
    "nf.asg",
    "nf.cluster",
    "nf.container",
    "nf.country",
    "nf.country.rollup",
    "nf.job",
    "nf.node",
    "nf.process",
    "nf.region",
    "nf.shard1",
    "nf.shard2",
    "nf.stack",
    "nf.subnet",
    "nf.task",
    "nf.vmtype",
    "nf.vpc",
    "nf.zone",
];

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '^' | '~')
}

/// Keeps long user input short inside error messages.
pub fn clip(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head}...")
    }
}

/// Checks a datapoint's full tag map against Atlas's rules, in Atlas's order.
pub fn validate_tags(tags: &TagMap) -> Result<(), Rejection> {
    let Some(name) = tags.get("name") else {
        return Err(Rejection::new(
            RejectReason::MissingName,
            "missing key 'name'",
        ));
    };
    let _ = name;
    if tags.len() > MAX_TAGS {
        return Err(Rejection::new(
            RejectReason::TooManyTags,
            format!("too many tags: {} > {MAX_TAGS}", tags.len()),
        ));
    }
    let mut user_tags = 0;
    for (k, v) in tags.iter() {
        let klen = k.chars().count();
        if klen < KEY_LEN.0 || klen > KEY_LEN.1 {
            return Err(Rejection::new(
                RejectReason::KeyLength,
                format!(
                    "key length {klen} out of range [{}, {}]: key '{}'",
                    KEY_LEN.0,
                    KEY_LEN.1,
                    clip(k)
                ),
            ));
        }
        let (lo, hi) = if k == "name" { NAME_LEN } else { VALUE_LEN };
        let vlen = v.chars().count();
        if vlen < lo || vlen > hi {
            return Err(Rejection::new(
                RejectReason::ValueLength,
                format!(
                    "value length {vlen} out of range [{lo}, {hi}] for key '{}'",
                    clip(k)
                ),
            ));
        }
        if let Some(c) = k.chars().find(|&c| !valid_char(c)) {
            return Err(Rejection::new(
                RejectReason::InvalidCharacters,
                format!(
                    "invalid character {c:?} in key '{}' (allowed: -._A-Za-z0-9^~)",
                    clip(k)
                ),
            ));
        }
        if let Some(c) = v.chars().find(|&c| !valid_char(c)) {
            return Err(Rejection::new(
                RejectReason::InvalidCharacters,
                format!(
                    "invalid character {c:?} in value of key '{}': '{}' (allowed: -._A-Za-z0-9^~)",
                    clip(k),
                    clip(v)
                ),
            ));
        }
        if k.starts_with("atlas.") {
            if !ATLAS_KEYS.contains(&k) {
                return Err(Rejection::new(
                    RejectReason::ReservedKey,
                    format!(
                        "reserved key '{}': only {} may start with 'atlas.'",
                        clip(k),
                        ATLAS_KEYS.join(", ")
                    ),
                ));
            }
        } else if k.starts_with("nf.") {
            if !NF_KEYS.contains(&k) {
                return Err(Rejection::new(
                    RejectReason::ReservedKey,
                    format!(
                        "reserved key '{}': not one of the known 'nf.' keys",
                        clip(k)
                    ),
                ));
            }
        } else {
            user_tags += 1;
        }
    }
    if user_tags > MAX_USER_TAGS {
        return Err(Rejection::new(
            RejectReason::TooManyUserTags,
            format!(
                "too many user tags: {user_tags} > {MAX_USER_TAGS} (keys starting with nf. or atlas. do not count)"
            ),
        ));
    }
    if let Some(ds) = tags.get(DsType::TAG)
        && DsType::parse(ds).is_none()
    {
        return Err(Rejection::new(
            RejectReason::InvalidDsType,
            format!(
                "invalid atlas.dstype '{}': expected rate, counter, gauge or sum",
                clip(ds)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)], expected: Option<RejectReason>) {
        let tags = TagMap::from_pairs(pairs.iter().copied());
        assert_eq!(
            validate_tags(&tags).err().map(|r| r.reason),
            expected,
            "{pairs:?}"
        );
    }

    #[test]
    fn atlas_rules() {
        check(&[("name", "cpu"), ("nf.app", "www")], None);
        check(&[("nf.app", "www")], Some(RejectReason::MissingName));
        check(&[("name", "c")], Some(RejectReason::ValueLength));
        check(
            &[("name", "cpu"), ("k", "v")],
            Some(RejectReason::KeyLength),
        );
        check(
            &[("name", "cpu"), ("key", "a b")],
            Some(RejectReason::InvalidCharacters),
        );
        check(
            &[("name", "cpu"), ("ké", "ab")],
            Some(RejectReason::InvalidCharacters),
        );
        check(
            &[("name", "cpu"), ("nf.bogus", "x")],
            Some(RejectReason::ReservedKey),
        );
        check(
            &[("name", "cpu"), ("atlas.bogus", "x")],
            Some(RejectReason::ReservedKey),
        );
        check(&[("name", "cpu"), ("atlas.dstype", "gauge")], None);
        check(
            &[("name", "cpu"), ("atlas.dstype", "bogus")],
            Some(RejectReason::InvalidDsType),
        );
        check(&[("name", "cpu"), ("status", "2xx^~")], None);
        let long = "x".repeat(121);
        check(
            &[("name", "cpu"), ("key", long.as_str())],
            Some(RejectReason::ValueLength),
        );
        let many: Vec<(String, String)> = (0..20)
            .map(|i| (format!("k{i:02}"), "v".to_string()))
            .collect();
        let mut pairs: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("name", "cpu"));
        check(&pairs, Some(RejectReason::TooManyUserTags));
        pairs.pop();
        pairs.pop();
        pairs.push(("name", "cpu"));
        check(&pairs, None);
    }
}
