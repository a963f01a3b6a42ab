//! Running an MQL query over a stream of events, in MQL's order: join → sample → where →
//! window → group → select/aggregate → having → order → limit.
//!
//! The engine is driven by its caller's clock: `push` an event at a time, `tick` when time
//! passes without events (windows close), `finish` when the stream ends. The same engine
//! serves `argus mql` (a virtual clock over a file) and live subscriptions (the wall clock),
//! so both produce the same rows. On the live path the agents have already sampled and
//! filtered; the server feeds their events to [`Engine::push_matched`]. A query with a
//! `join` reads several streams ([`Engine::push_from`]) and samples and filters here, after
//! the join.
//!
//! Time is the caller's: arrival time, or each event's own time (event-time mode), in
//! which events may come out of order: time windows keep their events ordered, and an
//! event older than every open window is late (counted in [`Engine::late`], dropped). An
//! event-time stream that goes quiet has no later event to close its windows:
//! [`Engine::flush`] closes them without ending the stream.
//!
//! Emission follows MQL's nesting: with a window and `group by`, `having`, `order by` and
//! `limit` apply inside each window; with a window alone they apply to the whole output
//! (so an `order by` waits for the end of the stream, and a `limit` ends the query);
//! without a window, aggregates and `order by` answer at the end. Windows without events
//! give no rows. `as` names any output column: an aggregate, a field (written flat under
//! its new name rather than at its nested position), a literal or `tick()`.

use std::collections::VecDeque;

use ahash::AHashMap;
use serde_json::{Map, Number, Value};

use super::ast::*;
use crate::join::Joins;
use crate::predicate::{Path, Segment};

/// One output row: a JSON object.
pub type Row = Value;

/// Events a window may hold before further ones are dropped (and counted).
pub const MAX_WINDOW_EVENTS: usize = 1_000_000;
/// Groups one window (or a whole finite stream) may hold before events of further groups
/// are dropped (and counted).
pub const MAX_GROUPS: usize = 100_000;
/// Times (ms) are clamped to ±2^52 (some 140,000 years around 1970), so window arithmetic
/// on hostile event times never overflows.
pub const MAX_TIME_MS: i64 = 1 << 52;

fn clamp_time(t: i64) -> i64 {
    t.clamp(-MAX_TIME_MS, MAX_TIME_MS)
}

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
            Strategy::Sticky => {
                sticky_hash(&s.keys, s.salt, event).is_some_and(|h| h % s.factor < s.threshold)
            }
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
    /// The query's joins, which events of every stream go through first.
    joins: Option<Joins>,
    /// What a plain selection writes: the select list without the paths that a shorter
    /// selected path already covers (MQL drops them).
    columns: Vec<SelectItem>,
    /// Matched events not yet in a closed window (or, without a window, kept for the end),
    /// with their time. Time windows keep it ordered by time (an event that arrives out of
    /// order is inserted from the back).
    buffer: VecDeque<(i64, Value)>,
    /// Time windows start at `origin` plus multiples of their shift: 0 (the Unix epoch,
    /// so windows are aligned on their length) unless [`Engine::start_at`] says otherwise.
    origin: i64,
    /// The next time window to close: its start. Every earlier window is closed.
    next_start: i64,
    /// Rows emitted so far, for a `limit` over the whole output.
    emitted: u64,
    /// Rows of a windowed query without `group by` that has an `order by`: MQL orders them
    /// across windows, so they wait for the end of the stream.
    held: Vec<Row>,
    finished: bool,
    /// Events (or held rows) dropped because a window, the group table or the held rows
    /// were full.
    pub dropped: u64,
    /// Events that arrived for a time window already closed (event-time mode, out of order
    /// by more than the window): dropped.
    pub late: u64,
    /// Events (joined events, with a join) that passed sampling and `where` here, in
    /// [`Engine::push`] and [`Engine::push_from`].
    pub passed: u64,
}

impl Engine {
    /// `seed` drives random sampling (fixed seeds give repeatable runs).
    pub fn new(q: Query, seed: u64) -> Engine {
        let sampler = Sampler::new(q.sample.clone(), seed);
        let columns = match &q.select {
            Select::Star => Vec::new(),
            Select::Items(items) => uncovered(items),
        };
        Engine {
            joins: Joins::new(&q),
            q,
            sampler,
            columns,
            buffer: VecDeque::new(),
            origin: 0,
            next_start: -MAX_TIME_MS,
            emitted: 0,
            held: Vec::new(),
            finished: false,
            dropped: 0,
            late: 0,
            passed: 0,
        }
    }

