//! MQL's `join`: primary events meet events of other streams that carry the same key within
//! a window (Mantis's `from a join b N seconds on key`), before sampling, `where` and the rest
//! of the query see them.
//!
//! Each side waits at most the window for the other: a primary event that finds a joining
//! event of its key within the window comes out at once, merged with the first such event
//! (in arrival order); one that finds none waits, and the first joining event of its key
//! that arrives within the window takes it. Events that find no partner in time are dropped
//! (an inner join). A joined event is the joining event's fields overlaid with the primary
//! event's, at the later of the two times. Mantis runs the same join with RxJava's `join`
//! over a `groupBy` of the primary stream; it also pairs each primary event with the first
//! joining event of its key, but only ever one per key for the life of the query, which this
//! does not copy.
//!
//! Memory is bounded: at most [`MAX_JOIN_HELD`] events wait on each join; more are dropped
//! and counted.

use std::collections::{HashMap, VecDeque};

use serde_json::Value;

use crate::ast::{Join, Query};

/// Events one join holds at most (primary and joining sides together).
pub const MAX_JOIN_HELD: usize = 1_000_000;

/// An event with its time (arrival, or its own in event-time mode).
pub(crate) type Timed = (i64, Value);

/// Every join of a query, applied in order.
pub(crate) struct Joins {
    primary: Vec<String>,
    stages: Vec<Stage>,
}

struct Stage {
    join: Join,
    /// Primary events waiting for a joining event, by key, in arrival order.
    waiting: HashMap<String, VecDeque<Timed>>,
    /// Joining events waiting for primary events, by key, in arrival order.
    partners: HashMap<String, VecDeque<Timed>>,
    held: usize,
    /// The latest time seen: what the window counts back from.
    latest: i64,
    /// When everything was last swept for expired events.
    swept: i64,
}

impl Joins {
    /// `None` for a query without `join`.
    pub(crate) fn new(q: &Query) -> Option<Joins> {
        (!q.joins.is_empty()).then(|| Joins {
            primary: q.from.clone(),
            stages: q
                .joins
                .iter()
                .map(|j| Stage {
                    join: j.clone(),
                    waiting: HashMap::new(),
                    partners: HashMap::new(),
                    held: 0,
                    latest: i64::MIN,
                    swept: i64::MIN,
                })
                .collect(),
        })
    }

    /// An event of `stream` at `t`: the joined events it completes, each with its time.
    /// Events a full join could not hold are counted in `dropped`.
    pub(crate) fn push(
        &mut self,
        stream: &str,
        event: &Value,
        t: i64,
        dropped: &mut u64,
    ) -> Vec<Timed> {
        let mut flowing: Vec<Timed> = if self.primary.iter().any(|s| s == stream) {
            vec![(t, event.clone())]
        } else {
            Vec::new()
        };
        for stage in &mut self.stages {
            let mut out = Vec::new();
            // A stream on both sides (a self-join) meets itself: joining side first.
            if stage.join.streams.iter().any(|s| s == stream) {
                out.extend(stage.partner(t, event.clone(), dropped));
            }
            for primary in flowing {
                out.extend(stage.primary(primary, dropped));
            }
            flowing = out;
        }
        flowing
    }

    /// Time has reached `now`: events older than their window go.
    pub(crate) fn tick(&mut self, now: i64) {
        for stage in &mut self.stages {
            stage.latest = stage.latest.max(now);
            stage.sweep();
        }
    }

    /// Events waiting on every join.
    pub(crate) fn pending(&self) -> usize {
        self.stages.iter().map(|s| s.held).sum()
    }
}

/// The key's text: numbers as numbers (`1` and `1.0` are one key, as `==` says), strings
/// apart from other types. Missing or null: no key.
fn key_text(join: &Join, event: &Value) -> Option<String> {
    match join.key.get(event)? {
        Value::Null => None,
        Value::Number(n) => Some(format!("n{}", n.as_f64()?)),
        Value::String(s) => Some(format!("s{s}")),
        other => Some(format!("j{other}")),
    }
}

/// The joining event's fields, then the primary event's over them.
fn merge(partner: &Value, primary: Value) -> Value {
    match (partner, primary) {
        (Value::Object(base), Value::Object(top)) => {
            let mut out = base.clone();
            out.extend(top);
            Value::Object(out)
        }
        (_, primary) => primary,
    }
}

impl Stage {
    fn within(&self, a: i64, b: i64) -> bool {
        a.abs_diff(b) <= self.join.within_ms as u64
    }

    /// Drops what fell out of the window; a full sweep at most every half window.
    fn advance(&mut self, t: i64) {
        self.latest = self.latest.max(t);
        if self.latest.saturating_sub(self.swept) >= self.join.within_ms / 2 {
            self.sweep();
        }
    }

