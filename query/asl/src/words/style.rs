//! The style vocabulary: how lines are presented (`:legend`, `:color`, `:axis`, `:ls`,
//! `:sort`, `:limit`, ...). Style words record settings on a styled expression and leave the
//! data alone; the graph API applies them.

use super::{Failure, Param, Word, args, take_int, take_list, take_str, take_style};
use crate::interpreter::Context;
use crate::model::{Item, StyleExpr, write_list};
use crate::parser::write_escaped;

type R = Result<(), Failure>;

const P: &[Param] = &[Param::Presentation];
const PS: &[Param] = &[Param::Presentation, Param::Str];
const PS_SIG: &str = "TimeSeriesExpr v:String -- StyleExpr";

/// Line styles Atlas draws.
pub(crate) const LINE_STYLES: [&str; 5] = ["line", "area", "stack", "vspan", "heatmap"];

/// Colors that can be named instead of given in hex (resolved per theme when drawing).
pub(crate) const NAMED_COLORS: [&str; 18] = [
    "blue1", "blue2", "blue3", "gray1", "gray2", "gray3", "green1", "green2", "green3", "orange1",
    "orange2", "orange3", "purple1", "purple2", "purple3", "red1", "red2", "red3",
];

/// Palettes that can be named.
pub(crate) const PALETTES: [&str; 11] = [
    "armytage",
    "bw",
    "lightgray",
    "light24",
    "dark24",
    "reds",
    "blues",
    "greens",
    "oranges",
    "purples",
    "highcharts",
];

macro_rules! style_word {
    ($name:literal, $key:literal, $summary:literal, $examples:expr) => {
        Word {
            name: $name,
            params: PS,
            signature: PS_SIG,
            summary: $summary,
            examples: $examples,
            exec: |ctx, a| set(ctx, a, $key),
        }
    };
}

macro_rules! ls_word {
    ($name:literal, $summary:literal) => {
        Word {
            name: $name,
            params: P,
            signature: "TimeSeriesExpr -- StyleExpr",
            summary: $summary,
            examples: &[(
                "name,sps,:eq,:sum",
                Some(concat!("name,sps,:eq,:sum,:", $name)),
            )],
            exec: |ctx, a| {
                let [e] = args(a)?;
                let mut s = take_style(e)?;
                s.set("ls", $name.to_string());
                push(ctx, s)
            },
        }
    };
}

