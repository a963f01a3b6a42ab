//! Running an MQL query over a stream of events, in MQL's order: sample → where → window →
//! group → select/aggregate → having → order → limit.
//!
//! The engine is driven by its caller's clock: `push` an event at a time, `tick` when time
//! passes without events (windows close), `finish` when the stream ends. The same engine
//! serves `argus mql` (a virtual clock over a file) and live subscriptions (the wall clock),
//! so both produce the same rows. On the live path the agents have already sampled and
//! filtered; the server feeds their events to [`Engine::push_matched`].

use std::collections::VecDeque;

use ahash::AHashMap;
use serde_json::{Map, Number, Value};

use super::ast::*;
use crate::predicate::{Path, Segment};

/// One output row: a JSON object.
pub type Row = Value;

/// Events a window may hold before further ones are dropped (and counted).
pub const MAX_WINDOW_EVENTS: usize = 1_000_000;
/// Groups one window (or a whole finite stream) may hold before events of further groups
/// are dropped (and counted).
pub const MAX_GROUPS: usize = 100_000;

/// The sampling decision, shared by the agent (which samples before sending) and `argus mql`.
pub struct Sampler {
    sample: Option<Sample>,
    rng: u64,
    rps_second: i64,
    rps_count: u64,
}

impl Sampler {
    pub fn new(sample: Option<Sample>, seed: u64) -> Sampler {
        Sampler {
            sample,
            rng: seed | 1,
            rps_second: i64::MIN,
            rps_count: 0,
        }
    }

    /// Whether the event passes sampling at `now_ms`.
    pub fn pass(&mut self, event: &Value, now_ms: i64) -> bool {
        let Some(s) = &self.sample else { return true };
        match s.strategy {
            Strategy::All => true,
            Strategy::Random => {
                // xorshift64*: cheap, and good enough to pick 2% of events.
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
                (r >> 11) % s.factor < s.threshold
            }
            Strategy::Sticky => sticky_hash(&s.keys, s.salt, event)
                .is_some_and(|h| h % s.factor < s.threshold),
            Strategy::Rps => {
                let second = now_ms.div_euclid(1000);
                if second != self.rps_second {
                    self.rps_second = second;
                    self.rps_count = 0;
                }
                self.rps_count += 1;
                self.rps_count <= s.threshold
            }
        }
    }
}

/// FNV-1a over the string forms of the present key values and the salt: the same on every
/// agent and the server, so a key's events are all kept or all dropped everywhere. `None`
/// when no key is present (such events are not sampled in).
pub fn sticky_hash(keys: &[Path], salt: u64, event: &Value) -> Option<u64> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    let mut any = false;
    for k in keys {
        if let Some(v) = k.get(event) {
            any = true;
            match v {
                Value::String(s) => eat(s.as_bytes()),
                other => eat(other.to_string().as_bytes()),
            }
        }
    }
    if !any {
        return None;
    }
    eat(salt.to_string().as_bytes());
    Some(h)
}

/// A query's running state.
pub struct Engine {
    q: Query,
    sampler: Sampler,
    /// Matched events not yet in a closed window (or, without a window, kept for the end):
    /// with their arrival time.
    buffer: VecDeque<(i64, Value)>,
    /// Time windows: when the first window started (the first event or `start`).
    origin: Option<i64>,
    /// The next time window to close: its start.
    next_start: i64,
    /// Rows emitted so far without a window (for `limit`).
    emitted: u64,
    finished: bool,
    /// Events dropped because a window or the group table was full.
    pub dropped: u64,
}

impl Engine {
    /// `seed` drives random sampling (fixed seeds give repeatable runs).
    pub fn new(q: Query, seed: u64) -> Engine {
        let sampler = Sampler::new(q.sample.clone(), seed);
        Engine {
            q,
            sampler,
            buffer: VecDeque::new(),
            origin: None,
            next_start: 0,
            emitted: 0,
            finished: false,
            dropped: 0,
        }
    }

    pub fn query(&self) -> &Query {
        &self.q
    }

    /// Starts the time windows at `origin_ms` (a subscription's start, or 0 for a file's
    /// virtual clock) instead of at the first event.
    pub fn start_at(&mut self, origin_ms: i64) {
        self.origin = Some(origin_ms);
        self.next_start = origin_ms;
    }

