//! Draws a planned chart: canvas (heatmaps, lines, areas, stacks, spans), grids, time and value
//! axes, legend and warnings, in the order of Atlas's `TimeSeriesGraph` and `DefaultGraphEngine`.

use super::canvas::Canvas;
use super::format::{self, Prefix};
use super::layout::{self, AXIS_W, Item, Plan, SWATCH, TIME_AXIS_H, plan};
use super::scales::{TimeScale, YScale};
use super::text::{self, Align, BOLD, LARGE, NORMAL, Rotation, SMALL, TextPainter, ink};
use super::ticks::{self, ValueTick};
use super::{Chart, Color, Line, LineStyle, Plot, Rect, TickLabels};

pub(super) fn render(chart: &Chart) -> Vec<u8> {
    let p = plan(chart);
    let Some(mut cv) = Canvas::new(p.dev_w, p.dev_h, p.zoom, p.bg) else {
        return Vec::new();
    };
    let mut tp = TextPainter::new();
    if let Some(t) = &p.title {
        tp.draw(
            &mut cv,
            t,
            ink(LARGE, Align::Center, p.colors.fg),
            0,
            0,
            p.img_w,
        );
    }
    draw_graph(&p, &mut cv, &mut tp);
    draw_legend(&p, &mut cv, &mut tp);
    if let Some((y, h)) = p.warnings {
        let fg = p.colors.warn_fg;
        cv.fill_rect(0, y, p.img_w, h, p.colors.warn_bg);
        let mut y = y + text::BOLD.height(tp.draw(
            &mut cv,
            "Warnings",
            ink(BOLD, Align::Left, fg),
            0,
            y,
            p.img_w,
        ));
        for s in &p.notices {
            y += 2;
            // `ListItem`: a bullet in the first character cell, then the wrapped text.
            let d = NORMAL.char_w - 2;
            cv.fill_circle(1, y + (NORMAL.height(1) - d) / 2, d, fg);
            let lines = tp.draw(
                &mut cv,
                s,
                ink(NORMAL, Align::Left, fg),
                NORMAL.char_w,
                y,
                p.img_w,
            );
            y += NORMAL.height(lines);
        }
    }
    cv.encode()
}

fn value(line: &Line, i: usize) -> f64 {
    line.values.get(i).copied().unwrap_or(f64::NAN)
}

fn y_ticks(p: &Plan, plot: usize, y1: i32, y2: i32) -> Vec<ValueTick> {
    let (min, max) = p.bounds[plot];
    let pl = &p.plots[plot];
    ticks::value_ticks(
        min,
        max,
        (y2 - y1) / (3 * SMALL.height(1)),
        pl.scale,
        pl.tick_labels,
    )
}

fn grid_color(p: &Plan, major: bool) -> Color {
    if major {
        p.colors.major_grid
    } else {
        p.colors.minor_grid
    }
}

