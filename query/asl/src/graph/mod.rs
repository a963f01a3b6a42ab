//! The graph API (`/api/v1/graph`) minus HTTP: parameters (`params.rs`), evaluation of every
//! expression on the stack, presentation as Atlas does it (legends, colors, sorting, limits,
//! axes), and the output formats (`output.rs`, `png.rs`).

mod colors;
pub(crate) mod legend;
mod output;
mod params;
mod png;

use std::sync::Arc;

use argus_tsdb::{SeriesSource, TagMap};

pub use argus_chart::LineStyle;
pub use params::{
    AxisParams, Bound, Format, GraphRequest, ImageParams, Layout, MAX_AXES, Scale, Theme,
    TickLabels,
};

use crate::error::{Error, Result};
use crate::eval::{self, EvalContext, Stats, stats};
use crate::model::{Item, StyleExpr, TimeSeriesExpr};
use crate::numfmt::prefixed;
use crate::time::{format_duration, parse_duration};
use colors::{Palette, resolve_color, with_alpha};

pub use crate::eval::{DEFAULT_MAX_MEMORY_BYTES, Limits};

fn parse_line_style(s: &str) -> Option<LineStyle> {
    Some(match s.to_ascii_lowercase().as_str() {
        "line" => LineStyle::Line,
        "area" => LineStyle::Area,
        "stack" => LineStyle::Stack,
        "vspan" => LineStyle::VSpan,
        "heatmap" => LineStyle::Heatmap,
        _ => return None,
    })
}

/// One line of a graph: tags (Atlas's `metrics` entry, before `atlas.offset` is added),
/// legend, one value per step, and how it is drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSeries {
    pub tags: TagMap,
    pub label: String,
    pub values: Vec<f64>,
    /// The y-axis (0 to 4).
    pub axis: usize,
    /// `0xAARRGGBB`.
    pub color: u32,
    pub style: LineStyle,
    pub line_width: f32,
    /// The smallest offset of the expression's data (Atlas's `atlas.offset` tag).
    pub offset_ms: i64,
    /// The expression the line came from, in canonical form.
    pub query: Arc<str>,
    pub group_by_keys: Arc<[String]>,
}

impl ResultSeries {
    pub fn stats(&self) -> Stats {
        stats(&self.values)
    }
}

/// The lines of a graph, in drawing order (by axis, then as sorted), on the request's grid.
#[derive(Clone, Debug, PartialEq)]
pub struct GraphResult {
    pub start_ms: i64,
    pub step_ms: i64,
    pub series: Vec<ResultSeries>,
    /// Warnings for the user (Atlas's `notices`).
    pub notices: Vec<String>,
}

/// Evaluates a request against a store with Atlas's default [`Limits`] (1024 lines).
pub fn evaluate(req: &GraphRequest, source: &dyn SeriesSource) -> Result<GraphResult> {
    evaluate_with_limits(req, source, &Limits::default())
}

/// The expressions a program leaves, as styled expressions, bottom first: a query is summed
/// and a number is a constant line, as in Atlas. The legacy list `:offset` gives one copy of
/// the expression per offset.
pub(crate) fn presentations(items: Vec<Item>) -> Result<Vec<StyleExpr>> {
    let mut out = Vec::new();
    for item in items {
        let mut style = match item {
            Item::Style(s) => s,
            Item::Event(e) => {
                return Err(Error::EventOnly {
                    item: e.to_string(),
                });
            }
            Item::Expr(TimeSeriesExpr::StatPlaceholder(_)) => {
                return Err(Error::NotTimeSeries {
                    kind: "StatPlaceholder",
                    item: item.to_string(),
                });
            }
            other => match crate::words::take_ts(other.clone()) {
                Ok(e) => StyleExpr::new(e),
                Err(_) => {
                    return Err(Error::NotTimeSeries {
                        kind: other.type_name(),
                        item: other.to_string(),
                    });
                }
            },
        };
        match style.settings.remove("offset") {
            Some(list) => {
                let offsets: Vec<i64> = list
                    .trim_matches(|c| c == '(' || c == ')')
                    .split(',')
                    .filter(|d| !d.is_empty())
                    .filter_map(parse_duration)
                    .collect();
                if offsets.is_empty() {
                    out.push(style);
                    continue;
                }
                for ms in offsets {
                    let mut copy = style.clone();
                    copy.expr.set_offset(ms);
                    out.push(copy);
                }
            }
            None => out.push(style),
        }
    }
    Ok(out)
}

/// Evaluates a request: every expression left on the stack, bottom first, gives its lines,
/// which are then labelled, colored, sorted and limited as Atlas does.
pub fn evaluate_with_limits(
    req: &GraphRequest,
    source: &dyn SeriesSource,
    limits: &Limits,
) -> Result<GraphResult> {
    evaluate_with_fanout(req, source, limits, None)
}

