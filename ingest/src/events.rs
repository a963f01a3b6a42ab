//! Raw events: what agents, OTLP log exports and `POST /api/v1/events/{stream}` deliver. An
//! event is a JSON object in a named stream. Events go on to the live queries subscribed to
//! their stream ([`crate::live`]); an event nobody asked for costs a count and nothing more,
//! as in Mantis. Counts per stream are kept as series in the store
//! (`name=argus.events.received, stream=<s>`, summed per step), so the graph API shows
//! event rates.

use std::collections::BTreeMap;
use std::sync::Arc;

use argus_tsdb::{DsType, Sample, Store, TagMap};

pub use crate::event::Event;
use crate::live::LiveHub;
use crate::metrics::ServerMetrics;
use crate::outcome::{Kind, Outcome};
use crate::validation::{Refusals, RejectReason, Rejection};
use parking_lot::Mutex;

/// Distinct streams the server keeps counts for; events of further streams are refused, so
/// a client cannot grow the server's state without bound.
pub const MAX_STREAMS: usize = 1024;
/// Largest event the server accepts (bytes of JSON): the contract's, which agents apply too.
pub use argus_proto::rules::MAX_EVENT_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error(
        "invalid stream name {0:?}: 1 to 120 characters of -._A-Za-z0-9^~ (it becomes a tag value)"
    )]
    InvalidStream(String),
    #[error("too many event streams: {MAX_STREAMS} already exist")]
    TooManyStreams,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub events: u64,
    pub bytes: u64,
}

pub struct EventHub {
    store: Arc<Store>,
    streams: Mutex<BTreeMap<String, StreamStats>>,
    pub live: Arc<LiveHub>,
}

fn check_stream(name: &str) -> Result<(), EventError> {
    if valid_stream(name) {
        Ok(())
    } else {
        Err(EventError::InvalidStream(crate::validation::clip(name)))
    }
}

/// Checks a stream name: it is a tag value of the count series.
pub fn valid_stream(name: &str) -> bool {
    let n = name.chars().count();
    (1..=120).contains(&n) && name.chars().all(argus_proto::rules::valid_char)
}

impl EventHub {
    pub fn new(store: Arc<Store>, live: Arc<LiveHub>) -> Self {
        EventHub {
            store,
            streams: Mutex::new(BTreeMap::new()),
            live,
        }
    }

    /// Takes a batch of events of one stream. Returns how many were accepted.
    pub fn publish(&self, stream: &str, events: &[Event]) -> Result<usize, EventError> {
        // One reading of the one clock: the count sample and the live delivery agree.
        let now = self.store.now_ms();
        self.count_at(
            stream,
            events.len(),
            events.iter().map(|e| e.bytes as u64).sum(),
            now,
        )?;
        self.live.deliver(stream, events, now);
        Ok(events.len())
    }

    /// Whether any live query reads `stream` now: when none does, its events need not be
    /// built at all, only checked and counted.
    pub fn wanted(&self, stream: &str) -> bool {
        self.live.snapshot().values().any(|s| s.reads(stream))
    }

    /// Counts `events` events of `bytes` bytes of `stream`, in the stream's stats and its
    /// count series.
    pub fn count(&self, stream: &str, events: usize, bytes: u64) -> Result<(), EventError> {
        self.count_at(stream, events, bytes, self.store.now_ms())
    }

    fn count_at(
        &self,
        stream: &str,
        events: usize,
        bytes: u64,
        now_ms: i64,
    ) -> Result<(), EventError> {
        check_stream(stream)?;
        {
            let mut streams = self.streams.lock();
            if !streams.contains_key(stream) && streams.len() >= MAX_STREAMS {
                return Err(EventError::TooManyStreams);
            }
            let st = streams.entry(stream.to_string()).or_default();
            st.events += events as u64;
            st.bytes += bytes;
        }
        if events > 0 {
            let tags = TagMap::from_pairs([("name", "argus.events.received"), ("stream", stream)]);
            let writer = self.store.writer();
            let id = writer.resolve_as(&tags, DsType::Sum);
            let _ = writer.append_batch(&[Sample {
                id,
                ts_ms: now_ms,
                value: events as f64,
            }]);
        }
        Ok(())
    }