fn draw_graph(p: &Plan, cv: &mut Canvas, tp: &mut TextPainter) {
    let c = p.canvas;
    let (x1, y1, x2, y2) = (c.x, c.y, c.x + c.w, c.y + c.h);
    cv.set_clip(Some(Rect {
        x: x1,
        y: y1,
        w: c.w,
        h: c.h + 1,
    }));
    cv.fill_rect(x1, y1, c.w, c.h + 1, p.colors.canvas_bg);
    let xs = TimeScale::new(p.start - p.step, p.step, p.n, x1, x2);
    for (i, plot) in p.plots.iter().enumerate() {
        let (min, max) = p.bounds[i];
        let ys = YScale::new(plot.scale, min, max, y1, y2);
        draw_heatmap(p, cv, i, &xs, &ys);
        // Running positive and negative stack heights per step.
        let stack_len = plot
            .lines
            .iter()
            .filter(|l| l.style == LineStyle::Stack)
            .map(|l| l.values.len());
        let stack_len = stack_len.max().unwrap_or(0).min(p.n);
        let (mut pos, mut neg) = (vec![0.0; stack_len], vec![0.0; stack_len]);
        for line in &plot.lines {
            let steps = p.n.min(line.values.len());
            let col = line.color;
            let span = |i: usize| {
                (
                    xs.x(p.start + (i as i64 - 1) * p.step),
                    xs.x(p.start + i as i64 * p.step),
                )
            };
            match line.style {
                LineStyle::Line => {
                    for i in 0..steps {
                        let (px1, px2) = span(i);
                        let (pv, nv) = (value(line, i.saturating_sub(1)), value(line, i));
                        let ny = ys.y(nv);
                        if !pv.is_nan() && !nv.is_nan() {
                            cv.line(px1, ys.y(pv), px1, ny, col, line.width);
                        }
                        if !nv.is_nan() {
                            cv.line(px1, ny, px2, ny, col, line.width);
                        }
                    }
                }
                LineStyle::Area => {
                    let axis = ys.y(0.0);
                    for i in 0..steps {
                        let (px1, px2) = span(i);
                        let v = value(line, i);
                        if !v.is_nan() {
                            let ny = ys.y(v);
                            cv.fill_rect(px1, axis.min(ny), px2 - px1, (axis - ny).abs() + 1, col);
                        }
                    }
                }
                LineStyle::Stack => {
                    for i in 0..steps {
                        let (px1, px2) = span(i);
                        let v = value(line, i);
                        let (py, ny) = (pos[i], neg[i]);
                        let band = |cv: &mut Canvas, base: f64, top: f64| {
                            let (a, b) = (ys.y(base), ys.y(top));
                            cv.fill_rect(px1, a.min(b), px2 - px1, (a - b).abs() + 1, col);
                        };
                        if v == 0.0 && py == 0.0 && ny == 0.0 {
                            // A line on the axis tells 0 apart from no data.
                            cv.fill_rect(px1, ys.y(0.0), px2 - px1, 1, col);
                        } else if v > 0.0 {
                            band(cv, py, v + py);
                            pos[i] = v + py;
                        } else if v < 0.0 {
                            band(cv, ny, v + ny);
                            neg[i] = v + ny;
                        }
                    }
                }
                LineStyle::VSpan => {
                    for i in 0..steps {
                        let (px1, px2) = span(i);
                        let v = value(line, i);
                        if !v.is_nan() && v.abs() >= 1e-12 {
                            cv.fill_rect(px1, y1, px2 - px1, y2 - y1, col);
                        }
                    }
                }
                LineStyle::Heatmap => {}
            }
        }
    }
    cv.set_clip(None);

    // Time grid from the primary zone's ticks.
    let n_ticks = i64::from((x2 - x1) / (7 * SMALL.char_w));
    let tt = ticks::time_ticks(p.start - p.step, p.end(), &p.tzs[0], n_ticks);
    for t in &tt {
        let px = xs.x(t.t);
        if px > x1 && px < x2 {
            let col = grid_color(p, t.major);
            cv.dashed(px, y1, px, y2, col);
        }
    }
    if !p.only_graph {
        for (i, tz) in p.tzs.iter().enumerate() {
            draw_time_axis(p, cv, tp, tz, i, &xs, y2 + 1 + TIME_AXIS_H * i as i32);
        }
    }
    // Value grid from the first plot's axis.
    let ys = YScale::new(p.plots[0].scale, p.bounds[0].0, p.bounds[0].1, y1, y2);
    for t in y_ticks(p, 0, y1, y2) {
        let py = ys.y(t.v);
        if py != y1 && py != y2 {
            let col = grid_color(p, t.major);
            cv.dashed(x1, py, x2, py, col);
        }
    }
    if p.show_axes {
        draw_value_axis(p, cv, tp, 0, 0, AXIS_W - 1);
        for i in 1..p.plots.len() {
            let ax = x2 + AXIS_W * (i as i32 - 1);
            draw_value_axis(p, cv, tp, i, ax, ax + AXIS_W);
        }
    }
}

