//! What a chart is made of, fully resolved by the caller (the graph API): the renderer takes
//! these as they are and draws them.

/// A color as `0xAARRGGBB` (Atlas's `aarrggbb`); alpha `ff` is opaque.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Color(pub u32);

impl Color {
    pub const fn rgb(rgb: u32) -> Color {
        Color(0xff00_0000 | (rgb & 0x00ff_ffff))
    }
    pub fn alpha(self) -> u8 {
        (self.0 >> 24) as u8
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Theme {
    #[default]
    Light,
    Dark,
}

/// Atlas's `layout` parameter: whether `width`/`height` are the canvas (plot area) or the
/// whole image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Canvas,
    /// Both width and height are the final image size (legend suppressed).
    Image,
    /// Width is the image width, height is the canvas height.
    ImageWidth,
    /// Height is the image height (legend suppressed), width is the canvas width.
    ImageHeight,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LegendMode {
    Off,
    LabelsOnly,
    #[default]
    LabelsWithStats,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LineStyle {
    #[default]
    Line,
    Area,
    Stack,
    VSpan,
    Heatmap,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Scale {
    #[default]
    Linear,
    Log,
    LogLinear,
    Pow2,
    Sqrt,
}

/// A y-axis bound: Atlas's `auto-style` (extends to 0 for areas and stacks), `auto-data`, or
/// an explicit value.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Bound {
    #[default]
    AutoStyle,
    AutoData,
    Explicit(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TickLabels {
    Off,
    #[default]
    Decimal,
    Binary,
    Duration,
}

/// Window statistics of one line (Atlas's SummaryStats): NaN ignored; `count` of non-NaN
/// values; the others NaN when `count` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct Stats {
    pub count: usize,
    pub avg: f64,
    pub total: f64,
    pub max: f64,
    pub min: f64,
    pub last: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Final legend text.
    pub label: String,
    pub color: Color,
    pub style: LineStyle,
    /// Stroke width in px (Atlas's `:lw`, default 1).
    pub width: f32,
    /// One value per step: `values[i]` is the value at `chart.start_ms + i * chart.step_ms`
    /// and covers the interval `(t - step, t]`. NaN is "no data" (a gap).
    pub values: Vec<f64>,
    pub stats: Stats,
}

/// One y-axis and the lines drawn against it. Plot 0's axis is on the left, the others on
/// the right.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plot {
    pub ylabel: Option<String>,
    /// Axis and tick label color; `None` is the theme's text color (Atlas uses the first
    /// line's color when there are several plots).
    pub axis_color: Option<Color>,
    pub scale: Scale,
    pub lower: Bound,
    pub upper: Bound,
    pub tick_labels: TickLabels,
    pub lines: Vec<Line>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    /// Atlas's `w` and `h` (meaning depends on `layout`), already clamped to 64..=2000 and
    /// 64..=1000.
    pub width: u32,
    pub height: u32,
    /// Scales the whole image (Atlas's `zoom`, clamped to at most 2.0).
    pub zoom: f64,
    pub layout: Layout,
    pub title: Option<String>,
    pub theme: Theme,
    pub legend: LegendMode,
    /// Only the canvas: no axes labels, legend or title (Atlas's `only_graph`).
    pub only_graph: bool,
    /// Timestamp of the first value, the step, and the number of steps (all lines have
    /// `n_steps` values). The x axis spans `(start_ms - step_ms, start_ms + (n-1)*step_ms]`.
    pub start_ms: i64,
    pub step_ms: i64,
    pub n_steps: usize,
    /// One time axis per zone, the first is the primary one.
    pub timezones: Vec<jiff::tz::TimeZone>,
    pub plots: Vec<Plot>,
    /// Warnings shown under the legend (Atlas's `notices`).
    pub notices: Vec<String>,
}
