//! SpectatorD, the sidecar Netflix's Spectator clients write to: its line protocol on UDP
//! (`127.0.0.1:1234` by default) and on a Unix datagram socket, every meter type, stored as
//! Atlas stores them. A line is `<type>[,<option>]:<name>[,<key>=<value>]*:<value>`, several
//! per datagram separated by `\n`:
//!
//! | type | meter | series each step |
//! |---|---|---|
//! | `c` | counter | `statistic=count` rate |
//! | `C`, `U` | monotonic counter (double, unsigned 64-bit): the increase since the last value | `count` rate |
//! | `X` | monotonic counter sampled at `X,<epoch ms>`: increases in time order | `count` rate |
//! | `g` | gauge, `g,<seconds>` its time to live (default 15 min, at least 5 s) | `gauge` |
//! | `m` | max gauge | `max` |
//! | `A` | age gauge: an epoch time in seconds, `0` for now | seconds since it, `gauge` |
//! | `t`, `T` | timer, seconds (`T` with percentiles) | `count`, `totalTime`, `totalOfSquares` rates, `max` |
//! | `d`, `D` | distribution summary (`D` with percentiles) | `count`, `totalAmount`, `totalOfSquares` rates, `max` |
//! | `S` | distinct values (`netflix-spectator-py` sends them base64) | distinct values in the step, `gauge` |
//!
//! `T` and `D` add Spectator's percentile buckets: a `statistic=percentile` counter per
//! bucket hit, tagged `percentile=T00xx` (nanoseconds) or `D00xx`, which the Stack
//! Language's `:percentiles` reads. Names and tags get SpectatorD's character rules
//! (anything outside `-._A-Za-z0-9~^` becomes `_`). A malformed line is counted by its
//! reason and skipped; the listener never stops for one.
//!
//! Lines name the same meters again and again, so each listener keeps a cache from a line's
//! meter part (`type[,option]:name,tags`) to its series ids: a known meter costs one hash
//! lookup and no allocation.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ahash::{AHashMap, AHashSet};
use parking_lot::Mutex;

pub use crate::health::SpectatordCounts as LineCounts;
use crate::registry::{MeterKind, Registry};

/// Why a line was not taken, as counted in the agent's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Not UTF-8.
    Encoding,
    /// A type letter SpectatorD does not know.
    UnknownType,
    /// An option that is not an integer, or a time to live or timestamp ≤ 0.
    BadOption,
    /// No `:` after the type, or none before the value.
    MissingSeparator,
    MissingName,
    /// A tag without `=`, with an empty key or value, or with a reserved key.
    BadTag,
    /// A value that is not a finite number (or not an unsigned integer for `U`).
    BadValue,
}

