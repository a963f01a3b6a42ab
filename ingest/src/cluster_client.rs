//! `argus cluster status`: asks a node for its view of the cluster (`GET /api/v1/cluster`)
//! and prints it for a terminal: the nodes with their roles and heartbeats, the streams
//! with their NATS leader, last sequence and how far this node has applied them.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use argus_proto::http_client::{self, Endpoint};
use serde_json::Value;

/// What `argus cluster status` needs.
pub struct StatusArgs {
    /// Base URL of a node's HTTP API.
    pub server: String,
    pub ca: Option<std::path::PathBuf>,
    pub token: Option<String>,
    /// Print the JSON as the node gave it.
    pub json: bool,
}

/// Fetches the node's view; the text to print.
pub async fn status(args: StatusArgs) -> anyhow::Result<String> {
    let target = Endpoint::parse(&args.server).context("--server")?;
    let path = format!("{}/api/v1/cluster", target.path.trim_end_matches('/'));
    let tls = match target.tls {
        true => Some(http_client::tls_config(args.ca.as_deref())?),
        false => None,
    };
    let mut sender = http_client::connect(&target, tls.as_ref()).await?;
    let bearer = args.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![(hyper::header::ACCEPT, "application/json")];
    if let Some(b) = &bearer {
        headers.push((hyper::header::AUTHORIZATION, b.as_str()));
    }
    let resp = sender
        .send_request(http_client::get(&target, &path, &headers)?)
        .await
        .with_context(|| format!("asking {} for its cluster", args.server))?;
    let status = resp.status();
    let (body, _) = http_client::read_body(resp, 16 << 20).await?;
    if !status.is_success() {
        bail!(
            "{} answered {status}: {}",
            args.server,
            String::from_utf8_lossy(&body)
        );
    }
    let view: Value = serde_json::from_slice(&body)
        .with_context(|| format!("{} answered with something other than JSON", args.server))?;
    if args.json {
        return Ok(format!("{view:#}\n"));
    }
    Ok(render(&args.server, &view))
}

/// The view as a terminal table.
pub fn render(server: &str, view: &Value) -> String {
    let mut out = String::new();
    if view["mode"] != "cluster" {
        let _ = writeln!(out, "{server} is a single node, not in a cluster");
        return out;
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "node {} at {server}: {}, {} partitions, {} replicas, NATS {}",
        text(&view["node"]),
        if view["ready"] == true {
            "joined".to_string()
        } else {
            format!("NOT READY ({})", text(&view["status"]))
        },
        text(&view["partitions"]),
        text(&view["replicas"]),
        view["nats"]
            .as_array()
            .map(|a| a.iter().map(text).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
    );
    let nodes: Vec<Vec<String>> = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                text(&n["id"]),
                n["roles"]
                    .as_array()
                    .map(|r| r.iter().map(text).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                text(&n["http"]),
                text(&n["grpc"]),
                n["heartbeat_age_ms"]
                    .as_i64()
                    .map(|ms| format!("{:.1} s ago", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let _ = writeln!(out, "\nnodes ({})", nodes.len());
    table(
        &mut out,
        &["NODE", "ROLES", "HTTP", "GRPC", "HEARTBEAT"],
        &nodes,
    );
    let log = &view["log"];
    if log.is_object() {
        let streams: Vec<Vec<String>> = log["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                ["stream", "leader", "last_sequence", "messages", "bytes"]
                    .iter()
                    .map(|k| text(&s[*k]))
                    .collect()
            })
            .collect();
        let _ = writeln!(out, "\nstreams ({})", streams.len());
        table(
            &mut out,
            &["STREAM", "LEADER", "LAST SEQ", "MESSAGES", "BYTES"],
            &streams,
        );
        let partitions: Vec<Vec<String>> = log["partitions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                vec![
                    text(&p["partition"]),
                    p["owners"]
                        .as_array()
                        .map(|o| o.iter().map(text).collect::<Vec<_>>().join(","))
                        .unwrap_or_else(|| "-".into()),
                    match (p["applying"].as_bool(), p["caught_up"].as_bool()) {
                        (Some(true), Some(true)) => "serving".into(),
                        (Some(true), _) => "replaying".into(),
                        (Some(false), _) => "-".into(),
                        (None, _) => "".into(),
                    },
                    text(&p["applied_sequence"]),
                    text(&p["lag"]),
                ]
            })
            .collect();
        let _ = writeln!(
            out,
            "\npartitions ({}), map version {}, controller {}{}",
            partitions.len(),
            text(&log["map_version"]),
            text(&view["controller"]),
            match log["caught_up"].as_bool() {
                Some(true) => "; this node has caught up",
                Some(false) => "; this node is still replaying",
                None => "",
            }
        );
        table(
            &mut out,
            &["PARTITION", "OWNERS", "HERE", "APPLIED", "LAG"],
            &partitions,
        );
        let _ = writeln!(
            out,
            "\npublished by this node: {} messages ({} resends recognised)",
            text(&log["published_messages"]),
            text(&log["duplicate_messages"])
        );
    }
    out
}

/// Columns padded to their widest cell.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let mut l = String::from("  ");
        for (cell, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_cluster_view_reads_as_tables() {
        let view = json!({
            "mode": "cluster", "node": "a", "ready": true, "partitions": 8, "replicas": 2,
            "nats": ["nats://127.0.0.1:4222"],
            "nodes": [
                {"id": "a", "roles": ["gateway", "store", "query"], "http": "127.0.0.1:7101",
                 "grpc": "127.0.0.1:4317", "heartbeat_age_ms": 1200},
                {"id": "bb", "roles": ["store"], "http": "127.0.0.1:7102",
                 "grpc": "127.0.0.1:4318", "heartbeat_age_ms": 300},
            ],
            "controller": "a",
            "log": {"published_messages": 12, "duplicate_messages": 1, "caught_up": true,
                "map_version": 3,
                "streams": [{"stream": "ARGUS_IN_0", "leader": "n1", "last_sequence": 7,
                    "messages": 7, "bytes": 900}],
                "partitions": [
                    {"partition": 0, "owners": ["a", "bb"], "applying": true,
                     "caught_up": true, "applied_sequence": 7, "lag": 0},
                    {"partition": 1, "owners": ["bb"], "applying": false}]},
        });
        let text = render("http://127.0.0.1:7101", &view);
        assert!(
            text.starts_with("node a at http://127.0.0.1:7101: joined, 8 partitions, 2 replicas"),
            "{text}"
        );
        assert!(text.contains("  NODE  ROLES"), "{text}");
        assert!(text.contains("  bb    store"), "{text}");
        assert!(text.contains("1.2 s ago"), "{text}");
        assert!(text.contains("ARGUS_IN_0  n1"), "{text}");
        assert!(text.contains("this node has caught up"), "{text}");
        assert!(text.contains("map version 3, controller a"), "{text}");
        assert!(
            text.contains("  0          a,bb    serving  7        0"),
            "{text}"
        );
        assert!(text.contains("  1          bb      -"), "{text}");
        assert!(
            text.contains("12 messages (1 resends recognised)"),
            "{text}"
        );
        let single = render("http://x", &json!({"mode": "single node"}));
        assert_eq!(single, "http://x is a single node, not in a cluster\n");
        let waiting = render(
            "http://x",
            &json!({"mode": "cluster", "node": "a", "ready": false, "status": "NATS down"}),
        );
        assert!(waiting.contains("NOT READY (NATS down)"), "{waiting}");
    }
}
