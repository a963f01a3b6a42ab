//! Tests of the rendered PNGs: sizes against Atlas's golden images, legend swatches, no panic
//! on hostile charts, the error image. `write_samples` (ignored) renders the sample gallery.

use super::*;

const START: i64 = 1_325_376_000_000; // 2012-01-01T00:00Z
const PALETTE: [u32; 6] = [0x0075DC, 0x993F00, 0x9DCC00, 0x4C005C, 0x00998F, 0xFFA405];

fn stats(values: &[f64]) -> Stats {
    let ok: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if ok.is_empty() {
        return Stats {
            count: 0,
            avg: f64::NAN,
            total: f64::NAN,
            max: f64::NAN,
            min: f64::NAN,
            last: f64::NAN,
        };
    }
    let total: f64 = ok.iter().sum();
    Stats {
        count: ok.len(),
        avg: total / ok.len() as f64,
        total,
        max: ok.iter().copied().fold(f64::MIN, f64::max),
        min: ok.iter().copied().fold(f64::MAX, f64::min),
        last: ok[ok.len() - 1],
    }
}

fn line(label: &str, color: u32, style: LineStyle, values: Vec<f64>) -> Line {
    Line {
        label: label.into(),
        color: Color::rgb(color),
        style,
        width: 1.0,
        stats: stats(&values),
        values,
    }
}

fn sine(n: usize, amp: f64, phase: f64) -> Vec<f64> {
    (0..n)
        .map(|i| amp * (1.0 + (i as f64 / n as f64 * std::f64::consts::TAU + phase).sin()))
        .collect()
}

fn plot(lines: Vec<Line>) -> Plot {
    Plot {
        lines,
        ..Plot::default()
    }
}

fn chart(w: u32, h: u32, n: usize, plots: Vec<Plot>) -> Chart {
    Chart {
        width: w,
        height: h,
        zoom: 1.0,
        layout: Layout::Canvas,
        title: None,
        theme: Theme::Light,
        legend: LegendMode::LabelsWithStats,
        only_graph: false,
        start_ms: START,
        step_ms: 60_000,
        n_steps: n,
        timezones: vec![jiff::tz::TimeZone::UTC],
        plots,
        notices: vec![],
    }
}

fn one_line(w: u32, h: u32) -> Chart {
    chart(
        w,
        h,
        180,
        vec![plot(vec![line(
            "sps",
            PALETTE[0],
            LineStyle::Line,
            sine(180, 100.0, 0.0),
        )])],
    )
}

/// Decodes a PNG into (width, height, RGBA bytes).
fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut dec = png::Decoder::new(std::io::Cursor::new(png));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::ALPHA);
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    buf.truncate(info.buffer_size());
    assert_eq!(info.color_type, png::ColorType::Rgba);
    (info.width, info.height, buf)
}

fn pixel(img: &(u32, u32, Vec<u8>), x: i32, y: i32) -> u32 {
    let i = (y as usize * img.0 as usize + x as usize) * 4;
    u32::from_be_bytes([0, img.2[i], img.2[i + 1], img.2[i + 2]])
}

fn assert_size(c: &Chart, w: u32, h: u32) {
    let img = decode(&render_png(c));
    assert_eq!((img.0, img.1), (w, h));
    let l = layout(c);
    assert_eq!((l.width, l.height), (w, h));
}

#[test]
fn canvas_layout_matches_atlas() {
    // The brief's example and Atlas golden images (without their "Fetch:" line).
    assert_size(&one_line(700, 300), 788, 429);
    assert_size(&one_line(400, 200), 488, 329); // default_single_line_ylabel.png
    let mut c = one_line(400, 200);
    c.title = Some("A title".into());
    assert_size(&c, 488, 349); // default_single_line_title.png
    c.title = None;
    c.timezones
        .push(jiff::tz::TimeZone::get("US/Pacific").unwrap());
    assert_size(&c, 488, 353); // default_single_line_timezones_ab.png
    let mut c = one_line(400, 200);
    c.zoom = 2.0;
    assert_size(&c, 976, 658); // default_single_line_zoom_2.0.png
    // default_multiy_n_ylabel.png: 5 axes with one line each.
    let plots = (0..5)
        .map(|i| Plot {
            ylabel: (i == 1).then(|| "something useful".to_string()),
            ..plot(vec![line(
                "0",
                PALETTE[i],
                LineStyle::Line,
                sine(1440, 50.0, 0.0),
            )])
        })
        .collect();
    assert_size(&chart(400, 200, 1440, plots), 720, 678);
    // default_too_many_lines.png: 50 entries shown, then "... N suppressed ...".
    let lines = (0..60)
        .map(|i| {
            line(
                &i.to_string(),
                PALETTE[i % 6],
                LineStyle::Line,
                sine(60, 1.0, 0.0),
            )
        })
        .collect();
    assert_size(&chart(400, 200, 60, vec![plot(lines)]), 488, 3337);
    // default_notices.png
    let mut c = one_line(400, 200);
    c.notices = vec![
        "This is an information message that is shown on the graph to let the user know about something important. It should be long enough to force the message to wrap.".into(),
        "Something bad happened and we wanted you to know.".into(),
        "Something really bad happened.".into(),
    ];
    assert_size(&c, 488, 451);
}

