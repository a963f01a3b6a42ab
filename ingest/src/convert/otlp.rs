//! OTLP: metrics to series (resource and point attributes as tags, temporality and kind
//! choosing the normalization, histograms and summaries as Atlas's distribution lines), and
//! log records to events of a stream.

use argus_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
use argus_proto::otlp::metrics::v1::{AggregationTemporality, metric, number_data_point};
use argus_tsdb::{DsType, Sample, SeriesId, TagMap, Writer};

use super::converted::Converted;
use crate::event::Event;
use crate::validation::{Rejection, sanitize, sanitize_key, validate_tags};

/// A value of an OTLP attribute as a tag value or JSON.
fn any_value_text(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        // Arrays, maps and bytes do not make tags; string-table indexes are for profiles.
        _ => return None,
    })
}

fn any_value_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match v.value.as_ref() {
        None => J::Null,
        Some(any_value::Value::StringValue(s)) => J::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => J::Bool(*b),
        Some(any_value::Value::IntValue(i)) => J::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(J::Null, J::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => {
            J::Array(a.values.iter().map(any_value_json).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => J::Object(attributes_json(&kv.values)),
        Some(any_value::Value::BytesValue(b)) => J::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(_)) => J::Null,
    }
}

fn attributes_json(kvs: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value
                    .as_ref()
                    .map_or(serde_json::Value::Null, any_value_json),
            )
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Resource attributes that become tags, and the tag each becomes (Atlas's names for the
/// application and the host). Others (`service.instance.id`, SDK details) would only add
/// cardinality.
const RESOURCE_TAGS: [(&str, &str); 2] = [("service.name", "nf.app"), ("host.name", "nf.node")];

fn resource_tags(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (from, to) in RESOURCE_TAGS {
        if let Some(v) = attrs
            .iter()
            .find(|kv| kv.key == from)
            .and_then(|kv| kv.value.as_ref())
            .and_then(any_value_text)
            && !v.is_empty()
        {
            out.push((to.to_string(), sanitize(&v).into_owned()));
        }
    }
    out
}

fn point_tags(
    name: &str,
    base: &[(String, String)],
    attrs: &[KeyValue],
    extra: &[(&str, String)],
) -> TagMap {
    let mut tags = TagMap::new();
    for (k, v) in base {
        tags.insert(k.clone(), v.clone());
    }
    for kv in attrs {
        if let Some(v) = kv.value.as_ref().and_then(any_value_text)
            && !v.is_empty()
        {
            tags.insert(sanitize_key(&kv.key), sanitize(&v).into_owned());
        }
    }
    for (k, v) in extra {
        tags.insert(k.to_string(), v.clone());
    }
    tags.insert("name".to_string(), sanitize(name).into_owned());
    tags
}

/// One measurement before it meets the store.
struct Point {
    tags: TagMap,
    dstype: DsType,
    ts_ms: i64,
    value: f64,
}

fn nanos_to_ms(n: u64) -> i64 {
    (n / 1_000_000) as i64
}

/// A delta as the per-second rate of the step it lands in: the delta's count divided by the
/// step, added to whatever else landed in that step (dstype `sum`). Conserves the count
/// exactly whatever the export interval and its jitter, where time-weighting by the
/// point's own interval would spread or lose it (the SDK's first delta covers only the
/// moments since the first measurement).
fn delta_per_step(value: f64, step_ms: i64) -> (DsType, f64) {
    (DsType::Sum, value / (step_ms as f64 / 1000.0))
}

/// Converts an OTLP metrics export.
///
/// - Gauge → a gauge. Sum, monotonic: cumulative → a counter (stored as its per-second
///   rate, as Atlas's `counter`), delta → the per-second rate of the step it lands in
///   (added up within a step, so no count is lost to jitter). Sum, not monotonic →
///   cumulative is a gauge, delta is summed per step.
/// - Histogram → Atlas's distribution statistics: `statistic=count` and
///   `statistic=totalAmount` (rates), `statistic=max` and `statistic=min` (gauges), and
///   one `statistic=bucket` series per bucket: the rate of values at or below its `le`
///   (cumulative, as Prometheus's `le` buckets, so one query reads both).
///   Exponential histograms → count, totalAmount, max, min. Summary → count, totalAmount
///   and `statistic=percentile` gauges tagged `percentile` (0 to 100).
/// - Tags: the point's attributes, plus `nf.app` from `service.name` and `nf.node` from
///   `host.name`; the name is the metric's. Characters Atlas does not allow become `_`.
pub fn otlp_metrics(
    w: &Writer<'_>,
    req: &argus_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest,
) -> Converted {
    let step_ms = w.store().config().step_ms;
    let mut points: Vec<Point> = Vec::new();
    let mut out = Converted::default();
    for rm in &req.resource_metrics {
        let base = rm
            .resource
            .as_ref()
            .map(|r| resource_tags(&r.attributes))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                convert_metric(&m.name, &base, data, step_ms, &mut points);
            }
        }
    }
    let mut last: Option<(TagMap, Result<SeriesId, Rejection>)> = None;
    for p in points {
        let id = match &last {
            Some((tags, id)) if *tags == p.tags => id.clone(),
            _ => {
                let id = validate_tags(&p.tags).and_then(|()| {
                    w.try_resolve(&p.tags, Some(p.dstype))
                        .map_err(|e| Rejection::from_store(e, &p.tags))
                });
                last = Some((p.tags, id.clone()));
                id
            }
        };
        match id {
            Ok(id) => out.samples.push(Sample {
                id,
                ts_ms: p.ts_ms,
                value: p.value,
            }),
            Err(r) => out.reject(r),
        }
    }
    out
}

