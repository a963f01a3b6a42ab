//! The Stack Language semantic cases (`query/asl/tests/data/*.test`), run through the real
//! `argus eval` command: each load written as the command's input file, each case's graph
//! parameters given as its flags, and the printed graph JSON read back into lines; then the
//! same cases against a real three-node cluster on NATS JetStream, through the graph API. The
//! query crate runs the same files in process (`query/asl/tests/semantics.rs`).

use std::path::PathBuf;
use std::process::Command;

use argus_query::cases::{Case, Group, Line, load_dir};
use argus_tests::{Nats, Server, binary, enc, eventually, scratch_dir};
use serde_json::Value;

/// `argus eval` for one case: Ok(lines) from the JSON it prints, or Err(its error message).
fn eval(case: &Case, group: &Group, input: &PathBuf) -> Result<Vec<Line>, String> {
    let mut cmd = Command::new(binary("argus"));
    cmd.arg("eval").arg("--input").arg(input);
    let mut expr = String::new();
    for (k, v) in case.graph_params(group) {
        match k.as_str() {
            "q" => expr = v,
            "s" | "e" | "step" | "tz" | "format" => {
                cmd.arg(format!("--{k}={v}"));
            }
            _ => {
                cmd.arg("--param").arg(format!("{k}={v}"));
            }
        }
    }
    let out = cmd
        .arg("--")
        .arg(&expr)
        .output()
        .expect("running argus eval");
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(stderr.trim().to_string());
    }
    let body: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "argus eval printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    graph_lines(&body)
}

/// The lines of an Atlas graph JSON body: `legend[i]`, `metrics[i]` (without the
/// `atlas.offset` every output adds) and column `i` of `values`.
fn graph_lines(body: &Value) -> Result<Vec<Line>, String> {
    let field = |name: &str| {
        body[name]
            .as_array()
            .ok_or_else(|| format!("no '{name}' list in {body}"))
    };
    let (legend, metrics, rows) = (field("legend")?, field("metrics")?, field("values")?);
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| format!("bad number {n}")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => Err(format!("bad value {other:?}")),
        },
        other => Err(format!("bad value {other}")),
    };
    legend
        .iter()
        .zip(metrics)
        .enumerate()
        .map(|(i, (label, tags))| {
            let tags = tags
                .as_object()
                .ok_or("metrics entry is not an object")?
                .iter()
                .filter(|(k, _)| k.as_str() != "atlas.offset")
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let values = rows
                .iter()
                .map(|row| number(&row[i]))
                .collect::<Result<Vec<f64>, String>>()?;
            Ok(Line {
                label: label.as_str().unwrap_or_default().to_string(),
                tags,
                values,
            })
        })
        .collect()
}