/// Java's narrow zone name as Atlas shows it (`PT`, `UTC`, `Z`), approximated from the IANA
/// name or the abbreviation (`PST` → `PT`).
fn zone_name(tz: &jiff::tz::TimeZone, at: i64) -> String {
    const UTC: [&str; 8] = [
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Universal",
        "Zulu",
        "Etc/Universal",
        "Etc/Zulu",
    ];
    match tz.iana_name() {
        Some(n) if UTC.contains(&n) => return "UTC".into(),
        None => {
            let off = ticks::offset_ms(tz, at) / 60_000;
            if off == 0 {
                return "Z".into();
            }
            let s = if off < 0 { '-' } else { '+' };
            return format!("{s}{:02}:{:02}", off.abs() / 60, off.abs() % 60);
        }
        _ => {}
    }
    let Ok(ts) = jiff::Timestamp::from_millisecond(at) else {
        return String::new();
    };
    let abbr = tz.to_offset_info(ts).abbreviation().to_string();
    let b = abbr.as_bytes();
    let generic = b.len() >= 3
        && b.iter().all(u8::is_ascii_uppercase)
        && b.ends_with(b"T")
        && matches!(b[b.len() - 2], b'S' | b'D');
    if generic {
        format!("{}T", &abbr[..abbr.len() - 2])
    } else {
        abbr
    }
}

fn draw_time_axis(
    p: &Plan,
    cv: &mut Canvas,
    tp: &mut TextPainter,
    tz: &jiff::tz::TimeZone,
    i: usize,
    xs: &TimeScale,
    y: i32,
) {
    let c = p.canvas;
    let (x1, x2) = (c.x, c.x + c.w);
    let fg = p.colors.fg;
    let txt_h = SMALL.height(1);
    let pad = 7 * SMALL.char_w / 2;
    // The first axis line is faint so data right on the axis stays visible.
    let line_col = if i == 0 {
        Color((fg.0 & 0x00FF_FFFF) | 0x2800_0000)
    } else {
        fg
    };
    cv.line(x1, y, x2, y, line_col, 1.0);
    let transition = jiff::Timestamp::from_millisecond(p.start)
        .ok()
        .and_then(|ts| tz.following(ts).next())
        .map(|tr| tr.timestamp().as_millisecond());
    let mut shown_transition = false;
    let n_ticks = i64::from((x2 - x1) / (7 * SMALL.char_w));
    for t in ticks::time_ticks(p.start - p.step, p.end(), tz, n_ticks)
        .iter()
        .filter(|t| t.major)
    {
        let px = xs.x(t.t);
        if px < x1 || px > x2 {
            continue;
        }
        cv.line(px, y, px, y + 4, fg, 1.0);
        let (label, col) = match transition {
            Some(tr) if t.t >= tr && !shown_transition => {
                shown_transition = true;
                let delta = (ticks::offset_ms(tz, tr) - ticks::offset_ms(tz, tr - 1)) / 1000;
                (dst_label(delta), Color::rgb(0xFF0000))
            }
            _ => (t.label.clone(), fg),
        };
        tp.single(
            cv,
            &label,
            ink(SMALL, Align::Center, col),
            px - pad,
            (y + txt_h / 2) as f32,
            px + pad,
        );
    }
    let name = zone_name(tz, p.start);
    let label_w = (name.chars().count() as i32 + 2) * SMALL.char_w;
    tp.single(
        cv,
        &name,
        ink(SMALL, Align::Right, fg),
        x1 - label_w - pad - 2,
        (y + txt_h / 2) as f32,
        x1 - pad - 2,
    );
}

/// `+1H`, `-30M`: the offset change at a DST transition (`Duration.toString` without `PT`).
fn dst_label(secs: i64) -> String {
    let sign = if secs < 0 { "-" } else { "+" };
    let a = secs.abs();
    let mut s = sign.to_string();
    if a / 3600 > 0 {
        s += &format!("{}H", a / 3600);
    }
    if a % 3600 / 60 > 0 {
        s += &format!("{}M", a % 3600 / 60);
    }
    if a % 60 > 0 || a == 0 {
        s += &format!("{}S", a % 60);
    }
    s
}

