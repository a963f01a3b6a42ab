//! Where everything goes: image size, canvas, axes and the legend blocks, following Atlas's
//! `DefaultGraphEngine` / `TimeSeriesGraph` / `Legend` element stacking (see `mod.rs` for the
//! size formula). Also normalizes hostile input (sizes, zoom, steps, empty plots).

use std::borrow::Cow;

use super::scales::bounds;
use super::text::{self, BOLD, LARGE, NORMAL, SMALL};
use super::{Chart, Color, Layout, LegendMode, LineStyle, Plot, Rect, Theme};

/// `atlas.chart.limits.max-lines-in-legend`.
pub(super) const MAX_LEGEND: usize = 50;
/// `atlas.chart.limits.max-yaxes`: further plots are not drawn.
pub(super) const MAX_PLOTS: usize = 5;
/// Atlas limits datapoints per request; this cap only keeps absurd step counts affordable.
const MAX_STEPS: usize = 1 << 22;
const MAX_TIMEZONES: usize = 16;
const MAX_NOTICES: usize = 50;
/// Longest notice or axis header text kept (they wrap rather than truncate).
const MAX_TEXT: usize = 2000;
/// Device-pixel cap on the image height (very many notices or long wrapped headers).
const MAX_DEV_HEIGHT: f64 = 10_000.0;
/// y-axis width: rotated label (normal line height 17) + 7 small chars + tick mark 4 + 1.
pub(super) const AXIS_W: i32 = 17 + 7 * 6 + 4 + 1;
/// Padding on the right with a single axis: 4 small chars, so the last time label fits.
pub(super) const RIGHT_PAD: i32 = 4 * 6;
/// Height of a time axis: 10 + small line height.
pub(super) const TIME_AXIS_H: i32 = 10 + 14;
/// Legend color box side: normal line height - 4.
pub(super) const SWATCH: i32 = 17 - 4;

/// Theme colors (chart `reference.conf`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Colors {
    pub image_bg: Color,
    /// Canvas and legend swatch background.
    pub canvas_bg: Color,
    /// Text, axes and borders.
    pub fg: Color,
    pub minor_grid: Color,
    pub major_grid: Color,
    pub warn_bg: Color,
    pub warn_fg: Color,
}

impl Colors {
    fn of(theme: Theme) -> Colors {
        let (image_bg, canvas_bg, fg) = match theme {
            Theme::Light => (0xFFF5F5F5, 0xFFFFFFFF, 0xFF000000),
            Theme::Dark => (0xFF0A0A0A, 0xFF000000, 0xFFFFFFFF),
        };
        Colors {
            image_bg: Color(image_bg),
            canvas_bg: Color(canvas_bg),
            fg: Color(fg),
            minor_grid: Color(0x5FABABAB),
            major_grid: Color(0x5FFF5B5B),
            warn_bg: Color(0xFFFFC800),
            warn_fg: Color(0xFF000000),
        }
    }
}

/// A block below the canvas, with its top y (logical px).
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Item {
    /// `Axis i[: ylabel]`, shown with several plots.
    Header {
        plot: usize,
        y: i32,
        text: String,
    },
    Entry {
        plot: usize,
        line: usize,
        y: i32,
    },
    Heatmap {
        plot: usize,
        y: i32,
    },
    /// `... N suppressed ...`
    Footer {
        plot: usize,
        y: i32,
        hidden: usize,
    },
}

/// The resolved layout of one chart, in logical pixels (device = logical × zoom).
pub(super) struct Plan<'a> {
    pub plots: Vec<Cow<'a, Plot>>,
    /// y range per plot.
    pub bounds: Vec<(f64, f64)>,
    pub tzs: Vec<jiff::tz::TimeZone>,
    pub colors: Colors,
    /// Atlas's start (first value's timestamp), step and step count; `end = start + n * step`.
    pub start: i64,
    pub step: i64,
    pub n: usize,
    pub zoom: f64,
    pub img_w: i32,
    pub dev_w: u32,
    pub dev_h: u32,
    pub title: Option<String>,
    /// The plot area: values map to rows `canvas.y ..= canvas.y + canvas.h`.
    pub canvas: Rect,
    pub show_axes: bool,
    pub only_graph: bool,
    pub stats: bool,
    pub legend: Vec<Item>,
    pub frame: Option<(i32, String)>,
    /// Top of the warnings block and its height.
    pub warnings: Option<(i32, i32)>,
    pub notices: Vec<String>,
    pub bg: Color,
}

