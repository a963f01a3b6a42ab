//! A pixel buffer with the few Java2D primitives Atlas uses (fillRect, 1 px and thick
//! axis-aligned drawLine, dashed grid lines, drawRect, fillOval), all in logical coordinates that
//! are scaled by the zoom factor. Everything is drawn over an opaque background, so pixels are
//! kept opaque and blending is a plain source-over.

use super::{Color, Rect};

pub(super) struct Canvas {
    pixmap: tiny_skia::Pixmap,
    zoom: f64,
    /// Current clip in device pixels: x0, y0, x1, y1 (exclusive).
    clip: (i32, i32, i32, i32),
}

impl Canvas {
    /// A canvas of `w` × `h` device pixels filled with `bg` (opaque).
    pub fn new(w: u32, h: u32, zoom: f64, bg: Color) -> Option<Canvas> {
        let mut pixmap = tiny_skia::Pixmap::new(w.max(1), h.max(1))?;
        let (r, g, b) = rgb(bg);
        pixmap.fill(tiny_skia::Color::from_rgba8(r, g, b, 255));
        let clip = (0, 0, pixmap.width() as i32, pixmap.height() as i32);
        Some(Canvas { pixmap, zoom, clip })
    }

    pub fn zoom(&self) -> f64 {
        self.zoom
    }

    /// Logical → device coordinate.
    pub fn dev(&self, v: i32) -> i32 {
        (f64::from(v) * self.zoom).round() as i32
    }

    /// Restricts drawing to the logical rectangle `r` (`None`: the whole image).
    pub fn set_clip(&mut self, r: Option<Rect>) {
        let full = (
            0,
            0,
            self.pixmap.width() as i32,
            self.pixmap.height() as i32,
        );
        self.clip = match r {
            None => full,
            Some(r) => (
                self.dev(r.x).max(0),
                self.dev(r.y).max(0),
                self.dev(r.x.saturating_add(r.w)).min(full.2),
                self.dev(r.y.saturating_add(r.h)).min(full.3),
            ),
        };
    }

    /// Source-over of `color` at `cov` (0..1) coverage onto the device pixel `(x, y)`.
    pub fn blend(&mut self, x: i32, y: i32, color: Color, cov: f32) {
        let (cx0, cy0, cx1, cy1) = self.clip;
        if x < cx0 || y < cy0 || x >= cx1 || y >= cy1 {
            return;
        }
        let a = f32::from(color.alpha()) / 255.0 * cov.clamp(0.0, 1.0);
        if a <= 0.0 {
            return;
        }
        let i = (y as usize * self.pixmap.width() as usize + x as usize) * 4;
        let (r, g, b) = rgb(color);
        let px = &mut self.pixmap.data_mut()[i..i + 4];
        for (d, s) in px.iter_mut().zip([r, g, b]) {
            *d = (f32::from(s) * a + f32::from(*d) * (1.0 - a) + 0.5) as u8;
        }
        px[3] = 255;
    }

    /// Fills device pixels `[x0, x1) × [y0, y1)`, clipped.
    fn fill_dev(&mut self, x0: i32, y0: i32, x1: i32, y1: i32, color: Color) {
        let (cx0, cy0, cx1, cy1) = self.clip;
        let (x0, y0, x1, y1) = (x0.max(cx0), y0.max(cy0), x1.min(cx1), y1.min(cy1));
        if x0 >= x1 || y0 >= y1 || color.alpha() == 0 {
            return;
        }
        if color.alpha() == 255 {
            let (r, g, b) = rgb(color);
            let w = self.pixmap.width() as usize;
            let data = self.pixmap.data_mut();
            for y in y0..y1 {
                let row = (y as usize * w + x0 as usize) * 4..(y as usize * w + x1 as usize) * 4;
                for px in data[row].chunks_exact_mut(4) {
                    px.copy_from_slice(&[r, g, b, 255]);
                }
            }
        } else {
            for y in y0..y1 {
                for x in x0..x1 {
                    self.blend(x, y, color, 1.0);
                }
            }
        }
    }

    /// Java's `fillRect(x, y, w, h)` in logical coordinates.
    pub fn fill_rect(&mut self, x: i32, y: i32, w: i32, h: i32, color: Color) {
        if w <= 0 || h <= 0 {
            return;
        }
        let (x0, y0) = (self.dev(x), self.dev(y));
        let x1 = self.dev(x.saturating_add(w)).max(x0 + 1);
        let y1 = self.dev(y.saturating_add(h)).max(y0 + 1);
        self.fill_dev(x0, y0, x1, y1, color);
    }

    /// Java's non-antialiased `drawLine` for horizontal or vertical lines with a stroke of
    /// `width` px (square caps): a `width`-thick band covering both end points.
    pub fn line(&mut self, x1: i32, y1: i32, x2: i32, y2: i32, color: Color, width: f32) {
        let t = if width.is_finite() {
            width.round().clamp(1.0, 100.0) as i32
        } else {
            1
        };
        let lo = (t - 1) / 2;
        let (xa, xb) = (x1.min(x2), x1.max(x2));
        let (ya, yb) = (y1.min(y2), y1.max(y2));
        self.fill_rect(xa - lo, ya - lo, xb - xa + t, yb - ya + t, color);
    }

    /// A 1 px dashed line (1 on, 1 off from the start), horizontal or vertical: the grid.
    pub fn dashed(&mut self, x1: i32, y1: i32, x2: i32, y2: i32, color: Color) {
        if y1 == y2 {
            for x in (x1.min(x2)..=x1.max(x2)).step_by(2) {
                self.fill_rect(x, y1, 1, 1, color);
            }
        } else {
            for y in (y1.min(y2)..=y1.max(y2)).step_by(2) {
                self.fill_rect(x1, y, 1, 1, color);
            }
        }
    }

    /// Java's `drawRect(x, y, w, h)`: a 1 px outline covering `w + 1` × `h + 1` pixels.
    pub fn rect_outline(&mut self, x: i32, y: i32, w: i32, h: i32, color: Color) {
        self.fill_rect(x, y, w + 1, 1, color);
        self.fill_rect(x, y + h, w + 1, 1, color);
        self.fill_rect(x, y, 1, h + 1, color);
        self.fill_rect(x + w, y, 1, h + 1, color);
    }

    /// An antialiased filled circle of diameter `d` in the box at `(x, y)` (list bullets).
    pub fn fill_circle(&mut self, x: i32, y: i32, d: i32, color: Color) {
        let z = self.zoom;
        let r = f64::from(d) * z / 2.0;
        let (cx, cy) = (f64::from(x) * z + r, f64::from(y) * z + r);
        for py in (cy - r).floor() as i32..=(cy + r).ceil() as i32 {
            for px in (cx - r).floor() as i32..=(cx + r).ceil() as i32 {
                let dist = ((f64::from(px) + 0.5 - cx).powi(2)
                    + (f64::from(py) + 0.5 - cy).powi(2))
                .sqrt();
                let cov = (r - dist + 0.5).clamp(0.0, 1.0) as f32;
                self.blend(px, py, color, cov);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        self.pixmap.encode_png().unwrap_or_default()
    }
}

fn rgb(c: Color) -> (u8, u8, u8) {
    ((c.0 >> 16) as u8, (c.0 >> 8) as u8, c.0 as u8)
}