#[test]
fn every_case_through_argus_eval() {
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query/asl/tests/data");
    let files = load_dir(&data).unwrap_or_else(|e| panic!("loading the Stack Language cases: {e}"));
    let dir = scratch_dir("asl-cases");
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for (name, groups) in &files {
        for (g, group) in groups.iter().enumerate() {
            let input = dir.join(format!("{name}-{g}.json"));
            std::fs::write(&input, group.eval_input().to_string()).expect("writing the input");
            for case in &group.cases {
                n_cases += 1;
                let outcome = eval(case, group, &input);
                if let Err(e) = case.check(outcome.as_deref().map_err(String::as_str)) {
                    failures.push(e);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases failed through argus eval:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n_cases >= 200, "only {n_cases} cases");
}

/// The partitions of a node's `/api/v1/cluster` view.
fn partitions(node: &Server) -> Vec<Value> {
    node.get_json("/api/v1/cluster")["log"]["partitions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The graph API's answer to one case: Ok(lines), or Err(the error message it gave).
fn graph_of(node: &Server, case: &Case, group: &Group) -> Result<Vec<Line>, String> {
    let query: Vec<String> = case
        .graph_params(group)
        .iter()
        .map(|(k, v)| format!("{k}={}", enc(v)))
        .collect();
    let (status, body) = node.get(&format!("/api/v1/graph?{}", query.join("&")));
    let json: Value = serde_json::from_str(&body)
        .map_err(|e| format!("the graph API answered {status} with no JSON ({e}): {body}"))?;
    if status != 200 {
        return Err(json["message"].as_str().unwrap_or(&body).to_string());
    }
    if json.get("partial").is_some_and(|p| !p.is_null()) {
        return Err(format!("a partial answer: {json}"));
    }
    graph_lines(&json)
}

/// The load as backfill datapoints: one per stored value, at its step.
fn backfill_body(group: &Group) -> String {
    let mut metrics = Vec::new();
    for series in &group.series {
        let mut tags: serde_json::Map<String, Value> = series
            .tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string().into()))
            .collect();
        tags.insert("atlas.dstype".into(), "gauge".into());
        for (i, v) in series.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let value: Value = if v.is_finite() {
                serde_json::json!(v)
            } else if v.is_nan() {
                "NaN".into()
            } else if *v > 0.0 {
                "Infinity".into()
            } else {
                "-Infinity".into()
            };
            metrics.push(serde_json::json!({
                "tags": tags,
                "timestamp": argus_query::cases::T0 + i as i64 * argus_query::cases::STEP,
                "value": value,
            }));
        }
    }
    serde_json::json!({ "metrics": metrics }).to_string()
}

/// One load's cases on a fresh cluster: (cases run, failures, seconds to settle, to apply,
/// to answer).
fn cluster_run(name: &str, g: usize, group: &Group) -> (usize, Vec<String>, [f64; 3]) {
    let nats = Nats::start(1);
    let clock = group.last().to_string();
    let ids = ["a", "b", "c"];
    let started = std::time::Instant::now();
    let nodes: Vec<Server> = ids
        .iter()
        .map(|id| {
            Server::start_listening_with_env(
                &[
                    "--ephemeral",
                    "--cluster",
                    &nats.url(),
                    "--node-id",
                    id,
                    "--partitions",
                    "8",
                ],
                &[
                    ("ARGUS_TEST_FIXED_CLOCK_MS", &clock),
                    ("ARGUS_TEST_UNCHECKED_TAGS", "1"),
                ],
            )
        })
        .collect();
    // Every partition has its two owners, each applying it and caught up (a node that
    // owned it before may still apply it for a while: queries ask only owners).
    for (node, id) in nodes.iter().zip(ids) {
        eventually(
            90,
            &format!("{name} load {g}: node {id} holding its partitions"),
            || {
                let parts = partitions(node);
                (parts.len() == 8
                    && parts.iter().all(|p| {
                        let owners = p["owners"].as_array().cloned().unwrap_or_default();
                        let mine = owners.iter().any(|x| x == id);
                        owners.len() == 2
                            && (!mine || (p["applying"] == true && p["caught_up"] == true))
                    }))
                .then_some(())
            },
        );
    }
    let settled = started.elapsed().as_secs_f64();
    let (status, body) = nodes[0].post("/api/v1/backfill", backfill_body(group).as_bytes(), None);
    assert_eq!(status, 200, "{name} load {g}: backfilling the load: {body}");
    // Applied by both owners of every message the load became.
    let published = nodes[0].get_json("/api/v1/cluster")["log"]["published_messages"]
        .as_u64()
        .expect("the gateway's published messages");
    eventually(
        60,
        &format!("{name} load {g}: {published} messages applied twice"),
        || {
            let applied: u64 = nodes
                .iter()
                .zip(ids)
                .flat_map(|(node, id)| {
                    partitions(node).into_iter().filter(move |p| {
                        p["owners"]
                            .as_array()
                            .is_some_and(|o| o.iter().any(|x| x == id))
                    })
                })
                .filter_map(|p| p["applied_messages"].as_u64())
                .sum();
            (applied == 2 * published).then_some(())
        },
    );
    let applied = started.elapsed().as_secs_f64();
    let failures: Vec<String> = group
        .cases
        .iter()
        .filter_map(|case| {
            let outcome = graph_of(&nodes[1], case, group);
            case.check(outcome.as_deref().map_err(String::as_str)).err()
        })
        .collect();
    let answered = started.elapsed().as_secs_f64();
    (
        group.cases.len(),
        failures,
        [settled, applied - settled, answered - applied],
    )
}

/// Every case of every file against a real cluster, as a user's cluster holds data: one NATS
/// server, three Argus nodes with every role (8 partitions, 2 replicas each), a fresh cluster
/// per load (several at a time). The load is backfilled through node a and each case asked
/// of node b, which fans the data expressions out to the partitions' owners and merges their
/// partial aggregates. The nodes' clocks are frozen at the load's last step
/// (`ARGUS_TEST_FIXED_CLOCK_MS`), the `now` that `argus eval` evaluates the cases at, and
/// they take the cases' one-letter names (`ARGUS_TEST_UNCHECKED_TAGS`), as `argus eval`
/// does.
#[test]
fn every_case_on_a_three_node_cluster() {
    const AT_ONCE: usize = 8;
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../query/asl/tests/data");
    let files = load_dir(&data).unwrap_or_else(|e| panic!("loading the Stack Language cases: {e}"));
    let loads: Vec<(&str, usize, &Group)> = files
        .iter()
        .flat_map(|(name, groups)| {
            groups
                .iter()
                .enumerate()
                .map(move |(g, group)| (name.as_str(), g, group))
        })
        .collect();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for chunk in loads.chunks(AT_ONCE) {
        let runs: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&(name, g, group)| scope.spawn(move || cluster_run(name, g, group)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        for ((name, g, _), (n, failed, [settle, apply, answer])) in chunk.iter().zip(runs) {
            eprintln!(
                "{name} load {g}: {n} cases; settled in {settle:.1} s, applied in {apply:.2} s, \
                 answered in {answer:.2} s"
            );
            n_cases += n;
            failures.extend(failed);
        }
    }
    eprintln!(
        "{n_cases} cases on {} fresh three-node clusters in {:.1} s",
        loads.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases failed on a three-node cluster:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(n_cases >= 200, "only {n_cases} cases");
}
