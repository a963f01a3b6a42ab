//! Normalization of raw samples onto the fixed step grid, per `atlas.dstype`, as Atlas does it:
//! `rate` (default) and `counter` are time-weighted onto step boundaries (RRDtool style),
//! `gauge` keeps the max within a step, `sum` adds within a step.

/// How a series' samples become step values; read from the `atlas.dstype` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsType {
    /// A rate per second, time-weighted onto steps. The default when no dstype is given.
    Rate,
    /// A monotonic counter, turned into a per-second rate, then handled as `Rate`.
    Counter,
    /// A sampled value; timestamps round up to the step end, the max within a step wins.
    Gauge,
    /// Timestamps round up to the step end and values within a step are added.
    Sum,
}

impl DsType {
    pub const TAG: &'static str = "atlas.dstype";

    /// The dstype named by a tag value; `None` for a value Atlas does not know.
    pub fn parse(value: &str) -> Option<DsType> {
        match value {
            "rate" => Some(DsType::Rate),
            "counter" => Some(DsType::Counter),
            "gauge" => Some(DsType::Gauge),
            "sum" => Some(DsType::Sum),
            _ => None,
        }
    }

    /// The dstype's code in the store's files.
    pub(crate) fn code(self) -> u8 {
        match self {
            DsType::Rate => 0,
            DsType::Counter => 1,
            DsType::Gauge => 2,
            DsType::Sum => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<DsType> {
        [DsType::Rate, DsType::Counter, DsType::Gauge, DsType::Sum]
            .get(usize::from(code))
            .copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            DsType::Rate => "rate",
            DsType::Counter => "counter",
            DsType::Gauge => "gauge",
            DsType::Sum => "sum",
        }
    }
}

/// How a normalized value combines with one already stored in the same step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Merge {
    /// Prefer a value over NaN, then the larger (Atlas's block update rule).
    Max,
    /// NaN-aware addition.
    Add,
}

impl Merge {
    #[inline]
    pub(crate) fn apply(self, old: f64, new: f64) -> f64 {
        if old.is_nan() {
            return new;
        }
        if new.is_nan() {
            return old;
        }
        match self {
            Merge::Max => old.max(new),
            Merge::Add => old + new,
        }
    }
}

const NO_UPDATE: i64 = i64::MIN;

/// Per-series state of the rate normalizer and, for counters, of the rate conversion.
/// 32 bytes, kept inline in every series (gauges and sums leave it unused).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NormState {
    last_update_ms: i64,
    partial: f64,
    counter_prev_ms: i64,
    counter_prev: f64,
}

impl NormState {
    /// The state as four 64-bit words, for snapshots.
    pub(crate) fn to_words(self) -> [u64; 4] {
        [
            self.last_update_ms as u64,
            self.partial.to_bits(),
            self.counter_prev_ms as u64,
            self.counter_prev.to_bits(),
        ]
    }

    /// When the series last took a sample into this state (`i64::MIN` for never).
    pub(crate) fn last_sample_ms(&self) -> i64 {
        self.last_update_ms.max(self.counter_prev_ms)
    }

    pub(crate) fn from_words(w: [u64; 4]) -> Self {
        NormState {
            last_update_ms: w[0] as i64,
            partial: f64::from_bits(w[1]),
            counter_prev_ms: w[2] as i64,
            counter_prev: f64::from_bits(w[3]),
        }
    }
}

impl Default for NormState {
    fn default() -> Self {
        NormState {
            last_update_ms: NO_UPDATE,
            partial: 0.0,
            counter_prev_ms: NO_UPDATE,
            counter_prev: 0.0,
        }
    }
}

/// The heartbeat of a counter: two steps, but a fixed two minutes for steps under a minute,
/// because fast reporters are irregular.
pub(crate) fn counter_heartbeat_ms(step_ms: i64) -> i64 {
    if step_ms < 60_000 {
        120_000
    } else {
        2 * step_ms
    }
}

/// The step a timestamp belongs to: its step end (rounded up; a timestamp on a boundary
/// stays) divided by the step, with one division.
#[inline]
pub(crate) fn step_index_of(ts_ms: i64, step_ms: i64) -> i64 {
    let (q, r) = (ts_ms.div_euclid(step_ms), ts_ms.rem_euclid(step_ms));
    q + i64::from(r != 0)
}

