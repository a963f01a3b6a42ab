//! Graph request parameters (`/api/v1/graph`), parsed and validated as Atlas does: the time
//! window and step, the output format, and the image options, per axis where Atlas allows a
//! `.N` suffix.

use jiff::tz::TimeZone;

use crate::error::{Error, Result};
use crate::time::{self, Anchor, TimeRef};
pub use argus_chart::{Bound, Layout, Scale, Theme, TickLabels};

/// Output formats of the graph API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Png,
    Json,
    StdJson,
    Csv,
    Txt,
    StatsJson,
    /// Atlas's `v2.json`: typed objects (image, graph and plot metadata, lines with their
    /// colors and styles), what a browser needs to draw the graph as the PNG would.
    V2Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "png" => Format::Png,
            "json" => Format::Json,
            "std.json" => Format::StdJson,
            "csv" => Format::Csv,
            "txt" => Format::Txt,
            "stats.json" => Format::StatsJson,
            "v2.json" => Format::V2Json,
            _ => return None,
        })
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Json | Format::StdJson | Format::StatsJson | Format::V2Json => {
                "application/json"
            }
            Format::Csv => "text/csv",
            Format::Txt => "text/plain",
        }
    }
}

/// Options of one y-axis (`l`, `u`, `scale`, `ylabel`, `stack`, `tick_labels`, `sort`,
/// `order`, `palette`, each with an optional `.N` suffix).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct AxisParams {
    pub lower: Bound,
    pub upper: Bound,
    pub scale: Scale,
    pub ylabel: Option<String>,
    pub stack: bool,
    pub tick_labels: TickLabels,
    pub sort: Option<String>,
    pub order_desc: bool,
    /// `palette.N` only; the plain `palette` is the graph's.
    pub palette: Option<String>,
}

/// Image options.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageParams {
    pub width: u32,
    pub height: u32,
    pub zoom: f64,
    pub layout: Layout,
    pub title: Option<String>,
    pub theme: Theme,
    pub palette: Option<String>,
    pub no_legend: bool,
    pub no_legend_stats: bool,
    pub only_graph: bool,
    pub axis_per_line: bool,
    pub axes: Vec<AxisParams>,
    /// Atlas's `hints`: rendering hints, comma-separated (`no-image` leaves the PNG out of
    /// `v2.json`).
    pub hints: Vec<String>,
    /// Notices for clamped sizes (shown in the image only).
    pub notices: Vec<String>,
}

/// Number of y-axes Atlas allows.
pub const MAX_AXES: usize = 5;

/// A graph request with its window resolved: values at `start_ms, start_ms + step_ms, ...,
/// end_ms` (both included), Atlas's `s` and `e` floored to the step, the first point one
/// step after `s`.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub expr: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub step_ms: i64,
    pub format: Format,
    /// Zone names (the first is primary) and zones, for absolute times and outputs.
    pub tz_names: Vec<String>,
    pub timezones: Vec<TimeZone>,
    pub image: ImageParams,
    pub now_ms: i64,
}

const TIME_HELP: &str = "expected now, epoch, s, e, an ISO date-time or epoch seconds/ms, \
                         optionally followed by +/- a duration (e.g. e-3h, now-1w, s+PT6H)";

fn invalid(name: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidParam {
        name,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// First value of a parameter.
fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `k.N` if given, else the plain `k`.
fn axis_param<'a>(params: &'a [(String, String)], name: &str, axis: usize) -> Option<&'a str> {
    param(params, &format!("{name}.{axis}")).or_else(|| param(params, name))
}

fn flag(params: &[(String, String)], name: &str) -> bool {
    param(params, name) == Some("1")
}

fn parse_bound(name: &'static str, v: &str) -> Result<Bound> {
    Ok(match v {
        "auto-style" => Bound::AutoStyle,
        "auto-data" => Bound::AutoData,
        _ => Bound::Explicit(
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| invalid(name, v, "expected auto-style, auto-data or a number"))?,
        ),
    })
}