impl LineCounts {
    fn refused(&self, why: Malformed) {
        self.malformed[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// The meter types of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    MonotonicCounter,
    MonotonicCounterUint,
    MonotonicSampled,
    Gauge,
    MaxGauge,
    AgeGauge,
    Timer,
    PercentileTimer,
    DistributionSummary,
    PercentileDistributionSummary,
    DistinctCount,
}

impl Kind {
    fn of(letter: u8) -> Option<Kind> {
        Some(match letter {
            b'c' => Kind::Counter,
            b'C' => Kind::MonotonicCounter,
            b'U' => Kind::MonotonicCounterUint,
            b'X' => Kind::MonotonicSampled,
            b'g' => Kind::Gauge,
            b'm' => Kind::MaxGauge,
            b'A' => Kind::AgeGauge,
            b't' => Kind::Timer,
            b'T' => Kind::PercentileTimer,
            b'd' => Kind::DistributionSummary,
            b'D' => Kind::PercentileDistributionSummary,
            b'S' => Kind::DistinctCount,
            _ => return None,
        })
    }
}

/// A line's meter: its type, option, name and tags (as sent, before sanitizing).
#[derive(Debug, PartialEq)]
pub struct MeterLine<'a> {
    pub kind: Kind,
    pub option: Option<i64>,
    pub name: &'a str,
    pub tags: Vec<(&'a str, &'a str)>,
}

/// Splits a line into its meter part (`type[,option]:name,tags`) and its value text.
fn split_value(line: &str) -> Result<(&str, &str), Malformed> {
    let line = line.trim_end();
    let first = line.find(':').ok_or(Malformed::MissingSeparator)?;
    let last = line.rfind(':').ok_or(Malformed::MissingSeparator)?;
    if last == first {
        // `c:name` (no value) or `c:1` (no name): the name is what is missing when the only
        // field after the type is a number.
        return Err(if line[first + 1..].parse::<f64>().is_ok() {
            Malformed::MissingName
        } else {
            Malformed::MissingSeparator
        });
    }
    Ok((&line[..last], &line[last + 1..]))
}

/// Parses a line's meter part.
pub fn parse_meter(meter: &str) -> Result<MeterLine<'_>, Malformed> {
    let (head, id) = meter.split_once(':').ok_or(Malformed::MissingSeparator)?;
    let (letter, option) = match head.split_once(',') {
        Some((letter, option)) => (letter, Some(option)),
        None => (head, None),
    };
    let kind = match letter.as_bytes() {
        [b] => Kind::of(*b).ok_or(Malformed::UnknownType)?,
        _ => return Err(Malformed::UnknownType),
    };
    let option = match option {
        None => None,
        Some(o) => {
            let v = o.trim().parse::<i64>().map_err(|_| Malformed::BadOption)?;
            if v <= 0 && matches!(kind, Kind::Gauge | Kind::MonotonicSampled) {
                return Err(Malformed::BadOption);
            }
            Some(v)
        }
    };
    if kind == Kind::MonotonicSampled && option.is_none() {
        return Err(Malformed::BadOption);
    }
    let mut parts = id.split(',');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() {
        return Err(Malformed::MissingName);
    }
    let mut tags = Vec::new();
    for tag in parts {
        let (k, v) = tag.split_once('=').ok_or(Malformed::BadTag)?;
        if k.is_empty() || v.is_empty() || k == "name" || k == "atlas.dstype" {
            return Err(Malformed::BadTag);
        }
        tags.push((k, v));
    }
    Ok(MeterLine {
        kind,
        option,
        name,
        tags,
    })
}

/// Spectator's 276 percentile buckets: their values (1, 2, 3, then each power of 4 split
/// in steps of a third of it, up to `i64::MAX`) and where each power of 4 starts.
struct Buckets {
    values: Vec<i64>,
    power_of_4_index: Vec<usize>,
}

fn buckets() -> &'static Buckets {
    static BUCKETS: std::sync::OnceLock<Buckets> = std::sync::OnceLock::new();
    BUCKETS.get_or_init(|| {
        let mut values: Vec<i64> = vec![1, 2, 3];
        let mut power_of_4_index = vec![0];
        for exp in (2..64).step_by(2) {
            let mut current: i64 = 1i64 << exp;
            let delta = current / 3;
            let next = current.wrapping_shl(2).wrapping_sub(delta);
            power_of_4_index.push(values.len());
            while current < next {
                values.push(current);
                current += delta;
            }
        }
        values.push(i64::MAX);
        Buckets {
            values,
            power_of_4_index,
        }
    })
}

/// The bucket a value is counted in, exactly as SpectatorD's `PercentileBucketIndexOf`
/// computes it (its quirks included: the percentile series must be the ones SpectatorD
/// would write).
pub fn bucket_index(v: i64) -> usize {
    if v <= 0 {
        return 0;
    }
    if v <= 4 {
        return v as usize;
    }
    let b = buckets();
    let mut shift = 63 - v.leading_zeros() as usize;
    let mut base = (v >> shift) << shift;
    if !shift.is_multiple_of(2) {
        shift -= 1;
        base >>= 1;
    }
    let delta = base / 3;
    let pos = ((v - base) / delta) as usize + b.power_of_4_index[shift / 2];
    if pos >= b.values.len() - 1 {
        b.values.len() - 1
    } else {
        pos + 1
    }
}

/// Nanoseconds a percentile timer's buckets cover, as SpectatorD clamps them.
const TIMER_MAX_NS: i64 = 24 * 3600 * 1_000_000_000;
/// Gauges without a time to live keep their value this long (SpectatorD's `meter_ttl`).
const DEFAULT_GAUGE_TTL_MS: i64 = 15 * 60 * 1000;
const MIN_GAUGE_TTL_MS: i64 = 5000;
/// Distinct values kept per meter and step; more are not counted.
const MAX_DISTINCT: usize = 100_000;
/// Meters a listener's cache remembers; lines of further meters take the slow path.
const MAX_CACHED_METERS: usize = 200_000;

