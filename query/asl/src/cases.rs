//! Stack Language semantics as data: the format of `query/asl/tests/data/*.test`, shared by
//! the crate's own test (a real store, in process) and the end-to-end test (`argus eval`).
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

use argus_tsdb::{Store, StoreConfig, TagMap};

use crate::{GraphRequest, evaluate};

/// The step the cases' data is stored on.
pub const STEP: i64 = 60_000;
/// The time of each load's first value: 2026-01-01T00:00Z.
pub const T0: i64 = 1_767_225_600_000;

/// One result line: its legend, tags and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub label: String,
    pub tags: TagMap,
    pub values: Vec<f64>,
}

/// What an `eval` expects.
#[derive(Debug)]
pub enum Expect {
    Lines(Vec<Line>),
    Error(String),
}

/// One `eval`.
#[derive(Debug)]
pub struct Case {
    pub file: String,
    pub line_no: usize,
    pub expr: String,
    /// The `params` line, over the defaults.
    pub params: Vec<(String, String)>,
    pub expect: Expect,
    /// Whether any expectation (`nothing`, `error`, a line) was written.
    stated: bool,
}

/// One series of a `load`; `None` is "no sample".
#[derive(Debug)]
pub struct LoadSeries {
    pub tags: TagMap,
    pub values: Vec<Option<f64>>,
}

/// A `load` and the `eval` cases that run against it.
#[derive(Debug, Default)]
pub struct Group {
    pub series: Vec<LoadSeries>,
    pub cases: Vec<Case>,
}

impl Group {
    /// Number of steps loaded (the longest series).
    pub fn points(&self) -> i64 {
        self.series
            .iter()
            .map(|s| s.values.len() as i64)
            .max()
            .unwrap_or(0)
    }

    /// Time of the last loaded step: the graph's default end and `now`.
    pub fn last(&self) -> i64 {
        T0 + (self.points().max(1) - 1) * STEP
    }

    /// A store holding the load, every series a gauge so values are kept as given.
    pub fn store(&self) -> Result<Store, String> {
        let clock_now = T0 + 3 * 3_600_000;
        let store = Store::with_clock(
            StoreConfig::new(STEP, 6 * 3_600_000),
            Arc::new(move || clock_now),
        );
        for s in &self.series {
            let mut tags = s.tags.clone();
            tags.insert("atlas.dstype".into(), "gauge".into());
            let id = store.writer().resolve(&tags);
            for (i, v) in s.values.iter().enumerate() {
                if let Some(v) = v {
                    store
                        .writer()
                        .append(id, T0 + i as i64 * STEP, *v)
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        Ok(store)
    }

    /// The load as `argus eval`'s input file (`{"step", "series": [{"tags", "start",
    /// "values"}]}`), tagged `atlas.dstype=gauge` as [`Group::store`] does; a missing sample
    /// is written as `NaN`, which the command does not store.
    pub fn eval_input(&self) -> serde_json::Value {
        let series: Vec<serde_json::Value> = self
            .series
            .iter()
            .map(|s| {
                let values: Vec<serde_json::Value> = s
                    .values
                    .iter()
                    .map(|v| match v {
                        Some(v) if v.is_finite() => serde_json::json!(v),
                        Some(v) if v.is_nan() => "NaN".into(),
                        Some(v) if *v > 0.0 => "Infinity".into(),
                        Some(_) => "-Infinity".into(),
                        None => "NaN".into(),
                    })
                    .collect();
                let mut tags: serde_json::Map<String, serde_json::Value> = s
                    .tags
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string().into()))
                    .collect();
                tags.insert("atlas.dstype".into(), "gauge".into());
                serde_json::json!({"tags": tags, "start": T0, "values": values})
            })
            .collect();
        serde_json::json!({"step": STEP, "series": series})
    }
}

impl Case {
    /// The graph parameters of this case: the defaults, then its `params` line.
    pub fn graph_params(&self, group: &Group) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = vec![
            ("q".into(), self.expr.clone()),
            ("s".into(), (T0 - STEP).to_string()),
            ("e".into(), group.last().to_string()),
            ("step".into(), "1m".into()),
            ("tz".into(), "UTC".into()),
            ("format".into(), "json".into()),
        ];
        for (k, v) in &self.params {
            params.retain(|(pk, _)| pk != k);
            params.push((k.clone(), v.clone()));
        }
        params
    }

