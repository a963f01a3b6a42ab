//! Raw events: what agents, OTLP log exports and `POST /api/v1/events/{stream}` deliver. An
//! event is a JSON object in a named stream. Events go on to the live queries subscribed to
//! their stream ([`crate::live`]); an event nobody asked for costs a count and nothing more,
//! as in Mantis. Counts per stream are kept as series in the store
//! (`name=argus.events.received, stream=<s>`, summed per step), so the graph API shows
//! event rates.

use std::collections::BTreeMap;
use std::sync::Arc;

use argus_tsdb::{DsType, Sample, Store, TagMap};

use crate::live::LiveHub;
use parking_lot::Mutex;

/// Distinct streams the server keeps counts for; events of further streams are refused, so
/// a client cannot grow the server's state without bound.
pub const MAX_STREAMS: usize = 1024;
/// Largest event the server accepts (bytes of JSON).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

/// One event: when it happened, the JSON object itself (parsed once, where it was checked),
/// and the live subscriptions an agent found it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub ts_ms: i64,
    pub value: serde_json::Value,
    /// Size of the JSON text it came as.
    pub bytes: usize,
    /// Subscriptions the agent evaluated and found matching; empty when not evaluated.
    pub subscriptions: Vec<u64>,
}

impl Event {
    /// An event not evaluated by an agent.
    pub fn new(ts_ms: i64, value: serde_json::Value, bytes: usize) -> Event {
        Event {
            ts_ms,
            value,
            bytes,
            subscriptions: Vec::new(),
        }
    }
}

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

/// Checks a stream name: it is a tag value of the count series.
pub fn valid_stream(name: &str) -> bool {
    let n = name.chars().count();
    (1..=120).contains(&n)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '^' | '~'))
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
        if !valid_stream(stream) {
            return Err(EventError::InvalidStream(crate::validation::clip(stream)));
        }
        {
            let mut streams = self.streams.lock();
            if !streams.contains_key(stream) && streams.len() >= MAX_STREAMS {
                return Err(EventError::TooManyStreams);
            }
            let st = streams.entry(stream.to_string()).or_default();
            st.events += events.len() as u64;
            st.bytes += events.iter().map(|e| e.bytes as u64).sum::<u64>();
        }
        if !events.is_empty() {
            let tags = TagMap::from_pairs([("name", "argus.events.received"), ("stream", stream)]);
            let writer = self.store.writer();
            let id = writer.resolve_as(&tags, DsType::Sum);
            let _ = writer.append_batch(&[Sample {
                id,
                ts_ms: self.store.now_ms(),
                value: events.len() as f64,
            }]);
        }
        self.live
            .deliver(stream, events, crate::live::wall_clock_ms());
        Ok(events.len())
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

/// Parses NDJSON: one JSON object per non-empty line. Each line gives an event (its
/// `timestamp` field in ms when it has one, else `now_ms`) or a reason naming the line.
pub fn parse_ndjson(body: &[u8], now_ms: i64) -> Vec<Result<Event, String>> {
    let mut out = Vec::new();
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let n = i + 1;
        if line.len() > MAX_EVENT_BYTES {
            out.push(Err(format!(
                "line {n}: event of {} bytes is over the {MAX_EVENT_BYTES}-byte limit",
                line.len()
            )));
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(line) {
            Ok(value @ serde_json::Value::Object(_)) => {
                let ts_ms = value
                    .get("timestamp")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(now_ms);
                out.push(Ok(Event::new(ts_ms, value, line.len())));
            }
            Ok(other) => out.push(Err(format!(
                "line {n}: expected a JSON object, got {}",
                match other {
                    serde_json::Value::Array(_) => "an array",
                    serde_json::Value::String(_) => "a string",
                    serde_json::Value::Number(_) => "a number",
                    serde_json::Value::Bool(_) => "a boolean",
                    _ => "null",
                }
            ))),
            Err(e) => out.push(Err(format!("line {n}: invalid JSON: {e}"))),
        }
    }
    out
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
}