fn parse_axis(params: &[(String, String)], axis: usize) -> Result<AxisParams> {
    let mut a = AxisParams::default();
    if let Some(v) = axis_param(params, "l", axis) {
        a.lower = parse_bound("l", v)?;
    }
    if let Some(v) = axis_param(params, "u", axis) {
        a.upper = parse_bound("u", v)?;
    }
    if let (Bound::Explicit(l), Bound::Explicit(u)) = (a.lower, a.upper)
        && l >= u
    {
        return Err(invalid(
            "l",
            &l.to_string(),
            format!("lower bound must be less than upper bound ({l} >= {u})"),
        ));
    }
    a.scale = match axis_param(params, "scale", axis) {
        None if axis_param(params, "o", axis) == Some("1") => Scale::Log,
        None | Some("linear") => Scale::Linear,
        Some("log") => Scale::Log,
        Some("log-linear") => Scale::LogLinear,
        Some("pow2") => Scale::Pow2,
        Some("sqrt") => Scale::Sqrt,
        Some(other) => {
            return Err(invalid(
                "scale",
                other,
                "unknown scale type, should be linear, log, log-linear, pow2, or sqrt",
            ));
        }
    };
    a.ylabel = axis_param(params, "ylabel", axis)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    a.stack = axis_param(params, "stack", axis) == Some("1");
    a.tick_labels = match axis_param(params, "tick_labels", axis).map(str::to_ascii_lowercase) {
        None => TickLabels::Decimal,
        Some(v) => match v.as_str() {
            "off" => TickLabels::Off,
            "decimal" => TickLabels::Decimal,
            "binary" => TickLabels::Binary,
            "duration" => TickLabels::Duration,
            _ => {
                return Err(invalid(
                    "tick_labels",
                    &v,
                    "acceptable values are off, decimal, binary and duration",
                ));
            }
        },
    };
    a.sort = axis_param(params, "sort", axis).map(str::to_string);
    a.order_desc = axis_param(params, "order", axis) == Some("desc");
    a.palette = param(params, &format!("palette.{axis}")).map(str::to_string);
    Ok(a)
}

fn parse_size(name: &'static str, v: Option<&str>, default: u32) -> Result<u32> {
    match v {
        None => Ok(default),
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if n > 0 => Ok(n.min(u32::MAX as i64) as u32),
            _ => Err(invalid(
                name,
                text,
                format!(
                    "{} must be a positive integer",
                    if name == "w" { "width" } else { "height" }
                ),
            )),
        },
    }
}

/// Resolves `s` and `e`, either of which may be relative to the other (not both).
fn resolve_window(
    s: TimeRef,
    e: TimeRef,
    now_ms: i64,
) -> std::result::Result<(i64, i64), (&'static str, &'static str)> {
    const CIRCULAR: &str = "start and end are both relative to each other";
    let base = |r: TimeRef, other: Option<i64>, name: &'static str| {
        let anchor_ms = match r.anchor {
            Anchor::Now => now_ms,
            Anchor::Absolute(ms) => ms,
            Anchor::Start | Anchor::End => other.ok_or((name, CIRCULAR))?,
        };
        anchor_ms
            .checked_add(r.offset_ms)
            .ok_or((name, "time out of range"))
    };
    if e.anchor == Anchor::End || s.anchor == Anchor::Start {
        return Err(if e.anchor == Anchor::End {
            ("e", CIRCULAR)
        } else {
            ("s", CIRCULAR)
        });
    }
    if e.anchor == Anchor::Start {
        let s_ms = base(s, None, "s")?;
        Ok((s_ms, base(e, Some(s_ms), "e")?))
    } else {
        let e_ms = base(e, None, "e")?;
        Ok((base(s, Some(e_ms), "s")?, e_ms))
    }
}

/// Atlas's limits on the image.
const MAX_WIDTH: u32 = 2000;
const MAX_HEIGHT: u32 = 1000;
const MIN_SIZE: u32 = 64;
const MAX_ZOOM: f64 = 2.0;