    /// Evaluates the case in process, as the graph API does.
    pub fn run(&self, group: &Group, store: &Store) -> Result<Vec<Line>, String> {
        GraphRequest::from_params(&self.graph_params(group), group.last(), STEP)
            .and_then(|req| evaluate(&req, store))
            .map(|r| {
                r.series
                    .iter()
                    .map(|s| Line {
                        label: s.label.clone(),
                        tags: s.tags.clone(),
                        values: s.values.clone(),
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    /// Where the case is and what it evaluates, for failure messages.
    pub fn at(&self) -> String {
        format!("{}:{}: {}", self.file, self.line_no, self.expr)
    }

    /// Compares an outcome (result lines or an error message) with the expectation.
    pub fn check(&self, outcome: Result<&[Line], &str>) -> Result<(), String> {
        let at = self.at();
        match (&self.expect, outcome) {
            (Expect::Error(want), Err(e)) if e.contains(want.as_str()) => Ok(()),
            (Expect::Error(want), Err(e)) => Err(format!(
                "{at}\n  want error containing {want:?}\n  got error {e}"
            )),
            (Expect::Error(want), Ok(got)) => Err(format!(
                "{at}\n  want error containing {want:?}\n  got {} lines",
                got.len()
            )),
            (Expect::Lines(_), Err(e)) => Err(format!("{at}\n  unexpected error: {e}")),
            (Expect::Lines(want), Ok(got)) => {
                let same = got.len() == want.len()
                    && got.iter().zip(want).all(|(g, w)| {
                        g.label == w.label
                            && g.tags == w.tags
                            && g.values.len() == w.values.len()
                            && g.values
                                .iter()
                                .zip(&w.values)
                                .all(|(a, b)| same_value(*a, *b))
                    });
                if same {
                    Ok(())
                } else {
                    Err(format!(
                        "{at}\n want:\n{}\n got:\n{}",
                        render(want),
                        render(got)
                    ))
                }
            }
        }
    }
}

/// Reads every `*.test` file of a directory, in name order: `(file name, groups)`.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, Vec<Group>)>, String> {
    argus_mql::cases::test_files(dir)?
        .iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            Ok((name.clone(), parse_file(&name, &text)?))
        })
        .collect()
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
            Some((v, n)) if !v.is_empty() => match n.parse::<usize>() {
                Ok(n) => (v, n),
                Err(_) => (token, 1),
            },
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

/// Splits a file into groups, in order.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Group>, String> {
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
                let Some(group) = groups.last_mut() else {
                    return Err(err("eval before any load".into()));
                };
                group.cases.push(Case {
                    file: file.to_string(),
                    line_no,
                    expr: expr.trim().to_string(),
                    params: Vec::new(),
                    expect: Expect::Lines(Vec::new()),
                    stated: false,
                });
                block = Block::Eval;
            } else if trimmed == "load" {
                groups.push(Group::default());
                block = Block::Load;
            } else {
                return Err(err(format!("unknown directive '{trimmed}'")));
            }
            continue;
        }
        match block {
            Block::None => return Err(err("indented line outside a block".into())),
            Block::Load => {
                let (tags, rest) = parse_tags(trimmed).map_err(err)?;
                let values = parse_load_values(rest).map_err(err)?;
                if let Some(group) = groups.last_mut() {
                    group.series.push(LoadSeries { tags, values });
                }
            }
            Block::Eval => {
                let Some(case) = groups.last_mut().and_then(|g| g.cases.last_mut()) else {
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
    if let Some(c) = groups.iter().flat_map(|g| &g.cases).find(|c| !c.stated) {
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

fn render(lines: &[Line]) -> String {
    if lines.is_empty() {
        return "  nothing".into();
    }
    lines
        .iter()
        .map(|l| {
            let tags: Vec<String> = l.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let values: Vec<String> = l.values.iter().map(|v| format!("{v}")).collect();
            format!(
                "  \"{}\" {{{}}} {}",
                l.label,
                tags.join(", "),
                values.join(" ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}