    /// Events and bytes received per stream, sorted by stream.
    pub fn stats(&self) -> Vec<(String, StreamStats)> {
        self.streams
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Parses one NDJSON line (line number `n`) into an event: its `timestamp` field in ms
/// when it has one, else `now_ms`. `None` for a blank line.
fn parse_line(line: &[u8], n: usize, now_ms: i64) -> Option<Result<Event, String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if line.len() > MAX_EVENT_BYTES {
        return Some(Err(too_long(n, line.len())));
    }
    Some(match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(value @ serde_json::Value::Object(_)) => {
            let ts_ms = value
                .get("timestamp")
                .and_then(serde_json::Value::as_i64)
                .unwrap_or(now_ms);
            Ok(Event::new(ts_ms, value, line.len()))
        }
        Ok(other) => Err(not_an_object(n, json_kind(&other))),
        Err(e) => Err(format!("line {n}: invalid JSON: {e}")),
    })
}

/// Checks one NDJSON line as [`parse_line`] does, without building it: for events that no
/// live query reads. `None` for a blank line, else the line's size or why it is refused.
fn check_line(line: &[u8], n: usize) -> Option<Result<usize, String>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let first = line.iter().position(|b| !b.is_ascii_whitespace())?;
    if line.len() > MAX_EVENT_BYTES {
        return Some(Err(too_long(n, line.len())));
    }
    Some(
        match serde_json::from_slice::<serde::de::IgnoredAny>(line) {
            Ok(_) if line[first] == b'{' => Ok(line.len()),
            // Valid JSON that is not an object: parsed (it is one line) to name its kind.
            Ok(_) => Err(match serde_json::from_slice::<serde_json::Value>(line) {
                Ok(other) => not_an_object(n, json_kind(&other)),
                Err(e) => format!("line {n}: invalid JSON: {e}"),
            }),
            Err(e) => Err(format!("line {n}: invalid JSON: {e}")),
        },
    )
}

fn too_long(n: usize, len: usize) -> String {
    format!("line {n}: event of {len} bytes is over the {MAX_EVENT_BYTES}-byte limit")
}

fn not_an_object(n: usize, kind: &str) -> String {
    format!("line {n}: expected a JSON object, got {kind}")
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Null => "null",
    }
}

/// Parses NDJSON: one JSON object per non-empty line. Each line gives an event (its
/// `timestamp` field in ms when it has one, else `now_ms`) or a reason naming the line.
pub fn parse_ndjson(body: &[u8], now_ms: i64) -> Vec<Result<Event, String>> {
    body.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| parse_line(line, i + 1, now_ms))
        .collect()
}

/// Events of one request taken, and every refusal with the first few reasons.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IntakeOutcome {
    pub accepted: usize,
    pub refusals: Refusals,
}

