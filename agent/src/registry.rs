//! Meters aggregated over the step, the way Spectator reports them: a counter becomes its
//! per-second rate over the step (`atlas.dstype=rate`), a gauge its last value and a max
//! gauge its largest value in the step (`atlas.dstype=gauge`). At every step boundary the
//! registry is flushed into one batch of samples stamped with the step's end.

use std::sync::Arc;

use ahash::AHashMap;
use parking_lot::Mutex;

use crate::health::Health;
use crate::outbox::{Catalog, Sample};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MeterKind {
    /// Increments, reported as a per-second rate.
    Counter,
    /// The last value set.
    Gauge,
    /// The largest value seen in the step.
    Max,
    /// SpectatorD's age gauge: holds an epoch time (ms) and reports the seconds since it at
    /// every step; it never expires for idleness.
    Age,
}

impl MeterKind {
    fn dstype(self) -> &'static str {
        match self {
            MeterKind::Counter => "rate",
            MeterKind::Gauge | MeterKind::Max | MeterKind::Age => "gauge",
        }
    }
}

struct Meter {
    kind: MeterKind,
    value: f64,
    /// Steps since the meter was last updated; gauges are reported until this passes
    /// `GAUGE_TTL_STEPS` (Spectator expires idle gauges too).
    idle_steps: u32,
    /// A gauge with its own time to live (SpectatorD's `g,<seconds>`): reported until this
    /// time (epoch ms), however many steps that is, then gone.
    expires_at_ms: Option<i64>,
}

/// Gauges not updated for this many steps stop being reported.
const GAUGE_TTL_STEPS: u32 = 15;

/// A meter as its callers name it: name, tags and kind.
type MeterKey = (String, Vec<(String, String)>, MeterKind);

pub struct Registry {
    catalog: Arc<Catalog>,
    common: Vec<(String, String)>,
    meters: Mutex<AHashMap<u32, Meter>>,
    /// Series ids by (name, tags) as given, so updates do not rebuild tag lists.
    ids: Mutex<AHashMap<MeterKey, Option<u32>>>,
    /// Meters one step may hold: updates of further series are dropped and counted, so a
    /// flood of distinct names costs neither memory nor batches beyond it.
    max_meters: usize,
    health: Arc<Health>,
}

impl Registry {
    /// `common` tags are added to every meter's series.
    pub fn new(catalog: Arc<Catalog>, common: Vec<(String, String)>) -> Self {
        Registry {
            catalog,
            common,
            meters: Mutex::new(AHashMap::new()),
            ids: Mutex::new(AHashMap::new()),
            max_meters: usize::MAX,
            health: Arc::new(Health::default()),
        }
    }

    /// At most `max_meters` series per step; drops counted in `health`.
    pub fn limited(mut self, max_meters: usize, health: Arc<Health>) -> Self {
        self.max_meters = max_meters;
        self.health = health;
        self
    }

