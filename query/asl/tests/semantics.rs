//! Query semantics as data: runs every `tests/data/*.test` file against a real store.
//!
//! File format (one directive per line; `#` starts a comment line, blank lines are ignored):
//!
//! ```text
//! load
//!   {name=cpu, nf.app=a} 1 2 NaN _ 5 3x4
//! ```
//! `load` starts a fresh store; each indented line is one series: its tags in braces, then
//! one value per stored step (60 s) from T0 = 2026-01-01T00:00Z. A value is a number,
//! `NaN`, `_` (no sample at all) or `<value>x<n>` (the value n times). The runner adds
//! `atlas.dstype=gauge` to every series so values are stored exactly as given. A tag value in
//! double quotes keeps its spaces.
//!
//! ```text
//! eval name,cpu,:eq,:sum
//!   params step=5m s=e-10m
//!   "name=cpu" {name=cpu} 1 2 NaN
//! ```
//! `eval` evaluates an expression against the last load. Indented lines below it say what
//! to expect:
//! - `params k=v k=v`: graph parameters as for `/api/v1/graph` (optional). Defaults: `s` =
//!   T0 − 1m (Atlas's first point is one step after `s`, so the first point is T0), `e` = the
//!   last loaded step, `step=1m`, `tz=UTC`, `format=json`; `now` is the last loaded step.
//! - `"label" {k=v, k2=v2} v1 v2 ...`: one expected line, in result order, with its legend,
//!   its tags and its values (`NaN`, `Inf`, `-Inf` allowed; equal within 1e-6 relative).
//! - `nothing`: the result has no lines.
//! - `error <text>`: evaluation fails with an error whose message contains `<text>`.

use std::path::Path;
use std::sync::Arc;

use argus_query::{GraphRequest, evaluate};
use argus_tsdb::{Store, StoreConfig, TagMap};

const STEP: i64 = 60_000;
const T0: i64 = 1_767_225_600_000;

#[derive(Debug)]
struct Line {
    label: String,
    tags: TagMap,
    values: Vec<f64>,
}

#[derive(Debug)]
enum Expect {
    Lines(Vec<Line>),
    Error(String),
}

struct Case {
    file: String,
    line_no: usize,
    expr: String,
    params: Vec<(String, String)>,
    expect: Expect,
    /// Whether any expectation (`nothing`, `error`, a line) was written.
    stated: bool,
}

struct Loaded {
    store: Store,
    points: i64,
}

fn parse_tags(text: &str) -> Result<(TagMap, &str), String> {
    let text = text.trim_start();
    let rest = text.strip_prefix('{').ok_or("expected '{'")?;
    let end = rest.find('}').ok_or("expected '}'")?;
    let mut tags = TagMap::new();
    for pair in rest[..end]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("bad tag '{pair}'"))?;
        // A value in double quotes keeps its spaces (`percentile=" 50.0"`).
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .unwrap_or(v);
        tags.insert(k.trim().to_string(), v.to_string());
    }
    Ok((tags, &rest[end + 1..]))
}

fn parse_value(token: &str) -> Result<f64, String> {
    match token {
        "NaN" => Ok(f64::NAN),
        "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        t => t.parse().map_err(|_| format!("bad value '{t}'")),
    }
}

/// Values of a `load` line; `None` is "no sample".
fn parse_load_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for token in text.split_whitespace() {
        let (v, n) = match token.rsplit_once('x') {
            Some((v, n)) if !v.is_empty() && n.parse::<usize>().is_ok() => {
                (v, n.parse::<usize>().unwrap_or(1))
            }
            _ => (token, 1),
        };
        let value = if v == "_" {
            None
        } else {
            Some(parse_value(v)?)
        };
        out.extend(std::iter::repeat_n(value, n));
    }
    Ok(out)
}