    pub fn query(&self) -> &Query {
        &self.q
    }

    /// Starts the time windows at `origin_ms` (a subscription's start, say): windows start
    /// at `origin_ms` plus multiples of their shift, and an event before `origin_ms` is late.
    /// Without it windows are aligned on the Unix epoch (at multiples of their shift) and no
    /// time is too early for the first event.
    pub fn start_at(&mut self, origin_ms: i64) {
        let origin_ms = clamp_time(origin_ms);
        self.origin = origin_ms;
        self.next_start = origin_ms;
    }

    /// Whether `having`, `order by` and `limit` apply inside each window (a window with
    /// `group by`) rather than to the whole output (MQL's nesting levels).
    fn per_window(&self) -> bool {
        self.q.window.is_some() && !self.q.group_by.is_empty()
    }

    /// Whether nothing more can come out: finished, or a `limit` over the whole output
    /// reached (without an `order by`, which would wait for the end anyway).
    pub fn done(&self) -> bool {
        self.finished
            || (!self.per_window()
                && self.q.order_by.is_none()
                && (self.q.window.is_some() || !self.q.is_aggregate())
                && self.q.limit.is_some_and(|l| self.emitted >= l))
    }

    /// Events in open windows (or kept for the end of the stream), and rows held for it.
    pub fn pending(&self) -> usize {
        self.buffer.len() + self.held.len() + self.joins.as_ref().map_or(0, Joins::pending)
    }

    /// An event of `stream` arrives at `now_ms`: through the joins (if any), then sampling
    /// and `where`, as [`Engine::push`]. Without a join, events of streams other than
    /// `from`'s are not the query's.
    pub fn push_from(&mut self, stream: &str, event: &Value, now_ms: i64) -> Vec<Row> {
        if self.joins.is_none() {
            return if self.q.from.iter().any(|s| s == stream) {
                self.push(event, now_ms)
            } else {
                self.tick(now_ms)
            };
        }
        if self.done() {
            return Vec::new();
        }
        let joined = match &mut self.joins {
            Some(joins) => joins.push(stream, event, now_ms, &mut self.dropped),
            None => Vec::new(),
        };
        let mut out = self.tick(now_ms);
        for (t, event) in joined {
            if self.done() {
                break;
            }
            if self.sampler.pass(&event, t) && self.q.filter.matches(&event) {
                self.passed += 1;
                out.extend(self.push_matched(event, t));
            }
        }
        out
    }

    /// An event of the query's first stream arrives at `now_ms`: sampling and `where`
    /// first (after the joins, if any).
    pub fn push(&mut self, event: &Value, now_ms: i64) -> Vec<Row> {
        if self.joins.is_some() {
            let stream = self.q.from[0].clone();
            return self.push_from(&stream, event, now_ms);
        }
        if self.done() || !self.sampler.pass(event, now_ms) || !self.q.filter.matches(event) {
            return self.tick(now_ms);
        }
        self.passed += 1;
        self.push_matched(event.clone(), now_ms)
    }

    /// An event that already passed sampling and `where` (at an agent) arrives at `now_ms`:
    /// its arrival time, or its own time in event-time mode. Time windows that ended by
    /// `now_ms` close first. An event older than the earliest open window is late: counted
    /// in [`Engine::late`] and dropped.
    pub fn push_matched(&mut self, event: Value, now_ms: i64) -> Vec<Row> {
        if self.done() {
            return Vec::new();
        }
        let mut out = self.tick(now_ms);
        match self.q.window {
            None if !self.q.is_aggregate() && self.q.order_by.is_none() => {
                if self.q.limit.is_none_or(|l| self.emitted < l) {
                    out.push(project(&self.q.select, &self.columns, &event, now_ms));
                    self.emitted += 1;
                }
            }
            None => {
                if self.buffer.len() >= MAX_WINDOW_EVENTS {
                    self.dropped += 1;
                } else {
                    self.buffer.push_back((now_ms, event));
                }
            }
            Some(Window::Count { events }) => {
                if self.buffer.len() >= MAX_WINDOW_EVENTS {
                    self.dropped += 1;
                } else {
                    self.buffer.push_back((now_ms, event));
                }
                if self.buffer.len() as u64 >= events.min(MAX_WINDOW_EVENTS as u64) {
                    let events: Vec<(i64, Value)> = self.buffer.drain(..).collect();
                    out.extend(self.rows(&events, now_ms));
                }
            }
            Some(_) => {
                let now_ms = clamp_time(now_ms);
                if now_ms < self.next_start {
                    self.late += 1;
                } else if self.buffer.len() >= MAX_WINDOW_EVENTS {
                    self.dropped += 1;
                } else {
                    // Ordered by time; equal times keep their arrival order.
                    let mut at = self.buffer.len();
                    while at > 0 && self.buffer[at - 1].0 > now_ms {
                        at -= 1;
                    }
                    self.buffer.insert(at, (now_ms, event));
                }
            }
        }
        out
    }