impl GraphRequest {
    /// From URL query parameters. `now_ms` is the current time, `stored_step_ms` the
    /// store's step.
    pub fn from_params(
        params: &[(String, String)],
        now_ms: i64,
        stored_step_ms: i64,
    ) -> Result<GraphRequest> {
        let expr =
            param(params, "q").ok_or_else(|| invalid("q", "", "missing required parameter 'q'"))?;
        let format_text = param(params, "format").unwrap_or("png");
        let format = Format::parse(format_text).ok_or_else(|| {
            invalid(
                "format",
                format_text,
                "unknown format; use png, json, std.json, v2.json, csv, txt or stats.json",
            )
        })?;
        let mut tz_names: Vec<String> = params
            .iter()
            .filter(|(k, _)| k == "tz")
            .map(|(_, v)| v.clone())
            .collect();
        if tz_names.is_empty() {
            tz_names.push("US/Pacific".to_string());
        }
        let timezones = tz_names
            .iter()
            .map(|name| {
                TimeZone::get(name)
                    .map_err(|e| invalid("tz", name, format!("unknown time zone: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let tz = &timezones[0];

        let s_text = param(params, "s").unwrap_or("e-3h");
        let e_text = param(params, "e").unwrap_or("now");
        let s_ref = time::parse_time(s_text, tz).ok_or_else(|| invalid("s", s_text, TIME_HELP))?;
        let e_ref = time::parse_time(e_text, tz).ok_or_else(|| invalid("e", e_text, TIME_HELP))?;
        let (s_ms, e_ms) = resolve_window(s_ref, e_ref, now_ms).map_err(|(name, reason)| {
            invalid(name, if name == "s" { s_text } else { e_text }, reason)
        })?;
        if s_ms > e_ms {
            return Err(invalid("s", s_text, "end time is before start time"));
        }

        let mut image = ImageParams {
            width: parse_size("w", param(params, "w"), 700)?,
            height: parse_size("h", param(params, "h"), 300)?,
            zoom: match param(params, "zoom") {
                None => 1.0,
                Some(z) => z
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|z| z.is_finite() && *z > 0.0)
                    .ok_or_else(|| invalid("zoom", z, "expected a positive number"))?,
            },
            layout: match param(params, "layout").unwrap_or("canvas") {
                "canvas" => Layout::Canvas,
                "image" => Layout::Image,
                "iw" => Layout::ImageWidth,
                "ih" => Layout::ImageHeight,
                other => return Err(invalid("layout", other, "unknown layout")),
            },
            title: param(params, "title")
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            theme: match param(params, "theme").unwrap_or("light") {
                "light" => Theme::Light,
                "dark" => Theme::Dark,
                other => return Err(invalid("theme", other, "invalid theme: use light or dark")),
            },
            palette: param(params, "palette").map(str::to_string),
            no_legend: flag(params, "no_legend"),
            no_legend_stats: flag(params, "no_legend_stats"),
            only_graph: flag(params, "only_graph"),
            axis_per_line: flag(params, "axis_per_line"),
            axes: (0..MAX_AXES)
                .map(|i| parse_axis(params, i))
                .collect::<Result<Vec<_>>>()?,
            hints: param(params, "hints")
                .map(|h| {
                    h.split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            notices: Vec::new(),
        };
        let width_for_step = image.width;
        if image.width > MAX_WIDTH {
            image.width = MAX_WIDTH;
            image
                .notices
                .push(format!("Restricted graph width to {MAX_WIDTH}."));
        }
        if image.height > MAX_HEIGHT {
            image.height = MAX_HEIGHT;
            image
                .notices
                .push(format!("Restricted graph height to {MAX_HEIGHT}."));
        }
        image.width = image.width.max(MIN_SIZE);
        image.height = image.height.max(MIN_SIZE);
        if image.zoom > MAX_ZOOM {
            image.zoom = MAX_ZOOM;
            image
                .notices
                .push(format!("Restricted zoom to {MAX_ZOOM}."));
        }
        for p in image
            .axes
            .iter()
            .filter_map(|a| a.palette.as_deref())
            .chain(image.palette.as_deref())
        {
            super::colors::check_palette(p).map_err(|reason| invalid("palette", p, reason))?;
        }

        let stored = stored_step_ms.max(1);
        let requested = match param(params, "step") {
            Some(text) => Some(time::parse_duration(text).ok_or_else(|| {
                invalid("step", text, "expected a duration such as 60s, 5m or PT1M")
            })?),
            None => None,
        };
        let step_ms = time::graph_step(stored, requested, i64::from(width_for_step), s_ms, e_ms)
            .ok_or_else(|| invalid("step", param(params, "step").unwrap_or(""), "no step fits"))?;
        let out_of_range =
            |name: &'static str, text: &str| invalid(name, text, "time out of range");
        let fend = time::floor_to(e_ms, step_ms).ok_or_else(|| out_of_range("e", e_text))?;
        let mut fstart = time::floor_to(s_ms, step_ms).ok_or_else(|| out_of_range("s", s_text))?;
        if fstart == fend {
            fstart = fend - step_ms;
        }
        Ok(GraphRequest {
            expr: expr.to_string(),
            start_ms: fstart + step_ms,
            end_ms: fend,
            step_ms,
            format,
            tz_names,
            timezones,
            image,
            now_ms,
        })
    }

    /// A request for a fixed window and step with default options (`argus eval`, tests).
    pub fn new(expr: &str, start_ms: i64, end_ms: i64, step_ms: i64, format: Format) -> Self {
        let mut req = GraphRequest::defaults(expr);
        req.start_ms = start_ms;
        req.end_ms = end_ms;
        req.step_ms = step_ms;
        req.format = format;
        req.now_ms = end_ms;
        req
    }

    fn defaults(expr: &str) -> Self {
        GraphRequest {
            expr: expr.to_string(),
            start_ms: 0,
            end_ms: 0,
            step_ms: 60_000,
            format: Format::Json,
            tz_names: vec!["UTC".to_string()],
            timezones: vec![TimeZone::UTC],
            image: ImageParams {
                width: 700,
                height: 300,
                zoom: 1.0,
                layout: Layout::Canvas,
                title: None,
                theme: Theme::Light,
                palette: None,
                no_legend: false,
                no_legend_stats: false,
                only_graph: false,
                axis_per_line: false,
                axes: vec![AxisParams::default(); MAX_AXES],
                hints: Vec::new(),
                notices: Vec::new(),
            },
            now_ms: 0,
        }
    }

    /// Number of points per line.
    pub fn len(&self) -> usize {
        ((self.end_ms - self.start_ms) / self.step_ms + 1).max(0) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
