//! Live subscriptions as agents receive them on their control streams.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use argus_proto::v1;

use crate::live::Subscription;

/// The subscriptions on the streams an agent serves (`*` in its streams: any stream), as
/// its control stream carries them: the predicate in the core's canonical text, the fields
/// to send, the sampling.
pub fn agent_subscriptions(
    subs: &BTreeMap<u64, Arc<Subscription>>,
    agent_streams: &[String],
) -> v1::Subscriptions {
    let serves = |stream: &String| agent_streams.iter().any(|s| s == "*" || s == stream);
    let subscriptions = subs
        .values()
        .filter(|s| !s.ended.load(Ordering::Relaxed))
        .filter(|s| s.query.streams().iter().any(serves))
        .map(|s| v1::Subscription {
            id: s.id,
            streams: s.query.streams().into_iter().filter(serves).collect(),
            // A join's where and sampling read the joined event: the server runs them.
            predicate: if s.query.filters_at_source() {
                s.query.filter.to_string()
            } else {
                argus_mql::predicate::Predicate::True.to_string()
            },
            fields: s.fields.iter().flatten().map(field_path).collect(),
            whole_event: s.fields.is_none(),
            sampling: s
                .query
                .sample
                .as_ref()
                .filter(|_| s.query.filters_at_source())
                .map(|sample| v1::Sampling {
                    strategy: match sample.strategy {
                        argus_mql::ast::Strategy::Random => v1::sampling::Strategy::Random,
                        argus_mql::ast::Strategy::Sticky => v1::sampling::Strategy::Sticky,
                        argus_mql::ast::Strategy::Rps => v1::sampling::Strategy::Rps,
                        argus_mql::ast::Strategy::All => v1::sampling::Strategy::Unspecified,
                    } as i32,
                    threshold: sample.threshold,
                    factor: sample.factor,
                    salt: sample.salt,
                    keys: sample.keys.iter().map(field_path).collect(),
                }),
        })
        .collect();
    v1::Subscriptions { subscriptions }
}

fn field_path(path: &argus_mql::predicate::Path) -> v1::FieldPath {
    use argus_mql::predicate::Segment;
    v1::FieldPath {
        segments: path
            .0
            .iter()
            .map(|seg| v1::PathSegment {
                kind: Some(match seg {
                    Segment::Key(k) => v1::path_segment::Kind::Key(k.clone()),
                    Segment::Index(i) => v1::path_segment::Kind::Index(*i),
                    Segment::Any => v1::path_segment::Kind::Any(true),
                }),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_subscription_asks_agents_for_every_event_of_both_streams() {
        let hub = Arc::new(crate::live::LiveHub::default());
        let _plain = hub
            .subscribe("select a from s where a > 1", None, "t", None)
            .unwrap();
        let _join = hub
            .subscribe(
                "select a, region from s join hosts 5 seconds on host where region == 'eu' \
                 sample {'strategy': 'RANDOM', 'threshold': 10}",
                None,
                "t",
                None,
            )
            .unwrap();
        let subs = agent_subscriptions(&hub.snapshot(), &["*".to_string()]).subscriptions;
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].predicate, "e['a'] > 1");
        let join = &subs[1];
        assert_eq!(join.streams, ["s", "hosts"]);
        assert_eq!(join.predicate, "true");
        assert!(join.sampling.is_none());
        let fields: Vec<String> = join
            .fields
            .iter()
            .map(|f| format!("{:?}", f.segments[0].kind))
            .collect();
        assert_eq!(fields.len(), 3, "{fields:?}");
        assert!(fields.iter().any(|f| f.contains("host")), "{fields:?}");
        // An agent serving only the joined stream still gets the subscription.
        let subs = agent_subscriptions(&hub.snapshot(), &["hosts".to_string()]).subscriptions;
        assert_eq!(subs.len(), 1);
        assert_eq!(subs[0].streams, ["hosts"]);
    }
}
