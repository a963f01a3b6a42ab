//! The loss report, end to end: for every agent and stream, what the agent made (by input),
//! what the server applied, what was dropped where and why (the agent's buffer, too large a
//! batch; the server's refusals by reason), what is still on its way, and what nothing
//! explains, from the agent's own account (sent with every batch) and the server's book of
//! what it took (`resend.rs`, kept through crashes with the samples). Served as `GET
//! /api/v1/loss` and written every step as `argus.loss.*` series, queryable and graphable
//! like any other.

use std::collections::BTreeMap;

use argus_tsdb::{Sample, TagMap};
use serde_json::{Value, json};

use crate::convert::Converted;
use crate::resend::{AgentLoss, StreamLoss};
use crate::state::AppState;

/// The report as `GET /api/v1/loss` gives it: per agent and kind, its streams and batch
/// gaps, and the totals over every agent with the loss ratio.
pub fn report(agents: &[AgentLoss]) -> Value {
    let mut sent = 0u64;
    let mut applied = 0u64;
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending = 0u64;
    let mut unapplied = 0u64;
    let mut unexplained = 0i64;
    let mut gaps = 0u64;
    for a in agents {
        gaps += a.gaps.unwrap_or(0);
        for s in &a.streams {
            sent += s.sent;
            applied += s.applied;
            pending += s.pending;
            unapplied += s.unapplied;
            unexplained += s.unexplained.unwrap_or(0);
            for (why, n) in &s.dropped {
                *dropped.entry(why.clone()).or_default() += n;
            }
        }
    }
    let lost: u64 = dropped.values().sum::<u64>() + unexplained.max(0) as u64;
    json!({
        "agents": agents,
        "total": {
            "sent": sent,
            "applied": applied,
            "dropped": dropped,
            "pending": pending,
            "unapplied": unapplied,
            "unexplained": unexplained,
            "gaps": gaps,
            // Dropped and unexplained over sent, since the agents started.
            "lossRatio": if sent == 0 { 0.0 } else { lost as f64 / sent as f64 },
        },
    })
}

/// The report as series: per agent and stream `argus.loss.sent`,
/// `.applied` and `.dropped{place,reason}` (cumulative counts since the agent started: a
/// window's count is their growth over it, exact through restarts since the books are
/// kept), `.pending`, `.unapplied` (in a cluster), `.unexplained` and, per agent, `.gaps`;
/// all `atlas.dstype=gauge`.
pub fn series(agents: &[AgentLoss], in_cluster: bool) -> Vec<(TagMap, f64)> {
    let mut out = Vec::new();
    let base = |s: &StreamLoss, name: &str, dstype: &str| -> Vec<(String, String)> {
        vec![
            ("name".into(), name.into()),
            ("agent".into(), s.agent.clone()),
            ("nf.node".into(), node_of(&s.agent).to_string()),
            ("stream".into(), s.stream.clone()),
            ("kind".into(), s.kind.to_string()),
            ("atlas.dstype".into(), dstype.into()),
        ]
    };
    let tags = |pairs: Vec<(String, String)>| {
        TagMap::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    };
    for a in agents {
        for s in &a.streams {
            out.push((tags(base(s, "argus.loss.sent", "gauge")), s.sent as f64));
            out.push((
                tags(base(s, "argus.loss.applied", "gauge")),
                s.applied as f64,
            ));
            for (why, n) in &s.dropped {
                let (place, reason) = why.split_once(':').unwrap_or(("agent", why));
                let mut t = base(s, "argus.loss.dropped", "gauge");
                t.push(("place".into(), place.into()));
                t.push(("reason".into(), reason.into()));
                out.push((tags(t), *n as f64));
            }
            out.push((
                tags(base(s, "argus.loss.pending", "gauge")),
                s.pending as f64,
            ));
            if in_cluster && s.kind == "metrics" {
                out.push((
                    tags(base(s, "argus.loss.unapplied", "gauge")),
                    s.unapplied as f64,
                ));
            }
            if let Some(u) = s.unexplained {
                out.push((tags(base(s, "argus.loss.unexplained", "gauge")), u as f64));
            }
        }
        if let (Some(gaps), Some(first)) = (a.gaps, a.streams.first()) {
            let mut t = base(first, "argus.loss.gaps", "gauge");
            t.retain(|(k, _)| k != "stream");
            out.push((tags(t), gaps as f64));
        }
    }
    out
}