pub(crate) static WORDS: &[Word] = &[
    style_word!(
        "legend",
        "legend",
        "Legend text of the lines; `$key` or `$(key)` is replaced by the line's tag value \
         (or the key itself when the line lacks it).",
        &[
            (
                "name,sps,:eq,:sum,(,nf.app,),:by,$nf.app",
                Some("name,sps,:eq,:sum,(,nf.app,),:by,$nf.app,:legend")
            ),
            (
                "name,sps,:eq,foo\\u002cbar",
                Some("name,sps,:eq,:sum,foo\\u002cbar,:legend")
            ),
        ]
    ),
    Word {
        name: "decode",
        params: PS,
        signature: PS_SIG,
        summary: "Decode the legend: `hex` turns `_XY` hex escapes into characters, `none` \
                  leaves it.",
        examples: &[
            (
                "name,sps,:eq,:sum,hex",
                Some("name,sps,:eq,:sum,hex,:decode"),
            ),
            ("name,sps,:eq,:sum,base64", None),
        ],
        exec: decode,
    },
    Word {
        name: "s",
        params: &[Param::Presentation, Param::Str, Param::Str],
        signature: "TimeSeriesExpr search:String replace:String -- StyleExpr",
        summary: "Rewrite the legend: every match of the regex `search` is replaced by \
                  `replace`, in which `$1` or `$name` are the regex's groups (or tag values).",
        examples: &[
            (
                "name,sps,:eq,:sum,^([a-z]+).*$,prefix [$1]",
                Some("name,sps,:eq,:sum,^([a-z]+).*$,prefix [$1],:s"),
            ),
            ("name,sps,:eq,:sum,([,x", None),
        ],
        exec: search_replace,
    },
    Word {
        name: "axis",
        params: PS,
        signature: PS_SIG,
        summary: "Draw the lines against y-axis n (0, the left one, to 4).",
        examples: &[
            ("name,sps,:eq,:sum,1", Some("name,sps,:eq,:sum,1,:axis")),
            ("name,sps,:eq,:sum,5", None),
        ],
        exec: axis,
    },
    Word {
        name: "color",
        params: PS,
        signature: PS_SIG,
        summary: "Line color: hex `RGB`, `RRGGBB` or `AARRGGBB`, or a named color (blue1..3, \
                  gray1..3, green1..3, orange1..3, purple1..3, red1..3).",
        examples: &[
            (
                "name,sps,:eq,:sum,f00",
                Some("name,sps,:eq,:sum,ffff0000,:color"),
            ),
            (
                "name,sps,:eq,:sum,blue2",
                Some("name,sps,:eq,:sum,blue2,:color"),
            ),
            (
                "name,sps,:eq,:sum,40,:alpha,f00",
                Some("name,sps,:eq,:sum,ffff0000,:color"),
            ),
            ("name,sps,:eq,:sum,red", None),
        ],
        exec: color,
    },
    Word {
        name: "alpha",
        params: PS,
        signature: PS_SIG,
        summary: "Line opacity as two hex digits (00 transparent, ff opaque), applied to the \
                  line's color.",
        examples: &[
            (
                "name,sps,:eq,:sum,f00,:color,60",
                Some("name,sps,:eq,:sum,60ff0000,:color"),
            ),
            ("name,sps,:eq,:sum,40", Some("name,sps,:eq,:sum,40,:alpha")),
            (
                "name,sps,:eq,:sum,reds,:palette,40",
                Some("name,sps,:eq,:sum,reds,:palette,40,:alpha"),
            ),
            ("name,sps,:eq,:sum,4", None),
        ],
        exec: alpha,
    },
    Word {
        name: "palette",
        params: &[Param::Presentation, Param::Any],
        signature: "TimeSeriesExpr palette:String|List -- StyleExpr",
        summary: "Colors for the lines, by palette name (armytage, light24, dark24, reds, \
                  blues, greens, oranges, purples, bw, lightgray, highcharts; `hash:name` picks \
                  by legend) or as a list of hex colors.",
        examples: &[
            (
                "name,sps,:eq,:sum,reds",
                Some("name,sps,:eq,:sum,reds,:palette"),
            ),
            (
                "name,sps,:eq,:sum,(,f00,00ff00,)",
                Some("name,sps,:eq,:sum,(\\u002cf00\\u002c00ff00\\u002c),:palette"),
            ),
            ("name,sps,:eq,:sum,nope", None),
        ],
        exec: palette,
    },
    Word {
        name: "ls",
        params: PS,
        signature: PS_SIG,
        summary: "Line style: line, area, stack, vspan or heatmap.",
        examples: &[
            ("name,sps,:eq,:sum,area", Some("name,sps,:eq,:sum,:area")),
            ("name,sps,:eq,:sum,dots", None),
        ],
        exec: line_style,
    },
    ls_word!("line", "Draw the lines as lines (the default)."),
    ls_word!("area", "Fill the area between each line and zero."),
    ls_word!("stack", "Stack the lines as areas on top of each other."),
    ls_word!(
        "vspan",
        "Shade the whole height of the graph wherever the line is true (not 0)."
    ),
    ls_word!(
        "heatmap",
        "Count the lines per value range at each step and draw the counts as colors."
    ),
    Word {
        name: "percentiles-heatmap",
        params: P,
        signature: "TimeSeriesExpr -- StyleExpr",
        summary: "Draw percentile-bucket counters as a heatmap (`(,percentile,),:cg,heatmap,:ls`).",
        examples: &[(
            "name,requestLatency,:eq",
            Some("name,requestLatency,:eq,:sum,(,percentile,),:by,:heatmap"),
        )],
        exec: percentiles_heatmap,
    },
    Word {
        name: "lw",
        params: PS,
        signature: PS_SIG,
        summary: "Line width in pixels.",
        examples: &[
            ("name,sps,:eq,:sum,2", Some("name,sps,:eq,:sum,2,:lw")),
            ("name,sps,:eq,:sum,wide", None),
        ],
        exec: line_width,
    },
    style_word!(
        "sort",
        "sort",
        "Sort the lines by legend or by a window statistic (min, max, avg, count, total, last).",
        &[(
            "name,sps,:eq,:sum,(,a,),:by,max",
            Some("name,sps,:eq,:sum,(,a,),:by,max,:sort")
        )]
    ),
    style_word!(
        "order",
        "order",
        "Sort order: asc (default) or desc.",
        &[(
            "name,sps,:eq,:sum,(,a,),:by,desc",
            Some("name,sps,:eq,:sum,(,a,),:by,desc,:order")
        )]
    ),
    Word {
        name: "limit",
        params: &[Param::Presentation, Param::Int],
        signature: "TimeSeriesExpr n:Int -- StyleExpr",
        summary: "Keep the first n lines (after sorting).",
        examples: &[
            (
                "name,sps,:eq,:sum,(,a,),:by,5",
                Some("name,sps,:eq,:sum,(,a,),:by,5,:limit"),
            ),
            ("name,sps,:eq,:sum,x", None),
        ],
        exec: limit,
    },
    Word {
        name: "head",
        params: &[Param::Presentation, Param::Int],
        signature: "TimeSeriesExpr n:Int -- StyleExpr",
        summary: "Same as `:limit`.",
        examples: &[(
            "name,sps,:eq,:sum,(,a,),:by,5",
            Some("name,sps,:eq,:sum,(,a,),:by,5,:limit"),
        )],
        exec: limit,
    },
    Word {
        name: "offset",
        params: &[Param::Presentation, Param::StrList],
        signature: "TimeSeriesExpr offsets:List -- StyleExpr",
        summary: "Legacy form: one copy of the expression per offset in the list (each read \
                  that much earlier).",
        examples: &[
            (
                "name,sps,:eq,:sum,(,0h,1d,1w,)",
                Some("name,sps,:eq,:sum,(,0h,1d,1w,),:offset"),
            ),
            ("name,sps,:eq,:sum,(,1x,)", None),
        ],
        exec: legacy_offset,
    },
    Word {
        name: "strip-style",
        params: P,
        signature: "StyleExpr -- TimeSeriesExpr",
        summary: "Drop every style setting.",
        examples: &[("name,sps,:eq,:sum,foo,:legend", Some("name,sps,:eq,:sum"))],
        exec: |ctx, a| {
            let [e] = args(a)?;
            ctx.stack.push(Item::Expr(take_style(e)?.expr));
            Ok(())
        },
    },
];