impl IntakeOutcome {
    /// The request's outcome, its refusals counted in `metrics`.
    pub fn into_outcome(self, metrics: &ServerMetrics) -> Outcome {
        Outcome::taken(Kind::Events, self.accepted, self.refusals, metrics)
    }
}
/// Text parsed into events before they are handed on: what one request holds built at once.
const BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IntakeError {
    #[error("the request body decompresses to more than {limit} bytes (--max-body-bytes)")]
    TooLarge { limit: usize },
    #[error("invalid gzip body: {0}")]
    Gzip(String),
    #[error(transparent)]
    Stream(#[from] EventError),
}

/// A body of NDJSON events taken as it arrives, in pieces of any size: complete lines are
/// handed on in batches and dropped, so a request holds at most a batch of events and one
/// unfinished line, whatever its size. Events of a stream no live query reads are checked
/// and counted, never built.
pub struct NdjsonIntake {
    hub: Arc<EventHub>,
    stream: String,
    now_ms: i64,
    /// For gzip bodies: decompresses into the buffer of unfinished text.
    gzip: Option<flate2::write::MultiGzDecoder<Vec<u8>>>,
    /// Text after the last complete line (identity bodies).
    pending: Vec<u8>,
    /// Bytes of text so far, against `limit`.
    decoded: usize,
    limit: usize,
    /// Lines seen so far.
    lines: usize,
    /// The current line is over the event size limit: it is refused and skipped to its end.
    skipping: bool,
    outcome: IntakeOutcome,
}

impl NdjsonIntake {
    pub fn new(
        hub: Arc<EventHub>,
        stream: &str,
        now_ms: i64,
        gzip: bool,
        limit: usize,
    ) -> Result<Self, EventError> {
        check_stream(stream)?;
        Ok(NdjsonIntake {
            hub,
            stream: stream.to_string(),
            now_ms,
            gzip: gzip.then(|| flate2::write::MultiGzDecoder::new(Vec::new())),
            pending: Vec::new(),
            decoded: 0,
            limit,
            lines: 0,
            skipping: false,
            outcome: IntakeOutcome::default(),
        })
    }

    /// Events taken so far.
    pub fn accepted(&self) -> usize {
        self.outcome.accepted
    }

    /// Takes the next piece of the body.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), IntakeError> {
        use std::io::Write;
        let mut text = match &mut self.gzip {
            Some(decoder) => {
                decoder
                    .write_all(bytes)
                    .map_err(|e| IntakeError::Gzip(e.to_string()))?;
                std::mem::take(decoder.get_mut())
            }
            None => bytes.to_vec(),
        };
        self.decoded += text.len();
        if self.decoded > self.limit {
            return Err(IntakeError::TooLarge { limit: self.limit });
        }
        if self.pending.is_empty() {
            std::mem::swap(&mut self.pending, &mut text);
        } else {
            self.pending.extend_from_slice(&text);
        }
        self.take_lines(false)
    }

    /// The body ended: its last line (with or without a newline) is taken too.
    pub fn finish(mut self) -> Result<IntakeOutcome, IntakeError> {
        if let Some(decoder) = self.gzip.take() {
            let rest = decoder
                .finish()
                .map_err(|e| IntakeError::Gzip(e.to_string()))?;
            self.decoded += rest.len();
            if self.decoded > self.limit {
                return Err(IntakeError::TooLarge { limit: self.limit });
            }
            self.pending.extend_from_slice(&rest);
        }
        self.take_lines(true)?;
        Ok(self.outcome)
    }

    /// Hands on the complete lines of `pending` (all of it at the end of the body), in
    /// batches of about [`BATCH_BYTES`], keeping the unfinished rest.
    fn take_lines(&mut self, at_end: bool) -> Result<(), IntakeError> {
        let complete = if at_end {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    // No line ends here: one too long to take is refused now, and its rest
                    // skipped as it arrives, so that it is never held whole.
                    if !self.skipping && self.pending.len() > MAX_EVENT_BYTES + 1 {
                        self.lines += 1;
                        let n = self.lines;
                        self.refuse(format!(
                            "line {n}: event of more than {MAX_EVENT_BYTES} bytes is over the limit"
                        ));
                        self.skipping = true;
                    }
                    if self.skipping {
                        self.pending.clear();
                    }
                    return Ok(());
                }
            }
        };
        if complete == 0 {
            return Ok(());
        }
        let text = std::mem::take(&mut self.pending);
        let (region, rest) = text.split_at(complete);
        let region = region.strip_suffix(b"\n").unwrap_or(region);
        let mut lines = region.split(|&b| b == b'\n');
        if std::mem::take(&mut self.skipping) {
            // The end of the line refused already.
            lines.next();
        }
        let wanted = self.hub.wanted(&self.stream);
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        let (mut unbuilt, mut unbuilt_bytes) = (0usize, 0u64);
        for line in lines {
            self.lines += 1;
            let n = self.lines;
            if wanted {
                match parse_line(line, n, self.now_ms) {
                    None => {}
                    Some(Ok(event)) => {
                        batch_bytes += event.bytes;
                        batch.push(event);
                        if batch_bytes >= BATCH_BYTES {
                            self.hand_on(&mut batch)?;
                            batch_bytes = 0;
                        }
                    }
                    Some(Err(reason)) => self.refuse(reason),
                }
            } else {
                match check_line(line, n) {
                    None => {}
                    Some(Ok(len)) => {
                        unbuilt += 1;
                        unbuilt_bytes += len as u64;
                    }
                    Some(Err(reason)) => self.refuse(reason),
                }
            }
        }
        self.hand_on(&mut batch)?;
        if unbuilt > 0 {
            self.hub.count(&self.stream, unbuilt, unbuilt_bytes)?;
            self.outcome.accepted += unbuilt;
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    fn hand_on(&mut self, batch: &mut Vec<Event>) -> Result<(), IntakeError> {
        if !batch.is_empty() {
            self.outcome.accepted += self.hub.publish(&self.stream, batch)?;
            batch.clear();
        }
        Ok(())
    }

    fn refuse(&mut self, reason: String) {
        self.outcome
            .refusals
            .add(Rejection::new(RejectReason::InvalidValue, reason));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_are_events_or_reasons() {
        let body = b"{\"a\":1,\"timestamp\":5}\n\n[1]\n{bad\r\n{\"b\":2}";
        let got = parse_ndjson(body, 99);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().ts_ms, 5);
        assert_eq!(
            got[1].as_ref().unwrap_err(),
            "line 3: expected a JSON object, got an array"
        );
        assert!(
            got[2]
                .as_ref()
                .unwrap_err()
                .starts_with("line 4: invalid JSON")
        );
        assert_eq!(got[3].as_ref().unwrap().ts_ms, 99);
    }

    #[test]
    fn streams_are_counted_and_bounded() {
        let hub = EventHub::new(
            Arc::new(Store::new(argus_tsdb::StoreConfig::default())),
            Arc::new(LiveHub::default()),
        );
        let ev = Event::new(0, serde_json::json!({}), 2);
        assert_eq!(hub.publish("requests", &[ev.clone(), ev.clone()]), Ok(2));
        assert_eq!(hub.stats()[0].1.events, 2);
        assert!(matches!(
            hub.publish("a b", &[ev]),
            Err(EventError::InvalidStream(_))
        ));
    }

    #[test]
    fn counts_and_live_delivery_read_the_stores_clock() {
        use std::sync::atomic::{AtomicI64, Ordering};
        let t0 = 1_000_000_020_000;
        let now = Arc::new(AtomicI64::new(t0));
        let clock_now = now.clone();
        let store = Arc::new(Store::with_clock(
            argus_tsdb::StoreConfig::default(),
            Arc::new(move || clock_now.load(Ordering::Relaxed)),
        ));
        let live = Arc::new(LiveHub::new(store.clock(), 10));
        let hub = EventHub::new(store.clone(), live.clone());
        let mut sub = live
            .subscribe("select count(*) from s window 1", None, "t", None)
            .unwrap();
        assert_eq!(sub.sub.started_ms, t0);
        now.store(t0 + 100, Ordering::Relaxed);
        let ev = Event::new(0, serde_json::json!({"a": 1}), 8);
        assert_eq!(hub.publish("s", &[ev]), Ok(1));
        // The window [t0, t0 + 1 s) is still open on the store's clock (the wall clock is
        // years later and would have closed it).
        assert!(sub.rows.try_recv().is_err());
        now.store(t0 + 1_000, Ordering::Relaxed);
        live.tick(live.now_ms());
        assert_eq!(sub.rows.try_recv().unwrap()["COUNT(*)"], 1);
        // The count sample was stored: its time is the store's clock (a wall-clock time,
        // years ahead of it, would be refused as too far in the future).
        assert_eq!(store.samples_stored(), 1);
    }

    fn hub() -> Arc<EventHub> {
        Arc::new(EventHub::new(
            Arc::new(Store::new(argus_tsdb::StoreConfig::default())),
            Arc::new(LiveHub::default()),
        ))
    }

    /// What [`parse_ndjson`] makes of a whole body, as an intake outcome.
    fn whole(body: &[u8]) -> IntakeOutcome {
        let mut want = IntakeOutcome::default();
        for r in parse_ndjson(body, 0) {
            match r {
                Ok(_) => want.accepted += 1,
                Err(reason) => want
                    .refusals
                    .add(Rejection::new(RejectReason::InvalidValue, reason)),
            }
        }
        want
    }

    fn take_in_pieces(
        hub: &Arc<EventHub>,
        body: &[u8],
        cuts: &[usize],
        gzip: bool,
    ) -> IntakeOutcome {
        let mut intake = NdjsonIntake::new(hub.clone(), "requests", 0, gzip, 1 << 30).unwrap();
        let mut from = 0;
        for &cut in cuts.iter().chain([&body.len()]) {
            let cut = cut.clamp(from, body.len());
            intake.push(&body[from..cut]).unwrap();
            from = cut;
        }
        intake.finish().unwrap()
    }

    const BODY: &[u8] = b"{\"a\":1,\"timestamp\":5}\n\n[1]\n{bad\r\n{\"b\":2}\n  \n\"s\"\n{\"c\":[1,{\"d\":null}]}\r\n7\n{\"e\":true}";

    #[test]
    fn a_body_taken_in_any_pieces_is_taken_as_a_whole_one() {
        let want = whole(BODY);
        assert_eq!((want.accepted, want.refusals.total()), (4, 4));
        for wanted in [false, true] {
            let hub = hub();
            let _live = wanted.then(|| {
                hub.live
                    .subscribe("select * from requests", None, "test", None)
                    .unwrap()
            });
            assert_eq!(hub.wanted("requests"), wanted);
            for a in 0..=BODY.len() {
                for b in [a, a + 1, a + 7, BODY.len()] {
                    let got = take_in_pieces(&hub, BODY, &[a, b], false);
                    assert_eq!(got, want, "wanted={wanted}, cut at {a} and {b}");
                }
            }
            let one_byte_at_a_time: Vec<usize> = (0..BODY.len()).collect();
            assert_eq!(take_in_pieces(&hub, BODY, &one_byte_at_a_time, false), want);
        }
    }

    #[test]
    fn a_gzip_body_is_taken_as_it_decompresses() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(BODY).unwrap();
        let gz = enc.finish().unwrap();
        let hub = hub();
        for cut in 0..gz.len() {
            assert_eq!(
                take_in_pieces(&hub, &gz, &[cut], true),
                whole(BODY),
                "cut at {cut}"
            );
        }
        let mut intake = NdjsonIntake::new(hub, "requests", 0, true, 1 << 20).unwrap();
        assert!(matches!(
            intake.push(b"not gzip at all"),
            Err(IntakeError::Gzip(_))
        ));
    }

    #[test]
    fn a_line_too_long_is_refused_without_being_held_and_the_next_ones_taken() {
        let hub = hub();
        let mut intake = NdjsonIntake::new(hub.clone(), "requests", 0, false, 1 << 30).unwrap();
        intake.push(b"{\"first\":1}\n{\"long\":\"").unwrap();
        let filler = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            intake.push(&filler).unwrap();
            assert!(intake.pending.len() <= MAX_EVENT_BYTES + filler.len() + 16);
        }
        intake.push(b"\"}\n{\"after\":1}\n").unwrap();
        let got = intake.finish().unwrap();
        assert_eq!((got.accepted, got.refusals.total()), (2, 1));
        assert!(
            got.refusals.reasons()[0].starts_with("line 2: event of more than"),
            "{:?}",
            got.refusals.reasons()
        );
        assert_eq!(hub.stats()[0].1.events, 2);
    }

    #[test]
    fn a_body_over_the_limit_stops_with_what_came_before_taken() {
        let hub = hub();
        let mut intake = NdjsonIntake::new(hub.clone(), "requests", 0, false, 30).unwrap();
        intake.push(b"{\"a\":1}\n{\"b\":2}\n").unwrap();
        assert_eq!(
            intake.push(b"{\"c\":3}\n{\"d\":4}\n"),
            Err(IntakeError::TooLarge { limit: 30 })
        );
        assert_eq!(intake.accepted(), 2);
        assert!(matches!(
            NdjsonIntake::new(hub, "a b", 0, false, 30),
            Err(EventError::InvalidStream(_))
        ));
    }
}