    /// Time has reached `now_ms`: every time window that ended by then closes.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Row> {
        if let Some(joins) = &mut self.joins {
            joins.tick(now_ms);
        }
        self.close_windows(now_ms, false)
    }

    /// Closes every time window that holds events, ended or not, without ending the stream:
    /// for an event-time subscription whose events stopped coming (no later event will move
    /// its clock past them). Later events keep working; one older than the windows closed
    /// here is late. Count windows and queries without a window are left alone. `now_ms` is
    /// the time of the flush; the rows carry their window's end, as when a window ends.
    pub fn flush(&mut self, now_ms: i64) -> Vec<Row> {
        if self.finished {
            return Vec::new();
        }
        let _ = now_ms;
        self.close_windows(i64::MAX, true)
    }

    /// Closes time windows up to `now_ms`, or every window holding events when `all`.
    /// Windows without events produce no rows and are stepped over in one go.
    fn close_windows(&mut self, now_ms: i64, all: bool) -> Vec<Row> {
        let (span, shift) = match self.q.window {
            Some(Window::Tumbling { span_ms }) => (span_ms, span_ms),
            Some(Window::Sliding { span_ms, shift_ms }) => (span_ms, shift_ms),
            _ => return Vec::new(),
        };
        let origin = self.origin;
        let now_ms = clamp_time(now_ms);
        // The first window start at or after `from` whose window still covers time `t`.
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
                Some(t) if t >= (self.next_start + span) => {
                    self.next_start = first_covering(t, self.next_start);
                }
                Some(_) => {}
            }
            if !all && (self.next_start + span) > now_ms {
                break;
            }
            out.extend(self.close_window(self.next_start, span, shift));
        }
        out
    }

    fn close_window(&mut self, start: i64, span: i64, shift: i64) -> Vec<Row> {
        let end = start + span;
        let events: Vec<(i64, Value)> = if shift >= span {
            // Tumbling (or hopping) windows: no later window wants these events, so they
            // move out rather than being copied.
            let n = self.buffer.iter().take_while(|(t, _)| *t < end).count();
            self.buffer
                .drain(..n)
                .filter(|(t, _)| *t >= start)
                .collect()
        } else {
            self.buffer
                .iter()
                .take_while(|(t, _)| *t < end)
                .filter(|(t, _)| *t >= start)
                .cloned()
                .collect()
        };
        self.next_start = start + shift;
        // Events before the next window's start belong to no later window.
        while self
            .buffer
            .front()
            .is_some_and(|(t, _)| *t < self.next_start)
        {
            self.buffer.pop_front();
        }
        if events.is_empty() {
            // A window in a gap between hopping windows (shift over span).
            return Vec::new();
        }
        self.rows(&events, end)
    }

    /// The stream ended at `now_ms`: what is open closes, and what waited for the end comes
    /// out.
    pub fn finish(&mut self, now_ms: i64) -> Vec<Row> {
        if self.finished {
            return Vec::new();
        }
        let mut out = match self.q.window {
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
        if !self.held.is_empty() {
            let mut held = std::mem::take(&mut self.held);
            self.order_and_limit(&mut held);
            out.extend(held);
        }
        self.finished = true;
        out
    }

    /// Sorts by `order by` (stable) and keeps the first `limit` rows.
    fn order_and_limit(&self, rows: &mut Vec<Row>) {
        if let Some(o) = &self.q.order_by {
            // For plain selections the order is by what the row holds at that path.
            rows.sort_by(|a, b| {
                let ord = total_cmp(o.path.get(a), o.path.get(b));
                if o.descending { ord.reverse() } else { ord }
            });
        }
        if let Some(limit) = self.q.limit {
            rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
    }

    /// The rows of one window (or of the whole stream): grouped, aggregated and filtered;
    /// then ordered and cut here (per window, or at the end of the stream), or, for a
    /// window without `group by`, across windows (MQL's order: the output of all windows
    /// is what `order by` and `limit` see).
    fn rows(&mut self, events: &[(i64, Value)], now_ms: i64) -> Vec<Row> {
        let mut rows: Vec<Row> = if self.q.is_aggregate() {
            let mut order: Vec<String> = Vec::new();
            let mut groups: AHashMap<String, Vec<&Value>> = AHashMap::new();
            for (_, e) in events {
                let key: Vec<Value> = self
                    .q
                    .group_by
                    .iter()
                    .map(|p| p.get(e).cloned().unwrap_or(Value::Null))
                    .collect();
                let text = Value::Array(key).to_string();
                let full = groups.len() >= MAX_GROUPS;
                match groups.get_mut(&text) {
                    Some(members) => members.push(e),
                    None if full => self.dropped += 1,
                    None => {
                        groups.insert(text.clone(), vec![e]);
                        order.push(text);
                    }
                }
            }
            if order.is_empty() && self.q.group_by.is_empty() {
                // A finite stream with no matching event still answers: counts of 0.
                vec![aggregate_row(&self.q, &[], now_ms)]
            } else {
                order
                    .iter()
                    .map(|key| aggregate_row(&self.q, &groups[key], now_ms))
                    .collect()
            }
        } else {
            events
                .iter()
                .map(|(t, e)| project(&self.q.select, &self.columns, e, *t))
                .collect()
        };
        if let Some(having) = &self.q.having {
            rows.retain(|r| having.matches(r));
        }
        if self.q.window.is_none() || self.per_window() {
            self.order_and_limit(&mut rows);
            return rows;
        }
        if self.q.order_by.is_some() {
            let room = MAX_WINDOW_EVENTS.saturating_sub(self.held.len());
            if rows.len() > room {
                self.dropped += (rows.len() - room) as u64;
                rows.truncate(room);
            }
            self.held.extend(rows);
            return Vec::new();
        }
        if let Some(limit) = self.q.limit {
            let room = limit.saturating_sub(self.emitted);
            rows.truncate(usize::try_from(room).unwrap_or(usize::MAX));
        }
        self.emitted += rows.len() as u64;
        rows
    }
}

/// The select items a plain selection writes: a path under another selected path is
/// covered by it (MQL drops such paths, so `e['a'], e['a'][0]` writes `a` whole).
fn uncovered(items: &[SelectItem]) -> Vec<SelectItem> {
    // A renamed path is written under its own name: it neither covers nor is covered.
    let paths: Vec<&Path> = items
        .iter()
        .filter_map(|i| match &i.expr {
            SelectExpr::Path(p) if i.alias.is_none() => Some(p),
            _ => None,
        })
        .collect();
    items
        .iter()
        .filter(|i| match &i.expr {
            SelectExpr::Path(p) if i.alias.is_some() => true,
            SelectExpr::Path(p) => !paths
                .iter()
                .any(|q| q.0.len() < p.0.len() && p.0.starts_with(&q.0)),
            _ => true,
        })
        .cloned()
        .collect()
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
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x.cmp(&y);
            }
            x.as_f64()
                .partial_cmp(&y.as_f64())
                .unwrap_or(Ordering::Equal)
        }
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

