//! `format=png`: the graph's lines as a [`Chart`] for the renderer: one plot per y-axis in
//! use, the title and y labels with `$key` substituted from the tags the lines share, legend
//! and stats as the request asks.

use argus_tsdb::TagMap;

use super::{GraphRequest, GraphResult, ResultSeries, legend};
use argus_chart::{self as chart, Chart, Color, LegendMode, Line, Plot};

/// Tags every line has with the same value (Atlas substitutes titles from these).
fn common_tags<'a>(lines: impl Iterator<Item = &'a ResultSeries>) -> TagMap {
    let mut common: Option<TagMap> = None;
    for l in lines {
        common = Some(match common {
            None => l.tags.clone(),
            Some(c) => c
                .iter()
                .filter(|(k, v)| l.tags.get(k) == Some(*v))
                .collect(),
        });
    }
    common.unwrap_or_default()
}

fn substitute(text: &str, tags: &TagMap) -> String {
    legend::substitute(text, &|k: &str| tags.get(k).map(str::to_string))
}

/// The chart a graph result draws as.
pub(crate) fn chart(result: &GraphResult, req: &GraphRequest) -> Chart {
    let img = &req.image;
    let mut plots = Vec::new();
    for axis in 0..super::MAX_AXES {
        let lines: Vec<&ResultSeries> = result.series.iter().filter(|s| s.axis == axis).collect();
        if lines.is_empty() && !(axis == 0 && result.series.is_empty()) {
            continue;
        }
        let params = img.axes.get(axis).cloned().unwrap_or_default();
        let ylabel = params
            .ylabel
            .as_deref()
            .map(|y| substitute(y, &common_tags(lines.iter().copied())));
        plots.push(Plot {
            ylabel,
            axis_color: None,
            scale: params.scale,
            lower: params.lower,
            upper: params.upper,
            tick_labels: params.tick_labels,
            lines: lines
                .iter()
                .map(|s| {
                    let st = s.stats();
                    Line {
                        label: s.label.clone(),
                        color: Color(s.color),
                        style: s.style,
                        width: s.line_width,
                        values: s.values.clone(),
                        stats: chart::Stats {
                            count: st.count,
                            avg: st.avg(),
                            total: st.total,
                            max: st.max,
                            min: st.min,
                            last: st.last,
                        },
                    }
                })
                .collect(),
        });
    }
    // With several y-axes each takes the color of its first line (Atlas's multi-Y rule).
    if plots.len() > 1 {
        for p in &mut plots {
            p.axis_color = p.lines.first().map(|l| l.color);
        }
    }
    let mut notices = img.notices.clone();
    notices.extend(result.notices.iter().cloned());
    Chart {
        width: img.width,
        height: img.height,
        zoom: img.zoom,
        layout: img.layout,
        title: img
            .title
            .as_deref()
            .map(|t| substitute(t, &common_tags(result.series.iter()))),
        theme: img.theme,
        legend: if img.no_legend {
            LegendMode::Off
        } else if img.no_legend_stats {
            LegendMode::LabelsOnly
        } else {
            LegendMode::LabelsWithStats
        },
        only_graph: img.only_graph,
        start_ms: result.start_ms,
        step_ms: result.step_ms,
        n_steps: req.len(),
        timezones: req.timezones.clone(),
        plots,
        notices,
    }
}

pub(crate) fn render(result: &GraphResult, req: &GraphRequest) -> Vec<u8> {
    chart::render_png(&chart(result, req))
}