#[test]
fn fixed_layouts() {
    let mut c = one_line(400, 200);
    c.layout = Layout::Image;
    assert_size(&c, 400, 200);
    c.title = Some("title".into());
    assert_size(&c, 400, 200);
    c.layout = Layout::ImageWidth;
    c.title = None;
    assert_size(&c, 400, 329);
    c.layout = Layout::ImageHeight;
    assert_size(&c, 488, 200);
    c.layout = Layout::Canvas;
    c.only_graph = true;
    assert_size(&c, 400, 205);
}

#[test]
fn legend_swatches_show_line_colors() {
    let lines = (0..4)
        .map(|i| {
            line(
                &format!("line {i}"),
                PALETTE[i],
                LineStyle::Line,
                sine(180, 10.0, i as f64),
            )
        })
        .collect();
    let mut c = chart(
        600,
        250,
        180,
        vec![
            plot(lines),
            plot(vec![line(
                "right",
                PALETTE[5],
                LineStyle::Area,
                sine(180, 3.0, 0.0),
            )]),
        ],
    );
    c.zoom = 1.5;
    let l = layout(&c);
    assert_eq!(l.legend_entries.len(), 5);
    let img = decode(&render_png(&c));
    for e in &l.legend_entries {
        assert_eq!(e.swatch.w, 20); // 13 px at zoom 1.5
        let r = e.swatch_inner;
        for (x, y) in [
            (r.x, r.y),
            (r.x + r.w - 1, r.y + r.h - 1),
            (r.x + r.w / 2, r.y + r.h / 2),
        ] {
            assert_eq!(
                pixel(&img, x, y),
                e.color.0 & 0xFFFFFF,
                "entry {e:?} at {x},{y}"
            );
        }
        // The border is drawn in the text color.
        assert_eq!(pixel(&img, e.swatch.x, e.swatch.y), 0x000000);
    }
    assert!(
        l.legend_entries
            .windows(2)
            .all(|w| w[0].swatch.y < w[1].swatch.y)
    );
}

#[test]
fn legend_is_limited_to_50_entries() {
    let lines = (0..60)
        .map(|i| {
            line(
                &format!("l{i}"),
                PALETTE[i % 6],
                LineStyle::Line,
                vec![i as f64; 10],
            )
        })
        .collect();
    let l = layout(&chart(500, 200, 10, vec![plot(lines)]));
    assert_eq!(l.legend_entries.len(), 50);
    assert_eq!(l.suppressed, [10]);
    let two = vec![
        plot(
            (0..40)
                .map(|i| line("a", PALETTE[0], LineStyle::Line, vec![i as f64]))
                .collect(),
        ),
        plot(
            (0..40)
                .map(|i| line("b", PALETTE[1], LineStyle::Stack, vec![i as f64]))
                .collect(),
        ),
    ];
    let l = layout(&chart(500, 200, 1, two));
    assert_eq!(l.legend_entries.len(), 50);
    assert_eq!(l.suppressed, [15, 15]);
}

#[test]
fn canvas_holds_the_data() {
    // A constant area fills the canvas below the value; its color shows in the middle.
    let c = chart(
        300,
        200,
        60,
        vec![plot(vec![line(
            "a",
            0x00FF00,
            LineStyle::Area,
            vec![5.0; 60],
        )])],
    );
    let l = layout(&c);
    let img = decode(&render_png(&c));
    assert_eq!(
        pixel(&img, l.canvas.x + 101, l.canvas.y + l.canvas.h - 51),
        0x00FF00
    );
    // The canvas background is white, the image background light gray.
    assert_eq!(pixel(&img, 1, 1), 0xF5F5F5);
}