    /// Whether nothing more can come out (`limit` reached without a window, or finished).
    pub fn done(&self) -> bool {
        self.finished
            || (self.q.window.is_none()
                && self.q.order_by.is_none()
                && !self.q.is_aggregate()
                && self.q.limit.is_some_and(|l| self.emitted >= l))
    }

    /// An event arrives at `now_ms`: sampling and `where` first.
    pub fn push(&mut self, event: &Value, now_ms: i64) -> Vec<Row> {
        if self.done() || !self.sampler.pass(event, now_ms) || !self.q.filter.matches(event) {
            return self.tick(now_ms);
        }
        self.push_matched(event.clone(), now_ms)
    }

    /// An event that already passed sampling and `where` (at an agent) arrives at `now_ms`.
    pub fn push_matched(&mut self, event: Value, now_ms: i64) -> Vec<Row> {
        if self.done() {
            return Vec::new();
        }
        let mut out = self.tick(now_ms);
        match self.q.window {
            None if !self.q.is_aggregate() && self.q.order_by.is_none() => {
                if self.q.limit.is_none_or(|l| self.emitted < l) {
                    out.push(project(&self.q, &event, now_ms));
                    self.emitted += 1;
                }
            }
            Some(Window::Count { events }) => {
                self.buffer.push_back((now_ms, event));
                if self.buffer.len() as u64 >= events {
                    let events: Vec<(i64, Value)> = self.buffer.drain(..).collect();
                    out.extend(self.rows(&events, now_ms));
                }
            }
            None => {
                if self.buffer.len() >= MAX_WINDOW_EVENTS {
                    self.dropped += 1;
                } else {
                    self.buffer.push_back((now_ms, event));
                }
            }
            Some(_) => {
                if self.origin.is_none() {
                    self.start_at(now_ms);
                }
                if self.buffer.len() >= MAX_WINDOW_EVENTS {
                    self.dropped += 1;
                } else {
                    self.buffer.push_back((now_ms, event));
                }
            }
        }
        out
    }