/// The column name of a literal: its text (`'b'` is `b`, `2` is `2`); `None` for null,
/// which is never written.
fn literal_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A plain (non-aggregate) query's row for one event. As in MQL's full mode, `as` names
/// are ignored here (they rename aggregates only): each path is written back at its nested
/// position, nil values are left out.
fn project(select: &Select, columns: &[SelectItem], event: &Value, now_ms: i64) -> Row {
    if *select == Select::Star {
        return event.clone();
    }
    let mut row = Map::new();
    for item in columns {
        match &item.expr {
            SelectExpr::Path(p) => {
                if let Some(v) = p.get(event) {
                    match &item.alias {
                        Some(name) => {
                            row.insert(name.clone(), v.clone());
                        }
                        None => put(&mut row, p, v.clone()),
                    }
                }
            }
            SelectExpr::Prefix(prefix) => write_prefix(&mut row, prefix, event),
            SelectExpr::Literal(v) => {
                if let Some(name) = item.alias.clone().or_else(|| literal_name(v)) {
                    row.insert(name, v.clone());
                }
            }
            SelectExpr::Tick => {
                row.insert(tick_name(item), Value::from(now_ms));
            }
            SelectExpr::Aggregate { .. } => {}
        }
    }
    Value::Object(row)
}

/// The column `tick()` writes: its `as`, else `tick`.
fn tick_name(item: &SelectItem) -> String {
    item.alias.clone().unwrap_or_else(|| "tick".into())
}

