//! Atlas's publish-side tag rules, applied to every datapoint before anything is stored.
//! Each rejection has a typed reason (a metric label) and a message that says what and where.

use argus_tsdb::TagMap;

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

    /// The reason's place in [`RejectReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

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

/// Every refusal of one request: each counted by its reason, the first few kept whole for
/// the answer. A request refusing millions of samples holds a handful of messages, and the
/// counters see every one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    counts: [u64; RejectReason::ALL.len()],
    first: Vec<Rejection>,
}

impl Refusals {
    /// Refusals an answer lists in full.
    pub const LISTED: usize = 5;

    pub fn add(&mut self, r: Rejection) {
        self.add_n(r, 1);
    }

    /// `n` refusals for the same reason (the samples of one refused series).
    pub fn add_n(&mut self, r: Rejection, n: u64) {
        if n == 0 {
            return;
        }
        self.counts[r.reason.index()] += n;
        if self.first.len() < Self::LISTED {
            self.first.push(r);
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The first refusals' messages.
    pub fn reasons(&self) -> Vec<String> {
        self.first.iter().map(|r| r.message.clone()).collect()
    }

    pub fn first(&self) -> &[Rejection] {
        &self.first
    }

    /// Refusals by reason, those with any.
    pub fn by_reason(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .iter()
            .zip(self.counts)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| (*r, n))
    }
}

pub use argus_proto::rules::{MAX_TAGS, MAX_USER_TAGS, clip, sanitize};

/// A key made acceptable to Atlas's rules where it can be without losing meaning: bad
/// characters become `_` and a one-character key gets a `_` appended (Atlas keys have at
/// least two characters).
pub fn sanitize_key(k: &str) -> String {
    let mut key = sanitize(k).into_owned();
    if key.chars().count() == 1 {
        key.push('_');
    }
    key
}
use argus_proto::rules::{TagError, TagRule, check_tags};

impl From<TagError> for Rejection {
    fn from(e: TagError) -> Self {
        let reason = match e.rule {
            TagRule::MissingName => RejectReason::MissingName,
            TagRule::TooManyTags => RejectReason::TooManyTags,
            TagRule::KeyLength => RejectReason::KeyLength,
            TagRule::ValueLength => RejectReason::ValueLength,
            TagRule::InvalidCharacters => RejectReason::InvalidCharacters,
            TagRule::ReservedKey => RejectReason::ReservedKey,
            TagRule::TooManyUserTags => RejectReason::TooManyUserTags,
            TagRule::InvalidDsType => RejectReason::InvalidDsType,
        };
        Rejection::new(reason, e.message)
    }
}

/// Checks a datapoint's full tag map against Atlas's rules (the contract's, which agents
/// apply too), in Atlas's order.
pub fn validate_tags(tags: &TagMap) -> Result<(), Rejection> {
    if lengths_unchecked() && tags.get("name").is_some() {
        return Ok(());
    }
    let pairs: Vec<(&str, &str)> = tags.iter().collect();
    check_tags(&pairs).map_err(Rejection::from)
}

/// Lets the server take series with names and keys shorter than Atlas allows (`name=x`,
/// `k=1`), as `argus eval` does. For tests only: the Stack Language's data-file cases, written
/// with one-letter names, are written through a real cluster's gateways.
const UNCHECKED_TAGS_ENV: &str = "ARGUS_TEST_UNCHECKED_TAGS";

fn lengths_unchecked() -> bool {
    static UNCHECKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *UNCHECKED.get_or_init(|| {
        let unchecked = std::env::var_os(UNCHECKED_TAGS_ENV).is_some_and(|v| v == "1");
        if unchecked {
            tracing::warn!(
                "{UNCHECKED_TAGS_ENV}=1: tags are not checked against Atlas's rules (tests only)"
            );
        }
        unchecked
    })
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

    #[test]
    fn reasons_are_indexed_in_declaration_order() {
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn refusals_count_every_one_and_keep_the_first() {
        let mut r = Refusals::default();
        for i in 0..1_000 {
            r.add(Rejection::new(RejectReason::KeyLength, format!("bad {i}")));
        }
        r.add_n(Rejection::new(RejectReason::SeriesLimit, "cap"), 5_000);
        assert_eq!(r.total(), 6_000);
        assert_eq!(r.reasons(), ["bad 0", "bad 1", "bad 2", "bad 3", "bad 4"]);
        let by: Vec<_> = r.by_reason().collect();
        assert_eq!(
            by,
            [
                (RejectReason::KeyLength, 1_000),
                (RejectReason::SeriesLimit, 5_000)
            ]
        );
    }

    #[test]
    fn the_dstypes_the_rules_allow_are_the_stores() {
        for name in argus_proto::rules::DSTYPES {
            assert!(argus_tsdb::DsType::parse(name).is_some(), "{name}");
        }
        for bad in ["Rate", "gauges", ""] {
            assert!(argus_tsdb::DsType::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn too_many_tags_names_both_limits() {
        let many: Vec<(String, String)> = (0..45)
            .map(|i| (format!("k{i:02}"), "v".to_string()))
            .collect();
        let mut pairs: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pairs.push(("name", "cpu"));
        let e = validate_tags(&TagMap::from_pairs(pairs.iter().copied())).unwrap_err();
        assert_eq!(e.reason, RejectReason::TooManyTags);
        assert!(e.message.contains("at most 20 user tags"), "{}", e.message);
    }
}