    /// The catalog id of a meter's series; `None` when the catalog is full (counted).
    fn id(&self, name: &str, tags: &[(&str, &str)], kind: MeterKind) -> Option<u32> {
        let key = (
            name.to_string(),
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
            kind,
        );
        if let Some(id) = self.ids.lock().get(&key) {
            return *id;
        }
        // A series the step has no room for is not even catalogued.
        if self.meters.lock().len() >= self.max_meters {
            self.health
                .dropped_series_per_step
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        let mut all = self.common.clone();
        all.extend(key.1.iter().cloned());
        all.push(("name".into(), name.to_string()));
        all.push(("atlas.dstype".into(), kind.dstype().to_string()));
        let id = self
            .catalog
            .intern(all)
            .inspect_err(|refusal| refusal.count(&self.health))
            .ok();
        self.health.series_bytes.store(
            self.catalog.bytes() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut ids = self.ids.lock();
        if ids.len() < crate::outbox::MAX_SERIES {
            ids.insert(key, id);
        }
        id
    }

    /// The catalog id of a meter's series, created if new: callers that see the same
    /// meter often keep it and update by id ([`Registry::update_id`]). `None` when the
    /// series is refused (counted).
    pub fn meter_id(&self, name: &str, tags: &[(&str, &str)], kind: MeterKind) -> Option<u32> {
        self.id(name, tags, kind)
    }

    fn update(
        &self,
        name: &str,
        tags: &[(&str, &str)],
        kind: MeterKind,
        f: impl FnOnce(&mut f64),
    ) -> bool {
        let Some(id) = self.id(name, tags, kind) else {
            return false;
        };
        self.update_id(id, kind, None, f)
    }

    /// Updates the meter of series `id` (from [`Registry::meter_id`] with the same `kind`),
    /// setting its time to live when `expires_at_ms` is given. False when the step has no
    /// room for another series (counted).
    pub fn update_id(
        &self,
        id: u32,
        kind: MeterKind,
        expires_at_ms: Option<i64>,
        f: impl FnOnce(&mut f64),
    ) -> bool {
        let mut meters = self.meters.lock();
        if meters.len() >= self.max_meters && !meters.contains_key(&id) {
            self.health
                .dropped_series_per_step
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return false;
        }
        let m = meters.entry(id).or_insert(Meter {
            kind,
            value: match kind {
                MeterKind::Counter => 0.0,
                MeterKind::Gauge | MeterKind::Max | MeterKind::Age => f64::NAN,
            },
            idle_steps: 0,
            expires_at_ms: None,
        });
        m.idle_steps = 0;
        if expires_at_ms.is_some() {
            m.expires_at_ms = expires_at_ms;
        }
        f(&mut m.value);
        true
    }

    /// Adds to a counter. Returns false when the series could not be created.
    pub fn add(&self, name: &str, tags: &[(&str, &str)], delta: f64) -> bool {
        self.update(name, tags, MeterKind::Counter, |v| *v += delta)
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, tags: &[(&str, &str)], value: f64) -> bool {
        self.update(name, tags, MeterKind::Gauge, |v| *v = value)
    }

    /// Changes a gauge by `delta` (StatsD's `+n|g`): from 0 if it had no value.
    pub fn adjust(&self, name: &str, tags: &[(&str, &str)], delta: f64) -> bool {
        self.update(name, tags, MeterKind::Gauge, |v| {
            *v = if v.is_nan() { delta } else { *v + delta }
        })
    }

    /// Records a value for a max gauge.
    pub fn max(&self, name: &str, tags: &[(&str, &str)], value: f64) -> bool {
        self.update(name, tags, MeterKind::Max, |v| {
            if v.is_nan() || value > *v {
                *v = value
            }
        })
    }

    /// The step that ended at `end_ms` (of `step_secs` seconds): counters as rates, gauges as
    /// last values, maxima; counters and maxima start over.
    pub fn flush(&self, end_ms: i64, step_secs: f64) -> Vec<Sample> {
        let mut out = Vec::new();
        let mut meters = self.meters.lock();
        meters.retain(|&series, m| {
            let value = match m.kind {
                MeterKind::Counter => {
                    let rate = m.value / step_secs;
                    m.value = 0.0;
                    rate
                }
                MeterKind::Gauge => m.value,
                MeterKind::Max => std::mem::replace(&mut m.value, f64::NAN),
                MeterKind::Age => (end_ms as f64 - m.value) / 1000.0,
            };
            // A gauge past its own time to live is gone, as in SpectatorD.
            if m.expires_at_ms.is_some_and(|t| end_ms > t) {
                return false;
            }
            if !value.is_nan() {
                out.push(Sample {
                    series,
                    ts_ms: end_ms,
                    value,
                });
            }
            m.idle_steps += 1;
            // Counters that stay at zero are still reported for a while (a zero rate is
            // data); all meters leave after the TTL without updates, except those with a
            // time to live of their own and age gauges (SpectatorD never expires them).
            m.expires_at_ms.is_some() || m.kind == MeterKind::Age || m.idle_steps <= GAUGE_TTL_STEPS
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_aggregation() {
        let catalog = Arc::new(Catalog::default());
        let r = Registry::new(catalog.clone(), vec![("nf.node".into(), "h".into())]);
        r.add("hits", &[], 30.0);
        r.add("hits", &[], 30.0);
        r.set("temp", &[], 20.0);
        r.set("temp", &[], 21.0);
        r.max("lat", &[("statistic", "max")], 3.0);
        r.max("lat", &[("statistic", "max")], 1.0);
        let mut got = r.flush(60_000, 60.0);
        got.sort_by_key(|s| s.series);
        let values: Vec<f64> = got.iter().map(|s| s.value).collect();
        assert_eq!(values, [1.0, 21.0, 3.0]);
        let tags = catalog.tags(got[0].series).unwrap();
        assert!(tags.contains(&("atlas.dstype".into(), "rate".into())));
        assert!(tags.contains(&("nf.node".into(), "h".into())));
        // next step: the counter rate is 0, the gauge keeps its value, the max has none
        let mut got = r.flush(120_000, 60.0);
        got.sort_by_key(|s| s.series);
        let values: Vec<f64> = got.iter().map(|s| s.value).collect();
        assert_eq!(values, [0.0, 21.0]);
    }

    #[test]
    fn a_step_holds_at_most_its_series_and_counts_the_rest() {
        let catalog = Arc::new(Catalog::default());
        let health = Arc::new(Health::default());
        let r = Registry::new(catalog.clone(), Vec::new()).limited(3, health.clone());
        for i in 0..10 {
            r.add(&format!("flood.{i}"), &[], 1.0);
        }
        // known series keep updating
        assert!(r.add("flood.0", &[], 1.0));
        let got = r.flush(60_000, 60.0);
        assert_eq!(got.len(), 3);
        use std::sync::atomic::Ordering;
        assert_eq!(health.dropped_series_per_step.load(Ordering::Relaxed), 7);
        // the refused names were never catalogued
        assert_eq!(catalog.intern(vec![("name".into(), "xx".into())]), Ok(3));
    }
}