impl Plan<'_> {
    pub fn end(&self) -> i64 {
        self.start
            .saturating_add((self.n as i64).saturating_mul(self.step))
    }

    pub fn axis_color(&self, plot: usize) -> Color {
        self.plots[plot].axis_color.unwrap_or(self.colors.fg)
    }
}

pub(super) fn suppressed(n: usize) -> String {
    format!("... {n} suppressed ...")
}

/// Height of a `Text` element wrapped to `width` (Atlas's `computeHeight`).
fn text_h(s: &str, font: text::Font, width: i32) -> i32 {
    font.height(text::wrap(s, font, width).len())
}

pub(super) fn plan(chart: &Chart) -> Plan<'_> {
    let w = chart.width.clamp(64, 2000) as i32;
    let h = chart.height.clamp(64, 1000) as i32;
    let zoom = if chart.zoom.is_finite() && chart.zoom > 0.0 {
        chart.zoom.clamp(0.1, 2.0)
    } else {
        1.0
    };
    let step = chart.step_ms.clamp(1, 1_000_000_000_000);
    let n = chart.n_steps.min(MAX_STEPS);
    // Keep every timestamp of the window well inside i64 and jiff's range.
    let start = chart
        .start_ms
        .clamp(-200_000_000_000_000, 200_000_000_000_000);
    let mut plots: Vec<Cow<Plot>> = chart
        .plots
        .iter()
        .take(MAX_PLOTS)
        .map(Cow::Borrowed)
        .collect();
    if plots.is_empty() {
        plots.push(Cow::Owned(Plot::default()));
    }
    let mut tzs: Vec<_> = chart
        .timezones
        .iter()
        .take(MAX_TIMEZONES)
        .cloned()
        .collect();
    if tzs.is_empty() {
        tzs.push(jiff::tz::TimeZone::UTC);
    }
    let colors = Colors::of(chart.theme);
    let np = plots.len() as i32;
    let fixed_w = matches!(chart.layout, Layout::Image | Layout::ImageWidth);
    let fixed_h = matches!(chart.layout, Layout::Image | Layout::ImageHeight);
    let show_text = w >= 16 * 6;
    let only = chart.only_graph;

    // Width: canvas plus axes, unless the width is the image's.
    let right_w = if np > 1 { AXIS_W * (np - 1) } else { RIGHT_PAD };
    let img_w = if fixed_w || only {
        w
    } else {
        w + AXIS_W + right_w
    };
    let canvas_w = img_w - AXIS_W - right_w;
    let show_axes = !only && canvas_w >= 64;
    let (left_off, right_off) = if show_axes {
        (AXIS_W, right_w)
    } else {
        (RIGHT_PAD, RIGHT_PAD)
    };

    // Above the canvas: title and 5 px.
    let title = chart
        .title
        .as_ref()
        .filter(|_| show_text && !only)
        .map(|t| text::truncate(t, LARGE, img_w));
    let mut y = if title.is_some() { LARGE.height(1) } else { 0 } + 5;
    let graph_y = y;
    let ntz = tzs.len() as i32;
    let axis_h = if only { 10 } else { TIME_AXIS_H };
    let graph_h = if fixed_h {
        (h - graph_y).clamp(64, 1000)
    } else if only {
        h
    } else {
        h + TIME_AXIS_H * ntz
    };
    let canvas_h = (graph_h - axis_h * ntz).max(1);
    let canvas = Rect {
        x: left_off,
        y: graph_y,
        w: (img_w - left_off - right_off).max(1),
        h: canvas_h,
    };
    y += graph_h;

    let bounds = plots.iter().map(|p| bounds(p, n)).collect();

    // Legend: one block per plot, then the frame line.
    let num_lines: usize = plots.iter().map(|p| p.lines.len()).sum();
    let per_plot = if num_lines <= MAX_LEGEND {
        MAX_LEGEND
    } else {
        MAX_LEGEND / plots.len()
    };
    let show_legend = !only && chart.legend != LegendMode::Off && !fixed_h && show_text;
    let stats = show_legend && chart.legend == LegendMode::LabelsWithStats && img_w >= 45 * 6;
    let entry_h = if stats {
        NORMAL.height(1) + 3 * SMALL.height(1)
    } else {
        NORMAL.height(1)
    };
    let mut legend = Vec::new();
    let mut frame = None;
    if show_legend {
        y += 5;
        for (i, p) in plots.iter().enumerate() {
            y += 5;
            if np > 1 {
                let text = match p.ylabel.as_deref().filter(|s| !s.is_empty()) {
                    Some(l) => {
                        format!("Axis {i}: {}", l.chars().take(MAX_TEXT).collect::<String>())
                    }
                    None => format!("Axis {i}"),
                };
                let th = text_h(&text, BOLD, img_w);
                legend.push(Item::Header { plot: i, y, text });
                y += th;
            }
            if p.lines.iter().any(|l| l.style == LineStyle::Heatmap) {
                y += 2;
                legend.push(Item::Heatmap { plot: i, y });
                y += if stats {
                    3 * NORMAL.height(1)
                } else {
                    NORMAL.height(1)
                };
            }
            let entries: Vec<_> = p
                .lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.style != LineStyle::Heatmap)
                .collect();
            for &(line, _) in entries.iter().take(per_plot) {
                y += 2;
                legend.push(Item::Entry { plot: i, line, y });
                y += entry_h;
            }
            if entries.len() > per_plot {
                y += 2;
                let hidden = entries.len() - per_plot;
                legend.push(Item::Footer { plot: i, y, hidden });
                y += text_h(&suppressed(hidden), NORMAL, img_w);
            }
        }
        y += 15;
        let end = start.saturating_add((n as i64).saturating_mul(step));
        let text = format!(
            "Frame: {}, End: {}, Step: {}",
            super::format::duration_str(end - start),
            super::format::zoned_str(end, &tzs[0]),
            super::format::duration_str(step)
        );
        let th = text_h(&text, SMALL, img_w);
        frame = Some((y, text));
        y += th;
    }

    // Warnings block (not with a fixed height: then the background turns yellow instead).
    // Bounded so that a flood of text cannot blow up the layout arithmetic.
    let notices: Vec<String> = chart
        .notices
        .iter()
        .take(MAX_NOTICES)
        .map(|s| s.chars().take(MAX_TEXT).collect())
        .collect();
    let mut warnings = None;
    if !notices.is_empty() && show_text && !fixed_h {
        y += 15;
        let mut bh = text_h("Warnings", BOLD, img_w);
        for s in &notices {
            bh += 2 + text_h(s, NORMAL, img_w - NORMAL.char_w);
        }
        warnings = Some((y, bh));
        y += bh;
    }
    let bg = if !notices.is_empty() && (!show_text || fixed_h) {
        colors.warn_bg
    } else {
        colors.image_bg
    };
    let img_h = if fixed_h { graph_y + graph_h } else { y };
    let dev_w = (f64::from(img_w) * zoom) as u32;
    let dev_h = (f64::from(img_h) * zoom).min(MAX_DEV_HEIGHT) as u32;
    Plan {
        plots,
        bounds,
        tzs,
        colors,
        start,
        step,
        n,
        zoom,
        img_w,

        dev_w: dev_w.max(1),
        dev_h: dev_h.max(1),
        title,
        canvas,
        show_axes,
        only_graph: only,
        stats,
        legend,
        frame,
        warnings,
        notices,
        bg,
    }
}
