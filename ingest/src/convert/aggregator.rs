//! The aggregator's update payload (`POST /api/v4/update`, what npm `nflx-spectator` and
//! other older Spectator clients post; decoded by `argus_proto::aggregator`), with the
//! aggregator's semantics: an add is a delta, and the deltas of every instance in one step
//! are added (stored as `atlas.dstype=sum` of `delta / step`, so the step holds the
//! per-second rate, as Atlas keeps counters); a max keeps the step's largest value
//! (`atlas.dstype=gauge`). Every datapoint is stamped now: the step in progress.

use std::sync::Arc;

use argus_proto::aggregator::{Op, Refused, decode};
use argus_tsdb::TagMap;

use super::publish::{Datapoint, PayloadError, render_tags};
use crate::validation::{RejectReason, Rejection, validate_tags};

/// Parses a payload into datapoints for `store_datapoints`, each valid or refused with a
/// reason; only a payload that is not the format fails as a whole.
pub fn parse_update(
    body: &[u8],
    now_ms: i64,
    step_ms: i64,
) -> Result<Vec<Result<Datapoint, Rejection>>, PayloadError> {
    let updates = decode(body).map_err(PayloadError::Format)?;
    if updates.is_empty() {
        return Err(PayloadError::Empty);
    }
    let step_s = step_ms as f64 / 1000.0;
    Ok(updates
        .into_iter()
        .map(|update| {
            let update = update.map_err(|r| match r {
                Refused::MissingName(m) => Rejection::new(RejectReason::MissingName, m),
                Refused::Invalid(m) => Rejection::new(RejectReason::InvalidValue, m),
            })?;
            let (dstype, value) = match update.op {
                Op::Add => ("sum", update.value / step_s),
                Op::Max => ("gauge", update.value),
            };
            let tags = TagMap::from_pairs(
                update
                    .tags
                    .iter()
                    .filter(|(k, _)| k != "atlas.dstype")
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .chain(std::iter::once(("atlas.dstype", dstype))),
            );
            validate_tags(&tags).map_err(|r| {
                Rejection::new(
                    r.reason,
                    format!("{} (tags={})", r.message, render_tags(&tags)),
                )
            })?;
            Ok(Datapoint {
                tags: Arc::new(tags),
                ts_ms: now_ms,
                value,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_become_rates_of_the_step_and_maxima_gauges() {
        let body = br#"[6,"count","gauge","name","reqs","statistic","queue",
            2,2,3,4,0,0,30,
            2,2,5,4,1,10,7,
            1,4,0,0,1,
            1,2,3,10,"x"]"#;
        let got = parse_update(body, 1_000, 60_000).unwrap();
        let dp = got[0].as_ref().unwrap();
        assert_eq!(dp.tags.get("atlas.dstype"), Some("sum"));
        assert_eq!(dp.value, 0.5, "30 in a 60 s step is 0.5 per second");
        assert_eq!(dp.ts_ms, 1_000);
        let gauge = got[1].as_ref().unwrap();
        assert_eq!(gauge.tags.get("atlas.dstype"), Some("gauge"));
        assert_eq!(gauge.value, 7.0);
        assert_eq!(
            got[2].as_ref().unwrap_err().reason,
            RejectReason::MissingName
        );
        assert_eq!(
            got[3].as_ref().unwrap_err().reason,
            RejectReason::InvalidValue
        );
        assert!(matches!(
            parse_update(b"[0]", 0, 60_000),
            Err(PayloadError::Empty)
        ));
        assert!(matches!(
            parse_update(b"{}", 0, 60_000),
            Err(PayloadError::Format(_))
        ));
    }
}