impl NormState {
    /// Feeds a counter sample: emits nothing for the first, then per-second rates (a drop
    /// or a non-positive interval gives 0, as Atlas does) into the rate normalizer.
    pub(crate) fn counter(
        &mut self,
        ts_ms: i64,
        value: f64,
        step_ms: i64,
        emit: &mut impl FnMut(i64, f64),
    ) {
        if self.counter_prev_ms != NO_UPDATE {
            let duration_s = (ts_ms - self.counter_prev_ms) as f64 / 1000.0;
            let delta = value - self.counter_prev;
            let rate = if duration_s <= 0.0 || delta <= 0.0 || delta.is_nan() {
                0.0
            } else {
                delta / duration_s
            };
            self.rate(ts_ms, rate, step_ms, counter_heartbeat_ms(step_ms), emit);
        }
        self.counter_prev_ms = ts_ms;
        self.counter_prev = value;
    }

    /// Feeds a rate sample, emitting `(step_end_ms, value)` for every step it completes.
    /// A sample covers the interval since the previous one; with no previous sample (or
    /// after a gap longer than the heartbeat) it is taken to cover the step before it.
    pub(crate) fn rate(
        &mut self,
        ts_ms: i64,
        value: f64,
        step_ms: i64,
        heartbeat_ms: i64,
        emit: &mut impl FnMut(i64, f64),
    ) {
        if ts_ms <= self.last_update_ms {
            return; // Atlas ignores out-of-order rate updates
        }
        if self.last_update_ms != NO_UPDATE && ts_ms - self.last_update_ms > heartbeat_ms {
            self.last_update_ms = NO_UPDATE;
            self.partial = 0.0;
        }
        let weighted = |offset: i64, v: f64| v * (offset as f64 / step_ms as f64);
        let offset = ts_ms.rem_euclid(step_ms);
        let boundary = ts_ms - offset;
        if self.last_update_ms < boundary {
            if self.last_update_ms != NO_UPDATE {
                let interval_offset = self.last_update_ms.rem_euclid(step_ms);
                let mut next = self.last_update_ms - interval_offset + step_ms;
                self.partial += weighted(step_ms - interval_offset, value);
                emit(next, self.partial);
                while next < boundary {
                    next += step_ms;
                    emit(next, value);
                }
            } else if offset == 0 {
                emit(ts_ms, value);
            } else {
                emit(boundary, weighted(step_ms - offset, value));
            }
            self.last_update_ms = ts_ms;
            self.partial = weighted(offset, value);
        } else {
            let interval = ts_ms - self.last_update_ms;
            self.last_update_ms = ts_ms;
            self.partial += weighted(interval, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(samples: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let mut st = NormState::default();
        let mut out = Vec::new();
        for &(t, v) in samples {
            st.rate(t, v, 60_000, 60_000, &mut |b, x| out.push((b, x)));
        }
        out
    }

    #[test]
    fn rate_on_boundaries_is_exact() {
        let out = rates(&[(60_000, 1.5), (120_000, 2.5), (180_000, 3.0)]);
        assert_eq!(out, vec![(60_000, 1.5), (120_000, 2.5), (180_000, 3.0)]);
    }

    #[test]
    fn rate_offset_reports_are_weighted_like_the_atlas_docs() {
        // Reports 4, 2, 8, 6 at :30 past each minute normalize to 3, 5, 7 on the minutes
        // (the first report also yields half of itself for the step it started in).
        let out = rates(&[
            (90_000, 4.0),
            (150_000, 2.0),
            (210_000, 8.0),
            (270_000, 6.0),
        ]);
        let values: Vec<f64> = out.iter().skip(1).map(|p| p.1).collect();
        assert_eq!(values, vec![3.0, 5.0, 7.0]);
        assert_eq!(out[1].0, 120_000);
    }

    #[test]
    fn counter_becomes_per_second_rate() {
        let mut st = NormState::default();
        let mut out = Vec::new();
        for (t, v) in [
            (60_000, 100.0),
            (120_000, 160.0),
            (180_000, 280.0),
            (240_000, 10.0),
        ] {
            st.counter(t, v, 60_000, &mut |b, x| out.push((b, x)));
        }
        assert_eq!(out, vec![(120_000, 1.0), (180_000, 2.0), (240_000, 0.0)]);
    }

    #[test]
    fn heartbeat_gap_resets() {
        let out = rates(&[(60_000, 1.0), (300_000, 2.0)]);
        assert_eq!(out, vec![(60_000, 1.0), (300_000, 2.0)]);
    }

    #[test]
    fn step_index_rounds_up() {
        assert_eq!(step_index_of(60_000, 60_000), 1);
        assert_eq!(step_index_of(60_001, 60_000), 2);
        assert_eq!(step_index_of(-1, 60_000), 0);
    }
}