    /// Time has reached `now_ms`: every time window that ended by then closes.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Row> {
        self.close_windows(now_ms, false)
    }

    /// Closes time windows up to `now_ms`, or every window holding events when `all`.
    /// Windows without events produce no rows and are stepped over in one go.
    fn close_windows(&mut self, now_ms: i64, all: bool) -> Vec<Row> {
        let (span, shift) = match self.q.window {
            Some(Window::Tumbling { span_ms }) => (span_ms, span_ms),
            Some(Window::Sliding { span_ms, shift_ms }) => (span_ms, shift_ms),
            _ => return Vec::new(),
        };
        let Some(origin) = self.origin else {
            return Vec::new();
        };
        // The first window start at or after `from` that still covers time `t`.
        let first_covering = |t: i64, from: i64| {
            let k = (t - span - origin).div_euclid(shift) + 1;
            from.max(origin + k * shift)
        };
        let mut out = Vec::new();
        loop {
            match self.buffer.front().map(|(t, _)| *t) {
                None => {
                    if !all {
                        self.next_start = first_covering(now_ms, self.next_start);
                    }
                    break;
                }
                Some(t) if t >= self.next_start + span => {
                    self.next_start = first_covering(t, self.next_start);
                }
                Some(_) => {}
            }
            if !all && self.next_start + span > now_ms {
                break;
            }
            out.extend(self.close_window(self.next_start, span, shift));
        }
        out
    }

    fn close_window(&mut self, start: i64, span: i64, shift: i64) -> Vec<Row> {
        let end = start + span;
        let events: Vec<(i64, Value)> = self
            .buffer
            .iter()
            .filter(|(t, _)| *t >= start && *t < end)
            .cloned()
            .collect();
        self.next_start = start + shift;
        // Events before the next window's start belong to no later window.
        while self.buffer.front().is_some_and(|(t, _)| *t < self.next_start) {
            self.buffer.pop_front();
        }
        self.rows(&events, end)
    }

    /// The stream ended at `now_ms`: what is open closes, and what waited for the end comes
    /// out.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Row> {
        if self.finished {
            return Vec::new();
        }
        let out = match self.q.window {
            Some(Window::Tumbling { .. }) | Some(Window::Sliding { .. }) => {
                self.close_windows(now_ms, true)
            }
            Some(Window::Count { .. }) | None
                if !self.buffer.is_empty()
                    || (self.q.window.is_none() && self.q.is_aggregate()) =>
            {
                let events: Vec<(i64, Value)> = self.buffer.drain(..).collect();
                self.rows(&events, now_ms)
            }
            _ => Vec::new(),
        };
        self.finished = true;
        out
    }

    /// The rows of one window (or of the whole stream): grouped, aggregated, filtered,
    /// ordered and cut.
    fn rows(&mut self, events: &[(i64, Value)], now_ms: i64) -> Vec<Row> {
        let mut rows: Vec<Row> = if self.q.is_aggregate() {
            let mut order: Vec<Vec<Value>> = Vec::new();
            let mut groups: AHashMap<String, Vec<&Value>> = AHashMap::new();
            for (_, e) in events {
                let key: Vec<Value> = self
                    .q
                    .group_by
                    .iter()
                    .map(|p| p.get(e).cloned().unwrap_or(Value::Null))
                    .collect();
                let text = Value::Array(key.clone()).to_string();
                let full = groups.len() >= MAX_GROUPS;
                match groups.get_mut(&text) {
                    Some(members) => members.push(e),
                    None if full => self.dropped += 1,
                    None => {
                        groups.insert(text, vec![e]);
                        order.push(key);
                    }
                }
            }
            if order.is_empty() && self.q.group_by.is_empty() {
                // A finite stream with no matching event still answers: counts of 0.
                vec![aggregate_row(&self.q, &[], now_ms)]
            } else {
                order
                    .iter()
                    .map(|key| {
                        let members = &groups[&Value::Array(key.clone()).to_string()];
                        aggregate_row(&self.q, members, now_ms)
                    })
                    .collect()
            }
        } else {
            events
                .iter()
                .map(|(t, e)| project(&self.q, e, *t))
                .collect()
        };
        if let Some(having) = &self.q.having {
            rows.retain(|r| having.matches(r));
        }
        if let Some(o) = &self.q.order_by {
            // For plain selections the order is by the event's field, which the projection
            // may have renamed or dropped: sort by what the row holds at that path.
            rows.sort_by(|a, b| {
                let ord = total_cmp(o.path.get(a), o.path.get(b));
                if o.descending { ord.reverse() } else { ord }
            });
        }
        if let Some(limit) = self.q.limit {
            rows.truncate(limit as usize);
        }
        rows
    }
}