/// A cached meter: its series ids and, for monotonic counters, the last value seen.
struct Cached {
    kind: Kind,
    option: Option<i64>,
    /// By kind: counters, gauges: `[id]`; timers and summaries: count, total, total of
    /// squares, max.
    ids: Vec<u32>,
    /// Percentile bucket series made so far: (bucket, id).
    buckets: Vec<(u16, u32)>,
    name: String,
    tags: Vec<(String, String)>,
    last: Option<(f64, i64)>,
}

/// Meters seen by one listener, and where their updates go.
pub struct Listener {
    sinks: Sinks,
    counts: Arc<LineCounts>,
    cache: AHashMap<Box<str>, Cached>,
    /// `X` meters by their meter part without the timestamp option (one entry per meter,
    /// not per sample).
    sampled: AHashMap<Box<str>, Cached>,
}

/// Where a listener's updates go.
struct Sinks {
    registry: Arc<Registry>,
    distinct: Arc<Distinct>,
    /// Gauges' own times to live (ms) by series: a later `g:` without one keeps it, as in
    /// SpectatorD.
    gauge_ttls: AHashMap<u32, i64>,
}

/// Distinct values of `S` meters this step, by series, each kept as a 64-bit hash: a
/// meter costs at most 8 bytes per value however long its values are (two of 100,000
/// values share a hash with a chance of about 3 in 10^10).
#[derive(Default)]
pub struct Distinct {
    values: Mutex<AHashMap<u32, AHashSet<u64>>>,
}

impl Distinct {
    /// Reports each meter's distinct count of the step as its gauge, and starts over.
    pub fn flush_into(&self, registry: &Registry) {
        for (id, values) in self.values.lock().drain() {
            registry.update_id(id, MeterKind::Gauge, None, |v| *v = values.len() as f64);
        }
    }
}

impl Listener {
    pub fn new(registry: Arc<Registry>, distinct: Arc<Distinct>, counts: Arc<LineCounts>) -> Self {
        Listener {
            sinks: Sinks {
                registry,
                distinct,
                gauge_ttls: AHashMap::new(),
            },
            counts,
            cache: AHashMap::new(),
            sampled: AHashMap::new(),
        }
    }

    /// Applies every line of a datagram.
    pub fn datagram(&mut self, bytes: &[u8], now_ms: i64) {
        self.counts.packets.fetch_add(1, Ordering::Relaxed);
        let Ok(text) = std::str::from_utf8(bytes) else {
            self.counts.refused(Malformed::Encoding);
            return;
        };
        for line in text.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            match self.line(line, now_ms) {
                Ok(()) => {
                    self.counts.lines.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => self.counts.refused(why),
            }
        }
    }

    /// Applies one line. A meter whose series the agent refuses (its rules, its limits) is
    /// counted there, not here.
    pub fn line(&mut self, line: &str, now_ms: i64) -> Result<(), Malformed> {
        let (meter, value_text) = split_value(line)?;
        // An `X` line's option is its sample's time: the meter is the rest.
        let (key, sample_ms) = match meter.strip_prefix("X,") {
            Some(rest) => {
                let (at, id) = rest.split_once(':').ok_or(Malformed::MissingSeparator)?;
                let at = at.trim().parse::<i64>().ok().filter(|t| *t > 0);
                (id, Some(at.ok_or(Malformed::BadOption)?))
            }
            None => (meter, None),
        };
        let cache = if sample_ms.is_some() {
            &mut self.sampled
        } else {
            &mut self.cache
        };
        if let Some(cached) = cache.get_mut(key) {
            return self.sinks.apply(cached, value_text, sample_ms, now_ms);
        }
        let parsed = parse_meter(meter)?;
        // The value is checked before a series is made for it.
        parse_value(parsed.kind, value_text)?;
        let Some(mut cached) = self.sinks.make(&parsed) else {
            return Ok(());
        };
        let result = self.sinks.apply(&mut cached, value_text, sample_ms, now_ms);
        if self.cache.len() + self.sampled.len() < MAX_CACHED_METERS {
            let cache = if sample_ms.is_some() {
                &mut self.sampled
            } else {
                &mut self.cache
            };
            cache.insert(key.into(), cached);
        }
        result
    }
}