/// One agent and stream over a window: items per step sent, applied, dropped by
/// `place:reason`.
type WindowRow = (Vec<f64>, Vec<f64>, BTreeMap<String, Vec<f64>>);

/// The loss over a window (`GET /api/v1/loss?s=e-1d`, the daily ratio), from the
/// `argus.loss.*` series this node stored: per agent and stream the items sent, applied
/// and dropped (by place and reason) in the window, per step and in all, and the ratio of
/// dropped to sent. `params` are the graph API's (`s`, `e`, `step`, `tz`); in a cluster,
/// `fanout` reads the series from the store nodes.
pub fn window(
    store: &argus_tsdb::Store,
    params: &[(String, String)],
    fanout: Option<argus_query::split::SharedFanout>,
) -> Result<Value, argus_query::Error> {
    let request = |p: &[(String, String)], q: String| {
        let mut p = p.to_vec();
        p.push(("q".into(), q));
        argus_query::graph::GraphRequest::from_params(&p, store.now_ms(), store.config().step_ms)
    };
    let mut p: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "s" | "e" | "step" | "tz"))
        .cloned()
        .collect();
    // The window's grid, then the same grid a step earlier: that step's cumulative value
    // is where the window's counts start from.
    let grid = request(&p, "1".into())?;
    p.retain(|(k, _)| k != "s" && k != "step");
    p.push(("s".into(), (grid.start_ms - 2 * grid.step_ms).to_string()));
    p.push(("step".into(), format!("{}ms", grid.step_ms)));
    let by = |name: &str, keys: &str| {
        // Cumulative gauges: a step's largest is its last.
        let q = format!("name,{name},:eq,kind,metrics,:eq,:and,:max,(,{keys},),:by,:cf-max");
        argus_query::graph::evaluate_with_fanout(
            &request(&p, q)?,
            store,
            &argus_query::Limits::default(),
            fanout.clone(),
        )
    };
    let sent = by("argus.loss.sent", "agent,stream")?;
    let applied = by("argus.loss.applied", "agent,stream")?;
    let dropped = by("argus.loss.dropped", "agent,stream,place,reason")?;
    // Items per step: the growth of the cumulative value past its highest so far (a step
    // without one adds nothing; before a series' first value it is 0: nothing had been
    // counted). A count never goes back, so a dip is a report that lagged (a cluster's
    // store node catching up), not a restart: its recovery is not counted twice.
    let counts = |values: &[f64]| -> Vec<f64> {
        let mut high = values
            .first()
            .copied()
            .filter(|v| v.is_finite())
            .unwrap_or(0.0);
        values[1.min(values.len())..]
            .iter()
            .map(|v| {
                if !v.is_finite() {
                    return 0.0;
                }
                let grew = (v - high).max(0.0);
                high = high.max(*v);
                grew
            })
            .collect()
    };
    let key = |tags: &TagMap| {
        (
            tags.get("agent").unwrap_or_default().to_string(),
            tags.get("stream").unwrap_or_default().to_string(),
        )
    };
    let mut rows: BTreeMap<(String, String), WindowRow> = BTreeMap::new();
    for s in &sent.series {
        rows.entry(key(&s.tags)).or_default().0 = counts(&s.values);
    }
    for s in &applied.series {
        rows.entry(key(&s.tags)).or_default().1 = counts(&s.values);
    }
    for s in &dropped.series {
        let why = format!(
            "{}:{}",
            s.tags.get("place").unwrap_or_default(),
            s.tags.get("reason").unwrap_or_default()
        );
        rows.entry(key(&s.tags))
            .or_default()
            .2
            .insert(why, counts(&s.values));
    }
    let (mut all_sent, mut all_dropped) = (0.0, 0.0);
    let agents: Vec<Value> = rows
        .into_iter()
        .map(|((agent, stream), (sent, applied, dropped))| {
            let total = |v: &[f64]| v.iter().sum::<f64>();
            let dropped_total: f64 = dropped.values().map(|v| total(v)).sum();
            all_sent += total(&sent);
            all_dropped += dropped_total;
            json!({
                "agent": agent,
                "stream": stream,
                "sent": total(&sent),
                "applied": total(&applied),
                "dropped": dropped.iter().map(|(k, v)| (k.clone(), total(v))).collect::<BTreeMap<_, _>>(),
                "lossRatio": if total(&sent) > 0.0 { dropped_total / total(&sent) } else { 0.0 },
                "steps": {"sent": sent, "applied": applied, "dropped": dropped},
            })
        })
        .collect();
    Ok(json!({
        "window": {"start": grid.start_ms, "end": grid.end_ms, "step": grid.step_ms},
        "agents": agents,
        "total": {
            "sent": all_sent,
            "dropped": all_dropped,
            "lossRatio": if all_sent > 0.0 { all_dropped / all_sent } else { 0.0 },
        },
    }))
}

