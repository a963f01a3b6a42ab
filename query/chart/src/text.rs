//! Text: the monospace font sizes Atlas lays out with (cell widths and line heights of Noto
//! Sans Mono, drawn with DejaVu Sans Mono), wrapping and truncation as in `Text.scala`, and
//! glyph rasterizing (ab_glyph) onto the canvas, horizontally or rotated for y-axis labels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ab_glyph::{Font as _, FontRef, PxScale};

use super::Color;
use super::canvas::Canvas;

/// A font size with Atlas's metrics: Java rounds advances to whole pixels (`char_w`) and the
/// line height is Noto's ascent + descent (1.069 + 0.293 em), rounded up for one line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Font {
    pub px: f32,
    pub char_w: i32,
    pub bold: bool,
}

pub(super) const SMALL: Font = Font {
    px: 10.0,
    char_w: 6,
    bold: false,
};
pub(super) const NORMAL: Font = Font {
    px: 12.0,
    char_w: 7,
    bold: false,
};
pub(super) const BOLD: Font = Font {
    px: 12.0,
    char_w: 7,
    bold: true,
};
pub(super) const LARGE: Font = Font {
    px: 14.0,
    char_w: 8,
    bold: false,
};
/// `Fonts.default` (13 pt) used by the error image.
pub(super) const ERROR: Font = Font {
    px: 13.0,
    char_w: 8,
    bold: false,
};

const ASCENT: f32 = 1.069;
const LINE: f32 = 1.362;
/// `Text.rightPadding`: wrapping and truncation leave 8 px.
const PAD: i32 = 8;

impl Font {
    /// Height of `lines` wrapped lines (`Text.computeHeight`): 14, 17, 20 for one line.
    pub fn height(&self, lines: usize) -> i32 {
        (lines.max(1) as f32 * LINE * self.px).ceil() as i32
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Align {
    Left,
    Center,
    Right,
}

fn clean(s: &str) -> impl Iterator<Item = char> + '_ {
    s.chars().map(|c| if c.is_control() { ' ' } else { c })
}

/// Greedy word wrap to the width Atlas's `LineBreakMeasurer` gets (`width - 8`); a word longer
/// than a line is split. Always at least one (possibly empty) line.
pub(super) fn wrap(s: &str, font: Font, width: i32) -> Vec<String> {
    let max = ((width - PAD) / font.char_w).max(1) as usize;
    let chars: Vec<char> = clean(s).collect();
    let mut lines = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let rest = &chars[start..];
        if rest.len() <= max {
            lines.push(rest.iter().collect());
            break;
        }
        // Break after the last space that keeps the line within `max`, trailing spaces
        // stay on the line as with Java.
        let cut = match rest[..=max].iter().rposition(|c| *c == ' ') {
            Some(i) if i > 0 => {
                let mut j = i;
                while j < rest.len() && rest[j] == ' ' {
                    j += 1;
                }
                j
            }
            _ => max,
        };
        lines.push(
            rest[..cut]
                .iter()
                .collect::<String>()
                .trim_end()
                .to_string(),
        );
        start += cut;
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

/// `Text.truncate`: keeps `maxChars - 5` chars and appends `...` when the text does not fit.
pub(super) fn truncate(s: &str, font: Font, width: i32) -> String {
    let max = (width - PAD) / font.char_w;
    let n = s.chars().count();
    if (n as i64) < i64::from(max) {
        clean(s).collect()
    } else if max < 5 {
        String::new()
    } else {
        clean(s)
            .take(max as usize - 5)
            .chain("...".chars())
            .collect()
    }
}

struct Glyph {
    left: i32,
    top: i32,
    w: usize,
    h: usize,
    cov: Vec<f32>,
}

type GlyphKey = (char, u32, bool);

/// Glyph bitmaps shared by all renders (a server draws the same few glyphs over and over);
/// bounded so that exotic text cannot grow it without limit.
static GLYPHS: OnceLock<Mutex<HashMap<GlyphKey, Option<Arc<Glyph>>>>> = OnceLock::new();
const MAX_SHARED_GLYPHS: usize = 4096;

fn fonts() -> &'static [Option<FontRef<'static>>; 2] {
    static FONTS: OnceLock<[Option<FontRef<'static>>; 2]> = OnceLock::new();
    FONTS.get_or_init(|| {
        [
            FontRef::try_from_slice(dejavu::sans_mono::regular()).ok(),
            FontRef::try_from_slice(dejavu::sans_mono::bold()).ok(),
        ]
    })
}

fn rasterize(c: char, px: f32, bold: bool) -> Option<Glyph> {
    let font = fonts()[usize::from(bold)].as_ref()?;
    // ab_glyph's scale is the ascent-to-descent height, not the em size.
    let scale = PxScale::from(px * font.height_unscaled() / font.units_per_em()?);
    let g = font
        .glyph_id(c)
        .with_scale_and_position(scale, ab_glyph::point(0.0, 0.0));
    let outline = font.outline_glyph(g)?;
    let b = outline.px_bounds();
    let (w, h) = (b.width() as usize, b.height() as usize);
    let mut cov = vec![0f32; w * h];
    outline.draw(|x, y, v| {
        if let Some(p) = cov.get_mut(y as usize * w + x as usize) {
            // A gamma keeps small unhinted glyphs from looking washed out.
            *p = v.clamp(0.0, 1.0).powf(0.6);
        }
    });
    Some(Glyph {
        left: b.min.x as i32,
        top: b.min.y as i32,
        w,
        h,
        cov,
    })
}

/// Draws text onto a [`Canvas`], with a per-render glyph cache in front of the shared one.
pub(super) struct TextPainter {
    cache: HashMap<GlyphKey, Option<Arc<Glyph>>>,
}

/// Which way rotated text turns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Rotation {
    /// Reads bottom to top (left y-axis label).
    Ccw,
    /// Reads top to bottom (right y-axis labels).
    Cw,
}

impl TextPainter {
    pub fn new() -> TextPainter {
        TextPainter {
            cache: HashMap::new(),
        }
    }