fn load(lines: &[String]) -> Result<Loaded, String> {
    let clock_now = T0 + 3 * 3_600_000;
    let store = Store::with_clock(
        StoreConfig::new(STEP, 6 * 3_600_000),
        Arc::new(move || clock_now),
    );
    let mut points = 0;
    for line in lines {
        let (mut tags, rest) = parse_tags(line)?;
        tags.insert("atlas.dstype".into(), "gauge".into());
        let values = parse_load_values(rest)?;
        points = points.max(values.len() as i64);
        let id = store.writer().resolve(&tags);
        for (i, v) in values.iter().enumerate() {
            if let Some(v) = v {
                store
                    .writer()
                    .append(id, T0 + i as i64 * STEP, *v)
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(Loaded { store, points })
}

fn parse_expected_line(text: &str) -> Result<Line, String> {
    let rest = text.strip_prefix('"').ok_or("expected a quoted label")?;
    let end = rest.find('"').ok_or("unterminated label")?;
    let label = rest[..end].to_string();
    let (tags, rest) = parse_tags(&rest[end + 1..])?;
    let values = rest
        .split_whitespace()
        .map(parse_value)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Line {
        label,
        tags,
        values,
    })
}

/// The series lines of one `load` and the `eval` cases that run against them.
type Group = (Vec<String>, Vec<Case>);

/// Splits a file into groups, in order.
fn parse_file(file: &str, text: &str) -> Result<Vec<Group>, String> {
    let mut groups: Vec<Group> = Vec::new();
    enum Block {
        None,
        Load,
        Eval,
    }
    let mut block = Block::None;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |m: String| format!("{file}:{line_no}: {m}");
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indented = raw.starts_with(' ') || raw.starts_with('\t');
        if !indented {
            if let Some(expr) = trimmed.strip_prefix("eval ") {
                let Some((_, cases)) = groups.last_mut() else {
                    return Err(err("eval before any load".into()));
                };
                cases.push(Case {
                    file: file.to_string(),
                    line_no,
                    expr: expr.trim().to_string(),
                    params: Vec::new(),
                    expect: Expect::Lines(Vec::new()),
                    stated: false,
                });
                block = Block::Eval;
            } else if trimmed == "load" {
                groups.push((Vec::new(), Vec::new()));
                block = Block::Load;
            } else {
                return Err(err(format!("unknown directive '{trimmed}'")));
            }
            continue;
        }
        match block {
            Block::None => return Err(err("indented line outside a block".into())),
            Block::Load => {
                if let Some((loads, _)) = groups.last_mut() {
                    loads.push(trimmed.to_string());
                }
            }
            Block::Eval => {
                let Some(case) = groups.last_mut().and_then(|g| g.1.last_mut()) else {
                    return Err(err("no eval".into()));
                };
                if let Some(p) = trimmed.strip_prefix("params ") {
                    for pair in p.split_whitespace() {
                        let (k, v) = pair
                            .split_once('=')
                            .ok_or_else(|| err(format!("bad param '{pair}'")))?;
                        case.params.push((k.to_string(), v.to_string()));
                    }
                } else if trimmed == "nothing" {
                    case.stated = true;
                } else if let Some(msg) = trimmed.strip_prefix("error ") {
                    case.expect = Expect::Error(msg.trim().to_string());
                    case.stated = true;
                } else {
                    case.stated = true;
                    let line = parse_expected_line(trimmed).map_err(err)?;
                    match &mut case.expect {
                        Expect::Lines(lines) => lines.push(line),
                        Expect::Error(_) => return Err(err("lines after error".into())),
                    }
                }
            }
        }
    }
    if let Some(c) = groups.iter().flat_map(|g| &g.1).find(|c| !c.stated) {
        return Err(format!(
            "{file}:{}: eval states no expectation (write `nothing` for an empty result)",
            c.line_no
        ));
    }
    Ok(groups)
}

/// Equal, both NaN, or within 1e-6 relative (expected values are written with up to six
/// decimals).
fn same_value(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn render(lines: &[(String, TagMap, Vec<f64>)]) -> String {
    lines
        .iter()
        .map(|(label, tags, values)| {
            let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let values: Vec<String> = values.iter().map(|v| format!("{v}")).collect();
            format!("  \"{label}\" {{{}}} {}", tags.join(", "), values.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn run_case(case: &Case, loaded: &Loaded) -> Result<(), String> {
    let last = T0 + (loaded.points.max(1) - 1) * STEP;
    let mut params: Vec<(String, String)> = vec![
        ("q".into(), case.expr.clone()),
        ("s".into(), (T0 - STEP).to_string()),
        ("e".into(), last.to_string()),
        ("step".into(), "1m".into()),
        ("tz".into(), "UTC".into()),
        ("format".into(), "json".into()),
    ];
    for (k, v) in &case.params {
        params.retain(|(pk, _)| pk != k);
        params.push((k.clone(), v.clone()));
    }
    let result = GraphRequest::from_params(&params, last, STEP)
        .and_then(|req| evaluate(&req, &loaded.store));
    let at = format!("{}:{}: {}", case.file, case.line_no, case.expr);
    match (&case.expect, result) {
        (Expect::Error(want), Err(e)) => {
            if e.to_string().contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "{at}\n  want error containing {want:?}\n  got error {e}"
                ))
            }
        }
        (Expect::Error(want), Ok(r)) => Err(format!(
            "{at}\n  want error containing {want:?}\n  got {} lines",
            r.series.len()
        )),
        (Expect::Lines(_), Err(e)) => Err(format!("{at}\n  unexpected error: {e}")),
        (Expect::Lines(want), Ok(r)) => {
            let got: Vec<(String, TagMap, Vec<f64>)> = r
                .series
                .iter()
                .map(|s| (s.label.clone(), s.tags.clone(), s.values.clone()))
                .collect();
            let ok = got.len() == want.len()
                && got.iter().zip(want).all(|(g, w)| {
                    g.0 == w.label
                        && g.1 == w.tags
                        && g.2.len() == w.values.len()
                        && g.2.iter().zip(&w.values).all(|(a, b)| same_value(*a, *b))
                });
            if ok {
                Ok(())
            } else {
                let want: Vec<(String, TagMap, Vec<f64>)> = want
                    .iter()
                    .map(|l| (l.label.clone(), l.tags.clone(), l.values.clone()))
                    .collect();
                Err(format!(
                    "{at}\n want:\n{}\n got:\n{}",
                    if want.is_empty() {
                        "  nothing".into()
                    } else {
                        render(&want)
                    },
                    if got.is_empty() {
                        "  nothing".into()
                    } else {
                        render(&got)
                    }
                ))
            }
        }
    }
}

#[test]
fn semantics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/data exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "test"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .test files in {}", dir.display());
    let mut failures = Vec::new();
    let mut n_cases = 0;
    for path in &files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(path).expect("readable test file");
        let groups = match parse_file(&name, &text) {
            Ok(g) => g,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for (loads, cases) in groups {
            let loaded = match load(&loads) {
                Ok(l) => l,
                Err(e) => {
                    failures.push(format!("{name}: load: {e}"));
                    continue;
                }
            };
            for case in &cases {
                n_cases += 1;
                if let Err(e) = run_case(case, &loaded) {
                    failures.push(e);
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {n_cases} cases failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!("{n_cases} semantic cases in {} files", files.len());
}