/// One histogram point's series: Atlas's distribution statistics.
struct Distribution<'a> {
    name: &'a str,
    base: &'a [(String, String)],
    attributes: &'a [KeyValue],
    delta: bool,
    step_ms: i64,
    time: u64,
    out: &'a mut Vec<Point>,
}

impl Distribution<'_> {
    fn push(&mut self, extra: &[(&str, &str)], dstype: DsType, value: f64) {
        let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self.out.push(Point {
            tags: point_tags(self.name, self.base, self.attributes, &extra),
            dstype,
            ts_ms: nanos_to_ms(self.time),
            value,
        });
    }

    /// A count or an amount: a rate, from a cumulative counter or from a delta.
    fn counter(&mut self, extra: &[(&str, &str)], value: f64) {
        let (dstype, value) = if self.delta {
            delta_per_step(value, self.step_ms)
        } else {
            (DsType::Counter, value)
        };
        self.push(extra, dstype, value);
    }

    fn stats(&mut self, count: u64, sum: Option<f64>, max: Option<f64>, min: Option<f64>) {
        self.counter(&[("statistic", "count")], count as f64);
        if let Some(sum) = sum {
            self.counter(&[("statistic", "totalAmount")], sum);
        }
        if let Some(max) = max {
            self.push(&[("statistic", "max")], DsType::Gauge, max);
        }
        if let Some(min) = min {
            self.push(&[("statistic", "min")], DsType::Gauge, min);
        }
    }
}

fn convert_metric(
    name: &str,
    base: &[(String, String)],
    data: &metric::Data,
    step_ms: i64,
    out: &mut Vec<Point>,
) {
    let number = |v: &Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsDouble(d)) => Some(*d),
        Some(number_data_point::Value::AsInt(i)) => Some(*i as f64),
        None => None,
    };
    let mut push = |tags: TagMap, dstype: DsType, time: u64, value: f64| {
        out.push(Point {
            tags,
            dstype,
            ts_ms: nanos_to_ms(time),
            value,
        })
    };
    // A point flagged "no recorded value" carries nothing.
    let recorded = |flags: u32| flags & 1 == 0;
    match data {
        metric::Data::Gauge(g) => {
            for p in g.data_points.iter().filter(|p| recorded(p.flags)) {
                if let Some(v) = number(&p.value) {
                    push(
                        point_tags(name, base, &p.attributes, &[]),
                        DsType::Gauge,
                        p.time_unix_nano,
                        v,
                    );
                }
            }
        }
        metric::Data::Sum(s) => {
            let delta = s.aggregation_temporality() == AggregationTemporality::Delta;
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let Some(v) = number(&p.value) else { continue };
                let tags = point_tags(name, base, &p.attributes, &[]);
                let (dstype, value) = match (s.is_monotonic, delta) {
                    (true, false) => (DsType::Counter, v),
                    (true, true) => delta_per_step(v, step_ms),
                    (false, false) => (DsType::Gauge, v),
                    (false, true) => (DsType::Sum, v),
                };
                push(tags, dstype, p.time_unix_nano, value);
            }
        }
        metric::Data::Histogram(h) => {
            let delta = h.aggregation_temporality() == AggregationTemporality::Delta;
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                let mut dist = Distribution {
                    name,
                    base,
                    attributes: &p.attributes,
                    delta,
                    step_ms,
                    time: p.time_unix_nano,
                    out: &mut *out,
                };
                dist.stats(p.count, p.sum, p.max, p.min);
                // Buckets cumulative, as `le` means in Prometheus: one query reads both.
                let mut below = 0u64;
                for (i, &c) in p.bucket_counts.iter().enumerate() {
                    below += c;
                    let le = p.explicit_bounds.get(i).map_or_else(
                        || "Inf".to_string(),
                        |b| sanitize(&b.to_string()).into_owned(),
                    );
                    dist.counter(&[("statistic", "bucket"), ("le", &le)], below as f64);
                }
            }
        }
        metric::Data::ExponentialHistogram(h) => {
            let delta = h.aggregation_temporality() == AggregationTemporality::Delta;
            for p in h.data_points.iter().filter(|p| recorded(p.flags)) {
                Distribution {
                    name,
                    base,
                    attributes: &p.attributes,
                    delta,
                    step_ms,
                    time: p.time_unix_nano,
                    out: &mut *out,
                }
                .stats(p.count, p.sum, p.max, p.min);
            }
        }
        metric::Data::Summary(s) => {
            for p in s.data_points.iter().filter(|p| recorded(p.flags)) {
                let t = p.time_unix_nano;
                let stat = |s: &str| vec![("statistic", s.to_string())];
                push(
                    point_tags(name, base, &p.attributes, &stat("count")),
                    DsType::Counter,
                    t,
                    p.count as f64,
                );
                push(
                    point_tags(name, base, &p.attributes, &stat("totalAmount")),
                    DsType::Counter,
                    t,
                    p.sum,
                );
                for q in &p.quantile_values {
                    let pct = sanitize(&(q.quantile * 100.0).to_string()).into_owned();
                    let extra = [("statistic", "percentile".to_string()), ("percentile", pct)];
                    push(
                        point_tags(name, base, &p.attributes, &extra),
                        DsType::Gauge,
                        t,
                        q.value,
                    );
                }
            }
        }
    }
}

