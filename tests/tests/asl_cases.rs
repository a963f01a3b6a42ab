//! The Stack Language semantic cases (`query/asl/tests/data/*.test`), run through the real
//! `argus eval` command: each load written as the command's input file, each case's graph
//! parameters given as its flags, and the printed graph JSON read back into lines. The
//! query crate runs the same files in process (`query/asl/tests/semantics.rs`).

use std::path::PathBuf;
use std::process::Command;

use argus_query::cases::{Case, Group, Line, load_dir};
use argus_tests::{binary, scratch_dir};
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