#[test]
fn hostile_charts_do_not_panic() {
    let nasty = [
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        -f64::MAX,
        1e-300,
        -0.0,
        1e27,
        5e-324,
    ];
    let mixed: Vec<f64> = (0..300).map(|i| nasty[i % nasty.len()]).collect();
    let mut cases: Vec<Chart> = Vec::new();
    cases.push(chart(700, 300, 0, vec![]));
    cases.push(chart(0, 0, 10, vec![plot(vec![])]));
    cases.push(chart(
        u32::MAX,
        u32::MAX,
        10,
        vec![plot(vec![line("x", 1, LineStyle::Line, vec![1.0; 3])])],
    ));
    let styles = [
        LineStyle::Line,
        LineStyle::Area,
        LineStyle::Stack,
        LineStyle::VSpan,
        LineStyle::Heatmap,
    ];
    // Every style together on each scale and tick label mode; shifted copies of the nasty
    // values so that each line sees them in other steps. Small images keep debug runs quick
    // (288 px wide still shows stats).
    let lines: Vec<Line> = styles
        .iter()
        .enumerate()
        .flat_map(|(k, &style)| {
            let shifted = mixed.iter().cycle().skip(k).take(300).copied().collect();
            [
                line("nasty", 0x123456, style, shifted),
                line("nan", 0x654321, style, vec![f64::NAN; 300]),
            ]
        })
        .collect();
    for scale in [
        Scale::Linear,
        Scale::Log,
        Scale::LogLinear,
        Scale::Pow2,
        Scale::Sqrt,
    ] {
        for tick_labels in [
            TickLabels::Off,
            TickLabels::Decimal,
            TickLabels::Binary,
            TickLabels::Duration,
        ] {
            let p = Plot {
                scale,
                tick_labels,
                lines: lines.clone(),
                ..Plot::default()
            };
            cases.push(chart(200, 64, 300, vec![p]));
        }
    }
    // One style per chart too, so that a single style decides the bounds.
    for &style in &styles {
        let lines = vec![line("nasty", 0x123456, style, mixed.clone())];
        cases.push(chart(
            200,
            64,
            300,
            vec![Plot {
                scale: Scale::Log,
                ..plot(lines)
            }],
        ));
    }
    let mut c = chart(
        700,
        300,
        100,
        vec![plot(vec![line(
            &"long label ".repeat(500),
            0xFF0000,
            LineStyle::Line,
            vec![1e300; 100],
        )])],
    );
    c.title = Some("title ".repeat(1000));
    c.notices = vec!["notice ".repeat(300); 3];
    c.zoom = f64::NAN;
    c.step_ms = 0;
    c.start_ms = i64::MAX;
    c.timezones = vec![];
    cases.push(c);
    let mut c = chart(
        64,
        64,
        usize::MAX,
        vec![plot(vec![line("short", 1, LineStyle::Stack, vec![1.0])])],
    );
    c.step_ms = i64::MAX;
    c.start_ms = i64::MIN;
    c.layout = Layout::Image;
    cases.push(c);
    let bounds = [
        Bound::Explicit(f64::NAN),
        Bound::Explicit(5.0),
        Bound::Explicit(-5.0),
        Bound::AutoData,
    ];
    for lower in bounds {
        for upper in bounds {
            let p = Plot {
                lower,
                upper,
                ylabel: Some("y".repeat(300)),
                ..plot(vec![line("c", 7, LineStyle::Line, vec![5.0; 10])])
            };
            cases.push(chart(200, 100, 10, vec![p.clone(), p]));
        }
    }
    let many = (0..1000)
        .map(|i| {
            line(
                &format!("line {i}"),
                i as u32 * 4000,
                LineStyle::Stack,
                sine(120, i as f64, 0.0),
            )
        })
        .collect();
    cases.push(chart(800, 400, 120, vec![plot(many)]));
    cases.push(chart(400, 200, 10, (0..9).map(|_| plot(vec![])).collect()));
    let mut odd = vec![line("transparent", 0, LineStyle::Heatmap, vec![1.0, 2.0])];
    odd.push(Line {
        color: Color(0x01FF0000),
        ..line("alpha 1", 0, LineStyle::Heatmap, vec![3.0; 2])
    });
    for w in [f32::MAX, f32::NAN, -3.0, 0.0] {
        odd.push(Line {
            width: w,
            ..line("w", 0xFF00FF, LineStyle::Line, vec![1.0, -1.0])
        });
    }
    for (layout, zoom) in [
        (Layout::ImageHeight, 1e9),
        (Layout::Image, 0.0),
        (Layout::ImageWidth, -1.0),
    ] {
        let mut c = chart(64, 64, 2, vec![plot(odd.clone())]);
        c.layout = layout;
        c.zoom = zoom;
        c.title = Some("t".into());
        c.timezones = vec![jiff::tz::TimeZone::UTC; 40];
        c.notices = vec!["n".into(); 10_000];
        cases.push(c);
    }
    let mut c = chart(
        2000,
        1000,
        1 << 30,
        vec![plot(vec![line("s", 9, LineStyle::Line, vec![1.0; 1000])])],
    );
    c.step_ms = 1;
    cases.push(c);
    for c in &cases {
        let img = decode(&render_png(c));
        let l = layout(c);
        assert_eq!((img.0, img.1), (l.width, l.height));
    }
}