    fn glyph(&mut self, c: char, px: f32, bold: bool) -> Option<Arc<Glyph>> {
        let key = (c, px.to_bits(), bold);
        self.cache
            .entry(key)
            .or_insert_with(|| {
                let shared = GLYPHS.get_or_init(Default::default);
                // A poisoned lock only means another render panicked; the map is still valid.
                let mut map = shared.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(g) = map.get(&key) {
                    return g.clone();
                }
                let g = rasterize(c, px, bold).map(Arc::new);
                if map.len() < MAX_SHARED_GLYPHS {
                    map.insert(key, g.clone());
                }
                g
            })
            .clone()
    }

    /// Draws one line with its cell box starting at logical `pos = (x, top)`: glyph cells
    /// `char_w` apart, baseline at Noto's ascent below `top`; `turn` rotates every pixel about
    /// a device point.
    fn line(
        &mut self,
        cv: &mut Canvas,
        s: &str,
        font: Font,
        color: Color,
        pos: (i32, f32),
        turn: Option<(Rotation, f32, f32)>,
    ) {
        let z = cv.zoom() as f32;
        let px = font.px * z;
        let base = ((pos.1 + (ASCENT * font.px).round()) * z).round() as i32;
        let x0 = (pos.0 as f32 * z).round() as i32;
        for (i, c) in clean(s).enumerate() {
            if c == ' ' {
                continue;
            }
            let gx = x0 + (i as f32 * font.char_w as f32 * z).round() as i32;
            let Some(g) = self.glyph(c, px, font.bold) else {
                continue;
            };
            for gy in 0..g.h {
                for gxx in 0..g.w {
                    let v = g.cov[gy * g.w + gxx];
                    if v <= 0.0 {
                        continue;
                    }
                    let (dx, dy) = (gx + g.left + gxx as i32, base + g.top + gy as i32);
                    let (tx, ty) = match turn {
                        None => (dx, dy),
                        Some((rot, cx, cy)) => {
                            let (ox, oy) = (dx as f32 + 0.5 - cx, dy as f32 + 0.5 - cy);
                            let (rx, ry) = if rot == Rotation::Ccw {
                                (cx + oy, cy - ox)
                            } else {
                                (cx - oy, cy + ox)
                            };
                            (rx.floor() as i32, ry.floor() as i32)
                        }
                    };
                    cv.blend(tx, ty, color, v);
                }
            }
        }
    }

    /// One unwrapped line aligned in `x1..x2` like Atlas's `Text.draw` (left and right keep
    /// 4 px from the edge). Used for tick labels, which must not wrap.
    pub fn single(&mut self, cv: &mut Canvas, s: &str, ink: Ink, x1: i32, top: f32, x2: i32) {
        let w = s.chars().count() as i32 * ink.font.char_w;
        let x = match ink.align {
            Align::Left => x1 + 4,
            Align::Right => x2 - 4 - w,
            Align::Center => x1 + (x2 - x1 - w) / 2,
        };
        self.line(cv, s, ink.font, ink.color, (x, top), None);
    }

    /// Atlas's `Text.draw`: wraps `s` to the box `x1..x2` and aligns each line. Returns the
    /// number of lines.
    pub fn draw(&mut self, cv: &mut Canvas, s: &str, ink: Ink, x1: i32, y1: i32, x2: i32) -> usize {
        let lines = wrap(s, ink.font, x2 - x1);
        for (i, l) in lines.iter().enumerate() {
            let top = y1 as f32 + i as f32 * LINE * ink.font.px;
            self.single(cv, l, ink, x1, top, x2);
        }
        lines.len()
    }

    /// One line centered on the logical point `c` and rotated by ±90° about it
    /// (`ValueAxis.drawLabel`).
    pub fn rotated(
        &mut self,
        cv: &mut Canvas,
        s: &str,
        font: Font,
        c: (i32, i32),
        rot: Rotation,
        color: Color,
    ) {
        let z = cv.zoom() as f32;
        let w = s.chars().count() as i32 * font.char_w;
        let h = font.height(1);
        // Lay the line out unrotated around the center, then turn each pixel about it.
        let turn = Some((rot, c.0 as f32 * z, c.1 as f32 * z));
        self.line(
            cv,
            s,
            font,
            color,
            (c.0 - w / 2, (c.1 - h / 2) as f32),
            turn,
        );
    }
}

/// Font, color and alignment of a text element.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Ink {
    pub font: Font,
    pub color: Color,
    pub align: Align,
}

pub(super) fn ink(font: Font, align: Align, color: Color) -> Ink {
    Ink { font, color, align }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_and_truncate() {
        assert_eq!(wrap("aaa bbb ccc", NORMAL, 8 + 7 * 7), ["aaa bbb", "ccc"]);
        assert_eq!(
            wrap("abcdefghij", NORMAL, 8 + 7 * 4),
            ["abcd", "efgh", "ij"]
        );
        assert_eq!(wrap("", NORMAL, 100), [""]);
        assert_eq!(truncate("abcdefghij", NORMAL, 8 + 7 * 8), "abc...");
        assert_eq!(truncate("abc", NORMAL, 8 + 7 * 8), "abc");
        assert_eq!(truncate("abcdefghij", NORMAL, 8 + 7 * 4), "");
        assert_eq!(
            (SMALL.height(1), NORMAL.height(1), LARGE.height(1)),
            (14, 17, 20)
        );
    }
}