impl Sinks {
    /// The series of a meter new to this listener; `None` when the registry refuses them.
    fn make(&self, m: &MeterLine<'_>) -> Option<Cached> {
        let name = argus_proto::rules::sanitize(m.name).into_owned();
        let tags: Vec<(String, String)> = m
            .tags
            .iter()
            .map(|(k, v)| {
                (
                    argus_proto::rules::sanitize(k).into_owned(),
                    argus_proto::rules::sanitize(v).into_owned(),
                )
            })
            .collect();
        let with = |statistic: &'static str| tagged(&tags, statistic, false);
        // A user's own `statistic` tag stays on single-series meters, as in SpectatorD.
        let own = |statistic: &'static str| tagged(&tags, statistic, true);
        let r = &self.registry;
        let ids = match m.kind {
            Kind::Counter
            | Kind::MonotonicCounter
            | Kind::MonotonicCounterUint
            | Kind::MonotonicSampled => {
                vec![r.meter_id(&name, &own("count"), MeterKind::Counter)?]
            }
            Kind::Gauge | Kind::DistinctCount => {
                vec![r.meter_id(&name, &own("gauge"), MeterKind::Gauge)?]
            }
            Kind::MaxGauge => vec![r.meter_id(&name, &own("max"), MeterKind::Max)?],
            Kind::AgeGauge => vec![r.meter_id(&name, &own("gauge"), MeterKind::Age)?],
            Kind::Timer
            | Kind::PercentileTimer
            | Kind::DistributionSummary
            | Kind::PercentileDistributionSummary => {
                let total = if matches!(m.kind, Kind::Timer | Kind::PercentileTimer) {
                    "totalTime"
                } else {
                    "totalAmount"
                };
                vec![
                    r.meter_id(&name, &with("count"), MeterKind::Counter)?,
                    r.meter_id(&name, &with(total), MeterKind::Counter)?,
                    r.meter_id(&name, &with("totalOfSquares"), MeterKind::Counter)?,
                    r.meter_id(&name, &with("max"), MeterKind::Max)?,
                ]
            }
        };
        Some(Cached {
            kind: m.kind,
            option: m.option,
            ids,
            buckets: Vec::new(),
            name,
            tags,
            last: None,
        })
    }