#[test]
fn error_image() {
    let img = decode(&render_error_png(
        "bad query: ".repeat(40).as_str(),
        400,
        100,
        true,
    ));
    assert_eq!((img.0, img.1), (400, 100));
    assert_eq!(pixel(&img, 399, 99), 0xFFCF00);
    let img = decode(&render_error_png("boom", 5000, 0, false));
    assert_eq!((img.0, img.1), (2000, 1));
    assert_eq!(pixel(&img, 1999, 0), 0xF82000);
}

/// Renders the sample gallery to `samples/` (run with `--ignored`).
#[test]
#[ignore]
fn write_samples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    std::fs::create_dir_all(&dir).unwrap();
    let save =
        |name: &str, png: Vec<u8>| std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    let pacific = jiff::tz::TimeZone::get("US/Pacific").unwrap();

    let mut c = one_line(700, 300);
    c.timezones = vec![pacific.clone()];
    save("one_line_3h", render_png(&c));

    let left = Plot {
        ylabel: Some("requests / s".into()),
        lines: vec![
            line(
                "us-east-1",
                PALETTE[0],
                LineStyle::Line,
                sine(180, 2e4, 0.0),
            ),
            line(
                "eu-west-1",
                PALETTE[1],
                LineStyle::Line,
                sine(180, 1e4, 1.0),
            ),
        ],
        ..Plot::default()
    };
    let right = Plot {
        ylabel: Some("latency".into()),
        axis_color: Some(Color::rgb(PALETTE[2])),
        tick_labels: TickLabels::Duration,
        lines: vec![line(
            "p99 latency",
            PALETTE[2],
            LineStyle::Line,
            sine(180, 0.25, 2.0),
        )],
        ..Plot::default()
    };
    let mut c = chart(
        700,
        300,
        180,
        vec![
            Plot {
                axis_color: Some(Color::rgb(PALETTE[0])),
                ..left
            },
            right,
        ],
    );
    c.title = Some("Two axes: requests and latency".into());
    c.timezones = vec![jiff::tz::TimeZone::UTC, pacific.clone()];
    save("two_axes", render_png(&c));

    let stack = plot(vec![
        line("a", PALETTE[0], LineStyle::Stack, sine(180, 30.0, 0.0)),
        line("b", PALETTE[1], LineStyle::Stack, sine(180, 20.0, 2.0)),
        line(
            "c",
            PALETTE[2],
            LineStyle::Stack,
            sine(180, 10.0, 4.0).iter().map(|v| -v).collect(),
        ),
        line(
            "d",
            PALETTE[4],
            LineStyle::Stack,
            sine(180, 15.0, 1.0).iter().map(|v| v - 15.0).collect(),
        ),
    ]);
    save(
        "stack_negative",
        render_png(&chart(700, 300, 180, vec![stack])),
    );

    let spans = plot(vec![
        line(
            "alert",
            0x40FF0000,
            LineStyle::VSpan,
            (0..180).map(|i| f64::from((i / 20) % 2)).collect(),
        ),
        line("cpu", PALETTE[0], LineStyle::Line, sine(180, 40.0, 0.0)),
    ]);
    save("vspan", render_png(&chart(700, 300, 180, vec![spans])));

    let mut c = chart(
        700,
        300,
        180,
        vec![plot(vec![
            line(
                "light24 a",
                0x00B5F7,
                LineStyle::Line,
                sine(180, 100.0, 0.0),
            ),
            line("light24 b", 0xE48F72, LineStyle::Area, sine(180, 40.0, 1.0)),
        ])],
    );
    c.theme = Theme::Dark;
    c.notices = vec!["Restricted graph height to 1000.".into()];
    save("dark", render_png(&c));

    let hm: Vec<Line> = (0..40)
        .map(|k| {
            line(
                "hm",
                0x0075DC,
                LineStyle::Heatmap,
                (0..360)
                    .map(|i| 10.0 + 8.0 * ((i + k * 7) as f64 / 30.0).sin() + (k % 5) as f64)
                    .collect(),
            )
        })
        .collect();
    save("heatmap", render_png(&chart(700, 300, 360, vec![plot(hm)])));

    let many = (0..60)
        .map(|i| {
            line(
                &format!("node-{i:02}"),
                PALETTE[i % 6],
                LineStyle::Line,
                sine(60, 1.0 + i as f64, i as f64),
            )
        })
        .collect();
    save(
        "sixty_lines",
        render_png(&chart(500, 200, 60, vec![plot(many)])),
    );

    save(
        "all_nan",
        render_png(&chart(
            500,
            200,
            60,
            vec![plot(vec![line(
                "nothing",
                PALETTE[0],
                LineStyle::Line,
                vec![f64::NAN; 60],
            )])],
        )),
    );

    let log = Plot {
        scale: Scale::Log,
        lines: vec![line(
            "bytes",
            PALETTE[3],
            LineStyle::Line,
            (0..180).map(|i| 1.1f64.powi(i)).collect(),
        )],
        ..Plot::default()
    };
    let mut c = chart(500, 200, 180, vec![log]);
    c.step_ms = 5 * 60_000;
    c.n_steps = 180;
    save("log_scale", render_png(&c));

    let narrow = plot(vec![line(
        "offset",
        PALETTE[0],
        LineStyle::Line,
        sine(180, 3.0, 0.0)
            .iter()
            .map(|v| v + 2_026_000.0)
            .collect(),
    )]);
    save(
        "offset_axis",
        render_png(&chart(400, 200, 180, vec![narrow])),
    );

    let scales = [
        Scale::Linear,
        Scale::Log,
        Scale::LogLinear,
        Scale::Pow2,
        Scale::Sqrt,
    ];
    let modes = [
        TickLabels::Decimal,
        TickLabels::Decimal,
        TickLabels::Decimal,
        TickLabels::Binary,
        TickLabels::Duration,
    ];
    let plots = scales
        .iter()
        .zip(modes)
        .enumerate()
        .map(|(i, (&scale, tick_labels))| Plot {
            scale,
            tick_labels,
            ylabel: Some(format!("{scale:?} / {tick_labels:?}")),
            axis_color: Some(Color::rgb(PALETTE[i])),
            lines: vec![line(
                &format!("{scale:?}"),
                PALETTE[i],
                LineStyle::Line,
                sine(180, 10f64.powi(i as i32 + 1), i as f64),
            )],
            ..Plot::default()
        })
        .collect();
    save("five_scales", render_png(&chart(500, 250, 180, plots)));

    // Across the 2012-03-11 DST change in US/Pacific: the first tick after it reads "+1H".
    let mut c = chart(
        700,
        200,
        288,
        vec![plot(vec![line(
            "dst",
            PALETTE[0],
            LineStyle::Area,
            sine(288, 5.0, 0.0),
        )])],
    );
    c.start_ms = 1_331_424_000_000; // 2012-03-11T00:00Z
    c.step_ms = 5 * 60_000;
    c.timezones = vec![pacific.clone(), jiff::tz::TimeZone::UTC];
    save("dst", render_png(&c));

    let mut c = one_line(400, 200);
    c.only_graph = true;
    save("only_graph", render_png(&c));

    let mut c = chart(
        300,
        150,
        180,
        vec![plot(vec![
            line(
                "labels only, zoom 2",
                PALETTE[0],
                LineStyle::Line,
                sine(180, 5.0, 0.0),
            ),
            line("lw 3", PALETTE[1], LineStyle::Line, sine(180, 4.0, 2.0)),
        ])],
    );
    c.plots[0].lines[1].width = 3.0;
    c.legend = LegendMode::LabelsOnly;
    c.zoom = 2.0;
    save("zoom2_labels_only", render_png(&c));

    let mut c = one_line(300, 120);
    c.layout = Layout::Image;
    save("layout_image", render_png(&c));

    save(
        "error_user",
        render_error_png(
            "IllegalArgumentException: unknown word ':foo' in expression name,sps,:eq,:foo",
            500,
            120,
            true,
        ),
    );
    save(
        "error_system",
        render_error_png("IllegalStateException: backend timed out", 500, 80, false),
    );
}