fn push(ctx: &mut Context<'_>, s: StyleExpr) -> R {
    ctx.stack.push(Item::Style(s));
    Ok(())
}

fn set(ctx: &mut Context<'_>, a: Vec<Item>, key: &str) -> R {
    let [e, v] = args(a)?;
    let mut s = take_style(e)?;
    s.set(key, take_str(v)?);
    push(ctx, s)
}

fn escaped(s: &str) -> String {
    let mut out = String::new();
    let _ = write_escaped(&mut out, s);
    out
}

fn decode(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let mode = take_str(v)?;
    if mode != "hex" && mode != "none" {
        return Err(Failure::Invalid(format!(
            "unknown encoding '{mode}', expected hex or none"
        )));
    }
    let mut s = take_style(e)?;
    s.push_sed(format!("{mode},:decode"));
    push(ctx, s)
}

fn search_replace(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, search, replace] = args(a)?;
    let (search, replace) = (take_str(search)?, take_str(replace)?);
    crate::graph::legend::compile_search(&search).map_err(|reason| Failure::BadRegex {
        pattern: search.clone(),
        reason,
    })?;
    let mut s = take_style(e)?;
    s.push_sed(format!("{},{},:s", escaped(&search), escaped(&replace)));
    push(ctx, s)
}

fn axis(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let text = take_str(v)?;
    match text.trim().parse::<u8>() {
        Ok(n) if n <= 4 => {}
        _ => {
            return Err(Failure::Invalid(format!(
                "invalid axis: {text} (expected 0 to 4)"
            )));
        }
    }
    let mut s = take_style(e)?;
    s.set("axis", text.trim().to_string());
    push(ctx, s)
}

/// `RGB`, `RRGGBB` or `AARRGGBB` hex to `0xAARRGGBB`.
pub(crate) fn parse_hex_color(text: &str) -> Option<u32> {
    if !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match text.len() {
        3 => {
            let doubled: String = text.chars().flat_map(|c| [c, c]).collect();
            u32::from_str_radix(&doubled, 16)
                .ok()
                .map(|v| v | 0xff00_0000)
        }
        6 => u32::from_str_radix(text, 16).ok().map(|v| v | 0xff00_0000),
        8 => u32::from_str_radix(text, 16).ok(),
        _ => None,
    }
}

fn color(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let text = take_str(v)?;
    let value = match parse_hex_color(&text) {
        Some(argb) => format!("{argb:08x}"),
        None if NAMED_COLORS.contains(&text.as_str()) => text,
        None => {
            return Err(Failure::Invalid(format!(
                "invalid color '{text}': color must be hex string [AA]RRGGBB or a named color \
                 ({})",
                NAMED_COLORS.join(", ")
            )));
        }
    };
    let mut s = take_style(e)?;
    s.settings.remove("alpha");
    s.settings.remove("palette");
    s.set("color", value);
    push(ctx, s)
}