/// Every agent's loss as this node can know it: its own books on a single node; in a
/// cluster, the metrics books of every partition from the store nodes serving them
/// (`cluster/books.rs`), with the partitions nobody answered for, and the event books of
/// this gateway. `authorization` is passed on to the store nodes. Call on a blocking thread.
pub fn agents(
    state: &AppState,
    authorization: Option<String>,
) -> Result<(Vec<AgentLoss>, Vec<u32>), String> {
    let Some(cluster) = &state.cluster else {
        return Ok((state.agents.loss(), Vec::new()));
    };
    let timeout = std::time::Duration::from_millis(state.cfg.query_timeout_ms.max(1) as u64);
    let Some(fanout) = cluster.fanout(authorization, false, state.cfg.query_limits(), timeout)
    else {
        return Err(format!("{} has not joined its cluster", cluster.node_id()));
    };
    let mut agents = crate::cluster::query::cluster_loss(&fanout, cluster.log().ok())?;
    agents.extend(
        state
            .agents
            .loss()
            .into_iter()
            .filter(|a| a.kind == "events"),
    );
    Ok((agents, fanout.missing()))
}

/// The host an agent runs on: its id is `<node>/<random>`.
fn node_of(agent: &str) -> &str {
    agent.rsplit_once('/').map_or(agent, |(node, _)| node)
}

/// Writes the report's series every `step_ms`, the way the node takes writes (the store, or
/// a cluster's log). In a cluster the node holding the controller's lease writes every
/// agent's metrics series from the partitions' books, and each gateway the event series of
/// the agents it took events from. Runs until aborted.
pub async fn write_series(state: AppState) {
    let step = std::time::Duration::from_millis(state.cfg.step_ms.max(1000) as u64);
    let mut tick = tokio::time::interval(step);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let st = state.clone();
        let written = tokio::task::spawn_blocking(move || {
            let agents = match &st.cluster {
                None => st.agents.loss(),
                Some(cluster) => {
                    let mut agents: Vec<AgentLoss> = st
                        .agents
                        .loss()
                        .into_iter()
                        .filter(|a| a.kind == "events")
                        .collect();
                    if cluster.is_controller() {
                        let bearer = st.tokens.get().and_then(|t| t.own_bearer());
                        match crate::loss::agents(&st, bearer) {
                            // A partial view would write counts that go back: none then.
                            Ok((all, missing)) if missing.is_empty() => {
                                agents.extend(all.into_iter().filter(|a| a.kind == "metrics"))
                            }
                            Ok((_, missing)) => tracing::debug!(
                                ?missing,
                                "loss series not written: partitions unanswered"
                            ),
                            Err(e) => tracing::debug!(error = %e, "loss series not written"),
                        }
                    }
                    agents
                }
            };
            if agents.is_empty() {
                return;
            }
            let now = st.store.now_ms();
            let writer = st.store.writer();
            let mut conv = Converted::default();
            for (tags, value) in series(&agents, st.cluster.is_some()) {
                match writer.try_resolve(&tags, None) {
                    Ok(id) => conv.samples.push(Sample {
                        id,
                        ts_ms: now,
                        value,
                    }),
                    Err(e) => tracing::debug!(error = %e, "a loss series was refused"),
                }
            }
            let _ = conv.commit(writer, &[], &st.metrics, st.cluster.as_deref());
        })
        .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing the loss series failed");
        }
    }
}