/// Like [`evaluate_with_limits`], with the data expressions answered by `fanout` (the nodes
/// of a cluster) when given; `source` still says the stored step.
pub fn evaluate_with_fanout(
    req: &GraphRequest,
    source: &dyn SeriesSource,
    limits: &Limits,
    fanout: Option<crate::eval::SharedFanout>,
) -> Result<GraphResult> {
    let stored = source.step_ms();
    let step_ms = req.step_ms;
    if step_ms <= 0 || stored <= 0 || step_ms % stored != 0 {
        return Err(Error::InvalidParam {
            name: "step",
            value: format!("{step_ms}ms"),
            reason: format!("must be a positive multiple of the stored step ({stored}ms)"),
        });
    }
    if req.start_ms > req.end_ms || req.start_ms % step_ms != 0 || req.end_ms % step_ms != 0 {
        return Err(Error::InvalidParam {
            name: "s",
            value: req.start_ms.to_string(),
            reason: "the window must be step-aligned with start before end".into(),
        });
    }
    let len = req.len();
    if len > limits.max_points_per_line.max(1) * 64 {
        return Err(Error::TooMany {
            what: "datapoints per line",
            requested: len,
            limit: limits.max_points_per_line * 64,
        });
    }
    let exprs = presentations(crate::run(&req.expr)?)?;
    let theme = req.image.theme;
    let mut ctx = EvalContext::new(req.start_ms, req.end_ms, step_ms, *limits);
    ctx.fanout = fanout;
    ctx.tz = req
        .timezones
        .first()
        .cloned()
        .unwrap_or(jiff::tz::TimeZone::UTC);
    ctx.now_ms = req.now_ms;

    let mut notices = Vec::new();
    let mut graph_palette = match &req.image.palette {
        Some(p) => Palette::parse(p).map_err(|reason| Error::InvalidParam {
            name: "palette",
            value: p.clone(),
            reason,
        })?,
        None => Palette::for_theme(theme, false),
    };
    let mut axis_palettes: Vec<Option<Palette>> = req
        .image
        .axes
        .iter()
        .map(|a| a.palette.as_deref().and_then(|p| Palette::parse(p).ok()))
        .collect();
    let mut shift_palette = Palette::for_theme(theme, true);

    let mut all: Vec<ResultSeries> = Vec::new();
    for style in &exprs {
        ctx.lines_used = all.len();
        let lines = eval::eval(&style.expr, &ctx, source)?;
        let total = all.len() + lines.len();
        if total > limits.max_lines {
            return Err(Error::TooMany {
                what: "lines",
                requested: total,
                limit: limits.max_lines,
            });
        }
        let axis = style
            .get("axis")
            .and_then(|a| a.parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_AXES - 1);
        let offset_ms = style.expr.min_offset_ms();
        // Shared by the expression's lines: 10,000 lines are 10,000 pointers, not copies.
        let query: Arc<str> = style.to_string().into();
        let group_by_keys: Arc<[String]> = style.expr.grouping().into();
        let default_style = if req.image.axes.get(axis).is_some_and(|a| a.stack) {
            LineStyle::Stack
        } else {
            LineStyle::Line
        };
        let line_style = style
            .get("ls")
            .and_then(parse_line_style)
            .unwrap_or(default_style);
        let line_width = style
            .get("lw")
            .and_then(|w| w.parse::<f32>().ok())
            .unwrap_or(1.0);
        let mut out: Vec<ResultSeries> = lines
            .into_iter()
            .map(|line| {
                let (tags, label, values) = line.into_parts();
                let label = legend_text(style, label, &tags, offset_ms, &values);
                ResultSeries {
                    tags,
                    label,
                    values,
                    axis,
                    color: 0,
                    style: line_style,
                    line_width,
                    offset_ms,
                    query: query.clone(),
                    group_by_keys: group_by_keys.clone(),
                }
            })
            .collect();
        // Colors go by legend order, before any other sort (Atlas's Grapher).
        out.sort_by(|a, b| a.label.cmp(&b.label));
        let mut own = style.get("palette").and_then(|p| Palette::parse(p).ok());
        let fixed = style.get("color").and_then(|c| resolve_color(c, theme));
        for line in &mut out {
            let mut color = if let Some(p) = own.as_mut() {
                p.next(&line.label)
            } else if let Some(c) = fixed {
                c
            } else if offset_ms > 0 {
                shift_palette.next(&line.label)
            } else if let Some(Some(p)) = axis_palettes.get_mut(axis) {
                p.next(&line.label)
            } else {
                graph_palette.next(&line.label)
            };
            if let Some(a) = style
                .get("alpha")
                .and_then(|a| u8::from_str_radix(a, 16).ok())
            {
                color = with_alpha(color, a);
            }
            line.color = color;
        }
        let sort = style.get("sort");
        let desc = style.get("order") == Some("desc");
        if sort.is_some() || desc {
            sort_lines(&mut out, sort, desc, &mut notices);
        }
        if let Some(n) = style.get("limit").and_then(|n| n.parse::<usize>().ok()) {
            out.truncate(n);
        }
        all.extend(out);
    }

    // `axis_per_line`: each line on its own y-axis, when that is possible (Atlas's rules).
    if req.image.axis_per_line {
        if exprs.iter().any(|s| s.get("axis").is_some()) {
            notices.push("axisPerLine cannot be used with explicit multi axis".to_string());
        } else if all.len() > MAX_AXES {
            notices.push(format!(
                "Too many Y-axes, {} > {MAX_AXES}, axis per line disabled.",
                all.len()
            ));
        } else {
            for (i, line) in all.iter_mut().enumerate() {
                line.axis = i;
            }
        }
    }

    // Plots in axis order; within an axis, the URL's sort for that axis wins.
    let mut series = Vec::with_capacity(all.len());
    let mut by_axis: Vec<Vec<ResultSeries>> = vec![Vec::new(); MAX_AXES];
    for line in all {
        let axis = line.axis.min(MAX_AXES - 1);
        by_axis[axis].push(line);
    }
    for (axis, mut lines) in by_axis.into_iter().enumerate() {
        if let Some(a) = req.image.axes.get(axis)
            && (a.sort.is_some() || a.order_desc)
        {
            sort_lines(&mut lines, a.sort.as_deref(), a.order_desc, &mut notices);
        }
        series.extend(lines);
    }
    Ok(GraphResult {
        start_ms: req.start_ms,
        step_ms,
        series,
        notices,
    })
}