fn alpha(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let text = take_str(v)?;
    let alpha = match (text.len(), u8::from_str_radix(&text, 16)) {
        (2, Ok(a)) => a,
        _ => {
            return Err(Failure::Invalid(format!(
                "invalid alpha '{text}': value should be 2 digit hex string"
            )));
        }
    };
    let mut s = take_style(e)?;
    match s.get("color").and_then(parse_hex_color) {
        Some(argb) => {
            let merged = (argb & 0x00ff_ffff) | (u32::from(alpha) << 24);
            s.set("color", format!("{merged:08x}"));
            s.settings.remove("alpha");
        }
        None => s.set("alpha", text),
    }
    push(ctx, s)
}

fn palette(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let value = match v {
        // A list palette prints as one escaped string, `(,f00,00ff00,)`; read it back.
        Item::Str(text) if text.starts_with('(') && text.ends_with(')') => {
            let inner = &text[1..text.len() - 1];
            let colors: Vec<String> = inner
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            list_palette(colors)?
        }
        Item::Str(name) => {
            let base = name.strip_prefix("hash:").unwrap_or(&name);
            if !PALETTES.contains(&base) {
                return Err(Failure::Invalid(format!(
                    "invalid palette name: '{name}' (expected one of {})",
                    PALETTES.join(", ")
                )));
            }
            name
        }
        Item::List(items) => {
            let colors = items
                .into_iter()
                .map(take_str)
                .collect::<Result<Vec<_>, _>>()?;
            list_palette(colors)?
        }
        other => return Err(super::mismatch("String or List", &other)),
    };
    let mut s = take_style(e)?;
    s.settings.remove("color");
    s.settings.remove("alpha");
    s.set("palette", value);
    push(ctx, s)
}

/// A palette given as colors: validated, stored as `(,c1,c2,)`.
fn list_palette(colors: Vec<String>) -> Result<String, Failure> {
    if let Some(bad) = colors.iter().find(|c| parse_hex_color(c).is_none()) {
        return Err(Failure::Invalid(format!(
            "invalid palette color '{bad}': expected hex [AA]RRGGBB"
        )));
    }
    if colors.is_empty() {
        return Err(Failure::Invalid(
            "a palette needs at least one color".into(),
        ));
    }
    let mut text = String::new();
    let _ = write_list(&mut text, &colors);
    Ok(text)
}

fn line_style(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let text = take_str(v)?.to_ascii_lowercase();
    if !LINE_STYLES.contains(&text.as_str()) {
        return Err(Failure::Invalid(format!(
            "invalid line style '{text}', expected one of {}",
            LINE_STYLES.join(", ")
        )));
    }
    let mut s = take_style(e)?;
    s.set("ls", text);
    push(ctx, s)
}

fn percentiles_heatmap(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e] = args(a)?;
    let mut s = take_style(e)?;
    s.expr.add_common_keys(&["percentile".to_string()]);
    s.set("ls", "heatmap".to_string());
    push(ctx, s)
}

fn line_width(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, v] = args(a)?;
    let text = take_str(v)?;
    match text.trim().parse::<f32>() {
        Ok(w) if w.is_finite() && (0.0..=100.0).contains(&w) => {}
        _ => {
            return Err(Failure::Invalid(format!(
                "invalid line width '{text}': expected a number of pixels"
            )));
        }
    }
    let mut s = take_style(e)?;
    s.set("lw", text);
    push(ctx, s)
}

fn limit(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, n] = args(a)?;
    let n = take_int(n)?;
    let mut s = take_style(e)?;
    s.set("limit", n.to_string());
    push(ctx, s)
}

/// Offsets one legacy `(,…,),:offset` list may give: each is a copy of the expression.
const MAX_OFFSETS: usize = 32;

fn legacy_offset(ctx: &mut Context<'_>, a: Vec<Item>) -> R {
    let [e, list] = args(a)?;
    let list = take_list(list)?;
    if list.len() > MAX_OFFSETS {
        return Err(Failure::Invalid(format!(
            "{} offsets in one list, over the limit of {MAX_OFFSETS}",
            list.len()
        )));
    }
    let mut offsets = Vec::new();
    for item in list {
        let d = take_str(item)?;
        if crate::time::parse_duration(&d).is_none() {
            return Err(Failure::Invalid(format!(
                "invalid duration '{d}' in offset list"
            )));
        }
        offsets.push(d);
    }
    let mut s = take_style(e)?;
    let mut text = String::new();
    let _ = write_list(&mut text, &offsets);
    s.set("offset", text);
    push(ctx, s)
}