/// The event stream OTLP log records go to, unless a record or its resource names another
/// in the attribute `argus.stream`.
pub const LOGS_STREAM: &str = "logs";

/// Converts an OTLP logs export into events, grouped by stream. Each log record becomes a
/// JSON object: `timestamp` (ms), `severity`, `severityNumber`, `body`, `attributes`,
/// `resource` (the resource's attributes), and `traceId` / `spanId` when set.
pub fn otlp_logs(
    req: &argus_proto::otlp::collector::logs::v1::ExportLogsServiceRequest,
    now_ms: i64,
) -> Vec<(String, Vec<Event>)> {
    let mut by_stream: Vec<(String, Vec<Event>)> = Vec::new();
    let stream_of = |attrs: &[KeyValue]| {
        attrs
            .iter()
            .find(|kv| kv.key == "argus.stream")
            .and_then(|kv| kv.value.as_ref())
            .and_then(any_value_text)
    };
    for rl in &req.resource_logs {
        let resource_attrs = rl
            .resource
            .as_ref()
            .map(|r| r.attributes.as_slice())
            .unwrap_or(&[]);
        let resource_stream = stream_of(resource_attrs);
        for sl in &rl.scope_logs {
            for rec in &sl.log_records {
                let stream = stream_of(&rec.attributes)
                    .or_else(|| resource_stream.clone())
                    .unwrap_or_else(|| LOGS_STREAM.to_string());
                let time = if rec.time_unix_nano > 0 {
                    rec.time_unix_nano
                } else {
                    rec.observed_time_unix_nano
                };
                let ts_ms = if time > 0 { nanos_to_ms(time) } else { now_ms };
                let mut obj = serde_json::Map::new();
                obj.insert("timestamp".into(), ts_ms.into());
                obj.insert("severity".into(), rec.severity_text.clone().into());
                obj.insert("severityNumber".into(), rec.severity_number.into());
                obj.insert(
                    "body".into(),
                    rec.body
                        .as_ref()
                        .map_or(serde_json::Value::Null, any_value_json),
                );
                obj.insert("attributes".into(), attributes_json(&rec.attributes).into());
                obj.insert("resource".into(), attributes_json(resource_attrs).into());
                if !rec.trace_id.is_empty() {
                    obj.insert("traceId".into(), hex(&rec.trace_id).into());
                }
                if !rec.span_id.is_empty() {
                    obj.insert("spanId".into(), hex(&rec.span_id).into());
                }
                let value = serde_json::Value::Object(obj);
                let bytes = serde_json::to_vec(&value).map_or(0, |j| j.len());
                let event = Event::new(ts_ms, value, bytes);
                match by_stream.iter_mut().find(|(s, _)| *s == stream) {
                    Some((_, list)) => list.push(event),
                    None => by_stream.push((stream, vec![event])),
                }
            }
        }
    }
    by_stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_delta_histogram_becomes_per_step_rates_with_cumulative_buckets() {
        use argus_proto::otlp::metrics::v1::{Histogram, HistogramDataPoint};
        let point = HistogramDataPoint {
            time_unix_nano: 120_500_000_000,
            count: 6,
            sum: Some(300.0),
            max: Some(90.0),
            bucket_counts: vec![1, 2, 3],
            explicit_bounds: vec![10.0, 50.0],
            ..Default::default()
        };
        let data = metric::Data::Histogram(Histogram {
            data_points: vec![point],
            aggregation_temporality: AggregationTemporality::Delta as i32,
        });
        let mut points = Vec::new();
        convert_metric("latency", &[], &data, 2_000, &mut points);
        let got: Vec<(String, DsType, i64, f64)> = points
            .iter()
            .map(|p| {
                let tag = |k: &str| p.tags.get(k).unwrap_or("").to_string();
                (tag("statistic") + &tag("le"), p.dstype, p.ts_ms, p.value)
            })
            .collect();
        let rate = |stat: &str, v: f64| (stat.to_string(), DsType::Sum, 120_500, v);
        assert_eq!(
            got,
            [
                rate("count", 3.0),
                rate("totalAmount", 150.0),
                ("max".to_string(), DsType::Gauge, 120_500, 90.0),
                rate("bucket10", 0.5),
                rate("bucket50", 1.5),
                rate("bucketInf", 3.0),
            ]
        );
    }
}