/// `e[^'prefix']`: every top-level key that starts with the prefix (nil values left out).
fn write_prefix(row: &mut Map<String, Value>, prefix: &str, event: &Value) {
    if let Value::Object(m) = event {
        for (k, v) in m.iter().filter(|(k, _)| k.starts_with(prefix)) {
            if !v.is_null() {
                row.insert(k.clone(), v.clone());
            }
        }
    }
}

/// One group's row, as MQL's aggregate select makes it: every column is present (nil
/// values as null). An aggregate is named `FUNC(path.joined.by.dots)` or by its `as`; a
/// plain path is named by its dotted path and takes the group's first non-nil value; a
/// literal is itself under its text.
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
                row.insert(name, v);
            }
            SelectExpr::Path(p) => {
                let v = members.iter().find_map(|e| p.get(e)).cloned();
                let name = item.alias.clone().unwrap_or_else(|| p.dotted());
                row.insert(name, v.unwrap_or(Value::Null));
            }
            SelectExpr::Literal(v) => {
                if let Some(name) = item.alias.clone().or_else(|| literal_name(v)) {
                    row.insert(name, v.clone());
                }
            }
            SelectExpr::Tick => {
                row.insert(tick_name(item), Value::from(now_ms));
            }
            SelectExpr::Prefix(prefix) => {
                if let Some(first) = members.first() {
                    write_prefix(&mut row, prefix, first);
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
            let mut xs: Vec<&Value> = values.into_iter().filter(|v| v.is_number()).collect();
            if xs.is_empty() {
                return Value::Null;
            }
            xs.sort_by(|a, b| total_cmp(Some(a), Some(b)));
            // MQL's rule, the element at ceil(n·rank), kept inside the list (MQL reads past
            // its end for the top ranks).
            let i = ((xs.len() as f64 * rank / 100.0).ceil() as usize).min(xs.len() - 1);
            xs[i].clone()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde_json::json;

    fn engine(q: &str) -> Engine {
        Engine::new(parse(q).unwrap(), 1)
    }

    fn ev(ts: i64) -> Value {
        json!({ "ts": ts })
    }

    #[test]
    fn event_time_keeps_windows_ordered_and_counts_late_events() {
        let mut e = engine("select count(*), list(ts) from s window 1");
        let mut rows = Vec::new();
        for ts in [1_100, 1_500, 1_050, 1_999, 1_000] {
            rows.extend(e.push_matched(ev(ts), ts));
        }
        assert!(
            rows.is_empty(),
            "nothing closes before the clock passes 2000"
        );
        // 2 500 closes [1000, 2000); 1 999 then arrives for a closed window.
        rows.extend(e.push_matched(ev(2_500), 2_500));
        rows.extend(e.push_matched(ev(1_999), 1_999));
        assert_eq!(
            rows,
            [json!({"COUNT(*)": 5, "LIST(ts)": [1_000, 1_050, 1_100, 1_500, 1_999]})]
        );
        assert_eq!((e.late, e.dropped), (1, 0));
        // Out of order inside the open window: still in time order.
        rows = e.push_matched(ev(2_100), 2_100);
        rows.extend(e.finish(2_500));
        assert_eq!(rows, [json!({"COUNT(*)": 2, "LIST(ts)": [2_100, 2_500]})]);
    }

    #[test]
    fn sliding_event_time_windows_take_late_events_while_any_window_is_open() {
        let mut e = engine("select list(ts) from s window 2 1");
        let mut rows = e.push_matched(ev(3_500), 3_500);
        // [2000, 4000) and [3000, 5000) are open: 2 500 is in time for the first.
        rows.extend(e.push_matched(ev(2_500), 2_500));
        // 4 000 closes [2000, 4000); the earliest open window now starts at 3000.
        rows.extend(e.push_matched(ev(4_000), 4_000));
        rows.extend(e.push_matched(ev(2_999), 2_999));
        assert_eq!(rows, [json!({"LIST(ts)": [2_500, 3_500]})]);
        assert_eq!(e.late, 1);
        rows = e.finish(4_000);
        assert_eq!(
            rows,
            [
                json!({"LIST(ts)": [3_500, 4_000]}),
                json!({"LIST(ts)": [4_000]})
            ]
        );
    }

    #[test]
    fn flush_closes_open_windows_and_later_events_keep_working() {
        let mut e = engine("select count(*), b from s window 10 group by b");
        assert!(e.flush(0).is_empty(), "nothing to flush");
        let _ = e.push_matched(json!({"b": "x"}), 1_000);
        let _ = e.push_matched(json!({"b": "y"}), 1_500);
        let _ = e.push_matched(json!({"b": "x"}), 2_000);
        assert_eq!(e.pending(), 3);
        // The stream went idle: its window [0, 10 000) closes though it has not ended.
        assert_eq!(
            e.flush(3_000),
            [
                json!({"COUNT(*)": 2, "b": "x"}),
                json!({"COUNT(*)": 1, "b": "y"})
            ]
        );
        assert_eq!(e.pending(), 0);
        assert!(e.flush(4_000).is_empty(), "a second flush has nothing left");
        assert!(!e.done());
        // Its window is closed: an event for it is late; a later one opens the next window.
        assert!(e.push_matched(json!({"b": "x"}), 9_000).is_empty());
        assert_eq!(e.late, 1);
        let _ = e.push_matched(json!({"b": "z"}), 12_000);
        assert_eq!(e.tick(19_999), Vec::<Row>::new());
        assert_eq!(e.tick(20_000), [json!({"COUNT(*)": 1, "b": "z"})]);
        let _ = e.push_matched(json!({"b": "z"}), 25_000);
        assert_eq!(e.flush(25_000), [json!({"COUNT(*)": 1, "b": "z"})]);
        assert!(e.finish(30_000).is_empty());
    }

    #[test]
    fn flush_leaves_count_windows_and_whole_stream_aggregates_alone() {
        let mut e = engine("select count(*) from s window |3|");
        let _ = e.push_matched(json!({}), 1);
        assert!(e.flush(10).is_empty());
        assert_eq!(e.finish(10), [json!({"COUNT(*)": 1})]);
        let mut e = engine("select count(*) from s");
        let _ = e.push_matched(json!({}), 1);
        assert!(e.flush(10).is_empty());
        assert_eq!(e.finish(10), [json!({"COUNT(*)": 1})]);
    }

    #[test]
    fn flush_keeps_rows_ordered_across_windows_for_the_end() {
        let mut e = engine("select count(*) from s window 1 order by e['COUNT(*)'] desc");
        let _ = e.push_matched(json!({}), 100);
        let _ = e.push_matched(json!({}), 1_100);
        let _ = e.push_matched(json!({}), 1_200);
        assert!(
            e.flush(5_000).is_empty(),
            "ordered across windows: at the end"
        );
        assert_eq!(
            e.finish(5_000),
            [json!({"COUNT(*)": 2}), json!({"COUNT(*)": 1})]
        );
    }

    #[test]
    fn arrival_time_windows_start_where_told() {
        let mut e = engine("select count(*) from s window 1");
        e.start_at(1_234);
        assert!(e.push_matched(json!({}), 1_000).is_empty());
        assert_eq!(e.late, 1, "before the subscription started");
        let _ = e.push_matched(json!({}), 1_300);
        let _ = e.push_matched(json!({}), 2_233);
        assert_eq!(e.tick(2_234), [json!({"COUNT(*)": 2})]);
    }

    #[test]
    fn hostile_times_and_windows_stay_bounded() {
        let mut e = engine("select count(*) from s window 0.001");
        for t in [i64::MAX, i64::MIN, 0, i64::MAX - 1, -1] {
            let _ = e.push_matched(json!({}), t);
            let _ = e.tick(t);
        }
        let _ = e.flush(i64::MAX);
        let _ = e.finish(i64::MIN);
        let mut e = engine("select count(*) from s window 604800 604.8");
        for t in [0, 604_800_000, i64::MAX] {
            let _ = e.push_matched(json!({}), t);
        }
        assert!(e.finish(0).len() <= 3 * 1000);
    }

    #[test]
    fn limit_over_windows_ends_the_query() {
        let mut e = engine("select count(*) from s window 1 limit 1");
        let _ = e.push_matched(json!({}), 100);
        assert!(!e.done());
        assert_eq!(e.tick(1_000), [json!({"COUNT(*)": 1})]);
        assert!(e.done());
        assert!(e.push_matched(json!({}), 1_100).is_empty());
        let mut e = engine("select count(*), b from s window 1 group by b limit 1");
        let _ = e.push_matched(json!({"b": 1}), 100);
        let _ = e.tick(1_000);
        assert!(!e.done(), "with group by the limit is per window");
    }
}