    fn apply(
        &mut self,
        m: &mut Cached,
        value_text: &str,
        sample_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<(), Malformed> {
        let value = parse_value(m.kind, value_text)?;
        let r = &self.registry;
        let add = |id: u32, delta: f64| r.update_id(id, MeterKind::Counter, None, |v| *v += delta);
        let max = |id: u32, x: f64| {
            r.update_id(id, MeterKind::Max, None, |v| {
                if v.is_nan() || x > *v {
                    *v = x
                }
            })
        };
        match m.kind {
            Kind::Counter => {
                if value > 0.0 {
                    add(m.ids[0], value);
                }
            }
            // The increase since the last value; the first value and a decrease only set
            // where the next increase counts from.
            Kind::MonotonicCounter => {
                if let Some((last, _)) = m.last
                    && value > last
                {
                    add(m.ids[0], value - last);
                }
                m.last = Some((value, now_ms));
            }
            Kind::MonotonicCounterUint => {
                // Exact in 64 bits: a wrap past u64::MAX is an increase, as SpectatorD
                // takes it.
                let current = value_text
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| Malformed::BadValue)?;
                if let Some((_, last_bits)) = m.last {
                    let delta = current.wrapping_sub(last_bits as u64);
                    if delta > 0 && delta < 1 << 63 {
                        add(m.ids[0], delta as f64);
                    }
                }
                m.last = Some((0.0, current as i64));
            }
            // Increases in time order; samples older than the last are ignored.
            Kind::MonotonicSampled => {
                let at = sample_ms.unwrap_or(now_ms);
                match m.last {
                    Some((_, last_at)) if at <= last_at => {}
                    Some((last, _)) => {
                        if value > last {
                            add(m.ids[0], value - last);
                        }
                        m.last = Some((value, at));
                    }
                    None => m.last = Some((value, at)),
                }
            }
            Kind::Gauge => {
                let ttl = match m.option {
                    Some(secs) => {
                        let ttl = secs.saturating_mul(1000).max(MIN_GAUGE_TTL_MS);
                        if self.gauge_ttls.len() < MAX_CACHED_METERS {
                            self.gauge_ttls.insert(m.ids[0], ttl);
                        }
                        ttl
                    }
                    None => self
                        .gauge_ttls
                        .get(&m.ids[0])
                        .copied()
                        .unwrap_or(DEFAULT_GAUGE_TTL_MS),
                };
                r.update_id(
                    m.ids[0],
                    MeterKind::Gauge,
                    Some(now_ms.saturating_add(ttl)),
                    |v| *v = value,
                );
            }
            Kind::MaxGauge => {
                max(m.ids[0], value);
            }
            Kind::AgeGauge => {
                let at = if value == 0.0 {
                    now_ms as f64
                } else {
                    value * 1000.0
                };
                r.update_id(m.ids[0], MeterKind::Age, None, |v| *v = at);
            }
            Kind::Timer
            | Kind::PercentileTimer
            | Kind::DistributionSummary
            | Kind::PercentileDistributionSummary => {
                if value < 0.0 {
                    return Ok(());
                }
                let _ = add(m.ids[0], 1.0)
                    && add(m.ids[1], value)
                    && add(m.ids[2], value * value)
                    && max(m.ids[3], value);
                let bucket = match m.kind {
                    Kind::PercentileTimer => {
                        let ns = (value * 1e9).clamp(1.0, TIMER_MAX_NS as f64) as i64;
                        Some(('T', bucket_index(ns)))
                    }
                    Kind::PercentileDistributionSummary => {
                        Some(('D', bucket_index(value.min(i64::MAX as f64) as i64)))
                    }
                    _ => None,
                };
                if let Some((prefix, index)) = bucket {
                    let id = match m.buckets.iter().find(|(b, _)| *b as usize == index) {
                        Some((_, id)) => Some(*id),
                        None => {
                            let tag = format!("{prefix}{index:04X}");
                            let mut tags: Vec<(&str, &str)> = m
                                .tags
                                .iter()
                                .filter(|(k, _)| k != "statistic" && k != "percentile")
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect();
                            tags.push(("statistic", "percentile"));
                            tags.push(("percentile", &tag));
                            let id = r.meter_id(&m.name, &tags, MeterKind::Counter);
                            if let Some(id) = id {
                                m.buckets.push((index as u16, id));
                            }
                            id
                        }
                    };
                    if let Some(id) = id {
                        add(id, 1.0);
                    }
                }
            }
            Kind::DistinctCount => {
                let hash = value_hash(value_text);
                let mut all = self.distinct.values.lock();
                let set = all.entry(m.ids[0]).or_default();
                if set.len() < MAX_DISTINCT {
                    set.insert(hash);
                }
            }
        }
        Ok(())
    }
}

/// `tags` with `statistic`: replacing the user's own, or keeping it when `keep_own`.
fn tagged<'a>(
    tags: &'a [(String, String)],
    statistic: &'a str,
    keep_own: bool,
) -> Vec<(&'a str, &'a str)> {
    let own = tags.iter().any(|(k, _)| k == "statistic");
    let mut t: Vec<(&str, &str)> = tags
        .iter()
        .filter(|(k, _)| keep_own || k != "statistic")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !(keep_own && own) {
        t.push(("statistic", statistic));
    }
    t
}

/// A value's 64-bit hash, the same in every process (fixed keys).
fn value_hash(text: &str) -> u64 {
    ahash::RandomState::with_seeds(0x51_7c_c1_b7, 0x27_22_0a_95, 0x9e_37_79_b9, 0x85_eb_ca_6b)
        .hash_one(text)
}

/// A line's value as a number (`S` values are taken as they are: any text).
fn parse_value(kind: Kind, text: &str) -> Result<f64, Malformed> {
    let text = text.trim();
    match kind {
        Kind::DistinctCount => {
            if text.is_empty() {
                Err(Malformed::BadValue)
            } else {
                Ok(0.0)
            }
        }
        Kind::MonotonicCounterUint => text
            .parse::<u64>()
            .map(|v| v as f64)
            .map_err(|_| Malformed::BadValue),
        _ => text
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or(Malformed::BadValue),
    }
}

/// Binds the UDP listener with a large receive buffer (as the StatsD one).
pub async fn bind_udp(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    crate::statsd::bind(addr).await
}

/// Binds the Unix datagram socket at `path`, replacing a socket file left there (by an
/// earlier run), never another kind of file; the directory is made if missing. Writable by
/// every local user, as SpectatorD's: services run as other users.
pub fn bind_unix(path: &Path) -> std::io::Result<tokio::net::UnixDatagram> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let socket = tokio::net::UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20) {
        tracing::warn!(error = %e, "could not enlarge the SpectatorD socket's receive buffer");
    }
    Ok(socket)
}