/// A total order for sorting: nil first, then booleans, numbers, strings, lists, maps.
fn total_cmp(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(Value::Array(_)) => 4,
            Some(Value::Object(_)) => 5,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Writes `value` into `row` at the path's nested position (list indexes become keys).
fn put(row: &mut Map<String, Value>, path: &Path, value: Value) {
    let keys: Vec<String> = path
        .0
        .iter()
        .map(|s| match s {
            Segment::Key(k) => k.clone(),
            Segment::Index(i) => i.to_string(),
            Segment::Any => "*".to_string(),
        })
        .collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut m = row;
    for k in parents {
        let slot = m
            .entry(k.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(next) = slot else { return };
        m = next;
    }
    m.insert(last.clone(), value);
}

/// A non-aggregate query's row for one event.
fn project(q: &Query, event: &Value, now_ms: i64) -> Row {
    let items = match &q.select {
        Select::Star => return event.clone(),
        Select::Items(items) => items,
    };
    let mut row = Map::new();
    for item in items {
        write_item(&mut row, item, event, now_ms);
    }
    Value::Object(row)
}

fn write_item(row: &mut Map<String, Value>, item: &SelectItem, event: &Value, now_ms: i64) {
    let named = |row: &mut Map<String, Value>, default: &str, v: Value| match &item.alias {
        Some(a) => {
            row.insert(a.clone(), v);
        }
        None => {
            row.insert(default.to_string(), v);
        }
    };
    match &item.expr {
        SelectExpr::Path(p) => {
            if let Some(v) = p.get(event) {
                match &item.alias {
                    Some(a) => {
                        row.insert(a.clone(), v.clone());
                    }
                    None => put(row, p, v.clone()),
                }
            }
        }
        SelectExpr::Prefix(prefix) => {
            if let Value::Object(m) = event {
                for (k, v) in m.iter().filter(|(k, _)| k.starts_with(prefix.as_str())) {
                    if !v.is_null() {
                        row.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        SelectExpr::Literal(v) => {
            let name = match v {
                Value::String(s) => s.clone(),
                Value::Null => return,
                other => other.to_string(),
            };
            named(row, &name, v.clone());
        }
        SelectExpr::Tick => named(row, "tick", Value::from(now_ms)),
        SelectExpr::Aggregate { .. } => {}
    }
}

/// One group's row: aggregates by name, other items from the group's first event.
fn aggregate_row(q: &Query, members: &[&Value], now_ms: i64) -> Row {
    let Select::Items(items) = &q.select else {
        return Value::Null;
    };
    let mut row = Map::new();
    let scale = q
        .sample
        .as_ref()
        .filter(|s| s.extrapolate && s.strategy != Strategy::All && s.threshold > 0)
        .map(|s| s.factor as f64 / s.threshold as f64);
    for item in items {
        match &item.expr {
            SelectExpr::Aggregate { func, arg } => {
                let name = item.alias.clone().unwrap_or_else(|| {
                    let inner = match arg {
                        AggArg::Star => "*".to_string(),
                        AggArg::Path { path, .. } => path.dotted(),
                    };
                    format!("{}({inner})", func.name())
                });
                let mut v = aggregate(*func, arg, members);
                if let Some(k) = scale
                    && matches!(func, AggFunc::Count | AggFunc::Sum)
                    && let Some(x) = v.as_f64()
                {
                    v = number(x * k);
                }
                if !v.is_null() {
                    row.insert(name, v);
                }
            }
            _ => {
                if let Some(first) = members.first() {
                    write_item(&mut row, item, first, now_ms);
                }
            }
        }
    }
    Value::Object(row)
}

fn aggregate(func: AggFunc, arg: &AggArg, members: &[&Value]) -> Value {
    let mut values: Vec<&Value> = match arg {
        AggArg::Star => members.to_vec(),
        AggArg::Path { path, .. } => members.iter().filter_map(|e| path.get(e)).collect(),
    };
    if let AggArg::Path { distinct: true, .. } = arg {
        let mut seen = ahash::AHashSet::new();
        values.retain(|v| seen.insert(v.to_string()));
    }
    let numbers = || values.iter().filter_map(|v| v.as_f64());
    match func {
        AggFunc::Count => Value::from(values.len() as u64),
        AggFunc::List => Value::Array(values.into_iter().cloned().collect()),
        AggFunc::Sum => {
            if values.iter().all(|v| v.is_i64()) {
                let total = values
                    .iter()
                    .filter_map(|v| v.as_i64())
                    .try_fold(0i64, |a, b| a.checked_add(b));
                if let Some(t) = total {
                    return Value::from(t);
                }
            }
            number(numbers().sum())
        }
        AggFunc::Min | AggFunc::Max => {
            let pick = |a: &&Value, b: &&Value| total_cmp(Some(a), Some(b));
            let v = if func == AggFunc::Min {
                values.iter().copied().min_by(pick)
            } else {
                values.iter().copied().max_by(pick)
            };
            v.cloned().unwrap_or(Value::Null)
        }
        AggFunc::Average => {
            let (n, sum) = numbers().fold((0u64, 0.0), |(n, s), x| (n + 1, s + x));
            if n == 0 {
                Value::Null
            } else {
                number(sum / n as f64)
            }
        }
        AggFunc::Percentile(rank) => {
            let mut xs: Vec<f64> = numbers().filter(|x| !x.is_nan()).collect();
            if xs.is_empty() {
                return Value::Null;
            }
            xs.sort_by(f64::total_cmp);
            // MQL's rule, the element at ceil(n·rank), kept inside the list (MQL reads past
            // its end for the top ranks).
            let i = ((xs.len() as f64 * rank / 100.0).ceil() as usize).min(xs.len() - 1);
            number(xs[i])
        }
    }
}

/// A JSON number: an integer when the value is one (and fits), else a double; NaN and
/// infinities, which JSON cannot carry, are null.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}