/// Tick labels get 7 characters (`ValueAxis.tickLabelWidth`); Atlas wraps longer ones into the
/// ylabel. Here trailing fraction zeros are dropped instead (`400.000ms` → `400.0ms`).
fn fit_label(s: String) -> String {
    let Some(dot) = s.find('.').filter(|_| s.chars().count() > 7) else {
        return s;
    };
    let end = s[dot + 1..]
        .find(|c: char| !c.is_ascii_digit())
        .map_or(s.len(), |i| dot + 1 + i);
    let digits = s[dot + 1..end].trim_end_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    format!("{}.{digits}{}", &s[..dot], &s[end..])
}

/// Prefix and `%.Nf` precision of the offset-mode labels per tick label mode.
fn tick_prefix(mode: TickLabels, v: f64) -> (Prefix, usize) {
    match mode {
        TickLabels::Off => (format::ONE, 1),
        TickLabels::Decimal => (format::decimal(v), 1),
        TickLabels::Binary => (format::binary(v), 0),
        TickLabels::Duration => (format::duration(v), 1),
    }
}

/// A value axis in `x1..=x2`: the line on the canvas side, major tick marks and labels, and
/// the rotated ylabel on the outer side. Plot 0 is on the left, others on the right.
fn draw_value_axis(p: &Plan, cv: &mut Canvas, tp: &mut TextPainter, i: usize, x1: i32, x2: i32) {
    let (y1, y2) = (p.canvas.y, p.canvas.y + p.canvas.h);
    let plot: &Plot = &p.plots[i];
    let left = i == 0;
    let col = p.axis_color(i);
    let (min, max) = p.bounds[i];
    let ys = YScale::new(plot.scale, min, max, y1, y2);
    let edge = if left { x2 } else { x1 };
    let dir = if left { -1 } else { 1 };
    cv.line(edge, y1, edge, y2, col, 1.0);
    let majors: Vec<_> = y_ticks(p, i, y1, y2)
        .into_iter()
        .filter(|t| t.major)
        .collect();
    let show = plot.tick_labels != TickLabels::Off;
    let txt_h = SMALL.height(1);
    // Tick labels sit in the box between the outer edge and the tick mark.
    let label_box = |ty: i32| {
        if left {
            (x1, ty, x2 - 5)
        } else {
            (x1 + 5, ty, x2)
        }
    };
    let align = if left { Align::Right } else { Align::Left };
    let offset = majors.first().map_or(0.0, |t| t.offset);
    if offset == 0.0 || !show {
        for t in &majors {
            let py = ys.y(t.v);
            cv.line(edge, py, edge + 4 * dir, py, col, 1.0);
            if show {
                let (bx1, by, bx2) = label_box(py - txt_h / 2);
                tp.single(
                    cv,
                    &fit_label(t.label()),
                    ink(SMALL, align, col),
                    bx1,
                    by as f32,
                    bx2,
                );
            }
        }
    } else {
        // Offset mode: the base value once, rotated along the axis, then `+delta` labels.
        let base = majors[0].v;
        let (prefix, prec) = tick_prefix(plot.tick_labels, majors[majors.len() - 1].v - base);
        let base_str = prefix.fixed(base, prec, 0, 0);
        let off_h = 2 * txt_h;
        let off_w = SMALL.char_w * (base_str.chars().count() as i32 + 3);
        let oy = ys.y(base);
        let otop = oy - off_w - 4;
        let w = base_str.chars().count() as i32 * SMALL.char_w;
        let cy = oy - 4 - 4 - w / 2;
        let (cx, rot) = if left {
            (edge - 4 - off_h / 2, Rotation::Ccw)
        } else {
            (edge + 4 + off_h / 2, Rotation::Cw)
        };
        tp.rotated(cv, &base_str, SMALL, (cx, cy), rot, col);
        cv.line(edge, oy, edge + (off_h + 4) * dir, oy, col, 1.0);
        for t in &majors[1..] {
            let py = ys.y(t.v);
            cv.line(edge, py, edge + 4 * dir, py, col, 1.0);
            let ty = py - txt_h / 2;
            if ty + txt_h < otop {
                let (bx1, by, bx2) = label_box(ty);
                let label = fit_label(format!("+{}", prefix.fixed(t.v - base, prec, 0, 0)));
                tp.single(cv, &label, ink(SMALL, align, col), bx1, by as f32, bx2);
            }
        }
    }
    if let Some(label) = plot.ylabel.as_deref().filter(|s| !s.is_empty()) {
        let label = text::truncate(label, NORMAL, y2 - y1);
        let lh = NORMAL.height(1);
        let (cx, rot) = if left {
            (x1 + lh / 2, Rotation::Ccw)
        } else {
            (x2 - lh + lh / 2, Rotation::Cw)
        };
        tp.rotated(cv, &label, NORMAL, (cx, (y2 - y1) / 2 + y1), rot, col);
    }
}