    fn sweep(&mut self) {
        let horizon = self.latest.saturating_sub(self.join.within_ms);
        let mut removed = 0;
        for side in [&mut self.waiting, &mut self.partners] {
            side.retain(|_, events| {
                let before = events.len();
                events.retain(|(t, _)| *t >= horizon);
                removed += before - events.len();
                !events.is_empty()
            });
        }
        self.held -= removed;
        self.swept = self.latest;
    }

    fn primary(&mut self, (t, event): Timed, dropped: &mut u64) -> Vec<Timed> {
        let Some(key) = key_text(&self.join, &event) else {
            return Vec::new();
        };
        self.advance(t);
        let found = self.partners.get(&key).and_then(|partners| {
            partners
                .iter()
                .find(|(tj, _)| self.within(t, *tj))
                .map(|(tj, j)| ((*tj).max(t), merge(j, event.clone())))
        });
        if let Some(joined) = found {
            return vec![joined];
        }
        if t < self.latest.saturating_sub(self.join.within_ms) {
            // Older than anything it could still meet.
            return Vec::new();
        }
        if self.held >= MAX_JOIN_HELD {
            *dropped += 1;
        } else {
            self.held += 1;
            self.waiting.entry(key).or_default().push_back((t, event));
        }
        Vec::new()
    }

    fn partner(&mut self, t: i64, event: Value, dropped: &mut u64) -> Vec<Timed> {
        let Some(key) = key_text(&self.join, &event) else {
            return Vec::new();
        };
        self.advance(t);
        let mut out = Vec::new();
        if let Some(waiting) = self.waiting.get_mut(&key) {
            let within_ms = self.join.within_ms as u64;
            let before = waiting.len();
            waiting.retain(|(tp, p)| {
                if tp.abs_diff(t) <= within_ms {
                    out.push(((*tp).max(t), merge(&event, p.clone())));
                    false
                } else {
                    true
                }
            });
            self.held -= before - waiting.len();
            if waiting.is_empty() {
                self.waiting.remove(&key);
            }
        }
        if t < self.latest.saturating_sub(self.join.within_ms) {
            return out;
        }
        if self.held >= MAX_JOIN_HELD {
            *dropped += 1;
        } else {
            self.held += 1;
            self.partners.entry(key).or_default().push_back((t, event));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn joins(q: &str) -> Joins {
        Joins::new(&crate::parse(q).expect("parses")).expect("has a join")
    }

    #[test]
    fn a_primary_event_takes_the_first_partner_within_the_window() {
        let mut j = joins("select * from a join b 1 seconds on k");
        assert!(j.push("b", &json!({"k": 1, "x": 1}), 0, &mut 0).is_empty());
        assert!(
            j.push("b", &json!({"k": 1, "x": 2}), 100, &mut 0)
                .is_empty()
        );
        let out = j.push("a", &json!({"k": 1.0, "y": 3}), 500, &mut 0);
        assert_eq!(out, vec![(500, json!({"k": 1.0, "x": 1, "y": 3}))]);
        // The first partner is out of the window at 1,050; the second is not.
        let out = j.push("a", &json!({"k": 1, "y": 4}), 1050, &mut 0);
        assert_eq!(out, vec![(1050, json!({"k": 1, "x": 2, "y": 4}))]);
    }

    #[test]
    fn waiting_primaries_are_taken_by_the_next_partner_or_expire() {
        let mut j = joins("select * from a join b 1 seconds on k");
        assert!(
            j.push("a", &json!({"k": "x", "n": 1}), 0, &mut 0)
                .is_empty()
        );
        assert!(
            j.push("a", &json!({"k": "x", "n": 2}), 600, &mut 0)
                .is_empty()
        );
        assert_eq!(j.pending(), 2);
        // At 1,500 the first has waited too long; the second is taken.
        let out = j.push("b", &json!({"k": "x", "v": 9}), 1500, &mut 0);
        assert_eq!(out, vec![(1500, json!({"k": "x", "n": 2, "v": 9}))]);
        j.tick(10_000);
        assert_eq!(j.pending(), 0);
    }

    #[test]
    fn events_without_a_key_join_nothing_and_joins_chain() {
        let mut j = joins("select * from a join b 5 seconds on k join c 5 seconds on m");
        assert!(j.push("b", &json!({"k": null}), 0, &mut 0).is_empty());
        assert!(j.push("a", &json!({"k": null}), 0, &mut 0).is_empty());
        assert_eq!(j.pending(), 0);
        assert!(
            j.push("c", &json!({"m": 7, "c": true}), 0, &mut 0)
                .is_empty()
        );
        assert!(j.push("b", &json!({"k": 1, "m": 7}), 10, &mut 0).is_empty());
        let out = j.push("a", &json!({"k": 1, "a": true}), 20, &mut 0);
        assert_eq!(
            out,
            vec![(20, json!({"a": true, "c": true, "k": 1, "m": 7}))]
        );
    }
}