/// Atlas's `StyleExpr.legend`: the `:legend` text (or the label, with ` (offset=1w)` for an
/// offset expression), variables substituted from the tags and the window statistics, then
/// the `:decode` / `:s` rewrites. An empty result keeps the label.
fn legend_text(
    style: &StyleExpr,
    label: String,
    tags: &TagMap,
    offset_ms: i64,
    values: &[f64],
) -> String {
    if style.get("legend").is_none() && style.get("sed").is_none() && offset_ms <= 0 {
        return label;
    }
    // The window statistics only when the legend asks for one.
    let st = std::cell::OnceCell::new();
    let st = || st.get_or_init(|| stats(values));
    let fmt = match style.get("legend") {
        Some(l) => l.to_string(),
        None if offset_ms > 0 => format!("{label} (offset={})", format_duration(offset_ms)),
        None => label.to_string(),
    };
    let lookup = |key: &str| -> Option<String> {
        if let Some(v) = tags.get(key) {
            return Some(v.to_string());
        }
        Some(match key {
            "atlas.offset" => format_duration(offset_ms),
            "atlas.avg" => prefixed(st().avg()),
            "atlas.max" => prefixed(st().max),
            "atlas.min" => prefixed(st().min),
            "atlas.last" => prefixed(st().last),
            "atlas.total" => prefixed(st().total),
            _ => return None,
        })
    };
    let mut text = if style.get("legend").is_some() {
        legend::substitute(&fmt, &lookup)
    } else {
        fmt
    };
    if let Some(sed) = style.get("sed") {
        text = legend::apply_sed(sed, &text, &lookup);
    }
    if text.is_empty() { label } else { text }
}

/// Sorts lines by legend or a window statistic; NaN always last. An unknown mode sorts by
/// legend and adds a notice, as Atlas.
fn sort_lines(
    lines: &mut [ResultSeries],
    mode: Option<&str>,
    desc: bool,
    notices: &mut Vec<String>,
) {
    let mode = mode.unwrap_or("legend");
    let key: Option<fn(&Stats) -> f64> = match mode {
        "legend" => None,
        "min" => Some(|s| s.min),
        "max" => Some(|s| s.max),
        "avg" => Some(|s| s.avg()),
        "count" => Some(|s| s.count as f64),
        "total" => Some(|s| s.total),
        "last" => Some(|s| s.last),
        other => {
            let notice = format!("Invalid sort mode '{other}'. Using default of 'legend'.");
            if !notices.contains(&notice) {
                notices.push(notice);
            }
            None
        }
    };
    match key {
        None => lines.sort_by(|a, b| {
            let o = a.label.cmp(&b.label);
            if desc { o.reverse() } else { o }
        }),
        Some(f) => lines.sort_by(|a, b| {
            let (x, y) = (f(&a.stats()), f(&b.stats()));
            match (x.is_nan(), y.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                (false, false) => {
                    let o = x.total_cmp(&y);
                    if desc { o.reverse() } else { o }
                }
            }
        }),
    }
}