/// The alpha gradient Atlas derives from a heatmap line's color (`Palette.gradient`).
fn gradient(c: Color) -> Vec<Color> {
    let a = u32::from(c.alpha());
    let delta = if a == 0 || a >= 255 { 255 / 5 } else { a };
    let n = 255 / delta;
    (0..n)
        .map(|i| Color((c.0 & 0x00FF_FFFF) | ((255 - (n - 1 - i) * delta) << 24)))
        .collect()
}

struct HeatmapData {
    /// Bucket upper bounds (all value ticks), counts per step × bucket, count range, palette.
    ticks: Vec<f64>,
    counts: Vec<Vec<f64>>,
    min: f64,
    max: f64,
    palette: Vec<Color>,
}

impl HeatmapData {
    fn color(&self, count: f64) -> Color {
        let nc = self.palette.len();
        let idx = if self.max > self.min {
            ((count - self.min) * nc as f64 / (self.max - self.min)) as usize
        } else {
            0
        };
        self.palette[idx.min(nc - 1)]
    }
}

/// Counts values per (step, y-tick bucket) for a plot's heatmap lines (`Heatmap.scala`;
/// percentile heatmaps are not distinguished).
fn heatmap(p: &Plan, i: usize) -> Option<HeatmapData> {
    let plot = &p.plots[i];
    let lines: Vec<_> = plot
        .lines
        .iter()
        .filter(|l| l.style == LineStyle::Heatmap)
        .collect();
    let first = lines.first()?;
    let (lo, hi) = p.bounds[i];
    let ticks: Vec<f64> = y_ticks(p, i, 0, p.canvas.h).iter().map(|t| t.v).collect();
    let steps = lines
        .iter()
        .map(|l| l.values.len())
        .max()
        .unwrap_or(0)
        .min(p.n);
    let mut counts = vec![vec![0.0; ticks.len() + 1]; steps];
    for line in &lines {
        for (x, col) in counts.iter_mut().enumerate() {
            let v = value(line, x);
            if !v.is_nan() && v >= lo && v <= hi {
                col[ticks.iter().position(|t| v < *t).unwrap_or(ticks.len())] += 1.0;
            }
        }
    }
    let all = counts.iter().flatten().copied();
    let max = all.clone().fold(0.0, f64::max);
    let min = all.filter(|c| *c > 0.0).fold(f64::MAX, f64::min).min(max);
    Some(HeatmapData {
        ticks,
        counts,
        min,
        max,
        palette: gradient(first.color),
    })
}

fn draw_heatmap(p: &Plan, cv: &mut Canvas, i: usize, xs: &TimeScale, ys: &YScale) {
    let Some(hm) = heatmap(p, i) else { return };
    let (y1, y2) = (p.canvas.y, p.canvas.y + p.canvas.h);
    for (x, col) in hm.counts.iter().enumerate() {
        let px1 = xs.x(p.start + (x as i64 - 1) * p.step);
        let px2 = xs.x(p.start + x as i64 * p.step);
        for (b, &count) in col.iter().enumerate() {
            if count > 0.0 {
                let py1 = if b == 0 { y2 } else { ys.y(hm.ticks[b - 1]) };
                let py2 = if b == hm.ticks.len() {
                    y1
                } else {
                    ys.y(hm.ticks[b])
                };
                // White underneath so alpha gradients read the same on the dark theme.
                cv.fill_rect(px1, py2, px2 - px1, py1 - py2, Color(0xFFFFFFFF));
                cv.fill_rect(px1, py2, px2 - px1, py1 - py2, hm.color(count));
            }
        }
    }
}

