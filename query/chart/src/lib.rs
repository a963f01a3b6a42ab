//! PNG charts in the look of Atlas's default graph engine: a canvas with value and time axes,
//! grid, lines / areas / stacks / vertical spans / heatmaps, and a legend with stats below.
//! Input is a fully resolved [`Chart`] (colors picked, labels final, stats computed); this
//! module only draws.
//!
//! # Layout (logical pixels; the PNG is `zoom` times larger, truncated)
//!
//! With `layout = Canvas`, `w` × `h` is the plot area and, with `P` plots, `Z` time zones:
//!
//! ```text
//! width  = w + 64·P + (P == 1 ? 24 : 0)                 // 64 = y-axis, 24 = right padding
//! height = [title 20] + 5 + h + 24·Z                    // canvas, one time axis per zone
//!        + 5 + Σ_plots(5 + [header 17 if P > 1] + [2 + heatmap 51|17]
//!                      + Σ_entries(2 + (stats ? 59 : 17)) + [2 + "... N suppressed ..." 17])
//!        + 15 + 14                                      // "Frame: …, End: …, Step: …"
//!        + [15 + warnings block]
//! ```
//!
//! e.g. `w=700, h=300`, one line with stats, no title: 788 × (5+324+5+5+2+59+15+14) = 788 × 429.
//! Stats need an image at least 270 px wide; text (title, legend) needs `w >= 96`; at most 50
//! legend entries (`50 / P` per plot when there are more lines). `Image` makes `w` × `h` the image
//! size (no legend); `ImageWidth` / `ImageHeight` fix only one side.

mod canvas;
mod format;
mod layout;
mod model;
mod render;
mod scales;
#[cfg(test)]
mod tests;
mod text;
mod ticks;

pub use model::*;

/// A rectangle in PNG pixels (zoom applied): `x .. x + w`, `y .. y + h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: i32,
    pub h: i32,
}

/// Where a legend entry was drawn.
#[derive(Clone, Debug, PartialEq)]
pub struct LegendEntryInfo {
    /// Index into `chart.plots` and into that plot's `lines`.
    pub plot: usize,
    pub line: usize,
    pub color: Color,
    /// The filled color box (13 × 13 at zoom 1). Its 1 px border (legend text color) covers the
    /// top and left edges and lies just outside the right and bottom ones.
    pub swatch: Rect,
    /// The part of the box showing only the line's color (over the legend background).
    pub swatch_inner: Rect,
    /// The label as drawn (possibly truncated with `...`).
    pub label: String,
}

/// The geometry of a rendered chart, for tests and callers that check pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutInfo {
    /// PNG size.
    pub width: u32,
    pub height: u32,
    /// The plot area: values are drawn in rows `canvas.y ..= canvas.y + canvas.h`.
    pub canvas: Rect,
    /// Legend entries top to bottom (heatmap lines are summarised by a color scale instead).
    pub legend_entries: Vec<LegendEntryInfo>,
    /// Lines left out of the legend (`... N suppressed ...`), per drawn plot.
    pub suppressed: Vec<usize>,
}

/// The layout [`render_png`] uses for `chart`.
pub fn layout(chart: &Chart) -> LayoutInfo {
    let p = layout::plan(chart);
    let z = p.zoom;
    let dev = |v: i32| (f64::from(v) * z).round() as i32;
    let rect = |x: i32, y: i32, w: i32, h: i32| Rect {
        x: dev(x),
        y: dev(y),
        w: dev(x + w) - dev(x),
        h: dev(y + h) - dev(y),
    };
    let d = layout::SWATCH;
    let legend_entries = p
        .legend
        .iter()
        .filter_map(|item| match *item {
            layout::Item::Entry { plot, line, y } => {
                let l = &p.plots[plot].lines[line];
                Some(LegendEntryInfo {
                    plot,
                    line,
                    color: l.color,
                    swatch: rect(2, y + 2, d, d),
                    swatch_inner: rect(3, y + 3, d - 1, d - 1),
                    label: text::truncate(&l.label, text::NORMAL, p.img_w - d - 4),
                })
            }
            _ => None,
        })
        .collect();
    let mut suppressed = vec![0; p.plots.len()];
    for item in &p.legend {
        if let layout::Item::Footer { plot, hidden, .. } = *item {
            suppressed[plot] = hidden;
        }
    }
    let c = p.canvas;
    LayoutInfo {
        width: p.dev_w,
        height: p.dev_h,
        canvas: rect(c.x, c.y, c.w, c.h),
        legend_entries,
        suppressed,
    }
}

/// Renders `chart` as a PNG. Never panics: odd input (NaN, infinities, no plots, zero steps,
/// ragged value arrays) renders as an empty or partial chart.
pub fn render_png(chart: &Chart) -> Vec<u8> {
    render::render(chart)
}

/// Atlas's error image (`PngImage.userError` / `systemError`): the message, prefixed with
/// `USER ERROR:` (black on `FFCF00`) or `SYSTEM ERROR:` (white on `F82000`), wrapped to the
/// width in a 13 px monospace font. The size is clamped to 1..=2000 × 1..=1000.
pub fn render_error_png(message: &str, width: u32, height: u32, user_error: bool) -> Vec<u8> {
    let (w, h) = (width.clamp(1, 2000), height.clamp(1, 1000));
    let (prefix, fg, bg) = if user_error {
        ("USER ERROR:", Color::rgb(0x000000), Color::rgb(0xFFCF00))
    } else {
        ("SYSTEM ERROR:", Color::rgb(0xFFFFFF), Color::rgb(0xF82000))
    };
    let Some(mut cv) = canvas::Canvas::new(w, h, 1.0, bg) else {
        return Vec::new();
    };
    let msg = format!("{prefix} {message}");
    // Lines past the bottom are clipped by the canvas; cap the work for huge messages.
    let max_chars = (w as usize / 8 + 1) * (h as usize / 17 + 1);
    let msg: String = msg.chars().take(max_chars * 2).collect();
    text::TextPainter::new().draw(
        &mut cv,
        &msg,
        text::ink(text::ERROR, text::Align::Left, fg),
        0,
        0,
        w as i32,
    );
    cv.encode()
}
