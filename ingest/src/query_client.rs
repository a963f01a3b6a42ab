//! `argus query` and `argus tags`: a server's aggregates and tags in a terminal. An
//! expression in the Stack Language (the graph API, `format=json`) or PromQL (`--promql`:
//! `/api/v1/query`, or `/api/v1/query_range` with `--from`) is printed as a table, CSV or the
//! API's JSON; `argus tags` lists the tag keys, or one key's values, as the tags API gives
//! them.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use argus_proto::http_client::{self, Endpoint};
use serde_json::Value;

/// How to reach a server.
pub struct Target {
    /// Base URL of its HTTP API.
    pub server: String,
    pub ca: Option<std::path::PathBuf>,
    /// A read token, for a server with `--auth-file`.
    pub token: Option<String>,
}

/// How an answer is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns: a time column and a column per line.
    Table,
    /// The same as comma-separated values, with a header.
    Csv,
    /// The API's JSON, as it came.
    Json,
}

/// What `argus query` asks.
pub struct QueryArgs {
    pub target: Target,
    pub expr: String,
    /// PromQL rather than the Stack Language.
    pub promql: bool,
    /// The window: the graph API's own time syntax for the Stack Language; for PromQL,
    /// `now`, `now-<duration>`, epoch seconds or RFC 3339. Without `from`, a PromQL query is
    /// an instant query at `to`.
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
    pub output: Output,
}

/// GET `path_and_query` from the server: its body, or an error with its words.
async fn get(target: &Target, path_and_query: &str) -> anyhow::Result<Vec<u8>> {
    let endpoint = Endpoint::parse(&target.server).context("--server")?;
    let path = format!("{}{path_and_query}", endpoint.path.trim_end_matches('/'));
    let tls = match endpoint.tls {
        true => Some(http_client::tls_config(target.ca.as_deref())?),
        false => None,
    };
    let mut sender = http_client::connect(&endpoint, tls.as_ref()).await?;
    let bearer = target.token.as_ref().map(|t| format!("Bearer {t}"));
    let mut headers = vec![(hyper::header::ACCEPT, "application/json")];
    if let Some(b) = &bearer {
        headers.push((hyper::header::AUTHORIZATION, b.as_str()));
    }
    let resp = sender
        .send_request(http_client::get(&endpoint, &path, &headers)?)
        .await
        .with_context(|| format!("asking {}", target.server))?;
    let status = resp.status();
    let (body, _) = http_client::read_body(resp, 256 << 20).await?;
    if !status.is_success() {
        // The API's own words: `message` (Stack Language) or `error` (PromQL).
        let words = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| {
                v["message"]
                    .as_str()
                    .or_else(|| v["error"].as_str())
                    .map(String::from)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{} answered {status}: {words}", target.server);
    }
    Ok(body.to_vec())
}

fn encode(s: &str) -> String {
    crate::live_client::encode_component(s)
}

/// A PromQL time: `now` and `now-<duration>` here (the API takes neither), anything else as
/// the API reads it (epoch seconds, RFC 3339).
fn promql_time(text: &str, now_ms: i64) -> anyhow::Result<String> {
    let text = text.trim();
    if text == "now" {
        return Ok(format!("{}", now_ms as f64 / 1000.0));
    }
    if let Some(ago) = text.strip_prefix("now-") {
        let ms = crate::config::parse_duration_ms(ago)
            .with_context(|| format!("{text:?}: expected now-<duration>, e.g. now-1h"))?;
        return Ok(format!("{}", (now_ms - ms) as f64 / 1000.0));
    }
    Ok(text.to_string())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the query; the text to print.
pub async fn query(args: QueryArgs) -> anyhow::Result<String> {
    let path = if args.promql {
        let now = now_ms();
        let to = promql_time(args.to.as_deref().unwrap_or("now"), now)?;
        match &args.from {
            None => format!(
                "/api/v1/query?query={}&time={}",
                encode(&args.expr),
                encode(&to)
            ),
            Some(from) => {
                let step = args.step.as_deref().unwrap_or("60s");
                let step_ms = crate::config::parse_duration_ms(step)
                    .with_context(|| format!("--step {step:?}: expected a duration"))?;
                format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step={}",
                    encode(&args.expr),
                    encode(&promql_time(from, now)?),
                    encode(&to),
                    step_ms as f64 / 1000.0
                )
            }
        }
    } else {
        let mut path = format!("/api/v1/graph?format=json&q={}", encode(&args.expr));
        for (k, v) in [("s", &args.from), ("e", &args.to), ("step", &args.step)] {
            if let Some(v) = v {
                let _ = write!(path, "&{k}={}", encode(v));
            }
        }
        path
    };
    let body = get(&args.target, &path).await?;
    if args.output == Output::Json {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        return Ok(text);
    }
    let answer: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{} answered with something other than JSON",
            args.target.server
        )
    })?;
    let grid = if args.promql {
        promql_grid(&answer)?
    } else {
        graph_grid(&answer)?
    };
    Ok(match args.output {
        Output::Csv => csv(&grid),
        _ => table(&grid),
    })
}