/// Where datagrams come from.
pub enum Source {
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

/// Receives datagrams for as long as the agent runs.
pub async fn run(source: Source, mut listener: Listener) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let received = match &source {
            Source::Udp(s) => s.recv(&mut buf).await,
            Source::Unix(s) => s.recv(&mut buf).await,
        };
        let n = match received {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "SpectatorD receive failed");
                continue;
            }
        };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        listener.datagram(&buf[..n], now_ms);
    }
}

/// The fuzz target's entry (`agent/fuzz`) and its corpus replay (`agent/tests`): a datagram
/// into a fresh listener twice (the second time through its cache), then a step's flush.
/// Nothing may panic.
pub fn fuzz_datagram(data: &[u8]) {
    let catalog = Arc::new(crate::outbox::Catalog::default());
    let registry = Arc::new(Registry::new(
        catalog,
        vec![("nf.node".into(), "fuzz".into())],
    ));
    let distinct = Arc::new(Distinct::default());
    let mut listener = Listener::new(
        registry.clone(),
        distinct.clone(),
        Arc::new(LineCounts::default()),
    );
    let now = 1_700_000_000_000;
    listener.datagram(data, now);
    listener.datagram(data, now + 1);
    distinct.flush_into(&registry);
    let _ = registry.flush(now + 60_000, 60.0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::Catalog;

    fn listener() -> (
        Listener,
        Arc<Catalog>,
        Arc<Registry>,
        Arc<LineCounts>,
        Arc<Distinct>,
    ) {
        let catalog = Arc::new(Catalog::default());
        let registry = Arc::new(Registry::new(catalog.clone(), Vec::new()));
        let counts = Arc::new(LineCounts::default());
        let distinct = Arc::new(Distinct::default());
        (
            Listener::new(registry.clone(), distinct.clone(), counts.clone()),
            catalog,
            registry,
            counts,
            distinct,
        )
    }

    /// The flushed step as `name/statistic[/percentile]` → value.
    fn flushed(
        catalog: &Catalog,
        registry: &Registry,
        end_ms: i64,
        step_s: f64,
    ) -> AHashMap<String, f64> {
        registry
            .flush(end_ms, step_s)
            .into_iter()
            .map(|s| {
                let tags = catalog.tags(s.series).unwrap();
                let get = |k: &str| tags.iter().find(|(tk, _)| tk == k).map(|(_, v)| v.clone());
                let mut key = format!(
                    "{}/{}",
                    get("name").unwrap(),
                    get("statistic").unwrap_or_default()
                );
                if let Some(p) = get("percentile") {
                    key.push('/');
                    key.push_str(&p);
                }
                (key, s.value)
            })
            .collect()
    }

    #[test]
    fn every_meter_type_is_stored_as_atlas_stores_it() {
        let (mut l, catalog, registry, counts, distinct) = listener();
        let now = 1_700_000_000_000;
        let datagram = "c:req,status=200:1\nc:req,status=200:2.5\nc:req,status=200:-4\n\
            C:bytes:100\nC:bytes:160\nC:bytes:150\nC:bytes:170\n\
            U:packets:18446744073709551610\nU:packets:4\n\
            X,1000:sampled:10\nX,3000:sampled:30\nX,2000:sampled:99\n\
            g:temp:20\ng,60:queue:7\nm:peak:3\nm:peak:9\nm:peak:4\n\
            A:age:0\nt:lat:0.1\nt:lat:0.3\nt:lat:-1\nd:size:10\nd:size:30\n\
            T:plat:0.001\nD:psize:1000\nS:users:YQ==\nS:users:Yg==\nS:users:YQ==\n";
        l.datagram(datagram.as_bytes(), now);
        assert_eq!(counts.lines.load(Ordering::Relaxed), 28);
        assert!(
            counts
                .malformed
                .iter()
                .all(|c| c.load(Ordering::Relaxed) == 0)
        );
        distinct.flush_into(&registry);
        let got = flushed(&catalog, &registry, now + 10_000, 10.0);
        assert_eq!(got["req/count"], 0.35);
        assert_eq!(got["bytes/count"], 8.0, "60 then 20 after the drop");
        assert_eq!(
            got["packets/count"], 1.0,
            "a wrap of 10 is an increase of 10"
        );
        assert_eq!(
            got["sampled/count"], 2.0,
            "out-of-order samples are ignored"
        );
        assert_eq!(got["temp/gauge"], 20.0);
        assert_eq!(got["queue/gauge"], 7.0);
        assert_eq!(got["peak/max"], 9.0);
        assert_eq!(got["age/gauge"], 10.0);
        assert_eq!(got["lat/count"], 0.2);
        assert!((got["lat/totalTime"] - 0.04).abs() < 1e-12);
        assert!((got["lat/totalOfSquares"] - 0.01).abs() < 1e-12);
        assert_eq!(got["lat/max"], 0.3);
        assert_eq!(got["size/totalAmount"], 4.0);
        assert_eq!(got["size/max"], 30.0);
        // 1 ms = 1e6 ns is in bucket 0x56, 1000 in 0x29 (as SpectatorD counts them).
        assert_eq!(got["plat/percentile/T0056"], 0.1);
        assert_eq!(got["plat/count"], 0.1);
        assert_eq!(got["psize/percentile/D0029"], 0.1);
        assert_eq!(got["users/gauge"], 2.0);
        // The next step: the gauge with 60 s to live stays, the age grows.
        let got = flushed(&catalog, &registry, now + 70_000, 10.0);
        assert_eq!(got["age/gauge"], 70.0);
        assert!(!got.contains_key("queue/gauge"), "past its 60 s");
        assert_eq!(got["temp/gauge"], 20.0);
    }

    #[test]
    fn malformed_lines_are_counted_by_reason_and_the_rest_is_taken() {
        let (mut l, _, _, counts, _) = listener();
        let datagram = "q:x:1\nc:x\n:1\nc:1\nc,abc:x:1\ng,0:x:1\nX:x:1\nc:x,k:1\nc:x,=v:1\n\
            c:x,name=y:1\nc:x:abc\nc:x:inf\nU:x:-1\nc:,k=v:1\ncc:x:1\nc:ok:1\n";
        l.datagram(datagram.as_bytes(), 0);
        l.datagram(&[0xff, 0xfe], 0);
        let by = |m: Malformed| counts.malformed[m as usize].load(Ordering::Relaxed);
        assert_eq!(by(Malformed::UnknownType), 2);
        assert_eq!(by(Malformed::MissingSeparator), 1);
        assert_eq!(by(Malformed::MissingName), 3);
        assert_eq!(by(Malformed::BadOption), 3);
        assert_eq!(by(Malformed::BadTag), 3);
        assert_eq!(by(Malformed::BadValue), 3);
        assert_eq!(by(Malformed::Encoding), 1);
        assert_eq!(counts.lines.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn each_reason_is_counted_under_its_own_tag() {
        for (why, reason) in [
            (Malformed::Encoding, "not_utf8"),
            (Malformed::UnknownType, "unknown_type"),
            (Malformed::BadOption, "bad_option"),
            (Malformed::MissingSeparator, "missing_separator"),
            (Malformed::MissingName, "missing_name"),
            (Malformed::BadTag, "bad_tag"),
            (Malformed::BadValue, "bad_value"),
        ] {
            assert_eq!(
                crate::health::SPECTATORD_REFUSALS[why as usize][1],
                ("reason", reason)
            );
        }
    }

    #[test]
    fn names_and_tags_get_spectatords_characters() {
        let (mut l, catalog, registry, _, _) = listener();
        l.line("c:my metric!,k y=v/1:1", 0).unwrap();
        let got = flushed(&catalog, &registry, 1000, 1.0);
        assert_eq!(got["my_metric_/count"], 1.0);
        let tags = catalog.tags(0).unwrap();
        assert!(tags.contains(&("k_y".into(), "v_1".into())), "{tags:?}");
    }

    /// SpectatorD's own cases (spectator/perc_buckets_test.cc), and its sanity check: a
    /// value is never above its bucket's value.
    #[test]
    fn bucket_indexes_are_spectatords() {
        assert_eq!(buckets().values.len(), 276);
        for (v, i) in [(-1, 0), (0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (87, 25)] {
            assert_eq!(bucket_index(v), i, "{v}");
        }
        assert_eq!(bucket_index(i64::MAX), 275);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = (x >> (x % 60)) as i64;
            assert!(v <= buckets().values[bucket_index(v)], "{v}");
        }
    }
}
