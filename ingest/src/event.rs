//! One raw event as the server holds it: what conversion builds, the event hub counts and
//! live queries read. A type of its own so that the hub and the live queries both use it
//! without using each other.

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