/// An answer as rows under a header.
struct Grid {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// The graph API's JSON (`start`, `step`, `legend`, `values` per step): a row per step.
fn graph_grid(answer: &Value) -> anyhow::Result<Grid> {
    let start = answer["start"]
        .as_i64()
        .context("the answer has no start")?;
    let step = answer["step"].as_i64().context("the answer has no step")?;
    let mut header = vec!["time".to_string()];
    header.extend(
        answer["legend"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l.as_str().unwrap_or("").to_string()),
    );
    let rows = answer["values"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, row)| {
            let mut out = vec![time_text(start + i as i64 * step)];
            out.extend(row.as_array().into_iter().flatten().map(number_text));
            out
        })
        .collect();
    Ok(Grid { header, rows })
}

/// A Prometheus answer: an instant vector as a row per series (its labels and value); a
/// matrix as a row per time with a column per series; a scalar or string as one row.
fn promql_grid(answer: &Value) -> anyhow::Result<Grid> {
    let data = &answer["data"];
    let result = &data["result"];
    let labels = |metric: &Value| {
        let pairs: Vec<String> = metric
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        format!("{{{}}}", pairs.join(", "))
    };
    let seconds = |t: &Value| time_text((t.as_f64().unwrap_or(0.0) * 1000.0).round() as i64);
    Ok(match data["resultType"].as_str() {
        Some("vector") => Grid {
            header: vec!["series".into(), "time".into(), "value".into()],
            rows: result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    vec![
                        labels(&s["metric"]),
                        seconds(&s["value"][0]),
                        s["value"][1].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect(),
        },
        Some("matrix") => {
            let series = result.as_array().cloned().unwrap_or_default();
            let mut times: Vec<f64> = series
                .iter()
                .flat_map(|s| s["values"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p[0].as_f64())
                .collect();
            times.sort_by(f64::total_cmp);
            times.dedup();
            let mut header = vec!["time".to_string()];
            header.extend(series.iter().map(|s| labels(&s["metric"])));
            let rows = times
                .iter()
                .map(|&t| {
                    let mut row = vec![seconds(&Value::from(t))];
                    row.extend(series.iter().map(|s| {
                        s["values"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|p| p[0].as_f64() == Some(t))
                            .and_then(|p| p[1].as_str())
                            .unwrap_or("")
                            .to_string()
                    }));
                    row
                })
                .collect();
            Grid { header, rows }
        }
        Some("scalar" | "string") => Grid {
            header: vec!["time".into(), "value".into()],
            rows: vec![vec![
                seconds(&result[0]),
                result[1].as_str().unwrap_or("").to_string(),
            ]],
        },
        other => bail!("an answer of type {other:?}"),
    })
}

fn number_text(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Null => "NaN".into(),
        other => other.to_string(),
    }
}

/// A time as UTC, `2026-12-05T22:40:00Z`.
fn time_text(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| format!("{t:.0}"))
        .unwrap_or_else(|_| ms.to_string())
}

fn table(grid: &Grid) -> String {
    let columns = grid.header.len();
    let mut widths: Vec<usize> = grid.header.iter().map(|h| h.chars().count()).collect();
    for row in &grid.rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&grid.header);
    for row in &grid.rows {
        line(row);
    }
    out
}

fn csv(grid: &Grid) -> String {
    let field = |c: &String| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.clone()
        }
    };
    let mut out = String::new();
    for row in std::iter::once(&grid.header).chain(&grid.rows) {
        let cells: Vec<String> = row.iter().map(field).collect();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

/// What `argus tags` asks.
pub struct TagsArgs {
    pub target: Target,
    /// A key: its values; none: the keys.
    pub key: Option<String>,
    /// Only over the series of this Stack Language query.
    pub query: Option<String>,
    /// With the number of series each has.
    pub counts: bool,
}

/// The keys, or one key's values, a line each (with their series counts).
pub async fn tags(args: TagsArgs) -> anyhow::Result<String> {
    let mut path = match &args.key {
        Some(key) => format!("/api/v1/tags/{}?limit=1000", encode(key)),
        None => "/api/v1/tags?limit=1000".to_string(),
    };
    if let Some(q) = &args.query {
        let _ = write!(path, "&q={}", encode(q));
    }
    if args.counts {
        path.push_str("&verbose=1");
    }
    let body = get(&args.target, &path).await?;
    let answer: Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{} answered with something other than JSON",
            args.target.server
        )
    })?;
    let mut out = String::new();
    for item in answer.as_array().into_iter().flatten() {
        match item {
            Value::String(s) => {
                let _ = writeln!(out, "{s}");
            }
            other => {
                // Verbose: `{"key": .., "value": .., "count": ..}`.
                let name = other["value"]
                    .as_str()
                    .or_else(|| other["key"].as_str())
                    .unwrap_or("");
                let _ = writeln!(out, "{name}\t{}", number_text(&other["count"]));
            }
        }
    }
    Ok(out)
}