fn draw_legend(p: &Plan, cv: &mut Canvas, tp: &mut TextPainter) {
    let (fg, w) = (p.colors.fg, p.img_w);
    let d = SWATCH;
    for item in &p.legend {
        match item {
            Item::Header { plot, y, text } => {
                tp.draw(
                    cv,
                    text,
                    ink(BOLD, Align::Left, p.axis_color(*plot)),
                    0,
                    *y,
                    w,
                );
            }
            Item::Footer { y, hidden, .. } => {
                let text = layout::suppressed(*hidden);
                tp.draw(cv, &text, ink(NORMAL, Align::Left, fg), 0, *y, w);
            }
            Item::Entry { plot, line, y } => {
                let pl = &p.plots[*plot];
                let line = &pl.lines[*line];
                cv.fill_rect(2, y + 2, d, d, p.colors.canvas_bg);
                cv.fill_rect(2, y + 2, d, d, line.color);
                cv.rect_outline(2, y + 2, d, d, fg);
                let label = text::truncate(&line.label, NORMAL, w - d - 4);
                tp.draw(cv, &label, ink(NORMAL, Align::Left, fg), d + 4, *y, w);
                if p.stats {
                    let s = line.stats;
                    let f = |v: f64| format::stat(v, pl.tick_labels, true);
                    let rows = [
                        format!("    Max : {:<11}   Min  : {:<11}", f(s.max), f(s.min)),
                        format!("    Avg : {:<11}   Last : {:<11}", f(s.avg), f(s.last)),
                        format!(
                            "    Tot : {:<11}   Cnt  : {:<11}",
                            f(s.total),
                            format::stat(s.count as f64, pl.tick_labels, false)
                        ),
                    ];
                    for (r, row) in rows.iter().enumerate() {
                        let ry = y + NORMAL.height(1) + r as i32 * SMALL.height(1);
                        tp.draw(cv, row, ink(SMALL, Align::Left, fg), d + 4, ry, w);
                    }
                }
            }
            Item::Heatmap { plot, y } => draw_heatmap_entry(p, cv, tp, *plot, *y),
        }
    }
    if let Some((y, text)) = &p.frame {
        tp.draw(cv, text, ink(SMALL, Align::Left, fg), 0, *y, w);
    }
}

/// `HeatmapLegendEntry`: the label, then (with stats) the color scale with count ticks.
fn draw_heatmap_entry(p: &Plan, cv: &mut Canvas, tp: &mut TextPainter, plot: usize, y: i32) {
    let fg = p.colors.fg;
    let label = text::truncate("Heatmap", NORMAL, p.img_w);
    tp.draw(cv, &label, ink(NORMAL, Align::Left, fg), 0, y, p.img_w);
    let Some(hm) = heatmap(p, plot).filter(|_| p.stats) else {
        return;
    };
    let d = SWATCH;
    let top = y + NORMAL.height(1);
    let indent = SMALL.char_w * 4 + d + 4;
    let nc = hm.palette.len() as i32;
    let bw = SMALL.char_w * 38 / nc;
    cv.fill_rect(indent, top, bw * nc, d, Color(0xFFFFFFFF));
    for (k, c) in hm.palette.iter().enumerate() {
        cv.fill_rect(indent + k as i32 * bw, top, bw, d, *c);
    }
    cv.line(indent, top + d, indent + bw * nc, top + d, fg, 1.0);
    let txt_w = bw.max(SMALL.char_w * 7);
    let ticks = ticks::simple(hm.min, hm.max, hm.palette.len());
    for (k, t) in ticks.iter().enumerate() {
        let x = indent + bw * k as i32;
        cv.line(x, top + d, x, top + d + 4, fg, 1.0);
        if bw >= txt_w || k == 0 || k == ticks.len() - 1 {
            let ty = top + d + 4 + 2;
            tp.single(
                cv,
                &t.label(),
                ink(SMALL, Align::Center, fg),
                x - txt_w / 2,
                ty as f32,
                x + txt_w - txt_w / 2,
            );
        }
    }
}
